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


@pytest.mark.parametrize("family", ["llava", "llava_onevision", "qwen2_5_vl", "qwen3_vl"])
def test_each_family_is_pruned_through_the_hook(tiny, family, monkeypatch):
    """The plugin's batches (chat template, left padding) pruned with seed = batch index, as iwp.apply would."""
    import numpy as np
    from PIL import Image

    import iwp
    from iwp.evaluate.lmms import model as plugin
    model, proc = tiny(family)
    calls = []
    monkeypatch.setattr(plugin.iwp, "apply", lambda m, **kw: calls.append(kw) or iwp.hook.apply(m, **kw))
    ims = [Image.fromarray((np.random.RandomState(s).rand(60, 90, 3) * 255).astype("uint8")) for s in range(3)]
    docs = [{"question": q, "image": im} for q, im in zip(["w1?", "w1 w2 w3?", "w2?"], ims)]
    lm = IWP(method="iwp", keep_ratio=0.5, layer=1, batch_size=2, loaded=(model, proc))
    got = lm.generate_until(_requests(lm, docs, "generate_until", lambda d: {"max_new_tokens": 3}))
    assert [c["seed"] for c in calls] == [0, 1] and all(c["keep_ratio"] == 0.5 and c["layer"] == 1 for c in calls)
    want = []
    for seed, chunk in enumerate([docs[:2], docs[2:]]):
        inputs = lm._inputs([d["question"] for d in chunk], [([d["image"].convert("RGB")], [], []) for d in chunk])
        with iwp.pruning(model, keep_ratio=0.5, layer=1, seed=seed):
            out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        want += proc.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert got == want and not iwp.hook.is_patched(model)


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
