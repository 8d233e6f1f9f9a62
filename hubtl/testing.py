"""The conformance kit: checks that a backbone plugin honours the transfer interface (like scikit-learn's check_estimator).

    from hubtl.testing import check_backbone, assert_backbone_conforms

    report = check_backbone("timm:resnet18", raise_on_failure=False)
    print(report.summary())
    assert_backbone_conforms(MyPlugin, "my-model")  # in a plugin's own pytest suite

Each check is a small function taking a `Subject` (the plugin, a freshly created backbone and raw example
inputs); it returns a short message when the backbone conforms and raises `CheckFailed` (or `CheckSkipped`)
otherwise. Every check runs on CPU, with the torch seed fixed, and the kit restores the backbone's
`requires_grad` flags, gradients and eval mode between checks, so the checks are independent.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import json
import math
import os
import pickle
import random
import re
import tempfile
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .backbones import registry
from .backbones.base import Backbone, BackbonePlugin, Preprocessor
from .errors import ConfigError, HubtlError, PluginError
from .hub.client import offline

#: Tolerances of the numerical comparisons (features are float32 on CPU).
BATCH_ATOL, BATCH_RTOL = 1e-5, 1e-4
EXACT_ATOL = 1e-6
#: Relative tolerance of "the same computation again" (eval determinism, save/load), by the features' dtype.
RTOL_BY_DTYPE = {torch.float64: 1e-12, torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 1e-2}
#: torch/random/numpy seeds the preprocessor checks run under (fixed, so a verdict never changes between runs).
SEEDS = (11, 22, 33, 44, 55, 66)

#: A model name no plugin should be able to create.
UNKNOWN_MODEL = "hubtl-conformance-no-such-model"

__all__ = [
    "CHECK_NAMES",
    "CheckFailed",
    "CheckResult",
    "CheckSkipped",
    "ConformanceError",
    "ConformanceReport",
    "Subject",
    "assert_backbone_conforms",
    "check_backbone",
    "example_inputs",
]


class ConformanceError(HubtlError, AssertionError):
    """A backbone failed the conformance kit; an AssertionError too, so pytest reports it as a failed assertion."""

    def __init__(self, report: ConformanceReport) -> None:
        self.report = report
        failed = report.failures
        head = (
            f"Backbone plugin {report.plugin!r} (model {report.model!r}) failed {len(failed)} conformance "
            f"check(s): {', '.join(r.name for r in failed)}."
        )
        details = "\n".join(f"- {r.name}: {r.message}" for r in failed)
        super().__init__(f"{head}\n{details}\n\n{report.summary()}")


class CheckFailed(Exception):
    """Raised by a check function: the backbone does not conform; the message says why and what to fix."""


class CheckSkipped(Exception):
    """Raised by a check function: the check does not apply to this backbone; the message says why."""


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check: status is 'pass', 'fail' or 'skip'."""

    name: str
    status: str
    message: str

    @property
    def passed(self) -> bool:
        """True unless the check failed (a skipped check does not fail the report)."""
        return self.status != "fail"


@dataclass
class ConformanceReport:
    """The results of every check run on one plugin and model."""

    plugin: str
    model: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no check failed."""
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        """The failed checks, in the order they ran."""
        return [r for r in self.results if r.status == "fail"]

    def __getitem__(self, name: str) -> CheckResult:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(f"No check named {name!r} in this report; checks: {', '.join(r.name for r in self.results)}.")

    def summary(self) -> str:
        """A readable table: one line per check (PASS / FAIL / SKIP, name, message)."""
        counts = {s: sum(r.status == s for r in self.results) for s in ("pass", "fail", "skip")}
        lines = [
            f"Conformance of backbone plugin {self.plugin!r}, model {self.model!r}: "
            f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped"
            f" -> {'CONFORMS' if self.passed else 'DOES NOT CONFORM'}"
        ]
        width = max([len(r.name) for r in self.results] + [4])
        for r in self.results:
            first, *rest = (r.message or "").splitlines() or [""]
            lines.append(f"  {r.status.upper():4}  {r.name:<{width}}  {first}")
            lines.extend(f"  {'':4}  {'':<{width}}  {line}" for line in rest)
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise ConformanceError naming the plugin, the model and the failed checks, if any failed."""
        if not self.passed:
            raise ConformanceError(self)

    def __str__(self) -> str:
        return self.summary()


@dataclass
class Subject:
    """What a check looks at: the plugin, a freshly created backbone, raw example inputs and a scratch dir."""

    plugin: BackbonePlugin
    plugin_name: str
    model_name: str
    backbone: Backbone
    examples: list[Any]
    workdir: Path
    pretrained: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)

    def features(self, examples: Sequence[Any] | None = None, train: bool = False) -> torch.Tensor:
        """Features of raw examples, preprocessed by the eval (or train) preprocessor, without autograd."""
        batch = self.backbone.preprocessor(train=train)(list(self.examples if examples is None else examples))
        with torch.no_grad():
            return self.backbone(batch)

    def name_of(self, param: nn.Parameter) -> str:
        """Qualified name of a backbone parameter (for messages)."""
        for name, p in self.backbone.named_parameters():
            if p is param:
                return name
        return f"<parameter {tuple(param.shape)} not in the backbone>"


