"""Fine-tuning on Accelerate: `hubtl train CONFIG.yaml` and `accelerate launch -m hubtl.train CONFIG.yaml`.

The loop is plain Accelerate (prepare, accumulate, backward, clip_grad_norm_, gather_for_metrics,
save_state/load_state), so the same code runs on a CPU, one GPU or many processes.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .backbones.registry import get_plugin, split_backbone_name
from .config import TrainingConfig, load_config
from .data import TransferData, load_transfer_data, make_collate
from .errors import ConfigError, HubtlError
from .metrics import is_better, metric_key
from .model import TransferModel
from .strategies import get_strategy
from .tasks import get_task

logger = logging.getLogger("hubtl")

CHECKPOINTS_DIR = "checkpoints"
TRAINING_DIR = "training"
STATE_NAME = "trainer_state.json"
BEST_DIR = "best"
STAGING_PREFIX = ".staging-checkpoint-"
#: errno values that mean the filesystem has no room (or the user's quota is used up).
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
#: What torch's zip writer says when a write comes up short; it drops the errno, so free space decides.
SHORT_WRITE_MESSAGES = ("unexpected pos", "file write failed")
_GENERATOR_FLAGS = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


@dataclass
class TrainResult:
    """What a run produced: the saved model directory, the final evaluation, per-epoch metrics."""

    output_dir: Path
    eval_results: dict[str, Any]
    metrics: list[dict[str, Any]]
    interrupted: bool = False


@dataclass
class _State:
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


class _FeatureHead(nn.Module):
    """The head applied to cached backbone features, so the loop is the same with and without the cache."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(batch["features"])


