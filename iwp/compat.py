"""Every reliance on transformers internals, in one place (the hook and the model files ask here).

transformers changes its internals from month to month; each entry below names what we rely on and the
versions it was checked on. When one is missing, we raise IncompatibleTransformers naming the installed
version and the tested range, never run silently unpruned. To check a newer release: install it, run
`python -m pytest -q tests`, and widen TESTED (and the upper bound in pyproject.toml) if all pass.
"""
from __future__ import annotations

import inspect
import sys

import transformers
from torch import nn

TESTED = ("5.17.0", "5.24.0")          # floor and newest release the whole suite passed on
VERSION = transformers.__version__


class IncompatibleTransformers(RuntimeError):
    """transformers does not look the way the hook expects (a renamed argument, a moved module...)."""


def unsupported(what: str) -> IncompatibleTransformers:
    return IncompatibleTransformers(
        f"iwp: {what}. Installed transformers {VERSION}; iwp is tested with {TESTED[0]} to {TESTED[1]}. "
        f"Install a tested version (pip install 'transformers>={TESTED[0]},<={TESTED[1]}') or report this.")


# ------------------------------------------------------------------ keyword arguments of forward calls
# The cache: `past_key_values` in 5.17-5.23; 5.24 renamed it `cache` (the old name is a deprecated alias
# until 5.40) for the base model, the text model and every decoder layer. Checked 5.17.0 and 5.24.0.
CACHE_KWARGS = ("cache", "past_key_values")
# Decoder layers get (cos, sin) as `position_embeddings`, the mask as `attention_mask`, ids as
# `position_ids`, hidden states as the first positional argument or `hidden_states`. Checked 5.17, 5.24.
LAYER_KWARGS = ("attention_mask", "position_embeddings")
# generate() encodes images before the loop and hands the features over as `mm_encoder_outputs`
# (5.18+; absent in 5.17, where `pixel_values` reach the forward). Checked 5.17, 5.24.
MM_ENCODER_OUTPUTS = "mm_encoder_outputs"
VISION_INPUTS = ("pixel_values", "pixel_values_videos")     # 5.17-5.24
# get_image_features / get_video_features on the base model (model.model); 5.17-5.24.
FEATURE_GETTERS = {"image": "get_image_features", "video": "get_video_features"}


def _params(fn) -> set[str]:
    return set(inspect.signature(fn).parameters)        # follows __wrapped__ (deprecate_kwarg keeps it)


def cache_name(fn) -> str:
    """The cache keyword of this forward (base model or decoder layer)."""
    names = _params(fn)
    for name in CACHE_KWARGS:
        if name in names:
            return name
    raise unsupported(f"{getattr(fn, '__qualname__', fn)} takes none of {CACHE_KWARGS} as its cache argument")


def cache(kwargs: dict):
    """The cache a forward call was given, under whichever of CACHE_KWARGS the caller used (or None)."""
    return next((kwargs[k] for k in CACHE_KWARGS if kwargs.get(k) is not None), None)


def check_layer(layer: nn.Module) -> str:
    """Fail at apply time if a decoder layer's forward lacks what the hook reads; returns its cache keyword."""
    missing = [k for k in LAYER_KWARGS if k not in _params(layer.forward)]
    if missing:
        raise unsupported(f"{type(layer).__name__}.forward takes no {missing}")
    for part in ("self_attn", "input_layernorm"):
        if not hasattr(layer, part):
            raise unsupported(f"{type(layer).__name__} has no .{part}")
    for part in ("q_proj", "k_proj", "v_proj", "head_dim"):
        if not hasattr(layer.self_attn, part):
            raise unsupported(f"{type(layer.self_attn).__name__} has no .{part}")
    return cache_name(layer.forward)


def hidden_states(args: tuple, kwargs: dict):
    """A decoder layer's input hidden states (first positional argument, or by name)."""
    return args[0] if args else kwargs["hidden_states"]


def with_hidden_states(args: tuple, kwargs: dict, hidden) -> tuple[tuple, dict]:
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


# ------------------------------------------------------------------------------------------- caches
def check_cache(cache) -> None:
    """DynamicCache of DynamicLayer only (cache_utils; 5.17-5.24): layers after the cut hold fewer tokens."""
    from transformers.cache_utils import DynamicCache, DynamicLayer
    layers = getattr(cache, "layers", [])
    if not isinstance(cache, DynamicCache) or any(type(x) is not DynamicLayer for x in layers):
        raise ValueError(f"iwp needs the default DynamicCache (full-attention layers); got "
                         f"{type(cache).__name__}. Static, sliding-window and quantized caches keep a fixed "
                         "layout per layer, so layers after the cut cannot hold fewer tokens.")


def cache_length(cache, layer: int = 0) -> int:
    """Tokens in the cache of one layer (Cache.get_seq_length(layer_idx); 5.17-5.24)."""
    return cache.get_seq_length(layer)


