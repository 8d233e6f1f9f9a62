"""The git-lfs "basic" transfer: the batch API, the signed upload URLs it hands out, and verify."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from . import auth
from .errors import BadRequest
from .models import LfsBatchBody, LfsObject, LfsVerifyBody, check_declared_length, read_json
from .names import SHA256_RE, Repo, make_repo
from .responses import HubHTTPError, HubJSONResponse, too_large
from .store import Store
from .urls import base_url, split_type_prefix


def _batch_object(store: Store, token: str | None, base: str, repo: Repo, obj: LfsObject) -> dict:
    """One object of a batch answer: no actions if stored, else upload and verify URLs."""
    oid, size = obj.oid, obj.size
    if not SHA256_RE.fullmatch(oid) or size < 0:
        return {"oid": oid[:64], "size": max(size, 0), "error": {"code": 422, "message": "Invalid oid or size"}}
    if store.has_blob(oid, size):
        return {"oid": oid, "size": size}
    query = auth.signed_upload_query(token, oid, size)
    return {
        "oid": oid,
        "size": size,
        "authenticated": True,
        "actions": {
            "upload": {"href": f"{base}/api/lfs/objects/{oid}?{query}", "expires_in": auth.UPLOAD_URL_TTL_S},
            "verify": {"href": f"{base}/{repo.url_path}.git/info/lfs/objects/verify"},
        },
    }


async def _receive_blob(store: Store, request: Request, oid: str, size: int) -> None:
    """Stream an upload to a temporary file, check size and sha256, then install it as a blob.

    The temporary file is removed whatever happens (bad content, client gone, server shutting down).
    """
    check_declared_length(request, size)
    tmp = store.tmp_file()
    digest, received = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as fh:
            async for chunk in request.stream():
                received += len(chunk)
                if received > size:
                    raise too_large(size, "LFS upload")
                digest.update(chunk)
                fh.write(chunk)
            await run_in_threadpool(_flush, fh)
        if received != size or digest.hexdigest() != oid:
            raise BadRequest("Uploaded content does not match the announced sha256/size")
        await run_in_threadpool(store.install_blob, tmp, oid)
    finally:
        tmp.unlink(missing_ok=True)


def _flush(fh: Any) -> None:
    """Flush a file to disk."""
    fh.flush()
    os.fsync(fh.fileno())


def add_lfs_routes(app: FastAPI, store: Store, token: str | None) -> None:
    """Register the batch, upload and verify routes."""

    def repo_of(rest: str) -> Repo:
        repo_type, parts = split_type_prefix(rest.split("/"))
        return make_repo(repo_type, parts)

    @app.post("/{rest:path}.git/info/lfs/objects/batch")
    async def lfs_batch(rest: str, request: Request) -> JSONResponse:
        """LFS batch API (write access): 'basic' upload actions for objects not stored yet."""
        auth.require_write(request, token)
        repo = repo_of(rest)
        await run_in_threadpool(auth.readable_meta, store, request, token, repo)
        data = await read_json(request, LfsBatchBody)
        if data.operation != "upload":
            raise BadRequest("Only the 'upload' LFS operation is supported; download with /resolve/")
        if "basic" not in (data.transfers or ["basic"]):
            raise BadRequest("Only the 'basic' LFS transfer is supported")
        if data.hash_algo != "sha256":
            raise BadRequest("Only the 'sha256' LFS hash algorithm is supported")
        base = base_url(request)
        objects = await run_in_threadpool(lambda: [_batch_object(store, token, base, repo, o) for o in data.objects])
        return HubJSONResponse({"transfer": "basic", "objects": objects},
                               media_type="application/vnd.git-lfs+json")  # fmt: skip

    @app.put("/api/lfs/objects/{oid}")
    async def lfs_upload(oid: str, request: Request) -> dict:
        """Receive one LFS object through a signed URL from the batch answer (at most the signed size)."""
        size = auth.check_upload_url(token, oid, request)
        if not store.has_blob(oid, size):
            await _receive_blob(store, request, oid, size)
        return {}

    @app.post("/{rest:path}.git/info/lfs/objects/verify")
    async def lfs_verify(rest: str, request: Request) -> dict:
        """LFS verify (read access to the repo, as for downloads): 404 unless the object is stored."""
        repo = repo_of(rest)
        await run_in_threadpool(auth.readable_meta, store, request, token, repo)
        data = await read_json(request, LfsVerifyBody)
        if not SHA256_RE.fullmatch(data.oid) or not store.has_blob(data.oid, data.size):
            raise HubHTTPError(404, f"LFS object {data.oid[:64]} not found")
        return {}
