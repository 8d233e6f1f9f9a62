"""`python -m benchmarks [--out DIR] [--device cpu|cuda] [--quick] [--only NAME,...] [--mixed-precision bf16]`.

Measures hubtl against hand-written code (see benchmarks/README.md) and writes results.json and
results.md into --out, then prints the table.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import GROUPS
from .common import REPO, Context, Row, close_workers, cpu_pressure, failed_row, machine_info, probe_cuda
from .report import machine_line, table, write


def _default_data() -> Path:
    """The shared data folder: $HUBTL_BENCH_DATA, ../shared/data beside the checkout, or ./shared/data."""
    for candidate in (os.environ.get("HUBTL_BENCH_DATA"), REPO.parent / "shared" / "data", REPO / "shared" / "data",
                      REPO / "benchmarks" / ".data"):
        if candidate and (Path(candidate) / "hymenoptera").is_dir():
            return Path(candidate).resolve()
    return REPO.parent / "shared" / "data"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[1])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="results folder")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda if torch sees one")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (seconds per item; numbers not meaningful)")
    parser.add_argument("--only", default="", help=f"comma-separated groups or group.variant: {', '.join(GROUPS)}")
    parser.add_argument("--mixed-precision", default="no", choices=("no", "bf16", "fp16"),
                        help="mixed precision of both sides of the training items (default: no)")
    parser.add_argument("--data", type=Path, default=None, help="folder holding hymenoptera/ and sst2/ (default: ../shared/data)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder for models and runs (default: a temp dir, removed)")
    parser.add_argument("--profile", action="store_true", help="cProfile every measured subprocess into OUT/logs/*.prof")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only = {x.strip() for x in args.only.split(",") if x.strip()} or None
    unknown = {x.split(".")[0] for x in only or ()} - set(GROUPS)
    if unknown:
        print(f"unknown --only name(s): {', '.join(sorted(unknown))}; choose from {', '.join(GROUPS)}", file=sys.stderr)
        return 2
    data = (args.data or _default_data()).resolve()
    if not (data / "hymenoptera").is_dir() or not (data / "sst2").is_dir():
        print(f"benchmark data not found in {data} (needs hymenoptera/ and sst2/); pass --data DIR", file=sys.stderr)
        return 2

    device, device_name = args.device, None
    if device in ("auto", "cuda"):
        has_cuda, device_name = probe_cuda(asked=device == "cuda")
        if device == "cuda" and not has_cuda:
            print("--device cuda: torch sees no GPU here", file=sys.stderr)
            return 2
        device = "cuda" if has_cuda else "cpu"

    out = args.out.resolve()
    logs = out / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    own_work = args.work is None
    work = Path(tempfile.mkdtemp(prefix="hubtl-bench-")) if own_work else args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    ctx = Context(out=out, work=work, logs=logs, data=data, device=device, quick=args.quick,
                  mixed_precision=args.mixed_precision, cores=cores, only=only, profile=args.profile)
    machine = machine_info(device, device_name)
    command = " ".join(["python -m benchmarks", *(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))])
    print(f"hubtl benchmarks: {machine_line(machine)}", flush=True)
    print(f"results -> {out}; logs -> {logs}; work -> {work}", flush=True)

    started = time.perf_counter()
    rows: list[Row] = []
    try:
        for group in GROUPS:
            if not ctx.wants(group) and not any(o.startswith(group + ".") for o in only or ()):
                continue
            t0 = time.perf_counter()
            print(f"[{time.perf_counter() - started:6.1f}s] {group} ...", flush=True)
            try:
                new = importlib.import_module(f"benchmarks.{group}").run(ctx)
            except Exception as err:  # noqa: BLE001 - one broken group must not lose the others
                traceback.print_exc()
                new = [failed_row(group, group, group, "", f"{type(err).__name__}: {err}")]
            for row in new:
                row.details.setdefault("group_seconds", round(time.perf_counter() - t0, 1))
            rows += new
            print(table(new).split("\n", 2)[2], flush=True)
            write(out, rows, {"command": command, "quick": args.quick, "device": device, "partial": True,
                              "mixed_precision": args.mixed_precision, "machine": machine, "data": str(data),
                              "duration_s": round(time.perf_counter() - started, 1)})
    finally:
        close_workers()
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    machine["load_average_at_end"] = list(os.getloadavg())
    machine["cpu_pressure_at_end"] = cpu_pressure()
    duration = time.perf_counter() - started
    meta = {"command": command, "quick": args.quick, "device": device, "partial": False, "mixed_precision": args.mixed_precision,
            "duration_s": round(duration, 1), "machine": machine, "data": str(data)}
    json_path, md_path = write(out, rows, meta)
    print()
    print(table(rows))
    print(f"\n{len(rows)} rows in {duration / 60:.1f} min -> {json_path}, {md_path}")
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
