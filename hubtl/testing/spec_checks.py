"""Conformance checks of what gets saved and loaded: the spec, save/load, load safety, ONNX export, model names."""

from __future__ import annotations

import fnmatch
import glob
import json
import math
import os
import re
from collections.abc import Iterator
from typing import Any

from ..backbones import registry
from ..backbones.base import Backbone
from ..errors import HubtlError
from ..hub.client import offline
from .report import CheckFailed, CheckSkipped
from .subject import (
    UNKNOWN_MODEL,
    Subject,
    _beyond_tolerance,
    _max_diff,
    _registered_as,
    _require,
    _rtol,
)


def _json_problem(value: Any, where: str) -> str | None:
    """The first value inside `value` that does not survive JSON unchanged, as 'where: why', or None."""
    if value is None or isinstance(value, (bool, str)):
        return None
    if isinstance(value, int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is {value!r}, which JSON cannot hold; use a finite number or null"
    if isinstance(value, tuple):
        return f"{where} is a tuple {value!r:.60}; config.json turns it into a list, so the loaded spec differs: use a list"
    if isinstance(value, list):
        return next((p for i, v in enumerate(value) if (p := _json_problem(v, f"{where}[{i}]"))), None)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} has the key {key!r} ({type(key).__name__}); JSON keys are strings: use {str(key)!r}"
            if problem := _json_problem(item, f"{where}[{key!r}]"):
                return problem
        return None
    return f"{where} is a {type(value).__module__}.{type(value).__qualname__} ({value!r:.60}), not a JSON value"


def check_spec_json(s: Subject) -> str:
    """spec() survives config.json unchanged: only dicts with string keys, lists, strings, finite numbers, bools, None."""
    spec = s.backbone.spec()
    _require(isinstance(spec, dict), f"spec() returned a {type(spec).__name__}, not a dict.")
    problem = _json_problem(spec, "spec()")
    _require(problem is None, f"{problem}. hubtl saves spec() in config.json and rebuilds from what it reads back.")
    again = json.loads(json.dumps(spec, allow_nan=False))
    _require(again == spec, f"spec() changes through JSON: {json.dumps(again)[:200]} vs {spec!r:.200}.")
    return f"round-trips through JSON unchanged ({len(json.dumps(spec))} characters)"


#: Secrets by their well-known shapes: Hugging Face, GitHub, GitLab, OpenAI-style, Slack, AWS, JWTs, private keys.
_TOKEN_PATTERNS = re.compile(
    r"\b(hf_[A-Za-z0-9]{20,}|api_org_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|glpat-[A-Za-z0-9_-]{20,}|sk-[A-Za-z0-9_-]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}"
    r"|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})|-----BEGIN [A-Z ]*PRIVATE KEY-----"
)
#: Words in a spec key that say its value is a secret ('hub_token', 'apiKey', 'api-key', 'password', ...).
_SECRET_WORDS = {"token", "secret", "password", "passwd", "apikey", "credential", "credentials", "auth"}


def _secret_key(key: str) -> bool:
    """True for a key whose words name a secret (a token, a password, an API key)."""
    words = re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower())
    return bool(_SECRET_WORDS & set(words)) or ("api" in words and "key" in words)


def _looks_secret(text: str) -> str | None:
    """Why `text` looks like a token or secret (a known token shape, or a long high-entropy run), or None."""
    if _TOKEN_PATTERNS.search(text):
        return "an access token or key"
    for run in re.findall(r"[A-Za-z0-9+=]{32,}", text):  # without separators: long names split into words
        mixed = all(re.search(c, run) for c in ("[a-z]", "[A-Z]", "[0-9]"))
        counts = [run.count(c) for c in set(run)]
        entropy = -sum(n / len(run) * math.log2(n / len(run)) for n in counts)
        if mixed and entropy >= 4.0:
            return f"a secret (a {len(run)}-character high-entropy string)"
    return None


def _looks_local(text: str) -> str | None:
    """Why `text` looks like a path on this machine (absolute, home-relative, a file URL), or None."""
    if text.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", text):
        return "an absolute path"
    if text.startswith("~"):
        return "a home-relative path (~)"
    if text.lower().startswith("file:"):
        return "a file URL"
    return None


