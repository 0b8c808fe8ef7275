"""What each tiny family copies from its real counterpart: added tokens, chat template, processor settings.

The tiny models exist so tests and the demo exercise the real transformers classes offline. Everything a
renderer or the layout math can observe (token order, which added tokens are `special`, eos/pad, the
preprocessor_config.json keys, patch/merge sizes) follows the real hub files; only the sizes shrink
(a ~2k-token BPE instead of 151k, at most 256 merged image tokens instead of 16k).

The text-only `llama3` family (Llama 3.1 / 3.2 Instruct) shares the trained BPE and its Qwen2 pipeline (the
real Llama 3 split regex differs only in grouping up to three digits); what it copies is the added tokens,
bos/eos/pad, the BOS the tokenizer adds when encoding, and the chat template.

`gpt_oss` (gpt-oss-20b / 120b, text, harmony format) shares them too (the real o200k_harmony split regex differs);
it copies the harmony added tokens in their real order, eos <|return|>, pad <|endoftext|> and the chat template.
The real tokenizer_config names <|startoftext|> as bos but nothing writes it (neither the template nor encoding),
so the tiny one names no bos.

`gemma3` (Gemma 3 instruction-tuned, with vision) has its own SentencePiece-style BPE (`gemma_bpe`), the real
tokenizer_config keys (GemmaTokenizer, `boi_token` / `eoi_token` / `image_token`), and the real
Gemma3ImageProcessor / Gemma3Processor files at a tiny fixed image size (`Gemma3VisionSpec`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from foveal.renderers.errors import UnknownFamily

# Added tokens in the order (and so the relative ids) of the real Qwen tokenizers: Qwen2-VL stops at
# <|video_pad|>, Qwen2.5 appends tool-call and fill-in-the-middle tokens, Qwen3 appends tool responses and
# thinking. The real tokenizers mark the tokens below as `special: false`, so decoding with
# skip_special_tokens keeps them; every other added token is special.
_QWEN2_VL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
_QWEN2_5_TOKENS = (
    *_QWEN2_VL_TOKENS,
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
_QWEN3_TOKENS = (*_QWEN2_5_TOKENS, "<tool_response>", "</tool_response>", "<think>", "</think>")
_NOT_SPECIAL = frozenset(
    {
        "<tool_call>",
        "</tool_call>",
        "<|fim_prefix|>",
        "<|fim_middle|>",
        "<|fim_suffix|>",
        "<|fim_pad|>",
        "<|repo_name|>",
        "<|file_sep|>",
        "<tool_response>",
        "</tool_response>",
        "<think>",
        "</think>",
    }
)
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"

# Llama 3.1 / 3.2 Instruct: the first added tokens of the real tokenizer (ids 128000..128010), all special.
# The real list goes on with <|reserved_special_token_3|>.. up to 256 tokens; nothing renders those.
_LLAMA3_TOKENS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
)

# gpt-oss (o200k_harmony): the added tokens from <|startoftext|> (199998 in the real vocabulary) to <|endofprompt|>
# (200018), in id order with the reserved ones between, all special. The real list goes on with reserved tokens.
_GPT_OSS_TOKENS = (
    "<|startoftext|>",
    "<|endoftext|>",
    "<|reserved_200000|>",
    "<|reserved_200001|>",
    "<|return|>",
    "<|constrain|>",
    "<|reserved_200004|>",
    "<|channel|>",
    "<|start|>",
    "<|end|>",
    "<|message|>",
    "<|reserved_200009|>",
    "<|reserved_200010|>",
    "<|reserved_200011|>",
    "<|call|>",
    *(f"<|reserved_{200013 + n}|>" for n in range(5)),
    "<|endofprompt|>",
)

# Gemma 3: the added tokens a render can write, in id order (see gemma_bpe for where they sit), all special.
_GEMMA3_TOKENS = (
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<mask>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
)

# GLM-4.1V: the added tokens from <|endoftext|> (151329 in the real vocabulary) in the real order, up to <|video|>
# (151344), then the thinking tokens. The real tokenizer marks <think> / </think> as not special.
_GLM4V_TOKENS = (
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|image|>",
    "<|video|>",
    "<think>",
    "</think>",
)

# InternVL 3.5 (HF format, Qwen3 language models): Qwen3's added tokens, then InternVL's image and grounding tokens
# in the order its checkpoints add them, and `<video>`, which the HF conversion adds last. All special.
_INTERNVL_TOKENS = (
    *_QWEN3_TOKENS,
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<quad>",
    "</quad>",
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
    "<video>",
)

# SmolVLM2 (SmolLM2 language models): SmolLM2's first added tokens, then the image tokens SmolVLM adds (the global
# view, the 6 x 6 tile positions, the fake token around images, the image token), <end_of_utterance> (eos) and
# <video>. All special.
_SMOLVLM_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<global-img>",
    *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<video>",
)

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class VisionSpec:
    """Image processor settings; `preprocessor_config()` writes them with the real family's keys."""

    processor_class: str
    image_processor_type: str
    patch_size: int
    merge_size: int
    temporal_patch_size: int
    min_pixels: int
    max_pixels: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    size_keys: bool
    """Qwen3-VL writes the pixel bounds as `size: {shortest_edge, longest_edge}`; Qwen2-VL as min/max_pixels."""

    @property
    def factor(self) -> int:
        """Side length in pixels of one merged placeholder token."""
        return self.patch_size * self.merge_size

    def preprocessor_config(self) -> dict[str, Any]:
        bounds: dict[str, Any] = (
            {"size": {"longest_edge": self.max_pixels, "shortest_edge": self.min_pixels}}
            if self.size_keys
            else {"min_pixels": self.min_pixels, "max_pixels": self.max_pixels}
        )
        return {
            **bounds,
            "patch_size": self.patch_size,
            "temporal_patch_size": self.temporal_patch_size,
            "merge_size": self.merge_size,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "image_processor_type": self.image_processor_type,
            "processor_class": self.processor_class,
        }


