"""Label values as datasets hold them (names, ids, lists, numbers written as text) turned into target tensors.

Pure functions on Python values, used by the tasks in `hubtl.tasks` to encode their targets.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from .errors import DataError

logger = logging.getLogger("hubtl")


def single_labels(values: list[Any], column: str, split: str) -> list[Any]:
    """Classification labels, one per row: refuse missing labels and rows that hold several."""
    missing = [row for row, v in enumerate(values) if is_missing(v)]
    if missing:
        raise DataError(
            f"{len(missing)} row(s) of split '{split}' have no label in column '{column}' "
            f"(rows {preview(missing, 5)}). Fill them in, or pick a labelled split as eval_split."
        )
    lists = [row for row, v in enumerate(values) if isinstance(v, (list, tuple))]
    if lists:
        raise DataError(
            f"Row {lists[0]} of split '{split}' has several labels ({values[lists[0]]!r}) but the task is "
            "classification (one label per example); use task multi_label."
        )
    return values


def label_lists(values: list[Any], separator: str) -> list[list[Any]]:
    """Multi-label labels: a list per row, from lists, `separator`-joined strings or single values."""
    rows = []
    for v in values:
        if is_missing(v):
            rows.append([])
        elif isinstance(v, str):
            rows.append([part.strip() for part in v.split(separator) if part.strip()])
        elif isinstance(v, (list, tuple)):
            rows.append([x for x in v if not is_missing(x)])
        else:
            rows.append([v])
    return rows


def is_missing(value: Any) -> bool:
    """None or NaN: a row without a label."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def value_name(value: Any) -> str:
    """The class name a raw label value stands for: 3 and 3.0 are both '3'."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer():
        return str(int(value))
    return str(value)


def label_mapping(
    per_split: dict[str, list[Any]], given: list[str] | None, feature_names: list[str] | None, column: str
) -> tuple[list[str], dict[Any, int]]:
    """Class names in id order, and the id of every distinct raw label value."""
    distinct: dict[Any, None] = {}
    for rows in per_split.values():
        for row in rows:
            for v in row if isinstance(row, list) else (row,):
                distinct.setdefault(v, None)
    values = list(distinct)
    names = list(given or feature_names or _sorted_names(values))
    if not given and not feature_names:
        _warn_if_mixed(names, column)
    position = {n: i for i, n in enumerate(names)}
    if all(value_name(v) in position for v in values):
        return names, {v: position[value_name(v)] for v in values}
    is_id = [isinstance(v, numbers.Integral) and not isinstance(v, bool) and 0 <= v < len(names) for v in values]
    if given is not None and feature_names is None and all(is_id):
        return names, {v: int(v) for v in values}
    offending = sorted({value_name(v) for v in values if value_name(v) not in position})
    fix = (
        "Add them to labels, pass integer ids below the number of labels, or leave labels unset to take the classes "
        "from the data."
        if given is not None
        else "Make every split use the same classes as the train split."
    )
    raise DataError(
        f"Label column '{column}' has {len(offending)} value(s) outside the label set {preview(names, 10)}: "
        f"{preview(offending, 5)}. {fix}"
    )


def check_single_label_classes(names: list[str], rows: dict[str, list[Any]], column: str, separator: str) -> None:
    """Refuse one class (nothing to learn: the model would always answer it); say when the labels look like another
    task's (fractional numbers: regression; separated names: multi_label)."""
    if len(names) < 2:
        raise DataError(
            f"Classification needs at least two classes; label column '{column}' holds only {preview(names, 3)}. Check "
            "label_column and the data (a filter that kept one class?), or set labels to the full list of classes."
        )
    values = [v for split_rows in rows.values() for v in split_rows]
    numbers_ = [as_number(v) for v in values]
    if values and all(n is not None for n in numbers_) and any(not float(n).is_integer() for n in numbers_):
        logger.warning("Label column '%s' holds numbers with fractions (%d distinct values), each taken as a class. If they "
                       "are values to predict, set task: regression.", column, len(names))  # fmt: skip
    joined = [v for v in values if isinstance(v, str) and separator and separator in v]
    if len(joined) * 2 >= len(values) > 0:
        logger.warning("Most values of label column '%s' hold %r (%s): each combination is taken as one class. If they "
                       "list several labels per example, set task: multi_label.", column, separator, preview(joined, 2))  # fmt: skip


def _warn_if_mixed(names: list[str], column: str) -> None:
    """Warn when the classes taken from the data mix numbers and words (0/1 and neg/pos are four classes)."""
    numeric = [n for n in names if n.lstrip("-").isdigit()]
    if numeric and len(numeric) < len(names):
        words = [n for n in names if n not in numeric]
        logger.warning(
            "Label column '%s' mixes numbers (%s) and words (%s): they are %d different classes. If some stand for the "
            "same class, write them one way in the data, or set labels.", column, preview(numeric, 5), preview(words, 5),
            len(names),
        )


def _sorted_names(values: list[Any]) -> list[str]:
    if all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        ordered = sorted(values)
    else:
        ordered = sorted(values, key=value_name)
    return list(dict.fromkeys(value_name(v) for v in ordered))


def class_targets(rows: list[Any], mapping: dict[Any, int], num_labels: int) -> torch.Tensor:
    """Class ids, one per row."""
    return torch.tensor([mapping[v] for v in rows], dtype=torch.long)


def multi_hot(rows: list[list[Any]], mapping: dict[Any, int], num_labels: int) -> torch.Tensor:
    """One 0/1 row of `num_labels` per example."""
    targets = torch.zeros(len(rows), num_labels, dtype=torch.float32)
    for i, row in enumerate(rows):
        targets[i, [mapping[v] for v in row]] = 1.0
    return targets


def regression_targets(values: list[Any], column: str, split: str, num_outputs: int) -> torch.Tensor:
    """Float targets, one row per example; the first row that is not `num_outputs` finite numbers is refused."""
    out = np.empty((len(values), num_outputs), dtype=np.float32)
    expected = "a number" if num_outputs == 1 else f"a list of {num_outputs} numbers"
    for row, v in enumerate(values):
        items = [as_number(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
        if len(items) != num_outputs or any(x is None for x in items):
            raise DataError(
                f"Regression label column '{column}' must hold {expected}, but row {row} of split '{split}' holds "
                f"{v!r}. Fix that row, or check label_column and num_outputs."
            )
        if not all(math.isfinite(x) for x in items):
            raise DataError(
                f"Regression label column '{column}' must hold finite numbers, but row {row} of split '{split}' "
                f"holds {v!r}: NaN and ±inf targets are refused. Fix or drop that row."
            )
        out[row] = items
    return torch.from_numpy(out)


def as_number(value: Any) -> float | None:
    """A label value as a float (numbers written as text included), or None when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        return None
    try:
        return float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):
        return None


def preview(items: Iterable[Any], limit: int) -> str:
    """The first `limit` items, comma-separated, and how many more there are."""
    items = list(items)
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
