"""Files that survive a kill at any moment: write to a temporary file, then rename over.

A rename within one folder is atomic on POSIX, so a reader (or a resumed run) sees either the
old file or the new one, never half of one. A write that fails (disk full, folder no longer
writable) removes its temporary file and leaves the old file as it was. A process killed in the
middle of a write cannot remove its temporary file: ``is_leftover`` recognises one, and a
resumed run deletes them (under ``lock_folder``, so never another live process's).
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
import warnings
from pathlib import Path
from typing import BinaryIO

from .errors import UserError, WriteError

try:
    import fcntl
except ImportError:       # Windows: no advisory locks; run folders are then unguarded
    fcntl = None

TEMP_SUFFIX = ".tmp"
LOCK_NAME = ".normlab.lock"
WORKERS_LOCK_NAME = ".normlab.workers.lock"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; a result file gets the mode any other
# new file would get (0644 under the usual umask), so a shared run folder stays readable.
FILE_MODE = 0o666 & ~_umask()


def os_error(exc: BaseException | None) -> OSError | None:
    """The OSError behind an exception: torch.save, for one, reports a failed write (ENOSPC)
    as a RuntimeError raised while the OSError is being handled."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def atomic_write(path: Path, writer, mode: str = "w") -> None:
    _write(path, writer, mode)
    if _OWNED:
        _noted(path)


def _write(path: Path, writer, mode: str) -> None:
    if isinstance(writer, str):
        text = writer
        writer = lambda f: f.write(text)
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
        with os.fdopen(fd, mode) as handle:
            os.fchmod(handle.fileno(), FILE_MODE)
            writer(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
    except Exception as exc:
        cause = os_error(exc)
        if cause is None:
            raise
        raise WriteError(path, cause) from None
    finally:
        # Also on KeyboardInterrupt: Ctrl-C during a write keeps the old file and no temp file.
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))


def write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data), "wb")


def write_json(path: Path, value) -> None:
    write_text(path, json.dumps(value, indent=1, allow_nan=True) + "\n")


MAX_JSON_BYTES = 64 * 2**20     # results.json of a 1,000-run sweep is a few MB


FILE_KINDS = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a named pipe", stat.S_IFCHR: "a character device",
              stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def open_regular(path: Path, follow_links: bool = True) -> BinaryIO:
    """``path`` opened for reading, if it is a regular file (after following links, if asked:
    a dataset may be a link; a run folder's own files never are, normlab writes them whole).

    Opened non-blocking and checked with fstat on the open descriptor: a FIFO neither blocks
    the open nor slips in between the check and the read."""
    if not follow_links and Path(path).is_symlink():
        raise UserError(f"{path} is a link, not a file normlab wrote (a run folder's files are read only as written)",
                        "put the file itself there, or start the run again")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if follow_links else getattr(os, "O_NOFOLLOW", 0)))
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror or exc})",
                        "check that it is a readable file, or restore it") from None
    kind = stat.S_IFMT(os.fstat(fd).st_mode)
    if kind != stat.S_IFREG:
        os.close(fd)
        raise UserError(f"{path} is {FILE_KINDS.get(kind, 'not a regular file')}, not a data file",
                        "point normlab at the file itself (a copy, not a pipe, device or folder)")
    return os.fdopen(fd, "rb")


def read_json(path: Path, cap: int = MAX_JSON_BYTES):
    """A JSON file of a run folder, read only if it is a regular file, not a link, of at most
    ``cap`` bytes (a FIFO would hang the read, a link could hand in another run's results)."""
    path = Path(path)
    try:
        with open_regular(path, follow_links=False) as handle:
            data = handle.read(cap + 1)
        if len(data) > cap:
            raise UserError(f"{path} is larger than {cap // 2**20} MiB", "replace it with the file normlab wrote, or start the run again")
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        # ValueError: JSONDecodeError and UnicodeDecodeError, and a number of more than 4,300
        # digits, which Python refuses to convert.
        raise UserError(f"{path} is not valid JSON ({str(exc)[:200]})", "restore it from a backup or start the run again") from None
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror or exc})", "check that it is a readable file") from None


# Temp files are named ".<target name>.<8 random characters>.tmp" (mkstemp's pattern): only
# those, and only in the folders a run writes, are ever cleared as leftovers of a killed write.
TEMP_NAME = re.compile(r"\.(.+)\.[A-Za-z0-9_]{8}" + re.escape(TEMP_SUFFIX))


def is_leftover(path: Path) -> bool:
    """A temporary file of a write that was killed before its rename."""
    return TEMP_NAME.fullmatch(path.name) is not None and path.is_file() and not path.is_symlink()


def leftovers(*folders: Path) -> list[Path]:
    return sorted(p for folder in folders if Path(folder).is_dir() for p in Path(folder).iterdir() if is_leftover(p))


def remove_leftovers(*folders: Path) -> None:
    for path in leftovers(*folders):
        path.unlink(missing_ok=True)


# ---- what normlab wrote: the folder's manifest ----------------------------------------------

MANIFEST = ".normlab-manifest.json"
_OWNED: dict[Path, set[str]] = {}       # folder (resolved) -> names relative to it, written by us


