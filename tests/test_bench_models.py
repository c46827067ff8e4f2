"""The models benchmark on CPU: the analytic FLOP model against hand counts and torch's FLOP counter, and
the timing harness end to end on tiny models (one method, one ratio, two repeats)."""
import json
import os
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from iwp.bench import flops, real_size as bench_models

TEXT = SimpleNamespace(hidden_size=8, intermediate_size=16, num_attention_heads=2, num_key_value_heads=1,
                       head_dim=4, num_hidden_layers=3, vocab_size=10)


def test_decoder_flops_match_hand_count():
    # n=3: q 2*3*8*8=384, k 2*3*8*4=192, v 192, o 384; MLP 3 * 2*3*8*16 = 2304;
    # attention: 1+2+3 = 6 causal pairs x 2 heads x (2*4 for q.k + 2*4 for p.v) = 192
    assert flops.decoder_layer_flops(TEXT, 3) == 384 + 192 + 192 + 384 + 2304 + 192
    # n=2: projections 768, MLP 1536, attention 3 pairs x 2 heads x 16 = 96
    assert flops.decoder_layer_flops(TEXT, 2) == 768 + 1536 + 96
    # K=1: one layer at 3 tokens, two at 2, LM head on the last token 2*8*10
    assert flops.decoder_prefill_flops(TEXT, 3, 2, layer=1) == 3648 + 2 * 2400 + 160
    assert flops.decoder_prefill_flops(TEXT, 3) == 3 * 3648 + 160
    ideal = flops.ideal_speedups(100, 3 * 3648 + 160, 3648 + 2 * 2400 + 160)
    assert ideal["decoder"] == pytest.approx((3 * 3648 + 160) / 8608)
    assert 1 < ideal["ttft"] < ideal["decoder"]


def test_vision_flops_match_hand_count():
    vc = SimpleNamespace(hidden_size=6, intermediate_size=10, patch_size=4, image_size=8, num_hidden_layers=2)
    # 4 patches: embedding 2*4*48*6=2304; per layer qkvo 2*4*4*36=1152, MLP 2*4*2*60=960, attention 4*16*6=384;
    # projector to 5: 2*4*(6*5 + 5*5) = 440
    assert flops.siglip_flops(vc, 3, projector_out=5) == 3 * (2304 + 2 * (1152 + 960 + 384) + 440)
    # a 12 x 20 patch grid merged 2x2 is 6 x 10 units; windows of 4 x 4 units: 4x4, 4x4, 4x2, 2x4, 2x4, 2x2
    assert flops._qwen_windows(12, 20, 2, 4) == [64, 64, 32, 32, 32, 16]


def _tiny_towers():
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, Qwen2_5_VLConfig,
                              Qwen2_5_VLForConditionalGeneration, SiglipVisionConfig)
    ov = LlavaOnevisionForConditionalGeneration(LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(image_size=28, patch_size=7, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2, vision_use_head=False),
        text_config=dict(model_type="qwen2", vocab_size=64, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
        vision_feature_select_strategy="full", vision_feature_layer=-1)).eval()
    qwen = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[1]),
        text_config=dict(vocab_size=64, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                         intermediate_size=128, num_key_value_heads=2,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]}),
        image_token_id=60, video_token_id=61, vision_start_token_id=62, vision_end_token_id=63)).eval()
    for m in (ov, qwen):
        m.set_attn_implementation("eager")          # attention as plain matmuls, which the counter sees
    return ov, qwen


def _counted(fn) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


