"""Unlabeled data: the examples distillation reads beside the labeled ones, and the splits pre-training reads.

- Distillation: `dataset.unlabeled_split` or `dataset.unlabeled_files` (`load_unlabeled`): the training data's
  columns minus the label (header-less csv/tsv files: `column_names` without the label column); a teacher's
  outputs are their only targets.
- Pre-training (`load_unlabeled_data`): the same sources as fine-tuning, any input column, labels ignored if
  present; an image folder may have class sub-folders or none. The result is a `TransferData` whose targets are
  placeholders (zeros) and whose `labels` is None, so the trainer reads it as it reads labeled data.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import numbers
import os
from collections.abc import Sequence
from typing import Any

import datasets
import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from ..backbones.base import MODALITIES
from ..errors import ConfigError, DataError
from .config import DatasetConfig
from .dataset import (
    TransferData,
    TransferDataset,
    _cap,
    _carve,
    _check_text_column,
    _input_column,
    _input_digest,
    _prepare_image_column,
    _readable_images,
    _require_column,
)
from .sources import SUPPORTED, _load_local, _resolve_data_files, load_splits, pick_splits


class UnlabeledDataset(TorchDataset):
    """The raw inputs (texts, image paths or image dicts) of one column of a dataset, undecoded."""

    def __init__(self, source: datasets.Dataset, column: str, description: str) -> None:
        self.source = source.select_columns([column])
        self.column = column
        #: where the examples come from, for the log and the card (a split name or file names, no folders)
        self.description = description

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Any:
        return self.source[int(index)][self.column]

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """A whole batch with one Arrow read."""
        return list(self.source[[int(i) for i in indices]][self.column])

    def input_fingerprint(self) -> str:
        """A digest of the raw inputs in order (as `TransferDataset.input_fingerprint`), for the feature cache."""
        digest = hashlib.blake2b(digest_size=20)
        digest.update(f"{len(self.source)}:{self.column}".encode())
        for start in range(0, len(self.source), 4096):
            for value in self.source[start : start + 4096][self.column]:
                digest.update(_input_digest(value))
        return digest.hexdigest()


def has_unlabeled(cfg: DatasetConfig) -> bool:
    """Whether the dataset config names unlabeled examples."""
    return bool(cfg.unlabeled_split or cfg.unlabeled_files)


def load_unlabeled(cfg: DatasetConfig, modality: str, column: str | None = None, seed: int = 0) -> UnlabeledDataset:
    """Read the unlabeled examples the config names and check their input column (and that they carry no labels);
    at most `max_unlabeled_samples` of them, a seeded sample kept in data order."""
    if cfg.unlabeled_split and cfg.unlabeled_files:
        raise DataError("Give dataset.unlabeled_split or dataset.unlabeled_files, not both.")
    if cfg.unlabeled_split:
        splits, base_dir = load_splits(cfg)
        if cfg.unlabeled_split not in splits:
            raise DataError(
                f"Unlabeled split '{cfg.unlabeled_split}' not found in {cfg.source}; it has: {', '.join(splits)}. "
                "Set dataset.unlabeled_split to one of them, or give dataset.unlabeled_files."
            )
        ds, where = splits[cfg.unlabeled_split], f"split '{cfg.unlabeled_split}'"
    else:
        path = os.path.expanduser(cfg.path) if cfg.path else None
        base_dir = path if path is not None and os.path.isdir(path) else os.getcwd()
        files = _resolve_data_files({"unlabeled": cfg.unlabeled_files}, base_dir)
        names = cfg.column_names
        unlabeled_cfg = dataclasses.replace(
            cfg, column_names=[c for c in names if c != cfg.label_column] if names is not None else None
        )
        if unlabeled_cfg.column_names is not None:
            _check_field_count(files["unlabeled"], unlabeled_cfg.column_names, cfg.label_column)
        ds = _load_local(files, unlabeled_cfg)["unlabeled"]
        where = ", ".join(os.path.basename(f) for f in files["unlabeled"])
    column = column or _input_column(ds, cfg, modality)
    if column not in ds.column_names:
        raise DataError(
            f"The unlabeled examples ({where}) have no column '{column}', the training data's input column; their "
            f"columns are: {', '.join(ds.column_names)}. Give them the training data's columns minus the label "
            "(header-less csv/tsv files: the columns of `column_names` without the label column)."
        )
    _refuse_labels(ds, cfg.label_column, where)
    if len(ds) == 0:
        raise DataError(f"The unlabeled examples ({where}) are empty; add examples or remove the unlabeled_* key.")
    if cfg.max_unlabeled_samples is not None and len(ds) > cfg.max_unlabeled_samples:
        picked, _ = _cap(np.arange(len(ds)), torch.zeros(len(ds)), cfg.max_unlabeled_samples, seed)
        ds = ds.select(np.sort(picked).tolist())
    if modality == "image":
        ds = _prepare_image_column(ds, column, base_dir)
    else:
        _check_text_column(ds, column, f"unlabeled ({where})")
    return UnlabeledDataset(ds, column, where)


def _check_field_count(files: list[str], names: list[str], label_column: str) -> None:
    """Header-less csv/tsv rows must have the training columns minus the label; a row with the label is refused."""
    for path in files:
        delimiter = "\t" if path.lower().endswith(".tsv") else ","
        with open(path, newline="", encoding="utf-8", errors="replace") as handle:
            quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL  # as the tsv reader: no quoting
            first = next(csv.reader(handle, delimiter=delimiter, quoting=quoting), None)
        if first is not None and len(first) != len(names):
            raise DataError(
                f"The unlabeled examples in {os.path.basename(path)} have {len(first)} columns per row, but unlabeled files "
                f"hold the training columns minus the label ({', '.join(names)}: {len(names)}). Drop the "
                f"'{label_column}' column from them, or add those rows to the training data if they are labeled."
            )


def _refuse_labels(ds: datasets.Dataset, label_column: str, where: str) -> None:
    """A label column with values means labeled data given as unlabeled: a mistake, said before training."""
    if label_column not in ds.column_names:
        return
    feature = ds.features[label_column]
    missing = (None, -1) if isinstance(feature, datasets.ClassLabel) else (None,)
    if all(value in missing for value in ds[label_column]):
        return  # e.g. a Hub test split whose labels are all -1: no labels in fact
    raise DataError(
        f"The unlabeled examples ({where}) have a label column '{label_column}' with values. Unlabeled examples "
        "train on the teacher's outputs only: drop that column, or move the labeled rows into the training split."
    )


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
        train_keep, eval_keep, skipped = _readable_images(train_ds, eval_ds, column, train_idx, eval_idx, strict, progress)
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
        eval_split=eval_name,
    )
