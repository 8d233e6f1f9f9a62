"""Image preprocessing of EfficientNet-Lite: timm transforms with the Lite normalisation (mean = std = 0.5)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from hubtl import InvalidInputError, Preprocessor

#: The evaluation recipe of the reference EfficientNet-Lite: bicubic resize, 0.875 centre crop, [-1, 1] pixels.
DEFAULT_DATA_CONFIG: dict[str, Any] = {
    "input_size": (3, 224, 224),
    "interpolation": "bicubic",
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "crop_pct": 0.875,
    "crop_mode": "center",
}


def load_image(image: Any) -> Image.Image:
    """Decode a PIL image or an image path to RGB, or raise InvalidInputError saying which input failed."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if not isinstance(image, (str, os.PathLike)):
        raise InvalidInputError(f"Cannot read an image from a {type(image).__name__}; pass a PIL image or an image path.")
    try:
        with Image.open(os.fspath(image)) as img:
            return img.convert("RGB")
    except FileNotFoundError as err:
        raise InvalidInputError(f"Image file not found: {os.fspath(image)}. Check the path.") from err
    except (UnidentifiedImageError, OSError) as err:
        raise InvalidInputError(f"{os.fspath(image)} is not a readable image ({err}). Remove or replace it.") from err


class LitePreprocessor(Preprocessor):
    """Decodes images and applies timm's eval (or augmenting train) transform for a data config."""

    def __init__(self, data_config: dict[str, Any], train: bool = False) -> None:
        self.data_config = {k: tuple(v) if isinstance(v, list) else v for k, v in data_config.items()}
        self.train = train
        self.deterministic = not train
        self._transform: Any = None  # built lazily, dropped when pickled into DataLoader workers

    @property
    def transform(self) -> Any:
        """The torchvision transform timm builds for this data config."""
        if self._transform is None:
            import timm.data

            self._transform = timm.data.create_transform(**self.data_config, is_training=self.train)
        return self._transform

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_transform": None}

    def __call__(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        if len(examples) == 0:
            raise InvalidInputError("No images given; pass at least one PIL image or image path.")
        return {"pixel_values": torch.stack([self.transform(load_image(x)) for x in examples])}

    def config(self) -> dict[str, Any]:
        return {"type": "image", **{k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()}}
