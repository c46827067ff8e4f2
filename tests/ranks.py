"""Run a function in several spawned processes that form one torch.distributed group (gloo on CPU)."""
import os
import socket

import torch.multiprocessing as mp


def join_group(rank: int, size: int, port: int) -> None:
    """The environment torchrun would give this rank."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def run_ranks(target, size: int, *args, timeout: float = 240) -> list:
    """target(rank, size, port, *args, queue) in `size` processes; what each put on the queue, sorted."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(r, size, port, *args, out)) for r in range(size)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=timeout) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results
