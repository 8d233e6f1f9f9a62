"""Fine-tuning with `hubtl train`: strategies, feature cache, data sources, tasks, bad inputs, checkpoints and resume.

Everything runs on tiny random backbones (timm's test_resnet, a 2-layer 32-wide BERT) and a few dozen
synthetic examples, so each run takes seconds on a CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from hubtl.errors import ConfigError, DataError, HubtlError
from hubtl.model import TransferModel
from hubtl.training import Trainer, train

from conftest import TINY_TIMM

TIMM = {"backbone": TINY_TIMM, "pretrained": False, "backbone_kwargs": {"image_size": 32}}
COLOURS = {"blue": (30, 40, 220), "red": (220, 40, 30)}
POSITIVE = ["good", "great", "excellent", "lovely", "wonderful", "superb"]
NEGATIVE = ["bad", "awful", "terrible", "boring", "dreadful", "poor"]
TEMPLATES = ["the film was {}", "a {} movie", "{} acting and a {} story", "really {} overall"]
#: Environment of `hubtl train` subprocesses: offline, quiet, one thread (as the tests in this process).
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and lose a lot on a busy machine; one thread also
    keeps in-process and subprocess runs numerically identical."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------- data


def _sentences(n: int, offset: int = 0) -> list[tuple[str, str]]:
    """n labelled sentences, half positive, half negative, alternating."""
    rows = []
    for i in range(offset, offset + n):
        words = POSITIVE if i % 2 == 0 else NEGATIVE
        template = TEMPLATES[(i // 2) % len(TEMPLATES)]
        word = words[(i // 2) % len(words)]
        rows.append((template.format(word, words[(i // 2 + 1) % len(words)]), "pos" if i % 2 == 0 else "neg"))
    return rows


def _write_image(path: Path, colour: tuple[int, int, int], seed: int) -> None:
    noise = np.random.default_rng(seed).integers(-25, 26, size=(32, 32, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image folder: blue/ and red/, 12 noisy 32x32 PNGs each."""
    root = tmp_path_factory.mktemp("colours")
    for c, (name, colour) in enumerate(COLOURS.items()):
        for i in range(12):
            _write_image(root / name / f"{name}{i}.png", colour, seed=100 * c + i)
    return root


@pytest.fixture(scope="module")
def texts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Header-less train.tsv (48 rows) and dev.tsv (16 rows): sentence<TAB>pos|neg."""
    root = tmp_path_factory.mktemp("reviews")
    for name, rows in (("train.tsv", _sentences(48)), ("dev.tsv", _sentences(16, offset=1))):
        (root / name).write_text("".join(f"{s}\t{label}\n" for s, label in rows))
    return root


def _tsv_dataset(texts: Path) -> dict[str, Any]:
    return {
        "path": str(texts),
        "data_files": {"train": "train.tsv", "validation": "dev.tsv"},
        "column_names": ["sentence", "label"],
        "text_column": "sentence",
    }


def _config(out: Path, **values: Any) -> dict[str, Any]:
    """A run config: quiet, single-threaded data loading unless asked, fixed seed."""
    return {"output_dir": str(out), "disable_tqdm": True, "report_to": "none", "seed": 0,
            "dataloader_num_workers": 0, "num_train_epochs": 2, **values}


def _bert(tiny_bert: str, texts: Path, out: Path, **values: Any) -> dict[str, Any]:
    return _config(out, backbone=tiny_bert, dataset=_tsv_dataset(texts), **{"per_device_train_batch_size": 8, **values})


def _timm(images: Path, out: Path, **values: Any) -> dict[str, Any]:
    return _config(out, **TIMM, dataset={"path": str(images), "validation_size": 0.25},
                   **{"per_device_train_batch_size": 6, **values})


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Records the model right after it is built (initial weights, trainable names) and the optimizer groups."""
    record: dict[str, Any] = {}
    build_model, build_loop = Trainer._build_model, Trainer._build_loop

    def built_model(self: Trainer) -> TransferModel:
        model = build_model(self)
        record["initial"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        record["trainable"] = {n for n, p in model.named_parameters() if p.requires_grad}
        return model

    def built_loop(self: Trainer) -> None:
        build_loop(self)
        names = {id(p): n for n, p in self.model.named_parameters()}
        record["groups"] = [
            {"name": g["name"], "lr": g["lr"], "weight_decay": g["weight_decay"], "params": [names[id(p)] for p in g["params"]]}
            for g in self.optimizer.param_groups
        ]
        record["num_layer_groups"] = len(self.model.backbone.layer_groups())

    monkeypatch.setattr(Trainer, "_build_model", built_model)
    monkeypatch.setattr(Trainer, "_build_loop", built_loop)
    return record


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], prefix: str) -> set[str]:
    return {k for k in after if k.startswith(prefix) and not torch.equal(before[k], after[k])}


