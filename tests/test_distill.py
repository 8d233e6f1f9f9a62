"""strategy: distill on tiny models: the loss by hand, cached vs uncached teacher outputs, unlabeled examples,
a student built from the teacher's layers, resume, two processes, the card and the errors."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

import hubtl
from hubtl.distillation import distillation_loss, init_from_teacher, soft_loss, teacher_layer_indices
from hubtl.errors import ConfigError, DataError
from hubtl.tasks import get_task
from hubtl.train import train

from test_train_multiprocess import ENV, _free_port, _sentences

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


# --------------------------------------------------------------------------- fixtures: data, a 4-layer tiny BERT, a teacher


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 labeled training sentences, 16 dev sentences and 32 unlabeled ones (header-less tsv)."""
    root = tmp_path_factory.mktemp("distill")
    data = root / "data"
    data.mkdir()
    for name, rows in (("train.tsv", _sentences(48)), ("dev.tsv", _sentences(16, offset=1))):
        (data / name).write_text("".join(f"{s}\t{label}\n" for s, label in rows))
    (data / "unlabeled.tsv").write_text("".join(f"{s}\n" for s, _ in _sentences(32, offset=100)))
    return root


@pytest.fixture(scope="module")
def bert4(root: Path, tiny_bert_dir: Path) -> str:
    """A 4-layer, 32-wide BERT (the tiny BERT's tokenizer), so that a 2-layer student can pick teacher layers."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    directory = root / "bert4"
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return f"transformers:{directory}"


def _base(root: Path, backbone: str, out: Path, **values: Any) -> dict[str, Any]:
    return {
        "backbone": backbone, "backbone_kwargs": dict(NO_DROPOUT),
        "dataset": {"path": str(root / "data"), "data_files": {"train": "train.tsv", "validation": "dev.tsv"},
                    "column_names": ["sentence", "label"], "text_column": "sentence"},
        "learning_rate": 5e-3, "num_train_epochs": 2, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 6,
        "report_to": "none", "disable_tqdm": True, "seed": 0, "dataloader_num_workers": 0, "output_dir": str(out),
        **values,
    }


@pytest.fixture(scope="module")
def teacher(root: Path, bert4: str) -> Path:
    """The 4-layer BERT fully fine-tuned on the 48 labeled sentences."""
    out = root / "teacher"
    train(_base(root, bert4, out, strategy="full", num_train_epochs=3))
    return out


def _student(root: Path, bert4: str, teacher: Path, out: Path, unlabeled: bool = True, **values: Any) -> dict[str, Any]:
    config = _base(root, bert4, out, strategy="distill", teacher=str(teacher), init_from_teacher="every_other", **values)
    config["backbone_kwargs"]["num_hidden_layers"] = 2
    if unlabeled:
        config["dataset"]["unlabeled_files"] = "unlabeled.tsv"
    return config


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model.safetensors"))


def _max_difference(a: Path, b: Path) -> float:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    return max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)


def _epochs(out: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (out / "training" / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("kind") == "epoch"]


# --------------------------------------------------------------------------- the loss, by hand


def test_the_classification_loss_equals_a_hand_computation() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 3), torch.randn(5, 3)
    labels = torch.tensor([0, 2, 1, 1, 0])
    alpha, t = 0.3, 2.5
    # by hand: cross-entropy on the labels, and T² · KL(p_teacher ‖ p_student) at temperature T, both batch means
    p_student = torch.exp(student / t) / torch.exp(student / t).sum(-1, keepdim=True)
    p_teacher = torch.exp(teacher / t) / torch.exp(teacher / t).sum(-1, keepdim=True)
    kl = (p_teacher * (p_teacher.log() - p_student.log())).sum(-1).mean()
    ce = -(torch.exp(student) / torch.exp(student).sum(-1, keepdim=True)).log()[torch.arange(5), labels].mean()
    expected = alpha * ce + (1 - alpha) * t * t * kl
    got = distillation_loss(get_task("classification"), student, labels, torch.ones(5), teacher, alpha, t)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_the_multi_label_and_regression_losses_equal_hand_computations() -> None:
    torch.manual_seed(1)
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    q = torch.sigmoid(teacher)  # per-label BCE to the teacher's sigmoids
    bce = -(q * torch.sigmoid(student).log() + (1 - q) * (1 - torch.sigmoid(student)).log()).mean(-1)
    torch.testing.assert_close(soft_loss(get_task("multi_label"), student, teacher, 4.0), bce, rtol=1e-5, atol=1e-6)
    mse = ((student - teacher) ** 2).mean(-1)  # regression: MSE to the teacher's outputs, no temperature
    torch.testing.assert_close(soft_loss(get_task("regression"), student, teacher, 4.0), mse)
    targets = torch.randn(4, 3)
    expected = 0.25 * ((student - targets) ** 2).mean() + 0.75 * mse.mean()
    got = distillation_loss(get_task("regression"), student, targets, torch.ones(4), teacher, 0.25, 4.0)
    torch.testing.assert_close(got, expected)


def test_unlabeled_examples_contribute_only_the_soft_loss() -> None:
    task = get_task("classification")
    torch.manual_seed(2)
    teacher = torch.randn(6, 2)
    labels = torch.tensor([0, 1, 1, 0, 0, 0])
    labeled = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    student = torch.randn(6, 2, requires_grad=True)
    loss = distillation_loss(task, student, labels, labeled, teacher, 0.5, 2.0)
    (grad,) = torch.autograd.grad(loss, student)
    # what an unlabeled example's placeholder label says changes nothing
    other = distillation_loss(task, student, torch.tensor([0, 1, 1, 1, 1, 1]), labeled, teacher, 0.5, 2.0)
    assert other.item() == loss.item()
    # its gradient is exactly the soft loss's gradient (the batch mean over all 6 examples)
    soft = 0.5 * soft_loss(task, student, teacher, 2.0).mean()
    (soft_grad,) = torch.autograd.grad(soft, student)
    torch.testing.assert_close(grad[3:], soft_grad[3:])
    assert not torch.allclose(grad[:3], soft_grad[:3])  # labeled examples also feel their labels
    # a batch of unlabeled examples only: the soft loss alone
    only = distillation_loss(task, student, labels, torch.zeros(6), teacher, 0.5, 2.0)
    torch.testing.assert_close(only, soft)


# --------------------------------------------------------------------------- init_from_teacher


def test_init_from_teacher_copies_exactly_the_chosen_layers(bert4: str) -> None:
    teacher = hubtl.TransferModel.from_backbone(bert4, labels=["neg", "pos"])
    for choice, expected in (("every_other", [1, 3]), ("first_k", [0, 1]), ([3, 0], [3, 0])):
        student = hubtl.TransferModel.from_backbone(bert4, labels=["neg", "pos"], pretrained=False, num_hidden_layers=2)
        assert init_from_teacher(student.backbone, teacher.backbone, choice) == expected
        s_model, t_model = student.backbone.model, teacher.backbone.model
        for name, value in s_model.embeddings.state_dict().items():
            assert torch.equal(value, t_model.embeddings.state_dict()[name]), name
        for j, i in enumerate(expected):
            theirs = t_model.encoder.layer[i].state_dict()
            for name, value in s_model.encoder.layer[j].state_dict().items():
                assert torch.equal(value, theirs[name]), (choice, j, name)
            other = [k for k in range(4) if k != i]  # and not some other teacher layer
            assert not any(torch.equal(s_model.encoder.layer[j].state_dict()[n], t_model.encoder.layer[k].state_dict()[n])
                           for k in other for n in ("attention.self.query.weight",))
    assert teacher_layer_indices("every_other", 6, 3) == [1, 3, 5]
    assert teacher_layer_indices("every_other", 6, 2) == [2, 5]


def test_init_from_teacher_refuses_what_it_cannot_copy(bert4: str, tiny_bert: str) -> None:
    teacher = hubtl.TransferModel.from_backbone(bert4, labels=["a", "b"], pretrained=False)
    student = hubtl.TransferModel.from_backbone(bert4, labels=["a", "b"], pretrained=False, num_hidden_layers=2)
    with pytest.raises(ConfigError, match="lists 3 teacher layers but the student has 2"):
        init_from_teacher(student.backbone, teacher.backbone, [0, 1, 2])
    with pytest.raises(ConfigError, match="the teacher has layers 0 to 3"):
        init_from_teacher(student.backbone, teacher.backbone, [0, 7])
    wider = hubtl.TransferModel.from_backbone(bert4, labels=["a", "b"], pretrained=False, num_hidden_layers=2,
                                              hidden_size=48, intermediate_size=64)
    with pytest.raises(ConfigError, match="differs from the teacher's"):
        init_from_teacher(wider.backbone, teacher.backbone, "first_k")
    image = hubtl.TransferModel.from_backbone("timm:test_resnet", labels=["a", "b"], pretrained=False)
    with pytest.raises(ConfigError, match="does not implement `transfer_layers`"):
        init_from_teacher(image.backbone, teacher.backbone, "first_k")
    # a transformers encoder outside the BERT family (DistilBERT keeps its layers in transformer.layer): refused with the reason
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    from hubtl.backbones.transformers import TransformersBackbone

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert.split(":", 1)[1])
    distil = DistilBertModel(DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64))
    backbone = TransformersBackbone(distil, tokenizer, "tiny-distilbert", "mean", 32)
    with pytest.raises(ConfigError, match="'distilbert' encoder .* keeps its layers elsewhere"):
        init_from_teacher(backbone, teacher.backbone, "first_k")


# --------------------------------------------------------------------------- training


def test_cached_and_uncached_teacher_outputs_give_the_same_training(root: Path, bert4: str, teacher: Path, caplog) -> None:
    caplog.set_level("INFO", logger="hubtl")
    cached, uncached = root / "cached", root / "uncached"
    train(_student(root, bert4, teacher, cached))
    assert "The teacher's outputs on 80 training examples: computed once and stored in the feature cache" in caplog.text
    caplog.clear()
    again = root / "cached-again"  # a second run reads the stored outputs and trains alike
    train(_student(root, bert4, teacher, again))
    assert "The teacher's outputs on 80 training examples: read from the feature cache" in caplog.text
    assert _max_difference(cached, again) == 0.0
    train(_student(root, bert4, teacher, uncached, feature_cache=False))
    assert "The teacher runs on every training batch (feature_cache: false)" in caplog.text
    # The same training up to float32 noise: the cache ran the teacher on other batches (other padding lengths) than
    # the training batches; Adam turns those ~1e-7 differences into ~1e-5 in the weights. A misaligned or stale cache
    # would differ by orders of magnitude more (the weights moved by > 1e-2, checked below).
    assert _max_difference(cached, uncached) < 1e-4
    for a, b in zip(_epochs(cached), _epochs(uncached), strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert a["eval_loss"] == pytest.approx(b["eval_loss"], abs=1e-5)
    summary = json.loads((cached / "training" / "summary.json").read_text())["distillation"]
    assert summary["teacher_outputs_cached"] is True
    assert summary["labeled_examples"] == 48 and summary["unlabeled_examples"] == 32
    assert summary["teacher_layers"] == [1, 3]
    # the student learned something beyond its initial copy: its weights moved
    initial = hubtl.TransferModel.from_pretrained(teacher).backbone.model.encoder.layer[1].state_dict()
    trained = _weights(cached)
    moved = trained["backbone.model.encoder.layer.0.attention.self.query.weight"] - initial["attention.self.query.weight"]
    assert moved.abs().max().item() > 1e-2


def test_labels_only_never_runs_the_teacher_on_the_training_examples(root: Path, bert4: str, teacher: Path, caplog) -> None:
    caplog.set_level("INFO", logger="hubtl")
    out = root / "labels-only"
    train(_student(root, bert4, teacher, out, unlabeled=False, num_train_epochs=1, distill_alpha=1.0))
    assert "distill_alpha: 1 trains on the labels only" in caplog.text
    assert "The teacher's outputs on" not in caplog.text and "The teacher runs on every training batch" not in caplog.text
    summary = json.loads((out / "training" / "summary.json").read_text())["distillation"]
    assert summary["teacher_outputs_from"] == "unused" and summary["teacher_results"]  # still evaluated, for the card
    assert "not used in training (`distill_alpha: 1`: the labels only)" in (out / "README.md").read_text()
    torch.manual_seed(0)
    student, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    nan = torch.full((4, 3), float("nan"))  # teacher outputs that were never computed
    got = distillation_loss(get_task("classification"), student, labels, torch.ones(4), nan, 1.0, 2.0)
    torch.testing.assert_close(got, torch.nn.functional.cross_entropy(student, labels))


def test_max_unlabeled_samples_caps_the_unlabeled_examples(root: Path, bert4: str, teacher: Path) -> None:
    out = root / "capped-unlabeled"
    config = _student(root, bert4, teacher, out, num_train_epochs=1, distill_alpha=1.0)  # labels only: fast
    config["dataset"]["max_unlabeled_samples"] = 5
    train(config)
    assert json.loads((out / "training" / "summary.json").read_text())["distillation"]["unlabeled_examples"] == 5


def test_the_unlabeled_examples_change_the_training(root: Path, bert4: str, teacher: Path) -> None:
    without = root / "no-unlabeled"
    train(_student(root, bert4, teacher, without, unlabeled=False, num_train_epochs=1))
    with_unlabeled = root / "with-unlabeled"
    train(_student(root, bert4, teacher, with_unlabeled, num_train_epochs=1))
    assert _epochs(without)[0]["step"] == 6 and _epochs(with_unlabeled)[0]["step"] == 10  # 48 vs 48 + 32 examples, batch 8
    assert _max_difference(without, with_unlabeled) > 1e-4


def test_kill_and_resume_is_exact(root: Path, bert4: str, teacher: Path) -> None:
    reference = root / "resume-reference"
    train(_student(root, bert4, teacher, reference, save_steps=4, save_total_limit=10))
    # what a kill after step 4 leaves: that checkpoint, nothing else; the teacher's outputs are not in it
    killed = root / "resume-killed"
    (killed / "checkpoints").mkdir(parents=True)
    shutil.copytree(reference / "checkpoints" / "checkpoint-4", killed / "checkpoints" / "checkpoint-4")
    result = train(_student(root, bert4, teacher, killed, save_steps=4, save_total_limit=10, resume_from_checkpoint=True))
    assert not result.interrupted
    assert _max_difference(reference, killed) <= 1e-6
    for a, b in zip(_epochs(reference), _epochs(killed), strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)
        assert a["eval_accuracy"] == b["eval_accuracy"]


def test_two_processes_equal_one(root: Path, bert4: str, teacher: Path) -> None:
    one, two = root / "one-process", root / "two-processes"
    config = _student(root, bert4, teacher, one)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each launched process
    try:
        train(config)
    finally:
        torch.set_num_threads(threads)
    path = root / "distill.yaml"
    path.write_text(yaml.safe_dump({**config, "output_dir": str(two), "per_device_train_batch_size": 4}))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "hubtl.train", str(path)]
    done = subprocess.run(command, env={**ENV, "ACCELERATE_USE_CPU": "true", "CUDA_VISIBLE_DEVICES": ""},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    s1, s2 = (json.loads((o / "training" / "summary.json").read_text()) for o in (one, two))
    assert (s1["world_size"], s2["world_size"]) == (1, 2)
    assert s1["distillation"]["teacher_results"] == pytest.approx(s2["distillation"]["teacher_results"], abs=1e-5)
    for a, b in zip(_epochs(one), _epochs(two), strict=True):
        assert a["step"] == b["step"]
        assert a["eval_accuracy"] == b["eval_accuracy"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)
    assert _max_difference(one, two) < 1e-4


def test_a_teacher_failing_on_one_process_stops_both_with_its_reason(tiny_bert: str, tiny_bert_dir: Path, tmp_path: Path) -> None:
    """Only the second process's share holds a token the small-vocabulary teacher cannot embed: both processes stop
    with that reason, instead of the first waiting for the second at the gather."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    small = tmp_path / "small-vocab-bert"  # embeddings for token ids below 1000 only: '!' is 999, 'film' 2143
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(small)  # fmt: skip
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(small)
    hubtl.TransferModel.from_backbone(f"transformers:{small}", labels=["neg", "pos"]).save_pretrained(tmp_path / "teacher")
    (tmp_path / "data").mkdir()
    texts = ["! " * (i + 1) for i in range(11)] + ["a good film"]  # rows 6-11 are the second process's share
    (tmp_path / "data" / "train.tsv").write_text("".join(f"{t}\t{'pos' if i % 2 else 'neg'}\n" for i, t in enumerate(texts)))
    (tmp_path / "data" / "dev.tsv").write_text("! !\tpos\n!\tneg\n")
    config = _base(tmp_path, tiny_bert, tmp_path / "student", strategy="distill", teacher=str(tmp_path / "teacher"))
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump({**config, "per_device_train_batch_size": 2}))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "hubtl.train", str(path)]  # fmt: skip
    done = subprocess.run(command, env={**ENV, "ACCELERATE_USE_CPU": "true", "CUDA_VISIBLE_DEVICES": ""},
                          capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("hubtl: error:")]
    assert len(errors) == 1 and "IndexError" in errors[0] and "(on process 1 of 2)" in errors[0], done.stderr[-3000:]


