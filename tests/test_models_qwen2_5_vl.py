"""IWP inside the tiny Qwen2.5-VL: images and video, 3-D M-RoPE positions, padded batches."""
import pytest
import torch
from conftest import (check_cached_equals_recompute, check_keep_all_identical, greedy, image,
                      kept_positions, surviving_positions)

import iwp


def image_batch(proc, sizes=((70, 120),), texts=("w1?",)):
    tpl = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{}<|im_end|>\n<|im_start|>assistant\n"
    prompts = [tpl.format(t) for t in texts]
    ims = [image(h, w, seed=h * 1000 + w) for h, w in sizes]
    return proc(images=ims, text=prompts, return_tensors="pt", padding=True)


def video_batch(model, proc, grids=((2, 8, 8),), texts=("w1?",)):
    """Video inputs built by hand (no torchvision on CPU), left-padded: what Qwen2VLVideoProcessor returns."""
    tok, cfg = proc.tokenizer, model.config
    rows = []
    for (t, h, w), text in zip(grids, texts):
        pre = tok.encode("<|im_start|>user\n<|vision_start|>", add_special_tokens=False)
        post = tok.encode(f"<|vision_end|>{text}<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
        rows.append(pre + [cfg.video_token_id] * (t * h * w // 4) + post)
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    gen = torch.Generator().manual_seed(0)
    n_patches = sum(t * h * w for t, h, w in grids)
    return dict(input_ids=ids, attention_mask=(torch.arange(width)[None] >= torch.tensor(
                    [[width - len(r)] for r in rows])).long(),
                mm_token_type_ids=(ids == cfg.video_token_id).long() * 2,
                pixel_values_videos=torch.randn(n_patches, 3 * 2 * 14 * 14, generator=gen),
                video_grid_thw=torch.tensor(grids), second_per_grid_ts=torch.ones(len(grids)))


CASES = {
    "image-b1": lambda m, p: image_batch(p),
    "image-b2": lambda m, p: image_batch(p, ((70, 120), (60, 60)), ("w1?", "w1 w2 w3 w4 w5 w6 w7?")),
    "video-b1": lambda m, p: video_batch(m, p),
    "video-b2": lambda m, p: video_batch(m, p, ((2, 8, 8), (2, 4, 8)), ("w1?", "w3 w4 w5 w6?")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_keep_all_is_token_identical(tiny, case):
    model, proc = tiny("qwen2_5_vl")
    check_keep_all_identical(model, CASES[case](model, proc), case.split("-")[0])


@pytest.mark.parametrize("case", ["image-b1", "video-b1"])
def test_pruned_cached_generation_equals_no_cache_recomputation(tiny, case):
    model, proc = tiny("qwen2_5_vl")
    check_cached_equals_recompute(model, CASES[case](model, proc), layer=1)


def test_kept_tokens_keep_their_3d_mrope_ids(tiny):
    model, proc = tiny("qwen2_5_vl")
    inputs = CASES["video-b1"](model, proc)
    lm = model.model.language_model
    pos3, _ = model.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                         video_grid_thw=inputs["video_grid_thw"],
                                         second_per_grid_ts=inputs["second_per_grid_ts"],
                                         attention_mask=inputs["attention_mask"])
    seen, calls = [], []

    def spy(module, args, kwargs):
        seen.append((args[0].shape[1], kwargs["position_embeddings"]))

    def top(module, args, kwargs):
        calls.append(kwargs.get("position_ids"))
    iwp.apply(model, keep_ratio=0.25, layer=1)
    handles = [lm.layers[2].register_forward_pre_hook(spy, with_kwargs=True),
               model.register_forward_pre_hook(top, with_kwargs=True)]
    try:
        greedy(model, inputs, 2)
    finally:
        for h in handles:
            h.remove()
    _, kept = kept_positions(iwp.last_selection(model)[0])
    keep = torch.tensor(surviving_positions(iwp.last_selection(model)[0], pos3.shape[-1]))
    n, (cos, sin) = seen[0]
    assert n == keep.numel() < pos3.shape[-1]
    want_cos, want_sin = lm.rotary_emb(torch.zeros(1, n, 1), pos3[:, :, keep])
    assert torch.allclose(cos, want_cos) and torch.allclose(sin, want_sin)
    # the kept video tokens' ids differ in t/h/w, i.e. they really are 3-D and not re-indexed
    assert len({tuple(pos3[:, 0, p].tolist()) for p in sorted(kept)}) == len(kept)
    # the first decoded token continues at the original next position, max(id) + 1, on all three axes
    assert calls[1][-3:, 0, 0].tolist() == [int(pos3.max()) + 1] * 3


def test_padded_image_batch_prunes_each_prompt_as_if_alone(tiny):
    model, proc = tiny("qwen2_5_vl")
    sizes, texts = ((70, 120), (60, 60)), ("w1?", "w1 w2 w3 w4 w5 w6 w7?")
    iwp.apply(model, keep_ratio=0.3)
    out = greedy(model, image_batch(proc, sizes, texts))
    sels = iwp.last_selection(model)
    assert sels[0].n_kept != sels[1].n_kept                          # different images, different budgets
    for b in range(2):
        alone = greedy(model, image_batch(proc, sizes[b:b + 1], texts[b:b + 1]))
        assert out[b, -6:].tolist() == alone[0, -6:].tolist()
        assert iwp.last_selection(model)[0].groups[0].kept == sels[b].groups[0].kept


def test_video_budget_spans_all_frames(tiny):
    model, proc = tiny("qwen2_5_vl")
    iwp.apply(model, keep_ratio=0.25, method="iwp")
    greedy(model, CASES["video-b1"](model, proc), 1)
    g = iwp.last_selection(model, image_sizes=[(112, 112)])[0].groups[0]
    assert g.kind == "video" and g.n == 32 and len(g.kept) == 8 == g.budget
    assert sorted(set(g.frames)) == [0, 2] and g.image_size == (112, 112)


@pytest.mark.parametrize("impl", ["eager"])
def test_eager_matches_sdpa_when_pruned(tiny, impl):
    model, proc = tiny("qwen2_5_vl")
    inputs = CASES["image-b2"](model, proc)
    iwp.apply(model, keep_ratio=0.3)
    a = greedy(model, inputs)
    model.set_attn_implementation(impl)
    assert torch.equal(greedy(model, inputs), a)
