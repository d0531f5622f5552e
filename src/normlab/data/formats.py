"""Readers for the datasets' own file formats: IDX (MNIST, Fashion-MNIST) and the pickled
batches of CIFAR-10's python version. Each returns uint8 images N x C x H x W and int64 labels,
and refuses anything malformed with an error that names the file.
"""

from __future__ import annotations

import gzip
import io
import pickle
import zlib
from pathlib import Path

import numpy as np

from ..errors import UserError

GZIP_MAGIC = b"\x1f\x8b"
IDX_UBYTE = 0x08


def corrupt(path: Path, problem: str) -> UserError:
    return UserError(
        f"{path} is not a valid data file: {problem}",
        "delete it and fetch it again (normlab downloads it when online), or point --data-dir at a good copy",
    )


def read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it is gzip-compressed (whatever its name says)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror or exc})", "check that it is a readable file, or point --data-dir at another copy") from None
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise corrupt(path, f"broken gzip stream ({exc})") from None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with ``ndim`` dimensions, as a numpy array."""
    data = read_bytes(path)
    if len(data) < 4 + 4 * ndim:
        raise corrupt(path, f"{len(data)} bytes is shorter than an IDX header")
    if data[0] != 0 or data[1] != 0:
        raise corrupt(path, f"wrong magic number {data[:4].hex()} (an IDX file starts with 0000)")
    if data[2] != IDX_UBYTE:
        raise corrupt(path, f"element type 0x{data[2]:02x}, expected unsigned bytes (0x08)")
    if data[3] != ndim:
        raise corrupt(path, f"{data[3]} dimensions, expected {ndim}")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    body = len(data) - (4 + 4 * ndim)
    if body != expected:
        what = "truncated" if body < expected else "has trailing bytes"
        raise corrupt(path, f"{what}: header says {'x'.join(map(str, dims))} = {expected} bytes, file holds {body}")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_idx_pair(images_path: Path, labels_path: Path, shape: tuple[int, int, int], num_classes: int):
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if images.shape[1:] != shape[1:]:
        raise corrupt(images_path, f"images are {images.shape[1]}x{images.shape[2]}, expected {shape[1]}x{shape[2]}")
    if len(images) != len(labels):
        raise corrupt(labels_path, f"{len(labels)} labels for {len(images)} images in {images_path.name}")
    check_labels(labels_path, labels, num_classes)
    return images.reshape(len(images), *shape), labels.astype(np.int64)


def check_labels(path: Path, labels: np.ndarray, num_classes: int) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise corrupt(path, f"label {int(labels.max())} is out of range 0..{num_classes - 1}")


class RefusedGlobal(pickle.UnpicklingError):
    pass


class PlainDataUnpickler(pickle.Unpickler):
    """Admits only what a CIFAR batch is made of: dicts, lists, strings, bytes, ints and numpy
    uint8 arrays. A pickle that names any other callable (os.system, eval, ...) is refused
    before anything is called."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        # Python 3 pickles bytes for protocol 2 readers as _codecs.encode(str, "latin1"):
        # a pure conversion between str and bytes.
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise RefusedGlobal(f"refused to load {module}.{name}: a CIFAR batch holds plain data only")


def unpickle_plain(path: Path):
    data = read_bytes(path)
    try:
        return PlainDataUnpickler(io.BytesIO(data), encoding="bytes").load()
    except RefusedGlobal as exc:
        raise corrupt(path, str(exc)) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as exc:
        raise corrupt(path, f"unreadable pickle ({type(exc).__name__}: {exc})") from None


def read_cifar_batch(path: Path, num_classes: int = 10):
    """One CIFAR-10 python batch: images N x 3 x 32 x 32 uint8, labels int64."""
    batch = unpickle_plain(path)
    if not isinstance(batch, dict):
        raise corrupt(path, f"holds a {type(batch).__name__}, expected a dict")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    missing = {"data", "labels"} - batch.keys()
    if missing:
        raise corrupt(path, f"missing key(s) {', '.join(sorted(missing))} (found {', '.join(sorted(map(str, batch)))})")
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        described = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise corrupt(path, f"'data' is a {described}, expected uint8 N x 3072")
    if not isinstance(labels, (list, tuple)) or not all(type(v) is int for v in labels):
        raise corrupt(path, "'labels' is not a list of integers")
    if len(labels) != len(data):
        raise corrupt(path, f"{len(labels)} labels for {len(data)} images")
    labels = np.asarray(labels, dtype=np.int64)
    check_labels(path, labels, num_classes)
    # Rows are 1024 red, 1024 green, 1024 blue values: already channel-major.
    return data.reshape(-1, 3, 32, 32), labels
