"""Where the data comes from: Hub datasets, image folders and csv/tsv/json/parquet files, read into splits."""

from __future__ import annotations

import csv
import glob
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from datasets.data_files import DataFilesDict, get_data_patterns
from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

from ..errors import ConfigError, DataError
from ..hub.client import looks_like_repo_id
from ..layout import BACKBONE_CONFIG_NAME, CHECKPOINTS_DIR, CONFIG_NAME, is_hubtl_model
from .config import DatasetConfig

#: split names taken as the eval split, in this order, when `eval_split` is not set
logger = logging.getLogger("hubtl")

EVAL_SPLIT_NAMES = ("validation", "val", "valid", "dev", "test")

_TABULAR_FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "json", ".ndjson": "json",
                    ".parquet": "parquet"}
_IMAGE_EXTENSIONS = frozenset(ext.lower() for ext in ImageFolder.EXTENSIONS)
_FORMAT_NAMES = ("csv", "tsv", "json", "parquet", "imagefolder")
SUPPORTED = "a Hub dataset ID, an image folder (one sub-folder per class) or csv/tsv/json/jsonl/parquet files"


def check_source(cfg: DatasetConfig) -> None:
    """Check that the data's local paths exist, without reading any data (the trainer's first checks)."""
    if not cfg.path and not cfg.data_files:
        raise ConfigError(f"dataset.path is empty and no dataset.data_files are given; give {SUPPORTED}.")
    path = os.path.expanduser(cfg.path) if cfg.path else None
    if path is not None and not os.path.exists(path) and cfg.path not in _FORMAT_NAMES:
        local = path.startswith((".", "/", "~")) or path.count("/") > 1 or _extension(path) != ""
        if local or not looks_like_repo_id(cfg.path):
            raise DataError(f"Dataset path not found: {cfg.path}. Check the path; give {SUPPORTED}.")
        return  # a Hub dataset ID: checked when it is loaded
    if cfg.data_files is not None:
        base = path if path is not None and os.path.isdir(path) else os.getcwd()
        _resolve_data_files(cfg.data_files, base)


# --- loading -------------------------------------------------------------------------------------


@dataclass
class SourcePlan:
    """How a source is read: a `datasets` builder with its options and files, or a Hub dataset (`hub`)."""

    builder: str
    options: dict[str, Any]
    files: dict[str, list[str]] | None  # {split: [absolute files]}; None for a Hub dataset or an image folder
    base_dir: str | None  # the folder relative image paths resolve against (None for a Hub dataset)
    hub: bool = False


def source_plan(cfg: DatasetConfig) -> SourcePlan:
    """Decide how the source is read, without reading any data (map-style `load_splits` and streaming share it)."""
    if not cfg.path:  # data_files alone: the format comes from the files' extension
        files = _resolve_data_files(cfg.data_files, os.getcwd())
        return _local_plan(files, cfg, os.getcwd())
    path = os.path.expanduser(cfg.path)
    if cfg.data_files is not None:
        if os.path.isdir(path):
            files = _resolve_data_files(cfg.data_files, path)
            return _local_plan(files, cfg, path)
        if cfg.path in _FORMAT_NAMES:
            files = _resolve_data_files(cfg.data_files, os.getcwd())
            return _local_plan(files, cfg, os.getcwd(), fmt=cfg.path)
        if os.path.isfile(path):
            raise ConfigError(f"path {cfg.path} is a file and data_files is set too; give one or the other.")
    elif os.path.isfile(path):
        return _local_plan({"train": [os.path.abspath(path)]}, cfg, os.path.dirname(os.path.abspath(path)))
    elif os.path.isdir(path):
        return _directory_plan(os.path.abspath(path), cfg)
    if not looks_like_repo_id(cfg.path) or _extension(cfg.path) in set(_TABULAR_FORMATS) | _IMAGE_EXTENSIONS:
        raise DataError(f"Dataset path not found: {cfg.path}. Check the path; give {SUPPORTED}.")
    return SourcePlan(cfg.path, {"name": cfg.name, "data_files": cfg.data_files}, None, None, hub=True)


