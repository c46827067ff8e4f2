"""iwp.apply / remove / pruning / last_selection on the tiny LLaVA (the toy model's family)."""
import json

import pytest
import torch
from conftest import greedy, image, reference_generate, surviving_positions

import iwp
from iwp.selection import CATEGORIES, Selection


def one_image(proc, h=40, w=60, text="w1 w2?"):
    prompt = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}],
                                      add_generation_prompt=True)
    return proc(images=image(h, w), text=prompt, return_tensors="pt")


def padded_batch(proc):
    """Two prompts, left-padded: two images + short text, one image + long text (different kept counts)."""
    p1 = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                                                {"type": "text", "text": "w1 w2?"}]}],
                                  add_generation_prompt=True)
    p2 = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text",
                                                                "text": " ".join(f"w{i}" for i in range(14))}]}],
                                  add_generation_prompt=True)
    ims = [image(40, 60, 1), image(30, 30, 2), image(50, 20, 3)]
    return proc(images=ims, text=[p1, p2], return_tensors="pt", padding=True), (p1, ims[:2]), (p2, ims[2:])


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_keep_all_is_token_identical_batch1_and_padded_batch2(tiny, impl):
    model, proc = tiny("llava")
    model.set_attn_implementation(impl)
    for inputs in (one_image(proc), padded_batch(proc)[0]):
        base = greedy(model, inputs, 8)
        iwp.apply(model, keep_ratio=1.0)
        assert torch.equal(greedy(model, inputs, 8), base)
        sels = iwp.last_selection(model)
        assert all(s.n_kept == s.n_visual for s in sels)
        iwp.remove(model)
        assert torch.equal(greedy(model, inputs, 8), base)


def test_remove_restores_the_instance(tiny):
    model, proc = tiny("llava")
    n_hooks = (len(model.model._forward_pre_hooks), [len(l._forward_pre_hooks) for l in model.model.language_model.layers])
    iwp.apply(model, keep_ratio=0.5)
    iwp.apply(model, keep_ratio=0.25, method="fastv")      # re-apply: settings change, no extra hooks
    assert model._iwp_state.settings.method == "fastv"
    assert len(model.model.language_model.layers[0]._forward_pre_hooks) == n_hooks[1][0] + 1
    greedy(model, one_image(proc), 2)
    iwp.remove(model)
    assert (len(model.model._forward_pre_hooks), [len(l._forward_pre_hooks) for l in model.model.language_model.layers]) == n_hooks
    assert not hasattr(model, "_iwp_state") and "get_image_features" not in vars(model.model)
    assert iwp.last_selection(model) is None


def test_pruned_cached_generation_equals_no_cache_recomputation(tiny):
    model, proc = tiny("llava")
    inputs = one_image(proc)
    with torch.no_grad():
        unpruned = model(**inputs).logits[0, -1]
    iwp.apply(model, keep_ratio=0.25, layer=2)
    out = greedy(model, inputs, 6)
    sel = iwp.last_selection(model)[0]
    with torch.no_grad():
        pruned = model(**inputs).logits[0, -1]
    keep = surviving_positions(sel, inputs.input_ids.shape[1])
    iwp.remove(model)
    ref = reference_generate(model, dict(inputs), keep, layer=2, n=6)
    assert torch.equal(out, ref)
    assert sel.n_kept < sel.n_visual and len(keep) < inputs.input_ids.shape[1]
    # the cut changed what the model computes, so agreeing with the recomputation is not agreeing with no cut
    assert not torch.allclose(pruned, unpruned)


