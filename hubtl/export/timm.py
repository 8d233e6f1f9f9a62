"""Export to a timm-native folder (config.json + model.safetensors) that plain `timm.create_model` loads.

The backbone's timm model was created with `num_classes=0`; timm's full model of the same architecture is
created with `num_classes=N`, takes the backbone's weights unchanged and the head's linear layer under the
architecture's own classifier names. Anything else that differs (a conv head that cannot hold the linear
map, layers only the full model has) is refused. Before anything is written the full model must give hubtl's
logits, and the written folder, loaded back by timm's own `local-dir:` loader, must too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import ExportError
from .base import Exporter, ExportResult
from .head import require_linear_head, task_kind, task_notes
from .readme import write_readme
from .samples import check_inputs, require_close

if TYPE_CHECKING:
    from ..model import TransferModel

#: max |logit difference| allowed between hubtl and the timm model (float32, the same operations)
ATOL = 1e-5
#: the data config keys hubtl's preprocessing uses, written into timm's pretrained_cfg
DATA_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
#: pretrained_cfg keys that describe timm's own published weights of the architecture, not these
SOURCE_KEYS = ("tag", "license", "hf_hub_id", "url", "origin_url", "paper_ids", "paper_name", "notes", "hf_hub_filename")
_ONNX = "Export with --format onnx instead (any backbone and head)."


class TimmExporter(Exporter):
    """A model on a timm backbone with a linear head, as a timm model with `num_classes` outputs."""

    name = "timm"
    library = "timm"

    def export(self, model: TransferModel, staging: Path, **options: Any) -> ExportResult:
        import timm

        if options:
            raise ExportError(f"The timm export takes no options; got {', '.join(sorted(options))}.")
        source = _source(model)
        kind = task_kind(model, "timm")
        linear = require_linear_head(model, "timm")
        architecture, model_args = source["architecture"], dict(source.get("model_args") or {})
        full = timm.create_model(architecture, pretrained=False, num_classes=model.head.config.num_outputs, **model_args)
        full.load_state_dict(_full_state(source["model"], full, linear, architecture), strict=True)
        full.eval()

        data_config = {k: v for k, v in model.preprocessor(train=False).config().items() if k in DATA_KEYS}
        inputs = check_inputs("image")
        batch = model.preprocessor(train=False)(inputs)
        ours = model(batch)
        require_close(ours, full(batch["pixel_values"]), ATOL, f"timm's {architecture} with the head's weights", _ONNX)

        labels = list(model.labels or [])
        timm.models.save_for_hf(
            full,
            str(staging),
            model_config={"label_names": labels} if labels else None,
            safe_serialization=True,
            data_config=data_config,
        )
        _drop_source_keys(staging / "config.json")
        diff = _check_written(staging, ours, batch["pixel_values"], data_config, architecture)
        notes = task_notes(model, kind)
        num = model.head.config.num_outputs
        write_readme(
            staging,
            {
                "library_name": "timm",
                "pipeline_tag": "image-classification" if kind != "regression" else None,
                "tags": ["image-classification", "timm", "hubtl"] if kind != "regression" else ["timm", "hubtl"],
            },
            f"{architecture} with a {num}-output {kind.replace('_', '-')} head",
            _usage(architecture, num),
            f"At export, timm's own loader read this folder back and its logits matched hubtl's within {ATOL:g} "
            f"(max |difference| {diff:.2g}) on {len(inputs)} check images; the preprocessing in `config.json` "
            "(`pretrained_cfg`) is hubtl's.",
            notes,
        )
        return ExportResult(self.name, staging, diff, len(inputs), notes)


def _source(model: TransferModel) -> dict[str, Any]:
    """The backbone's timm model, architecture and create_model kwargs, or an ExportError saying why there are none."""
    backbone = model.backbone
    plugin = backbone.spec().get("plugin")
    if "timm" not in getattr(backbone, "export_formats", ()):
        raise ExportError(
            f"The backbone comes from the {plugin!r} plugin, which does not declare a timm export (only backbones of the "
            f"timm plugin, or plugins that declare 'timm' in export_formats, can become timm models). {_ONNX}"
        )
    source = backbone.export_source("timm")
    if not isinstance(source.get("model"), nn.Module) or not isinstance(source.get("architecture"), str):
        raise ExportError(
            f"The {plugin!r} plugin declares a timm export but its export_source('timm') lacks 'model' (the timm model) "
            "or 'architecture' (its timm name). Fix the plugin, or export with --format onnx."
        )
    return source


def _classifier_names(full: nn.Module, architecture: str) -> tuple[str, nn.Module]:
    """The qualified name and module of the full model's classifier, found with get_classifier()."""
    classifier = full.get_classifier() if hasattr(full, "get_classifier") else None
    if isinstance(classifier, (tuple, list)):
        raise ExportError(
            f"timm's {architecture} has {len(classifier)} classifiers whose outputs it combines (a distilled model); "
            f"hubtl's single linear head has no exact place in it. {_ONNX}"
        )
    names = [name for name, module in full.named_modules() if module is classifier]
    if classifier is None or not names:
        raise ExportError(f"timm's {architecture} has no classifier get_classifier() can find. {_ONNX}")
    declared = getattr(full, "pretrained_cfg", {}).get("classifier")
    if isinstance(declared, str) and declared != names[0]:
        raise ExportError(
            f"timm's {architecture} names its classifier {declared!r} in pretrained_cfg but get_classifier() returns "
            f"{names[0]!r}; hubtl cannot tell where timm would load the head's weights. {_ONNX}"
        )
    return names[0], classifier


