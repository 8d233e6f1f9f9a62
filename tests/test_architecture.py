"""The module structure holds: no import cycles among hubtl's modules, and tasks and strategies plug in from outside."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import hubtl

PACKAGE = Path(hubtl.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Line numbers inside `if TYPE_CHECKING:` blocks (annotations only: never run)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def import_graph() -> dict[str, set[str]]:
    """Every explicit import between hubtl modules, at module level or inside functions."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_lines(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target.startswith("hubtl") and target != name:
                    graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 20 and graph["hubtl.model"], "the import graph was not read"
    cycles = find_cycles(graph)
    assert not cycles, f"import cycles among hubtl modules: {cycles}"


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_the_package_root_upwards() -> None:
    graph = import_graph()
    upward = sorted(name for name, targets in graph.items() if "hubtl" in targets and name != "hubtl")
    assert not upward, f"modules importing hubtl/__init__ (use hubtl.version, hubtl.errors, ...): {upward}"


# ---------------------------------------------------------------------------------------------- extending from outside


def _write_images(root: Path) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, colour in (("blue", (20, 40, 220)), ("red", (220, 30, 30))):
        (root / name).mkdir(parents=True)
        for i in range(8):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (24, 24, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_a_task_and_a_strategy_registered_from_outside_train_through_the_config(tmp_path: Path) -> None:
    import json

    import torch
    from safetensors.torch import load_file

    from hubtl.train import train

    @hubtl.register_task
    class SmoothedClassification(hubtl.tasks.Classification):
        name = "smoothed_classification"

        def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(logits, targets.long(), label_smoothing=0.2)

        def description(self, modality: str) -> str:
            return f"label-smoothed {modality} classification"

    @hubtl.register_strategy
    class TopGroup(hubtl.Strategy):
        name = "top_group"
        description = "Only the head and the backbone's last layer group were trained."

        def prepare(self, model, config) -> None:
            model.backbone.requires_grad_(False)
            for p in model.backbone.layer_groups()[-1]:
                p.requires_grad_(True)

    assert "smoothed_classification" in hubtl.list_tasks() and "top_group" in hubtl.list_strategies()
    out = tmp_path / "out"
    result = train({
        "backbone": "timm:test_resnet", "pretrained": False, "backbone_kwargs": {"image_size": 24},
        "dataset": {"path": str(_write_images(tmp_path / "images")), "validation_size": 0.25},
        "task": "smoothed_classification", "strategy": "top_group", "num_train_epochs": 2, "learning_rate": 0.05,
        "per_device_train_batch_size": 4, "output_dir": str(out), "report_to": "none", "disable_tqdm": True,
        "dataloader_num_workers": 0, "seed": 0,
    })
    assert 0.0 <= result.eval_results["eval_accuracy"] <= 1.0  # the task's metrics were computed
    saved = json.loads((out / "config.json").read_text())
    assert saved["task"] == "smoothed_classification"
    model = hubtl.TransferModel.from_pretrained(out)
    prediction = model.predict([str(next((tmp_path / "images" / "red").iterdir()))])[0]
    assert prediction["label"] in ("blue", "red") and set(prediction["scores"]) == {"blue", "red"}

    # the strategy decided what trained: only the last layer group of the backbone moved
    fresh = hubtl.TransferModel.from_backbone("timm:test_resnet", labels=["blue", "red"], pretrained=False, image_size=24)
    groups = fresh.backbone.layer_groups()
    names = {id(p): n for n, p in fresh.named_parameters()}
    trained = load_file(str(out / "model.safetensors"))
    last = {names[id(p)] for p in groups[-1]}
    frozen = {names[id(p)] for g in groups[:-1] for p in g}
    initial = _initial_weights(seed=0)
    assert all(torch.equal(trained[n], initial[n]) for n in frozen)
    assert any(not torch.equal(trained[n], initial[n]) for n in last)

    card = (out / "README.md").read_text()
    assert "label-smoothed image classification" in card
    assert "Only the head and the backbone's last layer group were trained." in card


def _initial_weights(seed: int) -> dict:
    """The weights a run with `seed` starts from (the trainer seeds before building the model)."""
    from accelerate.utils import set_seed

    set_seed(seed)
    model = hubtl.TransferModel.from_backbone("timm:test_resnet", labels=["blue", "red"], pretrained=False, image_size=24)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
