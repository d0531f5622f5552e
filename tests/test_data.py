"""The real readers on generated files in the real formats, in every layout normlab accepts."""

import gzip
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

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


def cifar_archive(folder: Path, generated: Path, generate: bool = True) -> Path:
    """folder/cifar-10-python.tar.gz of the batches in ``generated`` (made first if ``generate``)."""
    if generate:
        make_cifar_dataset(generated)
    folder.mkdir(exist_ok=True)
    archive = folder / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(generated / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive


def test_cifar_from_archive(tmp_path):
    archive = cifar_archive(tmp_path / "dl", tmp_path / "gen")
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


def test_a_cached_batch_that_is_gone_or_bad_is_handled_from_its_archive(tmp_path):
    """A batch deleted from the extraction cache (as its error told the user to) is extracted again,
    not a FileNotFoundError; a bad batch in the archive is blamed on the archive."""
    import os
    archive = cifar_archive(tmp_path / "dl", tmp_path / "gen")
    first = load_dataset("cifar10", "train", data_dir=archive.parent)
    cached = Path(os.environ["XDG_CACHE_HOME"]) / "normlab" / "cifar10" / "cifar-10-batches-py" / "data_batch_3"
    cached.unlink()
    again = load_dataset("cifar10", "train", data_dir=archive.parent)
    assert cached.is_file() and torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    # A batch the archive holds damaged: the archive is named, and the fix is a good archive.
    (tmp_path / "gen" / "cifar-10-batches-py" / "data_batch_2").write_bytes(
        cifar_batch_bytes(np.zeros((4, 3, 32, 32), np.uint8), [0, 1, 2, 12]))
    cifar_archive(tmp_path / "dl", tmp_path / "gen", generate=False)
    with pytest.raises(UserError) as err:
        load_dataset("cifar10", "train", data_dir=archive.parent)
    assert str(err.value).endswith(f"(extracted from {archive.resolve()}); get the archive again from the official "
                                   "source, or point --data-dir at a good copy"), err.value
    assert "data_batch_2 is not a valid data file" in str(err.value)


def test_a_cache_folder_that_cannot_be_made_is_one_line(tmp_path, monkeypatch):
    archive = cifar_archive(tmp_path / "dl", tmp_path / "gen")
    (tmp_path / "file").write_text("a file where the cache folder goes")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    with pytest.raises(UserError) as err:
        load_dataset("cifar10", "test", data_dir=archive.parent)
    assert str(err.value).startswith(f"cannot write normlab's cache folder {tmp_path / 'file' / 'normlab' / 'cifar10'}")
    assert str(err.value).endswith("make it writable, or set XDG_CACHE_HOME to a folder you can write")


def test_a_data_dir_with_none_of_the_dataset_is_refused_not_passed_over(tmp_path, monkeypatch):
    """An empty --data-dir (or the wrong folder) trained on a copy found elsewhere, silently: here the
    user cache holds MNIST, and --data-dir names an empty folder."""
    import os
    make_idx_dataset(Path(os.environ["XDG_CACHE_HOME"]) / "normlab" / "mnist")
    assert len(load_dataset("mnist", "test")) == 256                     # found in the cache
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError) as err:
        load_dataset("mnist", "test", data_dir=tmp_path / "empty")
    assert str(err.value).startswith(f"MNIST not found in --data-dir {tmp_path / 'empty'}: it holds none of its files "
                                     "(train-images-idx3-ubyte.gz, ")
    assert describe("mnist", tmp_path / "empty")["found"]           # `normlab datasets` still lists the copy it has


def test_the_kaggle_spelling_of_the_idx_files_is_read(tmp_path):
    make_idx_dataset(tmp_path / "plain", compress=False)
    (tmp_path / "kaggle").mkdir()
    for path in (tmp_path / "plain").iterdir():
        (tmp_path / "kaggle" / path.name.replace("-idx", ".idx", 1)).write_bytes(path.read_bytes())
    kaggle, plain = (load_dataset("mnist", "train", data_dir=tmp_path / d) for d in ("kaggle", "plain"))
    assert torch.equal(kaggle.images, plain.images) and torch.equal(kaggle.labels, plain.labels)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cifar_batches_pickled_with_any_protocol_are_read(tmp_path, protocol):
    """Protocol 5 rebuilds arrays with numpy's _frombuffer, and protocol 2 writes b"" as bytes():
    both were refused as if they ran code."""
    images = np.random.default_rng(protocol).integers(0, 256, (3, 3072), dtype=np.uint8)
    batch = {b"batch_label": b"", b"labels": [0, 9, 4], b"data": images, b"filenames": [b"", b"a", b"b"]}
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    got, labels = read_cifar_batch(path)
    assert np.array_equal(got.reshape(3, -1), images) and labels.tolist() == [0, 9, 4]


def test_an_out_of_range_label_is_the_one_named(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(cifar_batch_bytes(np.zeros((3, 3, 32, 32), np.uint8), [9, -1, 3]))
    with pytest.raises(UserError, match=r"label -1 is out of range 0\.\.9"):
        read_cifar_batch(path)


def test_listing_the_datasets_extracts_nothing_and_survives_a_bad_archive(tmp_path, monkeypatch, capsys):
    """`normlab datasets` extracted every CIFAR batch into the cache to list it, and an archive that
    would write outside its folder ended the whole listing."""
    import io
    import os
    from conftest import run_cli
    cifar_archive(tmp_path / "good", tmp_path / "gen")
    entry = describe("cifar10", tmp_path / "good")
    assert entry["found"] and entry["files"]["test"] == [str(tmp_path / "good" / "cifar-10-python.tar.gz")]
    assert not (Path(os.environ["XDG_CACHE_HOME"]) / "normlab" / "cifar10").exists()
    (tmp_path / "bad").mkdir()
    with tarfile.open(tmp_path / "bad" / "cifar-10-python.tar.gz", "w:gz") as tar:
        member = tarfile.TarInfo("../escape")
        member.size = 1
        tar.addfile(member, io.BytesIO(b"x"))
    with pytest.raises(UserError, match="outside its folder"):        # training still refuses it
        load_dataset("cifar10", "test", data_dir=tmp_path / "bad")
    make_idx_dataset(tmp_path / "bad" / "mnist")
    assert run_cli("datasets", "--data-dir", tmp_path / "bad") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"cifar10        found in {tmp_path / 'bad'}", lines     # listed; read (and refused) on use
    assert any(line.startswith(f"mnist          found in {tmp_path / 'bad'}") for line in lines), lines
