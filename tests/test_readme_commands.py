"""Every command README.md and the examples/ READMEs show is run here, or checked as far as this machine allows.

The READMEs are parsed on every run (tests/readme_shell.py says what counts as a command): each command must
have an entry in COMMANDS and every entry must still be in a README, so a README command cannot be added,
changed or dropped without this table. An entry says how its command is exercised:
- "run": the test named runs the README's own text (read from the README, not copied) as a subprocess,
  through the `foveal` console script (or this interpreter for `python`) next to sys.executable, adding
  only flags that shrink the work (steps, examples), a run folder under tmp_path and free ports in place of
  fixed ones, and asserts what the command must produce. Servers run in the background until the README's
  client commands have run against them.
- "checked": not runnable here (GPU, model hub, vLLM, a user's own config); the test named checks what can
  be checked without running it (its config loads through the loader the CLI uses), and `also` names an
  existing test that runs the same launch at CPU size where there is one.
- "ci": set-up or the CI entry point; the test named checks that .ci/run really runs it.
Every node id in the table (`test` and `also`) is checked to exist.

The default run takes about a minute on 2 cores (process start-ups dominate). Slow: the RL and Tinker
commands, and three commands whose near-identical form already runs in the default run elsewhere (smoke,
the embedded-server eval, the DFlash demo; their `also`): 5-6 minutes together.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
THIS = "tests/test_readme_commands.py"
READMES = [ROOT / "README.md", *sorted(p for p in (ROOT / "examples").rglob("README*") if p.is_file())]


def _load_helper(name: str):
    """tests/ is not on sys.path (importlib import mode): the helper module is loaded from its file."""
    spec = importlib.util.spec_from_file_location(f"foveal_tests_{name}", Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


shell = _load_helper("readme_shell")
Background, rebound, with_flags = shell.Background, shell.rebound, shell.with_flags


def all_readme_commands() -> list:
    return [command for readme in READMES for command in shell.readme_commands(readme, ROOT)]


# ---------------------------------------------------------------------------------------------------------
# The table: every README command and how it is exercised


@dataclass(frozen=True)
class Case:
    how: Literal["run", "checked", "ci"]
    test: str
    """The node id of the test that runs (or checks) the command."""
    why: str = ""
    """For "checked" and "ci": why it is not run here, and what is checked instead."""
    also: tuple[str, ...] = ()
    """Existing tests that run the same thing at another size (their node ids are checked to exist)."""


def here(name: str) -> str:
    return f"{THIS}::{name}"


MAIN_JOB = "uv run --locked foveal rl --config examples/rl_tiny_colors.toml"
LEARNS_TO_SEE = "tests/test_rl_learns_to_see.py::test_rl_learns_to_see_and_its_blind_control_does_not"
SERVE = (
    "uv run foveal serve --model.name_or_path tiny:qwen2_5_vl --inference.port 8000 "
    "--inference.served_model_name '[\"my-model\"]'"
)
EVAL_ENDPOINT = (
    "uv run foveal eval --eval.endpoint http://127.0.0.1:8000 --eval.api openai --eval.served_model my-model"
)
CONFIG_SHOW = "uv run foveal config show --kind sft --config examples/sft_tiny_shapes.toml --trainer.optim.lr 1e-5"
TEST_COMMAND = 'python3 -m pip install -q "uv==0.13.8" && uv run --locked pytest -n auto -m "not slow and not gpu"'
TINKER_SERVE = (
    "FOVEAL_TINKER_API_KEY=tml-change-me-0123456789 uv run foveal serve-tinker --config examples/tinker/serve_tiny.toml"
)
TINKER_CLIENT = (
    "TINKER_API_KEY=tml-change-me-0123456789 uv run python examples/tinker/vlm_classifier.py "
    "--base-url http://127.0.0.1:8100"
)

COMMANDS: dict[str, Case] = {
    f'python3 -m pip install -q "uv==0.13.8" && {MAIN_JOB}': Case(
        "run", here("test_main_job_rl_on_colors_runs_seeing_and_blind"),
        why="the pip install of uv is the set-up .ci/run does (test_ci_installs_the_uv_the_readme_pins)",
        also=(LEARNS_TO_SEE, here("test_ci_installs_the_uv_the_readme_pins")),
    ),
    "uv run foveal rl --config examples/rl_tiny_colors.toml": Case(
        "run", here("test_main_job_rl_on_colors_runs_seeing_and_blind"), also=(LEARNS_TO_SEE,)
    ),
    "uv run foveal rl --config examples/rl_tiny_colors.toml --trainer.checkpoint.resume true": Case(
        "run", here("test_main_job_resumes_from_its_run_folder")
    ),
    "uv run foveal rl --config examples/rl_tiny_shapes.toml": Case("run", here("test_rl_shapes_demo_runs")),
    "uv run foveal rl --config run.toml --connect": Case(
        "run", here("test_rl_connects_to_the_readme_server"),
        also=("tests/test_rl_end_to_end.py::test_foveal_rl_connects_to_running_servers_and_leaves_them_on_the_last_weights",),
    ),
    "uv run --locked foveal smoke": Case(
        "run", here("test_smoke_builds_the_tiny_vlm_and_runs_a_forward_pass"),
        also=("tests/test_cli_integration.py::test_readme_main_job_builds_the_tiny_vlm_and_runs_a_forward_pass",),
    ),
    TEST_COMMAND: Case(
        "ci", here("test_ci_runs_exactly_the_readme_test_command"),
        why="the test suite itself: .ci/run reads it from between the ci:test-command markers and runs it",
    ),
    CONFIG_SHOW: Case(
        "run", here("test_config_show_prints_the_resolved_config_with_the_override")
    ),
    "uv run foveal sft --config examples/sft_tiny_shapes.toml": Case(
        "run", here("test_sft_demo_trains_and_writes_a_checkpoint")
    ),
    "uv run foveal sft --config examples/sft_tiny_shapes.toml --trainer.checkpoint.resume true": Case(
        "run", here("test_sft_demo_resumes_from_its_checkpoint")
    ),
    "uv run torchrun --nproc-per-node 8 -m foveal.configs sft --config my_run.toml": Case(
        "checked", here("test_torchrun_launch_is_installed"),
        why="not runnable here: 8 ranks (a GPU node) and the user's own my_run.toml; the same launch with 2 CPU "
        "ranks (gloo, FSDP2) runs in the existing test in `also`",
        also=("packages/trainer/tests/training/test_distributed.py::test_two_gloo_processes_match_one_process",),
    ),
    SERVE: Case("run", here("test_serve_answers_health_and_lists_the_served_name")),
    "uv run foveal serve --config run.toml --inference.backend vllm": Case(
        "checked", here("test_vllm_serve_config_loads"),
        why="not runnable here: vLLM needs CUDA and the foveal-trainer[vllm] extra; checked: the serving sections "
        "of examples/rl_qwen2_5_vl_3b.toml as run.toml load through ServeConfig with --inference.backend vllm",
    ),
    "uv run foveal router --upstream http://127.0.0.1:8000 --upstream http://127.0.0.1:8001": Case(
        "run", here("test_router_fronts_both_servers_and_eval_runs_through_it")
    ),
    "uv run foveal eval --eval.environment shapes --eval.num_examples 32": Case(
        "run", here("test_eval_with_the_embedded_server_writes_results_summary_and_report"),
        also=("tests/test_eval_command.py::test_foveal_eval_starts_and_stops_the_embedded_server",),
    ),
    EVAL_ENDPOINT: Case("run", here("test_eval_against_the_readme_server")),
    TINKER_SERVE: Case("run", here("test_tinker_classifier_trains_saves_and_samples")),
    TINKER_CLIENT: Case(
        "run", here("test_tinker_classifier_trains_saves_and_samples"),
        also=(
            "packages/trainer/tests/tinker_service/test_sdk_end_to_end.py::"
            "test_vlm_classifier_sft_loop_trains_and_the_saved_sampler_serves_the_new_weights",
        ),
    ),
    "uv run foveal dflash --config examples/dflash_tiny.toml": Case(
        "run", here("test_dflash_demo_trains_a_draft"),
        also=("packages/trainer/tests/dflash/test_train.py::test_foveal_dflash_command_runs_from_the_example_config",),
    ),
    "uv run foveal dflash --config examples/dflash_qwen2_5_vl_3b.toml": Case(
        "checked", here("test_every_example_config_loads_through_config_show"),
        why="not runnable here: a CUDA GPU and Qwen2.5-VL-3B-Instruct from the Hugging Face hub; checked: the "
        "config loads and validates through `foveal config show --kind dflash`",
    ),
    "uv run --locked --isolated --package foveal-renderers pytest packages/renderers": Case(
        "ci", here("test_ci_runs_each_package_in_isolation"),
        why=".ci/run runs this for every package (with -q -n 2 -m 'not slow and not gpu')",
    ),
    "bash .ci/run": Case(
        "ci", here("test_ci_script_is_valid_bash"), why="the CI entry point itself; checked: bash parses it"
    ),
    "uv run pytest -m slow": Case(
        "checked", here("test_slow_and_gpu_markers_are_registered"),
        why="not run from a test: it is a whole-suite run (this module's slow tests included, tens of minutes); "
        "CI runs the README main job's slow test (also); checked: the marker is registered",
        also=(LEARNS_TO_SEE,),
    ),
    "uv run pytest -m gpu": Case(
        "checked", here("test_slow_and_gpu_markers_are_registered"),
        why="not runnable here: the GPU tests need a CUDA device; checked: the marker is registered",
    ),
}

# Example files a README names only in prose (no README command runs them).
NAMED_NOT_RUN = {
    "examples/rl_qwen2_5_vl_3b.toml": Case(
        "checked", here("test_every_example_config_loads_through_config_show"),
        why="not runnable here: a CUDA node, Qwen2.5-VL-3B-Instruct from the hub and vLLM; checked: it loads "
        "through `foveal config show --kind rl`",
    ),
    "examples/slurm/rl_multinode.sbatch": Case(
        "checked", here("test_slurm_script_parses"),
        why="not runnable here: a SLURM cluster of GPU nodes; checked: bash parses it, its example config exists",
    ),
    "examples/tinker/README.md": Case(
        "checked", here("test_every_readme_command_has_a_case"), why="a README: its commands are in COMMANDS"
    ),
}

# Every example config, loaded through the loader the CLI uses (`foveal config show --kind KIND`).
EXAMPLE_CONFIG_KINDS = {
    "examples/dflash_qwen2_5_vl_3b.toml": "dflash",
    "examples/dflash_tiny.toml": "dflash",
    "examples/rl_qwen2_5_vl_3b.toml": "rl",
    "examples/rl_tiny_colors.toml": "rl",
    "examples/rl_tiny_shapes.toml": "rl",
    "examples/sft_tiny_shapes.toml": "sft",
    "examples/tinker/serve_tiny.toml": "tinker",
}


# ---------------------------------------------------------------------------------------------------------
# The table against the READMEs


def test_every_readme_command_has_a_case() -> None:
    commands = all_readme_commands()
    assert len(commands) >= 20, commands  # the parser still finds the READMEs' commands
    missing = [f"{c.file}:{c.line}: {c.text}" for c in commands if c.text not in COMMANDS]
    assert not missing, "README commands with no entry in COMMANDS (tests/test_readme_commands.py):\n" + "\n".join(
        missing
    )


def test_every_case_is_a_command_a_readme_still_shows() -> None:
    shown = {c.text for c in all_readme_commands()}
    assert not [text for text in COMMANDS if text not in shown]


def test_every_case_names_tests_that_exist() -> None:
    for text, case in {**COMMANDS, **NAMED_NOT_RUN}.items():
        assert case.how == "run" or case.why, f"{text!r}: say why it is not run"
        for node in (case.test, *case.also):
            path, name = node.split("::")
            tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
            names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
            assert name in names, f"{text!r}: {node} does not exist"


def test_every_example_file_a_readme_names_exists_and_is_run_or_listed() -> None:
    named = {path for readme in READMES for path in re.findall(r"examples/[\w./-]*\w", readme.read_text())}
    assert not [path for path in named if not (ROOT / path).exists()]
    in_commands = {path for path in named if any(path in c.text for c in all_readme_commands())}
    assert named - in_commands == set(NAMED_NOT_RUN)


def test_the_parser_reads_fenced_indented_and_inline_commands(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "Run `uv run --locked foveal smoke`; the first `uv run` syncs; `foveal sft` is prose.\n\n"
        "```bash\nuv run foveal sft \\\n  --config a.toml   # a comment\nFOO=1 uv run foveal x --k '[\"#\"]'\n```\n\n"
        "```\npackages/\n    tree.py\n```\n\n    uv run foveal serve\n",
        encoding="utf-8",
    )
    assert [c.text for c in shell.readme_commands(readme, ROOT)] == [
        "uv run --locked foveal smoke",
        "uv run foveal sft --config a.toml",
        "FOO=1 uv run foveal x --k '[\"#\"]'",
        "uv run foveal serve",
    ]


# ---------------------------------------------------------------------------------------------------------
# Running a README command


def readme_text(text: str) -> str:
    """`text` as a README shows it (a test only runs what a README still shows)."""
    assert text in {c.text for c in all_readme_commands()}, f"no README shows {text!r} any more"
    return text


def to_argv(text: str) -> tuple[dict[str, str], list[str]]:
    """The environment and argv of a command a README shows."""
    return shell.to_argv(readme_text(text))


def after_setup(text: str) -> tuple[dict[str, str], list[str]]:
    """The job of a README's `set-up && job` line (the set-up is the uv install CI does)."""
    setup, _, job = readme_text(text).partition(" && ")
    assert setup == 'python3 -m pip install -q "uv==0.13.8"', setup
    return shell.to_argv(job)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HOME of every command here: the tiny model is built once under ~/.cache/foveal and shared."""
    return tmp_path_factory.mktemp("home")


def run(home: Path, env: dict[str, str], argv: list[str], cwd: Path = ROOT, timeout: float = 300):
    return shell.run_command(home, env, argv, cwd, timeout)


def start(home: Path, env: dict[str, str], argv: list[str], log: Path):
    return shell.Background.start(home, env, argv, ROOT, log)


def metric_steps(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------------------
# Configuration, smoke, SFT, DFlash


def test_config_show_prints_the_resolved_config_with_the_override(home: Path) -> None:
    env, argv = to_argv(CONFIG_SHOW)
    shown = tomllib.loads(run(home, env, argv).stdout)
    assert shown["trainer"]["optim"]["lr"] == 1e-5 and shown["sft"]["dataset"] == "tiny:demo"


@pytest.mark.parametrize("path", sorted(EXAMPLE_CONFIG_KINDS))
def test_every_example_config_loads_through_config_show(home: Path, path: str) -> None:
    foveal = shutil.which("foveal", path=str(Path(sys.executable).parent))
    assert foveal
    argv = [foveal, "config", "show", "--kind", EXAMPLE_CONFIG_KINDS[path], "--config", path]
    shown = tomllib.loads(run(home, {}, argv).stdout)
    assert shown["model"]["name_or_path"] == tomllib.loads((ROOT / path).read_text())["model"]["name_or_path"]


def test_example_config_table_names_every_example_config() -> None:
    assert sorted(str(p.relative_to(ROOT)) for p in (ROOT / "examples").rglob("*.toml")) == sorted(EXAMPLE_CONFIG_KINDS)


@pytest.mark.slow  # `foveal smoke --family qwen2_5_vl` runs in the default run (Case.also)
def test_smoke_builds_the_tiny_vlm_and_runs_a_forward_pass(home: Path) -> None:
    env, argv = to_argv("uv run --locked foveal smoke")
    out = run(home, env, argv).stdout
    assert "logits" in out and "loss" in out, out


SFT_SMALL = {"--sft.max_steps": "2", "--trainer.schedule.warmup_steps": "1"}


@pytest.fixture(scope="module")
def sft_run(home: Path) -> Path:
    run_dir = home / "sft"
    env, argv = to_argv("uv run foveal sft --config examples/sft_tiny_shapes.toml")
    run(home, env, with_flags(argv, {**SFT_SMALL, "--logging.run_dir": str(run_dir)}))
    return run_dir


def test_sft_demo_trains_and_writes_a_checkpoint(sft_run: Path) -> None:
    assert metric_steps(sft_run / "metrics.jsonl") == [1, 2]
    assert (sft_run / "checkpoints" / "step-00000002" / "model.safetensors").is_file()
    assert (sft_run / "loss.png").is_file()


def test_sft_demo_resumes_from_its_checkpoint(home: Path, sft_run: Path) -> None:
    env, argv = to_argv("uv run foveal sft --config examples/sft_tiny_shapes.toml --trainer.checkpoint.resume true")
    out = run(home, env, with_flags(argv, {**SFT_SMALL, "--sft.max_steps": "3", "--logging.run_dir": str(sft_run)}))
    assert "steps 3-3" in out.stdout, out.stdout
    assert metric_steps(sft_run / "metrics.jsonl") == [1, 2, 3]
    assert (sft_run / "checkpoints" / "step-00000003" / "model.safetensors").is_file()


def test_torchrun_launch_is_installed(home: Path) -> None:
    """`torchrun ... -m foveal.configs sft`: the launcher script is installed and the module entry knows `sft`."""
    assert shutil.which("torchrun", path=str(Path(sys.executable).parent))
    out = run(home, {}, [sys.executable, "-m", "foveal.configs", "sft", "--help"]).stdout
    assert "--config" in out


@pytest.mark.slow  # the same command in-process, from the example config, runs in the default run (Case.also)
def test_dflash_demo_trains_a_draft(home: Path) -> None:
    run_dir = home / "dflash"
    env, argv = to_argv("uv run foveal dflash --config examples/dflash_tiny.toml")
    small = {"--dflash.max_steps": "2", "--dflash.train_examples": "8", "--dflash.eval_examples": "2",
             "--dflash.eval_every": "2", "--trainer.schedule.warmup_steps": "1",
             "--trainer.checkpoint.every_steps": "2", "--logging.run_dir": str(run_dir)}  # fmt: skip
    out = run(home, env, with_flags(argv, small)).stdout
    assert "trained draft: acceptance length" in out, out
    assert metric_steps(run_dir / "metrics.jsonl")[-1] == 2
    assert (run_dir / "checkpoints" / "step-00000002").is_dir() and (run_dir / "dflash.png").is_file()


def test_vllm_serve_config_loads(tmp_path: Path) -> None:
    from foveal.configs import load_config
    from foveal.trainer.serving.config import ServeConfig

    # run.toml: the GPU RL example whole, the file `foveal rl --config run.toml --connect` reads too.
    shutil.copy(ROOT / "examples" / "rl_qwen2_5_vl_3b.toml", tmp_path / "run.toml")
    tokens = shlex.split(readme_text("uv run foveal serve --config run.toml --inference.backend vllm"))
    assert tokens[:6] == ["uv", "run", "foveal", "serve", "--config", "run.toml"]
    config = load_config(ServeConfig, [tmp_path / "run.toml"], tokens[6:])
    assert config.inference.backend == "vllm" and config.model.name_or_path == "Qwen/Qwen2.5-VL-3B-Instruct"


# ---------------------------------------------------------------------------------------------------------
# Inference and evaluation: two README servers, the router in front of them, the README's eval commands


@pytest.fixture(scope="module")
def servers(home: Path) -> Iterator[list[Background]]:
    """The README's `foveal serve` twice (ports 8000 and 8001 in the README), on free ports."""
    env, argv = to_argv(SERVE)
    started = []
    try:
        for index in range(2):
            flags = {"--inference.port": "0", "--logging.run_dir": str(home / f"serve-{index}")}
            started.append(start(home, env, with_flags(argv, flags), home / f"serve-{index}.log"))
        for server in started:
            server.wait_until_healthy("/health")
        yield started
    finally:
        for server in started:
            server.stop()