# ---------------------------------------------------------------------------------------------- inputs


def example_inputs(modality: str) -> list[Any]:
    """A few raw inputs of a modality: small random PIL images of different sizes, or strings of different lengths."""
    if modality == "image":
        return [_noise_image(w, h, seed) for seed, (w, h) in enumerate([(53, 37), (64, 64), (41, 90)])]
    if modality == "text":
        return [
            "Hello world.",
            "A slightly longer sentence, with punctuation and the number 12345.",
            "Short",
            "Transfer learning reuses features: the café's naïve résumé is über-long but tokenizes fine.",
        ]
    return []


def _edge_inputs(modality: str) -> list[Any]:
    """Unusual but valid raw inputs: tiny, grayscale and RGBA images; empty and very long strings."""
    if modality == "image":
        from PIL import Image

        return [_noise_image(8, 8, 7), _noise_image(120, 30, 8).convert("L"), Image.new("RGBA", (50, 60), (10, 200, 30, 128))]
    if modality == "text":
        return ["", " ".join(["word"] * 5000)]
    return []


def _noise_image(width: int, height: int, seed: int) -> Any:
    """A random RGB PIL image, the same for the same seed."""
    from PIL import Image

    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy(), mode="RGB")


# ---------------------------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _registered_as(name: str, plugin: BackbonePlugin) -> Iterator[None]:
    """Make the registry resolve `name` to `plugin` for the duration (TransferModel saves and loads through it)."""
    previous = registry._registered.get(name)
    if previous is not None and previous.plugin is plugin:
        yield
        return
    registry._registered[name] = registry._info_for(plugin, package=plugin.package or None)
    registry._registered[name].name = name
    try:
        yield
    finally:
        if previous is None:
            registry._registered.pop(name, None)
        else:
            registry._registered[name] = previous


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference of two tensors, as a float."""
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def _require(condition: bool, message: str) -> None:
    """Fail the running check with `message` unless `condition` holds."""
    if not condition:
        raise CheckFailed(message)


def _require_features(features: Any, backbone: Backbone, count: int, what: str) -> torch.Tensor:
    """Fail unless `features` is a finite float tensor of shape [count, feature_dim]."""
    _require(isinstance(features, torch.Tensor), f"{what}: forward returned a {type(features).__name__}, not a Tensor.")
    expected = (count, backbone.feature_dim)
    _require(
        tuple(features.shape) == expected,
        f"{what}: forward returned shape {list(features.shape)}, expected [batch={count}, feature_dim="
        f"{backbone.feature_dim}]. Return one pooled vector per example and set `feature_dim` to its width.",
    )
    _require(features.is_floating_point(), f"{what}: features have dtype {features.dtype}; return floats.")
    _require(bool(torch.isfinite(features).all()), f"{what}: features contain NaN or inf.")
    return features


def _flatten(obj: Any) -> Iterator[Any]:
    """Every leaf of nested lists, tuples and dicts."""
    if isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _flatten(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _flatten(item)
    else:
        yield obj


def _rtol(dtype: torch.dtype) -> float:
    """Relative tolerance of repeating the same computation in `dtype` (float32: 1e-6)."""
    return RTOL_BY_DTYPE.get(dtype, 1e-6)


def _beyond_tolerance(a: torch.Tensor, b: torch.Tensor, atol: float = 0.0) -> int:
    """How many values of `b` differ from `a` by more than the dtype's relative tolerance (plus `atol`)."""
    if a.shape != b.shape:
        return max(a.numel(), b.numel(), 1)
    a64, b64 = a.double(), b.double()
    return int(((a64 - b64).abs() > _rtol(a.dtype) * a64.abs() + atol).sum())


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch, random and numpy for the duration, restoring their states afterwards."""
    import numpy as np

    states = torch.random.get_rng_state(), random.getstate(), np.random.get_state()
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(states[0])
        random.setstate(states[1])
        np.random.set_state(states[2])


def _batch_difference(a: Any, b: Any) -> str | None:
    """Where two preprocessed batches differ ('key ...'), or None when they are equal."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return None if a == b else "the batches"
    if set(a) != set(b):
        return f"keys {sorted(a)} vs {sorted(b)}"
    for key in a:
        x, y = a[key], b[key]
        same = torch.equal(x, y) if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) else x == y
        if not bool(same):
            return f"key {key!r}"
    return None


def _claimed_determinism(pre: Preprocessor, what: str) -> bool:
    """The preprocessor's `deterministic` flag; fail the check when it is unset or not a bool."""
    try:
        claim = pre.deterministic
    except PluginError as err:
        raise CheckFailed(f"{what}: {err}") from err
    _require(isinstance(claim, bool), f"{what}.deterministic is {claim!r}; set it to True or False.")
    return claim


