"""Fine-tuning on Accelerate: the trainer loop, checkpoints and resume, the feature cache, full-disk errors.

`hubtl train CONFIG.yaml` and `accelerate launch -m hubtl.train CONFIG.yaml` run `train()`; the loop is
plain Accelerate, so the same code runs on a CPU, one GPU or many processes.
"""

from .checkpoints import Checkpoints, TrainerState
from .trainer import Trainer, TrainResult, train

__all__ = ["Checkpoints", "TrainResult", "Trainer", "TrainerState", "train"]
