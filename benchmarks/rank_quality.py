"""Does `hubtl rank` pick the backbone fine-tuning would pick, and how much cheaper is it? One measured run.

    python -m benchmarks.rank_quality examples/rank_sst2.yaml examples/rank_hymenoptera.yaml --out DIR
        [--full_epochs 1]   # also time (and score) full fine-tuning of every candidate for that many epochs
        [--every_example]   # also time LogME on every training example (--max_samples all) from an empty store
        [--sample_check 500 1000 2000 --sample_seeds 5]   # τ of LogME on samples of these sizes, over seeds

For each config (its `candidates:` list), after one untimed ranking that warms the process (imports, the data
set's Arrow cache) for every timed job alike: (1) `hubtl.rank(...)` (LogME, hubtl's default sample size) from an
empty feature store, timed, then `metric="all"` on the same store; (2) every candidate fine-tuned with the
config's strategy (a linear probe through the feature cache, the same hyperparameters for all) from another
empty store, timed, its eval accuracy kept; (3) with --full_epochs, full fine-tuning of every candidate, timed;
(4) with --every_example, LogME on every training example from a third empty store, timed; (5) with
--sample_check, LogME on samples of each size under config seeds 0..N-1 (the seed draws the sample and the
random candidates' weights). Kendall's τ between each score and the fine-tuned accuracies, and the time
ratios, go to DIR/rank_quality.{json,md}. Public API only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any


import hubtl
from hubtl.ranking import kendall_tau


def _fresh_store(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    os.environ["HUBTL_CACHE"] = str(path)


def _fine_tune(config_path: Path, candidate: hubtl.ranking.Candidate, out: Path, **values: Any) -> dict[str, Any]:
    """One candidate fine-tuned with the config's settings (plus `values`); wall seconds and eval results."""
    overrides = {"backbone": candidate.backbone, "pretrained": candidate.pretrained,
                 "backbone_kwargs": candidate.backbone_kwargs, "candidates": None, "output_dir": str(out),
                 "overwrite_output_dir": True, "disable_tqdm": True, **values}
    args = [f"--{key}={json.dumps(value)}" for key, value in overrides.items()]
    started = time.perf_counter()
    result = hubtl.Trainer(hubtl.load_config(config_path, args)).run()
    return {"seconds": time.perf_counter() - started, "eval_accuracy": result.eval_results.get("eval_accuracy"),
            "eval_loss": result.eval_results.get("eval_loss")}


def measure(config_path: Path, out: Path, full_epochs: float, every_example: bool = False,
            sample_check: list[int] | None = None, sample_seeds: int = 5) -> dict[str, Any]:
    """Rank, then fine-tune every candidate; the scores, accuracies, τ and times of one config."""
    name = config_path.stem
    quiet = ["--disable_tqdm", "true"]
    # One untimed ranking first, in a store of its own: the imports (the candidates' model classes too) and the data
    # set's Arrow cache are then warm for every timed job alike, the probes included, which all run after it.
    _fresh_store(out / "store-warm-up")
    hubtl.rank(config_path, metric="logme", output_dir=out / name / "rank-warm-up", overrides=quiet)
    _fresh_store(out / "store-rank")
    started = time.perf_counter()
    first = hubtl.rank(config_path, metric="logme", output_dir=out / name / "rank-logme", overrides=quiet)
    rank_s = time.perf_counter() - started  # the default ranking, from an empty store: train features + LogME
    started = time.perf_counter()  # every score; the train features come from the store now
    ranked = hubtl.rank(config_path, metric="all", output_dir=out / name / "rank", overrides=quiet)
    rank_all_s = time.perf_counter() - started
    config = hubtl.load_config(config_path)
    candidates = {c.name: c for c in hubtl.ranking.parse_candidates(config.candidates, config)}
    _fresh_store(out / "store-probe")
    rows = []
    for row in ranked.rows:
        if not row.ok:
            rows.append({"name": row.name, "error": row.error})
            continue
        entry = {"name": row.name, "scores": row.scores, "rank_seconds": row.seconds, "feature_dim": row.feature_dim}
        entry["probe"] = _fine_tune(config_path, candidates[row.name], out / name / "probe" / row.name)
        if full_epochs:
            entry["full"] = _fine_tune(config_path, candidates[row.name], out / name / "full" / row.name,
                                       strategy="full", num_train_epochs=full_epochs, learning_rate=1e-4,
                                       augment=config.augment)
        rows.append(entry)
        print(json.dumps(entry), flush=True)
    usable = [r for r in rows if "scores" in r]
    probe_s = sum(r["probe"]["seconds"] for r in usable)
    accuracy = {r["name"]: r["probe"]["eval_accuracy"] for r in usable}
    result: dict[str, Any] = {
        "config": str(config_path), "train_samples": ranked.train_samples, "eval_samples": ranked.eval_samples,
        "scored_train_samples": first.scored_train_samples,
        "rank_seconds": rank_s, "rank_all_extra_seconds": rank_all_s, "probe_seconds": probe_s, "rank_over_probe": rank_s / probe_s, "rows": rows,
        "kendall_tau_probe": {m: kendall_tau([r["scores"][m] for r in usable], [r["probe"]["eval_accuracy"] for r in usable])
                              for m in usable[0]["scores"]},
    }
    if every_example:
        _fresh_store(out / "store-every")
        started = time.perf_counter()
        whole = hubtl.rank(config_path, metric="logme", output_dir=out / name / "rank-every", overrides=quiet,
                           max_samples=None)
        whole_s = time.perf_counter() - started
        result["every_example"] = {"seconds": whole_s, "rank_over_probe": whole_s / probe_s,
                                   "kendall_tau_probe": _tau(whole, accuracy),
                                   "scores": {r.name: r.scores.get("logme") for r in whole.rows}}
    if sample_check:  # the whole split's features are stored by now (first run, or every_example), samples read them
        result["sample_check"] = {}
        for size in sample_check:
            taus = [_tau(hubtl.rank(config_path, metric="logme", output_dir=out / name / f"rank-{size}-{seed}",
                                    overrides=[*quiet, "--seed", str(seed)], max_samples=size), accuracy)
                    for seed in range(sample_seeds)]
            result["sample_check"][size] = {"taus": taus, "mean": sum(taus) / len(taus), "min": min(taus)}
            print(json.dumps({"sample_size": size, **result["sample_check"][size]}), flush=True)
    if full_epochs:
        full_s = sum(r["full"]["seconds"] for r in usable)
        result.update(full_epochs=full_epochs, full_seconds=full_s, rank_over_full=rank_s / full_s)
        result["kendall_tau_full"] = {
            m: kendall_tau([r["scores"][m] for r in usable], [r["full"]["eval_accuracy"] for r in usable])
            for m in usable[0]["scores"]
        }
    return result


