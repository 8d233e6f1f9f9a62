"""Accuracy of hubtl and of exported models on an eval file: a csv/tsv of input and label, or an image folder."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import DataError, ExportError
from ..images import is_readable_image
from ..tasks import Classification, get_task

if TYPE_CHECKING:
    from ..model import TransferModel

logger = logging.getLogger("hubtl")

#: the name of hubtl's own (PyTorch) result in an evaluation
REFERENCE = "PyTorch (hubtl)"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def read_eval_file(path: str | Path, modality: str, labels: list[str]) -> tuple[list[Any], list[int]]:
    """(inputs, class indices) from a header-less or headed csv/tsv of `input,label` rows, or an image folder.

    An image folder has one sub-folder per class, named as the model's labels. In a csv/tsv the input is the first
    column (a text, or an image path relative to the file) and the label the last (a label name or its index).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        if modality != "image":
            raise DataError(f"{path} is a folder; a text model's eval file is a csv/tsv of text and label.")
        inputs, targets = [], []
        for folder in sorted(p for p in path.iterdir() if p.is_dir()):
            index = _label_index(folder.name, labels, f"class folder {folder}")
            for file in sorted(folder.rglob("*")):
                if file.suffix.lower() in IMAGE_SUFFIXES:
                    inputs.append(str(file))
                    targets.append(index)
        if not inputs:
            raise DataError(f"{path} holds no images in class sub-folders named as the model's labels ({', '.join(labels)}).")
        return inputs, targets
    if not path.is_file():
        raise DataError(f"No eval file {path}; give a csv/tsv of input and label, or (images) a folder of class folders.")
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    with path.open(newline="", encoding="utf-8") as f:
        rows = [row for row in csv.reader(f, delimiter=delimiter) if row]
    if rows and len(rows[0]) >= 2 and not _is_label(rows[0][-1], labels):
        rows = rows[1:]  # a header
    inputs, targets = [], []
    for number, row in enumerate(rows, 1):
        if len(row) < 2:
            raise DataError(f"{path} row {number} has {len(row)} column(s); each row needs an input and a label.")
        value = row[0] if modality == "text" else str((path.parent / row[0]).resolve())
        inputs.append(value)
        targets.append(_label_index(row[-1], labels, f"{path} row {number}"))
    if not inputs:
        raise DataError(f"{path} has no rows.")
    return inputs, targets


def _is_label(value: str, labels: list[str]) -> bool:
    """True when a cell names a class (by name or index)."""
    return value in labels or (value.strip().isdigit() and int(value) < len(labels))


def _label_index(value: str, labels: list[str], where: str) -> int:
    """The class index of a label name or index, or a DataError naming the place."""
    if value in labels:
        return labels.index(value)
    if value.strip().isdigit() and int(value) < len(labels):
        return int(value)
    raise DataError(f"{where}: {value!r} is not one of the model's labels ({', '.join(labels)}) nor their index.")


def evaluate(
    model: TransferModel,
    path: str | Path,
    runners: dict[str, Callable[[dict[str, torch.Tensor]], np.ndarray]],
    batch_size: int = 32,
) -> dict[str, Any]:
    """Accuracy of hubtl and of each runner (preprocessed batch -> logits) on the eval file, and the changes."""
    if not isinstance(get_task(model.task), Classification) or not model.labels:
        raise ExportError(f"--eval_file reports accuracy, which needs a classification model; this one is {model.task}.")
    inputs, targets = read_eval_file(path, model.backbone.modality, model.labels)
    skipped: list[str] = []
    if model.backbone.modality == "image":  # as training does (strict: false): unreadable files are left out, named
        readable = [is_readable_image(x) for x in inputs]
        skipped = [x for x, ok in zip(inputs, readable) if not ok]
        inputs, targets = [x for x, ok in zip(inputs, readable) if ok], [t for t, ok in zip(targets, readable) if ok]
        if skipped:
            logger.warning("Skipped %d unreadable image file(s) of the eval file: %s", len(skipped), ", ".join(skipped[:5]))
        if not inputs:
            raise DataError(f"{path} holds no readable image.")
    preprocess = model.preprocessor(train=False)
    predictions: dict[str, list[int]] = {REFERENCE: [], **{name: [] for name in runners}}
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            batch = preprocess(inputs[start : start + batch_size])
            predictions[REFERENCE] += model(batch).argmax(-1).tolist()
            for name, run in runners.items():
                predictions[name] += np.asarray(run(batch)).argmax(-1).tolist()
    truth = np.asarray(targets)
    accuracy = {name: float((np.asarray(p) == truth).mean()) for name, p in predictions.items()}
    return {
        "file": str(path),
        "examples": len(inputs),
        "skipped_unreadable": len(skipped),
        "accuracy": accuracy,
        "change": {f"{name} vs {REFERENCE}": accuracy[name] - accuracy[REFERENCE] for name in runners},
        "same_prediction_as_hubtl": {
            name: float((np.asarray(predictions[name]) == np.asarray(predictions[REFERENCE])).mean()) for name in runners
        },
    }