def test_the_card_of_a_distilled_model_says_so(root: Path, bert4: str, teacher: Path) -> None:
    out = root / "cached"
    if not (out / "README.md").is_file():
        train(_student(root, bert4, teacher, out))
    card = (out / "README.md").read_text()
    assert "## Distillation" in card
    assert f"`{teacher.name}`" in card and str(teacher) not in card  # a local teacher by its folder name, no path
    assert "| Alpha (`distill_alpha`) | 0.5 |" in card
    assert "| Temperature (`distill_temperature`) | 2 |" in card
    assert "32 unlabeled examples (`unlabeled.tsv`)" in card
    assert "teacher layers 1, 3" in card
    summary = json.loads((out / "training" / "summary.json").read_text())["distillation"]
    results = json.loads((out / "training" / "eval_results.json").read_text())
    teacher_acc, student_acc = summary["teacher_results"]["eval_accuracy"], results["eval_accuracy"]
    assert f"| Accuracy | {teacher_acc:.4f} | {student_acc:.4f} |" in card
    assert summary["cpu_latency"]["teacher_ms"] > 0 and summary["cpu_latency"]["student_ms"] > 0
    assert "CPU latency" in card and "Parameters" in card


def test_a_hub_teacher_is_linked(root: Path) -> None:
    from hubtl.cards.context import _distillation

    record = hubtl.layout.TrainingRecord(summary={"distillation": {
        "teacher": "org/teacher-model", "alpha": 0.5, "temperature": 2.0, "labeled_examples": 10, "unlabeled_examples": 0,
        "teacher_results": {"eval_accuracy": 0.9}, "teacher_parameters": 100, "cpu_latency": {}}})
    section = _distillation(record, None, {"eval_accuracy": 0.8})
    assert section["teacher"] == "[org/teacher-model](https://huggingface.co/org/teacher-model)"