class _FirstUse(TorchFunctionMode):
    """Records, for each watched parameter, the index of the first torch op that reads it."""

    def __init__(self, params: Iterable[nn.Parameter]) -> None:
        super().__init__()
        self.watched = {id(p) for p in params}
        self.first_use: dict[int, int] = {}
        self.ops = 0

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        for leaf in _flatten((args, kwargs)):
            if isinstance(leaf, torch.Tensor) and id(leaf) in self.watched:
                self.first_use.setdefault(id(leaf), self.ops)
        self.ops += 1
        return func(*args, **kwargs)


# ---------------------------------------------------------------------------------------------- the checks


def check_output_shape(s: Subject) -> str:
    """forward(preprocessor(examples)) returns finite float features of shape [B, feature_dim]."""
    feats = _require_features(s.features(), s.backbone, len(s.examples), f"{len(s.examples)} examples")
    return f"[{feats.shape[0]}, {feats.shape[1]}] {feats.dtype}, feature_dim={s.backbone.feature_dim}"


def check_feature_dtype(s: Subject) -> str:
    """Features are float32 (without autocast; under autocast the autocast dtype is accepted by hubtl)."""
    feats = s.features()
    _require(isinstance(feats, torch.Tensor), f"forward returned a {type(feats).__name__}, not a Tensor.")
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in s.backbone.parameters()})
    _require(
        feats.dtype == torch.float32,
        f"features are {str(feats.dtype).replace('torch.', '')}, not float32 (parameters: {', '.join(dtypes) or 'none'}). "
        "Keep the backbone's weights float32 (no .double() or .half() in create or from_spec) and return float32 "
        "features; under mixed precision the autocast dtype is fine, hubtl casts features itself.",
    )
    return f"float32 features, parameters {', '.join(dtypes) or 'none'}"


def check_deterministic_eval(s: Subject) -> str:
    """Two forward passes in eval mode on the same batch give the same features (1e-6 relative for float32)."""
    batch = s.backbone.preprocessor(train=False)(list(s.examples))
    with torch.no_grad():
        first, second = s.backbone(batch), s.backbone(batch)
    diff, rtol = _max_diff(first, second), _rtol(first.dtype)
    beyond = _beyond_tolerance(first, second)
    _require(
        beyond == 0,
        f"two eval-mode forward passes on the same batch differ: {beyond} of {first.numel()} values by more than "
        f"{rtol:g} relative (the {str(first.dtype).replace('torch.', '')} tolerance), up to {diff:.3g}: something random "
        "runs in eval mode (noise, dropout outside nn.Dropout, sampling); make eval-mode forward deterministic.",
    )
    return f"max difference {diff:.1g} (tolerance {rtol:g} relative)"


def check_batch_independence(s: Subject) -> str:
    """Features of each example alone equal its features inside the batch (padding masked, BatchNorm in eval)."""
    together = s.features()
    worst, worst_i = 0.0, 0
    for i, example in enumerate(s.examples):
        alone = s.features([example])
        _require(
            tuple(alone.shape) == (1, s.backbone.feature_dim),
            f"example {i} alone gave shape {list(alone.shape)}, expected [1, feature_dim={s.backbone.feature_dim}].",
        )
        if not torch.allclose(alone[0], together[i], atol=BATCH_ATOL, rtol=BATCH_RTOL):
            raise CheckFailed(
                f"features of example {i} alone differ from its features in a batch of {len(s.examples)} by up to "
                f"{_max_diff(alone[0], together[i]):.3g} (atol {BATCH_ATOL}, rtol {BATCH_RTOL}): the output depends on the "
                "other examples. Mask padding tokens (attention_mask) in attention and pooling, keep BatchNorm in eval "
                "statistics, and avoid batch-level normalisation."
            )
        diff = _max_diff(alone[0], together[i])
        if diff > worst:
            worst, worst_i = diff, i
    return f"max difference {worst:.1g} (example {worst_i})"


def check_trainable(s: Subject) -> str:
    """Every parameter is trainable right after create(): the fine-tuning strategy decides what is frozen."""
    params = list(s.backbone.named_parameters())
    frozen = [n for n, p in params if not p.requires_grad]
    _require(
        not frozen,
        f"{len(frozen)} of {len(params)} parameters are frozen (requires_grad=False) right after create(), e.g. "
        f"{', '.join(frozen[:5])}. Leave every parameter trainable: the strategy (linear_probe, gradual, lora, full) "
        "freezes what it must, and a parameter frozen in create() would never train under `full`.",
    )
    return f"all {len(params)} parameters trainable"


def check_gradients(s: Subject) -> str:
    """In train mode, features.sum().backward() gives a gradient to every trainable parameter."""
    trainable = [(n, p) for n, p in s.backbone.named_parameters() if p.requires_grad]
    _require(bool(trainable), "the backbone has no trainable parameters after create(); leave them trainable.")
    s.backbone.train()  # two examples: BatchNorm needs more than one in train mode, more only cost time
    feats = s.backbone(s.backbone.preprocessor(train=False)(list(s.examples[:2])))
    _require(feats.requires_grad, "features do not require grad: forward detaches them (torch.no_grad, .detach()).")
    feats.float().sum().backward()
    missing = [n for n, p in trainable if p.grad is None]
    _require(
        not missing,
        f"{len(missing)} of {len(trainable)} trainable parameters get no gradient from the features, e.g. "
        f"{', '.join(missing[:5])}. Remove unused parameters (e.g. an unused pooler or classifier) or freeze them.",
    )
    bad = [n for n, p in trainable if not bool(torch.isfinite(p.grad).all())]
    _require(not bad, f"non-finite gradients in {', '.join(bad[:5])}.")
    return f"all {len(trainable)} trainable parameters get gradients"


