"""The Hub server's FastAPI app: routes and wiring (``create_app``), and running it (``serve``, ``running_server``)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from . import auth
from .cards import InvalidYaml, front_matter
from .errors import EntryNotFound, RepoNotFound
from .lfs import add_lfs_routes
from .models import CreateRepoBody, DeleteRepoBody, ValidateYamlBody, read_json
from .names import DEFAULT_USER, check_file_path, make_repo
from .repo_api import add_repo_routes
from .responses import HubHTTPError, HubJSONResponse, add_error_handlers, header_value
from .store import Store
from .urls import PathGuard, base_url, path_segments, split_type_prefix

YAML_CONCURRENCY = 2  # YAML validations running at once (the route needs no token)


def create_app(root: str | Path, token: str | None = None) -> FastAPI:
    """Build the Hub-compatible FastAPI app serving the repos stored under ``root``.

    ``token``: when set, writes (and reads of private repos) need ``Authorization: Bearer <token>``.
    """
    store = Store(root)
    app = FastAPI(title="hubtl hub", docs_url=None, redoc_url=None, openapi_url=None,
                  default_response_class=HubJSONResponse)  # fmt: skip
    app.state.store, app.state.token = store, token
    app.add_middleware(PathGuard)
    add_error_handlers(app)
    _add_account_routes(app, store, token)
    add_lfs_routes(app, store, token)  # before the /api/{kind}/... catch-all
    add_repo_routes(app, store, token)

    @app.api_route("/{rest:path}", methods=["GET", "HEAD"])
    def resolve(request: Request) -> Response:
        """Download route: ``/<repo>/resolve/<rev>/<path>`` (and ``/datasets/...``)."""
        return _resolve_file(store, token, request)

    return app


def _add_account_routes(app: FastAPI, store: Store, token: str | None) -> None:
    """Routes not tied to one repo: health, whoami, create/delete repo, YAML check, telemetry."""
    yaml_slots = asyncio.Semaphore(YAML_CONCURRENCY)

    @app.get("/api/health")
    def health() -> dict:
        """Liveness probe."""
        return {"status": "ok"}

    @app.get("/api/whoami-v2")
    def whoami(request: Request) -> dict:
        """The single user of this server (401 with a wrong token)."""
        if token is not None and not auth.authorized(request, token):
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        role = {"role": "write", "displayName": "hubtl"}
        return {"type": "user", "id": DEFAULT_USER, "name": DEFAULT_USER, "fullname": DEFAULT_USER,
                "orgs": [], "auth": {"type": "access_token", "accessToken": role}}  # fmt: skip

    @app.post("/api/repos/create")
    async def create_repo(request: Request) -> JSONResponse:
        """Create a repo (409 if it exists)."""
        auth.require_write(request, token)
        data = await read_json(request, CreateRepoBody)
        repo = make_repo(data.type or "model", [data.organization or DEFAULT_USER, data.name])
        private = bool(data.private) or data.visibility == "private"
        url = f"{base_url(request)}/{repo.url_path}"
        if not await run_in_threadpool(store.create_repo, repo, private, DEFAULT_USER):
            return HubJSONResponse({"error": "You already created this repo", "url": url}, status_code=409)
        return HubJSONResponse({"url": url, "name": repo.id, "id": repo.id})

    @app.delete("/api/repos/delete")
    async def delete_repo(request: Request) -> dict:
        """Delete a repo (404 RepoNotFound if missing)."""
        auth.require_write(request, token)
        data = await read_json(request, DeleteRepoBody)
        repo = make_repo(data.type or "model", [data.organization or DEFAULT_USER, data.name])
        if not await run_in_threadpool(store.delete_repo, repo):
            raise RepoNotFound(repo.id)
        return {}

    @app.post("/api/validate-yaml")
    async def validate_yaml(request: Request) -> JSONResponse:
        """Check README front matter; 400 with ``errors`` when it is not valid (or refused) YAML.

        Open like on the Hub: the client's ``RepoCard.validate`` (called by ``push_to_hub``) sends no token.
        """
        data = await read_json(request, ValidateYamlBody)
        async with yaml_slots:
            try:
                await run_in_threadpool(front_matter, data.content)
            except InvalidYaml as exc:
                message = f"Invalid YAML: {exc}"
                return HubJSONResponse({"errors": [{"message": message}], "warnings": []}, status_code=400,
                                       headers={"X-Error-Message": header_value(message)})  # fmt: skip
        return HubJSONResponse({"errors": [], "warnings": []})

    @app.api_route("/api/telemetry/{rest:path}", methods=["GET", "HEAD", "POST"])
    def telemetry(rest: str) -> dict:
        """Accept and drop client telemetry."""
        return {}


def _resolve_file(store: Store, token: str | None, request: Request) -> Response:
    """GET/HEAD /[datasets/]<repo>/resolve/<rev>/<path>: serve a file with Hub headers."""
    repo_type, rest = split_type_prefix(path_segments(request)[1:])
    if len(rest) >= 4 and rest[2] == "resolve":
        repo_parts, revision, path_parts = rest[:2], rest[3], rest[4:]
    elif len(rest) >= 3 and rest[1] == "resolve":
        repo_parts, revision, path_parts = rest[:1], rest[2], rest[3:]
    else:
        raise HubHTTPError(404, "Not found")
    repo = make_repo(repo_type, repo_parts)
    path = check_file_path("/".join(path_parts))
    auth.readable_meta(store, request, token, repo)
    commit_id, commit = store.commit_at(repo, revision)
    entry = commit["tree"].get(path)
    if entry is None:
        raise EntryNotFound(path, commit_id)
    etag = entry["sha256"] if entry["lfs"] else entry["blobId"]
    headers = {"ETag": f'"{etag}"', "X-Repo-Commit": commit_id, "Accept-Ranges": "bytes"}
    if entry["lfs"]:
        headers.update({"X-Linked-Etag": f'"{entry["sha256"]}"', "X-Linked-Size": str(entry["size"])})
    return FileResponse(store.blob_path(entry["sha256"]), headers=headers, media_type="application/octet-stream")


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
