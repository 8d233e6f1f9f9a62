"""Datasets for fine-tuning: a source's splits, columns and labels as checked (raw input, target) pairs."""

from __future__ import annotations

import hashlib
import logging
import numbers
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from ..backbones.base import MODALITIES
from ..errors import ConfigError, DataError
from ..images import describe, is_readable_image
from ..labels import preview
from ..tasks import get_task
from .config import DatasetConfig
from .sources import SUPPORTED, image_folder_layout, load_splits, pick_splits

logger = logging.getLogger("hubtl")

_CHECK_CHUNK = 512


class TransferDataset(TorchDataset):
    """(raw input, target) pairs over rows of one Hugging Face dataset split; inputs stay undecoded."""

    def __init__(self, source: datasets.Dataset, column: str, indices: np.ndarray, targets: torch.Tensor) -> None:
        self.source = source.select_columns([column])
        self.column = column
        self.indices = np.asarray(indices, dtype=np.int64)
        self.targets = targets
        if len(self.indices) != len(self.targets):
            raise ValueError("indices and targets differ in length")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, torch.Tensor]:
        row = self.source[int(self.indices[index])]
        return row[self.column], self.targets[index]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Any, torch.Tensor]]:
        """Fetch a whole batch with one Arrow read (the DataLoader uses this when present)."""
        rows = self.source[[int(self.indices[i]) for i in indices]][self.column]
        return list(zip(rows, self.targets[list(indices)]))

    def select(self, rows: Sequence[int]) -> TransferDataset:
        """These rows (positions in this dataset), in the order given, as a dataset of their own."""
        rows = np.asarray(rows, dtype=np.int64)
        return TransferDataset(self.source, self.column, self.indices[rows], self.targets[torch.from_numpy(rows)])

    def input_fingerprint(self) -> str:
        """A digest of the raw inputs in order: texts and image bytes by content, image files by path, size and mtime.

        Any edited, added, removed or reordered example changes it (the persistent feature cache keys on it);
        the targets do not enter, so relabelling reuses cached features.
        """
        digest = hashlib.blake2b(digest_size=20)
        digest.update(f"{len(self.indices)}:{self.column}".encode())
        for start in range(0, len(self.indices), _CHECK_CHUNK * 8):
            rows = self.source[[int(i) for i in self.indices[start : start + _CHECK_CHUNK * 8]]][self.column]
            for value in rows:
                digest.update(_input_digest(value))
        return digest.hexdigest()


def _input_digest(value: Any) -> bytes:
    """Bytes standing for one raw input: a text itself; an image's bytes, or its file's path with size and mtime."""
    if isinstance(value, dict):  # datasets' undecoded image: {"bytes": ..., "path": ...}
        if value.get("bytes") is not None:
            return b"b" + hashlib.blake2b(value["bytes"], digest_size=16).digest()
        value = value.get("path")
    text = str(value)
    digest = f"s{len(text)}:".encode() + text.encode("utf-8", "surrogatepass")
    if isinstance(value, str) and len(value) < 4096 and os.path.isfile(value):  # an image file: its content may change
        stat = os.stat(value)
        digest += f":{stat.st_size}:{stat.st_mtime_ns}".encode()
    return digest


@dataclass
class TransferData:
    """Train and eval datasets of (raw input, target) pairs, with the class names and what was skipped."""

    train: TorchDataset
    eval: TorchDataset
    labels: list[str] | None
    modality: str
    skipped: list[str]
    #: where the evaluation examples came from: the split's name, or "<train split> (carved out)"; None: not known
    eval_split: str | None = None


