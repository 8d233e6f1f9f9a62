"""`python -m hubtl.train CONFIG.yaml` and `accelerate launch -m hubtl.train CONFIG.yaml`: the training entry point.

The trainer lives in `hubtl.training`; this module stays so that `-m hubtl.train` keeps working.
"""

from __future__ import annotations

import sys

from .training import Trainer, TrainResult, main, train

__all__ = ["TrainResult", "Trainer", "main", "train"]

if __name__ == "__main__":
    sys.exit(main())
