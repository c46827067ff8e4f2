"""iwp.accelerate_vision: bitwise equal to stock on the real Qwen2.5-VL-3B vision config (fewer layers, random
weights) and on OneVision; an instance patch whose undo is exact; skipped, with a reason, where not proven."""
import copy
import functools
import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import greedy

import iwp
from iwp import vision_speed

try:                                                  # fused_rotary on this CPU machine (no interpreter)
    import triton  # noqa: F401
    ROTARY_OFF = {"fused_rotary": "a CUDA kernel: the vision tower is on cpu"}
except ImportError:
    ROTARY_OFF = {"fused_rotary": "Triton is not installed"}
CONFIG_3B = Path(__file__).parent / "fixtures" / "qwen2.5-vl-3b-instruct.config.json"   # the published config.json


@functools.lru_cache(maxsize=None)
def _qwen_real_vision(depth: int = 2, full=(1,), window_size: int | None = None, dtype=torch.float32):
    """Qwen2.5-VL with the real 3B vision config cut to `depth` blocks (windowed except `full`), a tiny text
    model; built once per arguments (tests leave it unpatched, on sdpa)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    vc = json.loads(CONFIG_3B.read_text())["vision_config"]
    vc.update(depth=depth, fullatt_block_indexes=list(full))
    if window_size is not None:
        vc["window_size"] = window_size
    cfg = Qwen2_5_VLConfig(
        vision_config=vc, image_token_id=60, video_token_id=61, vision_start_token_id=62, vision_end_token_id=63,
        text_config=dict(vocab_size=64, hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                         intermediate_size=128, num_key_value_heads=2, bos_token_id=1, eos_token_id=2,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]}))
    torch.manual_seed(0)
    return Qwen2_5_VLForConditionalGeneration(cfg).eval().to(dtype)


def _vision(model, grids, seed=0):
    n = sum(t * h * w for t, h, w in grids)
    vc = model.config.vision_config
    x = torch.randn(n, 3 * vc.temporal_patch_size * vc.patch_size ** 2,
                    generator=torch.Generator().manual_seed(seed)).to(model.dtype)
    with torch.no_grad():
        out = model.model.visual(x, grid_thw=torch.tensor(grids))
    return out.pooler_output, out.last_hidden_state


def _forwards(model):
    return [("forward" in vars(blk.attn)) for blk in model.model.visual.blocks]


def test_the_real_3b_vision_config():
    vc = _qwen_real_vision(depth=2).config.vision_config
    assert (vc.hidden_size, vc.num_heads, vc.window_size, vc.patch_size, vc.spatial_merge_size) == (1280, 16, 112, 14, 2)
    assert json.loads(CONFIG_3B.read_text())["vision_config"]["fullatt_block_indexes"] == [7, 15, 23, 31]


# image 1x12x20 (merged 6x10: windows of 4 cut at both edges), an image whose merged grid is odd (7x11), a
# 2-slice (4-frame) video, two inputs at once (image + 3-slice video), one window covering a whole tiny image
GRIDS = [[(1, 12, 20)], [(1, 14, 10)], [(2, 10, 12)], [(1, 8, 8), (3, 6, 10)], [(1, 4, 4)]]


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_qwen_batched_attention_is_bitwise_stock(impl):
    model = _qwen_real_vision()
    model.set_attn_implementation(impl)
    for grids in (GRIDS if impl == "sdpa" else GRIDS[1::2]):
        stock = _vision(model, grids)
        report = iwp.accelerate_vision(model)
        try:
            assert report == {"applied": ["batched_vision_attention"], "skipped": ROTARY_OFF}
            assert all(_forwards(model))
            fast = _vision(model, grids)
        finally:
            iwp.stock_vision(model)
            model.set_attn_implementation("sdpa")
        assert not any(_forwards(model))
        assert all(torch.equal(a, b) for a, b in zip(stock, fast)), grids


@pytest.mark.parametrize("window_size,frames", [(84, 3), (140, 1)])
def test_qwen_odd_window_sizes_and_frame_counts_in_bfloat16(window_size, frames):
    # windows of 3 and 5 merged units: grids that do not divide by the window; a 6-frame video, an image
    model = _qwen_real_vision(depth=2, full=(1,), window_size=window_size, dtype=torch.bfloat16)
    grids = [(frames, 10, 14)]
    stock = _vision(model, grids, seed=frames)
    iwp.accelerate_vision(model)
    try:
        fast = _vision(model, grids, seed=frames)
    finally:
        iwp.stock_vision(model)
    assert all(torch.equal(a, b) for a, b in zip(stock, fast))


def test_qwen_plan_groups_windows_by_length():
    cu = torch.tensor([0, 64, 128, 160, 224, 256, 256, 272], dtype=torch.int32)
    plan = {length: (n, where) for length, n, where in vision_speed._plan(cu)}
    assert set(plan) == {64, 32, 16}                      # the empty window is dropped
    assert plan[64][0] == 3 and plan[64][1].tolist() == list(range(0, 128)) + list(range(160, 224))
    assert plan[32][0] == 2 and plan[32][1].tolist() == list(range(128, 160)) + list(range(224, 256))
    assert plan[16] == (1, 256)                           # a contiguous run: a view, no gather
    frames = torch.tensor([0, 100, 200, 300])
    assert vision_speed._plan(frames) == [(100, 3, 0)]     # full attention over 3 frames: one view


@pytest.mark.parametrize("family,grid", [("qwen2_5_vl", (4, 8, 12)), ("qwen3_vl", (3, 4, 6))])
def test_undo_is_exact_and_generate_is_unchanged(tiny, family, grid):
    video_batch = importlib.import_module(f"test_models_{family}").video_batch
    model, proc = tiny(family)
    stock_forward = type(model.model.visual.blocks[0].attn).forward
    inputs = video_batch(model, proc, grids=(grid,))
    base = greedy(model, inputs)
    iwp.accelerate_vision(model)
    try:
        assert iwp.accelerate_vision(model)["applied"] == ["batched_vision_attention"]     # idempotent
        assert torch.equal(greedy(model, inputs), base)
        iwp.apply(model, keep_ratio=0.25)                 # pruning on top, removed, leaves the vision patch
        iwp.remove(model)
        assert all(_forwards(model))
    finally:
        iwp.stock_vision(model)
    for blk in model.model.visual.blocks:
        assert "forward" not in vars(blk.attn) and blk.attn.forward.__func__ is stock_forward
    assert vision_speed.applied_parts(model) == [] and not hasattr(model, "_iwp_vision")
    assert torch.equal(greedy(model, inputs), base)


def test_patches_only_this_instance(tiny):
    model, _ = tiny("qwen2_5_vl")
    other = _qwen_real_vision()
    iwp.accelerate_vision(model)
    try:
        assert not any(_forwards(other)) and all(_forwards(model))
    finally:
        iwp.stock_vision(model)


def test_skips_flash_attention_and_unchecked_sources(tiny, monkeypatch):
    model, _ = tiny("qwen2_5_vl")
    cfg = model.model.visual.config
    monkeypatch.setattr(cfg, "_attn_implementation_internal", "flash_attention_2", raising=False)
    if cfg._attn_implementation == "flash_attention_2":
        report = iwp.accelerate_vision(model)
        assert report["applied"] == [] and "varlen" in report["skipped"]["batched_vision_attention"]
        assert not any(_forwards(model))
    monkeypatch.undo()
    assert cfg._attn_implementation == "sdpa"
    monkeypatch.setattr(vision_speed, "_QWEN25_ATTENTION_SOURCES", {})
    report = iwp.accelerate_vision(model)
    assert report["applied"] == [] and "not the one checked" in report["skipped"]["batched_vision_attention"]
    assert not any(_forwards(model)) and not hasattr(model, "_iwp_vision")
    assert iwp.accelerate_vision(torch.nn.Linear(2, 2))["applied"] == []          # no family: nothing done
    report = iwp.accelerate_vision(model.model)            # the base model: not the layout checked
    assert report["applied"] == [] and "layout" in report["skipped"]["batched_vision_attention"]


def test_only_checked_implementation_and_device_pairs(tiny, monkeypatch):
    model, _ = tiny("qwen2_5_vl")
    monkeypatch.setattr(vision_speed, "_EXACT", {("eager", "cpu")})
    report = iwp.accelerate_vision(model)                 # sdpa on cpu taken out of the table: skipped
    assert report["applied"] == [] and "'sdpa' on cpu" in report["skipped"]["batched_vision_attention"]
    monkeypatch.undo()
    grids = [(1, 8, 12)]
    stock = _vision(model, grids)
    iwp.accelerate_vision(model)
    planned = []
    monkeypatch.setattr(vision_speed, "_plan", lambda cu: planned.append(cu) or [])
    try:
        monkeypatch.setattr(vision_speed, "_EXACT", set())   # e.g. moved to a device not checked, after patching
        assert all(torch.equal(a, b) for a, b in zip(stock, _vision(model, grids))) and planned == []
    finally:
        iwp.stock_vision(model)


# ---------------------------------------------------------------------------------------------- OneVision

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("frames,side,dim", [(1, 27, 64), (3, 27, 40), (8, 5, 33), (2, 4, 16), (5, 9, 7)])
def test_channels_last_pooling_is_bitwise_the_stock_pooling(dtype, frames, side, dim):
    from types import SimpleNamespace

    from transformers.models.llava_onevision.modeling_llava_onevision import LlavaOnevisionModel
    fake = SimpleNamespace(config=SimpleNamespace(vision_config=SimpleNamespace(image_size=side * 14, patch_size=14)))
    x = torch.randn(frames, side * side, dim, generator=torch.Generator().manual_seed(side * dim)).to(dtype)
    stock = LlavaOnevisionModel.apply_pooling(fake, x)
    fast = vision_speed.apply_pooling_channels_last(fake, x)
    assert fast.shape == stock.shape == (frames, ((side + 1) // 2) ** 2, dim) and fast.dtype == dtype
    assert torch.equal(fast, stock)


def test_onevision_parts_are_exact_and_undone(tiny):
    import transformers
    from packaging import version
    from transformers.models.llava_onevision.modeling_llava_onevision import LlavaOnevisionModel
    from test_models_llava_onevision import CASES
    model, proc = tiny("llava_onevision")
    inputs = CASES["video-b2"](model, proc)
    base = greedy(model, inputs)
    kept = []
    hook = model.model.vision_tower.register_forward_hook(
        lambda m, a, out: kept.append(sum(h is not None for h in (out.hidden_states or ()))))
    try:
        with torch.no_grad():
            feats = model.model.get_video_features(inputs["pixel_values_videos"]).pooler_output
        report = iwp.accelerate_vision(model)
        lean = "output_hidden_states=True" in __import__("inspect").getsource(LlavaOnevisionModel.get_video_features)
        assert report["applied"] == ["channels_last_pooling"] + (["lean_hidden_states"] if lean else [])
        assert lean or "one layer" in report["skipped"]["lean_hidden_states"]
        assert lean is (version.parse(transformers.__version__) < version.parse("5.18"))    # 5.17 asks for every layer, 5.18+ for one
        assert model.model.apply_pooling.__func__ is vision_speed.apply_pooling_channels_last
        with torch.no_grad():
            assert torch.equal(model.model.get_video_features(inputs["pixel_values_videos"]).pooler_output, feats)
        assert kept[-1] == 1 or not lean                  # the tower held one layer's states, not all
        assert torch.equal(greedy(model, inputs), base)
        iwp.apply(model, keep_ratio=0.25)
        iwp.remove(model)
        assert "apply_pooling" in vars(model.model)       # iwp never touches the vision patches
        assert iwp.accelerate_vision(model, skip=["lean_hidden_states"])["skipped"] == {
            "lean_hidden_states": "skipped on request"}
    finally:
        hook.remove()
        iwp.stock_vision(model)
    assert "apply_pooling" not in vars(model.model) and "forward" not in vars(model.model.vision_tower)
    assert model.model.apply_pooling.__func__ is LlavaOnevisionModel.apply_pooling
    assert torch.equal(greedy(model, inputs), base)


def test_skip_leaves_a_part_out():
    assert vision_speed.vision_parts(torch.nn.Linear(1, 1)) == []
    from types import SimpleNamespace
    fake = SimpleNamespace(config=SimpleNamespace(model_type="llava_onevision"))
    assert vision_speed.vision_parts(fake) == ["channels_last_pooling", "lean_hidden_states"]


@pytest.mark.parametrize("off", [False, True])
def test_the_demo_loads_models_with_accelerate_vision(monkeypatch, off):
    from iwp.demo import runner
    seen = []
    monkeypatch.setattr(iwp, "accelerate_vision", lambda model: seen.append(model))
    monkeypatch.setenv("IWP_STOCK_VISION", "1" if off else "0")
    model, _, _ = runner.load_model(runner.TINY)
    assert seen == ([] if off else [model])


def test_vision_bench_checks_bitwise_and_times(tiny):
    from iwp.bench import vision as bench_vision
    model, _ = tiny("qwen2_5_vl")
    res = bench_vision.check_input(model, [(1, 8, 12), (2, 6, 10)], repeats=2, profile_rows=3)
    assert res["bitwise_equal"] is True and res["max_abs_diff"] == 0.0
    assert res["report"]["applied"] == ["batched_vision_attention"] and res["tokens"] == (96 + 120) // 4
    assert len(res["samples_ms"]["stock"]) == len(res["samples_ms"]["accelerated"]) == 2 and res["speedup"] > 0
    assert "Name" in res["profile"] and vision_speed.applied_parts(model) == []     # left unpatched


def test_instance_forwards_set_by_others_are_kept(tiny):
    from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module
    model, _ = tiny("qwen2_5_vl")
    attn = model.model.visual.blocks[0].attn
    add_hook_to_module(attn, ModelHook())              # as a device map does: an instance forward
    try:
        report = iwp.accelerate_vision(model)
        assert report["applied"] == [] and "already replaced" in report["skipped"]["batched_vision_attention"]
        assert not any(_forwards(model)[1:])
    finally:
        remove_hook_from_module(attn)
        vars(attn).pop("forward", None)                  # accelerate leaves the old forward on the instance
    ov, _ = tiny("llava_onevision")
    tower = ov.model.vision_tower
    add_hook_to_module(tower, ModelHook())
    try:
        hooked = vars(tower)["forward"]
        iwp.accelerate_vision(ov)
        iwp.stock_vision(ov)
        assert vars(tower)["forward"] is hooked          # put back, not dropped
    finally:
        remove_hook_from_module(tower)
        vars(tower).pop("forward", None)


@pytest.mark.parametrize("impl,dtype", [("sdpa", torch.float32), ("eager", torch.float32), ("sdpa", torch.bfloat16)])
def test_qwen3_batched_attention_is_bitwise_stock_deepstack_included(impl, dtype):
    """Qwen3-VL's vision attention (one chunk per image / temporal slice): an image, a 3-slice video, both."""
    model = iwp.models.family("qwen3_vl").tiny()[0].to(dtype)
    model.set_attn_implementation(impl)
    vc = model.config.vision_config

    def run(grids):
        n = sum(t * h * w for t, h, w in grids)
        x = torch.randn(n, 3 * vc.temporal_patch_size * vc.patch_size ** 2,
                        generator=torch.Generator().manual_seed(n)).to(dtype)
        with torch.no_grad():
            out = model.model.visual(x, grid_thw=torch.tensor(grids))
        return [out.pooler_output, out.last_hidden_state, *out.deepstack_features]

    for grids in ([(1, 8, 12)], [(3, 4, 6)], [(1, 6, 6), (2, 4, 8)]):
        stock = run(grids)
        report = iwp.accelerate_vision(model)
        try:
            assert report == {"applied": ["batched_vision_attention"], "skipped": ROTARY_OFF}
            fast = run(grids)
        finally:
            iwp.stock_vision(model)
        assert not any(_forwards(model))
        assert all(torch.equal(a, b) for a, b in zip(stock, fast)), (impl, dtype, grids)


