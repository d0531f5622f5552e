"""Your own images: a folder of class subfolders (PNG and JPEG) or an .npz, read through the same
load_dataset / dataset_info every other dataset goes through, decoded once and cached."""

import json
import os
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import learnable_images, run_cli
from normlab.data import dataset_info, load_dataset, own
from normlab.data.sources import cache_dir
from normlab.errors import UserError

CLASSES = ("cat", "dog", "fox")


def make_image_folder(root, per_class=10, size=40, channels=3, split=False, seed=0):
    """``per_class`` images per class (PNG, and JPEG for every third), in class subfolders;
    with ``split`` a train/ and a test/ part. Returns the PNG images by path, for exact checks."""
    rng = np.random.default_rng(seed)
    written = {}
    for part in ("train", "test") if split else ("",):
        for label, name in enumerate(CLASSES):
            folder = root / part / name
            folder.mkdir(parents=True, exist_ok=True)
            pixels = learnable_images(np.full(per_class, label * 3), (channels, size, size), rng).transpose(0, 2, 3, 1)
            for i, image in enumerate(pixels):
                suffix = ".jpg" if i % 3 == 2 else ".png"
                path = folder / f"img{i:03d}{suffix}"
                Image.fromarray(image[..., 0] if channels == 1 else image).save(path)
                if suffix == ".png":
                    written[path] = image
    return written


def test_a_split_folder_is_read_as_its_train_and_test_parts(tmp_path):
    written = make_image_folder(tmp_path / "pets", per_class=6, split=True)
    train, test = load_dataset(str(tmp_path / "pets"), "train"), load_dataset(str(tmp_path / "pets"), "test")
    assert train.images.shape == (18, 3, 40, 40) and test.images.shape == (18, 3, 40, 40)
    assert train.classes == CLASSES and train.labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    # Files in sorted order within each class: the first dog is dog/img000.png, decoded exactly.
    first_dog = written[tmp_path / "pets" / "train" / "dog" / "img000.png"]
    assert np.array_equal(train.images[6].numpy().transpose(1, 2, 0), first_dog)
    info = dataset_info(str(tmp_path / "pets"))
    assert info is train.info and info.name == str((tmp_path / "pets").resolve()) and info.title == "pets"
    assert (info.shape, info.pad, info.flip, info.train_size, info.test_size) == ((3, 40, 40), 4, True, 18, 18)
    pixels = train.images.numpy().astype(np.float64) / 255
    assert np.allclose(info.mean, pixels.mean(axis=(0, 2, 3)), atol=1e-4)
    assert np.allclose(info.std, pixels.std(axis=(0, 2, 3)), atol=1e-4)
    assert dataset_info(info.name) is info, "the name must find the same dataset again (workers, reports)"


def test_a_flat_folder_holds_out_a_fixed_stratified_fifth(tmp_path):
    make_image_folder(tmp_path / "pets", per_class=10)
    train, test = load_dataset(str(tmp_path / "pets"), "train"), load_dataset(str(tmp_path / "pets"), "test")
    assert len(train) == 24 and len(test) == 6
    assert np.bincount(test.labels.numpy()).tolist() == [2, 2, 2]
    # The same split on every load, in a fresh process too (decoded again, not cached in memory).
    own._load.cache_clear()
    again = load_dataset(str(tmp_path / "pets"), "test")
    assert np.array_equal(again.images.numpy(), test.images.numpy())


def test_grey_images_stay_one_channel(tmp_path):
    make_image_folder(tmp_path / "digits", per_class=5, size=28, channels=1)
    info = dataset_info(str(tmp_path / "digits"))
    assert (info.shape, info.pad, info.flip) == ((1, 28, 28), 1, False)


def test_decoded_once_then_read_from_the_cache_until_a_file_changes(tmp_path, monkeypatch, isolated):
    make_image_folder(tmp_path / "pets", per_class=5)
    first = load_dataset(str(tmp_path / "pets")).images.clone()
    assert cache_dir().is_relative_to(isolated)
    assert len(list((cache_dir() / "images").glob("pets-*.npz"))) == 1
    own._load.cache_clear()
    decoded = []
    with monkeypatch.context() as patch:
        patch.setattr(own, "decode_image", lambda path: decoded.append(path))
        assert np.array_equal(load_dataset(str(tmp_path / "pets")).images, first) and decoded == []
    # A file rewritten in place (same name, same folder mtime) is noticed by its size and mtime.
    target = tmp_path / "pets" / "cat" / "img000.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(target)
    os.utime(target, ns=(1, 1))
    own._load.cache_clear()
    assert not np.array_equal(load_dataset(str(tmp_path / "pets")).images, first)
    assert len(list((cache_dir() / "images").glob("pets-*.npz"))) == 1, "the outdated cache is removed"


