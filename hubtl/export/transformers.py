"""Export to an `AutoModelForSequenceClassification` folder that `pipeline("text-classification", model=DIR)` runs.

Only where a stock `*ForSequenceClassification` computes exactly what hubtl's backbone pooling and head compute
(at inference, where dropout is the identity): BERT-style models classify their pooler's output with one
linear layer (hubtl: `pooling: pooler`, a linear head); RoBERTa-, ELECTRA- and DistilBERT-style models put a
hidden layer with a fixed activation on the first token (hubtl: `pooling: cls`, `hidden_dim` set, that
activation). Everything else is refused, naming the pooling to train with or the ONNX export.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import ExportError
from .base import Exporter, ExportResult
from .head import head_layers, task_kind, task_notes
from .readme import write_readme
from .samples import check_inputs, require_close

if TYPE_CHECKING:
    from ..model import TransferModel

#: max |logit difference| allowed between hubtl and the transformers model (float32, the same operations)
ATOL = 1e-5
#: transformers' `problem_type` of each hubtl task kind (what the pipeline's scores and the training loss follow)
PROBLEM_TYPES = {
    "classification": "single_label_classification",
    "multi_label": "multi_label_classification",
    "regression": "regression",
}
_ONNX = "Export with --format onnx instead (any pooling and head)."


@dataclass(frozen=True)
class StockHead:
    """What a model type's stock `*ForSequenceClassification` computes on the encoder's output, in hubtl's terms."""

    #: the hubtl pooling it classifies: "pooler" (the encoder's pooler output) or "cls" (the first token's hidden state)
    pooling: str
    #: the activation of its hidden layer ("tanh", "gelu", "relu"), or None for a single linear layer
    activation: str | None
    #: where the head's linear layers go, input to output
    layers: tuple[str, ...]

    def describe(self) -> str:
        """'dropout -> Linear on the pooler output', for messages."""
        source = "the pooler output" if self.pooling == "pooler" else "the first token's hidden state"
        if self.activation is None:
            return f"dropout -> Linear on {source}"
        return f"dropout -> Linear -> {self.activation} -> dropout -> Linear on {source}"


_ROBERTA_HEAD = StockHead("cls", "tanh", ("classifier.dense", "classifier.out_proj"))
#: model_type -> its stock sequence classifier; checked numerically at every export, so an entry can only be exact
STOCK_HEADS: dict[str, StockHead] = {
    "bert": StockHead("pooler", None, ("classifier",)),
    "albert": StockHead("pooler", None, ("classifier",)),
    "distilbert": StockHead("cls", "relu", ("pre_classifier", "classifier")),
    "roberta": _ROBERTA_HEAD,
    "xlm-roberta": _ROBERTA_HEAD,
    "camembert": _ROBERTA_HEAD,
    "electra": StockHead("cls", "gelu", ("classifier.dense", "classifier.out_proj")),
}


class TransformersExporter(Exporter):
    """A text classifier on a transformers encoder, as a stock `AutoModelForSequenceClassification` with its tokenizer."""

    name = "transformers"
    library = "transformers"

    def export(self, model: TransferModel, staging: Path, **options: Any) -> ExportResult:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if options:
            raise ExportError(f"The transformers export takes no options; got {', '.join(sorted(options))}.")
        source = _source(model)
        kind = task_kind(model, "transformers")
        encoder, tokenizer = source["model"], copy.deepcopy(source["tokenizer"])
        model_type = getattr(encoder.config, "model_type", None)
        stock = _stock_head(model, model_type, source["pooling"])
        if model.preprocessor(train=False).config().get("do_lower_case"):
            raise ExportError(
                "This model lower-cases texts before its tokenizer does, which a transformers tokenizer would not "
                f"repeat. {_ONNX}"
            )

        full = _build(model, encoder, stock, kind)
        texts = check_inputs("text")
        batch = model.preprocessor(train=False)(texts)
        ours = model(batch)
        inputs = {k: v for k, v in batch.items() if k in _forward_inputs(full)}
        require_close(ours, full(**inputs).logits, ATOL, f"transformers' {type(full).__name__}", _ONNX)

        tokenizer.model_max_length = int(source["max_length"])  # so pipeline(..., truncation=True) cuts where hubtl does
        full.save_pretrained(staging)
        tokenizer.save_pretrained(staging)

        loaded = AutoModelForSequenceClassification.from_pretrained(staging).eval()
        reloaded = AutoTokenizer.from_pretrained(staging)(texts, padding=True, truncation=True, return_tensors="pt")
        for key, value in batch.items():
            if key in reloaded and not torch.equal(reloaded[key], value):
                raise ExportError(f"The saved tokenizer gives different {key} than hubtl's preprocessing. {_ONNX}")
        diff = require_close(
            ours,
            loaded(**{k: v for k, v in reloaded.items() if k in _forward_inputs(loaded)}).logits,
            ATOL,
            f"The written folder, loaded by AutoModelForSequenceClassification ({type(loaded).__name__})",
            _ONNX,
        )
        notes = task_notes(model, kind) + [
            f"texts longer than {source['max_length']} tokens: call the pipeline with truncation=True, as hubtl truncates"
        ]
        write_readme(
            staging,
            {"library_name": "transformers", "pipeline_tag": "text-classification", "tags": ["text-classification", "hubtl"]},
            f"{type(full).__name__} ({kind.replace('_', '-')}, {model.head.config.num_outputs} outputs)",
            _USAGE,
            f"At export, this folder loaded back with `AutoModelForSequenceClassification` and `AutoTokenizer` gave "
            f"hubtl's logits within {ATOL:g} (max |difference| {diff:.2g}) on {len(texts)} check texts, and the "
            f"same token ids. The stock head computes {stock.describe()}, as the hubtl model did.",
            notes,
        )
        return ExportResult(self.name, staging, diff, len(texts), notes)