def _feature_collate(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Collate (features, target) pairs into the (batch dict, targets) shape of the loop."""
    features, targets = zip(*items)
    return {"features": torch.stack(features)}, torch.stack(targets)


def train(config: TrainingConfig | dict[str, Any] | str | Path, overrides: list[str] | None = None) -> TrainResult:
    """Run one fine-tuning job from a config (object, dict or YAML path) and return what it produced."""
    if isinstance(config, TrainingConfig):
        cfg = load_config(config.to_dict(), overrides) if overrides else config
    else:
        cfg = load_config(config, overrides)
    return _Trainer(cfg).run()


class _Trainer:
    """One run: builds data, model and optimizer, loops over epochs, checkpoints, writes the output dir."""

    def __init__(self, cfg: TrainingConfig) -> None:
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from accelerate.utils import DataLoaderConfiguration

        # AcceleratorState is a per-process singleton that refuses a second run with other settings
        # (e.g. mixed_precision) in the same process; the process group (PartialState) is kept.
        AcceleratorState._reset_state(reset_partial_state=False)
        self.cfg = cfg
        self.task = get_task(cfg.task)
        self.strategy = get_strategy(cfg.strategy)
        self.output_dir = Path(cfg.output_dir)
        self.checkpoints = self.output_dir / CHECKPOINTS_DIR
        tracker = self.tracker = _tracker(cfg.report_to)
        self.accelerator = Accelerator(
            mixed_precision=cfg.mixed_precision,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            log_with=tracker,
            project_dir=str(self.output_dir / TRAINING_DIR) if tracker else None,
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        )
        self.main = self.accelerator.is_main_process
        self.state = _State()
        self._stop_requested = False  # set by the first Ctrl-C (SIGINT) or SIGTERM during the loop
        self._saved_step: int | None = None  # global step of the latest checkpoint written by this run
        self._reset_epoch_loss()

    # ------------------------------------------------------------------ set-up

    def run(self) -> TrainResult:
        """The whole run; Ctrl-C saves a checkpoint and returns with `interrupted` set."""
        from accelerate.utils import set_seed

        cfg = self.cfg
        self.setup_started = time.time()
        resume_dir = self._check_output_dir()
        set_seed(cfg.seed)
        self.data = self._load_data()
        self.model = self._build_model()
        self.use_cache = self._use_feature_cache()
        self._build_loop()
        if resume_dir is not None:
            self._resume(resume_dir)
        if self.main:
            text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
            with self._disk_full("the training record", self.output_dir / TRAINING_DIR, len(text.encode())):
                _write_atomic(self.output_dir / TRAINING_DIR / "config.yaml", text)
        if self.tracker:  # `accelerator.trackers` stays empty until init_trackers: test the config instead
            self.accelerator.init_trackers("hubtl", config=_flat_hparams(cfg.to_dict()))
        started = time.time()
        self.setup_seconds = started - self.setup_started
        try:
            with self._deferred_interrupts():
                interrupted = self._loop()
        except KeyboardInterrupt:  # a second Ctrl-C: stop at once, without a checkpoint of this step
            self._log(
                f"Stopped at once (second interrupt). Rerun the same command with --resume to continue from the "
                f"latest checkpoint in {self.checkpoints}."
            )
            self.accelerator.end_training()
            return TrainResult(self.output_dir, self.state.best_results or {}, self.state.history, interrupted=True)
        if interrupted:
            self._log(
                f"Interrupted at step {self.state.global_step}: saved checkpoint-{self.state.global_step} in "
                f"{self.checkpoints}. Resume with `--resume` (rerun the same command with --resume)."
            )
            self.accelerator.end_training()
            return TrainResult(self.output_dir, self.state.best_results or {}, self.state.history, interrupted=True)
        result = self._finish(time.time() - started)
        self.accelerator.end_training()
        return result

    def _check_output_dir(self) -> Path | None:
        """Find the checkpoint to resume from, or refuse to mix a new run with an old one."""
        cfg = self.cfg
        existing = _checkpoints(self.checkpoints)
        if cfg.resume_from_checkpoint:
            if isinstance(cfg.resume_from_checkpoint, str):
                path = Path(cfg.resume_from_checkpoint)
                if not (path / STATE_NAME).is_file():
                    raise ConfigError(f"{path} is not a complete hubtl checkpoint (no {STATE_NAME}).")
            elif not existing:
                raise ConfigError(f"--resume: no checkpoint in {self.checkpoints}; start without --resume.")
            else:
                path = existing[-1]
            self._remove_stale_staging()
            return path
        if existing or (self.output_dir / "config.json").exists():
            if not cfg.overwrite_output_dir:
                raise ConfigError(
                    f"{self.output_dir} already holds a model or checkpoints from an earlier run. "
                    "Resume it with --resume, pass --overwrite_output_dir true, or choose another output_dir."
                )
            if self.main:
                shutil.rmtree(self.checkpoints, ignore_errors=True)
            self.accelerator.wait_for_everyone()
        self._remove_stale_staging()
        return None

    def _remove_stale_staging(self) -> None:
        """Remove staging folders that a killed run left: checkpoints' and this output dir's final-save ones."""
        if self.main:
            # TransferModel.save_pretrained stages into `.NAME.tmp-<hex>` beside the output dir
            final = re.compile(rf"\.{re.escape(self.output_dir.name)}\.tmp-[0-9a-f]+")
            stale = [p for p in _subdirs(self.checkpoints) if p.name.startswith(STAGING_PREFIX)]
            stale += [p for p in _subdirs(self.output_dir.parent) if final.fullmatch(p.name)]
            for path in stale:
                shutil.rmtree(path, ignore_errors=True)
            if stale:
                self._log(f"Removed {len(stale)} staging folder(s) left by an interrupted run: "
                          f"{', '.join(str(p) for p in stale)}.")
        self.accelerator.wait_for_everyone()

    def _load_data(self) -> TransferData:
        """Load and check the dataset before any training starts (main process first, for the datasets cache)."""
        cfg = self.cfg
        plugin_name, _ = split_backbone_name(cfg.backbone)
        modality = get_plugin(plugin_name).modality
        with self.accelerator.main_process_first():
            data = load_transfer_data(
                cfg.dataset,
                task=cfg.task,
                modality=modality,
                labels=cfg.labels,
                num_outputs=cfg.num_outputs,
                seed=cfg.seed,
                strict=cfg.strict,
            )
        self._log(f"Data: {len(data.train)} training and {len(data.eval)} evaluation examples; labels {data.labels}.")
        return data

    def _build_model(self) -> TransferModel:
        """Create the backbone with its new head and apply the strategy's freezing (or LoRA)."""
        cfg = self.cfg
        model = TransferModel.from_backbone(
            cfg.backbone,
            labels=self.data.labels,
            task=cfg.task,
            pretrained=cfg.pretrained,
            num_outputs=cfg.num_outputs,
            dropout=cfg.head_dropout,
            hidden_dim=cfg.head_hidden_dim,
            **cfg.backbone_kwargs,
        )
        self.strategy.prepare(model, cfg)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        self._log(f"Model: {cfg.backbone}, strategy {cfg.strategy}: {trainable:,} of {total:,} parameters trainable.")
        return model

    def _use_feature_cache(self) -> bool:
        """Cache backbone features when the backbone is frozen and training transforms are deterministic."""
        cfg = self.cfg
        if not self.strategy.freezes_backbone:
            return False
        deterministic = self.model.preprocessor(train=cfg.augment).deterministic
        if not cfg.feature_cache:
            self._log("Feature cache off (feature_cache: false): the frozen backbone runs every epoch.")
            return False
        if not deterministic:
            self._log("Feature cache off: training transforms are random (set augment: false to cache features).")
            return False
        self._log("Feature cache on: backbone features are computed once and the head trains on them.")
        return True

    def _build_loop(self) -> None:
        """DataLoaders, optimizer and scheduler, prepared by Accelerate."""
        from transformers import get_scheduler

        cfg, acc = self.cfg, self.accelerator
        if self.use_cache:
            self.model.to(acc.device)
            preprocess = self.model.preprocessor(train=False)
            train_set = self._cached_features(self.data.train, preprocess)
            eval_set = self._cached_features(self.data.eval, preprocess)
            module: nn.Module = _FeatureHead(self.model.head)
            train_collate = eval_collate = _feature_collate
            workers = 0
        else:
            train_set, eval_set, module = self.data.train, self.data.eval, self.model
            train_collate = make_collate(self.model.preprocessor(train=cfg.augment), cfg.task)
            eval_collate = make_collate(self.model.preprocessor(train=False), cfg.task)
            workers = self._num_workers()
        generator = torch.Generator().manual_seed(cfg.seed)  # keeps worker seeding off the global RNG
        train_loader = DataLoader(
            train_set, cfg.per_device_train_batch_size, shuffle=True, collate_fn=train_collate,
            num_workers=workers, generator=generator, persistent_workers=workers > 0,
        )
        eval_loader = DataLoader(
            eval_set, cfg.per_device_eval_batch_size, shuffle=False, collate_fn=eval_collate, num_workers=workers,
            generator=torch.Generator().manual_seed(cfg.seed),  # evaluating never draws from the training RNG
        )
        groups = self.strategy.param_groups(self.model, cfg)
        if self.use_cache:
            head_params = {id(p) for p in self.model.head.parameters()}
            groups = [g for g in groups if all(id(p) in head_params for p in g["params"])]
        optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.module, self.optimizer, self.train_loader, self.eval_loader = acc.prepare(
            module, optimizer, train_loader, eval_loader
        )
        self.steps_per_epoch = max(1, math.ceil(len(self.train_loader) / cfg.gradient_accumulation_steps))
        self.total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * self.steps_per_epoch)
        self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        # Not prepared: Accelerate would step it once per process; it steps once per optimizer step here.
        self.scheduler = get_scheduler(
            cfg.lr_scheduler_type,
            optimizer=self.optimizer,
            num_warmup_steps=math.ceil(cfg.warmup_ratio * self.total_steps),
            num_training_steps=self.total_steps,
        )
        acc.register_for_checkpointing(self.scheduler)
        self.metric = metric_key(cfg.metric_for_best_model or self.task.default_metric)

    def _num_workers(self) -> int:
        """DataLoader workers: the config's number, else 2 for images (decoding) and 0 for text."""
        if self.cfg.dataloader_num_workers is not None:
            return self.cfg.dataloader_num_workers
        return min(2, os.cpu_count() or 1) if self.data.modality == "image" else 0

    @torch.inference_mode()
    def _cached_features(self, dataset: Any, preprocess: Any) -> TensorDataset:
        """Run the frozen backbone once over a dataset (sharded over processes, gathered on all)."""
        acc = self.accelerator
        loader = DataLoader(
            dataset, self.cfg.per_device_eval_batch_size, shuffle=False,
            collate_fn=make_collate(preprocess, self.cfg.task), num_workers=self._num_workers(),
            generator=torch.Generator().manual_seed(self.cfg.seed),  # the cache never draws from the training RNG
        )
        loader = acc.prepare_data_loader(loader)
        backbone = self.model.backbone.eval()
        features, targets = [], []
        with acc.autocast():
            for batch, target in loader:
                gathered = acc.gather_for_metrics((backbone(batch).float(), target))
                features.append(gathered[0].cpu())
                targets.append(gathered[1].cpu())
        return TensorDataset(torch.cat(features), torch.cat(targets))

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> bool:
        """Train epoch by epoch, evaluating and checkpointing at each epoch end; True when interrupted."""
        from tqdm.auto import tqdm

        cfg, acc, state = self.cfg, self.accelerator, self.state
        bar = tqdm(
            total=self.total_steps, initial=state.global_step, desc="train", unit="step",
            disable=not self.main or cfg.disable_tqdm,
        )
        try:
            while state.epoch < self.num_epochs and state.global_step < self.total_steps:
                if self._should_stop():
                    return self._save_on_interrupt()
                started, samples = time.time(), 0
                self._reset_epoch_loss()
                self._set_train_mode()
                frozen = self._frozen_this_epoch()
                self.train_loader.set_epoch(state.epoch)
                loader = (
                    acc.skip_first_batches(self.train_loader, state.batches_done) if state.batches_done else self.train_loader
                )
                for batch, targets in loader:
                    with acc.accumulate(self.module):
                        loss = self.task.loss(self.module(batch), targets)
                        acc.backward(loss)
                        if acc.sync_gradients:
                            for p in frozen:
                                p.grad = None
                            if cfg.max_grad_norm > 0:
                                acc.clip_grad_norm_(self.module.parameters(), cfg.max_grad_norm)
                        self.optimizer.step()
                        if acc.sync_gradients:
                            self.scheduler.step()
                        self.optimizer.zero_grad()
                    state.batches_done += 1
                    samples += len(targets) * acc.num_processes
                    self._loss_sum += loss.detach().to(self._loss_sum.dtype)  # stays on the device: no sync per step
                    self._loss_count += 1
                    if acc.sync_gradients:
                        state.global_step += 1
                        bar.update(1)
                        if state.global_step % cfg.logging_steps == 0:
                            rate = samples / max(time.time() - started, 1e-9)
                            bar.set_postfix(loss=f"{loss.item():.4f}", samples_per_s=f"{rate:.1f}")
                        if cfg.save_steps and state.global_step % cfg.save_steps == 0:
                            self._save_checkpoint()
                        if state.global_step >= self.total_steps:
                            break
                        if self._should_stop(every=cfg.logging_steps):
                            return self._save_on_interrupt()
                train_loss = self._epoch_train_loss()
                if self._end_epoch(train_loss, time.time() - started, samples):
                    break
            return False
        finally:
            bar.close()

    def _reset_epoch_loss(self) -> None:
        """Start summing this process's training losses afresh."""
        device = self.accelerator.device
        dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        self._loss_sum = torch.zeros((), dtype=dtype, device=device)
        self._loss_count = 0

    def _epoch_loss_totals(self) -> tuple[float, int]:
        """Training-loss sum and batch count of the epoch so far, over all processes and across a resume."""
        count = torch.tensor(float(self._loss_count), dtype=self._loss_sum.dtype, device=self._loss_sum.device)
        local = torch.stack([self._loss_sum, count])
        total = self.accelerator.reduce(local, reduction="sum") if self.accelerator.num_processes > 1 else local
        return self.state.epoch_loss_sum + float(total[0]), self.state.epoch_loss_count + int(total[1])

    def _epoch_train_loss(self) -> float:
        """Mean training loss of the epoch that just ended (batches before a resume included)."""
        loss_sum, count = self._epoch_loss_totals()
        self.state.epoch_loss_sum, self.state.epoch_loss_count = 0.0, 0
        self._reset_epoch_loss()
        return loss_sum / count if count else float("nan")

    @contextlib.contextmanager
    def _deferred_interrupts(self) -> Iterator[None]:
        """The first Ctrl-C (or SIGTERM) asks the loop to stop after the current step and save a checkpoint;
        a second Ctrl-C stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:
            if self._stop_requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_requested = True

        for sig in previous:
            signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _should_stop(self, every: int = 1) -> bool:
        """Whether any process was asked to stop (all processes agree, so they stop at the same step).

        With several processes the flags are summed over all of them, a host sync: done only every
        `every` optimizer steps (and at epoch starts), the same steps on every process.
        """
        acc = self.accelerator
        if acc.num_processes == 1:
            return self._stop_requested
        if self.state.global_step % every:
            return False
        flag = torch.tensor([1.0 if self._stop_requested else 0.0], device=acc.device)
        return bool(acc.reduce(flag, reduction="sum").item() > 0)

    def _save_on_interrupt(self) -> bool:
        """Checkpoint the current step (unless just saved) for `--resume`; True for the loop's return."""
        if self._saved_step != self.state.global_step:
            self._save_checkpoint()
        return True

    def _set_train_mode(self) -> None:
        """Training mode, but a frozen backbone stays in eval mode (BatchNorm statistics and dropout frozen)."""
        self.module.train()
        if self.strategy.freezes_backbone:
            self.model.backbone.eval()

    def _frozen_this_epoch(self) -> list[nn.Parameter]:
        """Parameters whose updates the strategy drops this epoch (gradual unfreezing)."""
        note = self.strategy.epoch_note(self.model, self.state.epoch, self.cfg)
        if note:
            self._log(f"Epoch {self.state.epoch + 1}: {note}.")
        return self.strategy.frozen_parameters(self.model, self.state.epoch, self.cfg)

    def _end_epoch(self, train_loss: float, seconds: float, samples: int) -> bool:
        """Evaluate, record metrics, keep the best weights, checkpoint; True when early stopping says stop."""
        cfg, state = self.cfg, self.state
        results = self.evaluate()
        state.epoch += 1
        state.batches_done = 0
        record = {
            "epoch": state.epoch,
            "step": state.global_step,
            "train_loss": train_loss,
            "learning_rate": self.scheduler.get_last_lr()[0],
            **{k: v for k, v in results.items() if not isinstance(v, (dict, list))},
            "epoch_time_s": round(seconds, 3),
            "train_samples_per_second": round(samples / max(seconds, 1e-9), 2),
        }
        state.history.append(record)
        if self.main:  # written each epoch, so a long run can be followed (and a crashed one read)
            self._write_metrics()
        self._log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        if self.accelerator.trackers:
            self.accelerator.log({k: v for k, v in record.items() if k != "epoch"}, step=state.global_step)
        if self.metric not in results:
            raise ConfigError(
                f"metric_for_best_model {self.metric!r} is not computed for task {cfg.task}; "
                f"choose one of {', '.join(k for k in results if not isinstance(results[k], (dict, list)))}."
            )
        value = results[self.metric]
        if is_better(self.metric, value, state.best_metric, cfg.greater_is_better):
            state.best_metric, state.best_epoch, state.bad_epochs = value, state.epoch, 0
            state.best_results = {"epoch": state.epoch, **results}
            self._save_best()
        else:
            state.bad_epochs += 1
        self._save_checkpoint()
        if cfg.early_stopping_patience and state.bad_epochs >= cfg.early_stopping_patience:
            self._log(f"Early stopping: {self.metric} did not improve for {state.bad_epochs} epochs.")
            return True
        return False

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Exact evaluation on every process count: gather_for_metrics drops the padding duplicates."""
        acc = self.accelerator
        self.module.eval()
        all_logits, all_targets = [], []
        for batch, targets in self.eval_loader:
            logits = self.module(batch)
            logits, targets = acc.gather_for_metrics((logits.float(), targets))
            all_logits.append(logits.cpu())
            all_targets.append(targets.cpu())
        self._set_train_mode()
        logits, targets = torch.cat(all_logits), torch.cat(all_targets)
        loss = self.task.loss(logits, targets).item()
        results = {"eval_loss": loss, "eval_samples": len(targets)}
        results.update(self.task.compute_metrics(logits, targets, self.data.labels, self.model.threshold))
        return results

    # ------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self) -> None:
        """save_state into a staging dir, then rename it: a crash never leaves a checkpoint that looks complete."""
        acc, state = self.accelerator, self.state
        loss_sum, loss_count = self._epoch_loss_totals() if state.batches_done else (0.0, 0)
        final = self.checkpoints / f"checkpoint-{state.global_step}"
        staging = self.checkpoints / f"{STAGING_PREFIX}{state.global_step}"
        if self.main:
            shutil.rmtree(staging, ignore_errors=True)
        needed = self._checkpoint_bytes()
        with self._disk_full(final.name, self.checkpoints, needed, staging=staging if self.main else None):
            if self.main:
                self.checkpoints.mkdir(parents=True, exist_ok=True)
            acc.wait_for_everyone()
            acc.save_state(str(staging))
            acc.wait_for_everyone()
            if self.main:
                saved = {**state.__dict__, "epoch_loss_sum": loss_sum, "epoch_loss_count": loss_count}
                _write_atomic(staging / STATE_NAME, json.dumps(saved, indent=2))
                if final.exists():
                    shutil.rmtree(final)
                os.replace(staging, final)
        if self.main:
            for old in _checkpoints(self.checkpoints)[: -self.cfg.save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
            self._prune_best()
        self._saved_step = state.global_step
        acc.wait_for_everyone()

    def _checkpoint_bytes(self) -> int:
        """About how many bytes a checkpoint takes: the saved module and optimizer tensors, or the last checkpoint."""
        estimate = _tensor_bytes(self.module.state_dict(), self.optimizer.state_dict())
        existing = _checkpoints(self.checkpoints)
        if existing:
            estimate = max(estimate, sum(f.stat().st_size for f in existing[-1].rglob("*") if f.is_file()))
        return estimate

    @contextlib.contextmanager
    def _disk_full(self, what: str, directory: Path, needed: int, staging: Path | None = None) -> Iterator[None]:
        """Turn a full disk while writing `what` into `directory` into a HubtlError that says so and what to do;
        `staging` (what the failed write left) is removed on any error."""
        try:
            yield
        except Exception as err:
            full = not isinstance(err, HubtlError) and _is_disk_full(err, directory, needed)
            if staging is not None and staging.is_dir():
                shutil.rmtree(staging, ignore_errors=True)
            elif staging is not None:
                staging.unlink(missing_ok=True)
            if not full:
                raise
            free = _free_bytes(directory)
            room = (
                f"needs about {_size(needed)} but only {_size(free)} are free there"
                if free < needed
                else f"was refused for lack of space ({_size(free)} free: a quota or the inodes may be used up)"
            )
            _release_frames(err)
            existing = _checkpoints(self.checkpoints)
            # the best weights live in checkpoints/: resuming elsewhere needs the whole output dir moved
            todo = (
                f"Free space there and rerun the same command with --resume to continue from {existing[-1]}, which is "
                f"intact; or move {self.output_dir} to a disk with room and rerun with --output_dir set to its new "
                "place and --resume."
                if existing
                else "Free space there, or set output_dir to a disk with room, and rerun the same command (no "
                "checkpoint was completed yet, so training starts again)."
            )
            raise HubtlError(f"The disk is full: writing {what} to {directory} {room}. {todo}") from err

    def _resume(self, checkpoint: Path) -> None:
        """Restore weights, optimizer, scheduler, RNG and progress from a checkpoint."""
        self.accelerator.load_state(str(checkpoint))
        saved = json.loads((checkpoint / STATE_NAME).read_text())
        self.state = _State(**saved)
        self._saved_step = self.state.global_step
        self._log(f"Resumed from {checkpoint} at step {self.state.global_step} (epoch {self.state.epoch + 1}).")

    def _save_best(self) -> None:
        """Keep the best weights so far (safetensors, written atomically) for the end of the run.

        One file per best epoch: the previous best is only removed once a checkpoint that records the new
        best is complete, so a run killed in between resumes with its recorded best weights still on disk.
        """
        from safetensors.torch import save_model

        if self.main:
            best = self.checkpoints / BEST_DIR
            target = _best_weights(self.checkpoints, self.state.epoch)
            tmp = best / f".{target.name}.tmp"
            with self._disk_full("the best weights", best, _tensor_bytes(self.model.state_dict()), staging=tmp):
                best.mkdir(parents=True, exist_ok=True)
                save_model(self.model, str(tmp))
                os.replace(tmp, target)
        self.accelerator.wait_for_everyone()

    def _prune_best(self) -> None:
        """Remove best-weights files other than the one the latest complete checkpoint records."""
        keep = _best_weights(self.checkpoints, self.state.best_epoch) if self.state.best_epoch else None
        for path in (self.checkpoints / BEST_DIR).glob("model-epoch*.safetensors"):
            if path != keep:
                path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ output

    def _finish(self, runtime: float) -> TrainResult:
        """Load the best weights, save the model with its training record and card, push if asked."""
        from safetensors.torch import load_model

        acc, cfg, state = self.accelerator, self.cfg, self.state
        acc.wait_for_everyone()
        best = _best_weights(self.checkpoints, state.best_epoch) if state.best_epoch else None
        if best is not None and best.is_file():
            load_model(self.model, str(best), device="cpu" if acc.device.type == "cpu" else str(acc.device))
        self.strategy.before_save(self.model)
        results = state.best_results or (dict(state.history[-1]) if state.history else {})
        if self.main:
            from .cards import write_model_card

            self.model.to("cpu")
            with self._disk_full("the final model", self.output_dir, _tensor_bytes(self.model.state_dict())):
                self.model.save_pretrained(self.output_dir)
            training = self.output_dir / TRAINING_DIR
            self._write_metrics()
            record = {
                training / "eval_results.json": json.dumps({**results, "labels": self.data.labels}, indent=2),
                training / "summary.json": json.dumps(self._summary(runtime), indent=2),
            }
            needed = sum(len(text.encode()) for text in record.values())
            with self._disk_full("the training record and model card", training, needed):
                for path, text in record.items():
                    _write_atomic(path, text)
                write_model_card(self.output_dir)
            self._log(f"Saved the fine-tuned model to {self.output_dir}.")
            if cfg.push_to_hub:
                from .hub.push import push_output_dir

                url = push_output_dir(self.output_dir, cfg.push_to_hub, private=cfg.hub_private_repo)
                self._log(f"Pushed to {url}.")
        acc.wait_for_everyone()
        return TrainResult(self.output_dir, results, state.history)

    def _write_metrics(self) -> None:
        """training/metrics.jsonl: one JSON line per finished epoch."""
        lines = "".join(json.dumps(r) + "\n" for r in self.state.history)
        with self._disk_full("the training record", self.output_dir / TRAINING_DIR, len(lines.encode())):
            _write_atomic(self.output_dir / TRAINING_DIR / "metrics.jsonl", lines)

    def _summary(self, runtime: float) -> dict[str, Any]:
        """The facts of the run the model card reports."""
        cfg = self.cfg
        return {
            "dataset": cfg.dataset.path,
            "dataset_name": cfg.dataset.name,
            "train_samples": len(self.data.train),
            "eval_samples": len(self.data.eval),
            "skipped_files": self.data.skipped,
            "strategy": cfg.strategy,
            "feature_cache": self.use_cache,
            "best_epoch": self.state.best_epoch,
            "metric_for_best_model": self.metric,
            "total_steps": self.state.global_step,
            "runtime_s": round(runtime, 2),
            "setup_s": round(self.setup_seconds, 2),
            "world_size": self.accelerator.num_processes,
            "mixed_precision": cfg.mixed_precision,
            "versions": _versions(),
        }

    def _log(self, message: str) -> None:
        """Log on the main process only."""
        if self.main:
            logger.info(message)


def _best_weights(checkpoints: Path, epoch: int) -> Path:
    """Where the weights of the best epoch so far are kept."""
    return checkpoints / BEST_DIR / f"model-epoch{epoch}.safetensors"


def _subdirs(directory: Path) -> list[Path]:
    """The folders directly inside `directory` (none when it does not exist)."""
    return [p for p in directory.iterdir() if p.is_dir()] if directory.is_dir() else []


def _tensor_bytes(*objects: Any) -> int:
    """Bytes of the distinct tensors inside (nested dicts, lists and tuples of) objects."""
    sizes: dict[tuple[int, int], int] = {}
    pending = list(objects)
    while pending:
        item = pending.pop()
        if isinstance(item, torch.Tensor):
            sizes[(item.data_ptr(), item.nbytes)] = item.nbytes
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
    return sum(sizes.values())


def _free_bytes(directory: Path) -> int:
    """Free bytes on the filesystem that holds `directory` (or its nearest existing parent)."""
    path = directory.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def _is_disk_full(err: BaseException, directory: Path, needed: int) -> bool:
    """Whether `err`, raised while writing about `needed` bytes into `directory`, comes from a full disk."""
    chain, seen, short_write = [err], set(), False
    while chain:
        e = chain.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return True
        # safetensors (Rust) keeps only the text: "I/O error: No space left on device (os error 28)"
        if any(f"(os error {code})" in str(e) for code in DISK_FULL_ERRNOS):
            return True
        short_write |= isinstance(e, RuntimeError) and any(m in str(e) for m in SHORT_WRITE_MESSAGES)
        chain += [e.__cause__, e.__context__]
    try:
        return short_write and _free_bytes(directory) < needed
    except OSError:
        return False


def _release_frames(err: BaseException) -> None:
    """Drop the locals of the frames a failed write left in `err`'s chain, so files they hold open (torch's
    zip writer keeps its half-written file open) are closed and their space is freed at once."""
    chain, seen = [err], set()
    while chain:
        e = chain.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        tb = e.__traceback__
        while tb is not None:
            # a suspended generator's frame may still be in use: clearing it would close the generator
            if not tb.tb_frame.f_code.co_flags & _GENERATOR_FLAGS:
                with contextlib.suppress(RuntimeError):  # a frame still executing keeps its locals
                    tb.tb_frame.clear()
            tb = tb.tb_next
        chain += [e.__cause__, e.__context__]


def _size(n: int) -> str:
    """A byte count for people: '4,521,344 bytes (4.3 MiB)'."""
    if n < 1024:
        return f"{n:,} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024:
            break
    return f"{n:,} bytes ({value:.1f} {unit})"


def _checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints in step order (staging dirs are never listed)."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.glob("checkpoint-*") if p.is_dir() and (p / STATE_NAME).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def _metric_name(name: str) -> str:
    """Accept 'accuracy' as well as 'eval_accuracy', as transformers does."""
    return metric_key(name)


def _tracker(report_to: str) -> str | None:
    """TensorBoard through Accelerate's trackers when asked for, or when installed and report_to is auto."""
    if report_to == "none":
        return None
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        if report_to == "tensorboard":
            raise ConfigError("report_to: tensorboard needs `pip install tensorboard`.") from None
        return None
    return "tensorboard"


def _flat_hparams(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten the config into scalars for TensorBoard's hparams."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat_hparams(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float, str, bool)):
            flat[prefix + key] = value
        elif value is not None:
            flat[prefix + key] = str(value)
    return flat


def _versions() -> dict[str, str]:
    """Versions of the libraries that produced the model."""
    found = {"python": sys.version.split()[0]}
    for name in ("hubtl", "torch", "timm", "transformers", "accelerate", "datasets", "huggingface_hub", "peft"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _write_atomic(path: Path, text: str) -> None:
    """Write a text file through a temp file and rename, so readers never see half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    """`python -m hubtl.train CONFIG.yaml [--key value ...]`, also under `accelerate launch`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: hubtl train CONFIG.yaml [--key value ...] [--resume] [--strict]")
        return 0 if argv else 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        logger.setLevel(logging.INFO)
    try:
        result = train(argv[0], argv[1:])
    except HubtlError as err:
        print(f"hubtl: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before training started (or a second Ctrl-C while finishing)
        print("hubtl: interrupted.", file=sys.stderr)
        return 130
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
