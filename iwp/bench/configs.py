"""Real-size configs of the published models the benchmarks build (random weights, nothing downloaded).
small=True gives the same structure with tiny sizes, for CPU tests."""
from __future__ import annotations


def onevision_config(small: bool, text: str = "7b"):
    """llava-hf/llava-onevision-qwen2-7b-ov-hf (text="7b") or llava-hf/llava-onevision-qwen2-0.5b-ov-hf
    (text="0.5b"): SigLIP-so400m/14 at 384 + Qwen2-7B / Qwen2-0.5B (published configs)."""
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig
    vc = SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=26, num_attention_heads=16,
                            image_size=384, patch_size=14, vision_use_head=False)
    texts = {"7b": dict(vocab_size=152128, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                        num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
             "0.5b": dict(vocab_size=152000, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                          num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True)}
    tc = Qwen2Config(max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6, **texts[text])
    if small:
        vc = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=384, patch_size=14, vision_use_head=False)
        tc = Qwen2Config(vocab_size=152128, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768)
    return LlavaOnevisionConfig(vision_config=vc, text_config=tc, image_token_id=151646, video_token_id=151647,
                                vision_feature_select_strategy="full", vision_feature_layer=-1,
                                vision_aspect_ratio="anyres_max_9", tie_word_embeddings=texts[text]["tie_word_embeddings"],
                                image_grid_pinpoints=[[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)])


def onevision_05b_config(small: bool):
    """llava-hf/llava-onevision-qwen2-0.5b-ov-hf (published config)."""
    return onevision_config(small, text="0.5b")


def _qwen_parts(small: bool) -> tuple[dict, dict, dict]:
    """Vision config, text config and special token ids of Qwen/Qwen2.5-VL-7B-Instruct (published config)."""
    vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                  fullatt_block_indexes=[7, 15, 23, 31], hidden_act="silu", tokens_per_second=2)
    text = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000, rms_norm_eps=1e-6,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]})
    ids = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653)
    if small:
        vision.update(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                      fullatt_block_indexes=[1])
        text.update(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                            "mrope_section": [2, 3, 3]})
    return vision, text, ids


def qwen_config(small: bool):
    """Qwen/Qwen2.5-VL-7B-Instruct (published config)."""
    from transformers import Qwen2_5_VLConfig
    vision, text, ids = _qwen_parts(small)
    return Qwen2_5_VLConfig(vision_config=vision, text_config=text, **ids)


def qwen72b_config(small: bool):
    """Qwen/Qwen2.5-VL-72B-Instruct (published config): Qwen2.5-72B decoder, the 7B's ViT with a wider MLP."""
    from transformers import Qwen2_5_VLConfig
    vision, text, ids = _qwen_parts(small)
    if small:   # a small vocabulary too, so that decoder layers, not embeddings, dominate a device map as at 72B
        text.update(vocab_size=1024, num_hidden_layers=6, bos_token_id=1016, eos_token_id=1017)
        ids = dict(image_token_id=1021, video_token_id=1022, vision_start_token_id=1019, vision_end_token_id=1020)
    else:
        vision.update(intermediate_size=3456, out_hidden_size=8192)
        text.update(hidden_size=8192, intermediate_size=29568, num_hidden_layers=80, num_attention_heads=64,
                    num_key_value_heads=8)
    return Qwen2_5_VLConfig(vision_config=vision, text_config=text, tie_word_embeddings=False, **ids)


def qwen3_config(small: bool):
    """Qwen/Qwen3-VL-8B-Instruct (published config): Qwen3-8B decoder, a 27-block ViT with DeepStack after
    blocks 8, 16 and 24 added into the first three decoder layers."""
    from transformers import Qwen3VLConfig
    vision = dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096,
                  patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                  deepstack_visual_indexes=[8, 16, 24], hidden_act="gelu_pytorch_tanh")
    text = dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=262144,
                rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                                                    "mrope_section": [24, 20, 20], "mrope_interleaved": True})
    if small:
        vision.update(depth=3, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                      deepstack_visual_indexes=[0, 1, 2])
        text.update(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16,
                    rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [2, 3, 3],
                                     "mrope_interleaved": True})
    return Qwen3VLConfig(vision_config=vision, text_config=text, tie_word_embeddings=False, image_token_id=151655,
                         video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653)


def qwen3b_config(small: bool):
    """Qwen/Qwen2.5-VL-3B-Instruct (published config): the 7B's ViT projecting to 2048, a Qwen2.5-3B decoder."""
    from transformers import Qwen2_5_VLConfig
    vision, text, ids = _qwen_parts(small)
    if not small:
        vision.update(out_hidden_size=2048)
        text.update(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                    num_attention_heads=16, num_key_value_heads=2)
    return Qwen2_5_VLConfig(vision_config=vision, text_config=text, tie_word_embeddings=True, **ids)


def folder_config(path, small: bool = False):
    """The config.json of a model folder (e.g. tests/fixtures/real-processors/*). small=True keeps what
    decides token counts and ids (vocabulary, special ids, image and patch sizes, pinpoints, merge and
    temporal sizes) and shrinks widths and depths to the small configs' above, for CPU tests."""
    from transformers import AutoConfig
    cfg = AutoConfig.from_pretrained(str(path))
    if not small:
        return cfg
    text, vision = cfg.text_config, cfg.vision_config
    text.update(dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                     num_key_value_heads=2))
    if getattr(text, "layer_types", None) is not None:
        text.layer_types = text.layer_types[:4]
    if cfg.model_type == "qwen2_5_vl":
        rope = dict(getattr(text, "rope_parameters", None) or {})
        rope["mrope_section"] = [2, 3, 3]                    # head_dim 16: sections sum to 8
        text.rope_parameters = rope
        if getattr(text, "rope_scaling", None):
            text.rope_scaling = {**text.rope_scaling, "mrope_section": [2, 3, 3]}
        vision.update(dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           fullatt_block_indexes=[1]))
    else:
        vision.update(dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2))
    return cfg
