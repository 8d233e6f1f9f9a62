"""The README.md of an exported folder: Hub metadata for the target library, how to load it, what was checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..version import __version__


def write_readme(
    directory: Path,
    metadata: dict[str, Any],
    title: str,
    usage: str,
    checked: str,
    notes: list[str],
    evaluation: dict[str, Any] | None = None,
) -> None:
    """Write README.md: YAML front matter (library_name, pipeline_tag, tags), usage code, the check, notes."""
    metadata = {k: v for k, v in metadata.items() if v is not None}
    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True).strip()
    parts = [
        f"---\n{front}\n---\n",
        f"# {title}\n",
        f"Exported by hubtl {__version__}; it loads without hubtl.\n",
        "## Usage\n",
        usage.strip() + "\n",
        "## Exactness\n",
        checked.strip() + "\n",
    ]
    if notes:
        parts.append("## Notes\n")
        parts.append("".join(f"- {note}.\n" for note in notes))
    if evaluation:
        parts.append("## Evaluation\n")
        parts.append(f"On `{Path(evaluation['file']).name}` ({evaluation['examples']} examples):\n")
        parts.append("| model | accuracy |\n|---|---:|\n")
        parts.append("".join(f"| {name} | {value:.4f} |\n" for name, value in evaluation["accuracy"].items()))
    (directory / "README.md").write_text("\n".join(parts), encoding="utf-8")