def _source(model: TransferModel) -> dict[str, Any]:
    """The backbone's encoder, tokenizer, pooling and max length, or an ExportError saying why there are none."""
    backbone = model.backbone
    plugin = backbone.spec().get("plugin")
    if "transformers" not in getattr(backbone, "export_formats", ()):
        raise ExportError(
            f"The backbone comes from the {plugin!r} plugin, which does not declare a transformers export (backbones of "
            f"the transformers plugin do). {_ONNX}"
        )
    source = backbone.export_source("transformers")
    missing = [k for k in ("model", "tokenizer", "pooling", "max_length") if source.get(k) is None]
    if missing or not isinstance(source["model"], nn.Module) or not hasattr(source["model"], "config"):
        raise ExportError(
            f"The {plugin!r} plugin declares a transformers export but its export_source('transformers') lacks "
            f"{', '.join(missing) or 'a PreTrainedModel'}. Fix the plugin, or export with --format onnx."
        )
    return source


def _stock_head(model: TransferModel, model_type: str | None, pooling: str) -> StockHead:
    """The stock head this model matches exactly, or an ExportError naming the pooling and head that would."""
    stock = STOCK_HEADS.get(model_type or "")
    if stock is None:
        raise ExportError(
            f"hubtl maps no stock *ForSequenceClassification of model_type {model_type!r} exactly (it maps "
            f"{', '.join(sorted(STOCK_HEADS))}). {_ONNX}"
        )
    config = model.head.config
    activation = config.activation if config.hidden_dim else None
    if pooling == stock.pooling and activation == stock.activation:
        return stock
    train_with = f"backbone_kwargs {{pooling: {stock.pooling}}}" + (
        ", head_hidden_dim: null (a linear head)"
        if stock.activation is None
        else f", head_hidden_dim: {config.in_features} (a hidden layer with {stock.activation})"
    )
    ours = f"pooling: {pooling}, " + (f"a hidden layer ({config.activation})" if config.hidden_dim else "a linear head")
    raise ExportError(
        f"transformers' stock {model_type} sequence classifier computes {stock.describe()}; this model was trained with "
        f"{ours}, which no stock *ForSequenceClassification computes. Export it with --format onnx (works for any "
        f"pooling), or train with {train_with} to export it to transformers."
    )


def _build(model: TransferModel, encoder: nn.Module, stock: StockHead, kind: str) -> nn.Module:
    """The stock sequence classifier with the encoder's weights and the head's, in eval mode."""
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(encoder.config)
    config.num_labels = model.head.config.num_outputs
    if model.labels:
        config.id2label = dict(enumerate(model.labels))
        config.label2id = {label: i for i, label in enumerate(model.labels)}
    config.problem_type = PROBLEM_TYPES[kind]
    if hasattr(config, "classifier_dropout"):
        config.classifier_dropout = model.head.config.dropout  # what further fine-tuning in transformers would use
    full = AutoModelForSequenceClassification.from_config(config, trust_remote_code=False)
    base = full.base_model
    try:
        base.load_state_dict(encoder.state_dict(), strict=True)
    except RuntimeError as err:
        raise ExportError(
            f"The encoder's weights do not fit {type(full).__name__}'s {type(base).__name__} "
            f"({' '.join(str(err).split())[:300]}). {_ONNX}"
        ) from err
    layers = head_layers(model)
    for path, linear in zip(stock.layers, layers):
        target = full.get_submodule(path)
        if not isinstance(target, nn.Linear) or target.weight.shape != linear.weight.shape:
            raise ExportError(
                f"{type(full).__name__}.{path} is not a linear layer of the head's shape {list(linear.weight.shape)}. {_ONNX}"
            )
        target.weight.data.copy_(linear.weight.detach())
        target.bias.data.copy_(linear.bias.detach())
    return full.eval()


def _forward_inputs(module: nn.Module) -> set[str]:
    """The keyword arguments a model's forward takes (DistilBERT takes no token_type_ids)."""
    import inspect

    return set(inspect.signature(module.forward).parameters)


_USAGE = """```python
from transformers import pipeline

classifier = pipeline("text-classification", model="NAMESPACE/NAME")   # this repo, or the local folder
print(classifier("A quiet, funny and finally moving film.", truncation=True))
```"""
