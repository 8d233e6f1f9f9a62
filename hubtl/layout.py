"""The saved-model and output-folder format: file names, the typed `config.json`, the training record, atomic writes.

Everything that writes or reads a saved model directory (the model, the trainer, cards, push) goes
through this module, so the format has one owner. Reading is a trust boundary: a directory may come
from a stranger's Hub repo, so every field is type-checked and every file name checked before anything
is built from it.

An output directory::

    config.json  model.safetensors  backbone/   the model (what `from_pretrained` reads)
    README.md                                   the generated model card
    training/    config.yaml  metrics.jsonl  eval_results.json  summary.json  *.png
    checkpoints/                                resumable state, never pushed
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import os
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError, ConfigFileError, ModelLoadError
from .version import __version__

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
BACKBONE_DIR = "backbone"
#: Bumped when config.json changes in a way older hubtl cannot read.
FORMAT_VERSION = 1
#: The files that make up a model; everything else in an output dir (training/, README.md) is extra.
MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME, BACKBONE_DIR)
#: What `backbone/` may hold: data files only (configs, vocabularies, tokenizer models); never code or pickles.
BACKBONE_FILE_PATTERNS = ("*.json", "*.txt", "*.model", "*.vocab", "*.tiktoken")
#: The files loading downloads from a Hub repo: nothing else of the repo is ever fetched.
LOAD_PATTERNS = [CONFIG_NAME, WEIGHTS_NAME, *(f"{BACKBONE_DIR}/{p}" for p in BACKBONE_FILE_PATTERNS)]
README_NAME = "README.md"
TRAINING_DIR = "training"
CHECKPOINTS_DIR = "checkpoints"
#: The training record's files, inside TRAINING_DIR.
TRAINING_CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.jsonl"
EVAL_RESULTS_NAME = "eval_results.json"
SUMMARY_NAME = "summary.json"
#: The libraries whose versions a training record keeps.
RECORDED_LIBRARIES = ("hubtl", "torch", "timm", "transformers", "accelerate", "datasets", "huggingface_hub", "peft")
#: A safetensors header larger than this is refused (the safetensors library uses the same bound).
MAX_HEADER_BYTES = 100 * 1024 * 1024

_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


class _Section(BaseModel):
    """Strict JSON types; unknown keys kept (newer hubtl may add some)."""

    model_config = ConfigDict(strict=True, extra="allow")


class SpecSection(_Section):
    """`backbone` in config.json: the plugin's recipe for rebuilding the architecture."""

    plugin: str
    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    spec_version: int = Field(default=1, ge=1)
    package: str | None = None


