"""The conformance kit passes the built-in backbones and catches deliberately broken plugins by name and check."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from hubtl.backbones import registry
from hubtl.backbones.timm import TimmBackbone, TimmPlugin
from hubtl.cli import main as cli_main
from hubtl.testing import (
    CHECK_NAMES,
    ConformanceError,
    ConformanceReport,
    assert_backbone_conforms,
    check_backbone,
    example_inputs,
)
from hubtl.errors import HubtlError

from conftest import TINY_TIMM


# ------------------------------------------------------------------ the built-in plugins conform


@pytest.mark.parametrize("name", [TINY_TIMM, "timm:test_vit"])
def test_builtin_timm_backbones_conform(name: str) -> None:
    report = check_backbone(name)
    assert report.passed, report.summary()
    assert [r.name for r in report.results] == list(CHECK_NAMES) and CHECK_NAMES[:2] == ("plugin", "create")
    assert report["image_paths"].status == "pass" and report["list_models"].status == "pass"


def test_builtin_transformers_backbone_conforms(tiny_bert: str) -> None:
    report = assert_backbone_conforms(tiny_bert, pooling="cls")
    assert report.passed
    assert report["image_paths"].status == "skip"  # text backbone
    # a directory model need not be listed: skipped when nothing is listed, else only the pattern filtering is checked
    assert report["list_models"].status in ("skip", "pass") and "path" in report["list_models"].message
    assert report.plugin == "transformers" and report.model == tiny_bert.partition(":")[2]


def test_plugin_name_and_model_name_as_two_arguments() -> None:
    report = check_backbone("timm", "test_resnet", checks=["output_shape"])
    assert report.passed and (report.plugin, report.model) == ("timm", "test_resnet")


def test_kit_leaves_no_global_state_behind() -> None:
    from huggingface_hub import constants

    before = (os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE)
    plugin = _BrokenTimmPlugin("leakygroups", _LeakyGroups)
    report = check_backbone(plugin, "test_resnet", raise_on_failure=False, checks=["spec", "save_load"])
    assert report["save_load"].status == "pass", report.summary()  # it saved and loaded through the registry...
    assert "leakygroups" not in registry._registered  # ...where the plugin was registered only meanwhile
    assert (os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE) == before


# ------------------------------------------------------------------ broken plugins are caught


class _BrokenTimmPlugin(TimmPlugin):
    """A timm plugin whose backbones are broken by `breakage`."""

    package = "hubtl-broken-test"

    def __init__(self, name: str, backbone_class: type[TimmBackbone]) -> None:
        self.name = name  # type: ignore[misc]
        self.backbone_class = backbone_class

    def _wrap(self, b: TimmBackbone) -> TimmBackbone:
        wrapped = self.backbone_class(b.model, b.model_name, b.kwargs, b.data_config)
        return wrapped

    def create(self, model_name: str, pretrained: bool = True, **kwargs: Any) -> TimmBackbone:
        return self._wrap(super().create(model_name, pretrained=pretrained, **kwargs))

    def from_spec(self, spec: dict[str, Any], files_dir: Path | None) -> TimmBackbone:
        return self._wrap(super().from_spec({**spec, "plugin": "timm"}, files_dir))


class _WrongWidth(TimmBackbone):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.feature_dim += 1  # claims one more feature than forward returns

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "plugin": "wrongwidth"}


class _LeakyGroups(TimmBackbone):
    def layer_groups(self) -> list[list[nn.Parameter]]:
        groups = super().layer_groups()
        return [groups[0][1:], *groups[1:]]  # the stem's first parameter (conv1.weight) is left out

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "plugin": "leakygroups"}


class _ReversedGroups(TimmBackbone):
    def layer_groups(self) -> list[list[nn.Parameter]]:
        return super().layer_groups()[::-1]

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "plugin": "reversedgroups"}


class _BatchDependent(TimmBackbone):
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        features = super().forward(batch)
        return features - features.mean(0, keepdim=True)  # batch-level normalisation

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "plugin": "batchdependent"}


class _RandomInEval(TimmBackbone):
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return nn.functional.dropout(super().forward(batch), p=0.5, training=True)

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "plugin": "randomineval"}


@pytest.mark.parametrize(
    ("plugin", "check", "words", "only"),
    [
        # the two breakages the issue names run through the whole kit; the others only through their check
        (_BrokenTimmPlugin("wrongwidth", _WrongWidth), "output_shape", ["feature_dim=97", "shape [3, 96]"], False),
        (
            _BrokenTimmPlugin("leakygroups", _LeakyGroups),
            "layer_groups",
            ["1 of 45 parameters are in no group", "model.conv1.0.weight"],
            False,
        ),
        (_BrokenTimmPlugin("reversedgroups", _ReversedGroups), "layer_groups", ["not ordered from input to output"], True),
        (_BrokenTimmPlugin("batchdependent", _BatchDependent), "batch_independence", ["depends on the other examples"], True),
        (_BrokenTimmPlugin("randomineval", _RandomInEval), "deterministic_eval", ["eval mode"], True),
    ],
    ids=["wrong-width", "param-left-out", "groups-reversed", "batch-dependent", "random-in-eval"],
)
def test_broken_plugin_is_caught_naming_plugin_and_check(
    plugin: _BrokenTimmPlugin, check: str, words: list[str], only: bool
) -> None:
    with pytest.raises(ConformanceError) as caught:
        check_backbone(plugin, "test_resnet", checks=[check] if only else None)
    message = str(caught.value)
    assert f"Backbone plugin {plugin.name!r} (model 'test_resnet') failed" in message
    assert check in message.splitlines()[0]
    assert all(word in message for word in words), message
    assert isinstance(caught.value, AssertionError) and isinstance(caught.value, HubtlError)
    report = caught.value.report
    assert report[check].status == "fail" and f"FAIL  {check}" in report.summary()
    assert report["plugin"].passed and report["create"].passed
    if not only:  # the kit pins the breakage down: unrelated checks still pass
        failed = {r.name for r in report.failures}
        # a wrong width also fails every check that looks at the features' shape, and the head built for 97
        shape_checks = {"output_shape", "batch_independence", "preprocessor", "edge_inputs", "save_load", "onnx_export"}
        assert failed == (shape_checks if plugin.name == "wrongwidth" else {"layer_groups"}), report.summary()


def test_assert_helper_raises_assertion_error_in_pytest_style() -> None:
    with pytest.raises(AssertionError, match="leakygroups"):
        assert_backbone_conforms(_BrokenTimmPlugin("leakygroups", _LeakyGroups), "test_resnet", checks=["layer_groups"])


def test_create_failure_skips_the_rest() -> None:
    report = check_backbone("timm:no_such_model_xyz", raise_on_failure=False)
    assert report["create"].status == "fail" and "Unknown timm model" in report["create"].message
    assert all(report[c].status == "skip" for c in CHECK_NAMES if c not in ("plugin", "create"))
    assert not report.passed


def test_unknown_plugin_is_a_failed_plugin_check() -> None:
    report = check_backbone("nosuchplugin:model", raise_on_failure=False)
    assert report.plugin == "nosuchplugin" and report["plugin"].status == "fail"
    assert "No backbone plugin named 'nosuchplugin'" in report["plugin"].message


def test_plugin_class_needs_model_name_and_unknown_checks_are_refused() -> None:
    report = check_backbone(TimmPlugin, raise_on_failure=False)
    assert "needs model_name" in report["plugin"].message
    with pytest.raises(ValueError, match="Unknown conformance checks"):
        check_backbone(TINY_TIMM, checks=["nope"])


def test_example_inputs_cover_both_modalities() -> None:
    images, texts = example_inputs("image"), example_inputs("text")
    assert len({im.size for im in images}) == len(images) >= 2
    assert len({len(t) for t in texts}) == len(texts) >= 2 and all(isinstance(t, str) for t in texts)
    assert example_inputs("audio") == []


# ------------------------------------------------------------------ the CLI


def test_cli_check_passes_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["backbones", "check", TINY_TIMM]) == 0
    out = capsys.readouterr().out
    assert "CONFORMS" in out and "PASS  layer_groups" in out
    assert cli_main(["backbones", "check", "nosuchplugin:x"]) == 1
    assert "FAIL  plugin" in capsys.readouterr().out


def test_cli_reports_a_plugin_that_raises_on_import(tmp_path: Path) -> None:
    """An installed plugin whose import fails: the registry records the error, the kit reports it by name."""
    (tmp_path / "hubtl_broken_plugin.py").write_text("raise ImportError('boom: a dependency is missing')\n")
    dist = tmp_path / "hubtl_broken_plugin-0.0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hubtl-broken-plugin\nVersion: 0.0.1\n")
    (dist / "entry_points.txt").write_text("[hubtl.backbones]\nbroken = hubtl_broken_plugin:Plugin\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    code = textwrap.dedent(
        """
        import sys
        from hubtl.cli import main
        sys.exit(main(["backbones", "check", "broken:x"]))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "FAIL  plugin" in result.stdout
    assert "'broken' from hubtl-broken-plugin failed to import" in result.stdout
    assert "boom: a dependency is missing" in result.stdout


def test_report_summary_is_a_table() -> None:
    report = check_backbone(TINY_TIMM, checks=["output_shape", "image_paths"])
    lines = report.summary().splitlines()
    assert lines[0].startswith("Conformance of backbone plugin 'timm', model 'test_resnet': 4 passed")
    assert [line.split()[:2] for line in lines[1:]] == [
        ["PASS", "plugin"],
        ["PASS", "create"],
        ["PASS", "output_shape"],
        ["PASS", "image_paths"],
    ]
    assert isinstance(report, ConformanceReport) and str(report) == report.summary()
