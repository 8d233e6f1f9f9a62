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
#: The keys a typical user's YAML sets (what the trainer records as summary.json `config_keys_set`).
KEYS_SET = ["backbone", "task", "labels", "dataset.path", "dataset.eval_split", "dataset.label_column", "strategy",
            "num_train_epochs", "per_device_train_batch_size", "learning_rate", "weight_decay", "lr_scheduler_type",
            "warmup_ratio", "output_dir"]


# --------------------------------------------------------------------------- helpers shared with test_hub_push


def write_record(
    output_dir: Path,
    task: str = "classification",
    labels: list[str] | None = None,
    dataset: str = "/data/hymenoptera",
    epochs: int = 3,
    keys_set: list[str] | None = KEYS_SET,
    **config: Any,
) -> dict[str, Any]:
    """Write a training record as hubtl's trainer does (config.yaml, metrics.jsonl, eval_results.json, summary.json).

    `keys_set` is summary.json's `config_keys_set` (the keys the user's config set; `config` keys are added to it);
    None leaves it out, as in records of older trainers.
    """
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
    if keys_set is not None:
        summary["config_keys_set"] = list(dict.fromkeys([*keys_set, *config]))
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
                     "local files at `hymenoptera`", "0.8750", "| ants | 0.8000 | 0.7500 | 0.7700 | 70 |",
                     "| **ants** | 60 | 5 |", f"]({CURVES_PNG})", f"]({CONFUSION_PNG})", "| timm | 1.0.0 |",
                     "not declared in the training config", "(training/config.yaml)"):
        assert expected in body, expected
    assert "/data/hymenoptera" not in card.content  # the training machine's path is never in the card
    config = yaml.safe_load((image_dir / "training" / "config.yaml").read_text())
    shown = set(re.findall(r"^\| `([\w.]+)` \|", body, flags=re.M))
    # the keys the config set (file handling apart) and those that always matter; the rest is in training/config.yaml
    assert shown == {"backbone", "task", "labels", "dataset.path", "dataset.eval_split", "dataset.label_column",
                     "strategy", "num_train_epochs", "per_device_train_batch_size", "learning_rate", "weight_decay",
                     "lr_scheduler_type", "warmup_ratio", "seed"}
    assert "| `dataset.path` | hymenoptera |" in body and "| `learning_rate` | 0.001 |" in body
    assert {"output_dir", "early_stopping_patience", "per_device_eval_batch_size"} <= set(config) - shown
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


def test_labels_are_shown_as_written_never_as_html(tmp_path: Path) -> None:
    out = tmp_path / "html"
    labels = ["<img src=x onerror=alert(1)>", "a`b | c"]
    saved_model(out, labels=labels)
    write_record(out, labels=labels)
    card = write_model_card(out)
    assert "| 0 | &lt;img src=x onerror=alert(1)&gt; |" in card.text  # table cells: escaped
    outside_code = "".join(card.text.split("`")[::2])  # code spans show their text literally, never as HTML
    assert "<img" not in outside_code
    assert "`a'b \\| c`" in card.text  # in the sentence's code spans: a backtick cannot close the span early


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
    assert "the local directory `minilm` (not a Hub ID" in card.text and "/models/minilm" not in card.content


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


# --------------------------------------------------------------------------- parameters, plots, short runs


def test_parameters_are_counted_as_the_trainer_logs_them(tmp_path: Path) -> None:
    """Parameters only (batch-norm buffers apart), and trained = what the strategy trained, as in the training log."""
    import math

    from hubtl.layout import read_weights_header

    out = tmp_path / "m"
    model = saved_model(out)
    write_record(out)
    total = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for p in model.head.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    stored = sum(math.prod(shape) for _, shape in read_weights_header(out / "model.safetensors").values())
    assert buffers > 0 and stored == total + buffers  # the file holds both; only parameters are parameters
    text = build_model_card(out).text
    assert f"| Parameters | {total:,} ({total - head:,} in the backbone, {head:,} in the head); buffers" in text
    assert f"({buffers:,} values) are not parameters" in text
    # no counts recorded (an older trainer): a linear probe trained the head
    assert f"| Trained parameters | {head:,} of {total:,} (the `linear_probe` strategy) |" in text

    summary_path = out / "training" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary.update(trainable_parameters=2562, total_parameters=3373570, strategy="full")
    summary_path.write_text(json.dumps(summary))
    config = yaml.safe_load((out / "training" / "config.yaml").read_text())
    (out / "training" / "config.yaml").write_text(yaml.safe_dump({**config, "strategy": "full"}))
    text = build_model_card(out).text
    assert "| Trained parameters | 2,562 of 3,373,570 (the `full` strategy) |" in text  # the trainer's own count

    summary.pop("trainable_parameters"), summary.pop("total_parameters")
    summary_path.write_text(json.dumps(summary))
    assert "Trained parameters" not in build_model_card(out).text  # unknown for a strategy that trains the backbone


