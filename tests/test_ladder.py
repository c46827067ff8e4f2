"""Instant ratios from the recorded pick order, and the ratio ladder."""
import os
import time

import pytest
import torch

from iwp.baselines import SelectorInput
from iwp.demo import ladder
from iwp.selectors import SELECTORS, select
from tests.app_helpers import model_under_test


def selector_input(n=64, heads=2, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(heads, 6, d, generator=g)
    k, v = torch.randn(heads, n, d, generator=g), torch.randn(heads, n, d, generator=g)
    k[:, 10:20] = k[:, 10:11]                          # duplicates, so diversity matters
    return SelectorInput(q=q, k=k, v=v, grid=(1, 8, n // 8), seed=seed, k_rope=k, q_last_rope=q[:, -1:], features=v[0])


@pytest.mark.parametrize("method", ladder.PREFIX_STABLE)
def test_every_ratio_is_a_prefix_of_the_full_order(method):
    """Against a fresh run at each ratio: the picks (in order) are the full order's first ones."""
    for seed in range(3):
        inp = selector_input(seed=seed)
        full = select(method, inp, inp.n).tolist()
        assert sorted(full) == list(range(inp.n))
        for r in ladder.LADDER + (0.5, 0.25, 0.02):
            b = ladder.budget(inp.n, r)
            assert select(method, inp, b).tolist() == full[:b], (method, seed, r)


def test_every_selector_is_classified():
    assert set(ladder.PREFIX_STABLE) == set(SELECTORS)          # add a selector: prove its prefix property


@pytest.fixture(scope="module")
def runner():
    from iwp.demo.runner import Runner
    r = Runner.load(model_under_test(), max_new_tokens=4)
    r.warmup()
    return r


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from tests.app_helpers import example
    from PIL import Image
    return Image.open(example((".png", ".jpg"), tmp_path_factory.mktemp("ladder"))).convert("RGB")


@pytest.mark.parametrize("method", ["iwp", "fastv", "random"])
def test_recorded_order_gives_what_a_fresh_run_keeps_at_every_ratio(runner, scene, method):
    """Through the model and the hook: the compare's recorded order, cut to a ratio, is what a fresh pruned
    run at that ratio keeps, with the same categories."""
    result = runner.compare([scene], "what colour is the square", keep_ratio=0.25, method=method)
    order = result.order
    assert order is not None and order.n_kept == order.n_visual
    for r in ladder.LADDER[1:]:
        fresh = runner.compare([scene], "what colour is the square", keep_ratio=r, method=method).selection
        cut = ladder.prefix_selection(order, r)
        assert cut.groups[0].kept == fresh.groups[0].kept, (method, r)
        assert cut.groups[0].categories == fresh.groups[0].categories


def test_ladder_answers_five_ratios_with_one_vision_pass_quickly(runner, scene):
    rungs, info = ladder.run_ladder(runner, [scene], "what colour is the square")
    assert [r.keep_ratio for r in rungs] == list(ladder.LADDER)
    assert info["encoded"] == 1 and info["reused"] >= len(rungs)          # one vision-encoder pass
    assert rungs[0].agrees and rungs[0].kept_tokens == rungs[0].visual_tokens
    kept = [r.kept_tokens for r in rungs]
    assert kept == sorted(kept, reverse=True) and kept[-1] == ladder.budget(rungs[0].visual_tokens, 0.05)
    start = time.perf_counter()
    plain = runner.compare([scene], "what colour is the square", keep_ratio=1 / 9)       # same answers as
    one_compare = time.perf_counter() - start
    assert rungs[3].answer == plain.pruned.answer                                       # separate runs
    # five rungs cost about as much as one compare (five runs too), never the ten runs of five compares
    assert info["seconds"] < 3 * one_compare, (info, one_compare)
    if os.getloadavg()[0] <= (os.cpu_count() or 1):   # the bound (2 cores), when no one else is busy
        assert info["seconds"] < 3.0, info
    print(f"\nladder: {info['seconds']:.2f} s for 5 rungs (one compare: {one_compare:.2f} s; "
          f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    assert ladder.plot(rungs).size[0] > 0
