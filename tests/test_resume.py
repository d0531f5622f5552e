"""Kill a real `normlab` process at many points, resume it, and get the uninterrupted numbers.

Every process here is `python -m normlab ...` (or tests/killpoints.py, which is the same entry
point with a self-signal at an exact point) on a generated MNIST-format set: 256 training
images, batch 32, so 8 steps per epoch and a few seconds per process. One thread each, so the
numbers are bitwise repeatable on a CPU and the machine's other users keep their cores.
"""

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import make_idx_dataset

pytestmark = pytest.mark.slow

KILLPOINTS = Path(__file__).with_name("killpoints.py")
STEPS_PER_EPOCH = 256 // 32
# Two variants x two seeds x two epochs: runs 0-3 are (bn, 1), (gn:2, 1), (bn, 2), (gn:2, 2).
# Dropout on, so the replayed epochs must also redraw the same dropout masks (global RNG), not
# only the same batches and crops (the data generator): no RNG state is checkpointed, the
# streams are re-seeded from (seed, epoch), and bitwise-equal weights at the end prove it enough.
CONFIG = ["--stack", "off", "--dataset", "mnist", "--norms", "bn,gn:2", "--epochs", "2", "--batch-size", "32", "--seeds", "2",
          "--dropout", "0.1"]
# Wall-clock times, and which process trained a run: what may differ between two processes.
TIMINGS = {"seconds", "started", "finished", "pid"}


