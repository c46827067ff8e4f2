"""Never silently wrong: an internal transformers moved is a clear error naming the version, and a prefill
with visual tokens that the hook did not score raises instead of answering unpruned."""
import pytest
import torch
import transformers

import iwp
from iwp import compat
from tests.conftest import greedy
from tests.test_patch import one_image


def test_a_renamed_cache_keyword_fails_at_apply(tiny, monkeypatch):
    model, _ = tiny("llava")
    monkeypatch.setattr(compat, "CACHE_KWARGS", ("kv_store",))          # as if transformers renamed it again
    with pytest.raises(compat.IncompatibleTransformers, match=transformers.__version__) as err:
        iwp.apply(model, keep_ratio=0.5)
    assert compat.TESTED[0] in str(err.value) and compat.TESTED[1] in str(err.value)
    assert not iwp.is_patched(model)


def test_a_layer_without_position_embeddings_fails_at_apply(tiny, monkeypatch):
    model, _ = tiny("llava")
    monkeypatch.setattr(compat, "LAYER_KWARGS", ("attention_mask", "rotary_cos_sin"))
    with pytest.raises(compat.IncompatibleTransformers, match="rotary_cos_sin"):
        iwp.apply(model, keep_ratio=0.5)


def test_a_prefill_that_skips_the_cut_raises(tiny):
    model, proc = tiny("llava")
    inputs = one_image(proc)
    iwp.apply(model, keep_ratio=0.5)
    state = model._iwp_state
    layer_hooks = state.handles[2:]                  # the decoder-layer pre-hooks: as if they were bypassed
    layer_hooks[iwp.DEFAULT_LAYER].remove()
    with pytest.raises(compat.IncompatibleTransformers, match="never ran iwp's selection"):
        greedy(model, inputs, 2)


def test_last_selection_is_none_only_before_the_first_prefill(tiny):
    model, proc = tiny("llava")
    iwp.apply(model, keep_ratio=0.5)
    assert iwp.last_selection(model) is None
    greedy(model, one_image(proc), 3)
    assert iwp.last_selection(model)[0].n_kept == iwp.last_selection(model)[0].n_visual // 2
    text = proc(text=["just words here"], return_tensors="pt")
    greedy(model, text, 3)                           # a text-only prefill: an empty selection, not None
    sels = iwp.last_selection(model)
    assert sels is not None and len(sels) == 1 and sels[0].groups == []


def test_decoding_steps_are_not_taken_for_prefills(tiny):
    """The 5.24 failure: decoding steps read as prefills (the cache under a new name) rescored every step."""
    model, proc = tiny("llava")
    iwp.apply(model, keep_ratio=0.5)
    calls = []
    model._iwp_state.family.groups = (lambda f: lambda *a: calls.append(1) or f(*a))(model._iwp_state.family.groups)
    greedy(model, one_image(proc), 5)
    assert len(calls) == 1
    del model._iwp_state.family.groups


def test_the_cache_keyword_is_found_on_this_version(tiny):
    from packaging.version import Version
    model, _ = tiny("llava")
    want = "cache" if Version(transformers.__version__) >= Version("5.24") else "past_key_values"
    assert compat.check_layer(model.model.language_model.layers[0]) == want
