"""Fuzzing the self-hosted Hub server over real HTTP with hypothesis: hostile input never gets a 5xx.

One server per test (with a token and a populated repo), many examples per server. Every example
sends one raw request (``http.client`` sends paths exactly as written), with the token or without.
After each test: ``/api/health`` still answers and nothing beside ``--root`` was created, changed
or removed (a "victim" folder sits next to root, and its path is one of the fuzzed values).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from huggingface_hub import HfApi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubtl.hub.server import running_server, use_endpoint

TOKEN = "fuzz-token"
FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
ALLOWED_5XX = {501}  # the Xet token routes answer 501 on purpose
README = "---\nlicense: mit\ntags: [a, b]\n---\n# fuzz\n"


@pytest.fixture(autouse=True)
def _client_env(tmp_path, monkeypatch):
    """Isolate the client used to populate the server."""
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)


class Hub:
    """A running server, its root and the victim folder beside it."""

    def __init__(self, url: str, sandbox: Path):
        self.url, self.sandbox = url, sandbox
        self.root, self.victim = sandbox / "root", sandbox / "victim"
        self.before = _snapshot_outside_root(sandbox)

    def send(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """One raw request; returns (status, headers, body)."""
        split = urlsplit(self.url)
        conn = http.client.HTTPConnection(split.hostname, split.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def check(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> int:
        """Send one request and assert that it did not fail on the server side."""
        status, resp_headers, answer = self.send(method, path, body, headers)
        assert status < 500 or status in ALLOWED_5XX, (method, path, (body or b"")[:300], status, answer[:500])
        range_error = status in (400, 416) and "Range" in (headers or {})  # starlette's FileResponse, plain text
        if status >= 400 and method != "HEAD" and not range_error:
            assert "error" in json.loads(answer) or "errors" in json.loads(answer), (path, answer[:300])
            assert resp_headers["X-Error-Message"], (path, answer[:300])
        return status

    def assert_intact(self) -> None:
        """The server still answers and nothing outside root changed."""
        assert self.send("GET", "/api/health")[0] == 200
        assert _snapshot_outside_root(self.sandbox) == self.before


def _snapshot_outside_root(sandbox: Path) -> dict[str, str]:
    """Every file and folder under ``sandbox`` except root/, with a content hash for files."""
    out = {}
    for path in sorted(sandbox.rglob("*")):
        rel = path.relative_to(sandbox).as_posix()
        if rel == "root" or rel.startswith("root/"):
            continue
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def hub(tmp_path):
    """A server with a token, a populated public repo (branch, tag, LFS file) and a private one."""
    sandbox = tmp_path / "sandbox"
    victim = sandbox / "victim"
    for folder in (victim / "vics" / "alice" / "model", sandbox / "vics" / "alice" / "model", victim / "x"):
        folder.mkdir(parents=True)
        (folder / "keep.txt").write_text("precious")
    with running_server(sandbox / "root", token=TOKEN) as url, use_endpoint(url):
        api = HfApi(endpoint=url, token=TOKEN)
        api.create_repo("alice/model")
        api.upload_file(path_or_fileobj=README.encode(), path_in_repo="README.md", repo_id="alice/model")
        api.upload_file(path_or_fileobj=b"hello", path_in_repo="d/a.txt", repo_id="alice/model")
        api.upload_file(path_or_fileobj=os.urandom(2000), path_in_repo="w.bin", repo_id="alice/model")
        api.create_branch("alice/model", branch="dev")
        api.create_tag("alice/model", tag="v1")
        api.create_repo("alice/secret", private=True)
        api.create_repo("alice/data", repo_type="dataset")
        hub = Hub(url, sandbox)
        yield hub
        hub.assert_intact()


# --------------------------------------------------------------------------- strategies

NASTY = [
    "..", ".", "../..", "../../victim", "%2e%2e", "%2E%2e", ".%2e", "%2f", "%2F..%2F", "..%2f..%2fvictim", "%5c",
    "..%5c..", "%00", "a%00b", "%ff", "%c0%ae", "%", "%zz", "~", "@{", "a..b", "refs", "refs%2Fheads%2Fmain",
    "refs%2Fpr%2F1", "x" * 300, "%e9", "%C3%A9", "%F0%9F%98%80", "a%20b", ".git", "a.lock", "HEAD", "-", "",
]  # fmt: skip
REAL = ["alice", "model", "secret", "data", "main", "dev", "v1", "d", "a.txt", "w.bin", "README.md", "hubtl"]


def segment() -> st.SearchStrategy[str]:
    """One URL path segment, as sent: real names, nasty encodings, or random text percent-encoded."""
    random_text = st.text(max_size=40).map(lambda s: quote(s, safe=""))
    loose_text = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=20).map(
        lambda s: quote(s, safe="/.~")
    )
    return st.one_of(st.sampled_from(REAL), st.sampled_from(NASTY), random_text, loose_text)


REAL_ROUTES = [
    ("GET", "/api/models/alice/model"), ("GET", "/api/models/alice/model/revision/dev"),
    ("GET", "/api/models/alice/model/tree/main/d"), ("GET", "/api/models/alice/model/refs"),
    ("GET", "/api/models/alice/model/commits/v1"), ("POST", "/api/models/alice/model/paths-info/main"),
    ("POST", "/api/models/alice/model/preupload/main"), ("POST", "/api/models/alice/model/commit/main"),
    ("POST", "/api/models/alice/model/branch/b"), ("DELETE", "/api/models/alice/model/branch/dev"),
    ("POST", "/api/models/alice/model/tag/main"), ("DELETE", "/api/models/alice/model/tag/v1"),
    ("GET", "/api/models/alice/model/xet-read-token/main"), ("GET", "/api/models/alice/secret"),
    ("GET", "/api/datasets/alice/data/tree/main"), ("GET", "/api/spaces/alice/model"),
    ("GET", "/api/models/model/refs"),
    ("GET", "/alice/model/resolve/main/d/a.txt"), ("HEAD", "/alice/model/resolve/v1/w.bin"),
    ("GET", "/datasets/alice/data/resolve/main/x"), ("GET", "/alice/secret/resolve/main/.gitattributes"),
    ("POST", "/alice/model.git/info/lfs/objects/batch"), ("POST", "/alice/model.git/info/lfs/objects/verify"),
    ("POST", "/datasets/alice/data.git/info/lfs/objects/batch"), ("PUT", "/api/lfs/objects/" + "0" * 64),
    ("POST", "/api/repos/create"), ("DELETE", "/api/repos/delete"), ("POST", "/api/repos/move"),
    ("POST", "/api/validate-yaml"), ("GET", "/api/whoami-v2"), ("GET", "/api/models"), ("GET", "/api/datasets"),
    ("POST", "/api/telemetry/x"),
]  # fmt: skip
QUERIES = ["", "recursive=true&expand=true", "limit=2&sort=id&direction=-1&full=1&cardData=1", "limit=%C2%B2",
           "create_pr=1", "size=1&expires=99999999999&sig=x", "filter=a&filter=b&search=mod&author=alice"]  # fmt: skip


@st.composite
def api_request(draw: st.DrawFn) -> tuple[str, str]:
    """(method, path): a real route with its method (sometimes another) and some segments fuzzed, or random."""
    seg = segment()
    if draw(st.integers(0, 9)) == 0:
        return draw(METHODS), "/" + "/".join(draw(st.lists(seg, max_size=6)))
    method, path = draw(st.sampled_from(REAL_ROUTES))
    if draw(st.integers(0, 4)) == 0:
        method = draw(METHODS)
    parts = path.split("/")
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        parts[draw(st.integers(1, len(parts) - 1))] = draw(seg)
    parts += draw(st.lists(seg, max_size=2))
    query = draw(st.sampled_from(QUERIES) | st.text(max_size=60).map(lambda s: quote(s, safe="=&")))
    return method, "/".join(parts) + (f"?{query}" if query else "")


def interesting_text(victim: str) -> st.SearchStrategy[str]:
    """Strings that mean something to the server (names, refs, paths), the victim's path and random text."""
    return st.one_of(
        st.sampled_from(REAL + NASTY + [victim, victim + "/vic", "model", "dataset", "space", "../x", "/etc/passwd",
                                        "a/../b", "\x00", "a\\b", "refs/heads/x", "0" * 64, "0" * 40]),  # fmt: skip
        st.text(max_size=30),
    )