# --------------------------------------------------------------------- aligned_mlp: exact=False, NOT bitwise

def _snapshot(model):
    """Every state_dict entry: (a copy of its values, shape, stride, storage bytes); keys in order."""
    return [(k, v.clone(), v.shape, v.stride(), v.untyped_storage().nbytes()) for k, v in model.state_dict().items()]


def _same_params(model, snap) -> bool:
    now = _snapshot(model)
    return [s[0] for s in now] == [s[0] for s in snap] and all(
        torch.equal(a[1], b[1]) and a[2:] == b[2:] for a, b in zip(now, snap))


def _close(stock, out, rel=1e-5):
    """float32: only the MLP GEMMs' summation order changed (K = 3420 -> 3424). Reassociating a sum of K float32
    terms moves it by about sqrt(K) * 2**-24 of its magnitude (~4e-6 at K = 3424; measured ~5e-7 here after 2
    blocks): relative L2 1e-5 and max |diff| 1e-4 of max |x| are far above that and far below what a wrong
    padded row or column would give (order 1)."""
    for a, b in zip(stock, out):
        assert (a - b).norm() <= rel * a.norm() and (a - b).abs().max() <= 10 * rel * a.abs().max()


def _unaligned(tiny, family, width=60):
    """The tiny model of a family rebuilt with a vision MLP `width` wide (not a multiple of 8)."""
    model, proc = tiny(family)
    cfg = copy.deepcopy(model.config)
    cfg.vision_config.intermediate_size = width
    torch.manual_seed(0)
    return type(model)(cfg).eval(), proc


