"""What a card says, as template variables: one builder per section, from config.json, the weights and the record."""

from __future__ import annotations

import dataclasses
import logging
import math
import platform
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelLoadError
from ..layout import WEIGHTS_NAME, TrainingRecord, library_versions, read_weights_header
from ..strategies import Strategy, get_strategy, list_strategies, strategy_config_keys
from ..tasks import Task, get_task
from ..version import __version__
from .formatting import EPOCH_COLUMNS, is_number, main_metric, metric_name, number, value_text
from .plots import CONFUSION_PNG, CURVES_PNG, split_rows
from .public import (
    is_hub_dataset,
    is_hub_id,
    is_local_backbone,
    local_name,
    public_backbone_name,
    public_config,
    public_dataset_path,
    public_file,
    recorded_base_model,
    saved_base_model,
)

logger = logging.getLogger("hubtl")

#: Inputs of the usage snippet of text models.
EXAMPLE_TEXTS = ("A first text to classify.", "And a second, quite different one.")
#: Keys the hyperparameter table always shows (the run's length is added: `max_steps` or `num_train_epochs`).
ALWAYS_SHOWN = ("strategy", "learning_rate", "per_device_train_batch_size", "seed")
#: Keys about where and how a run wrote its files, not about the model: only in the linked training/config.yaml.
BOOKKEEPING = frozenset({
    "output_dir", "overwrite_output_dir", "resume_from_checkpoint", "disable_tqdm", "report_to", "push_to_hub",
    "hub_private_repo", "dataloader_num_workers", "logging_steps", "save_steps", "save_total_limit", "license",
})  # fmt: skip
#: Last parts of the names of tensors that are buffers (running statistics, index tables), never parameters.
BUFFER_NAMES = frozenset({
    "running_mean", "running_var", "num_batches_tracked", "position_ids", "token_type_ids", "relative_position_index",
    "inv_freq", "attn_mask",
})  # fmt: skip


def card_task(name: str) -> Task:
    """The registered task `name`; a task this hubtl does not know still gets a card (the base task's wording)."""
    try:
        return get_task(name)
    except ConfigError:
        logger.warning("Task %r is not registered in this hubtl; its card uses the generic task wording.", name)
        return type("UnregisteredTask", (Task,), {"name": str(name), "__doc__": "A task not registered here."})()


def build_context(
    directory: Path, config: dict[str, Any], record: TrainingRecord, repo_id: str | None, task: Task
) -> dict[str, Any]:
    """Everything the templates show, computed from config.json, the weights and the training record."""
    modality = config.get("modality") or "unknown"
    id2label = config.get("id2label") or {}
    labels = [id2label[str(i)] for i in range(len(id2label))]
    backbone = _backbone(config["backbone"], record, directory)
    main_key = main_metric(record)
    strategy = _strategy(record)
    hyperparameters, hidden_for = _hyperparameters(record, strategy and strategy["name"], backbone["base_model"])
    curves_by_step = bool(split_rows(record.metrics)[1] or split_rows(record.metrics)[2])
    return {
        "model_name": repo_id.split("/")[-1] if repo_id else directory.resolve().name,
        "repo_id": repo_id,
        "load_id": repo_id or str(directory.resolve()),
        "task": config["task"],
        "task_phrase": task.description(modality),
        "modality": modality,
        "labels": labels,
        "num_outputs": config.get("head", {}).get("num_outputs", len(labels) or 1),
        "threshold": config.get("threshold", 0.5),
        "backbone": backbone,
        "head": config.get("head", {}),
        "parameters": _parameters(directory, record, strategy),
        "distillation": _distillation(record, (saved_parameter_counts(directory) or {}).get("total"), record.eval_results),
        "preprocessing": [(k, value_text(v)) for k, v in sorted((config.get("preprocessing") or {}).items()) if k != "type"],
        "trained": record.exists,
        "hyperparameters": hyperparameters,
        "hidden_for": hidden_for,
        "strategy": strategy,
        "run": _run(record),
        "data": _data(record, modality),
        "epochs": _epochs(record, main_key),
        "logged": _logged(record),
        "curves_by_step": curves_by_step,
        "final": _final(record.eval_results),
        "main_metric": metric_name(main_key) if main_key else None,
        "plots": {
            "curves": CURVES_PNG if (directory / CURVES_PNG).is_file() else None,
            "confusion": CONFUSION_PNG if (directory / CONFUSION_PNG).is_file() else None,
        },
        "license": record.config.get("license"),
        "install": " ".join(dict.fromkeys(["hubtl", backbone["package"] or "hubtl"])),
        "versions": _versions(config, record),
        "saved_with": config.get("hubtl_version") or "an unknown version",
        "example_texts": EXAMPLE_TEXTS,
    }


