"""Model-card metadata: README front matter parsed as bounded YAML, and the card data and tags the Hub derives."""

from __future__ import annotations

import json
import math
from typing import Any

import yaml
from huggingface_hub.repocard import REGEX_YAML_BLOCK

from .store import Store

MAX_FRONT_MATTER = 1024 * 1024
YAML_MAX_ALIASES = 100  # alias events in one YAML document
YAML_MAX_ALIAS_NODES = 10_000  # nodes that aliases may add once expanded
YAML_MAX_DEPTH = 64
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: ~10x faster


class InvalidYaml(ValueError):
    """YAML that is malformed, or refused as an alias bomb."""


def _check_yaml_events(text: str) -> None:
    """Refuse recursive aliases, aliases that expand beyond a small budget and deep nesting (from parse events)."""
    sizes: dict[str, int] = {}  # anchor -> how many nodes it stands for, aliases below it expanded
    open_nodes: list[list] = []  # [anchor, size so far] of each collection being parsed
    aliases = alias_nodes = 0
    for event in yaml.parse(text, Loader=_YAML_LOADER):
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in sizes:
                raise InvalidYaml(f"alias *{event.anchor} refers to an unknown or enclosing anchor")
            size = sizes[event.anchor]
            aliases, alias_nodes = aliases + 1, alias_nodes + size
            if aliases > YAML_MAX_ALIASES or alias_nodes > YAML_MAX_ALIAS_NODES:
                raise InvalidYaml(
                    f"YAML aliases expand beyond {YAML_MAX_ALIASES} aliases or {YAML_MAX_ALIAS_NODES} nodes"
                )
        elif isinstance(event, yaml.CollectionStartEvent):
            if len(open_nodes) >= YAML_MAX_DEPTH:
                raise InvalidYaml(f"YAML nested deeper than {YAML_MAX_DEPTH} levels")
            open_nodes.append([event.anchor, 1])
            continue
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, size = open_nodes.pop()
            if anchor is not None:
                sizes[anchor] = size
        elif isinstance(event, yaml.ScalarEvent):
            size = 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        else:  # stream and document start/end
            continue
        if open_nodes:
            open_nodes[-1][1] += size


def load_yaml(text: str) -> Any:
    """Parse one YAML document safely, refusing alias bombs (raises InvalidYaml)."""
    try:
        _check_yaml_events(text)
        return yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    except Exception as exc:  # PyYAML's constructors raise ValueError, AttributeError... on odd tagged scalars
        raise InvalidYaml(str(exc)) from exc


def _jsonable(value: Any) -> Any:
    """YAML data as JSON values: dates, binary and non-finite numbers become strings, sets lists."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else _json_key(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    return str(value)


def _json_key(key: Any) -> str:
    """A non-string mapping key as ``json.dumps`` would write it (``null``, ``true``, ``1``), else ``str``."""
    return json.dumps(key) if key is None or isinstance(key, (bool, int, float)) else str(key)


def front_matter(text: str) -> dict | None:
    """The YAML front matter of a README (None when absent); raises InvalidYaml when invalid or too large."""
    # the block is found as huggingface_hub.repocard finds it; RepoCard and metadata_load then call
    # yaml.safe_load with no way to pass another loader, so the block is parsed here with the bounded one
    match = REGEX_YAML_BLOCK.search(text)
    if not match:
        return None
    if len(match.group(2)) > MAX_FRONT_MATTER:
        raise InvalidYaml(f"front matter larger than {MAX_FRONT_MATTER} characters")
    data = load_yaml(match.group(2))
    return _jsonable(data) if isinstance(data, dict) else None


def card_data(store: Store, tree: dict) -> dict | None:
    """The YAML front matter of README.md in a tree, if any and valid."""
    entry = tree.get("README.md")
    if entry is None:
        return None
    try:
        # the front matter leads the file: a README of hundreds of MB is not read whole for every listing
        head = store.read_blob(entry["sha256"], limit=MAX_FRONT_MATTER + 4096)
        return front_matter(head.decode("utf-8", errors="replace"))
    except (InvalidYaml, OSError):
        return None


def _str_list(value: Any) -> list[str]:
    """A card field that should be a list of strings (a lone string is a one-item list; other shapes are dropped)."""
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value if isinstance(v, (str, int, float))] if isinstance(value, list) else []


def str_or_none(value: Any) -> str | None:
    """A card field that should be a string (None for other shapes)."""
    return value if isinstance(value, str) else None


def tags(card: dict | None) -> list[str]:
    """Hub-style tags derived from card data (tags, library, license, datasets)."""
    if not card:
        return []
    out = _str_list(card.get("tags"))
    if card.get("library_name"):
        out.append(str(card["library_name"]))
    if card.get("pipeline_tag"):
        out.append(str(card["pipeline_tag"]))
    if isinstance(card.get("license"), str):
        out.append(f"license:{card['license']}")
    out += [f"dataset:{d}" for d in _str_list(card.get("datasets"))]
    return list(dict.fromkeys(out))
