"""Shared helpers for the model tests: tiny models (built once per session) and a no-cache reference."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import functools

import numpy as np
import pytest
import torch
from PIL import Image

import iwp


@functools.lru_cache(maxsize=None)
def _tiny(name: str):
    return iwp.models.family(name).tiny()


@pytest.fixture
def tiny():
    """tiny(name) -> (model, processor); the model is unpatched and back on sdpa after the test."""
    used = []

    def get(name: str):
        model, proc = _tiny(name)
        used.append(model)
        return model, proc
    yield get
    for model in used:
        iwp.remove(model)
        model.set_attn_implementation("sdpa")


def image(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype("uint8"))


def greedy(model, inputs, n: int = 6) -> torch.Tensor:
    return model.generate(**inputs, max_new_tokens=n, do_sample=False)


def kept_positions(selection) -> tuple[set[int], set[int]]:
    """(visual positions, kept visual positions) of a Selection."""
    visual, kept = set(), set()
    for g in selection.groups:
        visual.update(g.positions)
        kept.update(g.positions[k] for k in g.kept)
    return visual, kept


def surviving_positions(selection, length: int) -> list[int]:
    """Prompt positions that survive the cut: every non-visual position plus the kept visual ones."""
    visual, kept = kept_positions(selection)
    return [p for p in range(length) if p not in visual or p in kept]


def check_keep_all_identical(model, inputs, kind: str) -> None:
    """keep_ratio 1.0 and iwp.remove reproduce the unpatched generation; 0.25 prunes this kind."""
    base = greedy(model, inputs)
    iwp.apply(model, keep_ratio=1.0)
    assert torch.equal(greedy(model, inputs), base)
    iwp.apply(model, keep_ratio=0.25)
    assert greedy(model, inputs).shape == base.shape
    assert {g.kind for s in iwp.last_selection(model) for g in s.groups} == {kind}
    iwp.remove(model)
    assert torch.equal(greedy(model, inputs), base)


def check_cached_equals_recompute(model, inputs, layer: int, keep_ratio: float = 0.3) -> None:
    """Pruned cached generation equals a no-cache recomputation that drops the same positions."""
    iwp.apply(model, keep_ratio=keep_ratio, layer=layer)
    out = greedy(model, inputs)
    keep = surviving_positions(iwp.last_selection(model)[0], inputs["input_ids"].shape[1])
    iwp.remove(model)
    assert torch.equal(out, reference_generate(model, dict(inputs), keep, layer=layer))


class _Stop(Exception):
    pass


def reference_generate(model, inputs: dict, keep: list[int], layer: int, n: int = 6) -> torch.Tensor:
    """Greedy decoding without a cache, recomputing everything each step, dropping the same prompt
    positions before `layer` (an independent re-implementation of the cut, batch 1)."""
    lm = iwp.models.for_model(model).language_model(model)
    seq = dict(inputs)
    ids = seq["input_ids"]
    L = ids.shape[1]
    for _ in range(n):
        got = {}

        def grab(module, args, kwargs):
            got.update(kwargs)
            raise _Stop

        handle = lm.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            with torch.no_grad():
                model(**seq, use_cache=False)
        except _Stop:
            pass
        finally:
            handle.remove()
        h = got["inputs_embeds"]
        T = h.shape[1]
        pid = got.get("position_ids")
        if pid is None:
            pid = torch.arange(T)[None]
        if pid.ndim == 3 and pid.shape[0] == 4:
            pid = pid[1:]
        cos, sin = lm.rotary_emb(h, pid)
        rows = torch.tensor(sorted(keep) + list(range(L, T)))
        deepstack = got.get("deepstack_visual_embeds") or []        # Qwen3-VL: features added after layers 0..
        visual = got.get("visual_pos_masks")
        with torch.no_grad():
            for i, block in enumerate(lm.layers):
                if i == layer:
                    h, cos, sin = h[:, rows], cos[:, rows], sin[:, rows]
                t = h.shape[1]
                allowed = torch.ones(t, t, dtype=torch.bool).tril()
                mask = torch.zeros(t, t, dtype=h.dtype).masked_fill(~allowed, torch.finfo(h.dtype).min)[None, None]
                h = block(h, attention_mask=mask, position_embeddings=(cos, sin), position_ids=None)
                if i < len(deepstack):
                    seen = visual[0] if i < layer else visual[0][rows]          # visual positions still here
                    row_of = visual[0].long().cumsum(0) - 1                      # each one's row of features
                    feats = deepstack[i][row_of[torch.arange(T) if i < layer else rows][seen]]
                    h = h.clone()
                    h[0, seen] = h[0, seen] + feats
            logits = model.lm_head(lm.norm(h[:, -1:]))
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        seq["input_ids"] = torch.cat([seq["input_ids"], nxt], 1)
        if "attention_mask" in seq:
            seq["attention_mask"] = torch.cat([seq["attention_mask"], torch.ones_like(nxt)], 1)
        if "mm_token_type_ids" in seq:
            seq["mm_token_type_ids"] = torch.cat([seq["mm_token_type_ids"], torch.zeros_like(nxt)], 1)
    return seq["input_ids"]
