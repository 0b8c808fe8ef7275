"""The `foveal` command: exit statuses, one-line errors, `config show` round trips, plug-in discovery."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from foveal.configs import ENTRY_POINT_GROUP, RLConfig, SFTConfig, load_config
from foveal.configs import cli
from foveal.configs.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(autouse=True)
def no_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the builtin command unless they install plug-ins themselves."""
    monkeypatch.setattr(cli, "entry_points", lambda group: [])


def test_config_show_prints_toml_that_loads_back_equal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "base.toml"
    base.write_text('[[orchestrator.environments]]\nname = "count"\nargs = {limit = 3, words = ["a"]}\n')
    argv = ["config", "show", "--kind", "rl", "--config", str(base), "--trainer.optim.lr", "3e-4"]
    argv += ["--multimodal.min_pixels=3136", "--logging.wandb_project", "foveal", "--trainer.seq_len", "4096"]
    code, out, err = run(argv, capsys)
    assert (code, err) == (0, "")
    shown = tmp_path / "shown.toml"
    shown.write_text(out)
    assert load_config(RLConfig, [shown]) == load_config(RLConfig, [base], argv[6:])
    assert load_config(RLConfig, [shown]) != RLConfig()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lr=st.floats(min_value=1e-9, max_value=10, allow_nan=False),
    seq_len=st.integers(min_value=1, max_value=2**20),
    resume=st.booleans(),
    run_dir=st.from_regex(r"[a-z][a-z0-9_/]{0,20}", fullmatch=True),
)
def test_any_shown_sft_config_round_trips(
    lr: float, seq_len: int, resume: bool, run_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = [f"--trainer.optim.lr={lr!r}", f"--trainer.seq_len={seq_len}", f"--trainer.micro_batch_tokens={seq_len}"]
    overrides += [f"--trainer.checkpoint.resume={str(resume).lower()}", f"--logging.run_dir={run_dir}"]
    code, out, _ = run(["config", "show", *overrides], capsys)
    assert code == 0
    expected = load_config(SFTConfig, overrides=overrides)
    assert expected.trainer.optim.lr == lr and expected.trainer.checkpoint.resume is resume
    assert SFTConfig.model_validate(tomllib.loads(out)) == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["no-such-command"],
        [],
        ["config"],
        ["config", "show", "--kind", "sft-and-rl"],
        ["config", "show", "--config"],
        ["config", "keys", "--trainer.seq_len", "1"],
        ["--config", "a.toml"],
    ],
)
def test_bad_arguments_exit_2_with_a_one_line_reason(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("foveal: error: ")


def test_bad_config_exits_2_with_a_reason_line_then_one_line_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["config", "show", "--config", str(tmp_path / "absent.toml"), "--trainer.seq_len", "x"], capsys)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert lines[0] == "foveal: error: invalid SFTConfig (1 problem):"
    assert lines[1:] == [f"  {tmp_path / 'absent.toml'}: an existing TOML file (got no such file)"]
    code, _, err = run(["config", "show", "--trainer.seq_len", "x", "--sft.max_step", "3"], capsys)
    assert code == 2 and len(err.splitlines()) == 3 and "sft.max_step: no such key" in err


@pytest.mark.parametrize("argv", [["--help"], ["config", "--help"], ["config", "show", "--help"], ["config", "keys", "-h"]])
def test_help_works_on_every_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(argv, capsys)
    assert code == 0 and out.startswith("usage: foveal")


def test_config_keys_lists_every_dotted_key_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["config", "keys", "--kind", "rl"], capsys)
    assert code == 0
    assert "trainer.loss.kind : 'sft' | 'ppo' | 'gspo' | 'importance_sampling' = 'importance_sampling'" in out
    assert "orchestrator.environments[].weight : float = 1.0" in out


