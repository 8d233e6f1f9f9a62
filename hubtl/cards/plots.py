"""The card's figures (matplotlib, written under training/): training curves and the confusion matrix."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

from ..layout import TRAINING_DIR, TrainingRecord, atomic_write, read_training_record
from .formatting import is_number, main_metric, metric_name

CURVES_PNG = f"{TRAINING_DIR}/training_curves.png"
CONFUSION_PNG = f"{TRAINING_DIR}/confusion_matrix.png"
#: Every figure `write_plots` may draw, relative to the output directory.
PLOT_FILES = (CURVES_PNG, CONFUSION_PNG)


def write_plots(output_dir: str | os.PathLike) -> list[Path]:
    """Draw training/training_curves.png and, for classification, training/confusion_matrix.png; return the paths."""
    directory = Path(output_dir)
    record = read_training_record(directory)
    written = []
    if record.metrics:
        written.append(_plot_curves(record, directory / CURVES_PNG))
    matrix = record.eval_results.get("eval_confusion_matrix")
    labels = record.eval_results.get("labels")
    if matrix and labels and len(labels) == len(matrix):
        written.append(_plot_confusion(matrix, labels, directory / CONFUSION_PNG))
    return written


#: Row kinds of metrics.jsonl: one row per epoch, the training loss every `logging_steps`, evaluations within epochs.
EPOCH, STEP, EVAL = "epoch", "step", "eval"
#: Metrics that lie in [0, 1] (their axis spans it, from 0 or, for accuracy, from chance).
_BOUNDED = ("eval_accuracy", "eval_f1", "eval_precision", "eval_recall")


def row_kind(row: dict[str, Any]) -> str:
    """The kind of a metrics.jsonl row; rows without `kind` (older records) are epoch rows."""
    return str(row.get("kind") or EPOCH)


def split_rows(metrics: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows of metrics.jsonl by kind: (epoch rows, step rows, in-epoch evaluation rows); unknown kinds dropped."""
    kinds: dict[str, list[dict[str, Any]]] = {EPOCH: [], STEP: [], EVAL: []}
    for row in metrics:
        kinds.get(row_kind(row), []).append(row)
    return kinds[EPOCH], kinds[STEP], kinds[EVAL]


def y_limits(key: str, values: list[float], num_labels: int | None = None) -> tuple[float | None, float | None]:
    """The y-axis of a curve: from 0 for losses and errors, [0, 1] for scores (accuracy from chance), None = free."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None, None
    low = min(finite)
    if key.startswith(_BOUNDED):
        floor = 0.0
        if key == "eval_accuracy" and num_labels and num_labels >= 2:
            floor = 1.0 / num_labels
        return min(floor, low), max(1.0, max(finite))
    if key == "eval_r2":
        return min(0.0, low), max(1.0, max(finite))
    if "loss" in key or key.startswith(("eval_mae", "eval_rmse", "eval_mse")):
        return min(0.0, low), None
    return None, None


def curves_figure(record: TrainingRecord) -> Any:
    """The training-curves figure: loss, and the main metric, with the kept epoch marked.

    The x-axis is the optimizer step when the record has step or in-epoch evaluation rows (so a run shorter than an
    epoch still draws curves), with the epoch on a second axis above; older records are plotted per epoch.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs, steps, evals = split_rows(record.metrics)
    by_step = bool(steps or evals)
    x_key = "step" if by_step else "epoch"
    main_key = main_metric(record)
    # a Figure of its own, not pyplot's: no global figure state, and pyplot is not imported at all
    fig = Figure(figsize=(10 if main_key else 5, 4))
    axes = fig.subplots(1, 2 if main_key else 1, squeeze=False)
    loss_ax = axes[0][0]
    if steps:
        _line(loss_ax, _points(steps, x_key, "loss"), "training loss", marker=None if len(steps) > 30 else ".")
    else:
        _line(loss_ax, _points(epochs, x_key, "train_loss"), "training loss (epoch mean)")
    _line(loss_ax, _points(evals + epochs, x_key, "eval_loss"), "evaluation loss")
    loss_values = [y for _, y in _points(steps, x_key, "loss") + _points(epochs + evals, x_key, "train_loss")]
    _set_limits(loss_ax, y_limits("loss", loss_values + [y for _, y in _points(evals + epochs, x_key, "eval_loss")]))
    loss_ax.set(title="Loss", xlabel="optimizer step" if by_step else "epoch", ylabel="loss")
    plotted = [(loss_ax, "eval_loss")]
    if main_key:
        ax = axes[0][1]
        points = _points(evals + epochs, x_key, main_key)
        _line(ax, points, f"evaluation {metric_name(main_key)}", color="tab:green")
        _set_limits(ax, y_limits(main_key, [y for _, y in points], _num_labels(record)))
        ax.set(title=f"Evaluation {metric_name(main_key)}", xlabel="optimizer step" if by_step else "epoch",
               ylabel=metric_name(main_key))
        plotted.append((ax, main_key))
    best = record.summary.get("best_epoch")
    best_x = _best_x(best, epochs, x_key)
    for ax, key in plotted:
        if best_x is not None:
            ax.axvline(best_x, color="tab:red", linestyle=":", linewidth=1.2, label=f"kept: epoch {best}")
            value = next((r.get(key) for r in epochs if r.get("epoch") == best and is_number(r.get(key))), None)
            if value is not None:
                ax.plot([best_x], [value], marker="*", markersize=16, markerfacecolor="none", markeredgewidth=1.5,
                        color="tab:red", linestyle="none", clip_on=False)  # hollow: the point it marks shows through
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if by_step:
            ax.set_xlim(left=0)
            per_epoch = _steps_per_epoch(steps, evals, epochs)
            if per_epoch:
                ax.secondary_xaxis("top", functions=(lambda s, k=per_epoch: s / k, lambda e, k=per_epoch: e * k))
                ax.set_xlabel("optimizer step (top: epoch)")
    fig.tight_layout()
    return fig


