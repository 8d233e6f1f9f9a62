"""The `sentence_transformers` plugin: a sentence-transformers encoder as a hubtl text backbone."""

from __future__ import annotations

import inspect
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

import hubtl
from hubtl import Backbone, BackbonePlugin, ConfigError, ModelLoadError

from .folder import SentenceTransformerConfig, read_folder, resolve_folder, write_folder
from .pooling import Pooling


class TextPreprocessor(hubtl.TextPreprocessor):
    """hubtl's tokenizing preprocessor, given the model's `max_seq_length` and `do_lower_case`."""


class SentenceTransformerBackbone(Backbone):
    """Transformer -> Pooling (modes from 1_Pooling/config.json) -> optional L2 Normalize."""

    modality = "text"
    lora_module = "model"  # the transformers encoder: strategy lora wraps it with PEFT adapters

    def __init__(self, model: nn.Module, tokenizer: Any, model_name: str, config: SentenceTransformerConfig) -> None:
        super().__init__()
        hidden = int(model.config.hidden_size)
        if config.embedding_dim != hidden:
            raise ConfigError(
                f"The pooling config says token embeddings are {config.embedding_dim} wide, the transformer's are {hidden}."
            )
        # The pooler head (BERT's tanh layer) is unused by sentence-transformers; drop it so every parameter trains.
        if getattr(model, "pooler", None) is not None:
            model.pooler = None
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.config = config
        self.pooling = Pooling(config.pooling_modes)
        self.feature_dim = hidden * len(config.pooling_modes)
        self._model_inputs = set(inspect.signature(model.forward).parameters)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k in self._model_inputs}
        tokens = self.model(**inputs, return_dict=True).last_hidden_state
        features = self.pooling(tokens, batch["attention_mask"])
        return nn.functional.normalize(features, p=2, dim=1) if self.config.normalize else features

    def preprocessor(self, train: bool = False) -> TextPreprocessor:
        return TextPreprocessor(self.tokenizer, int(self.config.max_seq_length), self.config.do_lower_case)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Embeddings (and all before the layer stack), each transformer layer, then the rest."""
        try:
            return hubtl.encoder_layer_groups(self.model)
        except ConfigError:  # no layer stack: one group
            return [list(self.model.parameters())]

    def spec(self) -> dict[str, Any]:
        return {
            "plugin": SentenceTransformersPlugin.name,
            "name": self.model_name,
            "kwargs": {"max_length": int(self.config.max_seq_length)},
            "files": "backbone",
        }

    def save_files(self, directory: Path) -> None:
        """Save a weightless sentence-transformers folder: transformer config, tokenizer, modules.json, pooling config."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.config.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        write_folder(replace(self.config, transformer_dir=directory), directory)


class SentenceTransformersPlugin(BackbonePlugin):
    """sentence-transformers encoders from a local folder or a Hub ID, built with transformers alone."""

    name = "sentence_transformers"
    modality = "text"
    package = "hubtl-sentence-transformers"
    spec_version = 1
    spec_kwargs = frozenset({"max_length"})

    def create(
        self, model_name: str, pretrained: bool = True, max_length: int | None = None, **kwargs: Any
    ) -> SentenceTransformerBackbone:
        """Load `model_name` (folder or Hub ID); random transformer weights when not `pretrained`."""
        if kwargs:
            raise ConfigError(f"sentence_transformers backbones take only max_length; got {sorted(kwargs)}.")
        folder = resolve_folder(model_name, weights=pretrained)
        return _build(folder, model_name, pretrained=pretrained, max_length=max_length)

    def from_spec(self, spec: dict[str, Any], files_dir: Path | None) -> SentenceTransformerBackbone:
        """Rebuild from the weightless folder `save_files` wrote; nothing is downloaded."""
        if files_dir is None or not (Path(files_dir) / "modules.json").is_file():
            raise ModelLoadError(
                f"The sentence-transformers files of backbone {spec.get('name')!r} are missing from {files_dir}; "
                "save or download the whole model directory again."
            )
        max_length = spec.get("kwargs", {}).get("max_length")
        if max_length is not None and not (isinstance(max_length, int) and max_length >= 1):
            raise ConfigError(f"max_length must be a positive int; got {max_length!r}.")
        hubtl.check_transformers_files(files_dir)  # no custom code, no file named outside the folder
        return _build(Path(files_dir), spec["name"], pretrained=False, max_length=max_length)

    def list_models(self, pattern: str | None = None) -> list[str]:
        """sentence-transformers models in the local Hugging Face cache (repos with a modules.json)."""
        import fnmatch

        from huggingface_hub import constants, scan_cache_dir

        try:  # the cache dir is read now, so HF_HOME / HF_HUB_CACHE set after import are honoured
            repos = scan_cache_dir(constants.HF_HUB_CACHE).repos
        except Exception:  # no cache yet
            return []
        names = sorted(
            r.repo_id
            for r in repos
            if r.repo_type == "model" and any(f.file_name == "modules.json" for rev in r.revisions for f in rev.files)
        )
        return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def _build(folder: Path, model_name: str, pretrained: bool, max_length: int | None) -> SentenceTransformerBackbone:
    """Read the folder's modules and build the transformer (weights only when `pretrained`) and tokenizer."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    config = read_folder(folder)
    try:
        model_config = AutoConfig.from_pretrained(config.transformer_dir, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(config.transformer_dir, trust_remote_code=False)
        if pretrained:
            model = AutoModel.from_pretrained(config.transformer_dir, config=model_config, trust_remote_code=False)
        else:
            model = AutoModel.from_config(model_config, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"Could not build the transformer of {model_name!r} from {config.transformer_dir}: {err}. The folder needs "
            "config.json, tokenizer files and (when pretrained) weights."
        ) from err
    limits = [int(max_length or config.max_seq_length or 512), int(getattr(model_config, "max_position_embeddings", 512) or 512)]
    if 0 < getattr(tokenizer, "model_max_length", 0) < 100_000:
        limits.append(int(tokenizer.model_max_length))
    config = replace(config, max_seq_length=min(limits))
    return SentenceTransformerBackbone(model, tokenizer, model_name, config)
