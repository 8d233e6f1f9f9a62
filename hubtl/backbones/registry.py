"""The plugin registry: finds backbone plugins through the `hubtl.backbones` entry points.

Built-in plugins register through the same entry-point group as third-party packages, so there is
one path for all. Plugins are imported lazily, one at a time: loading a timm model never imports
transformers. A plugin that fails to import is recorded as unavailable with its error and never
breaks the others.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import logging
import re
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, TypeVar

from ..errors import BackboneNotFoundError, ConfigError, ModelLoadError, PluginUnavailableError
from .base import Backbone, BackbonePlugin

ENTRY_POINT_GROUP = "hubtl.backbones"
#: What a package name on PyPI looks like (PEP 508); anything else in a saved config is not repeated in a message
_PACKAGE_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,98}[A-Za-z0-9])?")

logger = logging.getLogger("hubtl")

P = TypeVar("P", bound=type[BackbonePlugin])


@dataclass
class PluginInfo:
    """What the registry knows about one plugin, loaded or not."""

    name: str
    package: str | None = None
    version: str | None = None
    modality: str | None = None
    error: str | None = None
    plugin: BackbonePlugin | None = None

    @property
    def available(self) -> bool:
        """True when the plugin imported and instantiated cleanly."""
        return self.plugin is not None


# The registry's only global state: plugins registered in this process, by name.
_registered: dict[str, PluginInfo] = {}
_entry_points: dict[str, EntryPoint] | None = None


def register_plugin(plugin: P) -> P:
    """Class decorator registering a plugin in this process (quick experiments; packages use entry points)."""
    instance = plugin() if isinstance(plugin, type) else plugin
    if not isinstance(instance, BackbonePlugin):
        raise ConfigError(f"{plugin!r} is not a hubtl.BackbonePlugin subclass or instance; it cannot be registered.")
    if not instance.name:
        raise ConfigError(f"Plugin {plugin!r} has no `name`; set the class attribute `name = '...'`.")
    _registered[instance.name] = _info_for(instance, package=instance.package or None)
    return plugin


def unregister_plugin(name: str) -> None:
    """Forget a plugin registered in this process (tests and notebooks)."""
    _registered.pop(name, None)


def _info_for(plugin: BackbonePlugin, package: str | None, version: str | None = None) -> PluginInfo:
    """Build the PluginInfo of a loaded plugin."""
    return PluginInfo(
        name=plugin.name,
        package=package or plugin.package or None,
        version=version,
        modality=plugin.modality or None,
        plugin=plugin,
    )


def _discover() -> dict[str, EntryPoint]:
    """Entry points of the `hubtl.backbones` group, by plugin name (first one wins)."""
    global _entry_points
    if _entry_points is None:
        found: dict[str, EntryPoint] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in found:
                logger.warning("Two packages register the backbone plugin %r; using %s.", ep.name, found[ep.name].value)
                continue
            found[ep.name] = ep
        _entry_points = found
    return _entry_points


def _load(name: str, ep: EntryPoint) -> PluginInfo:
    """Import one entry point; record the error instead of raising when it fails."""
    dist = getattr(ep, "dist", None)
    package = dist.metadata["Name"] if dist is not None else None
    version = dist.version if dist is not None else None
    try:
        obj = ep.load()
        plugin = obj() if isinstance(obj, type) else obj
        if not isinstance(plugin, BackbonePlugin):
            raise TypeError(f"{ep.value} is not a hubtl.BackbonePlugin subclass or instance")
    except Exception as err:  # a broken plugin must never break the registry
        logger.warning("Backbone plugin %r (%s) is unavailable: %s", name, package or ep.value, err)
        return PluginInfo(name=name, package=package, version=version, error=f"{type(err).__name__}: {err}")
    info = _info_for(plugin, package=package, version=version)
    info.name = name
    return info


def _plugin_info(name: str) -> PluginInfo | None:
    """Look one plugin up, importing its entry point on first use."""
    if name not in _registered:
        ep = _discover().get(name)
        if ep is None:
            return None
        _registered[name] = _load(name, ep)
    return _registered[name]


def list_plugins() -> list[PluginInfo]:
    """Every known plugin, available or not, sorted by name."""
    for name in _discover():
        _plugin_info(name)
    return [_registered[name] for name in sorted(_registered)]


def get_plugin(name: str, package: str | None = None) -> BackbonePlugin:
    """Return the plugin called `name`, or raise an error saying what to install."""
    info = _plugin_info(name)
    if info is None:
        known = sorted(set(_discover()) | set(_registered))
        hint = (  # the name comes from the model's config.json: a stranger's words, so it is checked and flagged
            f"the model names package {package!r} as its source: check that it is the project you expect, then "
            f"`pip install {package}`" if package and _PACKAGE_NAME.fullmatch(package)
            else "install the package that provides it"
        )
        close = difflib.get_close_matches(name, known, n=3)
        suggestion = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise PluginUnavailableError(
            f"No backbone plugin named {name!r} is installed ({hint}).{suggestion} Installed plugins: {', '.join(known) or 'none'}."
        )
    if info.plugin is None:
        raise PluginUnavailableError(
            f"Backbone plugin {name!r} from {info.package or 'an unknown package'} failed to import: {info.error}. "
            f"Reinstall or upgrade it (`pip install -U {info.package or name}`)."
        )
    return info.plugin


def split_backbone_name(name: str) -> tuple[str, str]:
    """Split 'plugin:model' into its parts, with a clear error when the prefix is missing."""
    plugin, sep, model = name.partition(":")
    if not sep or not plugin or not model:
        known = ", ".join(sorted(set(_discover()) | set(_registered)))
        raise BackboneNotFoundError(
            f"Backbone name {name!r} must look like '<plugin>:<model>', e.g. 'timm:resnet18' or "
            f"'transformers:bert-base-uncased'. Installed plugins: {known}."
        )
    return plugin, model


def list_backbones(pattern: str | None = None, modality: str | None = None) -> list[str]:
    """Names '<plugin>:<model>' of the backbones available, filtered like `timm.list_models`."""
    plugin_pattern, model_pattern = ("*", pattern)
    if pattern and ":" in pattern:
        plugin_pattern, model_pattern = pattern.split(":", 1)
    names: list[str] = []
    for info in list_plugins():
        if info.plugin is None or not fnmatch.fnmatch(info.name, plugin_pattern):
            continue
        if modality and info.modality != modality:
            continue
        try:
            models = info.plugin.list_models(model_pattern or None)
        except Exception as err:  # one faulty plugin must not hide the others' backbones
            logger.warning("Backbone plugin %r failed to list its models: %s: %s", info.name, type(err).__name__, err)
            continue
        names.extend(f"{info.name}:{model}" for model in models)
    return names


def check_backbone_name(name: str) -> None:
    """Check that '<plugin>:<model>' names an installed plugin and a model it knows, without building anything."""
    plugin_name, model_name = split_backbone_name(name)
    get_plugin(plugin_name).check_name(model_name)


def create_backbone(name: str, pretrained: bool = True, **kwargs: Any) -> Backbone:
    """Create the backbone '<plugin>:<model>' with the plugin's pretrained weights (or random ones)."""
    plugin_name, model_name = split_backbone_name(name)
    plugin = get_plugin(plugin_name)
    try:
        inspect.signature(plugin.create).bind(model_name, pretrained=pretrained, **kwargs)
        backbone = plugin.create(model_name, pretrained=pretrained, **kwargs)
    except TypeError as err:
        # an option the plugin does not take, caught by its signature or by a library it passes options on to
        if not kwargs or not any(words in str(err) for words in ("keyword argument", "multiple values for argument")):
            raise
        saved = sorted(plugin.spec_kwargs) if plugin.spec_kwargs is not None else None
        raise ConfigError(
            f"Backbone {name} does not take backbone_kwargs {kwargs} ({err}). Remove or rename the option"
            + (f"; plugin {plugin_name!r} takes: {', '.join(saved)}." if saved else ".")
        ) from err
    # A spec that loading would refuse must fail now, not after training, when the model is saved.
    try:
        check_spec_kwargs(plugin, backbone.spec().get("kwargs") or {})
    except ModelLoadError as err:
        raise ConfigError(f"{name} with backbone_kwargs {kwargs}: {err}") from None
    return backbone


