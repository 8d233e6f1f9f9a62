"""The feature cache in training: with a frozen backbone and deterministic transforms, the head trains on features.

The features come from the persistent feature store (`hubtl.features`): computed by the first run and
reused by every later run on the same backbone, weights, preprocessing and data. The loop is the same
with and without the cache: batches are dicts, `FeatureHead` reads `features`.
"""

from __future__ import annotations


import torch
from torch import nn


class FeatureHead(nn.Module):
    """The head applied to cached backbone features."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(batch["features"])


def feature_collate(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Collate (features, target) pairs into the (batch dict, targets) shape of the loop."""
    features, targets = zip(*items)
    return {"features": torch.stack(features)}, torch.stack(targets)


def cache_decision(freezes_backbone: bool, enabled: bool, deterministic: bool, streamed: bool = False) -> tuple[bool, str]:
    """Whether to cache features, and the log line that says why (or why not)."""
    if not freezes_backbone:
        return False, ""
    if streamed:
        return False, (
            "Feature cache off: the training data is streamed (the cache needs a finite, fingerprinted split); "
            "the frozen backbone runs on every batch."
        )
    if not enabled:
        return False, "Feature cache off (feature_cache: false): the frozen backbone runs every epoch."
    if not deterministic:
        return False, "Feature cache off: training transforms are random (set augment: false to cache features)."
    return True, "Feature cache on: the head trains on the frozen backbone's features, computed once and kept in the feature store."
