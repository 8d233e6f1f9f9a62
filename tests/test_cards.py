"""Model cards: rendered from real saved models and training records, complete, truthful and free of placeholders."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from huggingface_hub import ModelCard

from hubtl import TransferModel
from hubtl.cards import (
    CONFUSION_PNG,
    CURVES_PNG,
    GENERATED_MARK,
    build_model_card,
    read_training_record,
    write_model_card,
    write_plots,
)
from hubtl.errors import ConfigError, ModelLoadError

TINY_TIMM = "timm:test_resnet"
PLACEHOLDERS = re.compile(r"(?i:\[More Information Needed\]|\bTODO\b|\bnan\b)|\{\{|\}\}|\{%|%\}|\bNone\b|\bnull\b")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- helpers shared with test_hub_push


def write_record(
    output_dir: Path,
    task: str = "classification",
    labels: list[str] | None = None,
    dataset: str = "/data/hymenoptera",
    epochs: int = 3,
    **config: Any,
) -> dict[str, Any]:
    """Write a training record as hubtl's trainer does (config.yaml, metrics.jsonl, eval_results.json, summary.json)."""
    labels = labels if labels is not None else ["ants", "bees"]
    training = output_dir / "training"
    training.mkdir(parents=True, exist_ok=True)
    resolved = {
        "backbone": TINY_TIMM,
        "pretrained": True,
        "backbone_kwargs": {},
        "task": task,
        "labels": labels if task != "regression" else None,
        "dataset": {"path": dataset, "name": None, "train_split": "train", "eval_split": "val", "image_column": None,
                    "text_column": None, "label_column": "label", "data_files": None, "column_names": None},
        "strategy": "linear_probe",
        "layer_decay": None,
        "num_train_epochs": epochs,
        "max_steps": -1,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 16,
        "learning_rate": 1e-3,
        "weight_decay": 0.01,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.1,
        "gradient_accumulation_steps": 1,
        "mixed_precision": "no",
        "seed": 42,
        "metric_for_best_model": None,
        "early_stopping_patience": None,
        "save_steps": None,
        "output_dir": str(output_dir),
        "push_to_hub": None,
    }
    resolved.update(config)
    (training / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    if task == "regression":
        per_epoch = [{"eval_mae": 1.0 / e, "eval_rmse": 1.5 / e, "eval_r2": 1 - 0.5 / e} for e in range(1, epochs + 1)]
        final = {"eval_mae": 0.3125, "eval_rmse": 0.5, "eval_r2": 0.8125}
        main = "eval_r2"
    else:
        per_epoch = [
            {"eval_accuracy": 0.5 + 0.1 * e, "eval_f1_macro": 0.45 + 0.1 * e}
            if task == "classification"
            else {"eval_f1_micro": 0.4 + 0.1 * e, "eval_f1_macro": 0.35 + 0.1 * e}
            for e in range(1, epochs + 1)
        ]
        per_class = {
            label: {"precision": 0.8 + 0.01 * i, "recall": 0.75 + 0.02 * i, "f1": 0.77 + 0.01 * i, "support": 70 + i}
            for i, label in enumerate(labels)
        }
        if task == "classification":
            final = {"eval_accuracy": 0.875, "eval_f1_macro": 0.8671875, "eval_per_class": per_class,
                     "eval_confusion_matrix": [[60 if i == j else 5 for j in range(len(labels))] for i in range(len(labels))]}
            main = "eval_accuracy"
        else:
            final = {"eval_f1_micro": 0.71875, "eval_f1_macro": 0.6875, "eval_per_class": per_class}
            main = "eval_f1_micro"
    rows = [
        {"epoch": e, "step": 31 * e, "train_loss": 0.9 / e, "learning_rate": 1e-3 / e, "eval_loss": 0.8 / e,
         **metrics, "epoch_time_s": 12.25, "train_samples_per_second": 20.5}
        for e, metrics in enumerate(per_epoch, 1)
    ]
    (training / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    eval_results = {"epoch": epochs, "eval_samples": 153, "eval_loss": 0.25, **final}
    if task != "regression":
        eval_results["labels"] = labels
    (training / "eval_results.json").write_text(json.dumps(eval_results))
    summary = {"dataset": dataset, "dataset_name": None, "train_samples": 244, "eval_samples": 153,
               "skipped_files": ["train/bees/not-an-image.jpg"], "strategy": "linear_probe", "feature_cache": True,
               "best_epoch": epochs, "metric_for_best_model": main, "total_steps": 31 * epochs, "runtime_s": 40.25,
               "world_size": 1, "mixed_precision": "no",
               "versions": {"hubtl": "0.1.0", "torch": "2.5.0", "timm": "1.0.0", "python": "3.11.7"}}
    (training / "summary.json").write_text(json.dumps(summary))
    return eval_results


def saved_model(directory: Path, backbone: str = TINY_TIMM, seed: int = 0, **kwargs: Any) -> TransferModel:
    """Save a real TransferModel with random weights (no download) into `directory`."""
    import torch

    torch.manual_seed(seed)
    kwargs.setdefault("labels", ["ants", "bees"])
    model = TransferModel.from_backbone(backbone, pretrained=False, **kwargs)
    model.save_pretrained(directory)
    return model


def assert_complete(text: str) -> None:
    """No placeholder, unrendered template syntax or missing value is left in a card."""
    found = PLACEHOLDERS.findall(text)
    assert not found, f"placeholders left in the card: {found}"


def usage_snippet(text: str) -> str:
    """The Python usage snippet of a card."""
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "a card has exactly one Python snippet"
    return blocks[0]


def run_snippet(code: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Execute a card's snippet as written in a fresh interpreter; return its stdout."""
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def metadata_results(card: ModelCard) -> dict[str, float]:
    """model-index results of a card, keyed by metric name."""
    return {r.metric_name: r.metric_value for r in card.data.eval_results or []}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """A saved tiny timm classifier with a full training record."""
    out = tmp_path / "ants-bees"
    saved_model(out)
    write_record(out)
    return out


# --------------------------------------------------------------------------- tests


def test_templates_ship_one_per_task() -> None:
    names = {p.name for p in resources.files("hubtl.model_cards").iterdir()}
    assert {"classification.md.j2", "multi_label.md.j2", "regression.md.j2", "base.md.j2"} <= names


def test_classification_card_is_complete(image_dir: Path) -> None:
    card = write_model_card(image_dir)
    text = (image_dir / "README.md").read_text()
    assert text == card.content
    assert_complete(text)
    assert GENERATED_MARK in text

    data = ModelCard.load(image_dir / "README.md").data
    assert data.library_name == "hubtl"
    assert {"hubtl", "transfer-learning", "timm", "image", "image-classification"} <= set(data.tags)
    assert data.pipeline_tag == "image-classification"
    assert data.base_model == "timm/test_resnet.r160_in1k"  # timm's pretrained cfg hf_hub_id
    assert data.datasets is None  # a local path is not a Hub dataset
    assert data.get("license") is None  # none declared
    assert set(data.metrics) == {"accuracy", "f1"}
    eval_results = json.loads((image_dir / "training" / "eval_results.json").read_text())
    assert metadata_results(card) == {"Accuracy": eval_results["eval_accuracy"], "F1 (macro)": eval_results["eval_f1_macro"]}
    assert {r.dataset_split for r in data.eval_results} == {"val"}

    body = card.text
    for expected in ("ants", "bees", "timm:test_resnet", "linear_probe", "244", "153", "Skipped files", "| 3 (best) |",
                     "local files at `/data/hymenoptera`", "0.8750", "| ants | 0.8000 | 0.7500 | 0.7700 | 70 |",
                     "| **ants** | 60 | 5 |", f"]({CURVES_PNG})", f"]({CONFUSION_PNG})", "| timm | 1.0.0 |",
                     "not declared in the training config"):
        assert expected in body, expected
    config = yaml.safe_load((image_dir / "training" / "config.yaml").read_text())
    for key in config:  # every hyperparameter, nested ones dotted
        if isinstance(config[key], dict) and config[key]:
            assert all(f"`{key}.{sub}`" in body for sub in config[key])
        else:
            assert f"`{key}`" in body, key
    assert re.search(r"\| `early_stopping_patience` \| not set \|", body)
    assert body.count("| 1 | 31 |") == 1 and body.count("| 2 | 62 |") == 1  # one row per epoch


def test_plots_are_pngs(image_dir: Path) -> None:
    written = write_plots(image_dir)
    assert {p.relative_to(image_dir).as_posix() for p in written} == {CURVES_PNG, CONFUSION_PNG}
    for path in written:
        assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 5_000


def test_usage_snippet_runs_as_written(image_dir: Path, tmp_path: Path) -> None:
    card = write_model_card(image_dir)
    code = usage_snippet(card.text)
    assert f'TransferModel.from_pretrained("{image_dir.resolve()}")' in code
    output = run_snippet(code, cwd=tmp_path)
    assert "'label': 'ants'" in output or "'label': 'bees'" in output


def test_card_names_the_repo_when_given(image_dir: Path) -> None:
    card = build_model_card(image_dir, repo_id="me/ants-bees")
    assert 'TransferModel.from_pretrained("me/ants-bees")' in card.text
    assert "hubtl predict me/ants-bees" in card.text
    assert card.data.model_name == "ants-bees" and card.data.eval_results[0].dataset_name == "hymenoptera"


def test_untrained_text_model_card_is_truthful(tiny_bert: str, tmp_path: Path) -> None:
    out = tmp_path / "untrained"
    saved_model(out, backbone=tiny_bert, labels=["neg", "pos"])
    card = write_model_card(out)
    assert_complete(card.content)
    assert "not fine-tuned by hubtl's trainer" in card.text
    assert "whether the backbone started from pretrained weights is unknown" in card.text
    assert not (out / "training").exists() or not any((out / "training").iterdir())  # no plot invented
    assert "![" not in card.text and "## Evaluation" not in card.text
    data = card.data
    assert data.eval_results is None and data.base_model is None and data.pipeline_tag == "text-classification"
    assert "text" in data.tags and "transformers" in data.tags
    output = run_snippet(usage_snippet(card.text), cwd=tmp_path)
    assert "'label': 'neg'" in output or "'label': 'pos'" in output


@pytest.mark.parametrize("task", ["regression", "multi_label"])
def test_other_tasks_use_their_template(task: str, tmp_path: Path) -> None:
    out = tmp_path / task
    labels = ["red", "round", "sweet"] if task == "multi_label" else None
    saved_model(out, task=task, labels=labels)
    eval_results = write_record(out, task=task, labels=labels or [])
    card = write_model_card(out)
    assert_complete(card.content)
    if task == "regression":
        assert "regression model for image inputs" in card.text and "Confusion" not in card.text
        assert metadata_results(card) == {"MAE": 0.3125, "RMSE": 0.5, "R²": 0.8125}
        assert "regression" in card.data.tags
        assert not (out / CONFUSION_PNG).exists() and (out / CURVES_PNG).is_file()
    else:
        assert "multi-label image classifier" in card.text and "| sweet |" in card.text
        assert metadata_results(card) == {"F1 (micro)": eval_results["eval_f1_micro"],
                                          "F1 (macro)": eval_results["eval_f1_macro"]}
        assert "multi-label-classification" in card.data.tags


@pytest.mark.parametrize("keep", [set(), {"config.yaml"}, {"eval_results.json"}, {"metrics.jsonl"}, {"summary.json"},
                                  {"config.yaml", "summary.json"}])
def test_partial_records_still_give_complete_cards(image_dir: Path, keep: set[str]) -> None:
    for path in (image_dir / "training").iterdir():
        if path.name not in keep:
            path.unlink()
    card = write_model_card(image_dir)
    assert_complete(card.content)
    if "eval_results.json" not in keep:
        assert card.data.eval_results is None
    if "metrics.jsonl" not in keep:
        assert not (image_dir / CURVES_PNG).exists()


def test_base_model_and_datasets_follow_the_origin_of_weights_and_data(image_dir: Path) -> None:
    config_path = image_dir / "training" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())

    def card_with(**changes: Any) -> ModelCard:
        config_path.write_text(yaml.safe_dump({**config, **changes}))
        return build_model_card(image_dir)

    assert card_with(pretrained=False).data.base_model is None
    card = card_with(backbone_kwargs={"checkpoint_path": "/weights/lite0.safetensors"})
    assert card.data.base_model is None and "local checkpoint file, `lite0.safetensors`" in card.text
    card = card_with(dataset={**config["dataset"], "path": "hymenoptera/ants-bees"}, license="mit")
    assert card.data.datasets == ["hymenoptera/ants-bees"] and card.data.license == "mit"
    assert card.data.eval_results[0].dataset_type == "hymenoptera/ants-bees"
    assert "[hymenoptera/ants-bees](https://huggingface.co/datasets/hymenoptera/ants-bees)" in card.text

    model_config = json.loads((image_dir / "config.json").read_text())
    for name, expected in (("sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
                           ("/models/minilm", None)):
        model_config["backbone"].update(plugin="transformers", name=name)
        (image_dir / "config.json").write_text(json.dumps(model_config))
        card = card_with(pretrained=True, backbone=f"transformers:{name}")
        assert card.data.base_model == expected
        assert_complete(card.content)
    assert "the local directory `/models/minilm` (not a Hub ID" in card.text


def test_keys_of_other_strategies_are_left_out(tmp_path: Path) -> None:
    out = tmp_path / "m"
    saved_model(out)
    write_record(out, lora_r=8, lora_alpha=16, gradual_unfreeze_epochs=1)
    text = build_model_card(out).text
    assert "`lora_r`" not in text and "`gradual_unfreeze_epochs`" not in text and "`learning_rate`" in text
    write_record(out, strategy="lora", lora_r=8, lora_alpha=16, gradual_unfreeze_epochs=1)
    text = build_model_card(out).text
    assert "| `lora_r` | 8 |" in text and "`gradual_unfreeze_epochs`" not in text and "LoRA" in text


def test_hand_written_readme_is_kept(image_dir: Path) -> None:
    readme = image_dir / "README.md"
    readme.write_text("# My own card\n")
    card = write_model_card(image_dir)
    assert readme.read_text() == "# My own card\n" and "ants" in card.text
    write_model_card(image_dir, force=True)
    assert GENERATED_MARK in readme.read_text()


def test_damaged_record_is_a_clear_error(image_dir: Path) -> None:
    (image_dir / "training" / "eval_results.json").write_text("{not json")
    with pytest.raises(ConfigError, match="eval_results.json is not valid JSON"):
        build_model_card(image_dir)
    (image_dir / "training" / "eval_results.json").unlink()
    with (image_dir / "training" / "metrics.jsonl").open("a") as f:
        f.write("oops\n")
    with pytest.raises(ConfigError, match="line 4"):
        read_training_record(image_dir)


def test_not_a_model_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a directory"):
        build_model_card(tmp_path / "missing")
    with pytest.raises(ModelLoadError, match="not a saved hubtl model"):
        build_model_card(tmp_path)


def test_cli_card_prints_and_writes(image_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hubtl.cli import main

    assert main(["card", str(image_dir)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("---\n") and "# ants-bees" in printed
    assert (image_dir / "README.md").read_text().strip() == printed.strip()


# --------------------------------------------------------------------------- wording from tasks and strategies


def test_task_and_strategy_wording_come_from_their_registries(image_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hubtl import strategies, tasks

    class Ordinal(tasks.Classification):
        name = "ordinal"
        card_template = "regression.md.j2"

        def description(self, modality: str) -> str:
            return f"ordinal {modality} rating"

        def pipeline_tag(self, modality: str) -> str | None:
            return None

        def tags(self) -> list[str]:
            return ["ordinal-regression"]

    class Warmup(strategies.Strategy):
        name = "warmup_then_full"
        description = "Warm-up first: the head alone, then everything."
        config_keys = ("warmup_head_epochs",)

    monkeypatch.setitem(tasks._TASKS, "ordinal", Ordinal())
    monkeypatch.setitem(strategies._STRATEGIES, "warmup_then_full", Warmup())
    config = json.loads((image_dir / "config.json").read_text())
    (image_dir / "config.json").write_text(json.dumps({**config, "task": "ordinal"}))
    write_record(image_dir, strategy="warmup_then_full", warmup_head_epochs=2, lora_r=8)
    card = build_model_card(image_dir)
    assert_complete(card.content)
    assert "regression model for image inputs" in card.text  # the task's template
    assert "| Task | ordinal image rating |" in card.text
    assert card.data.pipeline_tag is None and "ordinal-regression" in card.data.tags
    assert "image-classification" not in card.data.tags
    assert {r.task_name for r in card.data.eval_results} == {"Ordinal image rating"}
    assert "Warm-up first: the head alone, then everything." in card.text
    assert "| `warmup_head_epochs` | 2 |" in card.text and "`lora_r`" not in card.text
    assert "except those that only apply to other strategies (`lora`)" in card.text

    write_record(image_dir, strategy="full", warmup_head_epochs=2)  # another strategy's key is left out
    text = build_model_card(image_dir).text
    assert "`warmup_head_epochs`" not in text and "(`warmup_then_full`)" in text


def test_unregistered_task_and_strategy_still_render(image_dir: Path) -> None:
    """A card is rendered from files on disk: names this hubtl does not know fall back, they never fail."""
    config = json.loads((image_dir / "config.json").read_text())
    (image_dir / "config.json").write_text(json.dumps({**config, "task": "from_a_newer_hubtl"}))
    write_record(image_dir, strategy="from_a_plugin", lora_r=8, gradual_unfreeze_epochs=1)
    card = build_model_card(image_dir)
    assert_complete(card.content)
    assert "A single-label image classifier" in card.text  # the classification template
    assert "The `from_a_plugin` strategy." in card.text
    assert "`lora_r`" not in card.text and "`gradual_unfreeze_epochs`" not in card.text
    assert card.data.pipeline_tag == "image-classification"


# --------------------------------------------------------------------------- rendered once per save or push


@pytest.fixture
def render_counts(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many times the card and its plots were rendered (our own functions wrapped, nothing mocked)."""
    import hubtl.cards.render as render

    counts = {"card": 0, "plots": 0}
    build, plots = render.build_model_card, render.write_plots

    def counted_build(*args: Any, **kwargs: Any) -> Any:
        counts["card"] += 1
        return build(*args, **kwargs)

    def counted_plots(*args: Any, **kwargs: Any) -> Any:
        counts["plots"] += 1
        return plots(*args, **kwargs)

    monkeypatch.setattr(render, "build_model_card", counted_build)
    monkeypatch.setattr(render, "write_plots", counted_plots)
    return counts


@pytest.fixture
def local_hub(tmp_path: Path, hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """hubtl's own Hub server on a loopback port, with a write token; this process's client talks to it."""
    from hubtl.hub.server import running_server, use_endpoint

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    with running_server(tmp_path / "hub-root", token="write-token") as url, use_endpoint(url):
        yield url


def test_push_renders_the_card_once(local_hub: str, image_dir: Path, render_counts: dict[str, int]) -> None:
    """`hubtl push`: the card and plots are rendered once for the repo, pushed, and that same card is kept locally."""
    from hubtl.hub.push import push_output_dir

    push_output_dir(image_dir, "me/once", token="write-token")
    assert render_counts == {"card": 1, "plots": 1}
    local = (image_dir / "README.md").read_text()
    assert 'from_pretrained("me/once")' in local
    assert ModelCard.load("me/once", token="write-token").content == local
    assert (image_dir / CURVES_PNG).read_bytes().startswith(PNG_MAGIC)
    assert (image_dir / CONFUSION_PNG).read_bytes().startswith(PNG_MAGIC)


def test_trainer_writes_the_card_for_the_repo_then_pushes_it_as_is(
    local_hub: str, image_dir: Path, render_counts: dict[str, int]
) -> None:
    """What the trainer does: write the card once, naming the repo, then push the folder without rendering again."""
    from hubtl.hub.push import push_output_dir

    write_model_card(image_dir, repo_id="me/trained")
    readme = image_dir / "README.md"
    before = {p: ((image_dir / p).stat().st_ino, (image_dir / p).stat().st_mtime_ns)
              for p in ("README.md", CURVES_PNG, CONFUSION_PNG)}
    push_output_dir(image_dir, "me/trained", token="write-token", render_card=False)
    assert render_counts == {"card": 1, "plots": 1}
    after = {p: ((image_dir / p).stat().st_ino, (image_dir / p).stat().st_mtime_ns) for p in before}
    assert after == before  # nothing in the output dir was rewritten
    assert ModelCard.load("me/trained", token="write-token").content == readme.read_text()
    assert 'from_pretrained("me/trained")' in readme.read_text()
