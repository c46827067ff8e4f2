"""Latency of one image `compare` request (both runs, overlay, JSON) against the demo, through gradio_client.

python scripts/latency.py [--url http://127.0.0.1:7860/] [--image PATH] [-n 20] [--model ID]
Without --url the demo is launched in this process on a free port (model from --model / IWP_MODEL).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=None)
    ap.add_argument("--image", default=None, help="default: the first image of assets/examples")
    ap.add_argument("--question", default=None)
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()

    from gradio_client import Client, handle_file
    demo = None
    if args.url is None:
        import socket
        from iwp.demo.inputs import MAX_UPLOAD
        from iwp.demo.runner import Runner
        from app.ui import build_demo
        runner = Runner.load(args.model)
        runner.warmup()
        demo = build_demo(runner)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                    max_file_size=MAX_UPLOAD)
        args.url = f"http://127.0.0.1:{port}/"
    from app.ui import example_rows
    rows = [r for r in example_rows() if r[0]]
    image = args.image or rows[0][0]
    question = args.question or (rows[0][2] if rows and not args.image else "What is in the picture?")
    client = Client(args.url, verbose=False)
    times, handler, metrics = [], [], None
    for i in range(args.warmup + args.n):
        start = time.perf_counter()
        *_, metrics, _ = client.predict(handle_file(image), None, question, 0.25, "iwp", api_name="/compare")
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
            handler.append(metrics["handler_s"])
    report = {
        "median_s": round(statistics.median(times), 4), "mean_s": round(statistics.mean(times), 4),
        "min_s": round(min(times), 4), "max_s": round(max(times), 4), "n": len(times),
        "handler_median_s": round(statistics.median(handler), 4),
        "image": os.path.relpath(image, ROOT), "question": question, "model": metrics.get("model"),
        "server_side": {k: metrics[k] for k in ("unpruned", "pruned", "speedup_total")},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads "
                   f"{__import__('torch').get_num_threads()}",
    }
    print(json.dumps(report, indent=1))
    if demo is not None:
        demo.close()


if __name__ == "__main__":
    main()
