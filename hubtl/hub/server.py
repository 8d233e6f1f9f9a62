"""A self-hosted, Hub-compatible HTTP server for the unmodified ``huggingface_hub`` client.

It implements the part of the Hugging Face Hub HTTP API that ``huggingface_hub`` uses to
create repos and branches, commit files (inline and through the LFS "basic" transfer), read
repo info and trees, and download files (``hf_hub_download`` / ``snapshot_download``).

Storage (everything under ``root``, surviving restarts, written atomically)::

    blobs/<sha256[:2]>/<sha256>               file contents, content-addressed
    repos/<type>s/<namespace>/<name>/
        meta.json                             visibility and creation date
        commits/<sha1>.json                   immutable commits (parent, full tree, message...)
        refs/heads/<quoted branch>            branch -> commit id
        refs/tags/<quoted tag>                tag -> commit id
    tmp/                                      temporary files, renamed into place

Pointing a client at the server (``serve`` prints the same hints):

* another process: set ``HF_ENDPOINT=http://HOST:PORT`` and ``HF_HUB_DISABLE_XET=1`` in its
  environment before it imports ``huggingface_hub``;
* this process: wrap the calls in ``with use_endpoint(url):`` (patches the constants that
  ``huggingface_hub`` computed at import time), or pass ``endpoint=url`` to ``HfApi``,
  ``hf_hub_download`` and ``snapshot_download`` *and* disable Xet yourself.

Xet must be disabled on the client for uploads: when the ``hf_xet`` package is installed the
client uploads every LFS file through Xet storage, whatever the server answers, and this
server does not speak the Xet protocol (it answers the Xet token routes with a 501 that says
so). Downloads never use Xet here: the server sends no Xet headers.

Auth: with a ``token``, every write (create/delete repo, preupload, commit, LFS batch, branch,
tag) needs ``Authorization: Bearer <token>``; reads of private repos need it too (without it a
private repo answers 404, like a missing one), LFS verify included. Without a token the server is
open. ``/api/validate-yaml`` stays open, as on the Hub: the client's ``RepoCard.validate`` (called
by ``ModelCard.push_to_hub``) sends no token.

Hostile input: authentication and authorisation come before any request body is read; JSON
bodies are capped at 16 MiB, commit NDJSON is streamed line by line (16 MiB per line), LFS uploads
at the size the batch call declared; every body is validated by shape (pydantic), so malformed
input answers 400 with ``X-Error-Message``; YAML is parsed with a loader that refuses alias bombs.

Bare repo ids (``name``) are aliases of ``<DEFAULT_USER>/name``, the namespace a repo created
without an organization gets (the Hub does the same with the user's namespace).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fnmatch
import hashlib
import hmac
import json
import math
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote, unquote, urlsplit

import yaml
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from huggingface_hub.repocard import REGEX_YAML_BLOCK
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

try:  # cross-process lock on POSIX; a thread lock is used everywhere
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["DEFAULT_USER", "create_app", "running_server", "serve", "use_endpoint"]

DEFAULT_USER = "hubtl"
DEFAULT_BRANCH = "main"
LFS_SIZE_THRESHOLD = 1024 * 1024  # files above 1 MiB are uploaded through LFS
_UPLOAD_URL_TTL_S = 3600
_MAX_JSON_BODY = 16 * 1024 * 1024  # any JSON request body
_MAX_COMMIT_LINE = 16 * 1024 * 1024  # one NDJSON line of a commit (inline files are base64 in it)
_MAX_COMMIT_OPERATIONS = 100_000
_MAX_LIST_ITEMS = 10_000  # files of a preupload call, paths of a paths-info call (the client sends <= 500)
_MAX_REF_LENGTH = 100
_MAX_FRONT_MATTER = 1024 * 1024
_YAML_MAX_ALIASES = 100  # alias events in one YAML document
_YAML_MAX_ALIAS_NODES = 10_000  # nodes that aliases may add once expanded
_YAML_MAX_DEPTH = 64
_YAML_CONCURRENCY = 2  # YAML validations running at once (the route needs no token)
_TMP_MAX_AGE_S = 3600  # leftovers of crashed requests in root/tmp older than this are removed at start-up
_REPO_TYPES = ("model", "dataset", "space")
_KINDS = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_NAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?")
_REF_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+/-]*")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_FULL_SHA_RE = re.compile(r"[0-9a-f]{40}")
_SHORT_SHA_RE = re.compile(r"[0-9a-f]{7,39}")
_FORBIDDEN_DIRS = {".git", ".cache"}
_API_ACTIONS = {
    "revision", "tree", "refs", "commits", "paths-info", "preupload", "commit",
    "branch", "tag", "xet-write-token", "xet-read-token",
}  # fmt: skip
_LFS_PATTERNS = (
    "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.lfs.* *.mlmodel *.model *.msgpack"
    " *.npy *.npz *.onnx *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors"
    " saved_model/**/* *.tar.* *.tar *.tflite *.tgz *.wasm *.xz *.zip *.zst *tfevents*"
).split()
_DEFAULT_GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in _LFS_PATTERNS).encode()


# --------------------------------------------------------------------------- errors


class _HubHTTPError(Exception):
    """An error answered as Hub-style JSON, with the X-Error-Code the client keys on."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, dict(headers or {})


def _bad_request(message: str) -> _HubHTTPError:
    """A 400 for invalid input."""
    return _HubHTTPError(400, message)


def _repo_not_found(repo_id: str) -> _HubHTTPError:
    """A 404 that the client turns into RepositoryNotFoundError."""
    return _HubHTTPError(404, f"Repository not found: {repo_id}", "RepoNotFound")


def _revision_not_found(revision: str) -> _HubHTTPError:
    """A 404 that the client turns into RevisionNotFoundError."""
    return _HubHTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


def _entry_not_found(path: str, commit: str | None = None) -> _HubHTTPError:
    """A 404 that the client turns into (Remote)EntryNotFoundError."""
    headers = {"X-Repo-Commit": commit} if commit else {}
    return _HubHTTPError(404, f"Entry not found: {path}", "EntryNotFound", headers)


def _too_large(limit: int, what: str = "Request body") -> _HubHTTPError:
    """A 413 for a body (or body line) above its limit."""
    return _HubHTTPError(413, f"{what} larger than {limit} bytes: send less per request")


def _invalid_body(exc: ValidationError, what: str = "request body") -> _HubHTTPError:
    """A 400 naming the fields of a body that do not have the expected shape."""
    problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors()[:5])
    return _bad_request(f"Invalid {what}: {problems}")


def _header_value(message: str) -> str:
    """``message`` as a safe HTTP header value: ASCII with escapes, at most 1000 characters."""
    return message.encode("unicode_escape").decode("ascii")[:1000].strip()


class _HubJSONResponse(JSONResponse):
    """JSON with non-ASCII characters escaped, so that any string (even a lone surrogate) renders."""

    def render(self, content: Any) -> bytes:
        """Serialise ``content`` as ASCII JSON."""
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _error_response(status: int, message: str, code: str | None = None, headers: dict | None = None) -> JSONResponse:
    """Render an error as ``{"error": message}`` with X-Error-Message (and X-Error-Code if given)."""
    out = {"X-Error-Message": _header_value(message), **(headers or {})}
    if code:
        out["X-Error-Code"] = code
    return _HubJSONResponse({"error": message}, status_code=status, headers=out)


# --------------------------------------------------------------------------- validation


def _check_repo_type(repo_type: Any) -> str:
    """Validate a repo type (400 otherwise): it becomes a directory name under ``root/repos``."""
    if repo_type not in _REPO_TYPES:
        raise _bad_request(f"Invalid repo type: {str(repo_type)[:100]!r} (use one of {', '.join(_REPO_TYPES)})")
    return repo_type


def _check_repo_part(part: str, what: str) -> str:
    """Validate a namespace or repo name with the Hub's rules (400 otherwise)."""
    if not _NAME_RE.fullmatch(part) or "--" in part or ".." in part or part.endswith(".git"):
        raise _bad_request(f"Invalid {what}: {part[:200]!r} (use letters, digits, '-', '_', '.'; max 96 chars)")
    return part


def _check_file_path(path: Any) -> str:
    """Validate a file path inside a repo: relative, '/'-separated, no '..', no control chars."""
    if not isinstance(path, str) or not path or len(path) > 1000:
        raise _bad_request(f"Invalid file path: {str(path)[:1000]!r}")
    bad_char = any(ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) < 0xE000 for c in path)  # controls, surrogates
    if path.startswith("/") or "\\" in path or bad_char:
        raise _bad_request(f"Invalid file path: {path!r}")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts) or any(p in _FORBIDDEN_DIRS for p in parts[:-1]):
        raise _bad_request(f"Invalid file path: {path!r}")
    return path


