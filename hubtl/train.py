"""`python -m hubtl.train CONFIG.yaml` and `accelerate launch -m hubtl.train CONFIG.yaml`: the training entry point.

The trainer lives in `hubtl.training`; this module is the command line around it, so that `-m hubtl.train`
and `hubtl train` run the same code.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from .errors import HubtlError
from .training import Trainer, TrainResult, train

__all__ = ["TrainResult", "Trainer", "main", "train"]

logger = logging.getLogger("hubtl")

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
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        logger.setLevel(logging.INFO)
    try:
        result = train(argv[0], argv[1:])
    except HubtlError as err:
        if int(os.environ.get("RANK", "0")) == 0:  # under `accelerate launch`, one message, from the main process
            print(f"hubtl: error: {err}", file=sys.stderr)
        else:  # the launcher stops every process when the first exits: let the main one print its message first
            time.sleep(2.0)
        return 2
    except KeyboardInterrupt:  # before training started (or a second Ctrl-C while finishing)
        print("hubtl: interrupted.", file=sys.stderr)
        return 130
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
