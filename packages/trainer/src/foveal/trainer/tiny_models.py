"""Tiny random-weight models of the real transformers classes, cached beside their processor files.

`build_tiny_model(family)` writes one folder with the family's processor files (from
`foveal.renderers.tiny`) plus config.json, generation_config.json and model.safetensors, so
`AutoProcessor` and `AutoModelForImageTextToText` / `AutoModelForCausalLM` load it offline. The shapes keep
what the training code depends on (mrope sections summing to head_dim/2, GQA, the 2x2 patch merge, Qwen3-VL
deepstack, Qwen2.5-VL window attention, Llama 3's rope scaling, Gemma 3's sliding/global layers and 4x4
pooling of SigLIP patches, GLM-4.1V's half-rotary mrope and interpolated vision position table) at a size that
builds and runs a step in well under a second on CPU.
"""

from __future__ import annotations

import copy
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from transformers import (
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    GenerationConfig,
    Glm4vConfig,
    Glm4vForConditionalGeneration,
    GptOssConfig,
    GptOssForCausalLM,
    InternVLConfig,
    InternVLForConditionalGeneration,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedConfig,
    PreTrainedModel,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
)

from foveal.renderers.tiny import (
    FamilySpec,
    Gemma3VisionSpec,
    InternVLVisionSpec,
    SmolVLMVisionSpec,
    TinyTokenIds,
    family_spec,
    materialize,
    processor_recipe,
    source_digest,
    write_processor_files,
)
from foveal.trainer.model.quiet import quiet_progress

