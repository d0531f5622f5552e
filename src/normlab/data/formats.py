"""Readers for the datasets' own file formats: IDX (MNIST, Fashion-MNIST) and the pickled
batches of CIFAR-10's python version. Each returns uint8 images N x C x H x W and int64 labels,
and refuses anything malformed with an error that names the file.

Every read is bounded: only regular files are opened (a FIFO would block forever, a link to
/dev/zero would never end), and what is read or decompressed is capped by what the file's
header declares or by the size the format can have (a 1.5 MB gzip bomb once inflated to 3.3 GB).
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import UserError
from ..storage import open_regular

GZIP_MAGIC = b"\x1f\x8b"
IDX_UBYTE = 0x08
# The largest official IDX file (60,000 images of 28x28) is 47 MB; 1 GiB leaves room for bigger
# sets in the same format and still refuses a header that promises gigabytes.
MAX_IDX_BYTES = 1 << 30
# A real CIFAR-10 batch is 31 MB (10,000 images of 3,072 bytes plus names).
MAX_CIFAR_BATCH_BYTES = 64 << 20
def corrupt(path: Path, problem: str) -> UserError:
    problem = " ".join(problem.split())      # library messages (pickle's, for one) may span lines
    return UserError(
        f"{path} is not a valid data file: {problem}",
        "delete it and fetch it again (normlab downloads it when online), or point --data-dir at a good copy",
    )


def read_upto(stream: BinaryIO, size: int, path: Path) -> bytes:
    """At most ``size`` bytes of ``stream``, gunzipped on the fly; broken gzip is an input error."""
    try:
        return stream.read(size)
    except (OSError, EOFError, zlib.error) as exc:
        raise corrupt(path, f"broken gzip stream ({exc})") from None


def data_stream(handle: BinaryIO) -> BinaryIO:
    """The file's content, gunzipped when it is gzip-compressed (whatever its name says)."""
    compressed = handle.read(2) == GZIP_MAGIC
    handle.seek(0)
    return gzip.GzipFile(fileobj=handle, mode="rb") if compressed else handle


def read_bytes(path: Path, limit: int) -> bytes:
    """The whole content (gunzipped), refused when it is more than ``limit`` bytes."""
    with open_regular(path) as handle:
        data = read_upto(data_stream(handle), limit + 1, path)
    if len(data) > limit:
        raise corrupt(path, f"holds more than {limit >> 20} MB (decompressed), more than such a file can")
    return data


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with ``ndim`` dimensions, as a numpy array. Decompression
    stops at the size the header declares (plus one byte, to see trailing data)."""
    with open_regular(path) as handle:
        stream = data_stream(handle)
        header = read_upto(stream, 4 + 4 * ndim, path)
        if len(header) < 4 + 4 * ndim:
            raise corrupt(path, f"{len(header)} bytes is shorter than an IDX header")
        if header[0] != 0 or header[1] != 0:
            raise corrupt(path, f"wrong magic number {header[:4].hex()} (an IDX file starts with 0000)")
        if header[2] != IDX_UBYTE:
            raise corrupt(path, f"element type 0x{header[2]:02x}, expected unsigned bytes (0x08)")
        if header[3] != ndim:
            raise corrupt(path, f"{header[3]} dimensions, expected {ndim}")
        dims = tuple(int.from_bytes(header[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
        expected = math.prod(dims)          # exact: three 32-bit dims overflow int64
        declared = f"{'x'.join(map(str, dims))} = {expected} bytes"
        if expected > MAX_IDX_BYTES:
            raise corrupt(path, f"header declares {declared}, more than normlab reads ({MAX_IDX_BYTES >> 20} MB)")
        body = read_upto(stream, expected + 1, path)
    if len(body) != expected:
        what = "truncated" if len(body) < expected else "has trailing bytes"
        raise corrupt(path, f"{what}: header says {declared}, file holds {'more' if len(body) > expected else len(body)}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


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
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if len(bad):
        raise corrupt(path, f"label {int(bad[0])} is out of range 0..{num_classes - 1}")


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
        # A protocol 2 pickle writes an empty bytes value as bytes(): as pure as the above.
        ("__builtin__", "bytes"), ("builtins", "bytes"),
    }
    # Protocol 5 pickles (numpy >= 1.16) rebuild arrays with numpy's _frombuffer(buf, dtype, shape,
    # order). Not numpy's own function: a fuzzed dtype state reached numpy internals through it
    # ("get_clear_loop not set"), so this stand-in builds only uint8 arrays, with a fresh dtype.
    FROMBUFFER = {("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.FROMBUFFER:
            return uint8_frombuffer
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise RefusedGlobal(f"refused to load {module}.{name}: a CIFAR batch holds plain data only (dicts, lists, "
                            f"bytes, ints, uint8 arrays), and normlab calls nothing else a pickle names")


def uint8_frombuffer(buf, dtype, shape, order="C"):
    """numpy's _frombuffer for uint8 arrays only (what a CIFAR batch's data is)."""
    if not (isinstance(dtype, np.dtype) and dtype.str == "|u1" and isinstance(buf, (bytes, bytearray, pickle.PickleBuffer))
            and isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape) and order in ("C", "F")):
        raise pickle.UnpicklingError("an array that is not plain uint8 data")
    return np.frombuffer(buf, dtype=np.uint8).reshape(shape, order=order)


def unpickle_plain(path: Path):
    data = read_bytes(path, MAX_CIFAR_BATCH_BYTES)
    try:
        return PlainDataUnpickler(io.BytesIO(data), encoding="bytes").load()
    except RefusedGlobal as exc:
        raise corrupt(path, str(exc)) from None
    except Exception as exc:
        # Any failure of a pickle that named only admitted globals means a damaged file. Fuzzing
        # found, besides the usual UnpicklingError/EOFError/ValueError, LookupError (a codec
        # name) and SystemError/RuntimeError from numpy's own dtype and array state setters.
        raise corrupt(path, f"unreadable pickle ({type(exc).__name__}: {str(exc)[:200]})") from None


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
