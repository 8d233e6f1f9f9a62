"""The ``/api/<models|datasets|spaces>`` routes: repo listing and the per-repo API the client calls.

Per repo: info, tree, refs, commits, paths-info, preupload, commit, branches and tags. The
dispatcher checks auth and loads the repo before it reads any body, then runs the handler in a
worker thread.
"""

from __future__ import annotations

import base64
import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from . import auth, views
from .errors import BadRequest, EntryNotFound, RevisionNotFound
from .models import (
    COMMIT_LINE, BranchBody, CommitHeader, FileLine, FileValue, HeaderLine, LfsFileLine, PathsInfoBody,
    PreuploadBody, TagBody, ndjson_lines, read_json, read_paths_info,
)  # fmt: skip
from .names import DEFAULT_USER, KINDS, SHA256_RE, Repo, check_file_path, make_repo
from .responses import HubHTTPError, invalid_body
from .store import DEFAULT_BRANCH, Store
from .urls import base_url, path_segments, query_flag

LFS_SIZE_THRESHOLD = 1024 * 1024  # files above 1 MiB are uploaded through LFS
MAX_COMMIT_OPERATIONS = 100_000
_API_ACTIONS = {
    "revision", "tree", "refs", "commits", "paths-info", "preupload", "commit",
    "branch", "tag", "xet-write-token", "xet-read-token",
}  # fmt: skip


@dataclass
class Ctx:
    """What a handler needs: store, auth, repo, parsed URL parts, repo metadata and the parsed body."""

    store: Store
    token: str | None
    request: Request
    repo: Repo
    args: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    data: Any = None

    @property
    def revision(self) -> str:
        """The revision in the URL (all remaining segments), ``main`` by default."""
        return "/".join(self.args) or DEFAULT_BRANCH


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
    raise HubHTTPError(404, "Not found")


# --------------------------------------------------------------------------- reads


def _info(ctx: Ctx) -> dict:
    """GET /api/<kind>/<repo>[/revision/<rev>]: repo info at a revision."""
    commit_id, commit = ctx.store.commit_at(ctx.repo, ctx.revision)
    return views.repo_summary(ctx.store, ctx.repo, ctx.meta, commit_id, commit, card=True, files=True)


def _tree(ctx: Ctx) -> list[dict]:
    """GET /api/<kind>/<repo>/tree/<rev>[/<path>]: list files and folders."""
    revision = ctx.args[0] if ctx.args else DEFAULT_BRANCH
    prefix = "/".join(ctx.args[1:]).strip("/")
    commit_id, commit = ctx.store.commit_at(ctx.repo, revision)
    tree, folders = commit["tree"], views.folders(commit["tree"])
    if prefix and prefix in tree:
        items = [views.file_json(prefix, tree[prefix])]
    elif prefix and prefix not in folders:
        raise EntryNotFound(prefix, commit_id)
    else:
        recursive = query_flag(ctx.request, "recursive")
        start = prefix + "/" if prefix else ""

        def wanted(path: str) -> bool:
            return path.startswith(start) and (recursive or "/" not in path[len(start) :])

        items = [views.dir_json(tree, p) for p in sorted(folders) if wanted(p)]
        items += [views.file_json(p, e) for p, e in sorted(tree.items()) if wanted(p)]
    if query_flag(ctx.request, "expand"):
        return views.with_last_commits(ctx.store, ctx.repo, commit_id, items)
    return items


def _paths_info(ctx: Ctx) -> list[dict]:
    """POST /api/<kind>/<repo>/paths-info/<rev>: info about the given paths that exist."""
    body: PathsInfoBody = ctx.data
    commit_id, commit = ctx.store.commit_at(ctx.repo, ctx.revision)
    tree, folders = commit["tree"], views.folders(commit["tree"])
    items = []
    for path in (p.strip("/") for p in body.path_list):
        if path in tree:
            items.append(views.file_json(path, tree[path]))
        elif path in folders:
            items.append(views.dir_json(tree, path))
    return views.with_last_commits(ctx.store, ctx.repo, commit_id, items) if body.expand else items


