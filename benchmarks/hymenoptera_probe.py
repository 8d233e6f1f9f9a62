"""Linear probe of the EfficientNet-Lite0 plugin on hymenoptera (ants vs bees): pretrained vs random initialisation.

    python benchmarks/hymenoptera_probe.py [--data ../shared/data/hymenoptera] [--output runs/hymenoptera_probe.json]

Features are extracted once with the backbone's eval preprocessor; a logistic-regression head (plain torch,
full-batch L-BFGS with a fixed L2 penalty, on features standardised with the training set's statistics) is fit
on the 245 training images and scored on the 153 validation images. Nothing is tuned on the validation set.
Needs the plugin: `pip install -e plugins/hubtl-efficientnet-lite --no-deps`.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

import hubtl

BACKBONE = "efficientnet_lite:efficientnet_lite0"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hymenoptera"


def list_split(root: Path, split: str) -> tuple[list[Path], list[int], list[str]]:
    """Image files of one split with their class indices (class = sub-folder, sorted by name)."""
    classes = sorted(d.name for d in (root / split).iterdir() if d.is_dir())
    files, labels = [], []
    for index, name in enumerate(classes):
        for path in sorted((root / split / name).iterdir()):
            if path.is_file():
                files.append(path)
                labels.append(index)
    return files, labels, classes


@torch.inference_mode()
def extract(backbone: hubtl.Backbone, files: list[Path], batch_size: int) -> torch.Tensor:
    """Pooled features of image files, with the eval preprocessor, in eval mode."""
    preprocess = backbone.preprocessor(train=False)
    backbone.eval()
    return torch.cat([backbone(preprocess(files[i : i + batch_size])) for i in range(0, len(files), batch_size)])


def fit_logistic_regression(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float, steps: int) -> nn.Linear:
    """Multinomial logistic regression by full-batch L-BFGS with an L2 penalty on the weights."""
    torch.manual_seed(0)
    head = nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(head(x), y) + l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return head


def probe(pretrained: bool, data: Path, batch_size: int, l2: float, steps: int) -> dict[str, object]:
    """Extract features with (or without) pretrained weights, fit the probe, return the metrics."""
    torch.manual_seed(0)  # the random initialisation, when not pretrained
    backbone = hubtl.create_backbone(BACKBONE, pretrained=pretrained)
    train_files, train_y, classes = list_split(data, "train")
    val_files, val_y, val_classes = list_split(data, "val")
    assert classes == val_classes, f"train classes {classes} != val classes {val_classes}"
    start = time.perf_counter()
    train_x, val_x = extract(backbone, train_files, batch_size), extract(backbone, val_files, batch_size)
    seconds = time.perf_counter() - start
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)
    train_x, val_x = (train_x - mean) / std, (val_x - mean) / std
    ytr, yva = torch.tensor(train_y), torch.tensor(val_y)
    head = fit_logistic_regression(train_x, ytr, len(classes), l2, steps)
    with torch.no_grad():
        train_acc = (head(train_x).argmax(1) == ytr).float().mean().item()
        val_acc = (head(val_x).argmax(1) == yva).float().mean().item()
    return {
        "pretrained": pretrained,
        "val_accuracy": round(val_acc, 4),
        "train_accuracy": round(train_acc, 4),
        "val_correct": int(round(val_acc * len(val_y))),
        "n_train": len(train_y),
        "n_val": len(val_y),
        "classes": classes,
        "feature_dim": backbone.feature_dim,
        "extract_seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Run both probes, print them, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--output", type=Path, default=Path("runs/hymenoptera_probe.json"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--l2", type=float, default=1e-3, help="L2 penalty on the probe's weights (fixed, not tuned)")
    parser.add_argument("--steps", type=int, default=300, help="L-BFGS iterations")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = {
        "benchmark": "hymenoptera linear probe",
        "backbone": BACKBONE,
        "data": str(args.data),
        "probe": {"model": "logistic regression", "optimizer": "L-BFGS (full batch)", "steps": args.steps, "l2": args.l2},
        "runs": [probe(p, args.data, args.batch_size, args.l2, args.steps) for p in (True, False)],
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "hubtl": hubtl.__version__},
        "command": "python benchmarks/hymenoptera_probe.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    for run in results["runs"]:
        init = "pretrained (ImageNet)" if run["pretrained"] else "random init"
        print(
            f"{BACKBONE} {init:>21}: val accuracy {run['val_accuracy']:.4f} ({run['val_correct']}/{run['n_val']}), "
            f"train accuracy {run['train_accuracy']:.4f}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
