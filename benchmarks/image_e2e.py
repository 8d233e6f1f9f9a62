"""2. End-to-end image training from JPEG files: `hubtl.train.train()` vs a hand-written loop over torchvision's ImageFolder.

Both sides read hymenoptera/train (245 JPEGs, ants/bees), decode and apply the same timm training
transforms (`timm.data.create_transform(**data_config, is_training=True)`, the model's data config
with the benchmark's input size) in the same number of DataLoader worker processes (persistent),
and train the same timm model with the same batch size, AdamW, linear decay and clipping.
hubtl is the real `train()` entry point on the image folder; throughput is its per-epoch
`train_samples_per_second`, first epoch excluded. The baseline times its epochs the same way.
"""

from __future__ import annotations

import time
from typing import Any

from .baseline import accelerate_loop
from .common import (Context, Row, alternate, contention_note, cuda_memory_rows, failed_row, median, memory_row,
                     run_child, spread)

GROUP = "image_e2e"
GOAL = (">=", 0.95)

SIZES = {
    "quick": dict(model="test_resnet", size=32, batch=16, epochs=2, rounds=1, max_train=48),
    "cpu": dict(model="resnet18", size=64, batch=32, epochs=3, rounds=2, max_train=None),
    "cuda": dict(model="resnet50", size=224, batch=64, epochs=5, rounds=2, max_train=None),
}


def workers(ctx: Context) -> int:
    """DataLoader workers of both sides: hubtl's default on CPU (2), more where a GPU waits for decoding."""
    return min(2, ctx.cores) if ctx.device == "cpu" else max(2, min(8, ctx.cores - 2))


def run(ctx: Context) -> list[Row]:
    p = SIZES[ctx.mode]
    w = workers(ctx)
    item = (f"JPEG → train, image folder ({p['model']}, {p['size']} px, batch {p['batch']}; hubtl's default DataLoader "
            f"settings vs {w} workers{' + pinned memory' if ctx.device == 'cuda' else ''} by hand)")
    kwargs = dict(data=str(ctx.data), mixed_precision=ctx.mixed_precision, **p)
    kwargs.pop("rounds")
    sides = {
        # hubtl with its defaults (no dataloader_num_workers): what a user gets without tuning
        "hubtl": lambda r: run_child(ctx, f"{GROUP}_hubtl_{r}", __name__, "hubtl_side", out=str(ctx.work / f"{GROUP}_{r}"),
                                     workers=None, **kwargs),
        "baseline": lambda r: run_child(ctx, f"{GROUP}_baseline_{r}", __name__, "baseline_side", workers=w, **kwargs),
    }
    try:
        runs, added = alternate(ctx, p["rounds"], sides)
    except Exception as err:  # noqa: BLE001
        return [failed_row(GROUP, GROUP, item, "samples/s", str(err), GOAL)]
    hubtl, base = runs["hubtl"], runs["baseline"]
    h_rates = [x for run_ in hubtl for x in run_["rates"][1:]]
    b_rates = [x for run_ in base for x in run_["rates"][1:]]
    h, b = median(h_rates), median(b_rates)
    return [
        Row(GROUP, GROUP, item, h, b, "samples/s", h / b, goal=GOAL, baseline_label="ImageFolder",
            notes=f"median of {len(h_rates)} epochs each side (hubtl {spread(h_rates)}; ImageFolder {spread(b_rates)}); "
                  f"{hubtl[0]['train_examples']} vs {base[0]['train_examples']} training images; first epoch excluded; "
                  f"hubtl's default workers here: {hubtl[0].get('default_workers')}; "
                  f"{contention_note(runs, added)}",
            details={"hubtl_runs": hubtl, "baseline_runs": base, "params": p, "workers": w}),
        memory_row(GROUP, f"{GROUP}_memory", item, hubtl, base),
        *cuda_memory_rows(GROUP, f"{GROUP}_memory", item, hubtl, base),
    ]


def hubtl_side(data: str, out: str, model: str, size: int, batch: int, epochs: int, max_train: int | None,
               workers: int | None, mixed_precision: str) -> dict[str, Any]:
    """`hubtl.train.train()` on the hymenoptera image folder (eval on 32 images of val/, outside the timed loop).

    `workers` None: hubtl's default DataLoader settings.
    """
    from hubtl.data.loader import default_num_workers
    from hubtl.train import train

    dataset: dict[str, Any] = {"path": f"{data}/hymenoptera", "max_eval_samples": 32}
    if max_train:
        dataset["max_train_samples"] = max_train
    started = time.perf_counter()
    result = train({
        "backbone": f"timm:{model}", "pretrained": False, "backbone_kwargs": {"image_size": size},
        "dataset": dataset, "strategy": "full", "augment": True,
        "num_train_epochs": epochs, "per_device_train_batch_size": batch, "per_device_eval_batch_size": batch,
        "learning_rate": 1e-4, "mixed_precision": mixed_precision,
        **({} if workers is None else {"dataloader_num_workers": workers}),
        "output_dir": out, "overwrite_output_dir": True, "report_to": "none", "seed": 0,
    })
    return {
        "rates": [m["train_samples_per_second"] for m in result.metrics],
        "epoch_s": [m["epoch_time_s"] for m in result.metrics],
        "run_s": time.perf_counter() - started,
        "train_examples": _summary(result.output_dir)["train_samples"],
        "default_workers": default_num_workers("image", workers),
    }


def _summary(output_dir: Any) -> dict[str, Any]:
    import json
    from pathlib import Path

    return json.loads((Path(output_dir) / "training" / "summary.json").read_text())


def baseline_side(data: str, model: str, size: int, batch: int, epochs: int, max_train: int | None, workers: int,
                  mixed_precision: str) -> dict[str, Any]:
    """torchvision ImageFolder + the same timm transforms + a plain Accelerate loop."""
    import timm
    import torch
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader, Subset
    from torchvision.datasets import ImageFolder

    set_seed(0)
    net = timm.create_model(model, pretrained=False, num_classes=2)
    config = timm.data.resolve_model_data_config(net)
    config["input_size"] = (3, size, size)
    transform = timm.data.create_transform(**config, is_training=True)
    dataset = ImageFolder(f"{data}/hymenoptera/train", transform=transform)
    if max_train:
        dataset = Subset(dataset, torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:max_train].tolist())
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0,
                        pin_memory=torch.cuda.is_available())
    return {**accelerate_loop(net, loader, epochs, mixed_precision), "train_examples": len(dataset)}