# --------------------------------------------------------------------------- model details


def _backbone(spec: dict[str, Any], record: TrainingRecord, directory: Path) -> dict[str, Any]:
    """The backbone's name, provider and origin of its weights, with the Hub ID of its base model when there is one.

    A backbone loaded from a local directory is shown by its base model's Hub ID when the record names one (the
    `base_model` training-config key), else by its folder name: no path of the training machine is published.
    """
    plugin, name = spec.get("plugin", "unknown"), str(spec.get("name", "unknown"))
    train_config = record.config
    kwargs = dict(train_config.get("backbone_kwargs") or {})
    pretrained = train_config.get("pretrained", spec.get("pretrained"))
    local = is_local_backbone(name)
    recorded = recorded_base_model(train_config, record.summary)
    chain = (record.summary or {}).get("pretrained_from")
    chain = chain if isinstance(chain, dict) else None
    base_model, origin = None, None
    if chain is not None:
        base_model, origin = _pretrained_from(chain)
    elif pretrained is None:
        origin = (
            "Not recorded: the model was saved without hubtl's training record, so whether the backbone started from "
            "pretrained weights is unknown."
        )
    elif not pretrained:
        origin = "random initialisation (`pretrained: false`): the backbone started from no pretrained weights."
    elif kwargs.get("checkpoint_path"):
        origin = f"a local checkpoint file, `{local_name(str(kwargs['checkpoint_path']))}` (not on the Hub, so no `base_model`)."
    elif recorded or (local and saved_base_model(directory)):
        base_model = recorded or saved_base_model(directory)
        copy = f" (trained from a local copy, `{local_name(name)}`)" if local else ""
        origin = f"[{base_model}](https://huggingface.co/{base_model}) on the Hugging Face Hub{copy}."
    elif local:
        origin = f"the local directory `{local_name(name)}` (not a Hub ID, so the card sets no `base_model`)."
    elif plugin == "timm":
        base_model = _timm_hub_id(name)
        origin = (
            f"timm's pretrained weights [{base_model}](https://huggingface.co/{base_model})."
            if base_model
            else f"timm's pretrained weights for `{name}` (timm knows no Hub repo for them, so no `base_model`)."
        )
    elif is_hub_id(name):
        base_model = name
        origin = f"[{name}](https://huggingface.co/{name}) on the Hugging Face Hub."
    else:
        origin = f"pretrained weights provided by the `{plugin}` plugin for `{name}`."
    shown = public_backbone_name(name, base_model) if local else name
    return {
        "plugin": plugin,
        "name": shown,
        "display": f"{plugin}:{shown}",
        "package": spec.get("package") or "hubtl",
        "kwargs": [(k, value_text(v)) for k, v in sorted((spec.get("kwargs") or {}).items())],
        "base_model": base_model,
        "origin": origin,
        "pretrained_from": (chain.get("hub_id") or chain.get("name")) if chain else None,
    }


