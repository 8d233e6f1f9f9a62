"""Request bodies of the Hub server: their shapes as pydantic models, read with size caps and validated."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Literal, TypeVar

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .responses import invalid_body, too_large

MAX_JSON_BODY = 16 * 1024 * 1024  # any JSON request body
MAX_COMMIT_LINE = 16 * 1024 * 1024  # one NDJSON line of a commit (inline files are base64 in it)
MAX_LIST_ITEMS = 10_000  # files of a preupload call, paths of a paths-info call (the client sends <= 500)

M = TypeVar("M", bound=BaseModel)
RepoType = Literal["model", "dataset", "space"]


class Body(BaseModel):
    """A request body: fields the server does not use are ignored, like on the Hub."""

    model_config = ConfigDict(extra="ignore")


class CreateRepoBody(Body):
    name: str
    organization: str | None = None
    type: RepoType | None = None
    private: bool | None = None
    visibility: str | None = None


class DeleteRepoBody(Body):
    name: str
    organization: str | None = None
    type: RepoType | None = None


class ValidateYamlBody(Body):
    content: str = ""
    repoType: str | None = None


class LfsObject(Body):
    oid: str
    size: int


class LfsBatchBody(Body):
    operation: str = "upload"
    transfers: list[str] | None = None
    objects: list[LfsObject] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    hash_algo: str = "sha256"


class LfsVerifyBody(Body):
    oid: str
    size: int | None = None


class PreuploadFile(Body):
    path: str
    size: int = Field(0, ge=0)
    sample: str = ""


class PreuploadBody(Body):
    files: list[PreuploadFile] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)


class PathsInfoBody(Body):
    paths: Annotated[list[str], Field(max_length=MAX_LIST_ITEMS)] | str = Field(default_factory=list)
    expand: bool = False

    @property
    def path_list(self) -> list[str]:
        """``paths`` as a list (a lone string is one path)."""
        return [self.paths] if isinstance(self.paths, str) else self.paths


class BranchBody(Body):
    startingPoint: str | None = None


class TagBody(Body):
    tag: str
    message: str | None = None


class CommitHeader(Body):
    summary: str | None = None
    description: str | None = None
    parentCommit: str | None = None


class FileValue(Body):
    path: str
    content: str
    encoding: str = "base64"


class LfsFileValue(Body):
    path: str
    algo: str = "sha256"
    oid: str
    size: int | None = None


class PathValue(Body):
    path: str


class HeaderLine(Body):
    key: Literal["header"]
    value: CommitHeader


class FileLine(Body):
    key: Literal["file"]
    value: FileValue


class LfsFileLine(Body):
    key: Literal["lfsFile"]
    value: LfsFileValue


class DeleteLine(Body):
    key: Literal["deletedFile", "deletedFolder"]
    value: PathValue


COMMIT_LINE = TypeAdapter(Annotated[HeaderLine | FileLine | LfsFileLine | DeleteLine, Field(discriminator="key")])


def parse_json(model: type[M], body: bytes) -> M:
    """Validate a JSON body against its model (BadRequest naming the bad fields); an empty body means ``{}``."""
    try:
        return model.model_validate_json(body if body.strip() else b"{}")
    except ValidationError as exc:
        raise invalid_body(exc) from None


def check_declared_length(request: Request, limit: int) -> None:
    """413 right away when the Content-Length header announces more than ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if re.fullmatch(r"[0-9]+", declared) and int(declared) > limit:
        raise too_large(limit)


def limited(request: Request, limit: int = MAX_JSON_BODY) -> Request:
    """The same request, whose body reads (``body()``, ``form()``) fail with a 413 beyond ``limit`` bytes."""
    check_declared_length(request, limit)
    received = 0

    async def receive() -> dict:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise too_large(limit)
        return message

    return Request(request.scope, receive)


async def read_json(request: Request, model: type[M]) -> M:
    """Read (at most 16 MiB) and validate a JSON body."""
    return parse_json(model, await limited(request).body())


async def read_paths_info(request: Request) -> PathsInfoBody:
    """The body of a paths-info call: a form (what ``HfApi.get_paths_info`` sends) or JSON."""
    capped = limited(request)
    if request.headers.get("content-type", "").startswith("application/json"):
        return parse_json(PathsInfoBody, await capped.body())
    form = await capped.form(max_files=0, max_fields=MAX_LIST_ITEMS + 10)
    try:
        return PathsInfoBody.model_validate({"paths": form.getlist("paths"), "expand": form.get("expand") or False})
    except ValidationError as exc:
        raise invalid_body(exc) from None


async def ndjson_lines(request: Request, max_line: int = MAX_COMMIT_LINE) -> AsyncIterator[bytes]:
    """The non-blank lines of an NDJSON body as they arrive; a line above ``max_line`` bytes is a 413."""
    pending = bytearray()
    async for chunk in request.stream():
        pending += chunk
        if b"\n" in chunk:
            *lines, rest = bytes(pending).split(b"\n")
            pending = bytearray(rest)
            for line in lines:
                if len(line) > max_line:
                    raise too_large(max_line, "Commit line")
                if line.strip():
                    yield line
        if len(pending) > max_line:
            raise too_large(max_line, "Commit line")
    if pending.strip():
        yield bytes(pending)
