"""The validation split: a fixed, class-stratified part of the training set held out for choices.

Every choice (best epoch, learning rate, optimizer) is made on it, never on the test set. It
depends on the training set and ``seed`` only, not on the run's seed, so every variant and seed
of a comparison is chosen on the same images.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import torch

from ..errors import UserError
from . import Dataset

LARGE_SET, LARGE_SET_VAL = 50_000, 5_000     # the 50k/60k sets hold out 5,000; smaller ones 10%


def default_size(n: int) -> int:
    return LARGE_SET_VAL if n >= LARGE_SET else round(n / 10)


def stratified_indices(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` indices, each class contributing in proportion to its share (largest
    remainder rounding), chosen at random within the class; sorted."""
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * size / len(labels)
    take = np.floor(quota).astype(int)
    extra = np.argsort(-(quota - take), kind="stable")[:size - take.sum()]
    take[extra] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(chosen))


def holdout(train: Dataset, size: int | None = None, seed: int = 0) -> tuple[Dataset, Dataset | None, dict]:
    """(training part, validation part or None, description for results.json).

    ``size`` None: the default rule; 0: no split (the description says so). Both parts keep the
    file order of the images they hold."""
    n = len(train)
    size = default_size(n) if size is None else size
    if size == 0:
        return train, None, {"size": 0, "note": "no validation split: the last epoch is reported, nothing is chosen"}
    if not 0 < size < n:
        raise UserError(f"--val {size} must be between 0 and {n - 1} (the training set has {n} images)",
                        f"use e.g. --val {default_size(n)}, or --val 0 for no validation split")
    labels = train.labels.numpy()
    val_index = stratified_indices(labels, size, seed)
    keep = np.ones(n, dtype=bool)
    keep[val_index] = False
    part = lambda index, split: replace(train, split=split, images=train.images[torch.from_numpy(index)],
                                         labels=train.labels[torch.from_numpy(index)])
    description = {"size": size, "of": n, "seed": seed, "stratified": True,
                   "indices_sha256": hashlib.sha256(val_index.astype("<i8").tobytes()).hexdigest()}
    return part(np.flatnonzero(keep), train.split), part(val_index, "val"), description
