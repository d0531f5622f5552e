"""The bad-input sweep: every way to hand normlab something wrong ends the same way.

Exit code 2, one line on stderr that names the problem and the fix ("what; how"), nothing on
stdout, no traceback, and the run folder it was pointed at byte-for-byte as it was. Each case
runs the real command line (cli.main) against a copy of a real finished run, mostly with
--resume, which with good input would go on to rewrite that run's files: refusing must happen
before anything is written.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import cifar_batch_bytes, idx_bytes, make_cifar_dataset, make_idx_dataset, run_cli

BASE = ["compare", "--dataset", "mnist", "--norms", "bn,gn:2", "--epochs", "1", "--batch-size", "32"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A real run folder, made once; each case gets a copy."""
    root = tmp_path_factory.mktemp("finished")
    data = make_idx_dataset(root / "mnist", n_train=256, n_test=64)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(root / "home"))
        mp.setenv("NORMLAB_OFFLINE", "1")
        assert run_cli(*BASE, "--data-dir", data, "--out", root / "run") == 0
    return data, root / "run"


def snapshot(folder: Path) -> dict:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() and p.stat().st_size < 2**20 and not p.is_symlink()
            else (p.is_dir(), p.is_symlink(), p.lstat().st_size) for p in sorted(folder.rglob("*"))}


# --- data with one thing wrong -------------------------------------------------------------

def idx_copy(good: Path, tmp: Path, name: str | None = None, content: bytes | None = None) -> Path:
    bad = tmp / "bad-data"
    shutil.copytree(good, bad)
    if name is not None:
        if content is None:
            (bad / name).unlink()
        else:
            (bad / name).write_bytes(content)
    return bad


def images_bytes(good: Path) -> bytes:
    return gzip.decompress((good / "t10k-images-idx3-ubyte.gz").read_bytes())


def labels(values) -> bytes:
    return gzip.compress(idx_bytes(np.asarray(values, np.uint8)))


def data_case(name, content_of, words):
    """Resume the finished run, same options, with --data-dir pointing at a broken copy."""
    def args(good, run, tmp):
        content = None if content_of is None else content_of(good)
        return [*BASE, "--data-dir", idx_copy(good, tmp, name, content), "--out", run, "--resume"]
    return args, words


def cifar_case(batch_bytes, words):
    def args(good, run, tmp):
        folder = make_cifar_dataset(tmp / "cifar", per_batch=4, n_test=4)
        (folder / "cifar-10-batches-py" / "data_batch_2").write_bytes(batch_bytes(tmp))
        return ["compare", "--dataset", "cifar10", "--norms", "bn", "--epochs", "1", "--batch-size", "2",
                "--data-dir", folder, "--out", run, "--resume"]
    return args, words


def code_running_pickle(tmp: Path) -> bytes:
    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp / 'pwned'}",))
    return pickle.dumps({b"data": Exploit(), b"labels": [0]}, protocol=2)


def option_case(*options, words):
    """The finished run's options with one changed for a bad value."""
    def args(good, run, tmp):
        return [*BASE, *options, "--data-dir", good, "--out", run, "--resume"]
    return args, words


def folder_case(prepare, *options, words, resume=True):
    def args(good, run, tmp):
        out = prepare(run, tmp)
        return [*BASE, *options, "--data-dir", good, "--out", out, *(["--resume"] if resume else [])]
    return args, words


def write(relative: str, content: bytes):
    def prepare(run, tmp):
        (run / relative).write_bytes(content)
        return run
    return prepare


def copy_checkpoint(source: str, target: str):
    def prepare(run, tmp):
        shutil.copyfile(run / "checkpoints" / source, run / "checkpoints" / target)
        return run
    return prepare


def old_checkpoint(name: str):
    """The checkpoint as normlab before 0.2.0 wrote it: no 'block' key (its net was conv -> norm -> ReLU)."""
    def prepare(run, tmp):
        path = run / "checkpoints" / name
        saved = torch.load(path, weights_only=True)
        del saved["block"]
        torch.save(saved, path)
        return run
    return prepare


def edit_results(change):
    def prepare(run, tmp):
        results = json.loads((run / "results.json").read_text())
        change(results)
        (run / "results.json").write_text(json.dumps(results))
        return run
    return prepare


