"""The trainer: one fine-tuning run on Accelerate, from a config to a saved model folder (and the Hub).

It reads top to bottom like Accelerate's `examples/nlp_example.py`: seed, data, model (the strategy
decides what trains), optimizer and scheduler, `accelerator.prepare`, then epochs of
accumulate / backward / clip / step with `gather_for_metrics` evaluation, checkpoints through
`save_state` / `load_state`, and the final save. The task gives the loss and metrics.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..backbones.registry import check_backbone_name, get_plugin, split_backbone_name
from ..config import TrainingConfig, load_config
from ..data import TransferData, check_source, load_transfer_data, make_collate
from ..data.loader import default_num_workers, loader_options
from ..data.lengths import LengthGroupedSampler, input_lengths, longest_first
from ..data.streaming import StreamLoader, TrainStream, load_streamed_data, state_file
from ..errors import ConfigError, HubtlError
from ..layout import TRAINING_DIR, TrainingRecord
from ..metrics import is_better, metric_key
from ..model import TransferModel
from ..objectives import Objective
from ..strategies import get_strategy
from ..tasks import get_task
from .checkpoints import Checkpoints, TrainerState
from .disk import tensor_bytes
from .feature_cache import FeatureHead, cache_decision, feature_collate
from .interrupts import StopRequests
from .parallel import allow_fsdp_on_cpu, check_fsdp_config, full_state_dict, is_sharded, set_wrap_policy
from ..processes import agree_on_data, close_process_group_at_exit, main_process_first
from .record import flat_hparams, kept_epoch_message, metric_rows, run_summary, tracker_metrics, trackers

logger = logging.getLogger("hubtl")

@dataclass
class TrainResult:
    """What a run produced: the saved model directory, the final evaluation, per-epoch metrics."""

    output_dir: Path
    eval_results: dict[str, Any]
    metrics: list[dict[str, Any]]
    interrupted: bool = False


def train(config: TrainingConfig | dict[str, Any] | str | Path, overrides: list[str] | None = None) -> TrainResult:
    """Run one fine-tuning job from a config (object, dict or YAML path) and return what it produced."""
    if isinstance(config, TrainingConfig):
        cfg = load_config(config.to_dict(), overrides) if overrides else config
    else:
        cfg = load_config(config, overrides)
    return Trainer(cfg).run()


#: the key of `run_shape` that describes the model a checkpoint holds (`Trainer._model_shape`)
MODEL_SHAPE = "model"


class Trainer:
    """One run: data, model, optimizer, epochs, checkpoints, the output folder.

    `data` and `model` replace what the config describes (e.g. pre-made tensors, a model built in code);
    the config's strategy is still applied to the model.
    """

    def __init__(self, config: TrainingConfig, data: TransferData | None = None, model: TransferModel | None = None) -> None:
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from accelerate.utils import DataLoaderConfiguration

        # AcceleratorState is a per-process singleton that refuses a second run with other settings
        # (e.g. mixed_precision) in the same process; the process group (PartialState) is kept.
        AcceleratorState._reset_state(reset_partial_state=False)
        allow_fsdp_on_cpu()
        self.cfg = cfg = config
        self.task = get_task(cfg.task)
        self.strategy = get_strategy(cfg.strategy)
        self.output_dir = Path(cfg.output_dir)
        self.trackers = trackers(cfg.report_to)
        self.accelerator = Accelerator(
            mixed_precision=cfg.mixed_precision,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            log_with=self.trackers or None,
            project_dir=str(self.output_dir / TRAINING_DIR) if self.trackers else None,
            # non_blocking: host-to-device copies of pinned batches overlap the step (CUDA)
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, non_blocking=True),
        )
        self.main = self.accelerator.is_main_process
        # what the run really computes in: Accelerate leaves fp16 inert on a CPU (float32, without a word)
        self.precision = cfg.mixed_precision if cfg.mixed_precision == "no" or self.accelerator.native_amp else "no"
        if self.precision != cfg.mixed_precision and self.main:
            logger.warning("mixed_precision: %s has no effect on %s: this run trains in float32 (bf16 runs on CPUs).",
                           cfg.mixed_precision, self.accelerator.device.type.upper())  # fmt: skip
        self.sharded = is_sharded(self.accelerator)  # FSDP: `accelerate launch --use_fsdp` or an Accelerate config
        self.checkpoints = Checkpoints(self.output_dir, self.accelerator, cfg.save_total_limit)
        self.state = TrainerState()
        self.phases: dict[str, float] = {}
        self.feature_sources: dict[str, str] = {}  # split -> 'cache' | 'computed' | 'memory' (linear probes)
        self._given_data, self._given_model = data, model
        self.stops = StopRequests()  # the first Ctrl-C (SIGINT) or SIGTERM during the loop asks for a checkpoint
        self._saved_step: int | None = None  # global step of the latest checkpoint written by this run
        self.stream: TrainStream | None = None  # dataset.streaming: this process's training stream (_build_loop)
        self._reset_epoch_loss()

    # ------------------------------------------------------------------ the run, top to bottom

    def run(self) -> TrainResult:
        """The whole run; Ctrl-C saves a checkpoint and returns with `interrupted` set."""
        from accelerate.utils import set_seed

        cfg = self.cfg
        started = time.time()
        resume_dir = self._preflight()
        stale = self.checkpoints.remove_stale_staging()
        if stale:
            self._log(f"Removed {len(stale)} staging folder(s) left by an interrupted run: {', '.join(map(str, stale))}.")
        set_seed(cfg.seed)
        with self._phase("data", "Loading and checking the data"):
            self.data = self._load_data()
            agree_on_data(self.accelerator, self.data)
        with self._phase("model", f"Building {cfg.backbone}"):
            self.model = self._build_model()
        self.use_cache = self._use_feature_cache()
        self.train_objective = self._training_objective()
        self._build_loop()
        shape = self._run_shape()
        if resume_dir is not None:
            self._resume(resume_dir, shape)
        self.state.run_shape = shape
        if self.main:
            record = TrainingRecord(config=cfg.to_dict())
            with self.checkpoints.disk_full("the training record", self.output_dir / TRAINING_DIR, 1 << 16):
                record.write(self.output_dir, parts=("config",))
        if self.trackers:  # `accelerator.trackers` stays empty until init_trackers: test the config instead
            self.accelerator.init_trackers("hubtl", config=flat_hparams(cfg.to_dict()))
        loop_started = time.time()
        self.setup_seconds = loop_started - started
        try:
            with self.stops.deferred():
                interrupted = self._loop()
        except KeyboardInterrupt:  # a second Ctrl-C: stop at once, without a checkpoint of this step
            self._log(
                f"Stopped at once (second interrupt). Rerun the same command with --resume to continue from the "
                f"latest checkpoint in {self.checkpoints.directory}."
            )
            return self._stopped()
        if interrupted:
            self._log(
                f"Interrupted at step {self.state.global_step}: saved checkpoint-{self.state.global_step} in "
                f"{self.checkpoints.directory}. Resume with `--resume` (rerun the same command with --resume)."
            )
            return self._stopped()
        self.phases["loop"] = time.time() - loop_started
        if self.stream is not None:
            self._stream_summary()
        result = self._finish(self.phases["loop"])
        self._end()
        return result

    def _preflight(self) -> Path | None:
        """Check the backbone name, the data paths and the output dir before reading any data; report every problem.

        Every process runs the same checks on the same config, so all of them stop here together, before
        they first wait for each other. Returns the checkpoint to resume from, if any.
        """
        cfg, problems = self.cfg, []
        checks = []
        if self._given_model is None:
            checks.append(lambda: check_backbone_name(cfg.backbone))
        if self._given_data is None:
            checks.append(lambda: check_source(cfg.dataset))
        if (cfg.dataset.unlabeled_split or cfg.dataset.unlabeled_files) and not self.strategy.reads_unlabeled:
            problems.append(ConfigError(
                f"dataset.unlabeled_split / unlabeled_files are read by strategies that train without labels (distill), "
                f"not by {cfg.strategy}. Set strategy: distill with a teacher, or remove them."
            ))
        checks.append(lambda: check_fsdp_config(self.accelerator, self.strategy))
        checks.append(lambda: _scheduler(cfg, torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), 100))
        for check in checks:
            try:
                check()
            except HubtlError as err:
                problems.append(err)
        resume_dir = None
        if not problems:  # a wrong path or name matters more than what the output dir holds
            try:
                resume_dir = self.checkpoints.resume_point(cfg.resume_from_checkpoint, cfg.overwrite_output_dir)
            except HubtlError as err:
                problems.append(err)
        if len(problems) == 1:
            raise problems[0]
        if problems:
            listed = "\n".join(f"  - {' '.join(str(p).split())}" for p in problems)
            raise ConfigError(f"The run cannot start; fix these {len(problems)} problems:\n{listed}")
        return resume_dir

    def _load_data(self) -> TransferData:
        """Load and check the dataset before any training starts (main process first, for the datasets cache)."""
        cfg = self.cfg
        if self._given_data is not None:
            return self._given_data
        plugin_name, model_name = split_backbone_name(cfg.backbone)
        modality = get_plugin(plugin_name).modality_of(model_name)
        # dataset.streaming: this process's shard of the train split as a stream, the eval split map-style
        load, shard = (
            (load_streamed_data, {"rank": self.accelerator.process_index, "world_size": self.accelerator.num_processes})
            if cfg.dataset.streaming else (load_transfer_data, {})
        )  # fmt: skip
        data = main_process_first(
            self.accelerator,
            lambda: load(
                cfg.dataset, task=cfg.task, modality=modality, labels=cfg.labels, num_outputs=cfg.num_outputs,
                seed=cfg.seed, strict=cfg.strict, progress=self._bars, **shard,
            )
        )  # fmt: skip
        trained = "streamed" if isinstance(data.train, TrainStream) else len(data.train)
        self._log(f"Data: {trained} training and {len(data.eval)} evaluation examples; labels {data.labels}.")
        return data

    def _build_model(self) -> TransferModel:
        """Create the backbone with its new head, then let the strategy decide what trains."""
        cfg = self.cfg
        model = self._given_model or TransferModel.from_backbone(
            cfg.backbone, labels=self.data.labels, task=cfg.task, pretrained=cfg.pretrained, num_outputs=cfg.num_outputs,
            dropout=cfg.head_dropout, hidden_dim=cfg.head_hidden_dim, **cfg.backbone_kwargs,
        )  # fmt: skip
        self.strategy.prepare(model, cfg)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        self.parameter_counts = (trainable, total)  # parameters only: buffers (BatchNorm statistics) apart
        self.base_model = cfg.base_model or getattr(model.backbone, "base_model", None)
        held = self.strategy.held_count(model, 0, cfg)
        first = f" ({trainable - held:,} in the first epoch)" if held else ""  # e.g. gradual unfreezing
        self._log(f"Model: {cfg.backbone}, strategy {cfg.strategy}: {trainable:,} of {total:,} parameters trainable{first}.")
        return model

    def _use_feature_cache(self) -> bool:
        """Cache backbone features when the strategy freezes the backbone and training transforms are deterministic."""
        deterministic = self.model.preprocessor(train=self.cfg.augment).deterministic
        streamed = isinstance(self.data.train, TrainStream)  # the cache needs a finite, fingerprinted split
        use, message = cache_decision(self.strategy.freezes_backbone, self.cfg.feature_cache, deterministic, streamed)
        if message:
            self._log(message)
        return use

    def _build_loop(self) -> None:
        """DataLoaders, optimizer and scheduler, prepared by Accelerate."""
        cfg, acc = self.cfg, self.accelerator
        if self.use_cache:
            count = len(self.data.train) + len(self.data.eval)
            with self._phase("features", f"Features of the frozen backbone for {count} examples"):
                self.model.to(acc.device)
                train_set = self._features("train", self.data.train)
                eval_set = self._features("eval", self.data.eval)
            module: nn.Module = FeatureHead(self.model.head)
            train_collate = eval_collate = feature_collate
            workers = 0
            sampler = eval_order = None
            if cfg.group_by_length:
                self._log("group_by_length: not needed here, the head trains on cached features (nothing is padded).")
        else:
            module = self.model
            train_set, eval_set, train_collate, eval_collate = self._datasets_and_collates()
            workers = self._num_workers()
            sampler = self._train_sampler(train_set) if cfg.group_by_length else None
            # texts evaluated longest first pad little (metrics are sums: the order does not change them)
            eval_order = longest_first(eval_set, self.model.preprocessor(train=False))
        generator = torch.Generator().manual_seed(cfg.seed)  # keeps worker seeding off the global RNG
        options = loader_options(workers, acc.device)
        # dataset.streaming: a StreamLoader (0 workers, its own device moves); not a DataLoader, so
        # `acc.prepare` below returns it untouched and the stream, sharded per process already, is not re-sharded
        self.stream = train_set if isinstance(train_set, TrainStream) else None
        train_loader = StreamLoader(train_set, cfg.per_device_train_batch_size, train_collate, acc.device) if self.stream else DataLoader(
            train_set, cfg.per_device_train_batch_size, shuffle=sampler is None, sampler=sampler, collate_fn=train_collate,
            generator=generator, **options,
        )  # fmt: skip
        eval_loader = DataLoader(
            eval_set, cfg.per_device_eval_batch_size, shuffle=False, sampler=eval_order, collate_fn=eval_collate,
            generator=torch.Generator().manual_seed(cfg.seed), **options,  # evaluating never draws from the training RNG
        )
        groups = self._param_groups()
        if self.use_cache:
            head_params = {id(p) for p in self.model.head.parameters()}
            groups = [g for g in groups if all(id(p) in head_params for p in g["params"])]
        optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        if self.sharded:
            units = set_wrap_policy(acc, module, [*self.model.backbone.layer_groups(), list(self.model.head.parameters())])
            self._log(f"FSDP over {acc.num_processes} process(es); each of these modules is one unit: {', '.join(units) or 'none'}.")
        self.module, self.optimizer, self.train_loader, self.eval_loader = acc.prepare(
            module, optimizer, train_loader, eval_loader
        )
        # what the best-weights file holds: the model, or only the head when it trains on cached features
        self.kept_module = acc.unwrap_model(self.module)
        # a stream has no length: the run is one epoch of max_steps (the config requires max_steps)
        self.batches_per_epoch = cfg.max_steps * cfg.gradient_accumulation_steps if self.stream else len(self.train_loader)
        self.steps_per_epoch = max(1, math.ceil(self.batches_per_epoch / cfg.gradient_accumulation_steps))
        self.total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * self.steps_per_epoch)
        self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.scheduler = _scheduler(cfg, self.optimizer, self.total_steps)
        acc.register_for_checkpointing(self.scheduler)
        self.metric = metric_key(cfg.metric_for_best_model or self.task.default_metric)

    def _features(self, split: str, dataset: Any) -> Any:
        """One split's frozen-backbone features: from the feature store when an earlier run computed them, else computed."""
        from ..features import backbone_features

        cfg = self.cfg
        found = backbone_features(
            self.accelerator, self.model.backbone, dataset, self.model.preprocessor(train=False), task=cfg.task,
            batch_size=cfg.per_device_eval_batch_size, num_workers=self._num_workers(), seed=cfg.seed,
            describe={"backbone": cfg.backbone, "dataset": cfg.dataset.source, "split": split},
            progress=f"features ({split})" if self._bars else None,
        )  # fmt: skip
        self.feature_sources[split] = found.source
        where = {
            "cache": f"from the feature cache ({found.key[:12] if found.key else ''}): the backbone did not run",
            "computed": f"computed and stored in the feature cache ({found.key[:12] if found.key else ''})",
            "memory": "computed (kept in memory: this data has no fingerprint, or the cache could not be written)",
        }[found.source]
        self._log(f"Features of the {split} split ({len(dataset)} examples): {where}.")
        return found.dataset

    # Hooks a run with another objective overrides (hubtl.pretraining.PretrainingTrainer); the loop stays this one.

    def _training_objective(self) -> Objective:
        """What the loop minimises: the strategy's objective (e.g. distillation), else the task's loss on the labels."""
        found = self.strategy.objective(self.model, self.data, self.cfg, self.accelerator)
        return found or Objective(self.task, self.data.train)

    def _datasets_and_collates(self) -> tuple[Any, Any, Any, Any]:
        """(train set, eval set, train collate_fn, eval collate_fn) the DataLoaders read; collates give (batch, targets)."""
        cfg = self.cfg
        train_collate = self.train_objective.collate(self.model.preprocessor(train=cfg.augment), cfg.task)
        eval_collate = make_collate(self.model.preprocessor(train=False), cfg.task)
        return self.train_objective.train_dataset, self.data.eval, train_collate, eval_collate

    def _param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups (the strategy's)."""
        return self.strategy.param_groups(self.model, self.cfg)

    def _loss(self, batch: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch: the training objective's (the task's loss on the labels by default)."""
        return self.train_objective.loss(self.module, batch, targets)

    def _train_sampler(self, train_set: Any) -> LengthGroupedSampler:
        """group_by_length: training batches of texts of similar length, reshuffled per epoch from the seed."""
        lengths = input_lengths(train_set, self.model.preprocessor(train=self.cfg.augment))
        if lengths is None:
            raise ConfigError(
                "group_by_length batches texts of similar length together, and this run's training inputs have no "
                "length (images are all resized alike): remove group_by_length."
            )
        return LengthGroupedSampler(lengths, self.cfg.per_device_train_batch_size, self.cfg.seed)

    def _run_shape(self) -> dict[str, Any]:
        """What fixes the run's steps and learning-rate schedule: a resume with other values continues another run."""
        cfg = self.cfg
        train = self.data.train
        examples = len(train) if hasattr(train, "__len__") and not isinstance(train, TrainStream) else None
        return {
            "training examples": examples, "per_device_train_batch_size": cfg.per_device_train_batch_size,
            "gradient_accumulation_steps": cfg.gradient_accumulation_steps, "processes": self.accelerator.num_processes,
            "num_train_epochs": cfg.num_train_epochs, "max_steps": cfg.max_steps,
            # the optimizer and scheduler states come back from the checkpoint: these take no effect on a resume
            "learning_rate": cfg.learning_rate, "lr_scheduler_type": cfg.lr_scheduler_type, "warmup_ratio": cfg.warmup_ratio,
            "warmup_steps": cfg.warmup_steps, "lr_scheduler_kwargs": cfg.lr_scheduler_kwargs,
            MODEL_SHAPE: self._model_shape(),
        }  # fmt: skip

    def _model_shape(self) -> dict[str, Any]:
        """What fixes the model a checkpoint holds, what its outputs mean and its format: a resume must match it."""
        cfg = self.cfg
        keys = ("backbone", "backbone_kwargs", "task", "num_outputs", "head_hidden_dim", "strategy", "lora_r", "lora_target_modules")
        # a sharded (FSDP) run's checkpoint is in another format than a plain one's
        return {"labels": getattr(self.data, "labels", None), **{k: getattr(cfg, k, None) for k in keys}, "fsdp": self.sharded}

    def _num_workers(self) -> int:
        """DataLoader workers: the config's number, else hubtl's default for the modality and the CPUs per process."""
        return default_num_workers(self.data.modality, self.cfg.dataloader_num_workers)

    def _resume(self, checkpoint: Path, shape: dict[str, Any]) -> None:
        """Restore weights, optimizer, scheduler, RNG and progress from a checkpoint; warn if `shape` (this run's
        `_run_shape`) differs from the run that wrote it; refuse one that holds another model."""
        saved = self.checkpoints.saved_state(checkpoint)
        changed = _changes(saved.run_shape.get(MODEL_SHAPE, {}), shape[MODEL_SHAPE])
        if changed:
            raise ConfigError(
                f"{checkpoint} was written by a run with {', '.join(changed)}: this run cannot continue it (another "
                "model, outputs that mean other labels, or another checkpoint format). Resume with those settings (the "
                "run's training/config.yaml has them; fsdp: the same accelerate launch), or start afresh with "
                "--overwrite_output_dir true or another output_dir."
            )
        self.checkpoints.load(checkpoint)
        self.state = saved
        if self.stream is not None:  # this process's stream position, buffer and RNG (stream_state_<rank>.json)
            path = checkpoint / state_file(self.accelerator.process_index)
            if not path.is_file():
                raise ConfigError(
                    f"{checkpoint} holds no {path.name}: it was not written by a streamed run with this number of "
                    "processes. Resume with the same config and number of processes, or start afresh."
                )
            self.stream.load_state_dict(json.loads(path.read_text()))
        self._saved_step = self.state.global_step
        self._log(f"Resumed from {checkpoint} at step {self.state.global_step} (epoch {self.state.epoch + 1}).")
        changed = _changes({k: v for k, v in saved.run_shape.items() if k != MODEL_SHAPE}, shape)
        if changed and self.main:  # checkpoints older than run_shape record nothing to compare
            logger.warning(
                "The checkpoint was written by a run with %s: the step count, the optimizer state and the learning "
                "rate it started from come from the checkpoint (a new learning_rate takes no effect), while the "
                "schedule's shape is computed for this run's length and settings from step %d on, so this is not the "
                "run the checkpoint began. Resume with the same settings for an exact continuation, or start afresh.",
                ", ".join(changed), self.state.global_step,
            )

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
                if self.stops.agreed(self.accelerator, self.state.global_step):
                    return self._save_on_interrupt()
                started, samples = time.time(), 0
                self._window = (started, 0)  # (start time, samples) of the current step record
                self._reset_epoch_loss()
                self._set_train_mode()
                frozen = self._frozen_this_epoch()
                self.train_loader.set_epoch(state.epoch)
                loader = (  # a stream resumes at its saved position: nothing to skip
                    acc.skip_first_batches(self.train_loader, state.batches_done)
                    if state.batches_done and self.stream is None else self.train_loader
                )  # fmt: skip
                for batch, targets in loader:
                    with acc.accumulate(self.module):
                        loss = self._loss(batch, targets)
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
                    self._window = (self._window[0], self._window[1] + len(targets) * acc.num_processes)
                    if acc.sync_gradients:
                        state.global_step += 1
                        bar.update(1)
                        if state.global_step % cfg.logging_steps == 0:
                            row = self._log_step(self.batches_per_epoch)
                            bar.set_postfix(loss=f"{row['loss']:.4f}", samples_per_s=f"{row['train_samples_per_second']:.1f}")
                        if cfg.eval_strategy == "steps" and state.global_step % cfg.eval_steps == 0 and (
                            state.global_step < self.total_steps and state.batches_done < self.batches_per_epoch
                        ):  # the epoch's end evaluates anyway
                            self._log_eval(self.batches_per_epoch)
                        if cfg.save_steps and state.global_step % cfg.save_steps == 0:
                            self._save_checkpoint()
                        if state.global_step >= self.total_steps:
                            break
                        if self.stops.agreed(acc, state.global_step, every=cfg.logging_steps):
                            return self._save_on_interrupt()
                if self._end_epoch(self._epoch_train_loss(), time.time() - started, samples):
                    break
            return False
        finally:
            bar.close()

    def _set_train_mode(self) -> None:
        """Training mode, but a backbone the strategy freezes stays in eval mode (BatchNorm statistics, dropout)."""
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
        row = {
            "kind": "epoch",
            "epoch": state.epoch,
            "step": state.global_step,
            "train_loss": train_loss,
            "learning_rate": self.scheduler.get_last_lr()[0],
            **{k: v for k, v in results.items() if not isinstance(v, (dict, list))},
            "epoch_time_s": round(seconds, 3),
            "train_samples_per_second": round(samples / max(seconds, 1e-9), 2),
        }
        state.history.append(row)
        if self.main:  # written each epoch, so a long run can be followed (and a crashed one read)
            self._write_record(("metrics",))
        self._log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "kind"))
        if self.accelerator.trackers:
            self.accelerator.log(tracker_metrics(row), step=state.global_step)
        if self.metric not in results:
            raise ConfigError(
                f"metric_for_best_model {self.metric!r} is not computed for task {cfg.task}; "
                f"choose one of {', '.join(k for k in results if not isinstance(results[k], (dict, list)))}."
            )
        improved = is_better(self.metric, results[self.metric], state.best_metric, cfg.greater_is_better)
        # early stopping counts epochs without a better metric; a tie still changes the kept weights when its
        # eval_loss is lower (or equal: the later epoch)
        state.bad_epochs = 0 if improved else state.bad_epochs + 1
        if improved or self._wins_tie(results):
            state.best_metric, state.best_epoch = results[self.metric], state.epoch
            state.best_results = {"epoch": state.epoch, **results}
            gathered = full_state_dict(self.accelerator, self.module) if self.sharded else None
            self.checkpoints.save_best(self.kept_module, state.epoch, gathered)
        self._save_checkpoint()
        if cfg.early_stopping_patience and state.bad_epochs >= cfg.early_stopping_patience:
            self._log(f"Early stopping: {self.metric} did not improve for {state.bad_epochs} epochs.")
            return True
        return False

    def _wins_tie(self, results: dict[str, Any]) -> bool:
        """Whether this epoch ties the kept one on the main metric with no higher eval_loss (the later epoch wins)."""
        state = self.state
        tied = state.best_metric is not None and results[self.metric] == state.best_metric
        return tied and results["eval_loss"] <= (state.best_results or {}).get("eval_loss", float("inf"))

    def _log_step(self, batches_per_epoch: int) -> dict[str, Any]:
        """A step record: the mean training loss since the last one, the learning rate and the throughput."""
        state = self.state
        total, count = self._epoch_loss_totals()  # a host sync: the same steps on every process
        window_loss = (total - state.logged_loss_sum) / max(count - state.logged_loss_count, 1)
        state.logged_loss_sum, state.logged_loss_count = total, count
        started, samples = self._window
        now = time.time()
        self._window = (now, 0)
        row = {
            "kind": "step",
            "step": state.global_step,
            "epoch": round(state.epoch + state.batches_done / max(batches_per_epoch, 1), 4),
            "loss": window_loss,
            "learning_rate": self.scheduler.get_last_lr()[0],
            "train_samples_per_second": round(samples / max(now - started, 1e-9), 2),
        }
        state.log.append(row)
        if self.accelerator.trackers:
            self.accelerator.log(tracker_metrics(row), step=state.global_step)
        return row

    def _log_eval(self, batches_per_epoch: int) -> None:
        """An evaluation within the epoch (eval_strategy: steps), recorded beside the step records."""
        state = self.state
        results = self.evaluate()
        row = {
            "kind": "eval",
            "step": state.global_step,
            "epoch": round(state.epoch + state.batches_done / max(batches_per_epoch, 1), 4),
            **{k: v for k, v in results.items() if not isinstance(v, (dict, list))},
        }
        state.log.append(row)
        self._log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "kind"))
        if self.accelerator.trackers:
            self.accelerator.log(tracker_metrics(row), step=state.global_step)
        if self.main:
            self._write_record(("metrics",))

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Exact evaluation on every process count: gather_for_metrics drops the padding duplicates."""
        from tqdm.auto import tqdm

        acc = self.accelerator
        self.module.eval()
        # metrics as counts and sums updated per batch (the task's accumulator): memory independent of the eval set
        metrics = self.task.metric_accumulator(self.data.labels, self.model.threshold)
        loss_sum, count = 0.0, 0
        batches = tqdm(self.eval_loader, desc="evaluate", unit="batch", leave=False, disable=not self._bars)
        for batch, targets in batches:
            logits = self.module(batch)
            logits, targets = acc.gather_for_metrics((logits.float(), targets))
            if not len(targets):
                continue
            loss_sum += self.task.loss(logits, targets).item() * len(targets)  # the task's losses are means per example
            count += len(targets)
            metrics.update(logits, targets)
        self._set_train_mode()
        results = {"eval_loss": loss_sum / count if count else float("nan"), "eval_samples": count}
        results.update(metrics.compute())
        return results

    # ------------------------------------------------------------------ the epoch's training loss

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
        self.state.logged_loss_sum, self.state.logged_loss_count = 0.0, 0
        self._reset_epoch_loss()
        return loss_sum / count if count else float("nan")

    # ------------------------------------------------------------------ checkpoints and interrupts

    def _save_checkpoint(self) -> None:
        """A resumable checkpoint of this step (see `Checkpoints.save`)."""
        loss_sum, loss_count = self._epoch_loss_totals() if self.state.batches_done else (0.0, 0)
        saved = {**asdict(self.state), "epoch_loss_sum": loss_sum, "epoch_loss_count": loss_count}
        own = {} if self.stream is None else {  # each process's stream position
            state_file(self.accelerator.process_index): json.dumps(self.stream.state_dict())
        }
        self.checkpoints.save(saved, self.module, self.optimizer, process_files=own)
        self._saved_step = self.state.global_step

    def _stream_summary(self) -> None:
        """summary.json's `streaming`: what each process read from its shard (gathered on every process)."""
        from accelerate.utils import gather_object

        per_process = gather_object([self.stream.facts()])
        skipped = [f for facts in per_process for f in facts["skipped_files"]]
        self.extra_summary = {
            **getattr(self, "extra_summary", {}),
            "streaming": {"shuffle_buffer_size": self.cfg.dataset.shuffle_buffer_size, "processes": per_process},
            "skipped_files": list(self.data.skipped) + skipped,
        }

    def _save_on_interrupt(self) -> bool:
        """Checkpoint the current step (unless just saved) for `--resume`; True for the loop's return."""
        if self._saved_step != self.state.global_step:
            self._save_checkpoint()
        return True

    def _model_weights(self, kept: dict[str, Any]) -> dict[str, Any]:
        """The TransferModel's full state dict from the trained module's (the head on cached features: add the backbone's)."""
        if self.kept_module is self.model:
            return kept
        return {**{f"backbone.{k}": v for k, v in self.model.backbone.state_dict().items()}, **kept}

    def _stopped(self) -> TrainResult:
        """End an interrupted run: trackers closed, the result flagged as interrupted."""
        self._end()
        return TrainResult(self.output_dir, self.state.best_results or {}, self.state.history, interrupted=True)

    def _end(self) -> None:
        """Accelerate's end_training, but the process group is closed at exit: another run may follow in this process."""
        for tracker in self.accelerator.trackers:
            tracker.finish()
        close_process_group_at_exit()

    # ------------------------------------------------------------------ output

    def _finish(self, runtime: float) -> TrainResult:
        """Load the best weights, save the model with its training record and card, push if asked."""
        acc, state = self.accelerator, self.state
        acc.wait_for_everyone()
        self.final_weights = None  # the full weights of a sharded model, on the main process
        if not self.sharded:
            self.checkpoints.load_best(self.kept_module, state.best_epoch)
        elif not state.best_epoch:
            self.final_weights = self._model_weights(full_state_dict(acc, self.module))
        elif self.main:
            self.final_weights = self._model_weights(self.checkpoints.best_state_dict(state.best_epoch))
        self.strategy.before_save(self.model)
        results = state.best_results or (dict(state.history[-1]) if state.history else {})
        if self.main:
            self.results = results
            self._save_output(runtime)
        acc.wait_for_everyone()
        return TrainResult(self.output_dir, results, state.history)

    def _save_output(self, runtime: float) -> None:
        """The main process's final save: the model, its training record and card, then the push if asked."""
        from ..cards import write_model_card

        cfg = self.cfg
        with self._phase("save", "Saving the model, its training record and its card"):
            weights = self.final_weights
            if weights is None:
                self.model.to("cpu")
            with self.checkpoints.disk_full("the final model", self.output_dir, tensor_bytes(weights or self.model.state_dict())):
                self.model.save_pretrained(self.output_dir, state_dict=weights)
            # a sharded model only runs with every process: what follows gets the saved model, unsharded
            self.train_objective.finish(self.model if weights is None else TransferModel.from_pretrained(self.output_dir))
            self._write_record(("metrics", "eval_results", "summary"), runtime)
            with self.checkpoints.disk_full("the model card", self.output_dir, 1 << 20):
                write_model_card(self.output_dir, repo_id=cfg.push_to_hub)
        self._log(f"Saved the fine-tuned model to {self.output_dir}. {kept_epoch_message(self.state, self.metric)}")
        if cfg.push_to_hub:
            from ..hub.push import push_output_dir

            # the card was written above for this repo ID: pushed as it is, not rendered again
            url = push_output_dir(self.output_dir, cfg.push_to_hub, private=cfg.hub_private_repo, render_card=False)
            self._log(f"Pushed to {url}.")

    def _write_record(self, parts: tuple[str, ...], runtime: float | None = None) -> None:
        """Write parts of the training record (training/*.json, metrics.jsonl) atomically."""
        record = TrainingRecord(metrics=metric_rows(self.state))
        if "eval_results" in parts:
            record.eval_results = {**self.results, "labels": self.data.labels}
        if "summary" in parts:
            record.summary = run_summary(self, runtime or 0.0)
        needed = sum(len(data) for data in record.files().values())
        with self.checkpoints.disk_full("the training record", self.output_dir / TRAINING_DIR, needed):
            record.write(self.output_dir, parts)

    @property
    def _bars(self) -> bool:
        """Whether this process shows progress bars (the main process, unless disable_tqdm)."""
        return self.main and not self.cfg.disable_tqdm

    @contextlib.contextmanager
    def _phase(self, name: str, doing: str | None = None) -> Iterator[None]:
        """Time one phase of the run (data, model, features, save) for the summary; say when it starts and ends."""
        started = time.time()
        if doing:
            self._log(f"{doing} ...")
        try:
            yield
        finally:
            seconds = time.time() - started
            self.phases[name] = self.phases.get(name, 0.0) + seconds
            if doing:
                self._log(f"{doing}: done in {seconds:.1f} s.")

    def _log(self, message: str) -> None:
        """Log on the main process only."""
        if self.main:
            logger.info(message)


def _changes(then: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """'key then (now value)' for each key a checkpoint recorded whose value this run differs in."""
    return [f"{k} {then[k]} (now {now.get(k)})" for k in then if now.get(k) != then[k]]


def _scheduler(cfg: TrainingConfig, optimizer: Any, total_steps: int) -> Any:
    """transformers' learning-rate schedule of the config, stepped once per optimizer step.

    Not prepared by Accelerate, which would step it once per process.
    """
    from transformers import get_scheduler

    warmup = cfg.warmup_steps if cfg.warmup_steps > 0 else math.ceil(cfg.warmup_ratio * total_steps)
    try:
        return get_scheduler(
            cfg.lr_scheduler_type, optimizer=optimizer, num_warmup_steps=warmup, num_training_steps=total_steps,
            scheduler_specific_kwargs=dict(cfg.lr_scheduler_kwargs),
        )  # fmt: skip
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"lr_scheduler_type {cfg.lr_scheduler_type} with lr_scheduler_kwargs {cfg.lr_scheduler_kwargs}: {err}. "
            "Give the arguments that schedule takes (transformers' get_scheduler), e.g. {min_lr_rate: 0.1} for "
            "cosine_with_min_lr."
        ) from err
