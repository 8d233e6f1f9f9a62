"""Split SST-2's training sentences into 2,000 labeled ones and the rest as unlabeled text (the distillation example).

`python examples/distill/prepare_sst2.py ../shared/data/sst2 outputs/distill-data` writes `labeled.tsv`
(2,000 `sentence<TAB>label` rows, a seeded draw), `unlabeled.tsv` (the other sentences, no label column)
and `dev.tsv` (a copy of the dev split).
"""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

LABELED = 2000
SEED = 42


def main(source: str, target: str) -> None:
    """Write labeled.tsv, unlabeled.tsv and dev.tsv into `target`."""
    rows = Path(source, "train.tsv").read_text(encoding="utf-8").splitlines()
    order = list(range(len(rows)))
    random.Random(SEED).shuffle(order)
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    labeled = [rows[i] for i in sorted(order[:LABELED])]
    unlabeled = [rows[i].rsplit("\t", 1)[0] for i in sorted(order[LABELED:])]
    (out / "labeled.tsv").write_text("\n".join(labeled) + "\n", encoding="utf-8")
    (out / "unlabeled.tsv").write_text("\n".join(unlabeled) + "\n", encoding="utf-8")
    shutil.copyfile(Path(source, "dev.tsv"), out / "dev.tsv")
    print(f"{len(labeled)} labeled, {len(unlabeled)} unlabeled sentences -> {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
