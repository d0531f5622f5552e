"""The real readers on generated files in the real formats, in every layout normlab accepts."""

import gzip
import pickle
import tarfile

import numpy as np
import pytest

from conftest import cifar_batch_bytes, idx_bytes, make_cifar_dataset, make_idx_dataset, write_idx
from normlab.data import describe, load_dataset
from normlab.data.formats import read_cifar_batch, read_idx
from normlab.errors import UserError


@pytest.mark.parametrize("compress", [True, False])
def test_idx_roundtrip(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "x-idx3-ubyte", array, compress)
    assert np.array_equal(read_idx(path, 3), array)


@pytest.mark.parametrize("layout", ["", "FashionMNIST/raw", "fashion-mnist"])
@pytest.mark.parametrize("compress", [True, False])
def test_fashion_layouts(tmp_path, layout, compress):
    make_idx_dataset(tmp_path / "root" / layout, n_train=40, n_test=20, compress=compress)
    train = load_dataset("fashion-mnist", "train", data_dir=tmp_path / "root")
    test = load_dataset("fashion-mnist", "test", data_dir=tmp_path / "root")
    assert train.images.shape == (40, 1, 28, 28) and train.images.dtype.is_floating_point is False
    assert test.labels.shape == (20,) and int(test.labels.max()) < 10
    assert train.classes[0] == "T-shirt/top"


def test_mnist_torchvision_layout_and_env_var(tmp_path, monkeypatch):
    make_idx_dataset(tmp_path / "data" / "MNIST" / "raw", n_train=30, n_test=10, compress=False)
    monkeypatch.setenv("NORMLAB_DATA", str(tmp_path / "data"))
    ds = load_dataset("mnist", "test")
    assert len(ds) == 10 and ds.classes == tuple("0123456789")


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_a_data_dir_with_part_of_the_dataset_is_refused_not_passed_over(tmp_path, monkeypatch, dataset):
    """A whole copy elsewhere ($NORMLAB_DATA) must not be taken quietly instead of the folder the
    user named; `normlab datasets` only notes what the folder lacks."""
    make = make_idx_dataset if dataset == "mnist" else make_cifar_dataset
    make(tmp_path / "whole")
    monkeypatch.setenv("NORMLAB_DATA", str(tmp_path / "whole"))
    part = make(tmp_path / "part")
    removed = sorted(part.rglob("t10k-labels*") if dataset == "mnist" else part.rglob("test_batch"))
    removed[0].unlink()
    assert len(load_dataset(dataset, "test")) > 0                    # the whole copy alone is found
    with pytest.raises(UserError, match=rf"not found in --data-dir {part}\S*: it lacks {removed[0].name.split('.')[0]}"):
        load_dataset(dataset, "test", data_dir=part)
    entry = describe(dataset, part)
    assert entry["found"] and entry["root"] == str(tmp_path / "whole")


def test_cifar_batches(cifar_dir):
    train = load_dataset("cifar10", "train", data_dir=cifar_dir)
    test = load_dataset("cifar10", "test", data_dir=cifar_dir)
    assert train.images.shape == (5 * 64, 3, 32, 32) and len(test) == 128
    # Channel-major rows: the first 1024 bytes of a row are the red plane.
    raw = pickle.loads((cifar_dir / "cifar-10-batches-py" / "test_batch").read_bytes(), encoding="bytes")
    assert np.array_equal(test.images[0, 0].numpy().ravel(), raw[b"data"][0, :1024])
    assert test.labels[:5].tolist() == raw[b"labels"][:5]


def test_cifar_from_archive(tmp_path):
    make_cifar_dataset(tmp_path / "gen")
    archive = tmp_path / "dl" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "gen" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    ds = load_dataset("cifar10", "test", data_dir=archive.parent)
    assert len(ds) == 128


def test_missing_offline_says_where_it_looked(tmp_path):
    with pytest.raises(UserError) as err:
        load_dataset("mnist", "train", data_dir=tmp_path)
    message = str(err.value)
    assert "MNIST not found" in message and str(tmp_path) in message and "--data-dir" in message
    assert "\n" not in message


