"""Datasets as uint8 tensors: ``load_dataset("mnist", split="test")``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import UserError
from .catalog import DATASETS, DatasetInfo, dataset_info
from .formats import read_cifar_batch, read_idx_pair
from .own import own_split
from .sources import Location, extracted_from, locate, missing_error

__all__ = ["Dataset", "DATASETS", "DatasetInfo", "dataset_info", "fingerprint", "load_dataset", "load_splits", "locate"]


@dataclass
class Dataset:
    info: DatasetInfo
    split: str
    images: "torch.Tensor"    # uint8, N x C x H x W, in the file's order
    labels: "torch.Tensor"    # int64, N
    source: Path

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    @property
    def name(self) -> str:
        return self.info.name

    def __len__(self) -> int:
        return len(self.labels)


# What to do about an own dataset's empty test split (--data-dir plays no part there).
EMPTY_TEST = {"folder": "put images in its test/ class folders, or remove test/ and normlab holds out a test split",
              "npz": "store images in test_images, or leave test_images and test_labels out and normlab holds out a "
                     "test split"}


def load_dataset(name: str, split: str = "train", data_dir=None, download: bool | None = None) -> Dataset:
    if split not in ("train", "test"):
        raise UserError(f"unknown split {split!r}", "use 'train' or 'test'")
    info = dataset_info(name)
    if info.format in ("folder", "npz"):
        import torch
        source = Path(info.name)
        images, labels = (torch.from_numpy(a) for a in own_split(info.name, split))
    else:
        source, images, labels = _catalog_split(info, split, data_dir, download)
    if not len(labels):
        # Caught here, at the door: an empty set would otherwise surface as a division by zero
        # in evaluation or as advice about the batch size.
        fix = ("point --data-dir at a copy that holds both splits" if info.format not in EMPTY_TEST
               else EMPTY_TEST[info.format] if split == "test" else "give it training images")
        raise UserError(f"the {split} set of {info.title} in {source} holds no images", fix)
    return Dataset(info, split, images, labels, source)


def _catalog_split(info: DatasetInfo, split: str, data_dir, download):
    location = locate(info, data_dir, download)
    if not location.found:
        raise missing_error(location)
    files = location.files[split]
    return (files[0].parent, *_decode(info.name, files, tuple(p.stat().st_mtime_ns for p in files)))


def load_splits(name: str, data_dir=None, download: bool | None = None) -> tuple[Dataset, Dataset]:
    return load_dataset(name, "train", data_dir, download), load_dataset(name, "test", data_dir, download)


@lru_cache(maxsize=4)
def _decode(name: str, files: tuple[Path, ...], mtimes: tuple[int, ...]) -> tuple["torch.Tensor", "torch.Tensor"]:
    # Decoded once per process (keyed by path and mtime): a sweep's many cells share it.
    info = DATASETS[name]
    if info.format == "idx":
        images, labels = read_idx_pair(files[0], files[1], info.shape, len(info.classes))
    else:
        parts = [cifar_batch(path, len(info.classes)) for path in files]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
    import torch  # here, not at the top: `normlab --help` and input errors should not wait for PyTorch
    # np.array copies: the IDX reader's arrays are read-only views of the file's bytes.
    return torch.from_numpy(np.array(images, order="C")), torch.from_numpy(np.array(labels))


def cifar_batch(path: Path, classes: int):
    """A CIFAR batch; one that normlab extracted from an archive is blamed on that archive (deleting the
    cached copy, as the batch's own message says, would only extract the same bad batch again)."""
    try:
        return read_cifar_batch(path, classes)
    except UserError as exc:
        archive = extracted_from(path)
        if archive is None:
            raise
        raise UserError(f"{exc.what} (extracted from {archive})",
                        "get the archive again from the official source, or point --data-dir at a good copy") from None


def fingerprint(*datasets: Dataset) -> str:
    """A hash of the images and labels actually used, in order: a resumed run must see the same
    data, not only data of the same size. One pass over the bytes (~50 ms for Fashion-MNIST)."""
    digest = hashlib.sha256()
    for dataset in datasets:
        for tensor in (dataset.images, dataset.labels):
            array = tensor.contiguous().numpy()
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(memoryview(array).cast("B"))
    return f"sha256:{digest.hexdigest()}"


def describe(name: str, data_dir=None) -> dict:
    """Where a dataset is found, or where normlab looked (never downloads)."""
    info = dataset_info(name)
    try:
        location: Location = locate(info, data_dir, download=False, strict=False)
    except (UserError, OSError) as exc:         # one bad place ends this dataset's line, not the listing
        return {"dataset": info.name, "title": info.title, "found": False, "error": str(exc)}
    entry = {"dataset": info.name, "title": info.title, "found": location.found}
    if location.found:
        entry["root"] = str(location.root)
        entry["files"] = {split: [str(p) for p in paths] for split, paths in location.files.items()}
    else:
        entry["looked"] = location.looked
        entry["how_to_get"] = info.how_to_get
        entry["download_from"] = list(info.mirrors)
    return entry