def _strings(value: Any, where: str) -> Iterator[tuple[str, str | None, str]]:
    """(where, key, string) for every string inside nested dicts and lists, keys included."""
    if isinstance(value, str):
        yield where, None, value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                yield f"{where} key", None, key
                if isinstance(item, str):
                    yield f"{where}[{key!r}]", key, item
                    continue
            yield from _strings(item, f"{where}[{key!r}]")


def check_spec_public(s: Subject) -> str:
    """spec() is published in config.json (and on the Hub): it holds no local path and nothing like a token."""
    spec = s.backbone.spec()
    _require(isinstance(spec, dict), f"spec() returned a {type(spec).__name__}, not a dict.")
    notes = []
    for where, key, text in _strings(spec, "spec()"):
        if where == "spec()['name']" and text == s.model_name and os.path.exists(text):
            notes.append("note: spec()['name'] is the local path create() was given; it is published as is")
            continue
        secret_key = key is not None and _secret_key(key) and bool(text.strip())
        why = _looks_local(text) or _looks_secret(text) or ("a secret (its key says so)" if secret_key else None)
        shown = f"{text[:6]}..." if why and ("secret" in why or "token" in why) else f"{text[:80]!r}"
        _require(
            why is None,
            f"{where} holds {shown}, which looks like {why}. hubtl publishes spec() in config.json and on the Hub: keep "
            "local paths and secrets out of it. Take weights files and tokens as create() arguments that spec() does "
            "not record (weights travel in model.safetensors; tokens come from the environment, e.g. HF_TOKEN).",
        )
    return "; ".join(["no local path, nothing like a token", *notes])


def check_spec(s: Subject) -> str:
    """spec() is JSON; save_files + from_spec rebuild the same architecture offline."""
    spec = s.backbone.spec()
    _require(isinstance(spec, dict), f"spec() returned a {type(spec).__name__}, not a dict.")
    for key in ("plugin", "name"):
        _require(key in spec, f"spec() lacks {key!r}; return {{'plugin': ..., 'name': ..., 'kwargs': {{...}}}}.")
    _require(
        spec["plugin"] == s.plugin_name,
        f"spec()['plugin'] is {spec['plugin']!r} but the plugin is registered as {s.plugin_name!r}; "
        "the registry finds the plugin of a saved model by this name.",
    )
    try:
        spec = json.loads(json.dumps(spec))
    except (TypeError, ValueError) as err:
        raise CheckFailed(f"spec() is not JSON-serialisable ({err}); keep only JSON values (no tuples of objects, paths, tensors).") from err
    version = getattr(s.plugin, "spec_version", None)
    _require(isinstance(version, int) and version >= 1, f"the plugin's spec_version is {version!r}; set an int >= 1.")
    files_dir = s.workdir / "spec" / "backbone"
    files_dir.parent.mkdir(parents=True, exist_ok=True)
    with offline():
        s.backbone.save_files(files_dir)
        try:
            rebuilt = s.plugin.from_spec(spec, files_dir)
        except Exception as err:
            raise CheckFailed(
                f"from_spec(spec, files_dir) failed with HF_HUB_OFFLINE=1 ({type(err).__name__}: {err}); it must rebuild "
                "from the spec and the files save_files() wrote, without downloading."
            ) from err
    _require(isinstance(rebuilt, Backbone), f"from_spec returned a {type(rebuilt).__name__}, not a hubtl.Backbone.")
    ours = {k: (tuple(v.shape), v.dtype) for k, v in s.backbone.state_dict().items()}
    theirs = {k: (tuple(v.shape), v.dtype) for k, v in rebuilt.state_dict().items()}
    missing, extra = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    _require(
        not missing and not extra,
        f"from_spec built a different architecture: {len(missing)} weights missing (e.g. {missing[:3]}), "
        f"{len(extra)} unexpected (e.g. {extra[:3]}).",
    )
    changed = [k for k in ours if ours[k] != theirs[k]]
    _require(not changed, f"from_spec built weights of other shapes or dtypes: {[(k, ours[k], theirs[k]) for k in changed[:3]]}.")
    _require(
        rebuilt.feature_dim == s.backbone.feature_dim and rebuilt.modality == s.backbone.modality,
        f"from_spec gave feature_dim={rebuilt.feature_dim}, modality={rebuilt.modality!r}; the original has "
        f"{s.backbone.feature_dim}, {s.backbone.modality!r}.",
    )
    _require(
        rebuilt.preprocessor(train=False).config() == s.backbone.preprocessor(train=False).config(),
        "from_spec rebuilt a backbone whose preprocessing differs: record size, mean, std (or tokenizer files) in the spec "
        f"or save_files. Original {s.backbone.preprocessor(train=False).config()}, rebuilt "
        f"{rebuilt.preprocessor(train=False).config()}.",
    )
    again = json.loads(json.dumps(rebuilt.spec()))
    _require(again == spec, f"the rebuilt backbone's spec() differs from the original: {again} vs {spec}.")
    return f"{len(ours)} weights rebuilt offline from {json.dumps(spec)[:120]}"


