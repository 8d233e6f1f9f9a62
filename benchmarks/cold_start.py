"""4. Cold start: a fresh `python -c` that imports, loads a saved model and predicts one raw input.

hubtl: `from hubtl import TransferModel; TransferModel.from_pretrained(dir).predict([input])`.
Hand-written, the same weights: `timm.create_model(name, num_classes=2)` + `load_state_dict(safetensors)`
+ timm's eval transforms from the model's data config (same input size) + forward + softmax; for
text, `AutoTokenizer`/`AutoModel.from_pretrained` of the encoder saved by transformers'
`save_pretrained`, mean pooling, the same Linear head. Each rep is a new process; sides alternate.
Two numbers per side: wall clock from spawn to exit (measured by the parent) and in-process time from
the first line (before any import) to the prediction.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from . import artifacts
from .common import Context, Row, contention_note, failed_row, median, spawn, spread

GROUP = "cold_start"
GOAL = ("<=", 1.2)

SIZES = {
    "quick": dict(image=dict(model="test_resnet", size=32), text=dict(model="tiny-bert", max_length=64), reps=1),
    "cpu": dict(image=dict(model="resnet18", size=128), text=dict(model="minilm", max_length=128), reps=3),
    "cuda": dict(image=dict(model="resnet50", size=224), text=dict(model="minilm", max_length=128), reps=3),
}

_PRELUDE = """
import time
t0 = time.perf_counter()
import json, sys
args = json.loads(sys.argv[1])
"""

_REPORT = """
t3 = time.perf_counter()
print("COLD_START " + json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "predict_s": t3 - t2, "total_s": t3 - t0,
                                  "answer": answer}))
"""

HUBTL_IMAGE = _PRELUDE + """
from PIL import Image
from hubtl import TransferModel
t1 = time.perf_counter()
model = TransferModel.from_pretrained(args["hubtl_dir"], device=args["device"])
t2 = time.perf_counter()
answer = model.predict([Image.open(args["input"])])[0]["label"]
""" + _REPORT

BASELINE_IMAGE = _PRELUDE + """
import timm, torch
from PIL import Image
from safetensors.torch import load_file
t1 = time.perf_counter()
model = timm.create_model(args["model"], pretrained=False, num_classes=2)
model.load_state_dict(load_file(args["timm_weights"]))
model.eval().to(args["device"])
config = timm.data.resolve_model_data_config(model)
config["input_size"] = (3, args["size"], args["size"])
transform = timm.data.create_transform(**config)
t2 = time.perf_counter()
with torch.inference_mode():
    x = transform(Image.open(args["input"]).convert("RGB")).unsqueeze(0).to(args["device"])
    probs = model(x).softmax(-1).cpu()
