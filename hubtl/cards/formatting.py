"""How the training record reads in a card: metric names, the main metric, table cells and values as text."""

from __future__ import annotations

import html
import json
import math
from typing import Any

from ..layout import TrainingRecord

#: eval key -> (metric type on the Hub, display name, metric args); its order ranks the main metric of a record.
METRICS: dict[str, tuple[str, str, dict[str, str] | None]] = {
    "eval_accuracy": ("accuracy", "Accuracy", None),
    "eval_f1_macro": ("f1", "F1 (macro)", {"average": "macro"}),
    "eval_f1_micro": ("f1", "F1 (micro)", {"average": "micro"}),
    "eval_f1_weighted": ("f1", "F1 (weighted)", {"average": "weighted"}),
    "eval_precision_macro": ("precision", "Precision (macro)", {"average": "macro"}),
    "eval_recall_macro": ("recall", "Recall (macro)", {"average": "macro"}),
    "eval_mae": ("mae", "MAE", None),
    "eval_rmse": ("rmse", "RMSE", None),
    "eval_mse": ("mse", "MSE", None),
    "eval_r2": ("r_squared", "R²", None),
    "eval_loss": ("loss", "Evaluation loss", None),
}
#: Column titles of the per-epoch table for the keys that are not metrics.
EPOCH_COLUMNS = {
    "epoch": "Epoch",
    "step": "Step",
    "train_loss": "Training loss",
    "learning_rate": "Learning rate",
    "epoch_time_s": "Time (s)",
    "train_samples_per_second": "Samples/s",
}


def metric_name(key: str) -> str:
    """A readable name for a metrics key ('eval_f1_macro' -> 'F1 (macro)')."""
    if key in METRICS:
        return METRICS[key][1]
    if key in EPOCH_COLUMNS:
        return EPOCH_COLUMNS[key]
    text = key[5:] if key.startswith("eval_") else key
    return text.replace("_", " ").capitalize()


def main_metric(record: TrainingRecord) -> str | None:
    """The metric that picked the best epoch, else the first result metric the record has."""
    chosen = record.summary.get("metric_for_best_model") or record.config.get("metric_for_best_model")
    if chosen and not str(chosen).startswith("eval_"):
        chosen = f"eval_{chosen}"
    seen = [k for row in record.metrics for k in row] + list(record.eval_results)
    if chosen and chosen in seen and chosen != "eval_loss":
        return chosen
    return next((k for k in METRICS if k in seen and k != "eval_loss"), chosen if chosen in seen else None)


def is_number(value: Any) -> bool:
    """True for ints and floats, not for booleans."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(value: Any, key: str = "") -> str:
    """A table cell for a number: integers as is, learning rates in scientific notation, others to 4 decimals."""
    if value is None:
        return "—"
    if not is_number(value):
        return cell(str(value))
    if isinstance(value, float) and not math.isfinite(value):
        return "undefined"
    if isinstance(value, int) or (key in ("epoch", "step", "support") and float(value).is_integer()):
        return str(int(value))
    if "learning_rate" in key:
        return f"{value:.2e}"
    if key.endswith(("_time_s", "_per_second")) or key == "epoch":
        return f"{value:.1f}"
    return f"{value:.4f}"


def value_text(value: Any) -> str:
    """A hyperparameter value as table text; a missing value says so instead of 'None'."""
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        items = [value_text(v) for v in value]
        text = ", ".join(items[:20]) + (f", … ({len(items)} in all)" if len(items) > 20 else "")
        return text or "empty"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str) if value else "empty"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def cell(text: Any) -> str:
    """Text safe inside a Markdown table cell, shown as written (never as HTML: labels and names are users' words)."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def code(text: Any) -> str:
    """Text as an inline code span on one line, safe in a table cell: no backtick inside can end the span early."""
    return "`" + str(text).replace("`", "'").replace("|", "\\|").replace("\n", " ") + "`"


def count(n: Any) -> str:
    """A count with thousands separators (the templates' `count` filter)."""
    return f"{int(n):,}"
