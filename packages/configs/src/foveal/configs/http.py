"""`[inference.http]` and `[tinker.http]`: how long a client may take and how many may be connected at once."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class HttpLimits(BaseModel):
    """Slow or idle clients are cut off so they cannot hold a server's connections; health stays answerable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    header_timeout_s: float = Field(
        default=10.0, gt=0, description="A request line and headers not complete this long after they start: closed."
    )
    body_timeout_s: float = Field(
        default=60.0, gt=0, description="A request body not fully received this long after its headers: 408."
    )
    keep_alive_s: float = Field(default=5.0, gt=0, description="An idle kept-alive connection is closed after this.")
    max_connections: int = Field(
        default=1024, ge=1, description="Open connections (or running requests) per process; more get 503."
    )
