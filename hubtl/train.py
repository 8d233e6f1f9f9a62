"""`python -m hubtl.train CONFIG.yaml` and `accelerate launch -m hubtl.train CONFIG.yaml`: the training entry point.

The trainer lives in `hubtl.training`; this module is the command line around it, so that `-m hubtl.train`
and `hubtl train` run the same code.
"""

from __future__ import annotations

import sys

from .training import Trainer, TrainResult, train
from .processes import run_command

__all__ = ["TrainResult", "Trainer", "main", "train"]

USAGE = """usage: hubtl train CONFIG.yaml [--key value ...] [--resume]
       accelerate launch -m hubtl.train CONFIG.yaml [--key value ...]

Fine-tune a pretrained backbone as CONFIG.yaml says; --resume continues from the latest checkpoint in
output_dir (or --resume PATH from that checkpoint)."""


def main(argv: list[str] | None = None) -> int:
    """`python -m hubtl.train CONFIG.yaml [--key value ...]`, also under `accelerate launch`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        from .config import config_help

        print(f"{USAGE}\n\n{config_help()}", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    return run_command(lambda: 130 if train(argv[0], argv[1:]).interrupted else 0)


if __name__ == "__main__":
    sys.exit(main())
