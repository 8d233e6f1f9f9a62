"""Accuracy of an exported model loaded by its target library alone (hubtl is never imported; asserted at the end).

    python benchmarks/export_accuracy.py timm DIR ../shared/data/hymenoptera/val          # an image folder
    python benchmarks/export_accuracy.py onnx DIR ../shared/data/hymenoptera/val [--model-file model_quantized.onnx]
    python benchmarks/export_accuracy.py transformers DIR ../shared/data/sst2/dev.tsv      # text<TAB>label

timm: `timm.create_model("local-dir:DIR", pretrained=True)` and timm's own eval transform from the folder's
config. transformers: `pipeline("text-classification", model=DIR)` with truncation. onnx: the usage code of
the export's README (numpy, Pillow, onnxruntime, tokenizers; torch is not imported either). Labels in a tsv
are label names or indices; an image folder's class folders are named as the labels.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")


def read_examples(path: Path, labels: list[str]) -> tuple[list[str], list[int]]:
    """(inputs, label indices) of an image folder (class sub-folders) or a tsv of input<TAB>label."""
    if path.is_dir():
        pairs = [(str(f), labels.index(d.name)) for d in sorted(path.iterdir()) if d.is_dir()
                 for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]  # fmt: skip
    else:
        with path.open(newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f, delimiter="\t") if r]
        pairs = [(r[0], labels.index(r[-1]) if r[-1] in labels else int(r[-1])) for r in rows]
    return [p for p, _ in pairs], [y for _, y in pairs]


def predict_timm(folder: Path, inputs: list[str]) -> tuple[list[int], list[str]]:
    """Class indices from plain timm."""
    import timm
    import torch
    from PIL import Image

    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    out = []
    with torch.no_grad():
        for start in range(0, len(inputs), 32):
            x = torch.stack([transform(Image.open(p).convert("RGB")) for p in inputs[start : start + 32]])
            out += model(x).argmax(-1).tolist()
    return out, list(model.pretrained_cfg["label_names"])


def predict_transformers(folder: Path, inputs: list[str]) -> tuple[list[int], list[str]]:
    """Class indices from transformers' pipeline."""
    from transformers import pipeline

    classifier = pipeline("text-classification", model=str(folder), device="cpu")
    config = classifier.model.config
    labels = [config.id2label[i] for i in range(config.num_labels)]
    return [config.label2id[p["label"]] for p in classifier(inputs, truncation=True, batch_size=32)], labels


def predict_onnx(folder: Path, inputs: list[str], model_file: str) -> tuple[list[int], list[str]]:
    """Class indices from the export README's own code (onnxruntime)."""
    code = re.search(r"```python\n(.*?)```", (folder / "README.md").read_text(encoding="utf-8"), re.S).group(1)
    namespace: dict[str, Any] = {"__name__": "onnx_usage"}
    exec(code.split("\nmodel = OnnxClassifier(")[0], namespace)  # the class and its helpers, not the example call
    model = namespace["OnnxClassifier"](folder, model_file)
    out = []
    for start in range(0, len(inputs), 32):
        out += model.logits(inputs[start : start + 32]).argmax(-1).tolist()
    assert "torch" not in sys.modules, "torch was imported"
    labels = [model.config["id2label"][str(i)] for i in range(len(model.config["id2label"]))]
    return out, labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("format", choices=["timm", "transformers", "onnx"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--model-file", default="model.onnx")
    args = parser.parse_args(argv)
    config = json.loads((args.folder / "config.json").read_text())
    labels = config.get("label_names") or [v for _, v in sorted(config["id2label"].items(), key=lambda kv: int(kv[0]))]
    inputs, truth = read_examples(args.data, labels)
    start = time.perf_counter()
    if args.format == "timm":
        predicted, _ = predict_timm(args.folder, inputs)
    elif args.format == "transformers":
        predicted, _ = predict_transformers(args.folder, inputs)
    else:
        predicted, _ = predict_onnx(args.folder, inputs, args.model_file)
    seconds = time.perf_counter() - start
    assert "hubtl" not in sys.modules, "hubtl was imported"
    correct = sum(int(p == t) for p, t in zip(predicted, truth))
    print(json.dumps({"format": args.format, "folder": str(args.folder), "model_file": args.model_file if args.format == "onnx" else None,
                      "data": str(args.data), "examples": len(truth), "correct": correct,
                      "accuracy": round(correct / len(truth), 4), "seconds": round(seconds, 1)}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