def load_splits(cfg: DatasetConfig) -> tuple[datasets.DatasetDict, str | None]:
    """Load every split of the source; also return the folder relative image paths resolve against."""
    plan = source_plan(cfg)
    if plan.hub:
        return _load_hub(cfg), None
    return _read((plan.builder, plan.options), cfg, plan.files), plan.base_dir


def _load_hub(cfg: DatasetConfig) -> datasets.DatasetDict:
    try:
        loaded = datasets.load_dataset(cfg.path, cfg.name, data_files=cfg.data_files)
    except Exception as err:  # noqa: BLE001 - any failure here means the dataset cannot be used
        raise DataError(
            f"{cfg.source} is not a local path, and loading it as a Hub dataset failed: {type(err).__name__}: {err}. "
            "Check the dataset ID (and config name), your connection or HF_ENDPOINT, or give a local path."
        ) from err
    return _as_dict(loaded)


def _directory_plan(path: str, cfg: DatasetConfig) -> SourcePlan:
    outputs = _hubtl_outputs(path)  # never data: an output_dir inside dataset.path must not change what is read
    exts = _extensions_under(path, skip=outputs)
    if exts & _IMAGE_EXTENSIONS:
        if outputs:
            raise DataError(
                f"The image folder {cfg.source} holds hubtl output folder(s) ({', '.join(sorted(outputs)[:3])}), which "
                "would be read as classes of images. Move them out of it, and set output_dir outside dataset.path."
            )
        _warn_empty_class_folders(path)
        return SourcePlan("imagefolder", {"data_dir": path}, None, path)
    if not exts & set(_TABULAR_FORMATS):
        raise DataError(f"{cfg.source} holds no image files and no csv/tsv/json/jsonl/parquet files; give {SUPPORTED}.")
    files = {split: [f for f in split_files if _extension(f) in _TABULAR_FORMATS] for split, split_files in _split_files(path, outputs).items()}
    return _local_plan({split: f for split, f in files.items() if f}, cfg, path)


def _split_files(path: str, outputs: list[str]) -> dict[str, list[str]]:
    """The files of each split under `path`, named as datasets names them (by file or folder name: train, validation,
    test, ...), leaving hubtl's output folders out: their `training/` folder would otherwise be the train split."""
    if not outputs:
        return {str(k): list(v) for k, v in DataFilesDict.from_patterns(get_data_patterns(path), base_path=path).items()}
    from datasets.data_files import (  # the public form resolves without a filter
        _get_data_files_patterns,
        resolve_pattern,
    )

    inside = tuple(os.path.join(path, o) + os.sep for o in outputs)

    def kept(pattern: str) -> list[str]:
        try:
            return [f for f in resolve_pattern(pattern, base_path=path) if not f.startswith(inside)]
        except FileNotFoundError:
            return []

    def resolve(pattern: str) -> list[str]:
        found = kept(pattern)
        if not found:
            raise FileNotFoundError(pattern)  # as resolve_pattern says "no file": datasets then tries the next pattern
        return found

    try:
        patterns = _get_data_files_patterns(resolve)
    except FileNotFoundError:
        return {}
    return {str(split): [f for pattern in split_patterns for f in kept(pattern)] for split, split_patterns in patterns.items()}


def image_folder_layout(path: str) -> str:
    """Why `datasets` found no class labels in an image folder, in words: images at more than one depth (a stray file
    beside the class folders, a nested folder); '' when they all lie at one depth."""
    depths: dict[int, list[str]] = {}
    for folder, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if _extension(name) in _IMAGE_EXTENSIONS and not name.startswith("."):
                relative = os.path.relpath(os.path.join(folder, name), path)
                depths.setdefault(relative.count(os.sep), []).append(relative)
    if len(depths) < 2:
        return ""
    usual = max(depths, key=lambda depth: len(depths[depth]))
    odd = sorted(f for depth, files in depths.items() if depth != usual for f in files)
    more = f" and {len(odd) - 3} more" if len(odd) > 3 else ""
    return (
        f" Its images are not all at one depth, so datasets infers no classes: {', '.join(odd[:3])}{more} lie outside "
        f"the class folders of the other {len(depths[usual])} (a file beside them, or a nested folder). Move them into "
        "a class folder, or remove them."
    )


