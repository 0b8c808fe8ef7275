"""`build_tiny_processor`: a family's tokenizer, chat template and image processor config in one folder.

The folder has the files of a real hub repository (tokenizer.json, tokenizer_config.json,
chat_template.jinja, and preprocessor_config.json for VLMs), so `AutoTokenizer.from_pretrained` and the PIL
image processor's `from_pretrained` load it without torch, and `AutoProcessor` does on the trainer side.
The JSON files are written here, not by transformers' save_pretrained, so their bytes depend only on the
recipe and the `tokenizers` version.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

import orjson

from foveal.renderers.tiny import bpe, gemma_bpe
from foveal.renderers.tiny.cache import materialize, source_digest
from foveal.renderers.tiny.chat_templates import chat_template
from foveal.renderers.tiny.families import (
    FamilySpec,
    Gemma3VisionSpec,
    InternVLVisionSpec,
    SmolVLMVisionSpec,
    family_spec,
)

GEMMA_TOKENIZER = "GemmaTokenizer"


def build_tiny_processor(family: str, cache_root: Path | None = None) -> Path:
    """Build (once) and return the processor folder of `family` under `cache_root` (default ~/.cache/foveal/tiny)."""
    spec = family_spec(family)
    recipe = processor_recipe(spec)
    return materialize(spec.name, recipe, lambda folder: write_processor_files(spec, folder), cache_root)


def processor_recipe(spec: FamilySpec) -> dict[str, Any]:
    """Everything that decides the processor files; its hash names the folder."""
    return {
        "kind": "processor",
        "family": spec.name,
        "bpe": gemma_bpe.bpe_recipe() if spec.tokenizer_class == GEMMA_TOKENIZER else bpe.bpe_recipe(),
        "added_tokens": [[token, spec.is_special(token)] for token in spec.added_tokens],
        "tokenizer_config": tokenizer_config(spec),
        "chat_template": chat_template(spec.chat_template),
        "preprocessor_config": spec.vision.preprocessor_config() if spec.vision else None,
        "processor_config": _processor_config(spec),
        "video_preprocessor_config": _video_config(spec),
        "tokenizers_version": version("tokenizers"),
        "code": source_digest(__file__, bpe.__file__, gemma_bpe.__file__),
    }


def tokenizer_config(spec: FamilySpec) -> dict[str, Any]:
    """tokenizer_config.json as transformers 5 reads it: Qwen2Tokenizer, eos <|im_end|>, pad <|endoftext|>, no bos.

    Llama 3 keeps the keys of its real file instead: the generic fast tokenizer (tokenizer.json used as is,
    BOS added by its post-processor), bos <|begin_of_text|>, eos <|eot_id|>, and <|finetune_right_pad_id|>
    as pad (the pad the Llama 3.1 recipes use; the hub file itself names none). The hub file's
    clean_up_tokenization_spaces=true is written as false: transformers 5 ignores it for BPE tokenizers
    anyway, and only warns on every load.
    """
    if spec.tokenizer_class == GEMMA_TOKENIZER:
        return _gemma_tokenizer_config(spec)
    if spec.tokenizer_class == "PreTrainedTokenizerFast":
        fast: dict[str, Any] = {
            "tokenizer_class": spec.tokenizer_class,
            "bos_token": spec.bos_token,
            "eos_token": spec.eos_token,
            "pad_token": spec.pad_token,
            "clean_up_tokenization_spaces": False,
            "model_input_names": ["input_ids", "attention_mask"],
            "model_max_length": spec.model_max_length,
        }
        if spec.vision:  # GLM-4.1V: the same generic fast tokenizer, its processor named as in the hub file
            fast["padding_side"] = "left"
            fast["processor_class"] = spec.vision.processor_class
        return fast
    config: dict[str, Any] = {
        "tokenizer_class": spec.tokenizer_class,
        "bos_token": spec.bos_token,
        "eos_token": spec.eos_token,
        "pad_token": spec.pad_token,
        "unk_token": None,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "extra_special_tokens": spec.extra_special_tokens,
        "model_max_length": spec.model_max_length,
    }
    if spec.vision:
        config["processor_class"] = spec.vision.processor_class
    if isinstance(spec.vision, InternVLVisionSpec):  # the named image tokens InternVLProcessor reads
        config["extra_special_tokens"] = spec.vision.named_tokens()
    return config


def _gemma_tokenizer_config(spec: FamilySpec) -> dict[str, Any]:
    """Gemma 3's keys: GemmaTokenizer (it rebuilds the pipeline from tokenizer.json's vocabulary and merges),
    bos/eos/pad/unk/mask, BOS added when encoding, and the image tokens the processor reads by name."""
    return {
        "tokenizer_class": spec.tokenizer_class,
        "bos_token": spec.bos_token,
        "eos_token": spec.eos_token,
        "pad_token": spec.pad_token,
        "unk_token": "<unk>",
        "mask_token": "<mask>",
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "spaces_between_special_tokens": False,
        "extra_special_tokens": {
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
        "model_max_length": spec.model_max_length,
        "padding_side": "left",
        "processor_class": spec.vision.processor_class if spec.vision else None,
    }


def _processor_config(spec: FamilySpec) -> dict[str, Any] | None:
    """processor_config.json, for processors whose own settings decide the layout (Gemma 3, InternVL, SmolVLM)."""
    with_config = (Gemma3VisionSpec, InternVLVisionSpec, SmolVLMVisionSpec)
    return spec.vision.processor_config() if isinstance(spec.vision, with_config) else None


def _video_config(spec: FamilySpec) -> dict[str, Any] | None:
    """video_preprocessor_config.json, for processors that load a video processor from its own file (InternVL,
    SmolVLM)."""
    with_video = (InternVLVisionSpec, SmolVLMVisionSpec)
    return spec.vision.video_preprocessor_config() if isinstance(spec.vision, with_video) else None


def write_processor_files(spec: FamilySpec, folder: Path) -> None:
    """Write the processor files of `spec` into an existing `folder`."""
    folder = Path(folder)
    tokenizer = gemma_bpe.gemma_tokenizer() if spec.tokenizer_class == GEMMA_TOKENIZER else bpe.family_tokenizer(spec)
    (folder / "tokenizer.json").write_text(tokenizer.to_str(pretty=True), encoding="utf-8")
    _write_json(folder / "tokenizer_config.json", tokenizer_config(spec))
    (folder / "chat_template.jinja").write_text(chat_template(spec.chat_template), encoding="utf-8")
    if spec.vision:
        _write_json(folder / "preprocessor_config.json", spec.vision.preprocessor_config())
    processor_config = _processor_config(spec)
    if processor_config is not None:
        _write_json(folder / "processor_config.json", processor_config)
    video_config = _video_config(spec)
    if video_config is not None:
        _write_json(folder / "video_preprocessor_config.json", video_config)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