def json_value(victim: str) -> st.SearchStrategy:
    """Random JSON, often shaped like the server's request bodies (right keys, wrong values)."""
    text = interesting_text(victim)
    scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), text)
    anything = st.recursive(
        scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=8
    )
    keys = ["name", "organization", "type", "private", "visibility", "content", "repoType", "operation",
            "transfers", "objects", "hash_algo", "oid", "size", "files", "path", "sample", "paths", "expand",
            "startingPoint", "tag", "message", "fromRepo", "toRepo"]  # fmt: skip
    shaped = st.fixed_dictionaries({}, optional={k: anything for k in keys})
    lfs_objects = st.fixed_dictionaries(
        {"objects": st.lists(st.fixed_dictionaries({}, optional={"oid": text, "size": anything}), max_size=3)}
    )
    return st.one_of(anything, shaped, lfs_objects)


def commit_line(victim: str) -> st.SearchStrategy:
    """One NDJSON commit line: shaped like the client's (header, file, lfsFile, deletes) or random."""
    text = interesting_text(victim)
    value = st.fixed_dictionaries(
        {},
        optional={
            "path": text,
            "content": st.one_of(text, st.binary(max_size=50).map(lambda b: base64.b64encode(b).decode())),
            "encoding": st.sampled_from(["base64", "utf-8", ""]),
            "oid": text,
            "algo": text,
            "size": st.integers(-5, 2**70),
            "summary": text,
            "description": text,
            "parentCommit": text,
        },
    )
    key = st.sampled_from(["header", "file", "lfsFile", "deletedFile", "deletedFolder", "copy"]) | text
    shaped = st.fixed_dictionaries({"key": key, "value": value}).map(json.dumps)
    return st.one_of(shaped, json_value(victim).map(json.dumps), st.text(max_size=40))


