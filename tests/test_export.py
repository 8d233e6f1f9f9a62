"""Exports to plain timm, plain transformers and ONNX: each loaded by the target library alone in a fresh process.

The fresh processes import neither hubtl (asserted) nor, for ONNX, torch; they compare their logits with
hubtl's on the same raw inputs. Pushed exports load by Hub ID from hubtl's own server through the real client.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import hubtl
from hubtl.cli import main as cli_main
from hubtl.errors import ConfigError, ExportError
from hubtl.export import Exporter, ExportResult, list_formats, register_exporter
from hubtl.hub.client import use_endpoint
from hubtl.hub.server import running_server

from conftest import TINY_TIMM

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TOKEN = "t0ken"
LABELS = ["ant", "bee", "wasp"]
TEXTS = [
    "a gorgeous, witty, seductive movie.",
    "the plot is nothing but boilerplate clichés from start to finish,",
    "ok",
    "an utterly charming and hilarious film that reminded me why i love going to the movies " * 4,
]


def _images(folder: Path) -> list[str]:
    """A few PNG files of different sizes (raw inputs both sides read from disk)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i, (w, h) in enumerate(((80, 60), (50, 120), (200, 200), (31, 47))):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _train_a_little(model: hubtl.TransferModel, inputs: list[Any], targets: list[int]) -> hubtl.TransferModel:
    """A few SGD steps on the whole model, so backbone and head both differ from their initialisation."""
    torch.manual_seed(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for _ in range(3):
        loss = model.head.loss(model(model.preprocessor(train=True)(inputs)), torch.tensor(targets))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _fresh(script: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `script` in a fresh Python that must not import hubtl; return the JSON it prints last."""
    guard = textwrap.dedent(
        """
        import json as _json, sys as _sys
        assert "hubtl" not in _sys.modules, "hubtl was imported"
        _sys.stdout.write("\\nRESULT " + _json.dumps(result) + "\\n")
        """
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script) + guard],
        env={**base, "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.rsplit("RESULT ", 1)[1])


@pytest.fixture(scope="module")
def image_model() -> hubtl.TransferModel:
    """timm's tiny test_resnet with a linear 3-class head, briefly trained."""
    model = hubtl.TransferModel.from_backbone(TINY_TIMM, labels=LABELS, pretrained=False, image_size=64)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(6)]
    return _train_a_little(model, images, [0, 1, 2, 0, 1, 2])


@pytest.fixture(scope="module")
def text_model(tiny_bert: str) -> hubtl.TransferModel:
    """The tiny BERT with `pooling: pooler` and a linear head, briefly trained: exportable to transformers."""
    model = hubtl.TransferModel.from_backbone(
        tiny_bert, labels=["negative", "positive"], pretrained=True, pooling="pooler", max_length=24, dropout=0.1
    )
    return _train_a_little(model, TEXTS, [1, 0, 1, 1])


# ---------------------------------------------------------------------------------------------- timm


def test_timm_export_loads_with_plain_timm_locally_and_by_hub_id(
    image_model: hubtl.TransferModel, tmp_path: Path, hf_home: Path
) -> None:
    images = _images(tmp_path / "images")
    expected = image_model.logits(images)
    with running_server(tmp_path / "hub", token=TOKEN) as url, use_endpoint(url):
        result = image_model.export("timm", tmp_path / "timm-export", push_to_hub="me/tiny-resnet-timm", token=TOKEN)
        assert result.max_abs_diff <= 1e-5 and "/commit/" in (result.url or "")
        config = json.loads((tmp_path / "timm-export" / "config.json").read_text())
        assert config["architecture"] == "test_resnet" and config["num_classes"] == 3 and config["label_names"] == LABELS
        assert config["pretrained_cfg"]["input_size"] == [3, 64, 64] and config["pretrained_cfg"]["classifier"] == "fc"
        readme = (tmp_path / "timm-export" / "README.md").read_text()
        assert "library_name: timm" in readme and 'create_model("hf-hub:me/tiny-resnet-timm"' in readme
        assert '"num_classes": 3' in readme  # the local form says num_classes, without which timm drops the classifier
        loaded = _fresh(
            f"""
            import timm, torch
            from PIL import Image
            folder, images = {str(tmp_path / "timm-export")!r}, {images!r}
            by_id = timm.create_model("hf-hub:me/tiny-resnet-timm", pretrained=True).eval()
            overlay = timm.create_model("test_resnet", pretrained=True, pretrained_cfg_overlay={{
                "file": folder + "/model.safetensors", "num_classes": 3}}).eval()
            transform = timm.data.create_transform(**timm.data.resolve_model_data_config(by_id))
            pixels = torch.stack([transform(Image.open(p).convert("RGB")) for p in images])
            with torch.no_grad():
                result = {{"by_id": by_id(pixels).tolist(), "overlay": overlay(pixels).tolist(),
                          "labels": by_id.pretrained_cfg["label_names"]}}
            """,
            env={"HF_ENDPOINT": url, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(tmp_path / "fresh-hf-home")},
        )
    assert loaded["labels"] == LABELS
    for key in ("by_id", "overlay"):
        assert torch.allclose(torch.tensor(loaded[key]), expected, atol=1e-5, rtol=0), key
        assert [LABELS[i] for i in torch.tensor(loaded[key]).argmax(-1)] == [p["label"] for p in image_model.predict(images)]


def test_timm_refuses_a_hidden_layer_head_and_leaves_nothing_behind(tmp_path: Path) -> None:
    model = hubtl.TransferModel.from_backbone(TINY_TIMM, labels=LABELS, pretrained=False, hidden_dim=16)
    with pytest.raises(ExportError, match=r"hidden layer \(96 -> 16 -> 3.*--format onnx.*hidden_dim: null"):
        model.export("timm", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # no folder, no staging left over


def test_timm_refuses_a_model_with_two_classifiers(tmp_path: Path) -> None:
    model = hubtl.TransferModel.from_backbone("timm:levit_128s", labels=LABELS, pretrained=False)
    with pytest.raises(ExportError, match="2 classifiers.*--format onnx"):
        model.export("timm", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_timm_maps_a_1x1_convolution_classifier_and_notes_multi_label(tmp_path: Path) -> None:
    # resnetv2's classifier (head.fc) is a 1x1 convolution: the linear head fits it exactly
    model = hubtl.TransferModel.from_backbone(
        "timm:resnetv2_18", labels=LABELS, task="multi_label", pretrained=False, image_size=32
    )
    torch.nn.init.normal_(model.head.layers[-1].weight)
    result = model.export("timm", tmp_path / "out")
    assert result.max_abs_diff <= 1e-5
    assert any("sigmoid" in note for note in result.notes)
    assert "sigmoid" in (tmp_path / "out" / "README.md").read_text()


def test_library_formats_need_the_matching_plugin(image_model: hubtl.TransferModel, text_model: hubtl.TransferModel,
                                                  tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="'transformers' plugin, which does not declare a timm export.*onnx"):
        text_model.export("timm", tmp_path / "a")
    with pytest.raises(ExportError, match="'timm' plugin, which does not declare a transformers export.*onnx"):
        image_model.export("transformers", tmp_path / "b")
    with pytest.raises(ExportError, match="Unknown export format 'tflite'; choose one of onnx, timm, transformers"):
        image_model.export("tflite", tmp_path / "c")
    assert list_formats() == ["onnx", "timm", "transformers"]
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- transformers


def test_transformers_export_runs_in_pipeline_locally_and_by_hub_id(
    text_model: hubtl.TransferModel, tmp_path: Path, hf_home: Path
) -> None:
    expected = text_model.logits(TEXTS)
    labels = [p["label"] for p in text_model.predict(TEXTS)]
    with running_server(tmp_path / "hub", token=TOKEN) as url, use_endpoint(url):
        result = text_model.export("transformers", tmp_path / "tf-export", push_to_hub="me/tiny-bert-sst", token=TOKEN)
        assert result.max_abs_diff <= 1e-5
        config = json.loads((tmp_path / "tf-export" / "config.json").read_text())
        assert config["architectures"] == ["BertForSequenceClassification"]
        assert config["id2label"] == {"0": "negative", "1": "positive"} and config["label2id"]["positive"] == 1
        assert config["problem_type"] == "single_label_classification"
        loaded = _fresh(
            f"""
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
            folder, texts = {str(tmp_path / "tf-export")!r}, {TEXTS!r}
            local = pipeline("text-classification", model=folder)
            by_id = pipeline("text-classification", model="me/tiny-bert-sst")
            model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
            batch = AutoTokenizer.from_pretrained(folder)(texts, padding=True, truncation=True, return_tensors="pt")
            with torch.no_grad():
                logits = model(**batch).logits.tolist()
            result = {{"logits": logits, "local": local(texts, truncation=True), "by_id": by_id(texts, truncation=True)}}
            """,
            env={"HF_ENDPOINT": url, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(tmp_path / "fresh-hf-home")},
        )
    assert torch.allclose(torch.tensor(loaded["logits"]), expected, atol=1e-5, rtol=0)
    scores = expected.softmax(-1).max(-1).values
    for key in ("local", "by_id"):
        assert [p["label"] for p in loaded[key]] == labels, key
        assert torch.allclose(torch.tensor([p["score"] for p in loaded[key]]), scores, atol=1e-5), key


@pytest.mark.parametrize(("pooling", "words"), [("mean", "pooling: mean"), ("cls", "pooling: cls")])
def test_transformers_refuses_poolings_the_stock_head_does_not_compute(
    tiny_bert: str, tmp_path: Path, pooling: str, words: str
) -> None:
    model = hubtl.TransferModel.from_backbone(tiny_bert, labels=["a", "b"], pretrained=True, pooling=pooling)
    with pytest.raises(ExportError) as caught:
        model.export("transformers", tmp_path / "out")
    message = str(caught.value)
    assert words in message and "--format onnx" in message and "{pooling: pooler}" in message, message
    assert "dropout -> Linear on the pooler output" in message
    assert list(tmp_path.iterdir()) == []


def test_transformers_maps_distilbert_cls_with_its_relu_hidden_layer(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    config = DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=32, n_layers=1, n_heads=2, hidden_dim=64,
                              max_position_embeddings=64)  # fmt: skip
    torch.manual_seed(0)
    DistilBertModel(config).save_pretrained(tmp_path / "distilbert")
    tokenizer.save_pretrained(tmp_path / "distilbert")
    name = f"transformers:{tmp_path / 'distilbert'}"
    with pytest.raises(ConfigError, match="pooling: pooler needs an encoder with a pooler layer"):
        hubtl.create_backbone(name, pooling="pooler")
    model = hubtl.TransferModel.from_backbone(name, labels=["a", "b"], task="multi_label", pooling="cls", hidden_dim=32)
    model.head = hubtl.Head(hubtl.HeadConfig("multi_label", 32, 2, hidden_dim=32, activation="relu"))  # DistilBERT's
    result = model.export("transformers", tmp_path / "out")
    assert result.max_abs_diff <= 1e-5 and any("sigmoid" in n for n in result.notes)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["problem_type"] == "multi_label_classification"
    model.head = hubtl.Head(hubtl.HeadConfig("multi_label", 32, 2, hidden_dim=32, activation="gelu"))
    with pytest.raises(ExportError, match="relu"):
        model.export("transformers", tmp_path / "gelu")


def test_pooler_pooling_is_the_encoders_pooler_output_and_survives_save_and_load(
    text_model: hubtl.TransferModel, tmp_path: Path
) -> None:
    backbone = text_model.backbone
    assert backbone.model.pooler is not None and backbone.spec()["kwargs"]["pooling"] == "pooler"
    batch = text_model.preprocessor()(TEXTS)
    with torch.no_grad():
        assert torch.equal(backbone(batch), backbone.model(**batch).pooler_output)
    assert any(p is backbone.model.pooler.dense.weight for p in backbone.layer_groups()[-1])
    text_model.save_pretrained(tmp_path / "saved")
    loaded = hubtl.TransferModel.from_pretrained(tmp_path / "saved")
    assert torch.equal(loaded.logits(TEXTS), text_model.logits(TEXTS))


# ---------------------------------------------------------------------------------------------- ONNX


def test_onnx_exports_run_with_onnxruntime_alone(
    image_model: hubtl.TransferModel, tiny_bert: str, tmp_path: Path
) -> None:
    # a mean-pooled text model (which transformers refuses) and the image model
    text_model = hubtl.TransferModel.from_backbone(tiny_bert, labels=["negative", "positive"], pooling="mean", max_length=24)
    torch.nn.init.normal_(text_model.head.layers[-1].weight)
    eval_file = tmp_path / "dev.tsv"
    eval_file.write_text("".join(f"{t}\t{label}\n" for t, label in zip(TEXTS, ["positive", "negative", "1", "0"])))
    text = text_model.export("onnx", tmp_path / "onnx-text", quantize="dynamic", eval_file=eval_file)
    image = image_model.export("onnx", tmp_path / "onnx-image")
    assert text.max_abs_diff <= 1e-4 and image.max_abs_diff <= 1e-4
    assert text.evaluation["examples"] == 4 and set(text.evaluation["accuracy"]) == {
        "PyTorch (hubtl)", "ONNX Runtime fp32", "ONNX Runtime int8"
    }
    assert text.evaluation["accuracy"]["ONNX Runtime fp32"] == text.evaluation["accuracy"]["PyTorch (hubtl)"]
    assert (tmp_path / "onnx-text" / "model_quantized.onnx").is_file()
    config = json.loads((tmp_path / "onnx-text" / "config.json").read_text())
    assert config["library_name"] == "onnx" and config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["dynamic_axes"]["input_ids"] == ["batch", "sequence"] and config["evaluation"]["examples"] == 4
    assert json.loads((tmp_path / "onnx-image" / "preprocessor.json").read_text())["input_size"] == [3, 64, 64]
    assert (tmp_path / "onnx-text" / "tokenizer.json").is_file() and not text.notes[:-1]  # only the int8 note

    images = _images(tmp_path / "images")
    # the README's own usage code, run as a user would: no hubtl, no torch
    code = {
        kind: re.search(r"```python\n(.*?)```", (tmp_path / f"onnx-{kind}" / "README.md").read_text(), re.S).group(1)
        for kind in ("text", "image")
    }
    ran = _fresh(
        f"""
        import sys
        namespace = {{}}
        exec({code["image"].replace('"DIR"', repr(str(tmp_path / "onnx-image"))).replace('["photo.jpg"]', repr(images))!r},
             namespace)
        image = namespace["model"]
        exec({code["text"].replace('"DIR"', repr(str(tmp_path / "onnx-text"))).replace('["A quiet, funny film."]', repr(TEXTS))!r},
             namespace)
        text = namespace["model"]
        quantized = namespace["OnnxClassifier"]({str(tmp_path / "onnx-text")!r}, "model_quantized.onnx")
        assert "torch" not in sys.modules, "torch was imported"
        result = {{"image": image.logits({images!r}).tolist(), "image_labels": [p["label"] for p in image.predict({images!r})],
                  "text": text.logits({TEXTS!r}).tolist(), "text_labels": [p["label"] for p in text.predict({TEXTS!r})],
                  "quantized": quantized.logits({TEXTS!r}).tolist()}}
        """
    )
    assert torch.allclose(torch.tensor(ran["image"]), image_model.logits(images), atol=1e-4, rtol=0)
    assert torch.allclose(torch.tensor(ran["text"]), text_model.logits(TEXTS), atol=1e-4, rtol=0)
    assert ran["image_labels"] == [p["label"] for p in image_model.predict(images)]
    assert ran["text_labels"] == [p["label"] for p in text_model.predict(TEXTS)]
    assert torch.allclose(torch.tensor(ran["quantized"]), text_model.logits(TEXTS), atol=0.2)  # int8: close, not exact


def test_conformance_kit_checks_onnx_export_when_declared() -> None:
    from hubtl.backbones.timm import TimmBackbone, TimmPlugin
    from hubtl.testing import check_backbone

    assert check_backbone(TINY_TIMM, checks=["onnx_export"])["onnx_export"].status == "pass"

    class Undeclared(TimmBackbone):
        export_formats = ()

    class UndeclaredPlugin(TimmPlugin):
        def create(self, model_name: str, pretrained: bool = True, **kwargs: Any) -> TimmBackbone:
            b = super().create(model_name, pretrained=pretrained, **kwargs)
            return Undeclared(b.model, b.model_name, b.kwargs, b.data_config)

    report = check_backbone(UndeclaredPlugin, "test_resnet", checks=["onnx_export"])
    assert report["onnx_export"].status == "skip" and "export_formats" in report["onnx_export"].message


# ---------------------------------------------------------------------------------------------- writing


def test_exports_are_atomic(image_model: hubtl.TransferModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hubtl.export.timm as timm_export

    def fail_after_writing(*args: Any, **kwargs: Any) -> float:
        raise ExportError("simulated failure after the files were written")

    monkeypatch.setattr(timm_export, "_check_written", fail_after_writing)
    with pytest.raises(ExportError, match="simulated"):
        image_model.export("timm", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(ExportError, match="already exists.*overwrite"):
        image_model.export("timm", tmp_path / "out")
    image_model.export("timm", tmp_path / "out", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_cli_exports_a_saved_model_and_reports_refusals(
    image_model: hubtl.TransferModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image_model.save_pretrained(tmp_path / "model")
    assert cli_main(["export", str(tmp_path / "model"), "--format", "timm", "--output_dir", str(tmp_path / "out")]) == 0
    assert "Exported to timm" in capsys.readouterr().out
    assert cli_main(["export", str(tmp_path / "model"), "--format", "transformers", "--output_dir", str(tmp_path / "t")]) == 2
    assert "hubtl: error:" in capsys.readouterr().err and not (tmp_path / "t").exists()
    assert cli_main(["export", str(tmp_path / "model"), "--format", "timm", "--output_dir", str(tmp_path / "q"),
                     "--quantize", "dynamic"]) == 2  # fmt: skip
    assert "onnx only" in capsys.readouterr().err


def test_a_registered_exporter_is_dispatched_and_written_through_staging(
    image_model: hubtl.TransferModel, tmp_path: Path
) -> None:
    from hubtl.export import registry

    @register_exporter
    class LabelList(Exporter):
        name = "labels-txt"
        library = "any text editor"

        def export(self, model: hubtl.TransferModel, staging: Path, **options: Any) -> ExportResult:
            assert staging.name.startswith(".out.export-") and not (staging.parent / "out").exists()
            (staging / "labels.txt").write_text("\n".join(model.labels or []))
            return ExportResult(self.name, staging, 0.0, 0)

    try:
        assert "labels-txt" in list_formats()
        result = image_model.export("labels-txt", tmp_path / "out")
        assert result.directory == tmp_path / "out" and (tmp_path / "out" / "labels.txt").read_text().split() == LABELS
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    finally:
        registry._EXPORTERS.pop("labels-txt", None)


def test_a_graph_onnx_runtime_refuses_on_other_shapes_is_an_export_error(tmp_path: Path) -> None:
    """A graph whose exporter fixed a dimension (seen with nn.GRU under torch.export) is refused in words, not with
    onnxruntime's own exception."""
    from hubtl.export.onnx import _checked_run, _session

    path = tmp_path / "static.onnx"
    torch.onnx.export(torch.nn.Linear(4, 2).eval(), (torch.zeros(3, 4),), str(path), input_names=["x"],
                      output_names=["logits"], dynamo=False)  # fmt: skip
    session = _session(path)
    assert _checked_run(session, {"x": torch.zeros(3, 4)}, ["x"]).shape == (3, 2)
    with pytest.raises(ExportError, match="cannot run the exported graph on inputs of another shape.*Nothing was written"):
        _checked_run(session, {"x": torch.zeros(5, 4)}, ["x"])


def test_an_eval_folder_with_an_unreadable_image_skips_it_as_training_does(image_model: hubtl.TransferModel, tmp_path: Path) -> None:
    from hubtl.export.evaluate import evaluate

    folder = tmp_path / "eval"
    rng = np.random.default_rng(1)
    for index, label in enumerate(LABELS):
        (folder / label).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / label / f"{index}.png")
    (folder / LABELS[0] / "empty.jpg").write_bytes(b"")
    result = evaluate(image_model, folder, {})
    assert result["examples"] == len(LABELS) and result["skipped_unreadable"] == 1
