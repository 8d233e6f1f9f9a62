"""Streamed training data (`dataset.streaming: true`): the training split read as it comes, never stored whole.

- The source: `datasets.load_dataset(..., streaming=True)` of the same sources map-style data reads
  (`sources.source_plan`: Hub datasets, csv/tsv/json/jsonl/parquet files, image folders), in file order,
  capped with `.take(max_train_samples)` and sharded over processes with `split_dataset_by_node`.
- `TrainStream`: this process's shard through a seeded shuffle buffer kept here, in endless passes (each pass
  reseeded with the next seed), as the checked (raw input, target) pairs map-style data gives. The buffer is
  not `IterableDataset.shuffle`, whose `state_dict()` forgets the buffer's content on resume: `state_dict()`
  here holds the source's position, the buffered examples and the RNG state, so a run resumed from a
  checkpoint reads exactly the examples an uninterrupted run would have read.
- `StreamLoader`: the training batches, read in the main process (0 workers, so the stream's state is the
  position the loop has consumed), moved to the device. It is not a DataLoader, so `accelerator.prepare`
  passes it through: the stream is sharded here, never again by Accelerate.
- Evaluation stays on a finite eval split, loaded map-style (`dataset.load_eval_split`), so it stays exact.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable
from typing import Any

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import IterableDataset as TorchIterableDataset

from ..errors import ConfigError, DataError
from ..images import describe, is_readable_image
from ..labels import is_missing
from ..tasks import get_task
from .config import DatasetConfig
from .dataset import (
    TransferData,
    _check_arguments,
    _class_names,
    load_eval_split,
    report_unreadable,
)
from .sources import EVAL_SPLIT_NAMES, SourcePlan, _read, _split_alias, source_plan

logger = logging.getLogger("hubtl")

#: the version of `TrainStream.state_dict()`'s layout (a checkpoint's stream_state_<rank>.json)
STATE_VERSION = 1


def state_file(rank: int) -> str:
    """The name of one process's stream state inside a checkpoint folder."""
    return f"stream_state_{rank}.json"


