"""Every name under a run folder: the files through which a run's processes meet.

`foveal rl` starts the servers, the orchestrator and the trainer as separate processes (possibly on other
machines, over a shared filesystem); `foveal sft` and `foveal dflash` write the same kinds of files. They
agree on nothing but these names, so every process imports them from here:

    <run dir>/
        run_meta.json           settings the run is bound to (`runs.meta`)
        metrics.jsonl           one line per trainer step (`training.metrics`); wandb_run_id beside it
        loss.png | rl.png | dflash.png   the trainer's plot
        checkpoints/step-00000010/       a step's complete checkpoint: the published weights (`training.checkpoint`;
                                         its trainer_state.json marks it complete)
        trainer_state.json      the trainer's latest finished step and its checkpoint (`runs.progress`)
        rollouts/step_00000010.msgpack   the orchestrator's batch for a step (`runs.rollouts`), and its
                                         readable record step_00000010.rollouts.jsonl
        orchestrator.jsonl      per step: versions, weight pushes, rewards
        eval.jsonl, eval_reward.png, eval/step_00000010/<env>/   greedy evaluations
        warmup/                 the warm-up SFT run (a run folder of its own)
        launch/                 0600 config files of the launched children, processes.json; logs/ their output
        inference/control_token the control-plane token a server made (mode 0600)
        assets/                 the content-addressed image store (unless multimodal.offload_dir)
        data/                   generated demo datasets
"""

from __future__ import annotations

import re
from pathlib import Path

RUN_META_FILE = "run_meta.json"
METRICS_FILE = "metrics.jsonl"
WANDB_ID_FILE = "wandb_run_id"
SFT_PLOT_FILE = "loss.png"
RL_PLOT_FILE = "rl.png"
DFLASH_PLOT_FILE = "dflash.png"
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_PREFIX = "step-"
CHECKPOINT_STATE_FILE = "trainer_state.json"
"""Inside each checkpoint folder: its step, data position and world size (present only once it is complete)."""
TRAINER_PROGRESS_FILE = "trainer_state.json"
ROLLOUTS_DIR = "rollouts"
ORCHESTRATOR_STEPS_FILE = "orchestrator.jsonl"
EVAL_FILE = "eval.jsonl"
EVAL_PLOT_FILE = "eval_reward.png"
EVAL_DIR = "eval"
WARMUP_DIR = "warmup"
BLIND_DIR = "blind"
"""The blind control of an RL run (`rl.blind_control`): the same job with grey images, in `<run dir>/blind`."""
SEEING_VS_BLIND_PLOT_FILE = "seeing_vs_blind.png"
LAUNCH_DIR = "launch"
LOG_DIR = "logs"
PROCESSES_FILE = "processes.json"
CONTROL_TOKEN_FILE = Path("inference") / "control_token"
DATA_DIR = "data"
ROLLOUT_BATCH_NAME = re.compile(r"step_(\d{8,})\.msgpack")
"""A published rollout batch's file name; group 1 is its step."""


def checkpoint_name(step: int) -> str:
    """The folder name of step `step`'s checkpoint (`step-00000010`): sorts by step, parsed back by `checkpoint_step`."""
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def checkpoints_dir(run_dir: Path, configured: Path | None = None) -> Path:
    """Where a run's checkpoints go: `trainer.checkpoint.dir` when set, else `<run dir>/checkpoints`."""
    return configured if configured is not None else run_dir / CHECKPOINTS_DIR


def rollout_batch_path(run_dir: Path, step: int) -> Path:
    """Where the orchestrator publishes the batch the trainer trains on at `step` (msgpack, `runs.rollouts`)."""
    return run_dir / ROLLOUTS_DIR / f"step_{step:08d}.msgpack"


def rollout_records_path(run_dir: Path, step: int) -> Path:
    """The human-readable record of `step`'s rollouts (prompt, reply, reward, errors), beside its batch."""
    return run_dir / ROLLOUTS_DIR / f"step_{step:08d}.rollouts.jsonl"


def demo_data_dir(run_dir: Path, name: str) -> Path:
    """Where a generated demo dataset (`shapes`, ...) is written for this run, and reused on a restart."""
    return run_dir / DATA_DIR / name


def eval_folder(run_dir: Path, version: int, label: str) -> Path:
    """Where the greedy evaluation of policy `version` on environment `label` writes its results and report."""
    return run_dir / EVAL_DIR / f"step_{version:08d}" / label