def _plot_curves(record: TrainingRecord, path: Path) -> Path:
    """Draw and save the training-curves figure."""
    return _save_figure(curves_figure(record), path)


def _points(rows: list[dict[str, Any]], x_key: str, key: str) -> list[tuple[float, float]]:
    """(x, value) of the rows that have both, sorted by x, one point per x (the last row's)."""
    found = {r[x_key]: r[key] for r in rows if is_number(r.get(x_key)) and is_number(r.get(key))}
    return sorted(found.items())


def _line(ax: Any, points: list[tuple[float, float]], label: str, marker: str | None = "o", **style: Any) -> None:
    """One curve; markers show every point (a single point is still visible)."""
    if points:
        ax.plot(*zip(*points), marker=marker or ("o" if len(points) == 1 else None), label=label, clip_on=False, **style)


def _set_limits(ax: Any, limits: tuple[float | None, float | None]) -> None:
    """Apply y-limits where given (a free end stays automatic)."""
    low, high = limits
    if low is not None and high is not None and high <= low:
        high = low + 1.0
    if low is not None or high is not None:
        ax.set_ylim(bottom=low, top=high)


def _best_x(best: Any, epochs: list[dict[str, Any]], x_key: str) -> float | None:
    """Where the kept epoch lies on the x-axis: its epoch, or the step its epoch row ended at."""
    if not is_number(best):
        return None
    if x_key == "epoch":
        return float(best)
    row = next((r for r in epochs if r.get("epoch") == best and is_number(r.get("step"))), None)
    return float(row["step"]) if row else None


def _steps_per_epoch(*groups: list[dict[str, Any]]) -> float | None:
    """Optimizer steps per epoch, from the last row with a step and an epoch above 0 of the first group that has one."""
    for rows in groups:
        for row in reversed(rows):
            step, epoch = row.get("step"), row.get("epoch")
            if is_number(step) and is_number(epoch) and epoch > 0 and step > 0:
                return float(step) / float(epoch)
    return None


def _num_labels(record: TrainingRecord) -> int | None:
    """How many labels a single-label classifier chooses from (for accuracy's chance level)."""
    if record.config.get("task", "classification") != "classification":
        return None
    labels = record.eval_results.get("labels") or record.config.get("labels")
    return len(labels) if isinstance(labels, list) and labels else None


def _plot_confusion(matrix: list[list[int]], labels: list[str], path: Path) -> Path:
    """The confusion matrix of the final evaluation, counts annotated."""
    import numpy as np
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=float)
    size = max(4.0, 0.5 * len(labels) + 2)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels=labels, rotation=45 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center")
    ax.set_yticks(ticks, labels=labels)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (evaluation set)")
    if len(labels) <= 30:
        threshold = counts.max() / 2 if counts.size else 0
        for i in ticks:
            for j in ticks:
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center",
                        color="white" if counts[i, j] > threshold else "black")
    fig.tight_layout()
    return _save_figure(fig, path)


def _save_figure(fig: Any, path: Path) -> Path:
    """Save a figure as PNG by atomic replace (never writing through a hard link)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    atomic_write(path, buffer.getvalue())
    return path