@pytest.mark.parametrize("layer", [0, 2])
def test_padded_batch_prunes_each_prompt_as_if_alone(tiny, layer):
    # layer 0 is special: the model sizes decoding masks by layer 0's cache, which the cut shortens
    model, proc = tiny("llava")
    batch, (p1, ims1), (p2, ims2) = padded_batch(proc)
    iwp.apply(model, keep_ratio=0.3, layer=layer)
    out = greedy(model, batch, 6)
    sels = iwp.last_selection(model)
    assert [s.n_kept for s in sels] == [2 * 5, 5]              # round(0.3 * 16) = 5 per image
    assert model._iwp_state.cut.valid.sum(1).tolist() != [model._iwp_state.cut.idx.shape[1]] * 2   # dummies used
    for b, (p, ims) in enumerate([(p1, ims1), (p2, ims2)]):
        alone = greedy(model, proc(images=ims, text=p, return_tensors="pt"), 6)
        assert out[b, -6:].tolist() == alone[0, -6:].tolist()
        assert iwp.last_selection(model)[0].groups[0].kept == sels[b].groups[0].kept


def test_kept_tokens_keep_their_original_positions(tiny):
    model, proc = tiny("llava")
    inputs = one_image(proc)
    seen = {}

    def spy(module, args, kwargs):
        seen.setdefault("pid", kwargs["position_ids"].clone())
    iwp.apply(model, keep_ratio=0.25, layer=1)          # the spy runs after iwp's own layer hook
    h = model.model.language_model.layers[3].register_forward_pre_hook(spy, with_kwargs=True)
    try:
        greedy(model, inputs, 1)
    finally:
        h.remove()
    expected = surviving_positions(iwp.last_selection(model)[0], inputs.input_ids.shape[1])
    assert seen["pid"][0].tolist() == expected


@pytest.mark.parametrize("method", sorted(iwp.SELECTORS))
def test_every_selector_runs_through_the_hook(tiny, method):
    model, proc = tiny("llava")
    iwp.apply(model, keep_ratio=0.25, method=method, layer=1)
    out = greedy(model, one_image(proc), 3)
    assert out.shape[1] == one_image(proc).input_ids.shape[1] + 3
    sel = iwp.last_selection(model)[0]
    g = sel.groups[0]
    assert sel.method == method and len(g.kept) == 4 == g.budget and len(set(g.kept)) == 4
    if method == "iwp":                                           # PC-MMR's own steps: one pick, then chunks
        assert sum(g.steps) == 4 and g.steps[0] == 1
    else:
        assert g.steps is None


def test_selection_record_is_complete(tiny):
    model, proc = tiny("llava")
    iwp.apply(model, keep_ratio=0.25, method="iwp", lam=0.7, layer=0)
    greedy(model, one_image(proc), 2)
    sel = iwp.last_selection(model, image_sizes=[(60, 40)], processor=proc)[0]
    g = sel.groups[0]
    assert (sel.layer, sel.method, sel.keep_ratio, sel.params["lam"]) == (0, "iwp", 0.25, 0.7)
    assert sel.seconds > 0 and g.kind == "image" and g.n == 16 and g.image_size == (60, 40)
    assert len(g.magnitude) == len(g.cover) == len(g.cover_similarity) == len(g.categories) == len(g.boxes) == 16
    assert all(g.cover[k] == k and g.cover_similarity[k] == 1.0 for k in g.kept)
    assert all(c in g.kept for c in g.cover) and set(g.categories) <= set(CATEGORIES)
    # LLaVA centre-crops 60x40 to its middle 40x40: boxes start at x = 10
    assert g.boxes[0] == (10.0, 0.0, 20.0, 10.0) and g.boxes[-1] == (40.0, 30.0, 50.0, 40.0)
    again = Selection.from_dict(json.loads(sel.to_json()))
    assert again.groups[0].kept == g.kept and again.groups[0].steps == g.steps and sum(g.steps) == len(g.kept)


def test_pruning_context_restores(tiny):
    model, proc = tiny("llava")
    with iwp.pruning(model, keep_ratio=0.5):
        greedy(model, one_image(proc), 1)
        assert iwp.last_selection(model)[0].n_kept == 8
    assert not hasattr(model, "_iwp_state")
    iwp.apply(model, keep_ratio=0.25)
    with iwp.pruning(model, keep_ratio=0.5, method="random"):
        pass
    assert model._iwp_state.settings.keep_ratio == 0.25


