"""TransferModel: save -> load in a fresh process is exact, predict/embed, layer groups, atomic saving, real MiniLM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import minilm_dir
from PIL import Image

import hubtl
from hubtl import TransferModel
from hubtl.errors import InvalidInputError, ModelLoadError, PluginError

LABELS = ["ant", "bee", "wasp"]
TIMM_BACKBONES = ["timm:test_resnet", "timm:test_vit", "timm:test_efficientnet"]
TEXT_BACKBONE = "tiny_bert"  # resolved to the tiny_bert fixture
TASKS = ["classification", "multi_label", "regression"]
TEXTS = [
    "a delightful, moving film",
    "the plot is a mess.",
    "ok",
    "An utterly forgettable two hours that I will never get back, with a score that drowns every scene.",
]

#: Loads saved models in a fresh interpreter and writes their logits and predictions as JSON.
LOAD_SCRIPT = """
import json, sys
from hubtl import TransferModel
jobs = json.load(open(sys.argv[1]))
out = {}
for job in jobs:
    model = TransferModel.from_pretrained(job["dir"])
    out[job["dir"]] = {"logits": model.logits(job["inputs"]).tolist(), "predict": model.predict(job["inputs"])}
json.dump(out, open(sys.argv[2], "w"))
"""


class FreshProcessLoad:
    """LOAD_SCRIPT on [{"dir", "inputs"}] in a new Python process, started now; `result()` waits for its output."""

    def __init__(self, jobs: list[dict], workdir: Path) -> None:
        self.out = workdir / "out.json"
        (workdir / "jobs.json").write_text(json.dumps(jobs))
        self.process = subprocess.Popen(
            [sys.executable, "-c", LOAD_SCRIPT, str(workdir / "jobs.json"), str(self.out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},  # tiny models: threads only contend
        )

    def result(self) -> dict[str, dict]:
        _, stderr = self.process.communicate(timeout=300)
        assert self.process.returncode == 0, stderr[-3000:]
        return json.loads(self.out.read_text())


def load_in_fresh_process(jobs: list[dict], workdir: Path) -> dict[str, dict]:
    """Outputs of the saved models in `jobs`, loaded by a new Python process, by directory."""
    return FreshProcessLoad(jobs, workdir).result()


def make_images(directory: Path) -> list[str]:
    """Small random PNGs of different sizes and modes (RGB, greyscale, RGBA)."""
    rng = np.random.RandomState(0)
    paths = []
    for i, (size, mode) in enumerate([((40, 50), "RGB"), ((64, 32), "L"), ((90, 90), "RGBA")]):
        channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
        pixels = (rng.rand(size[1], size[0], channels) * 255).astype("uint8").squeeze()
        path = directory / f"img{i}.png"
        Image.fromarray(pixels, mode).save(path)
        paths.append(str(path))
    return paths


def build(backbone: str, task: str, seed: int = 0) -> TransferModel:
    """A randomly initialised model; classification gets a hidden head layer, regression two outputs."""
    torch.manual_seed(seed)
    if task == "regression":
        return TransferModel.from_backbone(backbone, task=task, num_outputs=2, pretrained=False)
    hidden = 16 if task == "classification" else None
    return TransferModel.from_backbone(backbone, labels=LABELS, task=task, pretrained=False, hidden_dim=hidden, dropout=0.1)


def move_batchnorm_statistics(model: TransferModel, inputs: list) -> None:
    """One train-mode forward pass, so BatchNorm buffers differ from a fresh model's (they must be saved too)."""
    model.train()
    with torch.no_grad():
        model(model.preprocessor(train=False)(inputs))
    model.eval()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run several times faster on one thread than on contended ones; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return make_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def roundtrip(tmp_path_factory: pytest.TempPathFactory, images: list[str], tiny_bert: str) -> dict:
    """Every (backbone, task) pair built, saved, and loaded back in ONE fresh process; outputs of both sides."""
    root = tmp_path_factory.mktemp("roundtrip")
    cases = {}
    for backbone in [*TIMM_BACKBONES, TEXT_BACKBONE]:
        name = tiny_bert if backbone == TEXT_BACKBONE else backbone
        inputs = TEXTS if backbone == TEXT_BACKBONE else images
        for task in TASKS:
            model = build(name, task)
            move_batchnorm_statistics(model, inputs)
            directory = root / f"{backbone.replace(':', '-')}-{task}"
            model.save_pretrained(directory)
            cases[backbone, task] = {"dir": str(directory), "model": model, "inputs": inputs}
    # the fresh process loads while this one computes its own outputs
    loading = FreshProcessLoad([{"dir": c["dir"], "inputs": c["inputs"]} for c in cases.values()], root)
    for case in cases.values():
        case["logits"] = case["model"].logits(case["inputs"])
        case["predict"] = case["model"].predict(case["inputs"])
    loaded = loading.result()
    for case in cases.values():
        case["loaded"] = loaded[case["dir"]]
    return cases


