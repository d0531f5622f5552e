"""The seeds' way of feeding and training a model, rebuilt as the yardstick for `normlab bench`.

The seeds use a torchvision Dataset with per-image transforms (pad + random crop, flip,
ToTensor, Normalize) behind a DataLoader, an eager NCHW model, and read `loss.item()` and the
accuracy back every step. This module does the same without torchvision: a map-style Dataset
over H x W x C uint8 arrays whose `__getitem__` transforms one image with torch ops, a stock
DataLoader, and a step that synchronizes on `.item()`.

For the equivalence test the dataset can replay normlab's own random choices (which images,
which shift, which flip), so both pipelines see the very same batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler

from .data import Dataset


class PerImageDataset(torch.utils.data.Dataset):
    """Like torchvision's CIFAR10(transform=Compose([RandomCrop(pad), RandomHorizontalFlip(),
    ToTensor(), Normalize(mean, std)])): one image at a time, as the seeds train."""

    def __init__(self, data: Dataset, augment: bool = True, replay: dict[int, tuple[int, int, bool]] | None = None):
        self.images = data.images.permute(0, 2, 3, 1).numpy()      # H x W x C, as PIL-era datasets store them
        self.labels = data.labels.numpy()
        self.pad = data.info.pad if augment else 0
        self.flip = data.info.flip and augment
        self.mean = torch.tensor(data.info.mean).view(-1, 1, 1)
        self.std = torch.tensor(data.info.std).view(-1, 1, 1)
        self.replay = replay          # index -> (dy, dx, flip): normlab's draws, for the equivalence test

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = torch.from_numpy(self.images[i]).permute(2, 0, 1).float().div(255)     # ToTensor
        if self.pad:
            h, w = image.shape[1:]
            padded = F.pad(image, (self.pad,) * 4)                                      # RandomCrop(padding=pad)
            if self.replay is not None:
                dy, dx, flip = self.replay[i]
            else:
                dy, dx = (int(v) for v in torch.randint(0, 2 * self.pad + 1, (2,)))
                flip = self.flip and bool(torch.rand(()) < 0.5)                          # RandomHorizontalFlip
            image = padded[:, dy:dy + h, dx:dx + w]
            if flip:
                image = image.flip(-1)
        return (image - self.mean) / self.std, int(self.labels[i])                       # Normalize


class FixedOrder(Sampler):
    """Hands the DataLoader a given order (normlab's permutation) instead of its own shuffle."""

    def __init__(self, order: list[int]):
        self.order = order

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def seed_style_loader(data: Dataset, batch_size: int, workers: int = 0, order: list[int] | None = None,
                      replay: dict | None = None, augment: bool = True) -> DataLoader:
    dataset = PerImageDataset(data, augment, replay)
    return DataLoader(dataset, batch_size=batch_size, shuffle=order is None,
                      sampler=FixedOrder(order) if order is not None else None, num_workers=workers,
                      drop_last=True, persistent_workers=workers > 0)


def seed_style_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                    l1: float = 0.0) -> tuple[float, int]:
    """The seeds' inner loop: forward, loss, backward, step, then `.item()` for the progress bar."""
    optimizer.zero_grad()
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    total = loss + l1 * sum(p.abs().sum() for p in model.parameters() if p.ndim > 1) if l1 else loss
    total.backward()
    optimizer.step()
    return loss.item(), int((logits.argmax(1) == y).sum().item())


def replay_of(plan) -> tuple[list[int], dict[int, tuple[int, int, bool]]]:
    """normlab's draws for one epoch (TrainBatches.plan) as a DataLoader order and a replay table."""
    order, replay = [], {}
    for index, shift, flip in plan:
        for k, i in enumerate(index.tolist()):
            order.append(i)
            if shift is not None:
                replay[i] = (int(shift[0, k]), int(shift[1, k]), bool(flip[k]) if flip is not None else False)
    return order, replay
