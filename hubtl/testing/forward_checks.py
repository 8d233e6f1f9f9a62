"""Conformance checks of the running backbone: shapes, dtypes, determinism, gradients, layer groups, preprocessing."""

from __future__ import annotations

import json
import pickle
from typing import Any

import torch

from ..backbones.base import Preprocessor
from .report import CheckFailed, CheckSkipped
from .subject import (
    BATCH_ATOL,
    BATCH_RTOL,
    SEEDS,
    Subject,
    _batch_difference,
    _beyond_tolerance,
    _claimed_determinism,
    _edge_inputs,
    _FirstUse,
    _max_diff,
    _require,
    _require_features,
    _rtol,
    _seeded,
)

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


def check_feature_map(s: Subject) -> str:
    """With `has_feature_map`: forward_feature_map gives a finite [B, C, h, w] map that tiles the input, with gradients."""
    backbone = s.backbone
    if not getattr(backbone, "has_feature_map", False):
        raise CheckSkipped("has_feature_map is false: no feature map declared (hubtl pretrain's masked_autoencoder needs one)")
    batch = backbone.preprocessor(train=False)(list(s.examples[:2]))
    backbone.eval()
    with torch.no_grad():
        fmap = backbone.forward_feature_map(batch)
    _require(isinstance(fmap, torch.Tensor), f"forward_feature_map returned a {type(fmap).__name__}, not a Tensor.")
    _require(
        fmap.ndim == 4 and fmap.shape[0] == len(s.examples[:2]) and min(fmap.shape[1:]) >= 1,
        f"forward_feature_map gave shape {tuple(fmap.shape)} for {len(s.examples[:2])} examples; return "
        "[batch, channels, height, width] (a vision transformer's tokens laid out on their grid).",
    )
    _require(bool(torch.isfinite(fmap).all()), "forward_feature_map gave non-finite values.")
    pixels = batch.get("pixel_values")
    stride = None
    if isinstance(pixels, torch.Tensor) and pixels.ndim == 4:
        height, width = pixels.shape[2:]
        stride = height // fmap.shape[2]
        _require(
            stride >= 1 and fmap.shape[2] * stride == height and fmap.shape[3] * stride == width,
            f"the {fmap.shape[2]}x{fmap.shape[3]} feature map does not tile the {height}x{width} input with one "
            "stride; a decoder cannot map it back to pixels.",
        )
    backbone.train()
    trained = backbone.forward_feature_map(batch)
    _require(trained.requires_grad, "forward_feature_map detaches its output in train mode (torch.no_grad, .detach()).")
    trained.float().sum().backward()
    reached = sum(1 for p in backbone.parameters() if p.requires_grad and p.grad is not None)
    backbone.zero_grad(set_to_none=True)
    backbone.eval()
    _require(reached > 0, "no parameter gets a gradient from forward_feature_map.")
    return f"[{', '.join(map(str, fmap.shape))}] map" + (f", stride {stride}" if stride else "") + f", gradients reach {reached} parameters"


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
