"""A disk that fills up, a folder that stops being writable, in the middle of a run.

The failure is simulated where the operating system would report it: os.fsync (the last call of
every atomic write, after the data went through write()) raises ENOSPC, or tempfile.mkstemp
raises EACCES, for one chosen file. test_resume.py does the same with a real kernel limit
(RLIMIT_FSIZE) on a real process.
"""

import errno
import json
import os
import shlex
import tempfile
from pathlib import Path

import pytest

from conftest import make_idx_dataset, run_cli
from normlab import storage

ARGS = ["compare", "--dataset", "mnist", "--norms", "bn,gn:2", "--epochs", "2", "--batch-size", "32"]
TIMINGS = {"seconds", "started", "finished"}


def numbers(value):
    if isinstance(value, dict):
        return {k: numbers(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [numbers(v) for v in value]
    return value


def fail_on(monkeypatch, name: str, nth: int, error: int, where: str):
    """Make the nth atomic write of a file called ``name`` fail with ``error``."""
    seen = {"count": 0}

    def should_fail(path) -> bool:
        if Path(path).name == name or Path(path).name.startswith(f".{name}."):
            seen["count"] += 1
            return seen["count"] == nth
        return False

    if where == "fsync":
        real = os.fsync

        def fsync(fd):
            if should_fail(os.readlink(f"/proc/self/fd/{fd}")):
                raise OSError(error, os.strerror(error))
            return real(fd)
        monkeypatch.setattr(os, "fsync", fsync)
    else:
        real = tempfile.mkstemp

        def mkstemp(*args, prefix=None, dir=None, **kwargs):
            if should_fail(Path(dir) / prefix):
                raise OSError(error, os.strerror(error), str(Path(dir) / prefix))
            return real(*args, prefix=prefix, dir=dir, **kwargs)
        monkeypatch.setattr(storage.tempfile, "mkstemp", mkstemp)
    return seen


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_idx_dataset(tmp_path_factory.mktemp("data") / "mnist", n_train=128, n_test=32)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NORMLAB_OFFLINE", "1")
        assert run_cli(*ARGS, "--data-dir", data, "--out", out) == 0
    return json.loads((out / "results.json").read_text())


def files(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="finds a file's name from its descriptor in /proc")
@pytest.mark.parametrize("name, nth, error, where, kept", [
    ("gn2-seed1.pt", 1, errno.ENOSPC, "fsync", "bn-seed1.pt"),              # the disk fills while saving a checkpoint
    ("results.json", 4, errno.ENOSPC, "fsync", "results.json"),   # ... while saving results
    ("misclassified.json", 1, errno.ENOSPC, "fsync", "bn-seed1.pt"),
    ("results.json", 3, errno.EACCES, "mkstemp", "results.json"),  # the folder stops being writable
], ids=["checkpoint-ENOSPC", "results-ENOSPC", "misclassified-ENOSPC", "results-EACCES"])
def test_write_failure_mid_run_is_one_line_keeps_files_and_resumes(data, reference, tmp_path, capsys, monkeypatch,
                                                                   name, nth, error, where, kept):
    out = tmp_path / "run"
    args = [*ARGS, "--data-dir", str(data), "--out", str(out)]
    with monkeypatch.context() as patch:
        seen = fail_on(patch, name, nth, error, where)
        code = run_cli(*args)
    assert seen["count"] >= nth, "the simulated failure happened"
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, captured
    assert "\n" not in err and "Traceback" not in err
    assert f"cannot write {out}" in err and os.strerror(error) in err, err
    what, _, how = err.partition("; ")
    assert name in what or name.split(".")[0] in what
    assert "then continue with: normlab " in how and how.endswith("--resume"), err
    assert storage.leftovers(out, out / "checkpoints") == [], "the failed write removed its temp file"
    results = json.loads((out / "results.json").read_text())    # still a whole, valid file
    assert len(results["runs"]) == 2 and ((out / kept).exists() or (out / "checkpoints" / kept).exists())

    # The line's command continues the run, and the end result is the uninterrupted one.
    command = shlex.split(how.split("then continue with: ", 1)[1])
    assert command[:2] == ["normlab", "compare"] and run_cli(*command[1:]) == 0
    assert numbers(json.loads((out / "results.json").read_text())["runs"]) == numbers(reference["runs"])


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    storage.write_json(path, {"epoch": 1})
    before = path.read_bytes()
    fail_on(monkeypatch, "results.json", 1, errno.ENOSPC, "fsync")
    with pytest.raises(storage.WriteError, match=r"cannot write .*results.json \(No space left on device\); free some disk space"):
        storage.write_json(path, {"epoch": 2})
    assert path.read_bytes() == before and storage.leftovers(tmp_path) == []


def test_written_files_get_the_usual_permissions(tmp_path):
    storage.write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~storage._umask()


class FillsUp:
    """A file on a disk with ``room`` bytes left: write() past that fails with ENOSPC."""

    def __init__(self, handle, room: int):
        self.handle, self.room = handle, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def test_disk_full_inside_torch_save_is_a_write_error(tmp_path, monkeypatch):
    """torch.save reports a failed write as a RuntimeError (its zip writer's), with the
    OSError only as the exception's context; it must still read as "disk full"."""
    import torch
    path = tmp_path / "bn.pt"
    storage.save_checkpoint(path, {"model": {"w": torch.zeros(3)}})
    before = path.read_bytes()
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode="r", *a, **k: FillsUp(real_fdopen(fd, mode, *a, **k), room=1000))
    with pytest.raises(storage.WriteError, match=r"bn.pt \(No space left on device\)"):
        storage.save_checkpoint(path, {"model": {"w": torch.zeros(10_000)}})
    assert path.read_bytes() == before and storage.leftovers(tmp_path) == []


# ---- --overwrite removes only what normlab wrote (issue 13, item 1) --------------------------

def test_overwrite_refuses_a_folder_of_the_users_and_deletes_nothing(data, tmp_path, capsys):
    """The red-team repro: a folder with the user's photo.png and checkpoints/my.pt."""
    out = tmp_path / "u"
    (out / "checkpoints").mkdir(parents=True)
    (out / "photo.png").write_text("x")
    (out / "checkpoints" / "my.pt").write_text("w")
    assert run_cli("train", "--norm", "ln", "--epochs", "1", "--dataset", "mnist", "--batch-size", "32", "--data-dir", data,
                   "--out", out, "--overwrite") == 2
    err = capsys.readouterr().err.strip()
    assert "--overwrite: " in err and "normlab deletes nothing else" in err and "\n" not in err, err
    assert (out / "photo.png").read_text() == "x" and (out / "checkpoints" / "my.pt").read_text() == "w"
    assert sorted(p.name for p in out.rglob("*")) == ["checkpoints", "my.pt", "photo.png"]


def test_overwrite_replaces_normlabs_files_and_keeps_the_users(data, tmp_path):
    out = tmp_path / "u2"
    sweep = ["sweep", "--batch-sizes", "16,32", "--norms", "gn:2", "--seeds", "1", "--epochs", "1", "--dataset", "mnist",
             "--data-dir", data, "--out", out]
    assert run_cli(*sweep) == 0
    written = storage.read_manifest(out)
    assert {"results.json", "metrics.csv", "checkpoints/b16-gn2-seed1.pt", "sweep.png"} <= written
    # The user's files, among normlab's: a project with a temp file of its own, a photo, a checkpoint.
    (out / "project" / "deep").mkdir(parents=True)
    (out / "project" / "deep" / ".session.tmp").write_text("mine")
    (out / "project" / ".notes.abcdefgh.tmp").write_text("mine too")
    (out / "photo.png").write_text("x")
    (out / "checkpoints" / "my.pt").write_text("w")
    again = [a if a != "16,32" else "32" for a in sweep]              # another grid: --batch-sizes 32
    assert run_cli(*again, "--overwrite") == 0
    assert (out / "project" / "deep" / ".session.tmp").read_text() == "mine"
    assert (out / "project" / ".notes.abcdefgh.tmp").read_text() == "mine too"
    assert (out / "photo.png").read_text() == "x" and (out / "checkpoints" / "my.pt").read_text() == "w"
    assert not (out / "checkpoints" / "b16-gn2-seed1.pt").exists(), "the old run's own checkpoint is gone"
    assert json.loads((out / "results.json").read_text())["config"]["axes"] == {"batch_size": [32]}
    assert "checkpoints/b16-gn2-seed1.pt" not in storage.read_manifest(out)


def test_leftovers_are_only_normlabs_temp_files_in_the_folders_it_writes(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "deep").mkdir()
    ours = [tmp_path / ".results.json.a1b2c3d4.tmp", tmp_path / "checkpoints" / ".bn-seed1.pt.zz_9xy0q.tmp"]
    theirs = [tmp_path / ".session.tmp", tmp_path / "deep" / ".results.json.a1b2c3d4.tmp", tmp_path / "x.a1b2c3d4.tmp"]
    for path in ours + theirs:
        path.write_text("")
    assert storage.leftovers(tmp_path, tmp_path / "checkpoints") == sorted(ours)
    storage.remove_leftovers(tmp_path, tmp_path / "checkpoints")
    assert all(p.exists() for p in theirs) and not any(p.exists() for p in ours)
