"""5. `TransferModel.predict` on raw inputs vs a hand-written preprocessing + forward loop, same batch size.

Raw inputs are decoded PIL images (hymenoptera val, opened and loaded before timing, as a user
holds them) or strings (SST-2 dev sentences). hubtl: `model.predict(inputs, batch_size=B)`.
Hand-written: for each batch, `convert("RGB")` + timm eval transform + stack + forward + softmax (or
tokenizer with padding/truncation + encoder + mean pooling + head + softmax), the same weights.
Both sides live in one process and alternate repetition by repetition (warm-up excluded), so the
ratio is not skewed by load drifting between processes; both sides' scores are checked to agree.
Peak memory of these inference pairs is in the cold-start rows (separate processes).

The `photos` variant predicts on JPEG *files* the size of a 12-megapixel phone photo (4032 x 3024, hymenoptera val
images scaled up and saved at quality 90): hubtl's `predict(paths)` against the hand-written
`Image.open(path).convert("RGB")` + the same timm eval transform. hubtl decodes such a file at reduced JPEG scale
(`ImagePreprocessor.decode_size`), so its scores may differ from a full decode's by a little; the difference is
reported.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import artifacts
from .cold_start import SIZES as MODEL_SIZES
from .common import Context, Row, contention_note, failed_row, median, run_child, spread

GROUP = "predict"
GOAL = (">=", 0.95)

SIZES = {
    "quick": dict(image=dict(n=8, batch=4), text=dict(n=8, batch=4), photos=dict(n=4, batch=4), reps=2),
    "cpu": dict(image=dict(n=64, batch=32), text=dict(n=64, batch=32), photos=dict(n=32, batch=32), reps=3),
    "cuda": dict(image=dict(n=512, batch=64), text=dict(n=1024, batch=128), photos=dict(n=64, batch=64), reps=5),
}
#: Largest |score difference| accepted between hubtl and a full decode on photo files (reduced-scale JPEG decoding).
PHOTO_TOLERANCE = 0.02
NAMES = {"image": "raw PIL images", "text": "raw strings", "photos": "12-megapixel JPEG files"}


def run(ctx: Context) -> list[Row]:
    p, m = SIZES[ctx.mode], MODEL_SIZES[ctx.mode]
    kinds = [k for k in ("image", "text", "photos") if ctx.wants(GROUP, k)]
    try:
        models = artifacts.ensure(ctx, sorted({"text" if k == "text" else "image" for k in kinds}), m["image"], m["text"])
    except Exception as err:  # noqa: BLE001
        return [failed_row(GROUP, GROUP, "predict", "inputs/s", str(err), GOAL)]
    rows = []
    for kind in kinds:
        model = models["text" if kind == "text" else "image"]
        what = model["model"] if kind == "text" else f"{model['model']}, {model['size']} px"
        item = f"predict on {NAMES[kind]} ({what}, batch {p[kind]['batch']})"
        try:
            res = run_child(ctx, f"{GROUP}_{kind}", __name__, "pair", kind=kind, model=model, device=ctx.device,
                            reps=p["reps"], work=str(ctx.work), **p[kind])
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


def pair(kind: str, model: dict[str, Any], device: str, n: int, batch: int, reps: int, work: str) -> dict[str, Any]:
    import torch

    from hubtl import TransferModel

    hub = TransferModel.from_pretrained(model["hubtl_dir"], device=device)
    if kind == "image":
        from PIL import Image

        inputs = []
        for path in _repeated(model["images"], n):
            with Image.open(path) as img:
                img.load()
                inputs.append(img.copy())
        hand = _image_baseline(model, device)
    elif kind == "photos":
        inputs = _photo_files(model["images"], n, Path(work) / "photos")
        hand = _image_baseline(model, device)
    else:
        inputs = _repeated(model["sentences"], n)
        hand = _text_baseline(model, device)

    def hubtl_side() -> list[list[float]]:
        return [[p["scores"][label] for label in hub.labels] for p in hub.predict(inputs, batch_size=batch)]

    def baseline_side() -> list[list[float]]:
        return hand(inputs, batch)

    sides = {"hubtl": hubtl_side, "baseline": baseline_side}
    scores = {name: fn() for name, fn in sides.items()}  # warm-up, not timed
    diff = (torch.tensor(scores["hubtl"]) - torch.tensor(scores["baseline"])).abs().max().item()
    if diff > (PHOTO_TOLERANCE if kind == "photos" else 1e-3):
        raise RuntimeError(f"hubtl and hand-written scores differ by {diff}")
    rates: dict[str, list[float]] = {"hubtl": [], "baseline": []}
    for r in range(reps):
        for name in (("hubtl", "baseline") if r % 2 == 0 else ("baseline", "hubtl")):
            started = time.perf_counter()
            sides[name]()
            rates[name].append(n / (time.perf_counter() - started))
    return {**rates, "max_score_diff": diff}


def _repeated(items: list[Any], n: int) -> list[Any]:
    """The first `n` of `items` repeated as often as needed."""
    return (items * (n // len(items) + 1))[:n]


def _photo_files(images: list[str], n: int, folder: Path) -> list[str]:
    """`n` JPEG files of 4032 x 3024 pixels (the given images scaled up), written once."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, source in enumerate(_repeated(images, n)):
        path = folder / f"photo{i}.jpg"
        if not path.is_file():
            with Image.open(source) as img:
                img.convert("RGB").resize((4032, 3024), Image.BICUBIC).save(path, quality=90)
        paths.append(str(path))
    return paths


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
            x = torch.stack([transform(_opened(img).convert("RGB")) for img in images[start:start + batch]]).to(device)
            out += net(x).softmax(-1).cpu().tolist()
        return out

    return predict


def _opened(image: Any) -> Any:
    """A PIL image as it is, a path opened (and decoded in full by `convert`)."""
    from PIL import Image

    return Image.open(image) if isinstance(image, str) else image


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