@pytest.mark.parametrize("spoil, words", [
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not a readable PNG or JPEG image"),
    (lambda p: p.write_bytes(b"just text"), "not a readable PNG or JPEG image"),
], ids=["truncated-jpeg", "not-an-image"])
def test_a_broken_image_is_one_line_naming_it(tmp_path, capsys, spoil, words):
    make_image_folder(tmp_path / "pets", per_class=4)
    broken = tmp_path / "pets" / "dog" / "img002.jpg"
    spoil(broken)
    assert run_cli("train", "--norm", "bn", "--dataset", tmp_path / "pets", "--epochs", "1", "--out", tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert f"{broken}: {words}" in err and "\n" not in err and "Traceback" not in err, err
    assert "<_io." not in err, "Pillow's handle repr is not for users"
    assert not (tmp_path / "run").exists()


def claim_size(path, width: int, height: int) -> None:
    """Rewrite a PNG's header to claim another size (its CRC made good): a bomb costs 50 bytes."""
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def test_an_image_that_claims_to_be_huge_is_one_line_and_no_warning(tmp_path, capsys):
    make_image_folder(tmp_path / "pets", per_class=4)
    bomb = tmp_path / "pets" / "fox" / "img001.png"
    claim_size(bomb, 12_000, 12_000)                    # above Pillow's warning size, below its error
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run_cli("train", "--norm", "bn", "--dataset", tmp_path / "pets", "--epochs", "1", "--out", tmp_path / "run") == 2
    assert not caught, [str(w.message) for w in caught]   # Pillow's DecompressionBombWarning: two more lines
    err = capsys.readouterr().err.strip()
    assert f"{bomb}: 12000x12000 pixels, more than normlab decodes" in err and "\n" not in err, err


def test_a_class_folder_that_links_back_into_the_dataset_is_refused(tmp_path):
    make_image_folder(tmp_path / "pets", per_class=4)
    (tmp_path / "pets" / "loop").symlink_to(tmp_path / "pets")
    with pytest.raises(UserError, match="loop: is a link to .*pets, inside or above the dataset folder"):
        dataset_info(str(tmp_path / "pets"))
    (tmp_path / "pets" / "loop").unlink()
    (tmp_path / "pets" / "kitten").symlink_to(tmp_path / "pets" / "cat")
    with pytest.raises(UserError, match="counted twice"):
        dataset_info(str(tmp_path / "pets"))


def test_images_of_another_size_are_one_line_naming_the_file(tmp_path):
    make_image_folder(tmp_path / "pets", per_class=4)
    odd = tmp_path / "pets" / "fox" / "img001.png"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(odd)
    with pytest.raises(UserError, match=f"{odd}: 40x30 pixels, but .*cat/img000.png is 40x40; resize the images"):
        dataset_info(str(tmp_path / "pets"))


@pytest.mark.parametrize("setup, words", [
    (lambda root: (root / "only").mkdir(parents=True), "holds 1 class subfolder"),
    (lambda root: (root / "train" / "cat").mkdir(parents=True), "holds train/ but no test/"),
    (lambda root: [(root / c).mkdir(parents=True) for c in ("a", "b")], "a holds no PNG or JPEG images"),
], ids=["one-class", "half-a-split", "empty-class"])
def test_a_folder_without_two_classes_of_images_is_refused(tmp_path, setup, words):
    setup(tmp_path / "x")
    with pytest.raises(UserError, match=words):
        dataset_info(str(tmp_path / "x"))


def test_a_path_that_does_not_exist_is_one_line(tmp_path):
    with pytest.raises(UserError, match="no such folder or .npz file"):
        dataset_info(str(tmp_path / "nowhere.npz"))


def test_an_npz_with_its_own_test_split(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "set.npz", images=images, labels=np.arange(12) % 4, test_images=images[:5],
             test_labels=np.arange(5) % 4, classes=np.array(["a", "b", "c", "d"]))
    train, test = load_dataset(str(tmp_path / "set.npz")), load_dataset(str(tmp_path / "set.npz"), "test")
    assert train.images.shape == (12, 3, 32, 32) and test.images.shape == (5, 3, 32, 32)
    assert np.array_equal(train.images.numpy(), images.transpose(0, 3, 1, 2))
    assert train.classes == ("a", "b", "c", "d") and train.info.title == "set" and train.info.format == "npz"


def test_an_npz_without_a_test_split_or_class_names(tmp_path):
    images = np.zeros((20, 28, 28), np.uint8)
    np.savez_compressed(tmp_path / "grey.npz", images=images, labels=np.repeat([0, 1], 10).astype(np.uint8))
    info = dataset_info(str(tmp_path / "grey.npz"))
    assert (info.shape, info.classes, info.train_size, info.test_size) == ((1, 28, 28), ("0", "1"), 16, 4)


@pytest.mark.parametrize("arrays, words", [
    (dict(images=np.zeros((4, 8, 8), np.float32), labels=np.zeros(4, int)), "images is float32; expected uint8"),
    (dict(images=np.zeros((4, 8, 8, 5), np.uint8), labels=np.zeros(4, int)), r"images has shape \(4, 8, 8, 5\)"),
    (dict(images=np.zeros((4, 8, 8), np.uint8)), "expected arrays 'images' and 'labels'"),
    (dict(images=np.zeros((4, 8, 8), np.uint8), labels=np.zeros(3, int)), "3 labels for 4 images"),
    (dict(images=np.zeros((4, 8, 8), np.uint8), labels=np.array([0, 1, 2, 3]), classes=np.array(["a", "b"])),
     "labels holds 3, but there are 2 classes"),
    (dict(images=np.zeros((4, 8, 8), np.uint8), labels=np.array([0, 1, -1, 0])), "class numbers start at 0"),
    (dict(images=np.zeros((4, 8, 8), np.uint8), labels=np.zeros(4, int), test_images=np.zeros((2, 8, 8), np.uint8)),
     "only one of test_images and test_labels"),
    (dict(images=np.zeros((4, 8, 8), np.uint8), labels=np.arange(4) % 2, test_images=np.zeros((2, 9, 9), np.uint8),
          test_labels=np.zeros(2, int)), "test_images are 9x9x1 per image, images are 8x8x1"),
    # 10**12 once made normlab name 10**12 classes and take all memory
    (dict(images=np.zeros((4, 8, 8), np.uint8), labels=np.array([0, 1, 10**12, 0])),
     "labels holds 1000000000000, more classes than its 4 images"),
    (dict(images=np.zeros((0, 8, 8), np.uint8), labels=np.zeros(0, int)), "holds no images"),
    (dict(images=np.zeros((4, 8, 8), np.uint8), labels=np.zeros(4, int)), "holds 1 class; a dataset needs at least two"),
    (dict(images=np.array([object()] * 4), labels=np.zeros(4, int)), "not a readable .npz .*[Pp]ickle"),
])
def test_a_bad_npz_is_one_line(tmp_path, arrays, words):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UserError, match=words) as caught:
        dataset_info(str(tmp_path / "bad.npz"))
    assert "\n" not in str(caught.value)


