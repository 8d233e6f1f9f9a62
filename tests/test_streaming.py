"""`dataset.streaming: true`: the train split read as a stream, with exact resume and per-process shards.

The data is a real local jsonl file read by `datasets` in streaming mode; a tiny BERT (dropout off) trains a
few steps on it. The kill is emulated as in test_distill: a reference run's checkpoint-3 copied into a fresh
output dir, then resumed. The shuffle buffer (8 of 30 examples) is full at that checkpoint, so a resume that
lost the buffer's content (as `datasets`' own shuffle buffer does) would read other examples and end elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from hubtl.config import TrainingConfig
from hubtl.data import DatasetConfig
from hubtl.data.streaming import TrainStream, load_streamed_data
from hubtl.errors import ConfigError, DataError
from hubtl.train import train

POSITIVE = ["good", "great", "excellent", "lovely", "wonderful", "superb"]
NEGATIVE = ["bad", "awful", "terrible", "boring", "dreadful", "poor"]
TEMPLATES = ["the film was {}", "a {} movie", "{} acting and a {} story", "really {} overall", "simply {} work"]

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _sentences(n: int, offset: int = 0) -> list[dict[str, str]]:
    rows = []
    for i in range(offset, offset + n):
        words = POSITIVE if i % 2 == 0 else NEGATIVE
        template = TEMPLATES[(i // 2) % len(TEMPLATES)]
        text = template.format(words[(i // 2) % 6], words[(i // 2 + 1) % 6]) + f" #{i}"
        rows.append({"text": text, "label": "pos" if i % 2 == 0 else "neg"})
    return rows


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("streaming")
    (root / "data").mkdir()
    _write(root / "data" / "train.jsonl", _sentences(30))
    _write(root / "data" / "dev.jsonl", _sentences(12, offset=100))
    return root


def _config(root: Path, backbone: str, out: Path, **extra) -> dict:
    return {
        "backbone": backbone,
        "backbone_kwargs": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
        "dataset": {"path": str(root / "data"), "data_files": {"train": "train.jsonl", "validation": "dev.jsonl"},
                    "streaming": True, "shuffle_buffer_size": 8},
        "output_dir": str(out),
        "learning_rate": 5e-3,
        "max_steps": 8,
        "save_steps": 3,
        "save_total_limit": 10,
        "eval_strategy": "steps",
        "eval_steps": 4,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 5,
        "seed": 3,
        "report_to": "none",
        "disable_tqdm": True,
        **extra,
    }


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "training" / "metrics.jsonl").read_text().splitlines()]


def _max_difference(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    return max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)


@pytest.fixture(scope="module")
def reference(root: Path, tiny_bert: str) -> Path:
    out = root / "reference"
    result = train(_config(root, tiny_bert, out))
    assert not result.interrupted
    return out


def test_a_streamed_run_trains_and_evaluates(reference: Path) -> None:
    summary = json.loads((reference / "training" / "summary.json").read_text())
    assert summary["total_steps"] == 8 and summary["world_size"] == 1
    assert summary["train_samples"] is None and summary["eval_samples"] == 12
    # 8 steps x 4 = 32 examples read: the 30 of the first pass, then the stream starts again
    (facts,) = summary["streaming"]["processes"]
    assert facts == {"process": 0, "examples_read": 32, "passes_completed": 1, "shard_rows": 30, "skipped_files": []}
    rows = _rows(reference)
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [4]  # eval_steps, then the end of the run
    (end,) = [r for r in rows if r["kind"] == "epoch"]
    assert end["step"] == 8 and end["eval_samples"] == 12 and 0 <= end["eval_accuracy"] <= 1
    results = json.loads((reference / "training" / "eval_results.json").read_text())
    assert results["labels"] == ["neg", "pos"]
    state = json.loads((reference / "checkpoints" / "checkpoint-3" / "stream_state_0.json").read_text())
    assert len(state["buffer"]) == 8 and state["read"] == 12  # a full buffer: its content is part of the state


def test_killed_and_resumed_equals_uninterrupted(root: Path, tiny_bert: str, reference: Path) -> None:
    killed = root / "killed"
    (killed / "checkpoints").mkdir(parents=True)
    shutil.copytree(reference / "checkpoints" / "checkpoint-3", killed / "checkpoints" / "checkpoint-3")
    result = train(_config(root, tiny_bert, killed, resume_from_checkpoint=True))
    assert not result.interrupted
    assert _max_difference(reference, killed) <= 1e-6
    ref, res = (json.loads((o / "training" / "eval_results.json").read_text()) for o in (reference, killed))
    assert res["eval_accuracy"] == ref["eval_accuracy"]
    assert res["eval_loss"] == pytest.approx(ref["eval_loss"], abs=1e-6)
    after = [r for r in _rows(reference) if r["step"] > 3]
    for a, b in zip(after, [r for r in _rows(killed) if r["step"] > 3], strict=True):
        for key in ("eval_accuracy", "eval_loss", "train_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], abs=1e-6), key
    summary = json.loads((killed / "training" / "summary.json").read_text())
    assert summary["streaming"]["processes"][0]["examples_read"] == 32


def test_resumed_with_dropout_on_equals_uninterrupted(root: Path, tiny_bert: str) -> None:
    # dropout draws from the global RNG, which the checkpoint restores: a resumed run must draw nothing else from it
    # (a new DataLoader iterator did, for its seed) before training goes on; measured 4e-3 apart before the fix
    dropout = {"backbone_kwargs": {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}}
    reference = root / "dropout-reference"
    train(_config(root, tiny_bert, reference, **dropout))
    resumed = root / "dropout-resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(reference / "checkpoints" / "checkpoint-6", resumed / "checkpoints" / "checkpoint-6")
    train(_config(root, tiny_bert, resumed, resume_from_checkpoint=True, **dropout))
    assert _max_difference(reference, resumed) <= 1e-6


def test_the_stream_resumes_exactly_with_a_full_buffer(root: Path) -> None:
    """The stream alone: a state taken mid-pass (buffer full) and loaded into a new stream gives the same examples."""
    cfg = DatasetConfig(path=str(root / "data"), data_files={"train": "train.jsonl", "validation": "dev.jsonl"},
                        streaming=True, shuffle_buffer_size=8)
    first = load_streamed_data(cfg, task="classification", modality="text", seed=5).train
    assert isinstance(first, TrainStream)
    head = [next(first)[0] for _ in range(13)]
    state = json.loads(json.dumps(first.state_dict()))
    tail = [next(first)[0] for _ in range(40)]  # across the end of the pass
    again = load_streamed_data(cfg, task="classification", modality="text", seed=5).train
    again.load_state_dict(state)
    assert [next(again)[0] for _ in range(40)] == tail
    assert sorted(head + tail[:17]) == sorted(r["text"] for r in _sentences(30))  # one pass: every example once
    assert head != [r["text"] for r in _sentences(13)]  # shuffled


def test_processes_read_disjoint_shards(root: Path) -> None:
    cfg = DatasetConfig(path=str(root / "data"), data_files={"train": "train.jsonl", "validation": "dev.jsonl"},
                        streaming=True, shuffle_buffer_size=4)
    shards = []
    for rank in (0, 1):
        stream = load_streamed_data(cfg, task="classification", modality="text", seed=5, rank=rank, world_size=2).train
        shards.append({next(stream)[0] for _ in range(15)})
    assert shards[0].isdisjoint(shards[1])
    assert shards[0] | shards[1] == {r["text"] for r in _sentences(30)}


def test_an_unknown_label_in_the_stream_names_the_example(root: Path, tmp_path: Path) -> None:
    _write(tmp_path / "train.jsonl", [*_sentences(3), {"text": "a stray sentence", "label": "maybe"}])
    shutil.copy(root / "data" / "dev.jsonl", tmp_path / "dev.jsonl")
    cfg = DatasetConfig(path=str(tmp_path), data_files={"train": "train.jsonl", "validation": "dev.jsonl"},
                        streaming=True, shuffle_buffer_size=1)
    stream = load_streamed_data(cfg, task="classification", modality="text").train
    for _ in range(3):
        next(stream)
    with pytest.raises(DataError, match=r"streamed training example 4 .*'a stray sentence'.*maybe.*set labels"):
        next(stream)


def test_streaming_needs_a_finite_eval_split(root: Path) -> None:
    cfg = DatasetConfig(path=str(root / "data" / "train.jsonl"), streaming=True)
    with pytest.raises(DataError, match="finite eval split.*eval_split.*data_files"):
        load_streamed_data(cfg, task="classification", modality="text")


@pytest.mark.parametrize(
    ("extra", "dataset", "message"),
    [
        ({}, {}, "no length.*set max_steps"),
        ({"max_steps": 5, "dataloader_num_workers": 2}, {}, "remove dataloader_num_workers"),
        ({"max_steps": 5, "early_stopping_patience": 2}, {}, "remove it"),
        ({"max_steps": 5, "group_by_length": True}, {}, "group_by_length needs every example's length.*remove it"),
        ({"max_steps": 5}, {"shuffle_buffer_size": 0}, "shuffle_buffer_size must be >= 1"),
        ({"max_steps": 5, "strategy": "distill", "teacher": "some/teacher"}, {}, "finite training split.*streaming: false"),
    ],
)
def test_config_errors_say_what_to_do(extra: dict, dataset: dict, message: str) -> None:
    values = {"backbone": "timm:resnet18", "dataset": {"path": "data", "streaming": True, **dataset}, **extra}
    with pytest.raises(ConfigError, match=message):
        TrainingConfig.from_dict(values)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_read_their_own_shards(root: Path, tiny_bert: str) -> None:
    out = root / "two-processes"
    path = root / "two.yaml"
    path.write_text(yaml.safe_dump(_config(root, tiny_bert, out, max_steps=4, save_steps=2, eval_steps=2)))
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(_free_port()), "-m", "hubtl.train", str(path),
    ]
    # GPUs hidden: on a machine with one GPU, Accelerate's barrier would still address cuda:<rank>
    done = subprocess.run(command, env={**ENV, "ACCELERATE_USE_CPU": "true", "CUDA_VISIBLE_DEVICES": ""},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "training" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["total_steps"] == 4
    # each process read 4 steps x 4 examples from its own half of the 30 (15 rows), not from all 30
    assert summary["streaming"]["processes"] == [
        {"process": rank, "examples_read": 16, "passes_completed": 1, "shard_rows": 15, "skipped_files": []}
        for rank in (0, 1)
    ]
    checkpoint = out / "checkpoints" / "checkpoint-4"
    states = [json.loads((checkpoint / f"stream_state_{rank}.json").read_text()) for rank in (0, 1)]
    assert [s["rank"] for s in states] == [0, 1] and all(s["world_size"] == 2 for s in states)
    assert torch.isfinite(torch.tensor(json.loads((out / "training" / "eval_results.json").read_text())["eval_loss"]))


def test_an_error_of_one_process_alone_is_printed_by_that_process(root: Path, tiny_bert: str, tmp_path: Path) -> None:
    """One training example for two processes: the second's stream is empty, and the main one waits for it at the
    first step; the second still says why, instead of the run ending in a bare 'Connection closed by peer'."""
    (tmp_path / "data").mkdir()
    _write(tmp_path / "data" / "train.jsonl", _sentences(1))
    _write(tmp_path / "data" / "dev.jsonl", _sentences(4, offset=100))
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, tiny_bert, tmp_path / "out", max_steps=2, labels=["neg", "pos"])))
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(_free_port()), "-m", "hubtl.train", str(path),
    ]
    done = subprocess.run(command, env={**ENV, "ACCELERATE_USE_CPU": "true", "CUDA_VISIBLE_DEVICES": ""},
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("hubtl: error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert "Process 1 of 2 got no training examples" in errors[0] and errors[0].endswith("(on process 1 of 2)")


def test_an_unreadable_streamed_image_is_skipped_and_counted(tmp_path: Path) -> None:
    from PIL import Image

    from tests.conftest import TINY_TIMM

    (tmp_path / "img").mkdir()
    rows = []
    for i in range(10):
        colour = (200, 30, 30) if i % 2 else (30, 30, 200)
        Image.new("RGB", (32, 32), colour).save(tmp_path / "img" / f"{i}.png")
        rows.append({"image": f"img/{i}.png", "label": "red" if i % 2 else "blue"})
    (tmp_path / "img" / "broken.png").write_bytes(b"not a png")
    _write(tmp_path / "train.jsonl", [*rows[:3], {"image": "img/broken.png", "label": "red"}, *rows[3:8]])
    _write(tmp_path / "dev.jsonl", rows[8:])
    out = tmp_path / "out"
    train({
        "backbone": TINY_TIMM, "pretrained": False, "augment": False,
        "dataset": {"path": str(tmp_path), "data_files": {"train": "train.jsonl", "validation": "dev.jsonl"},
                    "streaming": True, "shuffle_buffer_size": 4},
        "output_dir": str(out), "max_steps": 3, "per_device_train_batch_size": 4, "report_to": "none",
        "disable_tqdm": True,
    })  # fmt: skip
    summary = json.loads((out / "training" / "summary.json").read_text())
    (facts,) = summary["streaming"]["processes"]
    assert facts["examples_read"] == 12 and facts["shard_rows"] == 9  # 8 readable per pass: the broken one skipped
    assert facts["skipped_files"] == [str(tmp_path / "img" / "broken.png")]
    assert summary["skipped_files"] == [str(tmp_path / "img" / "broken.png")]


def test_a_frozen_backbone_does_not_cache_features_of_a_stream() -> None:
    from hubtl.training.feature_cache import cache_decision

    use, why = cache_decision(freezes_backbone=True, enabled=True, deterministic=True, streamed=True)
    assert not use and "streamed" in why and "finite" in why


def test_pretrain_refuses_streaming() -> None:
    from hubtl.pretraining.config import PretrainingConfig

    with pytest.raises(ConfigError, match="does not stream.*streaming: false"):
        PretrainingConfig.from_dict({"backbone": "timm:resnet18", "max_steps": 5,
                                     "dataset": {"path": "data", "streaming": True}})


def test_rank_refuses_a_stream() -> None:
    from hubtl.ranking import rank

    cfg = TrainingConfig.from_dict({"backbone": "timm:resnet18", "max_steps": 5, "dataset": {"path": "data", "streaming": True}})
    with pytest.raises(ConfigError, match="cannot read a stream.*max_train_samples"):
        rank(cfg, candidates=["timm:resnet18", "timm:resnet34"])
