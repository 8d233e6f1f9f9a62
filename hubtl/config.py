"""The training config: a YAML file plus `--key value` overrides, validated before anything runs.

Keys are named as in transformers' `TrainingArguments` where the meaning is the same.
"""

from __future__ import annotations

import dataclasses
import difflib
import glob
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .data import DatasetConfig
from .errors import ConfigError
from .metrics import metric_key
from .strategies import get_strategy
from .tasks import get_task
MIXED_PRECISION = ("no", "fp16", "bf16")
#: transformers' `get_scheduler` names that step once per optimizer step (reduce_lr_on_plateau needs a metric instead)
SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt",
    "cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay",
)  # fmt: skip


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `5e-5` as a float (YAML 1.2), as everyone writes learning rates; PyYAML alone keeps a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml_load(text: str) -> Any:
    """Parse YAML with the float rule above."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def _opt(default: Any, help: str, factory: Any = None) -> Any:
    """A config field with its one-line meaning (shown by `hubtl train --help` and the README's reference)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TrainingConfig:
    """Everything one fine-tuning run needs; `hubtl train --help` lists each key with its meaning."""

    backbone: str = field(metadata={"help": "'<plugin>:<model>', e.g. timm:resnet18 or transformers:bert-base-uncased"})
    dataset: DatasetConfig = field(metadata={"help": "where the data comes from (the dataset.* keys below)"})
    output_dir: str = _opt("outputs/hubtl-model", "where the model, its card and its training record are written")
    pretrained: bool = _opt(True, "start from the backbone's pretrained weights (false: random initialisation)")
    base_model: str | None = _opt(
        None, "Hub ID of the pretrained weights, published instead of a local backbone path (default: known for weight packages)"
    )
    backbone_kwargs: dict[str, Any] = _opt(None, "backbone options, e.g. {drop_path_rate: 0.1} or {pooling: cls, max_length: 128}", dict)
    task: str = _opt("classification", "classification | multi_label | regression (or a task registered with register_task)")
    labels: list[str] | None = _opt(None, "class names in order (default: from the data)")
    num_outputs: int = _opt(1, "outputs of a regression head")
    head_dropout: float = _opt(0.0, "dropout before the head's linear layer(s)")
    head_hidden_dim: int | None = _opt(None, "width of a hidden layer in the head (default: none, a linear head)")
    # fine-tuning strategy
    strategy: str = _opt("full", "linear_probe | full | gradual | lora | distill (or a strategy registered with register_strategy)")
    gradual_unfreeze_epochs: int = _opt(1, "gradual: epochs between unfreezing one more layer group from the top")
    layer_decay: float | None = _opt(None, "layer-wise learning-rate decay in (0, 1], with any strategy")
    head_learning_rate: float | None = _opt(None, "learning rate of the head (default: learning_rate)")
    lora_r: int = _opt(8, "lora: rank of the adapters")
    lora_alpha: int = _opt(16, "lora: scaling of the adapters")
    lora_dropout: float = _opt(0.1, "lora: dropout on the adapters' input")
    lora_target_modules: list[str] | None = _opt(None, "lora: module names to adapt (default: PEFT's choice for the model)")
    teacher: str | None = _opt(None, "distill: the teacher, a hubtl model folder or Hub ID fine-tuned on the same task and labels")
    distill_alpha: float = _opt(0.5, "distill: weight of the loss on the labels; 1 - distill_alpha weighs the loss on the teacher's outputs")
    distill_temperature: float = _opt(2.0, "distill: softmax temperature of teacher and student (classification)")
    init_from_teacher: str | list[int] | None = _opt(
        None, "distill: build the student's encoder from the teacher's layers: every_other | first_k | [i, j, ...]"
    )
    feature_cache: bool = _opt(True, "frozen backbone + deterministic transforms: compute features once (and a teacher's outputs)")
    augment: bool = _opt(True, "random training transforms (false: eval transforms, so the feature cache can be used)")
    # optimisation, as in TrainingArguments
    num_train_epochs: float = _opt(3.0, "epochs to train (ignored when max_steps > 0)")
    max_steps: int = _opt(-1, "optimizer steps to train (overrides num_train_epochs when > 0)")
    per_device_train_batch_size: int = _opt(16, "training batch size per process")
    per_device_eval_batch_size: int = _opt(32, "evaluation (and feature cache) batch size per process")
    learning_rate: float = _opt(5e-5, "peak learning rate (AdamW)")
    weight_decay: float = _opt(0.0, "AdamW weight decay (never on biases and norms)")
    lr_scheduler_type: str = _opt("linear", "linear | cosine | cosine_with_restarts | polynomial | constant | constant_with_warmup | "
                                  "inverse_sqrt | cosine_with_min_lr | cosine_warmup_with_min_lr | warmup_stable_decay")
    lr_scheduler_kwargs: dict[str, Any] = _opt(None, "the scheduler's own arguments, e.g. {min_lr_rate: 0.1} for cosine_with_min_lr", dict)
    warmup_ratio: float = _opt(0.0, "fraction of the steps spent warming the learning rate up")
    warmup_steps: int = _opt(0, "optimizer steps spent warming the learning rate up (overrides warmup_ratio when > 0)")
    gradient_accumulation_steps: int = _opt(1, "batches per optimizer step")
    max_grad_norm: float = _opt(1.0, "gradient clipping norm (0 disables it)")
    mixed_precision: str = _opt("no", "no | fp16 | bf16")
    seed: int = _opt(42, "seed of everything random (weights, shuffling, augmentation, carve-outs)")
    # evaluation, checkpoints, output
    eval_strategy: str = _opt("epoch", "epoch | steps: evaluate at each epoch end, or every eval_steps too")
    eval_steps: int | None = _opt(None, "with eval_strategy: steps, evaluate every this many optimizer steps")
    metric_for_best_model: str | None = _opt(None, "metric that picks the kept epoch (default: accuracy / f1_macro / rmse)")
    greater_is_better: bool | None = _opt(None, "whether a larger metric_for_best_model is better (default: by metric)")
    early_stopping_patience: int | None = _opt(None, "stop after this many epochs without improvement")
    save_steps: int | None = _opt(None, "also checkpoint every this many optimizer steps (always at each epoch end)")
    save_total_limit: int = _opt(2, "checkpoints kept (the oldest are removed)")
    resume_from_checkpoint: str | bool | None = _opt(None, "a checkpoint folder, or true (--resume) for the latest one")
    overwrite_output_dir: bool = _opt(False, "start afresh in an output_dir that holds an earlier run")
    dataloader_num_workers: int | None = _opt(None, "DataLoader workers (default: images one per spare CPU core of the process, 2 to 8; text 0)")
    group_by_length: bool = _opt(False, "train on batches of texts of similar length (shuffled in groups of up to 50 batches, as transformers): less padding")
    logging_steps: int = _opt(10, "record loss, learning rate and throughput every this many optimizer steps")
    report_to: str | list[str] = _opt(
        "auto", "auto | none | all | a tracker Accelerate supports (tensorboard, wandb, mlflow, ...) or a list of them "
        "(auto: TensorBoard when installed; all: every installed one)"
    )
    strict: bool = _opt(False, "fail on unreadable images instead of skipping them")
    disable_tqdm: bool = _opt(False, "no progress bars")
    push_to_hub: str | None = _opt(None, "a Hub repo ID: push the model with its card at the end")
    hub_private_repo: bool = _opt(False, "create the pushed repo as private")
    license: str | None = _opt(None, "license of the model, shown in the card's metadata")
    # hubtl rank
    candidates: list[str | dict[str, Any]] | None = _opt(
        None, "hubtl rank: backbones to compare, as names or {name, backbone, pretrained, backbone_kwargs} (train ignores it)"
    )

    def __post_init__(self) -> None:
        _check_values(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (nested dataset dict), as written to training/config.yaml."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingConfig:
        """Build and validate a config from a dict (unknown keys, wrong types and bad values are errors)."""
        if not isinstance(values, dict):
            raise ConfigError(f"A training config must be a mapping of keys to values, got {type(values).__name__}.")
        values = dict(values)
        for key in ("backbone", "dataset"):
            if key not in values:
                raise ConfigError(f"The config lacks `{key}`; e.g. backbone: timm:resnet18, dataset: {{path: data/}}.")
        dataset = values.pop("dataset")
        if isinstance(dataset, str):
            dataset = {"path": dataset}
        _check_keys(values, cls, "")
        _check_keys(dataset, DatasetConfig, "dataset.")
        _check_types(dataset, DatasetConfig, "dataset.")
        _check_types(values, cls, "")
        config = cls(dataset=DatasetConfig(**dataset), **values)
        # what the user wrote, as opposed to defaults: the card lists these (not a field: never in config.yaml)
        config.keys_set = sorted([*values, "dataset", *(f"dataset.{k}" for k in dataset)])
        return config


def load_config(
    source: str | Path | dict[str, Any], overrides: list[str] | None = None, config_class: type[TrainingConfig] | None = None
) -> TrainingConfig:
    """Read a YAML config (or take a dict), apply `--key value` overrides, resolve data paths, validate.

    `config_class` is the config's class: TrainingConfig, or a subclass such as `hubtl pretrain`'s PretrainingConfig.
    """
    if isinstance(source, dict):
        values, base = dict(source), Path.cwd()
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist; pass the path of a YAML training config.")
        try:
            values = _yaml_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {err}") from err
        if not isinstance(values, dict):
            raise ConfigError(f"{path} must hold a mapping of config keys, not a {type(values).__name__}.")
        base = path.resolve().parent
        _resolve_data_paths(values, base)
    apply_overrides(values, overrides or [])
    return (config_class or TrainingConfig).from_dict(values)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> None:
    """Apply `--key value`, `--key=value` and `--dataset.key value` overrides; values parse as YAML.

    A `--key` with no value after it (the last argument, or followed by another `--key`) means `true`,
    so `--overwrite_output_dir` works like `--overwrite_output_dir true`.
    `--import MODULE` imports a module first (one that registers a task, strategy or backbone plugin of your own).
    """
    aliases = {"resume": "resume_from_checkpoint"}  # `--resume` or `--resume path/to/checkpoint`
    i = 0
    while i < len(overrides):
        arg = overrides[i]
        if arg.startswith("--") and "=" in arg:
            key, raw = arg[2:].split("=", 1)
            value = _parse_value(raw)
            i += 1
        elif arg.startswith("--") and len(arg) > 2:
            if i + 1 < len(overrides) and not overrides[i + 1].startswith("--"):
                key, value = arg[2:], _parse_value(overrides[i + 1])
                i += 2
            else:
                key, value = arg[2:], True
                i += 1
        else:
            raise ConfigError(f"Cannot read override {arg!r}: write `--key value`, e.g. `--learning_rate 3e-4`.")
        key = aliases.get(key, key)
        key = key.replace("-", "_")
        if key == "import":  # `--import MODULE`: a module registering a task, strategy or backbone plugin of one's own
            _import_module(str(value))
            continue
        target = values
        *parents, leaf = key.split(".")
        for parent in parents:
            node = target.setdefault(parent, {})
            if isinstance(node, str) and parent == "dataset":
                node = target[parent] = {"path": node}
            if not isinstance(node, dict):
                raise ConfigError(f"Override --{key}: {parent} is not a section of the config.")
            target = node
        target[leaf] = value


def _import_module(name: str) -> None:
    """Import a module named by `--import` (the working directory searched first, as `python -m` does)."""
    import importlib
    import os
    import sys

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as err:
        raise ConfigError(
            f"--import {name}: no module {err.name!r} found ({err}). Run from the folder that holds it, or install it."
        ) from err


def _parse_value(raw: str) -> Any:
    """Parse an override value as YAML (numbers, booleans, lists), falling back to the raw string."""
    try:
        value = _yaml_load(raw)
    except yaml.YAMLError:
        return raw
    # a mapping is written `{key: value}` on a command line; `timm:` alone is a (half-typed) name, not {timm: null}
    return raw if isinstance(value, dict) and not raw.lstrip().startswith("{") else value


def _resolve_data_paths(values: dict[str, Any], base: Path) -> None:
    """Make relative dataset paths in a YAML file relative to that file, when they exist there."""
    dataset = values.get("dataset")
    if isinstance(dataset, str):
        dataset = values["dataset"] = {"path": dataset}
    if not isinstance(dataset, dict):
        return

    def resolve(p: Any) -> Any:
        if isinstance(p, str) and not Path(p).is_absolute():
            candidate = base / p
            if candidate.exists() or (glob.has_magic(p) and glob.glob(str(candidate), recursive=True)):
                return str(candidate.resolve()) if candidate.exists() else str(candidate)
        return p

    if "path" in dataset:
        dataset["path"] = resolve(dataset["path"])
    files = dataset.get("data_files")
    if isinstance(files, str):
        dataset["data_files"] = resolve(files)
    elif isinstance(files, list):
        dataset["data_files"] = [resolve(f) for f in files]
    elif isinstance(files, dict):
        dataset["data_files"] = {k: [resolve(f) for f in v] if isinstance(v, list) else resolve(v) for k, v in files.items()}


#: transformers `TrainingArguments` names (and common shorthands) hubtl spells or handles otherwise, with what to write
_ELSEWHERE = {
    "fp16": "mixed_precision: fp16",
    "bf16": "mixed_precision: bf16",
    "lr": "learning_rate",
    "epochs": "num_train_epochs",
    "num_epochs": "num_train_epochs",
    "batch_size": "per_device_train_batch_size (and per_device_eval_batch_size)",
    "per_gpu_train_batch_size": "per_device_train_batch_size",
    "evaluation_strategy": "eval_strategy",
    "save_strategy": "save_steps (a checkpoint is written at every epoch's end, and every save_steps too)",
    "load_best_model_at_end": "nothing: the best epoch's weights (by metric_for_best_model) are always kept",
}


def _check_keys(values: dict[str, Any], cls: type, prefix: str) -> None:
    """Refuse unknown keys, suggesting the closest known ones (or hubtl's name for a transformers one)."""
    known = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in known and not prefix and key in _ELSEWHERE:
            raise ConfigError(f"Unknown config key {key!r}; in hubtl write {_ELSEWHERE[key]}.")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3)
            hint = f" Did you mean {', '.join(prefix + c for c in close)}?" if close else ""
            raise ConfigError(f"Unknown config key {prefix + key!r}.{hint} Known keys: {', '.join(known)}.")


def _check_types(values: dict[str, Any], cls: type, prefix: str) -> None:
    """Refuse values of the wrong type, e.g. a string where a number is expected."""
    hints = typing.get_type_hints(cls)
    for key, value in list(values.items()):
        expected = hints[key]
        if key == "dataset":
            continue
        if key in ("mixed_precision", "eval_strategy") and value is False:  # YAML reads `no` (`--mixed_precision no`) as false
            value = "no"
        coerced = _coerce(value, expected)
        if coerced is _WRONG:
            raise ConfigError(f"Config key {prefix + key!r} must be {_describe(expected)}, got {value!r}.")
        values[key] = coerced


_WRONG = object()


def _coerce(value: Any, expected: Any) -> Any:
    """`value` converted to the annotated type where harmless (int -> float), or _WRONG."""
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(expected):
            result = _coerce(value, option)
            if result is not _WRONG:
                return result
        return _WRONG
    if expected is type(None):
        return None if value is None else _WRONG
    if expected is Any:
        return value
    if expected is float:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else _WRONG
    if expected is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _WRONG
    if expected in (bool, str):
        return value if isinstance(value, expected) else _WRONG
    if origin is list:
        (item,) = typing.get_args(expected) or (Any,)
        if not isinstance(value, list):
            return _WRONG
        items = [_coerce(v, item) for v in value]
        return _WRONG if any(v is _WRONG for v in items) else items
    if origin is dict:
        return value if isinstance(value, dict) else _WRONG
    return value


def _describe(expected: Any) -> str:
    """Readable name of an annotated type."""
    if typing.get_origin(expected) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(expected))
    if expected is type(None):
        return "null"
    return getattr(expected, "__name__", str(expected))


