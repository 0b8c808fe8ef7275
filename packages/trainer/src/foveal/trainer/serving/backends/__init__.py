"""Inference backends behind the one HTTP API: `transformers` (embedded, CPU or GPU) and `vllm` (CUDA)."""

from foveal.trainer.serving.backends.base import InferenceBackend

__all__ = ["InferenceBackend"]