def test_y_axes_start_at_a_sensible_floor() -> None:
    from hubtl.cards.plots import y_limits

    assert y_limits("eval_accuracy", [0.934, 0.941], num_labels=2) == (0.5, 1.0)  # chance level, not 0.934
    assert y_limits("eval_accuracy", [0.2, 0.4], num_labels=2) == (0.2, 1.0)  # below chance stays visible
    assert y_limits("eval_accuracy", [0.9], num_labels=None) == (0.0, 1.0)
    assert y_limits("eval_f1_macro", [0.93, 0.94]) == (0.0, 1.0)
    assert y_limits("eval_loss", [0.3, 0.5]) == (0.0, None) and y_limits("loss", [2.0]) == (0.0, None)
    assert y_limits("eval_mae", [1.5, 2.0]) == (0.0, None)
    assert y_limits("eval_r2", [-0.5, 0.5]) == (-0.5, 1.0)
    assert y_limits("eval_something", [3.0]) == (None, None) and y_limits("eval_loss", []) == (None, None)


def _curves(directory: Path) -> tuple[Any, Any]:
    """The loss and main-metric axes of a record's curves figure."""
    from hubtl.cards.plots import curves_figure

    fig = curves_figure(read_training_record(directory))
    loss_ax, metric_ax = [ax for ax in fig.axes if ax.get_title()]
    return loss_ax, metric_ax


def _kept_lines(ax: Any) -> list[Any]:
    """The lines marking the kept epoch on an axis."""
    return [line for line in ax.get_lines() if str(line.get_label()).startswith("kept: epoch")]


