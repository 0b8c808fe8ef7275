"""Training curves as PNGs in the run folder: loss and learning rate by step, or any logged metrics in panels.

Drawn from `metrics.jsonl`, not from memory, so the plot of a resumed run shows its whole history. It uses
matplotlib's Agg canvas directly (no pyplot, no global backend), which renders headless and leaves any
interactive backend of the caller untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from foveal.trainer.training.metrics import read_metrics



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


def plot_metrics(metrics_path: Path, out_path: Path, keys: Sequence[str]) -> Path | None:
    """One panel per metric in `keys` that was logged (raw and smoothed) over a shared step axis; None if none was."""
    rows = read_metrics(metrics_path)
    panels = curves(rows, keys)
    if not panels:
        return None
    figure = Figure(figsize=(8, 2.2 * len(panels)), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for panel, (key, points) in zip(axes, panels.items(), strict=True):
        steps, values = [s for s, _ in points], [v for _, v in points]
        panel.plot(steps, values, color="tab:blue", alpha=0.35)
        panel.plot(steps, moving_average(values, window=max(1, len(values) // 20)), color="tab:blue")
        panel.set_ylabel(key)
        panel.grid(alpha=0.3)
    axes[0].set_title(f"{out_path.parent.name}: {max(row['step'] for row in rows)} steps")
    axes[-1].set_xlabel("step")
    figure.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path)
    return out_path


def curves(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, list[tuple[int, float]]]:
    """The (step, value) points of each key in `keys` that some row logged, in row order: a metric logged only
    on some rows (an evaluation, step 0's included) is a curve through those rows."""
    points = {key: [(row["step"], row[key]) for row in rows if key in row] for key in keys}
    return {key: curve for key, curve in points.items() if curve}


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over the last `window` values (shorter at the start), same length as `values`."""
    out, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        out.append(total / min(index + 1, window))
    return out
