"""Where a dataset's files are: search the usual places, else download them (MD5-checked).

Search order (DESIGN.md): --data-dir, $NORMLAB_DATA, the user cache, system dataset folders,
then the official mirrors into the user cache. $NORMLAB_MIRROR puts a mirror of your own first;
NORMLAB_OFFLINE=1 never touches the network.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import UserError
from .info import cache_dir
from .catalog import CIFAR_ARCHIVE, CIFAR_FILES, CIFAR_FOLDER, DATASETS, IDX_FILES, DatasetInfo
from .formats import MAX_CIFAR_BATCH_BYTES, read_idx

DOWNLOAD_TIMEOUT_S = 30
# The largest official file, cifar-10-python.tar.gz, is 163 MB: a mirror that sends more (or
# never stops) is cut off before it fills the disk.
MAX_DOWNLOAD_BYTES = 512 << 20
# DOWNLOAD_TIMEOUT_S bounds each read; a mirror that trickles a byte every few seconds would pass
# that forever (an audit's server held a run at 0% for minutes). After the grace period a download
# slower than this on average is given up.
MIN_DOWNLOAD_RATE, RATE_GRACE_S = 10_000, 60      # bytes per second, seconds


class BadChecksum(UserError):
    """A downloaded file that is not the one published: the next mirror is tried."""


@dataclass
class Location:
    """The files of both splits, or, when not found, every place that was looked at."""
    info: DatasetInfo
    files: dict[str, tuple[Path, ...]] | None = None
    root: Path | None = None
    looked: list[str] = field(default_factory=list)
    downloaded: bool = False

    @property
    def found(self) -> bool:
        return self.files is not None


def search_roots(info: DatasetInfo, data_dir: str | os.PathLike | None) -> list[tuple[str, Path]]:
    roots = []
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise UserError(f"--data-dir {data_dir} is not a folder", "pass an existing folder, or leave --data-dir out to search the usual places")
        roots.append(("--data-dir", path))
    if os.environ.get("NORMLAB_DATA"):
        roots.append(("$NORMLAB_DATA", Path(os.environ["NORMLAB_DATA"]).expanduser()))
    roots.append(("user cache", cache_dir()))
    roots.extend(("system", Path(d)) for d in info.system_dirs)
    return roots


def find_in(info: DatasetInfo, root: Path, notes: list[tuple[Path, str]] | None = None,
            extract: bool = True) -> dict[str, tuple[Path, ...]] | None:
    """The dataset's files in one root, in any layout normlab understands (its own, torchvision's).
    A folder that holds only some of them, or another dataset's, goes in ``notes`` with why.
    ``extract=False`` (listing only): a CIFAR archive is the file of both splits, not extracted."""
    for folder in info.folders:
        base = root / folder if folder else root
        if not base.is_dir():
            continue
        if info.format == "idx":
            files = {split: tuple(_idx_file(base, stem) for stem in stems) for split, stems in IDX_FILES.items()}
            missing = [stem for split, stems in IDX_FILES.items() for stem, p in zip(stems, files[split]) if p is None]
            other = None if missing else other_idx_dataset(info, files["test"][1])
            if not missing and other is None:
                return files
            why = f"holds {other}, not {info.title}" if other else f"lacks {', '.join(missing)}"
            total = sum(map(len, IDX_FILES.values()))
        else:
            missing = [name for names in CIFAR_FILES.values() for name in names if not (base / name).exists()]
            if not missing:
                return {split: tuple(base / n for n in names) for split, names in CIFAR_FILES.items()}
            if (base / CIFAR_ARCHIVE).is_file():
                if not extract:
                    return {split: (base / CIFAR_ARCHIVE,) for split in CIFAR_FILES}
                return _cifar_from_archive(base / CIFAR_ARCHIVE)
            why, total = f"lacks {', '.join(missing)}", sum(map(len, CIFAR_FILES.values()))
        if notes is not None and len(missing) < total:
            notes.append((base, why))
    return None


def expected_files(info: DatasetInfo) -> str:
    """Where normlab looks inside a folder, in words: what a --data-dir that holds none of it lacks."""
    subfolders = ", ".join(f"{f}/" for f in info.folders if f)
    if info.format == "idx":
        return f"{', '.join(s + '.gz' for stems in IDX_FILES.values() for s in stems)}, in it or in {subfolders}"
    return f"data_batch_1 to _5 and test_batch, or {CIFAR_ARCHIVE}, in it or in {subfolders}"


def _idx_file(folder: Path, stem: str) -> Path | None:
    # torchvision keeps the gunzipped file in raw/, the publishers ship *.gz: accept both, and the
    # spelling of the copies on Kaggle (train-images.idx3-ubyte).
    # exists(), not is_file(): a pipe or device under the file's name is found, and then refused
    # by name when read, rather than reported as a missing dataset.
    kaggle = stem.replace("-idx", ".idx", 1)
    for name in (stem + ".gz", stem, kaggle + ".gz", kaggle):
        if (folder / name).exists():
            return folder / name
    return None


def other_idx_dataset(info: DatasetInfo, test_labels: Path) -> str | None:
    """The title of the other IDX dataset when these test labels are that one's official set."""
    try:
        labels = read_idx(test_labels, 1)
    except UserError:
        return None                 # a broken file is reported when it is loaded
    counts = tuple(int(c) for c in np.bincount(labels, minlength=10))
    for other in DATASETS.values():
        if other.format == "idx" and other is not info and counts == other.test_class_counts:
            return other.title
    return None