def load_transfer_data(
    cfg: DatasetConfig,
    *,
    task: str,
    modality: str,
    labels: list[str] | None = None,
    num_outputs: int = 1,
    seed: int = 42,
    strict: bool = False,
    progress: bool = False,
) -> TransferData:
    """Load, check and split a dataset for fine-tuning; every problem raises before training starts."""
    _check_arguments(cfg, task, modality, labels, num_outputs)
    splits, base_dir = load_splits(cfg)
    train_ds, eval_ds, eval_name = pick_splits(splits, cfg)
    column = _input_column(train_ds, cfg, modality)
    split_sets = {cfg.train_split: train_ds, **({eval_name: eval_ds} if eval_name else {})}
    for split, ds in split_sets.items():
        _require_column(ds, column, split, cfg, f"{modality} column")
        _require_column(ds, cfg.label_column, split, cfg, "label column")
        if modality == "image":
            split_sets[split] = _prepare_image_column(ds, column, base_dir)
        else:
            _check_text_column(ds, column, split)
    names, targets = _targets(split_sets, cfg, task, labels, num_outputs)

    train_ds, train_idx = split_sets[cfg.train_split], np.arange(len(train_ds))
    if eval_name is None:
        eval_ds, eval_name = train_ds, f"{cfg.train_split} (carved out)"
        class_ids = targets[cfg.train_split]
        stratify = class_ids if class_ids.dtype == torch.long and class_ids.ndim == 1 else None
        train_idx, eval_idx = _carve(len(train_ds), cfg.validation_size, seed, stratify, names)
        train_targets = targets[cfg.train_split][torch.from_numpy(train_idx)]
        eval_targets = targets[cfg.train_split][torch.from_numpy(eval_idx)]
    else:
        eval_ds, eval_idx = split_sets[eval_name], np.arange(len(split_sets[eval_name]))
        train_targets, eval_targets = targets[cfg.train_split], targets[eval_name]
    train_idx, train_targets = _cap(train_idx, train_targets, cfg.max_train_samples, seed)
    eval_idx, eval_targets = _cap(eval_idx, eval_targets, cfg.max_eval_samples, seed)

    skipped: list[str] = []
    if modality == "image":
        train_keep, eval_keep, skipped = _readable_images(train_ds, eval_ds, column, train_idx, eval_idx, strict, progress)
        train_idx, train_targets = train_idx[train_keep], train_targets[torch.from_numpy(train_keep)]
        eval_idx, eval_targets = eval_idx[eval_keep], eval_targets[torch.from_numpy(eval_keep)]

    for split, idx in ((cfg.train_split, train_idx), (eval_name, eval_idx)):
        if len(idx) == 0:
            raise DataError(f"Split '{split}' of {cfg.source} has no usable examples left; add examples to it.")
    if names and train_targets.dtype == torch.long and train_targets.ndim == 1:
        unseen = [n for n, count in zip(names, torch.bincount(train_targets, minlength=len(names))) if count == 0]
        if unseen:
            logger.warning("Classes with no training examples: %s.", preview(unseen, 10))
    return TransferData(
        train=TransferDataset(train_ds, column, train_idx, train_targets),
        eval=TransferDataset(eval_ds, column, eval_idx, eval_targets),
        labels=names,
        modality=modality,
        skipped=skipped,
        eval_split=eval_name,
    )


def load_eval_split(
    eval_ds: datasets.Dataset,
    eval_name: str,
    base_dir: str | None,
    cfg: DatasetConfig,
    *,
    task: str,
    modality: str,
    labels: list[str] | None,
    class_names: list[str] | None,
    num_outputs: int,
    seed: int,
    strict: bool,
    progress: bool,
) -> tuple[TransferDataset, list[str] | None, list[str]]:
    """A finite eval split on its own, checked as `load_transfer_data` checks it (streamed training evaluates on it).

    Returns the eval pairs, the class names (the given `labels`, else `class_names` (the training stream's
    ClassLabel), else the split's own) and the unreadable image files skipped."""
    _check_arguments(cfg, task, modality, labels, num_outputs)
    column = _input_column(eval_ds, cfg, modality)
    _require_column(eval_ds, column, eval_name, cfg, f"{modality} column")
    _require_column(eval_ds, cfg.label_column, eval_name, cfg, "label column")
    if modality == "image":
        eval_ds = _prepare_image_column(eval_ds, column, base_dir)
    else:
        _check_text_column(eval_ds, column, eval_name)
    values = {eval_name: _label_values(eval_ds, cfg.label_column)}
    names, targets = get_task(task).encode_targets(
        values, labels, class_names or _class_names(eval_ds.features[cfg.label_column]), cfg.label_column, num_outputs,
        cfg.label_separator,
    )  # fmt: skip
    eval_idx, eval_targets = _cap(np.arange(len(eval_ds)), targets[eval_name], cfg.max_eval_samples, seed)
    skipped: list[str] = []
    if modality == "image":
        keep, skipped = _readable(eval_ds, column, eval_idx, "check eval images" if progress else None)
        report_unreadable(skipped, strict)
        eval_idx, eval_targets = eval_idx[keep], eval_targets[torch.from_numpy(keep)]
    if len(eval_idx) == 0:
        raise DataError(f"Split '{eval_name}' of {cfg.source} has no usable examples left; add examples to it.")
    return TransferDataset(eval_ds, column, eval_idx, eval_targets), names, skipped


