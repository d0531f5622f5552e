"""Your own images as a dataset: ``--dataset FOLDER`` or ``--dataset FILE.npz``.

A folder holds one subfolder per class, either split (``FOLDER/train/<class>/*.png|jpg`` and
``FOLDER/test/<class>/...``) or not (``FOLDER/<class>/...``, of which a fixed, class-stratified
20% is held out as the test set). Images are decoded once with Pillow and cached in the user
cache as an .npz keyed by the files' paths, sizes and modification times. An .npz holds
``images`` (N x H x W or N x H x W x C, uint8), ``labels``, optionally ``test_images`` and
``test_labels`` (else the same 20% is held out) and ``classes``.

``own_info(path)`` is the dataset's DatasetInfo (its name is the resolved path, so
``dataset_info(info.name)`` finds it again, in this process or a worker); ``own_split`` its images.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import UserError
from .info import DatasetInfo, cache_dir
from ..storage import open_regular

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# A small CNN trained from memory has no use for more; Pillow's own bomb limit is 89M pixels.
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_IMAGE_FILE_BYTES = 64 << 20
# What an .npz may declare, decompressed: every image is held in memory (and on the GPU).
MAX_NPZ_BYTES = 8 << 30
TEST_FRACTION = 0.2            # held out of a folder or .npz that has no test split of its own
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
CACHE_VERSION = "1"            # part of the cache key: a new layout of the cache never reads an old one


def is_own(name: str) -> bool:
    """Whether --dataset names a file or folder rather than a catalog dataset."""
    return name.lower().endswith(".npz") or os.sep in name or Path(name).expanduser().is_dir()


@dataclass
class Arrays:
    """A dataset in the .npz layout: images N x H x W x C uint8, labels int64."""
    images: np.ndarray
    labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]


def bad(path, problem: str, fix: str = "fix or remove that file, or point --dataset elsewhere") -> UserError:
    return UserError(f"{path}: {' '.join(problem.split())}", fix)   # library messages may span lines


def own_info(name: str) -> DatasetInfo:
    return _load(*_key(name))[0]


def own_split(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images N x C x H x W and int64 labels of one split."""
    arrays = _load(*_key(name))[1]
    return (arrays.images, arrays.labels) if split == "train" else (arrays.test_images, arrays.test_labels)


def _key(name: str) -> tuple[str, tuple]:
    """The resolved path and a cheap signature of its state: the file's stat, or the mtimes of
    the folder and its subfolders (adding, removing or renaming an image changes them)."""
    path = Path(name).expanduser()
    if not path.exists():
        raise UserError(f"--dataset {name}: no such folder or .npz file",
                        "pass a folder of class subfolders of images, an .npz file, or one of cifar10, mnist, fashion-mnist")
    path = path.resolve()
    if path.is_dir():
        return str(path), tuple((root, os.stat(root).st_mtime_ns) for root, _, _ in os.walk(path))
    stat = path.stat()
    return str(path), (stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=4)
def _load(path: str, signature: tuple) -> tuple[DatasetInfo, Arrays]:
    source = Path(path)
    arrays = read_folder(source) if source.is_dir() else read_npz(source)
    info = describe_arrays(source, arrays)
    # Channel-major, the layout every other dataset has in memory.
    arrays.images, arrays.test_images = (np.ascontiguousarray(a.transpose(0, 3, 1, 2)) for a in (arrays.images, arrays.test_images))
    return info, arrays


def describe_arrays(source: Path, arrays: Arrays) -> DatasetInfo:
    n, height, width, channels = arrays.images.shape
    mean, std = channel_stats(arrays.images)
    return DatasetInfo(
        name=str(source), title=source.stem if source.suffix == ".npz" else source.name,
        format="npz" if source.suffix == ".npz" else "folder", shape=(channels, height, width),
        classes=arrays.classes, mean=mean, std=std, train_size=n, test_size=len(arrays.test_labels),
        folders=(), system_dirs=(), mirrors=(), remote=(), how_to_get=f"it is read from {source}",
    )


