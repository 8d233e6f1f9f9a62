"""Tasks: what a head learns (loss), how its outputs read (decoding), its targets, metrics and card wording.

One `Task` subclass per task; the registry in this module is the only list of task names. A task
added with `@register_task` (from any package) trains, evaluates, predicts and gets a card like the
built-in ones:

    @hubtl.tasks.register_task
    class SmoothedClassification(hubtl.tasks.Classification):
        name = "smoothed_classification"
        def loss(self, logits, targets):
            return torch.nn.functional.cross_entropy(logits, targets.long(), label_smoothing=0.1)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from . import labels as label_values
from .errors import ConfigError, InvalidInputError
from .metrics import (
    ConfusionCounts,
    ErrorSums,
    LabelCounts,
    classification_metrics,
    multi_label_metrics,
    regression_metrics,
)

T = TypeVar("T", bound=type["Task"])


class Task:
    """The behaviour of one task; subclasses set the class attributes and override what differs."""

    #: the config value (`task: ...`) and the name saved in config.json
    name: ClassVar[str] = ""
    #: True when the task predicts named labels (the model needs `labels`); False for numeric outputs
    uses_labels: ClassVar[bool] = True
    #: the scalar evaluation metrics `compute_metrics` returns (transformers-style `eval_` keys)
    metrics: ClassVar[tuple[str, ...]] = ("eval_loss",)
    #: the metric that picks the best model when the config names none
    default_metric: ClassVar[str] = "eval_loss"
    #: the Jinja2 template of the model card (in the top-level `model_cards/` folder)
    card_template: ClassVar[str] = "classification.md.j2"

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss of a batch: a mean over its examples (evaluation weights each batch by its size)."""
        raise NotImplementedError

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Head outputs turned into what predictions report (probabilities, or raw values)."""
        return logits

    def decode(self, row: list[float], labels: list[str] | None, threshold: float) -> dict[str, Any]:
        """One prediction dict from one row of scores."""
        raise NotImplementedError

    def top(self, row: list[float], labels: list[str] | None, k: int) -> list[dict[str, Any]]:
        """The `k` best labels of one row of scores, best first, as transformers' pipelines give them with `top_k`."""
        if not self.uses_labels or not labels:
            raise InvalidInputError(f"top_k applies to tasks with named labels, not to {self.name!r}; leave it unset.")
        best = sorted(range(len(row)), key=lambda i: -row[i])[:k]
        return [{"label": labels[i], "score": float(row[i])} for i in best]

    def target_dtype(self) -> torch.dtype:
        """dtype of the stacked targets a batch carries."""
        return torch.float32

    def encode_targets(
        self, values: dict[str, list[Any]], labels: list[str] | None, feature_names: list[str] | None,
        column: str, num_outputs: int, separator: str,
    ) -> tuple[list[str] | None, dict[str, torch.Tensor]]:  # fmt: skip
        """Class names (None without labels) and one target tensor per split, from the label column's values."""
        raise NotImplementedError

    def compute_metrics(
        self, logits: torch.Tensor, targets: torch.Tensor, labels: list[str] | None, threshold: float = 0.5
    ) -> dict[str, Any]:
        """Every metric of the task on gathered logits and targets (eval_ keys, plus per-class figures)."""
        raise NotImplementedError

    def metric_accumulator(self, labels: list[str] | None, threshold: float = 0.5) -> MetricAccumulator:
        """What evaluation updates batch by batch (`update(logits, targets)`, then `compute()`): counts or sums where
        the task defines them, so memory does not grow with the eval set; by default every batch, for compute_metrics."""
        return CollectedOutputs(self, labels, threshold)

    def num_outputs(self, labels: list[str] | None, num_outputs: int | None) -> int:
        """Width of the head for these labels (or the requested number of outputs)."""
        if self.uses_labels:
            if not labels:
                raise ConfigError(f"task={self.name!r} needs `labels`, the class names in order, e.g. labels=['ant', 'bee'].")
            if len(set(labels)) != len(labels):
                raise ConfigError(f"Label names must be unique; got {list(labels)}.")
            return len(labels)
        return num_outputs or 1

    def description(self, modality: str) -> str:
        """A few words for the card: what kind of model this is."""
        return f"{modality} {self.name.replace('_', ' ')}"

    def pipeline_tag(self, modality: str) -> str | None:
        """The Hub's pipeline tag for a model of this task and modality."""
        return f"{modality}-classification" if modality in ("image", "text", "audio", "video") else None

    def tags(self) -> list[str]:
        """Extra Hub tags naming the task."""
        return []


