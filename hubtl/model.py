"""TransferModel: a backbone plus a task head, saved and loaded in hubtl's directory format."""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .backbones.base import Backbone, Preprocessor, in_given_order, inference_layout, length_order
from .backbones.registry import backbone_from_spec, create_backbone, get_plugin
from .errors import ConfigError, ConfigFileError, HubtlError, InvalidInputError, ModelLoadError, PluginError
from .heads import Head, HeadConfig
from .layout import (
    BACKBONE_DIR,
    CONFIG_NAME,
    FORMAT_VERSION,
    LOAD_PATTERNS,
    MODEL_FILES,
    WEIGHTS_NAME,
    check_backbone_files,
    load_weights,
    read_config,
    built_within,
    check_links,
    read_weights_header,
    shape_mismatch,
    save_weights,
)
from .tasks import get_task
from .version import __version__

if TYPE_CHECKING:
    from .export import ExportResult

logger = logging.getLogger("hubtl")


class TransferModel(nn.Module):
    """A pretrained backbone adapted to a task: `from_backbone`, `save_pretrained`, `from_pretrained`, `predict`."""

    def __init__(
        self,
        backbone: Backbone,
        head: Head,
        labels: Sequence[str] | None = None,
        threshold: float = 0.5,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.task = head.config.task
        self.labels = list(labels) if labels is not None else None
        self.threshold = threshold
        if get_task(self.task).uses_labels and (self.labels is None or len(self.labels) != head.config.num_outputs):
            raise ConfigError(f"A {self.task} model needs one label name per output ({head.config.num_outputs}).")

    @classmethod
    def from_backbone(
        cls,
        backbone: str | Backbone,
        labels: Sequence[str] | None = None,
        task: str = "classification",
        pretrained: bool = True,
        num_outputs: int | None = None,
        dropout: float = 0.0,
        hidden_dim: int | None = None,
        **backbone_kwargs: Any,
    ) -> TransferModel:
        """Wrap a registered backbone ('timm:resnet18', 'transformers:bert-base-uncased') with a new head."""
        task_type = get_task(task)
        num_outputs = task_type.num_outputs(list(labels) if labels else None, num_outputs)
        labels = labels if task_type.uses_labels else None
        if isinstance(backbone, str):
            backbone = create_backbone(backbone, pretrained=pretrained, **backbone_kwargs)
        head = Head(HeadConfig(task, backbone.feature_dim, num_outputs, dropout=dropout, hidden_dim=hidden_dim))
        return cls(backbone, head, labels=[str(label) for label in labels] if labels else None)

    # ------------------------------------------------------------------ inference

    @property
    def id2label(self) -> dict[int, str]:
        """Output index to label name (empty for regression)."""
        return dict(enumerate(self.labels or []))

    @property
    def label2id(self) -> dict[str, int]:
        """Label name to output index (empty for regression)."""
        return {label: i for i, label in enumerate(self.labels or [])}

    def preprocessor(self, train: bool = False) -> Preprocessor:
        """The backbone's preprocessor (training augmentation or deterministic evaluation)."""
        return self.backbone.preprocessor(train=train)

    def forward(self, batch: dict[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Logits for a preprocessed batch: the preprocessor's dict, or an image tensor [B, C, H, W] as timm takes it."""
        if isinstance(batch, torch.Tensor):
            if self.backbone.modality != "image" or batch.ndim != 4:
                raise InvalidInputError(
                    f"The model takes the batch dict its preprocessor makes (model.preprocessor()(inputs)), not a "
                    f"{batch.ndim}-d tensor; or call model.predict / model.logits on raw inputs."
                )
            batch = {"pixel_values": batch}
        return self.head(self.backbone(batch))

    @torch.inference_mode()
    def embed(self, inputs: Any, batch_size: int = 32) -> torch.Tensor:
        """Pooled backbone features of raw inputs (PIL images, image paths or strings)."""
        return self._run(inputs, batch_size, self.backbone)

    @torch.inference_mode()
    def logits(self, inputs: Any, batch_size: int = 32) -> torch.Tensor:
        """Raw head outputs for raw inputs."""
        return self._run(inputs, batch_size, self)

    def predict(self, inputs: Any, batch_size: int = 32, top_k: int | None = None) -> list[Any]:
        """Predictions for raw inputs: label and score (classification), labels (multi-label) or value.

        With `top_k`, each input's prediction is instead its k best labels as `{label, score}` dicts, best first
        (as transformers' `pipeline(..., top_k=k)`; fewer when the model has fewer labels).
        """
        task = get_task(self.task)
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise InvalidInputError(f"top_k must be a positive whole number, not {top_k!r}.")
        scores = task.scores(self.logits(inputs, batch_size)).tolist()
        if top_k is not None:
            return [task.top(row, self.labels, top_k) for row in scores]
        return [task.decode(row, self.labels, self.threshold) for row in scores]

    def _run(self, inputs: Any, batch_size: int, module: nn.Module) -> torch.Tensor:
        """Preprocess raw inputs in batches and run `module` on them in eval mode."""
        examples = _as_list(inputs)
        _warn_if_mismatched(examples, self.backbone.modality)
        preprocess = self.preprocessor(train=False)
        weights = next(self.parameters())
        device, dtype = weights.device, weights.dtype
        was_training = self.training
        self.eval()
        # texts of similar length batched together pad less (one batch is left as given)
        order = length_order(preprocess, examples) if len(examples) > batch_size else None
        ordered = examples if order is None else [examples[i] for i in order]
        try:
            outputs = []
            with inference_layout(self.backbone, device) as layout:
                for start in range(0, len(ordered), batch_size):
                    batch = preprocess(ordered[start : start + batch_size])
                    inputs = {k: layout(v.to(device, dtype if v.is_floating_point() else None)) for k, v in batch.items()}
                    outputs.append(module(inputs).float().cpu())
        finally:
            self.train(was_training)
        return in_given_order(torch.cat(outputs), order)

    # ------------------------------------------------------------------ saving

    def config(self) -> dict[str, Any]:
        """The JSON content of config.json: enough to rebuild the model with no download."""
        spec = dict(self.backbone.spec())
        plugin = get_plugin(spec["plugin"])
        spec.setdefault("package", plugin.package or None)
        spec.setdefault("spec_version", plugin.spec_version)
        return {
            "library_name": "hubtl",
            "hubtl_version": __version__,
            "format_version": FORMAT_VERSION,
            "task": self.task,
            "modality": self.backbone.modality,
            "backbone": spec,
            "head": self.head.config.to_dict(),
            "id2label": {str(i): label for i, label in self.id2label.items()},
            "label2id": self.label2id,
            "threshold": self.threshold,
            "preprocessing": self.preprocessor(train=False).config(),
        }

    def save_pretrained(self, save_directory: str | os.PathLike, state_dict: dict[str, Any] | None = None) -> Path:
        """Write config.json, model.safetensors and backbone/ files atomically; other files there are kept.

        `state_dict` replaces the module's own tensors (as in transformers), e.g. the full weights FSDP gathered.
        """
        target = Path(save_directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            config = self.config()
            self.backbone.save_files(staging / BACKBONE_DIR)
            # with the state dict's per-module versions, which some modules' loading code needs
            save_weights(self, staging / WEIGHTS_NAME, metadata={"format": "pt", "library": "hubtl"}, state_dict=state_dict)
            (staging / CONFIG_NAME).write_text(_config_json(config) + "\n")
            _move_into(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def push_to_hub(
        self,
        repo_id: str,
        private: bool = False,
        revision: str | None = None,
        commit_message: str | None = None,
        token: str | None = None,
    ) -> str:
        """Save this model with a generated model card and upload it to a Hub repo; return the commit URL."""
        from .hub.push import push_model

        return push_model(
            self, repo_id, private=private, revision=revision, commit_message=commit_message, token=token
        )

    def export(self, format: str, directory: str | os.PathLike, **options: Any) -> ExportResult:
        """Write this model for plain timm, plain transformers or ONNX Runtime ('timm', 'transformers', 'onnx'), verified.

        Refused with an ExportError (nothing written) where the format cannot compute exactly what this model does.
        Options: overwrite, push_to_hub, token, private; for 'onnx' also quantize='dynamic', eval_file, opset.
        """
        from .export import export_model

        return export_model(self, format, directory, **options)

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        model_id: str | os.PathLike,
        revision: str | None = None,
        token: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> TransferModel:
        """Load a saved model from a directory or a Hub repo ID; never runs code from it and never unpickles.

        `device` and `dtype` ('float16', 'bfloat16', or a torch dtype) place and cast it, as in transformers;
        `predict` then feeds it inputs of that dtype and returns float32 scores.
        """
        from .hub import resolve_model_dir

        cast = _float_dtype(dtype)

        directory = resolve_model_dir(
            model_id,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            allow_patterns=LOAD_PATTERNS,
        )
        local = Path(model_id).expanduser().is_dir()
        where = str(directory) if local else str(model_id)
        # Hub snapshots are links into the repo's blob store, two levels up.
        root = directory if local else directory.parent.parent
        check_links(directory, (CONFIG_NAME, WEIGHTS_NAME), root)
        config = read_config(directory, where)
        check_backbone_files(directory / BACKBONE_DIR, root=root)
        header = read_weights_header(directory / WEIGHTS_NAME)
        _check_head(config, header, where)
        _check_architecture(cls, config, directory / BACKBONE_DIR, header, where)
        with built_within(header, where):  # also for plugins that cannot build on the meta device
            model = _build(cls, config, directory / BACKBONE_DIR, where)
        _load_weights(model, directory / WEIGHTS_NAME)
        model.eval()
        return model.to(device=device, dtype=cast) if device is not None or cast is not None else model

    @classmethod
    def from_config(cls, config: dict[str, Any], files_dir: Path | None = None) -> TransferModel:
        """Build the architecture described by a config.json dict, with untrained weights."""
        backbone = backbone_from_spec(config["backbone"], files_dir)
        try:
            head = Head(HeadConfig(**config["head"]))
        except (KeyError, TypeError) as err:
            raise ConfigError(f"The head section of config.json is missing or invalid: {err!r}.") from err
        if head.config.in_features != backbone.feature_dim:
            raise ConfigError(
                f"The head section of config.json takes {head.config.in_features} features but the backbone gives "
                f"{backbone.feature_dim}; the model directory is damaged or was tampered with."
            )
        id2label = config.get("id2label") or {}
        try:
            labels = [id2label[str(i)] for i in range(len(id2label))] if id2label else None
        except (KeyError, TypeError) as err:
            raise ConfigError(f"id2label in config.json must map '0'..'{len(id2label) - 1}' to label names: {err!r}.") from err
        return cls(backbone, head, labels=labels, threshold=config.get("threshold", 0.5))


def _check_head(config: dict[str, Any], header: dict[str, tuple[str, tuple[int, ...]]], where: str) -> None:
    """Compare the head config.json describes with the weights file before building anything."""
    head = config["head"]
    widths = [head["in_features"], *([head["hidden_dim"]] if head.get("hidden_dim") else []), head["num_outputs"]]
    expected = {}
    for index, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
        layer = 1 + 3 * index  # Dropout, Linear[, activation, Dropout, Linear]
        expected[f"head.layers.{layer}.weight"] = (fan_out, fan_in)
        expected[f"head.layers.{layer}.bias"] = (fan_out,)
    found = {k: shape for k, (_, shape) in header.items() if k.startswith("head.")}
    if found != expected:
        hidden = f"{head['hidden_dim']} -> " if head.get("hidden_dim") else ""
        raise ModelLoadError(
            f"{where}: {WEIGHTS_NAME} does not match config.json (size mismatch in the head: config.json describes "
            f"{head['in_features']} -> {hidden}{head['num_outputs']}, which needs {_shapes(expected)}; the file holds "
            f"{_shapes(found)}). Save or download the model again."
        )


def _check_architecture(
    cls: type[TransferModel], config: dict[str, Any], files_dir: Path, header: dict[str, Any], where: str
) -> None:
    """Build the model on the meta device (no memory) and compare every weight's shape with the file's header."""
    try:
        with torch.device("meta"), built_within(header, where):
            skeleton = _build(cls, config, files_dir, where)
    except HubtlError:
        raise
    except Exception as err:  # a plugin that cannot build on meta: the strict load still checks every shape
        logger.debug("Could not build %s on the meta device (%s); shapes are checked while loading.", where, err)
        return
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    mismatch = shape_mismatch(expected, {k: shape for k, (_, shape) in header.items()}, "config.json")
    if mismatch:
        raise ModelLoadError(
            f"{where}: {WEIGHTS_NAME} does not match config.json ({mismatch}). Save or download the model again."
        )


def _build(cls: type[TransferModel], config: dict[str, Any], files_dir: Path, where: str) -> TransferModel:
    """`from_config`, with a bad value in the saved config reported as a ConfigFileError naming the model."""
    try:
        return cls.from_config(config, files_dir)
    except ConfigError as err:
        if isinstance(err, ModelLoadError):
            raise
        raise ConfigFileError(f"{where}: config.json does not describe a model this hubtl can build: {err}") from err


def _shapes(shapes: dict[str, tuple[int, ...]]) -> str:
    """'name [a, b], ...' for an error message."""
    return ", ".join(f"{k} {list(v)}" for k, v in sorted(shapes.items())) or "no head weights"


def _load_weights(model: nn.Module, path: Path) -> None:
    """Load model.safetensors strictly with its state-dict versions; each kind of failure its own ModelLoadError."""
    load_weights(model, path, built_by="config.json")


def _move_into(staging: Path, target: Path) -> None:
    """Move staged files into `target`, replacing same-named entries; config.json last, as the completion mark."""
    if not target.exists():
        os.replace(staging, target)
        return
    # Without config.json the directory is not a model: a crash mid-way leaves nothing loadable behind.
    (target / CONFIG_NAME).unlink(missing_ok=True)
    # Model files of the previous model that the new one lacks (e.g. backbone/ of a text model) must not linger.
    for name in MODEL_FILES:
        stale = target / name
        if name != CONFIG_NAME and not (staging / name).exists() and stale.exists():
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    for entry in sorted(staging.iterdir(), key=lambda p: p.name == CONFIG_NAME):
        dest = target / entry.name
        if entry.is_dir():
            old = target / f".{entry.name}.old-{uuid.uuid4().hex[:8]}"
            if dest.exists():
                os.replace(dest, old)
            os.replace(entry, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(entry, dest)


def _warn_if_mismatched(examples: list[Any], modality: str) -> None:
    """Warn when a text model is given only paths of existing files (it would classify the path strings)."""
    if modality == "text" and all(isinstance(x, (str, os.PathLike)) and os.path.isfile(x) for x in examples):
        logger.warning(
            "All %d inputs are paths of existing files, but this is a text model: it classifies the path strings "
            "themselves, not the files' content. Pass the texts (e.g. Path(f).read_text()), or use an image model.",
            len(examples),
        )


def _config_json(config: dict[str, Any]) -> str:
    """config.json's text; a backbone spec() that JSON cannot hold is the plugin's error, said as such."""
    try:
        return json.dumps(config, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        plugin = config.get("backbone", {}).get("plugin")
        raise PluginError(
            f"The backbone plugin {plugin!r} gave a spec() or preprocessing config() that config.json cannot hold "
            f"({type(err).__name__}: {err}): keep to JSON values with string keys. `hubtl backbones check` names the "
            "offending entry."
        ) from err


def _float_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """A floating dtype given by name ('bfloat16', 'torch.float16') or as itself; None leaves the weights as saved."""
    if dtype is None or isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    found = getattr(torch, str(dtype).removeprefix("torch."), None) if isinstance(dtype, str) else None
    if not isinstance(found, torch.dtype) or not found.is_floating_point:
        raise InvalidInputError(f"dtype must be a floating dtype such as 'float16', 'bfloat16' or 'float32', not {dtype!r}.")
    return found


def _as_list(inputs: Any) -> list[Any]:
    """Accept one raw input or a sequence of them; refuse an empty list."""
    if isinstance(inputs, (str, bytes, os.PathLike)) or not isinstance(inputs, Sequence):
        inputs = [inputs]
    examples = list(inputs)
    if not examples:
        raise InvalidInputError("No inputs given; pass at least one image or string.")
    return examples