def channel_stats(images: np.ndarray, chunk: int = 1 << 22) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of N x H x W x C uint8 images scaled to [0, 1], ``chunk`` pixels at
    a time in exact integer sums. In pixels, not images: 4,096 images of 1000 x 1000 made a 32 GB
    float copy, and a 1.9 MB .npz of zeros took the machine's 23 GB."""
    pixels = images.reshape(-1, images.shape[-1])
    total = np.zeros(images.shape[-1], dtype=np.int64)
    squares = np.zeros(images.shape[-1], dtype=np.int64)
    for start in range(0, len(pixels), chunk):
        part = pixels[start:start + chunk].astype(np.int64)
        total += part.sum(0)
        squares += (part * part).sum(0)
    count = len(pixels)
    mean = total / count
    # Floor at one grey level: a channel that never changes would otherwise divide by zero.
    std = np.maximum(np.sqrt(np.maximum(squares / count - mean ** 2, 0.0)), 1.0)
    return tuple(round(float(m) / 255, 4) for m in mean), tuple(round(float(s) / 255, 4) for s in std)


def held_out(labels: np.ndarray) -> np.ndarray:
    """A fixed, class-stratified TEST_FRACTION of the indices (sorted), the same on every run."""
    chosen = []
    rng = np.random.default_rng(0)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        chosen.append(rng.permutation(members)[:int(round(TEST_FRACTION * len(members)))])
    return np.sort(np.concatenate(chosen))


def with_test_split(images, labels, classes) -> Arrays:
    test = held_out(labels)
    train = np.setdiff1d(np.arange(len(labels)), test)
    return Arrays(images[train], labels[train], images[test], labels[test], classes)


# --- .npz -----------------------------------------------------------------------------------

def read_npz(path: Path) -> Arrays:
    """An .npz of uint8 images and integer labels, opened without pickles and checked at the door."""
    with open_regular(path) as handle:
        try:
            with zipfile.ZipFile(handle) as archive:
                declared = sum(member.file_size for member in archive.infolist())
            if declared > MAX_NPZ_BYTES:
                raise bad(path, f"declares {declared >> 20} MB of arrays, more than normlab holds in memory "
                                f"({MAX_NPZ_BYTES >> 30} GB)", "use a smaller dataset")
            handle.seek(0)
            with np.load(handle, allow_pickle=False) as npz:
                if not {"images", "labels"} <= set(npz.files):
                    raise bad(path, f"holds {', '.join(npz.files) or 'nothing'}; expected arrays 'images' and 'labels'",
                              "save it with np.savez(path, images=..., labels=...)")
                arrays = {key: npz[key] for key in ("images", "labels", "test_images", "test_labels", "classes")
                          if key in npz.files}
        # zipfile raises NotImplementedError for unknown compression, RuntimeError for encryption.
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, MemoryError, NotImplementedError, RuntimeError) as exc:
            raise bad(path, f"not a readable .npz ({str(exc)[:200] or type(exc).__name__})", "save it with np.savez(path, images=..., labels=...)") from None
    if ("test_images" in arrays) != ("test_labels" in arrays):
        raise bad(path, "holds only one of test_images and test_labels", "save both, or neither (20% is then held out)")
    images, labels = checked_images(path, "images", arrays["images"]), checked_labels(path, "labels", arrays["labels"])
    if len(images) != len(labels):
        raise bad(path, f"{len(labels)} labels for {len(images)} images")
    if not len(images):
        raise bad(path, "holds no images", "save at least one image per class")
    if "classes" in arrays:
        classes = arrays["classes"]
        if classes.ndim != 1 or classes.dtype.kind not in "US" or not len(classes):
            raise bad(path, f"'classes' is a {classes.dtype} array of shape {classes.shape}; expected a list of names")
        classes = tuple(str(c.decode() if isinstance(c, bytes) else c) for c in classes)
    else:
        # Classes are 0..max label; a label past the image count would name more classes than
        # images (10**12 once asked for 10**12 class names and took all memory).
        if labels.max() >= len(labels):
            raise bad(path, f"labels holds {int(labels.max())}, more classes than its {len(labels)} images",
                      "number the classes 0, 1, 2, ... (or save their names as 'classes')")
        classes = tuple(str(c) for c in range(int(labels.max()) + 1))
        empty = np.flatnonzero(np.bincount(labels, minlength=len(classes)) == 0)
        if len(empty):
            # Labels 0-3 and 250-255 (a uint8 wrap-around) made 256 classes, 246 of them empty.
            more = f", and {len(empty) - 1} more" if len(empty) > 1 else ""
            raise bad(path, f"labels use {len(classes) - len(empty)} of the classes 0..{len(classes) - 1}: class "
                            f"{int(empty[0])} has no image{more}",
                      "number the classes 0, 1, 2, ... without gaps (or save their names as 'classes')")
    if len(classes) < 2:
        raise bad(path, f"holds {len(classes)} class; a dataset needs at least two", "save images of two or more classes")
    if "test_images" not in arrays:
        result = with_test_split(images, labels, classes)
    else:
        result = Arrays(images, labels, checked_images(path, "test_images", arrays["test_images"]),
                        checked_labels(path, "test_labels", arrays["test_labels"]), classes)
        if result.test_images.shape[1:] != images.shape[1:]:
            raise bad(path, f"test_images are {'x'.join(map(str, result.test_images.shape[1:]))} per image, "
                            f"images are {'x'.join(map(str, images.shape[1:]))}")
        if len(result.test_images) != len(result.test_labels):
            raise bad(path, f"{len(result.test_labels)} test_labels for {len(result.test_images)} test_images")
    for key, values in (("labels", result.labels), ("test_labels", result.test_labels)):
        if len(values) and values.max() >= len(classes):
            raise bad(path, f"{key} holds {int(values.max())}, but there are {len(classes)} classes")
    return result


