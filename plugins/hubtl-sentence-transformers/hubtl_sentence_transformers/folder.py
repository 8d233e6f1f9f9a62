"""Reading and writing a sentence-transformers model folder: modules.json, the Pooling config, sentence_bert_config.json."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubtl import BackboneNotFoundError, ConfigError, ModelLoadError

from .pooling import POOLING_MODES

#: Legacy boolean keys of 1_Pooling/config.json, by mode.
LEGACY_POOLING_KEYS = {
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "mean": "pooling_mode_mean_tokens",
    "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}
#: Module types this plugin understands (the class name after the last dot in modules.json).
SUPPORTED = ("Transformer", "Pooling", "Normalize")
#: Files fetched from the Hub to build the architecture; weights are added when pretrained.
CONFIG_PATTERNS = ["*.json", "*.txt", "*.model", "tokenizer*", "*/config.json"]
WEIGHT_PATTERNS = ["*.safetensors", "pytorch_model.bin"]


@dataclass
class SentenceTransformerConfig:
    """What the folder says about the pipeline: where the transformer lives, how it pools and normalises."""

    transformer_dir: Path
    pooling_modes: tuple[str, ...]
    embedding_dim: int
    normalize: bool
    max_seq_length: int | None
    do_lower_case: bool


def resolve_folder(name: str, weights: bool) -> Path:
    """A local folder as is; a Hub ID downloaded with huggingface_hub (configs and tokenizer, plus weights if asked)."""
    if os.path.isdir(name):
        return Path(name)
    from huggingface_hub import snapshot_download

    patterns = CONFIG_PATTERNS + (WEIGHT_PATTERNS if weights else [])
    try:
        return Path(snapshot_download(repo_id=name, allow_patterns=patterns))
    except Exception as err:
        raise BackboneNotFoundError(
            f"Could not find the sentence-transformers model {name!r}: it is not a local folder and the Hub download "
            f"failed ({type(err).__name__}: {str(err)[:200]}). Give a folder with modules.json, or a Hub ID reachable "
            "from here (HF_ENDPOINT, HF_TOKEN, or the HF cache with HF_HUB_OFFLINE=1)."
        ) from err


def _read_json(path: Path) -> Any:
    """Parse one JSON file of the folder, with an error naming it."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ModelLoadError(f"{path} is missing; the sentence-transformers folder is incomplete.") from err
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{path} is not valid JSON ({err}).") from err


def read_pooling_config(config: dict[str, Any]) -> tuple[tuple[str, ...], int]:
    """(modes, token embedding width) from 1_Pooling/config.json, in the legacy boolean or the `pooling_mode` format."""
    dim = config.get("word_embedding_dimension", config.get("embedding_dimension"))
    if not isinstance(dim, int):
        raise ConfigError(f"The pooling config {config} has no word_embedding_dimension.")
    mode = config.get("pooling_mode")
    if mode is not None:
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    else:
        modes = tuple(m for m in POOLING_MODES if config.get(LEGACY_POOLING_KEYS[m]))
        modes = modes or ("mean",)
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown:
        raise ConfigError(f"Unsupported pooling mode(s) {unknown}; this plugin supports {', '.join(POOLING_MODES)}.")
    return modes, dim


def read_folder(folder: Path) -> SentenceTransformerConfig:
    """Parse modules.json and the configs it points to; refuse module types this plugin cannot reproduce."""
    folder = Path(folder)
    if not (folder / "modules.json").is_file():
        raise ModelLoadError(
            f"{folder} has no modules.json: it is not a sentence-transformers model. For a plain transformers encoder "
            f"use the backbone 'transformers:{folder}'."
        )
    modules = sorted(_read_json(folder / "modules.json"), key=lambda m: m.get("idx", 0))
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    unsupported = [f"{m.get('type')} ({m.get('path')})" for m, k in zip(modules, kinds) if k not in SUPPORTED]
    if unsupported:
        raise ConfigError(
            f"{folder} uses sentence-transformers modules this plugin does not implement: {', '.join(unsupported)}. "
            f"Supported: {', '.join(SUPPORTED)}."
        )
    if kinds[:2] != ["Transformer", "Pooling"] or kinds[2:] not in ([], ["Normalize"]):
        raise ConfigError(f"{folder}/modules.json lists {kinds}; expected Transformer, Pooling[, Normalize].")
    transformer_dir = _inside(folder, modules[0].get("path", ""))
    modes, dim = read_pooling_config(_read_json(_inside(folder, modules[1].get("path", "")) / "config.json"))
    st_config = {}
    for candidate in (transformer_dir / "sentence_bert_config.json", folder / "sentence_bert_config.json"):
        if candidate.is_file():
            st_config = _read_json(candidate)
            break
    return SentenceTransformerConfig(
        transformer_dir=transformer_dir,
        pooling_modes=modes,
        embedding_dim=dim,
        normalize=kinds[-1] == "Normalize",
        max_seq_length=st_config.get("max_seq_length"),
        do_lower_case=bool(st_config.get("do_lower_case", False)),
    )


def _inside(folder: Path, relative: Any) -> Path:
    """`folder / relative`, refusing module paths that lead outside the folder (a saved model is a stranger's)."""
    if not isinstance(relative, str) or Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise ModelLoadError(f"{folder}/modules.json names the module path {relative!r}, which leads outside the folder.")
    return folder / relative


def write_folder(config: SentenceTransformerConfig, directory: Path) -> None:
    """Write modules.json, 1_Pooling/config.json and sentence_bert_config.json (the transformer sits at the root)."""
    directory = Path(directory)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if config.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (directory / "2_Normalize").mkdir(parents=True, exist_ok=True)
    (directory / "1_Pooling").mkdir(parents=True, exist_ok=True)
    (directory / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    canonical = tuple(m for m in POOLING_MODES if m in config.pooling_modes) == config.pooling_modes
    if canonical:  # the legacy format every sentence-transformers version reads
        pooling: dict[str, Any] = {"word_embedding_dimension": config.embedding_dim}
        pooling.update({key: mode in config.pooling_modes for mode, key in LEGACY_POOLING_KEYS.items()})
    else:
        pooling = {"embedding_dimension": config.embedding_dim, "pooling_mode": list(config.pooling_modes)}
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n")
    st_config = {"max_seq_length": config.max_seq_length, "do_lower_case": config.do_lower_case}
    (directory / "sentence_bert_config.json").write_text(json.dumps(st_config, indent=2) + "\n")