def _group_names(model: TransferModel) -> list[list[str]]:
    """Parameter names of each backbone layer group, input to output."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [[names[id(p)] for p in group] for group in model.backbone.layer_groups()]


def _jsonl(path: Path, kind: str = "epoch") -> list[dict[str, Any]]:
    """The rows of metrics.jsonl of one kind: epoch rows (the default), step or eval rows."""
    return [row for row in map(json.loads, path.read_text().splitlines()) if row.get("kind", "epoch") == kind]


def _messages(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


@pytest.fixture(autouse=True)
def _hubtl_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hubtl")


# ---------------------------------------------------------------------------------------------- strategies


def test_linear_probe_keeps_backbone_and_batchnorm_statistics(images: Path, tmp_path: Path, spy: dict, caplog) -> None:
    # augment: random transforms, so no feature cache: the frozen backbone runs on every batch
    out = tmp_path / "out"
    result = train(_timm(images, out, strategy="linear_probe", learning_rate=0.05, augment=True))
    assert "Feature cache off: training transforms are random" in _messages(caplog)
    assert spy["trainable"] and all(n.startswith("head.") for n in spy["trainable"])
    saved = _weights(out)
    backbone = [k for k in saved if k.startswith("backbone.")]
    assert any("running_mean" in k for k in backbone) and any("running_var" in k for k in backbone)
    for key in backbone:  # parameters and BatchNorm buffers (running stats, num_batches_tracked) untouched
        assert torch.equal(saved[key], spy["initial"][key]), key
    assert _changed(spy["initial"], saved, "head.") == {k for k in saved if k.startswith("head.")}
    assert len(result.metrics) == 2


def test_full_fine_tuning_changes_every_layer_group(images: Path, tmp_path: Path, spy: dict) -> None:
    out = tmp_path / "out"
    train(_timm(images, out, strategy="full", learning_rate=0.01))
    saved = _weights(out)
    model = TransferModel.from_pretrained(out)
    for i, group in enumerate(_group_names(model)):
        assert any(not torch.equal(saved[n], spy["initial"][n]) for n in group), f"layer group {i} did not train"
    assert _changed(spy["initial"], saved, "head.")
    running = [k for k in saved if k.endswith("running_mean")]
    assert any(not torch.equal(saved[k], spy["initial"][k]) for k in running)  # BatchNorm statistics do update


def test_gradual_unfreezing_goes_from_the_top(images: Path, tmp_path: Path, spy: dict, caplog) -> None:
    out = tmp_path / "out"
    train(_timm(images, out, strategy="gradual", gradual_unfreeze_epochs=1, num_train_epochs=3, learning_rate=0.01,
                augment=False, save_total_limit=5))
    groups = _group_names(TransferModel.from_pretrained(out))
    assert len(groups) == spy["num_layer_groups"] >= 4
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert [p.name for p in checkpoints] == ["checkpoint-3", "checkpoint-6", "checkpoint-9"]  # 18 images / 6 per step
    for epoch, checkpoint in enumerate(checkpoints, start=1):
        weights = _weights(checkpoint)
        changed = [any(not torch.equal(weights[n], spy["initial"][n]) for n in group) for group in groups]
        unfrozen = epoch - 1  # epoch 1: head only; then one more group from the top each epoch
        assert changed == [False] * (len(groups) - unfrozen) + [True] * unfrozen, f"after epoch {epoch}: {changed}"
        assert _changed(spy["initial"], weights, "head.")
    assert f"Epoch 3: 2 of {len(groups)} backbone groups unfrozen" in _messages(caplog)
    head = sum(t.numel() for name, t in _weights(out).items() if name.startswith("head.") and t.is_floating_point())
    assert f"parameters trainable ({head:,} in the first epoch)" in _messages(caplog)  # the head alone at first
    kept = json.loads((out / "training" / "summary.json").read_text())["best_epoch"]  # groups thawed up to it trained
    weights = _weights(out)
    thawed = sum(weights[n].numel() for group in groups[len(groups) - (kept - 1):] for n in group) if kept > 1 else 0
    assert json.loads((out / "training" / "summary.json").read_text())["trainable_parameters"] == head + thawed
    card = (out / "README.md").read_text()  # the data has no eval split: the card says where its examples came from
    assert "a seeded part carved out of the `train` split" in card and "split chosen by hubtl" not in card


def test_layer_decay_sets_learning_rates_by_depth(images: Path, tmp_path: Path, spy: dict) -> None:
    out = tmp_path / "out"
    lr, decay = 0.1, 0.5
    train(_timm(images, out, strategy="full", learning_rate=lr, layer_decay=decay, weight_decay=0.01,
                lr_scheduler_type="constant", max_steps=1, augment=False))
    n = spy["num_layer_groups"]
    seen: list[str] = []
    for group in spy["groups"]:
        name = group["name"].removesuffix(".no_decay")
        expected = lr if name == "head" else lr * decay ** (n - int(name.split(".")[1]))
        assert group["lr"] == pytest.approx(expected, rel=1e-12), group["name"]
        assert group["weight_decay"] == (0.0 if group["name"].endswith(".no_decay") else 0.01)
        seen += group["params"]
    assert sorted(seen) == sorted(spy["trainable"])  # every trainable parameter in exactly one group
    depths = {g["name"].removesuffix(".no_decay") for g in spy["groups"]}
    assert {f"backbone.{i}" for i in range(n)} <= depths
    # the optimizer that actually ran has the same rates (constant schedule)
    state = torch.load(out / "checkpoints" / "checkpoint-1" / "optimizer.bin", weights_only=True)
    assert [g["lr"] for g in state["param_groups"]] == pytest.approx([g["lr"] for g in spy["groups"]])


def test_lora_trains_adapters_and_head_and_saves_merged_weights(tiny_bert: str, tiny_bert_dir: Path, texts: Path,
                                                               tmp_path: Path, spy: dict) -> None:
    from transformers import BertModel

    out = tmp_path / "out"
    train(_bert(tiny_bert, texts, out, strategy="lora", lora_target_modules=["query", "value"], lora_r=4,
                lora_dropout=0.0, learning_rate=0.01))
    trainable = spy["trainable"]
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    assert any("lora_A" in n for n in trainable) and any("lora_B" in n for n in trainable)
    # saved with adapters merged: plain encoder keys only, loads strictly into a model built without PEFT
    saved = _weights(out)
    assert not [k for k in saved if "lora" in k or "base_model" in k]
    config = json.loads((out / "config.json").read_text())
    assert "peft" not in json.dumps(config).lower()
    model = TransferModel.from_pretrained(out)
    assert {p["label"] for p in model.predict(["a great film", "an awful film"])} <= {"neg", "pos"}
    initial = {f"backbone.model.{k}": v for k, v in BertModel.from_pretrained(tiny_bert_dir).state_dict().items()}
    changed = _changed(initial, saved, "backbone.")
    assert changed == {k for k in saved if k.startswith("backbone.") and k.endswith(("query.weight", "value.weight"))}


def test_lora_freezes_the_backbone_outside_its_lora_module() -> None:
    """A plugin's lora_module may be part of its backbone: the rest (an embedding, a stem) stays frozen as well."""
    from types import SimpleNamespace

    from hubtl import Backbone
    from hubtl.strategies import get_strategy

    class PartlyAdapted(Backbone):
        modality = "text"
        feature_dim = 8
        lora_module = "body"

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Embedding(10, 8)
            self.body = nn.Sequential()
            self.body.add_module("proj", nn.Linear(8, 8))

        def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.body(self.stem(batch["input_ids"]).mean(1))

        def preprocessor(self, train: bool = False) -> Any:
            raise NotImplementedError  # not needed to prepare the strategy

        def layer_groups(self) -> list[list[nn.Parameter]]:
            return [list(self.stem.parameters()), list(self.body.parameters())]

        def spec(self) -> dict[str, Any]:
            return {"plugin": "partly", "name": "adapted", "kwargs": {}}

    model = TransferModel.from_backbone(PartlyAdapted(), labels=["a", "b"])
    lora = SimpleNamespace(lora_r=2, lora_alpha=4, lora_dropout=0.0, lora_target_modules=["proj"])
    get_strategy("lora").prepare(model, lora)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable), trainable
    assert not model.backbone.stem.weight.requires_grad


def test_lora_targets_come_from_the_backbone_and_a_wrong_one_names_the_linear_layers(
    tiny_bert: str, texts: Path, tmp_path: Path, spy: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hubtl.backbones.transformers import TransformersBackbone

    with pytest.raises(ConfigError, match=r"q_proj.*names of its linear layers: query, key, value, dense"):
        train(_bert(tiny_bert, texts, tmp_path / "wrong", strategy="lora", lora_target_modules=["q_proj"]))
    monkeypatch.setattr(TransformersBackbone, "lora_target_modules", ("key",))  # a plugin's default targets
    train(_bert(tiny_bert, texts, tmp_path / "out", strategy="lora", lora_r=2, num_train_epochs=1))
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in spy["trainable"] if "lora_" in n}
    assert adapted == {"key"}


# ---------------------------------------------------------------------------------------------- feature cache


def test_feature_cache_gives_the_same_head_as_running_the_backbone(images: Path, tmp_path: Path, caplog) -> None:
    # head dropout on: the cache must not shift the training RNG either
    values = {"strategy": "linear_probe", "augment": False, "learning_rate": 0.05, "num_train_epochs": 3, "head_dropout": 0.3}
    cached = train(_timm(images, tmp_path / "cached", feature_cache=True, **values))
    assert "Feature cache on" in _messages(caplog)
    caplog.clear()
    direct = train(_timm(images, tmp_path / "direct", feature_cache=False, **values))
    assert "Feature cache off (feature_cache: false)" in _messages(caplog)
    a, b = _weights(tmp_path / "cached"), _weights(tmp_path / "direct")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5, msg=key)
    assert [r["eval_loss"] for r in cached.metrics] == pytest.approx([r["eval_loss"] for r in direct.metrics], abs=1e-5)
    summary = json.loads((tmp_path / "cached" / "training" / "summary.json").read_text())
    assert summary["feature_cache"] is True


