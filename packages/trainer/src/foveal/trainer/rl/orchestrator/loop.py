"""`foveal rl-orchestrator`: samples rollouts from the environments and publishes each step's training batch.

    uv run foveal rl-orchestrator --config run.toml --orchestrator.endpoints '["http://10.0.0.5:7999"]'

`foveal rl` starts it next to the servers and the trainer; on a cluster it runs as its own job. The loop,
top to bottom: bind the run folder to this config, find the first unpublished step, load the environments,
the renderer and the servers' facts; then for each step wait until the async bound allows it (pushing
every newer trainer checkpoint to the servers), evaluate when due, sample `batch_size` prompts from the
mixture, run `rollouts_per_prompt` scored episodes each, turn them into TrainingSamples with
group-normalized advantages, and publish the batch atomically. After the last step it evaluates the
final weights. Tensors never cross: the batch is msgpack of token ids, MMRefs and numbers.

Resuming (`trainer.checkpoint.resume = true`) starts at the first step whose batch is not published; a
kill at any point neither loses nor repeats a step (see `resume.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from foveal.configs import RLConfig, config_from_args
from foveal.configs.errors import ConfigError, Problem
from foveal.renderers.factory import build_renderer
from foveal.renderers.inference.client import RemoteInferenceClient, check_base_url
from foveal.renderers.inference.errors import InferenceError
from foveal.renderers.inference.redaction import redact_url
from foveal.renderers.inference.wire import ServerInfo
from foveal.renderers.rendering import Renderer
from foveal.verifiers.blind import run_image_store
from foveal.verifiers.eval.runner import check_server
from foveal.verifiers.token_policy import TokenPolicy

from foveal.trainer.rl.orchestrator.batch import build_batch
from foveal.trainer.rl.orchestrator.collect import collect_step, step_sampling
from foveal.trainer.rl.orchestrator.evaluation import eval_due, evaluate, plot_records, read_records
from foveal.trainer.rl.orchestrator.mixture import Mixture, load_mixture
from foveal.trainer.rl.orchestrator.prompts import PromptSampler
from foveal.trainer.rl.orchestrator.records import StepRecord, append_step, keep_steps_before, step_record, write_rollouts
from foveal.trainer.rl.orchestrator.resume import first_unpublished_step
from foveal.trainer.rl.orchestrator.weight_sync import WeightSync
from foveal.trainer.runs.rollouts import write_batch
from foveal.trainer.rl.sync import can_produce, check_policy_lag
from foveal.trainer.runs.meta import RL_BOUND_KEYS, ensure_run_meta


@dataclass(frozen=True)
class OrchestratorResult:
    """What a `run_orchestrator` call produced: the steps it published and the weights it pushed."""

    run_dir: Path
    first_step: int
    last_step: int
    rewards: tuple[float, ...]
    pushes: tuple[tuple[int, int, float], ...]
    seconds: float


def run_orchestrator(config: RLConfig) -> OrchestratorResult:
    """Publish the rollout batches of steps up to `rl.max_steps` (from the first unpublished one)."""
    return asyncio.run(orchestrate(config))


async def orchestrate(config: RLConfig) -> OrchestratorResult:
    started = time.perf_counter()
    run_dir, settings, last_step = config.logging.run_dir, config.orchestrator, config.rl.max_steps
    ensure_run_meta(run_dir, config, "rl", RL_BOUND_KEYS)
    first_step = first_unpublished_step(run_dir, config.trainer.checkpoint.resume)
    keep_steps_before(run_dir, first_step)

    # Environments, the renderer (its images go to the run's store, which the trainer reads) and the servers.
    mixture = load_mixture(settings.environments)
    sampler = PromptSampler(mixture.train_sizes(), mixture.weights, settings.batch_size, settings.seed)
    store = run_image_store(config.multimodal, run_dir, config.rl.images)
    renderer = build_renderer(config.model.name_or_path, config.renderer, store=store, multimodal=config.multimodal)
    endpoints = checked_endpoints(settings.endpoints)
    token = config.inference.api_token
    client = RemoteInferenceClient(base_urls=endpoints, api_token=token)
    controls = [RemoteInferenceClient.for_url(url, token.get_secret_value() if token else None) for url in endpoints]
    try:
        sync = await connect(client, controls, renderer, run_dir, settings.wait_timeout_s)
        policy = TokenPolicy(renderer, client, max_context=sync.max_context)
        evaluated = {record.step for record in read_records(run_dir)}
        print(f"orchestrator: steps {first_step}-{last_step} on {[redact_url(url) for url in endpoints]}", flush=True)

        rewards: list[float] = []
        for step in range(first_step, last_step + 1):
            clock = time.perf_counter()
            pushed_before = len(sync.pushes)
            pushing = await sync.wait_until(partial(can_produce, step, max_async_level=settings.max_async_level))
            await maybe_evaluate(config, mixture, sync.served_version, evaluated, endpoints[0])

            draws = sampler.step(step)
            sampling = step_sampling(settings.temperature, settings.max_tokens, settings.seed, step)
            collected = await collect_step(mixture, draws, policy, sampling, settings.rollouts_per_prompt,
                                           settings.max_concurrent)  # fmt: skip
            batch = build_batch(step, collected, settings.advantage, renderer.image_token_id, sync.served_version,
                                pushing)  # fmt: skip
            check_policy_lag(step, batch.policy_version, settings.max_async_level)

            write_rollouts(run_dir, step, collected)
            record = step_record(batch, sync.served_version, sync.pushes[pushed_before:], sync.progress().step,
                                 time.perf_counter() - clock)  # fmt: skip
            append_step(run_dir, record)
            write_batch(run_dir, batch)
            rewards.append(batch.metrics.reward_mean)
            print(describe(record, last_step), flush=True)

        # The final weights: once the trainer has trained the last batch, push and evaluate them.
        if config.rl.eval_examples and last_step not in evaluated:
            await sync.wait_until(partial(operator.le, last_step))
            await maybe_evaluate(config, mixture, sync.served_version, evaluated, endpoints[0])
    finally:
        for each in (client, *controls):
            await each.aclose()
    return OrchestratorResult(
        run_dir=run_dir,
        first_step=first_step,
        last_step=last_step,
        rewards=tuple(rewards),
        pushes=tuple(sync.pushes),
        seconds=time.perf_counter() - started,
    )


async def connect(
    client: RemoteInferenceClient,
    controls: list[RemoteInferenceClient],
    renderer: Renderer,
    run_dir: Path,
    timeout_s: float,
) -> WeightSync:
    """Wait for the servers, check they serve what the renderer writes, and learn the weights they hold."""
    info = await wait_for_servers(client, timeout_s)
    check_server(info, renderer)
    served = min([(await control.info()).weight_version for control in controls])
    sync = WeightSync(controls, run_dir, served, timeout_s, max_context=info.max_model_len)
    sync.check_servers()
    return sync


async def maybe_evaluate(config: RLConfig, mixture: Mixture, version: int, evaluated: set[int], endpoint: str) -> None:
    """Evaluate the served weights when due (the eval runner is synchronous: it runs in a worker thread)."""
    if not config.rl.eval_examples or not eval_due(version, evaluated, config.rl.eval_every, config.rl.max_steps):
        return
    records = await asyncio.to_thread(evaluate, config, mixture, version, endpoint)
    evaluated.add(version)
    if config.logging.plots:
        await asyncio.to_thread(plot_records, config.logging.run_dir)
    shown = "  ".join(f"{r.environment} {r.reward_mean:.3f}" for r in records)
    print(f"orchestrator: eval at step {version}: {shown}", flush=True)


async def wait_for_servers(client: RemoteInferenceClient, timeout_s: float) -> ServerInfo:
    """The servers' facts once they answer (a large model takes minutes to load); InferenceError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await client.health()
            return await client.info()
        except InferenceError as error:
            if error.status not in (None, 503) or time.monotonic() > deadline:
                raise
        await asyncio.sleep(1.0)


