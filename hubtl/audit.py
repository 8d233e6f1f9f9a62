"""Watching what code does while it runs (files opened, processes started, code run from a folder), through audit hooks.

The conformance kit's load-safety check rebuilds a backbone from its saved spec inside `watch(model_dir)`
and fails the plugin if rebuilding opened a file outside the model directory (library files excepted),
started a process or ran code that lies in the model directory. Python audit hooks cannot be removed once
added, so one hook is installed on first use and does nothing while no watch is active.
"""

from __future__ import annotations

import contextlib
import os
import site
import sys
import sysconfig
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Audit events that start another program.
PROCESS_EVENTS = frozenset(
    {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "pty.spawn"}
)
#: Pseudo-file systems a library may read (CPU counts, /dev/null, random numbers) without it being a leak.
SYSTEM_ROOTS = ("/dev", "/proc", "/sys")

_lock = threading.Lock()
_watches: list[Watch] = []
_state = threading.local()
_installed = False


class Watch:
    """What happened while a `watch()` was active: a list of readable violations."""

    def __init__(self, directory: Path, allowed_roots: tuple[str, ...]) -> None:
        self.directory = str(directory.resolve())
        self.allowed_roots = allowed_roots
        self.violations: list[str] = []

    def inside(self, path: str) -> bool:
        """True when `path` lies in the watched directory."""
        return _under(path, (self.directory,))

    def on_event(self, event: str, args: tuple[Any, ...]) -> None:
        """Record one audit event if it breaks the rules."""
        if event == "open":
            path = args[0]
            if isinstance(path, int):
                return
            resolved = os.path.realpath(os.fsdecode(path))
            if not (self.inside(resolved) or _under(resolved, self.allowed_roots)):
                self.violations.append(f"opened {resolved} (outside the model directory)")
        elif event in PROCESS_EVENTS:
            self.violations.append(f"started a process ({event}: {str(args[:2])[:120]})")
        elif event == "compile" and len(args) > 1 and isinstance(args[1], (str, bytes)):
            filename = os.fsdecode(args[1])
            if not filename.startswith("<") and self.inside(os.path.realpath(filename)):
                self.violations.append(f"compiled code from {filename}")
        elif event == "exec":
            filename = getattr(args[0], "co_filename", "")
            if filename and not filename.startswith("<") and self.inside(os.path.realpath(filename)):
                self.violations.append(f"executed code from {filename}")
        elif event == "import" and len(args) > 2 and isinstance(args[2], list):
            if any(isinstance(p, str) and p and self.inside(os.path.realpath(p)) for p in args[2]):
                self.violations.append(f"imported {args[0]!r} with the model directory on sys.path")
        elif event == "ctypes.dlopen" and args and isinstance(args[0], (str, bytes)):
            if self.inside(os.path.realpath(os.fsdecode(args[0]))):
                self.violations.append(f"loaded a shared library from {os.fsdecode(args[0])}")


@contextlib.contextmanager
def watch(directory: str | os.PathLike) -> Iterator[Watch]:
    """Record file opens outside `directory` and library folders, processes, and code run from `directory`."""
    _install()
    current = Watch(Path(directory), _library_roots())
    with _lock:
        _watches.append(current)
    try:
        yield current
    finally:
        with _lock:
            _watches.remove(current)
        current.violations.extend(_modules_from(current))


def _modules_from(current: Watch) -> list[str]:
    """Modules whose file lies in the watched directory (imported while watched, by whatever route)."""
    found = []
    for name, module in list(sys.modules.items()):
        filename = getattr(module, "__file__", None)
        if isinstance(filename, str) and current.inside(os.path.realpath(filename)):
            found.append(f"imported the module {name!r} from {filename}")
    return found


def _hook(event: str, args: tuple[Any, ...]) -> None:
    """The process-wide audit hook: hands events to the active watches (never re-entered by its own work)."""
    if not _watches or getattr(_state, "busy", False):
        return
    _state.busy = True
    try:
        for current in list(_watches):
            current.on_event(event, args)
    finally:
        _state.busy = False


def _install() -> None:
    """Add the audit hook once per process."""
    global _installed
    with _lock:
        if not _installed:
            sys.addaudithook(_hook)
            _installed = True


def _library_roots() -> tuple[str, ...]:
    """Folders of installed code: the interpreter's, site-packages, and the packages already imported."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, *sysconfig.get_paths().values()}
    with contextlib.suppress(AttributeError):
        roots.update(site.getsitepackages())
        roots.add(site.getusersitepackages())
    for module in list(sys.modules.values()):
        filename = getattr(module, "__file__", None)
        if isinstance(filename, str) and "." not in module.__name__:
            roots.add(os.path.dirname(filename) if filename.endswith("__init__.py") else filename)
    return tuple(sorted(os.path.realpath(r) for r in roots if r)) + SYSTEM_ROOTS


def _under(path: str, roots: tuple[str, ...]) -> bool:
    """True when `path` equals or lies below one of `roots`."""
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)
