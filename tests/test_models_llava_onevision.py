"""IWP inside the tiny LLaVA-OneVision: anyres images with newline tokens, video, padded batches."""
import pytest
import torch
from conftest import check_cached_equals_recompute, check_keep_all_identical, greedy, image

import iwp


def image_batch(proc, sizes=((50, 80),), texts=("w1?",)):
    prompts = [f"USER: <image>\n{t} ASSISTANT:" for t in texts]
    return proc(images=[image(h, w, seed=h * 1000 + w) for h, w in sizes], text=prompts, return_tensors="pt",
                padding=True)


def video_batch(model, proc, frames=3, texts=("w1?",)):
    """What LlavaOnevisionVideoProcessor returns, by hand (no torchvision on CPU): T*4 + 1 tokens each."""
    tok, cfg = proc.tokenizer, model.config
    rows = [[tok.bos_token_id] + tok.encode("USER: ", add_special_tokens=False) + [cfg.video_token_id] * (frames * 4 + 1)
            + tok.encode(f"\n{t} ASSISTANT:", add_special_tokens=False) for t in texts]
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    gen = torch.Generator().manual_seed(0)
    return dict(input_ids=ids, attention_mask=mask,
                pixel_values_videos=torch.randn(len(rows), frames, 3, 28, 28, generator=gen))


CASES = {
    "image-b1": lambda m, p: image_batch(p),
    "image-b2": lambda m, p: image_batch(p, ((50, 80), (20, 20)), ("w1?", "w1 w2 w3 w4 w5 w6?")),
    "video-b1": lambda m, p: video_batch(m, p),
    "video-b2": lambda m, p: video_batch(m, p, 3, ("w1?", "w1 w2 w3 w4 w5?")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_keep_all_is_token_identical(tiny, case):
    model, proc = tiny("llava_onevision")
    check_keep_all_identical(model, CASES[case](model, proc), case.split("-")[0])


@pytest.mark.parametrize("case", ["image-b1", "video-b1"])
def test_pruned_cached_generation_equals_no_cache_recomputation(tiny, case):
    model, proc = tiny("llava_onevision")
    check_cached_equals_recompute(model, CASES[case](model, proc), layer=2)


def test_padded_image_batch_prunes_each_prompt_as_if_alone(tiny):
    model, proc = tiny("llava_onevision")
    sizes, texts = ((50, 80), (20, 20)), ("w1?", "w1 w2 w3 w4 w5 w6?")
    iwp.apply(model, keep_ratio=0.3, method="iwp")
    out = greedy(model, image_batch(proc, sizes, texts))
    sels = iwp.last_selection(model)
    assert [s.n_visual for s in sels] == [76, 36] and [s.n_kept for s in sels] == [23, 11]
    for b in range(2):
        alone = greedy(model, image_batch(proc, sizes[b:b + 1], texts[b:b + 1]))
        assert out[b, -6:].tolist() == alone[0, -6:].tolist()
        assert iwp.last_selection(model)[0].groups[0].kept == sels[b].groups[0].kept


def test_image_selection_has_original_pixel_boxes_and_newlines(tiny):
    model, proc = tiny("llava_onevision")
    iwp.apply(model, keep_ratio=0.25)
    greedy(model, CASES["image-b1"](model, proc), 1)
    g = iwp.last_selection(model)[0].groups[0]            # no image_sizes needed: OneVision receives them
    assert g.image_size == (80, 50) and g.n == 76 and sum(b is None for b in g.boxes) == 6
    assert max(b[2] for b in g.boxes if b) == pytest.approx(80) and max(b[3] for b in g.boxes if b) == pytest.approx(50)


def test_video_selection_spans_frames(tiny):
    model, proc = tiny("llava_onevision")
    iwp.apply(model, keep_ratio=0.25, method="divprune")
    greedy(model, CASES["video-b1"](model, proc), 1)
    g = iwp.last_selection(model, image_sizes=[(64, 48)])[0].groups[0]
    assert g.kind == "video" and g.n == 13 and len(g.kept) == 3 and g.image_size == (64, 48)
    assert g.frames[:4] == [0] * 4 and g.frames[-1] is None and g.boxes[-1] is None
