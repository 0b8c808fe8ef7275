"""The `[inference]` section: the OpenAI-compatible servers that sample rollouts."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints

from foveal.configs.http import HttpLimits
from foveal.configs.router import RouterConfig


class InferenceConfig(BaseModel):
    """Inference servers: backend, where they listen, how they are protected, and how large they are."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["transformers", "vllm"] = Field(
        default="transformers", description="Engine behind the server; vllm needs CUDA."
    )
    host: str = Field(default="127.0.0.1", min_length=1, description="Address the server binds; loopback by default.")
    port: int = Field(
        default=8000, ge=0, le=65535, description="Port of the first server (more count up); 0 lets the OS pick one."
    )
    api_token: SecretStr | None = Field(
        default=None, description="Bearer token clients must send; required off loopback. Never printed."
    )
    tensor_parallel: int = Field(default=1, ge=1, description="GPUs per model replica (tensor parallel).")
    data_parallel: int = Field(default=1, ge=1, description="Model replicas per server (data parallel).")
    max_batch_size: int = Field(default=8, ge=1, description="Most sequences one server decodes at once.")
    served_model_name: tuple[Annotated[str, StringConstraints(min_length=1, max_length=256)], ...] = Field(
        default=(),
        description="More names OpenAI clients may send as `model` (the model's own name always works); "
        "`GET /v1/models` lists them after it.",
    )
    max_model_len: int = Field(default=2048, ge=1, description="Longest prompt + completion, in tokens.")
    num_servers: int = Field(default=1, ge=1, description="Number of servers behind the router.")
    max_restarts: int = Field(
        default=3,
        ge=0,
        description="Times `foveal rl` restarts each of its servers that exits (the router brings it to the newest "
        "weights before it serves again); 0: a server that exits ends the run.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where the embedded transformers backend runs; auto picks CUDA when present."
    )
    request_timeout_s: float = Field(
        default=300.0, gt=0, description="Longest a request waits to start (e.g. while paused) before 503 unavailable."
    )
    max_queued_requests: int = Field(default=4096, ge=1, description="Requests waiting to start; more get 429.")
    max_request_bytes: int = Field(
        default=64 * 2**20, ge=1024, description="Largest request body accepted, in bytes (413 beyond)."
    )
    http: HttpLimits = Field(default_factory=HttpLimits, description="Client timeouts and the connection cap.")
    prompt_cache_entries: int = Field(
        default=16, ge=0, description="Prefilled prompts kept for reuse (exact prompt match); 0 disables the cache."
    )
    router: RouterConfig = Field(default_factory=RouterConfig, description="The router in front of the servers.")
