"""IWP inside the tiny Qwen3-VL: M-RoPE positions kept, and DeepStack's additions after the cut follow it."""
import pytest
import torch
from conftest import check_cached_equals_recompute, check_keep_all_identical, greedy, image

import iwp
from iwp.models.qwen3_vl import kept_deepstack


def image_batch(proc, sizes=((70, 130),), texts=("w1?",)):
    tpl = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{}<|im_end|>\n<|im_start|>assistant\n"
    ims = [image(h, w, seed=h * 1000 + w) for h, w in sizes]
    return proc(images=ims, text=[tpl.format(t) for t in texts], return_tensors="pt", padding=True)


def video_batch(model, proc, grids=((2, 4, 6),), texts=("w1?",)):
    """A video as the Qwen3-VL processor lays it out: per frame a timestamp, then that frame's tokens."""
    tok, cfg = proc.tokenizer, model.config
    rows = []
    for (t, h, w), text in zip(grids, texts):
        row = tok.encode("<|im_start|>user\n", add_special_tokens=False)
        for f in range(t):
            row += tok.encode(f"<{f}.5 seconds>", add_special_tokens=False) + [cfg.vision_start_token_id]
            row += [cfg.video_token_id] * (h * w // 4) + [cfg.vision_end_token_id]
        rows.append(row + tok.encode(f"{text}<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False))
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    gen = torch.Generator().manual_seed(0)
    n_patches = sum(t * h * w for t, h, w in grids)
    return dict(input_ids=ids, attention_mask=(torch.arange(width)[None] >= torch.tensor(
                    [[width - len(r)] for r in rows])).long(),
                mm_token_type_ids=(ids == cfg.video_token_id).long() * 2,
                pixel_values_videos=torch.randn(n_patches, 3 * 2 * 16 * 16, generator=gen),
                video_grid_thw=torch.tensor(grids))


CASES = {
    "image-b1": lambda m, p: image_batch(p),
    "image-b2": lambda m, p: image_batch(p, ((70, 130), (64, 64)), ("w1?", "w1 w2 w3 w4 w5 w6 w7?")),
    "video-b1": lambda m, p: video_batch(m, p),
    "video-b2": lambda m, p: video_batch(m, p, ((2, 4, 6), (3, 4, 4)), ("w1?", "w3 w4 w5 w6?")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_keep_all_is_token_identical(tiny, case):
    model, proc = tiny("qwen3_vl")
    check_keep_all_identical(model, CASES[case](model, proc), case.split("-")[0])


@pytest.mark.parametrize("case", ["image-b1", "video-b1"])
@pytest.mark.parametrize("layer", [0, 1, 2])       # DeepStack adds after layers 0 and 1: cut before, between, after
def test_pruned_cached_generation_equals_no_cache_recomputation(tiny, case, layer):
    model, proc = tiny("qwen3_vl")
    check_cached_equals_recompute(model, CASES[case](model, proc), layer=layer)


def test_a_video_is_one_group_across_its_frames(tiny):
    model, proc = tiny("qwen3_vl")
    inputs = CASES["video-b1"](model, proc)
    iwp.apply(model, keep_ratio=0.5, layer=1)
    greedy(model, inputs, 2)
    groups = iwp.last_selection(model)[0].groups
    assert [g.kind for g in groups] == ["video"] and len(groups[0].positions) == 2 * 6
    assert groups[0].frames is not None and sorted(set(groups[0].frames)) == [0, 2]


def test_padded_batch_prunes(tiny):
    model, proc = tiny("qwen3_vl")
    inputs = CASES["image-b2"](model, proc)
    iwp.apply(model, keep_ratio=0.3, layer=1)
    out = greedy(model, inputs, 4)
    sels = iwp.last_selection(model)
    assert out.shape[0] == 2 and all(s.n_kept < s.n_visual for s in sels)


def test_remove_is_exact(tiny):
    model, proc = tiny("qwen3_vl")
    inputs = CASES["image-b1"](model, proc)
    base = greedy(model, inputs, 6)
    lm = model.model.language_model
    iwp.apply(model, keep_ratio=0.3, layer=1)
    assert "_deepstack_process" in vars(lm)
    greedy(model, inputs, 6)
    iwp.remove(model)
    assert "_deepstack_process" not in vars(lm)
    assert torch.equal(greedy(model, inputs, 6), base)


def test_kept_deepstack_takes_the_kept_visual_rows():
    mask = torch.tensor([[False, True, True, False, True], [True, True, False, False, False]])
    embeds = torch.arange(5.0)[:, None]                   # rows 0-2: prompt 0's visual tokens, rows 3-4: prompt 1's
    idx = torch.tensor([[0, 2, 3, 4], [0, 0, 1, 2]])
    valid = torch.tensor([[True, True, True, True], [False, True, True, True]])
    kept, rows = kept_deepstack(mask, embeds, idx, valid)
    assert kept.tolist() == [[False, True, False, True], [False, True, True, False]]
    assert rows[:, 0].tolist() == [1.0, 2.0, 3.0, 4.0]
