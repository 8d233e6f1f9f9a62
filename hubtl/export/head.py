"""What a TransferModel's head and task mean for another library's classifier: its linear layers, the task's semantics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from ..errors import ExportError
from ..tasks import Classification, MultiLabel, Regression, get_task

if TYPE_CHECKING:
    from ..model import TransferModel


def task_kind(model: TransferModel, library: str) -> str:
    """'classification', 'multi_label' or 'regression' (registered subclasses count as their base task)."""
    task = get_task(model.task)
    for kind in (MultiLabel, Regression, Classification):
        if isinstance(task, kind):
            return kind.name
    raise ExportError(
        f"The task {model.task!r} is not a classification, multi-label or regression task, so {library} would not know "
        "what its outputs mean. Export with --format onnx, which keeps the raw logits and names the task."
    )


def task_notes(model: TransferModel, kind: str) -> list[str]:
    """What a user of the export must do with the outputs that the format itself cannot say."""
    if kind == "multi_label":
        return [
            "multi-label model: the outputs are one independent logit per label; apply a sigmoid and the threshold "
            f"{model.threshold} (as hubtl's predict does), not a softmax"
        ]
    if kind == "regression":
        return ["regression model: the outputs are the predicted values themselves; apply no softmax or sigmoid"]
    return []


def head_layers(model: TransferModel) -> list[nn.Linear]:
    """The head's linear layers, input to output (one, or two with a hidden layer)."""
    return [m for m in model.head.layers if isinstance(m, nn.Linear)]


def require_linear_head(model: TransferModel, library: str) -> nn.Linear:
    """The head's single linear layer, or an ExportError when it has a hidden layer the library's classifier lacks."""
    layers = head_layers(model)
    if len(layers) != 1:
        config = model.head.config
        raise ExportError(
            f"{library}'s classifier is one linear layer, but this model's head has a hidden layer ({config.in_features} "
            f"-> {config.hidden_dim} -> {config.num_outputs}, {config.activation}), which {library} cannot express. Export "
            "with --format onnx (any head), or train with head_hidden_dim: null (a linear head) to export to "
            f"{library}."
        )
    return layers[0]
