"""Run measured functions in a fresh process.

`python -m benchmarks._child RESULT.json MODULE FUNC KWARGS_JSON` runs one function and exits (the
normal mode: one process per measured side). `python -m benchmarks._child --serve` runs the calls it
reads from stdin, one JSON line each (`{"result": ..., "module": ..., "func": ..., "kwargs": ...}`),
in the same process: `--quick` uses it to skip a Python start per call (its memory numbers are then
cumulative and its timings are only a smoke test).

Each result is the function's JSON-able dict plus the process's peak RSS and, when it used the GPU,
torch's peak CUDA allocation; it is written to RESULT.json (atomically), or `{"error": traceback}`.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import sys
import traceback
from pathlib import Path
from typing import Any


def call(result_path: str, module: str, func: str, kwargs: dict[str, Any]) -> None:
    try:
        fn = getattr(importlib.import_module(module), func)
        profile_dir = os.environ.get("HUBTL_BENCH_PROFILE_DIR")
        if profile_dir:
            import cProfile

            profiler = cProfile.Profile()
            result = profiler.runcall(fn, **kwargs)
            profiler.dump_stats(str(Path(profile_dir) / (Path(result_path).stem + ".prof")))
        else:
            result = fn(**kwargs)
        result["self_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            result["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
            torch.cuda.reset_peak_memory_stats()
    except BaseException:  # noqa: BLE001 - reported to the parent, which records the failure
        result = {"error": traceback.format_exc()}
    tmp = Path(result_path).with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, result_path)


def main() -> int:
    if sys.argv[1:] == ["--serve"]:
        for line in sys.stdin:
            if line.strip():
                request = json.loads(line)
                call(request["result"], request["module"], request["func"], request["kwargs"])
        return 0
    result_path, module, func, kwargs = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    call(result_path, module, func, kwargs)
    return 1 if "error" in json.loads(Path(result_path).read_text()) else 0


if __name__ == "__main__":
    sys.exit(main())