# --------------------------------------------------------------------------- errors


def test_a_teacher_with_other_labels_or_another_task_is_refused(root: Path, bert4: str, teacher: Path) -> None:
    with pytest.raises(ConfigError, match=r"predicts the labels \['neg', 'pos'\], but the data's labels are \['pos', 'neg'\]"):
        train(_student(root, bert4, teacher, root / "bad-labels", labels=["pos", "neg"]))
    for name, rows in (("train_num.tsv", _sentences(16)), ("dev_num.tsv", _sentences(8, offset=1))):
        (root / "data" / name).write_text("".join(f"{s}\t{i / 10}\n" for i, (s, _) in enumerate(rows)))
    regression = _student(root, bert4, teacher, root / "bad-task", task="regression")
    regression["dataset"]["data_files"] = {"train": "train_num.tsv", "validation": "dev_num.tsv"}
    with pytest.raises(ConfigError, match="is a classification model, but this run's task is regression"):
        train(regression)


def test_unlabeled_data_with_labels_or_without_the_input_column_is_refused(root: Path, bert4: str, teacher: Path) -> None:
    config = _student(root, bert4, teacher, root / "bad-unlabeled")
    config["dataset"]["unlabeled_files"] = "train.tsv"  # sentence<TAB>label: read as one column too many
    with pytest.raises(DataError, match=r"train.tsv have 2 columns per row, .* \(sentence: 1\). Drop the 'label' column"):
        train(config)
    labeled = root / "data" / "labeled.csv"
    labeled.write_text("sentence,label\nfine,pos\nawful,neg\n")
    config = _student(root, bert4, teacher, root / "bad-unlabeled-2")
    config["dataset"] = {"path": str(root / "data"), "data_files": {"train": "train.tsv", "validation": "dev.tsv"},
                         "column_names": ["sentence", "label"], "text_column": "sentence"}
    config["dataset"]["unlabeled_split"] = "test"
    with pytest.raises(DataError, match="Unlabeled split 'test' not found"):
        train(config)
    from hubtl.data import DatasetConfig
    from hubtl.data.unlabeled import load_unlabeled

    with pytest.raises(DataError, match="have a label column 'label' with values"):
        load_unlabeled(DatasetConfig(path=str(root / "data"), unlabeled_files="labeled.csv", text_column="sentence"), "text")
    with pytest.raises(DataError, match="have no column 'text'"):
        load_unlabeled(DatasetConfig(path=str(root / "data"), unlabeled_files="labeled.csv"), "text", column="text")
    ok = load_unlabeled(DatasetConfig(path=str(root / "data"), unlabeled_files="unlabeled.tsv", column_names=["sentence", "label"],
                                      text_column="sentence"), "text")
    assert len(ok) == 32 and isinstance(ok[0], str)


