"""greedy_mmr and pc_mmr against a hand-written loop, their contracts and edge cases."""
import pytest
import torch

from iwp.dual_form import information_duplication, information_magnitude
from iwp.mmr import MAX_CHUNK, greedy_mmr, step_caps, pc_mmr, pc_mmr_steps


def mmr_reference(m, S, budget, lam):
    """MMR as method.md 4 states it, in plain Python floats: red 0 while nothing is picked."""
    m, S = m.double().tolist(), S.double().tolist()
    top = max(m)
    picked = []
    for _ in range(min(budget, len(m))):
        best, best_score = None, None
        for i in range(len(m)):
            if i in picked:
                continue
            red = max(S[i][j] for j in picked) if picked else 0.0
            score = lam * m[i] / top - (1 - lam) * red
            if best_score is None or score > best_score:     # strict: ties keep the lowest index
                best, best_score = i, score
        picked.append(best)
    return picked


def clustered_tokens(n=60, clusters=6, heads=2, d=16, seed=0):
    """Near-duplicate tokens around a few prototypes, as in flat image regions."""
    g = torch.Generator().manual_seed(seed)
    proto_k, proto_v = torch.randn(heads, clusters, d, generator=g), torch.randn(heads, clusters, d, generator=g)
    which = torch.randint(clusters, (n,), generator=g)
    k = proto_k[:, which] + 0.15 * torch.randn(heads, n, d, generator=g)
    v = proto_v[:, which] + 0.15 * torch.randn(heads, n, d, generator=g)
    q = torch.randn(2 * heads, 4, d, generator=g)
    return q, k, v


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_greedy_matches_reference(lam):
    q, k, v = clustered_tokens(seed=int(lam * 10))
    m, S = information_magnitude(q, k, v), information_duplication(k, v)
    assert greedy_mmr(m, S, 15, lam=lam).tolist() == mmr_reference(m, S, 15, lam)


def test_first_pick_is_argmax_magnitude_and_redundancy_can_be_negative():
    m = torch.tensor([1.0, 0.9, 0.8])
    S = torch.tensor([[1.0, 0.95, -0.5], [0.95, 1.0, 0.0], [-0.5, 0.0, 1.0]])
    # after picking 0: token 1 scores .45-.475 < 0, token 2 scores .4+.25 (negative S lowers redundancy)
    assert greedy_mmr(m, S, 3, lam=0.5).tolist() == [0, 2, 1]


def test_ties_go_to_lowest_index():
    m = torch.ones(5)
    S = torch.zeros(5, 5)
    assert greedy_mmr(m, S, 5).tolist() == [0, 1, 2, 3, 4]
    k, v = torch.zeros(1, 5, 4), torch.ones(1, 5, 4)
    assert pc_mmr(m, k, v, 5, first_chunk=1, growth=1.0).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("seed", range(4))
def test_pc_mmr_with_chunks_of_one_is_greedy(seed):
    q, k, v = clustered_tokens(n=80, seed=seed)
    m = information_magnitude(q, k, v)
    greedy = greedy_mmr(m, information_duplication(k, v), 30, lam=0.5)
    assert pc_mmr(m, k, v, 30, lam=0.5, first_chunk=1, growth=1.0).tolist() == greedy.tolist()


@pytest.mark.parametrize("first_chunk,growth", [(1, 2.0), (2, 2.0), (4, 1.5), (1, 3.0)])
def test_pc_mmr_contract(first_chunk, growth):
    q, k, v = clustered_tokens(n=100, seed=7)
    m = information_magnitude(q, k, v)
    picks = pc_mmr(m, k, v, 40, first_chunk=first_chunk, growth=growth)
    assert picks.dtype == torch.long and picks.numel() == 40
    assert picks.unique().numel() == 40                          # no repeated picks
    assert picks[0] == m.argmax()                                # pick order starts with the top magnitude
    again = pc_mmr(m, k, v, 40, first_chunk=first_chunk, growth=growth)
    assert torch.equal(picks, again)                             # deterministic


def test_pc_mmr_skips_near_copies_inside_a_chunk():
    # tokens 0 and 1 are exact copies with the top magnitude, token 2 is different and a bit weaker
    k = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, -3.0]]])
    v = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]])
    m = torch.tensor([1.0, 1.0, 0.9, 0.1])
    assert pc_mmr(m, k, v, 2, first_chunk=2).tolist() == [0, 2]
    assert greedy_mmr(m, information_duplication(k, v), 2).tolist() == [0, 2]


@pytest.mark.parametrize("clusters,lam,first_chunk,growth", [(10, 0.5, 1, 3.0), (40, 0.5, 1, 2.0), (40, 0.3, 4, 3.0),
                                                             (120, 0.8, 1, 4.0), (3, 0.5, 2, 1.5)])