@dataclass(frozen=True)
class Gemma3VisionSpec:
    """Gemma 3's fixed-size image settings; `preprocessor_config()` / `processor_config()` use the real keys.

    The real checkpoints: 896 x 896 images, SigLIP patch 14 (64 patches a side), pooled 4 x 4 to 16 x 16 =
    256 soft tokens (`mm_tokens_per_image` = `image_seq_length`). The tiny one keeps the 4 x 4 pooling:
    56 x 56 images, patch 7 (8 patches a side), 2 x 2 = 4 soft tokens.
    """

    image_size: int
    patch_size: int
    """SigLIP's patch size: only the model's config has it (the processor never cuts patches itself)."""
    tokens_per_image: int
    processor_class: str = "Gemma3Processor"
    image_processor_type: str = "Gemma3ImageProcessor"

    def preprocessor_config(self) -> dict[str, Any]:
        """preprocessor_config.json as the released Gemma 3 checkpoints write it (pan-and-scan unset)."""
        return {
            "do_convert_rgb": None,
            "do_normalize": True,
            "do_pan_and_scan": None,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_processor_type": self.image_processor_type,
            "image_seq_length": self.tokens_per_image,
            "image_std": [0.5, 0.5, 0.5],
            "pan_and_scan_max_num_crops": None,
            "pan_and_scan_min_crop_size": None,
            "pan_and_scan_min_ratio_to_activate": None,
            "processor_class": self.processor_class,
            "resample": 2,
            "rescale_factor": 1 / 255,
            "size": {"height": self.image_size, "width": self.image_size},
        }

    def processor_config(self) -> dict[str, Any]:
        """processor_config.json: Gemma3Processor's `image_seq_length` (its default is 256)."""
        return {"image_seq_length": self.tokens_per_image, "processor_class": self.processor_class}


