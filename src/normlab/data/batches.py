"""Batches straight from uint8 tensors that stay on the training device.

No DataLoader, no per-image Python: each step gathers a batch by index, crops and flips it as
one tensor operation, and normalizes it with one multiply-add. On a GPU the whole dataset
lives in GPU memory as uint8 (CIFAR-10's 50k images are 150 MB), so a step never waits for
the host.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .catalog import DatasetInfo


class Normalizer:
    """uint8 -> float, (x / 255 - mean) / std, folded into one scale and one shift per channel."""

    def __init__(self, info: DatasetInfo, device: torch.device, channels_last: bool = False):
        std = torch.tensor(info.std, device=device).view(1, -1, 1, 1)
        mean = torch.tensor(info.mean, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std)
        self.shift = -mean / std
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images_u8: torch.Tensor) -> torch.Tensor:
        x = images_u8.to(memory_format=self.memory_format).float()
        return torch.addcmul(self.shift, x, self.scale)


def preprocess(images_uint8: torch.Tensor, dataset: str) -> torch.Tensor:
    """uint8 images as stored (N x C x H x W, or one C x H x W) -> the float input normlab's models
    expect; a model fed raw 0-255 values predicts one class for everything, silently."""
    from . import dataset_info
    if not isinstance(images_uint8, torch.Tensor) or images_uint8.dtype != torch.uint8:
        from ..errors import UserError
        raise UserError(f"preprocess takes uint8 images as stored, got {getattr(images_uint8, 'dtype', type(images_uint8))}",
                        "pass e.g. load_dataset(...).images[:10]")
    images = images_uint8[None] if images_uint8.ndim == 3 else images_uint8
    return Normalizer(dataset_info(dataset), images.device)(images)


class TrainBatches:
    """One epoch = a fresh permutation; every batch randomly translated (and flipped for photos).

    The last partial batch is dropped: every step then sees ``batch_size`` samples, which keeps
    BatchNorm's statistics comparable across steps and shapes static for compiled code.
    Reshuffling each epoch means every image is still seen.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, info: DatasetInfo, batch_size: int,
                 normalizer: Normalizer, augment: bool = True, pad: int | None = None):
        self.info, self.batch_size, self.normalize, self.augment = info, batch_size, normalizer, augment
        self.labels = labels
        self.pad = info.pad_for(pad) if augment else 0
        # Pad the whole set once (black borders, as torchvision's RandomCrop(padding=...) does);
        # a crop is then only an index shift.
        self.images = F.pad(images, (self.pad,) * 4) if self.pad else images
        _, _, h, w = images.shape
        device = images.device
        self.rows = torch.arange(h, device=device)
        self.cols = torch.arange(w, device=device)
        self.channels = torch.arange(images.shape[1], device=device)

    def __len__(self) -> int:
        return len(self.labels) // self.batch_size

    def plan(self, generator: torch.Generator):
        """Each step's random choices, without touching an image: (indices, shifts, flips).

        Kept apart from the gathering so a reference pipeline can replay the very same batches.
        """
        device = self.labels.device
        order = torch.randperm(len(self.labels), device=device, generator=generator)
        for step in range(len(self)):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            n = len(index)
            shift = torch.randint(0, 2 * self.pad + 1, (2, n, 1), device=device, generator=generator) if self.pad else None
            flip = torch.rand(n, 1, device=device, generator=generator) < 0.5 if self.pad and self.info.flip else None
            yield index, shift, flip

    def epoch(self, generator: torch.Generator):
        for index, shift, flip in self.plan(generator):
            yield self.normalize(self.crop_and_flip(index, shift, flip)), self.labels[index]

    def crop_and_flip(self, index: torch.Tensor, shift: torch.Tensor | None, flip: torch.Tensor | None) -> torch.Tensor:
        """One gather does the crop and the flip for the whole batch: row and column indices
        are offset by each image's shift, and a flipped image reads its columns backwards."""
        if shift is None:
            return self.images[index]
        dy, dx = shift
        rows = (dy + self.rows)[:, None, :, None]            # n x 1 x H x 1
        cols = dx + self.cols                                 # n x W
        if flip is not None:
            cols = torch.where(flip, cols.flip(1), cols)
        cols = cols[:, None, None, :]                         # n x 1 x 1 x W
        return self.images[index[:, None, None, None], self.channels[None, :, None, None], rows, cols]


# 256, not 1000: each activation of a 1000-image batch (50 MB on the 28x28 net) is above 32 MB,
# the largest block glibc's malloc serves from its heap, so every op mapped fresh pages and faulted
# them in: ~98,000 page faults and 0.23 s of kernel time per 2,000 Fashion-MNIST test images (1
# thread) next to 0.20-0.24 s of arithmetic; CIFAR's net 118,000 and 0.23 s. At 256, with the freed
# memory kept (train.keep_freed_memory), under 500 (tests/test_fast_path.py; benchmarks/page_faults.py).
EVAL_BATCH = 256


def eval_batches(images: torch.Tensor, labels: torch.Tensor, normalizer: Normalizer, batch_size: int = EVAL_BATCH):
    for start in range(0, len(labels), batch_size):
        yield normalizer(images[start:start + batch_size]), labels[start:start + batch_size]
