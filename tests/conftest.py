"""Shared fixtures: tiny datasets in the real byte formats, and an isolated environment."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

# One intra-op thread in the test process. The tests' tensors are tiny, and on a machine shared
# with other jobs two OpenMP threads wait for each other at every op: the same small compare
# took 38 s with 2 threads and 0.85 s with 1 (2 cores, load average 5.7).
torch.set_num_threads(1)

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding: 0x0000, type 0x08 (ubyte), ndim, big-endian int32 dims, raw data."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def learnable_images(labels: np.ndarray, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Noise plus a bright bar whose row depends on the class: easy to learn in a few steps."""
    c, h, w = shape
    images = rng.integers(0, 60, size=(len(labels), c, h, w), dtype=np.uint8)
    rows = (np.asarray(labels) * (h - 4)) // 10 + 2
    for i, r in enumerate(rows):
        images[i, :, r - 1:r + 2, 4:w - 4] = 250
    return images


def make_idx_dataset(folder: Path, n_train: int = 512, n_test: int = 256, compress: bool = True, seed: int = 0,
                     wrong_test_labels: int = 0) -> Path:
    """wrong_test_labels=k moves every k-th test label to the next class: the images are easy
    enough that a net can get every test image right, and a test of the misclassified grid
    needs mistakes to show."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for split, n, stem in (("train", n_train, "train"), ("test", n_test, "t10k")):
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        images = learnable_images(labels, (1, 28, 28), rng)[:, 0]
        if split == "test" and wrong_test_labels:
            labels[::wrong_test_labels] = (labels[::wrong_test_labels] + 1) % 10
        write_idx(folder / f"{stem}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(folder / f"{stem}-labels-idx1-ubyte{suffix}", labels, compress)
    return folder


def cifar_batch_bytes(images: np.ndarray, labels, extra: dict | None = None) -> bytes:
    """A batch as cifar-10-batches-py has it: a pickled dict with bytes keys, protocol 2."""
    batch = {b"batch_label": b"generated batch", b"labels": [int(v) for v in labels],
             b"data": np.ascontiguousarray(images.reshape(len(images), -1), dtype=np.uint8),
             b"filenames": [f"img{i}.png".encode() for i in range(len(images))]}
    batch.update(extra or {})
    return pickle.dumps(batch, protocol=2)


def make_cifar_dataset(folder: Path, per_batch: int = 64, n_test: int = 128, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    target = folder / "cifar-10-batches-py"
    target.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else per_batch
        labels = rng.integers(0, 10, size=n)
        (target / name).write_bytes(cifar_batch_bytes(learnable_images(labels, (3, 32, 32), rng), labels))
    (target / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"] * 10}, protocol=2))
    return folder


def finished_compare(root: Path, n_train: int = 64) -> tuple[Path, Path]:
    """A finished compare of bn and gn:2 (one epoch) on a tiny generated MNIST: (data, run folder)."""
    data = make_idx_dataset(root / "mnist", n_train=n_train, n_test=32)
    out = root / "run"
    assert run_cli("compare", "--dataset", "mnist", "--norms", "bn,gn:2", "--epochs", "1", "--batch-size", "16",
                   "--data-dir", data, "--out", out) == 0
    return data, out


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    """No test sees the user's cache, $NORMLAB_DATA or the network."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.delenv("NORMLAB_DATA", raising=False)
    monkeypatch.delenv("NORMLAB_MIRROR", raising=False)
    monkeypatch.setenv("NORMLAB_OFFLINE", "1")
    from normlab.data import _decode
    _decode.cache_clear()
    yield home


@pytest.fixture
def fashion_dir(tmp_path):
    """A generated dataset in the Fashion-MNIST layout (IDX, gzipped)."""
    return make_idx_dataset(tmp_path / "fashion")


@pytest.fixture
def cifar_dir(tmp_path):
    return make_cifar_dataset(tmp_path / "cifar")


def run_cli(*args) -> int:
    """normlab's main() in this process; the exit code whether it returns or exits (argparse)."""
    from normlab.cli import main
    try:
        return main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code


def record_pads(monkeypatch, module) -> list:
    """Make every TrainBatches that ``module`` builds append its pad to the returned list."""
    from normlab.data.batches import TrainBatches
    seen = []

    class Recorded(TrainBatches):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            seen.append(self.pad)
    monkeypatch.setattr(module, "TrainBatches", Recorded)
    return seen
