"""The self-hosted Hub server, driven by the real, unmodified huggingface_hub client over loopback HTTP.

No mocks: every test starts a real uvicorn server (``running_server``) on a free port, points the
client at it (``use_endpoint``) and talks HTTP. Raw attacks go through ``http.client``, which sends
paths exactly as written (httpx normalises ``..`` away before sending).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from hubtl.hub.server import DEFAULT_USER, running_server, use_endpoint

TOKEN = "s3cret-token"
README = """---
license: mit
library_name: hubtl
tags:
- image-classification
- transfer-learning
---
# A model
"""


@pytest.fixture(autouse=True)
def _client_env(tmp_path, monkeypatch):
    """Isolate the client: no telemetry, no stored token, a private HF_HOME."""
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture
def hub(tmp_path):
    """A running server with a token; the client of this process points at it."""
    root = tmp_path / "hub_root"
    with running_server(root, token=TOKEN) as url, use_endpoint(url):
        yield url, root


@pytest.fixture
def api(hub):
    """An authenticated client."""
    return HfApi(endpoint=hub[0], token=TOKEN)


def _raw(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """Send one request with the path exactly as given; return (status, headers, body)."""
    conn = http.client.HTTPConnection(urlsplit(url).hostname, urlsplit(url).port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()  # headers: case-insensitive
    finally:
        conn.close()


def _auth() -> dict:
    return {"Authorization": f"Bearer {TOKEN}"}


def _make_folder(folder: Path) -> dict[str, bytes]:
    """A model folder with text files, an empty file and LFS-bound binaries; returns its contents."""
    files = {
        "README.md": README.encode(),
        "config.json": json.dumps({"num_labels": 2}).encode(),
        "sub/dir/notes.txt": "héllo\n".encode(),
        "sub/data #1 é.txt": b"odd name",
        "empty.txt": b"",
        "model.safetensors": os.urandom(1000),  # LFS by extension (.gitattributes)
        "big.dat": os.urandom(2 * 1024 * 1024 + 17),  # LFS by size (and binary content)
    }
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return files


def _snapshot_contents(path: str) -> dict[str, bytes]:
    """All files of a downloaded snapshot, keyed by relative path."""
    root = Path(path)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_upload_folder_snapshot_download_and_info(api, hub, tmp_path):
    url, _ = hub
    repo_url = api.create_repo("alice/model")
    assert repo_url.repo_id == "alice/model"
    api.create_repo("alice/model", exist_ok=True)
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_repo("alice/model")
    assert exc.value.response.status_code == 409

    files = _make_folder(tmp_path / "folder")
    commit = api.upload_folder(repo_id="alice/model", folder_path=tmp_path / "folder", commit_message="add model")

    local = snapshot_download("alice/model", cache_dir=tmp_path / "cache")
    got = _snapshot_contents(local)
    assert got.pop(".gitattributes").count(b"filter=lfs") > 10  # created with the repo, like the Hub
    assert got == files

    info = api.model_info("alice/model")
    assert info.sha == commit.oid == Path(local).name
    assert info.last_modified is not None
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == set(files) | {".gitattributes"}
    assert siblings["big.dat"].lfs is not None and siblings["big.dat"].lfs.size == len(files["big.dat"])
    assert siblings["big.dat"].lfs.sha256 == hashlib.sha256(files["big.dat"]).hexdigest()
    assert siblings["model.safetensors"].lfs is not None
    assert siblings["config.json"].lfs is None and siblings["README.md"].lfs is None
    assert info.card_data.license == "mit"
    assert {"image-classification", "transfer-learning", "license:mit"} <= set(info.tags)

    assert sorted(api.list_repo_files("alice/model")) == sorted(siblings)
    root_tree = {(e.path, type(e).__name__) for e in api.list_repo_tree("alice/model")}
    assert ("sub", "RepoFolder") in root_tree and ("sub/dir/notes.txt", "RepoFile") not in root_tree
    deep = [e.path for e in api.list_repo_tree("alice/model", path_in_repo="sub", recursive=True)]
    assert deep == ["sub/dir", "sub/data #1 é.txt", "sub/dir/notes.txt"]

    api.create_repo("bob/other-model")
    assert [m.id for m in api.list_models(author="alice")] == ["alice/model"]
    assert [m.id for m in api.list_models(search="other")] == ["bob/other-model"]
    assert [m.id for m in api.list_models(filter="transfer-learning")] == ["alice/model"]

    # the module-level client functions (no endpoint argument) follow use_endpoint too
    path = hf_hub_download("alice/model", "sub/dir/notes.txt", cache_dir=tmp_path / "cache2")
    assert Path(path).read_bytes() == files["sub/dir/notes.txt"]
    assert url in api.endpoint

    api.delete_folder("sub", repo_id="alice/model")
    assert not [f for f in api.list_repo_files("alice/model") if f.startswith("sub/")]
    assert "sub/dir/notes.txt" in api.list_repo_files("alice/model", revision=commit.oid)


def test_commits_are_immutable_branches_and_tags(api, tmp_path):
    cache = tmp_path / "cache"
    api.create_repo("alice/hist")
    first = api.upload_file(path_or_fileobj=b"v1", path_in_repo="a.txt", repo_id="alice/hist").oid
    second = api.upload_file(path_or_fileobj=b"v2", path_in_repo="a.txt", repo_id="alice/hist").oid
    assert first != second
    assert Path(hf_hub_download("alice/hist", "a.txt", revision=first, cache_dir=cache)).read_bytes() == b"v1"
    assert Path(hf_hub_download("alice/hist", "a.txt", revision=second, cache_dir=cache)).read_bytes() == b"v2"
    assert Path(hf_hub_download("alice/hist", "a.txt", cache_dir=cache)).read_bytes() == b"v2"
    assert [c.commit_id for c in api.list_repo_commits("alice/hist")][:2] == [second, first]

    # branch from main, commit (inline + LFS) to it, main unchanged
    api.create_branch("alice/hist", branch="dev")
    api.create_branch("alice/hist", branch="dev", exist_ok=True)
    weights = os.urandom(4096)
    dev = api.create_commit(
        "alice/hist",
        operations=[
            CommitOperationAdd("a.txt", b"dev"),
            CommitOperationAdd("w.bin", weights),
        ],
        commit_message="dev work",
        revision="dev",
    ).oid
    refs = {b.name: b.target_commit for b in api.list_repo_refs("alice/hist").branches}
    assert refs == {"main": second, "dev": dev}
    for rev in ("dev", dev):
        snap = _snapshot_contents(snapshot_download("alice/hist", revision=rev, cache_dir=tmp_path / f"c-{rev}"))
        assert snap["a.txt"] == b"dev" and snap["w.bin"] == weights
    assert "w.bin" not in api.list_repo_files("alice/hist")
    assert api.model_info("alice/hist", revision="dev").sha == dev

    # delete a file: gone at the new head, still there at the old commit
    third = api.create_commit(
        "alice/hist", operations=[CommitOperationDelete("a.txt")], commit_message="rm", parent_commit=second
    ).oid
    assert "a.txt" not in api.list_repo_files("alice/hist")
    assert "a.txt" in api.list_repo_files("alice/hist", revision=second)
    with pytest.raises(HfHubHTTPError) as exc:  # stale parent_commit is refused
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/hist", parent_commit=second)
    assert exc.value.response.status_code == 412

    api.create_branch("alice/hist", branch="feat/x", revision=first)
    feat = api.upload_file(path_or_fileobj=b"feat", path_in_repo="f.txt", repo_id="alice/hist", revision="feat/x").oid
    assert Path(hf_hub_download("alice/hist", "f.txt", revision="feat/x", cache_dir=cache)).read_bytes() == b"feat"
    assert api.model_info("alice/hist", revision="feat/x").sha == feat
    api.delete_branch("alice/hist", branch="feat/x")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("alice/hist", revision="feat/x")

    api.create_tag("alice/hist", tag="v1.0", revision=first)
    assert Path(hf_hub_download("alice/hist", "a.txt", revision="v1.0", cache_dir=cache)).read_bytes() == b"v1"
    assert api.model_info("alice/hist").sha == third


def test_client_errors_are_the_hub_ones(api, tmp_path):
    cache = tmp_path / "cache"
    api.create_repo("alice/errs")
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/errs")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("alice/missing")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/missing", "x.txt", cache_dir=cache)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("alice/errs", "x.txt", revision="no-such-branch", cache_dir=cache)
    with pytest.raises(RevisionNotFoundError):
        api.model_info("alice/errs", revision="0" * 40)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("alice/errs", "nope.txt", cache_dir=cache)
    with pytest.raises(RevisionNotFoundError):
        api.upload_file(path_or_fileobj=b"x", path_in_repo="y.txt", repo_id="alice/errs", revision="no-branch")
    assert api.file_exists("alice/errs", "x.txt") and not api.file_exists("alice/errs", "y.txt")


def test_writes_need_the_token_and_private_repos_are_hidden(api, hub, tmp_path):
    url, _ = hub
    anonymous, wrong = HfApi(endpoint=url, token=False), HfApi(endpoint=url, token="wrong")
    for client in (anonymous, wrong):
        with pytest.raises(HfHubHTTPError) as exc:
            client.create_repo("eve/repo")
        assert exc.value.response.status_code == 401
    api.create_repo("alice/public")
    with pytest.raises(HfHubHTTPError) as exc:
        anonymous.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/public")
    assert exc.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as exc:
        wrong.create_branch("alice/public", branch="evil")
    assert exc.value.response.status_code == 401
    status, _, body = _raw(url, "POST", "/alice/public.git/info/lfs/objects/batch", json.dumps({}).encode())
    assert status == 401 and "error" in json.loads(body)
    assert anonymous.model_info("alice/public").sha  # public reads are open

    api.create_repo("alice/secret", private=True)
    api.upload_file(path_or_fileobj=b"hidden", path_in_repo="s.txt", repo_id="alice/secret")
    assert api.model_info("alice/secret").private is True
    with pytest.raises(RepositoryNotFoundError):
        anonymous.model_info("alice/secret")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/secret", "s.txt", cache_dir=tmp_path / "c", token=False)
    path = hf_hub_download("alice/secret", "s.txt", cache_dir=tmp_path / "c", token=TOKEN)
    assert Path(path).read_bytes() == b"hidden"
    assert [m.id for m in anonymous.list_models(author="alice")] == ["alice/public"]
    assert api.whoami()["name"] == DEFAULT_USER


def test_path_traversal_is_refused(api, hub, tmp_path):
    url, root = hub
    api.create_repo("alice/safe")
    api.upload_file(path_or_fileobj=b"ok", path_in_repo="ok.txt", repo_id="alice/safe")
    ndjson = "application/x-ndjson"
    for path in ("../x", "/abs", "a/../../x", "a\\..\\x", ".git/config", "a//b", "nul\x00"):
        lines = [
            {"key": "header", "value": {"summary": "evil"}},
            {"key": "file", "value": {"path": path, "content": base64.b64encode(b"pwn").decode()}},
        ]
        body = "".join(json.dumps(line) + "\n" for line in lines).encode()
        headers = {**_auth(), "Content-Type": ndjson}
        status, _, _ = _raw(url, "POST", "/api/models/alice/safe/commit/main", body, headers)
        assert status == 400, path
    attacks = [
        ("POST", "/api/models/../../etc/commit/main"),
        ("GET", "/api/models/alice/../../../etc"),
        ("GET", "/alice/safe/resolve/main/%2e%2e/%2e%2e/%2e%2e/meta.json"),
        ("GET", "/alice/safe/resolve/main/..%2F..%2Fmeta.json"),
        ("GET", "/alice/safe/resolve/main/%2Fetc%2Fpasswd"),
        ("GET", "/alice/safe/resolve/main/a%5C..%5Cb"),
        ("GET", "/alice/..%2F..%2Fsafe/resolve/main/ok.txt"),
        ("GET", "/alice/safe/resolve/..%2F..%2Fmeta.json/ok.txt"),
    ]
    for method, path in attacks:
        status, _, body = _raw(url, method, path, b"{}" if method == "POST" else None, _auth())
        assert status == 400, (path, status, body)
        assert "error" in json.loads(body)
    for payload in ({"name": ".."}, {"name": "ok", "organization": "../x"}, {"name": "a/b"}, {"name": "x" * 200}):
        status, _, _ = _raw(url, "POST", "/api/repos/create", json.dumps(payload).encode(), _auth())
        assert status == 400, payload
    status, _, _ = _raw(url, "PUT", "/api/lfs/objects/..%2F..%2Fx?size=1&expires=9999999999&sig=x", b"x")
    assert status == 400
    assert not (tmp_path / "x").exists() and not (root.parent / "etc").exists()
    assert api.list_repo_files("alice/safe") == [".gitattributes", "ok.txt"]


def test_lfs_upload_is_verified_and_ranges_work(api, hub):
    url, _ = hub
    api.create_repo("alice/lfs")
    data = os.urandom(5000)
    oid = hashlib.sha256(data).hexdigest()
    batch = {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}]}
    batch_url = "/alice/lfs.git/info/lfs/objects/batch"
    status, headers, body = _raw(url, "POST", batch_url, json.dumps(batch).encode(), _auth())
    assert status == 200
    href = urlsplit(json.loads(body)["objects"][0]["actions"]["upload"]["href"])
    upload_path = f"{href.path}?{href.query}"
    assert _raw(url, "PUT", upload_path, os.urandom(5000))[0] == 400  # wrong content for this oid
    assert _raw(url, "PUT", f"{href.path}?{href.query.replace('sig=', 'sig=0')}", data)[0] == 403
    # a commit cannot reference an object that was not uploaded
    lines = [{"key": "header", "value": {"summary": "s"}},
             {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid, "size": len(data)}}]
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    assert _raw(url, "POST", "/api/models/alice/lfs/commit/main", body, _auth())[0] == 400
    assert _raw(url, "PUT", upload_path, data)[0] == 200
    status, _, answer = _raw(url, "POST", "/api/models/alice/lfs/commit/main", body, _auth())
    assert status == 200
    commit = json.loads(answer)["commitOid"]

    status, headers, part = _raw(url, "GET", f"/alice/lfs/resolve/{commit}/w.bin", headers={"Range": "bytes=10-19"})
    assert status == 206 and part == data[10:20]
    status, headers, _ = _raw(url, "HEAD", "/alice/lfs/resolve/main/w.bin")
    assert status == 200 and headers["X-Repo-Commit"] == commit
    assert headers["X-Linked-Etag"].strip('"') == oid and int(headers["X-Linked-Size"]) == len(data)
    assert int(headers["content-length"]) == len(data)


def test_data_survives_a_restart(tmp_path):
    root = tmp_path / "hub_root"
    payload = os.urandom(3 * 1024 * 1024)
    with running_server(root, token=TOKEN) as url, use_endpoint(url):
        api = HfApi(endpoint=url, token=TOKEN)
        api.create_repo("alice/durable", private=True)
        sha = api.upload_file(path_or_fileobj=payload, path_in_repo="weights.bin", repo_id="alice/durable").oid
        api.create_branch("alice/durable", branch="stable")
    with running_server(root, token=TOKEN) as url, use_endpoint(url):
        api = HfApi(endpoint=url, token=TOKEN)
        assert api.model_info("alice/durable").sha == sha
        assert {b.name for b in api.list_repo_refs("alice/durable").branches} == {"main", "stable"}
        path = hf_hub_download("alice/durable", "weights.bin", revision="stable", cache_dir=tmp_path / "c", token=TOKEN)
        assert Path(path).read_bytes() == payload


def test_a_tampered_commit_record_serves_nothing_outside_the_root(tmp_path):
    root, outside = tmp_path / "hub_root", tmp_path / "outside.txt"
    outside.write_text("not the server's to serve")
    with running_server(root, token=TOKEN) as url, use_endpoint(url):
        api = HfApi(endpoint=url, token=TOKEN)
        api.create_repo("alice/tampered")
        sha = api.upload_file(path_or_fileobj=b"hello", path_in_repo="leak.txt", repo_id="alice/tampered").oid
        record_path = next(root.rglob(f"commits/{sha}.json"))
        record = json.loads(record_path.read_text())
        # blobs are stored at blobs/<id[:2]>/<id>: an id starting with ".." climbs from blobs/.. (the root)
        record["tree"]["leak.txt"]["sha256"] = os.path.relpath(outside, root)
        record_path.write_text(json.dumps(record))
        host = urlsplit(url)
        conn = http.client.HTTPConnection(host.hostname, host.port)
        conn.request("GET", f"/alice/tampered/resolve/{sha}/leak.txt")
        response = conn.getresponse()
        body = response.read()
    assert response.status >= 400 and b"not the server's" not in body


def test_a_huge_readme_still_gives_its_card_data(api):
    api.create_repo("alice/big-card")
    big = README + "x" * (3 * 1024 * 1024)  # the front matter leads; the body is never read for listings
    api.upload_file(path_or_fileobj=big.encode(), path_in_repo="README.md", repo_id="alice/big-card")
    info = api.model_info("alice/big-card")
    assert info.card_data is not None and info.card_data.get("license") == "mit"


def test_subprocess_client_uses_env_vars(tmp_path):
    """Another process only needs HF_ENDPOINT, HF_HUB_DISABLE_XET and a token in its environment."""
    script = (
        "import os, sys\n"
        "from huggingface_hub import HfApi, hf_hub_download\n"
        "api = HfApi()\n"
        "api.create_repo('alice/sub')\n"
        "api.upload_file(path_or_fileobj=os.urandom(2_000_000), path_in_repo='w.bin', repo_id='alice/sub')\n"
        "p = hf_hub_download('alice/sub', 'w.bin', cache_dir=sys.argv[1])\n"
        "print(os.path.getsize(p), api.model_info('alice/sub').sha)\n"
    )
    with running_server(tmp_path / "hub_root", token=TOKEN) as url:
        env = {**os.environ, "HF_ENDPOINT": url, "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": TOKEN}
        done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "c")], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        size, sha = done.stdout.split()
        assert int(size) == 2_000_000
        assert HfApi(endpoint=url, token=TOKEN).model_info("alice/sub").sha == sha


def test_open_server_bare_names_and_datasets(tmp_path):
    with running_server(tmp_path / "open") as url, use_endpoint(url):
        api = HfApi(endpoint=url, token=False)
        assert api.create_repo("solo").repo_id == f"{DEFAULT_USER}/solo"
        api.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="data.csv", repo_id="solo")
        assert api.list_repo_files(f"{DEFAULT_USER}/solo") == [".gitattributes", "data.csv"]
        assert [b.name for b in api.list_repo_refs("solo").branches] == ["main"]
        api.create_repo("alice/ds", repo_type="dataset")
        api.upload_file(path_or_fileobj=b"x\n", path_in_repo="train.txt", repo_id="alice/ds", repo_type="dataset")
        local = snapshot_download("alice/ds", repo_type="dataset", cache_dir=tmp_path / "c")
        assert (Path(local) / "train.txt").read_bytes() == b"x\n"
        assert api.dataset_info("alice/ds").sha == Path(local).name
        with pytest.raises(RepositoryNotFoundError):
            api.model_info("alice/ds")


# --------------------------------------------------------------------------- hostile input


def _ndjson(*lines) -> bytes:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).encode()


def _head_only(url: str, method: str, path: str, headers: dict) -> tuple[int, dict, bytes]:
    """Send the request line and headers only (a body is announced but never sent); return the answer.

    A server that reads the body before answering never answers: the socket timeout fails the test.
    """
    conn = http.client.HTTPConnection(urlsplit(url).hostname, urlsplit(url).port, timeout=20)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def test_repo_type_is_validated_on_delete_and_create(api, hub, tmp_path):
    url, root = hub
    victim = tmp_path / "v" / "vics" / "ns" / "name"
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("precious")
    api.create_repo("ns/name")
    for repo_type in (str(tmp_path / "v" / "vic"), "../../v/vic", "models", "", 5, ["model"], {"a": 1}):
        payload = {"type": repo_type, "organization": "ns", "name": "name"}
        for method, path in (("DELETE", "/api/repos/delete"), ("POST", "/api/repos/create")):
            status, headers, body = _raw(url, method, path, json.dumps(payload).encode(), _auth())
            assert status == 400, (method, repo_type, status, body)
            assert headers["X-Error-Message"] and "error" in json.loads(body)
    assert (victim / "keep.txt").read_text() == "precious"
    assert api.model_info("ns/name").id == "ns/name"  # the real repo is untouched too
    api.delete_repo("ns/name")  # and the client's own delete still works
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("ns/name")


def test_bodies_are_not_read_before_auth_and_are_capped(api, hub):
    url, _ = hub
    api.create_repo("alice/dos")
    huge = {"Content-Length": str(400 * 1024 * 1024), "Content-Type": "application/x-ndjson"}
    # no token: refused from the headers alone, before any of the 400 MiB is read
    for method, path in (
        ("POST", "/api/models/alice/dos/commit/main"),
        ("POST", "/api/models/alice/dos/preupload/main"),
        ("POST", "/api/models/alice/dos/branch/dev"),
        ("POST", "/api/repos/create"),
        ("DELETE", "/api/repos/delete"),
        ("POST", "/alice/dos.git/info/lfs/objects/batch"),
    ):
        status, headers, body = _head_only(url, method, path, huge)
        assert status == 401, (path, status, body)
        assert "token" in headers["X-Error-Message"]
    # with the token: JSON bodies above 16 MiB are refused from their Content-Length
    big_json = {**_auth(), "Content-Length": str(16 * 1024 * 1024 + 1), "Content-Type": "application/json"}
    for method, path in (("POST", "/api/repos/create"), ("POST", "/api/models/alice/dos/preupload/main"),
                         ("POST", "/api/validate-yaml"), ("POST", "/api/models/alice/dos/paths-info/main")):
        assert _head_only(url, method, path, big_json)[0] == 413, path
    # a commit to a missing repo or branch is refused before its body is read
    assert _head_only(url, "POST", "/api/models/alice/nope/commit/main", {**_auth(), **huge})[0] == 404
    assert _head_only(url, "POST", "/api/models/alice/dos/commit/nope", {**_auth(), **huge})[0] == 404
    # a commit line above 16 MiB is refused (the body is streamed line by line)
    line = json.dumps({"key": "file", "value": {"path": "x.txt", "content": "A" * (16 * 1024 * 1024 + 8)}})
    body = _ndjson({"key": "header", "value": {"summary": "big"}}, line)
    status, headers, _ = _raw(url, "POST", "/api/models/alice/dos/commit/main", body,
                              {**_auth(), "Content-Type": "application/x-ndjson"})  # fmt: skip
    assert status == 413 and "Commit line" in headers["X-Error-Message"]
    assert api.list_repo_files("alice/dos") == [".gitattributes"]
    assert _raw(url, "GET", "/api/health")[0] == 200


def test_lfs_uploads_are_bounded_by_the_signed_size_and_cleaned(api, hub):
    url, root = hub
    api.create_repo("alice/up")
    data = os.urandom(3000)
    oid = hashlib.sha256(data).hexdigest()
    batch = {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}]}
    _, _, answer = _raw(url, "POST", "/alice/up.git/info/lfs/objects/batch", json.dumps(batch).encode(), _auth())
    href = urlsplit(json.loads(answer)["objects"][0]["actions"]["upload"]["href"])
    upload = f"{href.path}?{href.query}"
    # announced larger than signed: refused before reading
    assert _head_only(url, "PUT", upload, {"Content-Length": str(400 * 1024 * 1024)})[0] == 413
    # longer, shorter or different content: refused, and no partial file stays behind
    for body in (data + b"x", data[:-1], os.urandom(3000)):
        status, _, _ = _raw(url, "PUT", upload, body)
        assert status in (400, 413), status
        assert list((root / "tmp").iterdir()) == []
    assert _raw(url, "PUT", upload, data)[0] == 200
    assert list((root / "tmp").iterdir()) == []
    for query in ("size=1&expires=x&sig=y", "size=%C2%B2&expires=1&sig=y", "size=1&expires=99999999999&sig=%C3%A9"):
        status, headers, _ = _raw(url, "PUT", f"{href.path}?{query}", b"x")
        assert status in (400, 403) and headers["X-Error-Message"], query


def test_stale_tmp_files_are_removed_at_startup(tmp_path):
    root = tmp_path / "hub_root"
    with running_server(root, token=TOKEN):
        pass
    old_file, old_dir, fresh = root / "tmp" / "a.tmp", root / "tmp" / "b.repo", root / "tmp" / "c.tmp"
    old_file.write_bytes(b"x" * 1000)
    (old_dir / "commits").mkdir(parents=True)
    fresh.write_bytes(b"in flight")
    two_hours_ago = time.time() - 7200
    for path in (old_file, old_dir / "commits", old_dir):
        os.utime(path, (two_hours_ago, two_hours_ago))
    with running_server(root, token=TOKEN):
        assert sorted(p.name for p in (root / "tmp").iterdir()) == ["c.tmp"]


ALIAS_BOMB = "---\n" + "a: &a [" + ",".join(['"lol"'] * 9) + "]\n" + "".join(
    f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcde", "bcdef")
) + "---\n"


def test_yaml_alias_bombs_are_refused_and_validation_stays_open(api, hub, tmp_path):
    url, _ = hub
    assert len(ALIAS_BOMB) < 400
    refused = (ALIAS_BOMB, "---\na: &a [*a]\n---\n", "---\na: 2001-13-45\n---\n", "---\n" + "[" * 5000 + "\n---\n")
    for content in refused:
        status, headers, body = _raw(url, "POST", "/api/validate-yaml", json.dumps({"content": content}).encode())
        assert status == 400, (content[:40], status)
        assert json.loads(body)["errors"] and headers["X-Error-Message"]
    assert _raw(url, "GET", "/api/health")[0] == 200
    ok = _raw(url, "POST", "/api/validate-yaml", json.dumps({"content": README, "repoType": "model"}).encode())
    assert ok[0] == 200 and json.loads(ok[2]) == {"errors": [], "warnings": []}

    # the real client validates cards without a token (ModelCard.push_to_hub does), so the route stays open
    from huggingface_hub import ModelCard

    api.create_repo("alice/card")
    ModelCard(README).push_to_hub("alice/card", token=TOKEN)
    assert api.model_info("alice/card").card_data.license == "mit"
    with pytest.raises(ValueError):
        ModelCard(ALIAS_BOMB + "# bomb\n").validate()

    # a README committed with a bomb, a recursive alias or odd shapes (raw: the client would validate it first)
    # never breaks repo info or listings
    for readme in (ALIAS_BOMB, "---\na: &a [*a]\n---\n", "---\ntags: 5\ndatasets: {x: 1}\nlibrary_name: [1]\n"
                   "? 2020-01-01\n: 1\nn: .nan\n---\n", "---\nx: \"\\U0001F600\"\n---\n"):  # fmt: skip
        content = base64.b64encode(readme.encode()).decode()
        body = _ndjson({"key": "header", "value": {"summary": "card"}},
                       {"key": "file", "value": {"path": "README.md", "content": content}})  # fmt: skip
        assert _raw(url, "POST", "/api/models/alice/card/commit/main", body, _auth())[0] == 200
        for path in ("/api/models/alice/card", "/api/models?author=alice&cardData=true&full=true"):
            status, _, answer = _raw(url, "GET", path)
            assert status == 200 and json.loads(answer), (readme, path)
    assert api.model_info("alice/card").sha


MALFORMED = [
    ("POST", "/api/repos/create", b"[1,2]"),
    ("POST", "/api/repos/create", b'"x"'),
    ("POST", "/api/repos/create", b'{"name": 5}'),
    ("POST", "/api/repos/create", b'{"name": "ok", "type": ["model"]}'),
    ("POST", "/api/repos/create", b"{not json"),
    ("POST", "/api/repos/create", b"[" * 10000 + b"]" * 10000),
    ("DELETE", "/api/repos/delete", b"[1]"),
    ("DELETE", "/api/repos/delete", b'{"name": "m", "type": {}}'),
    ("POST", "/alice/m.git/info/lfs/objects/batch", b'{"objects": 5}'),
    ("POST", "/alice/m.git/info/lfs/objects/batch", b'{"transfers": 5}'),
    ("POST", "/alice/m.git/info/lfs/objects/batch", b"[]"),
    ("POST", "/alice/m.git/info/lfs/objects/batch", b'{"objects": [{"oid": "x", "size": "big"}]}'),
    ("POST", "/alice/m.git/info/lfs/objects/verify", b"[1]"),
    ("POST", "/api/models/alice/m/preupload/main", b'{"files": [1]}'),
    ("POST", "/api/models/alice/m/preupload/main", b'{"files": 5}'),
    ("POST", "/api/models/alice/m/preupload/main", b'{"files": [{"path": "a", "size": "big"}]}'),
    ("POST", "/api/models/alice/m/commit/main", b"[1]\n"),
    ("POST", "/api/models/alice/m/commit/main", b'"str"\n'),
    ("POST", "/api/models/alice/m/commit/main", b'{"key": "deletedFolder", "value": {"path": 5}}\n'),
    ("POST", "/api/models/alice/m/commit/main", b'{"key": "file", "value": {"path": "a", "content": 5}}\n'),
    ("POST", "/api/models/alice/m/commit/main", b'{"key": "header", "value": []}\n'),
    ("POST", "/api/models/alice/m/commit/main", b'{"key": "copy", "value": {}}\n'),
    ("POST", "/api/models/alice/m/commit/main", b'{"key": "file", "value": {"path": "\\ud800", "content": ""}}\n'),
    ("POST", "/api/models/alice/m/paths-info/main", b'{"paths": 5}'),
    ("POST", "/api/models/alice/m/paths-info/main", b"[1]"),
    ("POST", "/api/models/alice/m/branch/dev", b"[1]"),
    ("POST", "/api/models/alice/m/branch/dev", b'{"startingPoint": 5}'),
    ("POST", "/api/models/alice/m/tag/main", b"[1]"),
    ("POST", "/api/models/alice/m/tag/main", b'{"tag": ["x"]}'),
    ("POST", "/api/validate-yaml", b"[1]"),
    ("POST", "/api/validate-yaml", b'{"content": 5}'),
    ("POST", "/api/models/alice/m/branch/" + "b" * 200, b"{}"),
    ("POST", "/api/models/alice/m/tag/main", json.dumps({"tag": "t" * 200}).encode()),
    ("POST", "/api/models/alice/m/branch/" + "%2B" * 99, b"{}"),
]


def test_malformed_bodies_answer_400_with_the_error_header(api, hub):
    url, _ = hub
    api.create_repo("alice/m")
    for method, path, body in MALFORMED:
        ctype = "application/x-ndjson" if "/commit/" in path else "application/json"
        status, headers, answer = _raw(url, method, path, body, {**_auth(), "Content-Type": ctype})
        assert status in (400, 422), (path, body[:80], status, answer[:300])
        assert headers["X-Error-Message"], (path, body[:80])
        assert "error" in json.loads(answer)
    assert api.list_repo_files("alice/m") == [".gitattributes"]
    assert {b.name for b in api.list_repo_refs("alice/m").branches} == {"main"}


def test_paths_info_through_the_real_client(api):
    api.create_repo("alice/paths")
    api.upload_file(path_or_fileobj=b"x", path_in_repo="d/x.txt", repo_id="alice/paths")
    api.upload_file(path_or_fileobj=os.urandom(100), path_in_repo="w.bin", repo_id="alice/paths")
    infos = api.get_paths_info("alice/paths", ["d/x.txt", "d", "w.bin", "missing.txt"])
    assert [(type(i).__name__, i.path) for i in infos] == [("RepoFile", "d/x.txt"), ("RepoFolder", "d"),
                                                            ("RepoFile", "w.bin")]  # fmt: skip
    assert infos[2].lfs is not None and infos[2].lfs.size == 100
    expanded = api.get_paths_info("alice/paths", "d/x.txt", expand=True)
    assert expanded[0].last_commit is not None


BAD_REF_NAMES = [
    "a..b", "a@{b", "a b", "a~b", "a^b", "a:b", "a?b", "a*b", "a[b", "a\\b", "a\tb", ".a", "a/.b", "a.lock",
    "a/b.lock/c", "a/", "a.", "a//b", "/a", "-a", "refs/heads/x", "refs/tags/v1", "x" * 101, "a" * 40, "é",
]  # fmt: skip


@pytest.mark.parametrize("name", BAD_REF_NAMES)
def test_bad_branch_and_tag_names_are_refused(api, name):
    api.create_repo("alice/refs")
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_branch("alice/refs", branch=name)
    assert exc.value.response.status_code == 400
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_tag("alice/refs", tag=name)
    assert exc.value.response.status_code == 400
    assert {b.name for b in api.list_repo_refs("alice/refs").branches} == {"main"}


def test_good_ref_names_and_reading_revisions_are_unchanged(api, tmp_path):
    api.create_repo("alice/goodrefs")
    main = api.model_info("alice/goodrefs").sha
    for name in ("feat/x", "v1.0", "release-2024_01+build", "a" * 100):
        api.create_branch("alice/goodrefs", branch=name)
        api.create_tag("alice/goodrefs", tag=f"t-{name}"[:100])
        assert api.model_info("alice/goodrefs", revision=name).sha == main
    assert api.model_info("alice/goodrefs", revision="refs/heads/main").sha == main
    assert api.model_info("alice/goodrefs", revision="refs/tags/t-v1.0").sha == main
    assert api.model_info("alice/goodrefs", revision=main[:7]).sha == main
    for missing in ("refs/pr/1", "refs/convert/parquet", "x" * 300, "a..b"):
        with pytest.raises(RevisionNotFoundError):
            api.model_info("alice/goodrefs", revision=missing)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("alice/goodrefs", ".gitattributes", revision="refs/pr/1", cache_dir=tmp_path / "c")


def test_lfs_verify_needs_read_access(api, hub):
    url, _ = hub
    api.create_repo("alice/vpriv", private=True)
    data = os.urandom(2000)
    oid = hashlib.sha256(data).hexdigest()
    batch = {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}]}
    _, _, answer = _raw(url, "POST", "/alice/vpriv.git/info/lfs/objects/batch", json.dumps(batch).encode(), _auth())
    actions = json.loads(answer)["objects"][0]["actions"]
    href = urlsplit(actions["upload"]["href"])
    assert _raw(url, "PUT", f"{href.path}?{href.query}", data)[0] == 200
    verify = urlsplit(actions["verify"]["href"]).path
    assert verify == "/alice/vpriv.git/info/lfs/objects/verify"
    body = json.dumps({"oid": oid, "size": len(data)}).encode()
    assert _raw(url, "POST", verify, body, _auth())[0] == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        status, resp_headers, _ = _raw(url, "POST", verify, body, headers)
        assert status == 404 and resp_headers["X-Error-Code"] == "RepoNotFound"
        # the old repo-less verify route does not confirm stored objects any more
        assert _raw(url, "POST", "/api/lfs/verify", body, headers)[0] == 404
    api.create_repo("alice/vpub")
    assert _raw(url, "POST", "/alice/vpub.git/info/lfs/objects/verify", body)[0] == 200  # public: like downloads
    missing = json.dumps({"oid": "0" * 64, "size": 1}).encode()
    assert _raw(url, "POST", "/alice/vpub.git/info/lfs/objects/verify", missing)[0] == 404
    # the real client's LFS upload (batch, upload, verify) still works on a private repo
    api.upload_file(path_or_fileobj=os.urandom(5000), path_in_repo="w.bin", repo_id="alice/vpriv")
    assert "w.bin" in api.list_repo_files("alice/vpriv")