def check_save_load(s: Subject) -> str:
    """TransferModel save_pretrained -> from_pretrained (offline, here and in a fresh process) gives identical outputs.

    The original has run on the examples before saving and both sides then run on them in reverse order, and a fresh
    process hashes strings with another seed: state that is not saved (a vocabulary grown while preprocessing, or
    built in `set` / `hash()` order) changes the features and is caught.
    """
    from ..model import TransferModel

    model = TransferModel.from_backbone(s.backbone, labels=["first", "second"])
    model.eval()
    model.embed(s.examples)  # a vocabulary grown on the fly would now hold these, in this order
    target = s.workdir / "saved-model"
    with _registered_as(s.plugin_name, s.plugin), offline():
        model.save_pretrained(target)
        config = json.loads((target / "config.json").read_text())
        loaded = TransferModel.from_pretrained(target)
    spec = config["backbone"]
    _require(spec.get("plugin") == s.plugin_name, f"config.json names backbone plugin {spec.get('plugin')!r}.")
    probe = list(reversed(s.examples))
    before, after = model.embed(probe), loaded.embed(probe)
    diff, feature_scale = _max_diff(before, after), float(before.abs().max()) if before.numel() else 0.0
    _require(
        _beyond_tolerance(before, after, atol=_rtol(before.dtype) * feature_scale) == 0,
        f"features after save_pretrained/from_pretrained differ by up to {diff:.3g} (tolerance {_rtol(before.dtype):g} "
        "relative): some state is not a parameter or buffer (register it), from_spec builds a different preprocessing, "
        "or the preprocessing depends on the inputs it has seen (a vocabulary grown on the fly: save it with save_files).",
    )
    logits, loaded_logits = model.logits(probe), loaded.logits(probe)
    logit_diff, scale = _max_diff(logits, loaded_logits), float(logits.abs().max()) if logits.numel() else 0.0
    _require(
        _beyond_tolerance(logits, loaded_logits, atol=_rtol(logits.dtype) * scale) == 0,
        f"logits after save/load differ by up to {logit_diff:.3g}.",
    )
    fresh, seed = _fresh_process_features(s, target, probe)
    if fresh is None:
        where = "; not compared in a fresh process: the plugin is neither installed nor importable there"
    else:
        fresh_diff = _max_diff(before, fresh)
        _require(
            _beyond_tolerance(before, fresh, atol=_rtol(before.dtype) * feature_scale) == 0,
            f"features of the saved model loaded in a fresh process (PYTHONHASHSEED={seed}) differ by up to "
            f"{fresh_diff:.3g}: the rebuilt preprocessing depends on the process (a vocabulary in `set` or `hash()` "
            "order, say). Save what it needs with save_files, in a fixed order, and record a digest of it in config().",
        )
        where = f", also in a fresh process (PYTHONHASHSEED={seed})"
    return (
        f"identical features (max difference {diff:.1g}){where}; package={spec.get('package')!r}, "
        f"spec_version={spec.get('spec_version')}"
    )


_FRESH_LOAD = """
import importlib, json, sys
from safetensors.torch import save_file
import hubtl
from hubtl.errors import BackboneNotFoundError, PluginUnavailableError
model_dir, inputs, out, module, qualname = sys.argv[1:]
try:
    model = hubtl.TransferModel.from_pretrained(model_dir)
except (BackboneNotFoundError, PluginUnavailableError):
    if not module:
        sys.exit(3)
    hubtl.register_plugin(getattr(importlib.import_module(module), qualname))  # a plugin registered in code, not installed
    model = hubtl.TransferModel.from_pretrained(model_dir)
save_file({"features": model.embed(json.loads(open(inputs).read())).contiguous()}, out)
"""


