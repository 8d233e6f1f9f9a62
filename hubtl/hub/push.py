"""Push a saved model directory (weights, backbone files, training record, generated card) to a Hub repo."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import HubError, ModelLoadError
from .client import endpoint, push_folder, validate_repo_id

if TYPE_CHECKING:
    from ..model import TransferModel

logger = logging.getLogger("hubtl")

#: Top-level entries of an output dir that are uploaded; everything else (checkpoints/, logs, hidden dirs) stays local.
UPLOADED = ("config.json", "model.safetensors", "backbone", "README.md", "training")
#: Never uploaded, wherever they appear: training checkpoints and hidden (staging) files.
IGNORED = ["checkpoints/**", "**/checkpoints/**", ".*", "**/.*", "**/.*/**"]


def push_output_dir(
    output_dir: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    render_card: bool = True,
) -> str:
    """Upload a saved model directory to `repo_id` as one commit, with a model card naming the repo; return the commit URL.

    With `render_card` (the default, what `hubtl push` does) a generated README.md (never a hand-written one) and its
    plots are rendered once for `repo_id`, uploaded, and only after a successful upload copied into the output dir.
    With `render_card=False` the folder is uploaded as it is: for a caller that has just written the card for this
    repo with `write_model_card(output_dir, repo_id=repo_id)` (the trainer), so nothing is rendered twice; a
    generated card that does not load from `repo_id` (written for the local folder, whose path it names) is
    rendered for the repo all the same.

    Either way no path of this machine is published: the uploaded training/config.yaml, training/summary.json,
    config.json and backbone/*.json hold local paths as their folder or file names, and a local backbone as its base
    model's Hub ID when the record names one (`hubtl.cards.public`). The output dir keeps the real paths, so
    `--resume` here still works.
    """
    from ..cards import CARD_FILES, README_NAME, is_generated_card, write_model_card
    from ..layout import CONFIG_NAME, WEIGHTS_NAME, atomic_write, read_config

    validate_repo_id(repo_id)
    directory = Path(output_dir).expanduser()
    if not directory.is_dir():
        raise ModelLoadError(f"{directory} is not a directory; give the output directory of a saved hubtl model.")
    read_config(directory)
    if not (directory / WEIGHTS_NAME).is_file():
        raise ModelLoadError(f"{directory} has {CONFIG_NAME} but no {WEIGHTS_NAME}; save the model again before pushing.")
    readme = directory / README_NAME
    generated = not readme.is_file() or is_generated_card(readme)
    if not generated:
        logger.info("%s was written by hand; pushing it unchanged.", readme)
    stale = generated and readme.is_file() and f'from_pretrained("{repo_id}")' not in readme.read_text(errors="replace")
    if not render_card and stale:  # written for another place (this folder's path, another repo): not published
        logger.info("%s was generated for another place than %s; rendering it for the repo.", readme, repo_id)
    render = generated and (render_card or stale)
    with tempfile.TemporaryDirectory(prefix="hubtl-push-") as tmp:
        staging = Path(tmp) / directory.resolve().name
        _stage(directory, staging)
        if render:
            write_model_card(staging, repo_id=repo_id, force=True)
        _publish_paths(staging)  # after the card, which reads the real paths to tell local data from Hub data
        url = _upload(staging, repo_id, private, revision, commit_message, token)
        if render:  # the files just rendered in staging (links replaced by real files) become the output dir's own
            try:
                for name in CARD_FILES:
                    staged = staging / name
                    if staged.is_file() and not staged.is_symlink():
                        atomic_write(directory / name, staged.read_bytes())
            except OSError as err:  # the push succeeded; a read-only output dir only misses the refreshed card
                logger.warning("Pushed, but could not refresh %s: %s", readme, err)
    return url


def push_model(
    model: TransferModel,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
) -> str:
    """Save a model to a temporary directory and push it with a generated card; return the commit URL."""
    validate_repo_id(repo_id)
    with tempfile.TemporaryDirectory(prefix="hubtl-model-") as tmp:
        folder = model.save_pretrained(Path(tmp) / repo_id.split("/")[-1])
        return push_output_dir(
            folder, repo_id, private=private, revision=revision, commit_message=commit_message, token=token
        )


def _stage(directory: Path, staging: Path) -> None:
    """Mirror the uploaded part of an output dir into `staging` with links (copies where links fail)."""
    staging.mkdir(parents=True)
    for name in UPLOADED:
        source = directory / name
        if source.is_file():
            _link(source, staging / name)
        elif source.is_dir():
            for path in sorted(source.rglob("*")):
                relative = path.relative_to(directory)
                if path.is_file() and not _ignored(relative):
                    (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                    _link(path, staging / relative)


def _publish_paths(staging: Path) -> list[str]:
    """Replace, in staging, each file holding a path of this machine by its public form; return the files replaced.

    A staged file is a link to the output dir's own: it is replaced (atomically), never written through.
    """
    import json

    import yaml

    from ..cards.public import (
        public_config,
        public_model_config,
        public_name_keys,
        public_summary,
        recorded_base_model,
        saved_base_model,
    )
    from ..layout import (
        BACKBONE_DIR,
        CONFIG_NAME,
        SUMMARY_NAME,
        TRAINING_CONFIG_NAME,
        TRAINING_DIR,
        atomic_write,
        read_training_record,
    )

    record = read_training_record(staging)
    base_model = recorded_base_model(record.config, record.summary) or saved_base_model(staging)
    replaced: list[str] = []

    def replace(relative: str, old: object, new: object, data: str) -> None:
        if new != old:
            atomic_write(staging / relative, data)
            replaced.append(relative)

    if record.config:
        public = public_config(record.config, base_model)
        replace(f"{TRAINING_DIR}/{TRAINING_CONFIG_NAME}", record.config, public, yaml.safe_dump(public, sort_keys=False))
    if record.summary:
        public = public_summary(record.summary)
        replace(f"{TRAINING_DIR}/{SUMMARY_NAME}", record.summary, public, json.dumps(public, indent=2))
    config = json.loads((staging / CONFIG_NAME).read_text(encoding="utf-8"))
    public = public_model_config(config, base_model)
    replace(CONFIG_NAME, config, public, json.dumps(public, indent=2, sort_keys=True) + "\n")
    for path in sorted((staging / BACKBONE_DIR).rglob("*.json")) if (staging / BACKBONE_DIR).is_dir() else []:
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # loading refuses such a file anyway; nothing of it is rewritten here
        if isinstance(content, dict):
            public = public_name_keys(content, base_model)
            replace(path.relative_to(staging).as_posix(), content, public, json.dumps(public, indent=2, ensure_ascii=False) + "\n")
    return replaced


def _ignored(relative: Path) -> bool:
    """True for checkpoints and hidden files or folders, which are never uploaded."""
    return any(part.startswith(".") or part == "checkpoints" for part in relative.parts)


def _link(source: Path, target: Path) -> None:
    """Symlink `target` to `source` (files are replaced, never written through, in staging), else copy it."""
    try:
        target.symlink_to(source.resolve())
    except OSError:
        shutil.copy2(source, target)


def _upload(
    folder: Path, repo_id: str, private: bool, revision: str | None, commit_message: str | None, token: str | None
) -> str:
    """push_folder with the Hub's refusals turned into HubErrors that say what to do."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return push_folder(
            folder,
            repo_id,
            private=private,
            revision=revision,
            commit_message=commit_message or f"Upload {repo_id.split('/')[-1]} with hubtl",
            token=token,
            ignore_patterns=IGNORED,
        )
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None) if getattr(err, "response", None) is not None else None
        if status in (401, 403):
            raise HubError(
                f"The Hub at {endpoint()} refused to write to {repo_id!r} (HTTP {status}): give a token with write "
                "access (`hf auth login`, HF_TOKEN, or `--token`)."
            ) from err
        raise HubError(f"The Hub at {endpoint()} rejected the push to {repo_id!r}: {err}") from err


def push_backbone_dir(
    output_dir: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
) -> str:
    """Upload a pre-trained backbone folder (`hubtl pretrain`'s output) with its card for `repo_id`; return the commit URL.

    Everything but checkpoints and hidden files is uploaded; the training record's local paths are published as
    their names, as `push_output_dir` does. `backbone: hubtl-pretrained:<repo_id>` then loads it.
    """
    import json

    import yaml

    from ..cards.pretrained import write_backbone_card
    from ..cards.public import public_backbone_name, public_config, public_name_keys, public_summary
    from ..layout import (
        BACKBONE_CONFIG_NAME,
        BACKBONE_DIR,
        SUMMARY_NAME,
        TRAINING_CONFIG_NAME,
        TRAINING_DIR,
        atomic_write,
        read_backbone_config,
        read_training_record,
    )

    validate_repo_id(repo_id)
    directory = Path(output_dir).expanduser()
    read_backbone_config(directory)
    with tempfile.TemporaryDirectory(prefix="hubtl-push-") as tmp:
        staging = Path(tmp) / directory.resolve().name
        staging.mkdir(parents=True)
        for path in sorted(directory.rglob("*")):
            relative = path.relative_to(directory)
            if path.is_file() and not _ignored(relative):
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                _link(path, staging / relative)
        write_backbone_card(staging, repo_id=repo_id, force=True)
        record = read_training_record(staging)
        base_model = (read_backbone_config(staging).get("pretraining") or {}).get("base_model")
        if record.config:
            public = public_config(record.config, base_model)
            atomic_write(staging / TRAINING_DIR / TRAINING_CONFIG_NAME, yaml.safe_dump(public, sort_keys=False))
        if record.summary:
            atomic_write(staging / TRAINING_DIR / SUMMARY_NAME, json.dumps(public_summary(record.summary), indent=2))
        # a local backbone path in the spec, or in a transformers config's name keys, is published as its public name
        config = read_backbone_config(staging)
        config["backbone"]["name"] = public_backbone_name(str(config["backbone"]["name"]), base_model)
        atomic_write(staging / BACKBONE_CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")
        for path in [*staging.glob("*.json"), *sorted((staging / BACKBONE_DIR).rglob("*.json"))]:
            if path.name == BACKBONE_CONFIG_NAME:
                continue
            try:
                content = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(content, dict) and public_name_keys(content, base_model) != content:
                atomic_write(path, json.dumps(public_name_keys(content, base_model), indent=2, ensure_ascii=False) + "\n")
        return _upload(staging, repo_id, private, revision, commit_message, token)
