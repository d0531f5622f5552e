"""normlab sweep: the cells, the table and figure behind them, resume, and every executor.

One tiny sweep (2 batch sizes x 2 variants x 2 seeds, 1 epoch on 256 generated images) is
made once with the local executor; the other executors (2 local worker processes, a local
Ray cluster) must give the same table from the same cells.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

import matplotlib.image
import pytest
import torch

from conftest import make_idx_dataset, run_cli
from normlab.executors import threads_per_worker, worker_device
from normlab.sweep import parse_batch_sizes, scaled_lr

SIZES, NORMS, SEEDS = [4, 32], ["bn", "gn:2"], 2
ARGS = ["sweep", "--batch-sizes", ",".join(map(str, SIZES)), "--norms", ",".join(NORMS), "--seeds", str(SEEDS),
        "--epochs", "1"]
# Everything in sweep.csv but the seconds each cell took.
NUMBERS = ["batch_size", "variant", "lr", "seeds_done", "seeds_planned", "test_err_mean", "test_err_std",
           "test_err_ci95_low", "test_err_ci95_high", "test_err_min", "test_err_max"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_idx_dataset(tmp_path_factory.mktemp("sweepdata") / "fashion", n_train=256, n_test=128)


@pytest.fixture(scope="module")
def swept(data, tmp_path_factory):
    """A finished sweep folder, trained in this process (local executor, one worker)."""
    out = tmp_path_factory.mktemp("sweep") / "local"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NORMLAB_OFFLINE", "1")
        assert run_cli(*ARGS, "--data-dir", data, "--out", out) == 0
    return out


def table(folder: Path) -> list[dict]:
    return [{k: row[k] for k in NUMBERS} for row in csv.DictReader((folder / "sweep.csv").open())]


def test_sweep_trains_every_cell_with_the_stated_lr(swept):
    results = json.loads((swept / "results.json").read_text())
    assert results["kind"] == "sweep" and results["config"]["batch_sizes"] == SIZES
    assert "lr = 0.1 x B / 128" in results["config"]["lr_rule"]
    cells = results["cells"]
    assert {(c["batch_size"], c["variant"], c["seed"]) for c in cells} == \
        {(b, v, s) for b in SIZES for v in NORMS for s in (1, 2)}
    for c in cells:
        assert c["status"] == "done" and len(c["epochs"]) == 1
        assert c["lr"] == pytest.approx(0.1 * c["batch_size"] / 128)
        # The lr the optimizer really used: OneCycle ends far below its peak, never above it.
        assert c["epochs"][0]["lr"] < c["lr"]
        state = torch.load(swept / "checkpoints" / f"{c['key']}.pt", weights_only=True)
        assert state["variant"] == c["variant"] and state["seed"] == c["seed"] and state["status"] == "done"


def test_sweep_table_is_the_mean_and_spread_of_the_cells(swept):
    results = json.loads((swept / "results.json").read_text())
    rows = list(csv.DictReader((swept / "sweep.csv").open()))
    assert [(int(r["batch_size"]), r["variant"]) for r in rows] == [(b, v) for b in SIZES for v in NORMS]
    for row in rows:
        errors = [100 - c["final"]["test_acc"] for c in results["cells"]
                  if c["batch_size"] == int(row["batch_size"]) and c["variant"] == row["variant"]]
        assert int(row["seeds_done"]) == int(row["seeds_planned"]) == 2
        assert float(row["test_err_mean"]) == pytest.approx(statistics.fmean(errors), abs=1e-4)
        assert float(row["test_err_std"]) == pytest.approx(statistics.stdev(errors), abs=1e-4)
        assert float(row["test_err_ci95_low"]) <= float(row["test_err_mean"]) <= float(row["test_err_ci95_high"])
    md = (swept / "report.md").read_text()
    first = rows[0]
    assert f"| 4 | 0.003125 | {float(first['test_err_mean']):.2f} ± {float(first['test_err_std']):.2f} |" in md
    assert "![test error against batch size](sweep.png)" in md and (swept / "report.html").is_file()
    assert "## Does the error change along batch size?" in md and "Welch's t-test" in md


def test_sweep_figure_is_a_picture(swept):
    picture = matplotlib.image.imread(swept / "sweep.png")
    assert picture.ndim == 3 and picture.shape[0] > 300 and picture.shape[1] > 500
    assert picture[..., :3].std() > 0.05, "not a blank canvas"


def test_report_rebuilds_the_sweep_files(swept, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(swept, copy)
    for name in ("sweep.png", "sweep.csv", "report.md", "report.html"):
        (copy / name).unlink()
    assert run_cli("report", copy) == 0
    assert (copy / "sweep.csv").read_text() == (swept / "sweep.csv").read_text()
    assert (copy / "report.md").read_text() == (swept / "report.md").read_text()
    assert (copy / "sweep.png").stat().st_size > 10_000


def mtimes(folder: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in (folder / "checkpoints").iterdir()}


def test_resume_skips_finished_cells_and_finishes_the_rest(swept, data, tmp_path, capsys):
    out = tmp_path / "resumed"
    shutil.copytree(swept, out)
    results = json.loads((out / "results.json").read_text())
    # As if killed after 6 of 8 cells: two cells never reported back, their checkpoints never written.
    lost = [c["key"] for c in results["cells"][-2:]]
    for c in results["cells"][-2:]:
        c.update(status="pending", epochs=[])
        c.pop("final")
        (out / "checkpoints" / f"{c['key']}.pt").unlink()
    (out / "results.json").write_text(json.dumps(results))
    before = mtimes(out)
    capsys.readouterr()
    assert run_cli(*ARGS, "--data-dir", data, "--out", out, "--resume") == 0
    text = capsys.readouterr().out
    assert "6 already finished, 2 to train" in text
    after = mtimes(out)
    assert {k: v for k, v in after.items() if k in before} == before, "finished cells are not trained again"
    assert sorted(set(after) - set(before)) == sorted(f"{k}.pt" for k in lost)
    assert table(out) == table(swept), "the retrained cells give the numbers they gave the first time"

    assert run_cli(*ARGS, "--data-dir", data, "--out", out, "--resume") == 0
    assert "8 already finished, 0 to train" in capsys.readouterr().out
    assert mtimes(out) == after


def test_resume_with_other_settings_is_refused(swept, data, tmp_path, capsys):
    out = tmp_path / "other"
    shutil.copytree(swept, out)
    before = (out / "results.json").read_bytes()
    argv = [a if a != "1" else "2" for a in ARGS]       # --epochs 2
    assert run_cli(*argv, "--data-dir", data, "--out", out, "--resume") == 2
    err = capsys.readouterr().err
    assert "was swept with other settings (epochs 1 -> 2)" in err and len(err.strip().splitlines()) == 1
    assert (out / "results.json").read_bytes() == before


def test_two_local_workers_give_the_same_table(swept, data, tmp_path):
    out = tmp_path / "workers"
    assert run_cli(*ARGS, "--data-dir", data, "--out", out, "--workers", "2") == 0
    assert table(out) == table(swept)
    results = json.loads((out / "results.json").read_text())
    assert {c["worker"] for c in results["cells"]} <= {0, 1}
    pids = {c["pid"] for c in results["cells"]}
    assert os.getpid() not in pids and len(pids) <= 2, "cells ran in the two worker processes"
    assert results["executor"] == {"executor": "local", "workers": 2, "threads_per_worker": threads_per_worker(2)}


@pytest.fixture
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'normlab[ray]'); the Ray executor "
                                           "test needs a local Ray cluster")
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


def test_ray_executor_gives_the_same_table_as_the_local_one(ray_cluster, swept, data, tmp_path):
    out = tmp_path / "ray"
    assert run_cli(*ARGS, "--data-dir", data, "--out", out, "--executor", "ray") == 0
    assert table(out) == table(swept)
    results = json.loads((out / "results.json").read_text())
    assert results["executor"]["executor"] == "ray" and results["executor"]["cluster_cpus"] == 2
    assert all(str(c["worker"]).startswith("ray node") for c in results["cells"])
    # The driver wrote every checkpoint the tasks sent back, whole and loadable.
    for c in results["cells"]:
        state = torch.load(out / "checkpoints" / f"{c['key']}.pt", weights_only=True)
        assert state["variant"] == c["variant"] and state["status"] == "done"


def test_parse_batch_sizes():
    assert parse_batch_sizes("128,2, 8") == [2, 8, 128]
    assert scaled_lr(0.1, 2, "linear") == pytest.approx(0.0015625) and scaled_lr(0.1, 2, "none") == 0.1


def test_local_workers_share_gpus_round_robin():
    assert [worker_device(i, "auto", 4) for i in range(6)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]
    assert [worker_device(i, "cuda", 2) for i in range(3)] == ["cuda:0", "cuda:1", "cuda:0"]
    assert worker_device(3, "auto", 0) == "cpu"
    assert worker_device(3, "cpu", 4) == "cpu", "--device cpu keeps the GPUs out of it"
    assert worker_device(3, "cuda:1", 4) == "cuda:1", "an explicit GPU is kept"
    assert threads_per_worker(2, cores=16) == 8 and threads_per_worker(3, cores=2) == 1


@pytest.mark.parametrize("args, message", [
    (["--batch-sizes", ""], "--batch-sizes is empty"),
    (["--batch-sizes", "2,,8"], "has an empty entry"),
    (["--batch-sizes", "2,x"], "batch size 'x' in --batch-sizes is not a whole number"),
    (["--batch-sizes", "0,8"], "batch size 0 in --batch-sizes must be at least 1"),
    (["--batch-sizes", "8,8"], "batch size 8 is listed twice"),
    (["--batch-sizes", "1,8", "--norms", "gn:2,bn"], "--batch-sizes includes 1, and bn needs at least 2 samples"),
    (["--batch-sizes", "2,512"], "batch size 512 in --batch-sizes exceeds the 256 training images"),
    (["--norms", "bn,gn:3"], "gn:3"),
    (["--seeds", "0"], "--seeds 0 must be at least 1"),
    (["--workers", "0"], "--workers 0 must be at least 1"),
    (["--executor", "slurm"], "unknown executor 'slurm'"),
    (["--ray-address", "auto"], "--ray-address is for --executor ray"),
    (["--lr-scaling", "sqrt"], "unknown --lr-scaling 'sqrt'"),
    (["--train-limit", "0"], "--train-limit 0 must be at least 1"),
])
def test_bad_input_is_one_line_and_writes_nothing(args, message, data, tmp_path, capsys):
    out = tmp_path / "never"
    base = ["sweep", "--batch-sizes", "2,8", "--norms", "bn,gn:2", "--seeds", "2", "--epochs", "1"]
    assert run_cli(*base, *args, "--data-dir", data, "--out", out) == 2
    captured = capsys.readouterr()
    assert message in captured.err and len(captured.err.strip().splitlines()) == 1, captured.err
    assert "Traceback" not in captured.err and not out.exists()


def test_a_run_folder_is_not_taken_for_a_sweep(data, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"dataset": "fashion-mnist", "config": {}, "runs": []}))
    assert run_cli(*ARGS, "--data-dir", data, "--out", run, "--resume") == 2
    assert "holds a normlab run, not a sweep" in capsys.readouterr().err


def test_compare_with_two_workers_matches_one_after_another(data, tmp_path):
    """`compare --workers 2` trains (variant, seed) runs in two processes: the same runs, the
    same numbers, the same misclassified images and report as training them in turn."""
    args = ["compare", "--norms", "bn,gn:2", "--seeds", "2", "--epochs", "1", "--batch-size", "32", "--data-dir", data]
    assert run_cli(*args, "--out", tmp_path / "one") == 0
    assert run_cli(*args, "--out", tmp_path / "two", "--workers", "2") == 0
    one, two = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("one", "two"))
    strip = lambda run: {k: v for k, v in run.items() if k not in ("seconds", "epochs", "device", "host", "pid",
                                                                  "threads", "cell_seconds", "worker")}
    assert [strip(r) for r in one["runs"]] == [strip(r) for r in two["runs"]]
    assert [[e["test_acc"] for e in r["epochs"]] for r in one["runs"]] == [[e["test_acc"] for e in r["epochs"]] for r in two["runs"]]
    assert {r["pid"] for r in two["runs"]}.isdisjoint({os.getpid()})
    assert (tmp_path / "one" / "misclassified.json").read_text() == (tmp_path / "two" / "misclassified.json").read_text()
    assert (tmp_path / "two" / "report.md").is_file()
    for name in ("bn-seed1.pt", "gn2-seed2.pt"):
        assert torch.load(tmp_path / "two" / "checkpoints" / name, weights_only=True)["status"] == "done"


def test_compare_refuses_zero_workers(data, tmp_path, capsys):
    assert run_cli("compare", "--norms", "bn", "--epochs", "1", "--workers", "0", "--data-dir", data,
                   "--out", tmp_path / "x") == 2
    assert "--workers 0 must be at least 1" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_ray_executor_without_ray_says_how_to_get_it(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)          # `import ray` raises ImportError
    out = tmp_path / "noray"
    assert run_cli(*ARGS, "--data-dir", data, "--out", out, "--executor", "ray") == 2
    err = capsys.readouterr().err
    assert "--executor ray needs Ray, which is not installed; pip install 'normlab[ray]'" in err and not out.exists()


def test_a_sweep_is_read_as_a_sweep(swept):
    from normlab import load_run, load_sweep, plot_sweep
    from normlab.errors import UserError
    with pytest.raises(UserError, match="holds a normlab sweep, not a run"):
        load_run(swept)
    results = load_sweep(swept)
    fig = plot_sweep(results)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["4", "32"]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["BatchNorm (bn), 2 seeds",
                                                                           "GroupNorm, 2 groups (gn:2), 2 seeds"]
