"""Unlabeled examples for distillation: `dataset.unlabeled_split` or `dataset.unlabeled_files`, raw inputs only.

They have the training data's columns minus the label (header-less csv/tsv files: `column_names` without the
label column); a teacher's outputs are their only targets.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import datasets
from torch.utils.data import Dataset as TorchDataset

from ..errors import DataError
from .config import DatasetConfig
from .dataset import _check_text_column, _input_column, _prepare_image_column
from .sources import _load_local, _resolve_data_files, load_splits


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


def has_unlabeled(cfg: DatasetConfig) -> bool:
    """Whether the dataset config names unlabeled examples."""
    return bool(cfg.unlabeled_split or cfg.unlabeled_files)


def load_unlabeled(cfg: DatasetConfig, modality: str, column: str | None = None) -> UnlabeledDataset:
    """Read the unlabeled examples the config names and check their input column (and that they carry no labels)."""
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
