"""Task heads on top of pooled backbone features, with their losses and output decoding."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .errors import ConfigError

TASKS = ("classification", "multi_label", "regression")


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
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}; got {self.task!r}.")
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

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The task's training loss: cross-entropy, binary cross-entropy or mean squared error."""
        if self.config.task == "classification":
            return nn.functional.cross_entropy(logits, targets.long())
        if self.config.task == "multi_label":
            return nn.functional.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))
        return nn.functional.mse_loss(logits, targets.to(logits.dtype).view_as(logits))

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities (softmax / sigmoid) or raw values for regression."""
        if self.config.task == "classification":
            return logits.softmax(-1)
        if self.config.task == "multi_label":
            return logits.sigmoid()
        return logits
