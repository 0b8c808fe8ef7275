"""`foveal rl`: a whole RL run on one machine, each part in its own process.

    uv run foveal rl --config examples/rl_tiny_colors.toml
    uv run foveal rl --config run.toml --trainer.checkpoint.resume true     # continue after a kill
    uv run foveal rl --config run.toml --connect    # servers already running at orchestrator.endpoints

`run_rl`, top to bottom: bind the run folder to the config (a folder of another run is refused, naming
the settings that differ); warm the model up with SFT when `rl.warmup_sft_steps` > 0 (`foveal sft` in
`<run dir>/warmup`); start `inference.num_servers` x `foveal serve` and `foveal router` in front of them on
free loopback ports, unless `--connect` (a server that exits is restarted up to `inference.max_restarts`
times, see `servers.py`), and load the warm-up checkpoint into them; then start `foveal rl-trainer` and
`foveal rl-orchestrator`, which meet in the run folder (rollout batches one way, checkpoints and
trainer_state.json the other); show progress until both are done; stop the servers. With
`rl.blind_control`, the same job runs again in `<run dir>/blind` with every image grey (`rl.images =
"blank"`; a warm-up that saw grey images is shared, not repeated), and `seeing_vs_blind.png` and the summary
show both. If any child exits early or with an error, the
others are stopped and the launch fails with that child's status and log tail. Each child reads one
0600 config file from `<run dir>/launch/` and logs to `<run dir>/logs/<name>.log`.

Across machines the same three commands run as separate jobs (`examples/slurm/rl_multinode.sbatch`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from foveal.configs import RLConfig, config_from_args
from foveal.configs.errors import ConfigError, Problem
from foveal.trainer.rl.launcher.children import ChildFailed, Children
from foveal.trainer.rl.launcher.configs import launch_token, with_token, write_private_toml
from foveal.trainer.rl.launcher.display import RunDisplay, eval_line
from foveal.trainer.rl.launcher.resources import DevicePlan, ResourceError, count_gpus, cpu_threads, plan_gpus, visible
from foveal.trainer.rl.launcher.servers import start_servers
from foveal.trainer.rl.launcher.warmup import load_warm_start, sft_config, warmup_checkpoint, warmup_dir, warmup_images
from foveal.trainer.rl.launcher.warmup import write_warmup_dataset
from foveal.trainer.rl.orchestrator.evaluation import plot_runs, read_records
from foveal.trainer.rl.orchestrator.resume import RunFolderError
from foveal.trainer.runs.layout import CHECKPOINTS_DIR, EVAL_PLOT_FILE, LAUNCH_DIR, LOG_DIR, METRICS_FILE, RL_PLOT_FILE
from foveal.trainer.runs.layout import BLIND_DIR, ROLLOUTS_DIR, SEEING_VS_BLIND_PLOT_FILE, TRAINER_PROGRESS_FILE
from foveal.trainer.runs.layout import WARMUP_DIR
from foveal.trainer.runs.meta import RL_BOUND_KEYS, IncompatibleRun, ensure_run_meta



@dataclass(frozen=True)
class LaunchResult:
    """Where a finished launch left its outputs, and how long it took; `blind`: its blind control, if run."""

    run_dir: Path
    model: str
    seconds: float
    blind: LaunchResult | None = None


def run_rl(config: RLConfig, *, connect: bool, show_progress: bool = True) -> LaunchResult:
    """Run the RL job `config` describes to its last step (see the module doc), then its blind control when
    `rl.blind_control` is set; raises ChildFailed on failure."""
    config = resolved(config, connect)
    result = run_job(config, connect=connect, show_progress=show_progress)
    if not config.rl.blind_control:
        return result
    shared = warmup_dir(config) if warmup_images(config) == "blank" else None
    blind = run_job(blind_config(config), connect=connect, show_progress=show_progress, shared_warmup=shared)
    plot_runs({"seeing": result.run_dir, "blind": blind.run_dir}, result.run_dir / SEEING_VS_BLIND_PLOT_FILE)
    return replace(result, seconds=result.seconds + blind.seconds, blind=blind)


def blind_config(config: RLConfig) -> RLConfig:
    """The blind control of `config`: the same job with grey images everywhere, in `<run dir>/blind`."""
    rl = config.rl.model_copy(update={"images": "blank", "blind_control": False})
    logging = config.logging.model_copy(update={"run_dir": config.logging.run_dir / BLIND_DIR})
    return config.model_copy(update={"rl": rl, "logging": logging})


def run_job(
    config: RLConfig, *, connect: bool, show_progress: bool = True, shared_warmup: Path | None = None
) -> LaunchResult:
    """One RL job to its last step; `shared_warmup`: a finished warm-up folder this job would repeat exactly
    (linked instead of trained again)."""
    started = time.perf_counter()
    run_dir, rl = config.logging.run_dir, from_warm_start(config)
    check_run_folder(rl)
    ensure_run_meta(run_dir, rl, "rl", RL_BOUND_KEYS)
    token = config.inference.api_token if connect else launch_token(config)
    secrets = {} if token is None else {("inference", "api_token"): token}
    gpus_per_server = config.inference.tensor_parallel * config.inference.data_parallel
    plan = None if connect or on_cpu(config) else plan_gpus(count_gpus(), config.inference.num_servers, gpus_per_server)
    torch_processes = 1 + (0 if connect else config.inference.num_servers)
    children = Children(run_dir / LAUNCH_DIR, run_dir / LOG_DIR, env=cpu_threads(torch_processes))

    with children, RunDisplay(run_dir, config.rl.max_steps, enabled=show_progress) as display:
        children.notify = display.say
        if config.rl.images == "blank":
            display.say(f"blind control in {run_dir}: every image is a grey one of the same size")
        if config.rl.warmup_sft_steps:
            share_warmup(config, shared_warmup, display)
            warm_up(config, children, display)
        display.rl()
        if connect:
            endpoints = config.orchestrator.endpoints
        else:
            display.say(f"starting {config.inference.num_servers} inference server(s) ({config.inference.backend})")
            envs = [visible(gpus) for gpus in plan.servers] if plan else [{}] * config.inference.num_servers
            endpoints = (start_servers(config, token, children, run_dir / LAUNCH_DIR, envs),)
        if config.rl.warmup_sft_steps:
            seconds = load_warm_start(endpoints, token, warmup_checkpoint(config))
            display.say(f"warm-up checkpoint loaded into the servers as weight version 0 ({seconds:.1f} s)")
        child = with_token(rl, token) if token is not None else rl
        child = child.model_copy(update={"orchestrator": child.orchestrator.model_copy(update={"endpoints": endpoints})})
        path = write_private_toml(run_dir / LAUNCH_DIR / "rl.toml", child, secrets)
        children.start("trainer", trainer_argv(path, plan), must_finish=True, env=visible(plan.trainer) if plan else {})
        children.start("orchestrator", ["rl-orchestrator", "--config", str(path)], must_finish=True)
        display.say(f"trainer and orchestrator started; logs in {run_dir / LOG_DIR}")
        children.watch(["trainer", "orchestrator"], display.refresh)
    return LaunchResult(run_dir, rl.model.name_or_path, time.perf_counter() - started)


def resolved(config: RLConfig, connect: bool) -> RLConfig:
    """The config with an absolute run folder, after checking `orchestrator.endpoints` against `--connect`."""
    if connect and not config.orchestrator.endpoints:
        expected = "the URLs of the running servers or router when --connect is given"
        raise ConfigError([Problem("orchestrator.endpoints", expected, got="[]")])
    if connect and config.rl.blind_control:
        expected = "false with --connect (the blind control starts servers of its own, at weight version 0)"
        raise ConfigError([Problem("rl.blind_control", expected, got="true")])
    if not connect and config.orchestrator.endpoints:
        expected = "empty unless --connect is given (without it, foveal rl starts its own servers)"
        raise ConfigError([Problem("orchestrator.endpoints", expected, got=str(list(config.orchestrator.endpoints)))])
    logging = config.logging.model_copy(update={"run_dir": config.logging.run_dir.resolve()})
    return config.model_copy(update={"logging": logging})


def from_warm_start(config: RLConfig) -> RLConfig:
    """The config of the RL processes: with a warm-up, its checkpoint is the model they start from."""
    if not config.rl.warmup_sft_steps:
        return config
    model = config.model.model_copy(update={"name_or_path": str(warmup_checkpoint(config))})
    return config.model_copy(update={"model": model})


def on_cpu(config: RLConfig) -> bool:
    """A run whose trainer and servers are both set to the CPU has no GPUs to share (and needs no torch here)."""
    return config.trainer.device == "cpu" and config.inference.device == "cpu"


def check_run_folder(config: RLConfig) -> None:
    """A folder holding a started run is continued only when resuming (`trainer.checkpoint.resume`)."""
    run_dir = config.logging.run_dir
    found = [name for name in (TRAINER_PROGRESS_FILE, ROLLOUTS_DIR, CHECKPOINTS_DIR, WARMUP_DIR) if (run_dir / name).exists()]
    if found and not config.trainer.checkpoint.resume:
        raise RunFolderError(
            f"{run_dir} holds a started RL run ({', '.join(found)}): pass --trainer.checkpoint.resume true to "
            "continue it, or choose another logging.run_dir"
        )


def share_warmup(config: RLConfig, shared: Path | None, display: RunDisplay) -> None:
    """Link `<run dir>/warmup` to `shared` (a warm-up on the same settings and grey images: the same SFT)."""
    folder = warmup_dir(config)
    if shared is None or folder.exists() or folder.is_symlink():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.symlink_to(shared, target_is_directory=True)
    display.say(f"warm-up: the seeing run's ({shared}); it saw grey images too")


def warm_up(config: RLConfig, children: Children, display: RunDisplay) -> None:
    """SFT from the configured model to the warm-up checkpoint, in a child process (skipped once done)."""
    checkpoint = warmup_checkpoint(config)
    if checkpoint.is_dir():
        display.say(f"warm-up: reusing {checkpoint}")
        return
    sft = sft_config(config)
    display.say(f"warm-up: {config.rl.warmup_sft_steps} SFT steps on the environments' train splits")
    write_warmup_dataset(config, sft)
    path = write_private_toml(warmup_dir(config) / "sft.toml", sft, {})
    display.warmup(warmup_dir(config), config.rl.warmup_sft_steps)
    children.start("warmup", ["sft", "--config", str(path)], must_finish=True)
    children.watch(["warmup"], display.refresh)


def trainer_argv(config_path: Path, plan: DevicePlan | None) -> list[str]:
    """`foveal rl-trainer`, under torchrun when the trainer has several GPUs."""
    argv = ["rl-trainer", "--config", str(config_path)]
    if plan is None or len(plan.trainer) < 2:
        return argv
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={len(plan.trainer)}"]
    return [*launcher, "-m", "foveal.configs", *argv]


def main(args: argparse.Namespace) -> int:
    """`foveal rl` (declared in foveal.trainer.commands): 1 when the run fails, 130 when interrupted."""
    config = config_from_args(args, RLConfig)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # stop the children in order, as for Ctrl-C
    try:
        result = run_rl(config, connect=args.connect, show_progress=not args.no_progress)
    except (ChildFailed, RunFolderError, IncompatibleRun, ResourceError) as error:
        print(f"foveal rl: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("foveal rl: interrupted; every child process was stopped", file=sys.stderr)
        return 130
    print(summary(result))
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def summary(result: LaunchResult) -> str:
    """What the run (and its blind control) reached and where the outputs are."""
    run_dir = result.run_dir
    lines = [f"foveal rl: done in {result.seconds:.0f} s; run folder {run_dir}"]
    named = [("seeing", run_dir), ("blind", result.blind.run_dir)] if result.blind else [("", run_dir)]
    for name, folder in named:
        if read_records(folder):
            lines.append(f"  {name + ': ' if name else ''}{eval_line(folder)}")
    for name in (METRICS_FILE, RL_PLOT_FILE, EVAL_PLOT_FILE, SEEING_VS_BLIND_PLOT_FILE):
        if (run_dir / name).is_file():
            lines.append(f"  {run_dir / name}")
    return "\n".join(lines)