def _ref_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot name a branch or tag (git's check-ref-format rules, stricter), None if it can."""
    if not isinstance(name, str) or not name:
        return "it is empty"
    if len(name) > _MAX_REF_LENGTH or len(quote(name, safe="")) > 255:  # one file name on disk
        return f"it is longer than {_MAX_REF_LENGTH} characters"
    if not _REF_RE.fullmatch(name):
        return "use letters, digits and '_ . + / -', starting with a letter, digit or '_'"
    if ".." in name or "//" in name or name.endswith(("/", ".")):
        return "it contains '..' or '//', or ends with '/' or '.'"
    if any(part.startswith(".") or part.endswith(".lock") for part in name.split("/")):
        return "a component starts with '.' or ends with '.lock'"
    if name.startswith("refs/"):
        return "it starts with 'refs/' (give the bare name)"
    if _FULL_SHA_RE.fullmatch(name):
        return "it looks like a commit id"
    return None


def _is_ref_name(name: Any) -> bool:
    """Whether ``name`` is an acceptable branch or tag name."""
    return _ref_name_problem(name) is None


def _check_new_ref(name: Any, what: str) -> str:
    """Validate the name of a branch or tag to create (400 saying why otherwise)."""
    if (problem := _ref_name_problem(name)) is not None:
        raise _bad_request(f"Invalid {what} name {str(name)[:120]!r}: {problem}")
    return name


def _decode_segments(raw_path: bytes) -> list[str]:
    """Split a raw request path on '/' and percent-decode each segment (400 on bad encoding)."""
    try:
        return [unquote(seg, errors="strict") for seg in raw_path.decode("ascii").split("/")]
    except (UnicodeDecodeError, UnicodeEncodeError) as exc:
        raise _bad_request("Invalid URL encoding") from exc


def _unsafe_segment(segment: str) -> bool:
    """Whether a decoded URL segment could escape a directory ('..', '.', backslash, NUL...)."""
    if "\\" in segment or any(ord(c) < 32 for c in segment):
        return True
    return any(part in (".", "..") for part in segment.split("/"))


class _PathGuard:
    """ASGI middleware rejecting any request whose path has '..'/'.' segments, backslashes or NULs."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Answer 400 for unsafe paths, pass everything else through."""
        if scope["type"] == "http":
            raw = scope.get("raw_path") or scope["path"].encode("utf-8")
            try:
                unsafe = any(_unsafe_segment(s) for s in _decode_segments(raw.split(b"?", 1)[0]))
            except _HubHTTPError:
                unsafe = True
            if unsafe:
                await _error_response(400, "Invalid path in URL")(scope, receive, send)
                return
        await self.app(scope, receive, send)


# --------------------------------------------------------------------------- storage helpers


def _now_iso() -> str:
    """Current UTC time in the Hub's date format."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file standing for an LFS object."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, no spaces)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class _InvalidYaml(ValueError):
    """YAML that is malformed, or refused as an alias bomb."""


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: ~10x faster


def _check_yaml_events(text: str) -> None:
    """Refuse recursive aliases, aliases that expand beyond a small budget and deep nesting (from parse events)."""
    sizes: dict[str, int] = {}  # anchor -> how many nodes it stands for, aliases below it expanded
    open_nodes: list[list] = []  # [anchor, size so far] of each collection being parsed
    aliases = alias_nodes = 0
    for event in yaml.parse(text, Loader=_YAML_LOADER):
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in sizes:
                raise _InvalidYaml(f"alias *{event.anchor} refers to an unknown or enclosing anchor")
            size = sizes[event.anchor]
            aliases, alias_nodes = aliases + 1, alias_nodes + size
            if aliases > _YAML_MAX_ALIASES or alias_nodes > _YAML_MAX_ALIAS_NODES:
                raise _InvalidYaml(
                    f"YAML aliases expand beyond {_YAML_MAX_ALIASES} aliases or {_YAML_MAX_ALIAS_NODES} nodes"
                )
        elif isinstance(event, yaml.CollectionStartEvent):
            if len(open_nodes) >= _YAML_MAX_DEPTH:
                raise _InvalidYaml(f"YAML nested deeper than {_YAML_MAX_DEPTH} levels")
            open_nodes.append([event.anchor, 1])
            continue
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, size = open_nodes.pop()
            if anchor is not None:
                sizes[anchor] = size
        elif isinstance(event, yaml.ScalarEvent):
            size = 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        else:  # stream and document start/end
            continue
        if open_nodes:
            open_nodes[-1][1] += size


def _load_yaml(text: str) -> Any:
    """Parse one YAML document safely, refusing alias bombs (raises _InvalidYaml)."""
    try:
        _check_yaml_events(text)
        return yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    except Exception as exc:  # PyYAML's constructors raise ValueError, AttributeError... on odd tagged scalars
        raise _InvalidYaml(str(exc)) from exc


def _jsonable(value: Any) -> Any:
    """YAML data as JSON values: dates, binary and non-finite numbers become strings, sets lists."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else _json_key(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    return str(value)


def _json_key(key: Any) -> str:
    """A non-string mapping key as ``json.dumps`` would write it (``null``, ``true``, ``1``), else ``str``."""
    return json.dumps(key) if key is None or isinstance(key, (bool, int, float)) else str(key)


def _front_matter(text: str) -> dict | None:
    """The YAML front matter of a README (None when absent); raises _InvalidYaml when invalid or too large."""
    # huggingface_hub.repocard's block syntax; its RepoCard/metadata_load call yaml.safe_load with no way to
    # pass a loader, so the block is parsed here with the bounded loader
    match = REGEX_YAML_BLOCK.search(text)
    if not match:
        return None
    if len(match.group(2)) > _MAX_FRONT_MATTER:
        raise _InvalidYaml(f"front matter larger than {_MAX_FRONT_MATTER} characters")
    data = _load_yaml(match.group(2))
    return _jsonable(data) if isinstance(data, dict) else None


def _lfs_patterns(gitattributes: bytes | None) -> list[str]:
    """Patterns marked ``filter=lfs`` in a .gitattributes file."""
    text = (gitattributes or b"").decode("utf-8", errors="replace")
    return [line.split()[0] for line in text.splitlines() if "filter=lfs" in line.split()[1:]]


def _matches_lfs(path: str, patterns: list[str]) -> bool:
    """Whether a path matches one of the LFS patterns (basename for patterns without '/')."""
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(path if "/" in p else name, p) for p in patterns)


@dataclass(frozen=True)
class _Repo:
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
        return _URL_PREFIX[self.type] + self.id


def _make_repo(repo_type: str, parts: list[str]) -> _Repo:
    """Build a validated repo from ``[name]`` or ``[namespace, name]``."""
    if len(parts) == 1:
        parts = [DEFAULT_USER, parts[0]]
    if len(parts) != 2:
        raise _bad_request("Repo id must be 'name' or 'namespace/name'")
    namespace, name = _check_repo_part(parts[0], "namespace"), _check_repo_part(parts[1], "repo name")
    return _Repo(_check_repo_type(repo_type), namespace, name)


