"""`foveal rl` end to end with real processes: tiny VLM, embedded server, orchestrator and trainer.

A finished run folder is checked as a whole: every step's batch published once and atomically, the async
bound kept, the first step trained with the weights that sampled it (mismatch KL ~ 0), each pushed
checkpoint acknowledged by the servers with its version, and the final eval sampled by the server from
exactly the final checkpoint's weights (a fresh server loaded from that checkpoint answers the same tokens
and logprobs, and the initial weights answer otherwise). One run warms up with SFT and runs two steps
straight through; one kills the orchestrator (SIGKILL) after the first step, checks that the launcher
stops everything and refuses a non-resuming restart, resumes, and checks the same folder invariants; one
connects to a server the test runs and checks the server holds the last step's weights afterwards; one
kills the inference server after the first step and checks that the launcher restarts it and the same
launch finishes with the same folder invariants.
Each takes 15-60 s on 2 cores (process start-ups dominate).

The random-weight model answers nothing right, so every reward is 0 and every advantage 0; weight decay
alone moves its weights (lr and decay are large for that), which is what tells the pushed weights from
the initial ones.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from foveal.configs import InferenceConfig, LoggingConfig, ModelConfig, MultimodalConfig
from foveal.renderers.contract import encode_mmraw
from foveal.renderers.inference.wire import Endpoints, GenerateRequest, GenerateResponse, SamplingParams, ServerInfo
from foveal.trainer.serving.config import ServeConfig
from foveal.trainer.serving.testing import start_server
from foveal.trainer.training.metrics import read_metrics
from foveal.trainer.runs.rollouts import batch_path, published_steps, read_batch
from foveal.trainer.tiny_models import build_tiny_model
from foveal.verifiers.blind import BLANK_RGB
from foveal.verifiers.eval.results import read_results
from foveal.verifiers.rollout import Rollout

ROOT = Path(__file__).resolve().parents[1]
STEPS = 3
ASYNC = 1


def foveal_rl(home: Path, model: Path, *overrides: str) -> subprocess.Popen[str]:
    script = shutil.which("foveal", path=str(Path(sys.executable).parent))
    assert script, "the foveal console script is not installed next to the interpreter"
    command = [
        script, "rl", "--no-progress", "--model.name_or_path", str(model), "--logging.run_dir", str(home / "run"),
        "--logging.plots", "true", "--orchestrator.environments", '[{"name": "shapes", "args": {"image_size": 56}}]',
        "--orchestrator.batch_size", "2", "--orchestrator.rollouts_per_prompt", "2", "--orchestrator.max_tokens", "6",
        "--orchestrator.max_async_level", str(ASYNC), "--rl.max_steps", str(STEPS), "--rl.eval_examples", "2",
        "--inference.max_model_len", "96", "--inference.device", "cpu", "--trainer.device", "cpu",
        "--trainer.seq_len", "128", "--trainer.micro_batch_tokens", "512",
        "--trainer.optim.lr", "0.05", "--trainer.optim.weight_decay", "0.5", "--trainer.schedule.kind", "constant",
        *overrides,
    ]  # fmt: skip
    env = {**os.environ, "HOME": str(home)}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)


def finish(process: subprocess.Popen[str], timeout: float = 600) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, out, err


def kill_after_step_one(run_dir: Path, launcher: subprocess.Popen[str], name: str) -> int:
    """Wait for the first published batch, then SIGKILL the launcher's child `name`; returns its pid."""
    deadline = time.monotonic() + 300
    while not published_steps(run_dir):
        assert launcher.poll() is None, finish(launcher)
        assert time.monotonic() < deadline, "no batch was published in 300 s"
        time.sleep(0.05)
    processes = json.loads((run_dir / "launch" / "processes.json").read_text())
    pid = next(row["pid"] for row in processes if row["name"] == name)
    os.kill(pid, signal.SIGKILL)
    return pid


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model("qwen2_5_vl", tmp_path_factory.mktemp("tiny-cache"))


def test_an_rl_run_warms_up_publishes_trains_and_serves_every_step(tiny_model: Path, tmp_path: Path) -> None:
    """With an SFT warm-up: the servers start from the configured model and are given the warm-up checkpoint as
    version 0, so step 1 (sampled by the servers, trained from the warm-up checkpoint) still has mismatch ~ 0."""
    warmup = ["--rl.warmup_sft_steps", "2", "--rl.warmup_sft_batch_size", "4", "--rl.warmup_sft_lr", "0.01"]
    code, out, err = finish(foveal_rl(tmp_path, tiny_model, "--rl.max_steps", "2", "--rl.eval_examples", "1", *warmup))
    assert code == 0, err
    run_dir = tmp_path / "run"
    warm_start = run_dir / "warmup" / "checkpoints" / "step-00000002"
    assert json.loads((run_dir / "run_meta.json").read_text())["settings"]["model.name_or_path"] == str(warm_start)
    assert len((run_dir / "warmup" / "data" / "train.jsonl").read_text().splitlines()) == 8
    check_run_folder(run_dir, tiny_model, steps=2)