def locate(info: DatasetInfo, data_dir=None, download: bool | None = None, strict: bool = True) -> Location:
    """Search the roots in order; ``strict``: a --data-dir with part of the dataset is an error, not
    a note in ``looked``. Not strict is the listing of `normlab datasets`: it extracts nothing."""
    location = Location(info)
    for label, root in search_roots(info, data_dir):
        notes = []
        files = find_in(info, root, notes, extract=strict)
        if files:
            location.files, location.root = files, root
            return location
        if notes and label == "--data-dir" and strict:
            # The folder the user named holds part of this dataset, or another one: say so rather
            # than quietly train on a copy found elsewhere.
            base, why = notes[-1]
            raise UserError(f"{info.title} not found in --data-dir {base}: it {why}", info.how_to_get)
        if label == "--data-dir" and strict:
            # None of it there (an empty folder, the wrong one): the same, not a copy from elsewhere.
            raise UserError(f"{info.title} not found in --data-dir {root}: it holds none of its files "
                            f"({expected_files(info)})", info.how_to_get)
        location.looked += [f"{base} ({label}: {why})" for base, why in notes] or [f"{root} ({label})"]
    if download is None:
        download = os.environ.get("NORMLAB_OFFLINE", "") in ("", "0")
    if download:
        target = cache_dir() / info.name
        fetch(info, target, location)
        location.files, location.root, location.downloaded = find_in(info, target), target, True
    return location


def missing_error(location: Location, reason: str = "") -> UserError:
    info = location.info
    where = "; ".join(location.looked) or "nowhere"
    return UserError(
        f"{info.title} not found{': ' + reason if reason else ''} (looked in {where})",
        info.how_to_get,
    )


def fetch(info: DatasetInfo, target: Path, location: Location) -> None:
    mirrors = list(info.mirrors)
    if os.environ.get("NORMLAB_MIRROR"):
        mirrors.insert(0, own_mirror(os.environ["NORMLAB_MIRROR"]))
    writable_cache(target)
    for remote in info.remote:
        dest = target / remote.name
        if dest.is_file() and md5sum(dest) == remote.md5:
            continue
        failures, bad = [], None
        for mirror in mirrors:
            url = mirror + remote.name
            try:
                download(url, dest, remote.md5)
                break
            except BadChecksum as exc:       # another mirror may have the right file
                failures.append(f"{url}: {exc.what}")
                bad = bad or exc
            except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as exc:
                failures.append(f"{url}: {getattr(exc, 'reason', exc)}")
        else:
            if bad is not None:
                raise bad
            location.looked.append("download (" + "; ".join(failures) + ")")
            raise missing_error(location, "offline or the mirrors failed")


def own_mirror(value: str) -> str:
    """$NORMLAB_MIRROR as a base URL; without a scheme urllib would take "localhost" for one."""
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https", "file") or (parts.scheme != "file" and not parts.netloc):
        raise UserError(f"NORMLAB_MIRROR={value!r} is not a URL",
                        f"write it with its scheme, e.g. NORMLAB_MIRROR=http://{value.split('://')[-1].lstrip('/')}")
    return value.rstrip("/") + "/"