def test_feature_cache_for_text_and_not_for_full_fine_tuning(tiny_bert: str, texts: Path, tmp_path: Path, caplog) -> None:
    train(_bert(tiny_bert, texts, tmp_path / "probe", strategy="linear_probe", learning_rate=0.05, num_train_epochs=1))
    assert "Feature cache on" in _messages(caplog)
    caplog.clear()
    train(_bert(tiny_bert, texts, tmp_path / "full", strategy="full", learning_rate=1e-3, num_train_epochs=1))
    assert "Feature cache" not in _messages(caplog)


# ---------------------------------------------------------------------------------------------- sources and tasks


def _check_output_dir(out: Path, epochs: int, keys: list[str]) -> dict[str, Any]:
    """The output dir holds a loadable model and its training record; returns eval_results.json."""
    results = json.loads((out / "training" / "eval_results.json").read_text())
    for key in keys:
        assert key in results, key
    lines = _jsonl(out / "training" / "metrics.jsonl")
    assert [r["epoch"] for r in lines] == list(range(1, epochs + 1))
    assert all("train_loss" in r and "eval_loss" in r for r in lines)
    config = yaml.safe_load((out / "training" / "config.yaml").read_text())
    assert config["output_dir"] == str(out)
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    return results


def test_image_folder_classification(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # images decoded and augmented in two DataLoader worker processes
    result = train(_timm(images, out, strategy="full", learning_rate=0.01, dataloader_num_workers=2))
    results = _check_output_dir(out, 2, ["eval_accuracy", "eval_f1_macro", "eval_per_class", "eval_confusion_matrix"])
    assert results == {**result.eval_results, "labels": ["blue", "red"]}
    assert set(results["eval_per_class"]) == {"blue", "red"}
    assert set(results["eval_per_class"]["red"]) == {"precision", "recall", "f1", "support"}
    matrix = np.array(results["eval_confusion_matrix"])
    assert matrix.shape == (2, 2) and matrix.sum() == results["eval_samples"] == 6
    assert results["eval_accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    model = TransferModel.from_pretrained(out)
    assert model.id2label == {0: "blue", 1: "red"}
    predictions = model.predict([images / "red" / "red0.png", Image.open(images / "blue" / "blue0.png")])
    assert all(p["label"] in ("blue", "red") and set(p["scores"]) == {"blue", "red"} for p in predictions)


def test_headerless_tsv_classification(tiny_bert: str, texts: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    train(_bert(tiny_bert, texts, out, strategy="full", learning_rate=5e-3, num_train_epochs=3))
    results = _check_output_dir(out, 3, ["eval_accuracy", "eval_f1_macro", "eval_per_class", "eval_confusion_matrix"])
    assert results["eval_samples"] == 16 and results["labels"] == ["neg", "pos"]
    model = TransferModel.from_pretrained(out)
    (prediction,) = model.predict("a wonderful film")
    assert prediction["label"] in ("neg", "pos")


def test_csv_regression(tiny_bert: str, tmp_path: Path) -> None:
    rows = [(s, (1.0 if label == "pos" else -1.0) + 0.1 * (i % 3)) for i, (s, label) in enumerate(_sentences(40))]
    path = tmp_path / "scores.csv"
    pd.DataFrame(rows, columns=["review", "score"]).to_csv(path, index=False)
    out = tmp_path / "out"
    result = train(_config(out, backbone=tiny_bert, task="regression", strategy="full", learning_rate=5e-3,
                           dataset={"path": str(path), "text_column": "review", "label_column": "score",
                                    "validation_size": 0.25}))
    results = _check_output_dir(out, 2, ["eval_mae", "eval_rmse", "eval_r2"])
    assert "eval_accuracy" not in results and results["eval_samples"] == 10
    assert results["eval_rmse"] >= results["eval_mae"] >= 0
    assert result.eval_results["eval_rmse"] == min(r["eval_rmse"] for r in result.metrics)  # lower is better
    (prediction,) = TransferModel.from_pretrained(out).predict(["a great film"])
    assert isinstance(prediction["value"], float)


def test_jsonl_multi_label(tiny_bert: str, tmp_path: Path) -> None:
    path = tmp_path / "tags.jsonl"
    with path.open("w") as f:
        for i, (sentence, label) in enumerate(_sentences(40)):
            tags = [label] + (["short"] if len(sentence) < 16 else [])
            f.write(json.dumps({"text": sentence, "tags": tags}) + "\n")
    out = tmp_path / "out"
    train(_config(out, backbone=tiny_bert, task="multi_label", strategy="full", learning_rate=5e-3,
                  dataset={"path": str(path), "label_column": "tags", "validation_size": 0.25}))
    results = _check_output_dir(out, 2, ["eval_f1_micro", "eval_f1_macro", "eval_per_class"])
    assert results["labels"] == ["neg", "pos", "short"]
    (prediction,) = TransferModel.from_pretrained(out).predict(["bad"])
    assert set(prediction["labels"]) <= {"neg", "pos", "short"} and set(prediction["scores"]) == {"neg", "pos", "short"}


def test_parquet_with_integer_labels_and_label_names(tiny_bert: str, tmp_path: Path) -> None:
    frame = pd.DataFrame([(s, int(label == "pos")) for s, label in _sentences(40)], columns=["text", "label"])
    frame.to_parquet(tmp_path / "reviews.parquet")
    out = tmp_path / "out"
    train(_config(out, backbone=tiny_bert, labels=["negative", "positive"], strategy="linear_probe",
                  learning_rate=0.05, dataset={"path": str(tmp_path / "reviews.parquet"), "validation_size": 0.25}))
    results = _check_output_dir(out, 2, ["eval_accuracy", "eval_f1_macro"])
    assert set(results["eval_per_class"]) == {"negative", "positive"}
    assert TransferModel.from_pretrained(out).id2label == {0: "negative", 1: "positive"}


# ---------------------------------------------------------------------------------------------- bad inputs


@pytest.fixture
def broken_images(images: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """The colour folder plus a text file named .png and a truncated PNG."""
    root = tmp_path / "images"
    shutil.copytree(images, root)
    (root / "red" / "notes.png").write_text("not an image")
    whole = (root / "blue" / "blue0.png").read_bytes()
    (root / "blue" / "broken.png").write_bytes(whole[: len(whole) // 3])
    return root, [str(root / "red" / "notes.png"), str(root / "blue" / "broken.png")]


def test_unreadable_images_are_skipped_and_listed(broken_images, tmp_path: Path, caplog) -> None:
    root, bad = broken_images
    out = tmp_path / "out"
    result = train(_timm(root, out, strategy="linear_probe", augment=False, num_train_epochs=1))
    warning = next(r.getMessage() for r in caplog.records if "Skipped" in r.getMessage())
    assert "Skipped 2 unreadable" in warning and all(path in warning for path in bad)
    summary = json.loads((out / "training" / "summary.json").read_text())
    assert sorted(summary["skipped_files"]) == sorted(bad)
    assert summary["train_samples"] + summary["eval_samples"] == 24
    assert result.eval_results["eval_samples"] == summary["eval_samples"]


def test_strict_fails_early_on_unreadable_images(broken_images, tmp_path: Path) -> None:
    root, bad = broken_images
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"2 file\(s\) are not readable images") as err:
        train(_timm(root, out, strategy="full"), ["--strict"])
    assert all(path in str(err.value) for path in bad)
    assert not (out / "checkpoints").exists()


def _write_bad(kind: str, root: Path) -> dict[str, Any]:
    """A dataset section whose data is wrong in one way."""
    root.mkdir(parents=True, exist_ok=True)
    good = "".join(f"{s}\t{label}\n" for s, label in _sentences(12))
    if kind == "label column missing":
        (root / "train.tsv").write_text(good)
        return {"path": str(root / "train.tsv"), "column_names": ["sentence", "label"], "text_column": "sentence",
                "label_column": "sentiment"}
    if kind == "label outside the label set":
        (root / "train.tsv").write_text(good + "so-so film\tneutral\n")
        return {"path": str(root / "train.tsv"), "column_names": ["sentence", "label"], "text_column": "sentence"}
    if kind == "empty split":
        (root / "train.tsv").write_text(good)
        (root / "dev.tsv").write_text("")
        return {"path": str(root), "data_files": {"train": "train.tsv", "validation": "dev.tsv"},
                "column_names": ["sentence", "label"], "text_column": "sentence"}
    if kind == "text column with non-strings":
        rows = [{"text": s, "label": label} for s, label in _sentences(12)] + [{"text": 42, "label": "pos"}]
        (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return {"path": str(root / "data.jsonl")}
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [
        ("label column missing", r"label column 'sentiment' is not in split 'train'.*Set label_column"),
        ("label outside the label set", r"outside the label set.*neutral"),
        ("empty split", r"Split 'validation' .* is empty"),
        ("text column with non-strings", r"Text column 'text' must hold strings.*42"),
    ],
)
def test_bad_data_fails_before_training(tiny_bert: str, tmp_path: Path, kind: str, pattern: str) -> None:
    out = tmp_path / "out"
    labels = {"labels": ["neg", "pos"]} if kind == "label outside the label set" else {}
    with pytest.raises(HubtlError, match=pattern):
        train(_config(out, backbone=tiny_bert, dataset=_write_bad(kind, tmp_path / "data"), **labels))
    assert not (out / "checkpoints").exists() and not (out / "config.json").exists()


def test_cli_reports_bad_data_in_one_line(tiny_bert: str, tmp_path: Path, capsys) -> None:
    from hubtl.train import main

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path / "out", backbone=tiny_bert,
                                           dataset=_write_bad("label column missing", tmp_path / "data"))))
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("hubtl: error: The label column 'sentiment'")
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------------- best model, early stop


def test_early_stopping_when_the_metric_cannot_improve(tiny_bert: str, texts: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "out"
    result = train(_bert(tiny_bert, texts, out, strategy="linear_probe", learning_rate=1e-12, num_train_epochs=6,
                         early_stopping_patience=1, metric_for_best_model="accuracy"))
    lines = _jsonl(out / "training" / "metrics.jsonl")
    assert len(lines) == 2 < 6  # epoch 2 did not beat epoch 1: stop
    assert "Early stopping: eval_accuracy did not improve for 1 epochs" in _messages(caplog)
    # the accuracy ties, so the lower eval_loss keeps an epoch (the later one when equal)
    kept = 2 if lines[1]["eval_loss"] <= lines[0]["eval_loss"] else 1
    assert result.eval_results["epoch"] == kept
    assert json.loads((out / "training" / "summary.json").read_text())["best_epoch"] == kept
    assert f"Kept the weights of epoch {kept} of 2 (best eval_accuracy" in _messages(caplog)


def test_the_best_epoch_is_saved_not_the_last(tiny_bert: str, texts: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # a learning rate far too high: the eval loss jumps around, the best epoch is rarely the last
    result = train(_bert(tiny_bert, texts, out, strategy="full", learning_rate=0.3, num_train_epochs=4,
                         lr_scheduler_type="constant", metric_for_best_model="loss"))
    losses = [r["eval_loss"] for r in result.metrics]
    best = int(np.argmin(losses))
    assert best + 1 < len(losses), f"with this seed the best epoch is not the last: {losses}"
    assert result.eval_results["epoch"] == best + 1
    assert result.eval_results["eval_loss"] == losses[best]
    # the saved model is the best epoch's: its loss on the dev split is the best loss
    model = TransferModel.from_pretrained(out)
    dev = _sentences(16, offset=1)
    logits = model.logits([s for s, _ in dev])
    targets = torch.tensor([model.label2id[label] for _, label in dev])
    assert torch.nn.functional.cross_entropy(logits, targets).item() == pytest.approx(losses[best], abs=1e-4)
    assert (logits.argmax(-1) == targets).float().mean().item() == pytest.approx(result.metrics[best]["eval_accuracy"])
    assert sorted(p.name for p in (out / "checkpoints" / "best").iterdir()) == [f"model-epoch{best + 1}.safetensors"]


# ---------------------------------------------------------------------------------------------- optimisation


NO_DROPOUT = {"backbone_kwargs": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}}


def test_gradient_accumulation_matches_the_larger_batch(tiny_bert: str, texts: Path, tmp_path: Path) -> None:
    values = {"strategy": "full", "learning_rate": 5e-3, "warmup_ratio": 0.25, **NO_DROPOUT}
    big = train(_bert(tiny_bert, texts, tmp_path / "big", per_device_train_batch_size=8, **values))
    accumulated = train(_bert(tiny_bert, texts, tmp_path / "acc", per_device_train_batch_size=4,
                              gradient_accumulation_steps=2, **values))
    assert [r["step"] for r in big.metrics] == [r["step"] for r in accumulated.metrics] == [6, 12]
    # the scheduler steps once per optimizer step: same learning rates
    assert [r["learning_rate"] for r in big.metrics] == pytest.approx([r["learning_rate"] for r in accumulated.metrics])
    for a, b in zip(big.metrics, accumulated.metrics):
        assert a["eval_loss"] == pytest.approx(b["eval_loss"], abs=1e-4)
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)
    wa, wb = _weights(tmp_path / "big"), _weights(tmp_path / "acc")
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-4, msg=key)


def test_max_steps_and_the_schedule(tiny_bert: str, texts: Path, tmp_path: Path) -> None:
    result = train(_bert(tiny_bert, texts, tmp_path / "out", strategy="linear_probe", learning_rate=0.1,
                         max_steps=9, num_train_epochs=100, lr_scheduler_type="linear", warmup_ratio=0.0))
    # 6 steps per epoch: epoch 1 (steps 1-6), then a cut-short epoch 2 (steps 7-9); linear decay to 0 at step 9
    assert [(r["epoch"], r["step"]) for r in result.metrics] == [(1, 6), (2, 9)]
    assert [r["learning_rate"] for r in result.metrics] == pytest.approx([0.1 * 3 / 9, 0.0])


def test_schedulers_with_their_own_arguments_and_warmup_steps(tiny_bert: str, texts: Path, tmp_path: Path) -> None:
    """lr_scheduler_kwargs reach transformers' schedule; warmup_steps overrides warmup_ratio; bad arguments stop the
    run before any data is read, with what to give."""
    result = train(_bert(tiny_bert, texts, tmp_path / "min-lr", strategy="linear_probe", learning_rate=0.1, max_steps=12,
                         lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.2},
                         warmup_steps=6, warmup_ratio=0.9))  # fmt: skip
    # steps 1-6 warm up (to 0.1 at step 6), then cosine from 0.1 down to 0.2 * 0.1 at step 12
    assert [r["learning_rate"] for r in result.metrics] == pytest.approx([0.1, 0.02])
    for kwargs, message in (({}, "One of min_lr or min_lr_rate"), ({"min_lr_rate": 0.1, "floor": 1}, "unexpected keyword")):
        out = tmp_path / f"bad-{len(kwargs)}"
        values = _bert(tiny_bert, texts, out, lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs=kwargs)
        values["dataset"] = {**values["dataset"], "path": str(tmp_path / "never-read")}
        with pytest.raises(ConfigError) as err:  # reported with the other preflight problems: the data path too
            train(values)
        assert message in str(err.value) and "lr_scheduler_kwargs" in str(err.value) and "never-read" in str(err.value)
        assert not out.exists()