def test_an_rl_run_killed_midway_resumes_without_lost_or_repeated_steps(tiny_model: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    launcher = foveal_rl(tmp_path, tiny_model)
    pid = kill_after_step_one(run_dir, launcher, "orchestrator")
    code, _, err = finish(launcher)
    assert code == 1, err
    assert f"foveal rl: error: orchestrator (pid {pid}) exited with status -9 (killed by SIGKILL)" in err
    processes = json.loads((run_dir / "launch" / "processes.json").read_text())
    assert all(not _alive(row["pid"]) for row in processes), "the launcher left a child running"

    refused = finish(foveal_rl(tmp_path, tiny_model))
    assert refused[0] == 1 and "pass --trainer.checkpoint.resume true" in refused[2]
    code, out, err = finish(foveal_rl(tmp_path, tiny_model, "--trainer.checkpoint.resume", "true"))
    assert code == 0, err
    assert "foveal rl: done" in out and "eval shapes" in out
    check_run_folder(run_dir, tiny_model, steps=STEPS)


def test_an_inference_server_killed_midway_is_restarted_and_the_run_loses_no_step(
    tiny_model: Path, tmp_path: Path
) -> None:
    """SIGKILL of the only inference server after the first step: the launcher starts it again on its port, the
    router holds the requests meanwhile and loads the newest pushed weights into it before it serves, and the
    same launch finishes every step (check_run_folder: each step published and trained once, every rollout
    sampled from the weights pushed for its step, the final eval from the last checkpoint's weights)."""
    run_dir = tmp_path / "run"
    launcher = foveal_rl(tmp_path, tiny_model, "--rl.max_steps", "4")
    pid = kill_after_step_one(run_dir, launcher, "server-0")
    code, out, err = finish(launcher)
    assert code == 0, err
    assert f"server-0 (pid {pid}) exited with status -9 (killed by SIGKILL); restart 1 of 3" in err
    processes = {row["name"]: row for row in json.loads((run_dir / "launch" / "processes.json").read_text())}
    assert processes["server-0"]["restarts"] == 1 and processes["server-0"]["pid"] != pid
    assert "router" in processes
    check_run_folder(run_dir, tiny_model, steps=4)


def test_a_blind_control_runs_the_same_job_on_grey_images_and_shares_a_grey_warm_up(
    tiny_model: Path, tmp_path: Path
) -> None:
    """`rl.blind_control`: after the run, the same job in <run dir>/blind where every image the policy, the trainer
    and the evals meet is grey (same sizes, so the same tokens); a warm-up on grey images is shared, not repeated;
    the summary prints both evals and seeing_vs_blind.png plots them."""
    grey_warmup = ["--rl.warmup_sft_steps", "1", "--rl.warmup_sft_batch_size", "2", "--rl.warmup_images", "blank"]
    short = ["--rl.max_steps", "1", "--rl.eval_examples", "1", "--rl.blind_control", "true"]
    code, out, err = finish(foveal_rl(tmp_path, tiny_model, *short, *grey_warmup))
    assert code == 0, err
    run_dir, blind = tmp_path / "run", tmp_path / "run" / "blind"
    assert (blind / "warmup").is_symlink() and (blind / "warmup").resolve() == (run_dir / "warmup").resolve()
    assert json.loads((blind / "run_meta.json").read_text())["settings"]["rl.images"] == "blank"

    def colours(folder: Path) -> set[tuple[int, int, int]]:
        found: set[tuple[int, int, int]] = set()
        for png in folder.rglob("*.png"):
            with Image.open(png) as image:
                found |= set(image.convert("RGB").get_flattened_data())
        return found

    assert colours(blind / "assets") == colours(run_dir / "warmup" / "assets") == {BLANK_RGB}
    assert len(colours(run_dir / "assets")) > 1  # the seeing run's images are the scenes
    for folder in (run_dir, blind):
        check_run_folder(folder, tiny_model, steps=1)
    assert "seeing: eval shapes" in out and "blind: eval shapes" in out
    assert (run_dir / "seeing_vs_blind.png").is_file()


def test_foveal_rl_connects_to_running_servers_and_leaves_them_on_the_last_weights(
    tiny_model: Path, tmp_path: Path
) -> None:
    run_dir, token = tmp_path / "run", "connect-test-token"
    config = ServeConfig(
        model=ModelConfig(name_or_path=str(tiny_model)),
        multimodal=MultimodalConfig(offload_dir=run_dir / "assets"),
        logging=LoggingConfig(run_dir=tmp_path / "server"),
        inference=InferenceConfig(api_token=token),
    )
    with start_server(config) as server:
        connect = ["--connect", "--orchestrator.endpoints", json.dumps([server.url]), "--inference.api_token", token,
                   "--multimodal.offload_dir", str(run_dir / "assets"), "--rl.max_steps", "2"]  # fmt: skip
        code, out, err = finish(foveal_rl(tmp_path, tiny_model, *connect))
        assert code == 0, err
        info = ServerInfo.model_validate_json(httpx.get(server.url + Endpoints.INFO, headers=server.data_headers).content)
        assert (info.weight_version, info.state) == (2, "serving")  # the final eval's push: the trainer's last step
    assert not (run_dir / "launch" / "serve-0.toml").exists()  # no server of its own
    assert token not in out + err and token not in (run_dir / "logs" / "orchestrator.log").read_text()
    check_run_folder(run_dir, tiny_model, steps=2)


def check_run_folder(run_dir: Path, initial_model: Path, steps: int) -> None:
    """Everything a finished run folder must show, whatever happened to its processes on the way."""
    # Every step published exactly once, whole, and within the async bound.
    assert published_steps(run_dir) == list(range(1, steps + 1))
    assert not [p.name for p in (run_dir / "rollouts").iterdir() if p.name.endswith(".tmp")]
    batches = [read_batch(batch_path(run_dir, step), step) for step in range(1, steps + 1)]
    assert all(step - 1 - ASYNC <= batch.policy_version < step for step, batch in enumerate(batches, start=1))
    assert all(sample.mm_refs and sample.inference_logprobs for batch in batches for sample in batch.samples)
    steps_logged = [json.loads(line) for line in (run_dir / "orchestrator.jsonl").read_text().splitlines()]
    assert [row["step"] for row in steps_logged] == list(range(1, steps + 1))
    assert [row["policy_version"] for row in steps_logged] == [batch.policy_version for batch in batches]
    # Every rollout of a step was sampled from the weights pushed for it (no server served stale weights).
    assert [row["policy_version"] for row in steps_logged] == [row["served_version"] for row in steps_logged]

    # The trainer trained each step once; step 1 with the very weights that sampled it.
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [row["step"] for row in rows] == list(range(1, steps + 1))
    assert rows[0]["policy_lag"] == 0 and rows[0]["mismatch_kl"] < 1e-4, rows[0]
    assert all(0 <= row["policy_lag"] <= ASYNC and row["rollouts"] == 4 and row["images"] == 4 for row in rows)
    assert [row["reward_mean"] for row in rows] == [row["reward_mean"] for row in steps_logged]

    # Weight pushes: the servers acknowledged every version pushed to them.
    pushes = [push for row in steps_logged for push in row["pushed"]]
    assert all(pushed == reported for pushed, reported, _ in pushes)

    # Evals before and after; the final one was sampled from the last checkpoint's weights.
    evals = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert [(row["step"], row["environment"]) for row in evals] == [(0, "shapes"), (steps, "shapes")]
    assert (run_dir / "eval_reward.png").is_file() and (run_dir / "rl.png").is_file()
    final = read_results(Path(evals[-1]["results"]))
    assert {turn.weight_version for rollout in final for turn in rollout.turns} == {steps}
    served_final = replay(final, run_dir / "checkpoints" / f"step-{steps:08d}", run_dir)
    served_initial = replay(final, initial_model, run_dir)
    for rollout, (ids, logprobs), (_, initial) in zip(final, served_final, served_initial, strict=True):
        turn = rollout.turns[0]
        assert ids == turn.completion_ids
        assert logprobs == pytest.approx(turn.completion_logprobs, abs=1e-4)
        assert max(abs(a - b) for a, b in zip(logprobs, initial)) > 1e-3  # the initial weights answer otherwise


def replay(rollouts: list[Rollout], weights: Path, run_dir: Path) -> list[tuple[tuple[int, ...], tuple[float, ...]]]:
    """Greedy completions of the rollouts' prompts from a fresh server that loads `weights`."""
    config = ServeConfig(
        model=ModelConfig(name_or_path=str(weights)),
        multimodal=MultimodalConfig(offload_dir=run_dir / "assets"),
        logging=LoggingConfig(run_dir=run_dir / "replay"),
    )
    out = []
    with start_server(config) as server, httpx.Client(trust_env=False, timeout=120) as http:
        for rollout in rollouts:
            turn = rollout.turns[0]
            request = GenerateRequest(
                prompt_token_ids=turn.prompt_ids,
                image_refs=tuple(encode_mmraw(image.descriptor) for image in turn.images),
                sampling=SamplingParams(temperature=0.0, max_tokens=len(turn.completion_ids), seed=0),
            )
            answer = http.post(server.url + Endpoints.GENERATE, content=request.model_dump_json(),
                               headers={**server.data_headers, "Content-Type": "application/json"})  # fmt: skip
            assert answer.status_code == 200, answer.text
            completion = GenerateResponse.model_validate_json(answer.content).completions[0]
            out.append((completion.token_ids, completion.logprobs or ()))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0