def _hubtl_outputs(path: str) -> list[str]:
    """Folders under `path` (relative) that hubtl wrote: a run's output folder or a pre-trained backbone folder."""
    found = []
    for folder, dirs, names in os.walk(path):
        written = CHECKPOINTS_DIR in dirs or BACKBONE_CONFIG_NAME in names
        if folder != path and (written or (CONFIG_NAME in names and is_hubtl_model(Path(folder)))):
            found.append(os.path.relpath(folder, path))
            dirs[:] = []
        else:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
    return found


def _warn_empty_class_folders(path: str) -> None:
    """Warn about folders of an image folder that hold no image: they are no class at all (datasets drops them)."""
    empty = []
    for folder, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if folder != path and not dirs and not any(_extension(n) in _IMAGE_EXTENSIONS for n in names):
            empty.append(os.path.relpath(folder, path))
    if empty:
        logger.warning("%d folder(s) of %s hold no images and are left out, so they are no class: %s. Add images to "
                       "them or remove them.", len(empty), path, ", ".join(sorted(empty)[:5]))  # fmt: skip


def _extensions_under(path: str, skip: Sequence[str] = ()) -> set[str]:
    """File extensions found under a folder (hidden entries and the `skip` folders ignored), stopping at the first image."""
    found: set[str] = set()
    skipped = {os.path.join(path, s) for s in skip}
    for folder, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".") and os.path.join(folder, d) not in skipped]
        found.update(_extension(f) for f in names if not f.startswith("."))
        if found & _IMAGE_EXTENSIONS:
            break
    return found


def _resolve_data_files(data_files: str | list[str] | dict[str, Any], base: str) -> dict[str, list[str]]:
    """Normalise data_files to {split: [absolute existing files]}, expanding glob patterns."""
    if isinstance(data_files, (str, os.PathLike)):
        data_files = {"train": [data_files]}
    elif not isinstance(data_files, dict):
        data_files = {"train": list(data_files)}
    resolved: dict[str, list[str]] = {}
    for split, entries in data_files.items():
        entries = [entries] if isinstance(entries, (str, os.PathLike)) else list(entries)
        files: list[str] = []
        for entry in entries:
            full = os.path.join(base, os.path.expanduser(os.fspath(entry)))
            matches = sorted(glob.glob(full, recursive=True)) if glob.has_magic(full) else [full]
            matches = [m for m in matches if os.path.isfile(m)]
            if not matches:
                raise DataError(f"Data file not found: {entry} (looked in {base}). Check data_files.")
            files.extend(os.path.abspath(m) for m in matches)
        resolved[str(split)] = files
    return resolved


def _load_local(files: dict[str, list[str]], cfg: DatasetConfig, fmt: str | None = None) -> datasets.DatasetDict:
    plan = _local_plan(files, cfg, None, fmt)
    return _read((plan.builder, plan.options), cfg, plan.files)


def _local_plan(files: dict[str, list[str]], cfg: DatasetConfig, base_dir: str | None, fmt: str | None = None) -> SourcePlan:
    if not files:
        raise DataError(f"No data files found for {cfg.source}; give {SUPPORTED}.")
    if fmt is None:
        formats = set()
        for f in (f for split_files in files.values() for f in split_files):
            ext = _extension(f)
            if ext in _TABULAR_FORMATS:
                formats.add(_TABULAR_FORMATS[ext])
            elif ext in _IMAGE_EXTENSIONS:
                formats.add("imagefolder")
            else:
                raise DataError(
                    f"Unsupported file extension '{ext or os.path.basename(f)}' ({f}); "
                    "use .csv, .tsv, .json, .jsonl or .parquet files, or a folder of images."
                )
        if len(formats) > 1:
            raise DataError(f"data files mix formats ({', '.join(sorted(formats))}); use one format for all splits.")
        fmt = formats.pop()
    builder, options = _builder(fmt, cfg)
    return SourcePlan(builder, options, files, base_dir)