@pytest.fixture(scope="module")
def uneven_texts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Header-less train.tsv (48 rows) and dev.tsv (16 rows) whose sentences run from 2 to 49 words."""
    root = tmp_path_factory.mktemp("uneven")
    rng = np.random.default_rng(0)
    for name, n in (("train.tsv", 48), ("dev.tsv", 16)):
        rows = []
        for i in range(n):
            words = POSITIVE if i % 2 == 0 else NEGATIVE
            sentence = " ".join(words[j % len(words)] for j in range(int(rng.integers(2, 50))))
            rows.append(f"{sentence}\t{'pos' if i % 2 == 0 else 'neg'}\n")
        (root / name).write_text("".join(rows))
    return root


def test_group_by_length_trains_and_resumes_exactly(tiny_bert: str, uneven_texts: Path, tmp_path: Path, caplog) -> None:
    every = {"strategy": "full", "learning_rate": 5e-3, "group_by_length": True, "save_steps": 3, "save_total_limit": 10,
             **NO_DROPOUT}  # fmt: skip
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    train(_bert(tiny_bert, uneven_texts, reference, **every))
    (resumed / "checkpoints").mkdir(parents=True)  # what a kill after step 9 (mid-epoch 2 of 6 steps each) leaves
    for kept in ("checkpoint-9", "best"):
        shutil.copytree(reference / "checkpoints" / kept, resumed / "checkpoints" / kept)
    train(_bert(tiny_bert, uneven_texts, resumed, resume_from_checkpoint=True, **every))
    assert "at step 9" in _messages(caplog)
    _assert_same_weights(reference, resumed, atol=1e-6)
    _same_history(reference, resumed)
    train(_bert(tiny_bert, uneven_texts, tmp_path / "shuffled", **{**every, "group_by_length": False}))
    plain, grouped = _weights(tmp_path / "shuffled"), _weights(reference)
    assert any(not torch.equal(plain[k], grouped[k]) for k in plain)  # other batches: the option took effect


def test_group_by_length_is_refused_for_images(images: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="group_by_length.*no length.*remove group_by_length"):
        train(_timm(images, tmp_path / "out", strategy="full", group_by_length=True))


def test_repeated_runs_in_one_process_with_other_precision(tiny_bert: str, texts: Path, tmp_path: Path, caplog) -> None:
    """Accelerate's state is a per-process singleton: a second run with another mixed_precision must work. fp16, inert
    on a CPU, is said so and recorded as what ran."""
    values = {"strategy": "full", "learning_rate": 1e-3, "num_train_epochs": 1}
    train(_bert(tiny_bert, texts, tmp_path / "fp32", **values))
    result = train(_bert(tiny_bert, texts, tmp_path / "bf16", mixed_precision="bf16", **values))
    assert result.metrics[0]["eval_samples"] == 16 and np.isfinite(result.metrics[0]["eval_loss"])
    assert json.loads((tmp_path / "bf16" / "training" / "summary.json").read_text())["mixed_precision"] == "bf16"
    if not torch.cuda.is_available():  # on a GPU fp16 runs
        with caplog.at_level("WARNING", logger="hubtl"):
            train(_bert(tiny_bert, texts, tmp_path / "fp16", mixed_precision="fp16", **values))
        assert "mixed_precision: fp16 has no effect on CPU: this run trains in float32" in caplog.text
        assert json.loads((tmp_path / "fp16" / "training" / "summary.json").read_text())["mixed_precision"] == "no"
    train(_bert(tiny_bert, texts, tmp_path / "again", **values))


def test_tensorboard_logging(tiny_bert: str, texts: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    out = tmp_path / "out"
    train(_bert(tiny_bert, texts, out, strategy="linear_probe", learning_rate=0.05, report_to="tensorboard"))
    events = list((out / "training").rglob("events.out.tfevents.*"))
    assert events and sum(e.stat().st_size for e in events) > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for event_file in events:
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    assert {"train_loss", "eval_loss", "eval_accuracy", "loss", "learning_rate"} <= tags, tags
    assert not tags & {"step", "epoch", "eval_samples", "epoch_time_s"}, "only metrics are logged as metrics"


def test_step_records_and_evaluation_within_an_epoch(tiny_bert: str, texts: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # 48 sentences in batches of 8: 6 steps in the one epoch
    result = train(_bert(tiny_bert, texts, out, strategy="full", learning_rate=1e-3, num_train_epochs=1, logging_steps=2,
                         eval_strategy="steps", eval_steps=3))
    path = out / "training" / "metrics.jsonl"
    steps, evals, epochs = _jsonl(path, "step"), _jsonl(path, "eval"), _jsonl(path)
    assert [r["step"] for r in steps] == [2, 4, 6] and [r["step"] for r in evals] == [3] and len(epochs) == 1
    assert all(np.isfinite(r["loss"]) and r["learning_rate"] >= 0 and r["train_samples_per_second"] > 0 for r in steps)
    assert steps[0]["learning_rate"] > steps[1]["learning_rate"] > steps[2]["learning_rate"]  # linear decay
    assert [r["epoch"] for r in steps] == pytest.approx([2 / 6, 4 / 6, 1.0], abs=1e-3)
    assert 0.0 <= evals[0]["eval_accuracy"] <= 1.0 and evals[0]["eval_samples"] == 16
    order = [(r["kind"], r["step"]) for r in map(json.loads, path.read_text().splitlines())]
    assert order == [("step", 2), ("eval", 3), ("step", 4), ("step", 6), ("epoch", 6)]
    assert result.metrics == epochs  # TrainResult.metrics keeps the epoch rows
    # the step records' losses average their window: their mean equals the epoch's training loss
    assert np.mean([r["loss"] for r in steps]) == pytest.approx(epochs[0]["train_loss"], rel=1e-6)


# ---------------------------------------------------------------------------------------------- metrics


def test_classification_metrics_by_hand() -> None:
    from hubtl.tasks import get_task

    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])
    targets = torch.tensor([0, 1, 2, 2, 1])
    m = get_task("classification").compute_metrics(logits, targets, ["a", "b", "c"])
    assert m["eval_accuracy"] == pytest.approx(3 / 5)
    assert m["eval_confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]  # rows: true, columns: predicted
    assert m["eval_per_class"]["a"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert m["eval_per_class"]["c"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["eval_f1_macro"] == pytest.approx((2 / 3 + 0.5 + 2 / 3) / 3)


def test_multi_label_and_regression_metrics_by_hand() -> None:
    from hubtl.tasks import get_task

    logits = torch.tensor([[5.0, -5.0], [5.0, 5.0], [-5.0, -5.0]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    m = get_task("multi_label").compute_metrics(logits, targets, ["x", "y"])
    # x: tp 2, fp 0, fn 0 -> f1 1; y: tp 0, fp 1, fn 1 -> f1 0; micro: tp 2, fp 1, fn 1 -> 2/3
    assert m["eval_f1_micro"] == pytest.approx(2 / 3) and m["eval_f1_macro"] == pytest.approx(0.5)
    assert m["eval_exact_match"] == pytest.approx(1 / 3)
    r = get_task("regression").compute_metrics(torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([1.0, 3.0, 3.0]), None)
    assert r["eval_mae"] == pytest.approx(2 / 3) and r["eval_rmse"] == pytest.approx((2 / 3) ** 0.5)
    assert r["eval_r2"] == pytest.approx(1 - 2 / (8 / 3))


@pytest.mark.parametrize("task, width", [("classification", 4), ("multi_label", 3), ("regression", 2)])
def test_metrics_accumulated_batch_by_batch_equal_metrics_on_everything(task: str, width: int) -> None:
    """Evaluation keeps counts and sums per batch (uneven batches here), never the outputs, and ends where one call ends."""
    from hubtl.tasks import SummedMetrics, get_task

    generator = torch.Generator().manual_seed(0)
    n, labels = 997, [f"l{i}" for i in range(width)]
    logits = torch.randn(n, width, generator=generator) * 3
    targets = {
        "classification": torch.randint(0, width, (n,), generator=generator),
        "multi_label": torch.randint(0, 2, (n, width), generator=generator).float(),
        "regression": torch.randn(n, width, generator=generator) * 4 + 10,
    }[task]
    kind = get_task(task)
    accumulator = kind.metric_accumulator(labels if kind.uses_labels else None, 0.5)
    assert isinstance(accumulator, SummedMetrics)
    for start, end in [(0, 1), (1, 64), (64, 500), (500, 997)]:
        accumulator.update(logits[start:end], targets[start:end])
    summed = accumulator.compute()
    whole = kind.compute_metrics(logits, targets, labels if kind.uses_labels else None, 0.5)
    assert summed.keys() == whole.keys()
    for key, value in whole.items():
        if isinstance(value, float):
            assert summed[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        else:
            assert summed[key] == value, key
    # nothing kept grows with the number of examples
    arrays = [v for v in vars(accumulator.sums).values() if isinstance(v, np.ndarray)]
    assert all(a.size <= width * width for a in arrays)


def test_a_task_with_only_compute_metrics_is_still_evaluated_on_every_batch() -> None:
    from hubtl.tasks import Classification, CollectedOutputs, Task

    # what a task that defines compute_metrics and no accumulator gets: the base class's, every batch kept
    accumulator = Task.metric_accumulator(Classification(), ["a", "b"])
    assert isinstance(accumulator, CollectedOutputs)
    accumulator.update(torch.tensor([[2.0, 0.0]]), torch.tensor([0]))
    accumulator.update(torch.tensor([[0.0, 2.0], [2.0, 0.0]]), torch.tensor([1, 1]))
    assert accumulator.compute()["eval_accuracy"] == pytest.approx(2 / 3)


def test_ties_on_the_metric_keep_the_epoch_with_the_lower_eval_loss(images: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "out"
    # every epoch classifies the 6 evaluation images the same way, while the loss keeps falling
    result = train(_timm(images, out, strategy="linear_probe", learning_rate=0.02, num_train_epochs=4, augment=False,
                         metric_for_best_model="accuracy"))
    rows = _jsonl(out / "training" / "metrics.jsonl")
    best = max(r["eval_accuracy"] for r in rows)
    tied = [r for r in rows if r["eval_accuracy"] == best]
    expected = min(tied, key=lambda r: (r["eval_loss"], -r["epoch"]))["epoch"]
    assert result.eval_results["epoch"] == expected
    assert json.loads((out / "training" / "summary.json").read_text())["best_epoch"] == expected
    assert len(tied) > 1 and expected != tied[0]["epoch"]  # a real tie, which the first epoch used to win
    assert f"Kept the weights of epoch {expected} of 4" in _messages(caplog) and "tied with epoch(s)" in _messages(caplog)


def test_is_better_direction_and_nan() -> None:
    from hubtl.metrics import is_better

    assert is_better("eval_accuracy", 0.6, 0.5) and not is_better("eval_accuracy", 0.5, 0.5)
    assert is_better("eval_loss", 0.4, 0.5) and not is_better("eval_rmse", 0.6, 0.5)
    assert is_better("eval_r2", 0.6, 0.5) and is_better("eval_custom", 0.4, 0.5, greater_is_better=False)
    nan = float("nan")
    assert not is_better("eval_loss", nan, None) and not is_better("eval_loss", nan, 0.5)
    assert is_better("eval_loss", 3.0, nan)  # a diverged first epoch never blocks a later real one


# ---------------------------------------------------------------------------------------------- output dir


def test_resuming_with_another_batch_size_warns(tiny_bert: str, texts: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "out"
    cfg = _bert(tiny_bert, texts, out, strategy="linear_probe", learning_rate=0.05, num_train_epochs=1)
    train(cfg)
    caplog.clear()
    train({**cfg, "num_train_epochs": 2}, ["--resume"])  # the restored schedule was built for 1 epoch
    assert "The checkpoint was written by a run with num_train_epochs 1.0 (now 2.0)" in _messages(caplog)
    caplog.clear()
    train({**cfg, "num_train_epochs": 3, "per_device_train_batch_size": 4, "learning_rate": 0.01}, ["--resume"])
    assert "per_device_train_batch_size 8 (now 4)" in _messages(caplog) and "learning_rate 0.05 (now 0.01)" in _messages(caplog)
    assert "this is not the run the checkpoint began" in _messages(caplog)


def test_resuming_into_another_model_or_other_labels_is_refused(tiny_bert: str, texts: Path, tmp_path: Path) -> None:
    """Labels in another order would swap the classes under the saved head; another head would not load: both stop
    with the changed keys named, and the checkpoint stays usable."""
    out = tmp_path / "out"
    cfg = _bert(tiny_bert, texts, out, strategy="linear_probe", learning_rate=0.05, num_train_epochs=1)
    train(cfg)
    (checkpoint,) = (out / "checkpoints").glob("checkpoint-*")
    with pytest.raises(ConfigError, match=r"labels \['neg', 'pos'\] \(now \['pos', 'neg'\]\).*training/config.yaml"):
        train({**cfg, "labels": ["pos", "neg"], "num_train_epochs": 2}, ["--resume"])
    with pytest.raises(ConfigError, match=r"head_hidden_dim None \(now 16\), strategy linear_probe \(now full\)"):
        train({**cfg, "head_hidden_dim": 16, "strategy": "full", "num_train_epochs": 2}, ["--resume"])
    state_file = checkpoint / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["run_shape"]["model"]["fsdp"] = True  # as a sharded run records it: its files are in another format
    state_file.write_text(json.dumps(state))
    with pytest.raises(ConfigError, match=r"fsdp True \(now False\).*the same accelerate launch"):
        train({**cfg, "num_train_epochs": 2}, ["--resume"])
    # a checkpoint that records no model (written before hubtl recorded it): the load's own mismatch, in words
    del state["run_shape"]["model"]
    state_file.write_text(json.dumps(state))
    with pytest.raises(ConfigError, match=r"does not fit the model this config builds.*--overwrite_output_dir"):
        train({**cfg, "head_hidden_dim": 16, "num_train_epochs": 2}, ["--resume"])
    resumed = train({**cfg, "num_train_epochs": 2}, ["--resume"])  # the unchanged config still resumes
    assert [r["epoch"] for r in resumed.metrics] == [1, 2]


def test_output_dir_of_an_earlier_run(tiny_bert: str, texts: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = _bert(tiny_bert, texts, out, strategy="linear_probe", learning_rate=0.05, num_train_epochs=1)
    with pytest.raises(ConfigError, match=r"no checkpoint in .*start without --resume"):
        train(cfg, ["--resume"])
    first = train(cfg)
    with pytest.raises(ConfigError, match=r"already holds checkpoints of an earlier run.*--resume.*--overwrite_output_dir true"):
        train(cfg)
    again = train(cfg, ["--overwrite_output_dir", "true"])
    assert again.eval_results == first.eval_results
    assert len(_jsonl(out / "training" / "metrics.jsonl")) == 1
    resumed = train(cfg, ["--resume"])  # nothing left to do: the model is written again from the last checkpoint
    assert resumed.eval_results == first.eval_results


def test_train_accepts_a_config_object_with_overrides(tiny_bert: str, texts: Path, tmp_path: Path) -> None:
    from hubtl.config import load_config

    cfg = load_config(_bert(tiny_bert, texts, tmp_path / "a", strategy="linear_probe", num_train_epochs=1))
    result = train(cfg, ["--output_dir", str(tmp_path / "b"), "--learning_rate", "0.05"])
    assert result.output_dir == tmp_path / "b" and (tmp_path / "b" / "config.json").is_file()
    assert yaml.safe_load((tmp_path / "b" / "training" / "config.yaml").read_text())["learning_rate"] == 0.05


# ---------------------------------------------------------------------------------------------- full disk, stale staging


#: One optimizer step per epoch (18 training images), so each epoch writes exactly one checkpoint.
ONE_STEP = {"strategy": "full", "learning_rate": 0.01, "augment": False, "per_device_train_batch_size": 18,
            "lr_scheduler_type": "constant", "num_train_epochs": 1}


def _usage(path: Path) -> int:
    """Bytes that the files under `path` take on a tmpfs (whole 4 KiB pages)."""
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    return sum(-(-f.stat().st_size // 4096) * 4096 for f in files)


def _hashes(directory: Path) -> dict[str, str]:
    return {str(f.relative_to(directory)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(directory.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def one_step_runs(images: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """On a roomy disk: a 1-epoch run ('one', measured) and the same run resumed for a second epoch ('two')."""
    root = tmp_path_factory.mktemp("roomy")
    one, two = root / "one", root / "two"
    train(_timm(images, one, **ONE_STEP))
    shutil.copytree(one, two)
    train(_timm(images, two, **ONE_STEP), ["--resume", "--num_train_epochs", "2"])
    checkpoints = one / "checkpoints"
    sizes = {"run": _usage(one), "checkpoint": _usage(checkpoints / "checkpoint-1"),
             "best": _usage(checkpoints / "best"), "model": _usage(one / "model.safetensors")}
    return {"one": one, "two": two, "sizes": sizes}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """mount(size): a tmpfs of `size` bytes at tmp_path/disk, unmounted afterwards; skips where mounting is refused."""
    disk = tmp_path / "disk"
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        disk.mkdir(exist_ok=True)
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)],
                                  capture_output=True, text=True)
        except FileNotFoundError:
            pytest.skip("no `mount` command: a full disk needs a small tmpfs (Linux, as root)")
        if done.returncode:
            pytest.skip(f"cannot mount a small tmpfs to fill up (needs root with CAP_SYS_ADMIN): {done.stderr.strip()}")
        mounted.append(disk)
        return disk

    yield mount
    for path in mounted:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode:
            # still busy (a test failed while holding a file there): detach it now, free it when released
            subprocess.run(["umount", "--lazy", str(path)], check=True)


def _open_files(under: Path) -> list[str]:
    """Files under `under` that this process holds open (a deleted one still takes its space)."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith(str(under)):
            found.append(target)
    return found


