"""`run_eval`: an environment, a policy on a server, scored rollouts, then results, summary and report.

    environment = load_environment(eval.environment, **eval.environment_args)
    examples    = the first eval.num_examples rows of eval.split
    server      = eval.endpoint, or `foveal serve` started as a child process from [inference]
    policy      = TokenPolicy (eval.api = "foveal") or ChatPolicy (eval.api = "openai")
    groups      = environment.evaluate(examples, policy, ...)   with a progress bar
    write results.jsonl, summary.json, report.html into eval.output_dir (default <run dir>/eval)

The token API sends images as `mmraw:` refs to files in this run's store, so a Foveal endpoint must read
the same folder (`[multimodal].offload_dir`), as the embedded server does; the OpenAI API sends the
images themselves and works with any server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from foveal.configs.runs import EvalConfig
from foveal.renderers.factory import build_renderer
from foveal.renderers.inference.client import RemoteInferenceClient
from foveal.renderers.inference.wire import SamplingParams, ServerInfo
from foveal.renderers.rendering import Renderer
from foveal.renderers.store import ImageStore

from foveal.verifiers.blind import run_image_store
from foveal.verifiers.chat_policy import ChatPolicy, OpenAIChatClient
from foveal.verifiers.dataset import Example
from foveal.verifiers.environment import Environment
from foveal.verifiers.eval.report import write_report
from foveal.verifiers.eval.results import REPORT_FILE, write_results
from foveal.verifiers.eval.server import EmbeddedServer
from foveal.verifiers.eval.summary import Summary, summarize
from foveal.verifiers.policy import Policy, PolicyError
from foveal.verifiers.registry import load_environment
from foveal.verifiers.rollout import Rollout
from foveal.verifiers.token_policy import TokenPolicy

Close = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class EvalOutputs:
    """What an eval wrote, and its summary."""

    summary: Summary
    results: Path
    summary_path: Path
    report: Path
    groups: list[list[Rollout]]


def output_folder(config: EvalConfig) -> Path:
    return config.eval.output_dir if config.eval.output_dir is not None else config.logging.run_dir / "eval"


def run_eval(config: EvalConfig, *, show_progress: bool = True) -> EvalOutputs:
    """Run the eval `config` describes and write its outputs; the embedded server is stopped at the end."""
    environment = load_environment(config.eval.environment, **config.eval.environment_args)
    examples = environment.dataset(config.eval.split).take(config.eval.num_examples)
    folder = output_folder(config)
    folder.mkdir(parents=True, exist_ok=True)
    store = run_image_store(config.multimodal, config.logging.run_dir, config.eval.images)
    started = time.perf_counter()
    with _endpoint(config, folder) as url:
        groups = asyncio.run(_sample(config, environment, examples, url, store, show_progress))
    model = config.eval.served_model or config.model.name_or_path
    summary = summarize(
        groups,
        model=model,
        split=config.eval.split,
        pass_threshold=config.eval.pass_threshold,
        seconds=time.perf_counter() - started,
    )
    results, summary_path = write_results(folder, groups, summary)
    report = write_report(folder / REPORT_FILE, summary, groups, store)
    return EvalOutputs(summary, results, summary_path, report, groups)


@contextmanager
def _endpoint(config: EvalConfig, folder: Path) -> Iterator[str]:
    """`eval.endpoint`, or the URL of an embedded server that lives as long as the block."""
    if config.eval.endpoint is not None:
        yield config.eval.endpoint
        return
    with EmbeddedServer(config, folder) as url:
        yield url


async def _sample(
    config: EvalConfig,
    environment: Environment,
    examples: Sequence[Example],
    url: str,
    store: ImageStore,
    show_progress: bool,
) -> list[list[Rollout]]:
    policy, close = await open_policy(config, url, store)
    sampling = SamplingParams(
        temperature=config.eval.temperature, max_tokens=config.eval.max_tokens, seed=config.eval.seed
    )
    total = len(examples) * config.eval.rollouts_per_example
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=Console(stderr=True), disable=not show_progress) as progress:
            task = progress.add_task(f"eval {environment.name}", total=total)
            return await environment.evaluate(
                examples,
                policy,
                sampling,
                rollouts_per_example=config.eval.rollouts_per_example,
                max_concurrent=config.eval.max_concurrent,
                on_rollout=lambda rollout: progress.advance(task),
            )
    finally:
        await close()


async def open_policy(config: EvalConfig, url: str, store: ImageStore) -> tuple[Policy, Close]:
    """The policy for `eval.api` at `url`, and how to close its connections."""
    token = config.eval.api_key or config.inference.api_token
    if config.eval.api == "openai":
        chat = OpenAIChatClient(url, token)
        return ChatPolicy(chat, config.eval.served_model or config.model.name_or_path, store), chat.aclose
    client = RemoteInferenceClient.for_url(url, api_token=token.get_secret_value() if token else None)
    try:
        info = await client.info()
        renderer = build_renderer(config.model.name_or_path, config.renderer, store=store, multimodal=config.multimodal)
        check_server(info, renderer)
    except BaseException:
        await client.aclose()
        raise
    return TokenPolicy(renderer, client, max_context=info.max_model_len), client.aclose


def check_server(info: ServerInfo, renderer: Renderer) -> None:
    """Refuse a server whose prompts this renderer cannot write: another family or image layout."""
    if info.family != renderer.family:
        raise PolicyError("server.family", info.family, f"the renderer's family {renderer.family!r} ([model])")
    spec = renderer.images.spec
    if spec is not None and info.layout_fingerprint is not None and info.layout_fingerprint != spec.fingerprint:
        expected = f"the renderer's image layout {spec.fingerprint!r} (same processor settings on both sides)"
        raise PolicyError("server.layout_fingerprint", info.layout_fingerprint, expected)