def replace_results(make):
    def prepare(run, tmp):
        (run / "results.json").unlink()
        make(run / "results.json")
        return run
    return prepare


def link_checkpoint(run, tmp):
    """A checkpoint replaced by a link to a copy of it: --overwrite does not remove a link, and
    the new run would have read it as its own (a 1-epoch bn reported as a finished longer run)."""
    path = run / "checkpoints" / "bn-seed1.pt"
    shutil.copyfile(path, tmp / "outside.pt")
    path.unlink()
    path.symlink_to(tmp / "outside.pt")
    return run


def spoil_chosen(run, tmp):
    """The chosen epoch's weights replaced by a stray tensor: report and resume load them."""
    path = run / "checkpoints" / "bn-seed1.pt"
    saved = torch.load(path, weights_only=True)
    saved["chosen"] = {"epoch": 1, "model": {"stray": torch.zeros(3)}}
    torch.save(saved, path)
    return run


def truncate_checkpoint(run, tmp):
    path = run / "checkpoints" / "bn-seed1.pt"
    path.write_bytes(path.read_bytes()[:3000])
    return run


def empty_folder(run, tmp):
    (tmp / "empty").mkdir()
    return tmp / "empty"


def a_file(run, tmp):
    (tmp / "file").write_text("not a folder")
    return tmp / "file"


def unrelated_folder(run, tmp):
    (tmp / "mine").mkdir()
    (tmp / "mine" / "thesis.tex").write_text("precious")
    return tmp / "mine"


