"""What may be published of an output folder: local paths become their last part, local backbones their Hub ID.

A training record holds this machine's paths (the dataset, the data files, the output folder, a backbone loaded
from a directory). The card shows, and `hubtl push` uploads, their public form: a local path as its folder or file
name, a Hub ID as it is, a local backbone as the Hub ID of its base model when the record knows it. The output
folder itself keeps the real paths, so `--resume` on this machine still works.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..hub.client import looks_like_repo_id

#: Dataset paths that name a local builder or local files, never a Hub dataset.
LOCAL_BUILDERS = {"csv", "tsv", "json", "parquet", "text", "imagefolder", "audiofolder", "arrow", "webdataset"}
DATA_EXTENSIONS = (".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".parquet", ".txt", ".arrow", ".zip", ".tar")
#: Training-config keys that hold a local path (besides the dataset's and the backbone's).
PATH_KEYS = ("output_dir", "resume_from_checkpoint")
#: Keys of a transformers folder's JSON files that hold the name or path the files were saved from.
NAME_KEYS = ("_name_or_path", "name_or_path")

#: Keys whose values are names (labels, columns, modules, separators), kept as they are whatever they look like.
_NOT_PATHS = frozenset({"labels", "column_names", "label_separator", "lora_target_modules", "text_column",
                        "image_column", "label_column", "metric_for_best_model"})
_ABSOLUTE = re.compile(r"^(?:/|~|\\\\|[A-Za-z]:[\\/]|file://|\.{1,2}[\\/])")


def is_local_path(value: Any) -> bool:
    """True for a string naming a place on this machine: absolute, home-relative, ./ or ../ relative, or a file URL."""
    return isinstance(value, str) and bool(_ABSOLUTE.match(value))


def local_name(value: str) -> str:
    """The last part of a path ('/tmp/x/hymenoptera/' -> 'hymenoptera'); never anything above it."""
    text = str(value)
    if text.startswith("file://"):
        text = text[len("file://") :]
    parts = [p for p in re.split(r"[\\/]+", text) if p]
    name = parts[-1] if parts else ""
    return "" if name in ("~", ".", "..") or re.fullmatch(r"[A-Za-z]:", name) else name


def is_hub_dataset(path: str, dataset: dict[str, Any] | None = None) -> bool:
    """True when a dataset path names a Hub dataset rather than local files (local data files make it local)."""
    return not (dataset or {}).get("data_files") and names_hub_repo(path)


def names_hub_repo(path: str) -> bool:
    """True when a dataset path has the form of a Hub dataset ID and names no builder, data file or local path."""
    if path in LOCAL_BUILDERS or path.lower().endswith(DATA_EXTENSIONS) or is_local_path(path):
        return False
    return looks_like_repo_id(path) and not os.path.exists(os.path.expanduser(path))


def is_hub_id(value: Any) -> bool:
    """True for a 'namespace/name' Hub ID that is not a path of this machine."""
    return (
        isinstance(value, str)
        and value.count("/") == 1
        and not is_local_path(value)
        and looks_like_repo_id(value)
        and not os.path.exists(os.path.expanduser(value))
    )


def is_model_id(value: Any) -> bool:
    """True for a recorded base model's Hub ID: 'namespace/name', or a legacy bare name such as 'bert-base-uncased'."""
    return isinstance(value, str) and looks_like_repo_id(value) and not is_local_path(value)


def public_dataset_path(path: str) -> str:
    """A dataset path as published: a Hub dataset ID as is, a local folder or file as its name."""
    if path in LOCAL_BUILDERS or names_hub_repo(path):
        return path
    return local_name(path) or path


def public_backbone_name(name: str, base_model: str | None = None) -> str:
    """A backbone name (no plugin prefix) as published: a local path becomes its base model's Hub ID, else its name."""
    if not is_local_backbone(name):
        return name
    return base_model if is_model_id(base_model) else (local_name(name) or "local-backbone")


def public_backbone(spec: str, base_model: str | None = None) -> str:
    """A `plugin:name` backbone string as published (see `public_backbone_name`)."""
    plugin, sep, name = str(spec).partition(":")
    if not sep:
        return public_backbone_name(plugin, base_model)
    return f"{plugin}:{public_backbone_name(name, base_model)}"


def public_file(entry: str, dataset_path: str | None = None) -> str:
    """A local file as published: relative to the dataset folder (under its name) when inside it, else its name."""
    if not is_local_path(entry):
        return entry
    if dataset_path and is_local_path(dataset_path):
        root = str(dataset_path).rstrip("/\\")
        if entry.startswith(root + "/") or entry.startswith(root + "\\"):
            return f"{local_name(root)}/{entry[len(root) + 1:]}".lstrip("/")
    return local_name(entry)