CASES = [(b, t) for b in [*TIMM_BACKBONES, TEXT_BACKBONE] for t in TASKS]


@pytest.mark.parametrize("backbone,task", CASES)
def test_fresh_process_load_gives_identical_logits(roundtrip: dict, backbone: str, task: str) -> None:
    case = roundtrip[backbone, task]
    original = case["logits"]
    loaded = torch.tensor(case["loaded"]["logits"])
    assert loaded.shape == original.shape == (len(case["inputs"]), 2 if task == "regression" else len(LABELS))
    assert (loaded - original).abs().max().item() <= 1e-6
    # the inputs really differ, so equality is not an artefact of a constant output
    assert (original[0] - original[1]).abs().max().item() > 1e-6


@pytest.mark.parametrize("backbone,task", CASES)
def test_fresh_process_load_gives_identical_predictions(roundtrip: dict, backbone: str, task: str) -> None:
    case = roundtrip[backbone, task]
    for before, after in zip(case["predict"], case["loaded"]["predict"], strict=True):
        if task == "classification":
            assert after["label"] == before["label"] and after["label"] in LABELS
            assert after["score"] == pytest.approx(before["score"], abs=1e-6)
            assert sum(after["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        elif task == "multi_label":
            assert after["labels"] == before["labels"]
            assert after["scores"] == pytest.approx(before["scores"], abs=1e-6)
        else:
            assert after["value"] == pytest.approx(before["value"], abs=1e-6)
            assert len(after["value"]) == 2


@pytest.mark.parametrize("backbone", [*TIMM_BACKBONES, TEXT_BACKBONE])
def test_embed_shape_is_n_by_feature_dim(roundtrip: dict, backbone: str) -> None:
    case = roundtrip[backbone, "classification"]
    model = case["model"]
    features = model.embed(case["inputs"])
    assert features.shape == (len(case["inputs"]), model.backbone.feature_dim)
    assert model.backbone.feature_dim == model.head.config.in_features > 0
    assert torch.isfinite(features).all()


def test_saved_directory_holds_config_weights_and_backbone_files(roundtrip: dict) -> None:
    image_dir = Path(roundtrip["timm:test_resnet", "classification"]["dir"])
    text_dir = Path(roundtrip[TEXT_BACKBONE, "multi_label"]["dir"])
    assert sorted(p.name for p in image_dir.iterdir()) == ["config.json", "model.safetensors"]
    assert {"config.json", "tokenizer.json"} <= {p.name for p in (text_dir / "backbone").iterdir()}
    for directory in (image_dir, text_dir):  # never pickle
        assert not [p for p in directory.rglob("*") if p.suffix in {".bin", ".pt", ".pth", ".pkl", ".ckpt"}]

    config = json.loads((image_dir / "config.json").read_text())
    assert config["library_name"] == "hubtl" and config["hubtl_version"] == hubtl.__version__
    assert config["task"] == "classification" and config["modality"] == "image"
    assert config["id2label"] == {"0": "ant", "1": "bee", "2": "wasp"}
    assert config["label2id"] == {"ant": 0, "bee": 1, "wasp": 2}
    assert config["backbone"]["plugin"] == "timm" and config["backbone"]["name"] == "test_resnet"
    assert config["backbone"]["package"] == "hubtl"
    assert config["head"]["hidden_dim"] == 16 and config["head"]["num_outputs"] == 3
    # preprocessing comes from timm's own pretrained config of the architecture
    import timm

    expected = timm.data.resolve_model_data_config(timm.create_model("test_resnet", pretrained=False))
    assert config["preprocessing"]["input_size"] == list(expected["input_size"])
    assert config["preprocessing"]["mean"] == pytest.approx(list(expected["mean"]))
    assert config["preprocessing"]["interpolation"] == expected["interpolation"]

    text_config = json.loads((text_dir / "config.json").read_text())
    assert text_config["modality"] == "text" and text_config["backbone"]["plugin"] == "transformers"
    assert text_config["preprocessing"] == {
        "type": "text", "max_length": 128, "do_lower_case": False, "padding": True, "truncation": True
    }


def test_predict_accepts_paths_pil_images_and_a_single_input(roundtrip: dict, images: list[str]) -> None:
    model = roundtrip["timm:test_resnet", "classification"]["model"]
    from_paths = model.logits(images)
    from_pil = model.logits([Image.open(p) for p in images])
    assert torch.allclose(from_paths, from_pil, atol=1e-6)
    single = model.predict(images[0])
    assert len(single) == 1 and single[0]["label"] == model.predict(images)[0]["label"]
    text_model = roundtrip[TEXT_BACKBONE, "classification"]["model"]
    assert len(text_model.predict("just one sentence")) == 1


def test_predict_top_k_gives_the_best_labels_first_as_pipelines_do(roundtrip: dict, images: list[str]) -> None:
    for task in ("classification", "multi_label"):
        model = roundtrip["timm:test_resnet", task]["model"]
        full = model.predict(images)
        top = model.predict(images, top_k=2)
        for one, best in zip(full, top, strict=True):
            ranked = sorted(one["scores"].items(), key=lambda item: -item[1])
            assert [b["label"] for b in best] == [label for label, _ in ranked[:2]]
            assert [b["score"] for b in best] == pytest.approx([score for _, score in ranked[:2]])
        everything = model.predict(images[:1], top_k=100)[0]  # capped at the model's labels
        assert sorted(b["label"] for b in everything) == sorted(model.labels)
    regression = roundtrip["timm:test_resnet", "regression"]["model"]
    with pytest.raises(InvalidInputError, match="top_k applies to tasks with named labels"):
        regression.predict(images, top_k=1)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidInputError, match="top_k must be a positive whole number"):
            model.predict(images, top_k=bad)


@pytest.mark.parametrize("backbone", ["timm:test_resnet", TEXT_BACKBONE])
def test_from_pretrained_casts_to_a_dtype_and_predict_feeds_it(roundtrip: dict, backbone: str) -> None:
    case = roundtrip[backbone, "classification"]
    half = TransferModel.from_pretrained(case["dir"], dtype="bfloat16")
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    logits = half.logits(case["inputs"])
    assert logits.dtype == torch.float32  # token ids stay integers; image tensors follow the weights
    torch.testing.assert_close(logits, case["logits"], rtol=0, atol=0.05)
    assert TransferModel.from_pretrained(case["dir"], dtype=torch.float32).logits(case["inputs"]).equal(case["logits"])
    with pytest.raises(InvalidInputError, match="dtype must be a floating dtype"):
        TransferModel.from_pretrained(case["dir"], dtype="int8")


def test_batching_does_not_change_outputs(roundtrip: dict) -> None:
    case = roundtrip[TEXT_BACKBONE, "regression"]
    one_by_one = case["model"].logits(case["inputs"], batch_size=1)
    assert torch.allclose(one_by_one, case["logits"], atol=1e-5)  # mean pooling ignores the padding
    # more inputs than a batch: batched longest first, returned in the order given
    by_length = case["model"].logits(case["inputs"], batch_size=2)
    assert len({len(t) for t in case["inputs"]}) == len(case["inputs"]) > 2
    assert torch.allclose(by_length, one_by_one, atol=1e-5)


# ---------------------------------------------------------------------------------------- layer groups

LAYER_GROUP_ARCHS = {
    # arch: (prefix of a parameter in the first group, prefix of a parameter in the last group)
    "test_resnet": ("conv1.", "layer4."),
    "test_vit": ("patch_embed.", "norm."),
    "test_efficientnet": ("conv_stem.", "conv_head."),
    "test_convnext": ("stem.", "head.norm."),
    "test_byobnet": ("stem.", "stages.3."),
    "test_nfnet": ("stem.", "final_conv."),
}


def assert_exact_cover(groups: list[list[torch.nn.Parameter]], module: torch.nn.Module) -> None:
    """Every parameter of `module` appears in exactly one group (by identity), and nothing else does."""
    ids = [id(p) for group in groups for p in group]
    assert all(groups), "no group may be empty"
    assert len(ids) == len(set(ids)), "a parameter appears in two groups"
    assert set(ids) == {id(p) for p in module.parameters()}


def assert_input_to_output(groups: list[list[torch.nn.Parameter]], module: torch.nn.Module) -> None:
    """Groups start in module order: each group begins after the previous one, first holds the first parameter."""
    order = {id(p): i for i, p in enumerate(module.parameters())}
    starts = [min(order[id(p)] for p in group) for group in groups]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    ordered = list(module.parameters())
    assert id(ordered[0]) in {id(p) for p in groups[0]}
    assert id(ordered[-1]) in {id(p) for p in groups[-1]}


@pytest.mark.parametrize("arch", sorted(LAYER_GROUP_ARCHS))
def test_timm_layer_groups_cover_every_parameter_once_from_stem_to_head(arch: str) -> None:
    backbone = hubtl.create_backbone(f"timm:{arch}", pretrained=False)
    groups = backbone.layer_groups()
    assert len(groups) >= 3
    assert_exact_cover(groups, backbone)
    assert_input_to_output(groups, backbone)
    names = {id(p): n for n, p in backbone.model.named_parameters()}
    first, last = LAYER_GROUP_ARCHS[arch]
    assert any(names[id(p)].startswith(first) for p in groups[0])
    assert any(names[id(p)].startswith(last) for p in groups[-1])
    assert not any(names[id(p)].startswith(last) for group in groups[:-1] for p in group)


def test_transformers_layer_groups_are_embeddings_then_each_layer(tiny_bert: str) -> None:
    backbone = hubtl.create_backbone(tiny_bert, pretrained=False)
    groups = backbone.layer_groups()
    assert_exact_cover(groups, backbone)
    assert_input_to_output(groups, backbone)
    bert = backbone.model
    assert {id(p) for p in groups[0]} == {id(p) for p in bert.embeddings.parameters()}
    assert len(groups) == 1 + len(bert.encoder.layer) == 3
    for group, layer in zip(groups[1:], bert.encoder.layer):
        assert {id(p) for p in group} == {id(p) for p in layer.parameters()}


# ---------------------------------------------------------------------------------------- pooling


def test_cls_pooling_is_kept_through_save_and_load(tiny_bert: str, tmp_path: Path) -> None:
    from transformers import AutoModel

    model = TransferModel.from_backbone(tiny_bert, labels=["neg", "pos"], pretrained=True, pooling="cls", max_length=16)
    reference = AutoModel.from_pretrained(tiny_bert.split(":", 1)[1]).eval()
    batch = model.preprocessor()(TEXTS[:2])
    with torch.no_grad():
        expected = reference(**batch).last_hidden_state[:, 0]
    assert torch.allclose(model.embed(TEXTS[:2]), expected, atol=1e-5)
    assert model.preprocessor()(TEXTS)["input_ids"].shape[1] == 16  # the long sentence is truncated to max_length
    loaded = TransferModel.from_pretrained(model.save_pretrained(tmp_path / "cls"))
    assert loaded.backbone.pooling == "cls" and loaded.backbone.max_length == 16
    assert torch.equal(loaded.logits(TEXTS), model.logits(TEXTS))


# ---------------------------------------------------------------------------------------- atomic saving


@pytest.fixture
def saved(tmp_path: Path) -> tuple[TransferModel, Path]:
    model = build("timm:test_resnet", "classification")
    return model, model.save_pretrained(tmp_path / "model")


def test_saving_over_a_model_keeps_unrelated_files(saved: tuple[TransferModel, Path], images: list[str]) -> None:
    _, directory = saved
    (directory / "training").mkdir()
    (directory / "training" / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (directory / "README.md").write_text("card")
    newer = TransferModel.from_backbone("timm:test_resnet", labels=["x", "y"], pretrained=False)
    newer.save_pretrained(directory)

    assert (directory / "training" / "metrics.jsonl").read_text() == '{"epoch": 1}\n'
    assert (directory / "README.md").read_text() == "card"
    loaded = TransferModel.from_pretrained(directory)
    assert loaded.labels == ["x", "y"]
    assert torch.equal(loaded.logits(images), newer.logits(images))
    leftovers = [p.name for p in [*directory.parent.iterdir(), *directory.iterdir()] if ".tmp-" in p.name or ".old-" in p.name]
    assert leftovers == []


def test_saving_an_image_model_over_a_text_model_drops_stale_backbone_files(
    saved: tuple[TransferModel, Path], tiny_bert: str
) -> None:
    _, directory = saved
    TransferModel.from_backbone(tiny_bert, labels=LABELS, pretrained=False).save_pretrained(directory)
    assert (directory / "backbone" / "config.json").is_file()
    build("timm:test_resnet", "regression").save_pretrained(directory)
    assert not (directory / "backbone").exists()
    assert TransferModel.from_pretrained(directory).task == "regression"


def test_a_failed_save_leaves_the_previous_model_intact(saved: tuple[TransferModel, Path], images: list[str]) -> None:
    model, directory = saved
    broken = build("timm:test_resnet", "multi_label", seed=1)
    broken.threshold = object()  # config.json cannot be written: the save fails after the weights are staged
    with pytest.raises(TypeError):
        broken.save_pretrained(directory)
    loaded = TransferModel.from_pretrained(directory)
    assert loaded.task == "classification"
    assert torch.equal(loaded.logits(images), model.logits(images))
    assert not [p for p in directory.parent.iterdir() if ".tmp-" in p.name]


def test_a_model_dir_without_config_json_is_refused(saved: tuple[TransferModel, Path]) -> None:
    _, directory = saved
    (directory / "config.json").unlink()  # what an interrupted save over an old model leaves
    assert (directory / "model.safetensors").is_file()
    with pytest.raises(ModelLoadError, match="has no config.json: it is not a saved hubtl model"):
        TransferModel.from_pretrained(directory)


# ---------------------------------------------------------------------------------------- real weights


PARAPHRASES = ("A man is playing a guitar.", "Someone is strumming a guitar.")
UNRELATED = ("A man is playing a guitar.", "The stock market fell sharply on Tuesday.")


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a, b, dim=0).item()


def test_real_minilm_weights_roundtrip_and_make_sense(tmp_path: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    name = "transformers:" + str(minilm_dir())
    model = TransferModel.from_backbone(name, labels=["neg", "pos"], pretrained=True)
    assert model.backbone.feature_dim == 384

    # the plugin's mean pooling equals a hand-made one over the real checkpoint
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    reference = AutoModel.from_pretrained(minilm_dir()).eval()
    batch = tokenizer(list(UNRELATED), padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = reference(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    assert torch.allclose(model.embed(list(UNRELATED)), (hidden * mask).sum(1) / mask.sum(1), atol=1e-5)

    # real weights are real: paraphrases are closer than unrelated sentences
    para = model.embed(list(PARAPHRASES))
    unrel = model.embed(list(UNRELATED))
    assert cosine(para[0], para[1]) > 0.6 > cosine(unrel[0], unrel[1])
    assert cosine(para[0], para[1]) > cosine(unrel[0], unrel[1]) + 0.3

    directory = model.save_pretrained(tmp_path / "minilm")
    loaded = load_in_fresh_process([{"dir": str(directory), "inputs": TEXTS}], tmp_path)[str(directory)]
    assert (torch.tensor(loaded["logits"]) - model.logits(TEXTS)).abs().max().item() <= 1e-6
    assert [p["label"] for p in loaded["predict"]] == [p["label"] for p in model.predict(TEXTS)]


def test_a_text_model_given_only_file_paths_warns(tiny_bert: str, tmp_path: Path, caplog) -> None:
    import logging

    model = TransferModel.from_backbone(tiny_bert, labels=["neg", "pos"], pretrained=False)
    photo = tmp_path / "ants" / "x.jpg"
    photo.parent.mkdir()
    photo.write_bytes(b"\xff\xd8\xff")
    with caplog.at_level(logging.WARNING, logger="hubtl"):
        model.predict([str(photo)])
    assert "inputs are paths of existing files, but this is a text model" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hubtl"):
        model.predict(["what a film", str(photo)])
    assert "text model" not in caplog.text


def test_an_image_model_takes_a_tensor_as_timm_models_do(tiny_bert: str) -> None:
    model = TransferModel.from_backbone("timm:test_resnet", labels=["a", "b"], pretrained=False).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model({"pixel_values": x}))
    text = TransferModel.from_backbone(tiny_bert, labels=["a", "b"], pretrained=False)
    with pytest.raises(hubtl.InvalidInputError, match=r"takes the batch dict its preprocessor makes"):
        text(torch.zeros(2, 8, dtype=torch.long))  # was an IndexError from inside the backbone


@pytest.mark.parametrize("extra", [{1: "a", "b": 2}, float("nan")], ids=["int-key", "nan"])
def test_a_spec_json_cannot_hold_is_a_plugin_error_and_nothing_is_written(tmp_path: Path, extra: Any) -> None:
    model = TransferModel.from_backbone("timm:test_resnet", labels=["a", "b"], pretrained=False)
    spec = model.backbone.spec
    model.backbone.spec = lambda: {**spec(), "extra": extra}
    with pytest.raises(PluginError, match="config.json cannot hold.*hubtl backbones check"):
        model.save_pretrained(tmp_path / "model")
    assert list(tmp_path.iterdir()) == []
