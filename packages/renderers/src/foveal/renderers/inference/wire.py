"""Wire models of Foveal's inference API, shared by the servers (trainer), the router and every client.

Token-in/token-out: a request carries prompt token ids with placeholder runs already expanded and one
`mmraw:` ref per image, in prompt order (docs/contract.md section 2). Responses carry sampled token ids and
their logprobs, so a trainer never re-tokenizes what the model produced. Every model forbids unknown
fields, so a typo in a client is a 422 naming the field rather than a silently ignored setting.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationInfo, field_validator

MAX_STOP_STRINGS = 16
MAX_STOP_STRING_CHARS = 256
MAX_STOP_TOKEN_IDS = 64
MAX_SAMPLES_PER_REQUEST = 64
MAX_TOKENIZE_CHARS = 131_072
"""Text one tokenize call takes: tokenization costs CPU and memory per character on the server."""
MAX_DETOKENIZE_IDS = 131_072
MAX_TOP_LOGPROBS = 20
"""Most alternatives a sampled token reports (OpenAI's limit for `top_logprobs`)."""

TokenId = StrictInt
"""A token id is a JSON integer: not `true`, not `"5"`, not `5.0` (its range is the served vocabulary's)."""
StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_STRING_CHARS)]
Alternative = tuple[int, float]
"""One of the most likely tokens at a sampled position: (token id, logprob under the raw model distribution)."""


class WireModel(BaseModel):
    """Base of every wire model: unknown fields are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SamplingParams(WireModel):
    """How to sample; the defaults are plain ancestral sampling of up to 256 tokens."""

    temperature: float = Field(default=1.0, ge=0.0, le=100.0, description="0 means greedy.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus mass kept; 1 keeps all.")
    top_k: int = Field(default=0, ge=0, description="Most likely tokens kept; 0 keeps all.")
    max_tokens: int = Field(default=256, ge=1, description="Most tokens sampled per completion.")
    stop: tuple[StopString, ...] = Field(
        default=(), max_length=MAX_STOP_STRINGS, description="Strings that end a completion (kept in its ids)."
    )
    stop_token_ids: tuple[TokenId, ...] = Field(
        default=(),
        max_length=MAX_STOP_TOKEN_IDS,
        description="Extra token ids that end a completion, besides the model's own stop tokens.",
    )
    ignore_eos: bool = Field(
        default=False,
        description="Sample past the model's own stop tokens (fixed-length runs); stop_token_ids and stop still apply.",
    )
    seed: int | None = Field(default=None, ge=0, description="Makes sampling reproducible per request.")
    n: int = Field(default=1, ge=1, le=MAX_SAMPLES_PER_REQUEST, description="Completions sampled per prompt.")
    logprobs: bool = Field(default=True, description="Return the logprob of each sampled token.")
    top_logprobs: int = Field(
        default=0,
        ge=0,
        le=MAX_TOP_LOGPROBS,
        description="Also return, per sampled token, this many most likely tokens of the raw distribution.",
    )

    @field_validator("top_logprobs")
    @classmethod
    def _alternatives_need_logprobs(cls, value: int, info: ValidationInfo) -> int:
        if value > 0 and not info.data.get("logprobs", True):
            raise ValueError("top_logprobs > 0 needs logprobs: true")
        return value


class GenerateRequest(WireModel):
    """Sample completions of `prompt_token_ids`; `image_refs` are `mmraw:` strings, one per image."""

    prompt_token_ids: tuple[TokenId, ...] = Field(min_length=1)
    image_refs: tuple[str, ...] = ()
    sampling: SamplingParams = SamplingParams()
    request_id: str | None = Field(
        default=None, max_length=128, description="Caller's id, echoed back; the server makes one when absent."
    )


FinishReason = Literal["stop", "length"]


class Completion(WireModel):
    """One sampled continuation; `logprobs[i]` is the logprob of `token_ids[i]` under the serving weights."""

    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...] | None = None
    top_logprobs: tuple[tuple[Alternative, ...], ...] | None = Field(
        default=None,
        exclude_if=lambda value: value is None,  # absent unless asked: older clients forbid unknown fields
        description="With sampling.top_logprobs: per sampled token, the most likely tokens, best first "
        "(never a suppressed placeholder; impossible tokens, logprob -inf, left out).",
    )
    finish_reason: FinishReason
    text: str = Field(description="The completion decoded, special tokens kept.")


class GenerateResponse(WireModel):
    """Completions in sampling order, and the weight version that produced them."""

    request_id: str
    model: str
    weight_version: int
    prompt_tokens: int
    completions: tuple[Completion, ...]


class TokenizeRequest(WireModel):
    """Text to token ids with the served tokenizer (no chat template, no special tokens added)."""

    text: str = Field(max_length=MAX_TOKENIZE_CHARS)


class TokenizeResponse(WireModel):
    token_ids: tuple[int, ...]


class DetokenizeRequest(WireModel):
    token_ids: tuple[TokenId, ...] = Field(max_length=MAX_DETOKENIZE_IDS)


class DetokenizeResponse(WireModel):
    text: str


PauseMode = Literal["abort", "wait", "keep"]
"""abort: in-flight requests end with 503 `aborted` (clients retry); wait: pause once they finish;
keep: freeze them where they are and continue them after resume. New requests wait for resume."""


class PauseRequest(WireModel):
    mode: PauseMode = "wait"


class UpdateWeightsRequest(WireModel):
    """Load new weights from a safetensors checkpoint folder the server can read; `version` is recorded."""

    path: str = Field(min_length=1, description="Folder with *.safetensors (and an optional index).")
    version: int = Field(ge=0, description="Weight version the server reports after the update.")


ServerState = Literal["serving", "paused", "updating"]


class ControlResponse(WireModel):
    """The server's state after a control request."""

    state: ServerState
    weight_version: int
    in_flight: int