def headers() -> st.SearchStrategy[dict]:
    """Auth (the token, a wrong one, none) and a content type."""
    auth = st.sampled_from([{"Authorization": f"Bearer {TOKEN}"}, {"Authorization": "Bearer wrong"}, {}])
    ctype = st.sampled_from(["application/json", "application/x-ndjson", "application/x-www-form-urlencoded",
                             "multipart/form-data; boundary=xyz", "multipart/form-data", "text/plain",
                             None])  # fmt: skip
    rng = st.sampled_from([None, "bytes=0-3", "bytes=-1", "bytes=5-2", "bytes=x", "bytes=0-0,1-1,2-2"])

    def build(a: dict, c: str | None, r: str | None) -> dict:
        out = dict(a)
        if c:
            out["Content-Type"] = c
        if r:
            out["Range"] = r
        return out

    return st.builds(build, auth, ctype, rng)


METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"])


# --------------------------------------------------------------------------- tests


def test_random_requests_on_every_route(hub):
    """Random methods, paths (encoded dots and slashes, NUL, unicode, very long), headers and bodies."""
    victim = str(hub.victim)
    body = st.one_of(
        st.none(), st.binary(max_size=200), json_value(victim).map(lambda v: json.dumps(v).encode()),
        st.lists(commit_line(victim), max_size=3).map(lambda lines: "\n".join(lines).encode()),
    )  # fmt: skip

    @settings(FUZZ, max_examples=400)
    @given(request=api_request(), body=body, headers=headers())
    def run(request: tuple[str, str], body: bytes | None, headers: dict) -> None:
        hub.check(*request, body, headers)

    run()


BODY_ROUTES = [
    ("POST", "/api/repos/create"),
    ("DELETE", "/api/repos/delete"),
    ("POST", "/api/validate-yaml"),
    ("POST", "/alice/model.git/info/lfs/objects/batch"),
    ("POST", "/alice/model.git/info/lfs/objects/verify"),
    ("POST", "/api/models/alice/model/preupload/main"),
    ("POST", "/api/models/alice/model/paths-info/main"),
    ("POST", "/api/models/alice/model/branch/fuzzed"),
    ("POST", "/api/models/alice/model/tag/main"),
    ("POST", "/api/datasets/alice/data/paths-info/main"),
]


