"""The pre-trained backbone folder: the backbone's native files, `backbone/` and hubtl_backbone.json (no task head).

A transformers backbone is written as a transformers folder (config.json, model.safetensors, tokenizer files), so
`transformers:PATH` and `AutoModel.from_pretrained(PATH)` load it as they are; a timm backbone as timm's Hub format
(`timm.create_model("local-dir:PATH", pretrained=True)`); any other plugin's backbone as its module's own weights.
`backbone: hubtl-pretrained:PATH_OR_HUB_ID` loads every kind (`hubtl.backbones.pretrained`).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from ..backbones.base import Backbone
from ..backbones.registry import get_plugin
from ..layout import BACKBONE_CONFIG_NAME, BACKBONE_DIR, FORMAT_VERSION, WEIGHTS_NAME, save_weights
from ..version import __version__


def save_backbone_folder(backbone: Backbone, directory: str | os.PathLike, pretraining: dict[str, Any]) -> Path:
    """Write the backbone (native weights and config, `backbone/`, hubtl_backbone.json) into `directory`, staged."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        weights = _write_native(backbone, staging)
        backbone.save_files(staging / BACKBONE_DIR)
        spec = dict(backbone.spec())
        plugin = get_plugin(spec["plugin"])
        spec.setdefault("package", plugin.package or None)
        spec.setdefault("spec_version", plugin.spec_version)
        record = {
            "library_name": "hubtl",
            "kind": "backbone",
            "hubtl_version": __version__,
            "format_version": FORMAT_VERSION,
            "modality": backbone.modality,
            "feature_dim": int(backbone.feature_dim),
            "backbone": spec,
            "weights": weights,
            "preprocessing": backbone.preprocessor(train=False).config(),
            "pretraining": pretraining,
        }
        (staging / BACKBONE_CONFIG_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        # hubtl_backbone.json last: without it the folder is not a backbone, so a crash leaves nothing loadable
        (target / BACKBONE_CONFIG_NAME).unlink(missing_ok=True)
        for entry in sorted(staging.iterdir(), key=lambda p: p.name == BACKBONE_CONFIG_NAME):
            dest = target / entry.name
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            os.replace(entry, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _write_native(backbone: Backbone, staging: Path) -> str:
    """Write the weights (and config) in the backbone library's own format; return hubtl_backbone.json's `weights`."""
    source = backbone.export_source("transformers")
    if source.get("model") is not None and source.get("tokenizer") is not None:
        source["model"].save_pretrained(staging)
        source["tokenizer"].save_pretrained(staging)
        # transformers may name its weights file otherwise in some versions: one name, the one hubtl reads
        if not (staging / WEIGHTS_NAME).is_file():
            for extra in staging.glob("*.safetensors"):
                extra.unlink()
            save_weights(source["model"], staging / WEIGHTS_NAME, metadata={"format": "pt"})
        return "transformers"
    source = backbone.export_source("timm")
    if source.get("model") is not None:
        import timm

        from ..export.timm import SOURCE_KEYS

        data_config = {
            k: v for k, v in backbone.preprocessor(train=False).config().items() if k not in ("type",)
        }
        timm.models.save_for_hf(
            source["model"], str(staging), model_args=dict(source.get("model_args") or {}) or None,
            safe_serialization=True, data_config=data_config,
        )  # fmt: skip
        config_path = staging / "config.json"
        written = json.loads(config_path.read_text(encoding="utf-8"))
        for key in SOURCE_KEYS:  # what names timm's own published weights (tag, Hub ID, license): not these
            written.get("pretrained_cfg", {}).pop(key, None)
        config_path.write_text(json.dumps(written, indent=2) + "\n", encoding="utf-8")
        return "timm"
    save_weights(backbone, staging / WEIGHTS_NAME, metadata={"format": "pt", "library": "hubtl"})
    return "backbone"
