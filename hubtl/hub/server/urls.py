"""Request URLs: percent-decoded path segments, the guard refusing unsafe paths, repo-type prefixes, query flags."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from fastapi import Request

from .errors import BadRequest
from .names import KINDS
from .responses import error_response


def decode_segments(raw_path: bytes) -> list[str]:
    """Split a raw request path on '/' and percent-decode each segment (BadRequest on bad encoding)."""
    try:
        return [unquote(seg, errors="strict") for seg in raw_path.decode("ascii").split("/")]
    except (UnicodeDecodeError, UnicodeEncodeError) as exc:
        raise BadRequest("Invalid URL encoding") from exc


def path_segments(request: Request) -> list[str]:
    """The request path's segments, each percent-decoded on its own (so '%2F' stays inside its segment)."""
    return decode_segments(request.scope.get("raw_path") or request.url.path.encode())


def _unsafe_segment(segment: str) -> bool:
    """Whether a decoded URL segment could escape a directory ('..', '.', backslash, NUL...)."""
    if "\\" in segment or any(ord(c) < 32 for c in segment):
        return True
    return any(part in (".", "..") for part in segment.split("/"))


class PathGuard:
    """ASGI middleware rejecting any request whose path has '..'/'.' segments, backslashes or NULs."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Answer 400 for unsafe paths, pass everything else through."""
        if scope["type"] == "http":
            raw = scope.get("raw_path") or scope["path"].encode("utf-8")
            try:
                unsafe = any(_unsafe_segment(s) for s in decode_segments(raw.split(b"?", 1)[0]))
            except BadRequest:
                unsafe = True
            if unsafe:
                await error_response(400, "Invalid path in URL")(scope, receive, send)
                return
        await self.app(scope, receive, send)


def split_type_prefix(segments: list[str]) -> tuple[str, list[str]]:
    """Strip a ``datasets``/``spaces``/``models`` URL prefix, returning (repo type, rest)."""
    if segments and segments[0] in KINDS:
        return KINDS[segments[0]], segments[1:]
    return "model", segments


def query_flag(request: Request, name: str) -> bool:
    """Whether a boolean query parameter is set to a true value."""
    return request.query_params.get(name, "").lower() in ("1", "true", "yes")


def base_url(request: Request) -> str:
    """The server's base URL as seen by the client."""
    return str(request.base_url).rstrip("/")