def _tau(result: hubtl.RankResult, accuracy: dict[str, float]) -> float:
    """Kendall's τ between a ranking's LogME scores and the probe accuracies of the same candidates."""
    rows = [r for r in result.rows if r.ok and r.name in accuracy]
    return kendall_tau([r.scores["logme"] for r in rows], [accuracy[r.name] for r in rows])


def markdown(results: list[dict[str, Any]]) -> str:
    """The README's table: per config, each candidate's scores next to its fine-tuned accuracy, then τ and times."""
    lines = []
    for res in results:
        full = "full_seconds" in res
        lines += [f"**{res['config']}** ({res['train_samples']} train / {res['eval_samples']} eval examples)", "",
                  "| candidate | LogME | k-NN | linear | dim | probe accuracy" + (" | full fine-tune accuracy |" if full else " |"),
                  "|---|---:|---:|---:|---:|---:|" + ("---:|" if full else "")]
        for r in res["rows"]:
            if "scores" not in r:
                lines.append(f"| {r['name']} | failed: {r['error']} |")
                continue
            s = r["scores"]
            cells = [r["name"], f"{s['logme']:.4f}", f"{s['knn']:.3f}", f"{s['linear']:.3f}", str(r["feature_dim"]),
                     f"{r['probe']['eval_accuracy']:.3f}"]
            if full:
                cells.append(f"{r['full']['eval_accuracy']:.3f}")
            lines.append("| " + " | ".join(cells) + " |")
        taus = ", ".join(f"{m} {v:.2f}" for m, v in res["kendall_tau_probe"].items())
        lines += ["", f"Kendall τ with the probe accuracy: {taus}."]
        if full:
            taus = ", ".join(f"{m} {v:.2f}" for m, v in res["kendall_tau_full"].items())
            lines.append(f"Kendall τ with the full fine-tuning accuracy ({res['full_epochs']} epoch(s)): {taus}.")
        scored = res.get("scored_train_samples") or res["train_samples"]
        times = (f"Ranking all candidates by LogME on {scored} training examples, from an empty feature store: "
                 f"{res['rank_seconds']:.0f} s (k-NN and linear "
                 f"afterwards, train features from the store: {res.get('rank_all_extra_seconds', 0):.0f} s more); their linear "
                 f"probes from an empty store: {res['probe_seconds']:.0f} s (ratio {res['rank_over_probe']:.2f})")
        if full:
            times += f"; full fine-tuning, {res['full_epochs']} epoch(s) each: {res['full_seconds']:.0f} s (ratio {res['rank_over_full']:.2f})"
        if "every_example" in res:
            every = res["every_example"]
            times += (f"; LogME on every training example, from an empty store: {every['seconds']:.0f} s (ratio "
                      f"{every['rank_over_probe']:.2f}, τ with the probe accuracy {every['kendall_tau_probe']:.2f})")
        lines += [times + ".", ""]
        for size, check in (res.get("sample_check") or {}).items():
            lines.append(f"LogME on {size} sampled training examples, seeds 0..{len(check['taus']) - 1}: τ with the probe "
                         f"accuracy {check['mean']:.2f} on average, {check['min']:.2f} at worst.")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rank_quality", description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--full_epochs", type=float, default=0.0)
    parser.add_argument("--every_example", action="store_true")
    parser.add_argument("--sample_check", type=int, nargs="*", default=None)
    parser.add_argument("--sample_seeds", type=int, default=5)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for config in args.configs:
        results.append(measure(config, args.out, args.full_epochs, args.every_example, args.sample_check,
                               args.sample_seeds))
        (args.out / "rank_quality.json").write_text(json.dumps(results, indent=2))
        (args.out / "rank_quality.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