@dataclass(frozen=True)
class InternVLVisionSpec:
    """InternVL's tiling settings; `preprocessor_config()` / `processor_config()` use the real keys.

    The released checkpoints: 448 px tiles, 1..12 tiles plus a thumbnail, InternViT patch 14 (32 a side)
    pixel-shuffled by 0.5 to 16 x 16 = 256 tokens a tile (`image_seq_length`). The tiny one keeps the tiling
    rule and the shuffle: 28 px tiles, patch 7 (4 a side), 2 x 2 = 4 tokens a tile.
    """

    tile_size: int
    patch_size: int
    """InternViT's patch size: only the model's config has it (the processor cuts tiles, not patches)."""
    tokens_per_tile: int
    min_patches: int = 1
    max_patches: int = 12
    processor_class: str = "InternVLProcessor"
    image_processor_type: str = "GotOcr2ImageProcessor"

    def preprocessor_config(self) -> dict[str, Any]:
        """preprocessor_config.json as the InternVL3.5 HF checkpoints write it (`crop_to_patches` false there:
        InternVLProcessor turns it on for every call)."""
        return {
            "crop_to_patches": False,
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": [0.485, 0.456, 0.406],
            "image_processor_type": self.image_processor_type,
            "image_std": [0.229, 0.224, 0.225],
            "max_patches": self.max_patches,
            "min_patches": self.min_patches,
            "processor_class": self.processor_class,
            "resample": 3,
            "rescale_factor": 1 / 255,
            "size": {"height": self.tile_size, "width": self.tile_size},
        }

    def processor_config(self) -> dict[str, Any]:
        """processor_config.json: InternVLProcessor's `image_seq_length` (its default is 256)."""
        return {"image_seq_length": self.tokens_per_tile, "processor_class": self.processor_class}

    def video_preprocessor_config(self) -> dict[str, Any]:
        """video_preprocessor_config.json: InternVLProcessor loads a video processor too (frames are single tiles)."""
        return {
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225],
            "processor_class": self.processor_class,
            "resample": 3,
            "rescale_factor": 1 / 255,
            "size": {"height": self.tile_size, "width": self.tile_size},
            "video_processor_type": "InternVLVideoProcessor",
        }

    @staticmethod
    def named_tokens() -> dict[str, str]:
        """The tokenizer_config's named tokens InternVLProcessor reads (`tokenizer.context_image_token`, ...)."""
        return {
            "context_image_token": "<IMG_CONTEXT>",
            "end_image_token": "</img>",
            "start_image_token": "<img>",
            "video_token": "<video>",
        }