def checked_images(path: Path, key: str, images: np.ndarray) -> np.ndarray:
    """N x H x W x C uint8 (a missing channel axis added)."""
    if images.dtype != np.uint8:
        raise bad(path, f"{key} is {images.dtype}; expected uint8 (0-255)", "convert with np.uint8(x * 255) before saving")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or 0 in images.shape[1:]:
        raise bad(path, f"{key} has shape {images.shape}; expected N x H x W or N x H x W x C with C 1 or 3")
    return images


def checked_labels(path: Path, key: str, labels: np.ndarray) -> np.ndarray:
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise bad(path, f"{key} is a {labels.dtype} array of shape {labels.shape}; expected one integer per image")
    if len(labels) and labels.min() < 0:
        raise bad(path, f"{key} holds {int(labels.min())}; class numbers start at 0")
    return labels.astype(np.int64)


# --- image folders --------------------------------------------------------------------------

def _raise(exc: OSError):
    raise exc


def image_files(folder: Path) -> list[Path]:
    """PNG and JPEG files under ``folder`` (any depth, no hidden ones, symlinked folders not
    followed: they could loop), in sorted order."""
    found = []
    for root, dirs, files in os.walk(folder, onerror=_raise):     # not skipped: a class would look empty
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / f for f in sorted(files) if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith("."))
    return found


def class_folders(folder: Path) -> list[Path]:
    found = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    root = folder.resolve()
    for path in found:
        real = path.resolve()
        if path.is_symlink() and (real == root or real in root.parents or root in real.parents):
            # A link to the folder itself (or to another class in it) would count its images twice.
            raise bad(path, f"is a link to {real}, inside or above the dataset folder, so its images would be "
                            f"counted twice", "replace the link by a folder of that class's own images")
    return found


