"""python -m iwp.evaluate.scaling: python -m iwp.evaluate in one process vs data-parallel under torchrun.

Both runs get the same question set and settings: one process on one GPU (or the CPU), then --nproc processes
under torchrun (one GPU each; gloo on the CPU). Their JSON outputs must hold identical accuracy rows. Reported:
each run's wall time (the whole command: start-up, model load, questions) and evaluate's own seconds (questions
only, of which prepare_s draws the scenes and runs the processor), the speed-ups and the efficiency (speed-up /
processes), also for the questions alone (every rank draws all scenes: their noise depends on the whole draw;
only the processor work is sharded). Without --questions, two short calibration runs fit evaluate seconds = fixed + per-question x n (the
fixed part, e.g. CUDA warm-up, would otherwise inflate the per-question cost) and pick a count whose one-process
run takes about --target-seconds, so that the work, not the start-up, dominates.

    python -m iwp.evaluate.scaling --nproc 2 --json out.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from . import toy as evaluate
from .distributed import MULTICAST_OFF


def command(nproc: int, eval_args: list[str], json_path: Path, device: str | None) -> list[str]:
    """The evaluate command line: plain python for one process, torchrun (same interpreter) for several."""
    if nproc == 1:
        return [sys.executable, "-m", "iwp.evaluate", *eval_args, "--json", str(json_path),
                *(["--device", device] if device else [])]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "iwp.evaluate", *eval_args, "--json", str(json_path)]


def run(cmd: list[str], json_path: Path, timeout: float, log=print) -> dict:
    """Run one evaluate command; wall seconds, return code, and what its JSON holds."""
    env = {**os.environ, **MULTICAST_OFF, "PYTHONUNBUFFERED": "1"}
    log("$ " + " ".join(cmd))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-2000:]
    except subprocess.TimeoutExpired as e:
        rc, tail = "timeout", str(e.stderr or "")[-2000:]
    wall = time.perf_counter() - t0
    out = {"command": " ".join(cmd), "rc": rc, "wall_s": round(wall, 2)}
    if rc == 0 and json_path.exists():
        res = json.loads(json_path.read_text())
        out.update(evaluate_s=res.get("seconds"), prepare_s=res.get("prepare_s"), questions_s=res.get("questions_s"),
                   processes=res.get("processes"), n=res.get("n"), results=res.get("results"))
    else:
        out["output_tail"] = tail
    log(f"  rc={rc} wall {wall:.1f} s" + (f", evaluate {out.get('evaluate_s')} s" if rc == 0 else f"\n{tail}"))
    return out


def questions_for(calibration: list[dict], target_s: float, step: int, most: int) -> int:
    """A question count whose one-process run takes about target_s, a multiple of step (equal shards).

    Two calibration runs give a line (fixed seconds + seconds per question); one run, a proportion.
    """
    (n1, t1), (n2, t2) = [(c["n"], c["evaluate_s"]) for c in (calibration[0], calibration[-1])]
    per_question = (t2 - t1) / (n2 - n1) if n2 != n1 and t2 > t1 else t2 / n2
    fixed = max(0.0, t2 - per_question * n2)
    return max(step, min(most, math.floor((target_s - fixed) / per_question / step) * step))


def scaling(single: dict, multi: dict) -> dict:
    """Speed-ups of the multi-process run (wall and evaluate seconds) and whether the results agree."""
    out = {"identical_results": single.get("results") is not None and single.get("results") == multi.get("results")}
    if single.get("rc") == 0 and multi.get("rc") == 0:
        out["speedup_wall"] = round(single["wall_s"] / multi["wall_s"], 3) if multi["wall_s"] else None
        if single.get("evaluate_s") and multi.get("evaluate_s"):
            out["speedup_evaluate"] = round(single["evaluate_s"] / multi["evaluate_s"], 3)
            out["efficiency_evaluate"] = round(out["speedup_evaluate"] / multi["processes"], 3)
        if single.get("questions_s") and multi.get("questions_s"):     # the model's part, without the scenes
            out["speedup_questions"] = round(single["questions_s"] / multi["questions_s"], 3)
            out["efficiency_questions"] = round(out["speedup_questions"] / multi["processes"], 3)
    return out


def markdown(result: dict) -> str:
    keys = ("speedup_wall", "speedup_evaluate", "efficiency_evaluate", "speedup_questions", "efficiency_questions")
    rows = ["| processes | device(s) | wall s | evaluate s | of which prepare s | speed-up (wall) | "
            "speed-up (evaluate) | efficiency (evaluate) | speed-up (questions) | efficiency (questions) |",
            "|---" * 10 + "|"]
    sc = result["scaling"]
    for r in result["runs"]:
        last = r is result["runs"][-1]
        cells = [sc.get(k, "-") if last else 1.0 for k in keys]
        rows.append(f"| {r.get('processes') or r['nproc']} | {r['device']} | {r['wall_s']} | "
                    f"{r.get('evaluate_s', '-')} | {r.get('prepare_s', '-')} | " + " | ".join(map(str, cells)) + " |")
    same = result["scaling"]["identical_results"]
    return (f"`python -m iwp.evaluate`, {result['questions']} questions x {len(result['methods'])} methods x "
            f"{len(result['ratios'])} ratios; accuracy rows identical across runs: {same}\n\n" + "\n".join(rows))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m iwp.evaluate.scaling", description=__doc__.splitlines()[0])
    p.add_argument("--nproc", type=int, default=max(2, torch.cuda.device_count()))
    p.add_argument("--questions", type=int, default=None, help="default: calibrated to --target-seconds")
    p.add_argument("--target-seconds", type=float, default=60.0, help="aimed one-process evaluate time")
    p.add_argument("--calibration-questions", type=int, nargs="+", default=[100, 400],
                   help="one calibration run per count (two fit fixed + per-question seconds)")
    p.add_argument("--max-questions", type=int, default=8000)
    p.add_argument("--methods", nargs="+", default=list(evaluate.METHODS))
    p.add_argument("--ratios", type=float, nargs="+", default=[1.0, 0.111, 0.05])
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--threads", type=int, default=4, help="torch threads per process (the same in both runs)")
    p.add_argument("--timeout", type=float, default=300, help="seconds per evaluate run")
    p.add_argument("--out-dir", default=None, help="where the evaluate JSON files go (default: beside --json)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    out_dir = Path(args.out_dir or (Path(args.json).parent if args.json else "."))
    out_dir.mkdir(parents=True, exist_ok=True)
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    common = ["--methods", *args.methods, "--ratios", *map(str, args.ratios), "--batch-size", str(args.batch_size),
              "--threads", str(args.threads)]
    result = {"benchmark": "evaluate-scaling", "methods": args.methods, "ratios": args.ratios,
              "batch_size": args.batch_size, "threads": args.threads, "nproc": args.nproc,
              "target_seconds": args.target_seconds,
              "gpu_count": torch.cuda.device_count(),     # names: the parent starts no CUDA context
              "torch": torch.__version__, "command": "python -m iwp.evaluate.scaling " + " ".join(argv or sys.argv[1:]),
              "runs": []}

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))

    n = args.questions
    if n is None:
        cals = []
        for m in args.calibration_questions:
            cal_path = out_dir / f"evaluate-calibration-{m}.json"
            cal = run(command(1, ["--questions", str(m), *common], cal_path, device), cal_path, args.timeout)
            cals.append({k: v for k, v in cal.items() if k != "results"})
            result["calibration"] = cals
            if cal["rc"] != 0:
                save()
                raise SystemExit("calibration run failed")
        n = questions_for(cals, args.target_seconds, args.nproc * args.batch_size, args.max_questions)
    result["questions"] = n
    for nproc in (1, args.nproc):
        path = out_dir / f"evaluate-{nproc}proc.json"
        res = run(command(nproc, ["--questions", str(n), *common], path, device), path, args.timeout)
        res.update(nproc=nproc, device=device if nproc == 1 else
                   (f"cuda:0-{nproc - 1}" if torch.cuda.is_available() else f"cpu x {nproc} (gloo)"))
        result["runs"].append(res)
        save()
    single, multi = result["runs"]
    result["scaling"] = scaling(single, multi)
    if single.get("results"):
        result["accuracy_table"] = evaluate.table(single["results"])
    for r in result["runs"]:
        r.pop("results", None)                  # kept in the evaluate JSON files
    save()
    print(markdown(result), flush=True)
    return result


if __name__ == "__main__":
    main()
