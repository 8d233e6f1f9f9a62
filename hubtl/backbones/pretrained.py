"""The built-in `hubtl-pretrained` plugin: a backbone folder written by `hubtl pretrain`, by path or Hub ID.

`backbone: hubtl-pretrained:PATH_OR_HUB_ID` rebuilds the backbone with the plugin that made it (timm,
transformers, any installed plugin) from the folder's hubtl_backbone.json, then loads its weights. The backbone it
returns is that plugin's own, so a model fine-tuned on it saves and loads without this folder. Loading keeps the
trust boundary of model folders: no code from the repo, no pickle, data files only, nothing read outside the
folder, shapes checked against the safetensors header before any weight is read; Hub IDs go through
`hub/client.py` (only the files `PRETRAINED_LOAD_PATTERNS` names are downloaded).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import BackboneNotFoundError, ConfigError, ModelLoadError
from ..layout import (
    BACKBONE_CONFIG_NAME,
    BACKBONE_DIR,
    PRETRAINED_LOAD_PATTERNS,
    WEIGHTS_NAME,
    built_within,
    check_backbone_files,
    check_links,
    load_weights,
    read_backbone_config,
    read_weights_header,
    shape_mismatch,
)
from .base import Backbone, BackbonePlugin
from .registry import backbone_from_spec

PREFIX = "hubtl-pretrained"

logger = logging.getLogger("hubtl")


class PretrainedPlugin(BackbonePlugin):
    """Loads backbone folders written by `hubtl pretrain` (local folders or Hub repos)."""

    name = PREFIX
    modality = ""  # per folder: see modality_of
    package = "hubtl"
    spec_kwargs = None  # the folder's spec kwargs were checked against the allow-list of the plugin that made it

    def create(self, model_name: str, pretrained: bool = True, **kwargs: Any) -> Backbone:
        """Rebuild the folder's backbone and load its pre-trained weights (random ones when not `pretrained`).

        `kwargs` (a config's backbone_kwargs) replace the saved spec's, e.g. {pooling: cls, max_length: 64}.
        """
        directory, hub_id, where = _folder(model_name)
        root = directory if hub_id is None else directory.parent.parent  # Hub snapshots link into the blob store
        check_links(directory, (BACKBONE_CONFIG_NAME, WEIGHTS_NAME), root)
        config = read_backbone_config(directory, where)
        check_backbone_files(directory / BACKBONE_DIR, root=root)
        spec = dict(config["backbone"])
        # backbone_kwargs replace the folder's spec kwargs (e.g. pooling, max_length), within the allow-list of the
        # plugin that made it: the weights fix the architecture, so a kwarg that changes a shape fails while loading
        spec["kwargs"] = {**(spec.get("kwargs") or {}), **kwargs}
        weights = directory / WEIGHTS_NAME
        budget = built_within(read_weights_header(weights), where) if weights.is_file() else contextlib.nullcontext()
        try:
            with budget:  # a tampered depth fails at once instead of building for minutes
                backbone = backbone_from_spec(spec, directory / BACKBONE_DIR)
        except ModelLoadError as err:
            if not kwargs:
                raise
            raise ConfigError(f"{PREFIX}:{model_name} with backbone_kwargs {kwargs}: {err}") from None
        if pretrained:
            _load(backbone, config["weights"], directory / WEIGHTS_NAME, where)
        else:
            logger.warning(
                "%s:%s with pretrained: false builds its architecture only, with random weights: the pre-trained "
                "weights are not loaded. Set pretrained: true (the default) to fine-tune from them.", PREFIX, model_name
            )
        record = config.get("pretraining") or {}
        base = record.get("base_model") if isinstance(record.get("base_model"), str) else None
        backbone.base_model = hub_id or base
        backbone.pretrained_from = {  # type: ignore[attr-defined] - read by the trainer's summary and the card
            "name": hub_id or Path(os.path.normpath(model_name)).name,
            "hub_id": hub_id,
            "objective": record.get("objective"),
            "base_model": base,
            "initialisation": record.get("initialisation"),
            "steps": record.get("steps"),
            "weights_loaded": bool(pretrained),
        }
        return backbone

    def modality_of(self, model_name: str) -> str:
        """The modality the folder's hubtl_backbone.json records."""
        directory, _, where = _folder(model_name)
        return str(read_backbone_config(directory, where)["modality"])

    def check_name(self, model_name: str) -> None:
        """A name that can only be a local path must be an existing folder (a Hub ID is checked when loaded)."""
        if _looks_like_path(model_name) and not os.path.isdir(os.path.expanduser(model_name)):
            raise BackboneNotFoundError(
                f"No folder {model_name!r} for {PREFIX}:{model_name}. Give the output_dir of a `hubtl pretrain` run or "
                "the Hub ID of one pushed there."
            )

    def from_spec(self, spec: dict[str, Any], files_dir: Path | None) -> Backbone:
        """Never needed: a model fine-tuned on a pre-trained backbone saves the spec of the plugin that made it."""
        raise ModelLoadError(
            f"A saved spec names plugin {PREFIX!r}, which no hubtl writes; the model's config.json was tampered with."
        )

    def list_models(self, pattern: str | None = None) -> list[str]:
        """None to list: any `hubtl pretrain` output folder or Hub repo is a name."""
        return []


def _looks_like_path(name: str) -> bool:
    """True for names that can only be local paths, never Hub IDs."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def _folder(model_name: str) -> tuple[Path, str | None, str]:
    """(local folder, Hub ID or None, name for messages): the folder itself or its Hub snapshot (only data files)."""
    from ..hub.client import resolve_model_dir

    local = Path(model_name).expanduser()
    if local.is_dir():
        return local, None, str(local)
    if _looks_like_path(model_name):
        raise BackboneNotFoundError(f"No folder {model_name!r} for {PREFIX}:{model_name}; give an existing folder or a Hub ID.")
    directory = resolve_model_dir(model_name, allow_patterns=PRETRAINED_LOAD_PATTERNS)
    return directory, model_name, model_name


def _load(backbone: Backbone, weights: str, path: Path, where: str) -> None:
    """Load the weights file into the module it belongs to, after comparing its header with that module's shapes."""
    target = backbone if weights == "backbone" else backbone.export_source(weights).get("model")
    if target is None:
        raise ModelLoadError(
            f"{where}: the weights are {weights}-native, but the rebuilt {type(backbone).__name__} gives no {weights} "
            "module (export_source); install the plugin version the folder was written with."
        )
    header = read_weights_header(path)
    expected = {k: tuple(v.shape) for k, v in target.state_dict().items()}
    pooler = sorted(k for k in set(expected) - set(header) if k.split(".")[0] == "pooler")
    if pooler and getattr(backbone, "pooling", None) == "pooler":
        raise ConfigError(
            f"{where} holds no pooler weights ({', '.join(pooler[:2])}): pre-training (MLM) trains the encoder without "
            "BERT's pooler layer, so there is none to pool with. Use backbone_kwargs: {pooling: cls} or {pooling: mean}."
        )
    mismatch = shape_mismatch(expected, {k: shape for k, (_, shape) in header.items()}, "hubtl_backbone.json")
    # safetensors leaves out tensors that share memory with another (tied weights); load_weights fills them in
    if mismatch and not set(header) <= set(expected):
        raise ModelLoadError(f"{where}: {WEIGHTS_NAME} does not match hubtl_backbone.json ({mismatch}). Run hubtl pretrain or download it again.")
    load_weights(target, path, built_by="hubtl_backbone.json")
