"""results.json and results.md: the table (item, hubtl, baseline, unit, ratio, goal, met?) and the machine."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .common import Row


def _num(value: float) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) >= 1 else f"{value:.3f}"


def _goal(row: Row) -> str:
    if row.goal is None:
        return "— (reported)"
    op, value = row.goal
    return f"{'≥' if op == '>=' else '≤'} {value:g}"


def _met(row: Row) -> str:
    if row.error:
        return "error"
    met = row.met
    return "—" if met is None else ("yes" if met else "**no**")


def _ratio(row: Row) -> str:
    text = _num(row.ratio)
    return text if row.ratio_of == "hubtl / baseline" else f"{text} ({row.ratio_of})"


def table(rows: list[Row]) -> str:
    """The markdown table of all rows."""
    lines = ["| item | hubtl | baseline | unit | ratio | goal | met? |", "|---|---:|---:|---|---:|---|---|"]
    for row in rows:
        hub = _num(row.hubtl) + ("" if row.hubtl_label == "hubtl" else f" ({row.hubtl_label})")
        base = _num(row.baseline) + ("" if row.baseline_label == "hand-written" else f" ({row.baseline_label})")
        lines.append(f"| {row.item} | {hub} | {base} | {row.unit} | {_ratio(row)} | {_goal(row)} | {_met(row)} |")
    return "\n".join(lines)


def machine_line(machine: dict[str, Any]) -> str:
    v = machine["versions"]
    device = machine["device"] if machine["device"] == "cpu" else f"{machine['device']} ({machine['device_name']})"
    load = machine.get("load_average_at_start") or []
    load_end = machine.get("load_average_at_end") or []
    return (
        f"{machine['cpu_model']}, {machine['cores']} cores, {machine['memory_gb']} GB RAM; device: {device}; "
        f"Python {machine['python']}, torch {v.get('torch')}, timm {v.get('timm')}, transformers {v.get('transformers')}, "
        f"accelerate {v.get('accelerate')}; 1-min load average {load[0] if load else '?'} at start, "
        f"{load_end[0] if load_end else '?'} at end{_pressure(machine)}"
    )


def _pressure(machine: dict[str, Any]) -> str:
    start, end = machine.get("cpu_pressure_at_start"), machine.get("cpu_pressure_at_end")
    if not start and not end:
        return ""
    parts = [f"{(p or {}).get('avg300', float('nan')):.0f} %" for p in (start, end)]
    return f"; CPU pressure (PSI some, 5-min avg: share of time runnable work waited for a core) {parts[0]} at start, {parts[1]} at end"


def notes(rows: list[Row]) -> str:
    lines = []
    for row in rows:
        if row.error:
            lines.append(f"- **{row.item}**: FAILED — {row.error.splitlines()[0]}")
        elif row.notes:
            lines.append(f"- {row.item}: {row.notes}")
    return "\n".join(lines)


def write(out: Path, rows: list[Row], meta: dict[str, Any]) -> tuple[Path, Path]:
    """Write results.json and results.md into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    data = {**meta, "items": [r.to_dict() for r in rows]}
    json_path = out / "results.json"
    json_path.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    md = [
        f"# hubtl benchmarks ({'quick smoke run' if meta['quick'] else 'full run'})",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {machine_line(meta['machine'])}  ",
        f"Run took {meta['duration_s'] / 60:.1f} min.",
        "",
        table(rows),
        "",
        "Notes:",
        "",
        notes(rows),
        "",
    ]
    md_path = out / "results.md"
    md_path.write_text("\n".join(md))
    return json_path, md_path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)