SEED = 0
# Text decoder shared by all families: 4 query heads of 16 over 2 KV heads (GQA, as the real models).
TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
}
HEAD_DIM = TEXT["hidden_size"] // TEXT["num_attention_heads"]
# mrope sections (temporal, height, width) sum to HEAD_DIM // 2 = 8, in the real proportions: Qwen2-VL's
# [16, 24, 24] -> [2, 3, 3]; Qwen3-VL interleaves its [24, 20, 20] as t,h,w,t,h,w,... -> [3, 3, 2].
# The Qwen3 classes take head_dim explicitly. Vision towers: depth 2, width 32, 2 heads, output width = the
# text hidden size; patch, merge and temporal sizes come from the family's image processor settings.
# Embeddings are tied like the small real Qwen3 models, untied like the 7B-class VLMs.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "qwen2_vl": {
        "text": {"rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}},
        "vision": {"depth": 2, "embed_dim": 32, "hidden_size": 64, "mlp_ratio": 2, "num_heads": 2},
        "tie_word_embeddings": False,
    },
    "qwen2_5_vl": {
        "text": {"rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}},
        "vision": {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "window_size": 112,
            "fullatt_block_indexes": [1],
        },
        "tie_word_embeddings": False,
    },
    "qwen3_vl": {
        "text": {
            "head_dim": HEAD_DIM,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5e6,
                "mrope_section": [3, 3, 2],
                "mrope_interleaved": True,
            },
        },
        "vision": {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "num_position_embeddings": 256,
            "deepstack_visual_indexes": [0],
        },
        "tie_word_embeddings": False,
    },
    "qwen3": {
        "text": {"head_dim": HEAD_DIM, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}},
        "vision": None,
        "tie_word_embeddings": True,
    },
    # Llama 3.1's rope: theta 5e5 with the "llama3" frequency scaling of the real config.json, its original
    # context shrunk with the tiny one (real: 8192 scaled by 8 to 65536 of 131072; tiny: 512 by 8 to 4096).
    "llama3": {
        "text": {
            "head_dim": HEAD_DIM,
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 5e5,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 512,
            },
        },
        "vision": None,
        "tie_word_embeddings": False,
    },
    # Gemma 3 (4B-class): one sliding-window layer then one global layer (the real 5:1 pattern, shortened),
    # local rope theta 1e4, global 1e6 with the 4B's linear scaling by 8, query scaling by head_dim, tied
    # embeddings. SigLIP vision tower without its pooling head; image and patch size from the processor spec
    # (the projector pools the patch grid down to `tokens_per_image`).
    "gemma3": {
        "text": {
            "head_dim": HEAD_DIM,
            "query_pre_attn_scalar": HEAD_DIM,
            "sliding_window": 64,
            "layer_types": ["sliding_attention", "full_attention"],
            "rope_parameters": {
                "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
            },
        },
        "vision": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "vision_use_head": False,
        },
        "tie_word_embeddings": True,
    },
    # GLM-4.1V (9B-Thinking): rope on half of each head (partial_rotary_factor 0.5) split by mrope sections
    # (real [8, 12, 12] of 32 rotary pairs; tiny 4 pairs -> [2, 1, 1], height = width as the real ones), theta
    # 1e4, untied embeddings. Vision tower: its position table is `image_size / patch_size` patches a side,
    # interpolated to every image's grid (real 336 / 14 = 24; tiny 112 / 14 = 8); merger width 64.
    "glm4v": {
        "text": {
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e4,
                "partial_rotary_factor": 0.5,
                "mrope_section": [2, 1, 1],
            },
        },
        "vision": {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "image_size": 112,
        },
        "tie_word_embeddings": False,
    },
}
# InternVL 3.5 (1B-class: InternViT-300M + Qwen3-0.6B, tied embeddings): InternViT tower whose tile and patch size
# come from the processor spec (real 448 / 14 = 32 patches a side, tiny 28 / 7 = 4), pixel-shuffled by 0.5 into
# `image_seq_length` tokens a tile (real 256, tiny 4); a Qwen3 decoder.
ARCHITECTURES["internvl"] = {
    "text": {
        "model_type": "qwen3",
        "head_dim": HEAD_DIM,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6},
    },
    "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
    "tie_word_embeddings": True,
}
_CLASSES: dict[str, tuple[type[PreTrainedConfig], type[PreTrainedModel]]] = {
    "qwen2_vl": (Qwen2VLConfig, Qwen2VLForConditionalGeneration),
    "qwen2_5_vl": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration),
    "qwen3_vl": (Qwen3VLConfig, Qwen3VLForConditionalGeneration),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
    "llama3": (LlamaConfig, LlamaForCausalLM),
    "gemma3": (Gemma3Config, Gemma3ForConditionalGeneration),
    "glm4v": (Glm4vConfig, Glm4vForConditionalGeneration),
    "internvl": (InternVLConfig, InternVLForConditionalGeneration),
}
# Qwen3-VL Thinking is the Qwen3-VL model (same classes, shapes and processor) with its thinking chat template.
ARCHITECTURES["qwen3_vl_thinking"] = ARCHITECTURES["qwen3_vl"]
_CLASSES["qwen3_vl_thinking"] = _CLASSES["qwen3_vl"]
# gpt-oss (20b-class): mixture of experts (real 32 experts, 4 per token; tiny 4, 2), attention sinks, sliding-window
# layers (real window 128) alternating with full ones, rope theta 1.5e5 with YaRN scaling by 32 of an original 4096
# (tiny: by 8 of 512, as Llama 3's), attention biases, untied embeddings.
ARCHITECTURES["gpt_oss"] = {
    "text": {
        "head_dim": HEAD_DIM,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "sliding_window": 64,
        "layer_types": ["sliding_attention", "full_attention"],
        "rope_parameters": {
            "rope_type": "yarn",
            "rope_theta": 1.5e5,
            "factor": 8.0,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "truncate": False,
            "original_max_position_embeddings": 512,
        },
    },
    "vision": None,
    "tie_word_embeddings": False,
}
_CLASSES["gpt_oss"] = (GptOssConfig, GptOssForCausalLM)
# SmolVLM2 (2.2B-class: SigLIP + SmolLM2-1.7B, a Llama decoder): SigLIP tower whose tile and patch size come from the
# processor spec (real 384 / 14 = 27 patches a side shuffled by 3 to 81 tokens; tiny 32 / 8 = 4 shuffled by 2 to 4),
# rope theta 273768 as the released config, untied embeddings.
ARCHITECTURES["smolvlm"] = {
    "text": {
        "model_type": "llama",
        "head_dim": HEAD_DIM,
        "rope_parameters": {"rope_type": "default", "rope_theta": 273768.0},
    },
    "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
    "tie_word_embeddings": False,
}
_CLASSES["smolvlm"] = (SmolVLMConfig, SmolVLMForConditionalGeneration)
# The families whose config lists several stop tokens as eos: Llama 3.1 (config.json and generation_config.json
# list all three), Gemma 3 (<eos> and <end_of_turn>, ids 1 and 106 in the real files) and GLM-4.1V
# (<|endoftext|>, <|user|>, <|observation|>: 151329, 151336, 151338 in the released generation_config.json).
_STOPS = {
    "llama3": ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"),
    "gemma3": ("<eos>", "<end_of_turn>"),
    "glm4v": ("<|endoftext|>", "<|user|>", "<|observation|>"),
    "gpt_oss": ("<|return|>", "<|endoftext|>", "<|call|>"),  # generation_config.json: 200002, 199999, 200012
    "smolvlm": ("<end_of_utterance>",),
}


