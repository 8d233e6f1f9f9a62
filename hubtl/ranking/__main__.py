"""`hubtl rank CONFIG.yaml --candidates A B C ...` and `accelerate launch -m hubtl.ranking CONFIG.yaml ...`."""

from __future__ import annotations

import argparse
import sys

from ..processes import is_main_launch_process, run_command
from .run import DEFAULT_MAX_SAMPLES
from .scores import SCORES

USAGE = """usage: hubtl rank CONFIG.yaml [--candidates A B C ...] [--metric logme|knn|linear|all] [--top K --train]
                  [--max_samples N|all] [--key value ...]
       accelerate launch -m hubtl.ranking CONFIG.yaml ...

Rank candidate backbones for the config's dataset and task from their frozen features, without fine-tuning.
Candidates are backbone names (--candidates) or the config's `candidates:` list, whose items are names or
{name, backbone, pretrained, backbone_kwargs}. A split of more than --max_samples examples (default {default})
is scored on a seeded sample of that many, stratified by class, the same for every candidate (`all`: every
example). Writes rank.json and rank.png in --output_dir (the config's output_dir); --top K --train then
fine-tunes the best K with the config's strategy (on all the data), each in output_dir/NAME.
Other --key value pairs override config keys, as in `hubtl train`.""".replace("{default}", str(DEFAULT_MAX_SAMPLES))


def build_parser() -> argparse.ArgumentParser:
    """The ranking's own flags; everything else is a config override."""
    parser = argparse.ArgumentParser(prog="hubtl rank", usage=USAGE, add_help=False, allow_abbrev=False)
    parser.add_argument("config")
    parser.add_argument("--candidates", nargs="+", default=None)
    parser.add_argument("--metric", default="logme", choices=[*SCORES, "all"])
    parser.add_argument("--top", type=int, default=0)
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--max_samples", type=_max_samples, default=DEFAULT_MAX_SAMPLES)
    return parser


def _max_samples(value: str) -> int | None:
    """--max_samples N, or `all` for every example."""
    if value.lower() in ("all", "none"):
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of examples or `all`, got {value!r}") from None


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, rank, print the table; hubtl errors print one line (from the main process)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        descriptions = "\n".join(f"  {name}: {meaning}" for name, (_, meaning) in SCORES.items())
        print(f"{USAGE}\n\nmetrics:\n{descriptions}", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    args, overrides = build_parser().parse_known_args(argv)

    def body() -> int:
        from .run import rank

        result = rank(args.config, args.candidates, args.metric, top=args.top, train=args.train, overrides=overrides,
                      max_samples=args.max_samples)
        if is_main_launch_process():
            print(result.table())
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
