"""Writes that say when the disk is full: a full disk while saving becomes a HubtlError naming the place and the bytes."""

from __future__ import annotations

import contextlib
import errno
import inspect
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import HubtlError

#: errno values that mean the filesystem has no room (or the user's quota is used up).
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
#: What torch's zip writer says when a write comes up short; it drops the errno, so free space decides.
SHORT_WRITE_MESSAGES = ("unexpected pos", "file write failed")
_GENERATOR_FLAGS = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


@contextlib.contextmanager
def disk_full_error(what: str, directory: Path, needed: int, advice: str, staging: Path | None = None) -> Iterator[None]:
    """Turn a full disk while writing `what` into `directory` into a HubtlError that says so and gives `advice`;
    `staging` (what the failed write left) is removed on any error."""
    try:
        yield
    except Exception as err:
        full = not isinstance(err, HubtlError) and is_disk_full(err, directory, needed)
        if staging is not None and staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
        elif staging is not None:
            staging.unlink(missing_ok=True)
        if not full:
            raise
        free = free_bytes(directory)
        room = (
            f"needs about {size_text(needed)} but only {size_text(free)} are free there"
            if free < needed
            else f"was refused for lack of space ({size_text(free)} free: a quota or the inodes may be used up)"
        )
        release_frames(err)
        raise HubtlError(f"The disk is full: writing {what} to {directory} {room}. {advice}") from err


def tensor_bytes(*objects: Any) -> int:
    """Bytes of the distinct tensors inside (nested dicts, lists and tuples of) objects."""
    sizes: dict[tuple[int, int], int] = {}
    pending = list(objects)
    while pending:
        item = pending.pop()
        if isinstance(item, torch.Tensor):
            sizes[(item.data_ptr(), item.nbytes)] = item.nbytes
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
    return sum(sizes.values())


def free_bytes(directory: Path) -> int:
    """Free bytes on the filesystem that holds `directory` (or its nearest existing parent)."""
    path = directory.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def is_disk_full(err: BaseException, directory: Path, needed: int) -> bool:
    """Whether `err`, raised while writing about `needed` bytes into `directory`, comes from a full disk."""
    chain, seen, short_write = [err], set(), False
    while chain:
        e = chain.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return True
        # safetensors (Rust) keeps only the text: "I/O error: No space left on device (os error 28)"
        if any(f"(os error {code})" in str(e) for code in DISK_FULL_ERRNOS):
            return True
        short_write |= isinstance(e, RuntimeError) and any(m in str(e) for m in SHORT_WRITE_MESSAGES)
        chain += [e.__cause__, e.__context__]
    try:
        return short_write and free_bytes(directory) < needed
    except OSError:
        return False


def release_frames(err: BaseException) -> None:
    """Drop the locals of the frames a failed write left in `err`'s chain, so files they hold open (torch's
    zip writer keeps its half-written file open) are closed and their space is freed at once."""
    chain, seen = [err], set()
    while chain:
        e = chain.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        tb = e.__traceback__
        while tb is not None:
            # a suspended generator's frame may still be in use: clearing it would close the generator
            if not tb.tb_frame.f_code.co_flags & _GENERATOR_FLAGS:
                with contextlib.suppress(RuntimeError):  # a frame still executing keeps its locals
                    tb.tb_frame.clear()
            tb = tb.tb_next
        chain += [e.__cause__, e.__context__]


def size_text(n: int) -> str:
    """A byte count for people: '4,521,344 bytes (4.3 MiB)'."""
    if n < 1024:
        return f"{n:,} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024:
            break
    return f"{n:,} bytes ({value:.1f} {unit})"
