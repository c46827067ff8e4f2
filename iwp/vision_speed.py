"""Exact speed-ups of the vision side, which pruning inside the language model cannot shorten.

    report = iwp.accelerate_vision(model)     # {"applied": [...], "skipped": {part: reason}}
    report = iwp.accelerate_vision(model, exact=False)   # also the not-bitwise parts: + {"inexact": [...]}
    iwp.stock_vision(model)                   # exact undo: the class's own forwards show through again

Both patch this model instance only (instance attributes over the class's methods) and never change a value:
every part computes bit for bit what transformers computes, or it is skipped with its reason. Parts per family
(FAMILIES, keyed by config.model_type):

- qwen2_5_vl, "batched_vision_attention": transformers' sdpa/eager vision attention loops in Python over the
  `cu_seqlens` chunks (about a thousand windows per windowed layer for a 32-frame video; one chunk per frame in
  the full-attention layers), one attention call each. Here the chunks of one length are gathered into one
  [chunks, heads, length, head_dim] batch and attended in one call, then scattered back: the same kernel on the
  same numbers per chunk. Flash attention is skipped (it already runs varlen in one call), and so is any
  (implementation, device) pair not checked (_EXACT: sdpa on CPU and CUDA, eager on CPU).
- llava_onevision, "channels_last_pooling": the video pooling interpolates the channels-last view instead of an
  NCHW copy (46 ms -> 0.26 ms for 32 frames on a GPU); "lean_hidden_states": transformers 5.17 keeps every
  vision layer's hidden states to read one; the tower then keeps only that one (skipped where transformers
  already asks for one layer).
- qwen3_vl, "batched_vision_attention": the same (Qwen3VLVisionAttention.forward's source is Qwen2.5-VL's, one
  chunk per temporal slice, so there are fewer calls to save: 16 per layer for a 32-frame video).
- qwen2_5_vl and qwen3_vl, "fused_rotary" (inside batched_vision_attention, so only where that part is applied):
  transformers' apply_rotary_pos_emb_vision is about ten elementwise kernels per layer (casts, cat, neg, muls,
  add, casts back: ~50 of 357 ms of Qwen2.5-VL-7B's batched tower on a 32-frame video, H200); on CUDA it runs as
  one Triton kernel with the same float32 roundings in the same order (iwp/kernels/rotary.py: no FMA contraction,
  round to nearest even). Inputs the kernel does not take (other shapes or dtypes, gradients wanted) go to
  transformers' function. Skipped without Triton or off CUDA.

One part is NOT exact and is offered only with `exact=False` (its outputs differ from stock at the rounding
level of the dtype, never by more; the report then lists it under "inexact"):

- qwen2_5_vl, "aligned_mlp": Qwen2.5-VL's vision MLP is 3420 wide (the 3B's, 7B's and 32B's; the 72B's is 3456), not a
  multiple of 8, so the bfloat16 rows of its gate/up/down weights are not 16-byte aligned and cuBLAS runs them in
  Ampere-era kernels instead of Hopper's (157 of 357 ms of the accelerated 7B tower on a 32-frame video, on an
  H200). The part pads the intermediate width to the next multiple of 8 with zeros (gate/up: zero rows and zero
  bias, so act(0) * 0 = 0; down: zero columns): the same linear maps, but another GEMM kernel sums in another
  order. The padded weights replace the originals (each parameter becomes a view of its padded storage, no
  second copy); the undo copies them back into tensors of the original shape and layout. The padded GEMMs run
  where no gradient is wanted (torch.no_grad, inference_mode, generate; else transformers' own forward, on the
  parameters autograd tracks), and while the parameters still view the padded storage (not after .to(), a
  cast or a reassignment: transformers' own forward then). Families whose vision
  MLP is already aligned (Qwen3-VL 4304, OneVision's SigLIP 4304, Qwen2.5-VL-72B 3456) skip it with that reason.

Equality with stock is proven by tests on CPU (tests/test_vision_speed.py, real configs with fewer layers) and
checked again on the device by the benchmark (`python -m iwp.bench models`) on its own inputs, since
batching relies on the attention kernel computing each batch entry as it computes a batch of one.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import math
import sys
import textwrap
import types

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from . import compat

__all__ = ["accelerate_vision", "stock_vision", "vision_parts", "FAMILIES", "INEXACT_FAMILIES"]

_ATTR = "_iwp_vision"                # on the model: {part: undo}, present while any part is applied


# ============================================================================================================
# transformers internals relied on (checked on transformers 5.17.0 and 5.24.0 with torch 2.13 on CPU; the GPU
# check, torch 2.11 on an H200, is python -m iwp.bench vision / scripts/gpu_vision.sh)
#
# Qwen2.5-VL (transformers.models.qwen2_5_vl.modeling_qwen2_5_vl):
#   - model.model.visual.blocks[i].attn is a Qwen2_5_VLVisionAttention with .qkv, .proj, .num_heads,
#     .scaling, .config (._attn_implementation), .training, .attention_dropout;
#   - its forward(hidden_states [S, dim], cu_seqlens, position_embeddings=(cos, sin), max_seqlen=None,
#     **kwargs): qkv -> apply_rotary_pos_emb_vision -> [1, heads, S, d]; non-flash implementations split
#     at cu_seqlens and call ALL_ATTENTION_FUNCTIONS' interface (or eager_attention_forward) once per chunk,
#     each returning [1, L, heads, d]; concatenated, reshaped to [S, dim], projected. The vision transformer
#     hands every windowed block the same cu_window_seqlens tensor, every full block the same cu_seqlens
#     (one chunk per image / per temporal slice of a video), zero-length windows already removed;
#   - the stock forward's source is fingerprinted (_QWEN25_ATTENTION_SOURCES): any other source is skipped.
# Qwen3-VL (transformers.models.qwen3_vl.modeling_qwen3_vl): model.model.visual.blocks[i].attn is a
#   Qwen3VLVisionAttention whose forward has the same source (same fingerprint) and attributes, with one
#   cu_seqlens chunk per image / temporal slice in every block; its module has its own
#   apply_rotary_pos_emb_vision, ALL_ATTENTION_FUNCTIONS and eager_attention_forward, which the batched forward
#   takes from the attention class's own module.
#
# LLaVA-OneVision (transformers.models.llava_onevision.modeling_llava_onevision):
#   - model.model.apply_pooling(image_features [frames, side*side, dim]) (source fingerprinted);
#   - model.model.vision_tower.forward(..., output_hidden_states=...): 5.17's get_image_features /
#     get_video_features pass output_hidden_states=True ("Ignore arg on purpose") and read
#     hidden_states[vision_feature_layer]; the tower's output capture also takes a list of layer indices.
#     5.18+ (5.24 checked) pass no such flag: lean_hidden_states is skipped there.
#
# The vision MLPs (aligned_mlp; the three forwards have the same source in 5.17.0 and 5.24.0, fingerprinted in
# _MLP_LAYOUTS): Qwen2_5_VLMLP (gate_proj, up_proj, down_proj, act_fn; forward = down(act(gate(x)) * up(x))),
# Qwen3VLVisionMLP (linear_fc1, linear_fc2, act_fn) and SiglipMLP (fc1, fc2, activation_fn; forward =
# fc2(act(fc1(x)))), found as modules of model.model.visual (Qwen) or model.model.vision_tower (OneVision).
#
# fused_rotary: apply_rotary_pos_emb_vision(q, k, cos, sin) and rotate_half of the attention class's modeling
# module (Qwen2.5-VL's and Qwen3-VL's have the same source in 5.17.0 and 5.24.0, fingerprinted in
# _ROTARY_SOURCES): q, k [S, heads, d] upcast to float32, cos/sin [S, d] unsqueezed to [S, 1, d] and upcast,
# q * cos + rotate_half(q) * sin (rotate_half = cat(-x2, x1)), cast back to q's dtype; the vision transformers
# pass position_embeddings = (emb.cos(), emb.sin()) of a float32 emb [S, d].
# ============================================================================================================

# Qwen2_5_VLVisionAttention.forward and Qwen3VLVisionAttention.forward (the same source) in 5.17.0-5.24.0
_QWEN25_ATTENTION_SOURCES = {"ae6fe90b254c7c8e": "5.17.0-5.24.0"}
# apply_rotary_pos_emb_vision, rotate_half (Qwen2.5-VL's = Qwen3-VL's) in 5.17.0-5.24.0
_ROTARY_SOURCES = {("e174399e546c23a4", "c3e95bb5f330fa3c"): "5.17.0-5.24.0"}
_OV_POOLING_SOURCES = {"0e8b89ab0507f28b": "5.17.0-5.24.0"}
# (attention implementation, device type) where one call on a batch of equal chunks was checked bitwise equal
# to one call per chunk: CPU by tests/test_vision_speed.py; CUDA sdpa by python -m iwp.bench vision on an H200
# (flash / memory-efficient kernels compute each batch entry alone; no split-KV at these lengths). Eager on CUDA
# is left out: cuBLAS may pick another GEMM kernel for a larger batch.
_EXACT = {("sdpa", "cpu"), ("eager", "cpu"), ("sdpa", "cuda")}
# part -> the part it runs inside: skipped (and undone) where that one is not applied
_NEEDS = {"fused_rotary": "batched_vision_attention"}
_ROTARY_ATTR = "_iwp_fused_rotary"   # on each vision attention: the kernel module its batched forward calls
_VARLEN_IMPLEMENTATIONS = ("flash_attention_2", "flash_attention_3", "flash_attention_4", "kernels")
# vision MLP class -> (forward fingerprint, in-projections, out-projection, activation attribute): forwards whose
# intermediate goes through the activation (and the product with the second in-projection) elementwise only
_MLP_LAYOUTS = {
    "Qwen2_5_VLMLP": ("0d7b11835db6b508", ("gate_proj", "up_proj"), "down_proj", "act_fn"),
    "Qwen3VLVisionMLP": ("2fe27664d995b009", ("linear_fc1",), "linear_fc2", "act_fn"),
    "SiglipMLP": ("2097f227af29a742", ("fc1",), "fc2", "activation_fn"),
}


def _fingerprint(fn) -> str | None:
    """A short hash of a function's source (dedented, trailing spaces stripped); None when there is no source."""
    try:
        src = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return None
    text = "\n".join(line.rstrip() for line in src.splitlines() if line.strip())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _modeling(attn: nn.Module):
    """The modeling module of this attention class (its rotary function and attention interfaces)."""
    return sys.modules[type(attn).__module__]


