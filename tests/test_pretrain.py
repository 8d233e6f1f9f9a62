"""`hubtl pretrain`: MLM and masked/denoising image auto-encoders on tiny models, the backbone folder it writes,
loading it as a backbone (`hubtl-pretrained:`), fine-tuning it, resume, two processes, and the errors."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from hubtl import ConfigError, ModelLoadError, TransferModel, register_plugin
from hubtl.backbones.base import Backbone, BackbonePlugin
from hubtl.backbones.registry import unregister_plugin
from hubtl.backbones.timm import ImagePreprocessor
from hubtl.pretrain import main as pretrain_main
from hubtl.pretraining import PretrainingConfig, load_pretraining_config, pretrain
from hubtl.training import train

TOKEN = "hub-write-token"
QUIET = {"report_to": "none", "disable_tqdm": True, "dataloader_num_workers": 0}
WORDS = "the cat sat on a mat and the dog ran in the park while birds sang over a quiet lake".split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny unlabeled corpus (a text column and a label column, which pre-training ignores)."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "texts.tsv"
    rows = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))) for _ in range(160)]
    path.write_text("text\tlabel\n" + "".join(f"{row}\t{i % 2}\n" for i, row in enumerate(rows)))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 synthetic 64x64 images (colour ramps, two orientations) in one folder, no class sub-folders."""
    folder = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, 64)
    for i in range(40):
        image = np.outer(ramp, np.ones(64))[..., None] * rng.random(3)[None, None, :] * 255
        image = image.transpose(1, 0, 2) if i % 2 else image
        Image.fromarray(np.ascontiguousarray(image.astype(np.uint8))).save(folder / f"img{i}.png")
    return folder


def _mlm(tiny_bert: str, corpus: Path, out: Path, **extra: Any) -> dict[str, Any]:
    return {
        "backbone": tiny_bert, "dataset": {"path": str(corpus)}, "output_dir": str(out), "max_seq_length": 32,
        "num_train_epochs": 3, "learning_rate": 1e-3, "per_device_train_batch_size": 8, "seed": 0, **QUIET, **extra,
    }  # fmt: skip


def _mae(images: Path, out: Path, **extra: Any) -> dict[str, Any]:
    return {
        "backbone": "timm:test_resnet", "pretrained": False, "backbone_kwargs": {"image_size": 64},
        "dataset": {"path": str(images)}, "output_dir": str(out), "objective": "masked_autoencoder",
        "mask_patch_size": 16, "augment": False, "num_train_epochs": 4, "learning_rate": 3e-3,
        "per_device_train_batch_size": 8, "seed": 0, **QUIET, **extra,
    }  # fmt: skip