def _refs(ctx: Ctx) -> dict:
    """GET /api/<kind>/<repo>/refs: branches and tags."""

    def refs(kind: str, prefix: str) -> list[dict]:
        return [{"name": n, "ref": f"{prefix}{n}", "targetCommit": c} for n, c in ctx.store.list_refs(ctx.repo, kind)]

    return {"branches": refs("heads", "refs/heads/"), "converts": [], "tags": refs("tags", "refs/tags/"),
            "pullRequests": []}  # fmt: skip


def _commits(ctx: Ctx) -> list[dict]:
    """GET /api/<kind>/<repo>/commits/<rev>: history from a revision back to the first commit."""
    commit_id, commit = ctx.store.commit_at(ctx.repo, ctx.revision)
    out = []
    while commit is not None:
        out.append({"id": commit_id, "title": commit["title"], "message": commit["message"],
                    "date": commit["date"], "authors": [{"user": commit["author"]}]})  # fmt: skip
        commit_id = commit["parent"]
        commit = ctx.store.get_commit(ctx.repo, commit_id) if commit_id else None
    return out


# --------------------------------------------------------------------------- writes


def _lfs_patterns(gitattributes: bytes | None) -> list[str]:
    """Patterns marked ``filter=lfs`` in a .gitattributes file."""
    text = (gitattributes or b"").decode("utf-8", errors="replace")
    return [line.split()[0] for line in text.splitlines() if "filter=lfs" in line.split()[1:]]


def _upload_mode(path: str, size: int, sample_b64: str, lfs_patterns: list[str]) -> str:
    """LFS for big files, binary-looking files and paths matching .gitattributes LFS patterns."""
    try:
        sample = base64.b64decode(sample_b64)
    except ValueError:
        sample = b""
    name = path.rsplit("/", 1)[-1]
    matches = any(fnmatch.fnmatchcase(path if "/" in p else name, p) for p in lfs_patterns)
    return "lfs" if size > LFS_SIZE_THRESHOLD or b"\0" in sample or matches else "regular"


def _preupload(ctx: Ctx) -> dict:
    """POST /api/<kind>/<repo>/preupload/<rev>: decide regular vs LFS upload for each file."""
    body: PreuploadBody = ctx.data
    _, commit = ctx.store.commit_at(ctx.repo, ctx.revision)
    tree = commit["tree"]
    attributes = tree.get(".gitattributes")
    patterns = _lfs_patterns(ctx.store.read_blob(attributes["sha256"]) if attributes else None)
    files = []
    for item in body.files:
        path = check_file_path(item.path)
        existing = tree.get(path)
        oid = (existing["sha256"] if existing["lfs"] else existing["blobId"]) if existing else None
        mode = _upload_mode(path, item.size, item.sample, patterns)
        files.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
    return {"files": files, "commitOid": None}


async def _read_commit(store: Store, request: Request) -> tuple[dict, list[dict]]:
    """Stream a commit's NDJSON payload into (header, operations), storing inline file contents as they come."""
    header, ops = CommitHeader(), []
    async for line in ndjson_lines(request):
        try:
            item = COMMIT_LINE.validate_json(line)
        except ValidationError as exc:
            raise invalid_body(exc, "commit line") from None
        if isinstance(item, HeaderLine):
            header = item.value
            continue
        if len(ops) >= MAX_COMMIT_OPERATIONS:
            raise BadRequest(f"More than {MAX_COMMIT_OPERATIONS} operations in one commit: split it into several")
        ops.append(await run_in_threadpool(_prepare_operation, store, item))
    if not ops:
        raise BadRequest("Empty commit: no operations")
    return header.model_dump(), ops


