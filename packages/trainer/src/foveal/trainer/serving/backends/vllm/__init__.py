"""The vLLM backend (the `vllm` extra, CUDA): `VLLMBackend` and the worker extension its engine loads.

Modules: `backend` (the `InferenceBackend` over vLLM's `AsyncLLM`), `launch` (engine arguments from our
config), `mm_inputs` (checked refs -> `TokensPrompt`), `sampling` (sampling settings and outputs),
`logprobs` (vLLM's per-position logprobs -> ours), `worker_extension` (checkpoint-folder weight loads
inside vLLM's workers), `weight_layout` (checkpoint checks from safetensors headers), `weight_broadcast` (the
optional NCCL update routes).

`VLLMBackend` is resolved on first use (PEP 562), so importing this package never imports vllm; only
`weight_layout` and `logprobs` can be used without the extra installed.
"""

from __future__ import annotations

from foveal.configs.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__, {"foveal.trainer.serving.backends.vllm.backend": ("VLLMBackend",)}
)
