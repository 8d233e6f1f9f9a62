"""Every error a user can provoke is a HubtlError whose message says what went wrong and what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

import hubtl
from hubtl import TransferModel
from hubtl.errors import (
    BackboneNotFoundError,
    ConfigError,
    HubtlError,
    InvalidInputError,
    ModelLoadError,
    PluginUnavailableError,
)

from conftest import TINY_TIMM


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A good saved timm model, copied by `model_copy` for each test to damage."""
    model = TransferModel.from_backbone(TINY_TIMM, labels=["ant", "bee"], pretrained=False)
    return model.save_pretrained(tmp_path_factory.mktemp("good") / "model")


@pytest.fixture
def model_copy(saved_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved_dir, tmp_path / "model"))


@pytest.fixture(scope="module")
def image_model(saved_dir: Path) -> TransferModel:
    return TransferModel.from_pretrained(saved_dir)


@pytest.fixture(scope="module")
def text_model(tiny_bert: str) -> TransferModel:
    return TransferModel.from_backbone(tiny_bert, labels=["neg", "pos"], pretrained=True)


def edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and key in config else value
    path.write_text(json.dumps(config))


def test_every_error_is_a_hubtl_error() -> None:
    for cls in (BackboneNotFoundError, ConfigError, InvalidInputError, ModelLoadError, PluginUnavailableError):
        assert issubclass(cls, HubtlError)
    assert str(BackboneNotFoundError("plain message")) == "plain message"  # not KeyError's quoted repr


# ---------------------------------------------------------------------------------------- backbone names


def test_unknown_timm_model_suggests_close_names() -> None:
    with pytest.raises(BackboneNotFoundError, match=r"Unknown timm model 'resnet181'\. Did you mean: resnet18\b"):
        hubtl.create_backbone("timm:resnet181", pretrained=False)


def test_unknown_plugin_suggests_the_installed_one() -> None:
    with pytest.raises(PluginUnavailableError, match=r"No backbone plugin named 'timn'.*Did you mean 'timm'\?"):
        hubtl.create_backbone("timn:resnet18", pretrained=False)


@pytest.mark.parametrize("name", ["resnet18", "timm:", ":resnet18", ""])
def test_backbone_name_without_plugin_prefix(name: str) -> None:
    with pytest.raises(BackboneNotFoundError, match=r"must look like '<plugin>:<model>', e\.g\. 'timm:resnet18'"):
        hubtl.create_backbone(name, pretrained=False)


def test_missing_local_transformers_directory(tmp_path: Path) -> None:
    with pytest.raises(BackboneNotFoundError, match=r"No directory .*nowhere.*existing local directory"):
        hubtl.create_backbone(f"transformers:{tmp_path / 'nowhere'}", pretrained=False)


def test_pretrained_timm_weights_unreachable_says_how_to_go_offline(hf_home: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # fail at once instead of waiting on the network
    with pytest.raises(BackboneNotFoundError, match=r"pretrained=False, or checkpoint_path="):
        hubtl.create_backbone(TINY_TIMM, pretrained=True)


def test_backbone_kwargs_the_model_rejects() -> None:
    with pytest.raises(ConfigError, match=r"rejected backbone_kwargs \{'no_such_option': 1\}"):
        hubtl.create_backbone(TINY_TIMM, pretrained=False, no_such_option=1)


def test_labels_are_required_and_unique_for_classification() -> None:
    with pytest.raises(ConfigError, match=r"needs `labels`"):
        TransferModel.from_backbone(TINY_TIMM, pretrained=False)
    with pytest.raises(ConfigError, match=r"Label names must be unique"):
        TransferModel.from_backbone(TINY_TIMM, labels=["a", "a"], pretrained=False)
    with pytest.raises(ConfigError, match=r"task must be one of classification, multi_label, regression"):
        TransferModel.from_backbone(TINY_TIMM, labels=["a", "b"], task="segmentation", pretrained=False)


# ---------------------------------------------------------------------------------------- loading


def test_plugin_not_installed_names_the_package_to_install(model_copy: Path) -> None:
    edit_config(model_copy, backbone={"plugin": "effnet-lite", "package": "hubtl-efficientnet-lite"})
    with pytest.raises(PluginUnavailableError, match=r"'effnet-lite'.*`pip install hubtl-efficientnet-lite`"):
        TransferModel.from_pretrained(model_copy)


def test_missing_weights(model_copy: Path) -> None:
    (model_copy / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"model\.safetensors is missing"):
        TransferModel.from_pretrained(model_copy)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: data[:-7], id="last-bytes-lost"),
        pytest.param(lambda data: bytes(range(256)) * 20, id="garbage"),
        pytest.param(lambda data: b"", id="empty"),
    ],
)
def test_corrupt_weights(model_copy: Path, damage) -> None:
    weights = model_copy / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(ModelLoadError, match=r"model\.safetensors is corrupt .*Save or download the model again"):
        TransferModel.from_pretrained(model_copy)


def test_weights_of_another_architecture(model_copy: Path, tmp_path: Path) -> None:
    other = TransferModel.from_backbone(TINY_TIMM, labels=["a", "b", "c"], pretrained=False)
    shutil.copy(other.save_pretrained(tmp_path / "other") / "model.safetensors", model_copy / "model.safetensors")
    with pytest.raises(ModelLoadError, match=r"does not match config\.json .*size mismatch") as caught:
        TransferModel.from_pretrained(model_copy)
    assert "\n" not in str(caught.value)


def test_config_from_a_newer_hubtl(model_copy: Path) -> None:
    edit_config(model_copy, format_version=99, hubtl_version="9.0.0")
    with pytest.raises(ConfigError, match=r"written by hubtl 9\.0\.0 \(format 99\).*`pip install -U hubtl`"):
        TransferModel.from_pretrained(model_copy)