def _pretrained_from(chain: dict[str, Any]) -> tuple[str | None, str]:
    """(base_model, origin) of a backbone written by `hubtl pretrain`: the chain base model -> pre-trained backbone -> this.

    The Hub metadata names the pre-trained backbone when it is on the Hub, else the base model it started from.
    """
    hub_id = chain.get("hub_id") if is_hub_id(chain.get("hub_id")) else None
    root = chain.get("base_model") if is_hub_id(chain.get("base_model")) else None
    if root:
        start = f"[{root}](https://huggingface.co/{root})"
    elif chain.get("initialisation") == "random":
        start = "random initialisation"
    else:
        start = "its plugin's pretrained weights"
    where = (
        f"[{hub_id}](https://huggingface.co/{hub_id}) on the Hugging Face Hub"
        if hub_id
        else f"in the local folder `{local_name(str(chain.get('name') or 'pretrained'))}` (not on the Hub)"
    )
    steps = f", {chain['steps']} steps" if isinstance(chain.get("steps"), int) else ""
    objective = f"`{chain.get('objective')}`" if chain.get("objective") else "self-supervised"
    loaded = "" if chain.get("weights_loaded", True) else " Its architecture only: the fine-tuning started from random weights."
    return hub_id or root, f"the pre-trained backbone {where}: `hubtl pretrain` ({objective}{steps}) of {start}.{loaded}"


def _timm_hub_id(name: str) -> str | None:
    """The Hub repo of timm's default pretrained weights for a model name (with or without a tag)."""
    try:
        import timm

        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - an unknown name or an old timm just means no Hub ID
        return None
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    return hub_id or None


def _parameters(directory: Path, record: TrainingRecord, strategy: dict[str, Any] | None) -> dict[str, Any] | None:
    """Parameters of the saved model (buffers apart) and how many trained, as the trainer's log counts them.

    The trainer records `trainable_parameters` and `total_parameters` in summary.json; a record without them gets
    the head's parameters as the trained ones when the strategy froze the backbone, else no trained count.
    """
    saved = saved_parameter_counts(directory)
    if saved is None:
        return None
    summary = record.summary
    trainable, total = summary.get("trainable_parameters"), summary.get("total_parameters")
    if not (is_number(trainable) and is_number(total)):
        trainable = total = None
        if strategy is not None and strategy["freezes_backbone"]:
            trainable, total = saved["head"], saved["total"]
    return {**saved, "trainable": trainable, "trainable_of": total}


def saved_parameter_counts(directory: Path) -> dict[str, int] | None:
    """Parameters in model.safetensors, in all, in the backbone and in the head, and the buffer values apart.

    Read from the header only. Buffers (batch-norm running statistics, `num_batches_tracked`, index tables) are
    stored beside the parameters but are not parameters: they are told apart by name and by integer dtype.
    """
    path = directory / WEIGHTS_NAME
    if not path.is_file():
        return None
    try:
        header = read_weights_header(path)
    except ModelLoadError:
        return None
    total = head = buffers = 0
    for key, (dtype, shape) in header.items():
        values = math.prod(shape)
        if key.rsplit(".", 1)[-1] in BUFFER_NAMES or not dtype.startswith(("F", "BF")):
            buffers += values
            continue
        total += values
        head += values if key.startswith("head.") else 0
    return {"total": total, "head": head, "backbone": total - head, "buffers": buffers}


# --------------------------------------------------------------------------- training procedure


def _registered_strategy(name: str) -> Strategy | None:
    """The registered strategy `name`, or None for one this hubtl does not know (a card still renders)."""
    try:
        return get_strategy(name)
    except ConfigError:
        return None


def _strategy(record: TrainingRecord) -> dict[str, Any] | None:
    """The fine-tuning strategy's name and what it did, with layer-wise learning-rate decay when used."""
    name = record.config.get("strategy") or record.summary.get("strategy")
    if not name:
        return None
    known = _registered_strategy(str(name))
    decay = record.config.get("layer_decay")
    return {
        "name": name,
        "description": known.description if known is not None and known.description else f"The `{name}` strategy.",
        "freezes_backbone": bool(known is not None and known.freezes_backbone),
        "layer_decay": decay if decay not in (None, 1, 1.0) else None,
        "feature_cache": record.summary.get("feature_cache"),
    }