class _Store:
    """Repos, immutable commits, refs and content-addressed blobs on disk under one root."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        for sub in ("blobs", "repos", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._thread_lock = threading.Lock()
        self.remove_stale_tmp()

    def remove_stale_tmp(self, max_age_s: float = _TMP_MAX_AGE_S) -> None:
        """Remove what crashed requests left in ``tmp/`` (partial uploads, staging folders) older than ``max_age_s``."""
        cutoff = time.time() - max_age_s
        for entry in (self.root / "tmp").iterdir():
            try:
                if entry.lstat().st_mtime >= cutoff:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
            except OSError:  # removed meanwhile by another process sharing the root
                pass

    # -- low level

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        """Serialise writers in this process and, on POSIX, across processes sharing the root."""
        with self._thread_lock, open(self.root / ".lock", "a+b") as fh:
            if fcntl is not None:
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(fh, fcntl.LOCK_UN)

    def tmp_file(self) -> Path:
        """A fresh temporary path on the same filesystem as the store."""
        return self.root / "tmp" / f"{uuid.uuid4().hex}.tmp"

    def atomic_write(self, path: Path, data: bytes) -> None:
        """Write a file so that readers see either the old or the complete new content."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.tmp_file()
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    # -- blobs

    def blob_path(self, sha256: str) -> Path:
        """Where the blob with this sha256 lives."""
        return self.root / "blobs" / sha256[:2] / sha256

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        """Whether the blob is stored (with this size, if given)."""
        path = self.blob_path(sha256)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def put_bytes(self, data: bytes) -> str:
        """Store content, return its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        if not self.has_blob(sha, len(data)):
            self.atomic_write(self.blob_path(sha), data)
        return sha

    def install_blob(self, tmp: Path, sha256: str) -> None:
        """Move a fully written and verified temporary file into the blob store."""
        dest = self.blob_path(sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)

    def read_blob(self, sha256: str) -> bytes:
        """Read a blob's content."""
        return self.blob_path(sha256).read_bytes()

    # -- repos

    def repo_dir(self, repo: _Repo) -> Path:
        """The repo's directory."""
        return self.root / "repos" / f"{repo.type}s" / repo.namespace / repo.name

    def repo_meta(self, repo: _Repo) -> dict | None:
        """The repo's metadata, or None when it does not exist."""
        try:
            return json.loads((self.repo_dir(repo) / "meta.json").read_text())
        except FileNotFoundError:
            return None

    def iter_repos(self, repo_type: str) -> Iterator[tuple[_Repo, dict]]:
        """All repos of one type with their metadata."""
        base = self.root / "repos" / f"{repo_type}s"
        for meta_file in sorted(base.glob("*/*/meta.json")):
            repo = _Repo(repo_type, meta_file.parent.parent.name, meta_file.parent.name)
            meta = self.repo_meta(repo)
            if meta is not None:
                yield repo, meta

    def create_repo(self, repo: _Repo, private: bool, author: str) -> bool:
        """Create a repo with an initial commit on main; False if it already exists."""
        with self.write_lock():
            target = self.repo_dir(repo)
            if target.exists():
                return False
            staging = self.root / "tmp" / f"{uuid.uuid4().hex}.repo"
            staging.mkdir()
            (staging / "meta.json").write_text(json.dumps({"private": private, "createdAt": _now_iso()}))
            tree = {".gitattributes": self._regular_entry(_DEFAULT_GITATTRIBUTES)}
            commit_id, payload = self._build_commit(None, tree, "initial commit", "", author)
            (staging / "commits").mkdir()
            (staging / "commits" / f"{commit_id}.json").write_bytes(payload)
            (staging / "refs" / "heads").mkdir(parents=True)
            (staging / "refs" / "heads" / DEFAULT_BRANCH).write_text(commit_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, target)  # the repo appears complete or not at all
            return True

    def delete_repo(self, repo: _Repo) -> bool:
        """Delete a repo (blobs stay); False if it does not exist."""
        with self.write_lock():
            target = self.repo_dir(repo)
            if not target.exists():
                return False
            trash = self.root / "tmp" / f"{uuid.uuid4().hex}.deleted"
            os.rename(target, trash)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    # -- refs

    def _ref_file(self, repo: _Repo, kind: str, name: str) -> Path | None:
        """The file holding a ref, or None for names that cannot be refs."""
        if not _is_ref_name(name):
            return None
        return self.repo_dir(repo) / "refs" / kind / quote(name, safe="")

    def get_ref(self, repo: _Repo, kind: str, name: str) -> str | None:
        """The commit a branch ('heads') or tag ('tags') points to, or None."""
        path = self._ref_file(repo, kind, name)
        try:
            return path.read_text().strip() if path is not None else None
        except (FileNotFoundError, NotADirectoryError):
            return None

    def set_ref(self, repo: _Repo, kind: str, name: str, commit_id: str) -> None:
        """Point a ref at a commit (atomically)."""
        path = self._ref_file(repo, kind, name)
        if path is None:
            _check_new_ref(name, "branch" if kind == "heads" else "tag")
        self.atomic_write(path, commit_id.encode())

    def delete_ref(self, repo: _Repo, kind: str, name: str) -> bool:
        """Remove a ref; False if it did not exist."""
        path = self._ref_file(repo, kind, name)
        if path is None or not path.is_file():
            return False
        path.unlink()
        return True

    def list_refs(self, repo: _Repo, kind: str) -> list[tuple[str, str]]:
        """All (name, commit) pairs of one ref kind, sorted by name."""
        base = self.repo_dir(repo) / "refs" / kind
        files = sorted(base.iterdir()) if base.is_dir() else []
        return [(unquote(f.name), f.read_text().strip()) for f in files]

    # -- commits

    def get_commit(self, repo: _Repo, commit_id: str) -> dict | None:
        """A commit's content, or None."""
        if not _FULL_SHA_RE.fullmatch(commit_id):
            return None
        try:
            return json.loads((self.repo_dir(repo) / "commits" / f"{commit_id}.json").read_bytes())
        except FileNotFoundError:
            return None

    def resolve(self, repo: _Repo, revision: str) -> str:
        """Turn a branch, tag, full or short commit id into a commit id (404 RevisionNotFound)."""
        for kind in ("heads", "tags"):
            name = revision.removeprefix(f"refs/{kind}/")
            if (commit_id := self.get_ref(repo, kind, name)) is not None:
                return commit_id
        rev = revision.lower()
        if _FULL_SHA_RE.fullmatch(rev) and self.get_commit(repo, rev) is not None:
            return rev
        if _SHORT_SHA_RE.fullmatch(rev):
            matches = list((self.repo_dir(repo) / "commits").glob(f"{rev}*.json"))
            if len(matches) == 1:
                return matches[0].stem
        raise _revision_not_found(revision)

    def _regular_entry(self, data: bytes) -> dict:
        """Store inline content and describe it as a regular (non-LFS) tree entry."""
        return {"sha256": self.put_bytes(data), "size": len(data), "lfs": False, "blobId": _git_blob_sha1(data)}

    def _lfs_entry(self, sha256: str, size: int) -> dict:
        """Describe an already stored blob as an LFS tree entry."""
        return {"sha256": sha256, "size": size, "lfs": True, "blobId": _git_blob_sha1(_lfs_pointer(sha256, size))}

    @staticmethod
    def _build_commit(parent: str | None, tree: dict, title: str, message: str, author: str) -> tuple[str, bytes]:
        """Serialise a commit; its id is the sha1 of that serialisation."""
        record = {"parent": parent, "tree": tree, "title": title, "message": message,
                  "author": author, "date": _now_iso()}  # fmt: skip
        payload = _canonical_json(record)
        return hashlib.sha1(payload).hexdigest(), payload

    def commit(self, repo: _Repo, branch: str, ops: list[dict], header: dict, author: str) -> str:
        """Apply prepared operations on top of a branch head as one new commit; return its id."""
        with self.write_lock():
            head = self.get_ref(repo, "heads", branch)
            if head is None:
                raise _revision_not_found(branch)
            parent = header.get("parentCommit")
            if parent and not head.startswith(str(parent).lower()):
                raise _HubHTTPError(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(self.get_commit(repo, head)["tree"])
            for op in ops:
                _apply_operation(tree, op)
            _check_no_file_dir_clash(tree)
            commit_id, payload = self._build_commit(
                head, tree, str(header.get("summary") or ""), str(header.get("description") or ""), author
            )
            self.atomic_write(self.repo_dir(repo) / "commits" / f"{commit_id}.json", payload)
            self.set_ref(repo, "heads", branch, commit_id)
            return commit_id


def _apply_operation(tree: dict, op: dict) -> None:
    """Apply one prepared add/delete operation to a tree (404 EntryNotFound for missing deletes)."""
    path = op["path"]
    if op["kind"] == "add":
        tree[path] = op["entry"]
    elif op["kind"] == "deletedFile":
        if tree.pop(path, None) is None:
            raise _entry_not_found(f"{path} (A file with this name doesn't exist)")
    else:  # deletedFolder
        doomed = [p for p in tree if p.startswith(path.rstrip("/") + "/")]
        if not doomed:
            raise _entry_not_found(f"{path} (A folder with this name doesn't exist)")
        for p in doomed:
            del tree[p]


def _check_no_file_dir_clash(tree: dict) -> None:
    """Refuse trees where a path is both a file and a folder."""
    for path in tree:
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in tree:
                raise _bad_request(f"'{'/'.join(parts[:i])}' is a file, cannot add '{path}'")


# --------------------------------------------------------------------------- request bodies

_M = TypeVar("_M", bound=BaseModel)


class _Body(BaseModel):
    """A request body: fields the server does not use are ignored, like on the Hub."""

    model_config = ConfigDict(extra="ignore")


class _CreateRepoBody(_Body):
    name: str
    organization: str | None = None
    type: Literal["model", "dataset", "space"] | None = None
    private: bool | None = None
    visibility: str | None = None


class _DeleteRepoBody(_Body):
    name: str
    organization: str | None = None
    type: Literal["model", "dataset", "space"] | None = None


class _ValidateYamlBody(_Body):
    content: str = ""
    repoType: str | None = None


class _LfsObject(_Body):
    oid: str
    size: int


class _LfsBatchBody(_Body):
    operation: str = "upload"
    transfers: list[str] | None = None
    objects: list[_LfsObject] = Field(default_factory=list, max_length=_MAX_LIST_ITEMS)
    hash_algo: str = "sha256"


class _LfsVerifyBody(_Body):
    oid: str
    size: int | None = None


class _PreuploadFile(_Body):
    path: str
    size: int = Field(0, ge=0)
    sample: str = ""


class _PreuploadBody(_Body):
    files: list[_PreuploadFile] = Field(default_factory=list, max_length=_MAX_LIST_ITEMS)


class _PathsInfoBody(_Body):
    paths: Annotated[list[str], Field(max_length=_MAX_LIST_ITEMS)] | str = Field(default_factory=list)
    expand: bool = False


class _BranchBody(_Body):
    startingPoint: str | None = None


class _TagBody(_Body):
    tag: str
    message: str | None = None


class _CommitHeader(_Body):
    summary: str | None = None
    description: str | None = None
    parentCommit: str | None = None


class _FileValue(_Body):
    path: str
    content: str
    encoding: str = "base64"


class _LfsFileValue(_Body):
    path: str
    algo: str = "sha256"
    oid: str
    size: int | None = None


class _PathValue(_Body):
    path: str


class _HeaderLine(_Body):
    key: Literal["header"]
    value: _CommitHeader


class _FileLine(_Body):
    key: Literal["file"]
    value: _FileValue


class _LfsFileLine(_Body):
    key: Literal["lfsFile"]
    value: _LfsFileValue


class _DeleteLine(_Body):
    key: Literal["deletedFile", "deletedFolder"]
    value: _PathValue


_COMMIT_LINE = TypeAdapter(Annotated[_HeaderLine | _FileLine | _LfsFileLine | _DeleteLine, Field(discriminator="key")])


def _parse_json(model: type[_M], body: bytes) -> _M:
    """Validate a JSON body against its model (400 naming the bad fields); an empty body means ``{}``."""
    try:
        return model.model_validate_json(body if body.strip() else b"{}")
    except ValidationError as exc:
        raise _invalid_body(exc) from None


def _check_declared_length(request: Request, limit: int) -> None:
    """413 right away when the Content-Length header announces more than ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if re.fullmatch(r"[0-9]+", declared) and int(declared) > limit:
        raise _too_large(limit)


def _limited(request: Request, limit: int = _MAX_JSON_BODY) -> Request:
    """The same request, whose body reads (``body()``, ``form()``) fail with a 413 beyond ``limit`` bytes."""
    _check_declared_length(request, limit)
    received = 0

    async def receive() -> dict:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise _too_large(limit)
        return message

    return Request(request.scope, receive)


async def _read_json(request: Request, model: type[_M]) -> _M:
    """Read (at most 16 MiB) and validate a JSON body."""
    return _parse_json(model, await _limited(request).body())


async def _read_paths_info(request: Request) -> _PathsInfoBody:
    """The body of a paths-info call: a form (what ``HfApi.get_paths_info`` sends) or JSON."""
    limited = _limited(request)
    if request.headers.get("content-type", "").startswith("application/json"):
        return _parse_json(_PathsInfoBody, await limited.body())
    form = await limited.form(max_files=0, max_fields=_MAX_LIST_ITEMS + 10)
    try:
        return _PathsInfoBody.model_validate({"paths": form.getlist("paths"), "expand": form.get("expand") or False})
    except ValidationError as exc:
        raise _invalid_body(exc) from None


async def _ndjson_lines(request: Request, max_line: int) -> AsyncIterator[bytes]:
    """The non-blank lines of an NDJSON body as they arrive; a line above ``max_line`` bytes is a 413."""
    pending = bytearray()
    async for chunk in request.stream():
        pending += chunk
        if b"\n" in chunk:
            *lines, rest = bytes(pending).split(b"\n")
            pending = bytearray(rest)
            for line in lines:
                if len(line) > max_line:
                    raise _too_large(max_line, "Commit line")
                if line.strip():
                    yield line
        if len(pending) > max_line:
            raise _too_large(max_line, "Commit line")
    if pending.strip():
        yield bytes(pending)


# --------------------------------------------------------------------------- request helpers


@dataclass
class _Ctx:
    """What a repo API handler needs: store, auth, repo, parsed URL parts, repo metadata and the parsed body."""

    store: _Store
    token: str | None
    request: Request
    repo: _Repo
    args: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    data: Any = None

    @property
    def base_url(self) -> str:
        """The server's base URL as seen by the client."""
        return str(self.request.base_url).rstrip("/")

    @property
    def authorized(self) -> bool:
        """Whether the request carries the server token (always true for an open server)."""
        return _authorized(self.request, self.token)

    @property
    def revision(self) -> str:
        """The revision in the URL (all remaining segments), ``main`` by default."""
        return "/".join(self.args) or DEFAULT_BRANCH


def _authorized(request: Request, token: str | None) -> bool:
    """Whether the request has ``Authorization: Bearer <token>`` (or the server has no token)."""
    if token is None:
        return True
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def _require_write(request: Request, token: str | None) -> None:
    """401 unless the request may write."""
    if _authorized(request, token):
        return
    if request.headers.get("authorization"):
        raise _HubHTTPError(401, "Invalid credentials in Authorization header")
    raise _HubHTTPError(401, "Write access requires a token: send 'Authorization: Bearer <token>'")


def _load_repo(ctx: _Ctx) -> dict:
    """The repo's metadata, checking that it exists and that the caller may read it."""
    meta = ctx.store.repo_meta(ctx.repo)
    if meta is None or (meta.get("private") and not ctx.authorized):
        raise _repo_not_found(ctx.repo.id)
    return meta


def _commit_at(ctx: _Ctx, revision: str) -> tuple[str, dict]:
    """Resolve a revision of the context's repo into (commit id, commit)."""
    commit_id = ctx.store.resolve(ctx.repo, revision)
    commit = ctx.store.get_commit(ctx.repo, commit_id)
    if commit is None:
        raise _revision_not_found(revision)
    return commit_id, commit


def _query_flag(request: Request, name: str) -> bool:
    """Whether a boolean query parameter is set to a true value."""
    return request.query_params.get(name, "").lower() in ("1", "true", "yes")


def _refuse_pull_requests(request: Request) -> None:
    """This server has no pull requests."""
    if _query_flag(request, "create_pr"):
        raise _bad_request("Pull requests are not supported by this server; commit to a branch instead")


def _parse_api_path(segments: list[str]) -> tuple[list[str], str | None, list[str]]:
    """Split ``/api/<kind>/...`` segments into (repo id parts, action, action args)."""
    if len(segments) >= 3 and segments[2] in _API_ACTIONS:
        return segments[:2], segments[2], segments[3:]
    if len(segments) == 2:
        return segments, None, []
    if len(segments) >= 2 and segments[1] in _API_ACTIONS:
        return segments[:1], segments[1], segments[2:]
    if len(segments) == 1:
        return segments, None, []
    raise _HubHTTPError(404, "Not found")


def _split_type_prefix(segments: list[str]) -> tuple[str, list[str]]:
    """Strip a ``datasets``/``spaces``/``models`` URL prefix, returning (repo type, rest)."""
    if segments and segments[0] in _KINDS:
        return _KINDS[segments[0]], segments[1:]
    return "model", segments


# --------------------------------------------------------------------------- repo JSON views


def _card_data(store: _Store, tree: dict) -> dict | None:
    """The YAML front matter of README.md in a tree, if any and valid."""
    entry = tree.get("README.md")
    if entry is None:
        return None
    try:
        return _front_matter(store.read_blob(entry["sha256"]).decode("utf-8", errors="replace"))
    except (_InvalidYaml, OSError):
        return None


def _str_list(value: Any) -> list[str]:
    """A card field that should be a list of strings (a lone string is a one-item list; other shapes are dropped)."""
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value if isinstance(v, (str, int, float))] if isinstance(value, list) else []