def _grow(disk: Path) -> None:
    """Free space: make the tmpfs big."""
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)


def test_a_full_disk_at_a_checkpoint_says_so_and_keeps_the_last_one(images: Path, small_disk, one_step_runs) -> None:
    sizes = one_step_runs["sizes"]
    # room for a finished 1-epoch run, the best weights of epoch 2 and half of checkpoint-2
    disk = small_disk(sizes["run"] + sizes["best"] + sizes["checkpoint"] // 2)
    out = disk / "out"
    cfg = _timm(images, out, **ONE_STEP)
    train(cfg)
    checkpoints = out / "checkpoints"
    before = _hashes(checkpoints / "checkpoint-1")

    with pytest.raises(HubtlError) as err:
        train(cfg, ["--resume", "--num_train_epochs", "2"])
    message = str(err.value)
    assert message.startswith(f"The disk is full: writing checkpoint-2 to {checkpoints} needs about ")
    assert re.search(r"needs about [\d,]+ bytes \(.*MiB\) but only [\d,]+ bytes .* are free there", message), message
    last = checkpoints / "checkpoint-1"
    assert f"Free space there and rerun the same command with --resume to continue from {last}, which is intact" in message
    assert f"or move {out} to a disk with room and rerun with --output_dir set to its new place" in message
    assert "unexpected pos" in repr(err.value.__cause__) or "os error 28" in str(err.value.__cause__)
    assert _hashes(checkpoints / "checkpoint-1") == before
    assert sorted(p.name for p in checkpoints.iterdir() if p.name != "best") == ["checkpoint-1"]  # no staging left
    assert not _open_files(disk)  # the half-written checkpoint's space is freed, not held by an open file

    _grow(disk)
    result = train(cfg, ["--resume", "--num_train_epochs", "2"])
    assert [r["epoch"] for r in result.metrics] == [1, 2]
    _assert_same_weights(one_step_runs["two"], out, atol=1e-6)


def test_a_full_disk_at_the_final_save_says_so_in_one_line(images: Path, tmp_path: Path, small_disk, one_step_runs,
                                                           capsys) -> None:
    from hubtl.train import main

    sizes = one_step_runs["sizes"]
    disk = small_disk(sizes["run"] - sizes["model"] // 2)  # everything but half of the final model.safetensors
    out = disk / "out"
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_timm(images, out, **ONE_STEP)))
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"hubtl: error: The disk is full: writing the final model to {out} needs about "), err
    assert f"--resume to continue from {out / 'checkpoints' / 'checkpoint-1'}, which is intact" in line
    assert "Traceback" not in err
    assert [p.name for p in disk.iterdir()] == ["out"]  # the final save's staging folder is gone
    assert not (out / "config.json").exists() and not (out / "model.safetensors").exists()

    _grow(disk)
    assert main([str(path), "--resume"]) == 0
    _assert_same_weights(one_step_runs["one"], out)