def test_random_json_bodies_on_body_routes(hub):
    """Every route that reads a JSON body, with the token, gets random (often well-keyed) JSON."""
    victim = str(hub.victim)

    @FUZZ
    @given(route=st.sampled_from(BODY_ROUTES), value=json_value(victim), with_token=st.booleans())
    def run(route: tuple[str, str], value, with_token: bool) -> None:
        auth = {"Authorization": f"Bearer {TOKEN}"} if with_token else {}
        hub.check(route[0], route[1], json.dumps(value).encode(), {**auth, "Content-Type": "application/json"})

    run()
    assert hub.send("GET", "/api/models/alice/model")[0] in (200, 404)  # it may have been deleted on purpose


def test_random_form_bodies_on_paths_info(hub):
    """paths-info takes a form (what HfApi.get_paths_info sends): random forms and multipart bytes."""
    victim = str(hub.victim)
    form = st.lists(st.tuples(st.sampled_from(["paths", "expand", "x"]), interesting_text(victim)), max_size=6)

    @FUZZ
    @given(fields=form, raw=st.binary(max_size=200), ctype=headers())
    def run(fields: list[tuple[str, str]], raw: bytes, ctype: dict) -> None:
        path = "/api/models/alice/model/paths-info/main"
        encoded = "&".join(f"{quote(k)}={quote(v)}" for k, v in fields).encode()
        hub.check("POST", path, encoded, {"Content-Type": "application/x-www-form-urlencoded"})
        hub.check("POST", path, raw, ctype)

    run()


def test_random_commits(hub):
    """Random NDJSON commit payloads to a real branch, with the token; the repo stays readable."""
    victim = str(hub.victim)

    @FUZZ
    @given(lines=st.lists(commit_line(victim), max_size=5), branch=st.sampled_from(["main", "dev", "nope", "v1"]))
    def run(lines: list[str], branch: str) -> None:
        body = "".join(line + "\n" for line in lines).encode()
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson"}
        hub.check("POST", f"/api/models/alice/model/commit/{branch}", body, headers)

    run()
    status, _, answer = hub.send("GET", "/api/models/alice/model", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and json.loads(answer)["id"] == "alice/model"


def test_random_readme_front_matter(hub):
    """Committed READMEs with random YAML front matter never break repo info or listings."""
    tokens = list("ab:- &*[]{}!,'\"\n\t#?|>%@`.0123456789") + [
        "2001-13-45", "2020-01-01", "12:30:45", "!!int ", "!!float ", "!!binary ", "!!set ", "!!timestamp ",
        "!!omap ", "!!python/object:os.system ", "&a ", "*a", "<<: ", "? ", "\n  ", "- ", ": ", "tags: ", "datasets: ",
        "license: ", "library_name: ", ".nan", ".inf", "0x", "1e400", "~", "null", "\\ud800", "\\U0001F600",
    ]  # fmt: skip
    line = st.tuples(
        st.sampled_from(["", "", "  ", "- ", "  - "]),
        st.sampled_from(["tags", "datasets", "license", "library_name", "a", "b", "? x", "<<", "2020-01-01", "1",
                         "null"]),
        st.sampled_from([": ", ": ", ": &a ", ": &b ", ": *a", ": *b", ": !!int ", ": !!binary ", ": !!set ",
                         ": !!timestamp ", ": !!float ", ":"]),
        st.sampled_from(["", "x", "2001-13-45", "2020-01-01", "12:30:45", "1e400", ".nan", "[1, 2]", "{a: 1}",
                         "[*a, *a]", '"\\ud800"', "0x", "9" * 5000, "!!python/object:os.system x", "|", "[[[[", "5"]),
    ).map("".join)  # fmt: skip
    yaml_ish = st.lists(st.sampled_from(tokens), max_size=40).map("".join) | st.lists(line, max_size=8).map("\n".join)

    @settings(FUZZ, max_examples=60)
    @given(front=yaml_ish)
    def run(front: str) -> None:
        readme = f"---\n{front}\n---\n# card\n".encode()
        line = {"key": "file", "value": {"path": "README.md", "content": base64.b64encode(readme).decode()}}
        body = (json.dumps({"key": "header", "value": {"summary": "card"}}) + "\n" + json.dumps(line) + "\n").encode()
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert hub.check("POST", "/api/models/alice/model/commit/main", body, auth) == 200
        assert hub.check("GET", "/api/models/alice/model") == 200
        assert hub.check("GET", "/api/models?cardData=true&full=true") == 200
        hub.check("POST", "/api/validate-yaml", json.dumps({"content": readme.decode()}).encode())

    run()
