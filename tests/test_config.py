"""The training config: YAML + `--key value` overrides, validation with clear messages, path resolution."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hubtl.config import TrainingConfig, apply_overrides, load_config
from hubtl.data import DatasetConfig
from hubtl.errors import ConfigError, HubtlError
from hubtl.metrics import metric_key
from hubtl.tasks import get_task


@pytest.fixture
def base(tmp_path: Path) -> dict:
    """The smallest valid config (as a dict)."""
    (tmp_path / "data").mkdir()
    return {"backbone": "timm:test_resnet", "dataset": {"path": str(tmp_path / "data")}}


# One valid command-line value per key, and what it must become in the config. Every key of
# TrainingConfig and DatasetConfig is listed: a new key fails test_every_key_is_listed until it is.
TOP_LEVEL = {
    "backbone": ("transformers:/models/bert", "transformers:/models/bert"),
    "output_dir": ("runs/x", "runs/x"),
    "pretrained": ("false", False),
    "base_model": ("google-bert/bert-base-uncased", "google-bert/bert-base-uncased"),
    "backbone_kwargs": ("{drop_rate: 0.1, image_size: 64}", {"drop_rate": 0.1, "image_size": 64}),
    "task": ("multi_label", "multi_label"),
    "labels": ("[ant, bee]", ["ant", "bee"]),
    "num_outputs": ("3", 3),
    "head_dropout": ("0.2", 0.2),
    "head_hidden_dim": ("64", 64),
    "strategy": ("gradual", "gradual"),
    "gradual_unfreeze_epochs": ("2", 2),
    "layer_decay": ("0.75", 0.75),
    "head_learning_rate": ("1e-3", 1e-3),
    "lora_r": ("4", 4),
    "lora_alpha": ("8", 8),
    "lora_dropout": ("0.0", 0.0),
    "lora_target_modules": ("[query, value]", ["query", "value"]),
    "teacher": ("outputs/teacher", "outputs/teacher"),
    "distill_alpha": ("0.7", 0.7),
    "distill_temperature": ("4", 4.0),
    "init_from_teacher": ("[0, 2]", [0, 2]),
    "feature_cache": ("false", False),
    "augment": ("false", False),
    "num_train_epochs": ("5", 5.0),
    "max_steps": ("100", 100),
    "per_device_train_batch_size": ("4", 4),
    "per_device_eval_batch_size": ("8", 8),
    "learning_rate": ("3e-4", 3e-4),
    "weight_decay": ("0.01", 0.01),
    "lr_scheduler_type": ("cosine", "cosine"),
    "warmup_ratio": ("0.1", 0.1),
    "warmup_steps": ("10", 10),
    "lr_scheduler_kwargs": ("{min_lr_rate: 0.1}", {"min_lr_rate": 0.1}),
    "gradient_accumulation_steps": ("4", 4),
    "max_grad_norm": ("0.5", 0.5),
    "mixed_precision": ("bf16", "bf16"),
    "seed": ("7", 7),
    "eval_strategy": ("epoch", "epoch"),
    "eval_steps": ("25", 25),
    "metric_for_best_model": ("f1_macro", "f1_macro"),
    "greater_is_better": ("true", True),
    "early_stopping_patience": ("2", 2),
    "save_steps": ("50", 50),
    "save_total_limit": ("3", 3),
    "resume_from_checkpoint": ("runs/x/checkpoints/checkpoint-50", "runs/x/checkpoints/checkpoint-50"),
    "overwrite_output_dir": ("true", True),
    "dataloader_num_workers": ("0", 0),
    "group_by_length": ("true", True),
    "logging_steps": ("5", 5),
    "report_to": ("[tensorboard, wandb]", ["tensorboard", "wandb"]),
    "strict": ("true", True),
    "disable_tqdm": ("true", True),
    "push_to_hub": ("me/my-model", "me/my-model"),
    "hub_private_repo": ("true", True),
    "license": ("mit", "mit"),
    "candidates": ("[timm:resnet18, {name: b, backbone: timm:resnet50}]",
                   ["timm:resnet18", {"name": "b", "backbone": "timm:resnet50"}]),
}
DATASET = {
    "path": ("other/data", "other/data"),
    "name": ("plain_text", "plain_text"),
    "train_split": ("training", "training"),
    "eval_split": ("dev", "dev"),
    "image_column": ("img", "img"),
    "text_column": ("sentence", "sentence"),
    "label_column": ("target", "target"),
    "data_files": ("{train: a.tsv, validation: [b.tsv, c.tsv]}", {"train": "a.tsv", "validation": ["b.tsv", "c.tsv"]}),
    "unlabeled_split": ("unsupervised", "unsupervised"),
    "unlabeled_files": ("extra.tsv", "extra.tsv"),
    "column_names": ("[sentence, label]", ["sentence", "label"]),
    "validation_size": ("0.2", 0.2),
    "label_separator": ("';'", ";"),
    "max_train_samples": ("100", 100),
    "max_eval_samples": ("10", 10),
    "max_unlabeled_samples": ("300", 300),
    "streaming": ("true", True),
    "shuffle_buffer_size": ("64", 64),
}


def test_every_key_is_listed() -> None:
    assert set(TOP_LEVEL) == {f.name for f in dataclasses.fields(TrainingConfig)} - {"dataset"}
    assert set(DATASET) == {f.name for f in dataclasses.fields(DatasetConfig)}


@pytest.mark.parametrize("key", sorted(TOP_LEVEL))
def test_every_key_overridable(base: dict, key: str) -> None:
    raw, expected = TOP_LEVEL[key]
    cfg = load_config(base, [f"--{key}", raw])
    assert getattr(cfg, key) == expected
    assert type(getattr(cfg, key)) is type(expected)
    # the --key=value form and dashes for underscores work too
    cfg = load_config(base, [f"--{key.replace('_', '-')}={raw}"])
    assert getattr(cfg, key) == expected


@pytest.mark.parametrize("key", sorted(DATASET))
def test_every_dataset_key_overridable(base: dict, key: str) -> None:
    raw, expected = DATASET[key]
    cfg = load_config(base, [f"--dataset.{key}", raw, "--max_steps", "10"])  # max_steps: streaming needs it
    assert getattr(cfg.dataset, key) == expected


def test_overrides_from_a_yaml_file_and_flags(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    path = tmp_path / "cfg.yaml"
    path.write_text("backbone: timm:test_resnet\ndataset: data\nlearning_rate: 5e-5\nnum_train_epochs: 2\n")
    cfg = load_config(path, ["--learning_rate", "1e-3", "--dataset.label_column", "y", "--resume", "--strict",
                             "--overwrite_output_dir", "--seed", "3"])
    assert cfg.learning_rate == 1e-3 and cfg.num_train_epochs == 2.0 and cfg.seed == 3
    assert cfg.dataset.path == str((tmp_path / "data").resolve()) and cfg.dataset.label_column == "y"
    assert cfg.resume_from_checkpoint is True and cfg.strict is True and cfg.overwrite_output_dir is True


def test_yaml_exponent_floats_are_numbers(tmp_path: Path) -> None:
    """PyYAML alone reads `5e-5` as a string; configs always write learning rates that way."""
    (tmp_path / "d").mkdir()
    path = tmp_path / "cfg.yaml"
    path.write_text("backbone: timm:test_resnet\ndataset: d\nlearning_rate: 5e-5\nweight_decay: 1E-2\nhead_learning_rate: 1.5e-3\n")
    cfg = load_config(path)
    assert (cfg.learning_rate, cfg.weight_decay, cfg.head_learning_rate) == (5e-5, 1e-2, 1.5e-3)
    assert load_config(path, ["--learning_rate", "2e-5"]).learning_rate == 2e-5


def test_dataset_given_as_a_string_then_overridden(base: dict) -> None:
    cfg = load_config({**base, "dataset": "some/hub-id"}, ["--dataset.name", "cfg"])
    assert (cfg.dataset.path, cfg.dataset.name) == ("some/hub-id", "cfg")
    assert load_config(base, ["--dataset.path", "x"]).dataset.path == "x"


@pytest.mark.parametrize(
    ("overrides", "suggestion"),
    [
        (["--learning_rte", "0.1"], "learning_rate"),
        (["--num_train_epoch", "3"], "num_train_epochs"),
        (["--per_device_batch_size", "8"], "per_device_train_batch_size"),
        (["--dataset.lable_column", "y"], "dataset.label_column"),
        (["--dataset.txt_column", "y"], "dataset.text_column"),
    ],
)
def test_unknown_key_suggests_the_right_one(base: dict, overrides: list[str], suggestion: str) -> None:
    with pytest.raises(ConfigError, match=r"Unknown config key") as err:
        load_config(base, overrides)
    hint = str(err.value).split("Did you mean ", 1)[1].split("?", 1)[0]
    assert suggestion in hint.split(", ")


def test_unknown_key_in_a_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("backbone: timm:test_resnet\ndataset: d\nwarmup_ration: 0.1\n")
    with pytest.raises(ConfigError, match=r"'warmup_ration'.*Did you mean warmup_ratio"):
        load_config(path)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("learning_rate", "lr", "float"),
        ("num_train_epochs", "three", "float"),
        ("per_device_train_batch_size", "8.5", "int"),
        ("max_steps", "true", "int"),
        ("pretrained", "maybe", "bool"),
        ("labels", "ant", "list"),
        ("backbone_kwargs", "[1, 2]", "dict"),
        ("push_to_hub", "true", "str"),
        ("dataset.validation_size", "big", "float"),
        ("dataset.column_names", "sentence", "list"),
    ],
)
def test_wrong_types(base: dict, key: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(base, [f"--{key}", value])
    message = str(err.value)
    assert repr(key) in message and expected in message


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        (["--learning_rate", "-1e-3"], r"learning_rate must be > 0"),
        (["--learning_rate", "0"], r"learning_rate must be > 0"),
        (["--warmup_ratio", "1.5"], r"warmup_ratio must be in \[0, 1\)"),
        (["--mixed_precision", "fp8"], r"mixed_precision must be one of"),
        (["--strategy", "lora", "--lora_r", "0"], r"lora_r must be >= 1"),
        (["--strategy", "gradual", "--gradual_unfreeze_epochs", "0"], r"gradual_unfreeze_epochs must be >= 1"),
        (["--strategy", "linear-probe"], r"strategy must be one of linear_probe, full, gradual, lora"),
        (["--task", "detection"], r"task must be one of"),
        (["--per_device_train_batch_size", "0"], r"per_device_train_batch_size must be >= 1"),
        (["--gradient_accumulation_steps", "0"], r"gradient_accumulation_steps must be >= 1"),
        (["--layer_decay", "1.5"], r"layer_decay must be in \(0, 1\]"),
        (["--weight_decay", "-0.1"], r"weight_decay must be >= 0"),
        (["--num_train_epochs", "0"], r"num_train_epochs > 0 or max_steps > 0"),
        (["--lr_scheduler_type", "exponential"], r"lr_scheduler_type must be one of"),
        (["--early_stopping_patience", "0"], r"early_stopping_patience must be >= 1"),
        (["--save_steps", "0"], r"save_steps must be >= 1"),
        (["--eval_strategy", "no"], r"eval_strategy: no is not supported.*dataset\.validation_size carves one out"),
        (["--warmup_steps", "-1"], r"warmup_steps must be >= 0"),
        (["--labels", "[a, a]"], r"labels must be unique"),
        (["--backbone", "resnet18"], r"backbone must look like '<plugin>:<model>'"),
        (["--metric_for_best_model", "acuracy"], r"not computed for task classification\. Did you mean accuracy\?"),
        (["--metric_for_best_model", "mae"], r"not computed for task classification"),
        (["--task", "regression", "--metric_for_best_model", "accuracy"], r"Choose one of loss, mae, rmse, r2"),
    ],
)
def test_impossible_values(base: dict, overrides: list[str], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_config(base, overrides)


def test_lora_is_accepted_for_transformers_backbones(base: dict) -> None:
    cfg = load_config({**base, "backbone": "transformers:/some/dir"}, ["--strategy", "lora"])
    assert cfg.strategy == "lora"


@pytest.mark.parametrize("name", ["accuracy", "eval_accuracy", "f1_macro", "loss"])
def test_metric_for_best_model_with_or_without_prefix(base: dict, name: str) -> None:
    cfg = load_config(base, ["--metric_for_best_model", name])
    assert metric_key(cfg.metric_for_best_model) in get_task("classification").metrics


@pytest.mark.parametrize(("task", "name"), [("multi_label", "f1_micro"), ("multi_label", "exact_match"), ("regression", "r2")])
def test_metric_for_best_model_per_task(base: dict, task: str, name: str) -> None:
    assert load_config(base, ["--task", task, "--metric_for_best_model", name]).metric_for_best_model == name


def test_relative_dataset_paths_resolve_against_the_yaml_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (project / "data" / "splits").mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv", "extra-1.tsv", "extra-2.tsv"):
        (project / "data" / "splits" / name).write_text("a\t0\n")
    path = project / "cfg.yaml"
    path.write_text(
        "backbone: timm:test_resnet\n"
        "dataset:\n"
        "  path: tsv\n"
        "  data_files:\n"
        "    train: data/splits/train.tsv\n"
        "    validation: [data/splits/dev.tsv, 'data/splits/extra-*.tsv']\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(path)
    splits = project.resolve() / "data" / "splits"
    assert cfg.dataset.path == "tsv"  # a format name, not a path: left alone
    assert cfg.dataset.data_files == {
        "train": str(splits / "train.tsv"),
        "validation": [str(splits / "dev.tsv"), str(project / "data" / "splits" / "extra-*.tsv")],
    }
    # a folder next to the YAML
    path.write_text("backbone: timm:test_resnet\ndataset: {path: data}\n")
    assert load_config(path).dataset.path == str(project.resolve() / "data")
    # a name that is not there stays as written (e.g. a Hub dataset ID) and command-line paths stay relative to cwd
    path.write_text("backbone: timm:test_resnet\ndataset: {path: someone/dataset}\n")
    assert load_config(path).dataset.path == "someone/dataset"
    assert load_config(path, ["--dataset.path", "data"]).dataset.path == "data"


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("- a\n- b\n", r"must hold a mapping"),
        ("backbone: [unclosed\n", r"not valid YAML"),
        ("dataset: d\n", r"lacks `backbone`"),
        ("backbone: timm:test_resnet\n", r"lacks `dataset`"),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, pattern: str) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=pattern):
        load_config(path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_bad_override_syntax(base: dict) -> None:
    with pytest.raises(ConfigError, match=r"write `--key value`"):
        load_config(base, ["learning_rate", "0.1"])
    with pytest.raises(ConfigError, match=r"not a section"):
        load_config({**base, "seed": 1}, ["--seed.x", "1"])
    with pytest.raises(ConfigError, match=r"Unknown config key 'optimizer'"):
        load_config(base, ["--optimizer.lr", "1"])


def test_bare_flag_means_true_and_errors_are_hubtl_errors(base: dict) -> None:
    values: dict = {}
    apply_overrides(values, ["--overwrite_output_dir", "--learning_rate", "-1e-3", "--disable_tqdm"])
    assert values == {"overwrite_output_dir": True, "learning_rate": -1e-3, "disable_tqdm": True}
    with pytest.raises(HubtlError):
        load_config(base, ["--learning_rate", "fast"])


def test_round_trip_through_to_dict(base: dict) -> None:
    cfg = load_config(base, ["--labels", "[a, b]", "--dataset.column_names", "[t, l]"])
    again = TrainingConfig.from_dict(cfg.to_dict())
    assert again == cfg


def test_readme_config_reference_matches_the_config_fields() -> None:
    import re

    from hubtl.config import PATH_RULES, config_reference

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"<!-- config-reference:start -->\n```yaml\n(.*?)```\n<!-- config-reference:end -->", readme, re.S)
    assert block, "README.md lost its generated config reference block"
    assert block.group(1) == config_reference(), "README's config reference is stale: regenerate it from config_reference()"
    assert " ".join(PATH_RULES.split()) in " ".join(readme.split())


def test_train_help_lists_every_key_with_type_default_and_meaning(capsys) -> None:
    import dataclasses

    from hubtl.train import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(TrainingConfig):
        if f.name != "dataset":
            assert f"--{f.name} " in out and f.metadata["help"] in out, f.name
    for f in dataclasses.fields(DatasetConfig):
        assert f"--dataset.{f.name} " in out
    assert "--learning_rate float (default 5.0e-05)" in out and "--resume" in out
    assert main([]) == 2


def test_data_files_without_path_is_a_valid_config(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("text,label\na,x\n")
    cfg = load_config({"backbone": "timm:test_resnet", "dataset": {"data_files": {"train": str(tmp_path / "train.csv")}}})
    assert cfg.dataset.path is None and cfg.dataset.data_files == {"train": str(tmp_path / "train.csv")}
    with pytest.raises(ConfigError, match=r"dataset\.path must name .*or give dataset\.data_files"):
        load_config({"backbone": "timm:test_resnet", "dataset": {"name": "x"}})


def test_a_half_typed_name_stays_a_string_and_a_mapping_needs_braces() -> None:
    values: dict = {}
    apply_overrides(values, ["--backbone", "timm:", "--backbone_kwargs", "{image_size: 64}"])
    assert values == {"backbone": "timm:", "backbone_kwargs": {"image_size": 64}}  # was {'timm': None}, a type error


def test_import_registers_a_task_of_ones_own_before_the_config_is_checked(
    base: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from hubtl import tasks

    (tmp_path / "hubtl_test_my_tasks.py").write_text(
        "import hubtl\n\n@hubtl.register_task\nclass Smoothed(hubtl.tasks.Classification):\n    name = 'smoothed_test'\n"
    )
    monkeypatch.chdir(tmp_path)  # --import searches the working directory, as `python -m` does
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(tasks, "_TASKS", dict(tasks._TASKS))  # the registration ends with the test
    monkeypatch.delitem(sys.modules, "hubtl_test_my_tasks", raising=False)
    with pytest.raises(ConfigError, match=r"Unknown task 'smoothed_test'.*import it first, or pass --import MODULE"):
        load_config(base, ["--task", "smoothed_test"])
    assert load_config(base, ["--import", "hubtl_test_my_tasks", "--task", "smoothed_test"]).task == "smoothed_test"
    with pytest.raises(ConfigError, match=r"--import no_such_module_here: no module 'no_such_module_here' found"):
        load_config(base, ["--import", "no_such_module_here"])


@pytest.mark.parametrize(("key", "hint"), [("fp16", "mixed_precision: fp16"), ("lr", "learning_rate"),
                                           ("load_best_model_at_end", "always kept")])
def test_transformers_names_say_what_hubtl_calls_them(base: dict, key: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=rf"Unknown config key '{key}'; in hubtl write .*{hint}"):
        load_config(base, [f"--{key}", "true"])


def test_report_to_reads_as_transformers_does() -> None:
    """Names, a list or a comma-separated string; none, all and auto; unknown and uninstalled trackers refused."""
    from accelerate.tracking import get_available_trackers

    from hubtl.training.record import trackers

    installed = [str(getattr(t, "value", t)) for t in get_available_trackers()]
    assert "tensorboard" in installed  # the dev extra installs it
    assert trackers("none") == trackers([]) == []
    assert trackers("auto") == ["tensorboard"]
    assert trackers("all") == installed
    assert trackers(["tensorboard"]) == trackers("tensorboard, none") == ["tensorboard"]
    with pytest.raises(ConfigError, match="unknown tracker.*'tensorbaord'.*wandb"):
        trackers("tensorbaord")
    missing = next(n for n in ("aim", "clearml", "swanlab", "dvclive") if n not in installed)
    with pytest.raises(ConfigError, match=f"{missing} is not installed; `pip install {missing}`"):
        trackers(["tensorboard", missing])