def test_config_errors_say_what_to_do(root: Path, bert4: str) -> None:
    base = _base(root, bert4, root / "x")
    with pytest.raises(ConfigError, match="strategy: distill needs `teacher`"):
        hubtl.load_config({**base, "strategy": "distill"})
    unlabeled = {**base, "strategy": "full", "dataset": {**base["dataset"], "unlabeled_files": "unlabeled.tsv"}}
    with pytest.raises(ConfigError, match="are read by strategies that train without labels .* not by full"):
        train(unlabeled)  # refused before any data is read
    with pytest.raises(ConfigError, match="distill_alpha must be in"):
        hubtl.load_config({**base, "strategy": "distill", "teacher": "t", "distill_alpha": 1.5})
    with pytest.raises(ConfigError, match="init_from_teacher must be every_other, first_k or a list"):
        hubtl.load_config({**base, "strategy": "distill", "teacher": "t", "init_from_teacher": "top"})
    config = hubtl.load_config({**base, "strategy": "distill", "teacher": "t", "init_from_teacher": [0, 2]})
    assert config.init_from_teacher == [0, 2]
    assert set(hubtl.get_strategy("distill").config_keys) == {"teacher", "distill_alpha", "distill_temperature",
                                                               "init_from_teacher"}


def test_num_hidden_layers_keeps_the_lower_pretrained_layers(bert4: str, caplog: pytest.LogCaptureFixture) -> None:
    full = hubtl.TransferModel.from_backbone(bert4, labels=["a", "b"])
    with caplog.at_level(logging.INFO):
        small = hubtl.TransferModel.from_backbone(bert4, labels=["a", "b"], num_hidden_layers=2)
    # the upper layers' weights go unused as asked: one info line, not transformers' warning about unexpected keys
    assert any("Kept the first 2 layers" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]
    assert len(small.backbone.model.encoder.layer) == 2
    for j in range(2):
        for name, value in small.backbone.model.encoder.layer[j].state_dict().items():
            assert torch.equal(value, full.backbone.model.encoder.layer[j].state_dict()[name])
