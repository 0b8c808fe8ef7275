"""The JSON half of the Tinker wire: the requests tinker 0.38 posts and the answers it parses.

Field names and shapes follow the SDK's own types (`tinker/types/*.py`); requests forbid unknown fields,
so a misspelled or unsupported field is a 422 naming it rather than a silently ignored setting. Prompts
reuse `foveal.renderers.chunks.ModelInput`, which has exactly the SDK's chunk JSON (text, inline image,
image asset pointer). Answers carry only what the SDK reads.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from foveal.renderers.chunks import ModelInput


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class Answer(BaseModel):
    model_config = ConfigDict(frozen=True, protected_namespaces=())


# -- session ----------------------------------------------------------------------------------------


class ClientConfigRequest(Request):
    sdk_version: str


class ClientConfigResponse(Answer):
    """Feature flags the SDK reads once: API-key auth (no JWT exchange), plain httpx, no zstd bodies, per-request
    future polling, client-side custom losses, and forward_backward chunks that fit our body limit."""

    pjwt_auth_enabled: bool = False
    credential_default_source: str = "api_key"
    use_pyqwest_transport: bool = False
    proto_compress_fwdbwd: bool = False
    sample_use_retrieve_futures: bool = False
    custom_loss_server_side: bool = False
    sample_join_sampling_session: bool = False
    fwdbwd_max_chunk_bytes_count: int


class DynamicConfigResponse(Answer):
    refresh_interval_sec: int = 300
    sample_cancel_enabled: bool = False


class CreateSessionRequest(Request):
    type: Literal["create_session"] = "create_session"
    tags: list[str] = Field(max_length=64)
    user_metadata: dict[str, Any] | None = None
    sdk_version: str
    project_id: str | None = None
    display_name: str | None = None


class CreateSessionResponse(Answer):
    type: Literal["create_session"] = "create_session"
    session_id: str


class SessionHeartbeatRequest(Request):
    type: Literal["session_heartbeat"] = "session_heartbeat"
    session_id: str


class SessionHeartbeatResponse(Answer):
    type: Literal["session_heartbeat"] = "session_heartbeat"


class FinishSessionRequest(Request):
    reason: dict[str, str]
    detail: str | None = None


class TelemetryResponse(Answer):
    status: Literal["accepted"] = "accepted"


class HealthResponse(Answer):
    status: Literal["ok"] = "ok"


class SupportedModel(Answer):
    model_name: str
    max_context_length: int
    trainable: bool = True
    sampleable: bool = True


class ServerCapabilities(Answer):
    supported_models: list[SupportedModel]


# -- training ---------------------------------------------------------------------------------------


class LoraConfig(Request):
    rank: int = Field(ge=1, le=1024)
    seed: int | None = None
    train_unembed: bool = True
    train_mlp: bool = True
    train_attn: bool = True


class OptimizerConfig(Request):
    type: Literal["adamw"] = "adamw"


class CreateModelRequest(Request):
    type: Literal["create_model"] = "create_model"
    session_id: str
    model_seq_id: int = Field(ge=0)
    base_model: str
    user_metadata: dict[str, Any] | None = None
    lora_config: LoraConfig | None = None
    optimizer_config: OptimizerConfig = OptimizerConfig()


class CreateModelResponse(Answer):
    type: Literal["create_model"] = "create_model"
    model_id: str


class GetInfoRequest(Request):
    type: Literal["get_info"] = "get_info"
    model_id: str


class ModelData(Answer):
    arch: str | None = None
    model_name: str
    tokenizer_id: str


class GetInfoResponse(Answer):
    type: Literal["get_info"] = "get_info"
    model_data: ModelData
    model_id: str
    is_lora: bool
    lora_rank: int | None = None
    model_name: str


class AdamParams(Request):
    learning_rate: float = Field(default=1e-4, ge=0)
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.95, ge=0, lt=1)
    eps: float = Field(default=1e-12, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    grad_clip_norm: float = Field(default=0.0, ge=0)


class OptimStepRequest(Request):
    type: Literal["optim_step"] = "optim_step"
    adam_params: AdamParams = Field(validation_alias=AliasChoices("adam_params", "optim_params"))
    model_id: str
    seq_id: int | None = None


class OptimStepResponse(Answer):
    metrics: dict[str, float]


class SaveWeightsForSamplerRequest(Request):
    type: Literal["save_weights_for_sampler"] = "save_weights_for_sampler"
    model_id: str
    path: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    sampling_session_seq_id: int | None = None
    kind: Literal["snapshot"] = "snapshot"
    seq_id: int | None = None
    ttl_seconds: int | None = None
    user_metadata: dict[str, str] | None = None


class SaveWeightsForSamplerResponse(Answer):
    type: Literal["save_weights_for_sampler"] = "save_weights_for_sampler"
    path: str | None = None
    sampling_session_id: str | None = None


# -- sampling ---------------------------------------------------------------------------------------


class CreateSamplingSessionRequest(Request):
    type: Literal["create_sampling_session"] = "create_sampling_session"
    session_id: str
    sampling_session_seq_id: int = Field(ge=0)
    base_model: str | None = None
    model_path: str | None = None


class CreateSamplingSessionResponse(Answer):
    type: Literal["create_sampling_session"] = "create_sampling_session"
    sampling_session_id: str


class GetSamplerResponse(Answer):
    sampler_id: str
    base_model: str
    model_path: str | None = None


class SamplingParams(Request):
    max_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = Field(default=None, ge=0)
    stop: str | list[str] | list[int] | None = None
    temperature: float = Field(default=1.0, ge=0)
    top_k: int = Field(default=-1, ge=-1)
    top_p: float = Field(default=1.0, gt=0, le=1)


class SampleRequest(Request):
    type: Literal["sample"] = "sample"
    num_samples: int = Field(default=1, ge=1, le=64)
    prompt: ModelInput
    sampling_params: SamplingParams
    base_model: str | None = None
    model_path: str | None = None
    sampling_session_id: str | None = None
    seq_id: int | None = None
    prompt_logprobs: bool | None = None
    topk_prompt_logprobs: Literal[0] = 0
    topk_sample_logprobs: Literal[0] = 0
    target_prompt_logprobs: None = None
    prompt_alt_tokens_k: Literal[0] = 0
    prompt_logprobs_last_n: int | None = Field(default=None, ge=1)
    record_stability_info: Literal[False] | None = None


# -- futures ----------------------------------------------------------------------------------------


class UntypedAPIFuture(Answer):
    request_id: str
    model_id: str | None = None
    sample_sequence_ids: list[str] | None = None


class FutureRetrieveRequest(Request):
    request_id: str = Field(max_length=128)
    allow_metadata_only: bool = False


class TryAgainResponse(Answer):
    type: Literal["try_again"] = "try_again"
    request_id: str
    queue_state: Literal["active"] = "active"


class RequestFailedResponse(Answer):
    error: str
    category: Literal["user", "server"]
