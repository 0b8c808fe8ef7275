"""Values that are each valid but impossible together are rejected, naming every key involved."""

from __future__ import annotations

import pytest

from foveal.configs import ConfigError, EvalConfig, RLConfig, RunConfig, SFTConfig, load_config


def keys_of_problems(cls: type[RunConfig], overrides: list[str]) -> list[str]:
    with pytest.raises(ConfigError) as excinfo:
        load_config(cls, overrides=overrides)
    return [problem.key for problem in excinfo.value.problems]


@pytest.mark.parametrize(
    ("cls", "overrides", "key"),
    [
        (SFTConfig, ["--trainer.seq_len", "4096", "--trainer.micro_batch_tokens", "2048"], "trainer.micro_batch_tokens"),
        (RLConfig, ["--trainer.seq_len", "4096", "--trainer.micro_batch_tokens", "2048"], "trainer.micro_batch_tokens"),
        (SFTConfig, ["--trainer.schedule.warmup_steps", "11", "--sft.max_steps", "10"], "trainer.schedule.warmup_steps"),
        (RLConfig, ["--trainer.schedule.warmup_steps", "11", "--rl.max_steps", "10"], "trainer.schedule.warmup_steps"),
        (SFTConfig, ["--trainer.loss.kind", "ppo"], "trainer.loss.kind"),
        (RLConfig, ["--inference.backend", "vllm", "--trainer.device", "cpu"], "inference.backend"),
        (RLConfig, ["--inference.host", "0.0.0.0"], "inference.api_token"),
        (EvalConfig, ["--inference.host", "gpu-node-3"], "inference.api_token"),
        (RLConfig, ["--inference.max_model_len", "4096", "--trainer.seq_len", "2048"], "inference.max_model_len"),
        (RLConfig, ["--orchestrator.max_tokens", "2048", "--inference.max_model_len", "2048"], "orchestrator.max_tokens"),
        (EvalConfig, ["--eval.max_tokens", "4096"], "eval.max_tokens"),
        (RLConfig, ["--orchestrator.rollouts_per_prompt", "1"], "orchestrator.rollouts_per_prompt"),
        (RLConfig, ["--trainer.checkpoint.every_steps", "5"], "trainer.checkpoint.every_steps"),
        (RLConfig, ["--orchestrator.max_async_level", "2"], "trainer.checkpoint.keep_last"),
        (SFTConfig, ["--model.family", "qwen3", "--renderer.family", "qwen2_vl"], "renderer.family"),
        (SFTConfig, ["--multimodal.min_pixels", "200", "--multimodal.max_pixels", "100"], "multimodal.min_pixels"),
    ],
)
def test_impossible_combination_is_rejected_at_its_dotted_key(
    cls: type[RunConfig], overrides: list[str], key: str
) -> None:
    assert keys_of_problems(cls, overrides) == [key]


@pytest.mark.parametrize(
    ("cls", "overrides"),
    [
        (SFTConfig, ["--trainer.seq_len", "4096", "--trainer.micro_batch_tokens", "4096"]),
        (SFTConfig, ["--trainer.schedule.warmup_steps", "10", "--sft.max_steps", "10"]),
        (RLConfig, ["--inference.backend", "vllm", "--trainer.device", "cuda"]),
        (RLConfig, ["--inference.host", "0.0.0.0", "--inference.api_token", "s3cret"]),
        (RLConfig, ["--inference.host", "localhost"]),
        (RLConfig, ["--inference.host", "::1"]),
        (RLConfig, ["--orchestrator.rollouts_per_prompt", "1", "--orchestrator.advantage", "none"]),
        (RLConfig, ["--orchestrator.rollouts_per_prompt", "1", "--orchestrator.advantage", "batch_mean_std"]),
        (RLConfig, ["--orchestrator.max_async_level", "2", "--trainer.checkpoint.keep_last", "3"]),
        (SFTConfig, ["--model.family", "qwen3", "--renderer.family", "generic"]),
        (SFTConfig, ["--renderer.family", "qwen3_vl"]),
    ],
)
def test_neighbouring_valid_combination_is_accepted(cls: type[RunConfig], overrides: list[str]) -> None:
    load_config(cls, overrides=overrides)


def test_all_impossible_combinations_are_reported_together() -> None:
    overrides = ["--inference.host", "10.0.0.2", "--inference.backend", "vllm", "--trainer.device", "cpu"]
    assert keys_of_problems(RLConfig, overrides) == ["inference.backend", "inference.api_token"]


def test_combination_message_names_both_keys_and_the_value() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(SFTConfig, overrides=["--trainer.micro_batch_tokens", "100"])
    assert str(excinfo.value.problems[0]) == "trainer.micro_batch_tokens: at least trainer.seq_len (2048) (got 100)"


def test_rl_loss_defaults_to_an_rl_objective_even_with_a_partial_loss_table() -> None:
    config = load_config(RLConfig, overrides=["--trainer.loss.clip_low", "0.1"])
    assert (config.trainer.loss.kind, config.trainer.loss.clip_low) == ("importance_sampling", 0.1)
    assert load_config(SFTConfig, overrides=["--trainer.loss.clip_low", "0.1"]).trainer.loss.kind == "sft"


def test_direct_construction_rejects_impossible_combinations_too() -> None:
    with pytest.raises(ValueError, match=r"trainer\.loss\.kind"):
        SFTConfig.model_validate({"trainer": {"loss": {"kind": "gspo"}}})