def _qwen25_attentions(model: nn.Module) -> tuple[nn.Module, list[nn.Module]]:
    """(vision transformer, the attention module of each of its blocks)."""
    visual = model.model.visual
    return visual, [blk.attn for blk in visual.blocks]


def _ov_parts(model: nn.Module) -> tuple[nn.Module, nn.Module, object]:
    """(LlavaOnevisionModel, its vision tower, the vision_feature_layer it reads)."""
    return model.model, model.model.vision_tower, model.config.vision_feature_layer


def _ov_reads_every_layer(base: nn.Module) -> bool:
    """Whether get_image_features / get_video_features ask the tower for every layer's hidden states (5.17)."""
    readers = [getattr(type(base), a, None) for a in ("get_image_features", "get_video_features")]
    try:
        return any(f is not None and "output_hidden_states=True" in inspect.getsource(f) for f in readers)
    except (OSError, TypeError):                      # no source to read: not proven, not applied
        return False


# ============================================================================================================


def vision_parts(model: nn.Module, exact: bool = True) -> list[str]:
    """The parts accelerate_vision offers for this model's family ([] for families it does not cover); with
    exact=False the not-bitwise parts too."""
    return [name for name, _ in _parts(_model_type(model), exact)]


def accelerate_vision(model: nn.Module, skip: tuple[str, ...] | list[str] = (), exact: bool = True) -> dict:
    """Run this instance's vision side faster with identical outputs (see the module docstring).

    Applies every part of the model's family except those in `skip`; a part that cannot be proven exact here
    (attention implementation, transformers version) is skipped with its reason, never applied approximately.
    Returns {"applied": [part, ...], "skipped": {part: reason}}. Idempotent; undo with stock_vision(model).
    Independent of iwp.apply / iwp.remove (either order).

    exact=False adds the parts that are NOT bitwise equal to stock (INEXACT_FAMILIES: "aligned_mlp"), and the
    report gains "inexact": the applied parts among them. exact=True (the default) leaves them out, and undoes
    them if an earlier call applied them (reported as skipped)."""
    mtype = _model_type(model)
    if mtype not in FAMILIES:
        return {"applied": [], "skipped": {"*": f"no vision speed-ups for model type {mtype!r}"}}
    done = vars(model).setdefault(_ATTR, {})
    report = {"applied": [], "skipped": {}}
    if exact:
        for name, _ in INEXACT_FAMILIES.get(mtype, ()):
            if name in done:                        # applied by an earlier exact=False call: left out now
                done.pop(name)()
                report["skipped"][name] = "not bitwise exact (exact=True)"
    for name, part in _parts(mtype, exact):
        if name in skip:
            if name in done:                        # applied by an earlier call: left out now
                done.pop(name)()
            report["skipped"][name] = "skipped on request"
            continue
        need = _NEEDS.get(name)
        if need and need not in done:
            if name in done:
                done.pop(name)()
            report["skipped"][name] = f"runs inside {need}, which is not applied"
            continue
        if name in done:
            report["applied"].append(name)
            continue
        try:
            outcome = part(model)
        except AttributeError as e:                 # e.g. the base model passed, not ...ForConditionalGeneration
            outcome = f"module layout not the one checked: {e}"
        if isinstance(outcome, str):
            report["skipped"][name] = outcome
        else:
            done[name] = outcome
            report["applied"].append(name)
    if not exact:
        inexact = {name for name, _ in INEXACT_FAMILIES.get(mtype, ())}
        report["inexact"] = [name for name in report["applied"] if name in inexact]
    if not done:
        del vars(model)[_ATTR]
    return report