def check_layer_groups(s: Subject) -> str:
    """layer_groups() holds every parameter exactly once, in non-empty groups ordered from input to output."""
    groups = s.backbone.layer_groups()
    _require(
        isinstance(groups, (list, tuple)) and all(isinstance(g, (list, tuple)) for g in groups),
        f"layer_groups() returned {type(groups).__name__}; return a list of lists of parameters.",
    )
    _require(len(groups) > 0, "layer_groups() returned no groups; return at least one group with every parameter.")
    owned = {id(p): n for n, p in s.backbone.named_parameters()}
    seen: dict[int, int] = {}
    problems: list[str] = []
    for g, group in enumerate(groups):
        if len(group) == 0:
            problems.append(f"group {g} is empty (drop empty groups: gradual unfreezing counts them)")
        for p in group:
            if not isinstance(p, torch.Tensor):
                problems.append(f"group {g} holds a {type(p).__name__}, not a parameter")
            elif id(p) not in owned:
                problems.append(f"group {g} holds a parameter of shape {list(p.shape)} that is not in backbone.parameters()")
            elif id(p) in seen:
                problems.append(f"{owned[id(p)]} is in group {seen[id(p)]} and again in group {g}")
            else:
                seen[id(p)] = g
    left_out = [n for i, n in owned.items() if i not in seen]
    if left_out:
        problems.append(
            f"{len(left_out)} of {len(owned)} parameters are in no group, e.g. {', '.join(left_out[:5])}"
        )
    _require(not problems, "layer_groups() must hold every parameter exactly once: " + "; ".join(problems[:8]) + ".")

    # Order: each group must start being used no earlier than the group before it (first use in forward).
    batch = s.backbone.preprocessor(train=False)(list(s.examples[:1]))
    params = [p for g in groups for p in g]
    with torch.no_grad(), _FirstUse(params) as recorder:
        s.backbone(batch)
    starts: list[tuple[int, int, str]] = []  # (group index, first op, parameter used first)
    for g, group in enumerate(groups):
        used = [(recorder.first_use[id(p)], owned[id(p)]) for p in group if id(p) in recorder.first_use]
        if used:
            first_op, first_name = min(used)
            starts.append((g, first_op, first_name))
    for (g0, op0, n0), (g1, op1, n1) in zip(starts, starts[1:]):
        _require(
            op1 >= op0,
            f"layer_groups() is not ordered from input to output: group {g1} ({n1}) is first used at op #{op1} of "
            f"forward, before group {g0} ({n0}, op #{op0}). Put the groups closest to the input first.",
        )
    return f"{len(groups)} groups, {len(owned)} parameters, ordered input to output"


def check_freeze_unfreeze(s: Subject) -> str:
    """requires_grad=False on every parameter leaves no gradient; True again gives gradients to all."""
    params = list(s.backbone.parameters())
    batch = s.backbone.preprocessor(train=False)(list(s.examples[:2]))
    for p in params:
        p.requires_grad_(False)
    feats = s.backbone(batch)
    if feats.requires_grad:  # something trainable is not a registered parameter
        feats.float().sum().backward()
    got = [s.name_of(p) for p in params if p.grad is not None]
    _require(
        not feats.requires_grad and not got,
        "with every parameter frozen (requires_grad=False) the features still require grad"
        + (f" and {', '.join(got[:5])} got gradients" if got else "")
        + ": a tensor the optimizer would update is not a registered nn.Parameter, or forward re-enables grads.",
    )
    for p in params:
        p.requires_grad_(True)
    s.backbone.zero_grad(set_to_none=True)
    s.backbone(batch).float().sum().backward()
    missing = [s.name_of(p) for p in params if p.grad is None]
    _require(
        not missing,
        f"after unfreezing (requires_grad=True) {len(missing)} parameters get no gradient, e.g. {', '.join(missing[:5])}.",
    )
    return f"{len(params)} parameters freeze and unfreeze"