def _full_state(features: nn.Module, full: nn.Module, linear: nn.Linear, architecture: str) -> dict[str, torch.Tensor]:
    """The full model's state dict: the backbone's tensors unchanged, the head's weights under the classifier's names."""
    prefix, classifier = _classifier_names(full, architecture)
    own, target = features.state_dict(), full.state_dict()
    classifier_keys = {f"{prefix}.{k}" for k in classifier.state_dict()}
    differ = [k for k in own if k not in target or target[k].shape != own[k].shape]
    extra = [k for k in target if k not in own and k not in classifier_keys]
    if differ or extra:
        details = []
        if differ:
            details.append(f"{len(differ)} backbone tensors have no same-shaped place in it (e.g. {differ[:3]})")
        if extra:
            details.append(f"it has {len(extra)} tensors besides the classifier that the backbone lacks (e.g. {extra[:3]})")
        raise ExportError(
            f"timm's {architecture} with a classifier is not the backbone plus one linear layer: {'; '.join(details)}. {_ONNX}"
        )
    weight = linear.weight.detach()
    if isinstance(classifier, nn.Linear):
        mapped = weight
    elif (
        isinstance(classifier, nn.Conv2d)
        and classifier.kernel_size == (1, 1)
        and classifier.groups == 1
        and classifier.stride == (1, 1)
        and classifier.padding in ((0, 0), "valid")
    ):
        mapped = weight[:, :, None, None]  # a 1x1 convolution on pooled features is the same linear map
    else:
        raise ExportError(
            f"timm's {architecture} classifier ({prefix}) is a {type(classifier).__name__}, not a linear layer or 1x1 "
            f"convolution, so the head's linear weights have no exact place in it. {_ONNX}"
        )
    if classifier_keys != {f"{prefix}.weight", f"{prefix}.bias"}:
        raise ExportError(
            f"timm's {architecture} classifier ({prefix}) holds {sorted(classifier_keys)}, not one weight and one bias. {_ONNX}"
        )
    if tuple(target[f"{prefix}.weight"].shape) != tuple(mapped.shape):
        raise ExportError(
            f"timm's {architecture} classifier ({prefix}) takes weights of shape {list(target[f'{prefix}.weight'].shape)}, "
            f"the head has {list(mapped.shape)}: its input is not the backbone's pooled features. {_ONNX}"
        )
    return {**own, f"{prefix}.weight": mapped, f"{prefix}.bias": linear.bias.detach()}


def _check_written(
    folder: Path, ours: torch.Tensor, pixels: torch.Tensor, data_config: dict[str, Any], architecture: str
) -> float:
    """Load the written folder with timm's own loader (what hf-hub: does with config.json) and compare again."""
    import timm

    loaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    diff = require_close(ours, loaded(pixels), ATOL, f"The written folder, loaded by timm ({architecture})", _ONNX)
    resolved = timm.data.resolve_model_data_config(loaded)
    differing = {
        k: (v, resolved.get(k)) for k, v in data_config.items() if _plain(resolved.get(k)) != _plain(v)
    }
    if differing:
        raise ExportError(
            f"timm would preprocess the export differently from hubtl ({', '.join(f'{k}: {a!r} vs {b!r}' for k, (a, b) in differing.items())}). {_ONNX}"
        )
    return diff


def _drop_source_keys(path: Path) -> None:
    """Remove what names timm's own pretrained weights (their tag, license) from the written pretrained_cfg."""
    config = json.loads(path.read_text(encoding="utf-8"))
    for key in SOURCE_KEYS:
        config.get("pretrained_cfg", {}).pop(key, None)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _plain(value: Any) -> Any:
    """Tuples as lists, for comparing configs read from JSON."""
    return list(value) if isinstance(value, tuple) else value


def _usage(architecture: str, num_classes: int) -> str:
    """The README's loading code."""
    return f"""```python
import timm, torch
from PIL import Image

model = timm.create_model("hf-hub:NAMESPACE/NAME", pretrained=True).eval()   # this repo
# a local copy of this folder: timm.create_model("local-dir:DIR", pretrained=True), or by architecture
# (num_classes is required there: without it timm silently drops the classifier; the preprocessing is then
# the architecture's default, so take it from config.json's pretrained_cfg):
# model = timm.create_model("{architecture}", pretrained=True,
#                           pretrained_cfg_overlay={{"file": "DIR/model.safetensors", "num_classes": {num_classes}}})
transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
with torch.no_grad():
    logits = model(transform(Image.open("photo.jpg").convert("RGB")).unsqueeze(0))
print(model.pretrained_cfg["label_names"][logits.argmax(-1).item()])
```"""
