"""Fuzzing the files normlab reads from strangers: whatever bytes an IDX header, a CIFAR batch,
an .npz, an image or a checkpoint holds, reading it either works or is refused with one line
(a UserError), never another exception."""

import gzip
import io
import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import cifar_batch_bytes, idx_bytes
from normlab.checkpoints import read_checkpoint
from normlab.data import own
from normlab.data.formats import read_cifar_batch, read_idx
from normlab.errors import UserError
from normlab.variants import Variant

FUZZ = settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", 80)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def flips(size: int, head: int | None = None):
    """Up to 6 (position, byte) changes, within the first ``head`` bytes when given."""
    return st.lists(st.tuples(st.integers(0, (head or size) - 1), st.integers(0, 255)), min_size=1, max_size=6)


def mutated(data: bytes, changes, cut: int | None = None) -> bytes:
    data = bytearray(data)
    for position, value in changes:
        data[position % len(data)] = value
    return bytes(data[:cut] if cut else data)


def refused_in_one_line_or_read(read, data: bytes, name: str):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            read(path)
        except UserError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc), str(exc)


IDX = idx_bytes(np.arange(5 * 28 * 28, dtype=np.uint8).reshape(5, 28, 28) % 251)


@FUZZ
@given(changes=flips(len(IDX), head=16), compress=st.booleans(), cut=st.none() | st.integers(1, len(IDX)))
def test_idx_header(changes, compress, cut):
    data = mutated(IDX, changes, cut)
    refused_in_one_line_or_read(lambda p: read_idx(p, 3), gzip.compress(data) if compress else data, "x-idx3-ubyte")


CIFAR = cifar_batch_bytes(np.zeros((3, 3, 32, 32), np.uint8), [0, 1, 2])


@FUZZ
@given(changes=flips(len(CIFAR)), cut=st.none() | st.integers(1, len(CIFAR)))
def test_cifar_batch(changes, cut):
    refused_in_one_line_or_read(read_cifar_batch, mutated(CIFAR, changes, cut), "data_batch_1")


def npz_bytes() -> bytes:
    out = io.BytesIO()
    np.savez(out, images=np.zeros((6, 8, 8), np.uint8), labels=np.arange(6) % 2, classes=np.array(["a", "b"]))
    return out.getvalue()


NPZ = npz_bytes()


@FUZZ
@given(changes=flips(len(NPZ)), cut=st.none() | st.integers(1, len(NPZ)))
def test_npz(changes, cut):
    refused_in_one_line_or_read(own.read_npz, mutated(NPZ, changes, cut), "set.npz")


def image_bytes(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)).save(out, fmt)
    return out.getvalue()


IMAGES = {fmt: image_bytes(fmt) for fmt in ("PNG", "JPEG")}


@FUZZ
@given(fmt=st.sampled_from(sorted(IMAGES)), changes=flips(600), cut=st.none() | st.integers(1, 2000))
def test_image(fmt, changes, cut):
    refused_in_one_line_or_read(own.decode_image, mutated(IMAGES[fmt], changes, cut), f"img.{fmt.lower()}")


def checkpoint_bytes() -> bytes:
    out = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(2, 2)}, "optimizer": {}, "schedule": {}, "epochs": [], "status": "done",
                "variant": "bn", "seed": 1}, out)
    return out.getvalue()


CHECKPOINT = checkpoint_bytes()


@FUZZ
@given(changes=flips(len(CHECKPOINT)), cut=st.none() | st.integers(1, len(CHECKPOINT)))
def test_checkpoint(changes, cut):
    refused_in_one_line_or_read(lambda p: read_checkpoint(p, Variant.parse("bn"), 1, torch.nn.Linear(2, 2, bias=False)),
                                mutated(CHECKPOINT, changes, cut), "bn.pt")
