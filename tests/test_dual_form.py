"""dual_form against hand-written float64 loops, GQA, and stability with huge keys."""
import math

import pytest
import torch

from iwp.dual_form import DualFactors, information_duplication, information_magnitude


def magnitude_reference(q, k, v):
    """Loop over query heads and query tokens in float64, as method.md 2 states it."""
    q, k, v = q.double(), k.double(), v.double()
    hq, t, d = q.shape
    hkv, n, _ = k.shape
    total = torch.zeros(n, dtype=torch.float64)
    for h in range(hq):
        kv = h // (hq // hkv)
        for s in range(t):
            logits = torch.tensor([float(q[h, s] @ k[kv, i]) / math.sqrt(d) for i in range(n)], dtype=torch.float64)
            attn = torch.exp(logits - logits.max())
            attn = attn / attn.sum()
            for i in range(n):
                total[i] += attn[i] * v[kv, i].norm()
    return total / (hq * t)


def duplication_reference(k, v):
    """sum_h <dW_i^h, dW_j^h> / sqrt(sum_h |dW_i^h|^2 sum_h |dW_j^h|^2), with the kernel written out."""
    k, v = k.double(), v.double()
    hkv, n, d = k.shape
    inner = torch.zeros(n, n, dtype=torch.float64)
    for h in range(hkv):
        for i in range(n):
            for j in range(n):
                inner[i, j] += float(v[h, i] @ v[h, j]) * math.exp(float(k[h, i] @ k[h, j]) / math.sqrt(d))
    norm = inner.diagonal().sqrt()
    return inner / (norm[:, None] * norm[None, :])


@pytest.mark.parametrize("hq,hkv", [(1, 1), (4, 2), (6, 3), (4, 1)])
def test_magnitude_matches_reference_with_gqa(hq, hkv):
    torch.manual_seed(hq * 10 + hkv)
    q, k, v = torch.randn(hq, 3, 8), torch.randn(hkv, 11, 8), torch.randn(hkv, 11, 5)
    got = information_magnitude(q, k, v)
    assert got.dtype == torch.float32 and got.shape == (11,)
    torch.testing.assert_close(got.double(), magnitude_reference(q, k, v), rtol=1e-5, atol=1e-7)


def test_magnitude_gqa_uses_matching_kv_head():
    # KV head 1 has huge values: only query heads 2 and 3 (which read KV head 1) may see them.
    q, k = torch.zeros(4, 1, 4), torch.zeros(2, 3, 4)
    v = torch.ones(2, 3, 4)
    v[1, 2] *= 100
    m = information_magnitude(q, k, v)               # uniform attention: 1/3 each
    expected = (2 * 2 + 2 * torch.tensor([2.0, 2.0, 200.0])) / 4 / 3
    torch.testing.assert_close(m, expected)


@pytest.mark.parametrize("hkv", [1, 3])
def test_duplication_matches_reference(hkv):
    torch.manual_seed(hkv)
    k, v = 0.5 * torch.randn(hkv, 9, 6), torch.randn(hkv, 9, 4)
    got = information_duplication(k, v)
    torch.testing.assert_close(got.double(), duplication_reference(k, v), rtol=1e-4, atol=1e-5)


def test_single_head_is_value_cosine_times_rbf():
    torch.manual_seed(1)
    k, v = torch.randn(1, 7, 16), torch.randn(1, 7, 8)
    d = 16
    expected = torch.nn.functional.cosine_similarity(v[0][:, None], v[0][None], dim=-1) * torch.exp(
        -torch.cdist(k[0].double(), k[0].double()) ** 2 / (2 * math.sqrt(d))).float()
    torch.testing.assert_close(information_duplication(k, v), expected, rtol=1e-4, atol=1e-5)


def test_duplication_is_symmetric_unit_diagonal_and_bounded():
    torch.manual_seed(2)
    S = information_duplication(torch.randn(4, 20, 8), torch.randn(4, 20, 8))
    torch.testing.assert_close(S, S.T)
    torch.testing.assert_close(S.diagonal(), torch.ones(20), atol=1e-5, rtol=0)
    assert S.abs().max() <= 1.0


def test_huge_keys_stay_finite():
    # keys 30x larger than usual overflow exp(|k|^2 / sqrt d) in float32 and even float64
    torch.manual_seed(3)
    k, v = 30 * torch.randn(4, 50, 64), torch.randn(4, 50, 64)
    S = information_duplication(k.bfloat16(), v.bfloat16())
    assert torch.isfinite(S).all() and S.abs().max() <= 1.0
    torch.testing.assert_close(S.diagonal(), torch.ones(50), atol=2e-3, rtol=0)
    m = information_magnitude(30 * torch.randn(8, 5, 64), k, v)
    assert torch.isfinite(m).all()


def test_huge_keys_match_reference_where_reference_is_finite():
    # one head dominates each token's norm: S is then that head's cosine; check against log-space by hand
    torch.manual_seed(4)
    k, v = 9 * torch.randn(2, 6, 16), torch.randn(2, 6, 8)
    got = information_duplication(k, v).double()
    torch.testing.assert_close(got, duplication_reference(k, v), rtol=1e-3, atol=1e-4)


def test_block_equals_slice_of_full_matrix():
    torch.manual_seed(5)
    k, v = torch.randn(2, 30, 8), torch.randn(2, 30, 8)
    f = DualFactors(k, v)
    rows, cols = torch.tensor([3, 1, 29]), torch.tensor([0, 7])
    torch.testing.assert_close(f.block(rows, cols), information_duplication(k, v)[rows][:, cols])


def test_shared_key_offset_does_not_change_similarity():
    # real LLM keys share large offsets; with one head S = cos(v) * rbf(k) ignores them exactly
    torch.manual_seed(6)
    k, v = torch.randn(1, 12, 32), torch.randn(1, 12, 8)
    offset = 40 * torch.randn(1, 1, 32)
    S = information_duplication(k, v)
    S_shifted = information_duplication(k + offset, v)
    torch.testing.assert_close(S_shifted, S, atol=1e-5, rtol=1e-4)


def test_zero_value_token_is_harmless():
    k, v = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    v[:, 2] = 0
    S = information_duplication(k, v)
    assert torch.isfinite(S).all()


@pytest.mark.parametrize("bad", [
    lambda: information_magnitude(torch.randn(3, 2, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8)),
    lambda: information_magnitude(torch.randn(4, 2, 4), torch.randn(2, 5, 8), torch.randn(2, 5, 8)),
    lambda: information_magnitude(torch.randn(4, 2, 8), torch.randn(2, 5, 8), torch.randn(2, 6, 8)),
    lambda: information_duplication(torch.randn(5, 8), torch.randn(5, 8)),
])
def test_shape_mismatch_is_a_clear_error(bad):
    with pytest.raises(ValueError):
        bad()