def _prepare_operation(store: Store, item: Any) -> dict:
    """One validated commit line as an operation for ``Store.commit`` (inline content is stored now)."""
    if isinstance(item, FileLine):
        path = check_file_path(item.value.path)
        return {"kind": "add", "path": path, "entry": store.regular_entry(_inline_content(item.value))}
    if isinstance(item, LfsFileLine):
        path, oid = check_file_path(item.value.path), item.value.oid.lower()
        if item.value.algo != "sha256" or not SHA256_RE.fullmatch(oid):
            raise BadRequest(f"Invalid LFS oid for {path!r}")
        if not store.has_blob(oid, item.value.size):
            raise BadRequest(f"LFS object {oid} for {path!r} was not uploaded (or has another size)")
        return {"kind": "add", "path": path, "entry": store.lfs_entry(oid)}
    path = item.value.path.rstrip("/") if item.key == "deletedFolder" else item.value.path
    return {"kind": item.key, "path": check_file_path(path)}


def _inline_content(value: FileValue) -> bytes:
    """Decode the content of a ``file`` commit line (base64, or plain text)."""
    if value.encoding != "base64":
        return value.content.encode("utf-8")
    try:
        return base64.b64decode(value.content, validate=True)
    except ValueError as exc:
        raise BadRequest(f"Invalid base64 content for {value.path!r}") from exc


def _commit(ctx: Ctx) -> dict:
    """POST /api/<kind>/<repo>/commit/<branch>: create a commit from the streamed NDJSON payload."""
    header, ops = ctx.data
    commit_id = ctx.store.commit(ctx.repo, ctx.revision, ops, header, DEFAULT_USER)
    return {"success": True, "commitOid": commit_id, "pullRequestUrl": None,
            "commitUrl": f"{base_url(ctx.request)}/{ctx.repo.url_path}/commit/{commit_id}"}  # fmt: skip


def _create_branch(ctx: Ctx) -> dict:
    """POST /api/<kind>/<repo>/branch/<name>: create a branch from a revision (default: main)."""
    body: BranchBody = ctx.data
    if not ctx.store.create_ref(ctx.repo, "heads", ctx.revision, body.startingPoint or DEFAULT_BRANCH):
        raise HubHTTPError(409, f"Reference already exists: refs/heads/{ctx.revision}")
    return {}


def _delete_branch(ctx: Ctx) -> dict:
    """DELETE /api/<kind>/<repo>/branch/<name>: delete a branch other than main."""
    if ctx.revision == DEFAULT_BRANCH:
        raise HubHTTPError(403, "Cannot delete the default branch")
    ctx.store.delete_ref(ctx.repo, "heads", ctx.revision)
    return {}


def _create_tag(ctx: Ctx) -> dict:
    """POST /api/<kind>/<repo>/tag/<rev>: tag a revision."""
    body: TagBody = ctx.data
    if not ctx.store.create_ref(ctx.repo, "tags", body.tag, ctx.revision):
        raise HubHTTPError(409, f"Tag already exists: {body.tag}")
    return {}


def _delete_tag(ctx: Ctx) -> dict:
    """DELETE /api/<kind>/<repo>/tag/<name>: delete a tag."""
    ctx.store.delete_ref(ctx.repo, "tags", ctx.revision)
    return {}


def _no_xet(ctx: Ctx) -> dict:
    """GET /api/<kind>/<repo>/xet-*-token/<rev>: Xet is not supported."""
    raise HubHTTPError(501, "This server does not support Xet storage: set HF_HUB_DISABLE_XET=1 in the client")


# --------------------------------------------------------------------------- dispatch


@dataclass(frozen=True)
class _Action:
    """How one (method, action) is served: handler, whether it writes, which body it reads."""

    handler: Callable[[Ctx], Any]
    write: bool = False
    body: type[BaseModel] | None = None  # a JSON body of this shape (paths-info: a form too)
    needs_repo: bool = True


_ACTIONS = {
    ("GET", None): _Action(_info),
    ("GET", "revision"): _Action(_info),
    ("GET", "tree"): _Action(_tree),
    ("GET", "refs"): _Action(_refs),
    ("GET", "commits"): _Action(_commits),
    ("POST", "paths-info"): _Action(_paths_info, body=PathsInfoBody),
    ("POST", "preupload"): _Action(_preupload, write=True, body=PreuploadBody),
    ("POST", "commit"): _Action(_commit, write=True),  # NDJSON, streamed
    ("POST", "branch"): _Action(_create_branch, write=True, body=BranchBody),
    ("DELETE", "branch"): _Action(_delete_branch, write=True),
    ("POST", "tag"): _Action(_create_tag, write=True, body=TagBody),
    ("DELETE", "tag"): _Action(_delete_tag, write=True),
    ("GET", "xet-write-token"): _Action(_no_xet, needs_repo=False),
    ("GET", "xet-read-token"): _Action(_no_xet, needs_repo=False),
}


