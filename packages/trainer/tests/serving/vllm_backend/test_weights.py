"""Weight updates: the worker extension on real vLLM models, the checkpoint-folder route, the NCCL routes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from safetensors.torch import save_file

pytest.importorskip("vllm")

from foveal.renderers.inference.wire import Endpoints
from foveal.trainer.serving.app import create_app
from foveal.trainer.serving.backends.vllm.backend import VLLMBackend
from foveal.trainer.serving.backends.vllm.weight_broadcast import BroadcastPaths
from foveal.trainer.serving.server import ServerThread, app_settings, bind_socket
from foveal.trainer.serving.testing import RunningServer, start_server

from .support import (
    TEXT,
    VLM,
    LoadedModel,
    ScriptedEngine,
    assert_reloaded,
    post,
    serve_config,
    trainer_checkpoint,
)

# -- the worker extension, on real vLLM models loaded on CPU -------------------------------------------------


@pytest.mark.parametrize(("family", "shards"), [(TEXT, 1), (VLM, 2)])
def test_worker_extension_reloads_a_trainer_checkpoint_in_place(
    family: str, shards: int, tmp_path: Path, vllm_models: Callable[[str], LoadedModel]
) -> None:
    """Every vLLM parameter (fused qkv and gate_up, Qwen-VL's renamed language model and vision tower) becomes
    exactly 2 * old + 1 from the checkpoint's tensors, and the optimizer file beside them is never read."""
    loaded = vllm_models(family)
    before = loaded.parameters()
    tensors = trainer_checkpoint(loaded.folder, tmp_path / "step-00000001", shards)
    fed = loaded.worker.foveal_load_weights(str(tmp_path / "step-00000001"))
    assert fed == len(tensors)
    assert_reloaded(loaded, before)
    # Put the served weights back for the tests that share this model.
    loaded.worker.foveal_load_weights(str(loaded.folder))
    assert all(torch.equal(param, before[name]) for name, param in loaded.parameters().items())


# -- weight updates: a text model whose "engine" reloads a real vLLM model through the worker extension --------


@pytest.fixture(scope="module")
def text_server(
    tmp_path_factory: pytest.TempPathFactory, vllm_models: Callable[[str], LoadedModel], tiny_cache_root: Path
) -> Iterator[RunningServer]:
    loaded = vllm_models(TEXT)
    config = serve_config(tmp_path_factory.mktemp("text"), TEXT)
    backend = VLLMBackend(config, cache_root=tiny_cache_root, engine=ScriptedEngine(loaded.config, loaded.worker))
    with start_server(config, backend=backend) as running:
        yield running


def test_update_weights_reloads_every_worker_and_drops_old_caches(
    text_server: RunningServer, vllm_models: Callable[[str], LoadedModel], tmp_path: Path
) -> None:
    loaded = vllm_models(TEXT)
    engine: ScriptedEngine = text_server.backend.engine
    engine.calls.clear()
    before = loaded.parameters()
    trainer_checkpoint(loaded.folder, tmp_path / "step-00000003")
    try:
        body = {"path": str(tmp_path / "step-00000003"), "version": 3}
        answer = post(text_server, Endpoints.UPDATE_WEIGHTS, body, control=True)
        assert answer.json() == {"state": "serving", "weight_version": 3, "in_flight": 0}
        assert_reloaded(loaded, before)
    finally:
        loaded.worker.foveal_load_weights(str(loaded.folder))
    expected = ["collective_rpc", "reset_encoder_cache", "reset_prefix_cache", "weight_version"]
    assert [call[0] for call in engine.calls] == expected
    assert engine.calls[0][1:] == ("foveal_load_weights", (str(tmp_path / "step-00000003"),))
    assert engine.calls[-1] == ("weight_version", "3")
    generated = post(text_server, Endpoints.GENERATE, {"prompt_token_ids": [1, 2], "sampling": {"max_tokens": 2}})
    assert generated.json()["weight_version"] == 3


def test_a_checkpoint_that_does_not_fit_is_refused_before_any_worker_loads_it(
    text_server: RunningServer, vllm_models: Callable[[str], LoadedModel], tmp_path: Path
) -> None:
    loaded = vllm_models(TEXT)
    engine: ScriptedEngine = text_server.backend.engine
    engine.calls.clear()
    version = text_server.backend.weight_version
    tensors = trainer_checkpoint(loaded.folder, tmp_path / "wrong")
    save_file({**tensors, "model.norm.weight": torch.zeros(3)}, tmp_path / "wrong" / "model.safetensors")
    refused = post(text_server, Endpoints.UPDATE_WEIGHTS, {"path": str(tmp_path / "wrong"), "version": 9}, control=True)
    error = refused.json()["error"]
    assert (refused.status_code, error["code"], error["field"]) == (
        422,
        "invalid_request",
        "weights['model.norm.weight']",
    )
    assert engine.calls == [] and text_server.backend.weight_version == version
    missing = post(text_server, Endpoints.UPDATE_WEIGHTS, {"path": str(tmp_path / "none"), "version": 9}, control=True)
    assert (missing.status_code, missing.json()["error"]["field"]) == (422, "path")


# -- the optional NCCL path: vLLM's weight-transfer engine behind our control token ---------------------------


def test_weight_broadcast_round_drives_vllms_weight_transfer(
    text_server: RunningServer, vllm_models: Callable[[str], LoadedModel]
) -> None:
    backend: VLLMBackend = text_server.backend
    settings = app_settings(backend.config, control_token="broadcast-token")
    app = create_app(backend, settings)  # mounts the broadcast routes: the backend offers them
    thread = ServerThread(app, bind_socket("127.0.0.1", 0))
    thread.start()
    url, headers = f"http://127.0.0.1:{thread.port}", {"Authorization": "Bearer broadcast-token"}
    engine: ScriptedEngine = backend.engine
    engine.calls.clear()
    try:

        def call(path: str, body: dict[str, Any] | None = None) -> httpx.Response:
            return httpx.post(f"{url}{path}", json=body or {}, headers=headers, timeout=30)

        assert httpx.post(f"{url}{BroadcastPaths.START}", timeout=30).status_code == 401
        assert call(BroadcastPaths.START).status_code == 409  # not paused
        init = {"master_address": "10.0.0.1", "master_port": 29600, "rank_offset": 1, "world_size": 3}
        assert call(BroadcastPaths.INIT, init).status_code == 200
        call(Endpoints.PAUSE, {"mode": "wait"})
        assert call(BroadcastPaths.START).json()["state"] == "updating"
        served = {"path": str(vllm_models(TEXT).folder), "version": 1}
        for path, body in ((Endpoints.RESUME, {}), (Endpoints.UPDATE_WEIGHTS, served)):
            assert call(path, body).status_code == 409  # the model is mid-reload
        update = {"names": ["model.norm.weight"], "dtype_names": ["bfloat16"], "shapes": [[64]]}
        assert call(BroadcastPaths.UPDATE, {**update, "shapes": []}).status_code == 422
        assert call(BroadcastPaths.UPDATE, update).status_code == 200
        finished = call(BroadcastPaths.FINISH, {"version": 5}).json()
        assert finished == {"state": "paused", "weight_version": 5, "in_flight": 0}
        assert call(Endpoints.RESUME).json()["state"] == "serving"
    finally:
        thread.stop()
    names = [c[0] for c in engine.calls]
    assert names == [
        "init_weight_transfer", "pause", "start_weight_update", "update_weights", "finish_weight_update",
        "reset_encoder_cache", "reset_prefix_cache", "weight_version", "resume",
    ]  # fmt: skip
    init_info, update_info = engine.calls[0][1], engine.calls[3][1]
    assert (init_info.master_address, init_info.master_port, init_info.rank_offset) == ("10.0.0.1", 29600, 1)
    assert (init_info.world_size, init_info.packed) == (3, True)
    assert (update_info.names, update_info.shapes) == (["model.norm.weight"], [[64]])
