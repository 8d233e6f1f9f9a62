"""The training objective: what the trainer's loop minimises, and which (raw input, target) pairs it reads.

The default is the task's loss on the labels of the training split. A strategy that trains on something
else (a teacher's outputs, unlabeled examples) returns its own `Objective` from `Strategy.objective`; the
trainer then reads its `train_dataset`, batches it with its `collate`, calls its `loss` inside the
accumulation step, lets it `finish` before the model is saved and adds its `summary()` to summary.json.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .tasks import Task


class Objective:
    """The task's loss on the labels of `train_dataset`; subclasses change what a batch holds and how it is scored."""

    def __init__(self, task: Task, train_dataset: Any) -> None:
        self.task = task
        self.train_dataset = train_dataset

    def collate(self, preprocessor: Callable[[list[Any]], dict[str, torch.Tensor]], task: str) -> Callable[[list[Any]], Any]:
        """The training DataLoader's collate_fn: (raw input, target) pairs into (batch dict, targets)."""
        from .data import make_collate

        return make_collate(preprocessor, task)

    def loss(self, module: nn.Module, batch: dict[str, Any], targets: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch (called inside Accelerate's accumulation step, before backward)."""
        return self.task.loss(module(batch), targets)

    def finish(self, model: nn.Module) -> None:
        """After training, with the kept weights loaded, on the main process only (before the record is written)."""

    def summary(self) -> dict[str, Any]:
        """Facts of the run for summary.json (and the card): none by default."""
        return {}