def test_aligned_mlp_is_close_to_stock_and_undone_bitwise():
    model = _qwen_real_vision()                       # the real 3B vision config: MLP 3420 wide
    mlp = model.model.visual.blocks[0].mlp
    assert mlp.gate_proj.out_features == 3420
    grids = [(1, 4, 8), (2, 4, 4)]                    # an image and a 4-frame video in one call
    snap, ptrs = _snapshot(model), [p.data_ptr() for p in model.parameters()]
    stock = _vision(model, grids)
    try:
        assert iwp.accelerate_vision(model) == {"applied": ["batched_vision_attention"], "skipped": ROTARY_OFF}
        assert [p.data_ptr() for p in model.parameters()] == ptrs and "forward" not in vars(mlp)   # exact: untouched
        report = iwp.accelerate_vision(model, exact=False)
        assert report == {"applied": ["batched_vision_attention", "aligned_mlp"], "skipped": ROTARY_OFF,
                          "inexact": ["aligned_mlp"]}
        # padded in place: same keys and values, the storage 3424 wide, no second copy of the weights
        assert [k for k, *_ in _snapshot(model)] == [k for k, *_ in snap]
        assert all(torch.equal(a, b) for (_, a, *_), (_, b, *_) in zip(_snapshot(model), snap))
        assert mlp.gate_proj.weight.shape == (3420, 1280) and mlp.down_proj.weight.stride() == (3424, 1)
        assert mlp.up_proj.weight.untyped_storage().nbytes() == 3424 * 1280 * 4
        close = _vision(model, grids)
        _close(stock, close)
        assert iwp.accelerate_vision(model, exact=False)["inexact"] == ["aligned_mlp"]       # idempotent
        report = iwp.accelerate_vision(model)             # exact=True takes it off again
        assert report == {"applied": ["batched_vision_attention"],
                          "skipped": {"aligned_mlp": "not bitwise exact (exact=True)", **ROTARY_OFF}}
        assert _same_params(model, snap) and all(torch.equal(a, b) for a, b in zip(stock, _vision(model, grids)))
        iwp.accelerate_vision(model, exact=False)
        assert iwp.accelerate_vision(model, skip=["aligned_mlp"], exact=False)["inexact"] == []
        iwp.accelerate_vision(model, exact=False)
    finally:
        iwp.stock_vision(model)
    assert _same_params(model, snap) and all(p.is_contiguous() for p in model.parameters())
    assert "forward" not in vars(mlp) and not hasattr(model, "_iwp_vision")
    assert all(torch.equal(a, b) for a, b in zip(stock, _vision(model, grids)))