def test_flop_model_matches_torch_flop_counter():
    ov, qwen = _tiny_towers()
    pv = torch.randn(3, 3, 28, 28)
    counted = _counted(lambda: ov.model.multi_modal_projector(ov.model.vision_tower(pv).last_hidden_state))
    assert counted == flops.siglip_flops(ov.config.vision_config, 3, projector_out=64)
    for grid in [(1, 12, 20), (2, 8, 8)]:                # windows cut at the edges; two temporal slices
        n = grid[0] * grid[1] * grid[2]
        counted = _counted(lambda: qwen.model.visual(torch.randn(n, 3 * 2 * 14 * 14), grid_thw=torch.tensor([grid])))
        assert counted == flops.qwen_vision_flops(qwen.config.vision_config, [grid])
    # decoder: eager attention multiplies the full square, the model counts the causal half
    tc, n = qwen.config.text_config, 10
    lm = qwen.model.language_model
    counted = _counted(lambda: qwen.lm_head(lm(inputs_embeds=torch.randn(1, n, 64), use_cache=False)
                                            .last_hidden_state[:, -1:]))
    d = tc.hidden_size // tc.num_attention_heads
    upper = tc.num_hidden_layers * 4 * tc.num_attention_heads * d * (n * n - n * (n + 1) // 2)
    pos = torch.arange(n).expand(3, 1, n)
    rope = _counted(lambda: lm.rotary_emb(torch.randn(1, n, 64), pos))   # a matmul in some versions; not counted
    assert counted - rope == flops.decoder_prefill_flops(tc, n) + upper


def test_smart_resize_matches_qwen_defaults():
    assert bench_models.smart_resize(720, 1280, 28, 56 * 56, 28 * 28 * 1280) == (728, 1288)
    assert bench_models.smart_resize(720, 1280, 28, 128 * 28 * 28, 768 * 28 * 28) == (560, 1008)


@pytest.mark.parametrize("name,kind,geometry", [
    ("llava_onevision", "video32", {"frames": 4}),
    ("qwen2_5_vl", "image", {"size": (56, 84)}),
    ("qwen3_vl", "video32", {"frames": 4, "size": (64, 96)}),
])
def test_harness_end_to_end(tmp_path, name, kind, geometry):
    from iwp import models
    model = models.family(name).tiny()[0]
    prompt = bench_models.build_prompt(model, kind, geometry)
    runs = prompt.geometry["grid_thw"][0] if name == "qwen3_vl" else 1    # Qwen3-VL: one run per temporal patch
    extra = {"qwen2_5_vl": 2, "qwen3_vl": runs * (2 + bench_models.N_TIMESTAMP)}.get(name, 0)
    assert prompt.n_total == sum(bench_models.N_TEXT) + prompt.n_visual + extra
    rows = bench_models.bench(model, prompt, ratios=[1.0, 0.5], methods=["iwp"], layer=1, repeats=2, warmup=1,
                              new_tokens=2, log=lambda s: None)
    base, pruned = rows
    assert (base["method"], pruned["method"]) == ("none", "iwp")
    assert base["repeats"] == pruned["repeats"] == 2 and not base["error"] and not pruned["error"]
    assert base["n_tokens"] == prompt.n_total
    assert pruned["n_tokens"] == prompt.n_total - prompt.n_visual + round(0.5 * prompt.n_visual)
    for r in rows:
        med = r["median"]
        assert med["ttft_ms"] > med["decoder_prefill_ms"] > 0 and med["vision_ms"] > 0
        assert med["decode_tok_s"] > 0 and med["layer_k_gap_ms"] >= 0
        assert all(s["new_tokens"] == 3 for s in r["samples"])
    assert base["median"]["selection_ms"] is None and pruned["median"]["selection_ms"] > 0
    assert pruned["ideal"]["decoder"] > pruned["ideal"]["ttft"] > 1.0 and base["ideal"]["decoder"] == 1.0
    assert pruned["speedup"]["decoder"] > 0 and pruned["efficiency"]["ttft"] > 0
    assert not hasattr(model, "_iwp_state")              # the harness leaves the model unpatched

    result = {"model_shape": name, "input": kind, "device": "cpu", "torch": torch.__version__,
              "transformers": "x", "layer": 1, "repeats": 2, "warmup": 1, "n_total": prompt.n_total,
              "n_visual": prompt.n_visual, "runs": rows}
    result["targets"] = bench_models.targets(result)
    assert result["targets"]["keep_ratio"] == 0.5 and len(result["targets"]["decoder_speedup"]) == 2
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result))
    assert bench_models.main(["--report", str(path)]) == 0
    table = bench_models.markdown([result])
    assert "| iwp | 50.0% |" in table and "| none | 100.0% |" in table