def test_backbone_spec_from_a_newer_plugin(model_copy: Path) -> None:
    edit_config(model_copy, backbone={"spec_version": 7})
    with pytest.raises(ConfigError, match=r"spec version 7 of plugin 'timm'.*Upgrade it"):
        TransferModel.from_pretrained(model_copy)


def test_directory_that_is_not_a_hubtl_model(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match=r"has no config\.json: it is not a saved hubtl model"):
        TransferModel.from_pretrained(tmp_path)


def test_a_transformers_checkpoint_is_not_a_hubtl_model(tiny_bert_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"not a hubtl model config \(no library_name: hubtl\)"):
        TransferModel.from_pretrained(tiny_bert_dir)


def test_config_that_is_not_json(model_copy: Path) -> None:
    (model_copy / "config.json").write_text("{task: classification")
    with pytest.raises(ModelLoadError, match=r"config\.json is not valid JSON"):
        TransferModel.from_pretrained(model_copy)


def test_config_without_head(model_copy: Path) -> None:
    config = json.loads((model_copy / "config.json").read_text())
    del config["head"]
    (model_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"head section of config\.json is missing or invalid"):
        TransferModel.from_pretrained(model_copy)


def test_path_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"No model directory at .*missing"):
        TransferModel.from_pretrained(tmp_path / "missing")


def test_text_model_without_its_backbone_files(tiny_bert: str, tmp_path: Path) -> None:
    directory = TransferModel.from_backbone(tiny_bert, labels=["a", "b"], pretrained=False).save_pretrained(tmp_path / "m")
    shutil.rmtree(directory / "backbone")
    with pytest.raises(ModelLoadError, match=r"transformers config of backbone .* is missing"):
        TransferModel.from_pretrained(directory)


# ---------------------------------------------------------------------------------------- inputs


def test_file_named_jpg_that_is_not_an_image(image_model: TransferModel, tmp_path: Path) -> None:
    fake = tmp_path / "photo.jpg"
    fake.write_text("this is a text file, not a JPEG")
    good = tmp_path / "good.png"
    Image.new("RGB", (20, 20)).save(good)
    with pytest.raises(InvalidInputError, match=r"photo\.jpg is not a readable image .*Remove or replace the file"):
        image_model.predict([str(good), str(fake)])


def test_image_path_that_does_not_exist(image_model: TransferModel, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"Image file not found: .*nope\.png"):
        image_model.predict(str(tmp_path / "nope.png"))
    with pytest.raises(InvalidInputError, match=r"is a folder, not an image file; pass the image files in it"):
        image_model.predict(str(tmp_path))


def test_image_model_given_something_that_is_not_an_image(image_model: TransferModel) -> None:
    with pytest.raises(InvalidInputError, match=r"Cannot read an image from a int"):
        image_model.predict([3])


@pytest.mark.parametrize("empty", [[], ()])
def test_empty_input_list(image_model: TransferModel, text_model: TransferModel, empty) -> None:
    for model in (image_model, text_model):
        with pytest.raises(InvalidInputError, match=r"No inputs given"):
            model.predict(empty)
        with pytest.raises(InvalidInputError, match=r"No inputs given"):
            model.embed(empty)


@pytest.mark.parametrize(
    "bad,kind",
    [([1, 2], "int"), (["fine", None], "NoneType"), (b"bytes", "bytes"), ([Image.new("RGB", (4, 4))], "Image")],
)
def test_non_string_to_a_text_model(text_model: TransferModel, bad, kind: str) -> None:
    with pytest.raises(InvalidInputError, match=rf"Text input #\d is a {kind}, not a string; pass strings"):
        text_model.predict(bad)


# ---------------------------------------------------------------------------------------------- an unreachable Hub


@pytest.fixture
def refusing_hub():
    """A loopback 'Hub' that accepts connections and closes them at once, counting how many it got."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)
    seen = {"connections": 0}
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            seen["connections"] += 1
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", seen
    stop.set()
    thread.join(2)
    server.close()


@pytest.mark.parametrize("name", ["timm:resnet18", "transformers:hubtl-test/not-cached-anywhere"])
def test_pretrained_weights_from_an_unreachable_hub_fail_without_retrying(refusing_hub, hf_home, name: str) -> None:
    from hubtl.hub.client import use_endpoint

    url, seen = refusing_hub
    with use_endpoint(url), pytest.raises(BackboneNotFoundError, match=r"(pretrained weights|Could not load)"):
        hubtl.create_backbone(name, pretrained=True)
    # one probe, no retries (the Hub client alone makes 12 attempts over about a minute)
    assert seen["connections"] <= 1, seen


def test_pretrained_weights_in_offline_mode_ask_the_network_nothing(refusing_hub, hf_home, monkeypatch) -> None:
    from hubtl.hub.client import offline, use_endpoint

    url, seen = refusing_hub
    with use_endpoint(url), offline(), pytest.raises(BackboneNotFoundError, match="pretrained weights"):
        hubtl.create_backbone("timm:resnet18", pretrained=True)
    assert seen["connections"] == 0


def test_a_mistyped_local_folder_is_named_beside_the_hub_error(
    tmp_path: Path, hf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hubtl.hub.client import offline

    (tmp_path / "outputs" / "my-model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # 'outputs/my-modl' is also a valid Hub ID: the Hub is tried, then the typo named
    with offline(), pytest.raises(hubtl.HubtlError, match=r"no local folder 'outputs/my-modl' either\. Did you mean 'outputs/my-model'\?"):
        TransferModel.from_pretrained("outputs/my-modl")