def test_aligned_mlp_runs_the_padded_projections():
    model = _qwen_real_vision()
    mlp = model.model.visual.blocks[1].mlp
    x = torch.randn(5, 1280, generator=torch.Generator().manual_seed(1))

    def pad(w, dim):                                  # an independent zero padding to 3424
        return torch.cat([w, w.new_zeros(w.shape[:dim] + (4,) + w.shape[dim + 1:])], dim)
    gate, up, down = mlp.gate_proj, mlp.up_proj, mlp.down_proj
    h = F.silu(F.linear(x, pad(gate.weight, 0), pad(gate.bias, 0))) * F.linear(x, pad(up.weight, 0), pad(up.bias, 0))
    expected = F.linear(h, pad(down.weight, 1), down.bias)
    iwp.accelerate_vision(model, exact=False)
    try:
        with torch.no_grad():
            assert torch.equal(mlp(x), expected)
    finally:
        iwp.stock_vision(model)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "llava_onevision"])
def test_aligned_mlp_skips_aligned_widths(tiny, family):
    model, _ = tiny(family)                           # tiny widths 64; the real Qwen3-VL / SigLIP MLPs are 4304
    before = [p.data_ptr() for p in model.parameters()]
    report = iwp.accelerate_vision(model, exact=False)
    try:
        assert report["inexact"] == [] and "already a multiple of 8" in report["skipped"]["aligned_mlp"]
        assert "aligned_mlp" not in report["applied"] and [p.data_ptr() for p in model.parameters()] == before
    finally:
        iwp.stock_vision(model)
    assert vision_speed.vision_parts(model) == vision_speed.vision_parts(model, exact=False)[:-1]
    assert vision_speed.vision_parts(model, exact=False)[-1] == "aligned_mlp"


