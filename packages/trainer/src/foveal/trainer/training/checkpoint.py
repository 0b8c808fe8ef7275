"""Checkpoints that resume a run exactly, written without pickle and published atomically.

A checkpoint is a folder `<dir>/step-00000010/`:
    config.json, model.safetensors, ...   the model, written by `save_pretrained` (safetensors)
    tokenizer / processor files           so the folder loads with `from_pretrained` on its own
    optimizer.safetensors + optimizer.json   AdamW tensors by parameter name; hyper-parameters as JSON
    scheduler.json                        the LambdaLR state (plain numbers)
    rng/rank-00000.{json,safetensors}     Python, NumPy and torch RNG states of every rank
    trainer_state.json                    step, data position, world size

Nothing is pickled: the folder may be handed to someone else, and `torch.load` of an untrusted file
runs code. Tensors go to safetensors, everything else to JSON. Every rank writes its part into
`<dir>/.tmp-step-.../`; rank 0 renames it to its final name only after all ranks are done, so a folder
named `step-*` is always complete and a crash leaves at most a temporary folder (removed on the next
save). Then the oldest checkpoints beyond `keep_last` are deleted.

Under FSDP2 the full (unsharded) model and optimizer states are gathered to CPU for rank 0 and loaded
back on every rank through `torch.distributed.checkpoint.state_dict`, so a checkpoint is independent of
the world size that wrote it (a 2-process checkpoint resumes in 1 process). Every rank writes into the
same folder, so a multi-node run needs its checkpoint folder on a filesystem all nodes share. Resuming
reads the model from the checkpoint folder with `from_pretrained` (see `foveal.trainer.model.loading`),
then `restore` loads the optimizer, schedule, RNG and data position.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from foveal.configs.errors import RunError
from foveal.configs.trainer import CheckpointConfig
from foveal.trainer.model.quiet import quiet_progress
from foveal.trainer.training.distributed import DistributedContext
from foveal.trainer.runs.layout import CHECKPOINT_PREFIX, CHECKPOINT_STATE_FILE, checkpoint_name

FORMAT_VERSION = 1
TEMP_PREFIX = ".tmp-"
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
_FULL_OPTIMIZER_LOAD = StateDictOptions(full_state_dict=True, cpu_offload=True, strict=False)
"""AdamW creates a parameter's state on its first gradient, so a parameter that has had none yet (the vision
tower after text-only steps) has no saved state; strict loading would refuse such a checkpoint."""


class CheckpointError(RunError, ValueError):
    """A checkpoint folder that cannot be resumed from; names the file or field and what was wrong."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: {expected} (got {value!r})")


class DataPosition(BaseModel):
    """Where the data stream stands: the next sample is number `index` of epoch `epoch`'s shuffled order."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    epoch: int = Field(default=0, ge=0)
    index: int = Field(default=0, ge=0)
    shuffle_seed: int = 0


class TrainingState(BaseModel):
    """The plain-value part of a checkpoint: how far the run got and where its data stands."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format_version: int = FORMAT_VERSION
    step: int = Field(default=0, ge=0)
    data: DataPosition = Field(default_factory=DataPosition)
    world_size: int = Field(default=1, ge=1)


