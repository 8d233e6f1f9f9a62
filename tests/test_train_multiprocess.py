"""Real two-process data parallel on CPU through `accelerate launch`, against the single-process run.

`ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 -m hubtl.train CONFIG` runs DDP over
gloo on this machine. With the same seed and the same global batch (2 processes x 4 = 1 process x 8), and
a dataset the global batch divides, both runs see the same batches, so they reach the same evaluation.
Dropout is off: its masks depend on the per-process batch shape.
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

from hubtl.train import train

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}

POSITIVE = ["good", "great", "excellent", "lovely", "wonderful", "superb"]
NEGATIVE = ["bad", "awful", "terrible", "boring", "dreadful", "poor"]
TEMPLATES = ["the film was {}", "a {} movie", "{} acting and a {} story", "really {} overall"]


def _sentences(n: int, offset: int = 0) -> list[tuple[str, str]]:
    rows = []
    for i in range(offset, offset + n):
        words = POSITIVE if i % 2 == 0 else NEGATIVE
        template = TEMPLATES[(i // 2) % len(TEMPLATES)]
        rows.append((template.format(words[(i // 2) % 6], words[(i // 2 + 1) % 6]), "pos" if i % 2 == 0 else "neg"))
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def config(tiny_bert: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny BERT without dropout, 48 training and 16 dev sentences (header-less tsv), full fine-tuning."""
    root = tmp_path_factory.mktemp("ddp")
    (root / "data").mkdir()
    for name, rows in (("train.tsv", _sentences(48)), ("dev.tsv", _sentences(16, offset=1))):
        (root / "data" / name).write_text("".join(f"{s}\t{label}\n" for s, label in rows))
    values = {
        "backbone": tiny_bert,
        "backbone_kwargs": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
        "dataset": {"path": "data", "data_files": {"train": "train.tsv", "validation": "dev.tsv"},
                    "column_names": ["sentence", "label"], "text_column": "sentence"},
        "strategy": "full",
        "learning_rate": 5e-3,
        "num_train_epochs": 3,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 6,  # 16 dev examples: uneven last batches, padded then dropped by gather_for_metrics
        "seed": 1,
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


DDP = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
# FSDP2 through Accelerate, each BertLayer (a layer group of the backbone) one unit; on CPU over gloo
FSDP = ["--use_fsdp", "--fsdp_version", "2", "--num_processes", "2", "--num_machines", "1",
        "--fsdp_state_dict_type", "SHARDED_STATE_DICT"]
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "accelerate"
# the shipped example config file, as the README tells users to run it (2 processes here)
FSDP_EXAMPLE = ["--config_file", str(EXAMPLES / "fsdp.yaml"), "--num_processes", "2"]


def _launch(config: Path, out: Path, *overrides: str, check: bool = True, launch: list[str] = DDP,
            port: int | None = None, wait: bool = True, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess | subprocess.Popen:  # fmt: skip
    command = [
        sys.executable, "-m", "accelerate.commands.launch", *launch, "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(port or _free_port()),
        "-m", "hubtl.train", str(config), "--output_dir", str(out), *overrides,
    ]
    # GPUs hidden: on a machine with one GPU, Accelerate's barrier would still address cuda:<rank> (seen on an H200)
    env = {**ENV, "ACCELERATE_USE_CPU": "true", "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if check is False:
        return done
    errors = [line for line in done.stderr.splitlines() if "Error" in line or "error:" in line]
    assert done.returncode == 0, "\n".join(errors[:20]) + "\n...\n" + done.stderr[-3000:]
    return done


def _metrics(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "training" / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if row.get("kind", "epoch") == "epoch"]


@pytest.fixture(scope="module")
def one_process(config: Path) -> tuple[Path, dict]:
    """The single-process run every multi-process run is compared with: its output dir and final evaluation."""
    one = config.parent / "one-process"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each launched process
    try:
        single = train(config, ["--output_dir", str(one)])
    finally:
        torch.set_num_threads(threads)
    return one, single.eval_results


def _assert_same_run(one: Path, other: Path, world_size: int = 2, atol: float = 1e-4) -> None:
    """Same steps, exact evaluation and metrics within `atol`, final weights within `atol`, same saved format."""
    assert json.loads((other / "training" / "summary.json").read_text())["world_size"] == world_size
    m1, m2 = _metrics(one), _metrics(other)
    assert [r["step"] for r in m1] == [r["step"] for r in m2] == [6, 12, 18]
    for a, b in zip(m1, m2, strict=True):
        assert a["eval_samples"] == b["eval_samples"] == 16
        assert a["eval_accuracy"] == b["eval_accuracy"]
        assert a["eval_loss"] == pytest.approx(b["eval_loss"], abs=atol)
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=atol)
    w1, w2 = load_file(str(one / "model.safetensors")), load_file(str(other / "model.safetensors"))
    assert w1.keys() == w2.keys()
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], rtol=0, atol=atol, msg=key)
    c1, c2 = json.loads((one / "config.json").read_text()), json.loads((other / "config.json").read_text())
    assert c1 == c2
    assert sorted(p.name for p in (one / "backbone").iterdir()) == sorted(p.name for p in (other / "backbone").iterdir())