def test_aligned_mlp_ungated_layout_deepstack_included(tiny):
    """Qwen3-VL's fc1 -> act -> fc2 MLP, made 60 wide: close to stock (DeepStack features too), undone bitwise."""
    model, _ = _unaligned(tiny, "qwen3_vl")
    vc = model.config.vision_config
    grids = [(1, 6, 6), (2, 4, 8)]
    n = sum(t * h * w for t, h, w in grids)
    x = torch.randn(n, 3 * vc.temporal_patch_size * vc.patch_size ** 2, generator=torch.Generator().manual_seed(n))

    def run():
        with torch.no_grad():
            out = model.model.visual(x, grid_thw=torch.tensor(grids))
        return [out.pooler_output, out.last_hidden_state, *out.deepstack_features]
    snap, stock = _snapshot(model), run()
    report = iwp.accelerate_vision(model, exact=False)
    try:
        assert report["inexact"] == ["aligned_mlp"]
        assert model.model.visual.blocks[0].mlp.linear_fc2.weight.stride() == (64, 1)
        _close(stock, run())
    finally:
        iwp.stock_vision(model)
    assert _same_params(model, snap) and all(torch.equal(a, b) for a, b in zip(stock, run()))


def test_aligned_mlp_skips_hooks_and_falls_back_when_moved(tiny):
    model, _ = _unaligned(tiny, "qwen2_5_vl")
    fc = model.model.visual.blocks[1].mlp.up_proj
    handle = fc.register_forward_hook(lambda *a: None)
    try:
        report = iwp.accelerate_vision(model, exact=False)
        assert report["inexact"] == [] and "hook" in report["skipped"]["aligned_mlp"]
        assert "forward" not in vars(model.model.visual.blocks[0].mlp)       # all or nothing
    finally:
        handle.remove()
        iwp.stock_vision(model)
    grids = [(1, 8, 12)]
    iwp.accelerate_vision(model, exact=False)
    try:
        mlp, x = model.model.visual.blocks[0].mlp, torch.randn(3, model.config.vision_config.hidden_size)
        mlp(x).square().sum().backward()          # gradients wanted: transformers' forward on the parameters
        assert mlp.gate_proj.weight.grad is not None and mlp.down_proj.weight.grad.abs().sum() > 0
        model.to(torch.float64)                       # new parameter tensors: the padded copies are stale
        moved = _vision(model, grids)
    finally:
        iwp.stock_vision(model)
    assert all(p.dtype == torch.float64 and p.is_contiguous() for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(moved, _vision(model, grids)))    # transformers' own forward ran