# -------------------------------------------------------------------------------- model structure
def language_model(model: nn.Module) -> nn.Module:
    """The decoder stack (model.model.language_model with .layers; LLaVA, OneVision, Qwen2.5-VL, Qwen3-VL;
    5.17-5.24)."""
    lm = getattr(getattr(model, "model", None), "language_model", None)
    if lm is None or not hasattr(lm, "layers"):
        raise unsupported(f"{type(model).__name__} has no model.language_model.layers")
    return lm


def base_model(model: nn.Module) -> nn.Module:
    """The multimodal base model (model.model) whose forward merges features; 5.17-5.24."""
    return model.model


def vision_encoder(model: nn.Module) -> nn.Module | None:
    """The vision encoder module get_image_features / get_video_features call: the inner model's `vision_tower`
    (LLaVA, LLaVA-OneVision) or `visual` (Qwen2.5-VL, Qwen3-VL); None if neither. 5.17-5.24."""
    inner = getattr(model, "model", model)
    for name in ("vision_tower", "visual"):
        module = getattr(inner, name, None)
        if isinstance(module, nn.Module):
            return module
    return None


def pooled(output):
    """Features of get_*_features: BaseModelOutputWithPooling.pooler_output (5.18+), a tensor or list (5.17)."""
    return getattr(output, "pooler_output", output)


def rope_function(attn: nn.Module):
    """The modeling module's own apply_rotary_pos_emb(q, k, cos, sin) (rotate-half form; 5.17-5.24, every
    supported family defines it next to its attention class)."""
    fn = getattr(sys.modules[type(attn).__module__], "apply_rotary_pos_emb", None)
    if fn is None:
        raise unsupported(f"no apply_rotary_pos_emb next to {type(attn).__name__}")
    return fn


def attn_implementation(config) -> str:
    """config._attn_implementation ('sdpa', 'eager', 'flash_attention_2', ...; 5.17-5.24)."""
    return str(getattr(config, "_attn_implementation", None))


def select_best_resolution(size: tuple[int, int], pinpoints):
    """transformers.image_processing_utils.select_best_resolution, the anyres grid choice (5.17-5.24)."""
    from transformers.image_processing_utils import select_best_resolution as best
    return best(size, pinpoints)


# ------------------------------------------------------------------------------------- Qwen3-VL DeepStack
# Qwen3VLTextModel._deepstack_process(hidden_states, visual_pos_masks, visual_embeds) adds DeepStack features
# at the visual positions after each of the first decoder layers; the hook wraps it on the instance.
# Checked 5.17.0 and 5.24.0.
DEEPSTACK_PROCESS = "_deepstack_process"


def deepstack_process(lm: nn.Module):
    fn = getattr(lm, DEEPSTACK_PROCESS, None)
    if fn is None:
        raise unsupported(f"{type(lm).__name__} has no {DEEPSTACK_PROCESS} (Qwen3-VL's DeepStack)")
    return fn


# ------------------------------------------------------------------ processors (iwp/models/processors.py)
# Every video processor needs torchvision; without it a processor that owns one cannot be built, so
# load_processor builds the processor class image-only (ImageOnlyProcessor) from these pieces.
def torchvision_available() -> bool:
    """Whether transformers can use torchvision (what its video processors require). 5.17, 5.24."""
    from transformers.utils import is_torchvision_available
    return bool(is_torchvision_available())


def processor_dict(name: str, **hub) -> dict:
    """processor_config.json (+ chat template) of a folder or hub id: ProcessorMixin.get_processor_dict
    (classmethod, returns (dict, unused kwargs)). 5.17, 5.24."""
    from transformers.processing_utils import ProcessorMixin
    return ProcessorMixin.get_processor_dict(name, **hub)[0]


def image_processor_dict(name: str, **hub) -> dict:
    """preprocessor_config.json: ImageProcessingMixin.get_image_processor_dict. 5.17, 5.24."""
    from transformers import ImageProcessingMixin
    return ImageProcessingMixin.get_image_processor_dict(name, **hub)[0]


def processor_class_for(model_type: str) -> str | None:
    """The processor class name transformers' AutoProcessor maps a model_type to. 5.17, 5.24."""
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES
    return PROCESSOR_MAPPING_NAMES.get(model_type)


class ImageOnlyProcessor:
    """Mixin for a processor class built without its video processor. ProcessorMixin.__init__ checks every
    sub-processor with check_argument_for_proper_class (5.17, 5.24); only video_processor=None is let
    through, so the class's own __init__ sets everything else exactly as usual."""

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor" and argument is None:
            return None
        return super().check_argument_for_proper_class(argument_name, argument)


# Where `videos` sits among a processor's positional arguments: __call__(images, text, videos, audio, **kw)
# for LlavaOnevisionProcessor, Qwen2_5_VLProcessor and Qwen3VLProcessor, 5.17 and 5.24.
PROCESSOR_VIDEOS_ARG = 2