def test_an_npz_that_is_not_a_zip_or_declares_too_much(tmp_path, monkeypatch):
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(UserError, match="text.npz: not a readable .npz"):
        dataset_info(str(tmp_path / "text.npz"))
    np.savez_compressed(tmp_path / "big.npz", images=np.zeros((1000, 64, 64), np.uint8), labels=np.zeros(1000, int))
    monkeypatch.setattr(own, "MAX_NPZ_BYTES", 1 << 20)
    with pytest.raises(UserError, match=r"big.npz: declares 3 MB of arrays, more than normlab holds in memory"):
        dataset_info(str(tmp_path / "big.npz"))


def test_train_on_a_folder_of_your_own(tmp_path):
    """End to end through the command line: 28x28 grey images in class folders, one epoch."""
    make_image_folder(tmp_path / "digits", per_class=12, size=28, channels=1)
    out = tmp_path / "run"
    assert run_cli("train", "--norm", "gn:2", "--dataset", tmp_path / "digits", "--epochs", "1", "--batch-size", "8",
                   "--out", out) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["runs"][0]["status"] == "done" and results["dataset"] == str((tmp_path / "digits").resolve())
    assert (out / "report.md").is_file() and (out / "misclassified-gn2.png").is_file()


def test_the_slug_names_run_folders_without_the_datasets_path(tmp_path):
    make_image_folder(tmp_path / "pets", per_class=4)
    assert dataset_info(str(tmp_path / "pets")).slug == "pets"
    np.savez(tmp_path / "set.npz", images=np.zeros((4, 8, 8), np.uint8), labels=np.arange(4) % 2)
    assert dataset_info(str(tmp_path / "set.npz")).slug == "set"
    assert dataset_info("fashion").slug == "fashion-mnist"


