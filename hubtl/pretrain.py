"""`python -m hubtl.pretrain CONFIG.yaml` and `accelerate launch -m hubtl.pretrain CONFIG.yaml`: the pre-training entry point.

The run lives in `hubtl.pretraining`; this module is the command line around it, so that `-m hubtl.pretrain`
and `hubtl pretrain` run the same code.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from .errors import HubtlError

logger = logging.getLogger("hubtl")

USAGE = """usage: hubtl pretrain CONFIG.yaml [--key value ...] [--resume]
       accelerate launch -m hubtl.pretrain CONFIG.yaml [--key value ...]

Pre-train a backbone on unlabeled data (texts: objective mlm; images: masked_autoencoder or
denoising_autoencoder) as CONFIG.yaml says. The output_dir becomes a backbone folder: fine-tune it with
`backbone: hubtl-pretrained:OUTPUT_DIR` (or a Hub ID it was pushed to). --resume continues from the latest
checkpoint in output_dir (or --resume PATH from that checkpoint)."""


def main(argv: list[str] | None = None) -> int:
    """`python -m hubtl.pretrain CONFIG.yaml [--key value ...]`, also under `accelerate launch`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        from .config import config_help
        from .pretraining.config import PretrainingConfig

        print(f"{USAGE}\n\n{config_help(PretrainingConfig)}", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        logger.setLevel(logging.INFO)
    try:
        from .pretraining import pretrain

        result = pretrain(argv[0], argv[1:])
    except HubtlError as err:
        if int(os.environ.get("RANK", "0")) == 0:  # under `accelerate launch`, one message, from the main process
            print(f"hubtl: error: {err}", file=sys.stderr)
        else:  # the launcher stops every process when the first exits: let the main one print its message first
            time.sleep(2.0)
        return 2
    except KeyboardInterrupt:
        print("hubtl: interrupted.", file=sys.stderr)
        return 130
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
