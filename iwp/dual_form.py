"""The dual form of attention: information magnitude and duplication of visual tokens (method.md 2-3).

Each key/value pair adds one rank-1 update dW_i = phi(k_i)^T v_i to the implicit weight of attention;
these functions score those updates without ever building phi.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def _check_qkv(k: Tensor, v: Tensor) -> None:
    if k.ndim != 3 or v.ndim != 3:
        raise ValueError(f"k and v must be [heads, N, dim], got {tuple(k.shape)} and {tuple(v.shape)}")
    if k.shape[:2] != v.shape[:2]:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must share heads and N")


def information_magnitude(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Score_i = softmax_i(q.k_i / sqrt d) * ||v_i||, averaged over query heads and query tokens.

    q [Hq,T,d] and k [Hkv,N,d] before RoPE, v [Hkv,N,dv]; query head h reads KV head h // (Hq/Hkv).
    Returns [N] in float32.
    """
    _check_qkv(k, v)
    if q.ndim != 3 or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q must be [Hq, T, d] with d = {k.shape[-1]}, got {tuple(q.shape)}")
    hq, t, d = q.shape
    hkv, n, _ = k.shape
    if hq % hkv:
        raise ValueError(f"query heads ({hq}) must be a multiple of KV heads ({hkv})")
    if n == 0 or t == 0:
        return torch.zeros(n, dtype=torch.float32, device=k.device)
    # Group the query heads of each KV head so one batched matmul serves GQA without copying k.
    qg = q.float().reshape(hkv, (hq // hkv) * t, d)
    logits = torch.matmul(qg, k.float().transpose(1, 2)) / math.sqrt(d)   # [Hkv, G*T, N]
    attn = logits.softmax(dim=-1)
    value_norm = v.float().norm(dim=-1)                                     # [Hkv, N]
    return (attn * value_norm[:, None, :]).mean(dim=(0, 1))


class DualFactors:
    """Per-token pieces of S_ij = sum_h w_i^h w_j^h cos(v_i^h, v_j^h) exp(-|k_i^h - k_j^h|^2 / (2 sqrt d)).

    w_i^h = ||dW_i^h|| / sqrt(sum_h ||dW_i^h||^2), computed in log space, so huge keys stay finite.
    The weights are folded into unit values (u_i^h = w_i^h v_i^h / ||v_i^h||), so a block of S costs two
    batched matmuls and one elementwise product.
    """

    def __init__(self, k: Tensor, v: Tensor):
        _check_qkv(k, v)
        k, v = k.float(), v.float()
        sqrt_d = math.sqrt(k.shape[-1])
        v_norm = v.norm(dim=-1).clamp_min(1e-30)
        log_norm = (k * k).sum(-1) / (2 * sqrt_d) + v_norm.log()             # log ||dW_i^h||, [H, N]
        w = (log_norm - torch.logsumexp(2 * log_norm, dim=0, keepdim=True) / 2).exp()
        self.u = v * (w / v_norm)[..., None]
        # Distances do not change under a shift, and centring the keys keeps |a|^2 + |b|^2 - 2ab from
        # cancelling catastrophically when keys share a large offset (real LLM keys do). Then
        # -|a - b|^2 / (2 sqrt d) = [a, -|a|^2/(2 sqrt d), 1] . [b / sqrt d, 1, -|b|^2/(2 sqrt d)]: one bmm.
        k = k - k.mean(dim=1, keepdim=True)
        half_sq = (k * k).sum(-1, keepdim=True) / (2 * sqrt_d)
        ones = torch.ones_like(half_sq)
        self.k_left = torch.cat([k, -half_sq, ones], dim=-1)
        self.k_right = torch.cat([k / sqrt_d, ones, -half_sq], dim=-1)

    def __len__(self) -> int:
        return self.u.shape[1]

    def columns(self, cols: Tensor) -> Tensor:
        """S[:, cols] for all N tokens, [N, C] float32. The fast path of PC-MMR."""
        return self._similarity(self.k_left, self.u, self.k_right[:, cols], self.u[:, cols])

    def block(self, rows: Tensor | None = None, cols: Tensor | None = None) -> Tensor:
        """S restricted to token rows x cols (index tensors; None = all), [R, C] float32 in [-1, 1].

        A token's similarity to itself is exactly 1, whatever float32 cancellation says.
        """
        everything = torch.arange(len(self), device=self.u.device)
        cols = everything if cols is None else cols
        rows = everything if rows is None else rows
        s = self._similarity(self.k_left[:, rows], self.u[:, rows], self.k_right[:, cols], self.u[:, cols])
        return s.masked_fill_(rows[:, None] == cols[None, :], 1.0)

    @staticmethod
    def _similarity(k_left: Tensor, u_left: Tensor, k_right: Tensor, u_right: Tensor) -> Tensor:
        """The one formula for S: sum over heads of exp(min(k_left . k_right, 0)) * (u_left . u_right)."""
        rbf = torch.bmm(k_left, k_right.transpose(1, 2)).clamp_max_(0).exp_()
        return torch.bmm(u_left, u_right.transpose(1, 2)).mul_(rbf).sum(0).clamp_(-1.0, 1.0)


def information_duplication(k: Tensor, v: Tensor) -> Tensor:
    """S [N,N]: the cosine between the rank-1 updates of tokens i and j, over all KV heads.

    k [Hkv,N,d] after RoPE, v [Hkv,N,dv]. Builds the full matrix: small N only (tests, pictures).
    """
    return DualFactors(k, v).block()
