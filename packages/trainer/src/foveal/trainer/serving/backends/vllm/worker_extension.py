"""What vLLM mixes into each of its GPU workers (`worker_extension_cls`), called through `collective_rpc`.

`foveal_load_weights` reloads the served model in place from a trainer checkpoint folder. It streams the
folder's model files (`checkpoint_files`: the index's shards or `model.safetensors`, never the optimizer
and RNG files beside them) through vLLM's own safetensors iterator into the worker's `reload_weights`,
which maps checkpoint names onto vLLM's fused and sharded parameters (`model.load_weights`), re-runs the
post-load processing and drops the encoder and multimodal caches. Every tensor-parallel worker reads the
whole files and keeps its shard. The API process has checked names and shapes against the served
checkpoint before calling (`weight_layout`); the count returned lets it confirm every tensor was fed.

Path-based `reload_weights(weights_path=...)` is not used: vLLM's loader globs `*.safetensors`, which in
a trainer checkpoint includes `optimizer.safetensors`. The NCCL path needs no method here: vLLM's own
weight-transfer engine receives broadcasts (`weight_transfer_config`, see `engine_args`).

vLLM refuses extension attributes that clash with the Worker's, hence the `foveal_` prefix.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from vllm.model_executor.model_loader.weight_utils import safetensors_weights_iterator

from foveal.trainer.serving.weights import checkpoint_files

if TYPE_CHECKING:
    from vllm.config import VllmConfig

WORKER_EXTENSION = f"{__name__}.FovealWorkerExtension"
"""The qualified name vLLM's `worker_extension_cls` takes."""


class FovealWorkerExtension:
    """Mixed into vLLM's `Worker`, so `self` is the worker: it has `vllm_config` and `reload_weights`."""

    if TYPE_CHECKING:
        vllm_config: VllmConfig

        def reload_weights(
            self, weights_iterator: Iterator[tuple[str, torch.Tensor]], is_checkpoint_format: bool
        ) -> None: ...

    def foveal_load_weights(self, folder: str) -> int:
        """Load the checkpoint in `folder` into the served model in place; returns how many tensors it fed."""
        files = [str(path) for path in checkpoint_files(Path(folder))]
        strategy = self.vllm_config.load_config.safetensors_load_strategy
        fed: list[str] = []

        def weights() -> Iterator[tuple[str, torch.Tensor]]:
            for name, tensor in safetensors_weights_iterator(
                files, use_tqdm_on_load=False, safetensors_load_strategy=strategy
            ):
                fed.append(name)
                yield name, tensor

        self.reload_weights(weights_iterator=weights(), is_checkpoint_format=True)
        return len(fed)
