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
import tempfile
import warnings
from pathlib import Path

import torch

from .data.formats import open_regular
from .errors import UserError, WriteError

try:
    import fcntl
except ImportError:       # Windows: no advisory locks; run folders are then unguarded
    fcntl = None

TEMP_SUFFIX = ".tmp"
LOCK_NAME = ".normlab.lock"


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


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc})", "restore it from a backup or start the run again") from None
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror or exc})", "check that it is a readable file") from None


def is_leftover(path: Path) -> bool:
    """A temporary file of a write that was killed before its rename."""
    return path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX) and path.is_file()


def leftovers(folder: Path) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.rglob(f".*{TEMP_SUFFIX}") if is_leftover(p)) if folder.is_dir() else []


def remove_leftovers(folder: Path) -> None:
    for path in leftovers(folder):
        path.unlink(missing_ok=True)


_LOCKS: dict[str, object] = {}


def lock_folder(folder: Path) -> None:
    """Make this process the only one writing to ``folder`` until ``unlock_folder`` or exit.

    An advisory lock (flock) on a file in the folder: the kernel drops it when the process
    dies, however it dies, so a killed run never leaves a stale lock behind.
    """
    key = str(Path(folder).resolve())
    if fcntl is None or key in _LOCKS:
        return
    try:
        handle = open(Path(folder) / LOCK_NAME, "a")
    except OSError as exc:
        raise WriteError(Path(folder) / LOCK_NAME, exc) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise UserError(f"another normlab process is writing to {folder}",
                        "wait for it to finish, or stop it and continue with --resume") from None
    _LOCKS[key] = handle


def unlock_folder(folder: Path) -> None:
    handle = _LOCKS.pop(str(Path(folder).resolve()), None)
    if handle is not None:
        handle.close()


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda f: torch.save(state, f), "wb")


def load_checkpoint(path: Path, map_location="cpu"):
    """What torch.save wrote to ``path``, read with weights_only (a checkpoint is data; never
    let one run code), or one line saying why not. Only a regular file is opened: torch.load on
    a FIFO would wait forever."""
    fix = "delete it to retrain that variant, or restore it from a backup"
    try:
        # torch warns (two lines on stderr) about pickle protocols it did not write; the file is
        # refused or accepted all the same, and the user gets one line either way.
        with open_regular(path) as handle, warnings.catch_warnings():
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