def test_method_specs_carry_iwp_parameters():
    assert bench_models.parse_method("fastv") == ("fastv", {})
    assert bench_models.parse_method("iwp:first_chunk=8:growth=4.5") == ("iwp", {"first_chunk": 8, "growth": 4.5})


def test_real_size_inputs_follow_the_processors_rules():
    from transformers import LlavaOnevisionForConditionalGeneration, Qwen2_5_VLForConditionalGeneration
    with torch.device("meta"):                            # shapes only: no weights are made
        ov = LlavaOnevisionForConditionalGeneration(bench_models.real_config("llava-onevision-7b"))
        qwen = Qwen2_5_VLForConditionalGeneration(bench_models.real_config("qwen2.5-vl-7b"))
    small = bench_models.real_config("llava-onevision-7b", small=True)       # --small: a CPU dry run
    assert small.text_config.hidden_size < 100 and small.vision_config.image_size == ov.config.vision_config.image_size
    video = bench_models.build_prompt(ov, "video32")
    assert (video.n_visual, video.n_total) == (32 * 14 * 14 + 1, 6336)    # 196 per frame + newline, 63 text
    assert video.kwargs["pixel_values_videos"].shape == (1, 32, 3, 384, 384)
    qv = bench_models.build_prompt(qwen, "video32")     # 720p frames capped at 768 * 28 * 28 pixels, 2 frames a slice
    assert qv.geometry["grid_thw"] == [16, 40, 72] and qv.n_visual == 16 * 20 * 36
    assert qv.kwargs["pixel_values_videos"].shape == (16 * 40 * 72, 3 * 2 * 14 * 14)
    qi = bench_models.build_prompt(qwen, "image")
    assert qi.geometry["grid_thw"] == [1, 52, 92] and qi.n_total == 26 * 46 + 63 + 2
    assert qi.kwargs["mm_token_type_ids"].shape == qi.kwargs["input_ids"].shape == (1, qi.n_total)


def test_qwen3_vl_8b_inputs_follow_its_processors_rules():
    from transformers import Qwen3VLForConditionalGeneration
    with torch.device("meta"):
        model = Qwen3VLForConditionalGeneration(bench_models.real_config("qwen3-vl-8b"))
    assert sum(p.numel() for p in model.parameters()) / 1e9 == pytest.approx(8.77, abs=0.05)
    v = bench_models.build_prompt(model, "video32")     # 32 720p frames within 25165824 pixels in all, factor 32
    assert v.geometry["grid_thw"] == [16, 40, 72] and v.n_visual == 16 * 20 * 36
    assert v.n_total == 16 * 20 * 36 + 16 * (2 + bench_models.N_TIMESTAMP) + sum(bench_models.N_TEXT)
    assert v.kwargs["pixel_values_videos"].shape == (16 * 40 * 72, 3 * 2 * 16 * 16)
    assert v.geometry["timestamp_tokens"] == 16 * bench_models.N_TIMESTAMP   # a timestamped run per slice
    i = bench_models.build_prompt(model, "image")
    assert i.geometry["grid_thw"] == [1, 44, 80] and i.n_visual == 22 * 40 and i.n_total == 880 + 63 + 2
    assert 12 * i.vision_flops < v.vision_flops < 16 * i.vision_flops     # 16 slices, each smaller than the image


