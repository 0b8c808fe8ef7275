"""`foveal eval` without the trainer: the OpenAI path end to end against a local endpoint, the embedded
server's config file and failure modes, and the server checks of the token path."""

from __future__ import annotations

import json
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from foveal.configs import EvalConfig, load_config
from foveal.configs.cli import main
from foveal.renderers.inference.wire import ServerInfo
from foveal.renderers.rendering import Renderer
from foveal.verifiers.eval.runner import check_server
from foveal.verifiers.eval.server import EmbeddedServer, ServerStartError, write_serve_config
from foveal.verifiers.policy import PolicyError

sys.path.insert(0, str(Path(__file__).parent))
from verifiers_http import Answer, completion, running_endpoint  # noqa: E402


def test_foveal_eval_over_the_openai_api_writes_results_summary_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def answer(body: dict[str, Any]) -> Answer:
        question = body["messages"][-1]["content"][-1]["text"]
        return 200, completion({"content": "3" if question.startswith("How many") else "red"})

    with running_endpoint() as endpoint:
        endpoint.answer = answer
        code = main([
            "eval", "--no-progress", "--logging.run_dir", str(tmp_path / "run"), "--eval.endpoint", endpoint.url,
            "--eval.api", "openai", "--eval.served_model", "remote-vlm", "--eval.num_examples", "4",
            "--eval.rollouts_per_example", "3", "--eval.api_key", "sk-secret-key", "--eval.max_concurrent", "2",
        ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert len(endpoint.requests) == 12
    headers, body = endpoint.requests[0]
    assert headers["Authorization"] == "Bearer sk-secret-key" and body["model"] == "remote-vlm"
    assert body["messages"][-1]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    folder = tmp_path / "run" / "eval"
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and {row["sample_index"] for row in rows} == {0, 1, 2}
    summary = json.loads((folder / "summary.json").read_text())
    expected = sum(row["reward"] for row in rows) / 12
    assert summary["reward_mean"] == pytest.approx(expected) and set(summary["pass_at_k"]) == {"1", "2", "3"}
    assert f"reward {expected:.4f}" in out and "pass@3" in out and str(folder / "report.html") in out
    assert (folder / "report.html").read_text().count("data:image/png;base64,") == 4
    assert "sk-secret-key" not in out + (folder / "report.html").read_text() + (folder / "results.jsonl").read_text()


def test_serve_config_holds_the_server_sections_with_the_token_readable_only_by_the_owner(tmp_path: Path) -> None:
    config = load_config(
        EvalConfig,
        overrides=[
            "--inference.api_token",
            "tok-123",
            "--eval.api_key",
            "other",
            "--model.name_or_path",
            "tiny:qwen3_vl",
        ],
    )
    path = write_serve_config(config, 4321, tmp_path / "serve.toml")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "[eval]" not in text and "other" not in text
    loaded = load_config(EvalConfig, [path])
    assert loaded.inference.port == 4321 and loaded.inference.api_token.get_secret_value() == "tok-123"  # type: ignore[union-attr]
    assert loaded.model == config.model and loaded.multimodal == config.multimodal


def test_a_server_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    config = load_config(
        EvalConfig,
        overrides=["--model.name_or_path", str(tmp_path / "no-such-model"), "--logging.run_dir", str(tmp_path)],
    )
    server = EmbeddedServer(config, tmp_path / "eval")
    with pytest.raises(ServerStartError, match=r"exited with [1-9].*last lines of"):
        with server:
            pass
    assert server.process is not None and server.process.poll() is not None


def info(**changes: object) -> ServerInfo:
    fields: dict[str, Any] = {
        "model": "m", "family": "qwen2_vl", "backend": "transformers", "max_model_len": 2048, "weight_version": 0,
        "state": "serving", "image_token_id": 1, "stop_token_ids": (2,), "layout_fingerprint": None,
    }  # fmt: skip
    return ServerInfo(**{**fields, **changes})


def test_a_server_the_renderer_cannot_write_prompts_for_is_refused(renderer_for: Callable[[str], Renderer]) -> None:
    renderer = renderer_for("qwen2_5_vl")
    spec = renderer.images.spec
    assert spec is not None
    check_server(info(layout_fingerprint=spec.fingerprint), renderer)
    with pytest.raises(PolicyError, match="server.family"):
        check_server(info(family="qwen3_vl"), renderer)
    with pytest.raises(PolicyError, match="server.layout_fingerprint"):
        check_server(info(layout_fingerprint="0123456789abcdef"), renderer)


def test_api_key_is_a_secret_in_the_config() -> None:
    config = load_config(EvalConfig, overrides=["--eval.api_key", "sk-x"])
    assert isinstance(config.eval.api_key, SecretStr) and "sk-x" not in repr(config)
