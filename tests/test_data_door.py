"""Every data file is checked at the door: only regular files are read, and no read or
decompression goes beyond what the file's header (or its format) says it can hold."""

import gzip
import os
import tracemalloc
import zlib

import numpy as np
import pytest

from conftest import idx_bytes, make_cifar_dataset, make_idx_dataset, run_cli, write_idx
from normlab.data import formats, load_dataset
from normlab.data.formats import read_cifar_batch, read_idx
from normlab.errors import UserError


def gzip_bomb(header: bytes, zeros: int) -> bytes:
    """A valid gzip stream of ``header`` followed by ``zeros`` zero bytes, built in 1 MB steps."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [compressor.compress(header)]
    chunk = bytes(1 << 20)
    for _ in range(zeros >> 20):
        parts.append(compressor.compress(chunk))
    return b"".join(parts) + compressor.flush()


def test_gzip_bomb_is_read_only_as_far_as_its_header_declares(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip_bomb(idx_bytes(np.zeros((3, 28, 28), np.uint8)), 200 << 20))
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(UserError, match="train-images-idx3-ubyte.gz is not a valid data file: has trailing bytes"):
            read_idx(path, 3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"decompressing used {peak >> 20} MB for a 2 kB image set"


def test_a_header_that_promises_gigabytes_is_refused_before_reading(tmp_path):
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((1, 28, 28), np.uint8))[:4] + (2_000_000).to_bytes(4, "big")
                                   + (1000).to_bytes(4, "big") + (1000).to_bytes(4, "big")))
    with pytest.raises(UserError, match=r"header declares 2000000x1000x1000 = 2000000000000 bytes, more than normlab reads"):
        read_idx(path, 3)


def test_a_cifar_batch_larger_than_any_real_one_is_refused(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(gzip_bomb(b"", formats.MAX_CIFAR_BATCH_BYTES + (1 << 20)))
    with pytest.raises(UserError, match="data_batch_1 is not a valid data file: holds more than 64 MB"):
        read_cifar_batch(path)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind, words", [("fifo", "a named pipe"), ("dev-zero", "a character device"), ("folder", "a folder")])
def test_files_that_are_not_regular_are_refused_before_reading(tmp_path, kind, words):
    path = tmp_path / "x-idx3-ubyte"
    {"fifo": os.mkfifo, "dev-zero": lambda p: os.symlink("/dev/zero", p), "folder": os.mkdir}[kind](path)
    with pytest.raises(UserError, match=f"x-idx3-ubyte is {words}, not a data file"):
        read_idx(path, 3)


@pytest.mark.timeout(60)
def test_a_fifo_in_place_of_a_training_file_is_one_line(tmp_path, capsys):
    root = make_idx_dataset(tmp_path / "d", n_train=20, n_test=10, compress=False)
    (root / "train-labels-idx1-ubyte").unlink()
    os.mkfifo(root / "train-labels-idx1-ubyte")
    assert run_cli("train", "--norm", "bn", "--dataset", "mnist", "--data-dir", root, "--epochs", "1",
                   "--out", tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert "train-labels-idx1-ubyte is a named pipe, not a data file" in err and "\n" not in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("split, stem", [("test", "t10k"), ("train", "train")])
def test_an_empty_split_is_one_clear_line(tmp_path, capsys, split, stem):
    root = make_idx_dataset(tmp_path / "d", n_train=20, n_test=10)
    write_idx(root / f"{stem}-images-idx3-ubyte.gz", np.zeros((0, 28, 28), np.uint8))
    write_idx(root / f"{stem}-labels-idx1-ubyte.gz", np.zeros(0, np.uint8))
    with pytest.raises(UserError, match=f"the {split} set of MNIST in .* holds no images"):
        load_dataset("mnist", split, data_dir=root)
    assert run_cli("train", "--norm", "bn", "--dataset", "mnist", "--data-dir", root, "--epochs", "1",
                   "--out", tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert "holds no images" in err and "\n" not in err and "Traceback" not in err, err


def test_an_empty_cifar_test_batch_is_one_clear_line(tmp_path):
    import pickle
    folder = make_cifar_dataset(tmp_path / "c", per_batch=2, n_test=2)
    (folder / "cifar-10-batches-py" / "test_batch").write_bytes(
        pickle.dumps({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}, protocol=4))
    with pytest.raises(UserError, match="the test set of CIFAR-10 in .* holds no images"):
        load_dataset("cifar10", "test", data_dir=folder)


def test_an_archive_member_larger_than_any_batch_is_not_extracted(tmp_path):
    import io
    import tarfile
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        member = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        member.size = formats.MAX_CIFAR_BATCH_BYTES + 1
        tar.addfile(member, io.BytesIO(bytes(member.size)))
    with pytest.raises(UserError, match="holds 'cifar-10-batches-py/data_batch_1' of 64 MB, larger than any CIFAR-10 batch"):
        load_dataset("cifar10", "train", data_dir=tmp_path)


def test_a_download_larger_than_any_dataset_file_is_cut_off(tmp_path, monkeypatch):
    import dataclasses
    import http.server
    import threading
    from normlab.data import catalog, sources
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "train-images-idx3-ubyte.gz").write_bytes(bytes(3 << 20))
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "served"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        monkeypatch.setitem(catalog.DATASETS, "mnist", dataclasses.replace(catalog.DATASETS["mnist"], mirrors=()))
        monkeypatch.setattr(sources, "MAX_DOWNLOAD_BYTES", 1 << 20)
        monkeypatch.setenv("NORMLAB_MIRROR", f"http://127.0.0.1:{httpd.server_address[1]}/")
        monkeypatch.delenv("NORMLAB_OFFLINE")
        with pytest.raises(UserError, match=r"the reply is larger than any dataset file \(1 MB\)"):
            load_dataset("mnist", "train")
        assert not list((sources.cache_dir() / "mnist").iterdir())
    finally:
        httpd.shutdown()