@pytest.mark.parametrize("stock", [False, True])
def test_run_shape_checks_and_applies_the_channels_last_pooling(tmp_path, stock):
    from iwp import models, vision_speed
    uses_fast_pooling = lambda m: "channels_last_pooling" in vision_speed.applied_parts(m)    # noqa: E731
    model = models.family("llava_onevision").tiny()[0]
    argv = ["--input", "video32", "--ratios", "1.0,0.5", "--methods", "random", "--repeats", "1", "--warmup", "0",
            "--new-tokens", "1", "--layer", "1", "--json", str(tmp_path / "{input}-{gpu}.json")]
    args = bench_models.parse_args(argv + (["--stock-pooling"] if stock else []))
    args.argv = argv
    used = []
    spy = model.model.multi_modal_projector.register_forward_hook(lambda *a: used.append(uses_fast_pooling(model)))
    try:
        (res,) = bench_models.run_shape(args, model=model)
    finally:
        spy.remove()
    pooling = json.loads((tmp_path / "video32-cpu.json").read_text())["pooling"]
    assert pooling == res["pooling"] and pooling["bitwise_equal"] is True and pooling["fast"] is (not stock)
    assert pooling["stock_ms"] > 0 and pooling["fast_ms"] > 0
    assert used[0] is False and used[-2:] == [not stock] * 2   # the checks read the features, then both arms run
    assert not uses_fast_pooling(model) and not hasattr(model, "_iwp_state")    # the instance leaves as it came
    assert ("video pooling: channels-last" in bench_models.markdown([res])) is (not stock)
    assert {r["method"] for r in res["runs"]} == {"none", "random"}
    vision = res["vision_speed"]
    assert vision["accelerate_vision"] is bool(vision["applied"]) and vision["bitwise_equal"] in (True, None)
    lean = vision_speed._ov_reads_every_layer(model.model)     # transformers 5.17 reads every layer, 5.18+ one
    assert vision["applied"] == ([] if stock else ["channels_last_pooling"]) + (["lean_hidden_states"] if lean else [])
    assert res["vision_hidden_states"] == ("selected layer" if lean else "transformers' own")


def test_phase_peaks_in_the_table_and_targets():
    def row(method, ratio, peak, vision, decoder, ms):
        med = {"vision_ms": 1.0, "ttft_ms": ms, "decoder_prefill_ms": ms / 2, "layer_k_gap_ms": 0.1,
               "selection_ms": 0.05, "decode_tok_s": 9.0, "peak_mem_gb": peak, "vision_peak_gb": vision,
               "decoder_peak_gb": decoder}
        return {"method": method, "keep_ratio": ratio, "error": None, "repeats": 1, "n_tokens": 10, "median": med,
                "speedup": {"decoder": 100 / ms, "ttft": 100 / ms}, "ideal": {"decoder": 3.0, "ttft": 2.0}}
    runs = [row("none", 1.0, 16.9, 16.9, 15.5, 100.0), row("iwp", 0.111, 16.9, 16.9, 15.1, 50.0)]
    res = {"model_shape": "m", "input": "video32", "device": "d", "torch": "t", "transformers": "x", "layer": 2,
           "warmup": 1, "n_total": 10, "n_visual": 8, "runs": runs}
    t = bench_models.targets(res)
    assert t["peak_mem_gb"] == [16.9, False] and t["decoder_peak_gb"] == [15.1, True]
    res["targets"] = t
    table = bench_models.markdown([res])
    assert "| vision peak GB | decoder peak GB |" in table and "| 16.90 | 16.90 | 15.10 |" in table
    assert "decoder-phase peak 15.1 GB (below unpruned: met)" in table
    for r in runs:                                        # results written before the phase peaks existed
        del r["median"]["vision_peak_gb"], r["median"]["decoder_peak_gb"]
    res["targets"] = bench_models.targets(res)
    assert "decoder_peak_gb" not in res["targets"] and "| 16.90 | - | - |" in bench_models.markdown([res])