def test_errors(tiny):
    model, proc = tiny("llava")
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="keep_ratio"):
            iwp.apply(model, keep_ratio=bad)
    with pytest.raises(ValueError, match="layer"):
        iwp.apply(model, layer=4)
    with pytest.raises(ValueError, match="method"):
        iwp.apply(model, method="nope")
    with pytest.raises(ValueError, match="LlavaForConditionalGeneration"):
        iwp.apply(torch.nn.Linear(2, 2))
    iwp.apply(model, keep_ratio=0.5)
    with pytest.raises(ValueError, match="DynamicCache"):
        model.generate(**one_image(proc), max_new_tokens=2, do_sample=False, cache_implementation="static")


def test_save_and_load_from_a_local_dir(tiny, tmp_path):
    from transformers import AutoProcessor, LlavaForConditionalGeneration
    model, proc = tiny("llava")
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    loaded = LlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    proc2 = AutoProcessor.from_pretrained(tmp_path)
    inputs = one_image(proc2)
    base = greedy(model, inputs, 6)
    assert torch.equal(greedy(loaded, inputs, 6), base)
    iwp.apply(loaded, keep_ratio=1.0)
    assert torch.equal(greedy(loaded, inputs, 6), base)
    iwp.apply(loaded, keep_ratio=0.25)
    assert iwp.last_selection(loaded) is not None and greedy(loaded, inputs, 6).shape == base.shape
    iwp.remove(loaded)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_unpadded_batch_with_different_kept_counts(tiny, impl):
    """Same prompt length, no padding (the mask is None under sdpa), but 32 vs 16 visual tokens: the cut
    must add masked dummies of its own."""
    model, proc = tiny("llava")
    model.set_attn_implementation(impl)
    ims = [image(40, 60, 1), image(30, 30, 2), image(50, 20, 3)]
    p1 = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                                                {"type": "text", "text": "w1 w2?"}]}],
                                  add_generation_prompt=True)
    n1 = proc(images=ims[:2], text=p1, return_tensors="pt").input_ids.shape[1]
    n2 = proc(images=ims[2:], text=p1.replace("<image>\n", "", 1), return_tensors="pt").input_ids.shape[1]
    p2 = p1.replace("<image>\n", "", 1).replace("w1 w2?", "w1 w2?" + "a" * (n1 - n2))    # one char, one token
    batch = proc(images=ims, text=[p1, p2], return_tensors="pt", padding=True)
    assert bool(batch.attention_mask.all())
    iwp.apply(model, keep_ratio=0.25)
    out = greedy(model, batch, 6)
    assert not bool(model._iwp_state.cut.valid.all())
    for b, (p, im) in enumerate([(p1, ims[:2]), (p2, ims[2:])]):
        alone = greedy(model, proc(images=im, text=p, return_tensors="pt"), 6)
        assert out[b, -6:].tolist() == alone[0, -6:].tolist()


def test_flash_style_2d_masks_are_cut_by_columns():
    from iwp.hook.cut import decode_mask as _cut_decode_mask, make_cut as _make_cut, prefill_mask as _cut_prefill_mask
    cut = _make_cut([torch.tensor([0, 2, 3]), torch.tensor([1, 3])], length=4, step=1)
    assert cut.idx.tolist() == [[0, 2, 3], [0, 1, 3]] and cut.valid.tolist() == [[True] * 3, [False, True, True]]
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    assert _cut_prefill_mask(mask, cut, torch.zeros(2, 3, 1), None).tolist() == [[1, 1, 1], [0, 1, 1]]
    step = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1]])            # two new tokens so far
    assert _cut_decode_mask(step, cut, torch.zeros(2, 1, 1), None, 0, None).tolist() == \
        [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]]
