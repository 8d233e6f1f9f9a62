"""`hubtl demo`: fine-tune, push with the card, load back by Hub ID, predict: against a local Hub or a given one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi, ModelCard

from hubtl.demo import EXAMPLES, LOCAL_REPO_ID, run_demo
from hubtl.hub.server import DEFAULT_USER, running_server, use_endpoint

#: Small and fast: the tiny BERT instead of MiniLM, a slice of the shipped SST-2 data.
FAST = ["--num_train_epochs", "2", "--dataset.max_train_samples", "128", "--dataset.max_eval_samples", "64"]


def prediction_lines(output: str) -> list[str]:
    """The demo's printed predictions: '<label> <score> <text>'."""
    return [line for line in output.splitlines() if re.match(r"\s+(negative|positive)\s+\d\.\d{3}\s", line)]


def test_demo_with_its_own_local_hub(tiny_bert: str, tmp_path: Path, hf_home: Path,
                                     monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert run_demo(workdir=tmp_path / "demo", overrides=["--backbone", tiny_bert, *FAST]) == 0
    output = capsys.readouterr().out
    assert len(prediction_lines(output)) == len(EXAMPLES)
    assert "[4/4]" in output and "/commit/" in output

    readme = (tmp_path / "demo" / "model" / "README.md").read_text()
    assert f'TransferModel.from_pretrained("{LOCAL_REPO_ID}")' in readme
    # The local Hub's data stays in the workdir, and the download went to the demo's own cache, not the user's.
    assert (tmp_path / "demo" / "hub").is_dir()
    assert any((tmp_path / "demo" / "hf-cache").glob("models--demo--sst2-minilm"))
    assert not any(hf_home.rglob("models--demo--sst2-minilm"))
    assert os.environ.get("HF_ENDPOINT") is None  # the process's client is restored


def test_demo_uses_a_given_hub(tiny_bert: str, tmp_path: Path, hf_home: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    with running_server(tmp_path / "hub", token="t0ken") as url:
        monkeypatch.setenv("HF_TOKEN", "t0ken")
        monkeypatch.setenv("HF_ENDPOINT", url)
        assert run_demo(workdir=tmp_path / "demo", overrides=["--backbone", tiny_bert, *FAST]) == 0
        repo_id = f"{DEFAULT_USER}/hubtl-demo-sst2-minilm"
        assert repo_id in capsys.readouterr().out
        with use_endpoint(url):
            card = ModelCard.load(repo_id, token="t0ken")
        assert card.data.library_name == "hubtl" and card.data.eval_results
        assert "model.safetensors" in HfApi(endpoint=url).list_repo_files(repo_id)
    assert not (tmp_path / "demo" / "hub").exists()  # no local server was started


def test_demo_needs_a_login_on_a_given_hub(tmp_path: Path, hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hubtl.errors import HubError

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    with running_server(tmp_path / "hub", token="t0ken") as url:
        with pytest.raises(HubError, match="Log in"):
            run_demo(workdir=tmp_path / "demo", endpoint=url)


def test_hubtl_demo_end_to_end(tmp_path: Path) -> None:
    """The README's main job, as a user runs it: real MiniLM weights, the shipped SST-2 subset, a local Hub."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_HOME"] = str(tmp_path / "hf-home")
    done = subprocess.run([sys.executable, "-m", "hubtl.cli", "demo", "--workdir", str(tmp_path / "demo")],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = prediction_lines(done.stdout)
    assert [line.split()[0] for line in lines] == ["positive", "negative", "positive", "negative"]
    accuracy = float(re.search(r"evaluation accuracy (\d\.\d+)", done.stdout).group(1))
    assert accuracy > 0.75  # a linear probe on MiniLM features, 2,000 SST-2 sentences
    card = ModelCard.load(tmp_path / "demo" / "model" / "README.md")
    assert card.data.eval_results[0].metric_value == pytest.approx(accuracy, abs=1e-4)