def checked_endpoints(endpoints: tuple[str, ...]) -> tuple[str, ...]:
    """The servers' URLs: at least one, each an http(s) URL (shown redacted when refused)."""
    if not endpoints:
        raise ConfigError([Problem("orchestrator.endpoints", "the URL of a running server or router "
                                   "(`foveal rl` fills it in for the orchestrator it starts)", got="[]")])  # fmt: skip
    problems = []
    for index, url in enumerate(endpoints):
        try:
            check_base_url(url)
        except ValueError:
            problems.append(Problem(f"orchestrator.endpoints[{index}]", "an http(s) URL", got=redact_url(url)))
    if problems:
        raise ConfigError(problems)
    return endpoints


def describe(record: StepRecord, last_step: int) -> str:
    by_env = " ".join(f"{label} {value:.3f}" for label, value in record.reward_by_environment.items())
    return (
        f"orchestrator: step {record.step}/{last_step}  reward {record.reward_mean:.3f} ({by_env})  "
        f"policy v{record.policy_version}  rollouts {record.rollouts} (failed {record.failed})  "
        f"inference {record.inference_seconds:.1f}s  scoring {record.scoring_seconds:.2f}s  "
        f"weight sync {record.weight_sync_seconds:.2f}s"
    )


def main(args: argparse.Namespace) -> int:
    """`foveal rl-orchestrator` (declared in foveal.trainer.commands): publish every step's batch."""
    result = run_orchestrator(config_from_args(args, RLConfig))
    print(f"orchestrator: done (steps {result.first_step}-{result.last_step}, {result.seconds:.1f} s)")
    return 0
