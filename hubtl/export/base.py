"""What every exporter is and returns: the `Exporter` interface and the `ExportResult`."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..model import TransferModel


@dataclass
class ExportResult:
    """What an export wrote and how closely the exported model matches hubtl's on the check inputs."""

    format: str
    directory: Path
    #: largest |logit difference| between hubtl and the exported model, loaded back from disk, on the check inputs
    max_abs_diff: float
    #: how many raw inputs that comparison ran on
    checked_inputs: int
    #: what a user of the export must know (task semantics, preprocessing), also written into its README
    notes: list[str] = field(default_factory=list)
    #: accuracy of hubtl and of the exported model(s) on an eval file, when one was given
    evaluation: dict[str, Any] | None = None
    #: the commit URL when the export was pushed to a Hub repo
    url: str | None = None

    def summary(self) -> str:
        """A few lines for the command line."""
        lines = [
            f"Exported to {self.format}: {self.directory}",
            f"  checked: max |logit difference| vs hubtl {self.max_abs_diff:.2g} on {self.checked_inputs} inputs",
        ]
        lines += [f"  note: {note}" for note in self.notes]
        if self.evaluation:
            lines.append(f"  evaluation on {self.evaluation['file']} ({self.evaluation['examples']} examples):")
            for name, accuracy in self.evaluation["accuracy"].items():
                lines.append(f"    accuracy {name}: {accuracy:.4f}")
            for name, change in self.evaluation.get("change", {}).items():
                lines.append(f"    change {name}: {change:+.4f}")
        if self.url:
            lines.append(f"  pushed: {self.url}")
        return "\n".join(lines)


class Exporter(abc.ABC):
    """Writes a TransferModel in one library's own format, after checking the result computes what hubtl computes."""

    #: the `--format` name
    name: ClassVar[str] = ""
    #: what loads the export, for messages ("timm", "transformers", "onnxruntime")
    library: ClassVar[str] = ""

    @abc.abstractmethod
    def export(self, model: TransferModel, staging: Path, **options: Any) -> ExportResult:
        """Write the export into the empty folder `staging`, verified; raise ExportError when it cannot be exact."""
