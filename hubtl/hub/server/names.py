"""Repo addresses and the naming rules for repo ids, file paths and branch/tag names (BadRequest otherwise)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from .errors import BadRequest

DEFAULT_USER = "hubtl"
REPO_TYPES = ("model", "dataset", "space")
KINDS = {"models": "model", "datasets": "dataset", "spaces": "space"}  # URL segment -> repo type
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
SHA256_RE = re.compile(r"[0-9a-f]{64}")
FULL_SHA_RE = re.compile(r"[0-9a-f]{40}")
SHORT_SHA_RE = re.compile(r"[0-9a-f]{7,39}")
MAX_REF_LENGTH = 100
_NAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?")
_REF_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+/-]*")
_FORBIDDEN_DIRS = {".git", ".cache"}


@dataclass(frozen=True)
class Repo:
    """A repo address: type, namespace and name."""

    type: str
    namespace: str
    name: str

    @property
    def id(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    @property
    def url_path(self) -> str:
        """The repo's path in web URLs (``datasets/ns/name`` for a dataset)."""
        return URL_PREFIX[self.type] + self.id


def make_repo(repo_type: Any, parts: list[str]) -> Repo:
    """Build a validated repo from ``[name]`` (in DEFAULT_USER's namespace) or ``[namespace, name]``."""
    if len(parts) == 1:
        parts = [DEFAULT_USER, parts[0]]
    if len(parts) != 2:
        raise BadRequest("Repo id must be 'name' or 'namespace/name'")
    namespace, name = check_repo_part(parts[0], "namespace"), check_repo_part(parts[1], "repo name")
    return Repo(check_repo_type(repo_type), namespace, name)


def check_repo_type(repo_type: Any) -> str:
    """Validate a repo type: it becomes a directory name under ``root/repos``."""
    if repo_type not in REPO_TYPES:
        raise BadRequest(f"Invalid repo type: {str(repo_type)[:100]!r} (use one of {', '.join(REPO_TYPES)})")
    return repo_type


def check_repo_part(part: str, what: str) -> str:
    """Validate a namespace or repo name with the Hub's rules."""
    if not _NAME_RE.fullmatch(part) or "--" in part or ".." in part or part.endswith(".git"):
        raise BadRequest(f"Invalid {what}: {part[:200]!r} (use letters, digits, '-', '_', '.'; max 96 chars)")
    return part


def check_file_path(path: Any) -> str:
    """Validate a file path inside a repo: relative, '/'-separated, no '..', no control chars."""
    if not isinstance(path, str) or not path or len(path) > 1000:
        raise BadRequest(f"Invalid file path: {str(path)[:1000]!r}")
    bad_char = any(ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) < 0xE000 for c in path)  # controls, surrogates
    if path.startswith("/") or "\\" in path or bad_char:
        raise BadRequest(f"Invalid file path: {path!r}")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts) or any(p in _FORBIDDEN_DIRS for p in parts[:-1]):
        raise BadRequest(f"Invalid file path: {path!r}")
    return path


def ref_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot name a branch or tag (git's check-ref-format rules, stricter), None if it can."""
    if not isinstance(name, str) or not name:
        return "it is empty"
    if len(name) > MAX_REF_LENGTH or len(quote(name, safe="")) > 255:  # one file name on disk
        return f"it is longer than {MAX_REF_LENGTH} characters"
    if not _REF_RE.fullmatch(name):
        return "use letters, digits and '_ . + / -', starting with a letter, digit or '_'"
    if ".." in name or "//" in name or name.endswith(("/", ".")):
        return "it contains '..' or '//', or ends with '/' or '.'"
    if any(part.startswith(".") or part.endswith(".lock") for part in name.split("/")):
        return "a component starts with '.' or ends with '.lock'"
    if name.startswith("refs/"):
        return "it starts with 'refs/' (give the bare name)"
    if FULL_SHA_RE.fullmatch(name):
        return "it looks like a commit id"
    return None


def check_new_ref(name: Any, what: str) -> str:
    """Validate the name of a branch or tag to create, saying why it is refused."""
    if (problem := ref_name_problem(name)) is not None:
        raise BadRequest(f"Invalid {what} name {str(name)[:120]!r}: {problem}")
    return name