def env(home: Path) -> dict:
    return {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "NORMLAB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def normlab(home, *args, kill: tuple[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    args = [str(a) for a in args]
    command = [sys.executable, str(KILLPOINTS), *kill, "--", *args] if kill else [sys.executable, "-m", "normlab", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env(home), **kwargs)


def numbers(value):
    """Results without wall-clock times: what must not change when a run is interrupted."""
    if isinstance(value, dict):
        return {k: numbers(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [numbers(v) for v in value]
    return value


def read_results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def temp_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name.endswith(".tmp"))


def assert_same_run(folder: Path, reference: Path) -> None:
    assert numbers(read_results(folder)) == numbers(read_results(reference))
    for name in ("metrics.csv", "misclassified.json"):
        assert (folder / name).read_bytes() == (reference / name).read_bytes(), name
    checkpoints = sorted(p.name for p in (reference / "checkpoints").glob("*.pt"))
    assert sorted(p.name for p in (folder / "checkpoints").glob("*.pt")) == checkpoints
    for name in checkpoints:
        got = torch.load(folder / "checkpoints" / name, weights_only=True)
        want = torch.load(reference / "checkpoints" / name, weights_only=True)
        assert numbers(got["epochs"]) == numbers(want["epochs"]) and got["status"] == want["status"]
        for key, tensor in want["model"].items():
            assert torch.equal(got["model"][key], tensor), f"{name}: {key} differs"
    assert temp_files(folder) == []


def assert_one_line_error(proc, *words):
    err = proc.stderr.strip()
    assert proc.returncode == 2, proc.stderr
    assert "\n" not in err and "Traceback" not in err, err
    for word in words:
        assert word in err, err


def consistent_on_disk(folder: Path) -> dict:
    """What a kill leaves must be readable: valid JSON, loadable checkpoints, final metrics where epochs are."""
    results = read_results(folder)
    for run in results["runs"]:
        if run["epochs"]:
            assert run["final"]["test_acc"] == run["epochs"][-1]["test_acc"], run
    for path in (folder / "checkpoints").glob("*.pt"):
        torch.load(path, weights_only=True)
    return results


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_idx_dataset(tmp_path_factory.mktemp("data") / "mnist", n_train=256, n_test=128)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def reference(data, home, tmp_path_factory):
    """The same comparison, never interrupted."""
    out = tmp_path_factory.mktemp("reference") / "run"
    proc = normlab(home, "compare", *CONFIG, "--data-dir", data, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert [r["status"] for r in read_results(out)["runs"]] == ["done"] * 4
    return out


def test_sigkill_at_many_points_then_resume_equals_an_uninterrupted_run(data, home, reference, tmp_path):
    out = tmp_path / "run"
    base = ["compare", *CONFIG, "--data-dir", data, "--out", out]

    # 1. Mid-epoch: the 4th step of (bn, seed 1)'s second epoch.
    proc = normlab(home, *base, kill=(f"step:{STEPS_PER_EPOCH + 4}", "KILL"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    results = consistent_on_disk(out)
    assert [len(r["epochs"]) for r in results["runs"]] == [1, 0, 0, 0]

    # 2. During a checkpoint write: (bn, seed 1)'s epoch-2 checkpoint is written, not yet renamed.
    proc = normlab(home, *base, "--resume", kill=("replace:bn-seed1.pt:1", "KILL"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert [Path(t).name.startswith(".bn-seed1.pt.") for t in temp_files(out)] == [True]
    assert len(torch.load(out / "checkpoints" / "bn-seed1.pt", weights_only=True)["epochs"]) == 1
    consistent_on_disk(out)

    # 3. During the first write of misclassified.json (bn, seed 1 has just finished).
    proc = normlab(home, *base, "--resume", kill=("replace:misclassified.json:1", "KILL"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (out / "misclassified.json").exists()
    assert [Path(t).name.startswith(".misclassified.json.") for t in temp_files(out)] == [True], \
        "the resumed run removed the previous kill's temp file, and this kill left its own"
    assert consistent_on_disk(out)["runs"][0]["status"] == "done"

    # 4. During the resumed process's first results.json write: the old file must survive intact.
    before = (out / "results.json").read_bytes()
    proc = normlab(home, *base, "--resume", kill=("replace:results.json:1", "KILL"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (out / "results.json").read_bytes() == before

    # 5. Mid-epoch in a later run: (gn:2, 1) trains 16 steps, then step 4 of (bn, seed 2).
    proc = normlab(home, *base, "--resume", kill=(f"step:{2 * STEPS_PER_EPOCH + 4}", "KILL"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    results = consistent_on_disk(out)
    assert [r["status"] for r in results["runs"]] == ["done", "done", "pending", "pending"]
    assert set(json.loads((out / "misclassified.json").read_text())) == {"bn", "gn:2"}

    # 6. From outside, with no warning, as soon as (bn, seed 2) reports its first epoch.
    with subprocess.Popen([sys.executable, "-m", "normlab", *map(str, base), "--resume"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True, env=env(home)) as process:
        for line in process.stdout:
            if line.startswith("bn seed 2") and "epoch 1/2" in line:
                process.kill()
                break
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    consistent_on_disk(out)

    # 7. The last resume finishes the job; the result is the uninterrupted run's, to the bit.
    proc = normlab(home, *base, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert_same_run(out, reference)


def test_kill_before_the_first_results_write_can_be_resumed(data, home, tmp_path):
    out = tmp_path / "run"
    base = ["compare", "--dataset", "mnist", "--norms", "gn:2", "--epochs", "1", "--batch-size", "32",
            "--data-dir", data, "--out", out]
    proc = normlab(home, *base, kill=("replace:results.json:1", "KILL"))
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "results.json").exists() and len(temp_files(out)) == 1
    # The folder holds nothing but the killed process's leftovers: --resume starts it afresh.
    proc = normlab(home, *base, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert read_results(out)["runs"][0]["status"] == "done" and temp_files(out) == []


def signal_after_the_first_epoch(home, data, out, signum):
    """`normlab compare` as a real process, sent ``signum`` once it reports an epoch; its stderr."""
    command = [sys.executable, "-m", "normlab", "compare", *map(str, CONFIG), "--data-dir", str(data), "--out", str(out)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(home)) as process:
        for line in process.stdout:
            if "epoch 1/2" in line:
                process.send_signal(signum)
                break
        stderr = process.stderr.read()
        process.wait(timeout=60)
    return process, stderr


def test_ctrl_c_saves_prints_how_to_resume_and_a_full_disk_loses_nothing(data, home, reference, tmp_path):
    out = tmp_path / "run"
    process, stderr = signal_after_the_first_epoch(home, data, out, signal.SIGINT)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    said = stderr.strip().splitlines()
    assert said[-2].startswith("interrupted; every finished epoch is saved in"), stderr
    resume = shlex.split(said[-1])
    assert resume[0] == "normlab" and resume[-1] == "--resume", said[-1]
    results = consistent_on_disk(out)
    assert len(results["runs"][0]["epochs"]) >= 1 and temp_files(out) == []

    # Resume on a "disk" that takes small files but not a checkpoint: RLIMIT_FSIZE makes the
    # kernel refuse the write (EFBIG) inside torch.save, as a full disk would (ENOSPC).
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    import resource
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
    proc = normlab(home, *resume[1:], preexec_fn=limit)
    assert_one_line_error(proc, "cannot write", "checkpoints", "--resume")
    assert proc.stderr.strip().endswith(said[-1].strip()), "the error says how to continue"
    for path, content in before.items():
        if path.name != "results.json":         # rewritten with the same runs before training resumed
            assert path.read_bytes() == content, path
    consistent_on_disk(out)
    assert temp_files(out) == []

    proc = normlab(home, *resume[1:])
    assert proc.returncode == 0, proc.stderr
    assert_same_run(out, reference)


def test_ctrl_c_during_a_write_keeps_the_old_file(data, home, tmp_path):
    out = tmp_path / "run"
    proc = normlab(home, "compare", *CONFIG, "--data-dir", data, "--out", out, kill=("replace:results.json:3", "INT"))
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().endswith("--resume")
    results = consistent_on_disk(out)
    assert len(results["runs"][0]["epochs"]) == 1, "the 2nd write (after epoch 1) is kept, the 3rd never landed"
    assert temp_files(out) == [], "the interrupted write removed its temp file"


def test_train_command_resumes_too(data, home, reference, tmp_path):
    out = tmp_path / "run"
    base = ["train", "--norm", "gn:2", "--dataset", "mnist", "--epochs", "2", "--batch-size", "32", "--dropout", "0.1",
            "--data-dir", data, "--out", out]
    proc = normlab(home, *base, kill=(f"step:{STEPS_PER_EPOCH + 3}", "KILL"))
    assert proc.returncode == -signal.SIGKILL
    proc = normlab(home, *base, "--resume")
    assert proc.returncode == 0, proc.stderr
    (run,) = read_results(out)["runs"]
    # A (variant, seed) trains the same whichever command or comparison it is part of.
    same_in_compare = next(r for r in read_results(reference)["runs"] if (r["variant"], r["seed"]) == ("gn:2", 1))
    assert numbers(run) == numbers(same_in_compare)
    assert temp_files(out) == []


def test_ctrl_c_before_anything_is_saved_says_to_start_again(data, tmp_path, monkeypatch, capsys):
    from conftest import run_cli
    from normlab import engine

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(engine, "load_splits", interrupted)
    out = tmp_path / "my run"
    assert run_cli("compare", "--dataset", "mnist", "--data-dir", data, "--out", out, "--overwrite") == 130
    said = capsys.readouterr().err.strip().splitlines()
    assert said[-2] == "interrupted before anything was saved. Start again with:"
    assert shlex.split(said[-1]) == ["normlab", "compare", "--dataset", "mnist", "--data-dir", str(data), "--out", str(out),
                                     "--overwrite"]


def children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (from /proc; Linux)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def has_open_files(pid: int) -> bool:
    try:
        return bool(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def alive(pid: int) -> bool:
    """Whether any thread of ``pid`` still runs. Not the process's own state alone: a killed
    multi-threaded process (torch's worker threads) shows its main thread as a zombie while the
    other threads are still exiting, and they hold its files, and so the lock, until the last one
    is gone (a make test from a fresh clone failed on that once)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            if (task / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                return True
        except OSError:
            continue
    return False


def compare_with_two_workers(data, out, epochs: int) -> list[str]:
    return ["compare", "--dataset", "mnist", "--norms", "bn,gn:2", "--epochs", str(epochs), "--batch-size", "32",
            "--workers", "2", "--data-dir", str(data), "--out", str(out)]


@contextlib.contextmanager
def two_workers_training(data, home, out, epochs: int, stderr):
    """A compare in 2 local workers, yielded once a worker has trained an epoch (both are up):
    the driver's Popen and the workers' pids."""
    command = [sys.executable, "-m", "normlab", *compare_with_two_workers(data, out, epochs)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env(home)) as driver:
        for line in driver.stdout:
            if f"epoch  1/{epochs}" in line:
                break
        workers = [pid for pid in children(driver.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert len(workers) == 2, workers
        yield driver, workers


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_workers_die_with_the_driver_and_hold_the_lock_until_then(data, home, tmp_path):
    from normlab.storage import folder_busy
    out = tmp_path / "run"
    with two_workers_training(data, home, out, 50, subprocess.DEVNULL) as (driver, workers):
        driver.kill()
        driver.wait(timeout=30)
        samples = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            living = [pid for pid in workers if alive(pid)]
            # A worker that has closed its files is exiting (the kernel drops its lock then, a moment
            # before it turns zombie): it can no longer write, so it needs no lock.
            writing = [pid for pid in living if has_open_files(pid)]
            samples.append((bool(writing), folder_busy(out)))
            if not living:
                break
            time.sleep(0.05)
    assert not any(alive(pid) for pid in workers), "the workers outlived the driver by 10 s"
    assert all(busy for living, busy in samples if living), "the lock was free while a worker still wrote"
    assert not folder_busy(out), "the lock is released once the last worker is gone"
    proc = normlab(home, "compare", "--dataset", "mnist", "--norms", "bn,gn:2", "--epochs", "50", "--batch-size", "32",
                   "--data-dir", data, "--out", out, "--resume", "--epochs", "1")
    assert_one_line_error(proc, "other settings (epochs 50 -> 1)")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_a_killed_worker_gives_one_line_and_the_run_resumes(data, home, tmp_path):
    out = tmp_path / "run"
    with two_workers_training(data, home, out, 30, subprocess.PIPE) as (driver, workers):
        os.kill(workers[0], signal.SIGKILL)    # as the out-of-memory killer would
        stdout, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 2, stderr
    err = stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert "a local worker process died while training" in err and "--resume" in err
    consistent_on_disk(out)
    proc = normlab(home, *compare_with_two_workers(data, out, 30), "--resume")
    assert proc.returncode == 0, proc.stderr
    assert all(r["status"] == "done" for r in consistent_on_disk(out)["runs"])


def test_sigterm_saves_and_says_how_to_continue(data, home, tmp_path):
    out = tmp_path / "run"
    process, stderr = signal_after_the_first_epoch(home, data, out, signal.SIGTERM)
    assert process.returncode == 143, stderr
    said = stderr.strip().splitlines()
    assert "Traceback" not in stderr and said[-2].startswith("terminated (SIGTERM); every finished epoch is saved in"), stderr
    assert shlex.split(said[-1])[-1] == "--resume"
    assert len(consistent_on_disk(out)["runs"][0]["epochs"]) >= 1 and temp_files(out) == []


def test_a_failed_resume_leaves_results_json_as_it_was(data, home, reference, tmp_path):
    """A finished run, one checkpoint lost, resumed on a disk that refuses the retrained one:
    the error is one line, and results.json keeps every byte (its seconds and finished too)."""
    import resource
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    (out / "checkpoints" / "gn2-seed2.pt").unlink()
    before = (out / "results.json").read_bytes()
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
    proc = normlab(home, "compare", *CONFIG, "--data-dir", data, "--out", out, "--resume", preexec_fn=limit)
    assert_one_line_error(proc, "cannot write", "gn2-seed2.pt")
    assert (out / "results.json").read_bytes() == before
