"""What a conformance check looks at (`Subject`: plugin, backbone, raw inputs) and the helpers checks share."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..backbones import registry
from ..backbones.base import Backbone, BackbonePlugin, Preprocessor
from ..errors import PluginError
from .report import CheckFailed

#: Tolerances of the numerical comparisons (features are float32 on CPU).
BATCH_ATOL, BATCH_RTOL = 1e-5, 1e-4
EXACT_ATOL = 1e-6
#: Relative tolerance of "the same computation again" (eval determinism, save/load), by the features' dtype.
RTOL_BY_DTYPE = {torch.float64: 1e-12, torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 1e-2}
#: torch/random/numpy seeds the preprocessor checks run under (fixed, so a verdict never changes between runs).
SEEDS = (11, 22, 33, 44, 55, 66)

#: A model name no plugin should be able to create.
UNKNOWN_MODEL = "hubtl-conformance-no-such-model"


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