@pytest.fixture(scope="module")
def mlm_run(tiny_bert: str, corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("mlm") / "out"
    return out, pretrain(_mlm(tiny_bert, corpus, out))


@pytest.fixture(scope="module")
def mae_run(images: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("mae") / "out"
    return out, pretrain(_mae(images, out))


def _record(out: Path) -> dict[str, Any]:
    return json.loads((out / "hubtl_backbone.json").read_text())


# --------------------------------------------------------------------------- the objectives learn


def test_mlm_loss_falls_on_a_tiny_corpus(mlm_run: tuple[Path, Any]) -> None:
    out, result = mlm_run
    record = _record(out)["pretraining"]
    epochs = [r for r in result.metrics if r["kind"] == "epoch"]
    assert len(epochs) == 3
    assert [r["train_loss"] for r in epochs] == sorted((r["train_loss"] for r in epochs), reverse=True)
    assert epochs[-1]["eval_loss"] < epochs[0]["eval_loss"] < record["initial_eval_loss"]
    assert record["eval_loss"] < 0.97 * record["initial_eval_loss"]
    assert record["objective"] == "mlm" and record["max_seq_length"] == 32 and record["steps"] == epochs[-1]["step"]


def test_masked_autoencoder_reconstructs_better_after_training(mae_run: tuple[Path, Any]) -> None:
    out, result = mae_run
    record = _record(out)["pretraining"]
    # the same masks at every evaluation (seeded), so before and after compare the same masked pixels
    assert record["eval_loss"] < 0.85 * record["initial_eval_loss"]
    assert record["initialisation"] == "random" and record["mask_patch_size"] == 16


def test_denoising_autoencoder_trains_a_backbone_without_a_feature_map(images: Path, tmp_path: Path, pooled_plugin: str) -> None:
    result = pretrain(_mae(images, tmp_path / "out", backbone=f"{pooled_plugin}:tiny", objective="denoising_autoencoder",
                           backbone_kwargs={}, pretrained=True))  # fmt: skip
    record = _record(tmp_path / "out")["pretraining"]
    assert record["objective"] == "denoising_autoencoder"
    assert _record(tmp_path / "out")["weights"] == "backbone"  # no native format: the module's own state dict
    assert record["eval_loss"] < record["initial_eval_loss"]
    assert len(result.metrics) == 4


# --------------------------------------------------------------------------- the backbone folder


def test_text_folder_is_a_transformers_folder_and_a_hubtl_backbone(
    mlm_run: tuple[Path, Any], tiny_bert_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from transformers import AutoModel, AutoTokenizer

    out, _ = mlm_run
    native = AutoModel.from_pretrained(out)  # the native folder: config.json, model.safetensors, tokenizer files
    AutoTokenizer.from_pretrained(out)
    initial = AutoModel.from_pretrained(tiny_bert_dir).state_dict()
    trained = native.state_dict()
    moved = [(trained[k] - v).abs().max().item() for k, v in initial.items() if v.is_floating_point() and "pooler" not in k]
    assert max(moved) > 1e-3
    assert "head" not in " ".join(load_file(str(out / "model.safetensors")))  # no MLM head, no task head
    card = (out / "README.md").read_text()
    assert "pre-trained text backbone" in card and "Evaluation loss" in card and "hubtl-pretrained:out" in card
    assert (out / "training" / "training_curves.png").is_file() and (out / "training" / "metrics.jsonl").is_file()

    from hubtl import create_backbone

    backbone = create_backbone(f"hubtl-pretrained:{out}")
    ours = backbone.model.state_dict()
    saved = load_file(str(out / "model.safetensors"))  # mean pooling: BERT's pooler was dropped, so not saved
    assert saved.keys() <= ours.keys() and all(torch.equal(ours[k], v) for k, v in saved.items())
    assert backbone.pretrained_from["objective"] == "mlm" and backbone.pretrained_from["name"] == "out"
    assert create_backbone(f"hubtl-pretrained:{out}", pooling="cls").pooling == "cls"  # spec kwargs may be replaced
    with pytest.raises(ConfigError, match=r"holds no pooler weights .*Use backbone_kwargs: \{pooling: cls\}"):
        create_backbone(f"hubtl-pretrained:{out}", pooling="pooler")  # was "does not match ... download it again"

    with caplog.at_level("WARNING", logger="hubtl"):  # pretrained: false keeps the architecture only, and says so
        random = create_backbone(f"hubtl-pretrained:{out}", pretrained=False)
    assert not random.pretrained_from["weights_loaded"]
    assert any(not torch.equal(random.model.state_dict()[k], v) for k, v in saved.items() if v.is_floating_point())
    assert "random weights" in caplog.text and "Set pretrained: true" in caplog.text


def test_image_folder_is_a_timm_folder_and_fine_tunes_with_pretrained_from(
    mae_run: tuple[Path, Any], tmp_path: Path
) -> None:
    import timm

    out, _ = mae_run
    native = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert native.num_classes == 0 and "hf_hub_id" not in json.loads((out / "config.json").read_text())["pretrained_cfg"]
    labeled = tmp_path / "labeled"  # the synthetic images the run read, in two class folders for the probe
    for i, path in enumerate(sorted(_images_dir(out).glob("*.png"))):
        (labeled / ("a" if i % 2 else "b")).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, labeled / ("a" if i % 2 else "b") / path.name)
    result = train({"backbone": f"hubtl-pretrained:{out}", "dataset": {"path": str(labeled)}, "strategy": "linear_probe",
                    "augment": False, "num_train_epochs": 2, "output_dir": str(tmp_path / "ft"), **QUIET})  # fmt: skip
    model = TransferModel.from_pretrained(tmp_path / "ft")  # rebuilt by the timm plugin: no need of the folder
    assert model.backbone.spec()["plugin"] == "timm"
    tuned = model.backbone.model.state_dict()
    assert all(torch.equal(tuned[k], v) for k, v in native.state_dict().items())  # a linear probe: the backbone as saved
    card = (tmp_path / "ft" / "README.md").read_text()
    assert "pretrained_from: out" in card and "in the local folder `out` (not on the Hub): `hubtl pretrain` (`masked_autoencoder`" in card
    assert "base_model:" not in card.split("---")[1]  # random initialisation: no Hub model at the root of the chain
    summary = json.loads((tmp_path / "ft" / "training" / "summary.json").read_text())
    assert summary["pretrained_from"]["objective"] == "masked_autoencoder" and result.eval_results["eval_samples"] > 0


def _images_dir(out: Path) -> Path:
    """The synthetic image folder a pre-training run read (its training config names it)."""
    return Path(yaml.safe_load((out / "training" / "config.yaml").read_text())["dataset"]["path"])


def test_loading_refuses_what_a_model_folder_refuses(mae_run: tuple[Path, Any], tmp_path: Path) -> None:
    from hubtl import create_backbone

    out, _ = mae_run
    bad = tmp_path / "bad"
    shutil.copytree(out, bad, ignore=shutil.ignore_patterns("checkpoints"))
    record = _record(bad)
    record["backbone"]["kwargs"] = {"checkpoint_path": "/etc/passwd"}
    (bad / "hubtl_backbone.json").write_text(json.dumps(record))
    with pytest.raises(ModelLoadError, match="names a file, path or URL|not one plugin"):
        create_backbone(f"hubtl-pretrained:{bad}")
    shutil.copytree(out, bad, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoints"))
    (bad / "backbone").mkdir(exist_ok=True)
    (bad / "backbone" / "evil.py").write_text("raise SystemExit")
    with pytest.raises(ModelLoadError, match="not a data file"):
        create_backbone(f"hubtl-pretrained:{bad}")
    with pytest.raises(ModelLoadError, match="not a pre-trained hubtl backbone"):
        create_backbone(f"hubtl-pretrained:{tmp_path}")


@pytest.fixture
def hub(tmp_path: Path, hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A Hub server with a write token; this process's client talks to it."""
    from hubtl.hub.server import running_server, use_endpoint

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    with running_server(tmp_path / "hub-root", token=TOKEN) as url, use_endpoint(url):
        yield url


def test_push_and_load_by_hub_id(mae_run: tuple[Path, Any], hub: Any, hf_home: Path) -> None:
    from hubtl import create_backbone
    from hubtl.hub.push import push_backbone_dir

    out, _ = mae_run
    push_backbone_dir(out, "alice/mae-tiny", token=TOKEN)
    backbone = create_backbone("hubtl-pretrained:alice/mae-tiny")
    assert backbone.base_model == "alice/mae-tiny" and backbone.pretrained_from["hub_id"] == "alice/mae-tiny"
    native = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(backbone.model.state_dict()[k], v) for k, v in native.items())


# --------------------------------------------------------------------------- resume and two processes


@pytest.mark.parametrize("objective", ["mlm", "masked_autoencoder", "denoising_autoencoder"])
def test_the_evaluation_loss_does_not_depend_on_how_examples_are_batched(
    tiny_bert: str, corpus: Path, images: Path, tmp_path: Path, objective: str
) -> None:
    """Each example's masks (or noise) come from the seed and its own content: the loss before training is the same
    for any eval batch size, and so for any number of processes sharing the eval split."""
    losses = []
    for size in (3, 8):
        out = tmp_path / f"{objective}-{size}"
        extra = {"per_device_eval_batch_size": size, "max_steps": 1}
        config = _mlm(tiny_bert, corpus, out, **extra) if objective == "mlm" else _mae(images, out, objective=objective, **extra)
        pretrain(config)
        losses.append(json.loads((out / "hubtl_backbone.json").read_text())["pretraining"]["initial_eval_loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_resume_continues_to_the_same_weights(tiny_bert: str, corpus: Path, tmp_path: Path, caplog) -> None:
    extra = {"lr_scheduler_type": "constant", "num_train_epochs": 2}
    with caplog.at_level("WARNING"):
        reference = pretrain(_mlm(tiny_bert, corpus, tmp_path / "ref", **extra))
    assert "Removed shared tensor" not in caplog.text  # the MLM decoder tied to the embeddings: saved once, tied again
    pretrain(_mlm(tiny_bert, corpus, tmp_path / "cut", **{**extra, "num_train_epochs": 1}))
    resumed = pretrain(_mlm(tiny_bert, corpus, tmp_path / "cut", **extra), ["--resume"])
    assert [r["eval_loss"] for r in resumed.metrics] == pytest.approx([r["eval_loss"] for r in reference.metrics], abs=1e-6)
    a, b = load_file(str(tmp_path / "ref" / "model.safetensors")), load_file(str(tmp_path / "cut" / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_resume_mid_epoch_masks_as_the_uninterrupted_run(tiny_bert: str, corpus: Path, tmp_path: Path) -> None:
    # the loader collates one batch ahead of the step: masks drawn from the global RNG in the collate had already moved
    # it past the checkpoint's state (measured 0.056 apart after a mid-epoch resume); batch-seeded masks do not
    extra = {"num_train_epochs": 1, "save_steps": 2, "save_total_limit": 10}
    pretrain(_mlm(tiny_bert, corpus, tmp_path / "ref", **extra))
    steps = sorted(int(c.name.split("-")[1]) for c in (tmp_path / "ref" / "checkpoints").glob("checkpoint-*"))
    middle = next(s for s in steps if s % 2 == 0 and s < max(steps))  # a save_steps checkpoint inside the epoch
    (tmp_path / "cut" / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "ref" / "checkpoints" / f"checkpoint-{middle}", tmp_path / "cut" / "checkpoints" / f"checkpoint-{middle}")
    pretrain(_mlm(tiny_bert, corpus, tmp_path / "cut", **extra), ["--resume"])
    a, b = load_file(str(tmp_path / "ref" / "model.safetensors")), load_file(str(tmp_path / "cut" / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pretrain_on_two_processes(config: Path) -> None:
    """`accelerate launch` of `hubtl.pretrain` on two CPU processes; it must succeed."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        "-m", "hubtl.pretrain", str(config),
    ]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_processes(tiny_bert: str, corpus: Path, tmp_path: Path) -> None:
    config = tmp_path / "mlm.yaml"
    config.write_text(yaml.safe_dump(_mlm(tiny_bert, corpus, tmp_path / "two", num_train_epochs=2, per_device_train_batch_size=4)))
    _pretrain_on_two_processes(config)
    out = tmp_path / "two"
    summary = json.loads((out / "training" / "summary.json").read_text())
    record = _record(out)["pretraining"]
    assert summary["world_size"] == 2 and record["world_size"] == 2
    blocks = json.loads((out / "training" / "eval_results.json").read_text())["eval_samples"]
    one = pretrain(_mlm(tiny_bert, corpus, tmp_path / "one", num_train_epochs=1))
    assert blocks == one.eval_results["eval_samples"]  # exact evaluation: no padding duplicates counted
    assert record["eval_loss"] < record["initial_eval_loss"]
    from hubtl import create_backbone

    create_backbone(f"hubtl-pretrained:{out}")


@pytest.mark.parametrize("objective", ["mlm", "masked_autoencoder"])
def test_two_processes_evaluate_as_one(tiny_bert: str, corpus: Path, images: Path, tmp_path: Path, objective: str) -> None:
    """The same weights give the same evaluation loss on one process and on two (each example's masks are its own)."""
    def config(out: Path) -> dict[str, Any]:
        extra = {"max_steps": 1, "per_device_eval_batch_size": 1}  # several eval batches on each process
        return _mlm(tiny_bert, corpus, out, **extra) if objective == "mlm" else _mae(images, out, **extra)

    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path / "two")))
    _pretrain_on_two_processes(path)
    pretrain(config(tmp_path / "one"))
    one, two = (_record(tmp_path / name)["pretraining"]["initial_eval_loss"] for name in ("one", "two"))
    assert one == pytest.approx(two, rel=1e-5)


# --------------------------------------------------------------------------- errors and the command line


class _PooledOnly(Backbone):
    """A tiny image backbone that gives pooled features only (no feature map)."""

    modality = "image"

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = 8

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.body(batch["pixel_values"])

    def preprocessor(self, train: bool = False) -> ImagePreprocessor:
        return ImagePreprocessor({"input_size": (3, 64, 64), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 1.0}, train)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [list(self.parameters())]

    def spec(self) -> dict[str, Any]:
        return {"plugin": "pooledonly", "name": "tiny", "kwargs": {}}


class _PooledOnlyPlugin(BackbonePlugin):
    name = "pooledonly"
    modality = "image"
    package = "hubtl-tests"

    def create(self, model_name: str, pretrained: bool = True, **kwargs: Any) -> Backbone:
        return _PooledOnly()

    def from_spec(self, spec: dict[str, Any], files_dir: Path | None) -> Backbone:
        return _PooledOnly()

    def list_models(self, pattern: str | None = None) -> list[str]:
        return ["tiny"]


@pytest.fixture
def pooled_plugin() -> Any:
    register_plugin(_PooledOnlyPlugin)
    yield "pooledonly"
    unregister_plugin("pooledonly")


def test_masked_autoencoder_without_a_feature_map_names_the_denoising_objective(
    images: Path, tmp_path: Path, pooled_plugin: str
) -> None:
    with pytest.raises(ConfigError, match="needs a backbone with a feature map.*objective: denoising_autoencoder"):
        pretrain(_mae(images, tmp_path / "out", backbone="pooledonly:tiny", backbone_kwargs={}))


def test_a_mask_patch_as_large_as_the_image_is_refused(images: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mask_patch_size 64 leaves a single patch in the 64x64 input.*e\.g\. 32"):
        pretrain(_mae(images, tmp_path / "out", mask_patch_size=64))


def test_mlm_on_an_image_backbone_says_what_to_use(images: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="objective: mlm trains text backbones.*Use objective: masked_autoencoder or denoising_autoencoder"):
        pretrain(_mae(images, tmp_path / "out", objective="mlm"))


def test_mlm_needs_a_transformers_encoder() -> None:
    from hubtl.pretraining.objectives import get_objective

    class Plain(_PooledOnly):
        modality = "text"

    with pytest.raises(ConfigError, match="objective: mlm needs a Hugging Face transformers encoder"):
        get_objective("mlm").check(Plain(), "mytext:encoder")


def test_config_refuses_task_keys_and_bad_values(tiny_bert: str, corpus: Path, tmp_path: Path) -> None:
    base = _mlm(tiny_bert, corpus, tmp_path / "out")
    with pytest.raises(ConfigError, match="strategy: not a pre-training key"):
        load_pretraining_config({**base, "strategy": "linear_probe"})
    with pytest.raises(ConfigError, match="objective must be one of mlm, masked_autoencoder, denoising_autoencoder"):
        load_pretraining_config({**base, "objective": "mae"})
    with pytest.raises(ConfigError, match="mlm_probability must be in"):
        load_pretraining_config({**base, "mlm_probability": 1.5})
    with pytest.raises(ConfigError, match="mask_patch_size 48 does not divide the 64x64 input"):
        pretrain(_mae(Path(str(corpus.parent)), tmp_path / "x", mask_patch_size=48, dataset={"path": str(_synthetic(tmp_path))}))
    cfg = load_pretraining_config(base, ["--mlm_probability", "0.3"])
    assert isinstance(cfg, PretrainingConfig) and cfg.mlm_probability == 0.3 and "strategy" not in cfg.to_dict()


def _synthetic(tmp_path: Path) -> Path:
    folder = tmp_path / "syn"
    folder.mkdir(exist_ok=True)
    for i in range(6):
        Image.fromarray(np.full((64, 64, 3), i * 40, dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_cli_help_lists_the_pretraining_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert pretrain_main(["--help"]) == 0
    text = capsys.readouterr().out
    for key in ("--objective", "--mlm_probability", "--whole_word_mask", "--max_seq_length", "--mask_ratio", "--learning_rate"):
        assert key in text
    assert "--strategy " not in text and "--labels " not in text


def test_whole_word_masking_and_line_by_line(tiny_bert: str, corpus: Path, tmp_path: Path) -> None:
    result = pretrain(_mlm(tiny_bert, corpus, tmp_path / "out", whole_word_mask=True, line_by_line=True, num_train_epochs=1))
    record = _record(tmp_path / "out")["pretraining"]
    assert record["whole_word_mask"] and record["line_by_line"] and record["eval_examples"] == 16
    assert result.metrics[-1]["eval_samples"] == 16  # one example per text (16 held-out texts)


def test_kit_checks_the_feature_map_when_declared() -> None:
    from hubtl.testing import check_backbone

    report = check_backbone("timm:test_resnet", checks=["feature_map"])
    assert report["feature_map"].status == "pass" and "stride" in report["feature_map"].message

    class Broken(_PooledOnly):
        has_feature_map = True

        def forward_feature_map(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.body(batch["pixel_values"])  # pooled: [B, 8], not a map

    class BrokenPlugin(_PooledOnlyPlugin):
        def create(self, model_name: str, pretrained: bool = True, **kwargs: Any) -> Backbone:
            return Broken()

    report = check_backbone(BrokenPlugin(), "tiny", checks=["feature_map"], raise_on_failure=False)
    assert report["feature_map"].status == "fail" and "[batch, channels, height, width]" in report["feature_map"].message
    report = check_backbone(_PooledOnlyPlugin(), "tiny", checks=["feature_map"], raise_on_failure=False)
    assert report["feature_map"].status == "skip"


def test_card_command_renders_a_backbone_folder(mae_run: tuple[Path, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from hubtl.cli import main

    out, _ = mae_run
    assert main(["card", str(out)]) == 0
    text = capsys.readouterr().out
    assert "pre-trained image backbone" in text and "random initialisation" in text and "masked_autoencoder" in text
