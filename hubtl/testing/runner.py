"""Running the conformance kit: the list of checks, `check_backbone` and `assert_backbone_conforms`."""

from __future__ import annotations

import tempfile
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..backbones import registry
from ..backbones.base import Backbone, BackbonePlugin
from ..errors import ConfigError, HubtlError
from .forward_checks import (
    check_batch_independence,
    check_deterministic_eval,
    check_edge_inputs,
    check_feature_dtype,
    check_feature_map,
    check_freeze_unfreeze,
    check_gradients,
    check_image_paths,
    check_layer_groups,
    check_output_shape,
    check_preprocessor,
    check_train_preprocessor,
    check_trainable,
)
from .report import CheckFailed, CheckResult, CheckSkipped, ConformanceReport
from .spec_checks import (
    check_list_models,
    check_load_safety,
    check_onnx_export,
    check_save_load,
    check_spec,
    check_spec_json,
    check_spec_public,
    check_unknown_model,
    check_unknown_option,
)
from .subject import Subject, _require, example_inputs

CHECKS: dict[str, Callable[[Subject], str]] = {
    "output_shape": check_output_shape,
    "feature_dtype": check_feature_dtype,
    "deterministic_eval": check_deterministic_eval,
    "batch_independence": check_batch_independence,
    "trainable": check_trainable,
    "gradients": check_gradients,
    "feature_map": check_feature_map,
    "layer_groups": check_layer_groups,
    "freeze_unfreeze": check_freeze_unfreeze,
    "preprocessor": check_preprocessor,
    "train_preprocessor": check_train_preprocessor,
    "edge_inputs": check_edge_inputs,
    "image_paths": check_image_paths,
    "spec_json": check_spec_json,
    "spec_public": check_spec_public,
    "spec": check_spec,
    "save_load": check_save_load,
    "load_safety": check_load_safety,
    "onnx_export": check_onnx_export,
    "list_models": check_list_models,
    "unknown_model": check_unknown_model,
    "unknown_option": check_unknown_option,
}
#: Every check `checks=[...]` accepts, in the order they run: `plugin` and `create` always run first (the others
#: need the backbone create() builds), so naming them runs only those two.
ALWAYS_RUN = ("plugin", "create")
CHECK_NAMES: tuple[str, ...] = (*ALWAYS_RUN, *CHECKS)


# ---------------------------------------------------------------------------------------------- the runner


def _resolve(plugin_or_name: Any, model_name: str | None) -> tuple[BackbonePlugin, str, str]:
    """Turn 'plugin:model', ('plugin', 'model'), a plugin class or instance into (plugin, registered name, model)."""
    if isinstance(plugin_or_name, str):
        if model_name is None:
            plugin_name, model_name = registry.split_backbone_name(plugin_or_name)
        else:
            plugin_name = plugin_or_name
        return registry.get_plugin(plugin_name), plugin_name, model_name
    plugin = plugin_or_name() if isinstance(plugin_or_name, type) else plugin_or_name
    if not isinstance(plugin, BackbonePlugin):
        raise TypeError(f"{plugin_or_name!r} is not a hubtl.BackbonePlugin (class or instance) nor a 'plugin:model' name.")
    if model_name is None:
        raise TypeError(f"check_backbone({type(plugin).__name__}(...)) needs model_name, the model to create.")
    return plugin, plugin.name, model_name


def _labels(plugin_or_name: Any, model_name: str | None) -> tuple[str, str]:
    """(plugin, model) names for the report, even when the plugin cannot be resolved."""
    if isinstance(plugin_or_name, str) and model_name is None:
        plugin, _, model = plugin_or_name.partition(":")
        return plugin, model
    return str(getattr(plugin_or_name, "name", "") or plugin_or_name), str(model_name)


def _check_plugin(plugin: BackbonePlugin, plugin_name: str) -> str:
    """The plugin's class attributes: name, modality, spec_version, package."""
    _require(bool(plugin.name), f"{type(plugin).__name__} has no `name`; set the class attribute name = '...'.")
    _require(bool(plugin.modality), f"{type(plugin).__name__} has no `modality`; set it to 'image' or 'text'.")
    version = plugin.spec_version
    _require(isinstance(version, int) and version >= 1, f"spec_version is {version!r}; set an int >= 1.")
    note = f", package {plugin.package}" if plugin.package else (
        "; note: no `package` set, so users who lack the plugin are not told what to pip install"
    )
    alias = f" registered as {plugin_name!r}" if plugin_name != plugin.name else ""
    return f"{type(plugin).__name__} {plugin.name!r}{alias} ({plugin.modality}), spec_version {version}{note}"


def _check_create(subject_args: dict[str, Any]) -> tuple[Backbone, str]:
    """create() returns a Backbone whose modality and feature_dim are set."""
    plugin: BackbonePlugin = subject_args["plugin"]
    backbone = plugin.create(subject_args["model_name"], pretrained=subject_args["pretrained"], **subject_args["kwargs"])
    _require(isinstance(backbone, Backbone), f"create() returned a {type(backbone).__name__}, not a hubtl.Backbone.")
    _require(
        isinstance(backbone.feature_dim, int) and backbone.feature_dim > 0,
        f"feature_dim is {backbone.feature_dim!r}; set it to the (positive int) width of the pooled features.",
    )
    _require(
        not plugin.modality or backbone.modality == plugin.modality,
        f"the backbone's modality is {backbone.modality!r} but the plugin's is {plugin.modality!r}.",
    )
    trainable = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    total = sum(p.numel() for p in backbone.parameters())
    return backbone, (
        f"{type(backbone).__name__} ({backbone.modality}), feature_dim={backbone.feature_dim}, "
        f"{total:,} parameters ({trainable:,} trainable), pretrained={subject_args['pretrained']}"
    )


