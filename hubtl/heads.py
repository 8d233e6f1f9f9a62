"""The task head: dropout, an optional hidden layer and a linear map from pooled features to the task's outputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .errors import ConfigError
from .tasks import Task, get_task


@dataclass
class HeadConfig:
    """Everything needed to rebuild a head: saved as `head` in config.json."""

    task: str
    in_features: int
    num_outputs: int
    dropout: float = 0.0
    hidden_dim: int | None = None
    activation: str = "gelu"

    def __post_init__(self) -> None:
        get_task(self.task)  # a ConfigError naming the known tasks
        if self.num_outputs < 1:
            raise ConfigError(f"A {self.task} head needs at least one output; got num_outputs={self.num_outputs}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"head dropout must be in [0, 1); got {self.dropout}.")
        if self.activation not in _ACTIVATIONS:
            raise ConfigError(f"head activation must be one of {', '.join(_ACTIVATIONS)}; got {self.activation!r}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for config.json."""
        return asdict(self)


_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh}


class Head(nn.Module):
    """Dropout, an optional hidden layer, then a linear map to the task's outputs."""

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = [nn.Dropout(config.dropout)]
        width = config.in_features
        if config.hidden_dim:
            layers += [nn.Linear(width, config.hidden_dim), _ACTIVATIONS[config.activation](), nn.Dropout(config.dropout)]
            width = config.hidden_dim
        layers.append(nn.Linear(width, config.num_outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)

    @property
    def task(self) -> Task:
        """The task this head serves (its loss and score functions)."""
        return get_task(self.config.task)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The task's training loss."""
        return self.task.loss(logits, targets)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """The task's scores: probabilities (softmax / sigmoid) or raw values."""
        return self.task.scores(logits)
