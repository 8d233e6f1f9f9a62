"""The `hubtl` command line: backbones, train, pretrain, rank, cache, predict, push, card, export, hub serve, demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from .errors import ConfigError, HubtlError


def _backbones_list(args: argparse.Namespace) -> int:
    """Print registered plugins (package, version, status) and the backbones matching a pattern."""
    from .backbones.pretrained import PREFIX
    from .backbones.registry import list_backbones, list_plugins

    for info in list_plugins():
        status = "ok" if info.available else f"UNAVAILABLE: {info.error}"
        modality = info.modality or ("any: per backbone folder" if info.name == PREFIX else "?")
        print(f"# plugin {info.name} ({modality}) from {info.package or '?'} {info.version or ''} - {status}")
    names = list_backbones(args.pattern, modality=args.modality)
    for name in names:
        print(name)
    if args.pattern is None and args.modality is None:
        print(f"# {PREFIX}:<folder or Hub ID> names a backbone folder written by `hubtl pretrain`")
    if args.modality == "text" or (args.modality is None and (args.pattern is None or any(
            n.startswith("transformers:") for n in names))):  # fmt: skip
        print(
            "# text backbones above are those usable offline (installed weight packages, the local HF cache); any Hub "
            "model works by name: transformers:<namespace>/<name> (downloaded on first use), or transformers:/a/folder"
        )
    return 0


def _backbones_check(args: argparse.Namespace) -> int:
    """Run the conformance kit on one backbone and print each check's result."""
    from .testing import check_backbone

    report = check_backbone(args.name, pretrained=args.pretrained, raise_on_failure=False, **_parse_kwargs(args.kwargs))
    print(report.summary())
    return 0 if report.passed else 1


def _predict(args: argparse.Namespace) -> int:
    """Load a model by directory or Hub ID and print one JSON prediction per input."""
    from .model import TransferModel

    model = TransferModel.from_pretrained(args.model, revision=args.revision)
    predictions = model.predict(args.inputs, batch_size=args.batch_size, top_k=args.top_k)
    for raw, prediction in zip(args.inputs, predictions):
        print(json.dumps({"input": raw, **(prediction if args.top_k is None else {"top_k": prediction})}, ensure_ascii=False))
    return 0


def _train(args: argparse.Namespace) -> int:
    """Fine-tune from a YAML config with `--key value` overrides."""
    from .train import main as train_main

    return train_main(list(args.args))


def _pretrain(args: argparse.Namespace) -> int:
    """Pre-train a backbone on unlabeled data from a YAML config with `--key value` overrides."""
    from .pretrain import main as pretrain_main

    return pretrain_main(list(args.args))


def _rank(args: argparse.Namespace) -> int:
    """Rank candidate backbones for a config's data from their frozen features."""
    from .ranking.__main__ import main as rank_main

    return rank_main(list(args.args))


def _cache_list(args: argparse.Namespace) -> int:
    """Print the feature store's entries and their total size."""
    from .features import FeatureStore

    store = FeatureStore()
    entries = store.entries()
    if entries:
        print("# key (hubtl cache clear KEY...)  backbone  dataset [split]  examples x features  size  created")
    for entry in entries:
        print(entry.describe())
    total = sum(e.bytes for e in entries)
    print(f"# {len(entries)} feature set(s), {total / 1e6:.1f} MB in {store.root} (HUBTL_CACHE)")
    return 0


def _cache_clear(args: argparse.Namespace) -> int:
    """Remove feature sets: all, those whose key starts with a given prefix, or those unused for N days."""
    from .features import FeatureStore

    store = FeatureStore()
    removed = store.clear(args.keys, older_than_days=args.older_than)
    print(f"Removed {len(removed)} feature set(s), {sum(e.bytes for e in removed) / 1e6:.1f} MB, from {store.root}.")
    if args.keys and not removed:
        print(f"No feature set's key starts with {' or '.join(args.keys)}: `hubtl cache list` shows the keys.", file=sys.stderr)
        return 1
    return 0


def _push(args: argparse.Namespace) -> int:
    """Push a saved output directory (a model, or a pre-trained backbone folder) to a Hub repo."""
    from pathlib import Path

    from .hub.push import push_backbone_dir, push_output_dir
    from .layout import BACKBONE_CONFIG_NAME

    push = push_backbone_dir if (Path(args.output_dir) / BACKBONE_CONFIG_NAME).is_file() else push_output_dir
    url = push(
        args.output_dir,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        token=args.token,
    )
    print(url)
    return 0


