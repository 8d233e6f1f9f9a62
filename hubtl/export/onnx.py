"""Export to ONNX: model.onnx (dynamic batch, and sequence for text), preprocessor.json and config.json.

The exporter is torch's `torch.export`-based one (`dynamo=True`, which needs onnxscript: the `onnx` extra),
chosen deliberately over the TorchScript tracer: tracing turns tensor conditions into Python constants (in
transformers 5 the attention-mask code does this, so a trace can bake in whether the sample batch was padded),
and torch deprecates it. The graph is checked with onnxruntime on inputs of another batch size and length
than it was exported with, and the consumer code in `onnx_consumer` (the README's usage) must reproduce
hubtl's preprocessing, before anything is written.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import ExportError
from ..tasks import get_task
from ..version import __version__
from . import onnx_consumer
from .base import Exporter, ExportResult
from .evaluate import evaluate
from .readme import write_readme
from .samples import check_inputs, max_difference, require_close

if TYPE_CHECKING:
    from ..model import TransferModel

logger = logging.getLogger("hubtl")

#: max |logit difference| allowed between hubtl (PyTorch) and ONNX Runtime, float32
ATOL = 1e-4
MODEL_FILE = "model.onnx"
QUANTIZED_FILE = "model_quantized.onnx"
PREPROCESSOR_FILE = "preprocessor.json"
QUANTIZATION_MODES = ("dynamic",)
#: how many check inputs the graph is exported with; it is verified on all of them (another batch size and length)
TRACE_INPUTS = 2


class _Logits(nn.Module):
    """The model as a function of positional tensors (the preprocessor's outputs, in order) to logits."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(dict(zip(self.names, tensors)))


class OnnxExporter(Exporter):
    """Any traceable TransferModel as an ONNX graph that ONNX Runtime runs without hubtl or torch."""

    name = "onnx"
    library = "onnxruntime"

    def export(
        self,
        model: TransferModel,
        staging: Path,
        quantize: str | None = None,
        eval_file: str | Path | None = None,
        opset: int | None = None,
        **options: Any,
    ) -> ExportResult:
        if options:
            raise ExportError(f"Unknown ONNX export options: {', '.join(sorted(options))} (quantize, eval_file, opset).")
        if quantize is not None and quantize not in QUANTIZATION_MODES:
            raise ExportError(f"--quantize must be one of {', '.join(QUANTIZATION_MODES)}; got {quantize!r}.")
        modality = model.backbone.modality
        inputs = check_inputs(modality)
        preprocess = model.preprocessor(train=False)
        trace_batch, batch = preprocess(inputs[:TRACE_INPUTS]), preprocess(inputs)
        ours = model(batch)
        opset = opset or supported_opset()
        path = staging / MODEL_FILE
        _export_graph(model, trace_batch, modality, path, opset)

        session = _session(path)
        names = [i.name for i in session.get_inputs()]
        diff = require_close(
            ours,
            _checked_run(session, batch, names),
            ATOL,
            "ONNX Runtime running the exported graph",
            "The backbone's forward may hold shape-specialised code; report it to the plugin's authors.",
        )
        config = _config(model, names, opset)
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        notes = _write_preprocessing(model, staging, inputs, batch, names)
        evaluation = None
        if quantize:
            quantized = staging / QUANTIZED_FILE
            _quantize(path, quantized)
            q_logits = _checked_run(_session(quantized), batch, names)
            config["quantized"] = {
                "file": QUANTIZED_FILE,
                "mode": quantize,
                "weights": "int8",
                "max_abs_logit_change_on_check_inputs": max_difference(ours, q_logits),
            }
            notes.append(
                f"{QUANTIZED_FILE} is {quantize} int8 quantised (onnxruntime.quantization.quantize_dynamic): int8 weights, "
                "activations quantised at run time; not exact (max |logit change| "
                f"{config['quantized']['max_abs_logit_change_on_check_inputs']:.3g} on the check inputs); whether it is "
                "faster depends on the model (matrix products gain, convolutions may not)"
            )
        if eval_file is not None:
            models = {"ONNX Runtime fp32": path, **({"ONNX Runtime int8": staging / QUANTIZED_FILE} if quantize else {})}
            evaluation = evaluate(model, eval_file, {k: _runner(v, names) for k, v in models.items()})
            config["evaluation"] = evaluation
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        write_readme(
            staging,
            {"library_name": "onnx", "pipeline_tag": get_task(model.task).pipeline_tag(modality), "tags": ["onnx", "hubtl"]},
            f"ONNX export ({modality} {model.task.replace('_', '-')}, {model.head.config.num_outputs} outputs)",
            _usage(modality),
            f"At export, ONNX Runtime {_ort_version()} ran `{MODEL_FILE}` (opset {opset}, exported with batch "
            f"{TRACE_INPUTS}, checked with batch {len(inputs)}) on {len(inputs)} check inputs, preprocessed by the code "
            f"above, and gave hubtl's PyTorch logits within {ATOL:g} (max |difference| {diff:.2g}).",
            notes,
            evaluation,
        )
        return ExportResult(self.name, staging, diff, len(inputs), notes, evaluation)


@functools.lru_cache(maxsize=1)
def supported_opset() -> int:
    """The newest ONNX opset both torch's exporter targets by default and the installed onnxruntime runs."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper

    target = int(getattr(getattr(torch.onnx, "_constants", None), "ONNX_DEFAULT_OPSET", 18))
    for version in range(target, 6, -1):
        graph = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "probe",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        )
        probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", version)], ir_version=7)
        try:
            onnxruntime.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - an opset this onnxruntime does not run
            continue
        onnx.checker.check_model(probe)
        return version
    raise ExportError(f"onnxruntime {_ort_version()} runs no ONNX opset from {target} down; upgrade onnxruntime.")


def _export_graph(model: TransferModel, batch: dict[str, torch.Tensor], modality: str, path: Path, opset: int) -> None:
    """torch.onnx.export (torch.export-based) with a dynamic batch axis, and a dynamic sequence axis for text."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401  (torch's exporter needs it; say so here rather than deep inside torch)
    except ImportError as err:
        raise ExportError(f"The ONNX export needs onnx and onnxscript: pip install 'hubtl[onnx]' ({err}).") from err
    from torch.export import Dim

    names = list(batch)
    batch_dim = Dim("batch")
    sequence = Dim("sequence")
    shapes = tuple({0: batch_dim, 1: sequence} if modality == "text" and batch[n].ndim >= 2 else {0: batch_dim} for n in names)
    log = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Logits(model, names).eval(),
                tuple(batch[n] for n in names),
                str(path),
                input_names=names,
                output_names=["logits"],
                dynamic_shapes=(shapes,),
                opset_version=opset,
                dynamo=True,
                external_data=_too_big_for_one_file(model),
                verbose=False,
            )
    except Exception as err:  # noqa: BLE001 - any tracing failure becomes one clear refusal
        tail = " ".join(str(err).split())[:600]
        raise ExportError(
            f"torch.export could not trace this model for ONNX ({type(err).__name__}: {tail}). The backbone's forward "
            "must be traceable (no data-dependent Python control flow, no tensor -> Python conversions); the timm and "
            "transformers plugins are."
        ) from err


