"""Third-party plugins: the example in docs/writing-plugins.md runs, and the two packages in plugins/ conform,
train, save and load back in a fresh process with identical predictions.

The plugins must be installed: `pip install -e plugins/hubtl-efficientnet-lite -e plugins/hubtl-sentence-transformers`.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

import hubtl
from hubtl.testing import check_backbone

from conftest import SHARED_DATA, minilm_dir

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "writing-plugins.md"


def _installed(name: str) -> bool:
    """True when the plugin package is installed (its entry point registered)."""
    return any(info.name == name and info.available for info in hubtl.list_plugins())


# ------------------------------------------------------------------ the guide's example plugin


def guide_blocks(language: str) -> list[str]:
    """The fenced code blocks of one language in docs/writing-plugins.md."""
    return re.findall(rf"^```{language}\n(.*?)^```", GUIDE.read_text(), flags=re.S | re.M)


def guide_block(first_line: str) -> str:
    """The python block of the guide whose first line is `first_line`."""
    matches = [b for b in guide_blocks("python") if b.startswith(first_line)]
    assert len(matches) == 1, f"docs/writing-plugins.md must have one python block starting with {first_line!r}"
    return matches[0]


@pytest.fixture(scope="module")
def tinycnn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The guide's example plugin, written to a temporary dir as hubtl_tinycnn.py and imported from there."""
    folder = tmp_path_factory.mktemp("guide-example")
    (folder / "hubtl_tinycnn.py").write_text(guide_block("# hubtl_tinycnn.py"))
    (folder / "test_tinycnn.py").write_text(guide_block("# test_tinycnn.py"))
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module("hubtl_tinycnn")
    finally:
        sys.path.remove(str(folder))
        for name in ("hubtl_tinycnn", "test_tinycnn"):
            sys.modules.pop(name, None)
        hubtl.backbones.unregister_plugin("tinycnn")


def test_guide_example_plugin_conforms(tinycnn: ModuleType) -> None:
    for model in tinycnn.TinyCNNPlugin().list_models():
        report = check_backbone(tinycnn.TinyCNNPlugin, model)
        assert report.passed, report.summary()


def test_guide_example_test_suite_passes(tinycnn: ModuleType, tmp_path: Path) -> None:
    suite = importlib.import_module("test_tinycnn")
    suite.test_tinycnn_conforms()
    suite.test_tinycnn_trains_saves_and_loads(tmp_path)


def test_guide_entry_point_matches_the_example(tinycnn: ModuleType) -> None:
    (toml,) = [b for b in guide_blocks("toml") if "hubtl.backbones" in b]
    project = tomllib.loads(toml)["project"]
    module, _, attribute = project["entry-points"]["hubtl.backbones"]["tinycnn"].partition(":")
    plugin = getattr(tinycnn, attribute)
    assert module == "hubtl_tinycnn" and plugin.name == "tinycnn" and plugin.package == project["name"]


def _saved_tinycnn(tinycnn: ModuleType, directory: Path) -> Path:
    """A tinycnn TransferModel saved to `directory`."""
    hubtl.register_plugin(tinycnn.TinyCNNPlugin)
    model = hubtl.TransferModel.from_backbone("tinycnn:tinycnn-s", labels=["a", "b"], pretrained=False)
    return model.save_pretrained(directory)


def test_guide_states_the_missing_plugin_error(tinycnn: ModuleType, tmp_path: Path) -> None:
    saved = _saved_tinycnn(tinycnn, tmp_path / "model")
    assert json.loads((saved / "config.json").read_text())["backbone"]["package"] == "hubtl-tinycnn"
    hubtl.backbones.unregister_plugin("tinycnn")  # as on a machine without the package
    with pytest.raises(hubtl.PluginUnavailableError) as caught:
        hubtl.TransferModel.from_pretrained(saved)
    stated = (
        "No backbone plugin named 'tinycnn' is installed (the model names package 'hubtl-tinycnn' as its source: check "
        "that it is the project you expect, then `pip install hubtl-tinycnn`)."
    )
    assert stated in GUIDE.read_text() and stated in str(caught.value)


