"""`PretrainingConfig`: a pre-training run's config, the training config's common keys plus the objective's own.

It is a `TrainingConfig` subclass, so YAML files, `--key value` overrides, data paths, checkpoints, resume,
trackers and validation are the same; the keys of a task head and of fine-tuning strategies do not apply and are
refused when set (`inapplicable_keys`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..config import TrainingConfig, _opt, load_config
from ..errors import ConfigError
from .objectives import OBJECTIVES


@dataclass
class PretrainingConfig(TrainingConfig):
    """Everything one pre-training run needs; `hubtl pretrain --help` lists each key with its meaning."""

    objective: str | None = _opt(
        None, "mlm (text) | masked_autoencoder | denoising_autoencoder (images); default: mlm for text, masked_autoencoder for images"
    )
    mlm_probability: float = _opt(0.15, "mlm: fraction of the tokens masked (transformers' DataCollatorForLanguageModeling)")
    whole_word_mask: bool = _opt(False, "mlm: mask every sub-word token of a chosen word together")
    max_seq_length: int | None = _opt(None, "mlm: tokens per example (default: the backbone's max_length, at most 128)")
    line_by_line: bool = _opt(False, "mlm: one example per text (false: texts are concatenated and cut into max_seq_length blocks)")
    mask_ratio: float = _opt(0.6, "masked_autoencoder: fraction of the image's patches masked")
    mask_patch_size: int = _opt(32, "masked_autoencoder: side of one masked square patch, in pixels")
    noise_std: float = _opt(0.5, "denoising_autoencoder: std of the Gaussian noise added to the normalised pixels")

    #: TrainingConfig keys about a task head or a fine-tuning strategy: a pre-training run has neither
    inapplicable_keys: ClassVar[tuple[str, ...]] = (
        "task", "labels", "num_outputs", "head_dropout", "head_hidden_dim", "strategy", "gradual_unfreeze_epochs",
        "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "feature_cache", "metric_for_best_model",
        "greater_is_better", "group_by_length",
    )  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()

        def require(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        require(
            self.objective is None or self.objective in OBJECTIVES,
            f"objective must be one of {', '.join(OBJECTIVES)} (or unset: chosen by the backbone's modality); got {self.objective!r}.",
        )
        require(
            not self.dataset.streaming,
            "hubtl pretrain does not stream its data: set dataset.streaming: false (streaming is for hubtl train).",
        )
        require(0 < self.mlm_probability < 1, f"mlm_probability must be in (0, 1); got {self.mlm_probability}.")
        require(self.max_seq_length is None or self.max_seq_length >= 4, "max_seq_length must be >= 4 (or unset).")
        require(0 < self.mask_ratio < 1, f"mask_ratio must be in (0, 1); got {self.mask_ratio}.")
        require(self.mask_patch_size >= 1, f"mask_patch_size must be >= 1; got {self.mask_patch_size}.")
        require(self.noise_std > 0, f"noise_std must be > 0; got {self.noise_std}.")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PretrainingConfig:
        """Build and validate a pre-training config; task-head and strategy keys are refused."""
        if isinstance(values, dict):
            refused = [k for k in values if k in cls.inapplicable_keys]
            if refused:
                raise ConfigError(
                    f"{', '.join(refused)}: not a pre-training key (hubtl pretrain trains no task head and uses no "
                    "fine-tuning strategy); remove it, and set it when you fine-tune the pre-trained backbone."
                )
        return super().from_dict(values)  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the keys that apply (training/config.yaml)."""
        values = dataclasses.asdict(self)
        return {k: v for k, v in values.items() if k not in self.inapplicable_keys}


def load_pretraining_config(
    source: str | Path | dict[str, Any], overrides: list[str] | None = None
) -> PretrainingConfig:
    """Read a pre-training YAML config (or a dict) with `--key value` overrides, as `load_config` does."""
    return load_config(source, overrides, config_class=PretrainingConfig)  # type: ignore[return-value]