@dataclass(frozen=True)
class Checkpointer:
    """Saves and finds the checkpoints of one run folder."""

    folder: Path
    config: CheckpointConfig
    context: DistributedContext

    def due(self, step: int, last_step: int) -> bool:
        """Whether to checkpoint after `step`: every `every_steps`, and always after the last step."""
        return step % self.config.every_steps == 0 or step == last_step

    def latest(self) -> Path | None:
        """The complete checkpoint with the highest step, or None when there is none."""
        found = [p for p in self.folder.glob(f"{CHECKPOINT_PREFIX}*") if (p / CHECKPOINT_STATE_FILE).is_file()]
        return max(found, key=_step_of, default=None)

    def resume_point(self) -> Path | None:
        """The checkpoint this run starts from: the latest one when `resume` is on (none yet: a fresh start).

        A fresh run refuses a folder that already holds checkpoints: its own early checkpoints would rank
        below the old run's and `keep_last` would delete them, and a later resume would mix the two runs.
        """
        latest = self.latest()
        if latest is not None and not self.config.resume:
            raise CheckpointError(
                "trainer.checkpoint.resume",
                False,
                f"true to continue the run whose checkpoint {latest} exists, or another folder",
            )
        return latest

    def save(
        self,
        model: torch.nn.Module,
        processor: Any,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        state: TrainingState,
    ) -> Path:
        """Write a checkpoint of `state.step` on every rank (collective under FSDP2); returns its folder."""
        final = self.folder / checkpoint_name(state.step)
        temp = self.folder / f"{TEMP_PREFIX}{final.name}"
        if self.context.is_main:
            shutil.rmtree(temp, ignore_errors=True)
            temp.mkdir(parents=True)
        self.context.barrier()
        model_state = get_model_state_dict(model, options=_FULL)
        optimizer_state = get_optimizer_state_dict(model, optimizer, options=_FULL)
        _write_rng(temp / "rng", self.context.rank)
        if self.context.is_main:
            _write_shared(temp, model, model_state, processor, optimizer_state, scheduler, state)
        self.context.barrier()
        if self.context.is_main:
            shutil.rmtree(final, ignore_errors=True)
            temp.rename(final)
            self._prune()
        self.context.barrier()
        return final

    def restore(
        self,
        checkpoint: Path | None,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        fresh: TrainingState,
    ) -> TrainingState:
        """Load optimizer, schedule and RNG from `checkpoint` and return its state; `fresh` when it is None.

        The model weights were already read from the same folder when the model was built.
        """
        if checkpoint is None:
            return fresh
        state = read_state(checkpoint)
        saved = _read_optimizer(checkpoint, optimizer)
        set_optimizer_state_dict(model, optimizer, saved, options=_FULL_OPTIMIZER_LOAD)
        _forget_unsaved_state(model, optimizer, set(saved["state"]))
        scheduler.load_state_dict(_read_json(checkpoint / "scheduler.json"))
        _read_rng(checkpoint / "rng", self.context.rank)
        return state

    def _prune(self) -> None:
        complete = sorted((p for p in self.folder.glob(f"{CHECKPOINT_PREFIX}*") if (p / CHECKPOINT_STATE_FILE).is_file()), key=_step_of)
        for old in complete[: -self.config.keep_last]:
            shutil.rmtree(old)


def read_state(checkpoint: Path) -> TrainingState:
    """The `trainer_state.json` of a checkpoint folder, validated."""
    state = TrainingState.model_validate(_read_json(checkpoint / CHECKPOINT_STATE_FILE))
    if state.format_version != FORMAT_VERSION:
        raise CheckpointError(f"{checkpoint / CHECKPOINT_STATE_FILE}.format_version", state.format_version, f"{FORMAT_VERSION}")
    return state


def _write_shared(
    temp: Path,
    model: torch.nn.Module,
    model_state: dict[str, torch.Tensor],
    processor: Any,
    optimizer_state: dict[str, Any],
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: TrainingState,
) -> None:
    """Rank 0's part: model (+ processor files), optimizer, schedule and the trainer state, written last."""
    with quiet_progress():
        model.save_pretrained(temp, state_dict=model_state)
        processor.save_pretrained(temp)
    tensors, plain = _split_optimizer(optimizer_state)
    save_file(tensors, temp / "optimizer.safetensors")
    _write_json(temp / "optimizer.json", plain)
    _write_json(temp / "scheduler.json", scheduler.state_dict())
    _write_json(temp / CHECKPOINT_STATE_FILE, state.model_dump(mode="json"))