def _str_or_none(value: Any) -> str | None:
    """A card field that should be a string (None for other shapes)."""
    return value if isinstance(value, str) else None


def _tags(card: dict | None) -> list[str]:
    """Hub-style tags derived from card data (tags, library, license, datasets)."""
    if not card:
        return []
    tags = _str_list(card.get("tags"))
    if card.get("library_name"):
        tags.append(str(card["library_name"]))
    if card.get("pipeline_tag"):
        tags.append(str(card["pipeline_tag"]))
    if isinstance(card.get("license"), str):
        tags.append(f"license:{card['license']}")
    tags += [f"dataset:{d}" for d in _str_list(card.get("datasets"))]
    return list(dict.fromkeys(tags))


def _sibling(path: str, entry: dict) -> dict:
    """A ``siblings`` item of repo info."""
    out: dict[str, Any] = {"rfilename": path, "size": entry["size"], "blobId": entry["blobId"]}
    if entry["lfs"]:
        pointer_size = len(_lfs_pointer(entry["sha256"], entry["size"]))
        out["lfs"] = {"size": entry["size"], "sha256": entry["sha256"], "pointerSize": pointer_size}
    return out


def _repo_summary(
    store: _Store, repo: _Repo, meta: dict, commit_id: str, commit: dict, *, card: bool, files: bool
) -> dict:
    """The JSON the Hub returns for a repo (repo info, or an item of a repo listing)."""
    card_data = _card_data(store, commit["tree"])
    out: dict[str, Any] = {
        "_id": hashlib.sha1(f"{repo.type}:{repo.id}".encode()).hexdigest()[:24],
        "id": repo.id,
        "author": repo.namespace,
        "sha": commit_id,
        "lastModified": commit["date"],
        "createdAt": meta.get("createdAt"),
        "private": bool(meta.get("private")),
        "gated": False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": _tags(card_data),
    }
    if repo.type == "model":
        out["modelId"] = repo.id
        if card_data:
            out["library_name"] = _str_or_none(card_data.get("library_name"))
            out["pipeline_tag"] = _str_or_none(card_data.get("pipeline_tag"))
    if card and card_data is not None:
        out["cardData"] = card_data
    if files:
        out["siblings"] = [_sibling(p, e) for p, e in sorted(commit["tree"].items())]
    return out