def _run_one(name: str, fn: Callable[[], str]) -> CheckResult:
    """Run one check, turning CheckFailed/CheckSkipped/unexpected errors into a CheckResult."""
    torch.manual_seed(0)
    try:
        return CheckResult(name, "pass", fn())
    except CheckSkipped as skip:
        return CheckResult(name, "skip", str(skip))
    except CheckFailed as fail:
        return CheckResult(name, "fail", str(fail))
    except Exception as err:  # a crash inside the plugin is a failure of that check
        where = traceback.extract_tb(err.__traceback__)[-1]
        return CheckResult(
            name, "fail", f"raised {type(err).__name__}: {str(err)[:400]} (at {Path(where.filename).name}:{where.lineno})"
        )


def check_backbone(
    plugin_or_name: str | BackbonePlugin | type[BackbonePlugin],
    model_name: str | None = None,
    *,
    pretrained: bool = False,
    raise_on_failure: bool = True,
    checks: Iterable[str] | None = None,
    examples: Sequence[Any] | None = None,
    **kwargs: Any,
) -> ConformanceReport:
    """Run the conformance checks on one backbone and return the report; raise ConformanceError on failure if asked.

    `plugin_or_name` is a full name ('timm:resnet18'), a plugin name with `model_name`, or a BackbonePlugin class or
    instance with `model_name` (the plugin need not be installed). `kwargs` go to `plugin.create`. `checks` picks a
    subset of CHECK_NAMES (`plugin` and `create` always run); `examples` replaces the built-in raw inputs (needed for modalities other than image/text).
    """
    asked = list(CHECK_NAMES if checks is None else checks)
    unknown = [c for c in asked if c not in CHECK_NAMES]
    if unknown:
        raise ConfigError(f"Unknown conformance checks {unknown}; choose from {', '.join(CHECK_NAMES)}.")
    selected = [c for c in dict.fromkeys(asked) if c in CHECKS]  # plugin and create always run, first
    report = ConformanceReport(*_labels(plugin_or_name, model_name))
    try:
        plugin, plugin_name, model_name = _resolve(plugin_or_name, model_name)
    except (HubtlError, TypeError) as err:
        report.results.append(CheckResult("plugin", "fail", str(err)))
        report.results += [CheckResult(c, "skip", "not run: the plugin is unavailable") for c in ["create", *selected]]
        return _finish(report, raise_on_failure)
    report.plugin, report.model = plugin_name, model_name
    report.results.append(_run_one("plugin", lambda: _check_plugin(plugin, plugin_name)))

    args = {"plugin": plugin, "model_name": model_name, "pretrained": pretrained, "kwargs": kwargs}
    created: list[Backbone] = []

    def create() -> str:
        backbone, message = _check_create(args)
        created.append(backbone)
        return message

    report.results.append(_run_one("create", create))
    if not created:
        report.results += [CheckResult(c, "skip", "not run: create() failed") for c in selected]
        return _finish(report, raise_on_failure)
    backbone = created[0].eval()
    raw = list(examples) if examples is not None else example_inputs(backbone.modality)
    if not raw:
        report.results.append(
            CheckResult("examples", "fail", f"no built-in example inputs for modality {backbone.modality!r}; pass examples=[...].")
        )
        return _finish(report, raise_on_failure)
    flags = [(p, p.requires_grad) for p in backbone.parameters()]
    with tempfile.TemporaryDirectory(prefix="hubtl-conformance-") as tmp:
        subject = Subject(plugin, plugin_name, model_name, backbone, raw, Path(tmp), pretrained, dict(kwargs))
        for name in selected:
            report.results.append(_run_one(name, lambda fn=CHECKS[name]: fn(subject)))
            for p, flag in flags:  # leave the backbone as create() made it for the next check
                p.requires_grad_(flag)
                p.grad = None
            backbone.eval()
    return _finish(report, raise_on_failure)


def _finish(report: ConformanceReport, raise_on_failure: bool) -> ConformanceReport:
    """Raise ConformanceError when asked and a check failed; else return the report."""
    if raise_on_failure:
        report.raise_for_failures()
    return report


def assert_backbone_conforms(
    plugin_or_name: str | BackbonePlugin | type[BackbonePlugin],
    model_name: str | None = None,
    *,
    pretrained: bool = False,
    checks: Iterable[str] | None = None,
    examples: Sequence[Any] | None = None,
    **kwargs: Any,
) -> ConformanceReport:
    """Pytest helper: run the kit and fail the test (ConformanceError, an AssertionError) naming the failed checks."""
    return check_backbone(
        plugin_or_name, model_name, pretrained=pretrained, raise_on_failure=True, checks=checks, examples=examples, **kwargs
    )