def load_streamed_data(
    cfg: DatasetConfig,
    *,
    task: str,
    modality: str,
    labels: list[str] | None = None,
    num_outputs: int = 1,
    seed: int = 42,
    strict: bool = False,
    progress: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> TransferData:
    """The training split as this process's `TrainStream`, the eval split map-style; problems raise before training."""
    _check_arguments(cfg, task, modality, labels, num_outputs)
    plan = source_plan(cfg)
    streams = _open_streams(plan, cfg)
    train_name, eval_name = _stream_splits(streams, cfg)
    train = streams[train_name]
    column = _stream_column(train, cfg, modality)
    class_names = _class_names((train.features or {}).get(cfg.label_column))
    eval_set, names, skipped = load_eval_split(
        _eval_split(plan, cfg, eval_name), eval_name, plan.base_dir, cfg, task=task, modality=modality, labels=labels,
        class_names=class_names, num_outputs=num_outputs, seed=seed, strict=strict, progress=progress,
    )  # fmt: skip
    encode = _Targets(cfg, task, labels, names, num_outputs, "labels" if labels else
                      "the train split's ClassLabel" if class_names else f"the eval split '{eval_name}'")
    stream = TrainStream(
        train, cfg, column, encode, modality=modality, base_dir=plan.base_dir, stream_class_names=class_names,
        seed=seed, strict=strict, rank=rank, world_size=world_size,
    )  # fmt: skip
    return TransferData(train=stream, eval=eval_set, labels=names, modality=modality, skipped=skipped, eval_split=eval_name)


# --- the source ----------------------------------------------------------------------------------


def _open_streams(plan: SourcePlan, cfg: DatasetConfig) -> datasets.IterableDatasetDict:
    """Every split of the source as a stream (nothing is downloaded or read yet beyond the file list)."""
    try:
        if plan.hub:
            loaded = datasets.load_dataset(cfg.path, cfg.name, data_files=cfg.data_files, streaming=True)
        else:
            loaded = datasets.load_dataset(plan.builder, data_files=plan.files, streaming=True, **plan.options)
    except Exception as err:  # noqa: BLE001 - any failure here means the source cannot be streamed
        raise DataError(
            f"Could not stream {cfg.source}: {type(err).__name__}: {err}. Check the dataset ID (and config name), "
            "the files and their format, your connection or HF_ENDPOINT."
        ) from err
    if isinstance(loaded, datasets.IterableDataset):
        loaded = datasets.IterableDatasetDict({"train": loaded})
    return loaded


def _stream_splits(streams: datasets.IterableDatasetDict, cfg: DatasetConfig) -> tuple[str, str]:
    """(the streamed train split, the finite eval split); a stream cannot be carved, so the eval split must exist."""
    available = ", ".join(streams) or "none"
    train_name = _split_alias(cfg.train_split, streams)
    if train_name not in streams:
        raise DataError(f"Train split '{cfg.train_split}' not found in {cfg.source}; it has: {available}. Set train_split.")
    if cfg.eval_split is not None:
        eval_name = _split_alias(cfg.eval_split, streams)
        if eval_name not in streams:
            raise DataError(
                f"Eval split '{cfg.eval_split}' not found in {cfg.source}; it has: {available}. Set eval_split to one of them."
            )
    else:
        eval_name = next((s for s in EVAL_SPLIT_NAMES if s in streams and s != train_name), None)
    if eval_name is None or eval_name == train_name:
        raise DataError(
            f"Streamed training needs a finite eval split other than the train split, and {cfg.source} has: {available}. "
            "An eval split cannot be carved out of a stream: set dataset.eval_split to another split, or add an eval "
            "file to data_files, e.g. {train: train.jsonl, validation: dev.jsonl}."
        )
    return train_name, eval_name


def _eval_split(plan: SourcePlan, cfg: DatasetConfig, eval_name: str) -> datasets.Dataset:
    """The eval split alone, map-style: only its own files are read (never the streamed train split's)."""
    if plan.hub:
        try:
            return datasets.load_dataset(cfg.path, cfg.name, data_files=cfg.data_files, split=eval_name)
        except Exception as err:  # noqa: BLE001
            raise DataError(f"Could not load eval split '{eval_name}' of {cfg.source}: {type(err).__name__}: {err}.") from err
    files = {eval_name: plan.files[eval_name]} if plan.files is not None else None
    loaded = _read((plan.builder, plan.options), cfg, files)
    if eval_name not in loaded:
        raise DataError(f"Eval split '{eval_name}' of {cfg.source} could not be read; it has: {', '.join(loaded)}.")
    if len(loaded[eval_name]) == 0:
        raise DataError(f"Split '{eval_name}' of {cfg.source} is empty; add examples to it.")
    return loaded[eval_name]


def _stream_column(train: datasets.IterableDataset, cfg: DatasetConfig, modality: str) -> str:
    """The input column of the stream, chosen as map-style data chooses it."""
    if modality == "image" and cfg.image_column is not None:
        return cfg.image_column
    if modality != "image" and cfg.text_column is not None:
        return cfg.text_column
    columns = list(train.features or {})
    if modality == "image":
        images = [c for c, f in (train.features or {}).items() if isinstance(f, datasets.Image)]
        return "image" if "image" in columns or len(images) != 1 else images[0]
    return next((c for c in ("text", "sentence") if c in columns), "text")


# --- targets -------------------------------------------------------------------------------------


class _Targets:
    """One streamed label value into its target, with the eval split's classes; a value outside them is an error."""

    def __init__(self, cfg: DatasetConfig, task: str, given: list[str] | None, names: list[str] | None,
                 num_outputs: int, origin: str) -> None:  # fmt: skip
        self.task, self.cfg, self.num_outputs, self.origin = get_task(task), cfg, num_outputs, origin
        # labels the user gave keep their map-style meaning (integer ids allowed); else the classes are fixed
        self.given, self.names = (given, None) if given else (None, names)

    def __call__(self, value: Any, where: str) -> torch.Tensor:
        cfg = self.cfg
        try:
            _, targets = self.task.encode_targets(
                {cfg.train_split: [value]}, self.given, self.names, cfg.label_column, self.num_outputs, cfg.label_separator
            )
        except DataError as err:
            raise DataError(
                f"{where}: {' '.join(str(err).split())} (The classes come from {self.origin}; a stream is not read "
                "ahead, so set labels to every class, or fix that example.)"
            ) from None
        return targets[cfg.train_split][0]


# --- the stream ----------------------------------------------------------------------------------


class TrainStream(TorchIterableDataset):
    """This process's shard of the training split: a seeded shuffle buffer over endless passes; exact `state_dict()`.

    An iterator itself (`iter()` returns it), so the position carries over between the DataLoader's loops.
    """

    def __init__(
        self,
        source: datasets.IterableDataset,
        cfg: DatasetConfig,
        column: str,
        encode: Callable[[Any, str], torch.Tensor],
        *,
        modality: str,
        base_dir: str | None,
        stream_class_names: list[str] | None,
        seed: int,
        strict: bool,
        rank: int,
        world_size: int,
    ) -> None:
        self.source_base = source
        self.cfg = cfg
        self.column, self.label_column = column, cfg.label_column
        self.encode = encode
        self.image = modality == "image"
        self.base_dir = base_dir
        self.stream_class_names = stream_class_names
        self.seed, self.strict, self.rank, self.world_size = seed, strict, rank, world_size
        self.buffer_size = cfg.shuffle_buffer_size
        # the state (state_dict): the pass, the source's position, the buffer, the RNG, the counts
        self.epoch = 0
        self.buffer: list[list[Any]] = []
        self.drained = False  # the source of this pass is exhausted: the buffer empties
        self.read = 0  # examples yielded (skipped unreadable images not counted)
        self.pulled = 0  # rows read from the source in this pass
        self.shard_rows: int | None = None  # rows of one whole pass over this shard, once one ended
        self.skipped: list[str] = []
        self._start_pass(None)

    def _shard(self) -> datasets.IterableDataset:
        """A fresh, unshuffled source of this process's shard (file order, capped, split by node)."""
        from datasets.distributed import split_dataset_by_node

        ds = self.source_base
        if self.image and isinstance((ds.features or {}).get(self.column), datasets.Image):
            ds = ds.cast_column(self.column, datasets.Image(decode=False))
        if self.cfg.max_train_samples is not None:
            ds = ds.take(self.cfg.max_train_samples)
        return split_dataset_by_node(ds, rank=self.rank, world_size=self.world_size)

    def _start_pass(self, source_state: dict[str, Any] | None) -> None:
        self.source = self._shard()
        self._loaded_source_state = source_state
        if source_state is not None:
            self.source.load_state_dict(source_state)
        self._rows = None  # the source's iterator, opened on the first read (after any load_state_dict)
        self.rng = np.random.default_rng([self.seed, self.rank, self.epoch])

    def __iter__(self) -> TrainStream:
        return self

    def __next__(self) -> tuple[Any, torch.Tensor]:
        while True:
            row = self._next_row()
            value, label = row
            where = self._where(value)
            if self.image:
                value = self._image(value)
                if not is_readable_image(value):
                    bad = describe(value) if value is not None else f"<{where}: no image file>"
                    if bad not in self.skipped:  # each file once, as map-style data counts them (not once per pass)
                        report_unreadable([bad], self.strict)
                        self.skipped.append(bad)
                    continue
            elif not isinstance(value, str):
                raise DataError(
                    f"Text column '{self.column}' must hold strings, but {where} holds {value!r} "
                    f"({type(value).__name__}). Fix that example, or set text_column to the column with the text."
                )
            self.read += 1
            return value, self.encode(self._label(label), where)

    def _next_row(self) -> list[Any]:
        """The next [input, label] out of the shuffle buffer: fill it, then swap a random slot for each new row."""
        while True:
            if not self.drained:
                if self._rows is None:
                    self._rows = iter(self.source)
                row = next(self._rows, None)
                if row is None:
                    self.drained = True
                    continue
                self.pulled += 1
                for column, key in ((self.column, "image_column" if self.image else "text_column"),
                                     (self.label_column, "label_column")):  # fmt: skip
                    if column not in row:
                        raise DataError(
                            f"The column '{column}' is not in the streamed split '{self.cfg.train_split}' of "
                            f"{self.cfg.source}; its columns are: {', '.join(row)}. Set {key} to one of them."
                        )
                item = [row[self.column], row[self.label_column]]
                if len(self.buffer) < self.buffer_size:
                    self.buffer.append(item)
                    continue
                slot = int(self.rng.integers(self.buffer_size))
                out, self.buffer[slot] = self.buffer[slot], item
                return out
            if self.buffer:  # the pass's source is exhausted: empty the buffer in random order
                slot = int(self.rng.integers(len(self.buffer)))
                out = self.buffer[slot]
                self.buffer[slot] = self.buffer[-1]
                self.buffer.pop()
                return out
            if self.pulled == 0:
                raise DataError(
                    f"Process {self.rank} of {self.world_size} got no training examples from the stream of {self.cfg.source}: "
                    f"give at least {self.world_size} examples, or train with fewer processes."
                )
            self.shard_rows = self.pulled if self.shard_rows is None else self.shard_rows
            self.epoch, self.pulled, self.drained = self.epoch + 1, 0, False
            self._start_pass(None)

    def _where(self, value: Any) -> str:
        shown = describe(value) if self.image and value is not None else repr(value)[:80]
        return (f"streamed training example {self.read + 1} of process {self.rank} "
                f"(pass {self.epoch + 1}) in {self.cfg.source}, {shown}")  # fmt: skip

    def _image(self, value: Any) -> Any:
        """An undecoded image as map-style data keeps it: a dict, or an absolute file path."""
        if isinstance(value, str) and self.base_dir and not os.path.isabs(value) and "://" not in value:
            return os.path.join(self.base_dir, value)
        return value

    def _label(self, value: Any) -> Any:
        """A ClassLabel id as its class name (-1 as missing), like map-style data's label values."""
        names = self.stream_class_names
        if names is None:
            return value

        def name(v: Any) -> Any:
            return names[v] if isinstance(v, int) and 0 <= v < len(names) else None

        return [name(v) for v in value] if isinstance(value, list) else None if is_missing(value) else name(value)

    # --- exact resume

    def state_dict(self) -> dict[str, Any]:
        """Where this process's stream is: JSON-able (a checkpoint's stream_state_<rank>.json)."""
        source_state = self.source.state_dict() if self._rows is not None else self._loaded_source_state
        return {
            "version": STATE_VERSION,
            "rank": self.rank,
            "world_size": self.world_size,
            "seed": self.seed,
            "shuffle_buffer_size": self.buffer_size,
            "epoch": self.epoch,
            "source": source_state,
            "drained": self.drained,
            "buffer": _jsonable(self.buffer),
            "rng": self.rng.bit_generator.state,
            "read": self.read,
            "pulled": self.pulled,
            "shard_rows": self.shard_rows,
            "skipped": list(self.skipped),
        }

    _loaded_source_state: dict[str, Any] | None = None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where `state_dict()` was taken; refuse a state of another process layout or buffer."""
        expected = {"version": STATE_VERSION, "rank": self.rank, "world_size": self.world_size, "seed": self.seed,
                    "shuffle_buffer_size": self.buffer_size}  # fmt: skip
        differs = {k: (state.get(k), v) for k, v in expected.items() if state.get(k) != v}
        if differs:
            listed = ", ".join(f"{k} {saved} (now {now})" for k, (saved, now) in differs.items())
            raise ConfigError(
                f"The checkpoint's stream state was written with {listed}; resume with the same number of processes, "
                "seed and dataset.shuffle_buffer_size, or start afresh."
            )
        self.epoch = state["epoch"]
        self._start_pass(state["source"])
        self.drained = state["drained"]
        self.buffer = _from_jsonable(state["buffer"])
        self.rng.bit_generator.state = state["rng"]
        self.read, self.pulled, self.shard_rows = state["read"], state["pulled"], state["shard_rows"]
        self.skipped = list(state["skipped"])

    def facts(self) -> dict[str, Any]:
        """What this process read, for summary.json."""
        return {"process": self.rank, "examples_read": self.read, "passes_completed": self.epoch,
                "shard_rows": self.shard_rows, "skipped_files": list(self.skipped)}  # fmt: skip


def _jsonable(value: Any) -> Any:
    """Buffered raw examples as JSON: bytes (an image's) as base64."""
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _from_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__bytes__"}:
            return base64.b64decode(value["__bytes__"])
        return {k: _from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_jsonable(v) for v in value]
    return value


# --- batches -------------------------------------------------------------------------------------


class StreamLoader:
    """The training batches of a stream, read in this process (0 workers), moved to `device`.

    Deliberately not a DataLoader: `accelerator.prepare` returns it as it is, so the stream (sharded by
    `split_dataset_by_node`) is not sharded again; with 0 workers the stream's `state_dict()` is exactly the
    position the loop has consumed, which is what a checkpoint must hold.
    """

    def __init__(self, stream: TrainStream, batch_size: int, collate: Callable[[list[Any]], Any], device: torch.device) -> None:
        self.stream = stream
        self.device = device
        # a generator of its own: each new iterator draws a seed from it, never from the global RNG that dropout
        # uses (a resumed run creates its iterator after the RNG is restored, an uninterrupted one before)
        self.loader = DataLoader(stream, batch_size=batch_size, collate_fn=collate, num_workers=0,
                                 generator=torch.Generator().manual_seed(0))  # fmt: skip

    def __iter__(self) -> Any:
        for batch in self.loader:
            yield _to_device(batch, self.device)

    def set_epoch(self, epoch: int) -> None:
        """Nothing to do: the stream reseeds each pass itself."""


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value


__all__ = ["StreamLoader", "TrainStream", "load_streamed_data", "state_file"]