@dataclass(frozen=True)
class SmolVLMVisionSpec:
    """SmolVLM2's splitting settings; `preprocessor_config()` / `processor_config()` use the real keys.

    The released SmolVLM2-2.2B-Instruct: longest edge resized to 1536, 384 px tiles (up to 4 x 4 plus the global
    view), SigLIP patch 14 (27 a side) pixel-shuffled by 3 to 9 x 9 = 81 tokens a tile (`image_seq_len`); the
    256M / 500M ones: 2048, 512 px tiles, patch 16, shuffle 4, 64 tokens. The tiny one keeps the rule: longest
    edge 128, 32 px tiles, patch 8 (4 a side), shuffle 2, 2 x 2 = 4 tokens a tile.
    """

    longest_edge: int
    tile_size: int
    patch_size: int
    """SigLIP's patch size: only the model's config has it (the processor cuts tiles, not patches)."""
    scale_factor: int
    """The model's pixel shuffle: (tile / patch / scale_factor)^2 tokens a tile."""
    processor_class: str = "SmolVLMProcessor"
    image_processor_type: str = "SmolVLMImageProcessor"

    @property
    def tokens_per_tile(self) -> int:
        return (self.tile_size // self.patch_size // self.scale_factor) ** 2

    def preprocessor_config(self) -> dict[str, Any]:
        """preprocessor_config.json as the SmolVLM2 checkpoints write it (splitting on, padding on)."""
        return {
            "do_convert_rgb": True,
            "do_image_splitting": True,
            "do_normalize": True,
            "do_pad": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_processor_type": self.image_processor_type,
            "image_std": [0.5, 0.5, 0.5],
            "max_image_size": {"longest_edge": self.tile_size},
            "processor_class": self.processor_class,
            "resample": 1,
            "rescale_factor": 1 / 255,
            "size": {"longest_edge": self.longest_edge},
        }

    def processor_config(self) -> dict[str, Any]:
        """processor_config.json: SmolVLMProcessor's `image_seq_len` (its default is 169)."""
        return {"image_seq_len": self.tokens_per_tile, "processor_class": self.processor_class}

    def video_preprocessor_config(self) -> dict[str, Any]:
        """video_preprocessor_config.json: SmolVLMProcessor loads a video processor too (frames are one tile each)."""
        return {
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_pad": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "max_image_size": {"longest_edge": self.tile_size},
            "processor_class": self.processor_class,
            "resample": 1,
            "rescale_factor": 1 / 255,
            "size": {"longest_edge": self.tile_size},
            "video_processor_type": "SmolVLMVideoProcessor",
        }


@dataclass(frozen=True)
class FamilySpec:
    """One tiny family: its tokenizer's added tokens, chat template and (for VLMs) image settings."""

    name: str
    added_tokens: tuple[str, ...]
    chat_template: str
    """Name of the chat template in `foveal.renderers.tiny.chat_templates`."""
    model_max_length: int
    vision: VisionSpec | Gemma3VisionSpec | InternVLVisionSpec | SmolVLMVisionSpec | None
    tokenizer_class: str = "Qwen2Tokenizer"
    """`tokenizer_class` of the real tokenizer_config.json (it decides how transformers rebuilds the pipeline)."""
    eos_token: str = EOS_TOKEN
    pad_token: str = PAD_TOKEN
    bos_token: str | None = None
    """Set for families whose tokenizer adds a BOS token when encoding with add_special_tokens (Llama 3)."""

    @property
    def is_vlm(self) -> bool:
        return self.vision is not None

    def is_special(self, token: str) -> bool:
        """Whether the real tokenizer marks this added token `special` (skipped by skip_special_tokens)."""
        return token not in _NOT_SPECIAL

    @property
    def extra_special_tokens(self) -> list[str]:
        """The real tokenizer_config's additional special tokens: every special added token but the pad token."""
        return [t for t in self.added_tokens if self.is_special(t) and t != self.pad_token]


def _qwen2_vision(processor_class: str) -> VisionSpec:
    # 56*56 is the real min_pixels; 256 merged tokens (16x16 after the 2x2 merge) caps a tiny CPU model.
    return VisionSpec(
        processor_class=processor_class,
        image_processor_type="Qwen2VLImageProcessor",
        patch_size=14,
        merge_size=2,
        temporal_patch_size=2,
        min_pixels=56 * 56,
        max_pixels=256 * 28 * 28,
        image_mean=_CLIP_MEAN,
        image_std=_CLIP_STD,
        size_keys=False,
    )


_QWEN3_VL_VISION = VisionSpec(
    processor_class="Qwen3VLProcessor",
    image_processor_type="Qwen2VLImageProcessorFast",
    patch_size=16,
    merge_size=2,
    temporal_patch_size=2,
    min_pixels=4 * 32 * 32,
    max_pixels=256 * 32 * 32,
    image_mean=(0.5, 0.5, 0.5),
    image_std=(0.5, 0.5, 0.5),
    size_keys=True,
)

# GLM-4.1V: the real patch 14 / merge 2 / temporal 2 and `size` keys (12544 .. 47040000 in the released file);
# the tiny upper bound is 256 merged tokens counted as two frames (GLM's resize compares 2 * H * W with it).
_GLM4V_VISION = VisionSpec(
    processor_class="Glm4vProcessor",
    image_processor_type="Glm4vImageProcessor",
    patch_size=14,
    merge_size=2,
    temporal_patch_size=2,
    min_pixels=112 * 112,
    max_pixels=2 * 256 * 28 * 28,
    image_mean=_CLIP_MEAN,
    image_std=_CLIP_STD,
    size_keys=True,
)

FAMILY_SPECS: dict[str, FamilySpec] = {
    "qwen2_vl": FamilySpec("qwen2_vl", _QWEN2_VL_TOKENS, "qwen2_vl", 32768, _qwen2_vision("Qwen2VLProcessor")),
    "qwen2_5_vl": FamilySpec("qwen2_5_vl", _QWEN2_5_TOKENS, "qwen2_vl", 131072, _qwen2_vision("Qwen2_5_VLProcessor")),
    "qwen3_vl": FamilySpec("qwen3_vl", _QWEN3_TOKENS, "qwen3_vl", 262144, _QWEN3_VL_VISION),
    "qwen3": FamilySpec("qwen3", _QWEN3_TOKENS, "qwen3", 131072, None),
    "llama3": FamilySpec(
        "llama3",
        _LLAMA3_TOKENS,
        "llama3",
        131072,
        None,
        tokenizer_class="PreTrainedTokenizerFast",
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
        bos_token="<|begin_of_text|>",
    ),
    "gpt_oss": FamilySpec(
        "gpt_oss",
        _GPT_OSS_TOKENS,
        "gpt_oss",
        131072,
        None,
        tokenizer_class="PreTrainedTokenizerFast",
        eos_token="<|return|>",
        pad_token="<|endoftext|>",
    ),
    "gemma3": FamilySpec(
        "gemma3",
        _GEMMA3_TOKENS,
        "gemma3",
        131072,
        Gemma3VisionSpec(image_size=56, patch_size=7, tokens_per_image=4),
        tokenizer_class="GemmaTokenizer",
        eos_token="<eos>",
        pad_token="<pad>",
        bos_token="<bos>",
    ),
    "glm4v": FamilySpec(
        "glm4v",
        _GLM4V_TOKENS,
        "glm4v",
        65536,
        _GLM4V_VISION,
        tokenizer_class="PreTrainedTokenizerFast",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    ),
    "qwen3_vl_thinking": FamilySpec("qwen3_vl_thinking", _QWEN3_TOKENS, "qwen3_vl_thinking", 262144, _QWEN3_VL_VISION),
    "internvl": FamilySpec(
        "internvl",
        _INTERNVL_TOKENS,
        "internvl",
        40960,
        InternVLVisionSpec(tile_size=28, patch_size=7, tokens_per_tile=4),
    ),
    "smolvlm": FamilySpec(
        "smolvlm",
        _SMOLVLM_TOKENS,
        "smolvlm",
        8192,
        SmolVLMVisionSpec(longest_edge=128, tile_size=32, patch_size=8, scale_factor=2),
        tokenizer_class="PreTrainedTokenizerFast",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
    ),
}
RENDERER_ONLY_FAMILIES: tuple[str, ...] = ()
"""Families with a renderer and a tiny model but no trainer/serving support yet (not in `VLM_FAMILIES`)."""
FAMILIES = tuple(FAMILY_SPECS)
QWEN_VL_FAMILIES = tuple(
    name
    for name, spec in FAMILY_SPECS.items()
    if isinstance(spec.vision, VisionSpec) and spec.vision.image_processor_type.startswith("Qwen2VL")
    and name not in RENDERER_ONLY_FAMILIES
)
"""The families with a Qwen-VL image layout (patch grid, 2x2 merge, `<|image_pad|>`)."""
VLM_FAMILIES = tuple(name for name, spec in FAMILY_SPECS.items() if spec.is_vlm and name not in RENDERER_ONLY_FAMILIES)
"""The families with a vision tower, the ones Foveal trains and serves with images (`foveal smoke`): the Qwen-VL
families (Qwen3-VL Thinking included), Gemma 3, GLM-4.1V and InternVL 3.5."""


def family_spec(family: str) -> FamilySpec:
    """The spec of a tiny family, or `UnknownFamily` naming the ones that exist."""
    try:
        return FAMILY_SPECS[family]
    except KeyError:
        raise UnknownFamily("family", family, f"one of {', '.join(FAMILIES)}") from None