def test_describe_reports_found_and_missing(fashion_dir, tmp_path):
    assert describe("fashion-mnist", fashion_dir)["found"]
    missing = describe("mnist", tmp_path)
    assert not missing["found"] and missing["looked"]


@pytest.mark.parametrize("mutate, words", [
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b + b"\0\0", "trailing bytes"),
    (lambda b: b"\x01\x02" + b[2:], "wrong magic"),
    (lambda b: b[:2] + b"\x0d" + b[3:], "element type"),
    (lambda b: b[:3] + b"\x02" + b[4:], "dimensions"),
    (lambda b: b[:6], "shorter than an IDX header"),
    (lambda b: b"", "shorter than an IDX header"),
])
def test_bad_idx_files(tmp_path, mutate, words):
    good = idx_bytes(np.zeros((3, 28, 28), np.uint8))
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(mutate(good))
    with pytest.raises(UserError, match=words):
        read_idx(path, 3)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((3, 28, 28), np.uint8)))[:-20])
    with pytest.raises(UserError, match="broken gzip"):
        read_idx(path, 3)


def test_label_count_and_range_checked(tmp_path):
    root = make_idx_dataset(tmp_path / "d", n_train=20, n_test=10)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.full(10, 12, np.uint8))
    with pytest.raises(UserError, match="out of range"):
        load_dataset("fashion-mnist", "test", data_dir=root)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.zeros(9, np.uint8))
    with pytest.raises(UserError, match="9 labels for 10 images"):
        load_dataset("fashion-mnist", "test", data_dir=root)


def test_wrong_image_size(tmp_path):
    root = make_idx_dataset(tmp_path / "d", n_train=20, n_test=10)
    write_idx(root / "t10k-images-idx3-ubyte.gz", np.zeros((10, 32, 32), np.uint8))
    with pytest.raises(UserError, match="32x32, expected 28x28"):
        load_dataset("fashion-mnist", "test", data_dir=root)


@pytest.mark.parametrize("payload, words", [
    (lambda: pickle.dumps([1, 2, 3], protocol=2), "expected a dict"),
    (lambda: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}, protocol=2), "missing key"),
    (lambda: cifar_batch_bytes(np.zeros((2, 3, 32, 32), np.uint8), [1]), "1 labels for 2 images"),
    (lambda: cifar_batch_bytes(np.zeros((2, 3, 32, 32), np.uint8), [1, 10]), "out of range"),
    (lambda: pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2), "expected uint8 N x 3072"),
    (lambda: pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, protocol=2), "expected uint8"),
    (lambda: b"not a pickle at all", "unreadable pickle|refused"),
    (lambda: cifar_batch_bytes(np.zeros((2, 3, 32, 32), np.uint8), [0, 1])[:100], "unreadable pickle"),
])
def test_bad_cifar_batches(tmp_path, payload, words):
    path = tmp_path / "data_batch_1"
    path.write_bytes(payload())
    with pytest.raises(UserError, match=words):
        read_cifar_batch(path)


def test_cifar_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Exploit(), b"labels": [0]}, protocol=2))
    with pytest.raises(UserError, match="refused to load (posix|os).system"):
        read_cifar_batch(path)
    assert not marker.exists()


def test_tar_member_escaping_its_folder_is_refused(tmp_path):
    import io
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"evil"
        info = tarfile.TarInfo("cifar-10-batches-py/../../escaped.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(UserError, match="outside its folder"):
        load_dataset("cifar10", "train", data_dir=tmp_path)
    assert not (tmp_path.parent / "escaped.txt").exists()
    assert not list(tmp_path.parent.rglob("escaped.txt"))


def test_fashion_files_are_not_taken_for_mnist(tmp_path):
    """Same names, same format: the official test set's class counts tell them apart."""
    root = make_idx_dataset(tmp_path / "flat", n_train=20, n_test=10)
    write_idx(root / "t10k-images-idx3-ubyte.gz", np.zeros((10000, 28, 28), np.uint8))
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.repeat(np.arange(10, dtype=np.uint8), 1000))
    assert len(load_dataset("fashion-mnist", "test", data_dir=root)) == 10000
    with pytest.raises(UserError, match=r"holds Fashion-MNIST, not MNIST"):
        load_dataset("mnist", "test", data_dir=root)