def _split_optimizer(optimizer_state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors keyed `state/<param name>/<key>`; the rest (param groups, non-tensor state) as JSON."""
    tensors: dict[str, torch.Tensor] = {}
    plain_state: dict[str, dict[str, Any]] = {}
    for name, entries in optimizer_state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{name}/{key}"] = value.detach().cpu().contiguous()
            else:
                plain_state.setdefault(name, {})[key] = value
    return tensors, {"param_groups": optimizer_state["param_groups"], "state": plain_state}


def _read_optimizer(checkpoint: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The saved optimizer state, with this run's kernel choice (fused/foreach) kept over the saved one."""
    plain = _read_json(checkpoint / "optimizer.json")
    state: dict[str, dict[str, Any]] = {name: dict(entries) for name, entries in plain["state"].items()}
    for flat, tensor in load_file(checkpoint / "optimizer.safetensors").items():
        prefix, _, rest = flat.partition("/")
        name, _, key = rest.rpartition("/")
        if prefix != "state" or not name or not key:
            raise CheckpointError(
                str(checkpoint / "optimizer.safetensors"), flat, "keys of the form state/<param>/<key>"
            )
        state.setdefault(name, {})[key] = tensor
    live = optimizer.param_groups
    if len(plain["param_groups"]) != len(live):
        raise CheckpointError(
            str(checkpoint / "optimizer.json"), len(plain["param_groups"]), f"{len(live)} param groups"
        )
    groups = [
        {**saved, "betas": tuple(saved["betas"]), "fused": ours["fused"], "foreach": ours["foreach"]}
        for saved, ours in zip(plain["param_groups"], live)
    ]
    return {"state": state, "param_groups": groups}


def _forget_unsaved_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, saved: set[str]) -> None:
    """Loading initializes every parameter's AdamW state (a zero-gradient step); a parameter whose state was
    never saved must start fresh on its first gradient, as it would have in the uninterrupted run."""
    for name, parameter in model.named_parameters():
        if name not in saved:
            optimizer.state.pop(parameter, None)


def _write_rng(folder: Path, rank: int) -> None:
    """Every RNG a step may draw from, so a resumed run draws the same numbers as an uninterrupted one."""
    folder.mkdir(parents=True, exist_ok=True)
    version, python_state, gauss = random.getstate()
    _, numpy_keys, numpy_pos, numpy_has_gauss, numpy_gauss = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np.asarray(numpy_keys, dtype=np.int64))}
    if torch.cuda.is_available():
        tensors |= {f"cuda/{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    save_file(tensors, folder / f"rank-{rank:05d}.safetensors")
    plain = {
        "python": [version, list(python_state), gauss],
        "numpy": [int(numpy_pos), int(numpy_has_gauss), float(numpy_gauss)],
    }
    _write_json(folder / f"rank-{rank:05d}.json", plain)


def _read_rng(folder: Path, rank: int) -> None:
    """Restore this rank's RNG states; a rank the writing run did not have keeps its seeded state."""
    tensors_path, plain_path = folder / f"rank-{rank:05d}.safetensors", folder / f"rank-{rank:05d}.json"
    if not plain_path.is_file():
        return
    tensors, plain = load_file(tensors_path), _read_json(plain_path)
    version, python_state, gauss = plain["python"]
    random.setstate((version, tuple(python_state), gauss))
    position, has_gauss, cached = plain["numpy"]
    np.random.set_state(("MT19937", tensors["numpy"].numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[f"cuda/{i}"] for i in range(torch.cuda.device_count()) if f"cuda/{i}" in tensors]
    if cuda:
        torch.cuda.set_rng_state_all(cuda)


def _step_of(path: Path) -> int:
    try:
        return int(path.name.removeprefix(CHECKPOINT_PREFIX))
    except ValueError:
        raise CheckpointError("checkpoint folder", path.name, f"{CHECKPOINT_PREFIX}<step number>") from None


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1, sort_keys=True), encoding="utf-8")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError("checkpoint file", str(path), "present in a complete checkpoint folder") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(str(path), error.msg, "valid JSON") from None