def _run(model, tmp_path, monkeypatch, *extra):
    monkeypatch.setitem(bench_models.DEFAULT_INPUTS["qwen2_5_vl"], "image", {"size": (56, 84)})   # a small image
    argv = ["--input", "image", "--ratios", "1.0,0.5", "--methods", "iwp", "--repeats", "1", "--warmup", "0",
            "--new-tokens", "3", "--layer", "1", "--json", str(tmp_path / "{input}-{gpu}.json"), *extra]
    args = bench_models.parse_args(argv)
    args.argv = argv
    patched = []                                          # per vision call: was accelerate_vision in force?
    spy = model.model.visual.register_forward_pre_hook(
        lambda *a: patched.append(all("forward" in vars(b.attn) for b in model.model.visual.blocks)))
    try:
        (res,) = bench_models.run_shape(args, model=model)
    finally:
        spy.remove()
    assert res == json.loads((tmp_path / "image-cpu.json").read_text())
    return res, patched


@pytest.mark.parametrize("stock", [False, True])
def test_qwen_arms_run_accelerate_vision_when_bitwise_equal(tmp_path, monkeypatch, stock):
    from iwp import models, vision_speed
    model = models.family("qwen2_5_vl").tiny()[0]
    res, patched = _run(model, tmp_path, monkeypatch, *(["--stock-vision"] if stock else []))
    vision = res["vision_speed"]
    if stock:
        assert not vision["accelerate_vision"] and vision["applied"] == [] and vision["stock_ms"] is None
        assert vision["skipped"] == {p: "--stock-vision" for p in ("batched_vision_attention", "fused_rotary")}
        assert not any(patched)
        assert "vision: transformers' own (--stock-vision)" in bench_models.markdown([res])
    else:
        assert vision["accelerate_vision"] and vision["bitwise_equal"] is True
        assert vision["applied"] == ["batched_vision_attention"] and vision["fast_ms"] > 0
        assert patched[-2:] == [True, True] and patched[0] is False   # stock reference first, then both arms
        assert "iwp.accelerate_vision: batched_vision_attention" in bench_models.markdown([res])
    assert res["pooling"] is None and res["vision_hidden_states"] is None
    assert vision_speed.applied_parts(model) == [] and not hasattr(model, "_iwp_state")   # left as it came


def test_keep_one_arm_and_phase_breakdown(tmp_path, monkeypatch):
    from iwp import models
    model = models.family("qwen2_5_vl").tiny()[0]
    res, _ = _run(model, tmp_path, monkeypatch, "--keep-one")
    assert res["keep_one"] is True
    assert [(r["method"], r["keep_ratio"]) for r in res["runs"]] == [("none", 1.0), ("iwp", 1.0), ("iwp", 0.5)]
    none, one, half = res["runs"]
    assert one["n_tokens"] == none["n_tokens"] == res["n_total"] > half["n_tokens"]
    for r in res["runs"]:
        m = r["median"]
        assert m["decode_ms_per_token"] > 0 and m["decode_ms"] == pytest.approx(3 * m["decode_ms_per_token"])   # 3 steps after the first
        assert m["pre_vision_ms"] >= 0 and m["layers_after_k_ms"] > 0 and m["layers_before_k_ms"] > 0
        # the phases tile the time to the first token: before vision, vision, layers < K, cut, layers >= K
        total = (m["pre_vision_ms"] + m["vision_ms"] + m["layers_before_k_ms"] + m["layer_k_gap_ms"]
                 + m["layers_after_k_ms"])
        assert total == pytest.approx(m["ttft_ms"], rel=1e-6)
    table = bench_models.markdown([res])
    assert "| decode ms/token |" in table and table.count("| iwp | 100.0% |") == 2


