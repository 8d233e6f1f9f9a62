"""The persistent feature store: keys that change with everything features depend on, atomic entries,
memory-mapped reads, reuse by a second linear probe, and `hubtl cache list|clear`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from hubtl.backbones import create_backbone
from hubtl.cli import main as cli_main
from hubtl.data import DatasetConfig, load_transfer_data
from hubtl.features import FeatureStore, backbone_features, feature_key
from hubtl.training import train

SENTENCES = [f"the film was {w} and {v}" for w in ("good", "bad", "long", "dull") for v in ("fun", "slow", "odd")]


@pytest.fixture
def texts(tmp_path: Path) -> Path:
    root = tmp_path / "texts"
    root.mkdir()
    (root / "train.tsv").write_text("".join(f"{s}\t{'pos' if i % 2 else 'neg'}\n" for i, s in enumerate(SENTENCES)))
    (root / "dev.tsv").write_text("".join(f"{s} too\t{'pos' if i % 2 else 'neg'}\n" for i, s in enumerate(SENTENCES[:6])))
    return root


def _dataset(texts: Path) -> dict[str, Any]:
    return {"path": str(texts), "data_files": {"train": "train.tsv", "validation": "dev.tsv"},
            "column_names": ["sentence", "label"], "text_column": "sentence"}  # fmt: skip


def _data(texts: Path) -> Any:
    return load_transfer_data(DatasetConfig(**_dataset(texts)), task="classification", modality="text")


def _probe(tiny_bert: str, texts: Path, out: Path, **values: Any) -> dict[str, Any]:
    return {"backbone": tiny_bert, "dataset": _dataset(texts), "output_dir": str(out), "strategy": "linear_probe",
            "learning_rate": 0.05, "num_train_epochs": 2, "per_device_train_batch_size": 4, "seed": 0,
            "disable_tqdm": True, "report_to": "none", "dataloader_num_workers": 0, **values}  # fmt: skip


def _messages(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


def test_the_key_changes_with_weights_preprocessing_and_data_and_only_then(tiny_bert: str, texts: Path) -> None:
    backbone = create_backbone(tiny_bert, pretrained=True)
    preprocess = backbone.preprocessor()
    data = _data(texts)
    key = feature_key(backbone, preprocess, data.train)
    assert key == feature_key(create_backbone(tiny_bert, pretrained=True), preprocess, _data(texts).train)
    assert key != feature_key(backbone, preprocess, data.eval)  # another split
    assert key != feature_key(backbone, preprocess, data.train, precision="bf16")
    short = create_backbone(tiny_bert, pretrained=True, max_length=8)
    assert key != feature_key(short, short.preprocessor(), data.train)  # preprocessing (and spec)
    assert key != feature_key(create_backbone(tiny_bert, pretrained=True, pooling="cls"), preprocess, data.train)
    with torch.no_grad():
        next(backbone.parameters()).view(-1)[0] += 1e-3  # one weight
    assert key != feature_key(backbone, preprocess, data.train)
    with torch.no_grad():
        next(backbone.parameters()).view(-1)[0] -= 1e-3
    assert key == feature_key(backbone, preprocess, data.train)
    lines = (texts / "train.tsv").read_text().splitlines(keepends=True)
    (texts / "train.tsv").write_text("".join([lines[0].replace("good", "great"), *lines[1:]]))  # one example edited
    assert key != feature_key(backbone, preprocess, _data(texts).train)


def test_an_image_file_changed_in_place_gives_a_new_key(tmp_path: Path) -> None:
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / "img" / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (16, 16), (40 * i, 10, 200)).save(tmp_path / "img" / name / f"{i}.png")
    cfg = DatasetConfig(path=str(tmp_path / "img"), validation_size=0.5)
    backbone = create_backbone("timm:test_resnet", pretrained=False, image_size=32)
    first = feature_key(backbone, backbone.preprocessor(), load_transfer_data(cfg, task="classification", modality="image").train)
    for image in (tmp_path / "img" / "a").iterdir():  # the same names, new content
        Image.new("RGB", (16, 16), (255, 255, 255)).save(image)
    again = feature_key(backbone, backbone.preprocessor(), load_transfer_data(cfg, task="classification", modality="image").train)
    assert first != again


def test_features_are_stored_once_memory_mapped_and_equal_to_a_fresh_computation(tiny_bert: str, texts: Path, feature_cache_dir: Path) -> None:
    acc = Accelerator(cpu=True)
    backbone = create_backbone(tiny_bert, pretrained=True)
    data = _data(texts)
    args = {"task": "classification", "batch_size": 5, "num_workers": 0, "seed": 0, "describe": {"split": "train"}}
    computed = backbone_features(acc, backbone, data.train, backbone.preprocessor(), **args)
    again = backbone_features(acc, backbone, data.train, backbone.preprocessor(), **args)
    memory = backbone_features(acc, backbone, data.train, backbone.preprocessor(), persist=False, **args)
    assert (computed.source, again.source, memory.source) == ("computed", "cache", "memory")
    assert isinstance(again.dataset.features.shards[0], np.memmap)
    torch.testing.assert_close(again.dataset.matrix(), memory.dataset.matrix(), rtol=0, atol=0)
    assert torch.equal(again.dataset.targets, data.train.targets)
    entries = FeatureStore().entries()
    assert len(entries) == 1 and entries[0].rows == len(SENTENCES) and entries[0].meta["split"] == "train"
    assert not list(feature_cache_dir.glob(".staging-*"))  # nothing half-written left behind


def test_texts_are_batched_by_length_and_their_features_come_back_in_example_order(tiny_bert: str, tmp_path: Path) -> None:
    # lengths from 1 to 40 words, shuffled: sorted batches pad less, and every row must still be its own example's
    words = [" ".join(["word"] * n) + f" number {n}" for n in np.random.default_rng(0).permutation(40) + 1]
    (tmp_path / "train.tsv").write_text("".join(f"{s}\t{'pos' if i % 2 else 'neg'}\n" for i, s in enumerate(words)))
    (tmp_path / "dev.tsv").write_text("one\tpos\ntwo words\tneg\n")
    data = load_transfer_data(DatasetConfig(**_dataset(tmp_path)), task="classification", modality="text")
    backbone = create_backbone(tiny_bert, pretrained=True)
    preprocess = backbone.preprocessor()
    texts = [data.train[i][0] for i in range(len(data.train))]
    features = backbone_features(Accelerator(cpu=True), backbone, data.train, preprocess, task="classification",
                                 batch_size=8, num_workers=0, seed=0).dataset.matrix()  # fmt: skip
    with torch.no_grad():
        one_by_one = torch.cat([backbone(preprocess([t])) for t in texts])
    torch.testing.assert_close(features, one_by_one, rtol=1e-4, atol=1e-5)
    assert len({len(t) for t in texts}) == 40 and preprocess.input_length(texts[0]) == len(texts[0])


def test_a_damaged_entry_is_computed_again_not_used(tiny_bert: str, texts: Path, feature_cache_dir: Path) -> None:
    acc = Accelerator(cpu=True)
    backbone = create_backbone(tiny_bert, pretrained=True)
    data = _data(texts)
    args = {"task": "classification", "batch_size": 8, "num_workers": 0, "seed": 0}
    first = backbone_features(acc, backbone, data.train, backbone.preprocessor(), **args).dataset.matrix().clone()
    shard = next(feature_cache_dir.glob("*/shard-*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:-16])  # truncated
    second = backbone_features(acc, backbone, data.train, backbone.preprocessor(), **args)
    assert second.source != "cache"
    torch.testing.assert_close(second.dataset.matrix(), first, rtol=0, atol=0)
    assert backbone_features(acc, backbone, data.train, backbone.preprocessor(), **args).source == "cache"


def test_an_unwritable_store_keeps_features_in_memory_with_a_warning(tiny_bert: str, texts: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("HUBTL_CACHE", str(blocker / "features"))
    backbone = create_backbone(tiny_bert, pretrained=True)
    found = backbone_features(
        Accelerator(cpu=True), backbone, _data(texts).train, backbone.preprocessor(), task="classification",
        batch_size=8, num_workers=0, seed=0,
    )  # fmt: skip
    assert found.source == "memory" and len(found.dataset) == len(SENTENCES)
    assert "Could not store features" in _messages(caplog)


def test_a_second_linear_probe_reuses_the_features_and_trains_as_a_fresh_one(tiny_bert: str, texts: Path, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="hubtl")
    train(_probe(tiny_bert, texts, tmp_path / "first", head_dropout=0.2))
    assert "computed and stored in the feature cache" in _messages(caplog)
    caplog.clear()
    # other head hyperparameters, the same backbone and data: the backbone does not run again
    second = train(_probe(tiny_bert, texts, tmp_path / "second", learning_rate=0.02, head_dropout=0.1))
    log = _messages(caplog)
    assert "Features of the train split (12 examples): from the feature cache" in log
    assert "Features of the eval split (6 examples): from the feature cache" in log
    summary = json.loads((tmp_path / "second" / "training" / "summary.json").read_text())
    assert summary["feature_sources"] == {"train": "cache", "eval": "cache"}
    # the same run without the store (features computed in memory) ends with the same weights
    fresh = train(_probe(tiny_bert, texts, tmp_path / "fresh", learning_rate=0.02, head_dropout=0.1, feature_cache=False))
    a, b = load_file(str(tmp_path / "second" / "model.safetensors")), load_file(str(tmp_path / "fresh" / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    assert second.eval_results["eval_loss"] == pytest.approx(fresh.eval_results["eval_loss"], abs=1e-6)


def test_cache_list_and_clear(tiny_bert: str, texts: Path, capsys) -> None:
    train(_probe(tiny_bert, texts, Path(texts.parent / "run"), num_train_epochs=1))
    assert cli_main(["cache", "list"]) == 0
    listed = capsys.readouterr().out
    assert "[train]" in listed and "[eval]" in listed and "2 feature set(s)" in listed
    assert listed.startswith("# key (hubtl cache clear KEY...)  backbone  dataset [split]")
    assert cli_main(["cache", "clear", "zzzz"]) == 1  # a prefix no key has: said, not a silent "Removed 0"
    assert "No feature set's key starts with zzzz" in capsys.readouterr().err
    key = FeatureStore().entries()[0].key
    assert cli_main(["cache", "clear", key[:10]]) == 0
    assert "Removed 1 feature set(s)" in capsys.readouterr().out
    assert cli_main(["cache", "clear", "--older-than", "1"]) == 0  # the other one was just used
    assert len(FeatureStore().entries()) == 1
    assert cli_main(["cache", "clear"]) == 0
    assert FeatureStore().entries() == []


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_the_channels_last_layout_leaves_a_trainable_module_behind(device: str) -> None:
    """The feature pass and predict run convolutions in channels_last; on CUDA the weights move to that layout and
    back under inference_mode, which must give normal tensors again, or a later fine-tuning of the same module fails
    ("Inference tensors cannot be saved for backward"). Only the device's type is read, so both paths run here."""
    from hubtl.backbones.base import inference_layout

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
    net.eval()
    images = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        plain = net(images)
        with inference_layout(net, torch.device(device)) as layout:
            moved = net(layout(images))
            weights_moved = net[0].weight.is_contiguous(memory_format=torch.channels_last)
            assert layout(torch.ones(2, 3)).is_contiguous()  # other tensors pass unchanged
    assert weights_moved == (device == "cuda") and layout(images).is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(plain, moved, atol=1e-5)
    assert not any(p.is_inference() for p in net.parameters())
    assert all(p.is_contiguous() for p in net.parameters())
    net.train()
    net(images).sum().backward()  # trainable after the pass
    assert net[0].weight.grad is not None
