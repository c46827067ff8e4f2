"""Data parallelism for evaluations: one process per GPU (torchrun / accelerate launch), or just one.

Under torchrun each rank takes a shard of the work and rank 0 gathers the results; launched plainly,
the same calls are no-ops over a world of one. NCCL multicast stays off (NCCL_NVLS_ENABLE=0).
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> str:
        return f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"


# NVLink multicast off for NCCL, torch symmetric memory and NVSHMEM: multicast can take a shared host's GPUs down
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def init() -> World:
    """Join the process group that torchrun / accelerate launch describe in the environment, if any."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    for k, v in MULTICAST_OFF.items():
        os.environ.setdefault(k, v)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return World(dist.get_rank(), dist.get_world_size(), local_rank)


def shard(items: Sequence[T], world: World) -> list[T]:
    """This rank's share: every world.size-th item, starting at its rank (balanced to within one item)."""
    return list(items[world.rank::world.size])


def gather_counts(counts: Counter, world: World) -> Counter:
    """Sum per-key counters over all ranks; every rank gets the total."""
    if world.size == 1:
        return Counter(counts)
    parts: list = [None] * world.size
    dist.all_gather_object(parts, dict(counts))
    total: Counter = Counter()
    for part in parts:
        total.update(part)
    return total


def finish(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
