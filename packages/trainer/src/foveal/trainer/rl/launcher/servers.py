"""The inference servers `foveal rl` starts: `inference.num_servers` x `foveal serve`, and a router in front.

Each server listens on a free loopback port (`[inference].host`) and reads its own 0600 config file with
the launch's token. `foveal router` fronts them (sticky sessions, failover, and the control fan-out a weight
push needs), so the orchestrator always talks to one URL; it is left out only for a single server that is
never restarted (`inference.max_restarts = 0`). A server that exits is started again on its port up to
`max_restarts` times: the router holds requests while no server is up and brings the restarted one to the
newest weights pushed before it routes to it, so the run goes on with nothing lost or sampled from stale
weights. They are ready when every one answers /health; a server that exits before that is restarted too
(and ends the launch with its log once its restarts are spent).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
from pydantic import SecretStr

from foveal.configs.runs import RLConfig
from foveal.renderers.inference.wire import Endpoints
from foveal.trainer.serving.config import ServeConfig
from foveal.trainer.serving.router_command import RouterRunConfig
from foveal.trainer.rl.launcher.children import Children
from foveal.trainer.rl.launcher.configs import write_private_toml
from foveal.verifiers.eval.server import free_port

START_TIMEOUT_S = 1800.0
"""Loading a large model into vLLM can take many minutes; a crash is noticed at once regardless."""
POLL_S = 0.25


class ServersNotReady(RuntimeError):
    """The servers did not answer /health in time."""


def start_servers(
    config: RLConfig, token: SecretStr, children: Children, launch_dir: Path, envs: Sequence[Mapping[str, str]]
) -> str:
    """Start the servers (and the router when there are several); returns the URL the orchestrator uses."""
    inference = config.inference
    urls = []
    for index in range(inference.num_servers):
        port = free_port(inference.host)
        serve = ServeConfig(
            model=config.model,
            multimodal=config.multimodal,
            renderer=config.renderer,
            logging=config.logging,
            inference=inference.model_copy(update={"port": port, "num_servers": 1}),
        )
        path = write_private_toml(launch_dir / f"serve-{index}.toml", serve, {("inference", "api_token"): token})
        argv = ["serve", "--config", str(path)]
        children.start(f"server-{index}", argv, must_finish=False, env=envs[index], restarts=inference.max_restarts)
        urls.append(_url(inference.host, port))
    wait_healthy(urls, token, children)
    if len(urls) == 1 and not inference.max_restarts:
        return urls[0]
    router = inference.router.model_copy(update={"port": free_port(inference.router.host), "upstreams": tuple(urls)})
    routed = RouterRunConfig(
        model=config.model,
        multimodal=config.multimodal,
        renderer=config.renderer,
        logging=config.logging,
        inference=inference.model_copy(update={"router": router}),
    )
    path = write_private_toml(launch_dir / "router.toml", routed, {("inference", "api_token"): token})
    children.start("router", ["router", "--config", str(path)], must_finish=False)
    url = _url(router.host, router.port)
    wait_healthy([url], token, children)
    return url


def wait_healthy(urls: Sequence[str], token: SecretStr, children: Children) -> None:
    """Poll /health of every URL until all answer 200; ChildFailed if a child exits meanwhile."""
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"}
    pending = list(urls)
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(timeout=2.0, trust_env=False) as http:
        while pending:
            children.check()
            if time.monotonic() > deadline:
                raise ServersNotReady(f"no answer to {Endpoints.HEALTH} within {START_TIMEOUT_S:g} s from {pending}")
            try:
                if http.get(pending[0] + Endpoints.HEALTH, headers=headers).status_code == 200:
                    pending.pop(0)
                    continue
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(POLL_S)


def _url(host: str, port: int) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"
