"""11. `group_by_length: true` vs plain shuffling: full fine-tuning of a text encoder on SST-2 sentences.

Both are the real command line on the same YAML config (an SST-2 subset with its real sentence lengths, full
fine-tuning, pad to the longest of each batch):
  plain:           python -m hubtl.train CFG
  group_by_length: python -m hubtl.train CFG --group_by_length true
The row: training samples/s (grouped / plain, reported, no goal: it is hubtl against hubtl, not against hand-written
code), first epoch of each run excluded, and both runs' final eval accuracy (other batches, so not equal).
`--only group_by_length` runs it alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import Context, Row, alternate, contention_note, failed_row, median, spread
from .data_parallel import _train, _write_config

GROUP = "group_by_length"

SIZES = {
    "quick": dict(model="tiny-bert", n=64, batch=16, epochs=2, max_length=64),
    "cpu": dict(model="minilm", n=1024, batch=32, epochs=2, max_length=64),
    "cuda": dict(model="minilm", n=6920, batch=64, epochs=3, max_length=64),
}


def run(ctx: Context) -> list[Row]:
    p = SIZES[ctx.mode]
    item = f"full fine-tuning, group_by_length vs plain shuffling ({p['model']}, SST-2 {p['n']}, batch {p['batch']})"

    def side(grouped: bool):
        def one(r: int) -> dict:
            out = ctx.work / f"{GROUP}_{'grouped' if grouped else 'plain'}"
            found = _train(ctx, f"{'grouped' if grouped else 'plain'}_{r}", [
                sys.executable, "-m", "hubtl.train", str(config), "--per_device_train_batch_size", str(p["batch"]),
                "--group_by_length", str(grouped).lower(), "--output_dir", str(out),
                "--mixed_precision", ctx.mixed_precision], {}, GROUP)  # fmt: skip
            results = json.loads((Path(out) / "training" / "eval_results.json").read_text())
            return {**found, "eval_accuracy": results.get("eval_accuracy")}

        return one

    try:
        config = _write_config(ctx, p, GROUP)
        runs, added = alternate(ctx, 1, {"grouped": side(True), "plain": side(False)})
    except Exception as err:  # noqa: BLE001
        return [failed_row(GROUP, GROUP, item, "samples/s", str(err))]
    g_rates = [x for run_ in runs["grouped"] for x in run_["rates"][1:]]
    p_rates = [x for run_ in runs["plain"] for x in run_["rates"][1:]]
    h, b = median(g_rates), median(p_rates)
    return [
        Row(GROUP, GROUP, item, h, b, "samples/s", h / b, ratio_of="group_by_length / plain",
            hubtl_label="group_by_length", baseline_label="plain",
            notes=(f"first epoch of each run excluded (group_by_length {spread(g_rates)}; plain {spread(p_rates)}); "
                   f"final eval accuracy {runs['grouped'][0]['eval_accuracy']:.3f} vs {runs['plain'][0]['eval_accuracy']:.3f} "
                   f"(other batches); {contention_note(runs, added)}"),
            details={"runs": runs, "params": p}),
    ]