def test_vision_bench_inexact_arm_records_its_difference(tiny):
    from iwp.bench import vision as bench_vision
    model, _ = _unaligned(tiny, "qwen2_5_vl")
    res = bench_vision.check_input(model, [(1, 4, 8), (2, 4, 4)], repeats=2, exact=False)
    assert res["bitwise_equal"] is True and res["report"]["applied"] == ["batched_vision_attention"]
    inexact = res["inexact"]
    assert inexact["parts"] == ["aligned_mlp"] and inexact["report"]["inexact"] == ["aligned_mlp"]
    for key in ("pooler_output", "last_hidden_state"):
        d = inexact[key]
        assert 0 <= d["max_abs_diff"] <= 1e-4 * d["ref_max_abs"] and d["rel_l2_diff"] <= 1e-5
    assert set(res["ms"]) == {"stock", "accelerated", "inexact"} and len(res["samples_ms"]["inexact"]) == 2
    assert inexact["speedup"] > 0 and inexact["speedup_over_exact"] > 0
    assert vision_speed.applied_parts(model) == [] and all(p.is_contiguous() for p in model.parameters())
    assert "inexact" not in bench_vision.check_input(model, [(1, 4, 4)], repeats=1)        # default: exact only
    args = bench_vision.parse_args(["--inexact-vision"])
    assert args.inexact_vision and not bench_vision.parse_args([]).inexact_vision


# ------------------------------------------------------------------------------------------- fused_rotary

