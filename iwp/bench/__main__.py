"""python -m iwp.bench: speed benchmarks.

  selection  scoring + PC-MMR against token-by-token greedy MMR, Qwen2-7B-shaped heads (selection.py)
  models     prefill / decode / memory of real-size models, unpruned vs pruned (real_size.py)
  multigpu   a real-size model split over every GPU, unpruned vs pruned (multigpu.py)
  vision     the Qwen2.5-VL vision tower, stock vs iwp.accelerate_vision: bitwise check and times (vision.py)
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("selection", "models", "multigpu", "vision"):
        print(__doc__.strip())
        return 2
    if argv[0] == "selection":
        from .selection import main as run
    elif argv[0] == "multigpu":
        from .multigpu import main as run
    elif argv[0] == "vision":
        from .vision import main as run
    else:
        from .real_size import main as run
    return run(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
