"""Shared plumbing: the run context, fresh-subprocess runners (wall time, peak RSS), statistics, result rows.

The parent process (`python -m benchmarks`) never imports torch: every measured side runs in its own
fresh Python subprocess, so its peak memory and start-up cost are its own and nothing one side
leaves behind (allocator caches, imported modules, warm kernels) helps or hurts the other.
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


class BenchmarkError(RuntimeError):
    """A measured subprocess failed; the message ends with the tail of its log."""


@dataclass
class Context:
    """Where and how this run measures."""

    out: Path
    work: Path
    logs: Path
    data: Path
    device: str  # "cpu" or "cuda"
    quick: bool
    mixed_precision: str
    cores: int
    only: set[str] | None = None
    profile: bool = False

    @property
    def mode(self) -> str:
        """Which size table the items use: 'quick', 'cpu' or 'cuda'."""
        return "quick" if self.quick else self.device

    def wants(self, group: str, variant: str | None = None) -> bool:
        """True when --only selects this group (or this `group.variant`), or when --only is not given."""
        if not self.only:
            return True
        return group in self.only or (variant is not None and f"{group}.{variant}" in self.only)

    def child_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Environment of measured subprocesses: offline, quiet, on the chosen device."""
        env = dict(os.environ)
        env.update(
            HF_HUB_OFFLINE="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            TRANSFORMERS_NO_ADVISORY_WARNINGS="1",
            TOKENIZERS_PARALLELISM="false",
            PYTHONUNBUFFERED="1",
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")])),
        )
        if self.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        if self.profile:
            env["HUBTL_BENCH_PROFILE_DIR"] = str(self.logs)
        env.update(extra or {})
        return env


@dataclass
class Spawned:
    """What one subprocess did: exit status, wall time from spawn to exit, peak RSS, its output.

    `other_cores` is how many cores other processes kept busy on average meanwhile (machine-wide busy
    CPU time from /proc/stat, steal included, minus the subprocess tree's own CPU time, over the wall
    time): near 0 on a quiet machine; a benchmark run beside other work reads high here.
    """

    returncode: int
    wall_s: float
    maxrss_mb: float
    output: str
    other_cores: float | None = None


def _busy_seconds() -> float | None:
    """CPU seconds the whole machine spent busy since boot (user, nice, system, irq, softirq, steal)."""
    try:
        values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def spawn(ctx: Context, name: str, argv: list[str], extra_env: dict[str, str] | None = None, timeout: float = 900) -> Spawned:
    """Run a command in a fresh process; wall time spawn -> exit, peak RSS of its largest process (wait4).

    ru_maxrss from wait4 covers the process and its waited-for descendants, as the maximum of them
    (never a sum): for `accelerate launch` it is the largest worker, for a training run the main
    process or its largest DataLoader worker.
    """
    log = ctx.logs / f"{name}.log"
    with open(log, "wb") as fh:
        fh.write(("$ " + " ".join(argv) + "\n").encode())
        fh.flush()
        busy = _busy_seconds()
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=ctx.child_env(extra_env), cwd=REPO,
                                start_new_session=True)
        timer = threading.Timer(timeout, _kill_group, args=(proc.pid,))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        busy_after = _busy_seconds()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: keep Popen from waiting again
    output = log.read_text(errors="replace")
    other = None
    if busy is not None and busy_after is not None and wall > 0:
        other = round(max(0.0, busy_after - busy - usage.ru_utime - usage.ru_stime) / wall, 3)
    result = Spawned(proc.returncode, wall, usage.ru_maxrss / 1024.0, output, other)
    if result.returncode != 0:
        tail = "\n".join(output.splitlines()[-25:])
        raise BenchmarkError(f"{name} exited with {result.returncode} after {wall:.1f}s (log {log}):\n{tail}")
    return result