def _card(args: argparse.Namespace) -> int:
    """Render (and write) the model card of an output directory (a model or a pre-trained backbone), and print it."""
    from pathlib import Path

    from .cards import write_model_card
    from .cards.pretrained import write_backbone_card
    from .layout import BACKBONE_CONFIG_NAME

    write = write_backbone_card if (Path(args.output_dir) / BACKBONE_CONFIG_NAME).is_file() else write_model_card
    print(write(args.output_dir).content)
    return 0


def _export(args: argparse.Namespace) -> int:
    """Load a model by directory or Hub ID and export it for timm, transformers or ONNX Runtime."""
    from .model import TransferModel

    options: dict[str, object] = {}
    if args.quantize or args.eval_file or args.opset:
        if args.format != "onnx":
            raise HubtlError("--quantize, --eval_file and --opset apply to --format onnx only.")
        options = {"quantize": args.quantize, "eval_file": args.eval_file, "opset": args.opset}
    model = TransferModel.from_pretrained(args.model, revision=args.revision)
    result = model.export(
        args.format, args.output_dir, overwrite=args.overwrite, push_to_hub=args.push_to_hub, token=args.token, **options
    )
    print(result.summary())
    return 0


def _hub_serve(args: argparse.Namespace) -> int:
    """Run the self-hosted Hub server; print one line (and write --ready-file) once it accepts requests."""
    import signal
    import socket
    from pathlib import Path

    import uvicorn

    from .hub.server import create_app
    from .layout import atomic_write

    ready_file = Path(args.ready_file) if args.ready_file else None
    if ready_file is not None:
        ready_file.unlink(missing_ok=True)  # a file left by an earlier run must not announce this one
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as err:
        sock.close()
        raise ConfigError(
            f"Cannot listen on {args.host}:{args.port} ({err.strerror or err}): another program uses the port, or the "
            "address is not this machine's. Pick another --port (0 picks a free one) or --host."
        ) from None
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{sock.getsockname()[1]}"
    hint = f"export HF_ENDPOINT={url} HF_HUB_DISABLE_XET=1" + (" HF_TOKEN=<token>" if args.token else "")

    def announce() -> None:
        if ready_file is not None:
            atomic_write(ready_file, url + "\n")
        print(f"hubtl hub ready at {url}, serving {Path(args.root).resolve()}; clients: {hint}", flush=True)

    class AnnouncingServer(uvicorn.Server):
        """uvicorn's server, announcing itself once it accepts requests and remembering the signal that stopped it."""

        stopped_by: int | None = None

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                announce()

        def handle_exit(self, sig: int, frame: Any) -> None:
            self.stopped_by = self.stopped_by or sig
            super().handle_exit(sig, frame)

    class Terminated(BaseException):
        """SIGTERM as an exception, so that the cleanup below runs (its default action ends the process at once)."""

    def terminated(sig: int, frame: Any) -> None:
        raise Terminated

    app = create_app(args.root, args.token)
    server = AnnouncingServer(uvicorn.Config(app, log_level="info"))
    # uvicorn shuts down on SIGINT or SIGTERM, then raises the signal again under the handler found here
    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it shut down for (or it came before uvicorn listened)
        server.stopped_by = server.stopped_by or signal.SIGINT
    except Terminated:
        server.stopped_by = server.stopped_by or signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)  # the server no longer accepts requests
    # 128 + the signal, as a shell reports it, whether or not the re-raised signal reached Python in time
    return 128 + server.stopped_by if server.stopped_by else 0


def _demo(args: argparse.Namespace) -> int:
    """The main job: fine-tune, push with a card, load back by Hub ID, predict."""
    from .demo import run_demo

    return run_demo(workdir=args.workdir, endpoint=args.endpoint)


