"""`<run dir>/run_meta.json`: the settings a run folder is bound to, so a resume cannot mix two runs.

Checkpoints, published rollout batches and stored images only make sense for the settings that produced
them: the model, how conversations became tokens (renderer), how images became placeholder runs
(pixel bounds, store), the objective and the advantage. The first process of a run records those values
(and a fingerprint of them); every later start, resumed or not, compares its own config and refuses
to run when any differ, naming each key with both values. Settings outside the list (learning rate,
logging, timeouts, the async level) may change between restarts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import orjson
import xxhash
from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError

from foveal.configs.runs import RunConfig
from foveal.renderers.atomic_files import write_atomic
from foveal.trainer.runs.layout import RUN_META_FILE

RL_BOUND_KEYS = (
    "model.name_or_path",
    "model.family",
    "renderer.family",
    "renderer.loss_on",
    "multimodal.offload_dir",
    "multimodal.min_pixels",
    "multimodal.max_pixels",
    "trainer.loss.kind",
    "orchestrator.advantage",
    "orchestrator.batch_size",
    "orchestrator.rollouts_per_prompt",
    "rl.images",
    "rl.warmup_images",
)
"""The settings of an RL run that no restart may change."""


class IncompatibleRun(ValueError):
    """The run folder was started with other values of settings a restart must keep."""

    def __init__(self, path: Path, differences: dict[str, tuple[Any, Any]]) -> None:
        self.path, self.differences = path, differences
        listed = "; ".join(f"{key}: {old!r} in the folder, {new!r} now" for key, (old, new) in differences.items())
        super().__init__(
            f"{path}: this run folder belongs to a run with other settings ({listed}); "
            "restore those values or start in another logging.run_dir"
        )


class RunMeta(BaseModel):
    """The bound settings of a run, by dotted key, and their fingerprint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1] = 1
    kind: str
    fingerprint: str
    settings: dict[str, JsonValue]


def run_meta(config: RunConfig, kind: str, keys: tuple[str, ...]) -> RunMeta:
    """The meta of `config`: the values at `keys` (JSON form) and an xxh3-128 of them."""
    dumped = config.model_dump(mode="json")
    settings = {key: _lookup(dumped, key) for key in keys}
    fingerprint = xxhash.xxh3_128_hexdigest(orjson.dumps({"kind": kind, **settings}, option=orjson.OPT_SORT_KEYS))
    return RunMeta(kind=kind, fingerprint=fingerprint, settings=settings)


def ensure_run_meta(run_dir: Path, config: RunConfig, kind: str, keys: tuple[str, ...]) -> RunMeta:
    """Record the meta in a new run folder, or check the folder's against `config` (IncompatibleRun if they differ).

    Two processes of one run may both find no meta and both write it: they write the same bytes.
    """
    path = run_dir / RUN_META_FILE
    ours = run_meta(config, kind, keys)
    if not path.is_file():
        write_atomic(path, orjson.dumps(ours.model_dump(), option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2))
        return ours
    try:
        theirs = RunMeta.model_validate_json(path.read_bytes())
    except ValidationError as error:
        raise IncompatibleRun(path, {RUN_META_FILE: (error.errors()[0]["msg"], "a valid run meta")}) from None
    if theirs.fingerprint != ours.fingerprint:
        old = {"kind": theirs.kind, **theirs.settings}
        new = {"kind": ours.kind, **ours.settings}
        differences = {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}
        raise IncompatibleRun(path, differences)
    return theirs


def _lookup(dumped: dict[str, Any], key: str) -> Any:
    value: Any = dumped
    for part in key.split("."):
        value = value[part]
    return value
