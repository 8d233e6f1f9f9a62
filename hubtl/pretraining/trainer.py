"""The pre-training run: the fine-tuning `Trainer`'s loop with an objective in place of a task.

`PretrainingTrainer` overrides the trainer's hooks only (data, model, DataLoaders' sets and collates, parameter
groups, the loss, evaluation, the final save), so checkpoints, resume, interrupts, multi-process runs, trackers
and the training record are those of `hubtl train`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..backbones.registry import create_backbone, get_plugin, split_backbone_name
from ..cards.public import local_name, public_backbone, public_dataset_path
from ..data.dataset import TransferData
from ..data.unlabeled import load_unlabeled_data
from ..errors import ConfigError
from ..training.disk import tensor_bytes
from ..processes import main_process_first
from ..training.record import kept_epoch_message
from ..training.trainer import Trainer, TrainResult
from .config import PretrainingConfig, load_pretraining_config
from .data import ImageCollate, MLMCollate, tokenize_texts
from .objectives import DEFAULT_OBJECTIVE, OBJECTIVES, MaskedLanguageModeling, Objective, PretrainingModel, get_objective
from .output import save_backbone_folder

#: Tokens per MLM example when neither max_seq_length nor a shorter backbone max_length is set.
DEFAULT_MAX_SEQ_LENGTH = 128


def pretrain(config: PretrainingConfig | dict[str, Any] | str | Path, overrides: list[str] | None = None) -> TrainResult:
    """Run one pre-training job from a config (object, dict or YAML path); the output folder is a backbone."""
    if isinstance(config, PretrainingConfig):
        cfg = load_pretraining_config(config.to_dict(), overrides) if overrides else config
    else:
        cfg = load_pretraining_config(config, overrides)
    return PretrainingTrainer(cfg).run()


class PretrainingTrainer(Trainer):
    """One self-supervised run on unlabeled data: the trainer's loop, an objective's loss, a backbone folder out."""

    cfg: PretrainingConfig

    def __init__(self, config: PretrainingConfig) -> None:
        if not isinstance(config, PretrainingConfig):
            raise ConfigError("PretrainingTrainer takes a PretrainingConfig (load_pretraining_config reads one).")
        super().__init__(config)
        if self.sharded:  # the backbone folder is written from the unsharded backbone (save_backbone_folder)
            raise ConfigError(
                "hubtl pretrain does not run under FSDP; launch it data parallel instead "
                "(accelerate launch --multi_gpu ... -m hubtl.pretrain CONFIG.yaml)."
            )
        self.objective: Objective | None = None
        self.initial_results: dict[str, Any] = {}

    # ------------------------------------------------------------------ data and model

    def _objective_for(self, modality: str) -> Objective:
        """The config's objective (or the modality's default), checked against the modality."""
        objective = get_objective(self.cfg.objective or DEFAULT_OBJECTIVE[modality])
        if objective.modality != modality:
            fits = " or ".join(name for name, o in OBJECTIVES.items() if o.modality == modality) or "none"
            raise ConfigError(
                f"objective: {objective.name} trains {objective.modality} backbones; {self.cfg.backbone} is a {modality} "
                f"backbone. Use objective: {fits}."
            )
        return objective

    def _load_data(self) -> TransferData:
        """The dataset's inputs (any text or image column; labels ignored), main process first."""
        cfg = self.cfg
        plugin_name, model_name = split_backbone_name(cfg.backbone)
        modality = get_plugin(plugin_name).modality_of(model_name)
        self.objective = self._objective_for(modality)
        data = main_process_first(
            self.accelerator,
            lambda: load_unlabeled_data(cfg.dataset, modality=modality, seed=cfg.seed, strict=cfg.strict, progress=self._bars),
        )
        self._log(f"Data: {len(data.train)} training and {len(data.eval)} evaluation {modality} examples (labels unused).")
        return data

    def _build_model(self) -> PretrainingModel:  # type: ignore[override]
        """The backbone with the objective's head (MLM head, pixel decoder); every parameter trains."""
        cfg = self.cfg
        assert self.objective is not None
        backbone = create_backbone(cfg.backbone, pretrained=cfg.pretrained, **cfg.backbone_kwargs)
        self.objective.check(backbone, cfg.backbone)
        model = PretrainingModel(backbone, self.objective.build_head(backbone, cfg), self.objective)
        self.strategy.prepare(model, cfg)  # type: ignore[arg-type] - full: everything trains
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        backbone_params = sum(p.numel() for p in backbone.parameters())
        self.parameter_counts = (trainable, sum(p.numel() for p in model.parameters()))
        self.base_model = cfg.base_model or getattr(backbone, "base_model", None)
        self._log(
            f"Model: {cfg.backbone} ({'pretrained' if cfg.pretrained else 'random'} weights), objective "
            f"{self.objective.name}: {backbone_params:,} backbone parameters, {trainable - backbone_params:,} in its head."
        )
        return model  # type: ignore[return-value]

    def _use_feature_cache(self) -> bool:
        """Never: pre-training trains the backbone."""
        return False

    def _datasets_and_collates(self) -> tuple[Any, Any, Any, Any]:
        """MLM: tokenized (packed) texts and transformers' collator; images: the backbone's preprocessing."""
        cfg, backbone = self.cfg, self.model.backbone
        if isinstance(self.objective, MaskedLanguageModeling):
            tokenizer = backbone.export_source("transformers")["tokenizer"]
            limit = getattr(backbone.preprocessor(train=False), "max_length", None) or DEFAULT_MAX_SEQ_LENGTH
            length = cfg.max_seq_length or min(DEFAULT_MAX_SEQ_LENGTH, limit)
            if length > limit:
                raise ConfigError(f"max_seq_length {length} is longer than {cfg.backbone} takes ({limit}); set it to {limit} or less.")
            sets = []
            for name, split in (("train", self.data.train), ("eval", self.data.eval)):
                texts = [raw for raw, _ in split.__getitems__(list(range(len(split))))]
                blocks = tokenize_texts(texts, tokenizer, length, cfg.line_by_line, cfg.whole_word_mask)
                if len(blocks) == 0:
                    raise ConfigError(f"The {name} texts make no example of {length} tokens; lower max_seq_length or set line_by_line: true.")
                sets.append(blocks)
            self._log(
                f"MLM examples: {len(sets[0])} training and {len(sets[1])} evaluation "
                f"{'texts' if cfg.line_by_line else f'blocks of {length} tokens'}."
            )
            self.max_seq_length = length
            train_collate = MLMCollate(tokenizer, cfg.mlm_probability, cfg.whole_word_mask, cfg.seed)
            eval_collate = MLMCollate(tokenizer, cfg.mlm_probability, cfg.whole_word_mask, cfg.seed, per_example=True)
            return sets[0], sets[1], train_collate, eval_collate
        train_images, eval_images = ImageCollate(backbone.preprocessor(train=cfg.augment)), ImageCollate(backbone.preprocessor(train=False))
        return self.data.train, self.data.eval, train_images, eval_images

    def _param_groups(self) -> list[dict[str, Any]]:
        """The strategy's groups, with the head's weights tied to the backbone's (MLM output embeddings) listed once."""
        in_backbone = {id(p) for p in self.model.backbone.parameters()}
        groups = []
        for group in self.strategy.param_groups(self.model, self.cfg):  # type: ignore[arg-type]
            if str(group.get("name", "")).startswith("head"):
                group = {**group, "params": [p for p in group["params"] if id(p) not in in_backbone]}
            if group["params"]:
                groups.append(group)
        return groups

    def _build_loop(self) -> None:
        """The trainer's DataLoaders and optimizer; eval_loss picks the kept epoch; one evaluation before training."""
        super()._build_loop()
        self.metric = "eval_loss"
        self.initial_results = self.evaluate()
        self._log(f"Before training: eval_loss={self.initial_results['eval_loss']:.4g} ({self.objective.loss_name}).")

    # ------------------------------------------------------------------ loss and evaluation

    def _loss(self, batch: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """The objective's loss: the prepared module's forward."""
        return self.module(batch)

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """The objective's loss on the eval split, with the same masks (or noise) at every evaluation; exact over
        processes: every example counts once, with masks seeded by `seed` and its own content (whatever its batch)."""
        from tqdm.auto import tqdm

        acc = self.accelerator
        model = acc.unwrap_model(self.module)
        model.eval()
        generator = torch.Generator().manual_seed(self.cfg.seed)
        total, count, examples = 0.0, 0.0, 0
        batches = tqdm(self.eval_loader, desc="evaluate", unit="batch", leave=False, disable=not self._bars)
        for batch, _ in batches:
            sums, counts = model.example_losses(batch, generator)
            sums, counts = acc.gather_for_metrics((sums.float(), counts.float()))
            total += float(sums.sum())
            count += float(counts.sum())
            examples += len(sums)
        self._set_train_mode()
        return {"eval_loss": total / max(count, 1.0), "eval_samples": examples}

    # ------------------------------------------------------------------ output

    def pretraining_record(self) -> dict[str, Any]:
        """What hubtl_backbone.json and the card record of this run (no path of this machine)."""
        cfg, state = self.cfg, self.state
        assert self.objective is not None
        epochs = [r for r in state.history if r.get("kind") == "epoch"]
        return {
            **self.objective.record(cfg),
            **({"max_seq_length": getattr(self, "max_seq_length", cfg.max_seq_length)} if self.objective.name == "mlm" else {}),
            "description": self.objective.description,
            "loss": self.objective.loss_name,
            "started_from": public_backbone(cfg.backbone, self.base_model),
            "initialisation": "pretrained" if cfg.pretrained else "random",
            "base_model": self.base_model,
            "dataset": public_dataset_path(cfg.dataset.path) if cfg.dataset.path else local_name(str(cfg.dataset.data_files)),
            "train_examples": len(self.data.train),
            "eval_examples": len(self.data.eval),
            "steps": state.global_step,
            "epochs": len(epochs),
            "initial_eval_loss": self.initial_results.get("eval_loss"),
            "eval_loss": (state.best_results or {}).get("eval_loss"),
            "kept_epoch": state.best_epoch,
            "world_size": self.accelerator.num_processes,
        }

    def _save_output(self, runtime: float) -> None:
        """The backbone folder (native weights and config, no head), its training record and its card; push if asked."""
        from ..cards.pretrained import write_backbone_card

        cfg = self.cfg
        self.extra_summary = {"pretraining": self.pretraining_record()}
        with self._phase("save", "Saving the pre-trained backbone, its training record and its card"):
            self.model.to("cpu")
            with self.checkpoints.disk_full("the backbone", self.output_dir, tensor_bytes(self.model.backbone.state_dict())):
                save_backbone_folder(self.model.backbone, self.output_dir, self.extra_summary["pretraining"])
            self._write_record(("metrics", "eval_results", "summary"), runtime)
            with self.checkpoints.disk_full("the card", self.output_dir, 1 << 20):
                write_backbone_card(self.output_dir, repo_id=cfg.push_to_hub)
        self._log(
            f"Saved the pre-trained backbone to {self.output_dir}; fine-tune it with backbone: hubtl-pretrained:{self.output_dir}"
            f"{'' if cfg.pretrained else ' and pretrained: true (this run had pretrained: false)'}. "
            f"{kept_epoch_message(self.state, self.metric)}"
        )
        if cfg.push_to_hub:
            from ..hub.push import push_backbone_dir

            url = push_backbone_dir(self.output_dir, cfg.push_to_hub, private=cfg.hub_private_repo)
            self._log(f"Pushed to {url}.")