def check_preprocessor(s: Subject) -> str:
    """preprocessor(train=False) is deterministic and says so, picklable, with a JSON config; train=True works too."""
    pre = s.backbone.preprocessor(train=False)
    _require(isinstance(pre, Preprocessor), f"preprocessor() returned a {type(pre).__name__}, not a hubtl.Preprocessor.")
    _require(
        _claimed_determinism(pre, "preprocessor(train=False)") is True,
        "preprocessor(train=False).deterministic is False; eval preprocessing must be deterministic (and say so).",
    )
    with _seeded(SEEDS[0]):
        first = pre(list(s.examples))
    with _seeded(SEEDS[1]):
        second = pre(list(s.examples))
    _require(isinstance(first, dict), f"the preprocessor returned a {type(first).__name__}; return a dict of tensors.")
    _require(set(first) == set(second), f"two eval preprocessings gave different keys: {sorted(first)} vs {sorted(second)}.")
    for key in first:
        a, b = first[key], second[key]
        same = torch.equal(a, b) if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) else a == b
        _require(
            bool(same),
            f"two eval preprocessings of the same inputs (under different seeds) differ in {key!r}: remove randomness "
            "from train=False.",
        )
    try:
        pickle.loads(pickle.dumps(pre))
    except Exception as err:
        raise CheckFailed(
            f"preprocessor(train=False) cannot be pickled ({type(err).__name__}: {err}); DataLoader workers need to "
            "pickle it: build unpicklable parts lazily and drop them in __getstate__."
        ) from err
    try:
        json.dumps(pre.config())
    except TypeError as err:
        raise CheckFailed(f"preprocessor.config() is not JSON-serialisable ({err}); it goes into config.json.") from err
    train_batch = s.backbone.preprocessor(train=True)(list(s.examples))
    _require(
        set(train_batch) == set(first),
        f"preprocessor(train=True) gives keys {sorted(train_batch)}, train=False gives {sorted(first)}; give the same keys.",
    )
    with torch.no_grad():
        _require_features(s.backbone(train_batch), s.backbone, len(s.examples), "train-mode preprocessing")
    return f"keys {sorted(first)}; deterministic, picklable, JSON config"


def check_train_preprocessor(s: Subject) -> str:
    """preprocessor(train=True).deterministic is true exactly when calls under different seeds give equal batches."""
    pre = s.backbone.preprocessor(train=True)
    _require(isinstance(pre, Preprocessor), f"preprocessor(train=True) returned a {type(pre).__name__}, not a hubtl.Preprocessor.")
    claim = _claimed_determinism(pre, "preprocessor(train=True)")
    batches = []
    for seed in SEEDS:
        with _seeded(seed):
            batches.append(pre(list(s.examples)))
    varying = next((d for d in (_batch_difference(batches[0], b) for b in batches[1:]) if d), None)
    if claim:
        _require(
            varying is None,
            f"preprocessor(train=True) says deterministic = True, but calls on the same inputs under different "
            f"torch/random/numpy seeds give different batches ({varying} differs): it augments at random. Set "
            "deterministic = False; otherwise a frozen-backbone run with augment: true caches the features of one "
            "random augmentation and trains on them every epoch.",
        )
        return f"deterministic = True, and {len(SEEDS)} calls under different seeds gave equal batches"
    _require(
        varying is not None,
        f"preprocessor(train=True) says deterministic = False, but {len(SEEDS)} calls under different torch/random/numpy "
        "seeds gave equal batches. Set deterministic = True (frozen-backbone training can then cache features), or make "
        "the augmentation draw from torch, random or numpy.",
    )
    return f"deterministic = False, and calls under different seeds differ ({varying})"


def check_edge_inputs(s: Subject) -> str:
    """Unusual valid inputs (tiny, grayscale, RGBA images; empty and very long texts) give finite features."""
    edge = _edge_inputs(s.backbone.modality)
    if not edge:
        raise CheckSkipped(f"no edge-case inputs known for modality {s.backbone.modality!r}")
    _require_features(s.features(edge), s.backbone, len(edge), "edge-case inputs (" + _describe(edge) + ")")
    return _describe(edge)


def _describe(examples: list[Any]) -> str:
    """Short description of raw inputs for messages."""
    out = []
    for x in examples:
        if isinstance(x, str):
            out.append(f"text of {len(x)} chars")
        else:
            out.append(f"{getattr(x, 'mode', '?')} image {getattr(x, 'size', '?')}")
    return ", ".join(out)


def check_image_paths(s: Subject) -> str:
    """An image file path preprocesses exactly like the PIL image read from it."""
    if s.backbone.modality != "image":
        raise CheckSkipped(f"only for image backbones (this one is {s.backbone.modality!r})")
    path = s.workdir / "example.png"
    s.examples[0].save(path)
    pre = s.backbone.preprocessor(train=False)
    from_path, from_image = pre([str(path)]), pre([s.examples[0]])
    for key in from_image:
        _require(
            torch.equal(from_path[key], from_image[key]),
            f"preprocessing the path {path.name} gives a different {key!r} than the PIL image; accept paths as raw inputs.",
        )
    return "paths and PIL images give the same batch"


def _json_problem(value: Any, where: str) -> str | None:
    """The first value inside `value` that does not survive JSON unchanged, as 'where: why', or None."""
    if value is None or isinstance(value, (bool, str)):
        return None
    if isinstance(value, int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is {value!r}, which JSON cannot hold; use a finite number or null"
    if isinstance(value, tuple):
        return f"{where} is a tuple {value!r:.60}; config.json turns it into a list, so the loaded spec differs: use a list"
    if isinstance(value, list):
        return next((p for i, v in enumerate(value) if (p := _json_problem(v, f"{where}[{i}]"))), None)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} has the key {key!r} ({type(key).__name__}); JSON keys are strings: use {str(key)!r}"
            if problem := _json_problem(item, f"{where}[{key!r}]"):
                return problem
        return None
    return f"{where} is a {type(value).__module__}.{type(value).__qualname__} ({value!r:.60}), not a JSON value"