answer = ["ants", "bees"][int(probs.argmax())]
""" + _REPORT

HUBTL_TEXT = _PRELUDE + """
from hubtl import TransferModel
t1 = time.perf_counter()
model = TransferModel.from_pretrained(args["hubtl_dir"], device=args["device"])
t2 = time.perf_counter()
answer = model.predict([args["input"]])[0]["label"]
""" + _REPORT

BASELINE_TEXT = _PRELUDE + """
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer
t1 = time.perf_counter()
tokenizer = AutoTokenizer.from_pretrained(args["hf_dir"])
encoder = AutoModel.from_pretrained(args["hf_dir"]).eval().to(args["device"])
head = torch.nn.Linear(encoder.config.hidden_size, 2)
head.load_state_dict(load_file(args["head"]))
head.eval().to(args["device"])
t2 = time.perf_counter()
with torch.inference_mode():
    batch = tokenizer([args["input"]], padding=True, truncation=True, max_length=args["max_length"], return_tensors="pt")
    batch = {k: v.to(args["device"]) for k, v in batch.items()}
    hidden = encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    probs = head((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).softmax(-1).cpu()
answer = ["negative", "positive"][int(probs.argmax())]
""" + _REPORT


def run(ctx: Context) -> list[Row]:
    p = SIZES[ctx.mode]
    rows: list[Row] = []
    kinds = [k for k in ("image", "text") if ctx.wants(GROUP, k)]
    try:
        models = artifacts.ensure(ctx, kinds, p["image"], p["text"])
    except Exception as err:  # noqa: BLE001
        return [failed_row(GROUP, GROUP, "cold start", "s", str(err), GOAL)]
    for kind in kinds:
        rows += measure(ctx, kind, models[kind], p)
    return rows


def measure(ctx: Context, kind: str, model: dict[str, Any], p: dict[str, Any]) -> list[Row]:
    if kind == "image":
        item = f"cold start → first prediction, timm ({model['model']}, {model['size']} px)"
        codes = (HUBTL_IMAGE, BASELINE_IMAGE)
        args = {**model, "input": model["images"][0]}
        args.pop("images")
        baseline_label = "timm + load_state_dict"
    else:
        item = f"cold start → first prediction, transformers ({model['model']})"
        codes = (HUBTL_TEXT, BASELINE_TEXT)
        args = {**model, "input": model["sentences"][0]}
        args.pop("sentences")
        baseline_label = "AutoModel + AutoTokenizer"
    args["device"] = ctx.device
    runs: dict[str, list[dict[str, Any]]] = {"hubtl": [], "baseline": []}
    try:
        # No separate warm-up: the subprocess that saved the models has just read the same libraries and
        # files, so the OS file cache is warm for both sides alike.
        for r in range(p["reps"]):
            order = ("hubtl", "baseline") if r % 2 == 0 else ("baseline", "hubtl")
            for side in order:
                code = codes[0] if side == "hubtl" else codes[1]
                done = spawn(ctx, f"{GROUP}_{kind}_{side}_{r}", [sys.executable, "-c", code, json.dumps(args)])
                line = next(l for l in reversed(done.output.splitlines()) if l.startswith("COLD_START "))
                result = {**json.loads(line[len("COLD_START "):]), "wall_s": done.wall_s, "maxrss_mb": done.maxrss_mb,
                          "other_cores": done.other_cores}
                runs[side].append(result)
    except Exception as err:  # noqa: BLE001
        return [failed_row(GROUP, f"{GROUP}_{kind}", item, "s", str(err), GOAL)]
    h, b = runs["hubtl"], runs["baseline"]
    answers = {r["answer"] for r in h} | {r["answer"] for r in b}
    agree = "both sides predict the same label" if len(answers) == 1 else f"LABELS DIFFER: {sorted(answers)}"
    rows = []
    for key, what in (("wall_s", "spawn → exit"), ("total_s", "in-process, import → prediction")):
        hv, bv = [r[key] for r in h], [r[key] for r in b]
        rows.append(Row(
            GROUP, f"{GROUP}_{kind}_{key}", f"{item}, {what}", median(hv), median(bv), "s", median(hv) / median(bv),
            goal=GOAL, baseline_label=baseline_label,
            notes=(f"median of {len(hv)} fresh processes each, alternating (hubtl {spread(hv)}; baseline {spread(bv)}); "
                   + ("hubtl import/load/predict " + "/".join(f"{median([r[k] for r in h]):.2f}" for k in
                                                              ("import_s", "load_s", "predict_s"))
                      + " s vs baseline " + "/".join(f"{median([r[k] for r in b]):.2f}" for k in
                                                     ("import_s", "load_s", "predict_s")) + " s; " if key == "total_s" else "")
                   + agree + "; " + contention_note(runs)),
            details={"hubtl": h, "baseline": b} if key == "wall_s" else {},
        ))
    hm, bm = max(r["maxrss_mb"] for r in h), max(r["maxrss_mb"] for r in b)
    rows.append(Row(GROUP, f"{GROUP}_{kind}_memory", f"peak RSS: {item}", hm, bm, "MB", hm / bm,
                    baseline_label=baseline_label, notes="load + one prediction, max over the fresh processes"))
    return rows