def backbone_from_spec(spec: dict[str, Any], files_dir: Path | None = None) -> Backbone:
    """Rebuild a backbone architecture from its saved `spec()` without downloading weights."""
    if not isinstance(spec, dict) or "plugin" not in spec or "name" not in spec:
        raise ConfigError(f"Backbone spec {spec!r} lacks 'plugin' or 'name'; the saved config.json is damaged.")
    plugin = get_plugin(spec["plugin"], package=spec.get("package"))
    version = spec.get("spec_version", 1)
    if version > plugin.spec_version:
        raise ConfigError(
            f"The model was saved with spec version {version} of plugin {spec['plugin']!r}, newer than the installed "
            f"one reads ({plugin.spec_version}). Upgrade it: `pip install -U {plugin.package or spec['plugin']}`."
        )
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ModelLoadError(f"config.json: `backbone.kwargs` must be a mapping, got {type(kwargs).__name__}.")
    check_spec_kwargs(plugin, kwargs)
    return plugin.from_spec(spec, files_dir)


#: Words in a kwarg's name that mean it points at something outside the model (a file, a folder, a URL, code).
_PATH_WORDS = {"path", "paths", "file", "files", "dir", "url", "uri", "overlay", "cache", "token", "remote", "hub", "checkpoint"}


def check_spec_kwargs(plugin: BackbonePlugin, kwargs: dict[str, Any]) -> None:
    """Refuse saved spec kwargs outside the plugin's allow-list, or that name a file, a path or a URL."""
    allowed = plugin.spec_kwargs
    for key, value in kwargs.items():
        if allowed is not None and key not in allowed:
            raise ModelLoadError(
                f"Backbone kwarg {key!r} is not one plugin {plugin.name!r} accepts from a saved model "
                f"(allowed: {', '.join(sorted(allowed)) or 'none'}); the config.json may have been tampered with."
            )
        for name in [key, *(k for k in _leaves(value, keys=True) if isinstance(k, str))]:
            if _PATH_WORDS & set(re.split(r"[^a-z0-9]+", name.lower())):
                raise ModelLoadError(
                    f"Backbone kwarg {key!r} names a file, path or URL ({name!r}); a saved model may not point outside "
                    "its own directory. Remove it from config.json (and from backbone_kwargs when training)."
                )
        for leaf in _leaves(value):
            if isinstance(leaf, str) and _looks_like_path(leaf):
                raise ModelLoadError(
                    f"Backbone kwarg {key!r} holds {leaf!r}, which looks like a path or URL; a saved model may not "
                    "point outside its own directory."
                )


def _leaves(value: Any, keys: bool = False) -> list[Any]:
    """Every scalar inside nested JSON lists and mappings (with `keys`, the mappings' keys instead)."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in ([k] if keys else []) + _leaves(v, keys)]
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v, keys)]
    return [] if keys else [value]


def _looks_like_path(text: str) -> bool:
    """True for absolute, home-relative, parent-relative or URL-like strings."""
    return (
        text.startswith(("/", "~", "\\"))
        or "://" in text
        or ".." in re.split(r"[/\\]", text)
        or bool(re.match(r"^[A-Za-z]:[/\\]", text))
    )


def suggest(name: str, candidates: list[str], kind: str, fix: str) -> BackboneNotFoundError:
    """Build an 'unknown X' error with close-match suggestions (plugins use it for unknown models)."""
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    suggestion = f" Did you mean: {', '.join(close)}?" if close else ""
    return BackboneNotFoundError(f"Unknown {kind} {name!r}.{suggestion} {fix}")


def reload_plugins() -> None:
    """Forget discovered entry points and loaded plugins, so packages installed since are found."""
    global _entry_points
    _entry_points = None
    _registered.clear()
