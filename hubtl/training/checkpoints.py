"""Checkpoints and resume: staged, renamed and rotated Accelerate checkpoints, the trainer's progress, the best weights.

Accelerate's own rotation (`ProjectConfiguration(automatic_checkpoint_naming=True, total_limit=...)`)
writes straight into `checkpoint_<n>` (a crash leaves a folder that looks complete) and numbers by save
count, not by optimizer step; so `save_state` writes into a staging folder here, which is renamed into
`checkpoint-<step>` once complete, and the oldest complete checkpoints beyond `save_total_limit` are removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ConfigError
from ..layout import CHECKPOINTS_DIR, atomic_write, load_weights, save_weights
from .disk import disk_full_error, tensor_bytes

STATE_NAME = "trainer_state.json"
BEST_DIR = "best"
STAGING_PREFIX = ".staging-checkpoint-"


@dataclass
class TrainerState:
    """Progress that a checkpoint must restore besides weights, optimizer and RNG (trainer_state.json)."""

    global_step: int = 0
    epoch: int = 0
    batches_done: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_metric: float | None = None
    best_epoch: int | None = None
    best_results: dict[str, Any] | None = None
    bad_epochs: int = 0
    # training loss of the epoch in progress, summed over all processes, up to the checkpoint
    epoch_loss_sum: float = 0.0
    epoch_loss_count: int = 0
    # the same totals at the last step record (logging_steps), so each record averages its own window
    logged_loss_sum: float = 0.0
    logged_loss_count: int = 0
    # step and in-epoch evaluation records ("kind": "step" / "eval"), beside the epoch rows of `history`
    log: list[dict[str, Any]] = field(default_factory=list)
    # what fixed the steps and the learning-rate schedule when the run began (compared on --resume)
    run_shape: dict[str, Any] = field(default_factory=dict)


class Checkpoints:
    """The checkpoints/ folder of one output directory, written by the main process, read by all."""

    def __init__(self, output_dir: Path, accelerator: Any, save_total_limit: int) -> None:
        self.output_dir = output_dir
        self.directory = output_dir / CHECKPOINTS_DIR
        self.accelerator = accelerator
        self.main = accelerator.is_main_process
        self.save_total_limit = save_total_limit

    def complete(self) -> list[Path]:
        """Complete checkpoints in step order (staging folders are never listed)."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.glob("checkpoint-*") if p.is_dir() and (p / STATE_NAME).is_file()]
        return sorted(found, key=lambda p: int(p.name.split("-")[-1]))

    def resume_point(self, resume_from_checkpoint: str | bool | None, overwrite_output_dir: bool) -> Path | None:
        """The checkpoint to resume from, or None for a fresh run; refuse to mix a new run with an old one."""
        existing = self.complete()
        if resume_from_checkpoint:
            if isinstance(resume_from_checkpoint, str):
                path = Path(resume_from_checkpoint)
                if not (path / STATE_NAME).is_file():
                    raise ConfigError(f"{path} is not a complete hubtl checkpoint (no {STATE_NAME}).")
            elif not existing:
                raise ConfigError(f"--resume: no checkpoint in {self.directory}; start without --resume.")
            else:
                path = existing[-1]
            return path
        if existing or (self.output_dir / "config.json").exists():
            if not overwrite_output_dir:
                what = ("checkpoints of an earlier run. Resume it with --resume, pass" if existing
                        else "a config.json (a saved model), and no checkpoint to resume. Pass")  # fmt: skip
                raise ConfigError(
                    f"{self.output_dir} already holds {what} --overwrite_output_dir true, or choose another output_dir."
                )
            if self.main:
                shutil.rmtree(self.directory, ignore_errors=True)
            self.accelerator.wait_for_everyone()
        return None

    def remove_stale_staging(self) -> list[Path]:
        """Remove staging folders a killed run left (checkpoints' and this output dir's final-save ones)."""
        stale: list[Path] = []
        if self.main:
            # TransferModel.save_pretrained stages into `.NAME.tmp-<hex>` beside the output dir
            final = re.compile(rf"\.{re.escape(self.output_dir.name)}\.tmp-[0-9a-f]+")
            stale = [p for p in _subdirs(self.directory) if p.name.startswith(STAGING_PREFIX)]
            stale += [p for p in _subdirs(self.output_dir.parent) if final.fullmatch(p.name)]
            for path in stale:
                shutil.rmtree(path, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return stale

    def save(self, state: dict[str, Any], module: nn.Module, optimizer: Any, process_files: dict[str, str] | None = None) -> None:
        """save_state into a staging folder, then rename it: a crash never leaves a checkpoint that looks complete.

        `process_files` ({name: text}) are this process's own files, written by every process into the same folder
        (e.g. the position of its share of a streamed dataset, `stream_state_<rank>.json`)."""
        acc = self.accelerator
        final = self.directory / f"checkpoint-{state['global_step']}"
        staging = self.directory / f"{STAGING_PREFIX}{state['global_step']}"
        if self.main:
            shutil.rmtree(staging, ignore_errors=True)
        needed = self._checkpoint_bytes(module, optimizer)
        with self.disk_full(final.name, self.directory, needed, staging=staging if self.main else None):
            if self.main:
                self.directory.mkdir(parents=True, exist_ok=True)
            acc.wait_for_everyone()
            with _tied_weights_quiet():
                acc.save_state(str(staging))
            for name, text in (process_files or {}).items():
                staging.mkdir(parents=True, exist_ok=True)
                atomic_write(staging / name, text)
            acc.wait_for_everyone()
            if self.main:
                atomic_write(staging / STATE_NAME, json.dumps(state, indent=2))
                if final.exists():
                    shutil.rmtree(final)
                os.replace(staging, final)
        if self.main:
            for old in self.complete()[: -self.save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
            self.prune_best(state.get("best_epoch"))
        acc.wait_for_everyone()

    def saved_state(self, checkpoint: Path) -> TrainerState:
        """The progress a checkpoint recorded, read without loading anything into the run."""
        return TrainerState(**json.loads((checkpoint / STATE_NAME).read_text()))

    def load(self, checkpoint: Path) -> None:
        """Restore weights, optimizer, scheduler and RNG into the prepared objects (the progress: `saved_state`)."""
        try:
            self.accelerator.load_state(str(checkpoint))
        except RuntimeError as err:  # a model of other shapes or parameters than the checkpoint's (older checkpoints)
            first = str(err).strip().splitlines()
            raise ConfigError(
                f"{checkpoint} does not fit the model this config builds ({' '.join(first[:2])[:300]}). Resume with the "
                "config that wrote it (the run's training/config.yaml), or start afresh with --overwrite_output_dir "
                "true or another output_dir."
            ) from err

    def best_weights(self, epoch: int) -> Path:
        """Where the weights of the best epoch so far are kept."""
        return self.directory / BEST_DIR / f"model-epoch{epoch}.safetensors"

    def save_best(self, model: nn.Module, epoch: int, state_dict: dict[str, Any] | None = None) -> None:
        """Keep the best weights so far (safetensors, written atomically) for the end of the run.

        One file per best epoch: the previous best is only removed once a checkpoint that records the new
        best is complete, so a run killed in between resumes with its recorded best weights still on disk.
        `state_dict`: the full weights when the model is sharded (FSDP), gathered on the main process.
        """
        if self.main:
            best = self.directory / BEST_DIR
            target = self.best_weights(epoch)
            tmp = best / f".{target.name}.tmp"
            with self.disk_full("the best weights", best, tensor_bytes(state_dict or model.state_dict()), staging=tmp):
                best.mkdir(parents=True, exist_ok=True)
                save_weights(model, tmp, state_dict=state_dict)  # with the state-dict versions some modules need to load
                os.replace(tmp, target)
        self.accelerator.wait_for_everyone()

    def load_best(self, model: nn.Module, epoch: int | None) -> bool:
        """Load the best epoch's weights into `model` (on its device); False when there are none."""
        path = self.best_weights(epoch) if epoch else None
        if path is None or not path.is_file():
            return False
        device = self.accelerator.device
        load_weights(model, path, device="cpu" if device.type == "cpu" else str(device), built_by="the model being trained")
        return True

    def best_state_dict(self, epoch: int) -> dict[str, Any]:
        """The best epoch's full weights as a state dict on the CPU (for a sharded model's final save)."""
        from safetensors.torch import load_file

        path = self.best_weights(epoch)
        if not path.is_file():
            raise ConfigError(f"{path} is missing: the best weights of epoch {epoch} were not kept. Rerun with --resume.")
        return load_file(str(path))

    def prune_best(self, best_epoch: int | None) -> None:
        """Remove best-weights files other than the one the latest complete checkpoint records."""
        keep = self.best_weights(best_epoch) if best_epoch else None
        for path in (self.directory / BEST_DIR).glob("model-epoch*.safetensors"):
            if path != keep:
                path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def disk_full(self, what: str, directory: Path, needed: int, staging: Path | None = None) -> Iterator[None]:
        """A full disk while writing `what` becomes a HubtlError that says how to continue from these checkpoints."""
        existing = self.complete()
        # the best weights live in checkpoints/: resuming elsewhere needs the whole output dir moved
        advice = (
            f"Free space there and rerun the same command with --resume to continue from {existing[-1]}, which is "
            f"intact; or move {self.output_dir} to a disk with room and rerun with --output_dir set to its new "
            "place and --resume."
            if existing
            else "Free space there, or set output_dir to a disk with room, and rerun the same command (no "
            "checkpoint was completed yet, so training starts again)."
        )
        with disk_full_error(what, directory, needed, advice, staging=staging):
            yield

    def _checkpoint_bytes(self, module: nn.Module, optimizer: Any) -> int:
        """About how many bytes a checkpoint takes: the module and optimizer tensors, or the last checkpoint."""
        estimate = tensor_bytes(module.state_dict(), optimizer.state_dict())
        existing = self.complete()
        if existing:
            estimate = max(estimate, sum(f.stat().st_size for f in existing[-1].rglob("*") if f.is_file()))
        return estimate


def state_dict(state: TrainerState) -> dict[str, Any]:
    """The JSON-able form of the trainer's progress."""
    return asdict(state)


def _subdirs(directory: Path) -> list[Path]:
    """The folders directly inside `directory` (none when it does not exist)."""
    return [p for p in directory.iterdir() if p.is_dir()] if directory.is_dir() else []


class _SharedTensorNotice(logging.Filter):
    """Drops Accelerate's "Removed shared tensor ... while saving": a model's tied weights (an MLM decoder tied to the
    embeddings), which safetensors stores once and the resume ties again (the pre-training resume tests check it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in str(record.msg)  # Accelerate prefixes it with the process rank


@contextlib.contextmanager
def _tied_weights_quiet() -> Iterator[None]:
    """Accelerate's notice of tied weights left out of a checkpoint, silenced while it saves."""
    notice = _SharedTensorNotice()
    accelerate_logger = logging.getLogger("accelerate.utils.other")
    accelerate_logger.addFilter(notice)
    try:
        yield
    finally:
        accelerate_logger.removeFilter(notice)
