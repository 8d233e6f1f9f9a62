"""7. Two-process CPU data parallel vs one process, same global batch: the scaling factor of `hubtl train`.

Both are the real command line on the same YAML config (SST-2 subset, a transformers encoder, full
fine-tuning; text, so no DataLoader worker processes compete for the cores):
  one process:   python -m hubtl.train CFG --per_device_train_batch_size B
  two processes: ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2
                 --num_cpu_threads_per_process T -m hubtl.train CFG --per_device_train_batch_size B/2
The one process uses torch's default thread count (all cores); each of the two uses T = cores/2
threads, so both use the whole machine. Samples/s is the per-epoch `train_samples_per_second` from
training/metrics.jsonl (global: hubtl counts every process's samples), first epoch excluded. This is
CPU data parallel even on a GPU machine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from .common import Context, Row, alternate, contention_note, failed_row, free_port, median, run_child, spawn, spread

GROUP = "data_parallel"

SIZES = {
    "quick": dict(model="tiny-bert", n=64, batch=16, epochs=2, max_length=32),
    "cpu": dict(model="small-bert", n=256, batch=32, epochs=3, max_length=64),
    "cuda": dict(model="small-bert", n=1024, batch=64, epochs=3, max_length=64),
}


def run(ctx: Context) -> list[Row]:
    p = SIZES[ctx.mode]
    threads = max(1, ctx.cores // 2)
    item = f"CPU data parallel, 2 processes vs 1 ({p['model']}, global batch {p['batch']})"
    def one(r: int) -> dict:
        return _train(ctx, f"one_{r}", [sys.executable, "-m", "hubtl.train", str(config), "--per_device_train_batch_size",
                                        str(p["batch"]), "--output_dir", str(ctx.work / f"{GROUP}_one")],
                      {"CUDA_VISIBLE_DEVICES": ""})

    def two(r: int) -> dict:
        return _train(ctx, f"two_{r}", [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--num_cpu_threads_per_process", str(threads), "--main_process_port", str(free_port()),
            "-m", "hubtl.train", str(config), "--per_device_train_batch_size", str(p["batch"] // 2),
            "--output_dir", str(ctx.work / f"{GROUP}_two")], {"ACCELERATE_USE_CPU": "true", "CUDA_VISIBLE_DEVICES": ""})

    try:
        config = _write_config(ctx, p)
        runs, added = alternate(ctx, 1, {"one": one, "two": two})
    except Exception as err:  # noqa: BLE001
        return [failed_row(GROUP, GROUP, item, "samples/s", str(err))]
    two_rates = [x for run in runs["two"] for x in run["rates"][1:]]
    one_rates = [x for run in runs["one"] for x in run["rates"][1:]]
    h, b = median(two_rates), median(one_rates)
    h_mem, b_mem = max(r["maxrss_mb"] for r in runs["two"]), max(r["maxrss_mb"] for r in runs["one"])
    return [
        Row(GROUP, GROUP, item, h, b, "samples/s", h / b, ratio_of="scaling: 2 processes / 1",
            hubtl_label="2 processes", baseline_label="1 process",
            notes=(f"epochs of {p['n']} sentences, first of each run excluded (2 processes {spread(two_rates)}; "
                   f"1 process {spread(one_rates)}); {threads} thread(s) per process vs {ctx.cores}; world size "
                   f"{runs['two'][0]['world_size']} vs {runs['one'][0]['world_size']}; {contention_note(runs, added)}"),
            details={"one": runs["one"], "two": runs["two"], "params": p}),
        Row(GROUP, f"{GROUP}_memory", f"peak RSS of the largest process: {item}", h_mem, b_mem, "MB", h_mem / b_mem,
            hubtl_label="2 processes", baseline_label="1 process",
            notes="per process (wait4 reports the largest process of the tree, not the sum)"),
    ]


def _write_config(ctx: Context, p: dict, group: str = GROUP) -> Path:
    """The shared YAML config of a group's runs: an SST-2 subset, the encoder built once in a subprocess."""
    from . import fixtures

    folder = fixtures.write_sst2_subset(ctx.data, ctx.work / f"sst2-subset-{group}", p["n"], 32)
    encoder = run_child(ctx, f"{group}_encoder", __name__, "encoder_dir", work=str(ctx.work), data=str(ctx.data),
                        model=p["model"])["path"]
    config = {
        "backbone": f"transformers:{encoder}", "backbone_kwargs": {"pooling": "mean", "max_length": p["max_length"]},
        "task": "classification", "labels": fixtures.LABELS,
        "dataset": {"path": str(folder), "data_files": {"train": "train.tsv", "validation": "dev.tsv"},
                    "column_names": ["sentence", "label"], "text_column": "sentence", "eval_split": "validation"},
        "strategy": "full", "num_train_epochs": p["epochs"], "per_device_eval_batch_size": 32, "learning_rate": 1e-4,
        "report_to": "none", "overwrite_output_dir": True, "seed": 0, "disable_tqdm": True,
    }
    path = ctx.work / f"{group}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def encoder_dir(work: str, data: str, model: str) -> dict:
    from . import fixtures

    return {"path": str(fixtures.text_encoder_dir(work, model, data))}


def _train(ctx: Context, name: str, argv: list[str], env: dict[str, str], group: str = GROUP) -> dict:
    done = spawn(ctx, f"{group}_{name}", argv, extra_env=env)
    out = Path(argv[argv.index("--output_dir") + 1])
    rows = [json.loads(line) for line in (out / "training" / "metrics.jsonl").read_text().splitlines() if line]
    metrics = [row for row in rows if row.get("kind", "epoch") == "epoch"]  # not the step or evaluation records
    summary = json.loads((out / "training" / "summary.json").read_text())
    return {"rates": [m["train_samples_per_second"] for m in metrics], "epoch_s": [m["epoch_time_s"] for m in metrics],
            "world_size": summary.get("world_size"), "wall_s": done.wall_s, "maxrss_mb": done.maxrss_mb,
            "other_cores": done.other_cores}
