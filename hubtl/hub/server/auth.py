"""Who may do what on the Hub server: the bearer-token checks and the signatures of LFS upload URLs."""

from __future__ import annotations

import hashlib
import hmac
import re
import time

from fastapi import Request

from .errors import BadRequest, RepoNotFound
from .names import SHA256_RE, Repo
from .responses import HubHTTPError
from .store import Store

UPLOAD_URL_TTL_S = 3600


def authorized(request: Request, token: str | None) -> bool:
    """Whether the request has ``Authorization: Bearer <token>`` (or the server has no token)."""
    if token is None:
        return True
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def require_write(request: Request, token: str | None) -> None:
    """401 unless the request may write."""
    if authorized(request, token):
        return
    if request.headers.get("authorization"):
        raise HubHTTPError(401, "Invalid credentials in Authorization header")
    raise HubHTTPError(401, "Write access requires a token: send 'Authorization: Bearer <token>'")


def readable_meta(store: Store, request: Request, token: str | None, repo: Repo) -> dict:
    """The repo's metadata if it exists and the caller may read it (RepoNotFound otherwise, private or missing)."""
    meta = store.repo_meta(repo)
    if meta is None or (meta.get("private") and not authorized(request, token)):
        raise RepoNotFound(repo.id)
    return meta


def upload_signature(token: str | None, oid: str, size: int, expires: int) -> str:
    """HMAC that authorises one LFS upload URL (the client PUTs without auth headers, like to S3)."""
    key = (token or "").encode()
    return hmac.new(key, f"{oid}:{size}:{expires}".encode(), hashlib.sha256).hexdigest()


def signed_upload_query(token: str | None, oid: str, size: int) -> str:
    """The query string of an LFS upload URL for this object, valid for an hour."""
    expires = int(time.time()) + UPLOAD_URL_TTL_S
    return f"size={size}&expires={expires}&sig={upload_signature(token, oid, size, expires)}"


def check_upload_url(token: str | None, oid: str, request: Request) -> int:
    """Validate a signed LFS upload URL and return the size it allows."""
    if not SHA256_RE.fullmatch(oid):
        raise BadRequest("Invalid LFS oid")
    params = request.query_params
    if not all(re.fullmatch(r"[0-9]{1,20}", params.get(key, "")) for key in ("size", "expires")):
        raise BadRequest("Invalid LFS upload URL: ask the batch API for a new one")
    size, expires = int(params["size"]), int(params["expires"])
    sig = params.get("sig", "").encode()
    if expires < time.time() or not hmac.compare_digest(sig, upload_signature(token, oid, size, expires).encode()):
        raise HubHTTPError(403, "LFS upload URL is invalid or expired: ask the batch API for a new one")
    return size