def _too_big_for_one_file(model: nn.Module) -> bool:
    """True when the weights approach protobuf's 2 GB limit, so they go to model.onnx.data beside the graph."""
    return sum(p.numel() * p.element_size() for p in model.parameters()) > 1_800_000_000


def _session(path: Path) -> Any:
    """An onnxruntime CPU session, with an ExportError if it cannot load the graph."""
    import onnxruntime

    try:
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"onnxruntime {_ort_version()} cannot load the exported graph: {err}") from err


def _checked_run(session: Any, batch: dict[str, torch.Tensor], names: list[str]) -> np.ndarray:
    """The exported graph's logits on the check batch (another batch size, other text lengths than the export's);
    an ExportError when ONNX Runtime refuses it: the exporter fixed a dimension that must vary."""
    try:
        return session.run(["logits"], {n: batch[n].numpy() for n in names})[0]
    except Exception as err:  # noqa: BLE001 - onnxruntime's own exception types
        tail = " ".join(str(err).split())[:400]
        raise ExportError(
            f"ONNX Runtime cannot run the exported graph on inputs of another shape than the export's ({tail}). "
            "torch's exporter fixed a dimension that must vary (the batch, or the text length): the backbone's "
            "forward specialises on it (recurrent layers such as nn.GRU / nn.LSTM do under torch.export). Nothing "
            "was written; use the timm or transformers export, or report it to the plugin's authors."
        ) from err


def _runner(path: Path, names: list[str]) -> Any:
    """A function from a preprocessed batch to numpy logits, on an onnxruntime session of `path`."""
    session = _session(path)
    return lambda batch: session.run(["logits"], {n: batch[n].numpy() for n in names})[0]


@contextlib.contextmanager
def _working_directory(path: str) -> Iterator[None]:
    """Run the body with `path` as the working directory (restored after)."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _quantize(source: Path, target: Path) -> None:
    """onnxruntime's dynamic int8 quantisation (int8 weights, activations quantised at run time), after its pre-processing."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    log = io.StringIO()
    source, target = source.absolute(), target.absolute()
    # onnxruntime's tools write scratch files (sym_shape_infer_temp.onnx, <uuid>.data) into the working directory
    with tempfile.TemporaryDirectory(prefix="hubtl-quantize-") as tmp, _working_directory(tmp):
        prepared = Path(tmp) / "prepared.onnx"
        try:
            with contextlib.redirect_stdout(log), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quant_pre_process(str(source), str(prepared))  # shape inference and graph optimisation, as onnxruntime advises
        except Exception as err:  # noqa: BLE001 - quantising the graph as exported still works
            logger.debug("onnxruntime's quantisation pre-processing failed (%s); quantising the graph as exported.", err)
            prepared = source
        try:
            with contextlib.redirect_stdout(log), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8)
        except Exception as err:  # noqa: BLE001
            raise ExportError(f"onnxruntime could not quantise the graph ({type(err).__name__}: {err}).") from err


