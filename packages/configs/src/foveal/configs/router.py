"""The `[inference.router]` section: the process in front of the inference servers."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RouterConfig(BaseModel):
    """Where the router listens, which servers it fronts, and how it watches them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(default="127.0.0.1", min_length=1, description="Address the router binds; loopback by default.")
    port: int = Field(default=7999, ge=0, le=65535, description="Port the router listens on; 0 lets the OS choose.")
    upstreams: tuple[str, ...] = Field(
        default=(), description="Server URLs; empty means inference.num_servers local servers from inference.port up."
    )
    health_interval_s: float = Field(default=1.0, gt=0, description="Seconds between health checks of each server.")
    health_timeout_s: float = Field(default=2.0, gt=0, description="A slower health check marks a server down.")
    connect_timeout_s: float = Field(default=2.0, gt=0, description="Opening a connection to a server.")
    upstream_timeout_s: float = Field(
        default=900.0, gt=0, description="Longest wait for a server's answer (a paused server holds requests)."
    )
    hold_when_down_s: float = Field(
        default=120.0,
        ge=0,
        description="How long a request or control call waits for a server to come up when none is (a restarting "
        "server then looks like latency to clients); 0: 503 unavailable at once.",
    )
    max_sessions: int = Field(default=100_000, ge=1, description="Sticky sessions remembered (least recent dropped).")
