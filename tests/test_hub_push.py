"""Push to and load from a Hub: hubtl and the real huggingface_hub client against hubtl's own server, no mocks.

Every test runs the server on a free loopback port (`running_server`) with a write token and points this
process's client at it (`use_endpoint`); loads "in a fresh process" are subprocesses with HF_ENDPOINT and
their own HF_HOME, so nothing is shared with the pushing process but the Hub.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from huggingface_hub import HfApi, ModelCard, snapshot_download
from test_cards import assert_complete, metadata_results, run_snippet, saved_model, usage_snippet, write_record

import hubtl.hub.client as client
from hubtl import TransferModel
from hubtl.cards import GENERATED_MARK
from hubtl.errors import HubError, ModelLoadError, PluginUnavailableError
from hubtl.hub.push import push_output_dir
from hubtl.hub.server import running_server, use_endpoint

TOKEN = "hub-write-token"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SENTENCES = [
    "a gorgeous , witty , seductive movie .",
    "the film is strictly routine .",
    "it 's a charming and often affecting journey .",
]


@pytest.fixture
def hub(tmp_path: Path, hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A Hub server with a write token; this process's client talks to it and starts with no token."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    with running_server(tmp_path / "hub-root", token=TOKEN) as url, use_endpoint(url):
        yield url


@pytest.fixture
def api(hub: str) -> HfApi:
    """An authenticated raw client of the test Hub."""
    return HfApi(endpoint=hub, token=TOKEN)


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """A saved tiny timm classifier with a full training record."""
    out = tmp_path / "ants-bees"
    saved_model(out)
    write_record(out)
    return out


def fresh_env(endpoint: str, home: Path, **extra: str) -> dict[str, str]:
    """Environment of a fresh process: the test Hub, its own empty HF cache, no token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(home), HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


