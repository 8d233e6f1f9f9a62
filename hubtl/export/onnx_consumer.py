"""Running an ONNX export without hubtl or torch: preprocessing from preprocessor.json, ONNX Runtime, config.json's labels.

Standalone on purpose (numpy, Pillow, onnxruntime and, for text, tokenizers; nothing from hubtl): the export's
README carries this module's source as its usage code, and the export checks it reproduces hubtl's
preprocessing on the check inputs before writing anything.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

#: Pillow's resampling filter for each timm interpolation name.
RESAMPLING = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


class OnnxClassifier:
    """An exported hubtl model under ONNX Runtime: `logits(inputs)` and `predict(inputs)` on images or strings."""

    def __init__(self, directory: str | Path, model_file: str = "model.onnx") -> None:
        import onnxruntime

        self.directory = Path(directory)
        self.config = json.loads((self.directory / "config.json").read_text(encoding="utf-8"))
        self.preprocessing = json.loads((self.directory / "preprocessor.json").read_text(encoding="utf-8"))
        self.session = onnxruntime.InferenceSession(str(self.directory / model_file), providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.tokenizer = None
        if self.preprocessing["type"] == "text":
            from tokenizers import Tokenizer

            p = self.preprocessing
            self.tokenizer = Tokenizer.from_file(str(self.directory / p["tokenizer_file"]))
            self.tokenizer.enable_truncation(p["max_length"], direction=p["truncation_side"])
            self.tokenizer.enable_padding(
                direction=p["padding_side"], pad_id=p["pad_token_id"], pad_type_id=p["pad_token_type_id"],
                pad_token=p["pad_token"],
            )  # fmt: skip

    def preprocess(self, inputs: list[Any]) -> dict[str, np.ndarray]:
        """The model's input arrays for a list of PIL images (or image paths) or strings."""
        if self.tokenizer is None:
            return {self.input_names[0]: np.stack([preprocess_image(x, self.preprocessing) for x in inputs])}
        texts = [t.lower() for t in inputs] if self.preprocessing.get("do_lower_case") else list(inputs)
        encodings = self.tokenizer.encode_batch(texts)
        arrays = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        return {name: np.asarray(arrays[name], dtype=np.int64) for name in self.input_names}

    def logits(self, inputs: list[Any]) -> np.ndarray:
        """Raw outputs, one row per input."""
        return self.session.run(["logits"], self.preprocess(inputs))[0]

    def predict(self, inputs: list[Any]) -> list[dict[str, Any]]:
        """hubtl's predictions: label and scores (classification), labels (multi-label) or values (regression)."""
        labels = [self.config["id2label"][str(i)] for i in range(len(self.config["id2label"]))]
        results = []
        for row in self.logits(inputs).astype(np.float64):
            if self.config["task"] == "regression":
                results.append({"value": row.tolist() if len(row) > 1 else float(row[0])})
            elif self.config["task"] == "multi_label":
                scores = 1.0 / (1.0 + np.exp(-row))
                chosen = [label for label, s in zip(labels, scores) if s >= self.config["threshold"]]
                results.append({"labels": chosen, "scores": dict(zip(labels, scores.tolist()))})
            else:
                scores = np.exp(row - row.max())
                scores /= scores.sum()
                best = int(scores.argmax())
                results.append({"label": labels[best], "score": float(scores[best]), "scores": dict(zip(labels, scores.tolist()))})
        return results


def _to_rgb(image: Any) -> Any:
    """The image in RGB; 16-bit grayscale is scaled to 8 bits (a plain conversion clips it, mostly to white)."""
    from PIL import Image

    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        pixels = np.asarray(image, dtype=np.float64)
        top = float(pixels.max(initial=0))
        peak = 65535.0 if image.mode != "I" or 255 < top <= 65535 else max(top, 255.0)
        image = Image.fromarray(np.clip(np.rint(pixels * (255.0 / peak)), 0, 255).astype(np.uint8), "L")
    return image.convert("RGB")


def preprocess_image(image: Any, config: dict[str, Any]) -> np.ndarray:
    """timm's evaluation transform in Pillow and numpy: resize the short side, centre-crop, scale, normalise; [C, H, W]."""
    from PIL import Image

    _, height, width = config["input_size"]
    crop_pct = config.get("crop_pct") or 0.875
    mode = config.get("crop_mode") or "center"
    resample = RESAMPLING[config.get("interpolation") or "bilinear"]
    scale_h, scale_w = math.floor(height / crop_pct), math.floor(width / crop_pct)
    if not isinstance(image, Image.Image):
        with Image.open(image) as opened:
            if config.get("jpeg_draft_gap") and opened.format == "JPEG":  # large JPEGs decoded at 1/2, 1/4, 1/8 scale
                side, (w, h) = config["jpeg_draft_gap"] * max(scale_h, scale_w), opened.size
                scale = next((s for s in (8, 4, 2) if w % s == 0 and h % s == 0 and min(w, h) // s >= side), 1)
                if scale > 1:
                    opened.draft("RGB", (w // scale, h // scale))
            image = _to_rgb(opened)
    image = _to_rgb(image)
    w, h = image.size
    if mode == "squash":
        image = image.resize((scale_w, scale_h), resample)
    elif mode == "center" and scale_h == scale_w:  # the short side to scale_h, the long side in proportion (rounded down)
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(scale_h * long / short)
        image = image.resize((scale_h, new_long) if w <= h else (new_long, scale_h), resample)
    else:
        raise ValueError(f"crop_mode {mode!r} with a non-square input is not reproduced here; use timm's transforms.")
    w, h = image.size
    if w < width or h < height:
        raise ValueError(f"crop_pct {crop_pct} > 1 pads the image; use timm's transforms.")
    top, left = int(round((h - height) / 2.0)), int(round((w - width) / 2.0))
    pixels = np.asarray(image.crop((left, top, left + width, top + height)), dtype=np.uint8).astype(np.float32) / 255.0
    mean = np.asarray(config["mean"], dtype=np.float32)
    std = np.asarray(config["std"], dtype=np.float32)
    return ((pixels - mean) / std).transpose(2, 0, 1).copy()
