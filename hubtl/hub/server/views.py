"""The Hub's JSON views of stored data: repo info and listing items, tree and paths-info items, last commits."""

from __future__ import annotations

import hashlib
from typing import Any

from . import cards
from .names import Repo
from .store import Store, lfs_pointer


def _sibling(path: str, entry: dict) -> dict:
    """A ``siblings`` item of repo info."""
    out: dict[str, Any] = {"rfilename": path, "size": entry["size"], "blobId": entry["blobId"]}
    if entry["lfs"]:
        pointer_size = len(lfs_pointer(entry["sha256"], entry["size"]))
        out["lfs"] = {"size": entry["size"], "sha256": entry["sha256"], "pointerSize": pointer_size}
    return out


def repo_summary(
    store: Store, repo: Repo, meta: dict, commit_id: str, commit: dict, *, card: bool, files: bool
) -> dict:
    """The JSON the Hub returns for a repo (repo info, or an item of a repo listing)."""
    card_data = cards.card_data(store, commit["tree"])
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
        "tags": cards.tags(card_data),
    }
    if repo.type == "model":
        out["modelId"] = repo.id
        if card_data:
            out["library_name"] = cards.str_or_none(card_data.get("library_name"))
            out["pipeline_tag"] = cards.str_or_none(card_data.get("pipeline_tag"))
    if card and card_data is not None:
        out["cardData"] = card_data
    if files:
        out["siblings"] = [_sibling(p, e) for p, e in sorted(commit["tree"].items())]
    return out


def _dir_oid(tree: dict, prefix: str) -> str:
    """A stable id for a folder: sha1 over the ids of the files below it."""
    lines = "".join(f"{p}\0{e['blobId']}\n" for p, e in sorted(tree.items()) if p.startswith(prefix + "/"))
    return hashlib.sha1(lines.encode()).hexdigest()


def file_json(path: str, entry: dict) -> dict:
    """A tree/paths-info item for a file."""
    out: dict[str, Any] = {"type": "file", "oid": entry["blobId"], "size": entry["size"], "path": path}
    if entry["lfs"]:
        pointer_size = len(lfs_pointer(entry["sha256"], entry["size"]))
        out["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": pointer_size}
    return out


def dir_json(tree: dict, path: str) -> dict:
    """A tree/paths-info item for a folder."""
    return {"type": "directory", "oid": _dir_oid(tree, path), "size": 0, "path": path}


def folders(tree: dict) -> set[str]:
    """Every folder implied by the file paths of a tree."""
    out = set()
    for path in tree:
        parts = path.split("/")[:-1]
        out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return out


def _last_commits(store: Store, repo: Repo, head: str, paths: list[str]) -> dict[str, dict]:
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


def with_last_commits(store: Store, repo: Repo, head: str, items: list[dict]) -> list[dict]:
    """Add ``lastCommit`` to tree items (the ``expand=True`` view)."""
    info = _last_commits(store, repo, head, [item["path"] for item in items])
    for item in items:
        if item["path"] in info:
            item["lastCommit"] = info[item["path"]]
    return items
