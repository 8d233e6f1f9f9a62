"""The hand-written Accelerate training loop that hubtl's training rows are compared with."""

from __future__ import annotations

import time
from typing import Any


def accelerate_loop(net: Any, loader: Any, epochs: int, mixed_precision: str) -> dict[str, list[float]]:
    """AdamW, linear decay, clip 1.0, cross-entropy: the minimal loop a user writes; samples/s per epoch."""
    import torch
    from accelerate import Accelerator

    acc = Accelerator(mixed_precision=mixed_precision)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    total = epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total))
    net, optimizer, loader = acc.prepare(net, optimizer, loader)
    rates, epoch_s = [], []
    for _ in range(epochs):
        net.train()
        started, samples = time.time(), 0
        for inputs, targets in loader:
            loss = torch.nn.functional.cross_entropy(net(inputs), targets)
            acc.backward(loss)
            acc.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            samples += len(targets)
        if acc.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.time() - started
        rates.append(samples / seconds)
        epoch_s.append(seconds)
    return {"rates": rates, "epoch_s": epoch_s}
