"""`hubtl hub serve` says when it accepts requests: one line with the address and the client's export line, and the
URL in --ready-file for scripts (removed again when the server stops)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from hubtl.cli import main as cli_main


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_serve_prints_one_ready_line_and_writes_the_ready_file(tmp_path: Path, stop: signal.Signals) -> None:
    ready = tmp_path / "ready.txt"
    ready.write_text("http://stale-from-an-earlier-run\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hubtl.cli", "hub", "serve", "--root", str(tmp_path / "hub"), "--port", "0",
         "--ready-file", str(ready)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    watchdog = threading.Timer(300, proc.kill)  # never hang the suite if the server does not come up
    watchdog.start()
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("hubtl hub ready at http://127.0.0.1:"), line + proc.stderr.read()  # type: ignore[union-attr]
        url = line.split(" ready at ", 1)[1].split(",", 1)[0]
        assert f"export HF_ENDPOINT={url} HF_HUB_DISABLE_XET=1" in line and str(tmp_path / "hub") in line
        assert ready.read_text() == url + "\n"  # written before the line was printed, the stale one gone
        with urllib.request.urlopen(f"{url}/api/health") as response:  # it accepts requests now
            assert json.load(response) == {"status": "ok"}
        proc.send_signal(stop)
        out, _ = proc.communicate(timeout=120)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + stop  # as a shell reports the signal that stopped it
    assert "ready" not in out and '"GET /api/health HTTP/1.1" 200' in out  # one ready line; then uvicorn's access log
    assert not ready.exists()  # the server no longer accepts requests


def test_serve_on_a_busy_port_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = cli_main(["hub", "serve", "--root", str(tmp_path / "hub"), "--port", str(port), "--ready-file", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"Cannot listen on 127.0.0.1:{port}" in err and "Pick another --port (0 picks a free one)" in err
    assert not (tmp_path / "r").exists()
