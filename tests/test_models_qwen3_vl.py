"""IWP inside the tiny Qwen3-VL: images and video (timestamps between frames), interleaved 3-D M-RoPE,
DeepStack additions after decoder layers 0-2 that must follow the kept tokens, padded batches."""
import pytest
import torch
from conftest import check_cached_equals_recompute, check_keep_all_identical, greedy, image

import iwp
from iwp.models.qwen3_vl import kept_deepstack

TPL = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{}<|im_end|>\n<|im_start|>assistant\n"


def image_batch(proc, sizes=((96, 160),), texts=("w1?",)):
    ims = [image(h, w, seed=h * 1000 + w) for h, w in sizes]
    return proc(images=ims, text=[TPL.format(t) for t in texts], return_tensors="pt", padding=True)


def video_batch(model, proc, grids=((2, 8, 8),), texts=("w1?",)):
    """Video inputs built by hand (no torchvision on CPU), as Qwen3VLProcessor lays them out: each temporal
    patch is `<timestamp> <|vision_start|> tokens <|vision_end|>`; left-padded."""
    tok, cfg = proc.tokenizer, model.config
    rows = []
    for (t, h, w), text in zip(grids, texts):
        row = tok.encode("<|im_start|>user\n", add_special_tokens=False)
        for f in range(t):
            row += tok.encode(f"w{f + 2}", add_special_tokens=False)                   # the timestamp text
            row += [cfg.vision_start_token_id] + [cfg.video_token_id] * (h * w // 4) + [cfg.vision_end_token_id]
        row += tok.encode(f"{text}<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
        rows.append(row)
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
    "image-b2": lambda m, p: image_batch(p, ((96, 160), (64, 64)), ("w1?", "w1 w2 w3 w4 w5 w6 w7?")),
    "video-b1": lambda m, p: video_batch(m, p),
    "video-b2": lambda m, p: video_batch(m, p, ((2, 8, 8), (2, 4, 8)), ("w1?", "w3 w4 w5 w6?")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_keep_all_is_token_identical(tiny, case):
    model, proc = tiny("qwen3_vl")
    check_keep_all_identical(model, CASES[case](model, proc), case.split("-")[0])


@pytest.mark.parametrize("layer", [1, 3])              # below the last DeepStack layer (2), and after it
@pytest.mark.parametrize("case", ["image-b1", "video-b1"])
def test_pruned_cached_generation_equals_no_cache_recomputation(tiny, case, layer):
    """The reference adds DeepStack only to the visual positions still present: pruned at K=1, layer 1's and
    2's additions of dropped tokens are dropped, and the kept ones stay on their tokens."""
    model, proc = tiny("qwen3_vl")
    check_cached_equals_recompute(model, CASES[case](model, proc), layer=layer)


def test_deepstack_rows_follow_the_kept_tokens():
    mask = torch.tensor([[False, True, True, False, True], [True, True, False, False, False]])
    embeds = torch.arange(5.0)[:, None]                 # rows 0-2: prompt 0; rows 3-4: prompt 1
    idx = torch.tensor([[0, 2, 3, 4], [0, 0, 1, 3]])    # prompt 1 is left-padded with a dummy (at 0)
    valid = torch.tensor([[True, True, True, True], [False, True, True, True]])
    m, e = kept_deepstack(mask, embeds, idx, valid)
    assert m.tolist() == [[False, True, False, True], [False, True, True, False]]
    assert e[:, 0].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_video_is_one_group_across_its_timestamped_frames(tiny):
    model, proc = tiny("qwen3_vl")
    inputs = CASES["video-b1"](model, proc)
    iwp.apply(model, keep_ratio=0.25)
    greedy(model, inputs, 1)
    g = iwp.last_selection(model)[0].groups[0]
    ids = inputs["input_ids"][0]
    assert g.kind == "video" and g.n == 32 and len(g.kept) == 8 == g.budget
    assert g.positions == (ids == model.config.video_token_id).nonzero().squeeze(1).tolist()
    assert sorted(set(g.frames)) == [0, 2]               # two temporal patches, one run of 16 tokens each
    assert g.positions[16] - g.positions[15] > 1          # the second run starts after its timestamp


def test_padded_image_batch_prunes_each_prompt_as_if_alone(tiny):
    model, proc = tiny("qwen3_vl")
    sizes, texts = ((96, 160), (64, 64)), ("w1?", "w1 w2 w3 w4 w5 w6 w7?")
    iwp.apply(model, keep_ratio=0.3, layer=1)
    out = greedy(model, image_batch(proc, sizes, texts))
    sels = iwp.last_selection(model)
    assert sels[0].n_kept != sels[1].n_kept
    for b in range(2):
        alone = greedy(model, image_batch(proc, sizes[b:b + 1], texts[b:b + 1]))
        assert out[b, -6:].tolist() == alone[0, -6:].tolist()
        assert iwp.last_selection(model)[0].groups[0].kept == sels[b].groups[0].kept


def test_remove_takes_the_deepstack_wrapper_away(tiny):
    model, proc = tiny("qwen3_vl")
    lm = model.model.language_model
    iwp.apply(model, keep_ratio=0.3, layer=1)
    assert "_deepstack_process" in vars(lm)
    iwp.remove(model)
    assert "_deepstack_process" not in vars(lm)