def _fresh_process_features(s: Subject, model_dir: Any, examples: list[Any]) -> tuple[Any, str]:
    """Features of a saved model loaded in another Python process with another hash seed; None when that process
    cannot find the plugin (not installed, and its class not importable by name: made in a script or a function)."""
    import subprocess
    import sys

    from safetensors.torch import load_file

    paths = []
    for index, example in enumerate(examples):
        if isinstance(example, str):
            paths.append(example)
        else:  # PIL images, written losslessly
            path = s.workdir / f"fresh-input-{index}.png"
            example.save(path)
            paths.append(str(path))
    inputs, out = s.workdir / "fresh-inputs.json", s.workdir / "fresh-features.safetensors"
    inputs.write_text(json.dumps(paths))
    cls = type(s.plugin)
    module = sys.modules.get(cls.__module__)
    importable = cls.__module__ != "__main__" and getattr(module, cls.__qualname__, None) is cls and cls.name == s.plugin_name
    seed = "4321" if os.environ.get("PYTHONHASHSEED") != "4321" else "1234"
    env = {**os.environ, "PYTHONHASHSEED": seed, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # the plugin's module importable as it is here
    done = subprocess.run(
        [sys.executable, "-c", _FRESH_LOAD, str(model_dir), str(inputs), str(out),
         cls.__module__ if importable else "", cls.__qualname__],
        env=env, capture_output=True, text=True, timeout=600, check=False, cwd=os.getcwd(),
    )  # fmt: skip
    if done.returncode == 3:
        return None, seed
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-1:])
        raise CheckFailed(f"loading the saved model in a fresh process failed: {tail}")
    return load_file(str(out))["features"], seed


def check_load_safety(s: Subject) -> str:
    """Rebuilding from a saved spec reads only the model directory and library files, starts no process, runs no code from it."""
    from ..audit import watch
    from ..errors import ModelLoadError
    from ..layout import BACKBONE_DIR, check_backbone_files

    spec = json.loads(json.dumps(s.backbone.spec()))
    try:
        registry.check_spec_kwargs(s.plugin, spec.get("kwargs") or {})
    except ModelLoadError as err:
        raise CheckFailed(f"loading would refuse this spec: {err} Set `spec_kwargs` on the plugin to the kwargs it saves.") from err
    model_dir = s.workdir / "load-safety"
    files_dir = model_dir / BACKBONE_DIR
    model_dir.mkdir(parents=True, exist_ok=True)
    with offline():
        s.backbone.save_files(files_dir)
    try:
        check_backbone_files(files_dir, root=model_dir)
    except ModelLoadError as err:
        raise CheckFailed(f"save_files wrote a file loading refuses: {err}") from err
    with offline(), watch(model_dir) as seen:
        s.plugin.from_spec(spec, files_dir)
    _require(
        not seen.violations,
        f"from_spec did what loading a stranger's model must never do: {'; '.join(dict.fromkeys(seen.violations))}. "
        "Read only files inside files_dir (never a path taken from the spec), start no process, import or run no code "
        "from the model directory.",
    )
    return "from_spec read only the model directory and library files; no process, no code from the directory"


def check_onnx_export(s: Subject) -> str:
    """When the backbone declares 'onnx' in export_formats: hubtl.export writes an ONNX model whose onnxruntime logits match."""
    if "onnx" not in getattr(s.backbone, "export_formats", ()):
        raise CheckSkipped("the backbone does not declare 'onnx' in export_formats")
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise CheckSkipped(f"ONNX export needs onnxruntime and onnxscript (pip install 'hubtl[onnx]'): {err}") from err
    from ..errors import ExportError
    from ..export import export_model
    from ..model import TransferModel

    model = TransferModel.from_backbone(s.backbone, labels=["first", "second"])
    try:
        result = export_model(model, "onnx", s.workdir / "onnx-export")
    except ExportError as err:
        raise CheckFailed(f"the backbone declares 'onnx' in export_formats, but the ONNX export fails: {err}") from err
    return (
        f"onnxruntime gives PyTorch's logits (max |difference| {result.max_abs_diff:.1g}) on {result.checked_inputs} "
        "inputs of another batch size than the export's"
    )