async def _serve(ctx: Ctx, action: _Action) -> Any:
    """Check auth and load the repo, then (only then) read the body, then run the handler in a thread."""
    request = ctx.request
    if action.write:
        auth.require_write(request, ctx.token)
        if query_flag(request, "create_pr"):
            raise BadRequest("Pull requests are not supported by this server; commit to a branch instead")
    if action.needs_repo:
        ctx.meta = await run_in_threadpool(auth.readable_meta, ctx.store, request, ctx.token, ctx.repo)
    if action.handler is _commit:
        if await run_in_threadpool(ctx.store.get_ref, ctx.repo, "heads", ctx.revision) is None:
            raise RevisionNotFound(ctx.revision)
        ctx.data = await _read_commit(ctx.store, request)
    elif action.body is PathsInfoBody:
        ctx.data = await read_paths_info(request)
    elif action.body is not None:
        ctx.data = await read_json(request, action.body)
    return await run_in_threadpool(action.handler, ctx)


def _list(store: Store, token: str | None, request: Request, repo_type: str) -> list[dict]:
    """GET /api/models|datasets|spaces: list repos with search/author/filter/sort/limit."""
    params = request.query_params
    search, author = params.get("search", "").lower(), params.get("author")
    wanted_tags = set(params.getlist("filter"))
    full, card = query_flag(request, "full"), query_flag(request, "cardData") or query_flag(request, "full")
    authorized = auth.authorized(request, token)
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
        item = views.repo_summary(store, repo, meta, commit_id, commit, card=card, files=full)
        if wanted_tags <= set(item["tags"]) | {repo.id}:
            out.append(item)
    sort_key = params.get("sort") or "id"
    sort_key = {"last_modified": "lastModified", "created_at": "createdAt"}.get(sort_key, sort_key)
    if sort_key in ("id", "lastModified", "createdAt"):
        out.sort(key=lambda item: str(item.get(sort_key) or ""), reverse=params.get("direction") == "-1")
    limit = params.get("limit")
    return out[: int(limit)] if limit and re.fullmatch(r"[0-9]{1,9}", limit) else out


def add_repo_routes(app: FastAPI, store: Store, token: str | None) -> None:
    """Register repo listing and the per-repo API."""

    @app.get("/api/{kind}")
    def list_repos(kind: str, request: Request) -> list[dict]:
        """List repos of one type."""
        if kind not in KINDS:
            raise HubHTTPError(404, "Not found")
        return _list(store, token, request, KINDS[kind])

    @app.api_route("/api/{kind}/{rest:path}", methods=["GET", "POST", "DELETE"])
    async def repo_api(kind: str, request: Request) -> Any:
        """Dispatch ``/api/<kind>/<repo>/<action>/<args>`` to a handler (segments decoded one by one)."""
        if kind not in KINDS:
            raise HubHTTPError(404, "Not found")
        segments = path_segments(request)[3:]
        if segments and segments[-1] == "":  # tolerate a trailing slash
            segments = segments[:-1]
        repo_parts, name, args = _parse_api_path(segments)
        repo = make_repo(KINDS[kind], repo_parts)
        if name is None and repo_parts[1:] == ["refs"] and store.repo_meta(repo) is None:
            repo, name = make_repo(KINDS[kind], repo_parts[:1]), "refs"  # bare name + /refs
        action = _ACTIONS.get((request.method, name))
        if action is None:
            raise HubHTTPError(405 if name in _API_ACTIONS else 404, f"Unsupported: {request.method} {name}")
        return await _serve(Ctx(store, token, request, repo, args), action)