def stock_vision(model: nn.Module) -> nn.Module:
    """Undo accelerate_vision exactly: every instance attribute it set is put back as it was (removed, or what
    another library had set there), every padded parameter copied back into a tensor of its original shape and
    layout. Returns the model."""
    for undo in reversed(list(vars(model).pop(_ATTR, {}).values())):
        undo()
    return model


def applied_parts(model: nn.Module) -> list[str]:
    return list(vars(model).get(_ATTR, {}))


def _model_type(model: nn.Module) -> str | None:
    return getattr(getattr(model, "config", None), "model_type", None)


def _parts(mtype: str | None, exact: bool) -> tuple:
    """(name, part) pairs of a family: the exact ones, then (exact=False) the inexact ones."""
    return FAMILIES.get(mtype, ()) + (() if exact else INEXACT_FAMILIES.get(mtype, ()))


# ------------------------------------------------------------------------------------------------ Qwen2.5-VL

def _qwen25_batched_attention(model: nn.Module):
    """Patch every vision block's attention of this instance; returns the undo, or the reason it cannot."""
    visual, attns = _qwen25_attentions(model)
    impl = visual.config._attn_implementation
    if impl in _VARLEN_IMPLEMENTATIONS or (impl or "").startswith("flash"):
        return f"attention {impl!r} already runs all chunks in one varlen call"
    device = next(visual.parameters()).device.type
    if (impl, device) not in _EXACT:
        return (f"attention {impl!r} on {device}: batching not checked bitwise there "
                f"(checked: {', '.join(f'{i} on {d}' for i, d in sorted(_EXACT))})")
    if any("forward" in vars(a) for a in attns):   # e.g. accelerate's device hooks: never bypass them
        return "the vision attention's forward is already replaced on this instance (accelerate hooks?)"
    cls = type(attns[0])
    fp = _fingerprint(cls.forward)
    if fp not in _QWEN25_ATTENTION_SOURCES:
        import transformers
        return (f"{cls.__name__}.forward of transformers {transformers.__version__} is not the one checked "
                f"(transformers {', '.join(_QWEN25_ATTENTION_SOURCES.values())}; fingerprint {fp})")
    plans = _Plans()
    for attn in attns:
        attn.forward = types.MethodType(functools.partial(_batched_attention_forward, plans=plans), attn)

    def undo():
        for attn in attns:
            vars(attn).pop("forward", None)
    return undo