def check_list_models(s: Subject) -> str:
    """list_models() returns strings, lists the model and filters by fnmatch pattern; checked by calling it only."""
    names = s.plugin.list_models()
    _require(
        isinstance(names, list) and all(isinstance(n, str) for n in names),
        f"list_models() returned {type(names).__name__} {str(names)[:80]}; return a list of model-name strings.",
    )
    nothing = f"{UNKNOWN_MODEL}*"
    stray = s.plugin.list_models(nothing)
    _require(
        isinstance(stray, list) and not stray,
        f"list_models({nothing!r}) returned {len(stray) if isinstance(stray, list) else stray!r} name(s) "
        f"(e.g. {list(stray)[:3] if isinstance(stray, list) else stray!r}) that do not match the pattern: it ignores "
        "`pattern`. Return only the names for which fnmatch.fnmatch(name, pattern) holds.",
    )
    is_path = os.path.exists(s.model_name)
    if not names:
        if is_path:
            raise CheckSkipped(
                f"list_models() is empty and the model is a path ({s.model_name}): a directory-based plugin cannot list "
                "every directory; create() from the path worked"
            )
        raise CheckFailed(f"list_models() is empty, yet create({s.model_name!r}) works: list the models the plugin can create.")
    if not is_path:
        _require(
            s.model_name in names,
            f"create({s.model_name!r}) works but list_models() does not list it; list every name the plugin creates.",
        )
    target = s.model_name if s.model_name in names else names[0]
    for pattern in (glob.escape(target), glob.escape(target[: max(1, len(target) // 2)]) + "*"):
        got = s.plugin.list_models(pattern)
        _require(
            isinstance(got, list) and target in got,
            f"list_models({pattern!r}) does not return {target!r}: filter names with fnmatch-style patterns.",
        )
        wrong = [n for n in got if not fnmatch.fnmatch(n, pattern)]
        _require(
            not wrong,
            f"list_models({pattern!r}) returned names that do not match it (e.g. {wrong[:3]}): filter with "
            "fnmatch.fnmatch(name, pattern).",
        )
    if is_path:
        return f"{len(names)} name(s) (the model is a path, which a directory-based plugin need not list); patterns filter"
    return f"{len(names)} name(s), {target!r} among them; patterns filter"


def check_unknown_model(s: Subject) -> str:
    """create() of a name that does not exist raises a HubtlError that says what to do."""
    try:
        with offline():
            s.plugin.create(UNKNOWN_MODEL, pretrained=False)
    except HubtlError as err:
        _require(bool(str(err).strip()), "the error for an unknown model has an empty message.")
        return f"{type(err).__name__}: {str(err)[:100]}"
    except Exception as err:
        raise CheckFailed(
            f"create({UNKNOWN_MODEL!r}) raised {type(err).__name__}: {str(err)[:200]}; raise a hubtl.BackboneNotFoundError "
            "(a HubtlError) whose message says which names exist or how to list them."
        ) from err
    raise CheckFailed(f"create({UNKNOWN_MODEL!r}) succeeded; unknown names must raise hubtl.BackboneNotFoundError.")


#: The checks, in the order they run; `check_backbone(..., checks=[...])` runs a subset.


#: An option no plugin takes: `create()` must refuse it rather than ignore it.
UNKNOWN_OPTION = "hubtl_kit_no_such_option"


def check_unknown_option(s: Subject) -> str:
    """create() refuses an option it does not take: a user's misspelt backbone_kwargs must not silently do nothing."""
    try:
        with offline():
            s.plugin.create(s.model_name, pretrained=False, **{**s.kwargs, UNKNOWN_OPTION: 1})
    except (HubtlError, TypeError) as err:  # hubtl turns an unexpected keyword's TypeError into a ConfigError
        _require(UNKNOWN_OPTION in str(err), f"the error for an unknown option does not name it: {str(err)[:200]}")
        return f"{type(err).__name__}: {str(err)[:100]}"
    except Exception as err:
        raise CheckFailed(
            f"create(..., {UNKNOWN_OPTION}=1) raised {type(err).__name__}: {str(err)[:200]}; raise a hubtl.ConfigError "
            "that names the option and the ones you take."
        ) from err
    raise CheckFailed(
        f"create(..., {UNKNOWN_OPTION}=1) succeeded: the option was ignored, so a user's misspelt backbone_kwargs would "
        "silently do nothing. Raise hubtl.ConfigError naming the options you take, or take no **kwargs."
    )