def _dir_oid(tree: dict, prefix: str) -> str:
    """A stable id for a folder: sha1 over the ids of the files below it."""
    lines = "".join(f"{p}\0{e['blobId']}\n" for p, e in sorted(tree.items()) if p.startswith(prefix + "/"))
    return hashlib.sha1(lines.encode()).hexdigest()


def _file_json(path: str, entry: dict) -> dict:
    """A tree/paths-info item for a file."""
    out: dict[str, Any] = {"type": "file", "oid": entry["blobId"], "size": entry["size"], "path": path}
    if entry["lfs"]:
        pointer_size = len(_lfs_pointer(entry["sha256"], entry["size"]))
        out["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": pointer_size}
    return out


def _dir_json(tree: dict, path: str) -> dict:
    """A tree/paths-info item for a folder."""
    return {"type": "directory", "oid": _dir_oid(tree, path), "size": 0, "path": path}


def _folders(tree: dict) -> set[str]:
    """Every folder implied by the file paths of a tree."""
    out = set()
    for path in tree:
        parts = path.split("/")[:-1]
        out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return out


def _last_commits(store: _Store, repo: _Repo, head: str, paths: list[str]) -> dict[str, dict]:
    """For each path, the latest commit (from ``head`` back) that changed it."""
    found: dict[str, dict] = {}
    commit_id, commit = head, store.get_commit(repo, head)
    while commit is not None and len(found) < len(paths):
        parent = store.get_commit(repo, commit["parent"]) if commit["parent"] else None
        old_tree = parent["tree"] if parent else {}
        for path in paths:
            if path in found:
                continue
            now = {p: e for p, e in commit["tree"].items() if p == path or p.startswith(path + "/")}
            before = {p: e for p, e in old_tree.items() if p == path or p.startswith(path + "/")}
            if now != before:
                found[path] = {"id": commit_id, "title": commit["title"], "date": commit["date"]}
        commit_id, commit = commit["parent"], parent
    return found


def _with_last_commits(ctx: _Ctx, head: str, items: list[dict]) -> list[dict]:
    """Add ``lastCommit`` to tree items (the ``expand=True`` view)."""
    info = _last_commits(ctx.store, ctx.repo, head, [item["path"] for item in items])
    for item in items:
        if item["path"] in info:
            item["lastCommit"] = info[item["path"]]
    return items


# --------------------------------------------------------------------------- repo API handlers
# Each runs in a worker thread after the dispatcher checked auth, loaded the repo (ctx.meta) and read
# the body (ctx.data).


def _h_info(ctx: _Ctx) -> dict:
    """GET /api/<kind>/<repo>[/revision/<rev>]: repo info at a revision."""
    commit_id, commit = _commit_at(ctx, ctx.revision)
    return _repo_summary(ctx.store, ctx.repo, ctx.meta, commit_id, commit, card=True, files=True)


def _h_tree(ctx: _Ctx) -> list[dict]:
    """GET /api/<kind>/<repo>/tree/<rev>[/<path>]: list files and folders."""
    revision = ctx.args[0] if ctx.args else DEFAULT_BRANCH
    prefix = "/".join(ctx.args[1:]).strip("/")
    commit_id, commit = _commit_at(ctx, revision)
    tree, folders = commit["tree"], _folders(commit["tree"])
    if prefix and prefix in tree:
        items = [_file_json(prefix, tree[prefix])]
    elif prefix and prefix not in folders:
        raise _entry_not_found(prefix, commit_id)
    else:
        recursive = _query_flag(ctx.request, "recursive")
        start = prefix + "/" if prefix else ""

        def wanted(path: str) -> bool:
            return path.startswith(start) and (recursive or "/" not in path[len(start) :])

        items = [_dir_json(tree, p) for p in sorted(folders) if wanted(p)]
        items += [_file_json(p, e) for p, e in sorted(tree.items()) if wanted(p)]
    return _with_last_commits(ctx, commit_id, items) if _query_flag(ctx.request, "expand") else items


def _h_paths_info(ctx: _Ctx) -> list[dict]:
    """POST /api/<kind>/<repo>/paths-info/<rev>: info about the given paths that exist."""
    body: _PathsInfoBody = ctx.data
    commit_id, commit = _commit_at(ctx, ctx.revision)
    tree, folders = commit["tree"], _folders(commit["tree"])
    items = []
    for path in (p.strip("/") for p in ([body.paths] if isinstance(body.paths, str) else body.paths)):
        if path in tree:
            items.append(_file_json(path, tree[path]))
        elif path in folders:
            items.append(_dir_json(tree, path))
    return _with_last_commits(ctx, commit_id, items) if body.expand else items


def _h_refs(ctx: _Ctx) -> dict:
    """GET /api/<kind>/<repo>/refs: branches and tags."""

    def refs(kind: str, prefix: str) -> list[dict]:
        return [{"name": n, "ref": f"{prefix}{n}", "targetCommit": c} for n, c in ctx.store.list_refs(ctx.repo, kind)]

    return {"branches": refs("heads", "refs/heads/"), "converts": [], "tags": refs("tags", "refs/tags/"),
            "pullRequests": []}  # fmt: skip


def _h_commits(ctx: _Ctx) -> list[dict]:
    """GET /api/<kind>/<repo>/commits/<rev>: history from a revision back to the first commit."""
    commit_id, commit = _commit_at(ctx, ctx.revision)
    out = []
    while commit is not None:
        out.append({"id": commit_id, "title": commit["title"], "message": commit["message"],
                    "date": commit["date"], "authors": [{"user": commit["author"]}]})  # fmt: skip
        commit_id = commit["parent"]
        commit = ctx.store.get_commit(ctx.repo, commit_id) if commit_id else None
    return out


def _h_preupload(ctx: _Ctx) -> dict:
    """POST /api/<kind>/<repo>/preupload/<rev>: decide regular vs LFS upload for each file."""
    body: _PreuploadBody = ctx.data
    _, commit = _commit_at(ctx, ctx.revision)
    tree = commit["tree"]
    attributes = tree.get(".gitattributes")
    patterns = _lfs_patterns(ctx.store.read_blob(attributes["sha256"]) if attributes else None)
    files = []
    for item in body.files:
        path = _check_file_path(item.path)
        mode = _upload_mode(path, item.size, item.sample, patterns)
        existing = tree.get(path)
        oid = (existing["sha256"] if existing["lfs"] else existing["blobId"]) if existing else None
        files.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
    return {"files": files, "commitOid": None}


def _upload_mode(path: str, size: int, sample_b64: str, lfs_patterns: list[str]) -> str:
    """LFS for big files, binary-looking files and paths matching .gitattributes LFS patterns."""
    try:
        sample = base64.b64decode(sample_b64)
    except ValueError:
        sample = b""
    if size > LFS_SIZE_THRESHOLD or b"\0" in sample or _matches_lfs(path, lfs_patterns):
        return "lfs"
    return "regular"