class Classification(Task):
    """One label per example: softmax over the labels, cross-entropy."""

    name = "classification"
    metrics = ("eval_loss", "eval_accuracy", "eval_f1_macro")
    default_metric = "eval_accuracy"
    card_template = "classification.md.j2"

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, targets.long())

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(-1)

    def decode(self, row: list[float], labels: list[str] | None, threshold: float) -> dict[str, Any]:
        names = labels or []
        best = max(range(len(row)), key=row.__getitem__)
        return {"label": names[best], "score": float(row[best]), "scores": dict(zip(names, map(float, row)))}

    def target_dtype(self) -> torch.dtype:
        return torch.long

    def encode_targets(self, values, labels, feature_names, column, num_outputs, separator):  # noqa: D102
        rows = {split: label_values.single_labels(v, column, split) for split, v in values.items()}
        names, mapping = label_values.label_mapping(rows, labels, feature_names, column)
        label_values.check_single_label_classes(names, rows, column, separator)
        return names, {split: label_values.class_targets(r, mapping, len(names)) for split, r in rows.items()}

    def compute_metrics(self, logits, targets, labels, threshold=0.5):  # noqa: D102
        return classification_metrics(*_class_indices(logits, targets), labels or [])

    def metric_accumulator(self, labels, threshold=0.5):  # noqa: D102
        return SummedMetrics(ConfusionCounts(labels or []), _class_indices)

    def description(self, modality: str) -> str:
        return f"single-label {modality} classification"


class MultiLabel(Task):
    """Any number of labels per example: a sigmoid per label, binary cross-entropy, a decision threshold."""

    name = "multi_label"
    metrics = ("eval_loss", "eval_f1_micro", "eval_f1_macro", "eval_exact_match")
    default_metric = "eval_f1_macro"
    card_template = "multi_label.md.j2"

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.sigmoid()

    def decode(self, row: list[float], labels: list[str] | None, threshold: float) -> dict[str, Any]:
        named = dict(zip(labels or [], map(float, row)))
        return {"labels": [label for label, s in named.items() if s >= threshold], "scores": named}

    def encode_targets(self, values, labels, feature_names, column, num_outputs, separator):  # noqa: D102
        rows = {split: label_values.label_lists(v, separator) for split, v in values.items()}
        names, mapping = label_values.label_mapping(rows, labels, feature_names, column)
        return names, {split: label_values.multi_hot(r, mapping, len(names)) for split, r in rows.items()}

    def compute_metrics(self, logits, targets, labels, threshold=0.5):  # noqa: D102
        return multi_label_metrics(*_label_decisions(logits, targets, threshold), labels or [])

    def metric_accumulator(self, labels, threshold=0.5):  # noqa: D102
        return SummedMetrics(LabelCounts(labels or []), lambda logits, targets: _label_decisions(logits, targets, threshold))

    def description(self, modality: str) -> str:
        return f"multi-label {modality} classification"

    def tags(self) -> list[str]:
        return ["multi-label-classification"]


class Regression(Task):
    """Numeric outputs: mean squared error, values reported as they are."""

    name = "regression"
    uses_labels = False
    metrics = ("eval_loss", "eval_mae", "eval_rmse", "eval_r2")
    default_metric = "eval_rmse"
    card_template = "regression.md.j2"

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(logits, targets.to(logits.dtype).view_as(logits))

    def decode(self, row: list[float], labels: list[str] | None, threshold: float) -> dict[str, Any]:
        return {"value": row[0] if len(row) == 1 else row}

    def encode_targets(self, values, labels, feature_names, column, num_outputs, separator):  # noqa: D102
        if labels is not None:
            raise ConfigError("labels apply to tasks with named labels only; leave them unset for regression.")
        return None, {s: label_values.regression_targets(v, column, s, num_outputs) for s, v in values.items()}

    def compute_metrics(self, logits, targets, labels, threshold=0.5):  # noqa: D102
        return regression_metrics(*_values(logits, targets))

    def metric_accumulator(self, labels, threshold=0.5):  # noqa: D102
        return SummedMetrics(ErrorSums(), _values)

    def description(self, modality: str) -> str:
        return f"{modality} regression"

    def tags(self) -> list[str]:
        return ["regression"]