def _readable_images(
    train_ds: datasets.Dataset, eval_ds: datasets.Dataset, column: str, train_idx: np.ndarray, eval_idx: np.ndarray,
    strict: bool, progress: bool,
) -> tuple[np.ndarray, np.ndarray, list[str]]:  # fmt: skip
    """Which train and eval rows hold readable images (boolean masks) and the files that do not; `strict` makes
    any unreadable file a DataError, else they are skipped with a warning."""
    train_keep, train_bad = _readable(train_ds, column, train_idx, "check train images" if progress else None)
    eval_keep, eval_bad = _readable(eval_ds, column, eval_idx, "check eval images" if progress else None)
    skipped = train_bad + eval_bad
    report_unreadable(skipped, strict)
    return train_keep, eval_keep, skipped


def report_unreadable(skipped: list[str], strict: bool) -> None:
    """Unreadable images found: a DataError when `strict`, else a warning that they are skipped."""
    if skipped and strict:
        raise DataError(
            f"{len(skipped)} file(s) are not readable images: {preview(skipped, 20)}. "
            "Remove or replace them, or run without strict to skip them."
        )
    if skipped:
        logger.warning("Skipped %d unreadable or non-image file(s): %s", len(skipped), ", ".join(skipped))


class _Collate:
    """DataLoader collate_fn: preprocess the raw inputs, stack the targets (a class, so it pickles)."""

    def __init__(self, preprocessor: Callable[[list[Any]], dict[str, torch.Tensor]], target_dtype: torch.dtype) -> None:
        self.preprocessor = preprocessor
        self.target_dtype = target_dtype

    def __call__(self, examples: list[tuple[Any, torch.Tensor]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        inputs = [raw for raw, _ in examples]
        targets = torch.stack([torch.as_tensor(target) for _, target in examples])
        targets = targets.to(self.target_dtype)
        return self.preprocessor(inputs), targets


def make_collate(
    preprocessor: Callable[[list[Any]], dict[str, torch.Tensor]], task: str
) -> Callable[[list[tuple]], tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """Build a picklable collate_fn turning (raw input, target) pairs into (batch dict, stacked targets)."""
    return _Collate(preprocessor, get_task(task).target_dtype())


# --- arguments -----------------------------------------------------------------------------------


def _check_arguments(cfg: DatasetConfig, task: str, modality: str, labels: list[str] | None, num_outputs: int) -> None:
    task_type = get_task(task)
    if modality not in MODALITIES:
        raise ConfigError(f"Unknown modality '{modality}'; use one of {', '.join(MODALITIES)}.")
    if not cfg.path and not cfg.data_files:
        raise ConfigError(f"dataset.path is empty and no dataset.data_files are given; give {SUPPORTED}.")
    size = cfg.validation_size
    if isinstance(size, bool) or not isinstance(size, numbers.Real) or not 0.0 < size < 1.0:
        raise ConfigError(f"validation_size must be a fraction between 0 and 1, got {cfg.validation_size}.")
    for key in ("max_train_samples", "max_eval_samples", "max_unlabeled_samples"):
        value = getattr(cfg, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{key} must be a positive integer or unset, got {value!r}.")
    if not task_type.uses_labels:
        if labels is not None:
            raise ConfigError(
                "labels apply to classification and multi_label tasks only; leave them unset for regression."
            )
        if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs < 1:
            raise ConfigError(f"num_outputs must be a positive integer, got {num_outputs!r}.")
    if labels is not None:
        if not labels or not all(isinstance(name, str) and name for name in labels):
            raise ConfigError(f"labels must be a non-empty list of non-empty strings, got {labels!r}.")
        duplicates = sorted({name for name in labels if labels.count(name) > 1})
        if duplicates:
            raise ConfigError(f"labels has duplicates: {duplicates}; give each class once.")
    if not cfg.label_separator:
        raise ConfigError("label_separator is empty; set it to the character between labels, e.g. ','.")


def _input_column(ds: datasets.Dataset, cfg: DatasetConfig, modality: str) -> str:
    if modality == "image":
        if cfg.image_column is not None:
            return cfg.image_column
        if "image" in ds.column_names:
            return "image"
        image_columns = [c for c, f in ds.features.items() if isinstance(f, datasets.Image)]
        return image_columns[0] if len(image_columns) == 1 else "image"
    if cfg.text_column is not None:
        return cfg.text_column
    return next((c for c in ("text", "sentence") if c in ds.column_names), "text")


def _require_column(ds: datasets.Dataset, column: str, split: str, cfg: DatasetConfig, what: str) -> None:
    if column in ds.column_names:
        return
    key = {"label column": "label_column", "image column": "image_column", "text column": "text_column"}[what]
    if what == "label column" and set(ds.column_names) <= {"image"}:
        folder = os.path.expanduser(cfg.path or "")
        raise DataError(f"Split '{split}' of {cfg.source} has images but no class labels." + (
            (image_folder_layout(folder) if os.path.isdir(folder) else "")
            or " For an image folder, put the images in one sub-folder per class (at least two classes)."
        ))  # fmt: skip
    hint = ""
    # pandas keeps the columns column_names leaves unnamed as an index, which datasets calls __index_level_N__
    columns = [c for c in ds.column_names if not c.startswith("__index_level_")]
    if len(columns) < len(ds.column_names):
        hint += " The file has more columns than column_names names: give one name per column."
    raise DataError(
        f"The {what} '{column}' is not in split '{split}' of {cfg.source}; its columns are: "
        f"{', '.join(columns)}. Set {key} to one of them.{hint}"
    )


def _prepare_image_column(ds: datasets.Dataset, column: str, base_dir: str | None) -> datasets.Dataset:
    """Keep images undecoded: datasets' {"bytes", "path"} dicts, or absolute file paths."""
    feature = ds.features[column]
    if isinstance(feature, datasets.Image):
        return ds.cast_column(column, datasets.Image(decode=False))
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        if base_dir is None:
            return ds
        return ds.map(_AbsolutePaths(column, base_dir), batched=True, desc="Resolving image paths")
    raise DataError(f"Image column '{column}' holds {feature}, not images or image file paths; set image_column.")


class _AbsolutePaths:
    """Batched map function resolving relative image paths against the data files' folder."""

    def __init__(self, column: str, base_dir: str) -> None:
        self.column, self.base_dir = column, base_dir

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        return {self.column: [p if p is None or os.path.isabs(p) or "://" in p else os.path.join(self.base_dir, p)
                              for p in batch[self.column]]}


def _check_text_column(ds: datasets.Dataset, column: str, split: str) -> None:
    feature = ds.features[column]
    is_string = isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")
    if is_string and ds.data.column(column).null_count == 0:
        return
    for row, value in enumerate(ds[column]):
        if not isinstance(value, str):
            raise DataError(
                f"Text column '{column}' must hold strings, but row {row} of split '{split}' holds "
                f"{value!r} ({type(value).__name__}). Fix that row, or set text_column to the column with the text."
            )


# --- labels and targets --------------------------------------------------------------------------


def _targets(
    split_sets: dict[str, datasets.Dataset], cfg: DatasetConfig, task: str, labels: list[str] | None, num_outputs: int
) -> tuple[list[str] | None, dict[str, torch.Tensor]]:
    """Class names (None for tasks without labels) and the target tensor of every split, one row per example."""
    values = {split: _label_values(ds, cfg.label_column) for split, ds in split_sets.items()}
    feature_names = _class_names(split_sets[cfg.train_split].features[cfg.label_column])
    return get_task(task).encode_targets(values, labels, feature_names, cfg.label_column, num_outputs, cfg.label_separator)


def _class_names(feature: Any) -> list[str] | None:
    """Class names of a ClassLabel feature, or of the ClassLabel inside a list feature."""
    inner = getattr(feature, "feature", None)
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    if isinstance(inner, datasets.ClassLabel):
        return list(inner.names)
    return None


def _label_values(ds: datasets.Dataset, column: str) -> list[Any]:
    """The label column as Python values, ClassLabel ids turned into their names (-1 into None)."""
    values = ds[column]
    names = _class_names(ds.features[column])
    if names is None:
        return values

    def name(v: Any) -> Any:
        return names[v] if isinstance(v, int) and 0 <= v < len(names) else None

    return [[name(v) for v in row] if isinstance(row, list) else name(row) for row in values]


# --- splitting, capping, checking images --------------------------------------------------------


def _carve(
    n: int, size: float, seed: int, stratify: torch.Tensor | None, names: list[str] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (and, for classification, stratified) train/eval split of row indices."""
    if n < 2:
        raise DataError(f"Cannot carve an eval split out of {n} example(s); add examples or give an eval split.")
    features = {"i": datasets.Value("int64")}
    columns: dict[str, Any] = {"i": np.arange(n)}
    if stratify is not None:
        features["y"] = datasets.ClassLabel(names=names)
        columns["y"] = stratify.numpy()
    table = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
    try:
        parts = table.train_test_split(test_size=size, seed=seed, stratify_by_column=None if stratify is None else "y")
    except ValueError as err:
        if stratify is None:
            raise DataError(f"Cannot carve an eval split out of {n} example(s): {err}") from err
        logger.warning("Eval split carved out without stratification (%s).", err)
        parts = table.train_test_split(test_size=size, seed=seed)
    return np.asarray(parts["train"]["i"], dtype=np.int64), np.asarray(parts["test"]["i"], dtype=np.int64)


def _cap(indices: np.ndarray, targets: torch.Tensor, limit: int | None, seed: int) -> tuple[np.ndarray, torch.Tensor]:
    if limit is None or limit >= len(indices):
        return indices, targets
    chosen = np.random.default_rng(seed).permutation(len(indices))[:limit]
    return indices[chosen], targets[torch.from_numpy(chosen)]


def _readable(
    ds: datasets.Dataset, column: str, indices: np.ndarray, progress: str | None = None
) -> tuple[np.ndarray, list[str]]:
    """Decode every image once (threads: PIL releases the GIL while decoding); return a keep-mask and the bad files.

    `progress` names a tqdm bar (none when None)."""
    from tqdm.auto import tqdm

    keep = np.ones(len(indices), dtype=bool)
    bad: list[str] = []
    bar = tqdm(total=len(indices), desc=progress, unit="img", disable=progress is None)
    with bar, ThreadPoolExecutor(max_workers=_cpu_count()) as pool:
        for start in range(0, len(indices), _CHECK_CHUNK):
            chunk = [int(i) for i in indices[start:start + _CHECK_CHUNK]]
            raw = ds[chunk][column]
            for offset, ok in enumerate(pool.map(is_readable_image, raw)):
                if not ok:
                    keep[start + offset] = False
                    value = raw[offset]
                    has_name = value is not None and not (isinstance(value, dict) and not value.get("path"))
                    bad.append(describe(value) if has_name else f"<row {chunk[offset]}: no image file>")
            bar.update(len(chunk))
    return keep, bad


def _cpu_count() -> int:
    # decoding is CPU-bound: more threads than cores only adds contention
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