class _Plans:
    """Chunk groups per cu_seqlens tensor, shared by one model's blocks: the vision transformer passes the same
    tensor object to every windowed (or full) block of a call, so the host reads it once, not per layer. The
    tensors are held, so an id cannot be reused while cached."""

    def __init__(self, size: int = 4):
        self.size, self.items = size, []

    def get(self, cu_seqlens: Tensor) -> list:
        for key, plan in self.items:
            if key is cu_seqlens:
                return plan
        plan = _plan(cu_seqlens)
        self.items = [(cu_seqlens, plan)] + self.items[: self.size - 1]
        return plan


def _plan(cu_seqlens: Tensor) -> list[tuple[int, int, int | Tensor]]:
    """[(length, chunks, where)]: one entry per distinct nonzero chunk length; `where` is the start of one
    contiguous run of equal chunks (an int, no copy needed) or the row indices of all the group's tokens."""
    bounds = cu_seqlens.tolist()
    groups: dict[int, list[int]] = {}
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b > a:
            groups.setdefault(b - a, []).append(a)
    plan = []
    for length, starts in groups.items():
        if all(s == starts[0] + i * length for i, s in enumerate(starts)):
            plan.append((length, len(starts), starts[0]))
        else:
            idx = (torch.tensor(starts)[:, None] + torch.arange(length)).reshape(-1)
            plan.append((length, len(starts), idx.to(cu_seqlens.device)))
    return plan


