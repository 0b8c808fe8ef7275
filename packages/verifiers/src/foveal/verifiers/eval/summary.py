"""The numbers an eval reports: mean reward with its standard error, pass@k, metric means, failures.

Rollouts of one example are not independent samples of the environment (they share the prompt), so the
standard error is computed over examples: the spread of the per-example mean rewards divided by
sqrt(number of examples). pass@k is the unbiased estimator of Chen et al. (2021): with n rollouts of an
example of which c pass, 1 - C(n-c, k) / C(n, k), averaged over examples; a rollout passes when its
reward reaches `pass_threshold`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from foveal.verifiers.rollout import Rollout


class Summary(BaseModel):
    """One eval's results in numbers; written as summary.json and shown at the top of the report."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    environment: str
    model: str
    split: str
    num_examples: int
    rollouts_per_example: int
    num_rollouts: int
    reward_mean: float
    reward_stderr: float | None = Field(description="Over per-example means; None with a single example.")
    pass_threshold: float
    pass_at_k: dict[int, float]
    metrics: dict[str, float] = Field(description="Mean of each metric over the rollouts that report it.")
    failed: int = Field(description="Rollouts that ended with an error (scored 0).")
    stop_reasons: dict[str, int]
    seconds: float


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k rollouts drawn without replacement from n (c passing) passes."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def k_values(n: int) -> list[int]:
    """The k reported for groups of n: powers of two up to n, and n itself."""
    return sorted({*(2**i for i in range(n.bit_length()) if 2**i <= n), n})


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and the standard error of the mean (sample std, ddof 1); no error for fewer than 2 values."""
    if not values:
        raise ValueError("mean_and_stderr: no values")
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, None
    variance = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance / len(values))


def summarize(
    groups: Sequence[Sequence[Rollout]],
    *,
    model: str,
    split: str,
    pass_threshold: float = 1.0,
    seconds: float = 0.0,
) -> Summary:
    """The summary of scored groups (one group of equal size per example)."""
    sizes = {len(group) for group in groups}
    if not groups or len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"summarize: groups of one equal, non-zero size (got sizes {sorted(sizes)})")
    n = sizes.pop()
    rollouts = [r for group in groups for r in group]
    per_example = [math.fsum(r.reward for r in group) / n for group in groups]
    passing = [sum(r.reward >= pass_threshold for r in group) for group in groups]
    metric_values: dict[str, list[float]] = {}
    for rollout in rollouts:
        for name, value in rollout.metrics.items():
            metric_values.setdefault(name, []).append(value)
    return Summary(
        environment=rollouts[0].environment,
        model=model,
        split=split,
        num_examples=len(groups),
        rollouts_per_example=n,
        num_rollouts=len(rollouts),
        reward_mean=math.fsum(r.reward for r in rollouts) / len(rollouts),
        reward_stderr=mean_and_stderr(per_example)[1],
        pass_threshold=pass_threshold,
        pass_at_k={k: math.fsum(pass_at_k(n, c, k) for c in passing) / len(groups) for k in k_values(n)},
        metrics={name: math.fsum(values) / len(values) for name, values in sorted(metric_values.items())},
        failed=sum(r.failed for r in rollouts),
        stop_reasons=dict(sorted(Counter(r.stop_reason for r in rollouts).items())),
        seconds=seconds,
    )
