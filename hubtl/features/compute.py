"""Frozen-backbone features of a dataset: looked up in the feature store, or computed (sharded over processes) and stored.

The key of a set of features is a digest of everything they depend on: the backbone's spec (name,
kwargs such as pooling) and a digest of its weights, the preprocessing, the raw inputs in order, and
the autocast dtype. Any change gives a new key, so a hit is never stale. Under `accelerate launch`
each process computes a contiguous slice of the examples and writes its own shard; nobody gathers
every feature unless they need them (a ranking score on the main process does).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..backbones.base import in_given_order, inference_layout
from ..data import make_collate
from ..data.lengths import longest_first
from ..data.loader import loader_options
from ..processes import gathered_rows, on_every_process, process_slice
from .store import FORMAT_VERSION, FeatureStore, StoredFeatures

logger = logging.getLogger("hubtl")


class FeatureDataset(Dataset):
    """(features, target) pairs: rows of stored (memory-mapped) or in-memory features beside the data's targets."""

    def __init__(self, features: StoredFeatures | torch.Tensor, targets: torch.Tensor) -> None:
        if len(features) != len(targets):
            raise ValueError(f"{len(features)} feature rows for {len(targets)} targets")
        self.features = features
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if isinstance(self.features, torch.Tensor):
            rows = self.features[list(indices)]
        else:
            rows = self.features.rows(indices)
        return list(zip(rows, self.targets[list(indices)]))

    def matrix(self) -> torch.Tensor:
        """Every feature row in one tensor (in memory)."""
        if isinstance(self.features, torch.Tensor):
            return self.features
        return torch.from_numpy(self.features.numpy())


@dataclass
class Features:
    """The features of one split, and where they came from: 'cache' (stored earlier), 'computed' (and stored), 'memory'."""

    dataset: FeatureDataset
    source: str
    key: str | None = None