def test_curves_mark_the_kept_epoch_on_a_floored_axis(image_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    summary_path = image_dir / "training" / "summary.json"
    summary_path.write_text(json.dumps({**json.loads(summary_path.read_text()), "best_epoch": 2}))
    loss_ax, metric_ax = _curves(image_dir)
    assert metric_ax.get_ylim() == (0.5, 1.0)  # two labels: accuracy from chance to 1
    assert loss_ax.get_ylim()[0] == 0.0
    for ax in (loss_ax, metric_ax):
        (line,) = _kept_lines(ax)
        assert line.get_label() == "kept: epoch 2" and list(line.get_xdata()) == [2.0, 2.0]
    stars = [line for line in metric_ax.get_lines() if line.get_marker() == "*"]
    assert [(list(s.get_xdata()), list(s.get_ydata())) for s in stars] == [([2.0], [pytest.approx(0.7)])]


def _short_run(directory: Path, epoch_row: bool = True) -> None:
    """A 60-step run logged every 10 steps, evaluated at step 30 and at its end (as the trainer's rows are written)."""
    rows: list[dict[str, Any]] = []
    for step in range(10, 70, 10):
        rows.append({"kind": "step", "step": step, "epoch": step / 100, "loss": 0.7 - 0.004 * step,
                     "learning_rate": 1e-3, "train_samples_per_second": 50.0})
        if step == 30:
            rows.append({"kind": "eval", "step": 30, "epoch": 0.3, "eval_loss": 0.6, "eval_accuracy": 0.7})
    if epoch_row:
        rows.append({"kind": "epoch", "epoch": 1, "step": 60, "train_loss": 0.55, "learning_rate": 1e-3,
                     "eval_loss": 0.45, "eval_accuracy": 0.93, "epoch_time_s": 3.0, "train_samples_per_second": 50.0})
    else:
        rows.append({"kind": "eval", "step": 60, "epoch": 0.6, "eval_loss": 0.45, "eval_accuracy": 0.93})
    (directory / "training" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary_path = directory / "training" / "summary.json"
    summary = {**json.loads(summary_path.read_text()), "best_epoch": 1 if epoch_row else None, "total_steps": 60}
    summary_path.write_text(json.dumps(summary))


def test_a_short_run_draws_curves_by_step_and_tables_its_epochs(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    out = tmp_path / "short"
    saved_model(out)
    write_record(out, epochs=1, max_steps=60, logging_steps=10)
    _short_run(out)
    loss_ax, metric_ax = _curves(out)
    assert "optimizer step" in loss_ax.get_xlabel()
    lines = {line.get_label(): line for line in loss_ax.get_lines()}
    assert list(lines["training loss"].get_xdata()) == [10, 20, 30, 40, 50, 60]  # a curve, not a dot
    assert list(lines["evaluation loss"].get_xdata()) == [30, 60]
    assert list(metric_ax.get_lines()[0].get_xdata()) == [30, 60]
    assert [list(line.get_xdata()) for line in _kept_lines(metric_ax)] == [[60.0, 60.0]]  # epoch 1 ended at step 60

    card = write_model_card(out)
    assert_complete(card.content)
    table = card.text[card.text.index("## Results per epoch"):card.text.index("## Evaluation")]
    assert table.count("\n| 1 (best) | 60 |") == 1 and "| 10 |" not in table and "| 30 |" not in table
    assert "the training loss every 10 optimizer steps (6 points) and 1 evaluation within epochs" in table
    assert "per optimizer step, the kept epoch marked" in table

    _short_run(out, epoch_row=False)  # stopped before its first epoch ended
    card = write_model_card(out)
    assert_complete(card.content)
    assert "ended before its first epoch was complete" in card.text and "| Epoch |" not in card.text
    assert (out / CURVES_PNG).read_bytes().startswith(PNG_MAGIC)
    _, metric_ax = _curves(out)
    assert list(metric_ax.get_lines()[0].get_xdata()) == [30, 60] and not _kept_lines(metric_ax)


def test_hyperparameters_without_recorded_keys_are_those_off_their_default(tmp_path: Path) -> None:
    """A record without `config_keys_set` (an older trainer): keys whose value differs from TrainingConfig's default."""
    out = tmp_path / "m"
    saved_model(out)
    write_record(out, keys_set=None, num_outputs=1, augment=True, disable_tqdm=True, per_device_eval_batch_size=32,
                 logging_steps=5)
    text = build_model_card(out).text
    shown = set(re.findall(r"^\| `([\w.]+)` \|", text, flags=re.M))
    assert {"backbone", "dataset.path", "dataset.eval_split", "strategy", "num_train_epochs", "learning_rate",
            "per_device_train_batch_size", "weight_decay", "lr_scheduler_type", "warmup_ratio", "seed"} <= shown
    assert not shown & {"num_outputs", "augment", "disable_tqdm", "per_device_eval_batch_size", "max_steps",
                        "gradient_accumulation_steps", "mixed_precision", "dataset.train_split", "dataset.label_column",
                        "logging_steps", "output_dir", "pretrained"}


# --------------------------------------------------------------------------- nothing private published


def test_public_forms_of_local_paths() -> None:
    from hubtl.cards.public import public_config, public_model_config, public_name_keys, public_summary

    config = {
        "backbone": "transformers:/home/me/.venv/lib/site-packages/minilm/model",
        "backbone_kwargs": {"checkpoint_path": "/home/me/weights/lite0.safetensors", "pooling": "mean"},
        "dataset": {"path": "/tmp/pytest-1/shared/data/sst2", "data_files": {"train": "/tmp/p/train.tsv",
                    "validation": ["/tmp/p/dev.tsv", "dev2.tsv"]}, "text_column": "sentence"},
        "output_dir": "/tmp/pytest-1/outputs/sst2", "resume_from_checkpoint": "~/runs/checkpoint-10",
        "push_to_hub": "team/sst2", "learning_rate": 0.003,
    }
    public = public_config(config)
    assert public["backbone"] == "transformers:model"
    assert public["backbone_kwargs"] == {"checkpoint_path": "lite0.safetensors", "pooling": "mean"}
    assert public["dataset"] == {"path": "sst2", "data_files": {"train": "train.tsv", "validation": ["dev.tsv", "dev2.tsv"]},
                                 "text_column": "sentence"}
    assert public["output_dir"] == "sst2" and public["resume_from_checkpoint"] == "checkpoint-10"
    assert public["push_to_hub"] == "team/sst2" and public["learning_rate"] == 0.003
    assert config["dataset"]["path"] == "/tmp/pytest-1/shared/data/sst2"  # the given config is left as it was
    assert public_config(config, base_model="sentence-transformers/all-MiniLM-L6-v2")["backbone"] == (
        "transformers:sentence-transformers/all-MiniLM-L6-v2")
    hub = {"backbone": "timm:resnet18", "dataset": {"path": "stanfordnlp/sst2", "data_files": ["data/train-*.parquet"]},
           "output_dir": "outputs/run", "resume_from_checkpoint": True}
    assert public_config(hub) == {**hub, "output_dir": "run"}  # Hub IDs and in-repo files stay as they are
    assert public_config({"backbone": "transformers:org/model", "dataset": "C:\\data\\ants"}) == {
        "backbone": "transformers:org/model", "dataset": "ants"}
    names = {"labels": ["/r/funny", "/r/sad"], "dataset": {"path": "org/ds", "column_names": ["/text", "label"]}}
    assert public_config(names) == names  # labels and columns are names, whatever they look like
    assert public_config({"backbone": "transformers:/x/copy"}, base_model="bert-base-uncased") == {
        "backbone": "transformers:bert-base-uncased"}  # a legacy bare Hub ID recorded as the base model

    summary = public_summary({"dataset": "/data/hymenoptera", "skipped_files": ["/data/hymenoptera/train/bees/x.jpg",
                                                                                  "/elsewhere/y.jpg"], "best_epoch": 2})
    assert summary == {"dataset": "hymenoptera", "skipped_files": ["hymenoptera/train/bees/x.jpg", "y.jpg"], "best_epoch": 2}
    model_config = {"backbone": {"plugin": "transformers", "name": "/tmp/x/tiny-bert0", "kwargs": {}}, "task": "classification"}
    assert public_model_config(model_config)["backbone"]["name"] == "tiny-bert0"
    assert public_model_config(model_config, "google/bert_uncased_L-2_H-128_A-2")["backbone"]["name"] == (
        "google/bert_uncased_L-2_H-128_A-2")
    assert public_model_config({"backbone": {"plugin": "timm", "name": "resnet18"}})["backbone"]["name"] == "resnet18"
    assert public_name_keys({"_name_or_path": "/tmp/x/tiny-bert0", "model_type": "bert"}) == {
        "_name_or_path": "tiny-bert0", "model_type": "bert"}
    assert public_name_keys({"name_or_path": "bert-base-uncased"}) == {"name_or_path": "bert-base-uncased"}


def test_card_of_a_local_backbone_and_data_shows_names_and_the_recorded_base_model(tiny_bert: str, tiny_bert_dir: Path,
                                                                                 tmp_path: Path) -> None:
    out = tmp_path / "text-model"
    saved_model(out, backbone=tiny_bert, labels=["neg", "pos"])
    data = tmp_path / "data" / "reviews"
    write_record(out, labels=["neg", "pos"], dataset=str(data), backbone=tiny_bert,
                 keys_set=[*KEYS_SET, "dataset.data_files"], resume_from_checkpoint=str(out / "checkpoints"))
    config = yaml.safe_load((out / "training" / "config.yaml").read_text())
    config["dataset"]["data_files"] = {"train": str(data / "train.tsv")}
    (out / "training" / "config.yaml").write_text(yaml.safe_dump(config))
    card = build_model_card(out, repo_id="me/text-model")  # a card for the Hub (a local one loads from the folder)
    assert_complete(card.content)
    for private in (str(tmp_path), str(tiny_bert_dir), str(Path.home())):
        assert private not in card.content, private
    assert card.data.base_model is None and card.data.datasets is None
    assert f"`transformers:{tiny_bert_dir.name}`" in card.text and "the local dataset `reviews`" in card.text
    assert "| `dataset.data_files.train` | train.tsv |" in card.text

    write_record(out, labels=["neg", "pos"], dataset=str(data), backbone=tiny_bert,
                 base_model="google/bert_uncased_L-2_H-128_A-2")
    card = build_model_card(out, repo_id="me/text-model")
    assert card.data.base_model == "google/bert_uncased_L-2_H-128_A-2"  # the recorded base model
    assert "`transformers:google/bert_uncased_L-2_H-128_A-2`" in card.text
    assert f"trained from a local copy, `{tiny_bert_dir.name}`" in card.text and str(tiny_bert_dir) not in card.content


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
