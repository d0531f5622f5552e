"""What a dataset is, as plain values: shape, classes, normalization, files and sources.

Its own module so that both the catalog (the three datasets normlab knows) and your own images
(own.py) build DatasetInfo values without importing each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RemoteFile:
    name: str
    md5: str


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    format: str                        # "idx" or "cifar"
    shape: tuple[int, int, int]        # C, H, W
    classes: tuple[str, ...]
    mean: tuple[float, ...]            # per channel, of the training images scaled to [0, 1]
    std: tuple[float, ...]
    train_size: int
    test_size: int
    folders: tuple[str, ...]           # sub-folders of a data root where the files may sit
    system_dirs: tuple[str, ...]       # folders a system package installs the files to
    mirrors: tuple[str, ...]           # base URLs, tried in order
    remote: tuple[RemoteFile, ...]     # what to download (MD5 from the publishers / torchvision)
    how_to_get: str
    # Images per class in the official test set: tells MNIST and Fashion-MNIST apart, whose
    # files have the same names and format.
    test_class_counts: tuple[int, ...] = ()

    @property
    def pad(self) -> int:
        """Translation range of the random-crop augmentation, in pixels.

        1 for the 28x28 sets: the 19k-parameter net underfits them in 20 epochs (train accuracy
        about test accuracy), and on Fashion-MNIST (ln, seed 1) shifting by up to 1 pixel
        instead of 2 took the final test accuracy from 92.06% to 92.50%. Images of your own
        get the same rule by size; ``--pad`` (TrainConfig.pad) overrides it. With no shift at
        all (--pad 0) ln and gn:4 gained and bn lost on 4,000-image subsets (docs/recipe.md, "The
        full set, one change at a time"), but on 1,000 images over 60 epochs it cost 8 of 9 sweep cells."""
        return 4 if min(self.shape[1:]) >= 32 else 1

    def pad_for(self, pad: int | None) -> int:
        """The translation a run used: its --pad, or this dataset's rule where it set none."""
        return self.pad if pad is None else pad

    @property
    def slug(self) -> str:
        """The name as part of a folder name (runs/<slug>-<time>): a dataset of your own is named
        by its resolved path, which must not become the run folder's path."""
        return Path(self.name).stem if self.format in ("folder", "npz") else self.name

    @property
    def flip(self) -> bool:
        """Mirror images are the same class for photos; a mirrored digit can be another digit,
        so the 28x28 sets only get translations."""
        return self.shape[0] == 3


def cache_dir() -> Path:
    """normlab's user cache: downloads, extracted archives, decoded image folders."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "normlab"