ROOT = Path(__file__).resolve().parents[1]
INTERPRETED_ROTARY = textwrap.dedent("""
    import torch
    import transformers.models.qwen2_5_vl.modeling_qwen2_5_vl as q25
    import transformers.models.qwen3_vl.modeling_qwen3_vl as q3
    import iwp
    from iwp.kernels import rotary
    from tests.test_vision_speed import _qwen_real_vision, _vision, rotary_inputs
    rotary.ROWS = 1024                    # the interpreter runs a block in numpy: fewer, larger programs
    bits = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}
    # head_dim 80: Qwen2.5-VL (1280 / 16 heads); 72: Qwen3-VL (1152 / 16); odd sequence lengths
    for dtype in (torch.bfloat16, torch.float32, torch.float16):
        for (s, heads, d), ref in (((37, 16, 80), q25), ((53, 16, 72), q3), ((9, 3, 8), q25)):
            q, k, cos, sin = rotary_inputs(s, heads, d, dtype)
            assert rotary.supports(q, k, cos, sin) is None
            fused, stock = rotary.apply_rotary(q, k, cos, sin), ref.apply_rotary_pos_emb_vision(q, k, cos, sin)
            for a, b in zip(fused, stock):
                assert a.dtype == b.dtype and a.shape == b.shape and a.is_contiguous() and b.is_contiguous()
                assert torch.equal(a.view(bits[dtype]), b.view(bits[dtype])), (dtype, s, heads, d)
    # the whole part: a real-config vision tower (2 blocks), the kernel in both blocks' batched attention
    calls = []
    kernel = rotary.apply_rotary
    rotary.apply_rotary = lambda *a: calls.append(a[0].shape) or kernel(*a)
    model = _qwen_real_vision(depth=2, full=(1,))
    for dtype, grids in ((torch.float32, [(1, 12, 20), (2, 6, 10)]), (torch.bfloat16, [(3, 6, 10)])):
        model = model.to(dtype)
        stock = _vision(model, grids)
        report = iwp.accelerate_vision(model)
        assert report == {"applied": ["batched_vision_attention", "fused_rotary"], "skipped": {}}, report
        fast = _vision(model, grids)
        iwp.stock_vision(model)
        assert all(torch.equal(a, b) for a, b in zip(stock, fast)), (dtype, grids)
        assert all(not hasattr(b.attn, "_iwp_fused_rotary") for b in model.model.visual.blocks)
    assert len(calls) == 4, calls
    # Qwen3-VL (tiny): the same part, DeepStack features included
    model = iwp.models.family("qwen3_vl").tiny()[0].to(torch.bfloat16)
    vc = model.config.vision_config
    grids = [(1, 6, 6), (2, 4, 8)]
    x = torch.randn(100, 3 * vc.temporal_patch_size * vc.patch_size ** 2).to(torch.bfloat16)

    def run():
        with torch.no_grad():
            out = model.model.visual(x, grid_thw=torch.tensor(grids))
        return [out.pooler_output, out.last_hidden_state, *out.deepstack_features]
    stock = run()
    calls.clear()
    assert iwp.accelerate_vision(model)["applied"] == ["batched_vision_attention", "fused_rotary"]
    fast = run()
    iwp.stock_vision(model)
    assert all(torch.equal(a, b) for a, b in zip(stock, fast)) and len(calls) == len(model.model.visual.blocks)
    print("ok")
""")


