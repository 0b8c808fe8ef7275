"""Run-time errors a user causes (a port in use, a missing file or folder, a folder that is not a model or a complete
checkpoint) end `foveal <command>` with one stderr line naming what to change, status 1 and no traceback.

Each case runs the real command in-process (`foveal.configs.cli.main`) on the tiny model, and fails before any
training step or request.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from foveal.configs.cli import main
from foveal.trainer.runs.layout import CHECKPOINT_STATE_FILE
from foveal.trainer.training.checkpoint import TrainingState

FAMILY = "qwen2_5_vl"
API_KEY = "tml-foveal-test-key-0123456789"


def one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The error line `foveal *argv` ends with, after checking it is the only stderr line and the status is 1."""
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.rstrip("\n")


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another socket listens on for the test's duration."""
    with socket.create_server(("127.0.0.1", 0)) as holder:
        yield int(holder.getsockname()[1])


def sft_args(run_dir: Path, model: str, dataset: str = "shapes:8", *more: str) -> list[str]:
    return ["sft", "--model.name_or_path", model, "--logging.run_dir", str(run_dir), "--sft.dataset", dataset,
            "--sft.batch_size", "4", "--sft.max_steps", "1", "--trainer.seq_len", "256",
            "--trainer.micro_batch_tokens", "256", "--trainer.device", "cpu", *more]  # fmt: skip


def serve_args(run_dir: Path, model: str, *more: str) -> list[str]:
    return ["serve", "--model.name_or_path", model, "--logging.run_dir", str(run_dir), "--inference.device", "cpu",
            *more]  # fmt: skip


def in_use(command: str, port: int, setting: str) -> str:
    return (
        f"foveal {command}: error: port {port} on 127.0.0.1 is in use: pass --{setting} another port "
        "(0 lets the system pick one), or stop the process that holds it"
    )


def test_serve_on_a_port_in_use_names_the_port_setting(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path, held_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = serve_args(tmp_path, str(tiny_model_dir(FAMILY)), "--inference.port", str(held_port))
    assert one_line_error(argv, capsys) == in_use("serve", held_port, "inference.port")


def test_router_on_a_port_in_use_names_the_port_setting(held_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["router", "--upstream", "http://127.0.0.1:1", "--inference.router.port", str(held_port)]
    assert one_line_error(argv, capsys) == in_use("router", held_port, "inference.router.port")


def test_serve_tinker_on_a_port_in_use_names_the_port_setting(
    tiny_model_dir: Callable[[str], Path],
    tmp_path: Path,
    held_port: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FOVEAL_TINKER_API_KEY", API_KEY)
    argv = ["serve-tinker", "--model.name_or_path", str(tiny_model_dir(FAMILY)), "--logging.run_dir", str(tmp_path),
            "--tinker.device", "cpu", "--tinker.port", str(held_port)]  # fmt: skip
    assert one_line_error(argv, capsys) == in_use("serve-tinker", held_port, "tinker.port")


def test_a_missing_config_file_is_named_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sft", "--config", str(tmp_path / "absent.toml")]) == 2  # a config error: status 2, one problem
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "foveal: error: invalid SFTConfig (1 problem):",
        f"  {tmp_path / 'absent.toml'}: an existing TOML file (got no such file)",
    ]


def test_a_missing_sft_data_file_names_the_setting(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "absent.jsonl"
    argv = sft_args(tmp_path / "run", str(tiny_model_dir(FAMILY)), str(missing))
    assert one_line_error(argv, capsys) == f"foveal sft: error: sft.dataset: an existing JSONL file (got '{missing}')"


def test_a_missing_model_folder_names_the_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "models" / "absent"
    assert one_line_error(sft_args(tmp_path / "run", str(missing)), capsys) == (
        f"foveal sft: error: model.name_or_path: an existing model folder or a Hugging Face name (got '{missing}')"
    )


@pytest.mark.parametrize(
    ("removed", "missing"),
    [("config.json", "config.json"), ("model.safetensors", "weights (*.safetensors or *.bin)")],
)
def test_serving_a_folder_that_is_not_a_model_names_the_folder_and_what_it_lacks(
    removed: str,
    missing: str,
    tiny_model_dir: Callable[[str], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = shutil.copytree(tiny_model_dir(FAMILY), tmp_path / "model")
    (folder / removed).unlink()
    assert one_line_error(serve_args(tmp_path / "run", str(folder)), capsys) == (
        f"foveal serve: error: model.name_or_path: a model folder with config.json and weights; this one has no "
        f"{missing} (got '{folder}')"
    )


def test_resuming_from_a_checkpoint_without_its_model_names_the_checkpoint(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000001"
    checkpoint.mkdir(parents=True)
    (checkpoint / CHECKPOINT_STATE_FILE).write_text(TrainingState(step=1).model_dump_json())
    argv = sft_args(tmp_path / "run", str(tiny_model_dir(FAMILY)), "shapes:8", "--trainer.checkpoint.resume", "true")
    assert one_line_error(argv, capsys) == (
        "foveal sft: error: checkpoint folder: a complete checkpoint, with config.json; delete this one to resume "
        f"from the one before it (got '{checkpoint}')"
    )


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_serving_with_vllm_where_it_is_not_installed_names_the_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_line_error(serve_args(tmp_path / "run", f"tiny:{FAMILY}", "--inference.backend", "vllm"), capsys)
    assert line == (
        "foveal serve: error: inference.backend 'vllm' needs vLLM, which is not installed: on a CUDA machine run "
        "`uv sync --extra vllm` (foveal-trainer[vllm]), or serve with --inference.backend transformers"
    )
