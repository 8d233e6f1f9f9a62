"""The persistent feature store: frozen-backbone features on disk, keyed by everything they depend on.

One entry per key is a folder `<root>/<key>/` holding `meta.json` (what the features are of) and one
safetensors file per process that computed them (`shard-00000-of-00002.safetensors`, a `features`
tensor each, in example order). Entries appear whole or not at all: the processes write into a staging
folder that the main process renames into place. Reading memory-maps the shards, so a process touches
only the rows it uses.

The root is `$HUBTL_CACHE`, else `$XDG_CACHE_HOME/hubtl/features`, else `~/.cache/hubtl/features`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import HubtlError
from ..layout import atomic_write

META_FILE = "meta.json"
STAGING_PREFIX = ".staging-"
FORMAT_VERSION = 1
_HEADER_LIMIT = 1 << 20


def cache_root() -> Path:
    """The feature store's folder (read from the environment each call, so tests and users can move it)."""
    if os.environ.get("HUBTL_CACHE"):
        return Path(os.environ["HUBTL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hubtl" / "features"


def shard_name(rank: int, world: int) -> str:
    """File name of one process's rows."""
    return f"shard-{rank:05d}-of-{world:05d}.safetensors"


@dataclass
class CacheEntry:
    """One stored set of features: its key, what it is of, its size on disk."""

    key: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)
    bytes: int = 0

    @property
    def rows(self) -> int:
        return int(self.meta.get("rows", 0))

    @property
    def dim(self) -> int:
        return int(self.meta.get("dim", 0))

    def describe(self) -> str:
        """One line for `hubtl cache list`."""
        m = self.meta
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(m.get("created", 0)))
        return (
            f"{self.key[:16]}  {m.get('backbone', '?')}  {m.get('dataset', '?')} [{m.get('split', '?')}]  "
            f"{self.rows} x {self.dim}  {self.bytes / 1e6:.1f} MB  {when}"
        )


class StoredFeatures:
    """The features of one entry, memory-mapped: `len()`, `rows(indices)`, `numpy()` (all rows, in memory)."""

    def __init__(self, shards: Sequence[np.ndarray]) -> None:
        self.shards = list(shards)
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])
        self.dim = int(self.shards[0].shape[1]) if self.shards else 0

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def rows(self, indices: Sequence[int]) -> torch.Tensor:
        """The rows at these global indices, copied out of the mapped files."""
        indices = np.asarray(indices, dtype=np.int64)
        shard_of = np.searchsorted(self.offsets, indices, side="right") - 1
        out = np.empty((len(indices), self.dim), dtype=np.float32)
        for s in np.unique(shard_of):
            where = shard_of == s
            out[where] = self.shards[s][indices[where] - self.offsets[s]]
        return torch.from_numpy(out)

    def numpy(self) -> np.ndarray:
        """Every row in one array (what a ranking score needs)."""
        return np.concatenate([np.asarray(s) for s in self.shards]) if self.shards else np.zeros((0, 0), np.float32)


