"""`foveal eval`: evaluate a model on an environment and write results, a summary and an HTML report.

    uv run foveal eval --eval.environment shapes --eval.num_examples 32
    uv run foveal eval --eval.endpoint http://127.0.0.1:8000 --eval.api openai --eval.served_model my-model

Exit status 0 when at least one rollout ran (failed rollouts are in the results and the report), 1 when
none did or the eval could not start (the reason on stderr), 2 for a bad config.
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from foveal.configs import config_from_args
from foveal.configs.runs import EvalConfig
from foveal.renderers.errors import ContractError
from foveal.renderers.inference.errors import InferenceError

from foveal.verifiers.dataset import DatasetError
from foveal.verifiers.environment import EnvironmentConfigError
from foveal.verifiers.eval.runner import EvalOutputs, run_eval
from foveal.verifiers.eval.server import ServerStartError
from foveal.verifiers.policy import PolicyError
from foveal.verifiers.registry import EnvironmentArgumentError, EnvironmentNotFound

EXPECTED_FAILURES = (
    ContractError,
    DatasetError,
    EnvironmentArgumentError,
    EnvironmentConfigError,
    EnvironmentNotFound,
    InferenceError,
    PolicyError,
    ServerStartError,
)
"""Failures with a message that says what to fix; anything else is a bug and keeps its traceback."""


def main(args: argparse.Namespace) -> int:
    """`foveal eval` (declared in foveal.verifiers.commands): 0 when a rollout ran, else 1 (see the module doc)."""
    config = config_from_args(args, EvalConfig)
    previous = signal.signal(signal.SIGTERM, _exit)  # `kill` unwinds like Ctrl-C: the embedded server is stopped
    try:
        outputs = run_eval(config, show_progress=not args.no_progress)
    except EXPECTED_FAILURES as error:
        print(f"foveal eval: error: {error}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(describe(outputs))
    if outputs.summary.failed == outputs.summary.num_rollouts:
        first = next(r for group in outputs.groups for r in group if r.errors).errors[0]
        print(f"foveal eval: error: every rollout failed; the first: {first.type}: {first.message}", file=sys.stderr)
        return 1
    return 0


def _exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def describe(outputs: EvalOutputs) -> str:
    """The summary as a few lines for the terminal."""
    s = outputs.summary
    stderr = f" ± {s.reward_stderr:.4f} (standard error)" if s.reward_stderr is not None else ""
    lines = [
        f"eval {s.environment} ({s.split} split): {s.num_examples} examples x {s.rollouts_per_example} with {s.model}",
        f"reward {s.reward_mean:.4f}{stderr}",
        *(f"pass@{k} {value:.4f}" for k, value in s.pass_at_k.items()),
        f"failed rollouts: {s.failed}",
        f"results: {outputs.results}",
        f"report:  {outputs.report}",
    ]
    return "\n".join(lines)
