"""The export registry and dispatch: one `Exporter` per format, written through a staging folder and a rename."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ExportError
from .base import Exporter, ExportResult

if TYPE_CHECKING:
    from ..model import TransferModel

logger = logging.getLogger("hubtl")


_EXPORTERS: dict[str, type[Exporter]] = {}


def register_exporter(cls: type[Exporter]) -> type[Exporter]:
    """Class decorator: make an Exporter available as `format=cls.name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no `name`; set the class attribute to its format name.")
    _EXPORTERS[cls.name] = cls
    return cls


#: the formats hubtl ships, imported on first use (each exporter pulls in its library)
BUILTIN_FORMATS = ("onnx", "timm", "transformers")


def list_formats() -> list[str]:
    """The export formats there are: the built-in ones and any registered, sorted."""
    return sorted({*BUILTIN_FORMATS, *_EXPORTERS})


def get_exporter(format: str) -> Exporter:
    """An instance of the exporter of `format`, or an ExportError naming the formats there are."""
    if format not in _EXPORTERS and format in BUILTIN_FORMATS:
        _EXPORTERS[format] = _builtin(format)
    if format not in _EXPORTERS:
        raise ExportError(f"Unknown export format {format!r}; choose one of {', '.join(list_formats())}.")
    return _EXPORTERS[format]()


def _builtin(format: str) -> type[Exporter]:
    """The class of a built-in exporter, imported now."""
    if format == "onnx":
        from .onnx import OnnxExporter

        return OnnxExporter
    if format == "timm":
        from .timm import TimmExporter

        return TimmExporter
    from .transformers import TransformersExporter

    return TransformersExporter


def export_model(
    model: TransferModel,
    format: str,
    directory: str | os.PathLike,
    *,
    overwrite: bool = False,
    push_to_hub: str | None = None,
    token: str | None = None,
    private: bool = False,
    **options: Any,
) -> ExportResult:
    """Export `model` to `directory` in `format`, verified, atomically; optionally push the folder to a Hub repo."""
    exporter = get_exporter(format)
    if push_to_hub:
        from ..hub.client import validate_repo_id

        validate_repo_id(push_to_hub)
    target = Path(directory).expanduser()
    if target.exists() and not (target.is_dir() and not any(target.iterdir())) and not overwrite:
        raise ExportError(f"{target} already exists; give a new --output_dir, or replace it with --overwrite (overwrite=True in Python).")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.export-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            result = exporter.export(model, staging, **options)
        readme = staging / "README.md"
        if push_to_hub and readme.is_file():  # the usage code names the repo it is pushed to
            readme.write_text(readme.read_text(encoding="utf-8").replace("NAMESPACE/NAME", push_to_hub), encoding="utf-8")
        _replace(staging, target)
    finally:
        model.train(was_training)
        shutil.rmtree(staging, ignore_errors=True)
    result.directory = target
    if push_to_hub:
        from ..hub.client import push_folder

        result.url = push_folder(
            target, push_to_hub, private=private, token=token, commit_message=f"Export of a hubtl model for {exporter.library}"
        )
    return result


def _replace(staging: Path, target: Path) -> None:
    """Rename the finished staging folder to `target`; an existing target is renamed away first, then removed."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
