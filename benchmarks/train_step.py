"""1. Training-step throughput: hubtl's training loop vs a minimal hand-written Accelerate loop.

Same model, same pre-made tensors, same batch size, optimizer (AdamW), schedule (linear decay) and
gradient clipping (1.0, hubtl's default). The hubtl side is hubtl's real `hubtl.Trainer` (Accelerator,
prepare, accumulate, backward, clip, scheduler, per-epoch evaluation and checkpoints) with only the
data source replaced: its DataLoader reads the same tensors through a stacking preprocessor
instead of decoding files, so the number isolates the training step from data loading (item 2
measures loading). Throughput is each run's per-epoch `train_samples_per_second` (the epoch's
training loop only; evaluation and checkpointing are outside it), first epoch excluded as warm-up;
the baseline times its epochs the same way.
"""

from __future__ import annotations

import time
from typing import Any

from .baseline import accelerate_loop
from .common import (Context, Row, alternate, contention_note, cuda_memory_rows, failed_row, median, memory_row,
                     run_child, spread)

GROUP = "train_step"
GOAL = (">=", 0.95)

#: per mode and variant: model, input size (pixels or tokens), examples per epoch, batch, epochs per run, runs per side
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        "timm": dict(model="test_resnet", size=32, n=64, batch=16, epochs=2, rounds=1),
        "text": dict(model="tiny-bert", size=16, n=64, batch=16, epochs=2, rounds=1),
    },
    "cpu": {
        "timm": dict(model="resnet18", size=64, n=256, batch=32, epochs=3, rounds=2),
        "text": dict(model="small-bert", size=64, n=256, batch=32, epochs=3, rounds=2),
    },
    "cuda": {
        "timm": dict(model="resnet50", size=160, n=2048, batch=128, epochs=3, rounds=2),
        "text": dict(model="minilm", size=128, n=2048, batch=128, epochs=3, rounds=2),
    },
}


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for variant in ("timm", "text"):
        if ctx.wants(GROUP, variant):
            rows += measure(ctx, variant)
    return rows


def measure(ctx: Context, variant: str) -> list[Row]:
    p = SIZES[ctx.mode][variant]
    what = "image" if variant == "timm" else "text"
    item = f"train step, {what} ({p['model']}, {p['size']}{' px' if variant == 'timm' else ' tokens'}, batch {p['batch']})"
    kwargs = dict(variant=variant, work=str(ctx.work), data=str(ctx.data), mixed_precision=ctx.mixed_precision, **p)
    kwargs.pop("rounds")
    sides = {
        "hubtl": lambda r: run_child(ctx, f"{GROUP}_{variant}_hubtl_{r}", __name__, "hubtl_side",
                                     out=str(ctx.work / f"{GROUP}_{variant}_{r}"), **kwargs),
        "baseline": lambda r: run_child(ctx, f"{GROUP}_{variant}_baseline_{r}", __name__, "baseline_side", **kwargs),
    }
    try:
        runs, added = alternate(ctx, p["rounds"], sides)  # h b, b h, ...
    except Exception as err:  # noqa: BLE001 - report and go on with the other items
        return [failed_row(GROUP, f"{GROUP}_{variant}", item, "samples/s", str(err), GOAL)]
    hubtl, base = runs["hubtl"], runs["baseline"]
    h_rates = [x for run in hubtl for x in run["rates"][1:]]
    b_rates = [x for run in base for x in run["rates"][1:]]
    h, b = median(h_rates), median(b_rates)
    rows = [
        Row(GROUP, f"{GROUP}_{variant}", item, h, b, "samples/s", h / b, goal=GOAL,
            notes=f"median of {len(h_rates)} epochs of {p['n']} each side (hubtl {spread(h_rates)}; "
                  f"hand-written {spread(b_rates)}); first epoch of each run excluded; {contention_note(runs, added)}",
            details={"hubtl_runs": hubtl, "baseline_runs": base, "params": p}),
        memory_row(GROUP, f"{GROUP}_{variant}_memory", item, hubtl, base),
    ]
    return rows + cuda_memory_rows(GROUP, f"{GROUP}_{variant}_memory", item, hubtl, base)


# ------------------------------------------------------------------------------------------ subprocesses


