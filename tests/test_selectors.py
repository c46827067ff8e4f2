"""Every selector's contract, and what each one is supposed to prefer."""
import pytest
import torch

from iwp import baselines
from iwp.baselines import SelectorInput
from iwp.selection import CATEGORIES, DROPPED_DUPLICATE, KEPT_DIVERSITY, KEPT_MAGNITUDE, categorize, covering
from iwp.selectors import SELECTORS, select


def make_input(n=48, grid=(1, 6, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return SelectorInput(q=torch.randn(4, 3, 8, generator=g), k=torch.randn(2, n, 8, generator=g),
                         v=torch.randn(2, n, 8, generator=g), k_rope=torch.randn(2, n, 8, generator=g),
                         q_last_rope=torch.randn(4, 1, 8, generator=g), features=torch.randn(n, 16, generator=g),
                         grid=grid, seed=seed)


@pytest.mark.parametrize("method", sorted(SELECTORS))
@pytest.mark.parametrize("budget", [0, 1, 7, 48, 60])
def test_contract(method, budget):
    inp = make_input()
    picks = select(method, inp, budget)
    assert picks.dtype == torch.long and picks.numel() == min(budget, 48)
    assert picks.unique().numel() == picks.numel()
    assert torch.equal(picks, select(method, inp, budget))          # deterministic


def test_iwp_records_its_steps_and_the_peers_record_none():
    inp = make_input(n=200)
    picks = select("iwp", inp, 40, first_chunk=4, growth=2.0)
    steps = inp.steps.tolist()
    assert sum(steps) == 40 and steps[0] == 1 and steps[1] <= 4
    assert len(steps) < 40                                          # several picks share a step
    select("fastv", inp, 40)                                        # the same input reused: no stale steps
    assert inp.steps is None
    assert select("iwp", inp, 0).numel() == 0 and inp.steps.tolist() == []


def test_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match="iwp"):
        select("nope", make_input(), 3)


def test_fastv_is_head_averaged_last_token_attention():
    inp = make_input()
    k = inp.k_rope.repeat_interleave(2, dim=0)
    attn = ((inp.q_last_rope @ k.transpose(1, 2)) / 8 ** 0.5).softmax(-1).mean(0)[0]
    assert select("fastv", inp, 5).tolist() == attn.argsort(descending=True)[:5].tolist()


def test_random_depends_on_seed():
    a, b = make_input(seed=1), make_input(seed=1)
    b.seed = 2
    assert not torch.equal(select("random", a, 10), select("random", b, 10))


def test_uniform_spreads_over_the_grid():
    inp = make_input(n=64, grid=(1, 8, 8))
    picks = select("uniform", inp, 4)
    rows, cols = picks // 8, picks % 8
    # four picks on an 8x8 grid: one in each quadrant
    assert sorted(((rows >= 4) * 2 + (cols >= 4)).tolist()) == [0, 1, 2, 3]


def test_uniform_spreads_over_frames_first():
    inp = make_input(n=2 * 16, grid=(2, 4, 4))
    frames = (select("uniform", inp, 2) // 16).tolist()
    assert sorted(frames) == [0, 1]


def test_divprune_is_max_min_diverse():
    # three tight clusters: three picks take one from each
    feats = torch.cat([torch.randn(10, 8) * 0.01 + c for c in (torch.eye(8)[0], torch.eye(8)[1], -torch.eye(8)[0])])
    inp = make_input(n=30)
    inp.features = feats
    assert sorted((select("divprune", inp, 3) // 10).tolist()) == [0, 1, 2]


def test_iwp_prefers_new_information_over_copies():
    # token 0 has the top magnitude; tokens 1-3 are its copies; token 4 is different and weaker
    k = torch.tensor([[[1.0, 0.0]] * 4 + [[0.0, 1.0]]])
    v = torch.tensor([[[2.0, 0.0]] * 4 + [[0.0, 1.0]]])
    inp = SelectorInput(q=torch.tensor([[[1.0, 0.0]]]), k=k, v=v, k_rope=k)
    assert select("magnitude", inp, 2).tolist() == [0, 1]
    assert select("iwp", inp, 2).tolist() == [0, 4]
    assert select("iwp", inp, 2, lam=1.0).tolist() == [0, 1]           # lam = 1 is magnitude only


def test_categories_and_cover():
    k = torch.tensor([[[1.0, 0.0]] * 4 + [[0.0, 1.0]]])
    v = torch.tensor([[[2.0, 0.0]] * 4 + [[0.0, 1.0]]])
    m = torch.tensor([1.0, 0.9, 0.8, 0.7, 0.5])
    kept = torch.tensor([0, 4])
    cats = categorize(m, kept)
    assert cats[0] == KEPT_MAGNITUDE and cats[4] == KEPT_DIVERSITY and cats[1] == DROPPED_DUPLICATE
    assert cats[2] == cats[3] == "dropped, low magnitude"
    assert set(cats) <= set(CATEGORIES)
    cover, sim = covering(k, v, kept)
    assert cover == [0, 0, 0, 0, 4] and sim[1] == pytest.approx(1.0) and sim[4] == 1.0


def test_missing_inputs_are_clear_errors():
    inp = make_input()
    inp.features = None
    with pytest.raises(ValueError, match="features"):
        baselines.divprune(inp, 3)
    with pytest.raises(ValueError):
        baselines.random(inp, -1)
