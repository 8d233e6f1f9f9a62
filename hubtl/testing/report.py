"""What the conformance kit reports: each check's result, the report, and the errors it raises."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import HubtlError


class ConformanceError(HubtlError, AssertionError):
    """A backbone failed the conformance kit; an AssertionError too, so pytest reports it as a failed assertion."""

    def __init__(self, report: ConformanceReport) -> None:
        self.report = report
        failed = report.failures
        head = (
            f"Backbone plugin {report.plugin!r} (model {report.model!r}) failed {len(failed)} conformance "
            f"check(s): {', '.join(r.name for r in failed)}."
        )
        details = "\n".join(f"- {r.name}: {r.message}" for r in failed)
        super().__init__(f"{head}\n{details}\n\n{report.summary()}")


class CheckFailed(Exception):
    """Raised by a check function: the backbone does not conform; the message says why and what to fix."""


class CheckSkipped(Exception):
    """Raised by a check function: the check does not apply to this backbone; the message says why."""


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check: status is 'pass', 'fail' or 'skip'."""

    name: str
    status: str
    message: str

    @property
    def passed(self) -> bool:
        """True unless the check failed (a skipped check does not fail the report)."""
        return self.status != "fail"


@dataclass
class ConformanceReport:
    """The results of every check run on one plugin and model."""

    plugin: str
    model: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no check failed."""
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        """The failed checks, in the order they ran."""
        return [r for r in self.results if r.status == "fail"]

    def __getitem__(self, name: str) -> CheckResult:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(f"No check named {name!r} in this report; checks: {', '.join(r.name for r in self.results)}.")

    def summary(self) -> str:
        """A readable table: one line per check (PASS / FAIL / SKIP, name, message)."""
        counts = {s: sum(r.status == s for r in self.results) for s in ("pass", "fail", "skip")}
        lines = [
            f"Conformance of backbone plugin {self.plugin!r}, model {self.model!r}: "
            f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped"
            f" -> {'CONFORMS' if self.passed else 'DOES NOT CONFORM'}"
        ]
        width = max([len(r.name) for r in self.results] + [4])
        for r in self.results:
            first, *rest = (r.message or "").splitlines() or [""]
            lines.append(f"  {r.status.upper():4}  {r.name:<{width}}  {first}")
            lines.extend(f"  {'':4}  {'':<{width}}  {line}" for line in rest)
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise ConformanceError naming the plugin, the model and the failed checks, if any failed."""
        if not self.passed:
            raise ConformanceError(self)

    def __str__(self) -> str:
        return self.summary()
