"""A model split over two devices with accelerate (device_map) prunes exactly as on one device.

Needs a GPU and accelerate: layers sit on cuda:0 and on the CPU, so input_ids, the pruning layer and the
layers after it live on different devices. Skipped on machines without a GPU (CI); run on the GPU machine.
"""
import copy

import pytest
import torch

import iwp
from iwp.toy import scenes
from iwp.toy.load import load, prompt

accelerate = pytest.importorskip("accelerate")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def _split_map(cut_after: int) -> dict:
    lm = "model.language_model"
    device_map = {"model.vision_tower": 0, "model.multi_modal_projector": 0, f"{lm}.embed_tokens": 0,
                  f"{lm}.rotary_emb": 0, f"{lm}.norm": "cpu", "lm_head": "cpu"}
    for i in range(4):
        device_map[f"{lm}.layers.{i}"] = 0 if i < cut_after else "cpu"
    return device_map


@pytest.mark.parametrize("layer,cut_after", [(2, 2), (1, 2), (3, 2), (0, 1)])
def test_split_model_prunes_like_one_device(layer, cut_after):
    model, proc = load()
    whole = copy.deepcopy(model).to("cuda")
    # main_device="cpu": modules mapped to the CPU run there (not offloaded), so two devices really compute
    split = accelerate.dispatch_model(model, device_map=_split_map(cut_after), main_device="cpu")
    images, _, q = scenes.generate(4, scenes.SPLIT_SEEDS["val"], kinds=scenes.BENCHMARK_KINDS)
    texts = [prompt(proc, q.text(i)) for i in range(4)]
    inputs = proc(text=texts, images=scenes.to_pil(images), padding=True, return_tensors="pt").to("cuda")
    outs, kept = [], []
    for m in (whole, split):
        for ratio in (1.0, 0.25):
            iwp.apply(m, keep_ratio=ratio, layer=layer)
            outs.append(m.generate(**inputs, max_new_tokens=3, do_sample=False).cpu())
            kept.append([g.kept for s in iwp.last_selection(m) for g in s.groups])
        iwp.remove(m)
    assert torch.equal(outs[0], outs[2]) and torch.equal(outs[1], outs[3])
    assert kept[1] == kept[3]
