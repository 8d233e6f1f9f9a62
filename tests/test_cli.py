"""The `hubtl` command line, run as a real subprocess: backbones list, predict, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from conftest import TINY_TIMM
from PIL import Image
from test_registry import BROKEN_MESSAGE, make_broken_distribution, make_fake_hf_cache

from hubtl import TransferModel, __version__


def hubtl(*args: str, **env: str) -> subprocess.CompletedProcess:
    """Run `python -m hubtl.cli ARGS` in a fresh process, with extra environment variables as keywords."""
    return subprocess.run(
        [sys.executable, "-m", "hubtl.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
    )


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def backbone_names(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if not line.startswith("#")]


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2, one `hubtl: error:` line holding the fragments, and no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("hubtl: error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0]
    assert result.stdout == ""


IMAGE_LABELS = ["ant", "bee"]
TEXT_LABELS = ["funny", "sad", "long"]
TEXTS = ["what a hilarious film", "I cried all the way through"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_bert: str) -> dict:
    """A saved image model with two images to predict on, and a saved multi-label text model."""
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    image_model = TransferModel.from_backbone(TINY_TIMM, labels=IMAGE_LABELS, pretrained=False)
    text_model = TransferModel.from_backbone(tiny_bert, task="multi_label", labels=TEXT_LABELS, pretrained=True)
    images = []
    for i, colour in enumerate([(250, 10, 10), (10, 10, 250)]):
        images.append(str(root / f"img{i}.png"))
        Image.new("RGB", (64, 48), colour).save(images[-1])
    return {
        "root": root,
        "images": images,
        "image_model": image_model,
        "image_dir": image_model.save_pretrained(root / "image-model"),
        "text_model": text_model,
        "text_dir": text_model.save_pretrained(root / "text-model"),
    }


@pytest.fixture(scope="module")
def cli(models: dict) -> Iterator[dict[str, Future]]:
    """Every command this module checks, run one per CPU side by side; each test waits for its own result."""
    root, images, image_dir = models["root"], models["images"], models["image_dir"]
    hf_home = root / "hf-home"
    make_fake_hf_cache(hf_home / "hub")
    site = make_broken_distribution(root / "site")
    not_a_model = root / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("hello")
    corrupt = root / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_bytes((image_dir / "config.json").read_bytes())
    (corrupt / "model.safetensors").write_bytes((image_dir / "model.safetensors").read_bytes()[:1000])
    fake_jpg = root / "photo.jpg"
    fake_jpg.write_text("not a jpeg")

    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2)
    runs = {
        "list pattern": pool.submit(hubtl, "backbones", "list", "timm:test_*"),
        "list text": pool.submit(hubtl, "backbones", "list", "--modality", "text", HF_HOME=str(hf_home), HF_HUB_CACHE=str(hf_home / "hub")),
        "list broken": pool.submit(hubtl, "backbones", "list", "timm:test_res*", PYTHONPATH=str(site)),
        "predict images": pool.submit(hubtl, "predict", str(image_dir), *images),
        "predict text": pool.submit(hubtl, "predict", str(models["text_dir"]), *TEXTS),
        "predict top k": pool.submit(hubtl, "predict", str(image_dir), images[0], "--top-k", "1"),
        "not a model": pool.submit(hubtl, "predict", str(not_a_model), "x.png"),
        "corrupt": pool.submit(hubtl, "predict", str(corrupt), images[0]),
        "not an image": pool.submit(hubtl, "predict", str(image_dir), images[0], str(fake_jpg)),
    }
    yield runs
    pool.shutdown(cancel_futures=True)


def test_backbones_list_with_a_pattern(cli: dict[str, Future]) -> None:
    result = cli["list pattern"].result()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"# plugin timm (image) from hubtl {__version__} - ok" in lines
    assert f"# plugin transformers (text) from hubtl {__version__} - ok" in lines
    assert f"# plugin hubtl-pretrained (any: per backbone folder) from hubtl {__version__} - ok" in lines
    names = backbone_names(result.stdout)
    assert {"timm:test_resnet", "timm:test_vit", "timm:test_efficientnet"} <= set(names)
    assert all(name.startswith("timm:test_") for name in names)
    assert "any Hub model works by name" not in result.stdout  # the note on text backbones only where it applies


def test_backbones_list_by_modality(cli: dict[str, Future]) -> None:
    result = cli["list text"].result()
    assert result.returncode == 0, result.stderr
    # the HF cache's text encoder, and the weights package installed with the dev extra (usable offline)
    assert backbone_names(result.stdout) == ["transformers:hubtl-test/tiny-bert", "transformers:sentence-transformers/all-MiniLM-L6-v2"]
    assert "any Hub model works by name: transformers:<namespace>/<name>" in result.stdout


def test_backbones_list_shows_a_broken_plugin_as_unavailable(cli: dict[str, Future]) -> None:
    result = cli["list broken"].result()
    assert result.returncode == 0, result.stderr
    broken = [line for line in result.stdout.splitlines() if line.startswith("# plugin broken ")]
    assert len(broken) == 1
    assert "from brokenpkg 0.1 - UNAVAILABLE: RuntimeError: " + BROKEN_MESSAGE in broken[0]
    assert backbone_names(result.stdout) == ["timm:test_resnet"]


def test_predict_images_prints_one_json_line_per_input(cli: dict[str, Future], models: dict) -> None:
    result = cli["predict images"].result()
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert [line["input"] for line in lines] == models["images"]
    for line, want in zip(lines, models["image_model"].predict(models["images"]), strict=True):
        assert line["label"] == want["label"] and line["label"] in IMAGE_LABELS
        assert line["score"] == pytest.approx(want["score"], abs=1e-6)
        assert line["scores"] == pytest.approx(want["scores"], abs=1e-6)


def test_predict_text(cli: dict[str, Future], models: dict) -> None:
    result = cli["predict text"].result()
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert [line["input"] for line in lines] == TEXTS
    for line, want in zip(lines, models["text_model"].predict(TEXTS), strict=True):
        assert line["labels"] == want["labels"]
        assert line["scores"] == pytest.approx(want["scores"], abs=1e-6)


def test_predict_top_k_prints_the_best_labels(cli: dict[str, Future], models: dict) -> None:
    result = cli["predict top k"].result()
    assert result.returncode == 0, result.stderr
    (line,) = json_lines(result.stdout)
    want = models["image_model"].predict(models["images"][:1])[0]
    assert line["input"] == models["images"][0]
    assert [b["label"] for b in line["top_k"]] == [want["label"]]
    assert line["top_k"][0]["score"] == pytest.approx(want["score"], abs=1e-6)


def test_predict_with_a_directory_that_is_not_a_model(cli: dict[str, Future]) -> None:
    assert_one_line_error(cli["not a model"].result(), "has no config.json", "not a saved hubtl model")


def test_predict_with_corrupt_weights(cli: dict[str, Future]) -> None:
    assert_one_line_error(cli["corrupt"].result(), "model.safetensors is corrupt")


def test_predict_on_a_file_that_is_not_an_image(cli: dict[str, Future]) -> None:
    assert_one_line_error(cli["not an image"].result(), "photo.jpg is not a readable image")


def test_an_unfinished_run_folder_says_to_resume(tmp_path: Path, capsys) -> None:
    from hubtl.cli import main

    (tmp_path / "run" / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    assert main(["predict", str(tmp_path / "run"), "some text"]) != 0
    err = capsys.readouterr().err
    assert "has no config.json" in err and "did not finish: rerun its `hubtl train` command with --resume" in err