def check_spec_json(s: Subject) -> str:
    """spec() survives config.json unchanged: only dicts with string keys, lists, strings, finite numbers, bools, None."""
    spec = s.backbone.spec()
    _require(isinstance(spec, dict), f"spec() returned a {type(spec).__name__}, not a dict.")
    problem = _json_problem(spec, "spec()")
    _require(problem is None, f"{problem}. hubtl saves spec() in config.json and rebuilds from what it reads back.")
    again = json.loads(json.dumps(spec, allow_nan=False))
    _require(again == spec, f"spec() changes through JSON: {json.dumps(again)[:200]} vs {spec!r:.200}.")
    return f"round-trips through JSON unchanged ({len(json.dumps(spec))} characters)"


#: Secrets by their well-known shapes: Hugging Face, GitHub, GitLab, OpenAI-style, Slack, AWS, JWTs, private keys.
_TOKEN_PATTERNS = re.compile(
    r"\b(hf_[A-Za-z0-9]{20,}|api_org_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|glpat-[A-Za-z0-9_-]{20,}|sk-[A-Za-z0-9_-]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}"
    r"|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})|-----BEGIN [A-Z ]*PRIVATE KEY-----"
)
#: Words in a spec key that say its value is a secret ('hub_token', 'apiKey', 'api-key', 'password', ...).
_SECRET_WORDS = {"token", "secret", "password", "passwd", "apikey", "credential", "credentials", "auth"}


def _secret_key(key: str) -> bool:
    """True for a key whose words name a secret (a token, a password, an API key)."""
    words = re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower())
    return bool(_SECRET_WORDS & set(words)) or ("api" in words and "key" in words)


def _looks_secret(text: str) -> str | None:
    """Why `text` looks like a token or secret (a known token shape, or a long high-entropy run), or None."""
    if _TOKEN_PATTERNS.search(text):
        return "an access token or key"
    for run in re.findall(r"[A-Za-z0-9+=]{32,}", text):  # without separators: long names split into words
        mixed = all(re.search(c, run) for c in ("[a-z]", "[A-Z]", "[0-9]"))
        counts = [run.count(c) for c in set(run)]
        entropy = -sum(n / len(run) * math.log2(n / len(run)) for n in counts)
        if mixed and entropy >= 4.0:
            return f"a secret (a {len(run)}-character high-entropy string)"
    return None


def _looks_local(text: str) -> str | None:
    """Why `text` looks like a path on this machine (absolute, home-relative, a file URL), or None."""
    if text.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", text):
        return "an absolute path"
    if text.startswith("~"):
        return "a home-relative path (~)"
    if text.lower().startswith("file:"):
        return "a file URL"
    return None


def _strings(value: Any, where: str) -> Iterator[tuple[str, str | None, str]]:
    """(where, key, string) for every string inside nested dicts and lists, keys included."""
    if isinstance(value, str):
        yield where, None, value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                yield f"{where} key", None, key
                if isinstance(item, str):
                    yield f"{where}[{key!r}]", key, item
                    continue
            yield from _strings(item, f"{where}[{key!r}]")


def check_spec_public(s: Subject) -> str:
    """spec() is published in config.json (and on the Hub): it holds no local path and nothing like a token."""
    spec = s.backbone.spec()
    _require(isinstance(spec, dict), f"spec() returned a {type(spec).__name__}, not a dict.")
    notes = []
    for where, key, text in _strings(spec, "spec()"):
        if where == "spec()['name']" and text == s.model_name and os.path.exists(text):
            notes.append("note: spec()['name'] is the local path create() was given; it is published as is")
            continue
        secret_key = key is not None and _secret_key(key) and bool(text.strip())
        why = _looks_local(text) or _looks_secret(text) or ("a secret (its key says so)" if secret_key else None)
        shown = f"{text[:6]}..." if why and ("secret" in why or "token" in why) else f"{text[:80]!r}"
        _require(
            why is None,
            f"{where} holds {shown}, which looks like {why}. hubtl publishes spec() in config.json and on the Hub: keep "
            "local paths and secrets out of it. Take weights files and tokens as create() arguments that spec() does "
            "not record (weights travel in model.safetensors; tokens come from the environment, e.g. HF_TOKEN).",
        )
    return "; ".join(["no local path, nothing like a token", *notes])


