"""Saved weights keep the state dict's per-module versions: a torchvision MNASNet (whose loading code refuses weights
without them) saves, loads in a fresh process and predicts identically; a tampered versions map is refused, and the
load errors tell a corrupt file, mismatched shapes and a module that refuses its weights apart."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import hubtl
from hubtl.layout import STATE_DICT_VERSIONS_KEY, load_weights, parse_state_dict_versions, save_weights
from hubtl.testing import check_backbone, example_inputs

#: A tiny torchvision-models plugin, as an outside author would write it (random weights: nothing downloads).
MNAS_PLUGIN = textwrap.dedent(
    '''
    """hubtl_tvmnas: torchvision's MNASNet 0.5 as a hubtl backbone (random weights)."""
    from __future__ import annotations

    import fnmatch
    from pathlib import Path
    from typing import Any

    import torch
    import torchvision
    from torch import nn

    import hubtl

    SIZE = 64


    class MnasBackbone(hubtl.Backbone):
        """MNASNet's feature layers, global average pooled."""

        modality = "image"
        feature_dim = 1280

        def __init__(self) -> None:
            super().__init__()
            self.net = torchvision.models.mnasnet0_5(weights=None)  # versioned state dict: _version = 2
            self.net.classifier = nn.Identity()

        def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.net(batch["pixel_values"])

        def preprocessor(self, train: bool = False) -> hubtl.Preprocessor:
            return hubtl.ImagePreprocessor({"input_size": (3, SIZE, SIZE), "crop_pct": 1.0}, train=train)

        def layer_groups(self) -> list[list[nn.Parameter]]:
            return [list(layer.parameters()) for layer in self.net.layers if list(layer.parameters())]

        def spec(self) -> dict[str, Any]:
            return {"plugin": "tvmnas", "name": "mnasnet0_5", "kwargs": {}}


    class MnasPlugin(hubtl.BackbonePlugin):
        """The `tvmnas` plugin."""

        name = "tvmnas"
        modality = "image"
        package = "hubtl-tvmnas"
        spec_kwargs = frozenset()

        def create(self, model_name: str, pretrained: bool = True) -> MnasBackbone:
            if model_name != "mnasnet0_5":
                raise hubtl.BackboneNotFoundError(f"Unknown tvmnas model {model_name!r}; choose mnasnet0_5.")
            return MnasBackbone()

        def from_spec(self, spec: dict[str, Any], files_dir: Path | None) -> MnasBackbone:
            return MnasBackbone()

        def list_models(self, pattern: str | None = None) -> list[str]:
            return [n for n in ["mnasnet0_5"] if pattern is None or fnmatch.fnmatch(n, pattern)]
    '''
)


@pytest.fixture(scope="module")
def mnas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The plugin module, importable from a temporary folder (also by a fresh process) and registered here."""
    folder = tmp_path_factory.mktemp("tvmnas")
    (folder / "hubtl_tvmnas.py").write_text(MNAS_PLUGIN)
    sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module("hubtl_tvmnas")
        hubtl.register_plugin(module.MnasPlugin)
        yield module
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("hubtl_tvmnas", None)
        hubtl.backbones.unregister_plugin("tvmnas")


@pytest.fixture(scope="module")
def saved(mnas: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[hubtl.TransferModel, Path]:
    """A trained-looking MNASNet model (BatchNorm statistics moved off their defaults), saved."""
    torch.manual_seed(0)
    model = hubtl.TransferModel.from_backbone("tvmnas:mnasnet0_5", labels=["a", "b", "c"], pretrained=False)
    model.train()
    with torch.no_grad():
        model(model.preprocessor(train=False)(example_inputs("image")))  # running statistics of one batch
    model.eval()
    return model, model.save_pretrained(tmp_path_factory.mktemp("saved") / "mnas")


def _rewrite_metadata(path: Path, change) -> None:
    """Rewrite a safetensors file with its metadata changed by `change(dict) -> dict`."""
    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata() or {})
    tensors = load_file(str(path))
    save_file(tensors, str(path), metadata=change(metadata))


def _copy(saved_dir: Path, target: Path) -> Path:
    """A copy of a saved model directory."""
    import shutil

    return Path(shutil.copytree(saved_dir, target))


def test_weights_file_holds_the_versions(saved: tuple[hubtl.TransferModel, Path]) -> None:
    model, directory = saved
    with safe_open(str(directory / "model.safetensors"), framework="pt") as f:
        versions = json.loads(f.metadata()[STATE_DICT_VERSIONS_KEY])
    assert versions["backbone.net"] == {"version": 2}  # MNASNet's own version
    assert versions == {k: {"version": v["version"]} for k, v in model.state_dict()._metadata.items()}


def test_mnasnet_saves_loads_in_a_fresh_process_and_predicts_identically(
    mnas: ModuleType, saved: tuple[hubtl.TransferModel, Path], tmp_path: Path
) -> None:
    model, directory = saved
    images = []
    for i, image in enumerate(example_inputs("image")):
        images.append(tmp_path / f"{i}.png")
        image.save(images[-1])
    code = textwrap.dedent(
        """
        import json, sys
        import hubtl, hubtl_tvmnas
        hubtl.register_plugin(hubtl_tvmnas.MnasPlugin)
        model = hubtl.TransferModel.from_pretrained(sys.argv[1])
        print(json.dumps(model.logits(json.loads(sys.argv[2])).tolist()))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(Path(mnas.__file__).parent), *sys.path])}
    result = subprocess.run(
        [sys.executable, "-c", code, str(directory), json.dumps([str(p) for p in images])],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    theirs = torch.tensor(json.loads(result.stdout.strip().splitlines()[-1]))
    ours = model.logits([str(p) for p in images])
    assert torch.equal(ours, theirs)  # same weights, same computation, same machine: bitwise
    assert [p["label"] for p in model.predict([str(p) for p in images])] == [
        model.labels[i] for i in theirs.argmax(1).tolist()
    ]


def test_mnasnet_plugin_conforms(mnas: ModuleType) -> None:
    report = check_backbone(mnas.MnasPlugin, "mnasnet0_5", raise_on_failure=False)
    assert report.passed, report.summary()
    assert report["save_load"].status == "pass"


def test_a_file_without_versions_is_refused_by_the_module_with_its_message(
    saved: tuple[hubtl.TransferModel, Path], tmp_path: Path
) -> None:
    """What every MNASNet file looked like before: the module's own refusal is quoted, and the cause named."""
    directory = _copy(saved[1], tmp_path / "old")
    _rewrite_metadata(directory / "model.safetensors", lambda m: {k: v for k, v in m.items() if k != STATE_DICT_VERSIONS_KEY})
    with pytest.raises(hubtl.ModelLoadError) as caught:
        hubtl.TransferModel.from_pretrained(directory)
    message = str(caught.value)
    assert "every weight's name and shape matches, but the model refused them" in message
    assert "version should be set to 1 or 2 instead of None" in message  # torchvision's own words
    assert "carries no state-dict versions" in message and "corrupt" not in message


@pytest.mark.parametrize(
    ("versions", "why"),
    [
        ("not json", "are not valid JSON"),
        ("[1, 2]", "are a JSON list"),
        ('{"backbone.net": 2}', "give module 'backbone.net' 2"),
        ('{"backbone.net": {"version": "2"}}', "give module 'backbone.net'"),
        ('{"backbone.net": {"version": true}}', "give module 'backbone.net'"),
        ('{"backbone.net": {"version": 2, "code": "x"}}', "give module 'backbone.net'"),
        ('{"backbone.net": {"version": -1}}', "give module 'backbone.net'"),
        ('{"backbone.net": {"version": 1' + "0" * 5000 + "}}", "are not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "are not valid JSON"),
        (json.dumps({"x" * 5000: {"version": 1}}), "name a module of 5,000 characters"),
    ],
    ids=["not-json", "a-list", "bare-int", "string", "bool", "extra-key", "negative", "huge-int", "deep", "long-name"],
)
def test_tampered_versions_are_refused_before_loading(
    saved: tuple[hubtl.TransferModel, Path], tmp_path: Path, versions: str, why: str
) -> None:
    directory = _copy(saved[1], tmp_path / "tampered")
    _rewrite_metadata(directory / "model.safetensors", lambda m: {**m, STATE_DICT_VERSIONS_KEY: versions})
    with pytest.raises(hubtl.ModelLoadError, match="corrupt or was tampered with") as caught:
        hubtl.TransferModel.from_pretrained(directory)
    assert why in str(caught.value)


def test_versions_are_bounded() -> None:
    with pytest.raises(hubtl.ModelLoadError, match="over the 16,777,216-character limit"):
        parse_state_dict_versions(" " * (16 * 1024 * 1024 + 1), "w.safetensors")
    assert parse_state_dict_versions('{"": {"version": 2}}', "w") == {"": {"version": 2}}


class _Picky(nn.Module):
    """A module whose loading code accepts only its own state-dict version, like torchvision's MNASNet."""

    _version = 3

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.layer = nn.Linear(width, width)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args) -> None:  # type: ignore[no-untyped-def]
        if local_metadata.get("version") != 3:
            raise ValueError(f"_Picky reads version 3 only, got {local_metadata.get('version')}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)


def test_load_errors_tell_corrupt_mismatched_and_refused_apart(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_weights(_Picky(), path)
    load_weights(_Picky(), path)  # the round trip works: version 3 is kept

    with pytest.raises(hubtl.ModelLoadError, match=r"does not match config\.json \(size mismatch for layer\.weight"):
        load_weights(_Picky(width=5), path)

    _rewrite_metadata(path, lambda m: {**m, STATE_DICT_VERSIONS_KEY: '{"": {"version": 1}}'})
    with pytest.raises(hubtl.ModelLoadError, match=r"refused them while loading \(ValueError: _Picky reads version 3 only, got 1\)"):
        load_weights(_Picky(), path)

    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(hubtl.ModelLoadError, match=r"is corrupt \(") as caught:
        load_weights(_Picky(), path)
    assert "refused" not in str(caught.value) and "does not match" not in str(caught.value)


def test_tied_weights_still_load(tmp_path: Path) -> None:
    """safetensors keeps one name of tensors that share memory; loading fills in the other."""

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 3)
            self.b = nn.Linear(3, 3)
            self.b.weight = self.a.weight

    source, target = Tied(), Tied()
    save_weights(source, tmp_path / "tied.safetensors")
    load_weights(target, tmp_path / "tied.safetensors")
    assert torch.equal(target.a.weight, source.a.weight) and target.b.weight is target.a.weight