def _parse_kwargs(pairs: Sequence[str]) -> dict[str, object]:
    """Turn ['key=value', ...] into a dict, values parsed as JSON when they can be."""
    kwargs: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise HubtlError(f"Backbone argument {pair!r} must look like key=value.")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    return kwargs


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="hubtl", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    backbones = sub.add_parser("backbones", help="list and check backbone plugins").add_subparsers(
        dest="action", required=True
    )
    p = backbones.add_parser("list", help="list plugins and backbones, e.g. 'timm:resnet*'")
    p.add_argument("pattern", nargs="?", default=None)
    p.add_argument("--modality", choices=["image", "text"], default=None)
    p.set_defaults(func=_backbones_list)
    p = backbones.add_parser("check", help="run the conformance kit on a backbone, e.g. timm:resnet18")
    p.add_argument("name")
    p.add_argument("kwargs", nargs="*", help="backbone arguments as key=value")
    p.add_argument("--pretrained", action="store_true", help="load pretrained weights (default: random, no download)")
    p.set_defaults(func=_backbones_check)

    p = sub.add_parser(
        "train", add_help=False, help="fine-tune from a YAML config; any key can be overridden as --key value "
        "(`hubtl train --help` lists every key)",
    )  # fmt: skip
    p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)  # CONFIG.yaml [--key value ...]
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "rank", add_help=False, help="rank candidate backbones for a config's data by LogME, k-NN or a linear probe "
        "(`hubtl rank --help`)",
    )  # fmt: skip
    p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)  # CONFIG.yaml --candidates ... [--key value]
    p.set_defaults(func=_rank)

    cache = sub.add_parser("cache", help="the feature cache (HUBTL_CACHE)").add_subparsers(dest="action", required=True)
    p = cache.add_parser("list", help="list stored feature sets: key, backbone, dataset, split, size")
    p.set_defaults(func=_cache_list)
    p = cache.add_parser("clear", help="remove stored feature sets (all by default)")
    p.add_argument("keys", nargs="*", help="only the sets whose key starts with one of these")
    p.add_argument("--older-than", "--older_than", type=float, default=None, metavar="DAYS", help="only sets unused this long")
    p.set_defaults(func=_cache_clear)

    p = sub.add_parser(
        "pretrain", add_help=False, help="self-supervised pre-training on unlabeled data (mlm, masked_autoencoder, "
        "denoising_autoencoder) into a backbone folder; `hubtl pretrain --help` lists every key",
    )  # fmt: skip
    p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)  # CONFIG.yaml [--key value ...]
    p.set_defaults(func=_pretrain)

    p = sub.add_parser("predict", help="predict with a saved model (directory or Hub ID)")
    p.add_argument("model")
    p.add_argument("inputs", nargs="+", help="image paths or texts")
    p.add_argument("--revision", default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--top-k", type=int, default=None, help="print each input's K best labels with their scores")
    p.set_defaults(func=_predict)

    p = sub.add_parser("push", help="push a saved output directory to a Hub repo")
    p.add_argument("output_dir")
    p.add_argument("repo_id")
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", default=None, help="branch to push to (created if missing)")
    p.add_argument("--commit-message", default=None)
    p.add_argument("--token", default=None)
    p.set_defaults(func=_push)

    p = sub.add_parser("card", help="render the model card of an output directory")
    p.add_argument("output_dir")
    p.set_defaults(func=_card)

    p = sub.add_parser(
        "export", help="export a model (directory or Hub ID) for plain timm, plain transformers or ONNX Runtime, verified"
    )
    p.add_argument("model")
    p.add_argument("--format", required=True, help="onnx, timm or transformers (or a format a package registered)")
    p.add_argument("--output_dir", "--output-dir", required=True, help="a new folder (written atomically)")
    p.add_argument("--push_to_hub", "--push-to-hub", default=None, metavar="NS/NAME", help="also push the folder there")
    p.add_argument("--overwrite", action="store_true", help="replace --output_dir if it exists")
    p.add_argument("--quantize", choices=["dynamic"], default=None, help="onnx: also write onnxruntime's int8 model")
    p.add_argument("--eval_file", "--eval-file", default=None, help="onnx: report accuracy before/after on a tsv/csv or image folder")
    p.add_argument("--opset", type=int, default=None, help="onnx: opset (default: the newest the installed onnxruntime runs)")
    p.add_argument("--revision", default=None)
    p.add_argument("--token", default=None)
    p.set_defaults(func=_export)

    hub = sub.add_parser("hub", help="the self-hosted Hub-compatible server").add_subparsers(dest="action", required=True)
    p = hub.add_parser("serve", help="serve Hub repos stored under --root")
    p.add_argument("--root", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", default=None, help="token required for writes")
    p.add_argument("--ready-file", default=None, help="write the server's URL to this file once it accepts requests")
    p.set_defaults(func=_hub_serve)

    p = sub.add_parser("demo", help="the whole story: fine-tune, push with a card, load by Hub ID, predict")
    p.add_argument("--workdir", default=None, help="where outputs and the local Hub live (default: a temp dir)")
    p.add_argument("--endpoint", default=None, help="use this Hub instead of starting a local one (or HF_ENDPOINT)")
    p.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `hubtl` console script; hubtl errors print one clear line, not a traceback."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.func in (_train, _pretrain, _rank):  # everything after these is theirs: CONFIG.yaml, --key value, --help
        args.args = [*extra, *args.args]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("hubtl").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return args.func(args)
    except HubtlError as err:
        print(f"hubtl: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
