"""The built-in `timm` plugin: any timm image model as a pooled-feature backbone."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from ..errors import BackboneNotFoundError, ConfigError, InvalidInputError, ModelLoadError
from ..images import load_image
from .base import Backbone, BackbonePlugin, Preprocessor
from .registry import suggest

DATA_CONFIG_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos", "random")
CROP_MODES = ("center", "squash", "border")
#: Evaluation decodes JPEGs at reduced scale while both sides stay this many times the resize target (see decode_size).
JPEG_DRAFT_GAP = 3
#: Largest image side a data config may ask for (a saved config is a stranger's: bound what it makes us allocate).
MAX_IMAGE_SIZE = 8192
#: timm architecture hyperparameters a saved spec may carry; keys that make timm open files or fetch configs
#: (checkpoint_path, pretrained_cfg, pretrained_cfg_overlay, cache_dir, ...) are never among them.
SPEC_KWARGS = frozenset(
    """drop_rate drop_path_rate drop_block_rate proj_drop_rate attn_drop_rate pos_drop_rate patch_drop_rate
    global_pool in_chans img_size patch_size embed_dim depth depths dims num_heads mlp_ratio qkv_bias qk_norm
    class_token reg_tokens no_embed_class dynamic_img_size dynamic_img_pad window_size output_stride act_layer
    norm_layer layer_scale_init_value init_values zero_init_last stem_type stem_width channel_multiplier
    depth_multiplier fix_stem use_fused_attn""".split()
)


class ImagePreprocessor(Preprocessor):
    """Decodes images (see `hubtl.load_image`) and applies timm's transforms for a data config.

    Public so that image plugins reuse it with their own data config (input size, mean/std, crop).
    """

    def __init__(self, data_config: dict[str, Any], train: bool = False) -> None:
        self.data_config = check_data_config(data_config)
        self.train = train
        self.deterministic = not train
        self._transform = None  # built lazily: keeps the object small to pickle into DataLoader workers

    @property
    def transform(self) -> Any:
        """The torchvision transform timm builds for this data config."""
        if self._transform is None:
            self._transform = timm.data.create_transform(**self.data_config, is_training=self.train)
        return self._transform

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_transform": None}

    def __call__(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        if len(examples) == 0:
            raise InvalidInputError("No images given; pass at least one PIL image or image path.")
        size = None if self.train else self.decode_size()
        return {"pixel_values": torch.stack([self.transform(load_image(x, min_size=size)) for x in examples])}

    def decode_size(self) -> int:
        """The smallest side a JPEG file is decoded at: JPEG_DRAFT_GAP times the side the eval transform resizes to.

        The resize then still averages several decoded pixels into each output pixel, so the result is practically
        that of a full decode (Pillow's guidance for its `reducing_gap`); random crops (training) decode in full.
        """
        _, height, width = self.data_config.get("input_size", (3, 224, 224))
        crop_pct = self.data_config.get("crop_pct") or timm.data.DEFAULT_CROP_PCT
        return JPEG_DRAFT_GAP * max(math.floor(height / crop_pct), math.floor(width / crop_pct))

    def config(self) -> dict[str, Any]:
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()}
        return {"type": "image", **data, "jpeg_draft_gap": JPEG_DRAFT_GAP}


def check_data_config(data_config: Any) -> dict[str, Any]:
    """Type-check an image data config (it may come from a saved config.json) and keep the keys timm uses."""
    if not isinstance(data_config, dict):
        raise ConfigError(f"data_config must be a mapping of {', '.join(DATA_CONFIG_KEYS)}; got {data_config!r}.")
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in data_config.items() if k in DATA_CONFIG_KEYS}

    def numbers(value: Any, count: int) -> bool:
        return (
            isinstance(value, tuple)
            and len(value) == count
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
        )

    problems = []
    size = config.get("input_size")
    if size is not None and not (
        numbers(size, 3) and all(isinstance(x, int) and 1 <= x <= MAX_IMAGE_SIZE for x in size) and size[0] <= 16
    ):
        problems.append(f"input_size must be [channels, height, width] of ints up to {MAX_IMAGE_SIZE}, got {size!r}")
    channels = size[0] if size is not None and not problems else None
    for key in ("mean", "std"):
        value = config.get(key)
        if value is not None and not (numbers(value, len(value) if channels is None else channels) and len(value) <= 16):
            problems.append(f"{key} must be a list of one number per channel, got {value!r}")
    if config.get("std") is not None and not problems and any(x <= 0 for x in config["std"]):
        problems.append(f"std must be positive, got {config['std']!r}")
    crop = config.get("crop_pct")
    if crop is not None and not (isinstance(crop, (int, float)) and not isinstance(crop, bool) and 0 < crop <= 1.0):
        problems.append(f"crop_pct must be a number in (0, 1], got {crop!r}")
    elif crop is not None and not problems:  # timm resizes to side / crop_pct before cropping: bound that too
        side = max(size[1:]) if size is not None else 224
        if math.floor(side / crop) > MAX_IMAGE_SIZE:
            problems.append(
                f"crop_pct {crop!r} resizes images to {math.floor(side / crop)} px before cropping, above "
                f"{MAX_IMAGE_SIZE}; use a crop_pct of at least {side / MAX_IMAGE_SIZE:.3g}"
            )
    for key, choices in (("interpolation", INTERPOLATIONS), ("crop_mode", CROP_MODES)):
        if config.get(key) is not None and config[key] not in choices:
            problems.append(f"{key} must be one of {', '.join(choices)}, got {config[key]!r}")
    if problems:
        raise ConfigError(f"Invalid image data config: {'; '.join(problems)}.")
    return config


class TimmBackbone(Backbone):
    """A timm model created with `num_classes=0`, so its forward returns pooled features."""

    modality = "image"
    export_formats = ("onnx", "timm")
    has_feature_map = True

    def __init__(self, model: nn.Module, model_name: str, kwargs: dict[str, Any], data_config: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.model_name = model_name
        self.kwargs = kwargs
        self.data_config = {k: data_config[k] for k in DATA_CONFIG_KEYS if k in data_config}
        self.feature_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch["pixel_values"])

    def forward_feature_map(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """timm's `forward_features`: a CNN's last map as it is, a vision transformer's patch tokens laid out on their grid."""
        features = self.model.forward_features(batch["pixel_values"])
        if features.ndim == 4:
            return features
        grid = getattr(getattr(self.model, "patch_embed", None), "grid_size", None)
        if features.ndim == 3 and grid is not None:
            tokens = features[:, getattr(self.model, "num_prefix_tokens", 0) :]
            height, width = tokens.shape[1] // grid[1], grid[1]
            if height * width == tokens.shape[1]:
                return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], height, width)
        raise ConfigError(
            f"timm model {self.model_name!r} gives features of shape {tuple(features.shape)}, not a spatial map: "
            "objective masked_autoencoder cannot use it. Use objective: denoising_autoencoder."
        )

    def preprocessor(self, train: bool = False) -> ImagePreprocessor:
        return ImagePreprocessor(self.data_config, train=train)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """timm's coarse parameter groups (stem, each stage, final norm), input to output."""
        params = dict(self.model.named_parameters())
        if hasattr(self.model, "group_matcher"):
            groups = timm.models.group_parameters(self.model, self.model.group_matcher(coarse=True))
            return [[params[n] for n in groups[key]] for key in sorted(groups) if groups[key]]
        return [list(child.parameters()) for child in self.model.children() if any(True for _ in child.parameters())]

    def export_source(self, format: str) -> dict[str, Any]:
        """For 'timm': the timm model (no classifier), its architecture name and the create_model kwargs it was built with."""
        if format != "timm":
            return {}
        return {"model": self.model, "architecture": self.model_name, "model_args": dict(self.kwargs)}

    def spec(self) -> dict[str, Any]:
        return {
            "plugin": "timm",
            "name": self.model_name,
            "kwargs": self.kwargs,
            "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()},
        }