def _class_indices(logits: torch.Tensor, targets: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true class indices (numpy)."""
    return logits.float().argmax(-1).cpu().numpy(), targets.long().cpu().numpy()


def _label_decisions(logits: torch.Tensor, targets: torch.Tensor, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """0/1 decisions per label at the threshold, and the 0/1 targets (numpy)."""
    return (logits.float().sigmoid() >= threshold).long().cpu().numpy(), targets.long().cpu().numpy()


def _values(logits: torch.Tensor, targets: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true values, [examples, outputs] (numpy)."""
    pred = logits.float().cpu().numpy()
    return pred.reshape(len(pred), -1), targets.float().cpu().numpy().reshape(len(pred), -1)


class MetricAccumulator:
    """Evaluation metrics built batch by batch: `update` with each batch's gathered logits and targets, then `compute`."""

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Add one batch."""
        raise NotImplementedError

    def compute(self) -> dict[str, Any]:
        """The metrics of every batch added (eval_ keys, as `Task.compute_metrics` returns them)."""
        raise NotImplementedError


class SummedMetrics(MetricAccumulator):
    """Counts or sums from `hubtl.metrics` (`add`/`compute`), fed with what `convert` makes of each batch's outputs."""

    def __init__(self, sums: Any, convert: Callable[[torch.Tensor, torch.Tensor], tuple[np.ndarray, np.ndarray]]) -> None:
        self.sums, self.convert = sums, convert

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:  # noqa: D102
        self.sums.add(*self.convert(logits, targets))

    def compute(self) -> dict[str, Any]:  # noqa: D102
        return self.sums.compute()


class CollectedOutputs(MetricAccumulator):
    """Every batch kept, for a task whose metrics need all outputs at once (its `compute_metrics`)."""

    def __init__(self, task: Task, labels: list[str] | None, threshold: float) -> None:
        self.task, self.labels, self.threshold = task, labels, threshold
        self.logits: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:  # noqa: D102
        self.logits.append(logits.detach().cpu())
        self.targets.append(targets.detach().cpu())

    def compute(self) -> dict[str, Any]:  # noqa: D102
        if not self.logits:
            return {}
        return self.task.compute_metrics(torch.cat(self.logits), torch.cat(self.targets), self.labels, self.threshold)


# The registry's only global state: tasks by name.
_TASKS: dict[str, Task] = {}


def register_task(task: T) -> T:
    """Class decorator adding a task under its `name` (timm-style); a later registration replaces an earlier one."""
    instance = task() if isinstance(task, type) else task
    if not isinstance(instance, Task) or not instance.name:
        raise ConfigError(f"{task!r} is not a hubtl.tasks.Task subclass with a `name`; it cannot be registered.")
    _TASKS[instance.name] = instance
    return task


def get_task(name: str) -> Task:
    """The registered task called `name`, or a ConfigError listing the known ones."""
    if name not in _TASKS:
        close = difflib.get_close_matches(str(name), list(_TASKS), n=1)
        hint = (f" Did you mean {close[0]!r}?" if close else "") + (
            " A task of your own is registered (hubtl.register_task) by its module: import it first, or pass "
            "--import MODULE to the hubtl command."
        )
        raise ConfigError(f"Unknown task {name!r}: task must be one of {', '.join(_TASKS)}.{hint}")
    return _TASKS[name]


def list_tasks() -> list[str]:
    """Names of the registered tasks, built-in first."""
    return list(_TASKS)


for _builtin in (Classification, MultiLabel, Regression):
    register_task(_builtin)
