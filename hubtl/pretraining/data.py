"""Pre-training batches: texts tokenized (and packed into blocks) for masked language modelling, images as pixels.

Each collate_fn gives the trainer's `(batch, targets)` pair: for MLM the batch of transformers'
`DataCollatorForLanguageModeling` (masked `input_ids`, `labels`), for images the backbone's pixel values
(the reconstruction target is the batch itself).
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset


class TokenBlocks(Dataset):
    """Tokenized examples (dicts of token lists) for the MLM collator; the second item is a placeholder target."""

    def __init__(self, examples: list[dict[str, list[int]]]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> tuple[dict[str, list[int]], int]:
        return self.examples[index], 0


def tokenize_texts(
    texts: Sequence[str], tokenizer: Any, max_seq_length: int, line_by_line: bool, whole_word_mask: bool
) -> TokenBlocks:
    """Tokenize texts; unless `line_by_line`, concatenate them and cut into `max_seq_length` blocks (as run_mlm.py)."""
    fast = bool(getattr(tokenizer, "is_fast", False))
    options: dict[str, Any] = {"return_special_tokens_mask": True, "return_offsets_mapping": whole_word_mask and fast}
    if line_by_line:
        encoded = tokenizer(list(texts), truncation=True, max_length=max_seq_length, **options)
        keys = list(encoded.keys())
        return TokenBlocks([{k: list(encoded[k][i]) for k in keys} for i in range(len(texts))])
    encoded = tokenizer(list(texts), **options)
    keys = list(encoded.keys())
    joined = {k: list(itertools.chain.from_iterable(encoded[k])) for k in keys}
    total = len(joined["input_ids"])
    usable = (total // max_seq_length) * max_seq_length if total >= max_seq_length else total
    blocks = [{k: joined[k][start : start + max_seq_length] for k in keys} for start in range(0, usable, max_seq_length)]
    return TokenBlocks(blocks)


class MLMCollate:
    """transformers' DataCollatorForLanguageModeling giving (batch, labels), its masks drawn from `seed` and the tokens.

    Training masks each batch from a generator seeded by `seed` and the batch's tokens: the same batch gets the same
    masks however much of the global RNG went before, so a run resumed mid-epoch masks as the uninterrupted one did
    (the loader collates a batch ahead of the step, before the checkpoint's RNG state). With `per_example`
    (evaluation), each example is masked from `seed` and its own tokens: the same masks at every evaluation, whatever
    batch or process the example falls in.
    """

    def __init__(self, tokenizer: Any, mlm_probability: float, whole_word_mask: bool, seed: int, per_example: bool = False) -> None:
        from transformers import DataCollatorForLanguageModeling

        self.collator = DataCollatorForLanguageModeling(
            tokenizer, mlm=True, mlm_probability=mlm_probability, whole_word_mask=whole_word_mask
        )
        self.seed = seed
        self.per_example = per_example

    def __call__(self, examples: list[tuple[dict[str, list[int]], int]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        features = [example for example, _ in examples]
        if self.per_example:  # one example at a time: no padding of offset_mapping needed
            batch = self._padded([self._masked([f]) for f in features])
            return batch, batch["labels"]
        if "offset_mapping" in features[0]:  # whole-word masking: the tokenizer pads every key but this one
            longest = max(len(f["input_ids"]) for f in features)
            pad = [(0, 0)] * longest
            right = getattr(self.collator.tokenizer, "padding_side", "right") == "right"
            features = [
                {**f, "offset_mapping": (list(f["offset_mapping"]) + pad)[:longest] if right
                 else (pad + list(f["offset_mapping"]))[-longest:]}
                for f in features
            ]  # fmt: skip
        batch = self._masked(features)
        return batch, batch["labels"]

    def _masked(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """The collator's batch of `features`, masked from a generator seeded by `seed` and their tokens."""
        digest = hashlib.blake2b(str(self.seed).encode(), digest_size=8)
        for f in features:
            digest.update(np.asarray(f["input_ids"], dtype=np.int64).tobytes())
        self.collator.seed = int.from_bytes(digest.digest(), "little") >> 1
        self.collator.generator = torch.Generator().manual_seed(self.collator.seed)
        self.collator._generator_pid = os.getpid()  # transformers' collator keeps a generator made in this process
        return dict(self.collator(features))

    def _padded(self, parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Batches of one example each, padded to the longest as the tokenizer pads (labels with -100)."""
        tokenizer = self.collator.tokenizer
        longest = max(part["input_ids"].shape[1] for part in parts)
        fill = {"input_ids": tokenizer.pad_token_id or 0, "labels": -100}
        left = getattr(tokenizer, "padding_side", "right") == "left"
        batch = {}
        for key in parts[0]:
            rows = []
            for part in parts:
                value = part[key]
                pad = torch.full((1, longest - value.shape[1]), fill.get(key, 0), dtype=value.dtype)
                rows.append(torch.cat([pad, value] if left else [value, pad], dim=1))
            batch[key] = torch.cat(rows)
        return batch


class ImageCollate:
    """The backbone's image preprocessor giving (pixel batch, pixel values): reconstruction targets are the inputs."""

    def __init__(self, preprocessor: Any) -> None:
        self.preprocessor = preprocessor

    def __call__(self, examples: list[tuple[Any, Any]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        batch = self.preprocessor([raw for raw, _ in examples])
        return batch, batch["pixel_values"]
