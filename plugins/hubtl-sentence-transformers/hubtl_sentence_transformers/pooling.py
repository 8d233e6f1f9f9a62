"""Mask-aware pooling of token embeddings, as the sentence-transformers `Pooling` module computes it."""

from __future__ import annotations

import torch
from torch import nn

#: Pooling modes in the order sentence-transformers concatenates them when several are enabled (legacy config).
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")


class Pooling(nn.Module):
    """Pools [B, T, D] token embeddings into [B, D * len(modes)] with the attention mask; no parameters."""

    def __init__(self, modes: tuple[str, ...]) -> None:
        super().__init__()
        unknown = [m for m in modes if m not in POOLING_MODES]
        if unknown or not modes:
            raise ValueError(f"Pooling modes {list(modes)} are not all in {POOLING_MODES}.")
        self.modes = tuple(modes)

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        return torch.cat([self._pool(mode, tokens, attention_mask, mask) for mode in self.modes], dim=-1)

    @staticmethod
    def _pool(mode: str, tokens: torch.Tensor, attention_mask: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One pooling mode; padding positions never contribute."""
        if mode == "cls":  # first non-padding token (the [CLS] with right padding)
            first = attention_mask.to(torch.int).argmax(dim=1)
            return tokens[torch.arange(tokens.shape[0], device=tokens.device), first]
        if mode == "max":
            return tokens.masked_fill(mask == 0, float("-inf")).max(dim=1).values
        if mode in ("mean", "mean_sqrt_len_tokens"):
            count = mask.sum(dim=1).clamp(min=1e-9)
            return (tokens * mask).sum(dim=1) / (count if mode == "mean" else count.sqrt())
        if mode == "weightedmean":
            positions = torch.arange(1, tokens.shape[1] + 1, device=tokens.device, dtype=tokens.dtype).view(1, -1, 1)
            positions = positions - attention_mask.to(torch.int32).argmax(dim=1).view(-1, 1, 1)  # left padding
            weights = mask * positions
            return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        # lasttoken: the last non-padding position
        seq_len = tokens.shape[1]
        values, flipped = attention_mask.flip(1).max(1)
        flipped = torch.where(values == 0, seq_len - 1, flipped)
        last = seq_len - flipped - 1
        return (tokens * mask)[torch.arange(tokens.shape[0], device=tokens.device), last]
