"""Evaluation metrics on gathered predictions and targets (numpy): what the tasks in `hubtl.tasks` report."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Metrics where smaller is better; every other metric is maximised.
LOWER_IS_BETTER = {"eval_loss", "eval_mae", "eval_rmse", "loss", "mae", "rmse"}


def metric_key(name: str) -> str:
    """Accept 'accuracy' as well as 'eval_accuracy', as transformers does."""
    return name if name.startswith("eval_") else f"eval_{name}"


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """Elementwise F1, zero where precision + recall is zero."""
    denom = precision + recall
    return np.divide(2 * precision * recall, denom, out=np.zeros_like(denom, dtype=float), where=denom > 0)


def _per_class(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, labels: list[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of each class, plus the arrays' F1 for averaging."""
    precision = np.divide(tp, tp + fp, out=np.zeros(len(tp)), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros(len(tp)), where=(tp + fn) > 0)
    f1 = _f1(precision, recall)
    return {
        label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for label, p, r, f, s in zip(labels, precision, recall, f1, tp + fn)
    }


def classification_metrics(pred: np.ndarray, true: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class figures and the confusion matrix (rows: true, columns: predicted)."""
    n = len(labels)
    matrix = np.zeros((n, n), dtype=int)
    np.add.at(matrix, (true, pred), 1)
    tp = np.diag(matrix)
    per_class = _per_class(tp, matrix.sum(0) - tp, matrix.sum(1) - tp, labels)
    return {
        "eval_accuracy": float((pred == true).mean()) if len(true) else 0.0,
        "eval_f1_macro": float(np.mean([c["f1"] for c in per_class.values()])) if n else 0.0,
        "eval_per_class": per_class,
        "eval_confusion_matrix": matrix.tolist(),
    }


def multi_label_metrics(pred: np.ndarray, true: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Micro and macro F1 over labels, with per-label figures."""
    tp = (pred & true).sum(0)
    fp = (pred & (1 - true)).sum(0)
    fn = ((1 - pred) & true).sum(0)
    per_class = _per_class(tp, fp, fn, labels)
    micro_p = tp.sum() / max(tp.sum() + fp.sum(), 1)
    micro_r = tp.sum() / max(tp.sum() + fn.sum(), 1)
    return {
        "eval_f1_micro": float(_f1(np.array([micro_p]), np.array([micro_r]))[0]),
        "eval_f1_macro": float(np.mean([c["f1"] for c in per_class.values()])) if labels else 0.0,
        "eval_exact_match": float((pred == true).all(1).mean()) if len(true) else 0.0,
        "eval_per_class": per_class,
    }


def regression_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, Any]:
    """MAE, RMSE and R² (averaged over outputs)."""
    err = pred - true
    ss_res = (err**2).sum(0)
    ss_tot = ((true - true.mean(0)) ** 2).sum(0)
    r2 = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), 0.0)
    return {
        "eval_mae": float(np.abs(err).mean()),
        "eval_rmse": float(np.sqrt((err**2).mean())),
        "eval_r2": float(r2.mean()),
    }


def is_better(metric: str, new: float, best: float | None, greater_is_better: bool | None = None) -> bool:
    """Whether `new` improves on `best` for this metric; NaN (a diverged run) never improves, and is beaten by anything."""
    if math.isnan(new):
        return False
    if best is None or math.isnan(best):
        return True
    higher = greater_is_better if greater_is_better is not None else metric not in LOWER_IS_BETTER
    return new > best if higher else new < best
