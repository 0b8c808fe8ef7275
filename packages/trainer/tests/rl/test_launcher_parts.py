"""The pieces of `foveal rl` that need no model: GPU plans, private config files, run-folder checks, eval timing."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from foveal.configs import RLConfig, load_config
from foveal.configs.cli import main
from foveal.configs.errors import ConfigError
from foveal.trainer.runs.layout import CHECKPOINT_PREFIX
from foveal.trainer.rl.launcher.command import blind_config, check_run_folder, from_warm_start, resolved, trainer_argv
from foveal.trainer.rl.launcher.warmup import sft_config, warmup_images
from foveal.trainer.rl.launcher.configs import launch_token, write_private_toml
from foveal.trainer.rl.launcher.resources import DevicePlan, ResourceError, plan_gpus
from foveal.trainer.rl.orchestrator.evaluation import eval_due
from foveal.trainer.rl.orchestrator.resume import RunFolderError, first_unpublished_step
from foveal.trainer.runs.rollouts import batch_path
from foveal.trainer.runs.meta import RL_BOUND_KEYS, ensure_run_meta


def rl_config(tmp_path: Path, *overrides: str) -> RLConfig:
    return load_config(RLConfig, [], ["--logging.run_dir", str(tmp_path / "run"), *overrides])


def test_gpus_go_to_the_servers_first_and_the_rest_to_the_trainer() -> None:
    assert plan_gpus(0, 1, 1) is None
    assert plan_gpus(1, 2, 1) == DevicePlan(servers=((0,), (0,)), trainer=(0,))
    assert plan_gpus(8, 2, 2) == DevicePlan(servers=((0, 1), (2, 3)), trainer=(4, 5, 6, 7))
    with pytest.raises(ResourceError, match="leaves none of this machine's 4 for the trainer"):
        plan_gpus(4, 2, 2)
    assert trainer_argv(Path("rl.toml"), None) == ["rl-trainer", "--config", "rl.toml"]
    several = trainer_argv(Path("rl.toml"), DevicePlan(servers=((0,),), trainer=(1, 2)))
    assert "torch.distributed.run" in several and "--nproc-per-node=2" in several and several[-3:][0] == "rl-trainer"


def test_child_configs_are_private_and_load_back_with_the_token(tmp_path: Path) -> None:
    config = rl_config(tmp_path, "--rl.max_steps", "7")
    token = launch_token(config)
    assert len(token.get_secret_value()) >= 32 and launch_token(config) != token  # fresh per launch
    path = write_private_toml(tmp_path / "launch" / "rl.toml", config, {("inference", "api_token"): token})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_config(RLConfig, [path], [])
    assert loaded.inference.api_token == token and loaded.rl.max_steps == 7
    configured = rl_config(tmp_path, "--inference.api_token", "s3cret-token")
    assert launch_token(configured) == SecretStr("s3cret-token")


def test_connect_needs_endpoints_and_starting_servers_refuses_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="orchestrator.endpoints: the URLs of the running servers"):
        resolved(rl_config(tmp_path), connect=True)
    with pytest.raises(ConfigError, match="orchestrator.endpoints: empty unless --connect"):
        resolved(rl_config(tmp_path, "--orchestrator.endpoints", '["http://127.0.0.1:9"]'), connect=False)
    config = resolved(rl_config(tmp_path, "--rl.warmup_sft_steps", "12"), connect=False)
    assert config.logging.run_dir.is_absolute()
    checkpoint = tmp_path / "run" / "warmup" / "checkpoints" / f"{CHECKPOINT_PREFIX}00000012"
    assert from_warm_start(config).model.name_or_path == str(checkpoint)


def test_the_blind_control_is_the_same_job_with_grey_images_in_its_own_folder(tmp_path: Path) -> None:
    seeing = resolved(rl_config(tmp_path, "--rl.blind_control", "true", "--rl.warmup_sft_steps", "5"), connect=False)
    blind = blind_config(seeing)
    assert (blind.rl.images, blind.rl.blind_control, seeing.rl.images) == ("blank", False, "real")
    assert blind.logging.run_dir == seeing.logging.run_dir / "blind"
    unchanged = {"rl": {"images", "blind_control"}, "logging": {"run_dir"}}
    assert blind.model_dump(exclude=unchanged) == seeing.model_dump(exclude=unchanged)
    # A warm-up on real images would teach the seeing run what the blind one never sees: each has its own.
    assert (warmup_images(seeing), warmup_images(blind)) == ("real", "blank")
    format_only = rl_config(tmp_path, "--rl.warmup_images", "blank", "--rl.warmup_sft_steps", "5")
    assert warmup_images(format_only) == warmup_images(blind_config(format_only)) == "blank"
    # Grey images teach the vision side nothing; a warm-up on them keeps it frozen (AdamW would still move it).
    assert [sft_config(c).trainer.freeze_vision for c in (seeing, blind, format_only)] == [False, True, True]
    with pytest.raises(ConfigError, match="rl.blind_control: false with --connect"):
        resolved(rl_config(tmp_path, "--rl.blind_control", "true", "--orchestrator.endpoints", '["http://h:1"]'), True)


def test_a_started_run_folder_is_continued_only_when_resuming(tmp_path: Path) -> None:
    config = rl_config(tmp_path)
    check_run_folder(config)  # nothing there yet
    (tmp_path / "run" / "rollouts").mkdir(parents=True)
    with pytest.raises(RunFolderError, match="holds a started RL run .*--trainer.checkpoint.resume true"):
        check_run_folder(config)
    check_run_folder(rl_config(tmp_path, "--trainer.checkpoint.resume", "true"))


def test_the_orchestrator_starts_after_the_published_steps(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert first_unpublished_step(run_dir, resume=False) == 1
    for step in (1, 2):
        batch_path(run_dir, step).parent.mkdir(parents=True, exist_ok=True)
        batch_path(run_dir, step).write_bytes(b"x")
    (run_dir / "rollouts" / ".step_00000003.msgpack.abc.tmp").write_bytes(b"half")  # a write cut short
    assert first_unpublished_step(run_dir, resume=True) == 3
    with pytest.raises(RunFolderError, match="steps 1..2: set trainer.checkpoint.resume = true"):
        first_unpublished_step(run_dir, resume=False)
    batch_path(run_dir, 5).write_bytes(b"x")
    with pytest.raises(RunFolderError, match=r"skip steps \[3, 4\]"):
        first_unpublished_step(run_dir, resume=True)


@pytest.mark.parametrize(
    ("version", "evaluated", "every", "due"),
    [(0, set(), 0, True), (0, {0}, 0, False), (5, {0}, 0, False), (20, {0}, 0, True),  # last step (20)
     (5, {0}, 5, True), (6, {0}, 5, True), (7, {0, 6}, 5, False), (10, {0, 6}, 5, True)],
)  # fmt: skip
def test_evaluations_happen_first_last_and_every_n_steps(version: int, evaluated: set[int], every: int,
                                                          due: bool) -> None:  # fmt: skip
    assert eval_due(version, evaluated, every, last_step=20) is due


def test_a_run_folder_of_other_settings_is_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = rl_config(tmp_path, "--trainer.device", "cpu", "--inference.device", "cpu")
    ensure_run_meta(first.logging.run_dir, first, "rl", RL_BOUND_KEYS)
    argv = ["rl", "--no-progress", "--logging.run_dir", str(tmp_path / "run"), "--trainer.device", "cpu",
            "--inference.device", "cpu", "--orchestrator.batch_size", "5", "--trainer.checkpoint.resume", "true"]  # fmt: skip
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert error.startswith("foveal rl: error: ") and "orchestrator.batch_size: 4 in the folder, 5 now" in error
    assert not (tmp_path / "run" / "launch").exists()  # no child was started
