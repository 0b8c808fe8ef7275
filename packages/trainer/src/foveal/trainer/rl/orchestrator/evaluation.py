"""Greedy evaluation during RL: the verifiers' eval runner against the live servers, at known weight versions.

The orchestrator evaluates between pushes, so the servers hold exactly one version: before RL (version 0,
the warm start), whenever the served version passes a multiple of `rl.eval_every`, and after the last
step. Each environment of the mixture is scored on the first `rl.eval_examples` rows of its eval split
(the same rows every time, so the numbers compare), greedily, through `foveal.verifiers.eval.run_eval`
with the servers as its endpoint. Its results, summary and HTML report go to
`<run dir>/eval/step_<version>/<environment>/`; one line per environment and version is appended to
`<run dir>/eval.jsonl`, and `eval_reward.png` plots them. A version already in the file is not evaluated
again, so a restarted orchestrator does not repeat an eval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import orjson
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict

from foveal.configs.jobs import EvalSection
from foveal.configs.runs import EvalConfig, RLConfig
from foveal.verifiers.eval.runner import run_eval

from foveal.trainer.rl.orchestrator.mixture import Mixture
from foveal.trainer.runs.layout import EVAL_FILE, EVAL_PLOT_FILE, eval_folder



class EvalRecord(BaseModel):
    """One environment evaluated at one weight version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: int
    """The weight version evaluated: the trainer step that produced it (0 = before RL)."""
    environment: str
    reward_mean: float
    reward_stderr: float | None
    num_examples: int
    failed: int
    seconds: float
    results: str


def eval_due(version: int, evaluated: set[int], every: int, last_step: int) -> bool:
    """Whether to evaluate the weights of `version` now: first and last versions, and every `every` steps."""
    if version in evaluated:
        return False
    if version in (0, last_step):
        return True
    return every > 0 and version // every > max(evaluated, default=0) // every


def evaluate(config: RLConfig, mixture: Mixture, version: int, endpoint: str) -> list[EvalRecord]:
    """Score every environment of the mixture greedily at the servers' current weights; append the records."""
    records = []
    for label, entry, environment in zip(mixture.labels, mixture.configs, mixture.environments, strict=True):
        examples = min(config.rl.eval_examples, len(environment.dataset("eval")))
        folder = eval_folder(config.logging.run_dir, version, label)
        section = EvalSection(
            environment=entry.name,
            environment_args=entry.args,
            split="eval",
            images=config.rl.images,
            num_examples=examples,
            endpoint=endpoint,
            output_dir=folder,
            max_tokens=config.orchestrator.max_tokens,
            temperature=0.0,
            max_concurrent=config.orchestrator.max_concurrent,
        )
        eval_config = EvalConfig(
            model=config.model,
            multimodal=config.multimodal,
            renderer=config.renderer,
            logging=config.logging,
            inference=config.inference,
            eval=section,
        )
        outputs = run_eval(eval_config, show_progress=False)
        summary = outputs.summary
        records.append(
            EvalRecord(
                step=version,
                environment=label,
                reward_mean=summary.reward_mean,
                reward_stderr=summary.reward_stderr,
                num_examples=summary.num_examples,
                failed=summary.failed,
                seconds=summary.seconds,
                results=str(outputs.results),
            )
        )
    append_records(config.logging.run_dir, records)
    return records


def read_records(run_dir: Path) -> list[EvalRecord]:
    """Every eval of the run so far, in the order they ran."""
    path = run_dir / EVAL_FILE
    if not path.is_file():
        return []
    return [EvalRecord.model_validate_json(line) for line in path.read_bytes().splitlines() if line.strip()]


def append_records(run_dir: Path, records: list[EvalRecord]) -> None:
    with (run_dir / EVAL_FILE).open("ab") as handle:
        handle.write(b"".join(orjson.dumps(record.model_dump()) + b"\n" for record in records))


def plot_records(run_dir: Path) -> Path | None:
    """`eval_reward.png`: eval reward (± standard error) against the weight version, one line per environment."""
    return plot_runs({"": run_dir}, run_dir / EVAL_PLOT_FILE)


def plot_runs(runs: Mapping[str, Path], path: Path) -> Path | None:
    """Eval reward (± standard error) against the weight version, one line per run (named) and environment."""
    series = {name: read_records(folder) for name, folder in runs.items()}
    records = [record for found in series.values() for record in found]
    if not records:
        return None
    figure = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    titles = []
    for name, found in series.items():
        for label in dict.fromkeys(record.environment for record in found):
            mine = sorted((r for r in found if r.environment == label), key=lambda r: r.step)
            errors = [r.reward_stderr or 0.0 for r in mine]
            named = f"{name} {label}".strip()
            axes.errorbar([r.step for r in mine], [r.reward_mean for r in mine], yerr=errors, marker="o", capsize=3,
                          label=f"{named} ({mine[0].num_examples} examples)")  # fmt: skip
            titles.append(f"{named} {mine[0].reward_mean:.3f} (step {mine[0].step}) -> {mine[-1].reward_mean:.3f} "
                          f"(step {mine[-1].step})")  # fmt: skip
    axes.set_xlabel("RL step (weight version)")
    axes.set_ylabel("eval reward (greedy)")
    top = max(1.0, max(r.reward_mean + (r.reward_stderr or 0.0) for r in records))
    axes.set_ylim(0.0, math.ceil(top * 10) / 10)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_title("eval reward: " + "; ".join(titles) if len(titles) == 1 else "\n".join(titles), fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    return path
