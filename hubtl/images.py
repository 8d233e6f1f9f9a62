"""Decoding raw image inputs (PIL images, paths, datasets' {"bytes", "path"} dicts) into RGB PIL images."""

from __future__ import annotations

import io
import os
from typing import Any

from PIL import Image, UnidentifiedImageError

from .errors import InvalidInputError

ImageInput = Any  # PIL.Image.Image | str | os.PathLike | {"bytes": bytes | None, "path": str | None}


def describe(image: ImageInput) -> str:
    """Short human name of an image input, for error messages and skip lists."""
    if isinstance(image, dict):
        return str(image.get("path") or "<image bytes>")
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    return type(image).__name__


def load_image(image: ImageInput) -> Image.Image:
    """Decode one raw image input to an RGB PIL image, or raise InvalidInputError saying which file failed."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    try:
        if isinstance(image, dict):
            source = io.BytesIO(image["bytes"]) if image.get("bytes") else image.get("path")
            if source is None:
                raise InvalidInputError("Image dict has neither 'bytes' nor 'path'; pass a PIL image or a file path.")
        elif isinstance(image, (str, os.PathLike)):
            source = os.fspath(image)
        else:
            raise InvalidInputError(
                f"Cannot read an image from a {type(image).__name__}; pass a PIL image or a path to an image file."
            )
        with Image.open(source) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError as err:
        raise InvalidInputError(f"Image file not found: {describe(image)}. Check the path.") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        if isinstance(err, InvalidInputError):
            raise
        raise InvalidInputError(
            f"{describe(image)} is not a readable image ({err}). Remove or replace the file."
        ) from err


def is_readable_image(image: ImageInput) -> bool:
    """True when the input decodes as an image; used to skip bad files before training starts."""
    try:
        load_image(image)
    except InvalidInputError:
        return False
    return True
