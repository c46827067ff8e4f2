"""The vision rotary embedding (transformers' apply_rotary_pos_emb_vision) as one Triton kernel, bit for bit.

transformers computes, per element, in float32 and in this order (rotate_half(x) = cat(-x2, x1)):
    a = x * cos            rounded to float32
    b = (-x2 or x1) * sin  rounded to float32
    r = a + b              rounded to float32, then rounded to the input's dtype (round to nearest even)
as about ten elementwise kernels (casts, cat, neg, two muls, add, cast back) for q and again for k. The kernel
reads q, k, cos and sin once and writes both outputs, with the same three roundings:
  - it is compiled with enable_fp_fusion=False: the multiply and add are not contracted into an FMA (which
    rounds once, not twice); LLVM then emits mul.rn / add.rn, and ptxas runs with --fmad=false;
  - float32 -> bfloat16 is rounded to nearest even in integer arithmetic (what torch's CPU conversion does),
    the same on the GPU as in Triton's interpreter (whose own bfloat16 cast truncates, Triton 3.6);
    NaNs become the quiet NaN 0x7FC0 (torch on CUDA gives 0x7FFF: both NaN); float16 through Triton's cast
    (cvt.rn on the GPU, numpy's round to nearest even in the interpreter).
Importing this module imports Triton (iwp.kernels.cuda_rotary() does it lazily); AVAILABLE says whether it is
installed. Checked against transformers on CPU in Triton's interpreter (tests/test_vision_speed.py) and on an
H200 (scripts/gpu_rotary.sh).
"""
from __future__ import annotations

import os

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:                                   # CPU machines: transformers' function is used
    triton = None

AVAILABLE = triton is not None
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"   # kernels run on CPU tensors (tests)
ROWS = 32                # (token, head) rows per program: 32 x 80 bf16 = 5 KB of q and of k per program
_OUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
_TABLE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)   # cos / sin: float32 holds them exactly


if AVAILABLE:
    @triton.jit
    def _round_bf16(r):
        """float32 -> bfloat16 rounded to nearest even, in integer arithmetic; NaN -> 0x7FC0."""
        u = r.to(tl.uint32, bitcast=True)
        rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        bits = tl.where(r != r, 0x7FC0, rounded).to(tl.uint16)
        return bits.to(tl.bfloat16, bitcast=True)

    @triton.jit
    def _rotary_kernel(q_ptr, k_ptr, cos_ptr, sin_ptr, oq_ptr, ok_ptr, rows, heads,
                       qs_s, qs_h, ks_s, ks_h, cs_s, ss_s,
                       HALF: tl.constexpr, BH: tl.constexpr, ROWS: tl.constexpr, MODE: tl.constexpr):
        """Rows r = token * heads + head; q/k [S, heads, 2*HALF] with any token/head strides and unit column
        stride, cos/sin [S, 2*HALF] (unit column stride), outputs contiguous [S, heads, 2*HALF].
        MODE 0: outputs bfloat16, 1: float16, 2: float32."""
        r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        cols = tl.arange(0, BH)
        ok = (r < rows)[:, None] & (cols < HALF)[None, :]
        tok = r // heads
        head = r % heads
        c = cos_ptr + tok[:, None] * cs_s + cols[None, :]
        s = sin_ptr + tok[:, None] * ss_s + cols[None, :]
        c1 = tl.load(c, mask=ok).to(tl.float32)
        c2 = tl.load(c + HALF, mask=ok).to(tl.float32)
        s1 = tl.load(s, mask=ok).to(tl.float32)
        s2 = tl.load(s + HALF, mask=ok).to(tl.float32)
        out = r[:, None] * (2 * HALF) + cols[None, :]
        for which in tl.static_range(2):
            if which == 0:
                x = q_ptr + tok[:, None] * qs_s + head[:, None] * qs_h + cols[None, :]
                o = oq_ptr + out
            else:
                x = k_ptr + tok[:, None] * ks_s + head[:, None] * ks_h + cols[None, :]
                o = ok_ptr + out
            x1 = tl.load(x, mask=ok).to(tl.float32)
            x2 = tl.load(x + HALF, mask=ok).to(tl.float32)
            a1 = x1 * c1                              # each product and the sum rounded to float32 on its own:
            b1 = (-x2) * s1                           # the kernel is compiled with enable_fp_fusion=False
            r1 = a1 + b1
            a2 = x2 * c2
            b2 = x1 * s2
            r2 = a2 + b2
            if MODE == 0:
                tl.store(o, _round_bf16(r1), mask=ok)
                tl.store(o + HALF, _round_bf16(r2), mask=ok)
            elif MODE == 1:
                tl.store(o, r1.to(tl.float16), mask=ok)
                tl.store(o + HALF, r2.to(tl.float16), mask=ok)
            else:
                tl.store(o, r1, mask=ok)
                tl.store(o + HALF, r2, mask=ok)


def supports(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> str | None:
    """Why the kernel does not take these inputs (None: it does; it then returns what transformers returns)."""
    if not AVAILABLE:
        return "Triton is not installed"
    if not all(isinstance(t, Tensor) for t in (q, k, cos, sin)):
        return "not tensors"
    if not all(t.device.type == "cuda" or (INTERPRETED and t.device.type == "cpu") for t in (q, k, cos, sin)) \
            or len({t.device for t in (q, k, cos, sin)}) != 1:
        return "not all on one CUDA device"
    if q.dim() != 3 or q.shape != k.shape or q.dtype != k.dtype or q.dtype not in _OUT_DTYPES:
        return "q, k are not [S, heads, head_dim] of one dtype among bfloat16, float16, float32"
    S, _, D = q.shape
    if D % 2 or cos.shape != (S, D) or sin.shape != (S, D) \
            or cos.dtype not in _TABLE_DTYPES or sin.dtype not in _TABLE_DTYPES or cos.dtype != sin.dtype:
        return "cos, sin are not [S, head_dim] float tables for an even head_dim"
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, cos, sin)):
        return "gradients wanted (the kernel has no backward)"
    if q.numel() >= 2 ** 31 or S * max(abs(s) for s in q.stride() + k.stride()) >= 2 ** 31:
        return "too large for 32-bit offsets"
    return None


def _unit_last(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def apply_rotary(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """apply_rotary_pos_emb_vision(q, k, cos, sin) for inputs supports() accepts: (q_embed, k_embed),
    contiguous [S, heads, head_dim] in q's dtype, bitwise what transformers returns."""
    q, k, cos, sin = (_unit_last(t) for t in (q, k, cos, sin))
    S, H, D = q.shape
    oq, ok = torch.empty(S, H, D, dtype=q.dtype, device=q.device), torch.empty(S, H, D, dtype=q.dtype, device=q.device)
    rows = S * H
    if rows == 0:
        return oq, ok
    mode = _OUT_DTYPES.index(q.dtype)
    _rotary_kernel[(triton.cdiv(rows, ROWS),)](
        q, k, cos, sin, oq, ok, rows, H, q.stride(0), q.stride(1), k.stride(0), k.stride(1),
        cos.stride(0), sin.stride(0), HALF=D // 2, BH=triton.next_power_of_2(D // 2), ROWS=ROWS, MODE=mode,
        enable_fp_fusion=False)
    return oq, ok
