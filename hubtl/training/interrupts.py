"""Stopping a run cleanly: the first Ctrl-C (or SIGTERM) asks for a checkpoint at the next step, a second stops at once."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class StopRequests:
    """Catches interrupts during the loop and lets every process agree on the step at which to stop."""

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """While inside, the first SIGINT/SIGTERM sets `requested`; a second SIGINT raises KeyboardInterrupt."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:
            if self.requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.requested = True

        for sig in previous:
            signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def agreed(self, accelerator: Any, step: int, every: int = 1) -> bool:
        """Whether any process was asked to stop, through Accelerate's trigger (all processes agree on the step).

        With several processes the check is a host sync, so it runs only every `every` optimizer steps (and
        at epoch starts), the same steps on every process.
        """
        if accelerator.num_processes == 1:
            return self.requested
        if step % every:
            return False
        if self.requested:
            accelerator.set_trigger()
        return accelerator.check_trigger()
