"""`foveal eval` end to end: an environment against a real server, results JSONL, summary and report.

`run_eval` is driven in-process against a server started here (token API and OpenAI chat API), and the
CLI is run as users run it, where it starts the embedded server as a child process and stops it again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from foveal.configs import EvalConfig, LoggingConfig, ModelConfig, MultimodalConfig, load_config
from foveal.trainer.serving.config import ServeConfig
from foveal.trainer.serving.testing import RunningServer, start_server
from foveal.trainer.tiny_models import build_tiny_model
from foveal.verifiers.eval.results import read_results
from foveal.verifiers.eval.runner import run_eval

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Served:
    server: RunningServer
    run_dir: Path
    model: Path
    """The tiny VLM's folder, built in a temporary cache: served by path, so nothing touches ~/.cache."""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    run_dir = tmp_path_factory.mktemp("run")
    model = build_tiny_model("qwen2_5_vl", tmp_path_factory.mktemp("tiny-cache"))
    config = ServeConfig(
        model=ModelConfig(name_or_path=str(model)),
        multimodal=MultimodalConfig(offload_dir=run_dir / "assets"),
        logging=LoggingConfig(run_dir=run_dir),
    )
    running = start_server(config)
    try:
        yield Served(running, run_dir, model)
    finally:
        running.stop()


def eval_config(served: Served, out: Path, *overrides: str) -> EvalConfig:
    run_dir = served.run_dir
    base = [
        "--model.name_or_path", str(served.model), "--eval.endpoint", served.server.url,
        "--logging.run_dir", str(run_dir), "--multimodal.offload_dir", str(run_dir / "assets"),
        "--eval.output_dir", str(out), "--eval.num_examples", "3", "--eval.rollouts_per_example", "2",
        "--eval.max_tokens", "8", "--eval.temperature", "1.0",
    ]  # fmt: skip
    return load_config(EvalConfig, [], [*base, *overrides])


def test_eval_against_an_endpoint_writes_results_summary_and_report(served: Served, tmp_path: Path) -> None:
    outputs = run_eval(eval_config(served, tmp_path / "out"), show_progress=False)
    rollouts = read_results(outputs.results)
    assert len(rollouts) == 6 and all(not r.errors and r.token_space for r in rollouts)
    summary = json.loads(outputs.summary_path.read_text())
    assert summary["environment"] == "shapes" and summary["num_rollouts"] == 6 and summary["failed"] == 0
    assert set(summary["pass_at_k"]) == {"1", "2"}
    assert summary["reward_mean"] == pytest.approx(sum(r.reward for r in rollouts) / 6)
    html = outputs.report.read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 3 and "shapes-0-eval-000002" in html


def test_eval_through_the_openai_chat_api(served: Served, tmp_path: Path) -> None:
    config = eval_config(
        served, tmp_path / "out", "--eval.api", "openai", "--eval.environment", "charts",
        "--eval.served_model", str(served.model),
    )  # fmt: skip
    outputs = run_eval(config, show_progress=False)
    rollouts = [r for group in outputs.groups for r in group]
    assert len(rollouts) == 6 and not [r.errors for r in rollouts if r.errors]
    assert all(not r.token_space and r.turns[0].text == r.last_reply() for r in rollouts)
    assert outputs.summary.environment == "charts" and outputs.report.is_file()


def test_an_unreachable_endpoint_fails_every_rollout_and_the_command_says_so(tmp_path: Path) -> None:
    result = foveal_eval(tmp_path, "--eval.endpoint", "http://127.0.0.1:9", "--eval.api", "openai")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "every rollout failed" in result.stderr and "unavailable" in result.stderr
    assert len((tmp_path / "run" / "eval" / "results.jsonl").read_text().splitlines()) == 2


def foveal_eval(home: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    script = shutil.which("foveal", path=str(Path(sys.executable).parent))
    assert script, "the foveal console script is not installed next to the interpreter"
    command = [
        script, "eval", "--no-progress", "--logging.run_dir", str(home / "run"),
        "--eval.num_examples", "2", "--eval.max_tokens", "6", *overrides,
    ]  # fmt: skip
    env = {**os.environ, "HOME": str(home)}  # tiny models are built under ~/.cache/foveal
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def test_foveal_eval_starts_and_stops_the_embedded_server(tmp_path: Path) -> None:
    result = foveal_eval(tmp_path, "--eval.rollouts_per_example", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reward" in result.stdout and "pass@2" in result.stdout and "report:" in result.stdout
    out = tmp_path / "run" / "eval"
    assert len((out / "results.jsonl").read_text().splitlines()) == 4
    assert (out / "report.html").is_file() and (out / "summary.json").is_file()
    assert oct((out / "serve.toml").stat().st_mode & 0o777) == "0o600"
    log = (out / "server.log").read_text()
    assert "serve: tiny:qwen2_5_vl on http://127.0.0.1:" in log
    port = int(log.split("on http://127.0.0.1:")[1].split()[0])
    assert not _listening(port), "the embedded server outlived the eval"


@pytest.mark.slow
def test_sigterm_to_foveal_eval_stops_the_embedded_server(tmp_path: Path) -> None:
    script = shutil.which("foveal", path=str(Path(sys.executable).parent))
    assert script
    command = [
        script, "eval", "--no-progress", "--logging.run_dir", str(tmp_path / "run"),
        "--eval.num_examples", "200", "--eval.max_tokens", "64",
    ]  # fmt: skip
    log = tmp_path / "run" / "eval" / "server.log"
    process = subprocess.Popen(command, env={**os.environ, "HOME": str(tmp_path)}, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        port = _wait_for_server(log, process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(90) == 128 + signal.SIGTERM
        assert not _listening(port), "the embedded server outlived the eval"
    finally:
        _kill_leftovers(process, tmp_path / "run" / "eval" / "serve.toml")


def _wait_for_server(log: Path, process: subprocess.Popen[bytes], limit_s: float = 300) -> int:
    """The embedded server's port, once it listens."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and process.poll() is None:
        text = log.read_text() if log.is_file() else ""
        if "on http://127.0.0.1:" in text:
            port = int(text.split("on http://127.0.0.1:")[1].split()[0])
            if _listening(port):
                return port
        time.sleep(0.5)
    raise AssertionError(f"the embedded server did not come up (eval exit {process.poll()})")


def _kill_leftovers(process: subprocess.Popen[bytes], serve_config: Path) -> None:
    """Stop the eval and any server started with this test's config, whatever state the test left them in."""
    if process.poll() is None:
        process.kill()
        process.wait()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(serve_config).encode() in cmdline.read_bytes():
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            pass  # gone meanwhile


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_bad_environment_name_is_a_one_line_error(tmp_path: Path) -> None:
    result = foveal_eval(tmp_path, "--eval.environment", "shapez", "--eval.endpoint", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("foveal eval: error: environment 'shapez' is not installed")
