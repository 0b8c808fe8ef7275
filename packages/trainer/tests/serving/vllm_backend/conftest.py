"""Fixtures and stand-ins for the vLLM backend tests, which run on CPU with the `vllm` extra installed:

    UV_PROJECT_ENVIRONMENT=<venv> uv run --locked --all-packages --extra vllm pytest packages/trainer/tests/serving/vllm_backend

Without vllm every test module here skips itself. Real in these tests: vLLM's config from our engine arguments, vLLM's
own input renderer and `InputProcessor` (image processing, placeholder expansion and request validation: what
`AsyncLLM` runs in the API process), vLLM's sampling and output classes, vLLM models built and loaded on CPU
by vLLM's loader, our worker extension reloading them in place, and the shared HTTP app over `VLLMBackend` on a
loopback socket. Stood in for: vLLM's engine core (the separate processes behind `AsyncLLM`'s ZMQ client, which
sample on CUDA) by `ScriptedEngine`, and vLLM's GPU `Worker` (it cannot be built without CUDA) by `CpuWorker`,
which keeps its `reload_weights` delegation. vLLM picks its CPU platform here, set before vLLM first resolves
its platform, in the test processes only.
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("vllm") is not None:  # without vllm, every test module here skips itself
    from .support import (  # noqa: F401 (fixtures, found by pytest in this namespace)
        checks,
        client_renderer,
        vllm_models,
        vlm_config,
        vlm_root,
    )
