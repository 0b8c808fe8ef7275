"""A run folder is bound to the settings that produced its artifacts; a restart with others is refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from foveal.configs import RLConfig, load_config
from foveal.trainer.runs.layout import RUN_META_FILE
from foveal.trainer.runs.meta import RL_BOUND_KEYS, IncompatibleRun, ensure_run_meta


def config(run_dir: Path, *overrides: str) -> RLConfig:
    return load_config(RLConfig, [], ["--logging.run_dir", str(run_dir), *overrides])


def test_the_first_start_records_the_bound_settings_and_later_starts_accept_them(tmp_path: Path) -> None:
    first = ensure_run_meta(tmp_path, config(tmp_path), "rl", RL_BOUND_KEYS)
    recorded = json.loads((tmp_path / RUN_META_FILE).read_text())
    assert recorded["settings"]["model.name_or_path"] == "tiny:qwen2_5_vl"
    assert recorded["settings"]["trainer.loss.kind"] == "importance_sampling"
    assert set(recorded["settings"]) == set(RL_BOUND_KEYS)
    again = config(tmp_path, "--trainer.optim.lr", "3e-4", "--orchestrator.max_async_level", "0")
    assert ensure_run_meta(tmp_path, again, "rl", RL_BOUND_KEYS) == first


def test_a_restart_with_other_bound_settings_names_every_differing_key(tmp_path: Path) -> None:
    ensure_run_meta(tmp_path, config(tmp_path), "rl", RL_BOUND_KEYS)
    other = config(tmp_path, "--trainer.loss.kind", "gspo", "--orchestrator.rollouts_per_prompt", "8")
    with pytest.raises(IncompatibleRun) as caught:
        ensure_run_meta(tmp_path, other, "rl", RL_BOUND_KEYS)
    assert caught.value.differences == {
        "orchestrator.rollouts_per_prompt": (4, 8),
        "trainer.loss.kind": ("importance_sampling", "gspo"),
    }
    message = str(caught.value)
    assert "trainer.loss.kind: 'importance_sampling' in the folder, 'gspo' now" in message
    assert "logging.run_dir" in message


def test_a_folder_of_another_kind_of_run_is_refused(tmp_path: Path) -> None:
    ensure_run_meta(tmp_path, config(tmp_path), "sft", RL_BOUND_KEYS)
    with pytest.raises(IncompatibleRun, match="kind: 'sft' in the folder, 'rl' now"):
        ensure_run_meta(tmp_path, config(tmp_path), "rl", RL_BOUND_KEYS)


def test_an_unreadable_meta_is_refused_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / RUN_META_FILE).write_text("{not json")
    with pytest.raises(IncompatibleRun, match="run_meta.json"):
        ensure_run_meta(tmp_path, config(tmp_path), "rl", RL_BOUND_KEYS)
    assert (tmp_path / RUN_META_FILE).read_text() == "{not json"
