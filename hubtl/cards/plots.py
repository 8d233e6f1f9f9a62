"""The card's figures (matplotlib, written under training/): training curves and the confusion matrix."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from ..layout import TRAINING_DIR, TrainingRecord, atomic_write, read_training_record
from .formatting import main_metric, metric_name

CURVES_PNG = f"{TRAINING_DIR}/training_curves.png"
CONFUSION_PNG = f"{TRAINING_DIR}/confusion_matrix.png"
#: Every figure `write_plots` may draw, relative to the output directory.
PLOT_FILES = (CURVES_PNG, CONFUSION_PNG)


def write_plots(output_dir: str | os.PathLike) -> list[Path]:
    """Draw training/training_curves.png and, for classification, training/confusion_matrix.png; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
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


def _plot_curves(record: TrainingRecord, path: Path) -> Path:
    """Loss (training and evaluation) and the main metric per epoch, side by side."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = [r for r in record.metrics if isinstance(r.get("epoch"), (int, float))]
    main_key = main_metric(record)
    fig, axes = plt.subplots(1, 2 if main_key else 1, figsize=(10 if main_key else 5, 4), squeeze=False)
    loss_ax = axes[0][0]
    for key, label in (("train_loss", "training loss"), ("eval_loss", "evaluation loss")):
        points = [(r["epoch"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        if points:
            loss_ax.plot(*zip(*points), marker="o", label=label)
    loss_ax.set(title="Loss", xlabel="epoch", ylabel="loss")
    if loss_ax.get_legend_handles_labels()[0]:
        loss_ax.legend()
    if main_key:
        ax = axes[0][1]
        points = [(r["epoch"], r[main_key]) for r in rows if isinstance(r.get(main_key), (int, float))]
        if points:
            ax.plot(*zip(*points), marker="o", color="tab:green")
        ax.set(title=f"Evaluation {metric_name(main_key)}", xlabel="epoch", ylabel=metric_name(main_key))
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return _save_figure(fig, path)


def _plot_confusion(matrix: list[list[int]], labels: list[str], path: Path) -> Path:
    """The confusion matrix of the final evaluation, counts annotated."""
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(matrix, dtype=float)
    size = max(4.0, 0.5 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
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
    """Save a figure as PNG by atomic replace (never writing through a hard link), then close it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    atomic_write(path, buffer.getvalue())
    return path