def install_plugins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **values: str) -> None:
    module = tmp_path / "foveal_demo_plugin.py"
    module.write_text(
        textwrap.dedent(
            """
            from foveal.configs import Command, SFTConfig, add_config_arguments, config_from_args

            def configure(parser):
                add_config_arguments(parser)

            def run(args):
                print("lr", config_from_args(args, SFTConfig).trainer.optim.lr)
                return 0

            command = Command(name="demo", help="Print the learning rate.", configure=configure, run=run)
            not_a_command = object()
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    points = [EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP) for name, value in values.items()]
    monkeypatch.setattr(cli, "entry_points", lambda group: points if group == ENTRY_POINT_GROUP else [])


def test_plugin_command_loads_its_config_through_the_shared_helpers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install_plugins(monkeypatch, tmp_path, demo="foveal_demo_plugin:command")
    config = tmp_path / "sft.toml"
    config.write_text("[trainer.optim]\nlr = 0.5\n")
    assert run(["demo", "--config", str(config)], capsys)[:2] == (0, "lr 0.5\n")
    assert run(["demo", "--config", str(config), "--trainer.optim.lr", "1e-5"], capsys)[:2] == (0, "lr 1e-05\n")
    code, _, err = run(["demo", "--trainer.optim.lrr", "1"], capsys)
    assert code == 2 and "did you mean trainer.optim.lr?" in err


def test_broken_plugins_are_reported_on_one_line_each_and_the_rest_still_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install_plugins(
        monkeypatch,
        tmp_path,
        smoke="foveal_missing_module_xyz:command",
        odd="foveal_demo_plugin:not_a_command",
        config="foveal_demo_plugin:command",
        demo="foveal_demo_plugin:command",
    )
    code, out, err = run(["--help"], capsys)
    assert code == 0 and "demo" in out and "smoke" not in out
    warnings = err.splitlines()
    assert len(warnings) == 3 and all(line.startswith("foveal: warning: skipping command") for line in warnings)
    assert "'smoke'" in warnings[0] and "ModuleNotFoundError" in warnings[0]
    assert run(["demo"], capsys)[:2] == (0, "lr 1e-05\n")


def test_running_one_plugin_does_not_load_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install_plugins(monkeypatch, tmp_path, smoke="foveal_missing_module_xyz:command", demo="foveal_demo_plugin:command")
    code, out, err = run(["demo"], capsys)
    assert (code, out, err) == (0, "lr 1e-05\n", "")


def test_installed_console_script_answers_help() -> None:
    script = shutil.which("foveal", path=str(Path(sys.executable).parent))
    assert script, "the foveal console script is not installed next to the interpreter"
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and "config" in result.stdout


def test_importing_every_configs_module_loads_no_torch() -> None:
    probe = (
        "import importlib, pkgutil, sys, foveal.configs as c\n"
        "for m in pkgutil.iter_modules(c.__path__):\n"
        "    if m.name != '__main__': importlib.import_module('foveal.configs.' + m.name)\n"
        "heavy = {'torch', 'torchvision', 'transformers', 'vllm', 'numpy', 'PIL'}\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in heavy), len(list(pkgutil.iter_modules(c.__path__))))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    heavy, count = result.stdout.split("] ")
    assert heavy == "[" and int(count) >= 15


def test_unknown_command_is_rejected_without_importing_any_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install_plugins(monkeypatch, tmp_path, smoke="foveal_missing_module_xyz:command")
    code, _, err = run(["smoke-test"], capsys)
    assert code == 2
    assert err == "foveal: error: argument <command>: invalid choice: 'smoke-test' (choose from 'config', 'smoke')\n"


def test_a_reader_that_stops_early_gets_one_line_and_no_traceback() -> None:
    """`foveal config keys | head -1`: the pipe closes while the command still writes."""
    script = shutil.which("foveal", path=str(Path(sys.executable).parent))
    assert script, "the foveal console script is not installed next to the interpreter"
    process = subprocess.Popen([script, "config", "keys"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    process.stdout.close()  # before the command has imported anything, so every write meets a closed pipe
    _, errors = process.communicate(timeout=60)
    assert process.returncode == 1
    assert errors == "foveal: error: the output was closed before the command finished (broken pipe)\n"