def _kill_group(pid: int) -> None:
    """Timeout: stop the process group this runner started (and only that one)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_child(ctx: Context, name: str, module: str, func: str, timeout: float = 900, **kwargs: Any) -> dict[str, Any]:
    """Call `module.func(**kwargs)` in a fresh Python process; its JSON result plus wall_s and maxrss_mb.

    With --quick the call goes to one long-lived worker process instead (no Python start per call).
    """
    result_path = ctx.logs / f"{name}.json"
    result_path.unlink(missing_ok=True)
    if ctx.quick:
        return _worker(ctx).call(name, result_path, module, func, kwargs, timeout)
    argv = [sys.executable, "-m", "benchmarks._child", str(result_path), module, func, json.dumps(kwargs)]
    try:
        done = spawn(ctx, name, argv, timeout=timeout)
    except BenchmarkError as err:
        raise BenchmarkError(_child_error(result_path) or str(err)) from None
    result = json.loads(result_path.read_text())
    result.update(wall_s=done.wall_s, maxrss_mb=done.maxrss_mb, other_cores=done.other_cores)
    return result


#: Average cores used by other processes during a run above which a run counts as disturbed.
DISTURBED = 0.3


def alternate(ctx: Context, rounds: int, sides: dict[str, Any], extra: int = 1) -> tuple[dict[str, list[dict]], int]:
    """Run `sides` (name -> callable(round) -> result) in alternating order for `rounds` rounds.

    When other processes disturbed any run (other_cores > DISTURBED), up to `extra` more rounds are
    added: more data for the median from both sides, never a choice of the better side. Returns the
    runs per side and the number of extra rounds run. --quick never adds rounds.
    """
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    names = list(sides)

    def one_round(r: int) -> None:
        for name in (names if r % 2 == 0 else names[::-1]):
            runs[name].append(sides[name](r))

    for r in range(rounds):
        one_round(r)
    added = 0
    while not ctx.quick and added < extra and _disturbed(runs):
        one_round(rounds + added)
        added += 1
    return runs, added


def _disturbed(runs: dict[str, list[dict]]) -> bool:
    return any((run.get("other_cores") or 0) > DISTURBED for side in runs.values() for run in side)


def contention_note(runs: dict[str, list[dict]], added: int = 0) -> str:
    """'other processes used ... cores' for the notes of a row."""
    values = [run.get("other_cores") for side in runs.values() for run in side]
    values = [v for v in values if v is not None]
    if not values:
        return ""
    note = f"other processes kept {statistics.mean(values):.2f} cores busy on average (max {max(values):.2f})"
    if added:
        note += f"; {added} extra round(s) run because of that"
    return note


def _child_error(result_path: Path) -> str | None:
    try:
        return json.loads(result_path.read_text()).get("error")
    except (OSError, ValueError):
        return None


class _Worker:
    """One `python -m benchmarks._child --serve` process running calls one after another (--quick only)."""

    def __init__(self, ctx: Context) -> None:
        self.log = open(ctx.logs / "quick-worker.log", "wb")  # noqa: SIM115 - lives as long as the run
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks._child", "--serve"], stdin=subprocess.PIPE,
                                     stdout=self.log, stderr=subprocess.STDOUT, env=ctx.child_env(), cwd=REPO)

    def call(self, name: str, result_path: Path, module: str, func: str, kwargs: dict[str, Any],
             timeout: float) -> dict[str, Any]:
        request = {"result": str(result_path), "module": module, "func": func, "kwargs": kwargs}
        start = time.perf_counter()
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()
        while not result_path.exists():
            if self.proc.poll() is not None or time.perf_counter() - start > timeout:
                raise BenchmarkError(f"{name}: the quick worker died or timed out (log {self.log.name})")
            time.sleep(0.02)
        result = json.loads(result_path.read_text())
        if "error" in result:
            raise BenchmarkError(f"{name} failed:\n{result['error']}")
        result.update(wall_s=time.perf_counter() - start, maxrss_mb=result["self_maxrss_mb"])
        return result

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


_workers: dict[int, _Worker] = {}


def _worker(ctx: Context) -> _Worker:
    if id(ctx) not in _workers:
        _workers[id(ctx)] = _Worker(ctx)
    return _workers[id(ctx)]


def close_workers() -> None:
    """Stop the --quick worker process, if one was started."""
    while _workers:
        _workers.popitem()[1].close()


def free_port() -> int:
    """A TCP port nobody listens on now (for torch.distributed rendezvous beside other users' runs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------- numbers


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def spread(values: list[float]) -> str:
    """'min–max over n' for notes."""
    if not values:
        return "no values"
    return f"{min(values):.4g}–{max(values):.4g} over {len(values)}"


@dataclass
class Row:
    """One line of the results table.

    `ratio` is hubtl/baseline unless `ratio_of` says otherwise; `goal` is (op, value) with op '>=' or
    '<=' applied to the ratio, or None where the issue asks only for the number.
    """

    group: str
    id: str
    item: str
    hubtl: float
    baseline: float
    unit: str
    ratio: float
    goal: tuple[str, float] | None = None
    ratio_of: str = "hubtl / baseline"
    hubtl_label: str = "hubtl"
    baseline_label: str = "hand-written"
    notes: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def met(self) -> bool | None:
        if self.goal is None or not math.isfinite(self.ratio):
            return None
        op, value = self.goal
        return self.ratio >= value if op == ">=" else self.ratio <= value

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["goal"] = None if self.goal is None else {"op": self.goal[0], "value": self.goal[1]}
        data["met"] = self.met
        return data


def failed_row(group: str, id_: str, item: str, unit: str, error: str, goal: tuple[str, float] | None = None) -> Row:
    """A row for a measurement that could not be made (the run goes on with the next one)."""
    nan = float("nan")
    return Row(group, id_, item, nan, nan, unit, nan, goal=goal, error=error, notes="FAILED: see error")


def memory_row(group: str, id_: str, item: str, hubtl: list[dict], baseline: list[dict], key: str = "maxrss_mb",
               what: str = "peak RSS") -> Row:
    """Peak memory of a pair: the largest over each side's subprocesses (no goal; the issue asks for the numbers)."""
    h = max(r[key] for r in hubtl)
    b = max(r[key] for r in baseline)
    return Row(group, id_, f"{what}: {item}", h, b, "MB", h / b if b else float("nan"),
               notes=f"max over {len(hubtl)} hubtl / {len(baseline)} hand-written subprocesses")


def cuda_memory_rows(group: str, id_: str, item: str, hubtl: list[dict], baseline: list[dict]) -> list[Row]:
    """Peak CUDA memory rows, when the subprocesses used the GPU."""
    key = "cuda_max_allocated_mb"
    if all(key in r for r in hubtl + baseline):
        return [memory_row(group, id_ + "_cuda", item, hubtl, baseline, key=key, what="peak CUDA memory")]
    return []


# ---------------------------------------------------------------------------------------------- machine


def _pkg_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine_info(device: str, device_name: str | None) -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, memory, versions, device, load."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": cpu,
        "cores": affinity,
        "memory_gb": mem_gb,
        "device": device,
        "device_name": device_name or cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {n: _pkg_version(n) for n in ("torch", "torchvision", "timm", "transformers", "accelerate",
                                                  "datasets", "hubtl")},
        "load_average_at_start": list(os.getloadavg()),
        "cpu_pressure_at_start": cpu_pressure(),
    }


def cpu_pressure() -> dict[str, float] | None:
    """Linux PSI 'some' CPU pressure (% of time runnable tasks waited for a CPU), 10 s / 60 s / 300 s averages.

    Near 0 on an idle machine; high values mean other processes competed for the cores while we measured.
    """
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    fields = dict(part.split("=") for part in line.split()[1:])
    return {k: float(fields[k]) for k in ("avg10", "avg60", "avg300") if k in fields}


def probe_cuda(asked: bool = False) -> tuple[bool, str | None]:
    """Whether torch sees a GPU here (asked in a subprocess, so the parent stays free of torch).

    Unless the GPU was `asked` for, a machine without /dev/nvidia* is taken as CPU-only without asking torch.
    """
    if not asked and not (Path("/dev/nvidiactl").exists() or any(Path("/dev").glob("nvidia*"))):
        return False, None
    code = "import torch;ok=torch.cuda.is_available();print(ok);print(torch.cuda.get_device_name(0) if ok else '')"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout.split("\n")
    except (OSError, subprocess.TimeoutExpired):
        return False, None
    return out[0].strip() == "True", (out[1].strip() or None) if len(out) > 1 else None
