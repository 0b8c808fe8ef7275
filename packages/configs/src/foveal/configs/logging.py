"""The `[logging]` section: where a run writes its metrics, plots and artifacts."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class LoggingConfig(BaseModel):
    """The run folder and the metric sinks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_dir: Path = Field(default=Path("runs/default"), description="Folder for metrics, checkpoints and assets.")
    log_every: int = Field(default=1, ge=1, description="Log metrics every N steps.")
    jsonl: bool = Field(default=True, description="Write metrics to `<run dir>/metrics.jsonl`.")
    wandb_project: str | None = Field(default=None, description="Weights & Biases project; None disables it.")
    plots: bool = Field(default=False, description="Render metric plots into the run folder at the end.")