def rotary_inputs(s, heads, d, dtype, seed=0):
    """q, k as the vision attention slices them from qkv ([S, heads, d] views, token stride 3 * heads * d),
    cos, sin of a float32 [S, d] angle table whose halves repeat, as the vision transformers build them."""
    g = torch.Generator().manual_seed(seed + s)
    q, k, _ = torch.randn(s, 3, heads, d, generator=g).to(dtype).permute(1, 0, 2, 3).unbind(0)
    angles = torch.rand(s, d // 2, generator=g) * s
    emb = torch.cat([angles, angles], dim=-1)
    return q, k, emb.cos(), emb.sin()


def test_fused_rotary_in_the_interpreter_is_bitwise_transformers():
    """The Triton kernel run by Triton's interpreter (CPU) against transformers' apply_rotary_pos_emb_vision,
    and the fused_rotary part on a real-config vision tower against stock (bfloat16 and float32)."""
    pytest.importorskip("triton")
    path = os.pathsep.join(p for p in (str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=path)
    out = subprocess.run([sys.executable, "-c", INTERPRETED_ROTARY], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def test_fused_rotary_compiles_for_hopper_without_fma():
    """Compiled for sm_90 the kernel rounds the products and the sum separately (mul.rn / add.rn, as torch's
    elementwise kernels do); with fp fusion on (Triton's default) it would contract them into FMAs."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from iwp.kernels import rotary
    signature = dict(q_ptr="*bf16", k_ptr="*bf16", cos_ptr="*fp32", sin_ptr="*fp32", oq_ptr="*bf16",
                     ok_ptr="*bf16", **{n: "i32" for n in ("rows", "heads", "qs_s", "qs_h", "ks_s", "ks_h",
                                                           "cs_s", "ss_s")})
    constants = {"HALF": 40, "BH": 64, "ROWS": rotary.ROWS, "MODE": 0}
    signature.update({name: "constexpr" for name in constants})
    ptx = {}
    for fusion in (False, True):
        try:
            src = ASTSource(fn=rotary._rotary_kernel, signature=signature, constexprs=constants)
            ptx[fusion] = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                                         options={"enable_fp_fusion": fusion}).asm["ptx"]
        except FileNotFoundError as e:                           # no ptxas in this Triton install
            pytest.skip(f"cannot compile for sm_90 here: {e}")
    assert "fma." not in ptx[False] and "mul.rn.f32" in ptx[False] and "add.rn.f32" in ptx[False]
    assert ".ftz" not in ptx[False]                              # subnormals kept, as torch's kernels keep them
    assert "fma.rn.f32" in ptx[True]                             # the check above can fail


def test_fused_rotary_takes_only_what_it_computes_exactly(monkeypatch):
    pytest.importorskip("triton")
    from iwp.kernels import rotary
    q, k, cos, sin = rotary_inputs(7, 4, 16, torch.bfloat16)
    assert "CUDA" in rotary.supports(q, k, cos, sin)             # CPU tensors, no interpreter
    monkeypatch.setattr(rotary, "INTERPRETED", True)
    assert rotary.supports(q, k, cos, sin) is None
    assert "dtype" in rotary.supports(q.double(), k.double(), cos, sin)
    assert "dtype" in rotary.supports(q, k.float(), cos, sin)
    assert "tables" in rotary.supports(q, k, cos[:, None], sin[:, None])
    assert "tables" in rotary.supports(q[..., :15], k[..., :15], cos[:, :15], sin[:, :15])   # odd head_dim
    assert "tables" in rotary.supports(q, k, cos.double(), sin.double())
    qg = q.detach().requires_grad_()
    assert "gradients" in rotary.supports(qg, k, cos, sin)
    with torch.no_grad():
        assert rotary.supports(qg, k, cos, sin) is None


def test_fused_rotary_needs_the_batched_attention_and_is_undone(tiny, monkeypatch):
    pytest.importorskip("triton")
    from iwp.kernels import rotary
    model, _ = tiny("qwen2_5_vl")
    attns = [b.attn for b in model.model.visual.blocks]
    monkeypatch.setattr(rotary, "INTERPRETED", True)             # as if on CUDA: applied (no forward runs here)
    try:
        assert iwp.accelerate_vision(model)["applied"] == ["batched_vision_attention", "fused_rotary"]
        assert all(vars(a)["_iwp_fused_rotary"] is rotary for a in attns)
        report = iwp.accelerate_vision(model, skip=["batched_vision_attention"])
        assert report == {"applied": [], "skipped": {
            "batched_vision_attention": "skipped on request",
            "fused_rotary": "runs inside batched_vision_attention, which is not applied"}}
        assert not any("_iwp_fused_rotary" in vars(a) for a in attns) and not hasattr(model, "_iwp_vision")
        iwp.accelerate_vision(model)
        monkeypatch.setattr(vision_speed, "_ROTARY_SOURCES", {})
        report = iwp.accelerate_vision(model, skip=["fused_rotary"])
        assert report["applied"] == ["batched_vision_attention"]
        assert not any("_iwp_fused_rotary" in vars(a) for a in attns)
        report = iwp.accelerate_vision(model)                    # another transformers' rotary: not fused
        assert "not the one checked" in report["skipped"]["fused_rotary"]
    finally:
        iwp.stock_vision(model)
    assert not any(vars(a).get("_iwp_fused_rotary") or "forward" in vars(a) for a in attns)