def predict_in_fresh_process(model_id: str, inputs: list[Any], env: dict[str, str], cwd: Path,
                             revision: str | None = None) -> list[dict[str, Any]]:
    """Load `model_id` by Hub ID in a new interpreter and return its predictions."""
    code = (
        "import json, sys\nfrom hubtl import TransferModel\n"
        f"model = TransferModel.from_pretrained({model_id!r}, revision={revision!r})\n"
        f"print(json.dumps(model.predict({inputs!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_same_predictions(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    """Same labels and the same scores up to float printing."""
    assert [p["label"] for p in a] == [p["label"] for p in b]
    for pa, pb in zip(a, b):
        assert pa["scores"] == pytest.approx(pb["scores"], abs=1e-6)


def tree_state(directory: Path) -> dict[str, str]:
    """Every file under a directory with a hash of its content (to prove it was not touched)."""
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


#: An absolute path inside text: a slash not preceded by a word, a dot, a colon or a slash (so no URL or ratio).
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/\\-])/(?:[\w.+-]+/)*[\w.+-]+")


def assert_nothing_private(folder: Path, private: list[Path | str]) -> list[str]:
    """No file under `folder` (a downloaded repo) holds a path of this machine; return the files scanned.

    Every file's bytes are searched for the given private places, the temp dir, the home dir and the venv; every
    text file's absolute-path-like strings must name nothing that exists here and nothing under the temp dir.
    """
    temp = tempfile.gettempdir().rstrip("/") + "/"
    needles = {str(p) for p in private} | {temp, str(Path.home()), sys.prefix, str(Path(__file__).resolve().parents[1])}
    scanned = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.relative_to(folder).parts):
        relative = path.relative_to(folder).as_posix()
        data = path.read_bytes()
        for needle in needles:
            assert needle.encode() not in data, f"{relative} holds the private path {needle!r}"
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        for found in ABSOLUTE_PATH.findall(text):
            assert not found.startswith(temp) and not (len(found) > 1 and os.path.exists(found)), (
                f"{relative} holds the local path {found!r}")
        scanned.append(relative)
    return scanned


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- the whole story


def test_train_push_load_in_fresh_process(hub: str, api: HfApi, tiny_bert: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A real `hubtl train` run with push_to_hub, loaded back by Hub ID elsewhere with identical predictions."""
    from hubtl.train import train

    monkeypatch.setenv("HF_TOKEN", TOKEN)  # the trainer pushes with the ambient token
    out = tmp_path / "sst2-tiny"
    result = train(EXAMPLES / "sst2_minilm.yaml", overrides=[
        "--backbone", tiny_bert, "--backbone_kwargs", "{pooling: mean, max_length: 32}", "--num_train_epochs", "2",
        "--dataset.max_train_samples", "160", "--dataset.max_eval_samples", "64", "--output_dir", str(out),
        "--push_to_hub", "team/sst2-tiny", "--disable_tqdm", "true",
    ])
    assert result.output_dir == out
    monkeypatch.delenv("HF_TOKEN")

    files = set(api.list_repo_files("team/sst2-tiny"))
    assert {"config.json", "model.safetensors", "README.md", "backbone/config.json", "training/config.yaml",
            "training/metrics.jsonl", "training/eval_results.json", "training/summary.json",
            "training/training_curves.png", "training/confusion_matrix.png"} <= files
    assert not any(f.startswith("checkpoints/") or "/." in f or f.startswith(".") and f != ".gitattributes" for f in files)

    local = TransferModel.from_pretrained(out).predict(SENTENCES)
    remote = predict_in_fresh_process("team/sst2-tiny", SENTENCES, fresh_env(hub, tmp_path / "home-a"), tmp_path)
    assert_same_predictions(local, remote)

    # The pushed card parses, names the repo, and its model-index is the final evaluation.
    card = ModelCard.load("team/sst2-tiny")
    assert_complete(card.content)
    eval_results = json.loads((out / "training" / "eval_results.json").read_text())
    assert metadata_results(card) == {"Accuracy": eval_results["eval_accuracy"],
                                      "F1 (macro)": eval_results["eval_f1_macro"]}
    assert card.data.library_name == "hubtl" and card.data.pipeline_tag == "text-classification"
    assert card.data.license == "apache-2.0" and card.data.model_name == "sst2-tiny"
    assert 'TransferModel.from_pretrained("team/sst2-tiny")' in card.text
    assert "2 (best)" in card.text or "1 (best)" in card.text
    assert (out / "README.md").read_text() == card.content  # the local card was refreshed to name the repo

    # The snippet of the pushed card runs as written, in a fresh process, against the Hub.
    output = run_snippet(usage_snippet(card.text), tmp_path, env=fresh_env(hub, tmp_path / "home-b"))
    assert "'label':" in output

    # The trainer's push (the card written for the repo, pushed as is) publishes no path of this machine.
    repo = Path(snapshot_download("team/sst2-tiny", cache_dir=tmp_path / "download"))
    scanned = assert_nothing_private(repo, [tmp_path, tiny_bert.split(":", 1)[1], EXAMPLES])
    assert {"README.md", "config.json", "training/config.yaml", "training/summary.json", "backbone/config.json"} <= set(scanned)
    assert str(EXAMPLES) in (out / "training" / "config.yaml").read_text()  # the local record keeps its real paths


def test_branch_revision_and_commit_sha(hub: str, api: HfApi, tmp_path: Path) -> None:
    """Branches and commit SHAs load the weights pushed there; a second push keeps the old commit loadable."""
    first, second, third = (saved_model(tmp_path / f"m{i}", seed=i) for i in range(3))
    from PIL import Image

    inputs = [Image.new("RGB", (64, 64), (i * 60, 100, 200 - i * 50)) for i in range(3)]

    url = first.push_to_hub("me/resnet", token=TOKEN)
    assert "me/resnet" in url
    sha_first = api.model_info("me/resnet").sha
    second.push_to_hub("me/resnet", revision="experiment", token=TOKEN, commit_message="try another seed")
    assert api.model_info("me/resnet", revision="experiment").sha != sha_first
    third.push_to_hub("me/resnet", token=TOKEN)
    sha_third = api.model_info("me/resnet").sha
    assert sha_third != sha_first
    assert [c.title for c in api.list_repo_commits("me/resnet", revision="experiment")][0] == "try another seed"

    def scores(model: TransferModel) -> list[float]:
        return [s for p in model.predict(inputs) for s in p["scores"].values()]

    assert scores(TransferModel.from_pretrained("me/resnet")) == pytest.approx(scores(third), abs=1e-6)
    assert scores(TransferModel.from_pretrained("me/resnet", revision="experiment")) == pytest.approx(scores(second), abs=1e-6)
    assert scores(TransferModel.from_pretrained("me/resnet", revision=sha_first)) == pytest.approx(scores(first), abs=1e-6)
    assert scores(TransferModel.from_pretrained("me/resnet", revision=sha_third)) == pytest.approx(scores(third), abs=1e-6)
    assert scores(first) != pytest.approx(scores(third), abs=1e-6)

    card = ModelCard.load("me/resnet")  # push_model writes a card for a model saved without training
    assert_complete(card.content)
    assert "not fine-tuned by hubtl's trainer" in card.text and card.data.eval_results is None


def test_pushed_files_and_untouched_output_dir(hub: str, api: HfApi, image_dir: Path) -> None:
    """Checkpoints and hidden staging dirs stay local; the output dir changes only by its refreshed card."""
    (image_dir / "checkpoints" / "checkpoint-10").mkdir(parents=True)
    (image_dir / "checkpoints" / "checkpoint-10" / "optimizer.bin").write_bytes(b"x" * 100)
    (image_dir / ".ants-bees.tmp-1234").mkdir()
    (image_dir / ".ants-bees.tmp-1234" / "model.safetensors").write_bytes(b"partial")
    (image_dir / "training" / ".metrics.jsonl.tmp").write_text("partial")
    before = tree_state(image_dir)

    url = push_output_dir(image_dir, "me/ants-bees", token=TOKEN)
    assert "me/ants-bees" in url
    files = set(api.list_repo_files("me/ants-bees"))
    assert files - {".gitattributes"} == {
        "config.json", "model.safetensors", "README.md", "training/config.yaml", "training/metrics.jsonl",
        "training/eval_results.json", "training/summary.json", "training/training_curves.png",
        "training/confusion_matrix.png",
    }
    after = tree_state(image_dir)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed == {"README.md", "training/training_curves.png", "training/confusion_matrix.png"}  # card + plots
    assert 'from_pretrained("me/ants-bees")' in (image_dir / "README.md").read_text()

    card = ModelCard.load("me/ants-bees")
    eval_results = json.loads((image_dir / "training" / "eval_results.json").read_text())
    assert metadata_results(card) == {"Accuracy": eval_results["eval_accuracy"], "F1 (macro)": eval_results["eval_f1_macro"]}
    assert card.data.base_model == "timm/test_resnet.r160_in1k"


def test_hand_written_readme_is_pushed_unchanged(hub: str, api: HfApi, image_dir: Path) -> None:
    (image_dir / "README.md").write_text("---\nlicense: mit\n---\n# Written by hand\n")
    push_output_dir(image_dir, "me/handmade", token=TOKEN)
    assert ModelCard.load("me/handmade").text.strip() == "# Written by hand"
    assert (image_dir / "README.md").read_text() == "---\nlicense: mit\n---\n# Written by hand\n"


def test_a_model_trained_from_local_paths_publishes_none_of_them(
    hub: str, api: HfApi, tiny_bert: str, tiny_bert_dir: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A tiny BERT from a local folder, local tsv files, an output dir in tmp: the pushed repo names none of them,
    and the model loads by Hub ID and predicts as the local one does."""
    from hubtl.train import train

    data = tmp_path / "data" / "reviews"
    data.mkdir(parents=True)
    for name, lines in (("train.tsv", 192), ("dev.tsv", 64)):
        rows = (EXAMPLES / "data" / "sst2-mini" / name).read_text().splitlines()[:lines]
        (data / name).write_text("\n".join(rows) + "\n")
    out = tmp_path / "outputs" / "reviews-probe"
    train({
        "backbone": tiny_bert, "backbone_kwargs": {"pooling": "mean", "max_length": 32}, "labels": ["negative", "positive"],
        "dataset": {"path": str(data), "data_files": {"train": str(data / "train.tsv"), "validation": str(data / "dev.tsv")},
                    "column_names": ["sentence", "label"], "text_column": "sentence", "eval_split": "validation"},
        "strategy": "linear_probe", "num_train_epochs": 1, "per_device_train_batch_size": 32, "learning_rate": 0.01,
        "output_dir": str(out), "report_to": "none", "disable_tqdm": True, "dataloader_num_workers": 0, "seed": 0,
    })
    local_record = (out / "training" / "config.yaml").read_text()
    before = tree_state(out)

    push_output_dir(out, "team/reviews", token=TOKEN)
    repo = Path(snapshot_download("team/reviews", cache_dir=tmp_path / "download"))
    private = [tmp_path, tmp_path_factory.getbasetemp(), tiny_bert_dir]
    scanned = assert_nothing_private(repo, private)
    assert {"README.md", "config.json", "training/config.yaml", "training/summary.json", "training/metrics.jsonl",
            "backbone/config.json", "backbone/tokenizer_config.json"} <= set(scanned)

    pushed = yaml.safe_load((repo / "training" / "config.yaml").read_text())
    assert pushed["dataset"]["path"] == "reviews" and pushed["output_dir"] == "reviews-probe"
    assert pushed["dataset"]["data_files"] == {"train": "train.tsv", "validation": "dev.tsv"}
    assert pushed["backbone"] == f"transformers:{tiny_bert_dir.name}" and pushed["learning_rate"] == 0.01
    assert json.loads((repo / "config.json").read_text())["backbone"]["name"] == tiny_bert_dir.name
    assert json.loads((repo / "training" / "summary.json").read_text())["dataset"] == "reviews"
    card = ModelCard.load("team/reviews")
    assert "the local dataset `reviews`" in card.text and card.data.datasets is None and card.data.base_model is None
    # the output dir keeps its real paths (so --resume here works): only the card and its plots were refreshed
    assert (out / "training" / "config.yaml").read_text() == local_record and str(data) in local_record
    changed = {k for k in before.keys() | tree_state(out).keys() if before.get(k) != tree_state(out).get(k)}
    assert changed <= {"README.md", "training/training_curves.png", "training/confusion_matrix.png"}

    local = TransferModel.from_pretrained(out).predict(SENTENCES)
    assert_same_predictions(TransferModel.from_pretrained("team/reviews").predict(SENTENCES), local)

    # With the base model recorded (the `base_model` config key), a local backbone is published as its Hub ID.
    summary_path = out / "training" / "summary.json"
    summary_path.write_text(json.dumps({**json.loads(summary_path.read_text()), "base_model": "google/bert_uncased_L-2_H-128_A-2"}))
    push_output_dir(out, "team/reviews", token=TOKEN)
    repo = Path(snapshot_download("team/reviews", cache_dir=tmp_path / "download-2"))
    assert_nothing_private(repo, private)
    assert json.loads((repo / "config.json").read_text())["backbone"]["name"] == "google/bert_uncased_L-2_H-128_A-2"
    assert yaml.safe_load((repo / "training" / "config.yaml").read_text())["backbone"] == (
        "transformers:google/bert_uncased_L-2_H-128_A-2")
    assert ModelCard.load("team/reviews").data.base_model == "google/bert_uncased_L-2_H-128_A-2"
    again = TransferModel.from_pretrained("team/reviews")
    assert_same_predictions(again.predict(SENTENCES), local)


def test_a_card_written_for_the_local_folder_is_not_published_as_is(hub: str, image_dir: Path, tmp_path: Path) -> None:
    """`render_card=False` pushes a card written for this repo as is, but never one that loads from this folder's path."""
    from hubtl.cards import write_model_card

    write_model_card(image_dir)  # `hubtl card out`: the snippet loads from the folder's absolute path
    assert str(image_dir.resolve()) in (image_dir / "README.md").read_text()
    push_output_dir(image_dir, "me/local-card", token=TOKEN, render_card=False)
    card = ModelCard.load("me/local-card")
    assert 'from_pretrained("me/local-card")' in card.text and str(tmp_path) not in card.content
    assert_nothing_private(Path(snapshot_download("me/local-card", cache_dir=tmp_path / "download")), [tmp_path])


def test_the_path_scan_finds_local_paths(tmp_path: Path) -> None:
    """The scan above fails on a private path, an existing absolute path and a temp path, not on URLs or ratios."""
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "README.md").write_text("See https://huggingface.co/org/name, training/config.yaml and 1/2 of it.\n")
    assert assert_nothing_private(folder, [tmp_path / "secret"]) == ["README.md"]
    for leak in (f"path: {tmp_path / 'secret' / 'data'}", "dataset: /etc", f"output: {tempfile.gettempdir()}/x/y",
                 f"home: {Path.home()}"):
        (folder / "training.yaml").write_text(leak + "\n")
        with pytest.raises(AssertionError, match="training.yaml holds the"):
            assert_nothing_private(folder, [tmp_path / "secret"])


# --------------------------------------------------------------------------- refusals and bad input


def test_writes_without_token_are_refused(hub: str, api: HfApi, image_dir: Path) -> None:
    before = tree_state(image_dir)
    with pytest.raises(HubError, match=r"refused to write to 'me/secret' \(HTTP 401\).*token"):
        push_output_dir(image_dir, "me/secret")
    with pytest.raises(HubError, match="HTTP 401"):
        push_output_dir(image_dir, "me/secret", token="wrong-token")
    assert not api.repo_exists("me/secret")
    assert tree_state(image_dir) == before


def test_unreachable_hub_leaves_output_dir_untouched(image_dir: Path, hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "RETRY_DELAYS", (0.01, 0.02))
    before = tree_state(image_dir)
    with use_endpoint(f"http://127.0.0.1:{free_port()}"):
        with pytest.raises(HubError, match=r"Could not reach the Hub at http://127\.0\.0\.1:\d+ .* after 3 tries"):
            push_output_dir(image_dir, "me/ants-bees", token=TOKEN)
        with pytest.raises(HubError, match="Could not reach the Hub"):
            TransferModel.from_pretrained("me/ants-bees")
    assert tree_state(image_dir) == before


def test_bad_push_input(hub: str, tmp_path: Path, image_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a directory"):
        push_output_dir(tmp_path / "missing", "me/x", token=TOKEN)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="not a saved hubtl model"):
        push_output_dir(tmp_path / "notes", "me/x", token=TOKEN)
    for bad in ("me/x/y", "bad id!", "-leading/dash", ""):
        with pytest.raises(HubError, match="not a valid Hub repo ID"):
            push_output_dir(image_dir, bad, token=TOKEN)
    (image_dir / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no model.safetensors"):
        push_output_dir(image_dir, "me/x", token=TOKEN)


def test_load_errors(hub: str, api: HfApi, image_dir: Path) -> None:
    push_output_dir(image_dir, "me/ants-bees", token=TOKEN)
    with pytest.raises(ModelLoadError, match="has no revision 'no-such-branch'"):
        TransferModel.from_pretrained("me/ants-bees", revision="no-such-branch")
    with pytest.raises(ModelLoadError, match="No model repo 'me/nothing-here'"):
        TransferModel.from_pretrained("me/nothing-here")

    api.create_repo("me/just-text")
    api.upload_file(path_or_fileobj=b"just some notes\n", path_in_repo="notes.txt", repo_id="me/just-text")
    with pytest.raises(ModelLoadError, match="not a saved hubtl model"):
        TransferModel.from_pretrained("me/just-text")


def test_plugin_not_installed(hub: str, image_dir: Path) -> None:
    config_path = image_dir / "config.json"
    config = json.loads(config_path.read_text())
    config["backbone"].update(plugin="ghostnet-plugin", package="hubtl-ghostnet")
    config_path.write_text(json.dumps(config))
    push_output_dir(image_dir, "me/ghost", token=TOKEN)  # the card needs no plugin
    with pytest.raises(PluginUnavailableError, match="pip install hubtl-ghostnet"):
        TransferModel.from_pretrained("me/ghost")


def test_private_repo_needs_the_token(hub: str, image_dir: Path, tmp_path: Path) -> None:
    push_output_dir(image_dir, "me/private-model", private=True, token=TOKEN)
    with pytest.raises(ModelLoadError, match="private"):
        TransferModel.from_pretrained("me/private-model")
    assert TransferModel.from_pretrained("me/private-model", token=TOKEN).labels == ["ants", "bees"]


# --------------------------------------------------------------------------- command line and offline


def test_cli_push_predict_and_offline(hub: str, api: HfApi, tiny_bert: str, tmp_path: Path) -> None:
    """`hubtl push` and `hubtl predict org/name` in subprocesses, then loading offline from the cache."""
    out = tmp_path / "text-model"
    model = saved_model(out, backbone=tiny_bert, labels=["negative", "positive"])
    write_record(out, labels=["negative", "positive"], dataset="stanfordnlp/sst2", backbone=tiny_bert)
    home = tmp_path / "home"
    env = fresh_env(hub, home)
    hubtl = [sys.executable, "-m", "hubtl.cli"]

    refused = subprocess.run([*hubtl, "push", str(out), "team/text"], env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "hubtl: error:" in refused.stderr and "401" in refused.stderr
    assert "Traceback" not in refused.stderr

    pushed = subprocess.run([*hubtl, "push", str(out), "team/text", "--token", TOKEN, "--commit-message", "v1"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    assert "team/text" in pushed.stdout.strip().splitlines()[-1]
    assert api.list_repo_commits("team/text")[0].title == "v1"
    assert ModelCard.load("team/text").data.datasets == ["stanfordnlp/sst2"]

    predicted = subprocess.run([*hubtl, "predict", "team/text", *SENTENCES[:2]], env=env, capture_output=True,
                               text=True, timeout=300)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    lines = [json.loads(line) for line in predicted.stdout.strip().splitlines()]
    assert [line["input"] for line in lines] == SENTENCES[:2]
    assert_same_predictions(lines, model.predict(SENTENCES[:2]))

    # Offline, with the Hub gone: the cache of the first download serves the same model.
    offline = fresh_env(f"http://127.0.0.1:{free_port()}", home, HF_HUB_OFFLINE="1")
    again = predict_in_fresh_process("team/text", SENTENCES[:2], offline, tmp_path)
    assert_same_predictions(again, lines)
    missing = subprocess.run([*hubtl, "predict", "team/never-downloaded", "x"], env=offline, capture_output=True,
                             text=True, timeout=300)
    assert missing.returncode == 2 and "local Hugging Face cache" in missing.stderr


def test_generated_card_mark_survives_round_trip(hub: str, image_dir: Path) -> None:
    """A card pulled from the Hub is recognised as generated, so a later push may regenerate it."""
    push_output_dir(image_dir, "me/roundtrip", token=TOKEN)
    assert GENERATED_MARK in ModelCard.load("me/roundtrip").content
