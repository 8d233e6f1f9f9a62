"""The card's YAML metadata the Hub reads: library, tags, pipeline tag, base model, datasets and the model-index."""

from __future__ import annotations

import math
from typing import Any

from ..layout import TrainingRecord
from ..tasks import Task
from .formatting import METRICS, is_number, metric_name

#: Metrics that are bookkeeping rather than results: kept out of the model-index.
_NOT_RESULTS = ("eval_loss", "eval_samples", "eval_runtime", "eval_per_class", "eval_confusion_matrix")


def card_data(context: dict[str, Any], record: TrainingRecord, task: Task) -> Any:
    """The metadata as a `ModelCardData`, from the card's context, the final evaluation and the task's Hub wording."""
    from huggingface_hub import ModelCardData

    modality = context["modality"]
    pipeline_tag = task.pipeline_tag(modality)
    tags = ["hubtl", "transfer-learning", context["backbone"]["plugin"], modality, pipeline_tag, *task.tags()]
    data = context["data"] or {}
    results = _eval_results(context, record, pipeline_tag or context["task"])
    chain = {"pretrained_from": context["backbone"]["pretrained_from"]} if context["backbone"].get("pretrained_from") else {}
    return ModelCardData(
        **chain,
        library_name="hubtl",
        license=context["license"] or None,
        tags=list(dict.fromkeys(t for t in tags if t)),
        base_model=context["backbone"]["base_model"],
        datasets=[data["hub_id"]] if data.get("hub_id") else None,
        metrics=list(dict.fromkeys(r.metric_type for r in results)) or None,
        pipeline_tag=pipeline_tag,
        model_name=context["model_name"] if results else None,
        eval_results=results or None,
    )


def _eval_results(context: dict[str, Any], record: TrainingRecord, task_type: str) -> list[Any]:
    """The model-index: one `EvalResult` per finite result metric of the final evaluation."""
    from huggingface_hub import EvalResult

    data = context["data"] or {}
    results = []
    for key, value in record.eval_results.items():
        if key in _NOT_RESULTS or not key.startswith("eval_") or key.endswith("_per_second"):
            continue
        if not is_number(value) or not math.isfinite(value):
            continue
        metric_type, name, metric_args = METRICS.get(key, (key[5:], metric_name(key), None))
        results.append(
            EvalResult(
                task_type=task_type,
                task_name=context["task_phrase"].capitalize(),
                dataset_type=data.get("hub_id") or data.get("label") or "unknown",
                dataset_name=data.get("label") or "unknown",
                dataset_config=data.get("name") or None,
                dataset_split=data.get("eval_split") or None,
                metric_type=metric_type,
                metric_name=name,
                metric_value=value,
                metric_args=metric_args,
            )
        )
    return results

