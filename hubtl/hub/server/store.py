"""The Hub server's git-like storage: repos, immutable commits, refs and content-addressed blobs on disk.

Everything lives under one root, survives restarts and is written atomically::

    blobs/<sha256[:2]>/<sha256>               file contents, content-addressed
    repos/<type>s/<namespace>/<name>/
        meta.json                             visibility and creation date
        commits/<sha1>.json                   immutable commits (parent, full tree, message...)
        refs/heads/<quoted branch>            branch -> commit id
        refs/tags/<quoted tag>                tag -> commit id
    tmp/                                      temporary files, renamed into place

No HTTP here: failures raise the domain errors of ``errors.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from ...layout import atomic_write
from .errors import BadRequest, EntryNotFound, ParentCommitMismatch, RevisionNotFound
from .names import FULL_SHA_RE, SHA256_RE, SHORT_SHA_RE, Repo, check_new_ref, ref_name_problem

try:  # cross-process lock on POSIX; a thread lock is used everywhere
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

DEFAULT_BRANCH = "main"
TMP_MAX_AGE_S = 3600  # leftovers of crashed requests in tmp/ older than this are removed at start-up
_LFS_PATTERNS = (
    "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.lfs.* *.mlmodel *.model *.msgpack"
    " *.npy *.npz *.onnx *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors"
    " saved_model/**/* *.tar.* *.tar *.tflite *.tgz *.wasm *.xz *.zip *.zst *tfevents*"
).split()
_DEFAULT_GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in _LFS_PATTERNS).encode()


def _now_iso() -> str:
    """Current UTC time in the Hub's date format."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file standing for an LFS object."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, no spaces)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Store:
    """Repos, immutable commits, refs and content-addressed blobs on disk under one root."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        for sub in ("blobs", "repos", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._thread_lock = threading.Lock()
        self.remove_stale_tmp()

    def remove_stale_tmp(self, max_age_s: float = TMP_MAX_AGE_S) -> None:
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
        """Write a file so that readers see either the old or the complete new content (durably)."""
        atomic_write(path, data, tmp_dir=self.root / "tmp", fsync=True)

    # -- blobs

    def blob_path(self, sha256: str) -> Path:
        """Where the blob with this sha256 lives (an id that is not a sha256 is refused: it could name any path)."""
        if not isinstance(sha256, str) or not SHA256_RE.fullmatch(sha256):
            raise OSError(f"the store is damaged: {sha256!r} is not a blob id")
        return self.root / "blobs" / sha256[:2] / sha256

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        """Whether the blob is stored (with this size, if given)."""
        if not isinstance(sha256, str) or not SHA256_RE.fullmatch(sha256):
            return False
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

    def read_blob(self, sha256: str, limit: int | None = None) -> bytes:
        """Read a blob's content (at most its first `limit` bytes)."""
        with self.blob_path(sha256).open("rb") as f:
            return f.read(-1 if limit is None else limit)

    def regular_entry(self, data: bytes) -> dict:
        """Store inline content and describe it as a regular (non-LFS) tree entry."""
        return {"sha256": self.put_bytes(data), "size": len(data), "lfs": False, "blobId": _git_blob_sha1(data)}

    def lfs_entry(self, sha256: str, size: int | None = None) -> dict:
        """Describe an uploaded blob as an LFS tree entry (BadRequest unless stored, with ``size`` if given)."""
        if not self.has_blob(sha256, size):
            raise BadRequest(f"LFS object {sha256} was not uploaded (or has another size): upload it first")
        size = self.blob_path(sha256).stat().st_size
        return {"sha256": sha256, "size": size, "lfs": True, "blobId": _git_blob_sha1(lfs_pointer(sha256, size))}

    # -- repos

    def repo_dir(self, repo: Repo) -> Path:
        """The repo's directory."""
        return self.root / "repos" / f"{repo.type}s" / repo.namespace / repo.name

    def repo_meta(self, repo: Repo) -> dict | None:
        """The repo's metadata, or None when it does not exist."""
        try:
            return json.loads((self.repo_dir(repo) / "meta.json").read_text())
        except FileNotFoundError:
            return None

    def iter_repos(self, repo_type: str) -> Iterator[tuple[Repo, dict]]:
        """All repos of one type with their metadata."""
        base = self.root / "repos" / f"{repo_type}s"
        for meta_file in sorted(base.glob("*/*/meta.json")):
            repo = Repo(repo_type, meta_file.parent.parent.name, meta_file.parent.name)
            meta = self.repo_meta(repo)
            if meta is not None:
                yield repo, meta

    def create_repo(self, repo: Repo, private: bool, author: str) -> bool:
        """Create a repo with an initial commit on main; False if it already exists."""
        with self.write_lock():
            target = self.repo_dir(repo)
            if target.exists():
                return False
            staging = self.root / "tmp" / f"{uuid.uuid4().hex}.repo"
            staging.mkdir()
            (staging / "meta.json").write_text(json.dumps({"private": private, "createdAt": _now_iso()}))
            tree = {".gitattributes": self.regular_entry(_DEFAULT_GITATTRIBUTES)}
            commit_id, payload = self._build_commit(None, tree, "initial commit", "", author)
            (staging / "commits").mkdir()
            (staging / "commits" / f"{commit_id}.json").write_bytes(payload)
            (staging / "refs" / "heads").mkdir(parents=True)
            (staging / "refs" / "heads" / DEFAULT_BRANCH).write_text(commit_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, target)  # the repo appears complete or not at all
            return True

    def delete_repo(self, repo: Repo) -> bool:
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

    def _ref_file(self, repo: Repo, kind: str, name: str) -> Path | None:
        """The file holding a ref, or None for names that cannot be refs."""
        if ref_name_problem(name) is not None:
            return None
        return self.repo_dir(repo) / "refs" / kind / quote(name, safe="")

    def get_ref(self, repo: Repo, kind: str, name: str) -> str | None:
        """The commit a branch ('heads') or tag ('tags') points to, or None."""
        path = self._ref_file(repo, kind, name)
        try:
            return path.read_text().strip() if path is not None else None
        except (FileNotFoundError, NotADirectoryError):
            return None

    def set_ref(self, repo: Repo, kind: str, name: str, commit_id: str) -> None:
        """Point a ref at a commit (atomically)."""
        path = self._ref_file(repo, kind, name)
        if path is None:
            check_new_ref(name, "branch" if kind == "heads" else "tag")
        self.atomic_write(path, commit_id.encode())

    def create_ref(self, repo: Repo, kind: str, name: str, revision: str) -> bool:
        """Create a branch or tag at a revision; False if it already exists."""
        check_new_ref(name, "branch" if kind == "heads" else "tag")
        with self.write_lock():
            if self.get_ref(repo, kind, name) is not None:
                return False
            self.set_ref(repo, kind, name, self.resolve(repo, revision))
            return True

    def delete_ref(self, repo: Repo, kind: str, name: str) -> None:
        """Remove a branch or tag (RevisionNotFound if there is none by that name)."""
        with self.write_lock():
            path = self._ref_file(repo, kind, name)
            if path is None or not path.is_file():
                raise RevisionNotFound(name)
            path.unlink()

    def list_refs(self, repo: Repo, kind: str) -> list[tuple[str, str]]:
        """All (name, commit) pairs of one ref kind, sorted by name."""
        base = self.repo_dir(repo) / "refs" / kind
        files = sorted(base.iterdir()) if base.is_dir() else []
        return [(unquote(f.name), f.read_text().strip()) for f in files]

    # -- commits

    def get_commit(self, repo: Repo, commit_id: str) -> dict | None:
        """A commit's content, or None."""
        if not FULL_SHA_RE.fullmatch(commit_id):
            return None
        try:
            return json.loads((self.repo_dir(repo) / "commits" / f"{commit_id}.json").read_bytes())
        except FileNotFoundError:
            return None

    def resolve(self, repo: Repo, revision: str) -> str:
        """Turn a branch, tag, full or short commit id into a commit id (RevisionNotFound otherwise)."""
        for kind in ("heads", "tags"):
            name = revision.removeprefix(f"refs/{kind}/")
            if (commit_id := self.get_ref(repo, kind, name)) is not None:
                return commit_id
        rev = revision.lower()
        if FULL_SHA_RE.fullmatch(rev) and self.get_commit(repo, rev) is not None:
            return rev
        if SHORT_SHA_RE.fullmatch(rev):
            matches = list((self.repo_dir(repo) / "commits").glob(f"{rev}*.json"))
            if len(matches) == 1:
                return matches[0].stem
        raise RevisionNotFound(revision)

    def commit_at(self, repo: Repo, revision: str) -> tuple[str, dict]:
        """Resolve a revision into (commit id, commit)."""
        commit_id = self.resolve(repo, revision)
        commit = self.get_commit(repo, commit_id)
        if commit is None:
            raise RevisionNotFound(revision)
        return commit_id, commit

    @staticmethod
    def _build_commit(parent: str | None, tree: dict, title: str, message: str, author: str) -> tuple[str, bytes]:
        """Serialise a commit; its id is the sha1 of that serialisation."""
        record = {"parent": parent, "tree": tree, "title": title, "message": message,
                  "author": author, "date": _now_iso()}  # fmt: skip
        payload = _canonical_json(record)
        return hashlib.sha1(payload).hexdigest(), payload

    def commit(self, repo: Repo, branch: str, ops: list[dict], header: dict, author: str) -> str:
        """Apply prepared operations on top of a branch head as one new commit; return its id."""
        with self.write_lock():
            head = self.get_ref(repo, "heads", branch)
            if head is None:
                raise RevisionNotFound(branch)
            parent = header.get("parentCommit")
            if parent and not head.startswith(str(parent).lower()):
                raise ParentCommitMismatch()
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
    """Apply one prepared add/delete operation to a tree (EntryNotFound for missing deletes)."""
    path = op["path"]
    if op["kind"] == "add":
        tree[path] = op["entry"]
    elif op["kind"] == "deletedFile":
        if tree.pop(path, None) is None:
            raise EntryNotFound(f"{path} (A file with this name doesn't exist)")
    else:  # deletedFolder
        doomed = [p for p in tree if p.startswith(path.rstrip("/") + "/")]
        if not doomed:
            raise EntryNotFound(f"{path} (A folder with this name doesn't exist)")
        for p in doomed:
            del tree[p]


def _check_no_file_dir_clash(tree: dict) -> None:
    """Refuse trees where a path is both a file and a folder."""
    for path in tree:
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in tree:
                raise BadRequest(f"'{'/'.join(parts[:i])}' is a file, cannot add '{path}'")
