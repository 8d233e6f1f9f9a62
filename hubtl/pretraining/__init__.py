"""Self-supervised, domain-adaptive pre-training on unlabeled data before fine-tuning (`hubtl pretrain`).

- `config`: `PretrainingConfig`, the training config's common keys plus the objectives' own.
- `objectives`: one `Objective` per `objective:` value (mlm, masked_autoencoder, denoising_autoencoder) and the
  `PretrainingModel` (backbone + the objective's head) whose forward is the loss.
- `data`: texts tokenized and packed for MLM, the collates giving the trainer's (batch, targets).
- `trainer`: `PretrainingTrainer`, the fine-tuning `Trainer` with these hooks overridden, and `pretrain()`.
- `output`: the backbone folder it writes (native weights and config, no task head), which
  `backbone: hubtl-pretrained:PATH_OR_HUB_ID` loads (`hubtl.backbones.pretrained`).
"""

from .config import PretrainingConfig, load_pretraining_config
from .objectives import OBJECTIVES, Objective, PretrainingModel, get_objective
from .output import save_backbone_folder
from .trainer import PretrainingTrainer, pretrain

__all__ = [
    "OBJECTIVES",
    "Objective",
    "PretrainingConfig",
    "PretrainingModel",
    "PretrainingTrainer",
    "get_objective",
    "load_pretraining_config",
    "pretrain",
    "save_backbone_folder",
]