def download(url: str, dest: Path, md5: str) -> None:
    """Stream ``url`` to ``dest`` with a progress bar; keep it only if its MD5 is ``md5``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        # A pipe or device under the file's name would block the open, or never end.
        local = Path(urllib.request.url2pathname(parts.path))
        if local.exists() and not local.is_file():
            raise ConnectionError(f"{local} is not a regular file")
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            read = getattr(response, "read1", response.read)     # what has arrived, not a full megabyte
            started = time.monotonic()
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}", leave=False) as bar:
                received = 0
                try:
                    while chunk := read(1 << 20):
                        out.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                        if received > MAX_DOWNLOAD_BYTES:
                            raise ConnectionError(f"the reply is larger than any dataset file ({MAX_DOWNLOAD_BYTES >> 20} MB)")
                        elapsed = time.monotonic() - started
                        if elapsed > RATE_GRACE_S and received < MIN_DOWNLOAD_RATE * elapsed:
                            raise ConnectionError(f"too slow: {received} bytes in {elapsed:.0f} s, under "
                                                  f"{MIN_DOWNLOAD_RATE // 1000} kB/s")
                except http.client.HTTPException as exc:     # a chunked reply cut mid-chunk
                    raise ConnectionError(f"the reply was cut off after {received} bytes ({type(exc).__name__})") from None
            # urllib returns a reply shorter than its Content-Length without complaint.
            if total is not None and received < total:
                raise ConnectionError(f"the reply was cut off after {received} of {total} bytes")
        got = md5sum(Path(tmp))
        if got != md5:
            raise BadChecksum(
                f"downloaded {url} but its MD5 is {got}, expected {md5}; the file was deleted",
                "try again later or from another mirror ($NORMLAB_MIRROR), or put a good copy in --data-dir",
            )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def md5sum(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


EXTRACTED_FROM = ".extracted-from"       # in the cache's CIFAR folder: "<archive> <size> <mtime_ns>"


def _cifar_from_archive(archive: Path) -> dict[str, tuple[Path, ...]]:
    """Extract the batches of cifar-10-python.tar.gz once, into the user cache; again when the
    archive changed or a batch is gone from the cache (deleted after an error said so)."""
    target = cache_dir() / "cifar10"
    folder = target / CIFAR_FOLDER
    stamp = folder / EXTRACTED_FROM
    signature = f"{archive.resolve()} {archive.stat().st_size} {archive.stat().st_mtime_ns}"
    files = {split: tuple(folder / n for n in names) for split, names in CIFAR_FILES.items()}
    if not (stamp.is_file() and stamp.read_text() == signature and all(p.is_file() for ps in files.values() for p in ps)):
        writable_cache(target)
        extract_cifar(archive, target)
        stamp.write_text(signature)
    return files


def extracted_from(batch: Path) -> str | None:
    """The archive a cached CIFAR batch was extracted from, or None for a batch of the user's."""
    stamp = batch.parent / EXTRACTED_FROM
    try:
        return stamp.read_text()[:4096].rsplit(" ", 2)[0] if stamp.is_file() else None
    except (OSError, UnicodeDecodeError):
        return None


def writable_cache(folder: Path) -> None:
    """Make ``folder`` in the user cache, or say in one line why it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(13, "permission denied")
    except OSError as exc:
        raise UserError(f"cannot write normlab's cache folder {folder} ({exc.strerror or exc})",
                        "make it writable, or set XDG_CACHE_HOME to a folder you can write") from None


def link_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"is a symbolic link to {member.linkname!r}"
    if member.islnk():
        return f"is a hard link to {member.linkname!r}"
    kinds = {tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device", tarfile.FIFOTYPE: "a pipe"}
    return f"is {kinds.get(member.type, 'not a plain file')}"


def extract_cifar(archive: Path, target: Path) -> None:
    """Only the expected batch files, only as plain files, never outside ``target``."""
    wanted = {f"{CIFAR_FOLDER}/{n}" for names in CIFAR_FILES.values() for n in names} | {f"{CIFAR_FOLDER}/batches.meta"}
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target, prefix=".extract-"))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = []
                for member in tar.getmembers():
                    name = os.path.normpath(member.name)
                    if name.startswith(("/", "..")) or os.path.isabs(name) or ".." in Path(name).parts:
                        raise UserError(
                            f"{archive} holds {member.name!r}, which would be written outside its folder; nothing was extracted",
                            "get the archive again from the official source",
                        )
                    if not (member.isfile() or member.isdir()):
                        # The official archive holds plain files and folders only; a link could
                        # point a later write anywhere.
                        raise UserError(
                            f"{archive} holds {member.name!r}, which {link_kind(member)}; nothing was extracted",
                            "get the archive again from the official source",
                        )
                    if name in wanted and member.isfile():
                        if member.size > MAX_CIFAR_BATCH_BYTES:
                            raise UserError(f"{archive} holds {member.name!r} of {member.size >> 20} MB, larger than any "
                                            "CIFAR-10 batch; nothing was extracted", "get the archive again from the official source")
                        members.append(member)
                # The "data" filter (PEP 706) refuses links, devices and escaping paths as a second line of defence.
                tar.extractall(staging, members=members, filter="data")
        except tarfile.ReadError:
            # tarfile's message lists every compression it tried, one line each.
            raise UserError(f"{archive} is not a tar archive (plain, gzip, bz2 or xz)", "delete it and download it again") from None
        except (tarfile.TarError, EOFError, OSError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"{archive} is not a readable tar.gz archive ({reason})", "delete it and download it again") from None
        extracted = staging / CIFAR_FOLDER
        missing = sorted(wanted - {f"{CIFAR_FOLDER}/{p.name}" for p in extracted.glob("*")} - {f"{CIFAR_FOLDER}/batches.meta"})
        if missing:
            raise UserError(f"{archive} lacks {', '.join(missing)}", "delete it and download it again")
        final = target / CIFAR_FOLDER
        if final.exists():
            shutil.rmtree(final)
        os.replace(extracted, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
