"""The HTTP layer: a FastAPI app that translates between the wire models and an `InferenceBackend`."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI

from foveal.trainer.serving.app.auth import bearer_guard
from foveal.trainer.serving.app.chat import chat_routes
from foveal.trainer.serving.app.completions import completion_routes
from foveal.trainer.serving.app.control import control_routes
from foveal.trainer.serving.app.data import data_routes
from foveal.trainer.serving.app.errors import install_error_handlers
from foveal.trainer.serving.app.limits import (
    CONTROL_BODY_BYTES,
    NO_BODY_BYTES,
    SMALL_BODY_BYTES,
    RequestGate,
    RouteRule,
    bearer,
)
from foveal.renderers.inference.wire import Endpoints
from foveal.trainer.serving.backends.base import InferenceBackend


@dataclass(frozen=True)
class AppSettings:
    """Who may call what: the control plane always needs `control_token`; the data plane needs
    `data_token` when one is set (`[inference].api_token`)."""

    control_token: str
    data_token: str | None
    max_request_bytes: int
    body_timeout_s: float = 60.0


def create_app(backend: InferenceBackend, settings: AppSettings) -> FastAPI:
    app = FastAPI(title="Foveal inference", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)
    data_guard = bearer_guard(settings.data_token)
    app.include_router(data_routes(backend, data_guard))
    app.include_router(chat_routes(backend, data_guard))
    app.include_router(completion_routes(backend, data_guard))
    control_guard = bearer_guard(settings.control_token)
    app.include_router(control_routes(backend, control_guard))
    # A backend may add control endpoints of its own (vLLM: the NCCL weight-broadcast round).
    if (extra_routes := getattr(backend, "extra_control_routes", None)) is not None:
        app.include_router(extra_routes(control_guard))
    default = RouteRule("/", NO_BODY_BYTES)
    rules = route_rules(settings)
    app.add_middleware(RequestGate, rules=rules, default=default, body_timeout_s=settings.body_timeout_s)
    return app


def route_rules(settings: AppSettings) -> list[RouteRule]:
    """Each route's credential and body cap, checked before the body is read (`RequestGate`); unknown paths get
    no credential (the app answers 404) and no body."""
    data, control = bearer(settings.data_token), bearer(settings.control_token)
    small = min(SMALL_BODY_BYTES, settings.max_request_bytes)
    return [
        RouteRule("/control/", min(CONTROL_BODY_BYTES, settings.max_request_bytes), control),
        RouteRule(Endpoints.TOKENIZE, small, data),
        RouteRule(Endpoints.DETOKENIZE, small, data),
        RouteRule(Endpoints.INFO, NO_BODY_BYTES, data),
        RouteRule(Endpoints.MODELS, NO_BODY_BYTES, data),
        RouteRule("/v1/", settings.max_request_bytes, data),
        RouteRule(Endpoints.HEALTH, NO_BODY_BYTES),
    ]


__all__ = ["AppSettings", "create_app"]
