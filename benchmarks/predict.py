"""5. `TransferModel.predict` on raw inputs vs a hand-written preprocessing + forward loop, same batch size.

Raw inputs are decoded PIL images (hymenoptera val, opened and loaded before timing, as a user
holds them) or strings (SST-2 dev sentences). hubtl: `model.predict(inputs, batch_size=B)`.
Hand-written: for each batch, `convert("RGB")` + timm eval transform + stack + forward + softmax (or
tokenizer with padding/truncation + encoder + mean pooling + head + softmax), the same weights.
Both sides live in one process and alternate repetition by repetition (warm-up excluded), so the
ratio is not skewed by load drifting between processes; both sides' scores are checked to agree.
Peak memory of these inference pairs is in the cold-start rows (separate processes).
"""

from __future__ import annotations

import time
from typing import Any

from . import artifacts
from .cold_start import SIZES as MODEL_SIZES
from .common import Context, Row, contention_note, failed_row, median, run_child, spread

GROUP = "predict"
GOAL = (">=", 0.95)

SIZES = {
    "quick": dict(image=dict(n=8, batch=4), text=dict(n=8, batch=4), reps=2),
    "cpu": dict(image=dict(n=64, batch=32), text=dict(n=64, batch=32), reps=3),
    "cuda": dict(image=dict(n=512, batch=64), text=dict(n=1024, batch=128), reps=5),
}


def run(ctx: Context) -> list[Row]:
    p, m = SIZES[ctx.mode], MODEL_SIZES[ctx.mode]
    kinds = [k for k in ("image", "text") if ctx.wants(GROUP, k)]
    try:
        models = artifacts.ensure(ctx, kinds, m["image"], m["text"])
    except Exception as err:  # noqa: BLE001
        return [failed_row(GROUP, GROUP, "predict", "inputs/s", str(err), GOAL)]
    rows = []
    for kind in kinds:
        what = f"{models[kind]['model']}, {models[kind]['size']} px" if kind == "image" else models[kind]["model"]
        item = f"predict on raw {'PIL images' if kind == 'image' else 'strings'} ({what}, batch {p[kind]['batch']})"
        try:
            res = run_child(ctx, f"{GROUP}_{kind}", __name__, "pair", kind=kind, model=models[kind], device=ctx.device,
                            reps=p["reps"], **p[kind])
        except Exception as err:  # noqa: BLE001
            rows.append(failed_row(GROUP, f"{GROUP}_{kind}", item, "inputs/s", str(err), GOAL))
            continue
        h, b = median(res["hubtl"]), median(res["baseline"])
        rows.append(Row(GROUP, f"{GROUP}_{kind}", item, h, b, "inputs/s", h / b, goal=GOAL,
                        notes=(f"{p[kind]['n']} inputs per repetition, median of {p['reps']} alternating repetitions "
                               f"(hubtl {spread(res['hubtl'])}; hand-written {spread(res['baseline'])}); "
                               f"max |score difference| {res['max_score_diff']:.2g}; "
                               f"{contention_note({'both': [res]})}"),
                        details=res))
    return rows


def pair(kind: str, model: dict[str, Any], device: str, n: int, batch: int, reps: int) -> dict[str, Any]:
    import torch

    from hubtl import TransferModel

    hub = TransferModel.from_pretrained(model["hubtl_dir"], device=device)
    if kind == "image":
        from PIL import Image

        inputs = []
        for path in (model["images"] * (n // len(model["images"]) + 1))[:n]:
            with Image.open(path) as img:
                img.load()
                inputs.append(img.copy())
        hand = _image_baseline(model, device)
    else:
        inputs = (model["sentences"] * (n // len(model["sentences"]) + 1))[:n]
        hand = _text_baseline(model, device)

    def hubtl_side() -> list[list[float]]:
        return [[p["scores"][label] for label in hub.labels] for p in hub.predict(inputs, batch_size=batch)]

    def baseline_side() -> list[list[float]]:
        return hand(inputs, batch)

    sides = {"hubtl": hubtl_side, "baseline": baseline_side}
    scores = {name: fn() for name, fn in sides.items()}  # warm-up, not timed
    diff = (torch.tensor(scores["hubtl"]) - torch.tensor(scores["baseline"])).abs().max().item()
    if diff > 1e-3:
        raise RuntimeError(f"hubtl and hand-written scores differ by {diff}")
    rates: dict[str, list[float]] = {"hubtl": [], "baseline": []}
    for r in range(reps):
        for name in (("hubtl", "baseline") if r % 2 == 0 else ("baseline", "hubtl")):
            started = time.perf_counter()
            sides[name]()
            rates[name].append(n / (time.perf_counter() - started))
    return {**rates, "max_score_diff": diff}


def _image_baseline(model: dict[str, Any], device: str) -> Any:
    import timm
    import torch
    from safetensors.torch import load_file

    net = timm.create_model(model["model"], pretrained=False, num_classes=2)
    net.load_state_dict(load_file(model["timm_weights"]))
    net.eval().to(device)
    config = timm.data.resolve_model_data_config(net)
    config["input_size"] = (3, model["size"], model["size"])
    transform = timm.data.create_transform(**config)

    @torch.inference_mode()
    def predict(images: list[Any], batch: int) -> list[list[float]]:
        out = []
        for start in range(0, len(images), batch):
            x = torch.stack([transform(img.convert("RGB")) for img in images[start:start + batch]]).to(device)
            out += net(x).softmax(-1).cpu().tolist()
        return out

    return predict


def _text_baseline(model: dict[str, Any], device: str) -> Any:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model["hf_dir"])
    encoder = AutoModel.from_pretrained(model["hf_dir"]).eval().to(device)
    head = torch.nn.Linear(encoder.config.hidden_size, 2)
    head.load_state_dict(load_file(model["head"]))
    head.eval().to(device)

    @torch.inference_mode()
    def predict(texts: list[str], batch: int) -> list[list[float]]:
        out = []
        for start in range(0, len(texts), batch):
            enc = tokenizer(texts[start:start + batch], padding=True, truncation=True, max_length=model["max_length"],
                            return_tensors="pt")
            enc = {k: v.to(device) for k, v in enc.items()}
            hidden = encoder(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out += head((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).softmax(-1).cpu().tolist()
        return out

    return predict
