"""Coordinating a run's processes: work on the main process first, with its failure sent to all the others; the
exit of a command-line run (one error message, from the main process)."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import DataError, HubtlError

T = TypeVar("T")


def main_process_first(accelerator: Any, load: Callable[[], T]) -> T:
    """Run `load` on the main process first (it fills the datasets cache), then on the others.

    Unlike Accelerate's `main_process_first`, a failure on the main process is sent to every process,
    so all of them stop with the one message instead of waiting at a barrier until it times out.
    """
    from accelerate.utils import broadcast_object_list

    if accelerator.num_processes == 1:
        return load()
    result, error = None, None
    if accelerator.is_main_process:
        try:
            result = load()
        except Exception as err:  # sent to the other processes, then raised here unchanged
            error = err
    failure = [f"{type(error).__name__}: {error}" if error is not None else None]
    broadcast_object_list(failure, from_process=0)
    if error is not None:
        raise error
    if failure[0] is not None:
        raise HubtlError(f"The main process failed: {failure[0]}")
    if not accelerator.is_main_process:
        result = load()
    accelerator.wait_for_everyone()
    return result  # type: ignore[return-value]


def error_line(err: BaseException, limit: int = 500) -> str:
    """An exception as one line, its type first, at most `limit` characters (a row's or another process's reason)."""
    return " ".join(f"{type(err).__name__}: {err}".split())[:limit]


def on_every_process(accelerator: Any, step: Callable[[], T]) -> T:
    """Run `step` on each process; when it failed on any, raise on every one (before the next collective call).

    Work each process does alone (its shard of a feature pass) can fail on one process only; the others would then
    wait at the next collective call for a process that has moved on. The failing process raises its own error,
    the others a HubtlError with its reason, ending "(on process i of n)".
    """
    if accelerator.num_processes == 1:
        return step()
    from accelerate.utils import gather_object

    value, error = None, None
    try:
        value = step()
    except Exception as err:  # noqa: BLE001 - raised below on this process, its reason sent to the others
        error = err
    reasons = gather_object([error_line(error, 450) if error is not None else ""])  # room for the process note
    if error is not None:
        raise error
    failed = [i for i, reason in enumerate(reasons) if reason]
    if failed:
        raise HubtlError(f"{reasons[failed[0]]} (on process {failed[0]} of {len(reasons)})")
    return value  # type: ignore[return-value]


def process_slice(count: int, accelerator: Any) -> range:
    """The contiguous share of `count` items this process works on alone (shares concatenate in item order)."""
    world, rank = accelerator.num_processes, accelerator.process_index
    return range(rank * count // world, (rank + 1) * count // world)


def gathered_rows(accelerator: Any, rows: Any) -> Any:
    """Every process's rows (a tensor of this process's share), concatenated in process order, on every process."""
    if accelerator.num_processes == 1:
        return rows
    import torch
    from accelerate.utils import gather_object

    shares = [share for share in gather_object([rows]) if len(share)]  # an empty share has no row shape or dtype
    return torch.cat(shares) if shares else rows


def agree_on_every_process(accelerator: Any, facts: dict[str, Any], what: str, fix: str) -> None:
    """Raise on every process when `facts` (small and comparable) differ between the processes, instead of letting
    them run on with different work and wait for each other forever at a collective call."""
    if accelerator.num_processes == 1:
        return
    from accelerate.utils import gather_object

    seen = gather_object([facts])
    for index, theirs in enumerate(seen):
        differing = [k for k in facts if theirs.get(k) != seen[0].get(k)]
        if differing:
            told = "; ".join(f"{k}: {str(seen[0].get(k))[:150]} on process 0, {str(theirs.get(k))[:150]} on process {index}"
                             for k in differing[:3])  # fmt: skip
            raise DataError(f"The processes do not agree on {what} ({told}). {fix}")


def agree_on_data(accelerator: Any, data: Any) -> None:
    """Every process must have read the same examples: each checks the images itself, and a file changed in between
    (or another copy of the data on another machine) would leave them with splits of other lengths."""
    train = data.train
    facts = {
        "training examples": len(train) if hasattr(train, "__len__") else "streamed",
        "evaluation examples": len(data.eval), "labels": getattr(data, "labels", None),
        "skipped files": sorted(os.path.basename(str(f)) for f in getattr(data, "skipped", [])),
    }  # fmt: skip
    agree_on_every_process(
        accelerator, facts, "the data they read",
        "A file changed while the processes read it, or the machines hold different copies of the data: make it the "
        "same everywhere (remove or fix unreadable files) and run again.",
    )


def is_main_launch_process() -> bool:
    """Whether this is the main process of an `accelerate launch` (or the only process)."""
    return int(os.environ.get("RANK", "0")) == 0


def run_command(body: Callable[[], int]) -> int:
    """Run a command-line entry point (`hubtl.train`, `hubtl.pretrain`, `hubtl.ranking`) and return its exit status.

    Logs go to stderr at INFO unless logging is configured; a HubtlError prints one line, from the main process
    only (exit 2); Ctrl-C before the run could save anything exits 130.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        logging.getLogger("hubtl").setLevel(logging.INFO)
    try:
        return body()
    except HubtlError as err:
        if is_main_launch_process():  # under `accelerate launch`, one message, from the main process
            print(f"hubtl: error: {err}", file=sys.stderr)
            _leave_process_group()
        else:
            # An error every process meets is printed by the main one, and the launcher stops the others as soon as it
            # exits, while they wait here. An error of this process alone (its shard of a stream ran dry, a file of
            # its shard went bad) leaves the main one waiting for it: then the wait ends and this process says why.
            _leave_process_group()
            time.sleep(_QUIET_SECONDS)
            print(f"hubtl: error: {err} (on process {os.environ.get('RANK', '?')} of {os.environ.get('WORLD_SIZE', '?')})",
                  file=sys.stderr)  # fmt: skip
        return 2
    except KeyboardInterrupt:  # before the run started (or a second Ctrl-C while finishing)
        print("hubtl: interrupted.", file=sys.stderr)
        return 130


def close_process_group_at_exit() -> None:
    """Close the process group when this process exits, not when one run ends: the process may run more (`hubtl rank
    --top K --train` fine-tunes K candidates in a row, a script may train twice), and exiting with it open can abort."""
    atexit.unregister(_leave_process_group)  # registered once, however many runs end
    atexit.register(_leave_process_group)


#: how long a process other than the main one waits before printing its own error (the launcher stops it first when
#: the main process failed too)
_QUIET_SECONDS = 10.0


def _leave_process_group() -> None:
    """Close this process's side of the process group before exiting on an error, as `end_training` does on success.

    Exiting with it open can abort in its C++ threads ("terminate called without an active exception", SIGABRT), and
    the launcher then reports that signal instead of the error's exit status.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception as err:  # noqa: BLE001 - tearing down must not hide the error being reported
            logging.getLogger("hubtl").debug("Could not close the process group: %s", err)