def test_serve_answers_health_and_lists_the_served_name(servers: list[Background]) -> None:
    for server in servers:
        assert httpx.get(server.url + "/health").json()["status"] == "ok"
        names = [model["id"] for model in httpx.get(server.url + "/v1/models").json()["data"]]
        assert "my-model" in names and "tiny:qwen2_5_vl" in names


def check_eval_outputs(out_dir: Path, examples: int) -> None:
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["num_rollouts"] == examples and summary["failed"] == 0, summary
    assert len((out_dir / "results.jsonl").read_text().splitlines()) == examples
    assert (out_dir / "report.html").read_text().count("data:image/png;base64,") == examples


def test_eval_against_the_readme_server(home: Path, servers: list[Background], tmp_path: Path) -> None:
    env, argv = to_argv(EVAL_ENDPOINT)
    argv = with_flags(argv, {"--eval.num_examples": "2", "--logging.run_dir": str(tmp_path)})
    argv = rebound(argv, {8000: servers[0].port})
    out = run(home, env, argv).stdout
    assert "with my-model" in out and "failed rollouts: 0" in out, out
    check_eval_outputs(tmp_path / "eval", 2)


def test_router_fronts_both_servers_and_eval_runs_through_it(
    home: Path, servers: list[Background], tmp_path: Path
) -> None:
    env, argv = to_argv("uv run foveal router --upstream http://127.0.0.1:8000 --upstream http://127.0.0.1:8001")
    argv = rebound(argv, {8000: servers[0].port, 8001: servers[1].port})
    assert argv.count(servers[0].url) == argv.count(servers[1].url) == 1
    router = start(
        home, env, with_flags(argv, {"--inference.router.port": "0", "--logging.run_dir": str(tmp_path / "router")}),
        tmp_path / "router.log",
    )  # fmt: skip
    try:
        router.wait_until_healthy("/health")
        assert "for 2 servers" in router.log.read_text()
        assert "my-model" in [model["id"] for model in httpx.get(router.url + "/v1/models").json()["data"]]
        # The README's eval client command, pointed at the router instead of one server.
        env, argv = to_argv(EVAL_ENDPOINT)
        argv = with_flags(argv, {"--eval.num_examples": "2", "--logging.run_dir": str(tmp_path)})
        argv = rebound(argv, {8000: router.port})
        run(home, env, argv)
        check_eval_outputs(tmp_path / "eval", 2)
    finally:
        router.stop()