def check_spec(s: Subject) -> str:
    """spec() is JSON; save_files + from_spec rebuild the same architecture offline."""
    spec = s.backbone.spec()
    _require(isinstance(spec, dict), f"spec() returned a {type(spec).__name__}, not a dict.")
    for key in ("plugin", "name"):
        _require(key in spec, f"spec() lacks {key!r}; return {{'plugin': ..., 'name': ..., 'kwargs': {{...}}}}.")
    _require(
        spec["plugin"] == s.plugin_name,
        f"spec()['plugin'] is {spec['plugin']!r} but the plugin is registered as {s.plugin_name!r}; "
        "the registry finds the plugin of a saved model by this name.",
    )
    try:
        spec = json.loads(json.dumps(spec))
    except (TypeError, ValueError) as err:
        raise CheckFailed(f"spec() is not JSON-serialisable ({err}); keep only JSON values (no tuples of objects, paths, tensors).") from err
    version = getattr(s.plugin, "spec_version", None)
    _require(isinstance(version, int) and version >= 1, f"the plugin's spec_version is {version!r}; set an int >= 1.")
    files_dir = s.workdir / "spec" / "backbone"
    files_dir.parent.mkdir(parents=True, exist_ok=True)
    with offline():
        s.backbone.save_files(files_dir)
        try:
            rebuilt = s.plugin.from_spec(spec, files_dir)
        except Exception as err:
            raise CheckFailed(
                f"from_spec(spec, files_dir) failed with HF_HUB_OFFLINE=1 ({type(err).__name__}: {err}); it must rebuild "
                "from the spec and the files save_files() wrote, without downloading."
            ) from err
    _require(isinstance(rebuilt, Backbone), f"from_spec returned a {type(rebuilt).__name__}, not a hubtl.Backbone.")
    ours = {k: (tuple(v.shape), v.dtype) for k, v in s.backbone.state_dict().items()}
    theirs = {k: (tuple(v.shape), v.dtype) for k, v in rebuilt.state_dict().items()}
    missing, extra = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    _require(
        not missing and not extra,
        f"from_spec built a different architecture: {len(missing)} weights missing (e.g. {missing[:3]}), "
        f"{len(extra)} unexpected (e.g. {extra[:3]}).",
    )
    changed = [k for k in ours if ours[k] != theirs[k]]
    _require(not changed, f"from_spec built weights of other shapes or dtypes: {[(k, ours[k], theirs[k]) for k in changed[:3]]}.")
    _require(
        rebuilt.feature_dim == s.backbone.feature_dim and rebuilt.modality == s.backbone.modality,
        f"from_spec gave feature_dim={rebuilt.feature_dim}, modality={rebuilt.modality!r}; the original has "
        f"{s.backbone.feature_dim}, {s.backbone.modality!r}.",
    )
    _require(
        rebuilt.preprocessor(train=False).config() == s.backbone.preprocessor(train=False).config(),
        "from_spec rebuilt a backbone whose preprocessing differs: record size, mean, std (or tokenizer files) in the spec "
        f"or save_files. Original {s.backbone.preprocessor(train=False).config()}, rebuilt "
        f"{rebuilt.preprocessor(train=False).config()}.",
    )
    again = json.loads(json.dumps(rebuilt.spec()))
    _require(again == spec, f"the rebuilt backbone's spec() differs from the original: {again} vs {spec}.")
    return f"{len(ours)} weights rebuilt offline from {json.dumps(spec)[:120]}"


def check_save_load(s: Subject) -> str:
    """TransferModel save_pretrained -> from_pretrained (offline) gives identical features and logits."""
    from .model import TransferModel

    model = TransferModel.from_backbone(s.backbone, labels=["first", "second"])
    model.eval()
    target = s.workdir / "saved-model"
    with _registered_as(s.plugin_name, s.plugin), offline():
        model.save_pretrained(target)
        config = json.loads((target / "config.json").read_text())
        loaded = TransferModel.from_pretrained(target)
    spec = config["backbone"]
    _require(spec.get("plugin") == s.plugin_name, f"config.json names backbone plugin {spec.get('plugin')!r}.")
    before, after = model.embed(s.examples), loaded.embed(s.examples)
    diff, scale = _max_diff(before, after), float(before.abs().max()) if before.numel() else 0.0
    _require(
        _beyond_tolerance(before, after, atol=_rtol(before.dtype) * scale) == 0,
        f"features after save_pretrained/from_pretrained differ by up to {diff:.3g} (tolerance {_rtol(before.dtype):g} "
        "relative): some state is not a parameter or buffer (register it), or from_spec builds a different preprocessing.",
    )
    logits, loaded_logits = model.logits(s.examples), loaded.logits(s.examples)
    logit_diff, scale = _max_diff(logits, loaded_logits), float(logits.abs().max()) if logits.numel() else 0.0
    _require(
        _beyond_tolerance(logits, loaded_logits, atol=_rtol(logits.dtype) * scale) == 0,
        f"logits after save/load differ by up to {logit_diff:.3g}.",
    )
    return f"identical features (max difference {diff:.1g}); package={spec.get('package')!r}, spec_version={spec.get('spec_version')}"


def check_load_safety(s: Subject) -> str:
    """Rebuilding from a saved spec reads only the model directory and library files, starts no process, runs no code from it."""
    from .audit import watch
    from .errors import ModelLoadError
    from .layout import BACKBONE_DIR, check_backbone_files

    spec = json.loads(json.dumps(s.backbone.spec()))
    try:
        registry.check_spec_kwargs(s.plugin, spec.get("kwargs") or {})
    except ModelLoadError as err:
        raise CheckFailed(f"loading would refuse this spec: {err} Set `spec_kwargs` on the plugin to the kwargs it saves.") from err
    model_dir = s.workdir / "load-safety"
    files_dir = model_dir / BACKBONE_DIR
    model_dir.mkdir(parents=True, exist_ok=True)
    with offline():
        s.backbone.save_files(files_dir)
    try:
        check_backbone_files(files_dir, root=model_dir)
    except ModelLoadError as err:
        raise CheckFailed(f"save_files wrote a file loading refuses: {err}") from err
    with offline(), watch(model_dir) as seen:
        s.plugin.from_spec(spec, files_dir)
    _require(
        not seen.violations,
        f"from_spec did what loading a stranger's model must never do: {'; '.join(dict.fromkeys(seen.violations))}. "
        "Read only files inside files_dir (never a path taken from the spec), start no process, import or run no code "
        "from the model directory.",
    )
    return "from_spec read only the model directory and library files; no process, no code from the directory"


