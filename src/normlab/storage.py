"""Files that survive a kill at any moment: write to a temporary file, then rename over.

A rename within one folder is atomic on POSIX, so a reader (or a resumed run) sees either the
old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from .errors import UserError


def atomic_write(path: Path, writer, mode: str = "w") -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); a run folder is meant to be shared and read.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as handle:
            writer(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))


def write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data), "wb")


def write_json(path: Path, value) -> None:
    write_text(path, json.dumps(value, indent=1, allow_nan=True) + "\n")


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc})", "restore it from a backup or start the run again") from None


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda f: torch.save(state, f), "wb")


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    # weights_only: a checkpoint is data; never let one run code.
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; all mean the same to a user
        raise UserError(f"cannot load checkpoint {path} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
                        "delete it to retrain that variant, or restore it from a backup") from None
