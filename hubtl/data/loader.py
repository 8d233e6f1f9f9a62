"""DataLoader settings that keep the device busy by default: workers per CPU, pinned memory, prefetching.

Every DataLoader of a run (training, evaluation, the feature-cache pass, ranking) takes its worker count and
options from here, so a GPU is fed with hubtl's defaults and a 2-core CPU machine is not oversubscribed.
"""

from __future__ import annotations

import os
from typing import Any

MAX_WORKERS = 8


def cpus_per_process() -> int:
    """CPU cores this process may use, shared with the other processes of this machine (torchrun's LOCAL_WORLD_SIZE)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cores // max(1, local))


def default_num_workers(modality: str, configured: int | None = None) -> int:
    """Workers that decode: the config's number, else for images one per spare core (2 to 8), none for text.

    Text is tokenized in the main process (cheap, and a worker's start-up would cost more than it saves).
    """
    if configured is not None:
        return configured
    if modality != "image":
        return 0
    return max(2, min(MAX_WORKERS, cpus_per_process() - 1))


def loader_options(num_workers: int, device: Any, persistent: bool = True) -> dict[str, Any]:
    """DataLoader keyword arguments: pinned memory on CUDA, workers kept across epochs, two batches in flight per worker."""
    cuda = getattr(device, "type", str(device)) == "cuda"
    options: dict[str, Any] = {"num_workers": num_workers, "pin_memory": cuda}
    if num_workers > 0:
        options.update(persistent_workers=persistent, prefetch_factor=4 if cuda else 2)
    return options