def test_two_processes_reach_the_same_evaluation_as_one(config: Path, tiny_bert_dir: Path, one_process) -> None:
    from transformers import BertModel

    one, single = one_process
    two = config.parent / "two-processes"
    _launch(config, two, "--per_device_train_batch_size", "4")

    assert json.loads((two / "training" / "summary.json").read_text())["world_size"] == 2
    assert json.loads((one / "training" / "summary.json").read_text())["world_size"] == 1
    m1, m2 = _metrics(one), _metrics(two)
    assert [r["step"] for r in m1] == [r["step"] for r in m2] == [6, 12, 18]  # 48 / (2 x 4) = 48 / 8 steps per epoch
    for a, b in zip(m1, m2):
        assert a["eval_samples"] == b["eval_samples"] == 16  # exact evaluation: no padding duplicates counted
        assert a["eval_accuracy"] == b["eval_accuracy"]
        assert a["eval_loss"] == pytest.approx(b["eval_loss"], abs=1e-4)
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)
    r1 = json.loads((one / "training" / "eval_results.json").read_text())
    r2 = json.loads((two / "training" / "eval_results.json").read_text())
    assert r1["eval_accuracy"] == r2["eval_accuracy"] == single["eval_accuracy"]
    assert r1["eval_confusion_matrix"] == r2["eval_confusion_matrix"]
    # Final weights agree to float32 reduction-order noise (gradients are averaged over 2 x 4 instead of 8;
    # Adam turns the ~0 gradients of attention key biases into small noise), far below what training moved.
    w1, w2 = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert w1.keys() == w2.keys()
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], rtol=0, atol=1e-4, msg=key)
    initial = BertModel.from_pretrained(tiny_bert_dir).state_dict()
    moved = max((w1[f"backbone.model.{k}"] - v).abs().max().item() for k, v in initial.items() if f"backbone.model.{k}" in w1)
    assert moved > 1e-2


def test_fsdp_on_two_processes_reaches_the_same_evaluation_as_one(config: Path, one_process) -> None:
    """Accelerate's FSDP2 (sharded parameters, gradients and optimizer state) ends where one process does."""
    one, _ = one_process
    sharded = config.parent / "fsdp"
    done = _launch(config, sharded, "--per_device_train_batch_size", "4", launch=FSDP)
    assert "FSDP over 2 process(es); each of these modules is one unit: BertEmbeddings, BertLayer, Head." in done.stderr
    _assert_same_run(one, sharded)
    # checkpoints hold Accelerate's sharded state; the saved model is hubtl's format and loads in one process
    assert (sharded / "checkpoints" / "checkpoint-18" / "pytorch_model_fsdp_0").is_dir()
    from hubtl import TransferModel

    loaded = TransferModel.from_pretrained(sharded)
    assert loaded.predict(["a great movie"])[0]["label"] in ("pos", "neg")