def labelled_files(folder: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for label, name in enumerate(classes):
        found = image_files(folder / name) if (folder / name).is_dir() else []
        files += found
        labels += [label] * len(found)
    return files, labels


def read_folder(folder: Path) -> Arrays:
    """The folder's images, from the cache when its files have not changed since they were decoded."""
    split = (folder / "train").is_dir() and (folder / "test").is_dir()
    train_root = folder / "train" if split else folder
    classes = [p.name for p in class_folders(train_root)]
    if classes in (["train"], ["test"]):
        # Half of a split folder, not a one-class dataset called "train".
        other = {"train": "test", "test": "train"}[classes[0]]
        raise UserError(f"{folder} holds {classes[0]}/ but no {other}/, so it is read as one class named {classes[0]!r}",
                        f"add {folder / other}/<class>/ beside it, or put the class folders directly in {folder}")
    if len(classes) < 2:
        raise UserError(f"{train_root} holds {len(classes)} class subfolder(s); a dataset needs at least two",
                        f"put each class's images in a subfolder of its own: {train_root}/<class>/*.png")
    if split:
        unknown = sorted({p.name for p in class_folders(folder / "test")} - set(classes))
        if unknown:
            raise UserError(f"{folder / 'test'} has class folder(s) {', '.join(unknown)} that {train_root} lacks",
                            "give the train and test parts the same class folders")
    files, labels = labelled_files(train_root, classes)
    empty = sorted(set(classes) - {classes[i] for i in labels})
    if empty:
        # Every subfolder is a class, so a folder that is not a dataset (its subfolders hold no
        # images) ends here too: say which folder was taken as the dataset.
        raise UserError(f"{train_root / empty[0]} holds no PNG or JPEG images, and every subfolder of {train_root} is "
                        f"read as a class", "add images to it, move it out, or pass a folder whose subfolders are "
                                            "the classes")
    test_files, test_labels = labelled_files(folder / "test", classes) if split else ([], [])
    cache = cache_path(folder, files + test_files)
    if cache.is_file():
        try:
            return read_npz(cache)
        except UserError:
            pass                                   # a damaged cache is decoded again, and rewritten
    images = decode_all(files + test_files)
    labels = np.array(labels + test_labels, dtype=np.int64)
    n = len(files)
    arrays = (Arrays(images[:n], labels[:n], images[n:], labels[n:], tuple(classes)) if split
              else with_test_split(images, labels, tuple(classes)))
    save_cache(folder, cache, arrays)
    return arrays


def cache_path(folder: Path, files: list[Path]) -> Path:
    """<folder name>-<hash of its path>-<hash of its files' paths, sizes and mtimes>.npz"""
    digest = hashlib.sha256(CACHE_VERSION.encode())
    for path in files:
        stat = path.stat()
        digest.update(f"\0{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return cache_dir() / "images" / f"{cache_prefix(folder)}{digest.hexdigest()[:24]}.npz"


def cache_prefix(folder: Path) -> str:
    return f"{folder.name}-{hashlib.sha256(str(folder).encode()).hexdigest()[:12]}-"


def save_cache(folder: Path, cache: Path, arrays: Arrays) -> None:
    """Written to a temporary file and renamed: a killed run never leaves half a cache. The
    folder's older caches (normlab's own files) are removed. A cache that cannot be written
    (read-only home, full disk) only costs decoding again next time."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, images=arrays.images, labels=arrays.labels, test_images=arrays.test_images,
                         test_labels=arrays.test_labels, classes=np.array(arrays.classes))
            os.replace(tmp, cache)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        for old in cache.parent.glob(f"{cache_prefix(folder)}*.npz"):
            if old != cache:
                old.unlink()
    except OSError:
        pass


def decode_all(files: list[Path]) -> np.ndarray:
    """N x H x W x C uint8: grey images stay one channel unless another image has colour."""
    decoded = []
    for path in files:
        image = decode_image(path)
        if decoded and image.shape[:2] != decoded[0].shape[:2]:
            (h, w), (h0, w0) = image.shape[:2], decoded[0].shape[:2]
            raise bad(path, f"{w}x{h} pixels, but {files[0]} is {w0}x{h0}",
                      "resize the images to one size (normlab does not resize)")
        decoded.append(image)
    channels = max(image.shape[2] for image in decoded)
    return np.stack([np.repeat(image, channels // image.shape[2], axis=2) for image in decoded])


def decode_image(path: Path) -> np.ndarray:
    """One PNG or JPEG as H x W x 1 (grey) or H x W x 3 uint8; the size is checked from the
    header before any pixel is decoded."""
    from PIL import Image  # here: only own image folders need Pillow
    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_IMAGE_FILE_BYTES:
            raise bad(path, f"{size >> 20} MB, more than an image normlab trains on ({MAX_IMAGE_FILE_BYTES >> 20} MB)")
        try:
            with warnings.catch_warnings():
                # Before open: Pillow's DecompressionBombWarning (two lines on stderr) comes from
                # open, ahead of the one-line refusal below; also its palette-transparency advice.
                warnings.simplefilter("ignore")
                image = Image.open(handle, formats=("PNG", "JPEG"))
            with image, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise bad(path, f"{image.width}x{image.height} pixels, more than normlab decodes "
                                    f"({MAX_IMAGE_PIXELS} pixels)", "resize the images")
                image.load()
                array = np.asarray(image.convert("L" if image.mode in GRAY_MODES else "RGB"))
        except UserError:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            # Pillow names the open handle ("cannot identify image file <_io.BufferedReader name=3>"):
            # the path is already in the message, the handle's repr says nothing to a user.
            reason = re.sub(r" ?<[^>]*>", "", str(exc))[:200].strip() or type(exc).__name__
            raise bad(path, f"not a readable PNG or JPEG image ({reason})") from None
    return array[..., None] if array.ndim == 2 else array
