"""Exports of a TransferModel for plain timm, plain transformers and ONNX Runtime, each verified before it is written.

    result = hubtl.export.export_model(model, "onnx", "exports/my-model")   # or model.export("onnx", ...)
    print(result.summary())

One module per format (`timm`, `transformers`, `onnx`), the registry and dispatch in `registry`; an export that
cannot be exact raises `hubtl.errors.ExportError` saying why and which format or training would work.
"""

from .base import Exporter, ExportResult
from .registry import export_model, get_exporter, list_formats, register_exporter

__all__ = ["ExportResult", "Exporter", "export_model", "get_exporter", "list_formats", "register_exporter"]
