"""The conformance kit: checks that a backbone plugin honours the transfer interface (like scikit-learn's check_estimator).

    from hubtl.testing import check_backbone, assert_backbone_conforms

    report = check_backbone("timm:resnet18", raise_on_failure=False)
    print(report.summary())
    assert_backbone_conforms(MyPlugin, "my-model")  # in a plugin's own pytest suite

Modules: `report` (results, the report, its errors), `subject` (what a check looks at, shared helpers),
`forward_checks` (the running backbone), `spec_checks` (saving, loading, load safety, export, names),
`runner` (the list of checks, `check_backbone`). A new check is a function in one of the two check modules,
listed in `runner.CHECKS` and in docs/writing-plugins.md.

Each check is a small function taking a `Subject` (the plugin, a freshly created backbone and raw example
inputs); it returns a short message when the backbone conforms and raises `CheckFailed` (or `CheckSkipped`)
otherwise. Every check runs on CPU, with the torch seed fixed, and the kit restores the backbone's
`requires_grad` flags, gradients and eval mode between checks, so the checks are independent.
"""

from .report import CheckFailed, CheckResult, CheckSkipped, ConformanceError, ConformanceReport
from .runner import ALWAYS_RUN, CHECK_NAMES, CHECKS, assert_backbone_conforms, check_backbone
from .subject import Subject, example_inputs

__all__ = [
    "ALWAYS_RUN",
    "CHECKS",
    "CHECK_NAMES",
    "CheckFailed",
    "CheckResult",
    "CheckSkipped",
    "ConformanceError",
    "ConformanceReport",
    "Subject",
    "assert_backbone_conforms",
    "check_backbone",
    "example_inputs",
]
