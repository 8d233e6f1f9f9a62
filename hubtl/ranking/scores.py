"""Transferability scores: how well frozen features of a candidate backbone suit a task, without fine-tuning.

- `logme`: the log maximum evidence of a Bayesian linear model on the features (You et al., "LogME:
  Practical Assessment of Pre-trained Models for Transfer Learning", ICML 2021), maximised over the
  prior and noise precisions with the fixed-point updates of the paper's Algorithm 2, per target
  column (one-hot class, label or regression output), vectorised over columns, in float64.
- `knn`: leave-one-out k-nearest-neighbour accuracy (R² for regression) on the train features.
- `linear`: a quick L2-regularised linear probe (L-BFGS) trained on train features and scored on eval
  features with the task's main metric.

Every score is "higher is better". A score is a function registered in `SCORES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError

_EPSILON = 1e-5  # keeps the updates finite when the fit is perfect, as in the paper's algorithm
_MAX_ITERATIONS = 11
_TOLERANCE = 1e-3


def task_kind(task: Any, targets: np.ndarray | torch.Tensor) -> str:
    """'classification' (one class id per example), 'multi_label' (label indicators) or 'regression' (values)."""
    integer = not torch.as_tensor(np.asarray(targets)[:1]).is_floating_point()
    if integer and np.asarray(targets).ndim == 1:
        return "classification"
    return "multi_label" if task.uses_labels else "regression"


def target_columns(targets: np.ndarray, kind: str, num_classes: int | None) -> np.ndarray:
    """The targets as an (N, C) float64 matrix: one-hot classes and multi-label indicators that occur, or regression outputs."""
    targets = np.asarray(targets)
    if kind == "classification":
        classes = int(num_classes or (targets.max() + 1))
        columns = np.eye(classes, dtype=np.float64)[targets.astype(np.int64)]
    else:
        columns = targets.reshape(len(targets), -1).astype(np.float64)
        if kind == "regression":
            return columns
    # A class or label with no positive example here gets no column: an all-zero column adds an evidence term that
    # grows with the feature width, not with how well the features suit the task, and can reorder the candidates.
    present = columns.any(0)
    if not present.any():
        raise ConfigError(
            "No label occurs in the scored examples (every multi-label target is all zeros): LogME has nothing to "
            "score. Check the label column, or score more examples (--max_samples)."
        )
    return columns[:, present]


def logme(features: np.ndarray, targets: np.ndarray) -> float:
    """LogME of (N, D) features for (N, C) target columns: the mean over columns of the per-example log evidence.

    Pass only columns with a positive example (as `target_columns` gives them): each column counts in the mean.

    With F = U S Vᵀ (k = rank of F, σ = s²) and x = Uᵀy, each column's α, β start at 1 and repeat
    t = α/β; γ = Σ σ/(σ+t); |m|² = Σ σx²/(σ+t)²; |Fm−y|² = Σ x²t²/(σ+t)² + (|y|² − |x|²);
    α ← γ/(|m|²+ε); β ← (N−γ)/(|Fm−y|²+ε), until t changes by at most 0.1 %. The evidence is
    D/2 log α + N/2 log β − N/2 log 2π − β/2 |Fm−y|² − α/2 |m|² − ½ log|αI + βFᵀF|, where the
    log-determinant counts the D−k zero eigenvalues as log α each.
    """
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    n, d = f.shape
    if n < 2:
        raise ConfigError("LogME needs at least 2 examples.")
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    keep = s > s.max(initial=0.0) * max(n, d) * np.finfo(np.float64).eps
    u, sigma = u[:, keep], (s[keep] ** 2)[:, None]  # (N, k), (k, 1)
    k = sigma.shape[0]
    x = u.T @ y  # (k, C)
    x2 = x**2
    outside = np.maximum((y**2).sum(0) - x2.sum(0), 0.0)  # |y|² outside the span of F
    columns = y.shape[1]
    alpha, beta = np.ones(columns), np.ones(columns)
    running = np.ones(columns, dtype=bool)
    m2 = res2 = np.zeros(columns)
    for _ in range(_MAX_ITERATIONS):
        t = alpha / beta
        gamma = (sigma / (sigma + t)).sum(0)
        new_m2 = (sigma * x2 / (sigma + t) ** 2).sum(0)
        new_res2 = (x2 * (t / (sigma + t)) ** 2).sum(0) + outside
        new_alpha = gamma / (new_m2 + _EPSILON)
        new_beta = (n - gamma) / (new_res2 + _EPSILON)
        m2, res2 = np.where(running, new_m2, m2), np.where(running, new_res2, res2)
        alpha, beta = np.where(running, new_alpha, alpha), np.where(running, new_beta, beta)
        running &= np.abs(new_alpha / new_beta - t) / t > _TOLERANCE
        if not running.any():
            break
    log_det = np.log(alpha + beta * sigma).sum(0) + (d - k) * np.log(alpha)
    evidence = (
        d / 2 * np.log(alpha) + n / 2 * np.log(beta) - n / 2 * math.log(2 * math.pi)
        - beta / 2 * res2 - alpha / 2 * m2 - log_det / 2
    )  # fmt: skip
    return float((evidence / n).mean())


def knn_accuracy(features: np.ndarray, targets: np.ndarray, k: int = 5, kind: str = "classification") -> float:
    """Leave-one-out k-NN on L2-normalised features: accuracy (multi-label: per-label accuracy; regression: R²)."""
    f = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    f = torch.nn.functional.normalize(f, dim=1)
    n = len(f)
    if n < 2:
        raise ConfigError("k-NN needs at least 2 examples.")
    k = max(1, min(k, n - 1))
    neighbours = torch.empty((n, k), dtype=torch.long)
    for start in range(0, n, 1024):  # in blocks: the full N×N similarity matrix may not fit
        block = f[start : start + 1024] @ f.T
        rows = torch.arange(block.shape[0])
        block[rows, rows + start] = -float("inf")  # leave the example itself out
        neighbours[start : start + 1024] = block.topk(k, dim=1).indices
    y = np.asarray(targets)
    idx = neighbours.numpy()
    if kind == "classification":
        y = y.astype(np.int64)
        votes = np.zeros((n, int(y.max()) + 1))
        np.add.at(votes, (np.repeat(np.arange(n), k), y[idx].reshape(-1)), 1.0)
        # ties go to the nearest neighbour's class among the tied ones
        nearest_bonus = np.zeros_like(votes)
        nearest_bonus[np.arange(n), y[idx[:, 0]]] = 0.5
        return float(((votes + nearest_bonus).argmax(1) == y).mean())
    y = y.reshape(n, -1).astype(np.float64)
    predicted = y[idx].mean(1)
    if kind == "multi_label":
        return float(((predicted >= 0.5) == (y >= 0.5)).mean())
    return _r2(predicted, y)


def linear_probe_score(
    train_features: np.ndarray, train_targets: np.ndarray, eval_features: np.ndarray, eval_targets: np.ndarray,
    task: Any, labels: list[str] | None, weight_decay: float = 1e-4, max_iter: int = 100,
) -> float:  # fmt: skip
    """A linear head fitted by L-BFGS on standardised train features with the task's loss, scored on eval.

    The score is the task's main metric when it is higher-is-better, else R² (regression)."""
    x = torch.as_tensor(np.asarray(train_features), dtype=torch.float32)
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    x = (x - mean) / std
    xe = (torch.as_tensor(np.asarray(eval_features), dtype=torch.float32) - mean) / std
    y = torch.as_tensor(np.asarray(train_targets)).to(task.target_dtype())
    ye = torch.as_tensor(np.asarray(eval_targets)).to(task.target_dtype())
    kind = task_kind(task, y)
    outputs = task.num_outputs(labels, int(y.shape[1]) if y.ndim > 1 else 1)
    generator = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(x.shape[1], outputs)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.01, generator=generator)
        head.bias.zero_()
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = task.loss(head(x), y) + weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        logits = head(xe)
    if kind == "regression":
        return _r2(logits.numpy().reshape(len(ye), -1), ye.numpy().reshape(len(ye), -1))
    metrics = task.compute_metrics(logits, ye, labels, 0.5)
    return float(metrics[task.default_metric])


def _r2(predicted: np.ndarray, y: np.ndarray) -> float:
    """Coefficient of determination, averaged over output columns."""
    residual = ((y - predicted) ** 2).sum(0)
    total = ((y - y.mean(0)) ** 2).sum(0)
    return float(np.mean(1.0 - residual / np.maximum(total, 1e-12)))


#: name -> (what it needs: "train" or "train+eval", one-line meaning)
SCORES: dict[str, tuple[str, str]] = {
    "logme": ("train", "LogME: log maximum evidence of a Bayesian linear model on the frozen features (You et al., 2021)"),
    "knn": ("train", "leave-one-out 5-NN accuracy on the train features (R² for regression)"),
    "linear": ("train+eval", "quick linear probe on the train features, scored on the eval split"),
}


def check_metric(metric: str) -> list[str]:
    """The scores a `--metric` value asks for ('all' is every one); an unknown name is a ConfigError."""
    if metric == "all":
        return list(SCORES)
    if metric not in SCORES:
        raise ConfigError(f"Unknown ranking metric {metric!r}; use one of {', '.join(SCORES)} or all.")
    return [metric]


ScoreFunction = Callable[..., float]
