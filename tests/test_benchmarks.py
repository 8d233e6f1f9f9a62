"""Smoke test of `python -m benchmarks`: one cheap item in --quick mode writes the expected JSON and table.

No timing is asserted anywhere: the numbers only have to exist, be finite and be positive.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.mark.skipif(not (SHARED_DATA / "sst2").is_dir() or not (SHARED_DATA / "hymenoptera").is_dir(),
                    reason="needs ../shared/data (sst2, hymenoptera)")
def test_quick_benchmark_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "predict.text", "--device", "cpu",
         "--out", str(out), "--data", str(SHARED_DATA), "--work", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    data = json.loads((out / "results.json").read_text())
    assert {"command", "quick", "device", "duration_s", "machine", "items"} <= set(data)
    assert data["quick"] is True and data["device"] == "cpu"
    assert {"cpu_model", "cores", "device", "versions"} <= set(data["machine"])
    assert data["machine"]["versions"]["torch"]

    (item,) = data["items"]
    assert {"id", "item", "hubtl", "baseline", "unit", "ratio", "goal", "met", "notes"} <= set(item)
    assert item["id"] == "predict_text" and item["unit"] == "inputs/s" and item["error"] is None
    for key in ("hubtl", "baseline", "ratio"):
        assert isinstance(item[key], float) and math.isfinite(item[key]) and item[key] > 0, (key, item[key])
    assert item["goal"] == {"op": ">=", "value": 0.95}
    assert isinstance(item["met"], bool)
    assert item["details"]["max_score_diff"] < 1e-3  # both sides computed the same scores

    table = (out / "results.md").read_text()
    assert "| item | hubtl | baseline | unit | ratio | goal | met? |" in table
    assert "predict on raw strings" in table
