"""10. FSDP on one device vs a plain run: the same saved model, and what sharding costs in throughput.

Both are the real command line on the same YAML config (SST-2 subset, a transformers encoder, full fine-tuning):
  plain: python -m hubtl.train CFG
  FSDP:  accelerate launch --use_fsdp --fsdp_version 2 --num_processes 1 -m hubtl.train CFG
On a GPU machine both use the GPU; on CPU the FSDP run is Accelerate's FSDP2 over gloo (hubtl lets Accelerate
choose FSDP there). The rows: samples/s (FSDP / plain, reported, no goal: one device shards nothing, so this is
FSDP's bookkeeping), and the saved format: the same config.json, the same weight names and shapes, both folders
loaded back with `TransferModel.from_pretrained` and predicting, and the largest difference of their final
evaluation losses. `--only fsdp` runs it alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import Context, Row, alternate, contention_note, failed_row, free_port, median, run_child, spread
from .data_parallel import _train, _write_config

GROUP = "fsdp"

SIZES = {
    "quick": dict(model="tiny-bert", n=64, batch=16, epochs=2, max_length=32),
    "cpu": dict(model="small-bert", n=256, batch=32, epochs=3, max_length=64),
    "cuda": dict(model="minilm", n=2048, batch=64, epochs=3, max_length=64),
}


def run(ctx: Context) -> list[Row]:
    p = SIZES[ctx.mode]
    item = f"FSDP2 on 1 {ctx.device.upper()} device vs plain ({p['model']}, batch {p['batch']})"
    env = {} if ctx.device == "cuda" else {"ACCELERATE_USE_CPU": "true", "CUDA_VISIBLE_DEVICES": ""}

    def plain(r: int) -> dict:
        return _train(ctx, f"plain_{r}", [
            sys.executable, "-m", "hubtl.train", str(config), "--per_device_train_batch_size", str(p["batch"]),
            "--output_dir", str(ctx.work / f"{GROUP}_plain"), "--mixed_precision", ctx.mixed_precision], env, GROUP)

    def sharded(r: int) -> dict:
        return _train(ctx, f"sharded_{r}", [
            sys.executable, "-m", "accelerate.commands.launch", "--use_fsdp", "--fsdp_version", "2", "--num_processes", "1",
            "--num_machines", "1", "--mixed_precision", ctx.mixed_precision, "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), "-m", "hubtl.train", str(config), "--per_device_train_batch_size",
            str(p["batch"]), "--output_dir", str(ctx.work / f"{GROUP}_sharded")], env, GROUP)

    try:
        config = _write_config(ctx, p, GROUP)
        runs, added = alternate(ctx, 1, {"sharded": sharded, "plain": plain})
        same = run_child(ctx, f"{GROUP}_format", __name__, "compare", plain=str(ctx.work / f"{GROUP}_plain"),
                         sharded=str(ctx.work / f"{GROUP}_sharded"))
    except Exception as err:  # noqa: BLE001
        return [failed_row(GROUP, GROUP, item, "samples/s", str(err))]
    s_rates = [x for run_ in runs["sharded"] for x in run_["rates"][1:]]
    p_rates = [x for run_ in runs["plain"] for x in run_["rates"][1:]]
    h, b = median(s_rates), median(p_rates)
    fmt = "yes" if same["same_format"] else f"NO: {same['differences']}"
    return [
        Row(GROUP, GROUP, item, h, b, "samples/s", h / b, ratio_of="FSDP / plain", hubtl_label="FSDP",
            baseline_label="plain",
            notes=(f"first epoch of each run excluded (FSDP {spread(s_rates)}; plain {spread(p_rates)}); world size "
                   f"{runs['sharded'][0]['world_size']}; same saved format: {fmt}; both load and predict: "
                   f"{same['both_load']}; |eval_loss FSDP - plain| = {same['eval_loss_diff']:.2e}; "
                   f"{contention_note(runs, added)}"),
            details={"runs": runs, "format": same, "params": p}),
    ]


def compare(plain: str, sharded: str) -> dict:
    """Whether two output folders hold the same format: config.json, weight names and shapes, loading, predicting."""
    from safetensors import safe_open

    from hubtl import TransferModel

    a, b = Path(plain), Path(sharded)
    differences = []
    if json.loads((a / "config.json").read_text()) != json.loads((b / "config.json").read_text()):
        differences.append("config.json")
    shapes = []
    for folder in (a, b):
        with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
            shapes.append({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})
    if shapes[0] != shapes[1]:
        differences.append("weight names or shapes")
    files = [sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and "checkpoints" not in p.parts)
             for folder in (a, b)]
    if files[0] != files[1]:
        differences.append(f"files {sorted(set(files[0]) ^ set(files[1]))}")
    predictions = [TransferModel.from_pretrained(folder).predict(["a gripping, funny film", "dull and far too long"])
                   for folder in (a, b)]
    losses = [json.loads((folder / "training" / "eval_results.json").read_text())["eval_loss"] for folder in (a, b)]
    return {"same_format": not differences, "differences": differences, "both_load": all(len(x) == 2 for x in predictions),
            "eval_loss_diff": abs(losses[0] - losses[1]), "eval_losses": losses}
