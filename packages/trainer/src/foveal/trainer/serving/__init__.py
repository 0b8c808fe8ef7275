"""Inference servers: one HTTP API (FastAPI + uvicorn) over the embedded transformers backend or vLLM.

Public API:
    foveal.trainer.serving.testing.start_server(config: ServeConfig, *, backend=None, cache_root=None)
        -> RunningServer(url: str, token: str, backend, port, control_headers, data_headers, stop())
        A real server on 127.0.0.1 (`[inference].host`), OS-chosen port, background thread; a context manager.
    foveal.trainer.serving.config.ServeConfig       the run config of `foveal serve` (RunConfig + [inference])
    foveal.trainer.serving.backends.InferenceBackend   the protocol every backend implements
    foveal.trainer.serving.app.create_app(backend, AppSettings)   the FastAPI app over any backend
    `foveal serve --config x.toml [--section.key value ...]`        (foveal.trainer.serving.serve)

Wire models: foveal.renderers.inference.wire (token-in/token-out) and foveal.renderers.inference.openai
(`/v1/chat/completions`, `/v1/completions`, `/v1/models`, streamed or not: docs/openai.md). Logprobs are
always those of the raw model distribution (before temperature, top-k, top-p) in fp32, i.e. what the
trainer recomputes.
"""
