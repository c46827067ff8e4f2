"""The lmms-eval plugin: the `iwp` model through lmms-eval's entry points, and the iwp_toy task, whose accuracy
must equal python -m iwp.evaluate's on the same questions. Skipped without lmms-eval (pip install -e ".[lmms]")."""
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

lmms_eval = pytest.importorskip("lmms_eval", reason="lmms-eval not installed (pip install -e '.[lmms]')")
if not any(ep.name == "iwp" for ep in importlib.metadata.entry_points(group="lmms_eval.models")):
    pytest.skip("the iwp entry point is not installed (pip install -e '.[lmms]')", allow_module_level=True)

from lmms_eval.api.instance import Instance  # noqa: E402

from iwp.evaluate import toy as evaluate  # noqa: E402
from iwp.evaluate.lmms import TASKS  # noqa: E402
from iwp.evaluate.lmms.model import IWP  # noqa: E402
from iwp.evaluate.lmms.tasks.iwp_toy import toy as toy_task  # noqa: E402


def test_the_entry_point_registers_the_iwp_model():
    from lmms_eval.models import get_model
    assert get_model("iwp") is IWP


def _requests(model: IWP, docs: list[dict], kind: str, extra) -> list[Instance]:
    """Instances as lmms-eval builds them: (context, extra, doc_to_visual, doc_id, task, split)."""
    model.task_dict = {"iwp_toy": {"test": docs}}
    return [Instance(request_type=kind, arguments=(d["question"], extra(d), toy_task.doc_to_visual, i, "iwp_toy",
                                                   "test"), idx=0, metadata={"task": "iwp_toy", "doc_id": i,
                                                                             "repeats": 1})
            for i, d in enumerate(docs)]


def test_generate_and_loglikelihood_on_the_toy_model():
    docs = toy_task.docs(4)
    model = IWP(pretrained="toy", method="iwp", keep_ratio=0.25, layer=3, batch_size=2)
    answers = model.generate_until(_requests(model, docs, "generate_until",
                                             lambda d: {"max_new_tokens": 2, "until": []}))
    assert len(answers) == 4 and sum(a.strip() == d["answer"] for a, d in zip(answers, docs)) >= 2
    scored = model.loglikelihood(_requests(model, docs[:2], "loglikelihood", lambda d: " " + answers[0].strip()))
    assert all(lp < 0 for lp, _ in scored) and scored[0][1] is True    # its own greedy answer is greedy


def test_baseline_and_unknown_methods():
    assert not IWP(pretrained="toy", method="none", keep_ratio=0.111).pruned
    assert not IWP(pretrained="toy", method="iwp", keep_ratio=1.0).pruned
    with pytest.raises(ValueError):
        IWP(pretrained="toy", method="bogus")


def test_the_lmms_eval_command_matches_python_m_iwp_evaluate(tmp_path):
    """`lmms-eval --model iwp ... --tasks iwp_toy` scores exactly what python -m iwp.evaluate scores."""
    cli = Path(sys.executable).parent / "lmms-eval"
    args = ["--model", "iwp", "--model_args", "pretrained=toy,method=iwp,keep_ratio=0.111,layer=3",
            "--batch_size", "30", "--tasks", "iwp_toy", "--include_path", str(TASKS), "--output_path", str(tmp_path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([str(cli), "eval", *args], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(next(tmp_path.rglob("*_results.json")).read_text())
    lmms_acc = result["results"]["iwp_toy"]["exact_match,none"]
    assert result["n-samples"]["iwp_toy"]["effective"] == toy_task.QUESTIONS

    ours = evaluate.main(["--questions", str(toy_task.QUESTIONS), "--batch-size", "30", "--methods", "iwp",
                          "--ratios", "0.111", "--layer", "3"])["results"]
    assert round(lmms_acc, 4) == ours[0]["accuracy"] and 0.3 < lmms_acc < 1.0      # evaluate rounds to 4 places
