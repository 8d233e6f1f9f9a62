"""HTTP answers of the Hub server: ASCII-safe JSON, the Hub's error format and the HTTP status of each error."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .errors import BadRequest, EntryNotFound, ParentCommitMismatch, RepoNotFound, RevisionNotFound, StoreError

# status and X-Error-Code (which the client turns into RepositoryNotFoundError & co.) of each domain error
_STATUS = {
    BadRequest: (400, None),
    RepoNotFound: (404, "RepoNotFound"),
    RevisionNotFound: (404, "RevisionNotFound"),
    EntryNotFound: (404, "EntryNotFound"),
    ParentCommitMismatch: (412, None),
}


class HubHTTPError(Exception):
    """An error answered as Hub-style JSON, for what is HTTP's business (auth, sizes, methods, conflicts)."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, dict(headers or {})


def too_large(limit: int, what: str = "Request body") -> HubHTTPError:
    """A 413 for a body (or body line) above its limit."""
    return HubHTTPError(413, f"{what} larger than {limit} bytes: send less per request")


def invalid_body(exc: ValidationError, what: str = "request body") -> BadRequest:
    """A 400 naming the fields of a body that do not have the expected shape."""
    problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors()[:5])
    return BadRequest(f"Invalid {what}: {problems}")


def header_value(message: str) -> str:
    """``message`` as a safe HTTP header value: ASCII with escapes, at most 1000 characters."""
    return message.encode("unicode_escape").decode("ascii")[:1000].strip()


class HubJSONResponse(JSONResponse):
    """JSON with non-ASCII characters escaped, so that any string (even a lone surrogate) renders."""

    def render(self, content: Any) -> bytes:
        """Serialise ``content`` as ASCII JSON."""
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error_response(status: int, message: str, code: str | None = None, headers: dict | None = None) -> JSONResponse:
    """Render an error as ``{"error": message}`` with X-Error-Message (and X-Error-Code if given)."""
    out = {"X-Error-Message": header_value(message), **(headers or {})}
    if code:
        out["X-Error-Code"] = code
    return HubJSONResponse({"error": message}, status_code=status, headers=out)


def add_error_handlers(app: FastAPI) -> None:
    """Render every error as Hub-style JSON; nothing answers a bare 500."""

    @app.exception_handler(HubHTTPError)
    async def hub_error(request: Request, exc: HubHTTPError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.code, exc.headers)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> JSONResponse:
        status, code = _STATUS.get(type(exc), (400, None))
        commit = getattr(exc, "commit", None)
        return error_response(status, str(exc), code, {"X-Repo-Commit": commit} if commit else None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, "Invalid request: " + "; ".join(str(e.get("msg")) for e in exc.errors()[:5]))

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
        return Response(status_code=400)  # nobody reads it; avoids logging a traceback

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, f"Internal server error ({type(exc).__name__}): see the server log")