def _hyperparameters(
    record: TrainingRecord, strategy: str | None, base_model: str | None
) -> tuple[list[tuple[str, str]], list[str]]:
    """The keys that shape the run, values as text (local paths as names); also the strategies whose keys were left out.

    Shown: the keys the user's config set (summary.json `config_keys_set`; a record without it: the keys whose value
    differs from `TrainingConfig`'s default), the strategy's own keys, and always the strategy, the learning rate,
    the run's length, the batch size and the seed. File-handling keys (`output_dir`, `logging_steps`, ...) and keys
    only other strategies read are left out; training/config.yaml holds them all.
    """
    config = public_config(record.config, base_model)
    if not config:
        return [], []
    rows: list[tuple[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value and prefix != "backbone_kwargs":
            for key in value:
                walk(f"{prefix}.{key}" if prefix else str(key), value[key])
        else:
            rows.append((prefix, value))

    walk("", config)
    set_keys = record.summary.get("config_keys_set")
    chosen = {str(k) for k in set_keys} if isinstance(set_keys, list) else _non_default_keys(record.config)
    known = _registered_strategy(str(strategy)) if strategy else None
    max_steps = config.get("max_steps")
    length = "max_steps" if is_number(max_steps) and max_steps > 0 else "num_train_epochs"
    always = {*ALWAYS_SHOWN, length, *(known.config_keys if known is not None else ())}
    hidden = strategy_config_keys() - set(known.config_keys if known is not None else ()) if strategy else set()

    def wanted(key: str) -> bool:
        parts = key.split(".")
        if parts[0] in BOOKKEEPING:
            return False
        prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        if parts[0] == "dataset" and key != "dataset.path":
            prefixes.discard("dataset")  # `dataset: some/path` set the path only
        return key in always or bool(prefixes & chosen)

    selected = [(key, value) for key, value in rows if wanted(key)]
    kept = [(key, value_text(value)) for key, value in selected if key.split(".", 1)[0] not in hidden]
    left_out = {key.split(".", 1)[0] for key, _ in selected} & hidden
    owners = [name for name in list_strategies() if left_out & set(get_strategy(name).config_keys)]
    return kept, owners


def _non_default_keys(config: dict[str, Any]) -> set[str]:
    """Keys of a resolved training config whose value differs from `TrainingConfig`'s default (dataset keys dotted)."""
    from ..config import TrainingConfig
    from ..data import DatasetConfig

    def defaults(cls: type) -> dict[str, Any]:
        found = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                found[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                found[f.name] = f.default_factory()
        return found

    top, nested = defaults(TrainingConfig), defaults(DatasetConfig)
    missing = object()
    keys = {k for k, v in config.items() if k != "dataset" and top.get(k, missing) != v}
    dataset = config.get("dataset")
    if isinstance(dataset, dict):
        keys |= {f"dataset.{k}" for k, v in dataset.items() if nested.get(k, missing) != v}
    elif dataset is not None:
        keys.add("dataset")
    return keys


def _run(record: TrainingRecord) -> list[tuple[str, str]]:
    """How the training ran: steps, time, processes, precision, best epoch (summary.json)."""
    summary = record.summary
    rows = [
        ("Optimizer steps", summary.get("total_steps")),
        ("Best epoch", summary.get("best_epoch")),
        ("Selected by", metric_name(str(summary["metric_for_best_model"])) if summary.get("metric_for_best_model") else None),
        ("Runtime", _runtime(summary)),
        ("Processes", summary.get("world_size")),
        ("Mixed precision", summary.get("mixed_precision")),
    ]
    return [(name, value_text(value)) for name, value in rows if value is not None]


def _runtime(summary: dict[str, Any]) -> str | None:
    """Training-loop time, plus the set-up (data, model, feature cache) when the record has it."""
    loop, setup = summary.get("runtime_s"), summary.get("setup_s")
    if not isinstance(loop, (int, float)):
        return None
    if isinstance(setup, (int, float)):
        return f"{loop:.1f} s training loop, after {setup:.1f} s set-up (data, model, feature cache)"
    return f"{loop:.1f} s training loop"


def _distillation(record: TrainingRecord, student_parameters: int | None, student_results: dict[str, Any]) -> dict[str, Any] | None:
    """A distilled model's teacher (linked when a Hub ID), settings, data, and teacher vs student results, size, latency."""
    facts = record.summary.get("distillation")
    if not isinstance(facts, dict):
        return None
    teacher = str(facts.get("teacher") or "unknown")
    shown = f"[{teacher}](https://huggingface.co/{teacher})" if is_hub_id(teacher) else f"`{local_name(teacher)}` (a local folder)"
    layers = facts.get("teacher_layers")
    teacher_results = facts.get("teacher_results") or {}
    compared = [
        (metric_name(k), number(v, k), number(student_results.get(k), k))
        for k, v in teacher_results.items()
        if is_number(v) and k != "eval_samples"
    ]
    latency = facts.get("cpu_latency") or {}
    teacher_ms, student_ms = latency.get("teacher_ms"), latency.get("student_ms")
    speedup = teacher_ms / student_ms if is_number(teacher_ms) and is_number(student_ms) and student_ms > 0 else None
    teacher_params = facts.get("teacher_parameters")
    return {
        "teacher": shown,
        "alpha": value_text(facts.get("alpha")),
        "alpha_value": facts.get("alpha"),
        "temperature": value_text(facts.get("temperature")),
        "layers": ", ".join(map(str, layers)) if isinstance(layers, list) else None,
        "labeled": facts.get("labeled_examples"),
        "unlabeled": facts.get("unlabeled_examples") or 0,
        "unlabeled_source": public_file(str(facts["unlabeled_source"]), None) if facts.get("unlabeled_source") else None,
        "cached": facts.get("teacher_outputs_cached"),
        "teacher_unused": facts.get("teacher_outputs_from") == "unused",
        "compared": compared,
        "parameters": (teacher_params, student_parameters) if is_number(teacher_params) and student_parameters else None,
        "latency": {"teacher": teacher_ms, "student": student_ms, "speedup": speedup, "batch": latency.get("batch"),
                    "threads": latency.get("threads")} if speedup else None,
    }


# --------------------------------------------------------------------------- training data


def _data(record: TrainingRecord, modality: str) -> dict[str, Any] | None:
    """Where the training data came from and how much of it was used."""
    dataset = record.config.get("dataset") or {}
    path = dataset.get("path") or record.summary.get("dataset")
    if not path and not record.summary:
        return None
    path = str(path) if path else None
    hub_id = path if path and is_hub_dataset(path, dataset) else None
    skipped = list(record.summary.get("skipped_files") or [])
    return {
        "path": public_dataset_path(path) if path else None,
        "hub_id": hub_id,
        "name": dataset.get("name") or record.summary.get("dataset_name"),
        "train_split": dataset.get("train_split"),
        **_eval_source(dataset.get("eval_split"), record.summary.get("eval_split")),
        "train_samples": record.summary.get("train_samples"),
        "eval_samples": record.summary.get("eval_samples", record.eval_results.get("eval_samples")),
        "skipped": len(skipped) if skipped or modality == "image" else None,
        "skipped_preview": [public_file(str(s), path) for s in skipped[:10]],
        "columns": [
            (key, dataset[key]) for key in ("image_column", "text_column", "label_column") if dataset.get(key)
        ],
        "label": (local_name(path) or path) if path and not hub_id else hub_id,
    }


# --------------------------------------------------------------------------- results


def _epochs(record: TrainingRecord, main_key: str | None) -> dict[str, Any] | None:
    """The per-epoch table: a header and one row of formatted cells per epoch (step and eval rows are plotted)."""
    epoch_rows = split_rows(record.metrics)[0]
    if not epoch_rows:
        return None
    keys: list[str] = []
    for row in epoch_rows:
        keys += [k for k in row if k not in keys and k != "eval_samples" and is_number(row[k])]
    first = [k for k in ("epoch", "step", "train_loss", "eval_loss") if k in keys]
    evals = sorted((k for k in keys if k.startswith("eval_") and k not in first), key=lambda k: (k != main_key, k))
    rest = [k for k in keys if k not in first and k not in evals]
    columns = first + evals + rest
    best = record.summary.get("best_epoch")
    rows = []
    for row in epoch_rows:
        cells = [number(row.get(k), k) for k in columns]
        if best is not None and row.get("epoch") == best and "epoch" in columns:
            cells[columns.index("epoch")] += " (best)"
        rows.append(cells)
    header = [EPOCH_COLUMNS.get(k) or metric_name(k) for k in columns]
    return {"header": header, "rows": rows, "best": best}


def _logged(record: TrainingRecord) -> dict[str, Any] | None:
    """What metrics.jsonl holds besides the epoch rows: the training loss every few steps and in-epoch evaluations."""
    _, steps, evals = split_rows(record.metrics)
    if not steps and not evals:
        return None
    every = record.config.get("logging_steps")
    return {"steps": len(steps), "every": every if is_number(every) else None, "evals": len(evals)}


def _final(eval_results: dict[str, Any]) -> dict[str, Any] | None:
    """The final evaluation: overall metrics, per-class figures and the confusion matrix, formatted."""
    if not eval_results:
        return None
    metrics = [
        (metric_name(k), number(v, k))
        for k, v in eval_results.items()
        if k.startswith("eval_") and k not in ("eval_samples", "eval_per_class", "eval_confusion_matrix") and is_number(v)
    ]
    per_class = [
        {
            "label": str(label),
            **{m: number(figures.get(m), m) for m in ("precision", "recall", "f1")},
            "support": number(figures.get("support"), "support"),
        }
        for label, figures in (eval_results.get("eval_per_class") or {}).items()
        if isinstance(figures, dict)
    ]
    matrix = eval_results.get("eval_confusion_matrix")
    labels = [str(label) for label in eval_results.get("labels") or []]
    confusion = None
    if matrix and labels and len(matrix) == len(labels) and len(labels) <= 20:
        confusion = {"labels": labels, "rows": [[str(int(c)) for c in row] for row in matrix]}
    return {
        "metrics": metrics,
        "samples": eval_results.get("eval_samples"),
        "epoch": eval_results.get("epoch"),
        "per_class": per_class,
        "confusion": confusion,
    }


# --------------------------------------------------------------------------- versions


def _versions(config: dict[str, Any], record: TrainingRecord) -> list[tuple[str, str]]:
    """Library versions that trained the model (summary.json), else those that saved it and render this card."""
    versions = record.summary.get("versions") or {}
    if versions:
        return [(name, str(v)) for name, v in versions.items() if v is not None]
    here = library_versions()
    here.pop("hubtl", None)
    python = here.pop("python", platform.python_version())
    return [
        ("hubtl (saved the model)", str(config.get("hubtl_version") or "unknown")),
        ("hubtl (wrote this card)", __version__),
        *here.items(),
        ("python", python),
    ]


def _eval_source(configured: Any, used: Any) -> dict[str, Any]:
    """The card's `eval_split` (a split of the data) or `eval_carved_from` (the split a part was carved out of)."""
    carved = isinstance(used, str) and used.endswith(" (carved out)")
    return {
        "eval_split": configured or (used if isinstance(used, str) and not carved else None),
        "eval_carved_from": used.removesuffix(" (carved out)") if carved and not configured else None,
    }
