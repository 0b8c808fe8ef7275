"""`foveal serve-tinker`: the `[tinker]` section of a service that speaks the Tinker SDK's HTTP API.

One base model (`[model]`) is trained and sampled; images go through `[renderer]` and `[multimodal]`
(asset pointers are read only under `[multimodal].allowed_image_roots` / `allowed_url_schemes`). The API
key is never a config value: the config names where to read it (an environment variable or a file), so
a dumped config never carries the secret.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from foveal.configs.http import HttpLimits
from foveal.configs.runs import RunConfig

DEFAULT_KEY_ENV = "FOVEAL_TINKER_API_KEY"


class TinkerServiceSection(BaseModel):
    """Where the service listens, how it authenticates, how it trains and how much it accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(default="127.0.0.1", min_length=1, description="Address to bind; loopback by default.")
    port: int = Field(default=8100, ge=0, le=65535, description="Port to bind; 0 lets the OS pick one.")
    api_key_env: str = Field(
        default=DEFAULT_KEY_ENV, min_length=1, description="Environment variable holding the API key (clients send it as X-API-Key)."
    )
    api_key_file: Path | None = Field(default=None, description="File holding the API key; used instead of the env var.")
    training_mode: Literal["lora", "full"] = Field(
        default="lora", description="lora trains the adapters the client asks for; full trains every weight."
    )
    lora_alpha: float = Field(default=32.0, gt=0, description="LoRA scale numerator: updates are scaled by alpha/rank.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Where models run; auto picks CUDA.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="Training matmul precision: auto is bf16 autocast on CUDA, fp32 on CPU."
    )
    micro_batch_tokens: int = Field(
        default=4096, ge=16, description="Most tokens packed into one forward pass (longer datums are refused)."
    )
    loss_chunk_tokens: int = Field(
        default=1024,
        ge=0,
        description="Tokens per chunk of the LM head + log-probabilities, so a row's [tokens, vocab] logits never "
        "exist at once; 0 computes the full logits (also used when the unembedding carries a LoRA).",
    )
    max_training_models: int = Field(default=2, ge=1, description="Training clients (models) held at once.")
    max_loaded_samplers: int = Field(default=2, ge=1, description="Sampler checkpoints kept loaded (least recent evicted).")
    max_model_len: int = Field(default=4096, ge=16, description="Longest prompt + completion a sampler serves.")
    default_max_tokens: int = Field(default=256, ge=1, description="Tokens sampled when a request sets no max_tokens.")
    max_request_bytes: int = Field(
        default=64 * 2**20, ge=1024, description="Largest request body accepted, in bytes (413 beyond)."
    )
    http: HttpLimits = Field(default_factory=HttpLimits, description="Client timeouts and the connection cap.")
    future_wait_s: float = Field(
        default=20.0, gt=0, le=40, description="How long retrieve_future waits for a result before 'try again'."
    )
    checkpoint_dir: Path | None = Field(
        default=None, description="Where sampler weights are saved; default `<run dir>/tinker`."
    )

    def checkpoints(self, run_dir: Path) -> Path:
        """The folder sampler weights are written to."""
        return self.checkpoint_dir if self.checkpoint_dir is not None else run_dir / "tinker"


class TinkerServiceConfig(RunConfig):
    """The served model, its renderer and image store, and `[tinker]`."""

    tinker: TinkerServiceSection = Field(default_factory=TinkerServiceSection, description="The service.")