class HeadSection(_Section):
    """`head` in config.json: the task head's shape."""

    task: str
    in_features: int = Field(ge=1)
    num_outputs: int = Field(ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    hidden_dim: int | None = Field(default=None, ge=1)
    activation: str = "gelu"


class ConfigFile(_Section):
    """The whole config.json of a saved model, type-checked."""

    library_name: str
    hubtl_version: str = "?"
    format_version: int = 1
    task: str
    modality: str | None = None
    backbone: SpecSection
    head: HeadSection
    id2label: dict[str, str] = Field(default_factory=dict)
    label2id: dict[str, int] = Field(default_factory=dict)
    threshold: float = 0.5
    preprocessing: dict[str, Any] = Field(default_factory=dict)


def read_config(directory: str | os.PathLike, name: str | None = None) -> dict[str, Any]:
    """Read and type-check a saved model's config.json; `name` (a Hub ID) replaces the path in messages."""
    path = Path(directory) / CONFIG_NAME
    where = name or str(directory)
    if not path.is_file():
        unfinished = (Path(directory) / CHECKPOINTS_DIR).is_dir()
        raise ModelLoadError(
            f"{where} has no {CONFIG_NAME}: it is not a saved hubtl model. "
            + (f"It holds the checkpoints of a run that did not finish: rerun its `hubtl train` command with --resume "
               f"to finish it (the run's config is in {TRAINING_DIR}/{TRAINING_CONFIG_NAME})." if unfinished else
               "Save one with `model.save_pretrained(dir)` or `hubtl train`.")
        )  # fmt: skip
    config = _load_json(path, f"{where}: {CONFIG_NAME}", "the model directory is damaged")
    if not isinstance(config, dict) or config.get("library_name") != "hubtl" or "backbone" not in config:
        raise ModelLoadError(
            f"{where}: {CONFIG_NAME} is not a hubtl model config (no library_name: hubtl). "
            "Load it with the library that wrote it."
        )
    try:
        checked = ConfigFile.model_validate(config)
    except ValidationError as err:
        section = " head section of" if err.errors()[0]["loc"][:1] == ("head",) else ""
        raise ConfigFileError(
            f"{where}: the{section} {CONFIG_NAME} is missing or invalid: {_describe(err)}. The model directory is "
            "damaged or was tampered with; save or download it again."
        ) from None
    if checked.format_version > FORMAT_VERSION:
        raise ConfigFileError(
            f"{where} was written by hubtl {checked.hubtl_version} (format {checked.format_version}), newer than this "
            f"hubtl {__version__} reads (format {FORMAT_VERSION}). Upgrade: `pip install -U hubtl`."
        )
    return config


#: How deep a saved config may nest values (hubtl's own nest a few levels): deeper ones exhaust recursive readers
MAX_JSON_DEPTH = 32


def _load_json(path: Path, what: str, damaged: str) -> Any:
    """A saved JSON file, or a ModelLoadError when it is not JSON, holds a number too long to read, or nests too deep."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as err:
        reason = "a number too long to read" if "digits" in str(err) else _one_line(err, 120)
        raise ModelLoadError(f"{what} is not valid JSON ({reason}); {damaged}.") from None
    stack, deepest = [(content, 1)], 1
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            raise ModelLoadError(f"{what} nests values more than {MAX_JSON_DEPTH} levels deep; {damaged} or was tampered with.")
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return content


def _describe(err: ValidationError) -> str:
    """The first problem of a validation error as '`key.path` must be ..., got ...'."""
    first = err.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    expected = first["msg"][0].lower() + first["msg"][1:]
    if first["type"] == "missing":
        return f"`{key}` is missing"
    return f"`{key}`: {expected}, got {json.dumps(first.get('input'), default=repr)[:80]}"


def read_weights_header(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Names, dtypes and shapes of the tensors in a safetensors file, checked against its size; no tensor is read."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: the model directory has no weights. Save or download it again.")
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if not 0 < length <= min(size - 8, MAX_HEADER_BYTES):
            raise ModelLoadError(f"{path} is corrupt (not a safetensors file: bad header length). Save or download the model again.")
        try:
            header = json.loads(f.read(length))
        except (ValueError, RecursionError) as err:  # not JSON, or nested or sized to exhaust the parser
            raise ModelLoadError(f"{path} is corrupt (damaged safetensors header: {err}). Save or download the model again.") from err
    if not isinstance(header, dict):
        raise ModelLoadError(f"{path} is corrupt (damaged safetensors header). Save or download the model again.")
    data_bytes = size - 8 - length
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
            valid = (
                dtype in _DTYPE_BYTES
                and all(isinstance(d, int) and d >= 0 for d in shape)
                and isinstance(begin, int)
                and isinstance(end, int)
                and 0 <= begin <= end <= data_bytes
                and end - begin == math.prod(shape) * _DTYPE_BYTES[dtype]
            )
        except (KeyError, TypeError, ValueError):
            valid = False
        if not valid:
            raise ModelLoadError(f"{path} is corrupt (tensor {key!r} has a damaged header entry). Save or download the model again.")
        tensors[key] = (dtype, shape)
    return tensors


def check_links(directory: str | os.PathLike, names: tuple[str, ...], root: str | os.PathLike | None = None) -> None:
    """Refuse model files `names` in `directory` that link outside `root` (default: the directory), before any is read.

    A cloned repo keeps its symbolic links: a config.json linking to another file would be read as the model's.
    """
    directory = Path(directory)
    bounds = Path(root or directory).resolve()
    for name in names:
        path = directory / name
        if path.is_symlink() and not path.resolve().is_relative_to(bounds):
            raise ModelLoadError(f"{directory}: {name} links outside the model directory; a model's files must lie inside it.")


def check_backbone_files(directory: str | os.PathLike, root: str | os.PathLike | None = None) -> None:
    """Refuse a `backbone/` folder holding anything but data files, or links that lead outside `root`."""
    directory = Path(directory)
    if not directory.exists():
        return
    bounds = Path(root or directory.parent).resolve()
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        if path.is_symlink() or path.is_file():
            if not any(fnmatch.fnmatch(path.name, p) for p in BACKBONE_FILE_PATTERNS):
                raise ModelLoadError(
                    f"{BACKBONE_DIR}/{relative} is not a data file ({', '.join(BACKBONE_FILE_PATTERNS)}); hubtl never "
                    "loads code or pickles from a model. Remove it, or save the model again with hubtl."
                )
            if not path.resolve().is_relative_to(bounds):
                raise ModelLoadError(
                    f"{BACKBONE_DIR}/{relative} links outside the model directory; a model's files must lie inside it."
                )


# --------------------------------------------------------------------------- a pre-trained backbone folder

#: `hubtl pretrain`'s output is a backbone folder: the backbone's native files (a transformers or timm folder: its
#: config.json, model.safetensors, tokenizer files), `backbone/` (the files `from_spec` reads, as in a model folder)
#: and this file, hubtl's record of the backbone (spec, which module the weights belong to, the pre-training).
BACKBONE_CONFIG_NAME = "hubtl_backbone.json"
#: The files loading a pre-trained backbone downloads from a Hub repo: nothing else of the repo is ever fetched.
PRETRAINED_LOAD_PATTERNS = [BACKBONE_CONFIG_NAME, WEIGHTS_NAME, *(f"{BACKBONE_DIR}/{p}" for p in BACKBONE_FILE_PATTERNS)]
#: `weights` values of hubtl_backbone.json: the whole Backbone module's state dict, or a native one (an export format)
BACKBONE_WEIGHTS = ("backbone", "transformers", "timm")


class BackboneConfigFile(_Section):
    """The whole hubtl_backbone.json of a pre-trained backbone folder, type-checked."""

    library_name: str
    kind: str
    hubtl_version: str = "?"
    format_version: int = 1
    modality: str
    feature_dim: int = Field(ge=1)
    backbone: SpecSection
    weights: str
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    pretraining: dict[str, Any] = Field(default_factory=dict)


def read_backbone_config(directory: str | os.PathLike, name: str | None = None) -> dict[str, Any]:
    """Read and type-check a pre-trained backbone folder's hubtl_backbone.json; `name` replaces the path in messages."""
    path = Path(directory) / BACKBONE_CONFIG_NAME
    where = name or str(directory)
    if not path.is_file():
        hint = " (it is a fine-tuned model: load it with TransferModel.from_pretrained)" if (Path(directory) / CONFIG_NAME).is_file() and is_hubtl_model(Path(directory)) else ""
        raise ModelLoadError(
            f"{where} has no {BACKBONE_CONFIG_NAME}: it is not a pre-trained hubtl backbone{hint}. Write one with "
            "`hubtl pretrain CONFIG.yaml`."
        )
    config = _load_json(path, f"{where}: {BACKBONE_CONFIG_NAME}", "the folder is damaged")
    try:
        checked = BackboneConfigFile.model_validate(config)
    except ValidationError as err:
        raise ConfigFileError(
            f"{where}: {BACKBONE_CONFIG_NAME} is missing or invalid: {_describe(err)}. The folder is damaged or was "
            "tampered with; run hubtl pretrain or download it again."
        ) from None
    if checked.library_name != "hubtl" or checked.kind != "backbone" or checked.weights not in BACKBONE_WEIGHTS:
        raise ConfigFileError(
            f"{where}: {BACKBONE_CONFIG_NAME} is not a hubtl backbone record (library_name hubtl, kind backbone, "
            f"weights one of {', '.join(BACKBONE_WEIGHTS)}); run hubtl pretrain or download it again."
        )
    if checked.format_version > FORMAT_VERSION:
        raise ConfigFileError(
            f"{where} was written by hubtl {checked.hubtl_version} (format {checked.format_version}), newer than this "
            f"hubtl {__version__} reads (format {FORMAT_VERSION}). Upgrade: `pip install -U hubtl`."
        )
    return config


def is_hubtl_model(directory: Path) -> bool:
    """True when a folder's config.json is a hubtl model's."""
    try:
        return json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8")).get("library_name") == "hubtl"
    except (OSError, ValueError, AttributeError):
        return False


# --------------------------------------------------------------------------- the weights file

#: The safetensors metadata key holding the state dict's per-module versions (`state_dict()._metadata`) as JSON.
#: Some modules' `_load_from_state_dict` need them (torchvision's MNASNet refuses weights without a version).
STATE_DICT_VERSIONS_KEY = "hubtl_state_dict_versions"
#: Bounds on that JSON when reading a file that may be a stranger's: characters, modules, name length, version.
MAX_VERSIONS_CHARS = 16 * 1024 * 1024
MAX_VERSIONS_MODULES = 1_000_000
MAX_MODULE_NAME_CHARS = 4096
MAX_MODULE_VERSION = 2**31 - 1


def state_dict_versions(state_dict: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """The `{module name: {"version": int}}` map a state dict carries in `_metadata` (other keys dropped)."""
    metadata = getattr(state_dict, "_metadata", None) or {}
    return {
        name: {"version": entry["version"]}
        for name, entry in metadata.items()
        if isinstance(name, str) and isinstance(entry, Mapping) and type(entry.get("version")) is int
    }


def parse_state_dict_versions(text: Any, where: str) -> OrderedDict[str, dict[str, int]]:
    """Type-check and bound the versions JSON of a weights file (a trust boundary: JSON only, never a pickle)."""

    def corrupt(why: str) -> ModelLoadError:
        return ModelLoadError(
            f"{where} is corrupt or was tampered with: the state-dict versions in its metadata {why}. "
            "Save or download the model again."
        )

    if not isinstance(text, str) or len(text) > MAX_VERSIONS_CHARS:
        raise corrupt(f"are over the {MAX_VERSIONS_CHARS:,}-character limit" if isinstance(text, str) else "are not text")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as err:  # ValueError: bad JSON, or an int literal too long to convert
        raise corrupt(f"are not valid JSON ({str(err)[:100]})") from None
    if not isinstance(value, dict):
        raise corrupt(f'are a JSON {type(value).__name__}, not a map of module name to {{"version": int}}')
    if len(value) > MAX_VERSIONS_MODULES:
        raise corrupt(f"name {len(value):,} modules, over the {MAX_VERSIONS_MODULES:,} limit")
    versions: OrderedDict[str, dict[str, int]] = OrderedDict()
    for name, entry in value.items():
        if len(name) > MAX_MODULE_NAME_CHARS:
            raise corrupt(f"name a module of {len(name):,} characters")
        version = entry.get("version") if isinstance(entry, dict) else None
        if not (isinstance(entry, dict) and set(entry) == {"version"} and type(version) is int and 0 <= version <= MAX_MODULE_VERSION):
            raise corrupt(f'give module {name[:80]!r} {json.dumps(entry)[:80]}, not {{"version": <int>}}')
        versions[name] = {"version": version}
    return versions


def save_weights(
    module: Any, path: str | os.PathLike, metadata: dict[str, str] | None = None, state_dict: Mapping[str, Any] | None = None
) -> None:
    """Write a module's weights as safetensors, with its state-dict versions in the file's metadata.

    `state_dict` gives the tensors when the module's own are sharded (FSDP gathers them for the main process);
    names the module ties to one parameter are stored once, as safetensors' `save_model` does.
    """
    from safetensors.torch import save_file, save_model

    versions = json.dumps(state_dict_versions(module.state_dict()), separators=(",", ":"))
    metadata = {**(metadata or {}), STATE_DICT_VERSIONS_KEY: versions}
    if state_dict is None:
        save_model(module, str(path), metadata=metadata)
        return
    seen: set[int] = set()
    tied = set()
    for name, param in module.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            tied.add(name)
        seen.add(id(param))
    save_file({k: v.detach().contiguous() for k, v in state_dict.items() if k not in tied}, str(path), metadata=metadata)


def shape_mismatch(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], built_by: str) -> str | None:
    """How the weights `found` in a file differ from those a model `expected` (names and shapes), or None."""
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    mismatched = [k for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    if not (missing or unexpected or mismatched):
        return None
    details = [
        f"size mismatch for {k}: the file has {list(found[k])}, {built_by} builds {list(expected[k])}" for k in mismatched[:3]
    ]
    if missing:
        details.append(f"{len(missing)} weights missing from the file (e.g. {missing[:3]})")
    if unexpected:
        details.append(f"{len(unexpected)} unexpected weights in the file (e.g. {unexpected[:3]})")
    return "; ".join(details)


@contextlib.contextmanager
def built_within(header: Mapping[str, Any], where: str) -> Iterator[None]:
    """While a model is built for its weights file, refuse more tensors and modules than the file justifies.

    A tampered config (a depth of a million layers) would otherwise build for minutes, and take gigabytes, before
    the shapes could be compared: each parameter, buffer and submodule registered counts, and past twice the file's
    tensors (plus slack for what state dicts leave out) the build stops with a ModelLoadError.
    """
    from torch.nn.modules import module as torch_module

    limit = 2 * len(header) + 1000
    counts = {"tensors": 0, "modules": 0}
    failure = ModelLoadError(
        f"{where}: its config describes a model far larger than its {WEIGHTS_NAME} ({len(header)} tensors), so the "
        "config was tampered with or belongs to other weights. Save or download the model again."
    )

    def counter(kind: str) -> Any:
        def hook(*_: Any) -> None:
            counts[kind] += 1
            if counts[kind] > limit:
                raise failure

        return hook

    handles = [
        torch_module.register_module_parameter_registration_hook(counter("tensors")),
        torch_module.register_module_buffer_registration_hook(counter("tensors")),
        torch_module.register_module_module_registration_hook(counter("modules")),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
    if max(counts.values()) > limit:  # raised in the build, and swallowed by the code that built
        raise failure


def load_weights(module: Any, path: str | os.PathLike, *, device: str = "cpu", built_by: str = "config.json") -> None:
    """Load a safetensors file into `module` strictly, with its state-dict versions; every failure a ModelLoadError.

    The errors tell apart a corrupt file, weights whose names or shapes do not match the model `built_by`
    describes, and a module whose own loading code (`_load_from_state_dict`) refused them (quoting it).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: the model directory has no weights. Save or download it again.")
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            metadata = f.metadata() or {}
            state = OrderedDict((name, f.get_tensor(name)) for name in f.keys())
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ModelLoadError(
            f"{path} is corrupt ({type(err).__name__}: {_one_line(err)}). Save or download the model again."
        ) from err
    has_versions = STATE_DICT_VERSIONS_KEY in metadata
    if has_versions:
        state._metadata = parse_state_dict_versions(metadata[STATE_DICT_VERSIONS_KEY], str(path))  # type: ignore[attr-defined]
    expected = module.state_dict()
    _alias_shared_tensors(state, expected)
    mismatch = shape_mismatch(
        {k: tuple(v.shape) for k, v in expected.items()}, {k: tuple(v.shape) for k, v in state.items()}, built_by
    )
    if mismatch:
        raise ModelLoadError(f"{path} does not match {built_by} ({mismatch}). Save or download the model again.")
    kinds = [k for k, v in expected.items() if v.is_floating_point() != state[k].is_floating_point()]
    if kinds:  # integers copied into float weights (or the reverse) would load as garbage without an error
        k = kinds[0]
        raise ModelLoadError(
            f"{path}: {len(kinds)} weight(s) have another kind of dtype than {built_by} builds (e.g. {k}: the file has "
            f"{state[k].dtype}, the model {expected[k].dtype}). Save or download the model again."
        )
    try:
        module.load_state_dict(state, strict=True)
    except Exception as err:  # a module's own _load_from_state_dict may raise anything
        note = (
            "" if has_versions else
            " The file carries no state-dict versions (an older hubtl wrote it), which such modules need: save it again with this hubtl."
        )
        raise ModelLoadError(
            f"{path}: every weight's name and shape matches, but the model refused them while loading "
            f"({type(err).__name__}: {_one_line(err)}). A module's own loading code (`_load_from_state_dict`) rejected the "
            f"state dict: the file may come from another version of the backbone's library; install the versions it was "
            f"saved with, or save the model again.{note}"
        ) from err


def _alias_shared_tensors(state: dict[str, Any], expected: Mapping[str, Any]) -> None:
    """Fill in names the file left out because they share memory with one it holds (safetensors drops duplicates)."""

    def key(tensor: Any) -> tuple[Any, ...]:
        return (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride())

    live = {name: t for name, t in expected.items() if t.device.type != "meta" and t.numel()}
    held = {}
    for name, tensor in live.items():
        if name in state:
            held.setdefault(key(tensor), name)
    for name, tensor in live.items():
        twin = held.get(key(tensor)) if name not in state else None
        if twin is not None:
            state[name] = state[twin]


def _one_line(err: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, shortened for an error message."""
    return " ".join(str(err).split())[:limit]


# --------------------------------------------------------------------------- the training record


@dataclass
class TrainingRecord:
    """What the trainer writes under training/ and cards read back; each part is empty when its file is absent."""

    config: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    eval_results: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        """True when any part of the record was found."""
        return bool(self.config or self.metrics or self.eval_results or self.summary)

    @classmethod
    def read(cls, output_dir: str | os.PathLike) -> TrainingRecord:
        """Read training/config.yaml, metrics.jsonl, eval_results.json and summary.json, tolerating absent files."""
        import yaml

        folder = Path(output_dir) / TRAINING_DIR
        record = cls()
        path = folder / TRAINING_CONFIG_NAME
        if path.is_file():
            try:
                record.config = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as err:
                raise ConfigError(f"{path} is not valid YAML ({err}); fix or delete it, then render the card again.") from err
        for name, attr in ((EVAL_RESULTS_NAME, "eval_results"), (SUMMARY_NAME, "summary")):
            path = folder / name
            if path.is_file():
                setattr(record, attr, _read_json(path))
        path = folder / METRICS_NAME
        if path.is_file():
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    record.metrics.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ConfigError(f"{path} line {number} is not JSON ({err}); fix or delete that line.") from err
        for attr in ("config", "eval_results", "summary"):
            if not isinstance(getattr(record, attr), dict):
                raise ConfigError(f"training/{attr} of {output_dir} is not a mapping; the training record is damaged.")
        return record

    def files(self) -> dict[str, bytes]:
        """The record as file contents, by path relative to the output directory (only the parts that are set)."""
        import yaml

        out: dict[str, bytes] = {}
        if self.config:
            out[f"{TRAINING_DIR}/{TRAINING_CONFIG_NAME}"] = yaml.safe_dump(self.config, sort_keys=False).encode()
        if self.metrics:
            out[f"{TRAINING_DIR}/{METRICS_NAME}"] = "".join(json.dumps(row) + "\n" for row in self.metrics).encode()
        if self.eval_results:
            out[f"{TRAINING_DIR}/{EVAL_RESULTS_NAME}"] = json.dumps(self.eval_results, indent=2).encode()
        if self.summary:
            out[f"{TRAINING_DIR}/{SUMMARY_NAME}"] = json.dumps(self.summary, indent=2).encode()
        return out

    def write(self, output_dir: str | os.PathLike, parts: tuple[str, ...] = ("config", "metrics", "eval_results", "summary")) -> int:
        """Write the chosen parts atomically (each file whole or not at all); return the bytes written."""
        names = {"config": TRAINING_CONFIG_NAME, "metrics": METRICS_NAME, "eval_results": EVAL_RESULTS_NAME, "summary": SUMMARY_NAME}
        wanted = {f"{TRAINING_DIR}/{names[p]}" for p in parts}
        written = 0
        for relative, data in self.files().items():
            if relative in wanted:
                atomic_write(Path(output_dir) / relative, data)
                written += len(data)
        return written


def read_training_record(output_dir: str | os.PathLike) -> TrainingRecord:
    """The training record of an output directory (see `TrainingRecord.read`)."""
    return TrainingRecord.read(output_dir)


def _read_json(path: Path) -> Any:
    """Parse a JSON file of the training record, with an error naming it."""
    try:
        return json.loads(path.read_text())
    except (ValueError, RecursionError) as err:  # not JSON, or nested or sized to exhaust the parser
        raise ConfigError(f"{path} is not valid JSON ({err}); fix or delete it, then render the card again.") from err


def library_versions() -> dict[str, str]:
    """Versions of Python and of the installed libraries that train and load models."""
    found = {"python": sys.version.split()[0]}
    for name in RECORDED_LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def atomic_write(
    path: str | os.PathLike, data: bytes | str, tmp_dir: str | os.PathLike | None = None, fsync: bool = False
) -> None:
    """Write a file through a temporary file and a rename, so readers see the old or the whole new content.

    The temporary file lies beside `path`, or in `tmp_dir` (same filesystem) where a crash's leftovers are
    swept; `fsync` makes the content durable before the rename (the Hub server's store asks for it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tmp_dir) if tmp_dir is not None else path.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
