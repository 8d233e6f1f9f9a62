"""What outside plugin authors got wrong and the kit used to pass: each mistake as a broken copy of one small, correct
image plugin, which the kit now fails by the check's name with a message that says what to fix."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import hubtl
from hubtl.testing import CHECK_NAMES, ConformanceError, check_backbone

# ------------------------------------------------------------------ a correct plugin, with knobs to break it


class TinyPreprocessor(hubtl.Preprocessor):
    """16x16 pixels in [-1, 1]; flips at random when training with `augment`; `claim` is the deterministic flag (None: unset)."""

    shift = 0.0  # added to every pixel (a broken plugin sets it from state that is not saved)
    sizes: dict[tuple[int, int], int] | None = None  # a broken plugin numbers image sizes in the order first seen

    def __init__(self, train: bool, augment: bool, claim: bool | None, dtype: torch.dtype) -> None:
        self.train, self.augment, self.dtype = train, augment, dtype
        if claim is not None:
            self.deterministic = claim

    def __call__(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        tensors = []
        for example in examples:
            image = hubtl.load_image(example)
            pixels = np.asarray(image.resize((16, 16), Image.BILINEAR), dtype=np.float32)
            tensor = torch.from_numpy(pixels).permute(2, 0, 1) / 127.5 - 1.0 + self.shift
            if self.sizes is not None:
                tensor = tensor + 0.1 * self.sizes.setdefault(image.size, len(self.sizes))
            if self.train and self.augment and torch.rand(()) < 0.5:
                tensor = tensor.flip(-1)
            tensors.append(tensor)
        return {"pixel_values": torch.stack(tensors).to(self.dtype)}

    def config(self) -> dict[str, Any]:
        return {"type": "image", "size": 16}


class TinyNet(hubtl.Backbone):
    """conv-relu stem, strided conv-relu, average pooling: 16 features."""

    modality = "image"
    feature_dim = 16
    augment = True  # the training preprocessor flips at random...
    claims = {True: False, False: True}  # ...and says so: train -> deterministic False, eval -> True
    eval_noise = 0.0

    def __init__(self, plugin: str, model_name: str, kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.plugin, self.model_name, self.kwargs = plugin, model_name, dict(kwargs)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.top = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        features = self.top(self.stem(batch["pixel_values"])).mean(dim=(2, 3))
        if self.eval_noise and not self.training:
            features = features + self.eval_noise * torch.randn_like(features)
        return features

    def preprocessor(self, train: bool = False) -> TinyPreprocessor:
        dtype = next(self.parameters()).dtype
        return TinyPreprocessor(train, self.augment, self.claims[train], dtype)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [list(self.stem.parameters()), list(self.top.parameters())]

    def spec(self) -> dict[str, Any]:
        return {"plugin": self.plugin, "name": self.model_name, "kwargs": dict(self.kwargs)}


class TinyPlugin(hubtl.BackbonePlugin):
    """A plugin of TinyNet backbones; subclasses swap in broken backbones or methods."""

    name = "tiny"
    modality = "image"
    package = "hubtl-tiny-test"
    backbone_class: type[TinyNet] = TinyNet
    models: tuple[str, ...] = ("tiny-s",)

    def __init__(self) -> None:
        self.created: list[str] = []

    def create(self, model_name: str, pretrained: bool = True) -> TinyNet:  # no options: an unknown one is a TypeError
        self.created.append(model_name)
        if model_name not in self.models:
            raise hubtl.BackboneNotFoundError(f"Unknown tiny model {model_name!r}; choose from {', '.join(self.models)}.")
        return self.backbone_class(self.name, model_name, {})

    def from_spec(self, spec: dict[str, Any], files_dir: Path | None) -> TinyNet:
        return self.backbone_class(self.name, spec["name"], spec.get("kwargs", {}))

    def list_models(self, pattern: str | None = None) -> list[str]:
        return [n for n in self.models if pattern is None or fnmatch.fnmatch(n, pattern)]


def broken(name: str, plugin_base: type[TinyPlugin] = TinyPlugin, **backbone_attributes: Any) -> TinyPlugin:
    """An instance of a TinyPlugin subclass named `name` whose backbone class has `backbone_attributes`."""
    backbone = type(f"{name}Net", (TinyNet,), backbone_attributes)
    return type(f"{name}Plugin", (plugin_base,), {"name": name, "backbone_class": backbone})()


def assert_caught(plugin: TinyPlugin, check: str, *words: str, checks: list[str] | None = None) -> str:
    """The kit fails `check` (naming plugin and check) with a message holding `words`; return that message."""
    with pytest.raises(ConformanceError) as caught:
        check_backbone(plugin, "tiny-s", checks=checks or [check])
    report = caught.value.report
    assert report[check].status == "fail", report.summary()
    first_line = str(caught.value).splitlines()[0]
    assert f"Backbone plugin {plugin.name!r} (model 'tiny-s') failed" in first_line and check in first_line
    message = report[check].message
    assert all(word in message for word in words), message
    return message


# ------------------------------------------------------------------ the correct plugin conforms


def test_the_correct_plugin_conforms_to_every_check() -> None:
    report = check_backbone(TinyPlugin(), "tiny-s")
    assert [r.name for r in report.results] == list(CHECK_NAMES), report.summary()
    assert report.passed, report.summary()
    mine = ["feature_dtype", "deterministic_eval", "trainable", "preprocessor", "train_preprocessor", "spec_json",
            "spec_public", "save_load", "list_models", "unknown_option"]  # fmt: skip
    assert all(report[name].status == "pass" for name in mine), report.summary()


class _Lenient(TinyPlugin):
    """Takes any option and ignores it: a misspelt backbone_kwargs would do nothing."""

    def create(self, model_name: str, pretrained: bool = True, **kwargs: Any) -> TinyNet:  # type: ignore[override]
        return super().create(model_name, pretrained)


def test_a_plugin_that_ignores_unknown_options_is_caught() -> None:
    assert_caught(broken("lenient", _Lenient), "unknown_option", "the option was ignored", "Raise hubtl.ConfigError")


# ------------------------------------------------------------------ Preprocessor.deterministic


class _FrozenFlipNet(TinyNet):
    """Augments when training but never sets `deterministic` (it used to default to True)."""

    claims = {True: None, False: None}


def test_an_unset_deterministic_flag_fails_and_says_what_to_set() -> None:
    plugin = broken("unsetflag", **{"claims": {True: None, False: None}})
    for check in ("preprocessor", "train_preprocessor"):
        assert_caught(plugin, check, "does not say whether it is deterministic", "Set `deterministic = True`", "`False`")


def test_reading_an_unset_flag_is_a_plugin_error() -> None:
    pre = _FrozenFlipNet("x", "tiny-s", {}).preprocessor(train=True)
    with pytest.raises(hubtl.PluginError, match="TinyPreprocessor does not say whether it is deterministic"):
        pre.deterministic
    with pytest.raises(AttributeError):  # other missing attributes stay plain AttributeErrors
        pre.no_such_attribute


def test_training_with_an_unset_flag_stops_with_the_plugin_error(tmp_path: Path) -> None:
    """The trainer asks the flag to decide on the feature cache: a linear probe with augment: true."""
    from hubtl.training import train

    for c, (name, colour) in enumerate({"blue": (30, 40, 220), "red": (220, 40, 30)}.items()):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (16, 16), colour).save(tmp_path / "data" / name / f"{i}.png")
    hubtl.register_plugin(type(broken("unsetflagtrain", **{"claims": {True: None, False: None}})))
    try:
        with pytest.raises(hubtl.PluginError, match="does not say whether it is deterministic"):
            train({
                "backbone": "unsetflagtrain:tiny-s", "pretrained": False, "strategy": "linear_probe", "augment": True,
                "dataset": {"path": str(tmp_path / "data"), "validation_size": 0.25}, "output_dir": str(tmp_path / "out"),
                "num_train_epochs": 1, "disable_tqdm": True, "report_to": "none", "dataloader_num_workers": 0,
            })  # fmt: skip
    finally:
        hubtl.backbones.unregister_plugin("unsetflagtrain")


def test_an_augmenting_preprocessor_that_claims_determinism_fails() -> None:
    plugin = broken("claimsdeterministic", claims={True: True, False: True})
    assert_caught(plugin, "train_preprocessor", "says deterministic = True", "different batches", "Set deterministic = False")


def test_a_deterministic_preprocessor_that_claims_randomness_fails() -> None:
    plugin = broken("claimsrandom", augment=False)  # no augmentation, yet train says deterministic = False
    assert_caught(plugin, "train_preprocessor", "says deterministic = False", "gave equal batches", "Set deterministic = True")


# ------------------------------------------------------------------ list_models


class _IgnoresPattern(TinyPlugin):
    models = ("tiny-s", "tiny-m")

    def list_models(self, pattern: str | None = None) -> list[str]:
        return list(self.models)


def test_list_models_that_ignores_its_pattern_fails() -> None:
    plugin = _IgnoresPattern()
    plugin.name = "ignorespattern"  # type: ignore[misc]
    assert_caught(plugin, "list_models", "ignores `pattern`", "fnmatch.fnmatch(name, pattern)")


class _HugeFirst(TinyPlugin):
    """Lists a model the kit must never build (an 88M-parameter one, say) before the one asked for."""

    models = ("huge-first", "tiny-s")

    def create(self, model_name: str, pretrained: bool = True, **kwargs: Any) -> TinyNet:
        if model_name == "huge-first":
            self.created.append(model_name)
            raise AssertionError("the kit built a model it was not asked to check")
        return super().create(model_name, pretrained, **kwargs)


def test_the_kit_builds_only_the_model_it_was_asked_to_check() -> None:
    plugin = _HugeFirst()
    report = check_backbone(plugin, "tiny-s")
    assert report.passed, report.summary()
    assert "huge-first" not in plugin.created and set(plugin.created) == {"tiny-s", "hubtl-conformance-no-such-model"}


# ------------------------------------------------------------------ spec()


def _spec_with(**extra: Any) -> dict[str, Any]:
    """Backbone attributes whose spec() adds `extra` to the kwargs."""

    def spec(self: TinyNet) -> dict[str, Any]:
        return {"plugin": self.plugin, "name": self.model_name, "kwargs": {**self.kwargs, **extra}}

    return {"spec": spec}


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"weights": "/home/alice/tiny-s.safetensors"}, ["spec()['kwargs']['weights']", "an absolute path"]),
        ({"weights": "~/weights/tiny-s.safetensors"}, ["a home-relative path (~)"]),
        ({"weights": "C:\\Users\\alice\\tiny.safetensors"}, ["an absolute path"]),
        ({"source": "file:///srv/tiny.safetensors"}, ["a file URL"]),
        ({"hub_token": "hf_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ012345"}, ["holds hf_aBc...,", "an access token or key"]),
        ({"note": "ghp_" + "0123456789abcdefghijABCDEFGHIJ"}, ["an access token or key"]),
        ({"seed_material": "q8Xz3LpR7vN2mK9wT4yB6cH1jF5dG0sA"}, ["a 32-character high-entropy string"]),
        ({"password": "hunter2"}, ["its key says so"]),
        ({"apiKey": "abc"}, ["spec()['kwargs']['apiKey']", "its key says so"]),
    ],
    ids=["absolute-path", "home-path", "windows-path", "file-url", "hf-token", "github-token", "high-entropy", "password-key",
         "api-key"],
)
def test_a_spec_with_a_local_path_or_a_secret_fails(extra: dict[str, Any], words: list[str]) -> None:
    message = assert_caught(broken("leakyspec", **_spec_with(**extra)), "spec_public", *words, "keep local paths and secrets out")
    assert "aBcDeFgHiJkLmNoPqRsTuVwXyZ" not in message  # the kit does not print the secret it found


def test_a_spec_with_ordinary_values_passes() -> None:
    """A commit hash, long model names, an author and huge numbers are not secrets, paths or non-JSON values."""
    plugin = broken("plainspec", **_spec_with(
        revision="0123456789abcdef0123456789abcdef01234567", repo="org/sentence-transformers-all-MiniLM-L6-v2-finetuned",
        arch="EfficientNetLiteB0WithSqueezeExcite2", author="alice", seed=10**400, lr=0.1,
    ))  # fmt: skip
    assert check_backbone(plugin, "tiny-s", checks=["spec_public", "spec_json"]).passed


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"size": (16, 16)}, ["spec()['kwargs']['size'] is a tuple (16, 16)", "use a list"]),
        ({"table": {1: "a"}}, ["has the key 1 (int)", "JSON keys are strings"]),
        ({"scale": float("nan")}, ["is nan", "finite number"]),
        ({"root": Path("models")}, ["pathlib", "not a JSON value"]),
    ],
    ids=["tuple", "int-key", "nan", "path-object"],
)
def test_a_spec_that_does_not_survive_json_fails(extra: dict[str, Any], words: list[str]) -> None:
    assert_caught(broken("tuplespec", **_spec_with(**extra)), "spec_json", *words)


# ------------------------------------------------------------------ parameters, dtype, determinism


def _frozen_init(self: TinyNet, *args: Any) -> None:
    TinyNet.__init__(self, *args)
    for p in self.stem.parameters():
        p.requires_grad_(False)  # "the stem is pretrained, keep it": a strategy's decision, not create()'s


def test_parameters_frozen_at_creation_fail_the_trainable_check() -> None:
    plugin = broken("frozenatcreate", __init__=_frozen_init)
    message = assert_caught(plugin, "trainable", "2 of 4 parameters are frozen", "stem.0.weight", checks=["gradients", "trainable"])
    report = check_backbone(plugin, "tiny-s", checks=["gradients"], raise_on_failure=False)
    assert report["gradients"].status == "pass"  # what the kit used to say: every *trainable* parameter gets gradients
    assert "strategy" in message


def _double_init(self: TinyNet, *args: Any) -> None:
    TinyNet.__init__(self, *args)
    self.double()


def test_float64_features_fail_the_dtype_check() -> None:
    assert_caught(broken("float64", __init__=_double_init), "feature_dtype", "features are float64, not float32", "parameters: float64")


def test_eval_noise_below_the_old_absolute_tolerance_fails() -> None:
    plugin = broken("evalnoise", eval_noise=1e-7)
    assert_caught(plugin, "deterministic_eval", "differ", "1e-06 relative", "the float32 tolerance", "eval mode")


# ------------------------------------------------------------------ state a saved model does not carry


class HashSeededNet(TinyNet):
    """Shifts its pixels by an amount from hash(): each Python process (another PYTHONHASHSEED) preprocesses differently,
    as a vocabulary built in `set` order would."""

    def preprocessor(self, train: bool = False) -> TinyPreprocessor:
        pre = super().preprocessor(train)
        pre.shift = (hash("hubtl") % 1000) / 1000
        return pre


class HashSeededPlugin(TinyPlugin):  # at module level: the kit's fresh process imports it from here
    name = "hashseeded"
    backbone_class = HashSeededNet


class SeenOrderNet(TinyNet):
    """Numbers image sizes in the order its preprocessing first sees them, and never saves that: a vocabulary grown on
    the fly."""

    def __init__(self, plugin: str, model_name: str, kwargs: dict[str, Any]) -> None:
        super().__init__(plugin, model_name, kwargs)
        self.sizes: dict[tuple[int, int], int] = {}

    def preprocessor(self, train: bool = False) -> TinyPreprocessor:
        pre = super().preprocessor(train)
        pre.sizes = self.sizes
        return pre


def test_preprocessing_that_differs_in_another_process_fails_save_load() -> None:
    assert_caught(HashSeededPlugin(), "save_load", "fresh process (PYTHONHASHSEED=", "save_files")


def test_preprocessing_that_grows_with_the_inputs_seen_fails_save_load() -> None:
    plugin = type("SeenOrderPlugin", (TinyPlugin,), {"name": "seenorder", "backbone_class": SeenOrderNet})()
    assert_caught(plugin, "save_load", "depends on the inputs it has seen")


def test_a_plugin_registered_only_in_a_function_is_compared_in_this_process_alone() -> None:
    report = check_backbone(broken("local"), "tiny-s", checks=["save_load"])
    assert "not compared in a fresh process" in report["save_load"].message


# ------------------------------------------------------------------ the names checks=[...] accepts


def test_every_check_name_is_selectable_and_plugin_and_create_always_run() -> None:
    assert CHECK_NAMES[:2] == ("plugin", "create")
    for names, expected in ((["plugin"], ["plugin", "create"]), (["create"], ["plugin", "create"]),
                            (["spec_json", "plugin"], ["plugin", "create", "spec_json"])):  # fmt: skip
        report = check_backbone(TinyPlugin(), "tiny-s", checks=names)
        assert [r.name for r in report.results] == expected and report.passed
    with pytest.raises(hubtl.ConfigError, match="Unknown conformance checks \\['plugins'\\]; choose from plugin, create, "):
        check_backbone(TinyPlugin(), "tiny-s", checks=["plugins"])

