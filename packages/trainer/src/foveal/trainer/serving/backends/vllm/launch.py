"""Our config -> vLLM's engine arguments, and starting the engine (`AsyncLLM`, its own processes on CUDA).

Every setting that changes what a request means is pinned here rather than left to vLLM's defaults:
logprobs of the raw model distribution (what the trainer recomputes), the image processor's pixel
bounds (the ones the API process checks refs against, so vLLM expands placeholders to the same grids),
our worker extension (checkpoint-folder weight loads), and vLLM's NCCL weight-transfer engine (the
optional broadcast path). `[model].attn_implementation` is a transformers setting; vLLM picks its own
attention kernels.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import snapshot_download
from vllm.config import WeightTransferConfig
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.v1.engine.async_llm import AsyncLLM

from foveal.renderers.layout import AnyLayoutSpec, LayoutSpec
from foveal.trainer.serving.backends.vllm.worker_extension import WORKER_EXTENSION
from foveal.trainer.serving.config import ServeConfig
from foveal.trainer.serving.weights import checkpoint_files
from foveal.trainer.model.loading import ModelLoadError

MODEL_FILES = ("*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.py")
"""What a hub model needs locally: configs, weights, tokenizer and processor files (no .bin/.pt copies)."""


def local_model_folder(source: str) -> Path:
    """A local folder as it is; a hub name as its snapshot in the Hugging Face cache (fetched if missing).

    The engine, the processor and the weight-layout check all read this one folder, so they cannot
    disagree about which files the model is.
    """
    folder = Path(source)
    return folder if folder.is_dir() else Path(snapshot_download(source, allow_patterns=list(MODEL_FILES)))


def check_vllm_loadable(folder: Path) -> None:
    """vLLM loads every `*.safetensors` of a local folder without an index, so a trainer checkpoint's
    `optimizer.safetensors` would be read as weights: refuse such a folder with the way around it."""
    extra = sorted(path.name for path in set(folder.glob("*.safetensors")) - set(checkpoint_files(folder)))
    if extra:
        expected = (
            "a folder whose only safetensors are model weights (vLLM would load these too); serve the base "
            "model and load this checkpoint with /control/update_weights"
        )
        raise ModelLoadError("model.name_or_path", f"{folder} (with {', '.join(extra)})", expected)


VLLM_LAYOUT_FAMILIES = frozenset({"qwen2_vl", "qwen3_vl"})
"""The layout families whose prompts `mm_inputs` hands vLLM in the form its prompt update expects."""


def engine_args(config: ServeConfig, model_folder: Path, layout: AnyLayoutSpec | None) -> AsyncEngineArgs:
    """vLLM's arguments for serving `model_folder` under `config`; `layout` is the served image layout, if any."""
    inference = config.inference
    return AsyncEngineArgs(
        model=str(model_folder),
        dtype=config.model.dtype,
        trust_remote_code=config.model.trust_remote_code,
        tensor_parallel_size=inference.tensor_parallel,
        data_parallel_size=inference.data_parallel,
        max_model_len=inference.max_model_len,
        max_num_seqs=inference.max_batch_size,
        # vLLM counts running and waiting requests across all replicas against this limit.
        max_num_queued_reqs=inference.max_batch_size * inference.data_parallel + inference.max_queued_requests,
        enable_prefix_caching=True,
        logprobs_mode="raw_logprobs",
        worker_extension_cls=WORKER_EXTENSION,
        weight_transfer_config=WeightTransferConfig(backend="nccl"),
        **_multimodal_args(config, layout),
    )


def start_engine(args: AsyncEngineArgs) -> AsyncLLM:
    """Start vLLM's engine processes and return the client; blocks until the model is loaded."""
    return AsyncLLM.from_engine_args(args)


def _multimodal_args(config: ServeConfig, layout: AnyLayoutSpec | None) -> dict[str, object]:
    """Pixel bounds equal to the checked layout's, and room (and profiling) for only as many images as a
    sample may carry; nothing for a text-only model.

    Only the Qwen-VL layouts: the prompt form handed to vLLM (`mm_inputs.collapse_placeholders`, one placeholder
    per image that vLLM's prompt update expands again) is theirs. vLLM's Gemma 3 update replaces
    `<start_of_image>` with the blank lines, soft tokens and end-of-image around it, which that form does not
    give it, so Gemma 3 is refused here, before the engine starts, and served by the transformers backend.
    GLM-4.1V has a Qwen-shaped spec but its own resize rule and vLLM model; that path has not been run against
    vLLM (not installed where it was added), so it is refused the same way until it is.
    """
    if layout is None:
        return {}
    if not isinstance(layout, LayoutSpec) or layout.family not in VLLM_LAYOUT_FAMILIES:
        expected = f"transformers: the vLLM backend serves the Qwen-VL image layouts, not {layout.family}"
        raise ModelLoadError("inference.backend", "vllm", expected)
    return {
        "mm_processor_kwargs": {"size": {"shortest_edge": layout.min_pixels, "longest_edge": layout.max_pixels}},
        "limit_mm_per_prompt": {"image": config.renderer.max_images_per_sample, "video": 0},
    }
