"""Cross-section checks: values that are each valid but cannot work together.

Each check is a pure function of the sections it reads and returns problems keyed by the run-level
dotted path, so a run config lists all of them at once.
"""

from __future__ import annotations

import ipaddress

from foveal.configs.errors import Problem
from foveal.configs.inference import InferenceConfig
from foveal.configs.model import ModelConfig
from foveal.configs.orchestrator import OrchestratorConfig
from foveal.configs.renderer import RendererConfig
from foveal.configs.trainer import TrainerConfig


def is_loopback(host: str) -> bool:
    """Whether `host` is only reachable from this machine (an unprotected server is then acceptable)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def families_agree(model: ModelConfig, renderer: RendererConfig) -> list[Problem]:
    """A renderer family other than `generic` must match an explicit model family."""
    chosen, declared = renderer.family, model.family
    if chosen in (None, "generic") or declared in ("auto", chosen):
        return []
    return [Problem("renderer.family", f"unset, 'generic' or model.family ({declared!r})", got=repr(chosen))]


def micro_batch_holds_a_sequence(trainer: TrainerConfig) -> list[Problem]:
    """A packed sequence is never split, so a micro-batch must hold at least one."""
    if trainer.micro_batch_tokens >= trainer.seq_len:
        return []
    expected = f"at least trainer.seq_len ({trainer.seq_len})"
    return [Problem("trainer.micro_batch_tokens", expected, got=str(trainer.micro_batch_tokens))]


def warmup_within_run(trainer: TrainerConfig, max_steps: int, steps_key: str) -> list[Problem]:
    """Warmup longer than the run means the peak learning rate is never reached."""
    warmup = trainer.schedule.warmup_steps
    if warmup <= max_steps:
        return []
    return [Problem("trainer.schedule.warmup_steps", f"at most {steps_key} ({max_steps})", got=str(warmup))]


def sft_loss_for_sft_data(trainer: TrainerConfig) -> list[Problem]:
    """RL objectives need advantages and sampling logprobs, which SFT data does not have."""
    if trainer.loss.kind == "sft":
        return []
    return [Problem("trainer.loss.kind", "'sft' in an SFT run", got=repr(trainer.loss.kind))]


def rl_checkpoints_every_step(trainer: TrainerConfig) -> list[Problem]:
    """Each RL step's checkpoint is the next policy the servers load; skipping steps would stall the rollouts."""
    if trainer.checkpoint.every_steps == 1:
        return []
    expected = "1 in an RL run (every step's checkpoint is the next policy)"
    return [Problem("trainer.checkpoint.every_steps", expected, got=str(trainer.checkpoint.every_steps))]


def servers_can_still_load_kept_checkpoints(trainer: TrainerConfig, orchestrator: OrchestratorConfig) -> list[Problem]:
    """The trainer runs at most max_async_level steps past the weights the orchestrator is loading, so keeping
    that many checkpoints and one more means a checkpoint is never deleted while the servers load it."""
    needed = orchestrator.max_async_level + 1
    if trainer.checkpoint.keep_last >= needed:
        return []
    expected = f"at least orchestrator.max_async_level + 1 ({needed})"
    return [Problem("trainer.checkpoint.keep_last", expected, got=str(trainer.checkpoint.keep_last))]


def vllm_needs_cuda(inference: InferenceConfig, trainer: TrainerConfig) -> list[Problem]:
    """The vLLM engine runs on CUDA only, so it cannot share a CPU-only run."""
    if inference.backend != "vllm" or trainer.device != "cpu":
        return []
    return [Problem("inference.backend", "'transformers' when trainer.device is 'cpu'", got="'vllm'")]


def remote_server_needs_token(inference: InferenceConfig) -> list[Problem]:
    """A server reachable from other machines must require a bearer token."""
    if inference.api_token is not None or is_loopback(inference.host):
        return []
    expected = f"a token when inference.host ({inference.host!r}) is not loopback"
    return [Problem("inference.api_token", expected, got="None")]


def rollouts_fit_in_sequence(inference: InferenceConfig, trainer: TrainerConfig) -> list[Problem]:
    """A rollout longer than seq_len is rejected by packing, so the server must not produce one."""
    if inference.max_model_len <= trainer.seq_len:
        return []
    expected = f"at most trainer.seq_len ({trainer.seq_len}) so every rollout can be trained on"
    return [Problem("inference.max_model_len", expected, got=str(inference.max_model_len))]


def completion_fits_in_context(max_tokens: int, key: str, inference: InferenceConfig) -> list[Problem]:
    """The prompt needs at least one token of the context, so completions must be shorter than it."""
    if max_tokens < inference.max_model_len:
        return []
    return [Problem(key, f"less than inference.max_model_len ({inference.max_model_len})", got=str(max_tokens))]


def groups_can_normalize(orchestrator: OrchestratorConfig) -> list[Problem]:
    """Group-relative advantages of a group of one are always zero: nothing would be learned (the batch kind
    compares a rollout with the whole step instead)."""
    if orchestrator.advantage in ("none", "batch_mean_std") or orchestrator.rollouts_per_prompt >= 2:
        return []
    expected = f"at least 2 when orchestrator.advantage is {orchestrator.advantage!r}"
    return [Problem("orchestrator.rollouts_per_prompt", expected, got=str(orchestrator.rollouts_per_prompt))]