def _write_preprocessing(
    model: TransferModel, staging: Path, inputs: list[Any], batch: dict[str, torch.Tensor], names: list[str]
) -> list[str]:
    """Write preprocessor.json (and the tokenizer's files); check onnx_consumer reproduces hubtl's preprocessing."""
    preprocessor = model.preprocessor(train=False)
    config = dict(preprocessor.config())
    notes: list[str] = []
    if config.get("type") == "text":
        preprocessor.save_files(staging)
        tokenizer = getattr(preprocessor, "tokenizer", None)
        if not (staging / "tokenizer.json").is_file():
            raise ExportError(
                "The text preprocessor wrote no tokenizer.json (Preprocessor.save_files), so nothing without hubtl could "
                "tokenize for the ONNX model. Use a fast (tokenizers-backed) tokenizer, or a plugin whose preprocessor "
                "saves one."
            )
        if tokenizer is None or not hasattr(tokenizer, "pad_token") or not hasattr(tokenizer, "pad_token_id"):
            raise ExportError(
                f"The text preprocessor {type(preprocessor).__name__} has no `tokenizer` attribute with pad_token and "
                "pad_token_id, which the ONNX export's preprocessing code pads with. Give it one (a transformers "
                "tokenizer has them; see docs/writing-plugins.md, 'Exporting')."
            )
        config.update(
            tokenizer_file="tokenizer.json",
            pad_token=tokenizer.pad_token,
            pad_token_id=tokenizer.pad_token_id,
            pad_token_type_id=getattr(tokenizer, "pad_token_type_id", 0),
            padding_side=getattr(tokenizer, "padding_side", "right"),
            truncation_side=getattr(tokenizer, "truncation_side", "right"),
        )
    (staging / PREPROCESSOR_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    try:
        consumer = onnx_consumer.OnnxClassifier(staging)
        theirs = consumer.preprocess(inputs)
    except Exception as err:  # noqa: BLE001 - a preprocessing the reference code does not cover
        theirs, reason = None, f"{type(err).__name__}: {err}"
    else:
        reason = None
        for name in names:
            if name not in theirs or max_difference(batch[name], theirs[name]) > 1e-6:
                reason = f"its {name} differ from hubtl's by {max_difference(batch[name], theirs.get(name, np.zeros(0)))}"
                break
    if reason:
        notes.append(
            f"the usage code below does not reproduce this model's preprocessing ({reason}); preprocessor.json records "
            "hubtl's settings"
        )
        logger.warning("ONNX export: %s.", notes[-1])
    return notes


def _config(model: TransferModel, names: list[str], opset: int) -> dict[str, Any]:
    """config.json of the export: task, labels, inputs and outputs (not a hubtl model: library_name is onnx)."""
    return {
        "library_name": "onnx",
        "format": "onnx",
        "exported_by": f"hubtl {__version__}",
        "task": model.task,
        "modality": model.backbone.modality,
        "num_outputs": model.head.config.num_outputs,
        "id2label": {str(i): label for i, label in model.id2label.items()},
        "label2id": model.label2id,
        "threshold": model.threshold,
        "model_file": MODEL_FILE,
        "opset": opset,
        "inputs": names,
        "outputs": ["logits"],
        "dynamic_axes": {n: (["batch", "sequence"] if model.backbone.modality == "text" else ["batch"]) for n in names},
    }


def _ort_version() -> str:
    """The installed onnxruntime's version."""
    import onnxruntime

    return onnxruntime.__version__


def _usage(modality: str) -> str:
    """The README's usage: the consumer module's own source, then a call."""
    source = inspect.getsource(onnx_consumer)
    example = (
        'model = OnnxClassifier("DIR")             # this folder\nprint(model.predict(["photo.jpg"]))       # PIL images or paths'
        if modality == "image"
        else 'model = OnnxClassifier("DIR")             # this folder\nprint(model.predict(["A quiet, funny film."]))'
    )
    needs = "numpy pillow onnxruntime" if modality == "image" else "numpy onnxruntime tokenizers"
    return (
        f"Needs only `pip install {needs}` (no torch, no hubtl). `model_quantized.onnx`, when present, loads with "
        f'`OnnxClassifier("DIR", "model_quantized.onnx")`.\n\n```python\n{source.rstrip()}\n\n\n{example}\n```'
    )
