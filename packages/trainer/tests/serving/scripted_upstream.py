"""A scripted inference server for router tests, run as its own process so a test can SIGKILL it.

`python scripted_upstream.py NAME TOKEN` binds 127.0.0.1:0, prints `PORT <n>` and serves the wire API
with canned answers: generate answers `model=NAME`; request ids starting with `hang-on-NAME` never
finish on this server (the process is killed under them). Control endpoints
require TOKEN and change the reported state and weight version; update_weights to `/missing` is a 404.
`/test/calls` lists every call seen; `/test/sick/on` makes /health fail until `/test/sick/off`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response

from foveal.renderers.inference.wire import (
    Completion,
    ControlResponse,
    ErrorBody,
    ErrorDetail,
    GenerateRequest,
    GenerateResponse,
    Health,
    PauseRequest,
    ServerInfo,
    UpdateWeightsRequest,
)


def scripted_app(name: str, token: str) -> FastAPI:
    app = FastAPI()
    state: dict[str, Any] = {"state": "serving", "version": 0, "sick": False}
    calls: list[dict[str, object]] = []

    def record(request: Request, body: bytes, kind: str) -> None:
        kept = ("authorization", "host", "x-session-id")
        headers = {key: value for key, value in request.headers.items() if key in kept}
        calls.append({"kind": kind, "headers": headers, "body": body.decode()})

    def error(status: int, code: str, message: str) -> Response:
        body = ErrorBody(error=ErrorDetail(code=code, message=message))  # type: ignore[arg-type]
        return Response(body.model_dump_json(), status_code=status, media_type="application/json")

    def control_answer() -> Response:
        answer = ControlResponse(state=state["state"], weight_version=state["version"], in_flight=0)
        return Response(answer.model_dump_json(), media_type="application/json")

    @app.post("/v1/generate")
    async def generate(request: Request) -> Response:
        body = await request.body()
        record(request, body, "generate")
        parsed = GenerateRequest.model_validate_json(body)
        rid = parsed.request_id or "none"
        if rid.startswith(f"hang-on-{name}-"):
            await asyncio.sleep(3600)
        completion = Completion(token_ids=parsed.prompt_token_ids[:1], logprobs=None, finish_reason="stop", text=name)
        answer = GenerateResponse(
            request_id=rid, model=name, weight_version=state["version"], prompt_tokens=len(parsed.prompt_token_ids),
            completions=(completion,),
        )  # fmt: skip
        return Response(answer.model_dump_json(), media_type="application/json")

    @app.post("/v1/tokenize")
    async def tokenize(request: Request) -> Response:
        body = await request.body()
        record(request, body, "tokenize")
        return error(422, "invalid_request", f"{name} refuses to tokenize")

    @app.get("/health")
    async def health() -> Response:
        if state["sick"]:
            return error(503, "unavailable", "sick")
        answer = Health(state=state["state"], in_flight=0)
        return Response(answer.model_dump_json(), media_type="application/json")

    @app.get("/v1/info")
    async def info(request: Request) -> Response:
        record(request, b"", "info")
        answer = ServerInfo(
            model=name, family="qwen2_vl", backend="transformers", max_model_len=64, weight_version=state["version"],
            state=state["state"], image_token_id=None, stop_token_ids=(0,), layout_fingerprint=None,
            served_model_names=(f"{name}-alias",),
        )  # fmt: skip
        return Response(answer.model_dump_json(), media_type="application/json")

    @app.post("/control/{action}")
    async def control(action: str, request: Request) -> Response:
        body = await request.body()
        record(request, body, action)
        if request.headers.get("authorization") != f"Bearer {token}":
            return error(401, "unauthorized", "bad token")
        if action == "pause":
            PauseRequest.model_validate_json(body or b"{}")
            state["state"] = "paused"
        elif action == "resume":
            state["state"] = "serving"
        elif action == "update_weights":
            update = UpdateWeightsRequest.model_validate_json(body)
            if update.path == "/missing":
                return error(404, "not_found", "no such checkpoint")
            state["version"] = update.version
        return control_answer()

    @app.get("/test/calls")
    async def seen() -> Response:
        return Response(json.dumps(calls), media_type="application/json")

    @app.post("/test/sick/{flag}")
    async def sick(flag: str) -> Response:
        state["sick"] = flag == "on"
        return Response("{}", media_type="application/json")

    return app


def main() -> None:
    name, token = sys.argv[1], sys.argv[2]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    uvicorn.Server(uvicorn.Config(scripted_app(name, token), log_level="warning")).run(sockets=[sock])


if __name__ == "__main__":
    main()
