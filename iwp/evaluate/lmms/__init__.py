"""lmms-eval plugin: the `iwp` model (entry point group `lmms_eval.models`) and the local task iwp_toy.

    pip install "iwp[lmms]"
    lmms-eval --model iwp --model_args pretrained=toy,method=iwp,keep_ratio=0.111,layer=3 \\
        --tasks iwp_toy --include_path "$(python -c 'import iwp.evaluate.lmms as m; print(m.TASKS)')"
"""
from pathlib import Path

TASKS = Path(__file__).resolve().parent / "tasks"


def manifest():
    """The entry point's payload: lmms-eval calls it while building its model registry."""
    from lmms_eval.models.registry_v2 import ModelManifest
    return ModelManifest(model_id="iwp", simple_class_path="iwp.evaluate.lmms.model.IWP")