def weights_fingerprint(module: nn.Module) -> str:
    """A digest of every parameter and buffer (names, dtypes, shapes, values).

    Kept on the module with the tensors' identities and in-place version counters, so the features of a second
    split hash the weights again only if they changed.
    """
    state = module.state_dict(keep_vars=True)  # the parameters themselves (a plain state_dict detaches new views)
    versions = tuple((name, id(t), t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for name, t in sorted(state.items()))
    kept = getattr(module, "_hubtl_weights_digest", None)
    if kept is not None and kept[0] == versions:
        return kept[1]
    found = _digest(state)
    module._hubtl_weights_digest = (versions, found)  # type: ignore[assignment]
    return found


def _digest(state: dict[str, torch.Tensor]) -> str:
    """blake2b over names, dtypes, shapes and bytes of a state dict, in name order."""
    digest = hashlib.blake2b(digest_size=20)
    for name, tensor in sorted(state.items()):
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{t.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(memoryview(t.view(torch.uint8).numpy()) if t.numel() else b"")  # no copy of the bytes
    return digest.hexdigest()


def feature_key(backbone: nn.Module, preprocess: Any, dataset: Any, precision: str = "no") -> str | None:
    """The store key of a backbone's features of a dataset, or None when the dataset cannot be fingerprinted."""
    fingerprint = getattr(dataset, "input_fingerprint", None)
    spec = getattr(backbone, "spec", None)
    if fingerprint is None or spec is None or getattr(dataset, "targets", None) is None:
        return None
    parts = {
        "format": FORMAT_VERSION,
        "spec": spec(),
        "weights": weights_fingerprint(backbone),
        "preprocess": [type(preprocess).__qualname__, preprocess.config()],
        "inputs": fingerprint(),
        "precision": precision,
    }
    return _key(parts)


def _key(parts: dict[str, Any]) -> str:
    """The store key of everything a set of stored outputs depends on."""
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=20).hexdigest()


def backbone_features(
    accelerator: Any, backbone: nn.Module, dataset: Any, preprocess: Any, *, task: str, batch_size: int,
    num_workers: int, seed: int, describe: dict[str, Any] | None = None, persist: bool = True,
    progress: str | None = None, rows: Sequence[int] | None = None,
) -> Features:  # fmt: skip
    """The backbone's features of `dataset` (with its targets): from the store, or computed and stored.

    `describe` (backbone, dataset, split) goes into the entry's meta.json for `hubtl cache list`. With
    `persist` false, or a dataset without a fingerprint, features are computed and kept in memory only.
    `rows` asks for those rows only (a sample): read from a stored entry of the whole dataset when there is
    one, else computed (and stored) for those rows alone.
    """
    store = FeatureStore()
    if rows is not None:
        whole = feature_key(backbone, preprocess, dataset, accelerator.mixed_precision) if persist else None
        stored = store.get(whole) if whole is not None else None
        picked = np.asarray(rows, dtype=np.int64)
        if stored is not None:
            return Features(FeatureDataset(stored.rows(picked), dataset.targets[torch.from_numpy(picked)]), "cache", whole)
        dataset = dataset.select(picked) if hasattr(dataset, "select") else Subset(dataset, picked.tolist())
    key = feature_key(backbone, preprocess, dataset, accelerator.mixed_precision) if persist else None
    if key is not None:
        stored = store.get(key)
        if stored is not None:
            return Features(FeatureDataset(stored, dataset.targets), "cache", key)
    # a shard that fails on one process only (a text too long for the backbone) fails on all of them, here, instead
    # of leaving the others waiting in the store's or the gather's collective calls
    shard, targets = on_every_process(accelerator, lambda: _shard_features(
        accelerator, backbone, dataset, preprocess, task, batch_size, num_workers, seed, progress))  # fmt: skip
    if key is not None:
        stored = _store(accelerator, store, key, shard, describe or {})
        if stored is not None:
            return Features(FeatureDataset(stored, dataset.targets), "computed", key)
    return Features(FeatureDataset(gathered_rows(accelerator, shard), gathered_rows(accelerator, targets)), "memory")


def cached_outputs(
    accelerator: Any, parts: dict[str, Any], compute: Callable[[], torch.Tensor], describe: dict[str, Any]
) -> tuple[torch.Tensor, str]:  # fmt: skip
    """Outputs of a deterministic computation over examples (e.g. a teacher's logits), kept in the feature store.

    `parts` names everything the outputs depend on (weights digest, preprocessing, input fingerprints, ...);
    `compute` returns them on every process. Returns the outputs and 'cache' or 'computed' ('memory' when the
    store could not be written, and on the other processes).
    """
    key = _key(parts)
    store = FeatureStore()
    stored = store.get(key)
    if stored is not None:
        return torch.from_numpy(stored.numpy().copy()), "cache"
    outputs = compute()
    if not accelerator.is_main_process:
        return outputs, "memory"
    staging = store.staging(key, uuid.uuid4().hex[:12])
    try:
        store.write_shard(staging, 0, 1, outputs.reshape(len(outputs), -1))
        store.commit(staging, key, 1, describe)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        logger.warning("Could not store outputs in the feature cache (%s); free space there or point HUBTL_CACHE "
                       "at another folder.", err)  # fmt: skip
        return outputs, "memory"
    return outputs, "computed"


@torch.inference_mode()
def _shard_features(
    accelerator: Any, backbone: nn.Module, dataset: Any, preprocess: Any, task: str, batch_size: int,
    num_workers: int, seed: int, progress: str | None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """This process's slice of the features (float32, on the CPU) and of the targets, in example order."""
    from tqdm.auto import tqdm

    rows = list(process_slice(len(dataset), accelerator))
    order = longest_first(dataset, preprocess, rows)  # texts of similar length batched together: short padding
    device = accelerator.device
    # Workers decode in chunks small enough to keep all of them busy from the first batch on (a worker decodes a
    # whole loader batch: 2 batches of a small split would leave 6 of 8 workers idle, and the first would wait for
    # one worker to decode batch_size images); the backbone still runs on batch_size rows.
    chunk = min(batch_size, max(8, math.ceil(len(rows) / (4 * num_workers)))) if num_workers > 0 else batch_size
    loader = DataLoader(
        Subset(dataset, rows if order is None else [rows[i] for i in order]), chunk, shuffle=False, collate_fn=make_collate(preprocess, task),
        generator=torch.Generator().manual_seed(seed),  # a hit and a miss leave the RNG alike
        **loader_options(num_workers, device, persistent=False),
    )  # fmt: skip
    backbone.eval()
    out: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []

    def inputs() -> Iterator[dict[str, Any]]:
        for batch, target in tqdm(loader, desc=progress, unit="batch", disable=progress is None or not accelerator.is_main_process):
            targets.append(torch.as_tensor(target))
            yield batch

    with accelerator.autocast(), inference_layout(backbone, device) as layout:
        for batch in _rebatched(inputs(), batch_size):
            batch = {k: layout(v.to(device, non_blocking=True)) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            out.append(backbone(batch).float().cpu())
    if not out:
        return torch.zeros((0, getattr(backbone, "feature_dim", 0)), dtype=torch.float32), torch.zeros(0)
    return in_given_order(torch.cat(out), order), in_given_order(torch.cat(targets), order)


def _rebatched(chunks: Iterator[dict[str, Any]], size: int) -> Iterator[dict[str, Any]]:
    """Concatenate consecutive batch chunks into batches of `size` rows (the last may be smaller).

    Chunks whose tensors differ beyond the batch dimension (text padded per chunk) are passed on one by one.
    """
    pending: list[dict[str, Any]] = []
    rows = 0
    for chunk in chunks:
        pending.append(chunk)
        rows += len(next(iter(chunk.values())))
        if rows >= size:
            yield from _concat(pending)
            pending, rows = [], 0
    yield from _concat(pending)


def _concat(chunks: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """One batch from chunks with the same keys and shapes, else the chunks as they are."""
    if len(chunks) <= 1 or any(len({c[k].shape[1:] for c in chunks}) > 1 for k in chunks[0]):
        yield from chunks
        return
    yield {key: torch.cat([c[key] for c in chunks]) for key in chunks[0]}


def _store(accelerator: Any, store: FeatureStore, key: str, shard: torch.Tensor, describe: dict[str, Any]) -> StoredFeatures | None:
    """Every process writes its shard, the main one commits the entry; None (with a warning) when that failed."""
    from accelerate.utils import broadcast_object_list

    world, rank = accelerator.num_processes, accelerator.process_index
    nonce = [uuid.uuid4().hex[:12]]
    if world > 1:
        broadcast_object_list(nonce)  # one staging folder per run, named alike on every process
    staging = store.staging(key, nonce[0])
    problem = ""
    try:
        store.write_shard(staging, rank, world, shard)
    except OSError as err:
        problem = f"{staging}: {err.strerror or err}"
    failures = [problem]
    if world > 1:
        from accelerate.utils import gather_object

        failures = gather_object([problem])
    problem = next((p for p in failures if p), "")
    if not problem and accelerator.is_main_process:
        try:
            store.commit(staging, key, world, describe)
        except OSError as err:
            problem = f"{store.path(key)}: {err.strerror or err}"
    outcome = [problem]
    if world > 1:
        broadcast_object_list(outcome)
    if outcome[0]:
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
            logger.warning(
                "Could not store features in the feature cache (%s); they stay in memory for this run. Free space "
                "there or point HUBTL_CACHE at another folder.", outcome[0],
            )
        return None
    stored = store.get(key)
    if stored is None:
        raise OSError(f"The feature cache entry {store.path(key)} cannot be read back; remove it and run again.")
    return stored
