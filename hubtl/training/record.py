"""The training record as the trainer keeps it: step, evaluation and epoch rows, what the trackers get, the kept epoch.

The files themselves (training/metrics.jsonl, summary.json, ...) are written through `hubtl.layout.TrainingRecord`.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..layout import library_versions
from .checkpoints import TrainerState

#: Keys of a row that are metrics (what the trackers plot); the step, sample counts and timings are not.
_TRACKED = ("loss", "train_loss", "learning_rate", "train_samples_per_second")


def metric_rows(state: TrainerState) -> list[dict[str, Any]]:
    """metrics.jsonl's rows: step and evaluation records and epoch rows, in step order (the epoch row last)."""
    return sorted([*state.log, *state.history], key=lambda r: (r["step"], r["kind"] == "epoch"))


def tracker_metrics(row: dict[str, Any]) -> dict[str, Any]:
    """The metrics of a row for TensorBoard & co: losses, learning rate, throughput of steps, eval_* results."""
    wanted = _TRACKED if row.get("kind") == "step" else ("train_loss", "learning_rate")
    return {k: v for k, v in row.items() if k in wanted or (k.startswith("eval_") and k != "eval_samples")}


def kept_epoch_message(state: TrainerState, metric: str) -> str:
    """Which epoch's weights are saved, and why (the console's last word on a run)."""
    if not state.best_epoch or not state.best_results:
        return "Kept the weights of the last step (no evaluation finished)."
    value = state.best_results[metric]
    tied = [r["epoch"] for r in state.history if r.get(metric) == value and r["epoch"] != state.best_epoch]
    why = f"best {metric} {value:.4g}"
    if tied and metric != "eval_loss":
        why += f", tied with epoch(s) {', '.join(map(str, tied))}: lowest eval_loss {state.best_results['eval_loss']:.4g}"
    elif tied:
        why += f", tied with epoch(s) {', '.join(map(str, tied))}: the later one"
    return f"Kept the weights of epoch {state.best_epoch} of {len(state.history)} ({why})."


def trackers(report_to: str | list[str]) -> list[str]:
    """The Accelerate trackers a run logs to, as transformers reads `report_to`: names (a list, or a string with
    commas), 'none', 'all' (every installed one) or 'auto' (TensorBoard when installed)."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    names = [n.strip() for n in report_to.split(",")] if isinstance(report_to, str) else list(report_to)
    names = [n for n in names if n and n != "none"]
    installed = [str(getattr(t, "value", t)) for t in get_available_trackers()]
    if names in (["auto"], ["all"]):
        return [n for n in installed if n == "tensorboard" or names == ["all"]]
    unknown = [n for n in names if n not in LOGGER_TYPE_TO_CLASS]
    if unknown:
        raise ConfigError(f"report_to: unknown tracker(s) {', '.join(map(repr, unknown))}; use none, auto, all or "
                          f"some of {', '.join(LOGGER_TYPE_TO_CLASS)}.")  # fmt: skip
    missing = [n for n in names if n not in installed]
    if missing:
        raise ConfigError(f"report_to: {', '.join(missing)} is not installed; `pip install {' '.join(missing)}`, "
                          "or leave it out of report_to.")  # fmt: skip
    return list(dict.fromkeys(names))


def flat_hparams(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten the config into scalars for the trackers' hyperparameters (TensorBoard's hparams take no lists)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flat_hparams(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float, str, bool)):
            flat[prefix + key] = value
        elif value is not None:
            flat[prefix + key] = str(value)
    return flat


def run_summary(trainer: Any, runtime: float) -> dict[str, Any]:
    """summary.json: the facts of a finished run that the model card reports (`trainer` is the `Trainer`)."""
    cfg = trainer.cfg
    return {
        "dataset": cfg.dataset.path,
        "dataset_name": cfg.dataset.name,
        "train_samples": len(trainer.data.train) if hasattr(trainer.data.train, "__len__") else None,  # None: streamed
        "eval_samples": len(trainer.data.eval),
        "eval_split": getattr(trainer.data, "eval_split", None),  # the split used, or "<train> (carved out)"
        "skipped_files": trainer.data.skipped,
        "strategy": cfg.strategy,
        "base_model": trainer.base_model,
        "trainable_parameters": _trained_parameters(trainer),
        "total_parameters": trainer.parameter_counts[1],
        "config_keys_set": getattr(cfg, "keys_set", None),
        "feature_cache": trainer.use_cache,
        "feature_sources": dict(trainer.feature_sources),
        "best_epoch": trainer.state.best_epoch,
        "metric_for_best_model": trainer.metric,
        "total_steps": trainer.state.global_step,
        "runtime_s": round(runtime, 2),
        "setup_s": round(trainer.setup_seconds, 2),
        "phase_seconds": {k: round(v, 3) for k, v in trainer.phases.items()},
        "world_size": trainer.accelerator.num_processes,
        "mixed_precision": trainer.precision,  # what the run computed in (fp16 is float32 on a CPU)
        "versions": library_versions(),
        # a backbone written by `hubtl pretrain` (hubtl-pretrained:...): the chain base model -> it -> this model
        "pretrained_from": getattr(getattr(trainer.model, "backbone", None), "pretrained_from", None),
        **trainer.train_objective.summary(),
        **getattr(trainer, "extra_summary", {}),
    }


def _trained_parameters(trainer: Any) -> int:
    """Parameters that trained up to the kept epoch: all the trainable ones, less those a schedule still held then
    (gradual unfreezing: a kept first epoch trained the head alone)."""
    trainable = trainer.parameter_counts[0]
    kept = (trainer.state.best_epoch or trainer.state.epoch) - 1  # 0-based index of the epoch whose weights were kept
    if kept < 0:
        return trainable
    return trainable - trainer.strategy.held_count(trainer.model, kept, trainer.cfg)
