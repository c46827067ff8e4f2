"""scripts/gpu_demo_runner.py on CPU with tiny widths: the JSON it writes and its markdown report."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("gpu_demo_runner", ROOT / "scripts" / "gpu_demo_runner.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_demo_runner_small(tmp_path, capsys):
    script = _script()
    out = tmp_path / "runner.json"
    assert script.main(["--small", "--models", "qwen2.5-vl-3b", "--inputs", "image", "--rounds", "1",
                        "--warmup", "0", "--new-tokens", "2", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    (model,) = data["models"]
    rows = model["inputs"]["image"]["rows"]
    assert [r["arm"] for r in rows] == ["unpruned", "iwp 22.2%", "iwp 11.1%"]
    n = rows[0]["visual_tokens"]
    assert [r["visual_tokens"] for r in rows] == [n, round(0.222 * n), round(0.111 * n)]
    for r in rows:
        stages = [r[f"{k}_ms"] for k in script.STAGE_KEYS]
        assert all(s >= 0 for s in stages) and sum(stages) <= r["total_ms"] * 1.05 + 1
    assert rows[0]["selection_hook_ms"] == 0 and rows[2]["layer"] == 2
    capsys.readouterr()
    script.main(["--report", str(out)])
    table = capsys.readouterr().out
    assert table.count("| qwen2.5-vl-3b | image 320x180 |") == 3