def _builder(fmt: str, cfg: DatasetConfig) -> tuple[str, dict[str, Any]]:
    """The `datasets` builder and its options for one file format."""
    if cfg.column_names is not None and fmt not in ("csv", "tsv"):
        raise ConfigError(f"column_names only applies to header-less csv/tsv files, not {fmt}; remove it.")
    if fmt in ("csv", "tsv"):
        # only empty cells are missing: sentences such as "null" or "NA" stay text
        options: dict[str, Any] = {"keep_default_na": False, "na_values": [""]}
        if fmt == "tsv":
            options.update(sep="\t", quoting=csv.QUOTE_NONE)
        if cfg.column_names is not None:
            options["column_names"] = list(cfg.column_names)
        return "csv", options
    return fmt, {}


def _read(
    builder: tuple[str, dict[str, Any]], cfg: DatasetConfig, files: dict[str, list[str]] | None = None
) -> datasets.DatasetDict:
    name, options = builder
    try:
        loaded = datasets.load_dataset(name, data_files=files, **options)
    except Exception as err:  # noqa: BLE001 - parser errors come in many types
        empty = re.search(r'Instruction "([^"]+)" corresponds to no data', str(err))
        if empty:
            raise DataError(f"Split '{empty.group(1)}' of {cfg.source} is empty; add examples to it.") from err
        cause = _root_cause(err)  # datasets wraps the parser's error in a DatasetGenerationError
        if type(cause).__name__ == "EmptyDataError" or "the first 0 values" in str(cause):
            raise DataError(
                f"A data file of {cfg.source} holds no rows (it is empty, or a header only); add examples to it. "
                f"({type(cause).__name__}: {str(cause)[:200]})"
            ) from err
        raise DataError(
            f"Could not read {cfg.source} as {name}: {type(cause).__name__}: {str(cause)[:300]}. "
            "Check the file format, its header (column_names for header-less csv/tsv) and delimiter."
        ) from err
    return _as_dict(loaded)


def _root_cause(err: BaseException) -> BaseException:
    """The innermost exception of a chain (what the parser said, not its wrappers)."""
    seen = {id(err)}
    while (inner := err.__cause__ or err.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        err = inner
    return err


def _as_dict(loaded: Any) -> datasets.DatasetDict:
    if isinstance(loaded, datasets.Dataset):
        return datasets.DatasetDict({"train": loaded})
    if not isinstance(loaded, datasets.DatasetDict):
        raise DataError(f"Expected a map-style dataset, got {type(loaded).__name__}; streaming is not supported.")
    return loaded


def _extension(path: str) -> str:
    return os.path.splitext(os.fspath(path))[1].lower()


# --- splits and columns --------------------------------------------------------------------------


def pick_splits(
    splits: datasets.DatasetDict, cfg: DatasetConfig
) -> tuple[datasets.Dataset, datasets.Dataset | None, str | None]:
    """Return (train, eval or None when one must be carved out, eval split name)."""
    available = ", ".join(splits) or "none"
    train_name = _split_alias(cfg.train_split, splits)
    if train_name not in splits:
        raise DataError(
            f"Train split '{cfg.train_split}' not found in {cfg.source}; it has: {available}. Set train_split."
        )
    if cfg.eval_split is not None:
        eval_name: str | None = _split_alias(cfg.eval_split, splits)
        if eval_name not in splits:
            raise DataError(
                f"Eval split '{cfg.eval_split}' not found in {cfg.source}; it has: {available}. "
                "Set eval_split to one of them, or leave it unset to carve one out of the train split."
            )
    else:
        eval_name = next((s for s in EVAL_SPLIT_NAMES if s in splits and s != train_name), None)
    for split in filter(None, (train_name, eval_name)):
        if len(splits[split]) == 0:
            raise DataError(f"Split '{split}' of {cfg.source} is empty; add examples to it.")
    return splits[train_name], splits[eval_name] if eval_name else None, eval_name


#: Folder and file names `datasets` renames to its split names (an image folder's val/ becomes 'validation').
SPLIT_ALIASES = {"val": "validation", "valid": "validation", "dev": "validation", "eval": "validation",
                 "training": "train", "testing": "test"}


def _split_alias(name: str, splits: datasets.DatasetDict) -> str:
    """The split `name` stands for: itself when present, else the name `datasets` gave that folder."""
    return name if name in splits else SPLIT_ALIASES.get(name.lower(), name)