def check_onnx_export(s: Subject) -> str:
    """When the backbone declares 'onnx' in export_formats: hubtl.export writes an ONNX model whose onnxruntime logits match."""
    if "onnx" not in getattr(s.backbone, "export_formats", ()):
        raise CheckSkipped("the backbone does not declare 'onnx' in export_formats")
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise CheckSkipped(f"ONNX export needs onnxruntime and onnxscript (pip install 'hubtl[onnx]'): {err}") from err
    from .errors import ExportError
    from .export import export_model
    from .model import TransferModel

    model = TransferModel.from_backbone(s.backbone, labels=["first", "second"])
    try:
        result = export_model(model, "onnx", s.workdir / "onnx-export")
    except ExportError as err:
        raise CheckFailed(f"the backbone declares 'onnx' in export_formats, but the ONNX export fails: {err}") from err
    return (
        f"onnxruntime gives PyTorch's logits (max |difference| {result.max_abs_diff:.1g}) on {result.checked_inputs} "
        "inputs of another batch size than the export's"
    )


def check_list_models(s: Subject) -> str:
    """list_models() returns strings, lists the model and filters by fnmatch pattern; checked by calling it only."""
    names = s.plugin.list_models()
    _require(
        isinstance(names, list) and all(isinstance(n, str) for n in names),
        f"list_models() returned {type(names).__name__} {str(names)[:80]}; return a list of model-name strings.",
    )
    nothing = f"{UNKNOWN_MODEL}*"
    stray = s.plugin.list_models(nothing)
    _require(
        isinstance(stray, list) and not stray,
        f"list_models({nothing!r}) returned {len(stray) if isinstance(stray, list) else stray!r} name(s) "
        f"(e.g. {list(stray)[:3] if isinstance(stray, list) else stray!r}) that do not match the pattern: it ignores "
        "`pattern`. Return only the names for which fnmatch.fnmatch(name, pattern) holds.",
    )
    is_path = os.path.exists(s.model_name)
    if not names:
        if is_path:
            raise CheckSkipped(
                f"list_models() is empty and the model is a path ({s.model_name}): a directory-based plugin cannot list "
                "every directory; create() from the path worked"
            )
        raise CheckFailed(f"list_models() is empty, yet create({s.model_name!r}) works: list the models the plugin can create.")
    if not is_path:
        _require(
            s.model_name in names,
            f"create({s.model_name!r}) works but list_models() does not list it; list every name the plugin creates.",
        )
    target = s.model_name if s.model_name in names else names[0]
    for pattern in (glob.escape(target), glob.escape(target[: max(1, len(target) // 2)]) + "*"):
        got = s.plugin.list_models(pattern)
        _require(
            isinstance(got, list) and target in got,
            f"list_models({pattern!r}) does not return {target!r}: filter names with fnmatch-style patterns.",
        )
        wrong = [n for n in got if not fnmatch.fnmatch(n, pattern)]
        _require(
            not wrong,
            f"list_models({pattern!r}) returned names that do not match it (e.g. {wrong[:3]}): filter with "
            "fnmatch.fnmatch(name, pattern).",
        )
    if is_path:
        return f"{len(names)} name(s) (the model is a path, which a directory-based plugin need not list); patterns filter"
    return f"{len(names)} name(s), {target!r} among them; patterns filter"


def check_unknown_model(s: Subject) -> str:
    """create() of a name that does not exist raises a HubtlError that says what to do."""
    try:
        with offline():
            s.plugin.create(UNKNOWN_MODEL, pretrained=False)
    except HubtlError as err:
        _require(bool(str(err).strip()), "the error for an unknown model has an empty message.")
        return f"{type(err).__name__}: {str(err)[:100]}"
    except Exception as err:
        raise CheckFailed(
            f"create({UNKNOWN_MODEL!r}) raised {type(err).__name__}: {str(err)[:200]}; raise a hubtl.BackboneNotFoundError "
            "(a HubtlError) whose message says which names exist or how to list them."
        ) from err
    raise CheckFailed(f"create({UNKNOWN_MODEL!r}) succeeded; unknown names must raise hubtl.BackboneNotFoundError.")


#: The checks, in the order they run; `check_backbone(..., checks=[...])` runs a subset.
CHECKS: dict[str, Callable[[Subject], str]] = {
    "output_shape": check_output_shape,
    "feature_dtype": check_feature_dtype,
    "deterministic_eval": check_deterministic_eval,
    "batch_independence": check_batch_independence,
    "trainable": check_trainable,
    "gradients": check_gradients,
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