async def _read_commit(store: _Store, request: Request) -> tuple[dict, list[dict]]:
    """Stream a commit's NDJSON payload into (header, operations), storing inline file contents as they come."""
    header, ops = _CommitHeader(), []
    async for line in _ndjson_lines(request, _MAX_COMMIT_LINE):
        try:
            item = _COMMIT_LINE.validate_json(line)
        except ValidationError as exc:
            raise _invalid_body(exc, "commit line") from None
        if isinstance(item, _HeaderLine):
            header = item.value
            continue
        if len(ops) >= _MAX_COMMIT_OPERATIONS:
            raise _bad_request(f"More than {_MAX_COMMIT_OPERATIONS} operations in one commit: split it into several")
        ops.append(await run_in_threadpool(_prepare_operation, store, item))
    if not ops:
        raise _bad_request("Empty commit: no operations")
    return header.model_dump(), ops


def _prepare_operation(store: _Store, item: _FileLine | _LfsFileLine | _DeleteLine) -> dict:
    """One validated commit line as an operation for ``_Store.commit`` (inline content is stored now)."""
    if isinstance(item, _FileLine):
        path = _check_file_path(item.value.path)
        return {"kind": "add", "path": path, "entry": store._regular_entry(_inline_content(item.value))}
    if isinstance(item, _LfsFileLine):
        path = _check_file_path(item.value.path)
        return {"kind": "add", "path": path, "entry": _lfs_operation_entry(store, item.value)}
    path = item.value.path.rstrip("/") if item.key == "deletedFolder" else item.value.path
    return {"kind": item.key, "path": _check_file_path(path)}


def _inline_content(value: _FileValue) -> bytes:
    """Decode the content of a ``file`` commit line (base64, or plain text)."""
    if value.encoding != "base64":
        return value.content.encode("utf-8")
    try:
        return base64.b64decode(value.content, validate=True)
    except ValueError as exc:
        raise _bad_request(f"Invalid base64 content for {value.path!r}") from exc


def _lfs_operation_entry(store: _Store, value: _LfsFileValue) -> dict:
    """The tree entry for an ``lfsFile`` commit line, checking that the object was uploaded."""
    oid = value.oid.lower()
    if value.algo != "sha256" or not _SHA256_RE.fullmatch(oid):
        raise _bad_request(f"Invalid LFS oid for {value.path!r}")
    if not store.has_blob(oid, value.size):
        raise _bad_request(f"LFS object {oid} for {value.path!r} was not uploaded (or has another size)")
    return store._lfs_entry(oid, store.blob_path(oid).stat().st_size)


def _h_commit(ctx: _Ctx) -> dict:
    """POST /api/<kind>/<repo>/commit/<branch>: create a commit from the streamed NDJSON payload."""
    header, ops = ctx.data
    commit_id = ctx.store.commit(ctx.repo, ctx.revision, ops, header, DEFAULT_USER)
    return {"success": True, "commitOid": commit_id, "pullRequestUrl": None,
            "commitUrl": f"{ctx.base_url}/{ctx.repo.url_path}/commit/{commit_id}"}  # fmt: skip


def _h_create_branch(ctx: _Ctx) -> dict:
    """POST /api/<kind>/<repo>/branch/<name>: create a branch from a revision (default: main)."""
    branch = _check_new_ref(ctx.revision, "branch")
    start = ctx.data.startingPoint or DEFAULT_BRANCH
    with ctx.store.write_lock():
        if ctx.store.get_ref(ctx.repo, "heads", branch) is not None:
            raise _HubHTTPError(409, f"Reference already exists: refs/heads/{branch}")
        commit_id, _ = _commit_at(ctx, start)
        ctx.store.set_ref(ctx.repo, "heads", branch, commit_id)
    return {}


def _h_delete_branch(ctx: _Ctx) -> dict:
    """DELETE /api/<kind>/<repo>/branch/<name>: delete a branch other than main."""
    if ctx.revision == DEFAULT_BRANCH:
        raise _HubHTTPError(403, "Cannot delete the default branch")
    with ctx.store.write_lock():
        if not ctx.store.delete_ref(ctx.repo, "heads", ctx.revision):
            raise _revision_not_found(ctx.revision)
    return {}


def _h_create_tag(ctx: _Ctx) -> dict:
    """POST /api/<kind>/<repo>/tag/<rev>: tag a revision."""
    tag = _check_new_ref(ctx.data.tag, "tag")
    with ctx.store.write_lock():
        if ctx.store.get_ref(ctx.repo, "tags", tag) is not None:
            raise _HubHTTPError(409, f"Tag already exists: {tag}")
        commit_id, _ = _commit_at(ctx, ctx.revision)
        ctx.store.set_ref(ctx.repo, "tags", tag, commit_id)
    return {}


def _h_delete_tag(ctx: _Ctx) -> dict:
    """DELETE /api/<kind>/<repo>/tag/<name>: delete a tag."""
    with ctx.store.write_lock():
        if not ctx.store.delete_ref(ctx.repo, "tags", ctx.revision):
            raise _revision_not_found(ctx.revision)
    return {}


def _h_no_xet(ctx: _Ctx) -> dict:
    """GET /api/<kind>/<repo>/xet-*-token/<rev>: Xet is not supported."""
    raise _HubHTTPError(501, "This server does not support Xet storage: set HF_HUB_DISABLE_XET=1 in the client")


@dataclass(frozen=True)
class _Action:
    """How the repo API serves one (method, action): handler, whether it writes, which body it reads."""

    handler: Callable[[_Ctx], Any]
    write: bool = False
    body: type[BaseModel] | None = None  # a JSON body of this shape (paths-info: a form too)
    needs_repo: bool = True


_REPO_ACTIONS = {
    ("GET", None): _Action(_h_info),
    ("GET", "revision"): _Action(_h_info),
    ("GET", "tree"): _Action(_h_tree),
    ("GET", "refs"): _Action(_h_refs),
    ("GET", "commits"): _Action(_h_commits),
    ("POST", "paths-info"): _Action(_h_paths_info, body=_PathsInfoBody),
    ("POST", "preupload"): _Action(_h_preupload, write=True, body=_PreuploadBody),
    ("POST", "commit"): _Action(_h_commit, write=True),  # NDJSON, streamed
    ("POST", "branch"): _Action(_h_create_branch, write=True, body=_BranchBody),
    ("DELETE", "branch"): _Action(_h_delete_branch, write=True),
    ("POST", "tag"): _Action(_h_create_tag, write=True, body=_TagBody),
    ("DELETE", "tag"): _Action(_h_delete_tag, write=True),
    ("GET", "xet-write-token"): _Action(_h_no_xet, needs_repo=False),
    ("GET", "xet-read-token"): _Action(_h_no_xet, needs_repo=False),
}


async def _serve_repo_action(ctx: _Ctx, action: _Action) -> Any:
    """Check auth and load the repo, then (only then) read the body, then run the handler in a thread."""
    request = ctx.request
    if action.write:
        _require_write(request, ctx.token)
        _refuse_pull_requests(request)
    if action.needs_repo:
        ctx.meta = await run_in_threadpool(_load_repo, ctx)
    if action.handler is _h_commit:
        if await run_in_threadpool(ctx.store.get_ref, ctx.repo, "heads", ctx.revision) is None:
            raise _revision_not_found(ctx.revision)
        ctx.data = await _read_commit(ctx.store, request)
    elif action.body is _PathsInfoBody:
        ctx.data = await _read_paths_info(request)
    elif action.body is not None:
        ctx.data = await _read_json(request, action.body)
    return await run_in_threadpool(action.handler, ctx)


# --------------------------------------------------------------------------- LFS


def _upload_signature(token: str | None, oid: str, size: int, expires: int) -> str:
    """HMAC that authorises one LFS upload URL (the client PUTs without auth headers, like to S3)."""
    key = (token or "").encode()
    return hmac.new(key, f"{oid}:{size}:{expires}".encode(), hashlib.sha256).hexdigest()


def _lfs_batch_object(ctx: _Ctx, obj: _LfsObject) -> dict:
    """One object of an LFS batch answer: no actions if stored, else upload+verify URLs."""
    oid, size = obj.oid, obj.size
    if not _SHA256_RE.fullmatch(oid) or size < 0:
        return {"oid": oid[:64], "size": max(size, 0), "error": {"code": 422, "message": "Invalid oid or size"}}
    if ctx.store.has_blob(oid, size):
        return {"oid": oid, "size": size}
    expires = int(time.time()) + _UPLOAD_URL_TTL_S
    query = f"size={size}&expires={expires}&sig={_upload_signature(ctx.token, oid, size, expires)}"
    return {
        "oid": oid,
        "size": size,
        "authenticated": True,
        "actions": {
            "upload": {"href": f"{ctx.base_url}/api/lfs/objects/{oid}?{query}", "expires_in": _UPLOAD_URL_TTL_S},
            "verify": {"href": f"{ctx.base_url}/{ctx.repo.url_path}.git/info/lfs/objects/verify"},
        },
    }


