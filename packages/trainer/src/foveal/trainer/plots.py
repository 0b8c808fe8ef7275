"""Training curves as a PNG in the run folder: loss (with a moving average) and learning rate by step.

Drawn from `metrics.jsonl`, not from memory, so the plot of a resumed run shows its whole history. It uses
matplotlib's Agg canvas directly (no pyplot, no global backend), which renders headless and leaves any
interactive backend of the caller untouched.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from foveal.trainer.metrics import read_metrics

PLOT_FILE = "loss.png"


def plot_training(metrics_path: Path, out_path: Path) -> Path | None:
    """Write the loss and lr curves of `metrics_path` to `out_path`; None when nothing was logged yet."""
    rows = read_metrics(metrics_path)
    if not rows:
        return None
    steps = [row["step"] for row in rows]
    losses = [row["loss"] for row in rows]
    figure = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(figure)
    loss_axes, lr_axes = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    loss_axes.plot(steps, losses, color="tab:blue", alpha=0.35, label="loss")
    loss_axes.plot(steps, moving_average(losses, window=max(1, len(losses) // 20)), color="tab:blue", label="smoothed")
    loss_axes.set_ylabel("loss")
    loss_axes.set_title(f"{out_path.parent.name}: loss {losses[0]:.3f} -> {losses[-1]:.3f} in {steps[-1]} steps")
    loss_axes.legend(loc="upper right")
    loss_axes.grid(alpha=0.3)
    lr_axes.plot(steps, [row["lr"] for row in rows], color="tab:orange")
    lr_axes.set_ylabel("lr")
    lr_axes.set_xlabel("step")
    lr_axes.grid(alpha=0.3)
    figure.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path)
    return out_path


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over the last `window` values (shorter at the start), same length as `values`."""
    out, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        out.append(total / min(index + 1, window))
    return out