class ServerInfo(WireModel):
    """What a client needs to render prompts for this server and check it serves the expected model."""

    model: str
    family: str
    backend: Literal["transformers", "vllm", "router"]
    max_model_len: int
    weight_version: int
    state: ServerState
    image_token_id: int | None
    stop_token_ids: tuple[int, ...]
    layout_fingerprint: str | None = Field(description="Fingerprint of the served image processor, if any.")
    served_model_names: tuple[str, ...] = Field(
        default=(), description="More names the server answers to as OpenAI `model` (`[inference].served_model_name`)."
    )

    def model_names(self) -> tuple[str, ...]:
        """Every name a request may give as `model`: the model's own first."""
        return (self.model, *(name for name in self.served_model_names if name != self.model))


class Health(WireModel):
    status: Literal["ok"] = "ok"
    state: ServerState
    in_flight: int


ErrorCode = Literal[
    "invalid_request", "invalid_ref", "not_found", "unauthorized", "too_long", "timeout", "aborted", "overloaded",
    "unavailable", "internal",
]  # fmt: skip


class ErrorDetail(WireModel):
    """Why a request failed: `field` is the dotted name of the offending input, when there is one."""

    code: ErrorCode
    message: str
    field: str | None = None


class ErrorBody(WireModel):
    """The body of every 4xx/5xx answer; `aborted` (503) and `unavailable` (503) are safe to retry."""

    error: ErrorDetail


class Endpoints:
    """Paths of the API; data plane under /v1, control plane under /control (bearer token required)."""

    GENERATE = "/v1/generate"
    CHAT_COMPLETIONS = "/v1/chat/completions"
    TOKENIZE = "/v1/tokenize"
    DETOKENIZE = "/v1/detokenize"
    INFO = "/v1/info"
    MODELS = "/v1/models"
    HEALTH = "/health"
    PAUSE = "/control/pause"
    RESUME = "/control/resume"
    UPDATE_WEIGHTS = "/control/update_weights"
    RESET_PREFIX_CACHE = "/control/reset_prefix_cache"


SESSION_HEADER = "X-Session-ID"
RETRYABLE_CODES: frozenset[str] = frozenset({"aborted", "unavailable"})