def test_small_real_shapes_follow_the_published_configs():
    from pathlib import Path
    fixtures = Path(__file__).parent / "fixtures"
    q = bench_models.real_config("qwen2.5-vl-3b")
    pub = json.loads((fixtures / "qwen2.5-vl-3b-instruct.config.json").read_text())
    tc, vc = q.text_config, q.vision_config
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "vocab_size"):
        assert getattr(tc, key) == pub[key], key
    for key, value in pub["vision_config"].items():
        if hasattr(vc, key) and key != "in_chans":
            assert getattr(vc, key) == value, key
    assert q.tie_word_embeddings is True and q.image_token_id == pub["image_token_id"]
    ov = bench_models.real_config("llava-onevision-0.5b")
    pub = json.loads((fixtures / "llava-onevision-qwen2-0.5b-ov-hf.config.json").read_text())
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "vocab_size"):
        assert getattr(ov.text_config, key) == pub["text_config"][key], key
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                "patch_size"):
        assert getattr(ov.vision_config, key) == pub["vision_config"][key], key
    assert ov.image_grid_pinpoints == pub["image_grid_pinpoints"] and ov.vision_aspect_ratio == pub["vision_aspect_ratio"]
    assert (ov.image_token_id, ov.video_token_id) == (pub["image_token_index"], pub["video_token_index"])
    for shape in ("llava-onevision-0.5b", "qwen2.5-vl-3b"):                # --small: tiny widths, same structure
        assert bench_models.real_config(shape, small=True).text_config.hidden_size < 100


def test_qwen3_vision_flops_match_torch_flop_counter():
    from iwp import models
    model = models.family("qwen3_vl").tiny()[0]
    model.set_attn_implementation("eager")
    try:
        for grid in [(1, 8, 12), (2, 4, 8)]:            # one image; two temporal slices of a video
            n = grid[0] * grid[1] * grid[2]
            pv = torch.randn(n, 3 * 2 * 16 * 16)
            counted = _counted(lambda: model.model.visual(pv, grid_thw=torch.tensor([grid])))
            assert counted == flops.qwen3_vision_flops(model.config.vision_config, [grid])
    finally:
        model.set_attn_implementation("sdpa")


@pytest.mark.parametrize("exact", [True, False])
def test_inexact_vision_is_recorded_with_its_difference(exact):
    """--inexact-vision: the exact parts checked bitwise, then aligned_mlp on top, recorded with its difference
    from stock and its time; without it nothing changes (Qwen2.5-VL's tiny model, vision MLP made 60 wide)."""
    import copy

    from iwp import models, vision_speed
    tiny = models.family("qwen2_5_vl").tiny()[0]
    cfg = copy.deepcopy(tiny.config)
    cfg.vision_config.intermediate_size = 60
    model = type(tiny)(cfg).eval()
    prompt = bench_models.build_prompt(model, "image", {"size": (56, 84)})
    vision = bench_models.set_vision_speed(model, prompt, repeats=1, exact=exact)
    try:
        assert vision["bitwise_equal"] is True and vision["accelerate_vision"] is True
        if exact:
            assert vision["applied"] == ["batched_vision_attention"] and "inexact" not in vision
            assert vision_speed.applied_parts(model) == ["batched_vision_attention"]
        else:
            assert vision["applied"] == ["batched_vision_attention", "aligned_mlp"]
            assert vision["inexact"] == ["aligned_mlp"]
            assert vision_speed.applied_parts(model) == ["batched_vision_attention", "aligned_mlp"]
            d = vision["inexact_diff"]
            assert d["rel_l2_diff"] <= 1e-5 and d["max_abs_diff"] <= 1e-4 * d["ref_max_abs"]
            assert vision["inexact_ms"] > 0
            assert "aligned_mlp NOT bitwise" in bench_models.vision_note(vision)
    finally:
        vision_speed.stock_vision(model)
    stock = bench_models.set_vision_speed(model, prompt, stock=True, exact=exact)
    assert ("aligned_mlp" in stock["skipped"]) is (not exact) and stock["applied"] == []
    assert bench_models.parse_args(["--inexact-vision"]).inexact_vision
    assert not bench_models.parse_args([]).inexact_vision
