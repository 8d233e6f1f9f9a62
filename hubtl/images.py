"""Decoding raw image inputs (PIL images, paths, datasets' {"bytes", "path"} dicts) into RGB PIL images."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
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


#: Pillow's modes of integer pixels wider than 8 bits (16-bit PNG or TIFF); `convert("RGB")` clips them at 255
WIDE_INTEGER_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")


def to_rgb(image: Image.Image) -> Image.Image:
    """The image in RGB; 16-bit grayscale is scaled to 8 bits (a plain conversion clips it, mostly to white)."""
    if image.mode in WIDE_INTEGER_MODES:
        import numpy as np

        pixels = np.asarray(image, dtype=np.float64)
        top = float(pixels.max(initial=0))
        # "I" may hold 8-bit values; the "I;16" modes always span 16 bits
        peak = 65535.0 if image.mode != "I" or 255 < top <= 65535 else max(top, 255.0)
        image = Image.fromarray(np.clip(np.rint(pixels * (255.0 / peak)), 0, 255).astype(np.uint8), "L")
    return image.convert("RGB")


def load_image(image: ImageInput, min_size: int | None = None) -> Image.Image:
    """Decode one raw image input to an RGB PIL image, or raise InvalidInputError saying which file failed.

    With `min_size`, a JPEG file is decoded at 1/2, 1/4 or 1/8 scale (PIL's `draft`, see `jpeg_scale`) as long as
    both sides stay at least `min_size` pixels: several times faster for large photos. PIL images are returned as they are.
    """
    if isinstance(image, Image.Image):
        return to_rgb(image)
    return _decode(image, lambda size: jpeg_scale(size, min_size) if min_size else 1)


def _decode(image: ImageInput, scale_of: Callable[[tuple[int, int]], int]) -> Image.Image:
    """Open and decode a path or image dict; a JPEG at 1/`scale_of(its size)` scale. Errors say which file failed."""
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
            scale = scale_of(img.size) if img.format == "JPEG" else 1
            if scale > 1:
                img.draft("RGB", (img.width // scale, img.height // scale))
            img.load()
            return to_rgb(img)
    except FileNotFoundError as err:
        raise InvalidInputError(f"Image file not found: {describe(image)}. Check the path.") from err
    except IsADirectoryError as err:
        raise InvalidInputError(
            f"{describe(image)} is a folder, not an image file; pass the image files in it (e.g. {describe(image)}/*.jpg)."
        ) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        if isinstance(err, InvalidInputError):
            raise
        raise InvalidInputError(
            f"{describe(image)} is not a readable image ({err}). Remove or replace the file."
        ) from err


def jpeg_scale(size: tuple[int, int], min_size: int) -> int:
    """The largest JPEG decoding scale divisor (8, 4, 2, else 1) that divides both sides and keeps them ≥ min_size.

    Dividing exactly keeps the decoded image the original scaled down, aspect ratio included, so the resize after it
    gives the same output size as from a full decode.
    """
    width, height = size
    return next((s for s in (8, 4, 2) if width % s == 0 and height % s == 0 and min(width, height) // s >= min_size), 1)


def is_readable_image(image: ImageInput) -> bool:
    """True when the input decodes as an image; used to skip bad files before training starts.

    JPEGs are decoded at 1/8 scale: every byte of the file is still read and entropy-decoded (a truncated file fails
    as in a full decode), at a fraction of the cost."""
    if isinstance(image, Image.Image):
        return True
    try:
        _decode(image, lambda size: 8 if min(size) >= 8 else 1)
    except InvalidInputError:
        return False
    return True