def read_manifest(folder: Path) -> set[str] | None:
    """The files normlab wrote in ``folder`` (relative names), None when it has no manifest."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    names = read_json(path)
    if not (isinstance(names, list) and all(isinstance(n, str) and n and not Path(n).is_absolute()
                                             and ".." not in Path(n).parts for n in names)):
        raise UserError(f"{path} is not a normlab manifest", "delete the folder's files yourself, or choose another --out")
    return set(names)


def own_folder(folder: Path, names=()) -> None:
    """From now on every write into ``folder`` (and its subfolders) is listed in its manifest;
    ``names``: files this run will write from other processes (workers' checkpoints)."""
    folder = Path(folder).resolve()
    _OWNED[folder] = read_manifest(folder) or set()
    _note(folder, set(names))


def _note(folder: Path, names: set[str]) -> None:
    if not names <= _OWNED[folder] or not (folder / MANIFEST).exists():
        _OWNED[folder] |= names
        _write(folder / MANIFEST, json.dumps(sorted(_OWNED[folder]), indent=0) + "\n", "w")


def _noted(path: Path) -> None:
    path = Path(path).resolve()
    for folder in _OWNED:
        if folder in path.parents and path.name != MANIFEST:
            _note(folder, {path.relative_to(folder).as_posix()})


def remove_written(folder: Path) -> None:
    """--overwrite: remove the files the manifest lists (regular files inside the folder), and
    nothing else."""
    folder = Path(folder)
    root = folder.resolve()
    for name in sorted(read_manifest(folder) or ()):
        path = folder / name
        if path.is_file() and not path.is_symlink() and root in path.resolve().parents:
            path.unlink()
    if root in _OWNED:
        _OWNED[root] = set()
    (folder / MANIFEST).unlink(missing_ok=True)


def disown_folder(folder: Path) -> None:
    _OWNED.pop(Path(folder).resolve(), None)


# ---- one writer per folder ------------------------------------------------------------------

_LOCKS: dict[str, list] = {}


def _flock(path: Path, how: int):
    try:
        handle = open(path, "a")
    except OSError as exc:
        raise WriteError(path, exc) from None
    try:
        fcntl.flock(handle, how)
    except OSError:
        handle.close()
        return None
    return handle


def lock_folder(folder: Path) -> None:
    """Make this process the only one writing to ``folder`` until ``unlock_folder`` or exit.

    Advisory locks (flock), which the kernel drops when a process dies, however it dies, so a
    killed run never leaves a stale lock. Two of them: the driver holds LOCK_NAME; its worker
    processes hold WORKERS_LOCK_NAME shared (``hold_folder``), so a new run is refused while
    any of them still lives, even after the driver was killed.
    """
    key = str(Path(folder).resolve())
    if fcntl is None or key in _LOCKS:
        return
    busy = UserError(f"another normlab process is writing to {folder}",
                     "wait for it to finish, or stop it and continue with --resume")
    driver = _flock(Path(folder) / LOCK_NAME, fcntl.LOCK_EX | fcntl.LOCK_NB)
    if driver is None:
        raise busy from None
    workers = _flock(Path(folder) / WORKERS_LOCK_NAME, fcntl.LOCK_EX | fcntl.LOCK_NB)
    if workers is None:
        driver.close()
        raise busy from None
    workers.close()                  # free for this run's own workers to share
    _LOCKS[key] = [driver]


def hold_folder(folder: Path) -> None:
    """In a worker process: keep the folder locked as long as this process lives."""
    if fcntl is not None:
        handle = _flock(Path(folder) / WORKERS_LOCK_NAME, fcntl.LOCK_SH)
        _LOCKS[str(Path(folder).resolve())] = [handle]


def folder_busy(folder: Path) -> bool:
    """Whether a normlab process (a run or one of its workers) holds ``folder``."""
    for name in (LOCK_NAME, WORKERS_LOCK_NAME):
        handle = _flock(Path(folder) / name, fcntl.LOCK_EX | fcntl.LOCK_NB) if (Path(folder) / name).exists() else True
        if handle is None:
            return True
        if handle is not True:
            handle.close()
    return False


def unlock_folder(folder: Path) -> None:
    for handle in _LOCKS.pop(str(Path(folder).resolve()), []):
        handle.close()
    disown_folder(folder)


def save_checkpoint(path: Path, state: dict) -> None:
    import torch  # here: reading results.json and the input checks need no PyTorch
    atomic_write(path, lambda f: torch.save(state, f), "wb")


def load_checkpoint(path: Path, map_location="cpu"):
    """What torch.save wrote to ``path``, read with weights_only (a checkpoint is data; never
    let one run code), or one line saying why not. Only a regular file is opened: torch.load on
    a FIFO would wait forever."""
    fix = "delete it to retrain that variant, or restore it from a backup"
    import torch
    try:
        # torch warns (two lines on stderr) about pickle protocols it did not write; the file is
        # refused or accepted all the same, and the user gets one line either way.
        with open_regular(path, follow_links=False) as handle, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(handle, map_location=map_location, weights_only=True)
    except UserError:
        raise
    except Exception as exc:  # torch raises many types for a bad file; all mean the same to a user
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        # torch's message for a refused object starts by suggesting weights_only=False, which
        # would run the code; name only what was refused.
        refused = [line for line in lines if "GLOBAL" in line]
        if refused:
            raise UserError(f"refused checkpoint {path}: it holds more than tensors and plain data, and loading it "
                            f"could run code ({refused[0][:200]})", fix) from None
        unsupported = [line for line in lines if "Unsupported" in line]
        reason = (unsupported or lines or [""])[0][:200]
        raise UserError(f"cannot load checkpoint {path} ({type(exc).__name__}: {reason})", fix) from None
