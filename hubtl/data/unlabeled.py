"""Unlabeled data for pre-training: the same sources as fine-tuning, any input column, labels ignored if present.

An image folder may have class sub-folders or none; a table needs only its text column. The result is a
`TransferData` whose targets are placeholders (zeros) and whose `labels` is None, so the trainer reads it as it
reads labeled data.
"""

from __future__ import annotations

import logging
import numbers

import numpy as np
import torch

from ..backbones.base import MODALITIES
from ..errors import ConfigError, DataError
from ..labels import preview
from .config import DatasetConfig
from .dataset import (
    TransferData,
    TransferDataset,
    _cap,
    _carve,
    _check_text_column,
    _input_column,
    _prepare_image_column,
    _readable,
    _require_column,
)
from .sources import SUPPORTED, load_splits, pick_splits

logger = logging.getLogger("hubtl")


def load_unlabeled_data(
    cfg: DatasetConfig, *, modality: str, seed: int = 42, strict: bool = False, progress: bool = False
) -> TransferData:
    """Load and check the inputs of a dataset for pre-training (labels unused); every problem raises before training."""
    if modality not in MODALITIES:
        raise ConfigError(f"Unknown modality '{modality}'; use one of {', '.join(MODALITIES)}.")
    if not cfg.path and not cfg.data_files:
        raise ConfigError(f"dataset.path is empty and no dataset.data_files are given; give {SUPPORTED}.")
    size = cfg.validation_size
    if isinstance(size, bool) or not isinstance(size, numbers.Real) or not 0.0 < size < 1.0:
        raise ConfigError(f"validation_size must be a fraction between 0 and 1, got {cfg.validation_size}.")
    splits, base_dir = load_splits(cfg)
    train_ds, eval_ds, eval_name = pick_splits(splits, cfg)
    column = _input_column(train_ds, cfg, modality)
    split_sets = {cfg.train_split: train_ds, **({eval_name: eval_ds} if eval_name else {})}
    for split, ds in split_sets.items():
        _require_column(ds, column, split, cfg, f"{modality} column")
        if modality == "image":
            split_sets[split] = _prepare_image_column(ds, column, base_dir)
        else:
            _check_text_column(ds, column, split)
    train_ds, train_idx = split_sets[cfg.train_split], np.arange(len(train_ds))
    if eval_name is None:
        eval_ds, eval_name = train_ds, f"{cfg.train_split} (carved out)"
        train_idx, eval_idx = _carve(len(train_ds), cfg.validation_size, seed, None, None)
    else:
        eval_ds, eval_idx = split_sets[eval_name], np.arange(len(split_sets[eval_name]))
    train_idx, _ = _cap(train_idx, torch.zeros(len(train_idx)), cfg.max_train_samples, seed)
    eval_idx, _ = _cap(eval_idx, torch.zeros(len(eval_idx)), cfg.max_eval_samples, seed)
    skipped: list[str] = []
    if modality == "image":
        train_keep, train_bad = _readable(train_ds, column, train_idx, "check train images" if progress else None)
        eval_keep, eval_bad = _readable(eval_ds, column, eval_idx, "check eval images" if progress else None)
        skipped = train_bad + eval_bad
        if skipped and strict:
            raise DataError(
                f"{len(skipped)} file(s) are not readable images: {preview(skipped, 20)}. "
                "Remove or replace them, or run without strict to skip them."
            )
        if skipped:
            logger.warning("Skipped %d unreadable or non-image file(s): %s", len(skipped), ", ".join(skipped))
        train_idx, eval_idx = train_idx[train_keep], eval_idx[eval_keep]
    for split, idx in ((cfg.train_split, train_idx), (eval_name, eval_idx)):
        if len(idx) == 0:
            raise DataError(f"Split '{split}' of {cfg.source} has no usable examples left; add examples to it.")
    return TransferData(
        train=TransferDataset(train_ds, column, train_idx, torch.zeros(len(train_idx))),
        eval=TransferDataset(eval_ds, column, eval_idx, torch.zeros(len(eval_idx))),
        labels=None,
        modality=modality,
        skipped=skipped,
    )
