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
    counts = ConfusionCounts(labels)
    counts.add(pred, true)
    return counts.compute()


def multi_label_metrics(pred: np.ndarray, true: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Micro and macro F1 over labels, with per-label figures."""
    counts = LabelCounts(labels)
    counts.add(pred, true)
    return counts.compute()


def regression_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, Any]:
    """MAE, RMSE and R² (averaged over outputs)."""
    sums = ErrorSums()
    sums.add(pred, true)
    return sums.compute()


# Metrics summed batch by batch: evaluation keeps these counts and sums, never every example's outputs, so its
# memory does not grow with the eval set. Each `add` takes one batch of predictions and targets (numpy).


class ConfusionCounts:
    """The confusion matrix (rows: true, columns: predicted), from which every single-label metric follows."""

    def __init__(self, labels: list[str]) -> None:
        self.labels = list(labels)
        self.matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)

    def add(self, pred: np.ndarray, true: np.ndarray) -> None:
        """Count one batch of predicted and true class indices."""
        np.add.at(self.matrix, (true, pred), 1)

    def compute(self) -> dict[str, Any]:
        """Accuracy, macro-F1, per-class figures and the confusion matrix."""
        matrix, n = self.matrix, len(self.labels)
        tp = np.diag(matrix)
        per_class = _per_class(tp, matrix.sum(0) - tp, matrix.sum(1) - tp, self.labels)
        total = int(matrix.sum())
        return {
            "eval_accuracy": float(tp.sum() / total) if total else 0.0,
            "eval_f1_macro": float(np.mean([c["f1"] for c in per_class.values()])) if n else 0.0,
            "eval_per_class": per_class,
            "eval_confusion_matrix": matrix.tolist(),
        }


class LabelCounts:
    """Per-label true positives, false positives and false negatives, and the exactly matched examples (multi-label)."""

    def __init__(self, labels: list[str]) -> None:
        self.labels = list(labels)
        self.tp, self.fp, self.fn = (np.zeros(len(labels), dtype=np.int64) for _ in range(3))
        self.exact = self.count = 0

    def add(self, pred: np.ndarray, true: np.ndarray) -> None:
        """Count one batch of 0/1 predictions and targets, [examples, labels]."""
        self.tp += (pred & true).sum(0)
        self.fp += (pred & (1 - true)).sum(0)
        self.fn += ((1 - pred) & true).sum(0)
        self.exact += int((pred == true).all(1).sum())
        self.count += len(true)

    def compute(self) -> dict[str, Any]:
        """Micro and macro F1, the exact-match ratio and per-label figures."""
        tp, fp, fn = self.tp, self.fp, self.fn
        per_class = _per_class(tp, fp, fn, self.labels)
        micro_p = tp.sum() / max(tp.sum() + fp.sum(), 1)
        micro_r = tp.sum() / max(tp.sum() + fn.sum(), 1)
        return {
            "eval_f1_micro": float(_f1(np.array([micro_p]), np.array([micro_r]))[0]),
            "eval_f1_macro": float(np.mean([c["f1"] for c in per_class.values()])) if self.labels else 0.0,
            "eval_exact_match": float(self.exact / self.count) if self.count else 0.0,
            "eval_per_class": per_class,
        }


class ErrorSums:
    """Absolute and squared errors summed, and each output's target mean and spread (Chan's parallel update)."""

    def __init__(self) -> None:
        self.count = 0
        self.abs_sum = 0.0
        self.sq_sums: np.ndarray | float = 0.0  # per output
        self.mean: np.ndarray | float = 0.0  # of the targets, per output
        self.m2: np.ndarray | float = 0.0  # sum of squared deviations of the targets from their mean, per output

    def add(self, pred: np.ndarray, true: np.ndarray) -> None:
        """Add one batch of predictions and targets, [examples, outputs]."""
        pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
        if not len(true):
            return
        err = pred - true
        self.abs_sum += float(np.abs(err).sum())
        self.sq_sums = self.sq_sums + (err**2).sum(0)
        n, batch_mean = len(true), true.mean(0)
        total = self.count + n
        delta = batch_mean - self.mean
        self.m2 = self.m2 + ((true - batch_mean) ** 2).sum(0) + delta**2 * self.count * n / total
        self.mean = self.mean + delta * n / total
        self.count = total

    def compute(self) -> dict[str, Any]:
        """MAE, RMSE and R² (averaged over outputs)."""
        if not self.count:
            return {"eval_mae": float("nan"), "eval_rmse": float("nan"), "eval_r2": 0.0}
        ss_res, ss_tot = np.atleast_1d(self.sq_sums), np.atleast_1d(self.m2)
        elements = self.count * len(ss_res)
        r2 = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), 0.0)
        return {
            "eval_mae": float(self.abs_sum / elements),
            "eval_rmse": float(np.sqrt(ss_res.sum() / elements)),
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