def test_train_on_an_npz_of_your_own(tmp_path, capsys):
    """End to end: 32x32 RGB images in an .npz with its own test split, one epoch."""
    rng = np.random.default_rng(1)
    labels = np.arange(48) % 3
    images = learnable_images(labels * 3, (3, 32, 32), rng).transpose(0, 2, 3, 1)
    np.savez(tmp_path / "rgb.npz", images=images[:36], labels=labels[:36], test_images=images[36:],
             test_labels=labels[36:], classes=np.array(CLASSES))
    out = tmp_path / "run"
    assert run_cli("train", "--norm", "bn", "--dataset", tmp_path / "rgb.npz", "--epochs", "1", "--batch-size", "8",
                   "--out", out) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["runs"][0]["status"] == "done" and results["runs"][0]["epochs"][0]["test_acc"] >= 0
    assert (out / "misclassified-bn.png").is_file() and (out / "report.md").read_text().startswith("# normlab report: rgb")
    # The .npz moved: `normlab report` says so, not "--dataset ...: no such file" (report has no --dataset).
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (tmp_path / "rgb.npz").rename(tmp_path / "moved.npz")
    capsys.readouterr()
    assert run_cli("report", out) == 2
    assert "rgb.npz is not there any more (moved or deleted); put it back" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("locked", ["", "dog"])
def test_an_unreadable_folder_is_one_line(tmp_path, locked):
    """The image folder, or one class folder, that this user may not read: a one-line error, not
    a PermissionError traceback, and not a class that looks empty. Root reads anything, so as
    root normlab runs under setpriv without the capabilities that override file permissions."""
    import shutil
    import subprocess
    import sys
    make_image_folder(tmp_path / "pets", per_class=3, size=8)
    command = [sys.executable, "-m", "normlab", "summary", "--dataset", str(tmp_path / "pets"), "--norms", "bn"]
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    target = tmp_path / "pets" / locked
    target.chmod(0)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "cache")})
    finally:
        target.chmod(0o755)
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert f"cannot open {target.as_posix().rstrip('/')}" in err and "(permission denied); make it readable" in err, err


def test_channel_stats_are_exact_in_chunks_of_pixels():
    """Chunks of pixels, not of images: a chunk of 4,096 images of 1000 x 1000 was a 32 GB float copy."""
    from normlab.data.own import channel_stats
    images = np.random.default_rng(3).integers(0, 256, (7, 5, 3, 3), dtype=np.uint8)
    flat = images.reshape(-1, 3).astype(np.float64)
    want = (tuple(round(float(m) / 255, 4) for m in flat.mean(0)),
            tuple(round(float(s) / 255, 4) for s in np.maximum(flat.std(0), 1.0)))
    assert channel_stats(images) == channel_stats(images, chunk=4) == want      # 105 pixels in 27 chunks


def test_an_npz_with_an_empty_test_split_says_what_to_do_with_the_npz(tmp_path):
    """Its advice was to point --data-dir at another copy, which plays no part for your own data."""
    from normlab.errors import UserError
    path = tmp_path / "mine.npz"
    np.savez(path, images=np.zeros((50, 28, 28), np.uint8), labels=np.arange(50) % 2,
             test_images=np.zeros((0, 28, 28), np.uint8), test_labels=np.zeros(0, np.int64))
    with pytest.raises(UserError) as err:
        load_dataset(str(path), "test")
    assert str(err.value) == (f"the test set of mine in {path} holds no images; store images in test_images, or leave "
                              "test_images and test_labels out and normlab holds out a test split")


def test_npz_labels_with_gaps_are_refused_without_class_names(tmp_path):
    """Labels 0-3 and 250-255 (wrapped uint8) trained as 256 classes, 246 of them empty."""
    from normlab.errors import UserError
    path = tmp_path / "gaps.npz"
    labels = np.array([0, 1, 2, 3, 250, 251, 252, 253, 254, 255] * 30, dtype=np.uint8)
    np.savez(path, images=np.zeros((300, 28, 28), np.uint8), labels=labels)
    with pytest.raises(UserError) as err:
        load_dataset(str(path), "train")
    assert "labels use 10 of the classes 0..255: class 4 has no image, and 245 more; number the classes 0, 1, 2, " \
           "... without gaps (or save their names as 'classes')" in str(err.value)
    named = tmp_path / "named.npz"                       # named classes may have no images: that is explicit
    np.savez(named, images=np.zeros((300, 28, 28), np.uint8), labels=labels,
             classes=np.array([f"c{i}" for i in range(256)]))
    assert len(dataset_info(str(named)).classes) == 256
