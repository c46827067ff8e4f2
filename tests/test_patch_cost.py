"""What the pruning hook costs the device: no host syncs, few kernels, nothing per decoding step; and it
frees the previous call's selection before the next call's vision encoder allocates."""
import functools
import weakref

import pytest
import torch
from conftest import greedy
from test_models_llava_onevision import video_batch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

import iwp
from iwp.hook import api, scoring, state as hook_state
from iwp.models import base

# aten ops that launch no kernel (views, metadata, allocation) and those that wait for the device
FREE = {"view", "_unsafe_view", "transpose", "t", "expand", "slice", "select", "unsqueeze", "squeeze", "detach",
        "alias", "as_strided", "permute", "split", "split_with_sizes", "unbind", "narrow", "_reshape_alias",
        "empty", "empty_strided", "reshape", "lift_fresh", "is_nonzero", "_local_scalar_dense"}
SYNCS = {"nonzero", "_local_scalar_dense", "masked_select", "unique", "_unique2", "item", "lift_fresh"}


class Ops(TorchDispatchMode):
    """Counts kernels (ops that are not free and have a non-empty output) and host syncs (by op)."""

    def __init__(self):
        super().__init__()
        self.kernels, self.syncs = [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__.split(".")[0]
        outs = out if isinstance(out, (tuple, list)) else (out,)
        empty = all(isinstance(o, torch.Tensor) and o.numel() == 0 for o in outs)
        bool_index = name in ("index", "index_put", "index_put_") and any(
            isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in (args[1] or []))
        if name in SYNCS or bool_index:
            self.syncs.append(name)
        if name not in FREE and not empty:
            self.kernels.append(name)
        return out


@pytest.fixture
def counted(monkeypatch):
    """Counts the device work of iwp's hooks; planning on the host copy of the ids is not device work."""
    ops = Ops()

    def on(fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with ops:
                return fn(*args, **kwargs)
        return wrapped

    def off(fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with _disable_current_modes():
                return fn(*args, **kwargs)
        return wrapped

    for name in ("_on_layer", "_on_call"):
        monkeypatch.setattr(api, name, on(getattr(api, name)))
    monkeypatch.setattr(scoring, "_prompt_rows", off(scoring._prompt_rows))
    monkeypatch.setattr(scoring.Rows, "__init__", off(scoring.Rows.__init__))
    monkeypatch.setattr(hook_state.HostCopy, "get", off(hook_state.HostCopy.get))
    monkeypatch.setattr(base.Family, "groups", off(base.Family.groups))
    return ops


@pytest.mark.parametrize("method", ["random", "fastv"])
def test_hook_never_waits_for_the_device(tiny, counted, method):
    model, proc = tiny("llava_onevision")
    inputs = video_batch(model, proc, frames=6)
    iwp.apply(model, keep_ratio=0.25, method=method)
    greedy(model, inputs, 1)
    prefill = len(counted.kernels)
    assert counted.syncs == []
    greedy(model, inputs, 4)
    assert counted.syncs == [] and len(counted.kernels) == 2 * prefill     # decoding steps cost no kernels
    assert iwp.last_selection(model)[0].n_kept == round(0.25 * 25)


def test_hook_computes_only_what_the_selector_reads(tiny, counted):
    model, proc = tiny("llava_onevision")
    iwp.apply(model, keep_ratio=0.25, method="random")
    greedy(model, video_batch(model, proc, frames=6), 1)
    # norm, q/k/v projections, the kept index and four gathers; no RoPE'd keys, no last query, no features
    assert len(counted.kernels) <= 20 and "neg" not in counted.kernels and "index" not in counted.kernels
    g = iwp.last_selection(model)[0].groups[0]          # the record makes the RoPE'd keys when asked
    assert len(g.cover) == g.n and all(g.cover[k] == k for k in g.kept)


@pytest.mark.parametrize("method", ["iwp", "random", "divprune"])
def test_previous_selection_is_freed_before_the_next_encoder_runs(tiny, method):
    model, proc = tiny("llava_onevision")
    inputs = video_batch(model, proc, frames=3)
    iwp.apply(model, keep_ratio=0.25, method=method)
    greedy(model, inputs, 2)
    first = iwp.last_selection(model)[0]                 # still there after generate returns
    state = model._iwp_state
    held = [t for _, _, inp in state.record.groups[0] for t in (inp.q, inp.k, inp.v, inp.k_rope)]
    refs = [weakref.ref(t) for t in held + list(state.cut.position_embeddings)]
    del held
    alive = []
    hook = model.model.vision_tower.register_forward_pre_hook(
        lambda *a: alive.append(sum(r() is not None for r in refs)))
    try:
        greedy(model, inputs, 2)
    finally:
        hook.remove()
    assert alive == [0]
    assert iwp.last_selection(model)[0].groups[0].kept == first.groups[0].kept


def test_rows_and_kept_positions_with_and_without_runs():
    rows = scoring.Rows(torch.tensor([3, 4, 5]), "cpu")
    x = torch.arange(10) * 10
    assert rows.contiguous and rows.take(x).tolist() == [30, 40, 50]
    gappy = scoring.Rows(torch.tensor([2, 4, 5]), "cpu")
    assert not gappy.contiguous and gappy.take(x).tolist() == [20, 40, 50]
    ramp = scoring.Once(lambda: torch.arange(12))
    picks = [torch.tensor([2, 0]), torch.tensor([1])]
    runs = [scoring.Rows(torch.tensor([2, 3, 4]), "cpu"), scoring.Rows(torch.tensor([7, 8]), "cpu")]
    vis = scoring.Rows(torch.tensor([2, 3, 4, 7, 8]), "cpu")
    want = [0, 1, 2, 4, 5, 6, 8, 9, 10, 11]
    assert scoring._kept_positions(list(zip(runs, picks)), vis, 12, ramp).tolist() == want
    spread = [scoring.Rows(torch.tensor([2, 4, 5]), "cpu"), scoring.Rows(torch.tensor([7, 9]), "cpu")]
    vis = scoring.Rows(torch.tensor([2, 4, 5, 7, 9]), "cpu")               # picks: 5, 2 and 9
    assert scoring._kept_positions(list(zip(spread, picks)), vis, 12, ramp).tolist() == [0, 1, 2, 3, 5, 6, 8, 9, 10, 11]


def test_rotated_is_the_models_rope_of_one_operand():
    from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb
    k, cos, sin = torch.randn(2, 5, 8), torch.randn(5, 8), torch.randn(5, 8)
    want = apply_rotary_pos_emb(k[None], k[None], cos[None], sin[None])[1][0]
    assert torch.equal(scoring._rotated(apply_rotary_pos_emb, k, cos, sin), want)


def test_keep_all_scores_nothing_until_a_selection_is_asked_for(tiny, counted):
    """keep_ratio 1.0 cuts nothing: the prefill does no device work for iwp; last_selection scores later,
    with the same result as scoring during the prefill would give."""
    model, proc = tiny("llava_onevision")
    inputs = video_batch(model, proc, frames=6)
    iwp.apply(model, keep_ratio=1.0)
    greedy(model, inputs, 3)
    assert counted.kernels == []
    sel = iwp.last_selection(model)[0]
    assert sel.n_kept == sel.n_visual and len(sel.groups[0].kept) == sel.groups[0].budget