def _check_values(cfg: TrainingConfig) -> None:
    """Refuse impossible values with a message saying what is allowed."""

    def require(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    require(":" in cfg.backbone, f"backbone must look like '<plugin>:<model>', e.g. timm:resnet18; got {cfg.backbone!r}.")
    task = get_task(cfg.task)
    get_strategy(cfg.strategy).check(cfg)
    require(cfg.mixed_precision in MIXED_PRECISION, f"mixed_precision must be one of {MIXED_PRECISION}.")
    require(cfg.lr_scheduler_type in SCHEDULERS, f"lr_scheduler_type must be one of {', '.join(SCHEDULERS)}.")
    require(cfg.learning_rate > 0, f"learning_rate must be > 0; got {cfg.learning_rate}.")
    require(cfg.head_learning_rate is None or cfg.head_learning_rate > 0, "head_learning_rate must be > 0.")
    require(cfg.weight_decay >= 0, f"weight_decay must be >= 0; got {cfg.weight_decay}.")
    require(0 <= cfg.warmup_ratio < 1, f"warmup_ratio must be in [0, 1); got {cfg.warmup_ratio}.")
    require(cfg.warmup_steps >= 0, f"warmup_steps must be >= 0; got {cfg.warmup_steps}.")
    require(cfg.num_train_epochs > 0 or cfg.max_steps > 0, "Set num_train_epochs > 0 or max_steps > 0.")
    require(cfg.per_device_train_batch_size >= 1, "per_device_train_batch_size must be >= 1.")
    require(cfg.per_device_eval_batch_size >= 1, "per_device_eval_batch_size must be >= 1.")
    require(cfg.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be >= 1.")
    require(cfg.max_grad_norm >= 0, "max_grad_norm must be >= 0 (0 disables clipping).")
    require(cfg.layer_decay is None or 0 < cfg.layer_decay <= 1, "layer_decay must be in (0, 1].")
    require(cfg.save_steps is None or cfg.save_steps >= 1, "save_steps must be >= 1 (or null: each epoch only).")
    require(cfg.save_total_limit >= 1, "save_total_limit must be >= 1.")
    require(cfg.early_stopping_patience is None or cfg.early_stopping_patience >= 1, "early_stopping_patience must be >= 1.")
    require(0 <= cfg.head_dropout < 1, "head_dropout must be in [0, 1).")
    require(cfg.num_outputs >= 1, "num_outputs must be >= 1.")
    require(cfg.logging_steps >= 1, "logging_steps must be >= 1.")
    require(
        cfg.eval_strategy != "no",
        "eval_strategy: no is not supported: hubtl evaluates at every epoch's end to pick the kept epoch and fill the "
        "model card. Use eval_strategy: epoch (with no eval split, dataset.validation_size carves one out of train).",
    )
    require(cfg.eval_strategy in ("epoch", "steps"), f"eval_strategy must be epoch or steps; got {cfg.eval_strategy!r}.")
    require(
        cfg.eval_strategy != "steps" or (cfg.eval_steps is not None and cfg.eval_steps >= 1),
        "eval_strategy: steps needs eval_steps >= 1, e.g. --eval_steps 50.",
    )
    require(
        cfg.labels is None or len(set(cfg.labels)) == len(cfg.labels), f"labels must be unique; got {cfg.labels}."
    )
    require(
        bool(cfg.dataset.path or cfg.dataset.data_files),
        "dataset.path must name a Hub dataset, a folder or a file (or give dataset.data_files).",
    )
    if cfg.dataset.streaming:
        _check_streaming(cfg)
    if cfg.metric_for_best_model is not None:
        known = task.metrics
        if metric_key(cfg.metric_for_best_model) not in known:
            close = difflib.get_close_matches(metric_key(cfg.metric_for_best_model), known, n=1)
            hint = f" Did you mean {close[0].removeprefix('eval_')}?" if close else ""
            raise ConfigError(
                f"metric_for_best_model {cfg.metric_for_best_model!r} is not computed for task {cfg.task}.{hint} "
                f"Choose one of {', '.join(k.removeprefix('eval_') for k in known)} (with or without the eval_ prefix)."
            )


def _check_streaming(cfg: TrainingConfig) -> None:
    """`dataset.streaming`: refuse what a stream (no length, read once in order) cannot do, saying what to do."""
    data = cfg.dataset
    problems = []
    if cfg.max_steps <= 0:
        problems.append("a stream has no length, so the run's length must be given: set max_steps, e.g. --max_steps 1000")
    if data.shuffle_buffer_size < 1:
        problems.append("dataset.shuffle_buffer_size must be >= 1 (1: no shuffling)")
    if get_strategy(cfg.strategy).reads_unlabeled or data.unlabeled_split or data.unlabeled_files:
        problems.append(
            f"strategy {cfg.strategy} (and unlabeled_split/unlabeled_files) computes the teacher's outputs once per "
            "training example, which needs a finite training split: set dataset.streaming: false for it"
        )
    if cfg.dataloader_num_workers:
        problems.append(
            "streamed data is read in the main process, so that a checkpoint holds the exact position: "
            "remove dataloader_num_workers (or set it to 0)"
        )
    if cfg.early_stopping_patience is not None:
        problems.append("early_stopping_patience counts epochs, and a streamed run is one (max_steps long): remove it")
    if cfg.group_by_length:
        problems.append("group_by_length needs every example's length before the epoch starts: remove it")
    if problems:
        raise ConfigError("dataset.streaming: " + "; ".join(problems) + ".")


#: How relative paths in a config are read (README and `hubtl train --help` say it the same way).
PATH_RULES = (
    "Relative paths: dataset.path and dataset.data_files are read relative to the YAML file's folder when they "
    "exist there, else relative to the working directory; output_dir is always relative to the working directory. "
    "Any key can be overridden on the command line as --key value (nested: --dataset.path DIR)."
)
#: Example values of the keys that have no default.
_EXAMPLES = {"backbone": "timm:efficientnet_b0", "dataset.path": "data/photos"}


def config_reference() -> str:
    """Every config key as YAML with its default (or an example) and its meaning: the README's reference."""
    rows: list[tuple[str, str, str]] = []
    for f in dataclasses.fields(TrainingConfig):
        if f.name == "dataset":
            rows.append(("dataset:", "", f.metadata["help"]))
            for d in dataclasses.fields(DatasetConfig):
                rows.append((f"  {d.name}: {_yaml_value(_default(d, f'dataset.{d.name}'))}", "", d.metadata["help"]))
        else:
            rows.append((f"{f.name}: {_yaml_value(_default(f, f.name))}", "", f.metadata["help"]))
    width = max(len(key) for key, _, _ in rows) + 2
    return "\n".join(f"{key:<{width}}# {meaning}" for key, _, meaning in rows) + "\n"


def config_help(config_class: type[TrainingConfig] | None = None) -> str:
    """`hubtl train --help`'s list of keys: name, type, default and meaning, from the fields themselves.

    A subclass lists its own keys; the inherited ones it names in `inapplicable_keys` are left out.
    """
    config_class = config_class or TrainingConfig
    hidden = set(getattr(config_class, "inapplicable_keys", ()))
    hints = typing.get_type_hints(config_class)
    dataset_hints = typing.get_type_hints(DatasetConfig)
    lines = ["config keys (in the YAML file, or as --key value overrides):"]
    for f in dataclasses.fields(config_class):
        if f.name in hidden:
            continue
        if f.name == "dataset":
            for d in dataclasses.fields(DatasetConfig):
                lines.append(_help_line(f"dataset.{d.name}", dataset_hints[d.name], d))
        else:
            lines.append(_help_line(f.name, hints[f.name], f))
    return "\n".join(lines) + "\n\n" + PATH_RULES + "\nSee README.md, 'The training config'.\n"


def _help_line(name: str, hint: Any, f: dataclasses.Field) -> str:
    """'  --name TYPE (default X)' and the meaning on the next line."""
    shown = f"e.g. {_EXAMPLES[name]}" if name in _EXAMPLES else f"default {_yaml_value(_default(f, name))}"
    return f"  --{name} {_describe(hint)} ({shown})\n      {f.metadata['help']}"


def _default(f: dataclasses.Field, name: str) -> Any:
    """A field's default value, or an example for a key the user must set."""
    if name in _EXAMPLES:
        return _EXAMPLES[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _EXAMPLES.get(name)


def _yaml_value(value: Any) -> str:
    """A value as it is written in YAML (quoted where YAML would misread it, like "no")."""
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()
