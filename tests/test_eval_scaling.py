"""python -m iwp.evaluate.scaling: the command lines it runs, the calibrated question count, and the report, with the
evaluate runs stood in for (the real data-parallel evaluate is tested in test_evaluate.py)."""
import json
import subprocess
import sys

from iwp.evaluate import scaling as eval_scaling

ROWS = [{"method": "iwp", "keep_ratio": 1.0, "accuracy": 1.0, "n": 0, "per_kind": {}},
        {"method": "iwp", "keep_ratio": 0.111, "accuracy": 0.8, "n": 0, "per_kind": {}}]


def test_command_lines(tmp_path):
    one = eval_scaling.command(1, ["--questions", "8"], tmp_path / "a.json", "cuda:0")
    assert one[:3] == [sys.executable, "-m", "iwp.evaluate"] and one[-2:] == ["--device", "cuda:0"]
    two = eval_scaling.command(2, ["--questions", "8"], tmp_path / "b.json", "cuda:0")
    assert two[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    assert two[5:8] == ["-m", "iwp.evaluate", "--questions"] and "--device" not in two   # each rank: its own GPU


def test_calibrated_count_is_a_multiple_of_the_shard_step():
    cal = [{"evaluate_s": 10.0, "n": 100}]
    assert eval_scaling.questions_for(cal, 45.0, 100, 4000) == 400
    assert eval_scaling.questions_for(cal, 1.0, 100, 4000) == 100            # at least one batch per process
    assert eval_scaling.questions_for(cal, 1e6, 100, 4000) == 4000


def test_two_calibration_runs_separate_the_fixed_seconds():
    # 5 s fixed + 0.02 s per question: a proportion from the 100-question run alone would aim 6x too low
    cal = [{"evaluate_s": 7.0, "n": 100}, {"evaluate_s": 13.0, "n": 400}]
    assert eval_scaling.questions_for(cal, 65.0, 100, 8000) == 3000
    assert eval_scaling.questions_for(cal[:1], 65.0, 100, 8000) == 900


def _fake_evaluate(seconds_per_question: dict, rows_by_nproc: dict):
    """A subprocess.run stand-in that writes the JSON python -m iwp.evaluate would write."""
    calls = []

    def fake(cmd, env, capture_output, text, timeout):
        calls.append(cmd)
        nproc = 2 if "torch.distributed.run" in cmd else 1
        n = int(cmd[cmd.index("--questions") + 1])
        path = cmd[cmd.index("--json") + 1]
        rows = [{**r, "n": n} for r in rows_by_nproc[nproc]]
        with open(path, "w") as f:
            json.dump({"seconds": n * seconds_per_question[nproc], "prepare_s": 0.0,
                   "questions_s": n * seconds_per_question[nproc], "processes": nproc, "n": n, "results": rows}, f)
        assert env["NCCL_NVLS_ENABLE"] == "0" and env["NVSHMEM_DISABLE_NVLS"] == "1"
        return subprocess.CompletedProcess(cmd, 0, "", "")
    return fake, calls


def test_main_calibrates_runs_both_and_compares(tmp_path, monkeypatch, capsys):
    fake, calls = _fake_evaluate({1: 0.1, 2: 0.05}, {1: ROWS, 2: ROWS})
    monkeypatch.setattr(eval_scaling.subprocess, "run", fake)
    out = tmp_path / "scaling.json"
    res = eval_scaling.main(["--nproc", "2", "--target-seconds", "20", "--batch-size", "10", "--methods", "iwp",
                             "--ratios", "1.0", "0.111", "--json", str(out)])
    assert len(calls) == 4                                        # two calibrations, one process, torchrun
    assert res["questions"] == 200 and [c["n"] for c in res["calibration"]] == [100, 400]
    assert [r["nproc"] for r in res["runs"]] == [1, 2] and all(r["rc"] == 0 for r in res["runs"])
    assert res["scaling"]["identical_results"] is True and res["scaling"]["speedup_evaluate"] == 2.0
    assert res["scaling"]["efficiency_evaluate"] == 1.0 and "speedup_wall" in res["scaling"]
    assert res["scaling"]["speedup_questions"] == 2.0 and res["scaling"]["efficiency_questions"] == 1.0
    assert json.loads(out.read_text())["scaling"] == res["scaling"]
    assert (tmp_path / "evaluate-1proc.json").exists() and (tmp_path / "evaluate-2proc.json").exists()
    assert "| 2 |" in capsys.readouterr().out and "| iwp |" in res["accuracy_table"]


def test_different_accuracy_rows_are_reported(tmp_path, monkeypatch):
    other = [ROWS[0], {**ROWS[1], "accuracy": 0.79}]
    fake, _ = _fake_evaluate({1: 0.1, 2: 0.05}, {1: ROWS, 2: other})
    monkeypatch.setattr(eval_scaling.subprocess, "run", fake)
    res = eval_scaling.main(["--questions", "40", "--batch-size", "10", "--methods", "iwp", "--ratios", "1.0", "0.111",
                             "--out-dir", str(tmp_path)])
    assert res["questions"] == 40 and "calibration" not in res
    assert res["scaling"]["identical_results"] is False