def _check_upload_url(token: str | None, oid: str, request: Request) -> int:
    """Validate a signed LFS upload URL and return the announced size."""
    if not _SHA256_RE.fullmatch(oid):
        raise _bad_request("Invalid LFS oid")
    params = request.query_params
    if not all(re.fullmatch(r"[0-9]{1,20}", params.get(key, "")) for key in ("size", "expires")):
        raise _bad_request("Invalid LFS upload URL: ask the batch API for a new one")
    size, expires = int(params["size"]), int(params["expires"])
    sig = params.get("sig", "").encode()
    if expires < time.time() or not hmac.compare_digest(sig, _upload_signature(token, oid, size, expires).encode()):
        raise _HubHTTPError(403, "LFS upload URL is invalid or expired: ask the batch API for a new one")
    return size


async def _receive_blob(store: _Store, request: Request, oid: str, size: int) -> None:
    """Stream an upload to a temporary file, check size and sha256, then install it as a blob.

    The temporary file is removed whatever happens (bad content, client gone, server shutting down).
    """
    _check_declared_length(request, size)
    tmp = store.tmp_file()
    digest, received = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as fh:
            async for chunk in request.stream():
                received += len(chunk)
                if received > size:
                    raise _too_large(size, "LFS upload")
                digest.update(chunk)
                fh.write(chunk)
            await run_in_threadpool(_flush, fh)
        if received != size or digest.hexdigest() != oid:
            raise _bad_request("Uploaded content does not match the announced sha256/size")
        await run_in_threadpool(store.install_blob, tmp, oid)
    finally:
        tmp.unlink(missing_ok=True)


def _flush(fh: Any) -> None:
    """Flush a file to disk."""
    fh.flush()
    os.fsync(fh.fileno())


# --------------------------------------------------------------------------- downloads


def _resolve_file(store: _Store, token: str | None, request: Request) -> Response:
    """GET/HEAD /[datasets/]<repo>/resolve/<rev>/<path>: serve a file with Hub headers."""
    segments = _decode_segments(request.scope.get("raw_path") or request.url.path.encode())[1:]
    repo_type, rest = _split_type_prefix(segments)
    if len(rest) >= 4 and rest[2] == "resolve":
        repo_parts, revision, path_parts = rest[:2], rest[3], rest[4:]
    elif len(rest) >= 3 and rest[1] == "resolve":
        repo_parts, revision, path_parts = rest[:1], rest[2], rest[3:]
    else:
        raise _HubHTTPError(404, "Not found")
    ctx = _Ctx(store, token, request, _make_repo(repo_type, repo_parts))
    path = _check_file_path("/".join(path_parts))
    _load_repo(ctx)
    commit_id, commit = _commit_at(ctx, revision)
    entry = commit["tree"].get(path)
    if entry is None:
        raise _entry_not_found(path, commit_id)
    etag = entry["sha256"] if entry["lfs"] else entry["blobId"]
    headers = {"ETag": f'"{etag}"', "X-Repo-Commit": commit_id, "Accept-Ranges": "bytes"}
    if entry["lfs"]:
        headers.update({"X-Linked-Etag": f'"{entry["sha256"]}"', "X-Linked-Size": str(entry["size"])})
    return FileResponse(store.blob_path(entry["sha256"]), headers=headers, media_type="application/octet-stream")


# --------------------------------------------------------------------------- listing


def _h_list(store: _Store, token: str | None, request: Request, repo_type: str) -> list[dict]:
    """GET /api/models|datasets|spaces: list repos with search/author/filter/sort/limit."""
    params = request.query_params
    search, author = params.get("search", "").lower(), params.get("author")
    wanted_tags = set(params.getlist("filter"))
    full, card = _query_flag(request, "full"), _query_flag(request, "cardData") or _query_flag(request, "full")
    authorized = _authorized(request, token)
    out = []
    for repo, meta in store.iter_repos(repo_type):
        if (meta.get("private") and not authorized) or (author and repo.namespace != author):
            continue
        if search and search not in repo.id.lower():
            continue
        commit_id = store.get_ref(repo, "heads", DEFAULT_BRANCH)
        commit = store.get_commit(repo, commit_id) if commit_id else None
        if commit is None:
            continue
        item = _repo_summary(store, repo, meta, commit_id, commit, card=card, files=full)
        if wanted_tags <= set(item["tags"]) | {repo.id}:
            out.append(item)
    sort_key = params.get("sort") or "id"
    sort_key = {"last_modified": "lastModified", "created_at": "createdAt"}.get(sort_key, sort_key)
    if sort_key in ("id", "lastModified", "createdAt"):
        out.sort(key=lambda item: str(item.get(sort_key) or ""), reverse=params.get("direction") == "-1")
    limit = params.get("limit")
    return out[: int(limit)] if limit and re.fullmatch(r"[0-9]{1,9}", limit) else out


# --------------------------------------------------------------------------- app