class FeatureStore:
    """The store's folder: look entries up, write them atomically, list and clear them."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root()

    def path(self, key: str) -> Path:
        return self.root / key

    def get(self, key: str) -> StoredFeatures | None:
        """The entry's features, memory-mapped; None when absent or unreadable (then it is computed again)."""
        folder = self.path(key)
        try:
            meta = json.loads((folder / META_FILE).read_text())
            shards = [_map_shard(folder / name) for name in meta["shards"]]
            if meta.get("format") != FORMAT_VERSION or sum(len(s) for s in shards) != meta["rows"]:
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        _touch(folder / META_FILE)
        return StoredFeatures(shards)

    def staging(self, key: str, nonce: str) -> Path:
        """The staging folder the processes of one run write their shards into."""
        return self.root / f"{STAGING_PREFIX}{key}-{nonce}"

    @staticmethod
    def write_shard(staging: Path, rank: int, world: int, features: torch.Tensor) -> None:
        """Write this process's rows (float32, example order) into the staging folder."""
        from safetensors.torch import save

        staging.mkdir(parents=True, exist_ok=True)
        data = save({"features": features.detach().to("cpu", torch.float32).contiguous()})
        atomic_write(staging / shard_name(rank, world), data)

    def commit(self, staging: Path, key: str, world: int, meta: dict[str, Any]) -> None:
        """Finish an entry (main process, after every shard is written): meta.json, then rename into place."""
        names = [shard_name(r, world) for r in range(world)]
        rows = dim = 0
        for name in names:
            shard = _map_shard(staging / name)
            rows += len(shard)
            dim = int(shard.shape[1])
        full = {**meta, "format": FORMAT_VERSION, "key": key, "rows": rows, "dim": dim, "shards": names, "created": time.time()}
        atomic_write(staging / META_FILE, json.dumps(full, indent=2))
        final = self.path(key)
        if final.exists() and self.get(key) is None:  # a damaged entry (e.g. a truncated shard) gives way
            trash = self.staging(key, f"damaged-{os.getpid()}")
            os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(staging, final)
        except OSError:  # another run stored the same key first: its features are the same
            if self.get(key) is None:
                raise
            shutil.rmtree(staging, ignore_errors=True)

    def entries(self) -> list[CacheEntry]:
        """Every complete entry, newest first."""
        if not self.root.is_dir():
            return []
        found = []
        for folder in self.root.iterdir():
            if folder.name.startswith(STAGING_PREFIX) or not (folder / META_FILE).is_file():
                continue
            try:
                meta = json.loads((folder / META_FILE).read_text())
            except (OSError, ValueError):
                meta = {}
            size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
            found.append(CacheEntry(folder.name, folder, meta if isinstance(meta, dict) else {}, size))
        return sorted(found, key=lambda e: -float(e.meta.get("created", 0)))

    def clear(self, keys: Sequence[str] = (), older_than_days: float | None = None) -> list[CacheEntry]:
        """Remove entries (all, those whose key starts with one of `keys`, or unused for that many days), and staging
        folders older than a day; returns what was removed."""
        removed = []
        cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
        for entry in self.entries():
            if keys and not any(entry.key.startswith(k) for k in keys):
                continue
            if cutoff is not None and _last_used(entry.path) > cutoff:
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry)
        if self.root.is_dir() and not keys:
            for folder in self.root.glob(f"{STAGING_PREFIX}*"):
                if time.time() - folder.stat().st_mtime > 86400:
                    shutil.rmtree(folder, ignore_errors=True)
        return removed

    def check_writable(self) -> None:
        """Raise a HubtlError saying what to do when the store's folder cannot be written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f"{STAGING_PREFIX}probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise HubtlError(
                f"The feature cache folder {self.root} cannot be written ({err.strerror or err}). Point HUBTL_CACHE "
                "at a writable folder, or set feature_cache: false."
            ) from None


def _map_shard(path: Path) -> np.ndarray:
    """Memory-map the `features` tensor of a safetensors shard (float32, 2-D), checking the header against the file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if not 0 < length <= min(size - 8, _HEADER_LIMIT):
            raise ValueError(f"{path}: not a safetensors file")
        entry = json.loads(f.read(length))["features"]
    begin, end = entry["data_offsets"]
    rows, dim = entry["shape"]
    if entry["dtype"] != "F32" or end - begin != rows * dim * 4 or 8 + length + end > size:
        raise ValueError(f"{path}: unexpected features tensor")
    if rows == 0:
        return np.zeros((0, dim), dtype=np.float32)
    return np.memmap(path, dtype=np.float32, mode="r", offset=8 + length + begin, shape=(rows, dim))


def _touch(path: Path) -> None:
    """Record a use (clear --older-than frees what was not used for a while)."""
    try:
        os.utime(path)
    except OSError:
        pass


def _last_used(folder: Path) -> float:
    try:
        return (folder / META_FILE).stat().st_mtime
    except OSError:
        return 0.0