def test_pc_mmr_is_greedy_mmr_in_fewer_steps(clusters, lam, first_chunk, growth):
    q, k, v = clustered_tokens(n=400, clusters=clusters, seed=3)
    m = information_magnitude(q, k, v)
    picks, steps = pc_mmr_steps(m, k, v, 60, lam=lam, first_chunk=first_chunk, growth=growth)
    assert picks.tolist() == greedy_mmr(m, information_duplication(k, v), 60, lam=lam).tolist()
    assert len(steps.tolist()) < 60 / 3                          # chunks really take several tokens a step


def check_steps(steps: list[int], budget: int, caps: list[int]) -> None:
    """The steps of one run: they sum to the budget, the first takes one pick, each stays under its cap."""
    assert sum(steps) == budget
    assert steps[0] == 1
    assert all(1 <= s <= caps[min(i, len(caps) - 1)] for i, s in enumerate(steps)), (steps, caps)


@pytest.mark.parametrize("budget,first_chunk,growth", [(60, 1, 2.0), (60, 4, 3.0), (37, 2, 1.0), (100, 16, 2.0)])
def test_pc_mmr_steps_are_the_run_s_own(budget, first_chunk, growth):
    q, k, v = clustered_tokens(n=400, clusters=120, seed=5)
    m = information_magnitude(q, k, v)
    picks, steps = pc_mmr_steps(m, k, v, budget, first_chunk=first_chunk, growth=growth)
    caps = step_caps(budget, first_chunk, growth)
    check_steps(steps.tolist(), budget, caps)
    assert steps.tolist()[1] <= first_chunk                     # first_chunk caps the step after the first pick
    assert torch.equal(picks, pc_mmr(m, k, v, budget, first_chunk=first_chunk, growth=growth))


def test_steps_stop_short_of_their_cap_when_an_outside_token_could_win():
    q, k, v = clustered_tokens(n=400, clusters=10, seed=3)
    steps = pc_mmr_steps(information_magnitude(q, k, v), k, v, 60, first_chunk=8, growth=2.0)[1].tolist()
    caps = step_caps(60, 8, 2.0)
    assert any(s < caps[min(i, len(caps) - 1)] for i, s in enumerate(steps[:-1]))   # not the schedule


def test_pc_mmr_is_greedy_with_exact_ties_and_no_outside_tokens():
    q, k, v = clustered_tokens(n=30, clusters=4, seed=1)
    k, v = k.repeat(1, 2, 1), v.repeat(1, 2, 1)                   # every token twice: exact ties everywhere
    m = information_magnitude(q, k, v)
    S = information_duplication(k, v)
    for budget in (7, 40, 60):                                   # 60: the pool ends up holding every token
        assert pc_mmr(m, k, v, budget, growth=3.0).tolist() == greedy_mmr(m, S, budget).tolist()


def test_chunk_schedule():
    # one pick first, then first_chunk, times growth, up to the budget and MAX_CHUNK (the last cap repeats)
    assert step_caps(10, 1, 2.0) == [1, 1, 2, 4, 8, 10]
    assert step_caps(10, 3, 2.0) == [1, 3, 6, 10]
    assert step_caps(5, 1, 1.0) == [1, 1]
    assert step_caps(20, 4, 1.0) == [1, 4]
    assert step_caps(3, 8, 2.0) == [1, 3]
    assert step_caps(1, 8, 2.0) == [1, 1]
    assert step_caps(10**6, 64, 2.0) == [1, 64, MAX_CHUNK]


@pytest.mark.parametrize("fn", ["greedy", "pc"])
def test_edge_cases(fn):
    q, k, v = clustered_tokens(n=6)
    m = information_magnitude(q, k, v)

    def run(m, k, v, budget):
        if fn == "greedy":
            return greedy_mmr(m, information_duplication(k, v), budget)
        return pc_mmr(m, k, v, budget)

    assert run(m, k, v, 0).numel() == 0
    if fn == "pc":
        assert pc_mmr_steps(m, k, v, 0)[1].tolist() == []
    everything = run(m, k, v, 99)                                # budget >= N: all tokens, in pick order
    assert sorted(everything.tolist()) == list(range(6))
    assert run(m[:1], k[:, :1], v[:, :1], 3).tolist() == [0]    # N = 1
    with pytest.raises(ValueError):
        run(m, k, v, -1)


def test_invalid_inputs_are_clear_errors():
    q, k, v = clustered_tokens(n=6)
    m = information_magnitude(q, k, v)
    with pytest.raises(ValueError, match="S must be"):
        greedy_mmr(m, torch.zeros(5, 5), 2)
    with pytest.raises(ValueError, match="tokens"):
        pc_mmr(m[:5], k, v, 2)
    with pytest.raises(ValueError, match="lam"):
        pc_mmr(m, k, v, 2, lam=1.5)
    with pytest.raises(ValueError, match="first_chunk"):
        pc_mmr(m, k, v, 2, first_chunk=0)
    with pytest.raises(TypeError):
        greedy_mmr(m, torch.zeros(6, 6), 2.5)
