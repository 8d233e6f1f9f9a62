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