def build_tiny_model(family: str, cache_root: Path | None = None) -> Path:
    """Build (once) and return the model folder of `family` under `cache_root` (default ~/.cache/foveal/tiny)."""
    spec = family_spec(family)
    return materialize(spec.name, model_recipe(spec), lambda folder: _write_model(spec, folder), cache_root)


def model_recipe(spec: FamilySpec) -> dict[str, Any]:
    """The processor recipe plus the architecture, seed and the libraries that write the weights."""
    return {
        "kind": "model",
        "processor": processor_recipe(spec),
        "text": TEXT,
        "architecture": ARCHITECTURES[spec.name],
        "seed": SEED,
        "versions": {name: version(name) for name in ("torch", "transformers", "safetensors")},
        "code": source_digest(__file__),
    }


def tiny_config(spec: FamilySpec, ids: TinyTokenIds) -> PreTrainedConfig:
    """The family's real config class at tiny size, with every token id taken from the built tokenizer."""
    config_class, _ = _CLASSES[spec.name]
    # Deep copies: the config classes standardize rope_parameters in place.
    architecture = copy.deepcopy(ARCHITECTURES[spec.name])
    text = {**TEXT, **architecture["text"], "vocab_size": ids.vocab_size, **_special_ids(spec, ids)}
    tie = architecture["tie_word_embeddings"]
    if spec.vision is None:
        return config_class(**text, tie_word_embeddings=tie)
    if isinstance(spec.vision, Gemma3VisionSpec):
        return _gemma3_config(spec.vision, ids, text, architecture)
    if isinstance(spec.vision, InternVLVisionSpec):
        return _internvl_config(spec.vision, ids, text, architecture)
    if isinstance(spec.vision, SmolVLMVisionSpec):
        return _smolvlm_config(spec.vision, ids, text, architecture)
    if spec.name == "glm4v":
        return _glm4v_config(spec, ids, text, architecture)
    vision = {
        **architecture["vision"],
        "patch_size": spec.vision.patch_size,
        "spatial_merge_size": spec.vision.merge_size,
        "temporal_patch_size": spec.vision.temporal_patch_size,
    }
    return config_class(
        text_config=text,
        vision_config=vision,
        image_token_id=ids.image_pad_id,
        video_token_id=ids.video_pad_id,
        vision_start_token_id=ids.vision_start_id,
        vision_end_token_id=ids.vision_end_id,
        tie_word_embeddings=tie,
    )


def _gemma3_config(
    vision: Gemma3VisionSpec, ids: TinyTokenIds, text: dict[str, Any], architecture: dict[str, Any]
) -> PreTrainedConfig:
    """Gemma3Config: the image, begin-of-image and end-of-image ids from the tokenizer; patch grid pooled to the
    processor's tokens per image (the real 896 / 14 = 64 patches a side pooled 4x4 to 16 x 16 = 256)."""
    return Gemma3Config(
        text_config=text,
        vision_config={**architecture["vision"], "image_size": vision.image_size, "patch_size": vision.patch_size},
        mm_tokens_per_image=vision.tokens_per_image,
        boi_token_index=ids.id_of("<start_of_image>"),
        eoi_token_index=ids.id_of("<end_of_image>"),
        image_token_index=ids.id_of("<image_soft_token>"),
        tie_word_embeddings=architecture["tie_word_embeddings"],
        **{key: value for key, value in text.items() if key.endswith("_token_id")},
    )


def _glm4v_config(
    spec: FamilySpec, ids: TinyTokenIds, text: dict[str, Any], architecture: dict[str, Any]
) -> PreTrainedConfig:
    """Glm4vConfig: `<|image|>` / `<|video|>` and their begin / end markers from the tokenizer."""
    assert spec.vision is not None
    vision = {
        **architecture["vision"],
        "patch_size": spec.vision.patch_size,
        "spatial_merge_size": spec.vision.merge_size,
        "temporal_patch_size": spec.vision.temporal_patch_size,
    }
    return Glm4vConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids.id_of("<|image|>"),
        video_token_id=ids.id_of("<|video|>"),
        image_start_token_id=ids.id_of("<|begin_of_image|>"),
        image_end_token_id=ids.id_of("<|end_of_image|>"),
        video_start_token_id=ids.id_of("<|begin_of_video|>"),
        video_end_token_id=ids.id_of("<|end_of_video|>"),
        tie_word_embeddings=architecture["tie_word_embeddings"],
    )