def _batched_attention_forward(self, hidden_states: Tensor, cu_seqlens: Tensor,
                               position_embeddings: tuple[Tensor, Tensor] | None = None,
                               max_seqlen: int | None = None, *, plans: _Plans, **kwargs) -> Tensor:
    """Qwen2_5_VLVisionAttention.forward (= Qwen3VLVisionAttention.forward; transformers 5.17-5.24) with one
    attention call per chunk length."""
    impl = self.config._attn_implementation
    if (impl, hidden_states.device.type) not in _EXACT:     # switched or moved after patching: transformers' own
        return type(self).forward(self, hidden_states, cu_seqlens, position_embeddings, max_seqlen, **kwargs)
    mod = _modeling(self)
    seq_length = hidden_states.shape[0]
    q, k, v = self.qkv(hidden_states).reshape(seq_length, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    fused = vars(self).get(_ROTARY_ATTR)            # fused_rotary applied: the kernel, where it takes the inputs
    if fused is not None and fused.supports(q, k, cos, sin) is None:
        q, k = fused.apply_rotary(q, k, cos, sin)
    else:
        q, k = mod.apply_rotary_pos_emb_vision(q, k, cos, sin)      # [S, heads, d] each
    interface = mod.ALL_ATTENTION_FUNCTIONS.get_interface(impl, mod.eager_attention_forward)
    out = None
    for length, n, where in plans.get(cu_seqlens):
        if isinstance(where, int):                  # a contiguous run: views, as stock's split gives
            take = lambda x: x[where:where + n * length].view(n, length, *x.shape[1:])   # noqa: E731
        else:
            take = lambda x: x.index_select(0, where).view(n, length, *x.shape[1:])      # noqa: E731
        o = interface(self, take(q).transpose(1, 2), take(k).transpose(1, 2), take(v).transpose(1, 2),
                      attention_mask=None, scaling=self.scaling,
                      dropout=0.0 if not self.training else self.attention_dropout, is_causal=False,
                      **kwargs)[0]                  # [n, length, heads, d]
        if out is None:
            out = o.new_empty(seq_length, *o.shape[2:])
        if isinstance(where, int):
            out[where:where + n * length] = o.reshape(n * length, *o.shape[2:])
        else:
            out.index_copy_(0, where, o.reshape(n * length, *o.shape[2:]))
    if out is None:                                 # no tokens
        return type(self).forward(self, hidden_states, cu_seqlens, position_embeddings, max_seqlen, **kwargs)
    return self.proj(out.reshape(seq_length, -1).contiguous())


def _fused_rotary(model: nn.Module):
    """Point every vision attention's batched forward at the Triton rotary kernel; the undo, or the reason it
    cannot."""
    visual, attns = _qwen25_attentions(model)
    mod = _modeling(attns[0])
    fp = tuple(_fingerprint(getattr(mod, f, None)) for f in ("apply_rotary_pos_emb_vision", "rotate_half"))
    if fp not in _ROTARY_SOURCES:
        import transformers
        return (f"apply_rotary_pos_emb_vision of transformers {transformers.__version__} is not the one checked "
                f"(transformers {', '.join(_ROTARY_SOURCES.values())}; fingerprints {fp})")
    from .kernels import cuda_rotary
    try:
        rotary = cuda_rotary()
    except ImportError as e:                        # Triton present but broken
        return f"Triton cannot be imported: {e}"
    if not rotary.AVAILABLE:
        return "Triton is not installed"
    device = next(visual.parameters()).device.type
    if device != "cuda" and not (rotary.INTERPRETED and device == "cpu"):
        return f"a CUDA kernel: the vision tower is on {device}"
    undos = [_set(attn, _ROTARY_ATTR, rotary) for attn in attns]

    def undo():
        for u in undos:
            u()
    return undo


# ------------------------------------------------------------------------------------------- LLaVA-OneVision

def _ov_channels_last_pooling(model: nn.Module):
    base = _ov_parts(model)[0]
    fp = _fingerprint(type(base).apply_pooling)
    if fp not in _OV_POOLING_SOURCES:
        import transformers
        return (f"{type(base).__name__}.apply_pooling of transformers {transformers.__version__} is not the one "
                f"checked (transformers {', '.join(_OV_POOLING_SOURCES.values())}; fingerprint {fp})")
    return _set(base, "apply_pooling", types.MethodType(apply_pooling_channels_last, base))


def apply_pooling_channels_last(self, image_features: Tensor) -> Tensor:
    """LlavaOnevisionModel.apply_pooling (transformers 5.17-5.24) without .contiguous() before interpolate:
    same values; on CUDA the stock NCHW copy sends bilinear interpolation to a kernel that parallelises over
    output pixels only."""
    height = width = self.config.vision_config.image_size // self.config.vision_config.patch_size
    batch_frames, seq_len, dim = image_features.shape
    image_features = image_features.view(batch_frames, height, width, -1)
    image_features = image_features.permute(0, 3, 1, 2)              # a channels-last view, not copied

    height, width = image_features.shape[2:]
    scaled_shape = [math.ceil(height / 2), math.ceil(width / 2)]
    image_features = nn.functional.interpolate(image_features, size=scaled_shape, mode="bilinear")

    image_features = image_features.permute(0, 2, 3, 1)
    image_features = image_features.view(batch_frames, -1, dim)
    return image_features


def _ov_lean_hidden_states(model: nn.Module):
    """transformers 5.17's get_image_features / get_video_features ask the tower for every layer's hidden states
    (output_hidden_states=True) to read one (vision_feature_layer); for a 32-frame video that keeps 26 layers x
    23k tokens x 1152 (1.4 GB in bf16) alive through the encoder, the peak of the whole generate(). The tower's
    own output capture takes a list of layers instead. Same values."""
    base, tower, layer = _ov_parts(model)
    n = tower.config.num_hidden_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not -n <= layer < 0:
        return f"vision_feature_layer {layer!r} is not one negative layer index"
    if not _ov_reads_every_layer(base):
        return "this transformers version asks the vision tower for the one layer it reads"
    stock = tower.forward

    @functools.wraps(stock)
    def forward(*args, **kwargs):
        if kwargs.get("output_hidden_states") is True:
            kwargs["output_hidden_states"] = [n + layer]   # layer outputs only: [-1] is still the last
        return stock(*args, **kwargs)

    return _set(tower, "forward", forward)        # over accelerate's hooked forward, if any: it still runs


def _set(obj, name: str, value):
    """Set an instance attribute; returns the undo, which puts back exactly what the instance had before."""
    had, before = name in vars(obj), vars(obj).get(name)
    setattr(obj, name, value)

    def undo():
        if had:
            setattr(obj, name, before)
        else:
            vars(obj).pop(name, None)
    return undo


# ------------------------------------------------------------------------------- aligned_mlp (NOT exact)

_ALIGN = 8          # elements: 16-byte rows in bfloat16 / float16, what cuBLAS's Hopper (TMA) kernels need


def _aligned_mlp(model: nn.Module):
    """Pad every vision MLP's intermediate width to a multiple of _ALIGN (module docstring); the undo, or the
    reason it cannot. Not bitwise: the padded GEMMs sum in another order."""
    mlps = [m for m in compat.vision_encoder(model).modules() if type(m).__name__ in _MLP_LAYOUTS]
    if not mlps:
        return f"no vision MLP of a checked class ({', '.join(_MLP_LAYOUTS)})"
    widths = {getattr(m, _MLP_LAYOUTS[type(m).__name__][1][0]).out_features for m in mlps}
    if all(w % _ALIGN == 0 for w in widths):
        return (f"vision MLP width {', '.join(map(str, sorted(widths)))} is already a multiple of {_ALIGN} "
                "(16-byte bfloat16 rows): nothing to pad")
    for mlp in mlps:
        why = _mlp_unpaddable(mlp)
        if why:
            return why
    padded = []
    try:
        for mlp in mlps:
            _, ins, out, act = _MLP_LAYOUTS[type(mlp).__name__]
            pads = _PaddedMLP([getattr(mlp, n) for n in ins], getattr(mlp, out))
            padded.append((mlp, pads))
            mlp.forward = types.MethodType(functools.partial(_aligned_mlp_forward, pads=pads, act=act), mlp)
    except BaseException:                           # e.g. out of memory half way: leave the model as it was
        _restore_mlps(padded)
        raise
    return functools.partial(_restore_mlps, padded)


def _mlp_unpaddable(mlp: nn.Module) -> str | None:
    """Why this MLP cannot be padded and restored exactly (None: it can)."""
    name = type(mlp).__name__
    fp, ins, out, _ = _MLP_LAYOUTS[name]
    if _fingerprint(type(mlp).forward) != fp:
        import transformers
        return f"{name}.forward of transformers {transformers.__version__} is not the one checked (5.17.0-5.24.0)"
    linears = [getattr(mlp, n) for n in ins] + [getattr(mlp, out)]
    for m in [mlp] + linears:
        if "forward" in vars(m) or m._forward_hooks or m._forward_pre_hooks:
            return f"{name}: a forward or hook is already set on this instance (accelerate hooks?)"
    if any(type(lin) is not nn.Linear for lin in linears):
        return f"{name}: projections are not plain nn.Linear (quantized?)"
    width = linears[0].out_features
    if any(lin.out_features != width or lin.in_features != linears[0].in_features for lin in linears[:-1]) \
            or linears[-1].in_features != width:
        return f"{name}: projection shapes do not match"
    for p in (p for lin in linears for p in lin.parameters(recurse=False)):
        if p.device.type == "meta" or not p.is_contiguous() or p.storage_offset() != 0 \
                or p.untyped_storage().nbytes() != p.numel() * p.element_size():
            return f"{name}: a parameter is offloaded, not contiguous, or shares its storage"
    return None


class _PaddedMLP:
    """One MLP's projections in storage padded to a multiple of _ALIGN intermediate units: the in-projections'
    weights and biases get zero rows, the out-projection's weight zero columns. Each parameter becomes a view of
    its padded storage (same values, shape, state_dict key; the out-projection's weight is then not contiguous)
    and the originals are freed: no second copy."""

    def __init__(self, ins: list[nn.Linear], out: nn.Linear):
        width = -(-ins[0].out_features // _ALIGN) * _ALIGN
        self.params: list[tuple[nn.Parameter, Tensor]] = []
        self.ins = [(self._pad(lin.weight, 0, width), self._pad(lin.bias, 0, width)) for lin in ins]
        self.out_weight, self.out_bias = self._pad(out.weight, 1, width), out.bias

    def _pad(self, p: nn.Parameter | None, dim: int, width: int) -> Tensor | None:
        if p is None:
            return None
        shape = list(p.shape)
        shape[dim] = width
        padded = p.new_zeros(shape)
        padded.narrow(dim, 0, p.shape[dim]).copy_(p.data)
        p.data = padded.narrow(dim, 0, p.shape[dim])
        self.params.append((p, padded))
        return padded

    @staticmethod
    def _views(p: nn.Parameter, padded: Tensor) -> bool:
        return p.device == padded.device and p.dtype == padded.dtype and p.data_ptr() == padded.data_ptr()

    def intact(self) -> bool:
        """Whether every parameter still views its padded storage (not moved, cast or reassigned since)."""
        return all(self._views(p, padded) for p, padded in self.params)

    def requires_grad(self) -> bool:
        return any(p.requires_grad for p, _ in self.params)

    def restore(self) -> None:
        """Copy each parameter that still views its padded storage into a contiguous tensor of its own size."""
        for p, padded in self.params:
            if self._views(p, padded):
                p.data = torch.empty_like(p.data, memory_format=torch.contiguous_format).copy_(p.data)
        self.params, self.ins, self.out_weight = [], [], None


def _restore_mlps(padded: list[tuple[nn.Module, _PaddedMLP]]) -> None:
    for mlp, pads in padded:
        vars(mlp).pop("forward", None)
        pads.restore()


def _aligned_mlp_forward(self, hidden_state: Tensor, *, pads: _PaddedMLP, act: str) -> Tensor:
    """The checked vision MLP forwards (_MLP_LAYOUTS) on the padded projections: gated (Qwen2.5-VL,
    down(act(gate(x)) * up(x))) or not (fc2(act(fc1(x)))). The padded units are 0 before the out-projection's
    zero columns, which add nothing."""
    if not pads.intact() or (torch.is_grad_enabled() and pads.requires_grad()):
        # moved or cast after patching, or gradients wanted (autograd tracks the parameters, not the padded
        # storage the GEMMs would read): transformers' own
        return type(self).forward(self, hidden_state)
    inner = [F.linear(hidden_state, w, b) for w, b in pads.ins]
    h = getattr(self, act)(inner[0])
    if len(inner) == 2:
        h = h * inner[1]
    return F.linear(h, pads.out_weight, pads.out_bias)


# ------------------------------------------------------------------------------------------------ the table

FAMILIES = {
    "qwen2_5_vl": (("batched_vision_attention", _qwen25_batched_attention), ("fused_rotary", _fused_rotary)),
    "llava_onevision": (("channels_last_pooling", _ov_channels_last_pooling),
                        ("lean_hidden_states", _ov_lean_hidden_states)),
    "qwen3_vl": (("batched_vision_attention", _qwen25_batched_attention), ("fused_rotary", _fused_rotary)),
}

# parts that are NOT bitwise equal to stock: offered only by accelerate_vision(model, exact=False)
INEXACT_FAMILIES = {
    "qwen2_5_vl": (("aligned_mlp", _aligned_mlp),),
    "llava_onevision": (("aligned_mlp", _aligned_mlp),),
    "qwen3_vl": (("aligned_mlp", _aligned_mlp),),
}