CASES = {
    # IDX files (MNIST, Fashion-MNIST)
    "idx missing file": data_case("t10k-labels-idx1-ubyte.gz", None, ["MNIST not found in --data-dir", "it lacks t10k-labels-idx1-ubyte"]),
    "idx empty file": data_case("t10k-images-idx3-ubyte.gz", lambda g: b"", ["shorter than an IDX header", "fetch it again"]),
    "idx truncated": data_case("t10k-images-idx3-ubyte.gz", lambda g: gzip.compress(images_bytes(g)[:-100]), ["truncated", "fetch it again"]),
    "idx trailing bytes": data_case("t10k-images-idx3-ubyte.gz", lambda g: gzip.compress(images_bytes(g) + b"xx"), ["trailing bytes"]),
    "idx wrong magic": data_case("t10k-images-idx3-ubyte.gz", lambda g: gzip.compress(b"\x50\x4b" + images_bytes(g)[2:]), ["wrong magic number"]),
    "idx wrong element type": data_case("t10k-images-idx3-ubyte.gz", lambda g: gzip.compress(images_bytes(g)[:2] + b"\x0d" + images_bytes(g)[3:]), ["element type 0x0d"]),
    "idx wrong dimensions": data_case("t10k-labels-idx1-ubyte.gz", lambda g: gzip.compress(idx_bytes(np.zeros((64, 1), np.uint8))), ["2 dimensions, expected 1"]),
    "idx wrong image size": data_case("t10k-images-idx3-ubyte.gz", lambda g: gzip.compress(idx_bytes(np.zeros((64, 32, 32), np.uint8))), ["32x32, expected 28x28"]),
    "idx label count": data_case("t10k-labels-idx1-ubyte.gz", lambda g: labels(np.zeros(63)), ["63 labels for 64 images"]),
    "idx label out of range": data_case("t10k-labels-idx1-ubyte.gz", lambda g: labels(np.full(64, 10)), ["label 10 is out of range 0..9"]),
    "idx broken gzip": data_case("train-images-idx3-ubyte.gz", lambda g: (g / "train-images-idx3-ubyte.gz").read_bytes()[:-30], ["broken gzip stream"]),
    "idx not gzip, not idx": data_case("train-labels-idx1-ubyte.gz", lambda g: b"<html>404 Not Found</html>", ["wrong magic number"]),
    "data dir missing": (lambda g, r, t: [*BASE, "--data-dir", t / "nowhere", "--out", r, "--resume"], ["--data-dir", "is not a folder"]),
    # CIFAR-10 python batches
    "cifar wrong keys": cifar_case(lambda t: pickle.dumps({b"images": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, protocol=2), ["missing key(s) data"]),
    "cifar wrong lengths": cifar_case(lambda t: cifar_batch_bytes(np.zeros((3, 3, 32, 32), np.uint8), [0, 1]), ["2 labels for 3 images"]),
    "cifar label out of range": cifar_case(lambda t: cifar_batch_bytes(np.zeros((2, 3, 32, 32), np.uint8), [0, 11]), ["label 11 is out of range"]),
    "cifar wrong data shape": cifar_case(lambda t: pickle.dumps({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}, protocol=2), ["expected uint8 N x 3072"]),
    "cifar not a dict": cifar_case(lambda t: pickle.dumps([1, 2], protocol=2), ["expected a dict"]),
    "cifar truncated pickle": cifar_case(lambda t: cifar_batch_bytes(np.zeros((2, 3, 32, 32), np.uint8), [0, 1])[:500], ["unreadable pickle"]),
    "cifar code-running pickle": cifar_case(code_running_pickle, ["refused to load", "system"]),
    # options
    "unknown dataset": option_case("--dataset", "imagenet", words=["unknown dataset 'imagenet'", "choose one of cifar10, mnist, fashion-mnist"]),
    "unknown norm": option_case("--norms", "bn,xn", words=["unknown norm 'xn'", "choose one of"]),
    "unreadable variant": option_case("--norms", "bn;gn", words=["cannot read variant", "NORM[:GROUPS]"]),
    "groups for a norm without groups": option_case("--norms", "bn:2", words=["only gn takes a group count"]),
    "group count not dividing": option_case("--norms", "gn:3", words=["gn:3 does not divide", "one of 1, 2, 4, 8"]),
    "group count zero": option_case("--norms", "gn:0", words=["group count '0'", "gn:4"]),
    "bad l1 strength": option_case("--norms", "bn+l1=-1", words=["L1 strength '-1'", "bn+l1=1e-5"]),
    "resume and overwrite": option_case("--overwrite", words=["--resume continues the run in --out and --overwrite replaces it"]),
    "an empty variant": option_case("--norms", "bn,,gn:2", words=["the variants 'bn,,gn:2' have an empty entry"]),
    "repeated variant": option_case("--norms", "gn,gn:4", words=["repeats", "list each variant once"]),
    "zero epochs": option_case("--epochs", "0", words=["--epochs 0 must be at least 1"]),
    "negative epochs": option_case("--epochs", "-3", words=["--epochs -3 must be at least 1"]),
    "epochs not a number": option_case("--epochs", "ten", words=["'ten' is not a whole number", "--help"]),
    "zero batch size": option_case("--batch-size", "0", words=["--batch-size 0 must be at least 1"]),
    "negative batch size": option_case("--batch-size", "-4", words=["--batch-size -4 must be at least 1"]),
    "batch larger than the data": folder_case(lambda r, t: t / "new", "--batch-size", "1000", resume=False,
                                              words=["batch size 1000 exceeds the 230 training images", "--batch-size 230"]),
    "batch 1 with bn": option_case("--batch-size", "1", words=["batch size 1 with bn", "gn, ln, in"]),
    "zero lr": option_case("--lr", "0", words=["--lr 0.0 must be a positive number"]),
    "negative lr": option_case("--lr", "-1", words=["--lr -1.0 must be a positive number"]),
    "nan lr": option_case("--lr", "nan", words=["--lr nan must be a positive number"]),
    "momentum out of range": option_case("--momentum", "1.5", words=["--momentum 1.5 must be in [0, 1)"]),
    "zero seeds": option_case("--seeds", "0", words=["--seeds 0 must be at least 1"]),
    "pad too large": option_case("--pad", "17", words=["--pad 17 must be 0 to 16", "--pad 0"]),
    "unknown optimizer": option_case("--optimizer", "lbfgs", words=["unknown optimizer 'lbfgs'", "sgd, adamw"]),
    "unknown schedule": option_case("--schedule", "linear", words=["unknown schedule 'linear'"]),
    "unknown device": option_case("--device", "tpu", words=["unknown device 'tpu'", "auto, cpu or cuda"]),
    "unknown option": option_case("--frobnicate", words=["normlab compare: error: unrecognized arguments: --frobnicate", "--help"]),
    "an abbreviated option": option_case("--over", words=["unrecognized arguments: --over", "(--over is an option of normlab sweep)"]),   # not --overwrite
    "huge lr": option_case("--lr", "1e308", words=["--lr 1e+308 is above 1000"]),
    "huge weight decay": option_case("--weight-decay", "1e300", words=["--weight-decay 1e+300 is above 1000"]),
    "huge trust ratio": option_case("--trust", "1e39", words=["--trust 1e+39 is above 1000"]),
    "train: batch 1 with bn": (lambda g, r, t: ["train", "--norm", "bn", "--dataset", "mnist", "--batch-size", "1",
                                                "--data-dir", g, "--out", t / "new"], ["batch size 1 with bn"]),
    "train: unknown norm": (lambda g, r, t: ["train", "--norm", "bm", "--dataset", "mnist", "--data-dir", g, "--out", r,
                                             "--resume"], ["unknown norm 'bm'"]),
    "train: no norm": (lambda g, r, t: ["train", "--dataset", "mnist", "--data-dir", g, "--out", t / "new"],
                       ["the following arguments are required: --norm"]),
    "train: resume a compare as another variant": (lambda g, r, t: ["train", "--norm", "gn:2", "--dataset", "mnist", "--epochs", "1",
                                                                    "--batch-size", "32", "--data-dir", g, "--out", r, "--resume"],
                                                   ["other variants (bn, gn:2 -> gn:2)"]),
    # run folders
    "existing run without --resume": folder_case(lambda r, t: r, words=["already holds a run", "--resume"], resume=False),
    "out is a file": folder_case(a_file, words=["is a file", "folder path for --out"], resume=False),
    "out holds other files": folder_case(unrelated_folder, words=["not empty and holds no normlab run"], resume=False),
    "resume of an empty folder": folder_case(empty_folder, words=["holds no run to resume", "drop --resume"]),
    "resume of a missing folder": folder_case(lambda r, t: t / "never-made", words=["holds no run to resume"]),
    "resume of someone else's folder": folder_case(unrelated_folder, words=["holds no run to resume"]),
    "resume with other settings": folder_case(lambda r, t: r, "--epochs", "3", "--lr", "0.05",
                                              words=["other settings (epochs 1 -> 3; lr the default (0.1) -> 0.05)", "resume with the same options"]),
    "resume with an option set to its default": folder_case(lambda r, t: r, "--epochs", "3", "--pad", "1", "--lr", "0.1",
                                                            words=["other settings (epochs 1 -> 3)"]),
    "resume with other variants": folder_case(lambda r, t: r, "--norms", "bn,ln",
                                              words=["other variants (bn, gn:2 -> bn, ln)", "--norms bn,gn:2"]),
    "results not json": folder_case(write("results.json", b"{\"runs\": [1, 2"), words=["results.json is not valid JSON", "backup"]),
    "results binary garbage": folder_case(write("results.json", bytes(range(256))), words=["results.json is not valid JSON"]),
    "results not normlab's": folder_case(write("results.json", b"[1, 2, 3]\n"), words=["is not a normlab results file"]),
    "results missing its runs": folder_case(write("results.json", b"{\"config\": {\"dataset\": \"mnist\"}}\n"), words=["is not a normlab results file"]),
    # issue 13: results.json and misclassified.json of the wrong shape, kind or size, checked at the door
    "results: no runs": folder_case(edit_results(lambda r: r.update(runs=[])), words=["an empty 'runs' list"]),
    "results: a newer schema": folder_case(edit_results(lambda r: r.update(schema=99)), words=["schema 99, newer than", "upgrade normlab"]),
    "results: some other JSON object": folder_case(write("results.json", b'{"foo": 1}'), words=["is not a normlab results file", "no 'runs' list"]),
    "results: a run without its seed": folder_case(edit_results(lambda r: r["runs"][0].pop("seed")), words=["runs[0] has no valid 'seed'"]),
    "results: final is a number": folder_case(edit_results(lambda r: r["runs"][1].update(final=5)), words=["runs[1] has no valid 'final'"]),
    "results: a run without its axis value": folder_case(edit_results(lambda r: r["runs"][0].update(axes={"lr": 0.1})), words=["runs[0] has no valid 'axes'"]),
    "results: a list where an object belongs": folder_case(edit_results(lambda r: r.update(config=[])), words=["no 'dataset' or 'config'"]),
    "results: an epoch without numbers": folder_case(edit_results(lambda r: r["runs"][0]["epochs"][0].update(test_acc="93")), words=["an epoch without its losses"]),
    "results: an epoch numbered infinity": folder_case(edit_results(lambda r: r["runs"][0]["epochs"][0].update(epoch=float("inf"))),
                                                       words=["an epoch without its losses"]),
    "results: an accuracy of NaN": folder_case(edit_results(lambda r: r["runs"][0]["final"].update(test_acc=float("nan"))),
                                               words=["runs[0] (bn) has a 'final' entry that is not a number"]),
    "results: an epoch's accuracy of 140%": folder_case(edit_results(lambda r: r["runs"][1]["epochs"][0].update(val_acc=140.0)),
                                                        words=["runs[1] (gn:2) has an epoch without its losses and accuracies"]),
    "results: an unknown status": folder_case(edit_results(lambda r: r["runs"][0].update(status="exploded")),
                                              words=["runs[0] has no valid 'status'"]),
    "results: stacked is text": folder_case(edit_results(lambda r: r["runs"][0].update(stacked="3")), words=["runs[0] has no valid 'stacked'"]),
    "results: a key that is a path": folder_case(edit_results(lambda r: r["runs"][0].update(key="../../x")), words=["runs[0] has no valid 'key'"]),
    "results: a FIFO": folder_case(replace_results(lambda path: os.mkfifo(path)), words=["results.json is a named pipe, not a data file"]),
    "results: a link to /dev/zero": folder_case(replace_results(lambda path: path.symlink_to("/dev/zero")), words=["results.json is a link, not a file normlab wrote"]),
    "results: a link to another run's": folder_case(replace_results(lambda path: path.symlink_to(path.parent.parent / "other.json")),
                                                    words=["results.json is a link, not a file normlab wrote"]),
    "results: a number of 5,000 digits": folder_case(write("results.json", b'{"runs": [], "x": ' + b"9" * 5000 + b"}"),
                                                     words=["results.json is not valid JSON", "digits"]),
    "overwrite onto a linked checkpoint": folder_case(link_checkpoint, "--overwrite", resume=False,
                                                      words=["--overwrite:", "bn-seed1.pt is not a checkpoint normlab wrote", "move it out"]),
    "checkpoint: a link": folder_case(link_checkpoint, words=["bn-seed1.pt is a link, not a file normlab wrote"]),
    "results: huge": folder_case(replace_results(lambda path: path.write_bytes(b" " * (65 * 2**20))), words=["results.json is larger than 64 MiB"]),
    "misclassified: wrong types": folder_case(write("misclassified.json", b'{"bn": [{"index": "7"}]}'), words=["is not a normlab misclassified file"]),
    "misclassified: an index past the test set": folder_case(write("misclassified.json", b'{"bn": [{"index": 64, "true": 1, "pred": 2}]}'), words=["within the test set"]),
    "misclassified: a list": folder_case(write("misclassified.json", b'[1]'), words=["is not a normlab misclassified file"]),
    "huge seed": option_case("--seed", str(2**63), words=["--seed 9223372036854775808 (with --seeds 1) is out of range"]),
    "seed that overflows the epoch seeds": option_case("--seed", str(2**60), words=["is out of range"]),
    "checkpoint: chosen weights that do not fit": folder_case(spoil_chosen, words=["bn-seed1.pt does not fit bn", "weights"]),
    "checkpoint truncated": folder_case(truncate_checkpoint, words=["cannot load checkpoint", "bn-seed1.pt", "delete it to retrain"]),
    "checkpoint of another variant": folder_case(copy_checkpoint("gn2-seed1.pt", "bn-seed1.pt"), words=["bn-seed1.pt holds gn:2 seed 1, not bn seed 1", "delete it"]),
    "checkpoint of the pre-0.2 net": folder_case(old_checkpoint("gn2-seed1.pt"), words=["gn2-seed1.pt holds a conv-norm-relu net (normlab before 0.2.0)", "--overwrite"]),
    "checkpoint not a checkpoint": folder_case(write("checkpoints/gn2-seed1.pt", b"PK\x03\x04 nope"), words=["cannot load checkpoint", "gn2-seed1.pt"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, finished_run, tmp_path, capsys):
    good, master = finished_run
    run = tmp_path / "run"
    shutil.copytree(master, run)
    make_args, words = CASES[case]
    args = make_args(good, run, tmp_path)
    out = Path(args[args.index("--out") + 1])
    before_run, before_out = snapshot(run), snapshot(out)

    code = run_cli(*args)

    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, captured
    assert captured.out == "" and "\n" not in err and "Traceback" not in err, captured
    assert err.startswith("normlab") and "error: " in err and "; " in err, "names the problem, then the fix"
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"
    assert snapshot(run) == before_run, "the finished run's files are untouched"
    assert snapshot(out) == before_out, "nothing written where --out points"
    assert not (tmp_path / "pwned").exists()


def test_resume_with_data_of_another_size_is_refused(finished_run, tmp_path, capsys):
    good, master = finished_run
    run = tmp_path / "run"
    shutil.copytree(master, run)
    other = make_idx_dataset(tmp_path / "other", n_train=320, n_test=64)
    before = snapshot(run)
    assert run_cli(*BASE, "--data-dir", other, "--out", run, "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert "was run on other data (230 training and 64 test images" in err and "this data has 288 and 64" in err
    assert "\n" not in err
    assert snapshot(run) == before


@pytest.mark.parametrize("command", ["compare", "sweep"])
def test_resume_on_other_data_of_the_same_size_is_refused(command, tmp_path, capsys):
    """Same number of images, other images: the data fingerprint tells them apart (compare and sweep)."""
    data = make_idx_dataset(tmp_path / "data", n_train=64, n_test=32, seed=0)
    other = make_idx_dataset(tmp_path / "other", n_train=64, n_test=32, seed=1)
    out = tmp_path / "run"
    args = [command, "--dataset", "mnist", "--norms", "gn:2", "--epochs", "1", "--seeds", "1",
            *(["--batch-sizes", "16"] if command == "sweep" else ["--batch-size", "16"]), "--out", out]
    assert run_cli(*args, "--data-dir", data) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert run_cli(*args, "--data-dir", other, "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert "was run on other data (58 training and 32 test images" in err and "this data has 58 and 32" in err
    assert "\n" not in err and snapshot(out) == before


def test_an_empty_test_set_is_one_line(tmp_path, capsys):
    data = make_idx_dataset(tmp_path / "data", n_train=64, n_test=0)
    assert run_cli("train", "--norm", "gn:2", "--dataset", "mnist", "--epochs", "1", "--data-dir", data,
                   "--out", tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert "the test set of MNIST in" in err and "holds no images" in err and "\n" not in err and not (tmp_path / "run").exists()


@pytest.fixture
def unwritable(tmp_path):
    """Make a folder unwritable, also for root (who ignores permission bits): chattr +i."""
    made = []

    def make(folder: Path):
        if os.geteuid() != 0:
            folder.chmod(0o555)
        elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("running as root and chattr +i is not available here")
        made.append(folder)
        return folder

    yield make
    for folder in made:
        if os.geteuid() != 0:
            folder.chmod(0o755)
        else:
            subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_unwritable_folders_are_refused_before_training(finished_run, tmp_path, unwritable, capsys):
    good, master = finished_run
    run = tmp_path / "run"
    shutil.copytree(master, run)
    before = snapshot(run)
    unwritable(run)
    assert run_cli(*BASE, "--data-dir", good, "--out", run, "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert f"cannot write to {run}" in err and "make it writable" in err and "\n" not in err, err
    assert snapshot(run) == before

    (tmp_path / "locked").mkdir()
    parent = unwritable(tmp_path / "locked")
    assert run_cli(*BASE, "--data-dir", good, "--out", parent / "new") == 2
    err = capsys.readouterr().err.strip()
    assert f"cannot write to {parent / 'new'}" in err and "\n" not in err, err
    assert not (parent / "new").exists()


def test_a_run_folder_another_process_is_writing_to_is_refused(finished_run, tmp_path, capsys):
    """Two processes on one folder would overwrite each other's results; the second one stops."""
    import sys
    good, master = finished_run
    run = tmp_path / "run"
    shutil.copytree(master, run)
    hold = "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)"
    with subprocess.Popen([sys.executable, "-c", hold, str(run / ".normlab.lock")], stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(run)
        code = run_cli(*BASE, "--data-dir", good, "--out", run, "--resume")
        holder.kill()
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"another normlab process is writing to {run}" in err and "--resume" in err and "\n" not in err, err
    assert snapshot(run) == before
    # Once that process is gone (killed, even), the folder is free again.
    assert run_cli(*BASE, "--data-dir", good, "--out", run, "--resume") == 0