class TimmPlugin(BackbonePlugin):
    """Adapts every `timm` model to the transfer interface."""

    name = "timm"
    modality = "image"
    package = "hubtl"
    spec_kwargs = SPEC_KWARGS

    def create(
        self,
        model_name: str,
        pretrained: bool = True,
        checkpoint_path: str | None = None,
        image_size: int | None = None,
        **kwargs: Any,
    ) -> TimmBackbone:
        """Create `model_name`; weights from timm's Hub (`pretrained`) or a local `checkpoint_path`."""
        _check_jsonable(kwargs, model_name)
        unknown = sorted(set(kwargs) - SPEC_KWARGS)
        if unknown:
            raise ConfigError(
                f"timm model {model_name!r} rejected backbone_kwargs {dict((k, kwargs[k]) for k in unknown)}: hubtl "
                f"saves backbone_kwargs in config.json and only loads architecture options back ({', '.join(sorted(SPEC_KWARGS))})."
                " For weights on disk use checkpoint_path."
            )
        model = self._create_model(model_name, pretrained=pretrained and checkpoint_path is None, **kwargs)
        if checkpoint_path is not None:
            _load_checkpoint(model, checkpoint_path)
        data_config = timm.data.resolve_model_data_config(model)
        if image_size is not None:
            data_config["input_size"] = (3, int(image_size), int(image_size))
        backbone = TimmBackbone(model, model_name, kwargs, data_config)
        if pretrained and checkpoint_path is None:  # timm's weights live on the Hub under this ID
            backbone.base_model = (getattr(model, "pretrained_cfg", None) or {}).get("hf_hub_id") or None
        return backbone

    def from_spec(self, spec: dict[str, Any], files_dir: Path | None) -> TimmBackbone:
        name, data_config = spec["name"], spec.get("data_config")
        if not isinstance(name, str) or ":" in name or "/" in name:
            # 'hf-hub:org/repo' or 'local-dir:/path' would make timm fetch or read a config from elsewhere.
            raise ModelLoadError(
                f"The saved timm model name {name!r} is not a plain timm architecture name (a prefix such as hf-hub: or "
                "local-dir: would make timm read a config from elsewhere); the config.json was tampered with. Save or "
                "download the model again."
            )
        checked = check_data_config(data_config) if data_config else None
        model = self._create_model(name, pretrained=False, **spec.get("kwargs", {}))
        return TimmBackbone(model, name, dict(spec.get("kwargs", {})), checked or timm.data.resolve_model_data_config(model))

    def list_models(self, pattern: str | None = None) -> list[str]:
        return timm.list_models(pattern or "*")

    def check_name(self, model_name: str) -> None:
        """Unknown timm architectures are refused with close matches."""
        if not timm.is_model(model_name):
            raise suggest(model_name, timm.list_models(), "timm model", "See `hubtl backbones list 'timm:*'`.")

    def _create_model(self, model_name: str, pretrained: bool, **kwargs: Any) -> nn.Module:
        """timm.create_model with errors that say what to do."""
        if not timm.is_model(model_name):
            raise suggest(model_name, timm.list_models(), "timm model", "See `hubtl backbones list 'timm:*'`.")
        from ..hub.client import hub_reachable, offline

        # Out of reach, the Hub client would retry for a minute: read the cache only, or fail at once.
        cache_only = offline() if pretrained and not hub_reachable() else contextlib.nullcontext()
        try:
            with cache_only:
                return timm.create_model(model_name, pretrained=pretrained, num_classes=0, **kwargs)
        except TypeError as err:
            raise ConfigError(f"timm model {model_name!r} rejected backbone_kwargs {kwargs}: {err}") from err
        except (OSError, RuntimeError, ValueError, KeyError) as err:
            if not pretrained and isinstance(err, (KeyError, ValueError)):  # an option's value timm does not know
                raise ConfigError(
                    f"timm model {model_name!r} cannot be built with backbone_kwargs {kwargs} ({type(err).__name__}: "
                    f"{err}); check the options' values."
                ) from err
            if not pretrained:
                raise
            raise BackboneNotFoundError(
                f"Could not get pretrained weights for timm:{model_name} ({type(err).__name__}: {err}). "
                "Pass pretrained=False, or checkpoint_path='path/to/weights.safetensors' for weights on disk."
            ) from err


def _check_jsonable(kwargs: dict[str, Any], model_name: str) -> None:
    """Backbone kwargs go into config.json, so they must be plain JSON values."""
    try:
        json.dumps(kwargs)
    except TypeError as err:
        raise ConfigError(f"backbone_kwargs for {model_name!r} must be JSON values (numbers, strings, lists): {err}") from err


def _load_checkpoint(model: nn.Module, checkpoint_path: str) -> None:
    """Load backbone weights from a local safetensors or torch file, ignoring the classifier."""
    path = Path(checkpoint_path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint_path {checkpoint_path!r} does not exist; give the path of a weights file.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelLoadError(f"Could not read weights from {checkpoint_path}: {err}") from err
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = model.state_dict()
    kept = {k: v for k, v in state.items() if k in own}
    missing = [k for k in own if k not in kept and not k.endswith("num_batches_tracked")]
    if missing:
        raise ModelLoadError(
            f"{checkpoint_path} lacks {len(missing)} weights of this model (e.g. {missing[:3]}); "
            "is it a checkpoint of the same timm architecture?"
        )
    try:
        model.load_state_dict(kept, strict=False)
    except RuntimeError as err:
        raise ModelLoadError(f"{checkpoint_path} does not fit this timm architecture: {err}") from err
