"""The ranking's outputs: the console table, rank.json and the bar plot rank.png."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from ..layout import atomic_write

if TYPE_CHECKING:
    from .run import RankResult

RANK_JSON = "rank.json"
RANK_PNG = "rank.png"


def format_table(result: RankResult) -> str:
    """Rank, name, every score, feature width, seconds, where features came from (or the failure)."""
    score_names = list(dict.fromkeys(k for r in result.rows for k in r.scores)) or [result.metric]
    tuned = any(r.fine_tuned for r in result.rows)
    header = ["#", "candidate", *score_names, "dim", "seconds", "features"] + (["fine-tuned"] if tuned else [])
    lines = []
    place = 0
    for r in result.rows:
        if r.ok:
            place += 1
            sources = ",".join(sorted(set(r.features_from.values())))
            cells = [str(place), r.name, *(f"{r.scores.get(k, math.nan):.4f}" for k in score_names)]
            cells += [str(r.feature_dim), f"{r.seconds:.1f}", sources]
            if tuned:
                value = (r.fine_tuned or {}).get("metric_value")
                cells.append(f"{value:.4f}" if isinstance(value, (int, float)) else "")
        else:
            cells = ["-", r.name, f"FAILED: {r.error}"]
        lines.append(cells)
    widths = [max(len(header[i]), *(len(c[i]) for c in lines if i < len(c) and c[0] != "-")) for i in range(len(header))]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    for cells in lines:
        if cells[0] == "-":
            out.append("  ".join(cells))
        else:
            out.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)))
    scored = result.scored_train_samples
    sampled = f"{scored} of the " if scored is not None and scored < result.train_samples else ""
    title = f"Ranked by {result.metric} on {sampled}{result.train_samples} training examples of {result.dataset} ({result.task})"
    return "\n".join([title, *out, *_tau_footer(result)])


def _tau_footer(result: RankResult) -> list[str]:
    """The line on Kendall's τ with the fine-tuned metric (n/a when every value ties); none without 2 fine-tuned rows."""
    rows = result.fine_tuned_rows()
    if len(rows) < 2:
        return []
    tuned = rows[0].fine_tuned or {}
    lower = "" if tuned.get("greater_is_better", True) else " (lower is better)"
    tau = result.kendall_tau()
    shown = f"{tau:.3f}" if tau is not None else "n/a (undefined: every fine-tuned value, or every score, is the same)"
    return [f"Kendall tau between {result.metric} and the fine-tuned {tuned.get('metric', 'metric')}{lower}: {shown}"]


def write_report(result: RankResult, folder: Path) -> list[Path]:
    """rank.json (every row, scores and reasons) and rank.png (a bar per usable candidate), written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / RANK_JSON
    atomic_write(json_path, json.dumps(result.to_dict(), indent=2, default=str))
    return [json_path, _bar_plot(result, folder / RANK_PNG)]


def _bar_plot(result: RankResult, path: Path) -> Path:
    """Horizontal bars of the ranking metric, best on top (its own Figure: no pyplot, no global backend switch)."""
    from matplotlib.figure import Figure

    rows = [r for r in result.rows if r.ok]
    fig = Figure(figsize=(7, 0.45 * len(rows) + 1.4))
    ax = fig.subplots()
    values = [r.scores[result.metric] for r in rows]
    ax.barh(range(len(rows)), values, color="#4C72B0")
    ax.set_yticks(range(len(rows)), [r.name for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel(result.metric)
    scored = result.scored_train_samples or result.train_samples
    ax.set_title(f"{result.metric} on {result.dataset} ({scored} examples)", fontsize=10)
    for i, v in enumerate(values):
        ax.annotate(f"{v:.3f}", (v, i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write(path, buffer.getvalue())
    return path