def test_a_full_disk_before_any_checkpoint_says_to_rerun(images: Path, small_disk, one_step_runs) -> None:
    sizes = one_step_runs["sizes"]
    disk = small_disk(sizes["best"] + sizes["checkpoint"] // 2)  # the best weights fit, checkpoint-1 does not
    out = disk / "out"
    cfg = _timm(images, out, **ONE_STEP)
    with pytest.raises(HubtlError, match=r"^The disk is full: writing checkpoint-1 to .* \(no checkpoint was completed "
                                         r"yet, so training starts again\)\.$") as err:
        train(cfg)
    assert "or set output_dir to a disk with room, and rerun the same command" in str(err.value)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["best"]
    assert not _open_files(disk)
    _grow(disk)
    train(cfg)  # the advice works: the same command starts again
    _assert_same_weights(one_step_runs["one"], out)


def test_only_disk_full_errors_become_disk_full_errors(tmp_path: Path) -> None:
    import errno

    from hubtl.training.disk import is_disk_full as _is_disk_full

    assert _is_disk_full(OSError(errno.ENOSPC, "No space left on device"), tmp_path, 1)
    assert _is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"), tmp_path, 1)
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert _is_disk_full(wrapped, tmp_path, 1)
    safetensors = Exception("Error while serializing: I/O error: No space left on device (os error 28)")
    assert _is_disk_full(safetensors, tmp_path, 1)
    # torch's short write hides the errno: only a disk with less room than the write counts as full
    short = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    free = shutil.disk_usage(tmp_path).free
    assert _is_disk_full(short, tmp_path, free + 1) and not _is_disk_full(short, tmp_path, 1)
    assert not _is_disk_full(OSError(errno.EACCES, "Permission denied"), tmp_path, free + 1)
    assert not _is_disk_full(OSError(errno.EFBIG, "File too large"), tmp_path, free + 1)
    assert not _is_disk_full(RuntimeError("CUDA out of memory"), tmp_path, free + 1)


def test_a_new_run_removes_staging_folders_a_killed_run_left(images: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "out"
    stale = [tmp_path / ".out.tmp-0badc0de", out / "checkpoints" / ".staging-checkpoint-3"]
    unrelated = [tmp_path / ".other.tmp-0badc0de", tmp_path / ".out2.tmp-0badc0de", tmp_path / "out.tmp-0badc0de",
                 tmp_path / ".out.tmp-notes", out / "checkpoints" / "notes", out / "keep.txt"]
    for path in stale + unrelated:
        (path if path.suffix != ".txt" else path.parent).mkdir(parents=True, exist_ok=True)
        (path / "model.safetensors" if path.suffix != ".txt" else path).write_bytes(b"half-written")
    (tmp_path / ".out.tmp-0badc0de.txt").write_text("a file, not a staging folder")

    train(_timm(images, out, **ONE_STEP))
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in unrelated) and (tmp_path / ".out.tmp-0badc0de.txt").is_file()
    assert "Removed 2 staging folder(s) left by an interrupted run" in _messages(caplog)
    assert (out / "config.json").is_file()


# ---------------------------------------------------------------------------------------------- processes


RUN = {"strategy": "full", "learning_rate": 5e-3, "per_device_train_batch_size": 4, "num_train_epochs": 8,
       "save_steps": 5, "save_total_limit": 2, "lr_scheduler_type": "linear", "warmup_ratio": 0.1}


@pytest.fixture(scope="module")
def run_config(tiny_bert: str, texts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A YAML config for the subprocess tests: tiny BERT with dropout on, 96 steps, a checkpoint every 5 steps.

    The dataset path is relative to the YAML file, as users write it."""
    root = tmp_path_factory.mktemp("run")
    shutil.copytree(texts, root / "data")
    cfg = _bert(tiny_bert, texts, root / "unused", **RUN)
    cfg["dataset"]["path"] = "data"
    del cfg["output_dir"]
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _hubtl() -> list[str]:
    return [str(Path(sys.executable).with_name("hubtl"))]


def _module() -> list[str]:
    return [sys.executable, "-m", "hubtl.train"]


def _run(command: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def reference(run_config: Path) -> Path:
    """The uninterrupted run, through the `hubtl train` console script."""
    out = run_config.parent / "reference"
    _run([*_hubtl(), "train", str(run_config), "--output_dir", str(out)])
    return out


def _assert_same_weights(a: Path, b: Path, atol: float = 0.0) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)
    assert worst <= atol, f"max abs weight difference {worst}"


def _same_history(a: Path, b: Path) -> None:
    """metrics.jsonl of two runs agree except for timings."""
    timing = ("epoch_time_s", "train_samples_per_second")
    la, lb = _jsonl(a / "training" / "metrics.jsonl"), _jsonl(b / "training" / "metrics.jsonl")
    assert len(la) == len(lb)
    for ra, rb in zip(la, lb):
        for key in ra:
            if key not in timing:
                assert ra[key] == pytest.approx(rb[key], abs=1e-6), (ra["epoch"], key)


def test_cli_and_python_module_run_the_same_code(reference: Path, run_config: Path) -> None:
    out = run_config.parent / "module"
    _run([*_module(), str(run_config), "--output_dir", str(out)])
    _assert_same_weights(reference, out)
    _same_history(reference, out)


def _wait_for_checkpoint(process: subprocess.Popen, out: Path, timeout: float = 120) -> Path:
    """Poll until a complete checkpoint (with trainer_state.json) exists; return it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = [p for p in (out / "checkpoints").glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
        if found:
            return found[0]
        if process.poll() is not None:
            raise AssertionError(f"the run ended before a checkpoint appeared: {process.communicate()[1][-3000:]}")
        time.sleep(0.02)
    process.kill()
    raise AssertionError("no checkpoint appeared in time")


def test_kill_and_resume_gives_the_same_weights(reference: Path, run_config: Path, caplog) -> None:
    out = run_config.parent / "killed"
    process = subprocess.Popen([*_module(), str(run_config), "--output_dir", str(out)], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(process, out)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (out / "config.json").exists(), "the run finished before it was killed"
    complete = sorted((p for p in (out / "checkpoints").glob("checkpoint-*") if (p / "trainer_state.json").is_file()),
                      key=lambda p: int(p.name.split("-")[1]))
    last = complete[-1]
    assert json.loads((last / "trainer_state.json").read_text())["global_step"] < 96  # 8 epochs x 12 steps
    # what a kill in mid-save leaves: a staging dir, and a checkpoint dir without its state file
    staging = out / "checkpoints" / ".staging-checkpoint-99999"
    shutil.copytree(last, staging)
    (staging / "model.safetensors").write_bytes(b"half-written")
    (out / "checkpoints" / "checkpoint-88888").mkdir()
    (out / "checkpoints" / "checkpoint-88888" / "model.safetensors").write_bytes(b"half-written")

    result = train(run_config, ["--output_dir", str(out), "--resume"])
    assert f"Resumed from {last}" in _messages(caplog)
    assert not staging.exists()
    assert not result.interrupted
    _assert_same_weights(reference, out, atol=1e-6)
    _same_history(reference, out)


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(reference: Path, run_config: Path, caplog) -> None:
    out = run_config.parent / "interrupted"
    process = subprocess.Popen([*_hubtl(), "train", str(run_config), "--output_dir", str(out)], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(process, out)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-3000:]
    assert "Resume with `--resume`" in stderr and "Traceback" not in stderr
    assert not (out / "config.json").exists()
    state = json.loads(max((out / "checkpoints").glob("checkpoint-*/trainer_state.json"),
                           key=lambda p: int(p.parent.name.split("-")[1])).read_text())
    assert f"saved checkpoint-{state['global_step']}" in stderr

    result = train(run_config, ["--output_dir", str(out), "--resume"])
    assert not result.interrupted and (out / "config.json").is_file()
    _assert_same_weights(reference, out, atol=1e-6)
    _same_history(reference, out)


# ---------------------------------------------------------------------------------------------- checks before any work


def test_every_problem_of_a_config_is_reported_before_data_is_read(images: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("{}")  # an earlier run's model: judged only once name and paths are right
    with pytest.raises(ConfigError) as err:
        train(_config(out, backbone="timm:resnet_18_typo", pretrained=False, dataset={"path": str(tmp_path / "missing")}))
    message = str(err.value)
    assert message.startswith("The run cannot start; fix these 2 problems:")
    assert "Unknown timm model 'resnet_18_typo'" in message and "Dataset path not found" in message
    assert "Loading and checking the data" not in _messages(caplog)  # nothing was read
    with pytest.raises(ConfigError, match="already holds a config.json .*no checkpoint to resume. Pass --overwrite_output_dir"):
        train(_timm(images, out))
