"""`python -m hubtl.pretrain CONFIG.yaml` and `accelerate launch -m hubtl.pretrain CONFIG.yaml`: the pre-training entry point.

The run lives in `hubtl.pretraining`; this module is the command line around it, so that `-m hubtl.pretrain`
and `hubtl pretrain` run the same code.
"""

from __future__ import annotations

import sys

from .processes import run_command

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
    def body() -> int:
        from .pretraining import pretrain

        return 130 if pretrain(argv[0], argv[1:]).interrupted else 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
