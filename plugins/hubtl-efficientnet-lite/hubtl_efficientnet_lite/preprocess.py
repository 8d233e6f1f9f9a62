"""Image preprocessing of EfficientNet-Lite: timm transforms with the Lite normalisation (mean = std = 0.5)."""

from __future__ import annotations

from typing import Any

from hubtl import ImagePreprocessor

#: The evaluation recipe of the reference EfficientNet-Lite: bicubic resize, 0.875 centre crop, [-1, 1] pixels.
DEFAULT_DATA_CONFIG: dict[str, Any] = {
    "input_size": (3, 224, 224),
    "interpolation": "bicubic",
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "crop_pct": 0.875,
    "crop_mode": "center",
}


class LitePreprocessor(ImagePreprocessor):
    """hubtl's timm-transform preprocessor; the plugin passes it the Lite data config (mean = std = 0.5)."""
