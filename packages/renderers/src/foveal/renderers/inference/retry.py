"""When a client retries a request, and how long it waits: pure policy, no I/O.

Retried: a 503 whose code is in `RETRYABLE_CODES` (a weight update aborted the request, or no server is
up yet) and a connection that failed before an answer arrived. Never retried: any 4xx (the request is
wrong and stays wrong) and a read timeout (the server is busy; asking again only adds load).
Waits grow exponentially with full jitter, so clients aborted together do not come back together.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from foveal.renderers.inference.wire import RETRYABLE_CODES


class RetryPolicy(BaseModel):
    """Bounded retries: at most `max_attempts` tries, all inside `deadline_s` seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=8, ge=1, le=100, description="Tries per call, the first included.")
    initial_backoff_s: float = Field(default=0.1, gt=0.0, description="Longest wait before the second try.")
    max_backoff_s: float = Field(default=5.0, gt=0.0, description="Cap on any single wait.")
    deadline_s: float = Field(default=900.0, gt=0.0, description="No new try starts after this many seconds.")

    @model_validator(mode="after")
    def _cap_covers_initial(self) -> RetryPolicy:
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError(
                f"retry.max_backoff_s ({self.max_backoff_s}) must be >= retry.initial_backoff_s "
                f"({self.initial_backoff_s})"
            )
        return self


def is_retryable_status(status: int, code: str) -> bool:
    """Whether an HTTP error answer may be retried: only 503 with a retryable code."""
    return status == 503 and code in RETRYABLE_CODES


def backoff_s(policy: RetryPolicy, failed_attempts: int, draw: Callable[[], float] = random.random) -> float:
    """Seconds to wait after `failed_attempts` (>= 1) tries: uniform in [0, min(cap, initial * 2^(n-1))]."""
    ceiling = min(policy.max_backoff_s, policy.initial_backoff_s * 2.0 ** min(failed_attempts - 1, 60))
    return ceiling * draw()
