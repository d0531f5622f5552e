"""Files from strangers: pickles that would run code, archives that would write elsewhere,
checkpoints that would run code. Each is refused with one line, and the code never runs."""

import io
import os
import pickle
import subprocess
import sys
import tarfile

import pytest
import torch

from conftest import make_cifar_dataset, run_cli
from normlab import load_run
from normlab.data import load_dataset
from normlab.data.sources import cache_dir
from normlab.errors import UserError


class RunsCode:
    """Unpickling this calls the given function: what a malicious file does."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def touching(marker):
    return [RunsCode(os.system, f"touch {marker}"),
            RunsCode(eval, f"open({str(marker)!r}, 'w')"),
            RunsCode(subprocess.call, ["touch", str(marker)])]


@pytest.mark.parametrize("which", range(3), ids=["os.system", "eval", "subprocess.call"])
def test_cifar_batch_that_would_run_code_is_refused(tmp_path, which):
    marker = tmp_path / "pwned"
    folder = make_cifar_dataset(tmp_path / "cifar", per_batch=4, n_test=4)
    payload = {b"data": touching(marker)[which], b"labels": [0], b"batch_label": b"x"}
    (folder / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(UserError, match="refused to load .*: a CIFAR batch holds plain data only"):
        load_dataset("cifar10", "test", data_dir=folder)
    assert not marker.exists()


def test_cifar_batch_that_would_run_code_through_the_real_command(tmp_path):
    marker = tmp_path / "pwned"
    folder = make_cifar_dataset(tmp_path / "cifar", per_batch=4, n_test=4)
    (folder / "cifar-10-batches-py" / "data_batch_3").write_bytes(
        pickle.dumps({b"data": RunsCode(os.system, f"touch {marker}"), b"labels": [0]}, protocol=2))
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "normlab", "compare", "--dataset", "cifar10", "--data-dir", str(folder),
                           "--norms", "bn", "--epochs", "1", "--batch-size", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "data_batch_3 is not a valid data file: refused to load posix.system" in proc.stderr
    assert not marker.exists(), "the pickle's code ran"
    assert not out.exists(), "nothing was written"


def archive_with(tmp_path, *members):
    """A cifar-10-python.tar.gz: the real batches, plus whatever members are given."""
    make_cifar_dataset(tmp_path / "gen", per_batch=4, n_test=4)
    folder = tmp_path / "download"
    folder.mkdir()
    with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
        tar.add(tmp_path / "gen" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return folder


def member(name, kind=tarfile.REGTYPE, data=b"evil", link=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize("bad, words", [
    (member("cifar-10-batches-py/../../escaped.txt"), "would be written outside its folder"),
    (member("/tmp/normlab-absolute-escape.txt"), "would be written outside its folder"),
    (member("cifar-10-batches-py/data_batch_1", tarfile.SYMTYPE, link="/etc/passwd"), "is a symbolic link"),
    (member("cifar-10-batches-py/escape", tarfile.SYMTYPE, link="../../.."), "is a symbolic link"),
    (member("cifar-10-batches-py/test_batch", tarfile.LNKTYPE, link="/etc/passwd"), "is a hard link"),
    (member("cifar-10-batches-py/dev", tarfile.CHRTYPE), "is a character device"),
], ids=["dotdot", "absolute", "symlink-as-batch", "symlink-dir", "hardlink", "device"])
def test_archive_members_that_could_escape_are_refused(tmp_path, bad, words):
    folder = archive_with(tmp_path, bad)
    with pytest.raises(UserError, match=f"{words}.*nothing was extracted"):
        load_dataset("cifar10", "train", data_dir=folder)
    cache = cache_dir()
    assert not list(tmp_path.rglob("escaped.txt")) and not list(cache.parent.rglob("escaped.txt"))
    assert not os.path.exists("/tmp/normlab-absolute-escape.txt")
    assert not [p for p in cache.rglob("*") if p.is_symlink() or not (p.is_dir() or p.is_file())], "no link was made"
    assert not (cache / "cifar10" / "cifar-10-batches-py").exists(), "nothing was extracted"


def test_the_refused_archive_through_the_real_command(tmp_path, capsys):
    folder = archive_with(tmp_path, member("cifar-10-batches-py/../../../escaped.txt"))
    assert run_cli("compare", "--dataset", "cifar10", "--data-dir", folder, "--epochs", "1", "--out", tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert "would be written outside its folder" in err and "\n" not in err
    assert not list(tmp_path.parent.parent.rglob("escaped.txt"))


@pytest.fixture
def finished(tmp_path):
    from conftest import make_idx_dataset
    data = make_idx_dataset(tmp_path / "mnist", n_train=64, n_test=32)
    out = tmp_path / "run"
    args = ["compare", "--dataset", "mnist", "--norms", "bn,gn:2", "--epochs", "1", "--batch-size", "16", "--data-dir", data, "--out", out]
    assert run_cli(*args) == 0
    return args, out


def snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_checkpoint_that_would_run_code_is_refused_on_resume(finished, tmp_path, capsys):
    args, out = finished
    marker = tmp_path / "pwned"
    torch.save({"model": RunsCode(os.system, f"touch {marker}"), "epochs": [], "status": "running"},
               out / "checkpoints" / "gn2-seed1.pt")
    capsys.readouterr()
    before = snapshot(out)
    assert run_cli(*args, "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert "refused checkpoint" in err and "gn2-seed1.pt" in err and "could run code" in err and "posix.system" in err, err
    assert "weights_only" not in err, "never advise loading it the unsafe way"
    assert "\n" not in err and "delete it to retrain that variant" in err
    assert not marker.exists()
    assert snapshot(out) == before
    # The notebook path refuses it the same way.
    with pytest.raises(UserError, match="refused checkpoint"):
        load_run(out).load_model("gn:2")
    assert not marker.exists()
