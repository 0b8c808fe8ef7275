"""`foveal router`: run the router in front of inference servers (`--upstream URL`, repeatable).

Upstreams come from `--upstream`, else `[inference.router].upstreams`, else the `inference.num_servers`
local servers from `inference.port` up. The bearer token is `inference.api_token`: the router requires it
and sends it to the servers. Once the socket is bound, one line `foveal router: listening on URL` goes
to stdout (with port 0 the OS picks the port, and this line says which).
"""

from __future__ import annotations

import argparse
import logging
import socket

import uvicorn
from pydantic import Field

from foveal.trainer.serving.http_server import uvicorn_config
from foveal.configs import InferenceConfig, Problem, RunConfig, config_from_args
from foveal.configs.checks import is_loopback
from foveal.configs.errors import ConfigError
from foveal.configs.runs import RLRunSections
from foveal.renderers.inference.client import check_base_url
from foveal.renderers.inference.redaction import redact_url
from foveal.trainer.serving.fleet import Fleet
from foveal.trainer.serving.ports import port_setting
from foveal.trainer.serving.router import create_router_app


class RouterRunConfig(RunConfig, RLRunSections):
    """The router reads `[inference]` (token, limits) and `[inference.router]`; an RL run's sections are accepted."""

    inference: InferenceConfig = Field(default_factory=InferenceConfig, description="Servers and their router.")

    def combination_problems(self) -> list[Problem]:
        problems = super().combination_problems()
        if self.inference.api_token is None and not is_loopback(self.inference.router.host):
            expected = f"a token when inference.router.host ({self.inference.router.host!r}) is not loopback"
            problems.append(Problem("inference.api_token", expected, got="None"))
        return problems


def upstream_urls(inference: InferenceConfig, from_command_line: list[str]) -> tuple[str, ...]:
    """The servers to route to, each checked as an http(s) URL (a bad one is a ConfigError, redacted)."""
    host = f"[{inference.host}]" if ":" in inference.host else inference.host
    local = tuple(f"http://{host}:{inference.port + i}" for i in range(inference.num_servers))
    urls = tuple(from_command_line) or inference.router.upstreams or local
    problems = []
    for url in urls:
        try:
            check_base_url(url)
        except ValueError:
            problems.append(Problem("--upstream", "an http(s) URL with a host, no query", got=redact_url(url)))
    if problems:
        raise ConfigError(problems, subject="router upstreams")
    return urls


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; binding here (not in uvicorn) lets port 0 work and the real port be printed."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with port_setting(host, port, "inference.router.port"):
        return socket.create_server((host, port), family=family, backlog=2048)


def main(args: argparse.Namespace) -> int:
    """`foveal router` (declared in foveal.trainer.commands): route until Ctrl-C."""
    config = config_from_args(args, RouterRunConfig)
    inference, router = config.inference, config.inference.router
    upstreams = upstream_urls(inference, args.upstream)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per proxied request is noise
    fleet = Fleet(upstreams, inference.api_token, router)
    app = create_router_app(fleet, inference.api_token, inference.max_request_bytes)
    sock = bind(router.host, router.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"foveal router: listening on http://{shown}:{port} for {len(upstreams)} servers", flush=True)
    for url in upstreams:
        print(f"  upstream {redact_url(url)}", flush=True)
    options = {"log_level": "info", "access_log": False, "timeout_graceful_shutdown": 10}
    server = uvicorn.Server(uvicorn_config(app, inference.http, **options))
    server.run(sockets=[sock])
    return 0
