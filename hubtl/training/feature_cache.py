"""The feature cache: with a frozen backbone and deterministic transforms, backbone features are computed once.

The head then trains on the cached features, so a linear probe's epochs cost almost nothing. The
loop is the same with and without the cache: batches are dicts, `FeatureHead` reads `features`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ..data import make_collate


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


def cache_decision(freezes_backbone: bool, enabled: bool, deterministic: bool) -> tuple[bool, str]:
    """Whether to cache features, and the log line that says why (or why not)."""
    if not freezes_backbone:
        return False, ""
    if not enabled:
        return False, "Feature cache off (feature_cache: false): the frozen backbone runs every epoch."
    if not deterministic:
        return False, "Feature cache off: training transforms are random (set augment: false to cache features)."
    return True, "Feature cache on: backbone features are computed once and the head trains on them."


@torch.inference_mode()
def compute_features(
    accelerator: Any, backbone: nn.Module, dataset: Any, preprocess: Any, task: str, batch_size: int, num_workers: int,
    seed: int, progress: str | None = None,
) -> TensorDataset:  # fmt: skip
    """Run the frozen backbone once over a dataset (sharded over processes, gathered on all).

    `progress` names a tqdm bar shown by the main process (none when None)."""
    from tqdm.auto import tqdm

    loader = DataLoader(
        dataset, batch_size, shuffle=False, collate_fn=make_collate(preprocess, task), num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),  # the cache never draws from the training RNG
    )
    loader = accelerator.prepare_data_loader(loader)
    backbone.eval()
    features, targets = [], []
    bar = tqdm(loader, desc=progress, unit="batch", disable=progress is None or not accelerator.is_main_process)
    with accelerator.autocast():
        for batch, target in bar:
            gathered = accelerator.gather_for_metrics((backbone(batch).float(), target))
            features.append(gathered[0].cpu())
            targets.append(gathered[1].cpu())
    return TensorDataset(torch.cat(features), torch.cat(targets))
