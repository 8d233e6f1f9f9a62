"""The raw inputs every export is checked on, and the comparison of an exported model's logits with hubtl's."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import ExportError

#: Texts of different lengths (so batches are padded), one longer than short max_lengths (so truncation runs).
CHECK_TEXTS = (
    "a",
    "The film is a quiet, funny and finally moving portrait of a family.",
    "terrible",
    "It's not that the plot is bad -- it's that nothing in it ever happens, and the actors seem to know it. " * 3,
    "Ünïcödé, emoji 🙂 and numbers 12,345.67 are tokenized too.",
)


def check_inputs(modality: str) -> list[Any]:
    """Deterministic raw inputs for `modality`: noise images of several sizes and aspect ratios, or texts."""
    if modality == "text":
        return list(CHECK_TEXTS)
    if modality == "image":
        from PIL import Image

        rng = np.random.default_rng(0)
        sizes = ((64, 48), (40, 90), (300, 224), (33, 33), (224, 224))
        return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]
    raise ExportError(
        f"hubtl has no check inputs for modality {modality!r}, so an export could not be verified; only image and text "
        "models export."
    )


def max_difference(ours: torch.Tensor | np.ndarray, theirs: torch.Tensor | np.ndarray) -> float:
    """Largest absolute difference of two arrays of the same shape (inf when the shapes differ)."""
    a = np.asarray(ours.detach().cpu() if isinstance(ours, torch.Tensor) else ours, dtype=np.float64)
    b = np.asarray(theirs.detach().cpu() if isinstance(theirs, torch.Tensor) else theirs, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a - b).max()) if a.size else 0.0


def require_close(ours: Any, theirs: Any, atol: float, what: str, advice: str) -> float:
    """The max difference of hubtl's logits and an export's, or an ExportError when it exceeds `atol`."""
    diff = max_difference(ours, theirs)
    if not diff <= atol:
        shapes = f" (shapes {tuple(np.shape(ours))} vs {tuple(np.shape(theirs))})" if np.shape(ours) != np.shape(theirs) else ""
        raise ExportError(
            f"{what} computes different logits than hubtl: max |difference| {diff:.3g} > {atol:g}{shapes}, so the export "
            f"would not be exact and nothing was written. {advice}"
        )
    return diff