def _dataset(variant: str, work: str, data: str, model: str, size: int, n: int) -> tuple[Any, str, dict[str, Any]]:
    """The tensors both sides train on, the hubtl backbone name and its kwargs."""
    from . import fixtures

    if variant == "timm":
        return fixtures.image_tensors(n, size), f"timm:{model}", {}
    encoder = fixtures.text_encoder_dir(work, model, data)
    return fixtures.text_tensors(encoder, data, n, size), f"transformers:{encoder}", {"pooling": "mean", "max_length": size}


class _Stack:
    """Preprocessor for pre-made tensors: stacks them into the batch dict the backbone takes."""

    deterministic = True

    def __call__(self, examples: list[Any]) -> dict[str, Any]:
        import torch

        if isinstance(examples[0], dict):
            return {k: torch.stack([e[k] for e in examples]) for k in examples[0]}
        return {"pixel_values": torch.stack(list(examples))}

    def config(self) -> dict[str, Any]:
        return {"type": "pre-made tensors (benchmark)"}


def hubtl_side(variant: str, work: str, data: str, out: str, model: str, size: int, n: int, batch: int, epochs: int,
               mixed_precision: str) -> dict[str, Any]:
    """hubtl's training loop (`hubtl.Trainer.run`) over the pre-made tensors."""
    import hubtl

    from . import fixtures

    train_set, backbone, backbone_kwargs = _dataset(variant, work, data, model, size, n)
    eval_set = fixtures.PairDataset(*_head(train_set, batch))
    stack = _Stack()
    built = hubtl.TransferModel.from_backbone(backbone, labels=fixtures.LABELS, pretrained=variant != "timm",
                                              **backbone_kwargs)
    built.backbone.preprocessor = lambda train=False: stack  # tensors in, no decoding
    tensors = hubtl.TransferData(train=train_set, eval=eval_set, labels=fixtures.LABELS,
                                 modality="image" if variant == "timm" else "text", skipped=[])

    cfg = hubtl.TrainingConfig.from_dict({
        "backbone": backbone, "pretrained": variant != "timm", "backbone_kwargs": backbone_kwargs,
        "dataset": {"path": "pre-made tensors"}, "labels": fixtures.LABELS, "strategy": "full",
        "num_train_epochs": epochs, "per_device_train_batch_size": batch, "per_device_eval_batch_size": batch,
        "learning_rate": 1e-4, "mixed_precision": mixed_precision, "dataloader_num_workers": 0,
        "output_dir": out, "overwrite_output_dir": True, "report_to": "none", "seed": 0,
    })
    started = time.perf_counter()
    result = hubtl.Trainer(cfg, data=tensors, model=built).run()
    return {
        "rates": [m["train_samples_per_second"] for m in result.metrics],
        "epoch_s": [m["epoch_time_s"] for m in result.metrics],
        "run_s": time.perf_counter() - started,
    }


def _head(dataset: Any, k: int) -> tuple[Any, Any]:
    """The first `k` examples as (inputs, targets), for a small evaluation set."""
    if isinstance(dataset.inputs, dict):
        return {key: v[:k] for key, v in dataset.inputs.items()}, dataset.targets[:k]
    return dataset.inputs[:k], dataset.targets[:k]


def baseline_side(variant: str, work: str, data: str, model: str, size: int, n: int, batch: int, epochs: int,
                  mixed_precision: str) -> dict[str, Any]:
    """The hand-written loop: the model, AdamW, linear decay, clipping, Accelerate, same tensors."""
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader

    set_seed(0)
    train_set, _, _ = _dataset(variant, work, data, model, size, n)
    net = build_baseline_model(variant, work, data, model)
    loader = DataLoader(train_set, batch_size=batch, shuffle=True)
    return accelerate_loop(net, loader, epochs, mixed_precision)


def build_baseline_model(variant: str, work: str, data: str, model: str) -> Any:
    """What a user writes by hand: timm.create_model with a 2-class classifier, or AutoModel + mean pooling + Linear."""
    import torch
    from torch import nn

    if variant == "timm":
        import timm

        return timm.create_model(model, pretrained=False, num_classes=2)
    from transformers import AutoModel

    from . import fixtures

    encoder = AutoModel.from_pretrained(fixtures.text_encoder_dir(work, model, data), add_pooling_layer=False)

    class MeanPoolClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.classifier = nn.Linear(encoder.config.hidden_size, 2)

        def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            hidden = self.encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            return self.classifier((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9))

    return MeanPoolClassifier()
