"""PC-MMR on CUDA: each step as five Triton kernels, a whole run replayed as one CUDA graph.

A PC-MMR step is a handful of small operations whose sizes depend on how many tokens earlier steps took.
Launched one by one from Python, with a host sync per step, they cost far more than they compute. Here
all state (redundancy, scores, picks, how many are taken) lives on the GPU, each step has a fixed launch
shape (its largest chunk), and the kernels read the true sizes from the device and do nothing once the
budget is filled. So a whole run, a few more steps than inputs need plus a one-token-at-a-time finisher,
is captured once per input shape as one CUDA graph and replayed with no host sync at all: the host keeps
queueing the model's next layers while the GPU selects. iwp.mmr holds the plain PyTorch version of the same algorithm (CPU,
and the reference these kernels are checked against: tests/test_pool_kernel.py, python -m iwp.bench
selection).

S is never stored: kernels compute its blocks from the keys and values as the model gave them (bf16),
plus three small per-token tables (iwp.dual_form.DualFactors holds the same quantities):
  mean [H, dk]   each head's mean key; keys are centred so a shared offset cannot cancel in float32
  half [H, N]    |k_i - mean|^2 / (2 sqrt d)
  scale [H, N]   w_i / |v_i|, the head weight of token i over its value norm
so S_ij = sum_h exp(min((k_i - mean).(k_j - mean) / sqrt d - half_i - half_j, 0)) * scale_i scale_j v_i.v_j.
The key dot product runs on the tensor cores in tf32x3 (about float32's accuracy; it feeds an exp), the
value dot product in the values' own 16-bit type, whose products float32 holds exactly.

Run state: red [N] (redundancy, -inf while nothing is picked), score [N] (MMR score, -inf once taken),
taken [N], picks [budget], state = [count, count before this step, steps so far], counts [steps] (picks
each step took, 0 once the budget is filled; read only when asked, iwp.mmr.Steps). A step ranks the
tokens (_top_chunks, _top_merge), takes the pool (the top 2c), picks inside it, then updates red and the
scores.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

try:
    import triton
    import triton.language as tl
except ImportError:                                   # CPU machines: the PyTorch path is used
    triton = None

AVAILABLE = triton is not None
from . import MAX_POOL, MAX_TOKENS, SORT_CHUNK   # noqa: E402  (shared with iwp.mmr, which imports no Triton)
TOP = 256                # the step's best tokens the top kernels keep (the pool and the best outside it)
MAX_RUNS = 4             # input shapes whose buffers and graphs are kept
USE_GRAPHS = os.environ.get("IWP_CUDA_GRAPHS", "1") != "0"
# Launch shapes (measured on an H100 with python -m iwp.bench selection --tune ...): the kernels are
# latency-bound, so depth per program (head-dim slice bk) matters more than tile width.
TUNING = {"bk": 64, "pool_tile": 32, "update_rows": 64, "update_cols": 64, "pick_warps": 2, "extra_steps": -1}


if AVAILABLE:
    @triton.jit
    def _similarity(k_ptr, v_ptr, mean_ptr, half_ptr, scale_ptr, rows, cols, row_ok, col_ok, N, inv_sqrt_d,
                    H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                    BK: tl.constexpr):
        """S[rows, cols], [BM, BN] float32 in [-1, 1], from [H, N, d] keys and values (module docstring)."""
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for h in range(H):
            kk = tl.zeros((BM, BN), dtype=tl.float32)
            for k0 in range(0, DK, BK):
                d = k0 + tl.arange(0, BK)
                mu = tl.load(mean_ptr + h * DK + d, mask=d < DK, other=0.0)
                a = tl.load(k_ptr + (h * N + rows[:, None]) * DK + d[None, :],
                            mask=row_ok[:, None] & (d[None, :] < DK), other=0.0).to(tl.float32) - mu[None, :]
                b = tl.load(k_ptr + (h * N + cols[None, :]) * DK + d[:, None],
                            mask=col_ok[None, :] & (d[:, None] < DK), other=0.0).to(tl.float32) - mu[:, None]
                kk += tl.dot(a, b, input_precision="tf32x3")
            vv = tl.zeros((BM, BN), dtype=tl.float32)
            for k0 in range(0, DV, BK):
                d = k0 + tl.arange(0, BK)
                a = tl.load(v_ptr + (h * N + rows[:, None]) * DV + d[None, :],
                            mask=row_ok[:, None] & (d[None, :] < DV), other=0.0)
                b = tl.load(v_ptr + (h * N + cols[None, :]) * DV + d[:, None],
                            mask=col_ok[None, :] & (d[:, None] < DV), other=0.0)
                if a.dtype == tl.float32:
                    vv += tl.dot(a, b, input_precision="tf32x3")
                else:
                    vv += tl.dot(a, b)                            # 16-bit products are exact in float32
            half_r = tl.load(half_ptr + h * N + rows, mask=row_ok, other=0.0)
            half_c = tl.load(half_ptr + h * N + cols, mask=col_ok, other=0.0)
            scale_r = tl.load(scale_ptr + h * N + rows, mask=row_ok, other=0.0)
            scale_c = tl.load(scale_ptr + h * N + cols, mask=col_ok, other=0.0)
            rbf = tl.exp(tl.minimum(kk * inv_sqrt_d - half_r[:, None] - half_c[None, :], 0.0))
            acc += rbf * (vv * scale_r[:, None] * scale_c[None, :])
        return tl.minimum(tl.maximum(acc, -1.0), 1.0)

    @triton.jit
    def _token_tables(k_ptr, v_ptr, mean_ptr, half_ptr, scale_ptr, N, inv_sqrt_d,
                      H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, BM: tl.constexpr,
                      BDK: tl.constexpr, BDV: tl.constexpr):
        """half and scale for a block of tokens. log ||dW_i^h|| = |k_i^h|^2 / (2 sqrt d) + log |v_i^h|;
        w_i^h = ||dW_i^h|| / sqrt(sum_h ||dW_i^h||^2), in log space (iwp.dual_form.DualFactors)."""
        rows = tl.program_id(0) * BM + tl.arange(0, BM)
        ok = rows < N
        dk, dv = tl.arange(0, BDK), tl.arange(0, BDV)
        top = tl.full((BM,), float("-inf"), tl.float32)        # running logsumexp over heads of 2 log||dW||
        total = tl.zeros((BM,), dtype=tl.float32)
        for h in range(H):
            k = tl.load(k_ptr + (h * N + rows[:, None]) * DK + dk[None, :], mask=ok[:, None] & (dk[None, :] < DK),
                        other=0.0).to(tl.float32)
            v = tl.load(v_ptr + (h * N + rows[:, None]) * DV + dv[None, :], mask=ok[:, None] & (dv[None, :] < DV),
                        other=0.0).to(tl.float32)
            v_norm = tl.maximum(tl.sqrt(tl.sum(v * v, axis=1)), 1e-30)
            log2 = 2.0 * (tl.sum(k * k, axis=1) * (0.5 * inv_sqrt_d) + tl.log(v_norm))
            new_top = tl.maximum(top, log2)
            total = total * tl.exp(top - new_top) + tl.exp(log2 - new_top)
            top = new_top
            mu = tl.load(mean_ptr + h * DK + dk, mask=dk < DK, other=0.0)
            kc = tl.where(dk[None, :] < DK, k - mu[None, :], 0.0)
            tl.store(half_ptr + h * N + rows, tl.sum(kc * kc, axis=1) * (0.5 * inv_sqrt_d), mask=ok)
            tl.store(scale_ptr + h * N + rows, log2, mask=ok)               # 2 log||dW|| until the next pass
        lse = top + tl.log(total)
        for h in range(H):
            v = tl.load(v_ptr + (h * N + rows[:, None]) * DV + dv[None, :], mask=ok[:, None] & (dv[None, :] < DV),
                        other=0.0).to(tl.float32)
            v_norm = tl.maximum(tl.sqrt(tl.sum(v * v, axis=1)), 1e-30)
            log2 = tl.load(scale_ptr + h * N + rows, mask=ok, other=0.0)
            tl.store(scale_ptr + h * N + rows, tl.exp(0.5 * (log2 - lse)) / v_norm, mask=ok)

    @triton.jit
    def _orderable(bits):
        """float32 bits -> int32 of the same order (an involution: it also maps back)."""
        return bits ^ ((bits >> 31) & 0x7FFFFFFF)

    @triton.jit
    def _pick_key(score, token):
        """An int64 ordered as (score, then lower token first), as greedy MMR's argmax ranks tokens; the
        token sits in bits 12-30 (tokens < MAX_TOKENS), bits 0-11 are free. + 0.0 turns -0.0 into 0.0."""
        bits = (score + 0.0).to(tl.int32, bitcast=True)
        return (_orderable(bits).to(tl.int64) << 32) | ((524287 - token.to(tl.int64)) << 12)

    @triton.jit
    def _step_sizes(state_ptr, n, budget, chunk, pool_cap):
        """(tokens taken so far, chunk size c, pool size P) of this step, read from the device. The
        schedule's first chunk is 1 (iwp.mmr.step_caps): the first pick turns 'no redundancy' into S."""
        count = tl.load(state_ptr)
        c = tl.minimum(chunk, budget - count)
        pool = tl.minimum(tl.minimum(2 * c, n - count), pool_cap)
        return count, c, pool

    @triton.jit
    def _full_key(score, token):
        """A unique int64 per token, ordered as (score, then lower token first)."""
        bits = (score + 0.0).to(tl.int32, bitcast=True)
        return (_orderable(bits).to(tl.int64) << 32) | (2147483647 - token.to(tl.int64))

    @triton.jit
    def _top_chunks(score_ptr, state_ptr, keys_ptr, N, budget, CHUNK: tl.constexpr):
        """Each program sorts one chunk of tokens by key, best first (nothing once the budget is filled)."""
        if tl.load(state_ptr) < budget:
            token = tl.program_id(0) * CHUNK + tl.arange(0, CHUNK)
            ok = token < N
            key = tl.where(ok, _full_key(tl.load(score_ptr + token, mask=ok, other=0.0), token),
                           -9223372036854775807)
            tl.store(keys_ptr + token, tl.sort(key, descending=True))

    @triton.jit
    def _top_merge(keys_ptr, state_ptr, top_ptr, order_ptr, budget, chunks, CHUNK: tl.constexpr,
                   T: tl.constexpr, BLOCK: tl.constexpr):
        """The T best tokens of all chunks, best first: top (scores) and order (tokens)."""
        if tl.load(state_ptr) < budget:
            i = tl.arange(0, BLOCK)
            chunk, j = i // T, i % T
            key = tl.load(keys_ptr + chunk * CHUNK + j, mask=chunk < chunks, other=-9223372036854775807)
            key = tl.sort(key, descending=True)
            score = _orderable((key >> 32).to(tl.int32)).to(tl.float32, bitcast=True)
            tl.store(top_ptr + i, score, mask=i < T)
            tl.store(order_ptr + i, 2147483647 - (key & 0xFFFFFFFF), mask=i < T)

    @triton.jit
    def _pool_block(k_ptr, v_ptr, mean_ptr, half_ptr, scale_ptr, order_ptr, state_ptr, out_ptr, N, inv_sqrt_d,
                    budget, chunk, pool_cap, H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
                    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
        """out[b, a] = S[pool_a, pool_b] over the step's pool (the top P tokens of order); row b is what
        picking pool member b does to every member's redundancy."""
        count, c, pool = _step_sizes(state_ptr, N, budget, chunk, pool_cap)
        a = tl.program_id(0) * BM + tl.arange(0, BM)
        b = tl.program_id(1) * BN + tl.arange(0, BN)
        if (tl.program_id(0) * BM < pool) & (tl.program_id(1) * BN < pool):
            a_ok, b_ok = a < pool, b < pool
            rows = tl.load(order_ptr + a, mask=a_ok, other=0)
            cols = tl.load(order_ptr + b, mask=b_ok, other=0)
            s = _similarity(k_ptr, v_ptr, mean_ptr, half_ptr, scale_ptr, rows, cols, a_ok, b_ok, N, inv_sqrt_d,
                            H, DK, DV, BM, BN, BK)
            tl.store(out_ptr + b[None, :] * pool_cap + a[:, None], s, mask=a_ok[:, None] & b_ok[None, :])

    @triton.jit
    def _pick(pool_ptr, top_ptr, order_ptr, rel_ptr, red_ptr, taken_ptr, picks_ptr, state_ptr, counts_ptr,
              N, budget, chunk, pool_cap, penalty, BLOCK: tl.constexpr):
        """Greedy MMR inside the pool, one program: take the pool's best token while no token outside
        could beat it. Outside tokens only lose score as tokens are taken, so the best of them before
        this step (tau, the score at rank P) bounds them all; the picks are exactly greedy MMR's.
        top/order: the step's scores and their tokens, best first (ties: lower token first). Records how
        many it took in counts[step] (the step index lives in state[2], so launches need no index)."""
        count, c, pool = _step_sizes(state_ptr, N, budget, chunk, pool_cap)
        slot = tl.arange(0, BLOCK)
        inside = slot < pool
        token = tl.load(order_ptr + slot, mask=inside, other=0)
        rel = tl.load(rel_ptr + token, mask=inside, other=0.0)
        red = tl.load(red_ptr + token, mask=inside, other=float("-inf"))
        score = tl.load(top_ptr + slot, mask=inside, other=float("-inf"))
        alive = inside & (score > float("-inf"))
        # Candidates compare by (score, lower token first), with the pool slot riding in
        # the low 12 bits so that one max-reduction also says where the winner sits.
        outside = pool < N
        tau_score = tl.load(top_ptr + pool, mask=outside, other=float("-inf"))
        tau_token = tl.load(order_ptr + pool, mask=outside, other=0)
        tau = tl.where(outside, _pick_key(tau_score, tau_token) >> 12, -9223372036854775807 >> 12)
        taken_now = 0
        go = c > 0
        while go:
            best = tl.max(tl.where(alive, _pick_key(score, token) | slot.to(tl.int64), -9223372036854775807), axis=0)
            ok = (best >> 12) > tau
            if ok:
                best_slot = (best & 4095).to(tl.int32)
                best_token = 524287 - ((best >> 12) & 524287)
                tl.store(picks_ptr + count + taken_now, best_token)
                tl.store(taken_ptr + best_token, 1)
                red = tl.maximum(red, tl.load(pool_ptr + best_slot * pool_cap + slot, mask=inside, other=0.0))
                alive = alive & (slot != best_slot)
                score = tl.where(alive, rel - penalty * red, float("-inf"))
                taken_now += 1
            go = ok & (taken_now < c)
        step = tl.load(state_ptr + 2)
        tl.store(counts_ptr + step, taken_now)
        tl.store(state_ptr + 2, step + 1)
        tl.store(state_ptr + 1, count)
        tl.store(state_ptr, count + taken_now)

    @triton.jit
    def _update(k_ptr, v_ptr, mean_ptr, half_ptr, scale_ptr, picks_ptr, state_ptr, rel_ptr, red_ptr, taken_ptr,
                score_ptr, N, inv_sqrt_d, penalty, H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
                BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
        """red[i] = max(red[i], S[i, this step's picks]) and the new MMR scores, for a block of rows."""
        start = tl.load(state_ptr + 1)
        stop = tl.load(state_ptr)
        if start < stop:
            rows = tl.program_id(0) * BM + tl.arange(0, BM)
            row_ok = rows < N
            red = tl.load(red_ptr + rows, mask=row_ok, other=float("-inf"))
            c0 = start
            while c0 < stop:
                cols = c0 + tl.arange(0, BN)
                col_ok = cols < stop
                picked = tl.load(picks_ptr + cols, mask=col_ok, other=0)
                s = _similarity(k_ptr, v_ptr, mean_ptr, half_ptr, scale_ptr, rows, picked, row_ok, col_ok, N,
                                inv_sqrt_d, H, DK, DV, BM, BN, BK)
                red = tl.maximum(red, tl.max(tl.where(col_ok[None, :], s, float("-inf")), axis=1))
                c0 += BN
            tl.store(red_ptr + rows, red, mask=row_ok)
            rel = tl.load(rel_ptr + rows, mask=row_ok, other=0.0)
            taken = tl.load(taken_ptr + rows, mask=row_ok, other=1)
            score = rel - penalty * tl.where(red == float("-inf"), 0.0, red)
            tl.store(score_ptr + rows, tl.where(taken != 0, float("-inf"), score), mask=row_ok)

    @triton.jit
    def _finish(k_ptr, v_ptr, mean_ptr, half_ptr, scale_ptr, rel_ptr, red_ptr, taken_ptr, score_ptr, picks_ptr,
                state_ptr, N, budget, inv_sqrt_d, penalty, H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
                BLOCK: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr):
        """Greedy MMR one token at a time, in one program, for whatever the steps left (normally nothing):
        the run's graph has a fixed number of steps, and this makes it finish whatever the input."""
        count = tl.load(state_ptr)
        one = tl.arange(0, 16) == 0
        while count < budget:
            best = tl.full((), -9223372036854775807, tl.int64)
            start = 0
            while start < N:
                token = start + tl.arange(0, BLOCK)
                ok = token < N
                s = tl.load(score_ptr + token, mask=ok, other=float("-inf"))
                best = tl.maximum(best, tl.max(tl.where(ok & (s > float("-inf")), _pick_key(s, token),
                                                        -9223372036854775807), axis=0))
                start += BLOCK
            pick = (524287 - ((best >> 12) & 524287)).to(tl.int32)
            tl.store(picks_ptr + count, pick.to(tl.int64))
            tl.store(taken_ptr + pick, 1)
            cols = pick + tl.zeros((16,), dtype=tl.int32)
            start = 0
            while start < N:
                rows = start + tl.arange(0, BM)
                row_ok = rows < N
                s = _similarity(k_ptr, v_ptr, mean_ptr, half_ptr, scale_ptr, rows, cols, row_ok, one, N,
                                inv_sqrt_d, H, DK, DV, BM, 16, BK)
                red = tl.maximum(tl.load(red_ptr + rows, mask=row_ok, other=float("-inf")),
                                 tl.max(tl.where(one[None, :], s, float("-inf")), axis=1))
                tl.store(red_ptr + rows, red, mask=row_ok)
                taken = (tl.load(taken_ptr + rows, mask=row_ok, other=1) != 0) | (rows == pick)
                score = tl.load(rel_ptr + rows, mask=row_ok, other=0.0) - penalty * red
                tl.store(score_ptr + rows, tl.where(taken, float("-inf"), score), mask=row_ok)
                start += BM
            tl.debug_barrier()                                 # the next argmax reads these scores
            count += 1
        tl.store(state_ptr, count)
        tl.store(state_ptr + 1, count)


@dataclass
class _Run:
    """Device buffers of one input shape, and the CUDA graph that replays a whole run."""
    budget: int
    chunks: list[int]          # each step's cap until the caps stop growing (iwp.mmr.step_caps)
    penalty: float
    k: torch.Tensor            # [H, N, dk] keys after RoPE, as the model gave them
    v: torch.Tensor            # [H, N, dv]
    rel: torch.Tensor          # [N] float32 relevance, lam * m / max(m)
    tuning: dict | None = None
    graph: object = None       # torch.cuda.CUDAGraph once captured; False where capture failed

    def __post_init__(self):
        H, n, dk = self.k.shape
        dev = self.rel.device
        self.n, self.pool_cap = n, min(2 * max(self.chunks), n)
        if self.pool_cap >= TOP:
            raise ValueError(f"a pool of {self.pool_cap} needs more than the {TOP} ranked tokens the top kernels keep")
        f32 = dict(device=dev, dtype=torch.float32)
        self.mean, self.half, self.scale = torch.empty(H, dk, **f32), torch.empty(H, n, **f32), torch.empty(H, n, **f32)
        self.red = torch.empty(n, **f32)
        self.score = torch.empty(n, **f32)                  # MMR scores, -inf once taken
        self.taken = torch.empty(n, dtype=torch.int8, device=dev)
        self.picks = torch.empty(self.budget, dtype=torch.long, device=dev)
        self.state = torch.empty(3, dtype=torch.int32, device=dev)
        self.pool = torch.empty(self.pool_cap * self.pool_cap, **f32)
        self.sort_chunks = triton.cdiv(n, SORT_CHUNK)
        self.keys = torch.empty(self.sort_chunks * SORT_CHUNK, dtype=torch.long, device=dev)
        self.top, self.order = torch.empty(TOP, **f32), torch.empty(TOP, dtype=torch.long, device=dev)
        self.block = triton.next_power_of_2(self.pool_cap)
        self.inv_sqrt_d = 1.0 / math.sqrt(dk)
        self.tuning = dict(TUNING, **(self.tuning or {}))
        extra = self.tuning["extra_steps"]
        # Steps after the chunk stops growing: about what real inputs need (13 steps in all for 6k tokens
        # at 11%), and _finish completes any run they leave short, so no host check is ever needed.
        self.steps = self.chunks + [self.chunks[-1]] * (min(64, max(8, self.budget // 40)) if extra < 0 else extra)
        self.counts = torch.empty(len(self.steps), dtype=torch.int32, device=dev)   # every step's _pick writes its own

    def load(self, rel: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        for mine, new in ((self.rel, rel), (self.k, k), (self.v, v)):
            mine.copy_(new)

    def _shapes(self) -> dict:
        H, _, dk = self.k.shape
        return dict(H=H, DK=dk, DV=self.v.shape[2])

    def _tables(self) -> tuple:
        return self.k, self.v, self.mean, self.half, self.scale

    def prepare(self) -> None:
        """The per-token tables, and the state of a run that has picked nothing."""
        torch.mean(self.k, dim=1, dtype=torch.float32, out=self.mean)
        dk, dv = self.k.shape[2], self.v.shape[2]
        BM = 32
        _token_tables[(triton.cdiv(self.n, BM),)](*self._tables(), self.n, self.inv_sqrt_d, **self._shapes(), BM=BM,
                                                  BDK=triton.next_power_of_2(dk), BDV=triton.next_power_of_2(dv))
        self.red.fill_(float("-inf"))
        self.score.copy_(self.rel)                          # nothing picked: the scores are the relevances
        self.taken.zero_()
        self.state.zero_()

    def step(self, chunk: int) -> None:
        """One PC-MMR step whose chunk is at most `chunk` tokens; every kernel does nothing once the budget
        is filled, so a run can hold more steps than it needs."""
        N, t = self.n, self.tuning
        pool = min(2 * chunk, N)
        _top_chunks[(self.sort_chunks,)](self.score, self.state, self.keys, N, self.budget, CHUNK=SORT_CHUNK,
                                         num_warps=8)
        _top_merge[(1,)](self.keys, self.state, self.top, self.order, self.budget, self.sort_chunks,
                         CHUNK=SORT_CHUNK, T=TOP, BLOCK=triton.next_power_of_2(self.sort_chunks * TOP), num_warps=8)
        BP = t["pool_tile"]
        _pool_block[(triton.cdiv(pool, BP), triton.cdiv(pool, BP))](
            *self._tables(), self.order, self.state, self.pool, N, self.inv_sqrt_d, self.budget, chunk, self.pool_cap,
            **self._shapes(), BM=BP, BN=BP, BK=t["bk"])
        _pick[(1,)](self.pool, self.top, self.order, self.rel, self.red, self.taken, self.picks, self.state, self.counts,
                    N, self.budget, chunk, self.pool_cap, self.penalty, BLOCK=self.block, num_warps=t["pick_warps"])
        _update[(triton.cdiv(N, t["update_rows"]),)](
            *self._tables(), self.picks, self.state, self.rel, self.red, self.taken, self.score, N, self.inv_sqrt_d,
            self.penalty, **self._shapes(), BM=t["update_rows"], BN=t["update_cols"], BK=t["bk"])

    def run(self) -> None:
        """The whole run as launches: no host sync anywhere."""
        self.prepare()
        for chunk in self.steps:
            self.step(chunk)
        _finish[(1,)](*self._tables(), self.rel, self.red, self.taken, self.score, self.picks, self.state, self.n,
                      self.budget, self.inv_sqrt_d, self.penalty, **self._shapes(), BLOCK=1024, BM=64,
                      BK=self.tuning["bk"], num_warps=8)

    def capture(self) -> None:
        """Record run() as one CUDA graph (an eager run has compiled the kernels)."""
        device = self.rel.device
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
            self.run()
        torch.cuda.current_stream(device).wait_stream(stream)
        self.graph = graph


_RUNS: dict[tuple, _Run] = {}


def pc_mmr(relevance: torch.Tensor, k: torch.Tensor, v: torch.Tensor, budget: int, penalty: float,
           chunks: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(picks in pick order, picks each step took) as iwp.mmr's PyTorch path, both left on the GPU. k [H, N,
    dk] (after RoPE) and v [H, N, dv] in the model's dtype; chunks: iwp.mmr.step_caps. The counts
    miss what _finish picked (one token a step): iwp.mmr.Steps adds those."""
    key = (relevance.device, budget, tuple(k.shape), k.dtype, tuple(v.shape), v.dtype, penalty, tuple(chunks),
           tuple(TUNING.items()))
    run = _RUNS.pop(key, None)
    if run is None:
        own = [torch.empty_like(x, memory_format=torch.contiguous_format) for x in (k, v)]
        run = _Run(budget, list(chunks), penalty, *own, rel=torch.empty_like(relevance, dtype=torch.float32),
                   tuning=dict(TUNING))
    _RUNS[key] = run                                      # most recently used last
    while len(_RUNS) > MAX_RUNS:
        _RUNS.pop(next(iter(_RUNS)))
    run.load(relevance, k, v)
    if USE_GRAPHS and run.graph:
        run.graph.replay()
    else:
        run.run()                                         # compiles the kernels on their first call
        if USE_GRAPHS and run.graph is None:
            try:
                run.capture()
            except RuntimeError:                          # capture unsupported here: stay eager
                run.graph = False
    return run.picks.clone(), run.counts.clone()         # the buffers are the next run's
