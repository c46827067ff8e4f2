"""python -m iwp.evaluate end to end on a few dozen questions."""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from iwp import evaluate


def test_evaluate_main_small_run(tmp_path, capsys):
    out, png = tmp_path / "toy.json", tmp_path / "toy.png"
    evaluate.main(["--n", "16", "--batch-size", "16", "--ratios", "1.0", "0.111", "--methods", "iwp", "random",
                   "--json", str(out), "--plot", str(png)])
    result = json.loads(out.read_text())
    assert result["split"] == "test" and result["n"] == 16
    rows = {(r["method"], r["keep_ratio"]): r for r in result["results"]}
    assert set(rows) == {("iwp", 1.0), ("random", 1.0), ("iwp", 0.111), ("random", 0.111)}
    assert all(r["n"] == 16 and 0.0 <= r["accuracy"] <= 1.0 for r in rows.values())
    assert rows["iwp", 1.0]["accuracy"] >= 0.5                          # the unpruned model answers
    assert "| iwp |" in capsys.readouterr().out and png.stat().st_size > 0
