"""Fine-tuning strategies: which parameters train, at which learning rate, and when they unfreeze."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from .errors import ConfigError, PluginUnavailableError
from .model import TransferModel

logger = logging.getLogger("hubtl")


def backbone_frozen(strategy: str) -> bool:
    """True when the strategy never trains backbone weights (so BatchNorm stays in eval mode)."""
    return strategy == "linear_probe"


def prepare_model(model: TransferModel, strategy: str, lora: dict[str, Any] | None = None) -> None:
    """Set `requires_grad` for a strategy; for `lora`, inject PEFT adapters into the transformers encoder."""
    model.requires_grad_(True)
    if strategy == "linear_probe":
        model.backbone.requires_grad_(False)
    elif strategy == "lora":
        _inject_lora(model, **(lora or {}))


def param_groups(
    model: TransferModel, learning_rate: float, weight_decay: float, layer_decay: float | None, head_learning_rate: float | None
) -> list[dict[str, Any]]:
    """Optimizer groups: head at `head_learning_rate`, backbone groups at lr * layer_decay^(depth from top)."""
    head_lr = head_learning_rate or learning_rate
    groups = _groups(list(model.head.parameters()), head_lr, weight_decay, "head")
    backbone_groups = model.backbone.layer_groups()
    n = len(backbone_groups)
    for i, params in enumerate(backbone_groups):
        lr = learning_rate * (layer_decay ** (n - i) if layer_decay else 1.0)
        groups += _groups([p for p in params if p.requires_grad], lr, weight_decay, f"backbone.{i}")
    return [g for g in groups if g["params"]]


def _groups(params: list[nn.Parameter], lr: float, weight_decay: float, name: str) -> list[dict[str, Any]]:
    """Optimizer groups at one learning rate; biases and norm weights (1-D) get no weight decay, as in timm."""
    return [
        {"params": [p for p in params if p.ndim > 1], "lr": lr, "weight_decay": weight_decay, "name": name},
        {"params": [p for p in params if p.ndim <= 1], "lr": lr, "weight_decay": 0.0, "name": f"{name}.no_decay"},
    ]


def gradual_frozen_params(model: TransferModel, epoch: int, every: int) -> list[nn.Parameter]:
    """Backbone parameters still frozen at `epoch` under gradual unfreezing (one more group from the top each `every` epochs)."""
    groups = model.backbone.layer_groups()
    unfrozen = min(len(groups), epoch // every)
    still_frozen = groups[: len(groups) - unfrozen]
    return [p for group in still_frozen for p in group]


def _inject_lora(model: TransferModel, r: int = 8, alpha: int = 16, dropout: float = 0.1, target_modules: list[str] | None = None) -> None:
    """Wrap the encoder with PEFT LoRA adapters: only adapters and the head train."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise PluginUnavailableError("strategy: lora needs PEFT: `pip install 'hubtl[lora]'` (or `pip install peft`).") from err
    encoder = getattr(model.backbone, "model", None)
    if encoder is None or not hasattr(encoder, "config"):
        raise ConfigError("strategy: lora needs a transformers backbone; use full or gradual for this one.")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules)
    try:
        model.backbone.model = get_peft_model(encoder, config)
    except ValueError as err:
        raise ConfigError(
            f"PEFT cannot find LoRA target modules in {type(encoder).__name__} ({err}). "
            "Set lora_target_modules, e.g. ['query', 'value']."
        ) from err


def merge_lora(model: TransferModel) -> None:
    """Fold LoRA adapters into the encoder weights, so the saved model loads without PEFT."""
    encoder = model.backbone.model
    if hasattr(encoder, "merge_and_unload"):
        model.backbone.model = encoder.merge_and_unload()
