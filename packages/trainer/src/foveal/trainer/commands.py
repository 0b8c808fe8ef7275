"""The trainer's `foveal` subcommands (entry points in `foveal.commands`): names, help and arguments only.

`foveal --help` loads every command, so this module imports neither torch nor a job module; each `run`
is a `LazyRun` that imports its job only when that command runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from foveal.configs.arguments import add_config_arguments
from foveal.configs.command import Command, LazyRun

Configure = Callable[[argparse.ArgumentParser], None]
SMOKE_FAMILY = "qwen2_5_vl"
"""The tiny model family `foveal smoke` builds unless `--family` names another."""


def _configure_smoke(parser: argparse.ArgumentParser) -> None:
    from foveal.renderers.tiny import VLM_FAMILIES  # its package imports tokenizers: only for `foveal smoke`

    parser.add_argument("--family", choices=VLM_FAMILIES, default=SMOKE_FAMILY, help="tiny model family")
    parser.add_argument("--cache-root", type=Path, default=None, help="tiny model cache (default ~/.cache/foveal/tiny)")


def _configure_rl(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--connect", action="store_true", help="use the running servers at orchestrator.endpoints; start none"
    )
    parser.add_argument("--no-progress", action="store_true", help="Do not show progress bars.")


def _configure_router(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--upstream", action="append", default=[], metavar="URL", help="an inference server URL; repeat per server"
    )


def _job(name: str, job: str, help: str, configure: Configure = add_config_arguments) -> Command:
    """The command `name`, run by `main` of `foveal.trainer.<job>`, which is imported only when it runs."""
    return Command(name=name, help=help, configure=configure, run=LazyRun(f"foveal.trainer.{job}:main"))


smoke = _job(
    "smoke", "smoke",
    "build a tiny local VLM and run one forward pass over a drawn image on CPU",
    configure=_configure_smoke,
)

sft = _job(
    "sft", "sft.train",
    "supervised fine-tuning on chat data (JSONL, HF datasets, or the generated shapes demo)",
)

dflash = _job(
    "dflash", "dflash.train",
    "train a DFlash block-drafting speculative decoder for a (vision-)language target",
)

rl_trainer = _job(
    "rl-trainer", "rl.trainer",
    "the trainer process of an RL run: trains on rollout batches the orchestrator publishes in the run folder",
)

rl_orchestrator = _job(
    "rl-orchestrator", "rl.orchestrator.loop",
    "the orchestrator of an RL run: samples and scores rollouts on the inference servers, publishes batches",
)

rl = _job(
    "rl", "rl.launcher.command",
    "run RL end to end: optional SFT warm-up, inference servers, orchestrator and trainer as processes",
    configure=_configure_rl,
)

serve = _job(
    "serve", "serving.serve",
    "serve a model over HTTP (token-in/token-out and OpenAI chat) with the [inference] backend",
)

router = _job(
    "router", "serving.router_command",
    "route requests to several inference servers (sticky sessions, least loaded, failover)",
    configure=_configure_router,
)

serve_tinker = _job(
    "serve-tinker", "tinker_service.command",
    "serve the Tinker SDK's training and sampling API for [model] (LoRA or full fine-tuning, images included)",
)