def test_fsdp_resumes_exactly_after_a_kill(config: Path) -> None:
    """What a kill after step 9 (mid-epoch) leaves, resumed under FSDP, ends exactly as the uninterrupted run."""
    reference, killed = config.parent / "fsdp-reference", config.parent / "fsdp-killed"
    every = ["--per_device_train_batch_size", "4", "--save_steps", "3", "--save_total_limit", "10"]
    _launch(config, reference, *every, launch=FSDP_EXAMPLE)
    (killed / "checkpoints").mkdir(parents=True)
    shutil.copytree(reference / "checkpoints" / "checkpoint-9", killed / "checkpoints" / "checkpoint-9")
    shutil.copytree(reference / "checkpoints" / "best", killed / "checkpoints" / "best")
    done = _launch(config, killed, *every, "--resume_from_checkpoint", "true", launch=FSDP_EXAMPLE)
    assert "Resumed from" in done.stderr and "at step 9" in done.stderr
    untimed = [{k: v for k, v in row.items() if k not in ("epoch_time_s", "train_samples_per_second")} for row in _metrics(reference)]
    assert untimed == [{k: v for k, v in row.items() if k not in ("epoch_time_s", "train_samples_per_second")}
                       for row in _metrics(killed)]
    w1, w2 = load_file(str(reference / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) <= 1e-6


def test_the_example_accelerate_configs_parse() -> None:
    """examples/accelerate/: one GPU, DDP, FSDP2, two nodes, read by Accelerate's own config loader."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    found = {path.stem: load_config_from_file(str(path)) for path in sorted(EXAMPLES.glob("*.yaml"))}
    assert found.keys() == {"one_gpu", "multi_gpu", "fsdp", "two_nodes"}
    assert found["one_gpu"].distributed_type == DistributedType.NO
    assert found["multi_gpu"].distributed_type == DistributedType.MULTI_GPU
    assert found["fsdp"].distributed_type == DistributedType.FSDP and found["fsdp"].fsdp_config["fsdp_version"] == 2
    assert found["two_nodes"].num_machines == 2 and found["two_nodes"].num_processes == 16


def test_two_machines_on_localhost_reach_the_same_evaluation_as_one(config: Path, one_process) -> None:
    """`--num_machines 2 --machine_rank R`: two launchers of one process each, meeting over localhost."""
    one, _ = one_process
    out, port = config.parent / "two-machines", _free_port()
    machines = [
        _launch(config, out, "--per_device_train_batch_size", "4", port=port, wait=False, launch=[
            "--multi_gpu", "--num_processes", "2", "--num_machines", "2", "--machine_rank", str(rank),
            "--main_process_ip", "127.0.0.1",
        ])
        for rank in (0, 1)
    ]
    outputs = [machine.communicate(timeout=300) for machine in machines]
    for machine, (_, stderr) in zip(machines, outputs):
        assert machine.returncode == 0, stderr[-3000:]
    # only the global main process (machine 0) logs, writes the output folder and the card
    assert "Saved the fine-tuned model" in outputs[0][1] and "Saved the fine-tuned model" not in outputs[1][1]
    _assert_same_run(one, out)


def test_two_processes_share_the_feature_cache(config: Path) -> None:
    """Linear probe: each process computes and stores its shard of the features; each reads the rows it trains on."""
    probe = ["--strategy", "linear_probe", "--learning_rate", "0.05"]
    one, two = config.parent / "probe-one", config.parent / "probe-two"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(config, ["--output_dir", str(one), *probe])
    finally:
        torch.set_num_threads(threads)
    done = _launch(config, two, "--per_device_train_batch_size", "4", *probe)
    assert "Feature cache on" in done.stderr
    assert "Features of the train split (48 examples): computed and stored in the feature cache" in done.stderr
    for a, b in zip(_metrics(one), _metrics(two), strict=True):
        assert a["eval_accuracy"] == b["eval_accuracy"]
        assert a["eval_loss"] == pytest.approx(b["eval_loss"], abs=1e-5)
    w1, w2 = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], rtol=0, atol=1e-5, msg=key)
    # under FSDP the head on cached features is the sharded module: the saved model joins it to the frozen backbone
    sharded = config.parent / "probe-fsdp"
    _launch(config, sharded, "--per_device_train_batch_size", "4", *probe, launch=FSDP)
    w3 = load_file(str(sharded / "model.safetensors"))
    assert w3.keys() == w1.keys()
    for key in w1:
        torch.testing.assert_close(w1[key], w3[key], rtol=0, atol=1e-5, msg=key)


def test_a_data_error_stops_every_process_with_one_message(config: Path) -> None:
    done = _launch(config, config.parent / "bad-split", "--dataset.eval_split", "nope", check=False)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("hubtl: error:")]
    assert len(errors) == 1 and "Eval split 'nope' not found" in errors[0], done.stderr[-3000:]
    # no process waited at a barrier until it timed out, and no hubtl traceback was printed
    assert "hubtl/" not in "".join(line for line in done.stderr.splitlines() if line.strip().startswith("File "))
    assert "exitcode  : 2" in done.stderr  # the main process's clean exit is what the launcher reports first


def test_processes_that_read_different_examples_stop_with_one_message(tmp_path: Path) -> None:
    """One process finds an image unreadable that the other kept (the file changed between their checks): both stop
    with the difference named, instead of waiting for each other forever on splits of other lengths."""
    from PIL import Image

    for label, (red, blue) in (("ants", (200, 0)), ("bees", (0, 200))):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (16, 16), (red, 20 * i, blue)).save(tmp_path / "imgs" / label / f"{i}.png")
    (tmp_path / "disagree.py").write_text(
        "import os\n"
        "import hubtl.data.dataset as dataset\n"
        "if os.environ.get('RANK') == '1':  # this process alone finds ants/3.png unreadable\n"
        "    readable = dataset.is_readable_image\n"
        "    dataset.is_readable_image = lambda raw: 'ants/3.png' not in str(raw) and readable(raw)\n"
    )
    config = tmp_path / "images.yaml"
    config.write_text(yaml.safe_dump({
        "backbone": "timm:test_resnet", "pretrained": False, "backbone_kwargs": {"image_size": 32},
        "dataset": {"path": str(tmp_path / "imgs"), "validation_size": 0.25}, "strategy": "full",
        "num_train_epochs": 1, "per_device_train_batch_size": 2, "report_to": "none", "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }))  # fmt: skip
    done = _launch(config, tmp_path / "out", "--import", "disagree", check=False, env={"PYTHONPATH": str(tmp_path)})
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("hubtl: error:")]
    assert len(errors) == 1 and "do not agree on the data they read" in errors[0], done.stderr[-3000:]
    assert "skipped files: [] on process 0, ['3.png'] on process 1" in errors[0]


def test_a_strategy_that_cannot_be_sharded_is_refused_under_fsdp() -> None:
    """Strategy.fsdp_refusal (lora: adapters merged at save) stops a sharded run before data is read; others pass."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from hubtl.errors import ConfigError
    from hubtl.strategies import get_strategy
    from hubtl.training.parallel import check_fsdp_config

    sharded, plain = SimpleNamespace(distributed_type=DistributedType.FSDP), SimpleNamespace(distributed_type=DistributedType.NO)
    with pytest.raises(ConfigError, match="strategy lora is not supported with FSDP.*without --use_fsdp"):
        check_fsdp_config(sharded, get_strategy("lora"))
    check_fsdp_config(plain, get_strategy("lora"))
    for name in ("full", "linear_probe", "gradual", "distill"):
        check_fsdp_config(sharded, get_strategy(name))
