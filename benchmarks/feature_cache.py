"""3. Linear probe with the feature cache vs without: wall time of a whole 10-epoch `train()` run;
and a second linear probe whose features come from the persistent feature store vs the first one.

Both runs are `hubtl.train.train()` with `strategy: linear_probe, augment: false` on the hymenoptera
image folder (245 training, 153 evaluation images, every image evaluated after every epoch), one
with `feature_cache: true`, one with `feature_cache: false`. The time is the whole `train()` call:
loading and checking the data, building the model, extracting features (cache) or running the
frozen backbone every epoch (no cache), 10 epochs, evaluation, checkpoints, the final save and the
model card. The heavy imports (torch, timm, transformers, datasets, accelerate) are done before the
clock starts in both runs: they cost the same with and without the cache. The subprocess wall time
(imports included) is reported in the details. Each of these runs starts with an empty feature store.

The `persistent` variant runs two linear probes of all-MiniLM-L6-v2 on SST-2 (6,919 train / 871 dev
sentences) one after the other with one feature store (`HUBTL_CACHE`): the first computes and stores
the features, the second, with another learning rate and head dropout, reads them. Both are whole
`train()` calls in fresh subprocesses (imports before the clock); the ratio is first / second.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

from .common import Context, Row, alternate, contention_note, cuda_memory_rows, failed_row, median, memory_row, run_child

GROUP = "feature_cache"
GOAL = (">=", 5.0)

SIZES = {
    "quick": dict(model="test_resnet", size=32, epochs=10, batch=16, max_train=32, max_eval=16),
    "cpu": dict(model="resnet18", size=96, epochs=10, batch=32, max_train=None, max_eval=None),
    "cuda": dict(model="resnet50", size=224, epochs=10, batch=64, max_train=None, max_eval=None),
}


PERSISTENT = {
    "quick": dict(encoder="tiny-bert", epochs=2, batch=32, max_train=256, max_eval=64),
    "cpu": dict(encoder="minilm", epochs=3, batch=32, max_train=None, max_eval=None),
    "cuda": dict(encoder="minilm", epochs=3, batch=128, max_train=None, max_eval=None),
}


def run(ctx: Context) -> list[Row]:
    rows = _cache_on_off(ctx) if ctx.wants(GROUP, "on_off") else []
    return rows + (_persistent(ctx) if ctx.wants(GROUP, "persistent") else [])


def _persistent(ctx: Context) -> list[Row]:
    """First linear probe (features computed and stored) vs a second one (features read from the store)."""
    p = PERSISTENT[ctx.mode]
    item = f"second linear probe, features from the persistent store vs the first run ({p['encoder']}, SST-2)"
    firsts, seconds = [], []
    try:
        for r in range(1 if ctx.quick else 2):
            store = ctx.work / f"{GROUP}_store_{r}"
            shutil.rmtree(store, ignore_errors=True)
            kwargs = dict(data=str(ctx.data), work=str(ctx.work), store=str(store), mixed_precision=ctx.mixed_precision, **p)
            firsts.append(run_child(ctx, f"{GROUP}_first_{r}", __name__, "text_probe", learning_rate=1e-3,
                                    head_dropout=0.0, out=str(ctx.work / f"{GROUP}_first"), **kwargs))
            seconds.append(run_child(ctx, f"{GROUP}_second_{r}", __name__, "text_probe", learning_rate=3e-3,
                                     head_dropout=0.1, out=str(ctx.work / f"{GROUP}_second"), **kwargs))
    except Exception as err:  # noqa: BLE001
        return [failed_row(GROUP, f"{GROUP}_persistent", item, "s", str(err), GOAL)]
    if any(run["sources"] != {"train": "cache", "eval": "cache"} for run in seconds):
        return [failed_row(GROUP, f"{GROUP}_persistent", item, "s", f"second runs read {seconds}", GOAL)]
    h, b = median([r["train_s"] for r in seconds]), median([r["train_s"] for r in firsts])
    runs = {"first": firsts, "second": seconds}
    return [Row(
        GROUP, f"{GROUP}_persistent", item, h, b, "s", b / h, goal=GOAL, ratio_of="speed-up: first run / second run",
        hubtl_label="second run", baseline_label="first run",
        notes=(f"whole train() call, median of {len(seconds)} pair(s); first run: "
               + ", ".join(f"{k} {v:.2f} s" for k, v in firsts[0]["parts"].items()) + "; second run: "
               + ", ".join(f"{k} {v:.2f} s" for k, v in seconds[0]["parts"].items())
               + f"; {contention_note(runs, 0)}"),
        details={"first": firsts, "second": seconds, "params": p},
    )]


def text_probe(data: str, work: str, store: str, out: str, encoder: str, epochs: int, batch: int,
               max_train: int | None, max_eval: int | None, learning_rate: float, head_dropout: float,
               mixed_precision: str = "no") -> dict[str, Any]:
    """One SST-2 linear probe with the feature store at `store`; imports done before the clock starts."""
    import json
    import os
    from pathlib import Path

    import accelerate  # noqa: F401
    import datasets  # noqa: F401
    import transformers.optimization  # noqa: F401

    import hubtl.backbones.transformers  # noqa: F401
    from hubtl.train import train

    from .fixtures import text_encoder_dir

    os.environ["HUBTL_CACHE"] = store
    encoder_dir = text_encoder_dir(work, encoder, data)
    dataset = _capped({"path": f"{data}/sst2", "data_files": {"train": "train.tsv", "validation": "dev.tsv"},
                       "column_names": ["sentence", "label"], "text_column": "sentence"}, max_train, max_eval)
    started = time.perf_counter()
    result = train({
        "backbone": f"transformers:{encoder_dir}", "dataset": dataset, "strategy": "linear_probe",
        "num_train_epochs": epochs, "per_device_train_batch_size": batch, "per_device_eval_batch_size": 2 * batch,
        "learning_rate": learning_rate, "head_dropout": head_dropout, "mixed_precision": mixed_precision,
        "output_dir": out, "overwrite_output_dir": True, "report_to": "none", "seed": 0, "disable_tqdm": True,
    })
    train_s = time.perf_counter() - started
    summary = json.loads((Path(result.output_dir) / "training" / "summary.json").read_text())
    parts = {PHASES.get(name, name): seconds for name, seconds in summary.get("phase_seconds", {}).items()}
    return {"train_s": train_s, "sources": summary.get("feature_sources"), "parts": parts,
            "eval_accuracy": result.eval_results.get("eval_accuracy")}


def _cache_on_off(ctx: Context) -> list[Row]:
    """Cache on vs off within one run, each from an empty feature store."""
    p = SIZES[ctx.mode]
    item = f"linear probe, {p['epochs']} epochs, cache vs no cache ({p['model']}, {p['size']} px, hymenoptera)"
    kwargs = dict(data=str(ctx.data), mixed_precision=ctx.mixed_precision, workers=None, **p)  # hubtl's defaults
    sides = {
        "on": lambda r: run_child(ctx, f"{GROUP}_on_{r}", __name__, "probe", cache=True, out=str(ctx.work / f"{GROUP}_on"),
                                  store=str(ctx.work / f"{GROUP}_on_store_{r}"), **kwargs),
        "off": lambda r: run_child(ctx, f"{GROUP}_off_{r}", __name__, "probe", cache=False,
                                   out=str(ctx.work / f"{GROUP}_off"), store=str(ctx.work / f"{GROUP}_off_store_{r}"),
                                   **kwargs),
    }
    try:
        runs, added = alternate(ctx, 1, sides)
    except Exception as err:  # noqa: BLE001
        return [failed_row(GROUP, GROUP, item, "s", str(err), GOAL)]
    on, off = runs["on"], runs["off"]
    h, b = median([r["train_s"] for r in on]), median([r["train_s"] for r in off])
    parts = on[0]["parts"]
    return [
        Row(GROUP, GROUP, item, h, b, "s", b / h, goal=GOAL, ratio_of="speed-up: no cache / cache",
            hubtl_label="cache on", baseline_label="cache off",
            notes=(f"whole train() call, median of {len(on)} run(s) each; epoch loop alone (summary runtime_s, after "
                   f"the cache's one feature pass) {median([r['runtime_s'] for r in on]):.1f} s vs "
                   f"{median([r['runtime_s'] for r in off]):.1f} s; cached run: "
                   + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items())
                   + f"; subprocess wall with imports {median([r['wall_s'] for r in on]):.1f} s vs "
                   f"{median([r['wall_s'] for r in off]):.1f} s; {contention_note(runs, added)}"),
            details={"cache_on": on, "cache_off": off, "params": p}),
        memory_row(GROUP, f"{GROUP}_memory", item, on, off),
        *cuda_memory_rows(GROUP, f"{GROUP}_memory", item, on, off),
    ]


#: The trainer's phases (summary.json `phase_seconds`) as the report names them.
PHASES = {"data": "data loading + image check", "model": "model", "features": "feature pass",
          "loop": "epochs (train+eval+checkpoints)", "save": "final save + card"}


def probe(cache: bool, data: str, out: str, model: str, size: int, epochs: int, batch: int, max_train: int | None,
          max_eval: int | None, workers: int | None, mixed_precision: str, store: str) -> dict[str, Any]:
    """One linear-probe run from an empty feature store; the imports every run needs are done before the clock starts."""
    import json
    import os
    import shutil as _shutil
    from pathlib import Path

    _shutil.rmtree(store, ignore_errors=True)
    os.environ["HUBTL_CACHE"] = store
    import accelerate  # noqa: F401
    import datasets  # noqa: F401
    import timm  # noqa: F401
    import transformers.optimization  # noqa: F401  (hubtl.train imports get_scheduler from here)

    import hubtl.backbones.timm  # noqa: F401
    from hubtl.train import train

    dataset = _capped({"path": f"{data}/hymenoptera"}, max_train, max_eval)
    started = time.perf_counter()
    result = train({
        "backbone": f"timm:{model}", "pretrained": False, "backbone_kwargs": {"image_size": size},
        "dataset": dataset, "strategy": "linear_probe", "augment": False, "feature_cache": cache,
        "num_train_epochs": epochs, "per_device_train_batch_size": batch, "per_device_eval_batch_size": 2 * batch,
        "learning_rate": 1e-3, "mixed_precision": mixed_precision,
        **({} if workers is None else {"dataloader_num_workers": workers}),
        "output_dir": out, "overwrite_output_dir": True, "report_to": "none", "seed": 0,
    })
    train_s = time.perf_counter() - started
    summary = json.loads((Path(result.output_dir) / "training" / "summary.json").read_text())
    if summary.get("feature_cache") != cache:
        raise RuntimeError(f"feature_cache was {summary.get('feature_cache')} in a run that asked for {cache}")
    phases = summary.get("phase_seconds", {})  # the trainer times its own phases
    parts = {PHASES.get(name, name): seconds for name, seconds in phases.items()}
    return {"train_s": train_s, "runtime_s": summary["runtime_s"], "epochs": len(result.metrics),
            "epoch_s": [m["epoch_time_s"] for m in result.metrics], "parts": parts}


def _capped(dataset: dict[str, Any], max_train: int | None, max_eval: int | None) -> dict[str, Any]:
    """A `dataset:` section with the example caps of the quick sizes (none in the measured ones)."""
    return {**dataset, **({"max_train_samples": max_train} if max_train else {}),
            **({"max_eval_samples": max_eval} if max_eval else {})}