@pytest.mark.slow  # `foveal eval` with its embedded server runs in the default run (Case.also)
def test_eval_with_the_embedded_server_writes_results_summary_and_report(home: Path, tmp_path: Path) -> None:
    env, argv = to_argv("uv run foveal eval --eval.environment shapes --eval.num_examples 32")
    out = run(home, env, with_flags(argv, {"--eval.num_examples": "2", "--logging.run_dir": str(tmp_path)})).stdout
    assert "eval shapes (eval split): 2 examples" in out, out
    check_eval_outputs(tmp_path / "eval", 2)


# ---------------------------------------------------------------------------------------------------------
# Set-up and CI


def test_ci_runs_exactly_the_readme_test_command() -> None:
    """.ci/run extracts its test command from the README with this very line, then runs it with bash."""
    ci = (ROOT / ".ci" / "run").read_text()
    (extract,) = [line for line in ci.splitlines() if line.startswith("test_command=$(")]
    script = f'{extract}\nprintf %s "$test_command"'
    extracted = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert extracted == readme_text(TEST_COMMAND)
    assert 'bash -euo pipefail -c "$test_command"' in ci


def test_ci_runs_the_slow_readme_commands_too() -> None:
    """The cases marked slow leave the default run, not CI: .ci/run runs them as a step of their own."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert "uv run --locked pytest tests/test_readme_commands.py -m slow" in ci


def test_ci_installs_the_uv_the_readme_pins() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'python3 -m pip install --quiet "uv==0.13.8"' in ci
    assert "uv sync --locked --all-packages" in ci


def test_ci_runs_each_package_in_isolation() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    readme_text("uv run --locked --isolated --package foveal-renderers pytest packages/renderers")
    assert "for pkg in configs renderers verifiers trainer; do" in ci
    assert 'uv run --locked --isolated --package "foveal-$pkg" \\\n        pytest "packages/$pkg"' in ci


def test_ci_script_is_valid_bash() -> None:
    readme_text("bash .ci/run")
    subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")], check=True)


def test_slurm_script_parses() -> None:
    script = ROOT / "examples" / "slurm" / "rl_multinode.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    (usage,) = re.findall(r"#\s+sbatch (examples/slurm/rl_multinode\.sbatch) (\S+)", script.read_text())
    assert (ROOT / usage[1]).is_file()


def test_slow_and_gpu_markers_are_registered() -> None:
    pytest_config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--strict-markers" in pytest_config["addopts"]
    registered = {marker.split(":")[0] for marker in pytest_config["markers"]}
    assert {"slow", "gpu"} <= registered


# ---------------------------------------------------------------------------------------------------------
# RL (slow: each run starts a server, an orchestrator and a trainer, and the main job runs twice)

RL_SMALL = {"--rl.max_steps": "2", "--rl.warmup_sft_steps": "2", "--rl.eval_examples": "4",
            "--trainer.schedule.warmup_steps": "1"}  # fmt: skip


@pytest.fixture(scope="module")
def colors_run(home: Path) -> tuple[Path, str]:
    """The README main job, shortened: 2 warm-up and 2 RL steps, then its blind control."""
    env, argv = after_setup(f'python3 -m pip install -q "uv==0.13.8" && {MAIN_JOB}')
    assert to_argv("uv run foveal rl --config examples/rl_tiny_colors.toml")[1] == argv  # the same command
    run_dir = home / "rl_tiny_colors"
    done = run(home, env, with_flags(argv, {**RL_SMALL, "--logging.run_dir": str(run_dir)}), timeout=900)
    return run_dir, done.stdout


@pytest.mark.slow
def test_main_job_rl_on_colors_runs_seeing_and_blind(colors_run: tuple[Path, str]) -> None:
    run_dir, out = colors_run
    assert "seeing: eval colors" in out and "blind: eval colors" in out, out
    for folder in (run_dir, run_dir / "blind"):
        assert metric_steps(folder / "metrics.jsonl") == [1, 2]
        assert [json.loads(line)["step"] for line in (folder / "eval.jsonl").read_text().splitlines()] == [0, 2]
    assert (run_dir / "seeing_vs_blind.png").is_file() and (run_dir / "eval_reward.png").is_file()


@pytest.mark.slow
def test_main_job_resumes_from_its_run_folder(home: Path, colors_run: tuple[Path, str]) -> None:
    run_dir, _ = colors_run
    env, argv = to_argv("uv run foveal rl --config examples/rl_tiny_colors.toml --trainer.checkpoint.resume true")
    flags = {**RL_SMALL, "--rl.max_steps": "3", "--logging.run_dir": str(run_dir)}
    run(home, env, with_flags(argv, flags), timeout=900)
    for folder in (run_dir, run_dir / "blind"):
        assert metric_steps(folder / "metrics.jsonl") == [1, 2, 3]  # no step lost or repeated


@pytest.mark.slow
def test_rl_shapes_demo_runs(home: Path) -> None:
    env, argv = to_argv("uv run foveal rl --config examples/rl_tiny_shapes.toml")
    run_dir = home / "rl_tiny_shapes"
    out = run(home, env, with_flags(argv, {**RL_SMALL, "--logging.run_dir": str(run_dir)}), timeout=900).stdout
    assert "foveal rl: done" in out and "eval shapes" in out, out
    assert metric_steps(run_dir / "metrics.jsonl") == [1, 2]
    assert (run_dir / "rl.png").is_file() and (run_dir / "eval_reward.png").is_file()


@pytest.mark.slow
def test_rl_connects_to_the_readme_server(home: Path, servers: list[Background], tmp_path: Path) -> None:
    """`--connect`: run.toml names the first README server (its control token, its image store) and no server
    of the run's own starts; afterwards that server serves the last step's weights."""
    server_dir = home / "serve-0"
    token = (server_dir / "inference" / "control_token").read_text().strip()
    (tmp_path / "run.toml").write_text(
        f"""
