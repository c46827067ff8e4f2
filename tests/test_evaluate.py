"""python -m iwp.evaluate end to end on a few dozen questions."""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from iwp.evaluate import toy as evaluate


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


def _evaluate_rank(rank: int, size: int, port: int, argv: list, out) -> None:
    from tests.ranks import join_group
    join_group(rank, size, port)
    import torch
    torch.set_num_threads(1)
    from iwp.evaluate import toy as evaluate
    result = evaluate.main(argv)
    out.put((rank, result["results"], result["processes"]))


def test_data_parallel_run_gives_the_single_process_results(tmp_path):
    """Two gloo ranks, each on a shard of the questions, gather to exactly what one process computes."""
    from iwp.evaluate import toy as evaluate
    from tests.ranks import run_ranks
    argv = ["--n", "24", "--batch-size", "6", "--ratios", "1.0", "0.111", "--methods", "iwp", "random"]
    single = evaluate.main(argv + ["--json", str(tmp_path / "one.json")])["results"]
    results = run_ranks(_evaluate_rank, 2, argv)
    assert len(results) == 2
    for rank, rows, processes in results:
        assert processes == 2
        assert rows == single
