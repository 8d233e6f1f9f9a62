"""Input lengths of a dataset's examples, for batching texts of similar length together (less padding).

The feature pass orders a split longest first (`features/compute.py`); `group_by_length` trains on batches drawn by
`LengthGroupedSampler`. Lengths come from the preprocessor's `input_length` (a text's characters); a preprocessor
without it (images) gives none, and the examples keep their order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler

from ..backbones.base import length_order

#: Examples fetched per read while collecting inputs (one Arrow read each).
_CHUNK = 4096


def raw_inputs(dataset: Any, rows: Sequence[int], pairs: bool = True) -> list[Any]:
    """The raw inputs of `rows` (the first items of (input, target) pairs, or the items when not `pairs`), read in chunks."""
    fetch = getattr(dataset, "__getitems__", None) or (lambda indices: [dataset[i] for i in indices])
    return [item[0] if pairs else item
            for start in range(0, len(rows), _CHUNK) for item in fetch(list(rows[start:start + _CHUNK]))]


def has_lengths(dataset: Any, preprocess: Any, pairs: bool = True) -> bool:
    """Whether the preprocessor estimates the length of this dataset's inputs (it looks at the first one only)."""
    return len(dataset) > 0 and preprocess.input_length(dataset[0][0] if pairs else dataset[0]) is not None


def longest_first(dataset: Any, preprocess: Any, rows: Sequence[int] | None = None, pairs: bool = True) -> list[int] | None:
    """Positions of `rows` (default: every example) longest input first, or None when the preprocessor gives no lengths.

    `pairs`: the dataset's items are (input, target) pairs; otherwise they are the raw inputs themselves.
    """
    rows = range(len(dataset)) if rows is None else rows
    if len(rows) == 0 or not has_lengths(dataset, preprocess, pairs):
        return None
    return length_order(preprocess, raw_inputs(dataset, rows, pairs))


def input_lengths(dataset: Any, preprocess: Any) -> list[int] | None:
    """Every example's length as the preprocessor estimates it, or None when it gives none (images)."""
    if not has_lengths(dataset, preprocess):
        return None
    return [preprocess.input_length(x) or 0 for x in raw_inputs(dataset, range(len(dataset)))]


class LengthGroupedSampler(Sampler[int]):
    """Shuffled indices in which each run of `batch_size` holds examples of similar length.

    transformers' grouping (`get_length_grouped_indices`: a random permutation cut into mega-batches of up to 50
    batches, each sorted longest first, the longest batch first of all), drawn from `seed` + the epoch, so an epoch's
    order is the same after a resume (`set_epoch`, which Accelerate calls through its prepared loader).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))