def public_config(config: dict[str, Any], base_model: str | None = None) -> dict[str, Any]:
    """The resolved training config (training/config.yaml) with every local path reduced to its name."""
    out = _scrub(config)
    dataset = config.get("dataset")
    if isinstance(dataset, dict):
        public = dict(out["dataset"])
        if isinstance(dataset.get("path"), str):
            public["path"] = public_dataset_path(dataset["path"])
        if "data_files" in dataset:
            in_repo = isinstance(dataset.get("path"), str) and names_hub_repo(dataset["path"])
            public["data_files"] = _map_files(dataset["data_files"], local=not in_repo)
        out["dataset"] = public
    elif isinstance(dataset, str):
        out["dataset"] = public_dataset_path(dataset)
    if isinstance(config.get("backbone"), str):
        out["backbone"] = public_backbone(config["backbone"], base_model)
    for key in PATH_KEYS:
        if isinstance(config.get(key), str):
            out[key] = local_name(config[key]) or config[key]
    teacher = config.get("teacher")  # a distillation teacher: a Hub ID stays, a local folder becomes its name
    if isinstance(teacher, str) and (not is_hub_id(teacher) or os.path.isdir(os.path.expanduser(teacher))):
        out["teacher"] = local_name(teacher) or teacher
    return out


def public_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """summary.json with the dataset path and the skipped files as published, and no other local path."""
    out = _scrub(summary)
    path = summary.get("dataset")
    if isinstance(path, str):
        out["dataset"] = public_dataset_path(path)
    skipped = summary.get("skipped_files")
    if isinstance(skipped, list):
        out["skipped_files"] = [public_file(s, path) if isinstance(s, str) else s for s in skipped]
    return out


def public_model_config(config: dict[str, Any], base_model: str | None = None) -> dict[str, Any]:
    """config.json with a local `backbone.name` replaced by its base model's Hub ID, else its folder name.

    Loading never reads `backbone.name` as a path: the built-in text plugins rebuild from `backbone/`, and timm
    names are never paths.
    """
    out = dict(config)
    backbone = config.get("backbone")
    if isinstance(backbone, dict) and isinstance(backbone.get("name"), str):
        out["backbone"] = {**backbone, "name": public_backbone_name(backbone["name"], base_model)}
    return out


def public_name_keys(content: dict[str, Any], base_model: str | None = None) -> dict[str, Any]:
    """A transformers JSON file (config.json, tokenizer_config.json) with a local `_name_or_path` made public."""
    out = dict(content)
    for key in NAME_KEYS:
        value = content.get(key)
        if isinstance(value, str) and is_local_backbone(value):
            out[key] = public_backbone_name(value, base_model)
    return out


def recorded_base_model(config: dict[str, Any], summary: dict[str, Any]) -> str | None:
    """The base model's Hub ID the training record names (`base_model` of summary.json or the training config)."""
    for value in (summary.get("base_model"), config.get("base_model")):
        if is_model_id(value):
            return str(value)
    return None


def saved_base_model(directory: Path) -> str | None:
    """A Hub ID that a saved transformers backbone names as its origin (backbone/config.json `_name_or_path`)."""
    import json

    path = Path(directory) / "backbone" / "config.json"
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = content.get("_name_or_path") if isinstance(content, dict) else None
    return str(value) if is_hub_id(value) else None


def is_local_backbone(name: str) -> bool:
    """True when a backbone name (no plugin prefix) is a path of this machine rather than a model or Hub name."""
    return is_local_path(name) or name.count("/") > 1 or ("/" in name and os.path.isdir(os.path.expanduser(name)))


def _map_files(files: Any, local: bool) -> Any:
    """data_files (a string, a list or a split -> files mapping) with each local entry as its file name."""
    def one(value: Any) -> Any:
        if isinstance(value, str) and (local or is_local_path(value)):
            return local_name(value) or value
        return value

    if isinstance(files, dict):
        return {k: [one(v) for v in vs] if isinstance(vs, list) else one(vs) for k, vs in files.items()}
    if isinstance(files, list):
        return [one(v) for v in files]
    return one(files)


def _scrub(value: Any) -> Any:
    """A copy of a JSON/YAML value with every string that is a local path replaced by its last part.

    Values that are names, never paths (labels, columns, module names), are kept even when they start with a slash.
    """
    if isinstance(value, dict):
        return {k: v if k in _NOT_PATHS else _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if is_local_path(value):
        return local_name(value) or value
    return value