def create_app(root: str | Path, token: str | None = None) -> FastAPI:
    """Build the Hub-compatible FastAPI app serving the repos stored under ``root``.

    ``token``: when set, writes (and reads of private repos) need ``Authorization: Bearer <token>``.
    """
    store = _Store(root)
    app = FastAPI(title="hubtl hub", docs_url=None, redoc_url=None, openapi_url=None,
                  default_response_class=_HubJSONResponse)  # fmt: skip
    app.state.store, app.state.token = store, token
    app.add_middleware(_PathGuard)
    _add_error_handlers(app)
    _add_account_routes(app, store, token)
    _add_lfs_routes(app, store, token)  # before the /api/{kind}/... catch-all
    _add_repo_routes(app, store, token)

    @app.api_route("/{rest:path}", methods=["GET", "HEAD"])
    def resolve(request: Request) -> Response:
        """Download route: ``/<repo>/resolve/<rev>/<path>`` (and ``/datasets/...``)."""
        return _resolve_file(store, token, request)

    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Render every error as Hub-style JSON."""

    @app.exception_handler(_HubHTTPError)
    async def hub_error(request: Request, exc: _HubHTTPError) -> JSONResponse:
        return _error_response(exc.status, exc.message, exc.code, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(400, "Invalid request: " + "; ".join(str(e.get("msg")) for e in exc.errors()[:5]))

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
        return Response(status_code=400)  # nobody reads it; avoids logging a traceback

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _error_response(500, f"Internal server error ({type(exc).__name__}): see the server log")


def _add_account_routes(app: FastAPI, store: _Store, token: str | None) -> None:
    """Routes not tied to one repo: health, whoami, create/delete repo, YAML check, telemetry."""
    yaml_slots = asyncio.Semaphore(_YAML_CONCURRENCY)

    @app.get("/api/health")
    def health() -> dict:
        """Liveness probe."""
        return {"status": "ok"}

    @app.get("/api/whoami-v2")
    def whoami(request: Request) -> dict:
        """The single user of this server (401 with a wrong token)."""
        if token is not None and not _authorized(request, token):
            raise _HubHTTPError(401, "Invalid credentials in Authorization header")
        role = {"role": "write", "displayName": "hubtl"}
        return {"type": "user", "id": DEFAULT_USER, "name": DEFAULT_USER, "fullname": DEFAULT_USER,
                "orgs": [], "auth": {"type": "access_token", "accessToken": role}}  # fmt: skip

    @app.post("/api/repos/create")
    async def create_repo(request: Request) -> JSONResponse:
        """Create a repo (409 if it exists)."""
        _require_write(request, token)
        data = await _read_json(request, _CreateRepoBody)
        repo = _make_repo(data.type or "model", [data.organization or DEFAULT_USER, data.name])
        private = bool(data.private) or data.visibility == "private"
        url = f"{str(request.base_url).rstrip('/')}/{repo.url_path}"
        if not await run_in_threadpool(store.create_repo, repo, private, DEFAULT_USER):
            return _HubJSONResponse({"error": "You already created this repo", "url": url}, status_code=409)
        return _HubJSONResponse({"url": url, "name": repo.id, "id": repo.id})

    @app.delete("/api/repos/delete")
    async def delete_repo(request: Request) -> dict:
        """Delete a repo (404 RepoNotFound if missing)."""
        _require_write(request, token)
        data = await _read_json(request, _DeleteRepoBody)
        repo = _make_repo(data.type or "model", [data.organization or DEFAULT_USER, data.name])
        if not await run_in_threadpool(store.delete_repo, repo):
            raise _repo_not_found(repo.id)
        return {}

    @app.post("/api/validate-yaml")
    async def validate_yaml(request: Request) -> JSONResponse:
        """Check README front matter; 400 with ``errors`` when it is not valid (or refused) YAML."""
        data = await _read_json(request, _ValidateYamlBody)
        async with yaml_slots:
            try:
                await run_in_threadpool(_front_matter, data.content)
            except _InvalidYaml as exc:
                message = f"Invalid YAML: {exc}"
                return _HubJSONResponse({"errors": [{"message": message}], "warnings": []}, status_code=400,
                                        headers={"X-Error-Message": _header_value(message)})  # fmt: skip
        return _HubJSONResponse({"errors": [], "warnings": []})

    @app.api_route("/api/telemetry/{rest:path}", methods=["GET", "HEAD", "POST"])
    def telemetry(rest: str) -> dict:
        """Accept and drop client telemetry."""
        return {}


def _add_repo_routes(app: FastAPI, store: _Store, token: str | None) -> None:
    """Repo listing and the per-repo API (info, tree, refs, commits, preupload, commit, branches, tags)."""

    @app.get("/api/{kind}")
    def list_repos(kind: str, request: Request) -> list[dict]:
        """List repos of one type."""
        if kind not in _KINDS:
            raise _HubHTTPError(404, "Not found")
        return _h_list(store, token, request, _KINDS[kind])

    @app.api_route("/api/{kind}/{rest:path}", methods=["GET", "POST", "DELETE"])
    async def repo_api(kind: str, request: Request) -> Any:
        """Dispatch ``/api/<kind>/<repo>/<action>/<args>`` to a handler (segments decoded one by one)."""
        if kind not in _KINDS:
            raise _HubHTTPError(404, "Not found")
        segments = _decode_segments(request.scope.get("raw_path") or request.url.path.encode())[3:]
        if segments and segments[-1] == "":  # tolerate a trailing slash
            segments = segments[:-1]
        repo_parts, name, args = _parse_api_path(segments)
        repo = _make_repo(_KINDS[kind], repo_parts)
        if name is None and repo_parts[1:] == ["refs"] and store.repo_meta(repo) is None:
            repo, name = _make_repo(_KINDS[kind], repo_parts[:1]), "refs"  # bare name + /refs
        action = _REPO_ACTIONS.get((request.method, name))
        if action is None:
            raise _HubHTTPError(405 if name in _API_ACTIONS else 404, f"Unsupported: {request.method} {name}")
        return await _serve_repo_action(_Ctx(store, token, request, repo, args), action)


def _add_lfs_routes(app: FastAPI, store: _Store, token: str | None) -> None:
    """The git-lfs batch API and the upload/verify URLs it hands out."""

    def lfs_ctx(rest: str, request: Request) -> _Ctx:
        repo_type, parts = _split_type_prefix(rest.split("/"))
        return _Ctx(store, token, request, _make_repo(repo_type, parts))

    @app.post("/{rest:path}.git/info/lfs/objects/batch")
    async def lfs_batch(rest: str, request: Request) -> JSONResponse:
        """LFS batch API: answer 'basic' upload actions for objects not stored yet."""
        _require_write(request, token)
        ctx = lfs_ctx(rest, request)
        await run_in_threadpool(_load_repo, ctx)
        data = await _read_json(request, _LfsBatchBody)
        if data.operation != "upload":
            raise _bad_request("Only the 'upload' LFS operation is supported; download with /resolve/")
        if "basic" not in (data.transfers or ["basic"]):
            raise _bad_request("Only the 'basic' LFS transfer is supported")
        if data.hash_algo != "sha256":
            raise _bad_request("Only the 'sha256' LFS hash algorithm is supported")
        objects = await run_in_threadpool(lambda: [_lfs_batch_object(ctx, o) for o in data.objects])
        return _HubJSONResponse({"transfer": "basic", "objects": objects},
                                media_type="application/vnd.git-lfs+json")  # fmt: skip

    @app.put("/api/lfs/objects/{oid}")
    async def lfs_upload(oid: str, request: Request) -> dict:
        """Receive one LFS object through a signed URL from the batch answer (at most the signed size)."""
        size = _check_upload_url(token, oid, request)
        if not store.has_blob(oid, size):
            await _receive_blob(store, request, oid, size)
        return {}

    @app.post("/{rest:path}.git/info/lfs/objects/verify")
    async def lfs_verify(rest: str, request: Request) -> dict:
        """LFS verify (read access to the repo, as for downloads): 404 unless the object is stored."""
        ctx = lfs_ctx(rest, request)
        await run_in_threadpool(_load_repo, ctx)
        data = await _read_json(request, _LfsVerifyBody)
        if not _SHA256_RE.fullmatch(data.oid) or not store.has_blob(data.oid, data.size):
            raise _HubHTTPError(404, f"LFS object {data.oid[:64]} not found")
        return {}


# --------------------------------------------------------------------------- running


def serve(root: str | Path, host: str = "127.0.0.1", port: int = 8000, token: str | None = None) -> None:
    """Run the server with uvicorn until interrupted (blocks)."""
    import uvicorn

    url = f"http://{host}:{port}"
    print(f"hubtl hub serving {Path(root).resolve()} at {url}")
    print(f"clients: export HF_ENDPOINT={url} HF_HUB_DISABLE_XET=1" + (" HF_TOKEN=<token>" if token else ""))
    uvicorn.run(create_app(root, token), host=host, port=port, log_level="info")


@contextlib.contextmanager
def running_server(root: str | Path, token: str | None = None, *, startup_timeout: float = 15.0) -> Iterator[str]:
    """Run the server in a background thread on a free loopback port; yield its base URL.

    Usage (e.g. as a pytest fixture)::

        with running_server(tmp_path / "hub", token="secret") as url, use_endpoint(url):
            HfApi(token="secret").create_repo("me/model")

    ``use_endpoint`` makes the unmodified client of this process talk to ``url``; subprocesses
    need ``HF_ENDPOINT=url`` and ``HF_HUB_DISABLE_XET=1`` in their environment.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(create_app(root, token), log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=5)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="hubtl-hub", daemon=True)
    thread.start()
    try:
        _wait_until_up(url, server, thread, startup_timeout)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def _wait_until_up(url: str, server: Any, thread: threading.Thread, timeout: float) -> None:
    """Poll the health route until the server answers (raise if it died or timed out)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("hubtl hub server thread exited during startup")
        if server.started:
            try:
                with urllib.request.urlopen(f"{url}/api/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
        time.sleep(0.02)
    raise TimeoutError(f"hubtl hub server at {url} did not start within {timeout}s")


@contextlib.contextmanager
def use_endpoint(url: str, *, disable_xet: bool = True) -> Iterator[str]:
    """Make the unmodified ``huggingface_hub`` client of this process use ``url`` (restored on exit).

    Sets env ``HF_ENDPOINT`` (and ``HF_HUB_DISABLE_XET=1``, inherited by subprocesses) and patches
    what ``huggingface_hub`` computed from them at import: ``constants.ENDPOINT``,
    ``constants.HUGGINGFACE_CO_URL_TEMPLATE``, ``constants.HF_URL_HOSTS``,
    ``constants.HF_HUB_DISABLE_XET`` and the module-level ``HfApi`` behind ``huggingface_hub.create_repo``
    & co. ``HfApi`` objects created before entering keep their old endpoint. Not thread-safe:
    it changes process-wide state.
    """
    import huggingface_hub.hf_api as hf_api
    from huggingface_hub import constants

    url = url.rstrip("/")
    env_keys = ("HF_ENDPOINT", "HF_HUB_DISABLE_XET")
    saved_env = {k: os.environ.get(k) for k in env_keys}
    names = ("ENDPOINT", "HUGGINGFACE_CO_URL_TEMPLATE", "HF_URL_HOSTS", "HF_HUB_DISABLE_XET")
    saved = {name: getattr(constants, name) for name in names}
    saved_api_endpoint = hf_api.api.endpoint
    os.environ["HF_ENDPOINT"] = url
    constants.ENDPOINT = url
    constants.HUGGINGFACE_CO_URL_TEMPLATE = url + "/{repo_id}/resolve/{revision}/{filename}"
    constants.HF_URL_HOSTS = frozenset(saved["HF_URL_HOSTS"] | {(urlsplit(url).hostname or "").lower()})
    if disable_xet:
        os.environ["HF_HUB_DISABLE_XET"] = "1"
        constants.HF_HUB_DISABLE_XET = True
    hf_api.api.endpoint = url
    try:
        yield url
    finally:
        for name, value in saved.items():
            setattr(constants, name, value)
        hf_api.api.endpoint = saved_api_endpoint
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