def test_guide_states_the_newer_spec_error(tinycnn: ModuleType, tmp_path: Path) -> None:
    saved = _saved_tinycnn(tinycnn, tmp_path / "model")
    config = json.loads((saved / "config.json").read_text())
    config["backbone"]["spec_version"] = 2
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(hubtl.ConfigFileError) as caught:  # the class the guide names
        hubtl.TransferModel.from_pretrained(saved)
    assert isinstance(caught.value, hubtl.ConfigError) and isinstance(caught.value, hubtl.ModelLoadError)
    stated = "The model was saved with spec version 2 of plugin 'tinycnn', newer than the installed one reads (1)."
    guide = " ".join(GUIDE.read_text().split())
    assert stated in guide and stated in str(caught.value)
    assert "pip install -U hubtl-tinycnn" in str(caught.value).replace("`", "")


# ------------------------------------------------------------------ the guide's tokenizer-free text plugin


@pytest.fixture(scope="module")
def hashbag(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The guide's EmbeddingBag text plugin, written to a temporary dir as hubtl_hashbag.py and imported from there."""
    folder = tmp_path_factory.mktemp("guide-text-example")
    (folder / "hubtl_hashbag.py").write_text(guide_block("# hubtl_hashbag.py"))
    (folder / "test_hashbag.py").write_text(guide_block("# test_hashbag.py"))
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module("hubtl_hashbag")
    finally:
        sys.path.remove(str(folder))
        for name in ("hubtl_hashbag", "test_hashbag"):
            sys.modules.pop(name, None)
        hubtl.backbones.unregister_plugin("hashbag")


def test_guide_text_example_test_suite_passes(hashbag: ModuleType, tmp_path: Path) -> None:
    suite = importlib.import_module("test_hashbag")
    suite.test_hashbag_conforms()
    suite.test_the_batch_is_flat_ids_and_offsets()
    suite.test_hashbag_trains_saves_and_loads(tmp_path)


def test_guide_text_example_batch_is_not_batch_first(hashbag: ModuleType) -> None:
    """The point of the example: hubtl takes the batch size from the features, not from the batch."""
    backbone = hashbag.HashBagPlugin().create("hashbag-s", pretrained=False)
    batch = backbone.preprocessor()(["one text", "another, longer text"])
    assert batch["ids"].dim() == 1 and batch["ids"].shape[0] > 2 and batch["offsets"].shape == (2,)
    assert backbone(batch).shape == (2, backbone.feature_dim)


# ------------------------------------------------------------------ the guide states the kit and the data config exactly


def test_guide_lists_exactly_the_check_names() -> None:
    from hubtl.testing import CHECK_NAMES

    text = GUIDE.read_text()
    listed = json.loads(text.split("<!-- check-names -->")[1].split("<!-- /check-names -->")[0].strip().strip("`"))
    assert tuple(listed) == CHECK_NAMES
    described = re.findall(r"^\| `([a-z_]+)` \|", text.split("<!-- /check-names -->")[1], flags=re.M)
    assert tuple(described[: len(CHECK_NAMES)]) == CHECK_NAMES  # one table row per check, in order


def test_guide_lists_the_image_data_config_keys() -> None:
    from hubtl.backbones.timm import CROP_MODES, DATA_CONFIG_KEYS, INTERPOLATIONS

    section = GUIDE.read_text().split("### The data config of `hubtl.ImagePreprocessor`")[1].split("\n## ")[0]
    keys = re.findall(r"^\| `([a-z_]+)`(?:, `([a-z_]+)`)? \|", section, flags=re.M)
    assert sorted(k for pair in keys for k in pair if k) == sorted(DATA_CONFIG_KEYS)
    assert all(f"`{value}`" in section for value in (*INTERPOLATIONS, *CROP_MODES))


# ------------------------------------------------------------------ the packages in plugins/

EFFICIENTNET = "efficientnet_lite:efficientnet_lite0"


def sentence_transformers_name() -> str:
    """The real all-MiniLM-L6-v2 through the sentence_transformers plugin."""
    return f"sentence_transformers:{minilm_dir()}"


needs_plugins = pytest.mark.skipif(
    not (_installed("efficientnet_lite") and _installed("sentence_transformers")),
    reason="install the plugins: pip install -e plugins/hubtl-efficientnet-lite -e plugins/hubtl-sentence-transformers",
)


@needs_plugins
@pytest.mark.parametrize("name", [EFFICIENTNET, "sentence_transformers"])
def test_installed_plugin_conforms_with_real_weights(name: str) -> None:
    # by its entry-point name, as users reach it; 128-pixel images keep the image checks quick on CPU
    kwargs = {"image_size": 128} if name == EFFICIENTNET else {}
    name = sentence_transformers_name() if name == "sentence_transformers" else name
    report = check_backbone(name, pretrained=True, raise_on_failure=False, **kwargs)
    assert report.passed, report.summary()


def hymenoptera_examples(per_class: int) -> tuple[list[Path], list[int]]:
    """The first training photos of ants (0) and bees (1)."""
    root = SHARED_DATA / "hymenoptera" / "train"
    if not root.is_dir():
        pytest.skip(f"no hymenoptera data at {root}")
    files = [sorted((root / cls).iterdir())[:per_class] for cls in ("ants", "bees")]
    return files[0] + files[1], [0] * per_class + [1] * per_class


def sst2_examples(count: int) -> tuple[list[str], list[int]]:
    """The first SST-2 training sentences and labels (0 negative, 1 positive)."""
    path = SHARED_DATA / "sst2" / "train.tsv"
    if not path.is_file():
        pytest.skip(f"no SST-2 data at {path}")
    rows = [line.rsplit("\t", 1) for line in path.read_text().splitlines()[:count]]
    return [text for text, _ in rows], [int(label) for _, label in rows]


def briefly_train(model: hubtl.TransferModel, inputs: list[Any], targets: list[int], steps: int = 4) -> tuple[float, float]:
    """A few Adam steps on the head and the backbone's last layer group (backbone in eval mode); loss before/after."""
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    trainable = [*model.head.parameters(), *model.backbone.layer_groups()[-1]]
    for p in trainable:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(trainable, lr=1e-3)
    batch = model.preprocessor(train=False)(inputs)
    y = torch.tensor(targets)
    model.eval()
    losses = []
    for _ in range(steps + 1):
        loss = model.head.loss(model(batch), y)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return losses[0], losses[-1]


def predict_in_fresh_process(model_dir: Path, inputs: list[Any]) -> list[dict[str, Any]]:
    """TransferModel.from_pretrained + predict in a new Python process; its predictions as JSON."""
    code = textwrap.dedent(
        """
        import json, sys
        from hubtl import TransferModel
        model = TransferModel.from_pretrained(sys.argv[1])
        print(json.dumps(model.predict(json.loads(sys.argv[2]))))
        """
    )
    raw = json.dumps([str(x) for x in inputs])  # image paths or texts
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code, str(model_dir), raw], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_same_predictions(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    """Same labels, scores equal to float32 precision."""
    assert [p["label"] for p in ours] == [p["label"] for p in theirs]
    for a, b in zip(ours, theirs):
        assert a["scores"].keys() == b["scores"].keys()
        assert all(abs(a["scores"][k] - b["scores"][k]) <= 1e-6 for k in a["scores"]), (a, b)


@needs_plugins
def test_efficientnet_lite_trains_saves_and_loads_in_a_fresh_process(tmp_path: Path) -> None:
    files, targets = hymenoptera_examples(per_class=3)
    torch.manual_seed(0)
    model = hubtl.TransferModel.from_backbone(EFFICIENTNET, labels=["ants", "bees"])
    before, after = briefly_train(model, files, targets)
    assert after < before
    saved = model.save_pretrained(tmp_path / "lite0-ants-bees")
    config = json.loads((saved / "config.json").read_text())
    assert config["backbone"]["plugin"] == "efficientnet_lite" and config["backbone"]["package"] == "hubtl-efficientnet-lite"
    assert_same_predictions(model.predict(files), predict_in_fresh_process(saved, files))


@needs_plugins
def test_sentence_transformers_trains_saves_and_loads_in_a_fresh_process(tmp_path: Path) -> None:
    texts, targets = sst2_examples(8)
    torch.manual_seed(0)
    model = hubtl.TransferModel.from_backbone(sentence_transformers_name(), labels=["negative", "positive"])
    before, after = briefly_train(model, texts, targets)
    assert after < before
    saved = model.save_pretrained(tmp_path / "minilm-sst2")
    assert (saved / "backbone" / "modules.json").is_file() and (saved / "backbone" / "1_Pooling" / "config.json").is_file()
    assert json.loads((saved / "config.json").read_text())["backbone"]["package"] == "hubtl-sentence-transformers"
    assert_same_predictions(model.predict(texts), predict_in_fresh_process(saved, texts))
