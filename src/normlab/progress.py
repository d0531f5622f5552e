"""Progress for people: a live bar per epoch on a terminal, one plain line per epoch in logs."""

from __future__ import annotations

import sys

import torch
from tqdm.auto import tqdm

REFRESH_EVERY = 20   # steps between reads of the running loss (each read syncs a GPU)
BARS = True          # False in sweep workers: several processes' live bars would overwrite each other


class EpochBar:
    def __init__(self, name: str, epoch: int, epochs: int, steps: int):
        self.prefix = f"{name:<18} epoch {epoch:>{len(str(epochs))}}/{epochs}"
        self.bar = tqdm(total=steps, desc=self.prefix, leave=False, dynamic_ncols=True,
                        disable=not (BARS and sys.stderr.isatty()), file=sys.stderr)

    def update(self, step: int, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> None:
        if self.bar.disable:
            return
        if step % REFRESH_EVERY == 0 or step == self.bar.total:
            self.bar.set_postfix_str(f"loss {loss_sum.item() / seen:.4f} acc {100.0 * correct.item() / seen:5.2f}%", refresh=False)
        self.bar.update(step - self.bar.n)

    def close(self, summary: str) -> None:
        self.bar.close()
        print(f"{self.prefix}  {summary}", flush=True)