[model]
name_or_path = "tiny:qwen2_5_vl"

[multimodal]
offload_dir = {json.dumps(str(server_dir / "assets"))}

[inference]
api_token = {json.dumps(token)}
max_model_len = 96

[orchestrator]
endpoints = [{json.dumps(servers[0].url)}]
batch_size = 2
rollouts_per_prompt = 2
max_tokens = 6

[[orchestrator.environments]]
name = "shapes"
args = {{ image_size = 56 }}

[rl]
max_steps = 2
eval_examples = 2

[trainer]
device = "cpu"
seq_len = 128
micro_batch_tokens = 512
""",
        encoding="utf-8",
    )
    env, argv = to_argv("uv run foveal rl --config run.toml --connect")
    out = run(home, env, with_flags(argv, {"--logging.run_dir": str(tmp_path / "run")}), cwd=tmp_path, timeout=900)
    assert "foveal rl: done" in out.stdout, out.stdout
    assert metric_steps(tmp_path / "run" / "metrics.jsonl") == [1, 2]
    assert not (tmp_path / "run" / "launch" / "serve-0.toml").exists()  # no server of its own
    info = httpx.get(servers[0].url + "/v1/info", headers={"Authorization": f"Bearer {token}"}).json()
    assert info["weight_version"] == 2, info


# ---------------------------------------------------------------------------------------------------------
# Tinker (slow: the service, then the example script training, saving and sampling)


@pytest.mark.slow
def test_tinker_classifier_trains_saves_and_samples(home: Path, tmp_path: Path) -> None:
    env, argv = to_argv(TINKER_SERVE)
    service = start(
        home, env, with_flags(argv, {"--tinker.port": "0", "--logging.run_dir": str(tmp_path)}), tmp_path / "tinker.log"
    )
    try:
        service.wait_until_healthy("/api/v1/healthz", headers={"X-API-Key": env["FOVEAL_TINKER_API_KEY"]})
        client_env, client = to_argv(TINKER_CLIENT)
        out = run(home, client_env, rebound(with_flags(client, {"--steps": "2"}), {8100: service.port})).stdout
    finally:
        service.stop()
    assert re.search(r"nll: first step [\d.]+, last step [\d.]+", out), out
    assert "saved sampler weights: tinker://" in out and len(re.findall(r" -> '", out)) == 4, out
    (saved,) = tmp_path.glob("tinker/*/sampler_weights/shapes-classifier")
    assert (saved / "config.json").is_file()