def _internvl_config(
    vision: InternVLVisionSpec, ids: TinyTokenIds, text: dict[str, Any], architecture: dict[str, Any]
) -> PreTrainedConfig:
    """InternVLConfig: `<IMG_CONTEXT>` from the tokenizer; (tile / patch)^2 * 0.5^2 = the processor's tokens a tile."""
    side = vision.tile_size // vision.patch_size
    assert side * side // 4 == vision.tokens_per_tile, "pixel shuffle 0.5 must give image_seq_length tokens a tile"
    return InternVLConfig(
        text_config=text,
        vision_config={**architecture["vision"], "image_size": vision.tile_size, "patch_size": vision.patch_size},
        image_token_id=ids.id_of("<IMG_CONTEXT>"),
        image_seq_length=vision.tokens_per_tile,
        downsample_ratio=0.5,
        tie_word_embeddings=architecture["tie_word_embeddings"],
    )


def _smolvlm_config(
    vision: SmolVLMVisionSpec, ids: TinyTokenIds, text: dict[str, Any], architecture: dict[str, Any]
) -> PreTrainedConfig:
    """SmolVLMConfig: `<image>` from the tokenizer; (tile / patch)^2 / scale_factor^2 = the processor's tokens a
    tile (`image_seq_len`)."""
    side = vision.tile_size // vision.patch_size
    assert side * side // vision.scale_factor**2 == vision.tokens_per_tile, "the shuffle must give image_seq_len"
    return SmolVLMConfig(
        text_config=text,
        vision_config={**architecture["vision"], "image_size": vision.tile_size, "patch_size": vision.patch_size},
        image_token_id=ids.id_of("<image>"),
        scale_factor=vision.scale_factor,
        pad_token_id=ids.pad_id,
        tie_word_embeddings=architecture["tie_word_embeddings"],
    )


def _special_ids(spec: FamilySpec, ids: TinyTokenIds) -> dict[str, Any]:
    if spec.name == "glm4v":  # no BOS; every stop token as eos; pad <|endoftext|>, as the released files
        return {"bos_token_id": None, "eos_token_id": _stop_ids(spec, ids), "pad_token_id": ids.pad_id}
    if spec.name == "gpt_oss":  # config.json: bos <|startoftext|> (never written), eos <|return|>, pad <|endoftext|>
        return {"bos_token_id": ids.id_of("<|startoftext|>"), "eos_token_id": ids.eos_id, "pad_token_id": ids.pad_id}
    if spec.name == "smolvlm":  # bos <|im_start|> (written by the template), eos <end_of_utterance>, pad <|im_end|>
        return {"bos_token_id": ids.id_of("<|im_start|>"), "eos_token_id": ids.eos_id, "pad_token_id": ids.pad_id}
    if ids.bos_id is None:  # Qwen, as the real configs: bos = pad = <|endoftext|>, eos = <|im_end|>.
        return {"bos_token_id": ids.pad_id, "eos_token_id": ids.eos_id, "pad_token_id": ids.pad_id}
    # Llama 3.1: bos <|begin_of_text|>, every stop token as eos; pad <|finetune_right_pad_id|> (the tokenizer's).
    # Gemma 3: bos <bos>, eos [<eos>, <end_of_turn>], pad <pad>.
    return {"bos_token_id": ids.bos_id, "eos_token_id": _stop_ids(spec, ids), "pad_token_id": ids.pad_id}


def _stop_ids(spec: FamilySpec, ids: TinyTokenIds) -> list[int]:
    """What generation stops on: Qwen's <|im_end|> or <|endoftext|>; the listed stop tokens of the others."""
    if spec.name in _STOPS:
        return [ids.id_of(token) for token in _STOPS[spec.name]]
    return [ids.eos_id, ids.pad_id]


def init_tiny_model(spec: FamilySpec, ids: TinyTokenIds) -> PreTrainedModel:
    """The seeded random-weight model that `build_tiny_model` saves (same seed, same weights).

    Gemma 3 initializes its image projection to zero, which would hide every image from the text model
    (and stop the vision tower's gradients); the tiny model draws it like the other weights instead.
    """
    _, model_class = _CLASSES[spec.name]
    torch.manual_seed(SEED)
    model = model_class(tiny_config(spec, ids)).eval()
    if isinstance(model, Gemma3ForConditionalGeneration):
        projection = model.model.multi_modal_projector.mm_input_projection_weight
        with torch.no_grad():
            projection.normal_(0.0, model.config.initializer_range)
    special = _special_ids(spec, ids)
    model.generation_config = GenerationConfig(
        bos_token_id=special["bos_token_id"], eos_token_id=_stop_ids(spec, ids), pad_token_id=ids.pad_id
    )
    return model


def _write_model(spec: FamilySpec, folder: Path) -> None:
    write_processor_files(spec, folder)
    with quiet_progress():
        init_tiny_model(spec, TinyTokenIds.from_folder(folder)).save_pretrained(folder)
