"""Coordinating a run's processes: work on the main process first, with its failure sent to all the others."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import HubtlError

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
