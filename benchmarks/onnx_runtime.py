"""8. ONNX Runtime vs PyTorch, CPU inference: a hubtl model exported with `hubtl export --format onnx`, same batches.

PyTorch side: the hubtl model loaded with `TransferModel.from_pretrained`, `model(batch)` under
`torch.inference_mode()` (torch's default threads). ONNX Runtime side: `model.onnx` (fp32) and
`model_quantized.onnx` (onnxruntime's dynamic int8) on `CPUExecutionProvider` (its default threads). Both
get the very same preprocessed batches (hymenoptera val images at the model's 224 px; SST-2 dev sentences,
padded to the longest in the batch, at most 64 tokens), made before timing, so only the model runs are
compared. The three sides live in one process and alternate repetition by repetition (warm-up excluded);
the export (not timed) runs in its own process first and checks fp32 logits against PyTorch's.
Always on the CPU, whatever --device says: this item is about CPU deployment.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .common import Context, Row, contention_note, failed_row, median, run_child, spread

GROUP = "onnx_runtime"
SIDES = ("pytorch", "onnx_fp32", "onnx_int8")

SIZES = {
    "quick": dict(image=dict(model="timm:test_resnet", size=32, n=8, batch=4),
                  text=dict(model="tiny-bert", max_length=16, n=8, batch=4), reps=2),
    "cpu": dict(image=dict(model="efficientnet_lite:efficientnet_lite0", size=224, n=64, batch=16),
                text=dict(model="minilm", max_length=64, n=256, batch=32), reps=5),
}


def run(ctx: Context) -> list[Row]:
    sizes = SIZES["quick" if ctx.quick else "cpu"]
    rows: list[Row] = []
    for kind in ("image", "text"):
        if not ctx.wants(GROUP, kind):
            continue
        p = sizes[kind]
        what = f"{p['model'].split(':')[-1]}, {p['size']} px" if kind == "image" else f"{p['model']}, ≤ {p['max_length']} tokens"
        item = f"CPU inference, ONNX Runtime vs PyTorch ({what}, batch {p['batch']})"
        try:
            exported = run_child(ctx, f"{GROUP}_{kind}_export", __name__, "prepare", kind=kind, work=str(ctx.work),
                                 data=str(ctx.data), **p)
            res = run_child(ctx, f"{GROUP}_{kind}", __name__, "pair", kind=kind, data=str(ctx.data), reps=sizes["reps"],
                            hubtl_dir=exported["hubtl_dir"], onnx_dir=exported["onnx_dir"], **p)
        except Exception as err:  # noqa: BLE001
            rows.append(failed_row(GROUP, f"{GROUP}_{kind}", item, "inputs/s", str(err)))
            continue
        torch_rate = median(res["pytorch"])
        for side, label in (("onnx_fp32", "ONNX Runtime fp32"), ("onnx_int8", "ONNX Runtime int8 (dynamic)")):
            rate = median(res[side])
            rows.append(Row(
                GROUP, f"{GROUP}_{kind}_{side}", f"{item}: {label}", rate, torch_rate, "inputs/s", rate / torch_rate,
                ratio_of="speed-up: ONNX Runtime / PyTorch", hubtl_label=label, baseline_label="PyTorch",
                notes=(f"{p['n']} inputs per repetition, median of {sizes['reps']} alternating repetitions "
                       f"({label} {spread(res[side])}; PyTorch {spread(res['pytorch'])}); max |logit difference| vs "
                       f"PyTorch {res['max_diff'][side]:.2g}; threads: torch {res['torch_threads']}, onnxruntime default; "
                       f"model: {exported['backbone']}; {contention_note({'both': [res]})}"),
                details={**res, "export": exported},
            ))  # fmt: skip
    return rows


def prepare(kind: str, work: str, data: str, model: str, size: int | None = None, max_length: int | None = None,
            **_: Any) -> dict[str, Any]:
    """Build and save the hubtl model, export it to ONNX with int8 (not timed); return the folders."""
    import torch

    from hubtl import TransferModel
    from hubtl.errors import HubtlError

    from . import fixtures

    root = Path(work) / GROUP / kind
    torch.manual_seed(0)
    if kind == "image":
        backbone = model
        try:
            hub = TransferModel.from_backbone(backbone, labels=fixtures.IMAGE_LABELS, pretrained=True, image_size=size)
        except HubtlError:  # no weights package here: the same architecture, random weights (speed is the same)
            backbone = f"timm:{model.split(':')[-1]}"
            hub = TransferModel.from_backbone(backbone, labels=fixtures.IMAGE_LABELS, pretrained=False, image_size=size)
    else:
        backbone = f"transformers:{fixtures.text_encoder_dir(work, model, data)}"
        hub = TransferModel.from_backbone(backbone, labels=fixtures.LABELS, pooling="mean", max_length=max_length)
    hubtl_dir = hub.save_pretrained(root / "hubtl")
    result = hub.export("onnx", root / "onnx", quantize="dynamic", overwrite=True)
    return {"hubtl_dir": str(hubtl_dir), "onnx_dir": str(root / "onnx"), "backbone": backbone.split("/")[-1],
            "export_max_diff": result.max_abs_diff}


def pair(kind: str, data: str, reps: int, n: int, batch: int, hubtl_dir: str, onnx_dir: str, **_: Any) -> dict[str, Any]:
    """Time PyTorch, ONNX Runtime fp32 and int8 on the same preprocessed batches, alternating."""
    import numpy as np
    import onnxruntime
    import torch

    from hubtl import TransferModel

    from . import fixtures

    model = TransferModel.from_pretrained(hubtl_dir, device="cpu").eval()
    if kind == "image":
        paths = fixtures.hymenoptera_images(data, "val")
        inputs: list[Any] = [str(p) for p in (paths * (n // len(paths) + 1))[:n]]
    else:
        sentences = [s for s, _ in fixtures.read_sst2(data, "dev", n)]
        inputs = (sentences * (n // len(sentences) + 1))[:n]
    preprocess = model.preprocessor(train=False)
    batches = [preprocess(inputs[i : i + batch]) for i in range(0, n, batch)]
    sessions = {
        side: onnxruntime.InferenceSession(str(Path(onnx_dir) / file), providers=["CPUExecutionProvider"])
        for side, file in (("onnx_fp32", "model.onnx"), ("onnx_int8", "model_quantized.onnx"))
    }
    names = [i.name for i in sessions["onnx_fp32"].get_inputs()]
    arrays = [{k: b[k].numpy() for k in names} for b in batches]

    def pytorch() -> np.ndarray:
        with torch.inference_mode():
            return np.concatenate([model(b).numpy() for b in batches])

    def runner(side: str) -> Any:
        return lambda: np.concatenate([sessions[side].run(["logits"], a)[0] for a in arrays])

    sides = {"pytorch": pytorch, **{side: runner(side) for side in sessions}}
    outputs = {side: fn() for side, fn in sides.items()}  # warm-up, not timed
    max_diff = {side: float(np.abs(outputs[side] - outputs["pytorch"]).max()) for side in sessions}
    if max_diff["onnx_fp32"] > 1e-3:
        raise RuntimeError(f"ONNX Runtime fp32 and PyTorch logits differ by {max_diff['onnx_fp32']}")
    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    for r in range(reps):
        for side in (SIDES if r % 2 == 0 else SIDES[::-1]):
            started = time.perf_counter()
            sides[side]()
            rates[side].append(n / (time.perf_counter() - started))
    same = float((outputs["onnx_int8"].argmax(-1) == outputs["pytorch"].argmax(-1)).mean())
    return {**rates, "max_diff": max_diff, "int8_same_label": same, "torch_threads": torch.get_num_threads()}
