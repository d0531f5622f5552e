"""--lr auto: a per-variant lr search on the validation split, run by the engine as grids of their
own (successive halving: every lr in <out>/lr-search, the best 2 per variant again, longer, in
<out>/lr-search-2), then the real runs at each variant's chosen lr.

Every training here is a `python -m normlab` process (one thread, as in test_resume), so runs
that must agree are computed the same way.
"""

from __future__ import annotations

import gzip
import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, write_idx
from normlab.engine import LR_GRID, Experiment, search_epochs, search_experiment
from normlab.config import TrainConfig
from normlab.variants import Variant
from test_resume import data, home, normlab, numbers   # noqa: F401 (fixtures: 256 training, 128 test images)

# 230 training images after the 10% validation split: 7 steps of 32 per epoch. 3 epochs: the
# search's round 1 runs 1 epoch per lr (5 lrs x 2 variants: 70 steps), its round 2 2 epochs for the
# best 2 lrs of each variant (56 steps), the real runs 2 x 3 epochs (42 steps).
STEPS = 7
ARGS = ["compare", "--dataset", "mnist", "--norms", "bn,gn:2", "--epochs", "3", "--batch-size", "32", "--lr", "auto",
        "--device", "cpu"]


@pytest.fixture(scope="module")
def reference(data, home, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    proc = normlab(home, *ARGS, "--data-dir", data, "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


def results(out):
    return json.loads((out / "results.json").read_text())


def choices(out) -> dict:
    """Every choice the run made: each variant's lr, and each run's (search and real) best epoch."""
    main, search, second = results(out), results(out / "lr-search"), results(out / "lr-search-2")
    return {"lr": {v: r["lr"] for v, r in main["lr_search"]["variants"].items()},
            "epochs": {(f, r["key"]): r["final"]["best_val_epoch"]
                       for f, runs in (("main", main), ("1", search), ("2", second)) for r in runs["runs"]}}


def score(run: dict) -> tuple:
    """A search run's rank key: validation accuracy at its best-validation epoch, then the lower loss, the smaller lr."""
    best = next(e for e in run["epochs"] if e["epoch"] == run["final"]["best_val_epoch"])
    return best["val_acc"], -best["val_loss"], -run["axes"]["lr"]


def test_the_chosen_lr_is_the_best_validation_accuracy_of_the_search(reference):
    main, search, second = results(reference), results(reference / "lr-search"), results(reference / "lr-search-2")
    record = main["lr_search"]
    assert record["folder"] == "lr-search" and record["epochs"] == 1 and len(record["grid"]) == len(LR_GRID)
    assert [(r["folder"], r["epochs"], r["per_variant"]) for r in record["rounds"]] == [("lr-search", 1, 5), ("lr-search-2", 2, 2)]
    assert record["cost_runs"] == round((5 * 1 + 2 * 2) / 3, 3)
    assert search["config"]["axes"] == {"lr": record["grid"]} and search["config"]["epochs"] == 1
    assert second["config"]["epochs"] == 2
    assert all(r["status"] == "done" and len(r["epochs"]) == 1 for r in search["runs"]) and len(search["runs"]) == 10
    assert all(r["status"] == "done" and len(r["epochs"]) == 2 for r in second["runs"]) and len(second["runs"]) == 4
    for variant in ("bn", "gn:2"):
        first = sorted((r for r in search["runs"] if r["variant"] == variant), key=score, reverse=True)
        finalists = [r for r in second["runs"] if r["variant"] == variant]
        # Round 2 trains round 1's best 2 again, from scratch, longer; the choice is round 2's best.
        assert sorted(r["axes"]["lr"] for r in finalists) == sorted(r["axes"]["lr"] for r in first[:2])
        chosen = record["variants"][variant]
        assert chosen["lr"] == max(finalists, key=score)["axes"]["lr"]
        assert [(t["lr"], t["val_acc"], t["val_loss"]) for t in chosen["tried"]] == [
            (r["axes"]["lr"], r["epochs"][0]["val_acc"], r["epochs"][0]["val_loss"]) for r in search["runs"] if r["variant"] == variant]
        assert [(t["lr"], t["best_val_epoch"]) for t in chosen["round2"]] == [
            (r["axes"]["lr"], r["final"]["best_val_epoch"]) for r in finalists]
        real = next(r for r in main["runs"] if r["variant"] == variant)
        assert real["lr"] == chosen["lr"] and real["status"] == "done" and real["epochs"][0]["lr"] < chosen["lr"]
    report = (reference / "report.md").read_text()
    assert "## Learning rate search" in report and "by validation accuracy after 1 epoch, then the best 2 after 2 epochs." in report
    assert f"The search cost 3 runs of 3 epochs per variant ({record['seconds']:.0f} s in all)." in report
    assert record["seconds"] == round(search["seconds"] + second["seconds"], 3) > 0
    assert "chosen by the same search on the validation split" in report
    # The run's times include the search, which trained before the real runs.
    assert main["started"] <= search["started"] and f"Run {main['started']} to {main['finished']}" in report
    assert (reference / "lr-search" / "report.md").is_file() and (reference / "lr-search-2" / "report.md").is_file()


def test_a_search_round_reports_what_it_chose_by_the_validation_error(reference):
    """A round's own report shows validation error, never the test accuracies that chose nothing; it
    lists the variants in the order given, and round 2 (two lrs per variant, not the same two for
    every variant) still compares each variant's two lrs."""
    second = results(reference / "lr-search-2")
    assert second["search_round"] == 2 and results(reference / "lr-search")["search_round"] == 1
    assert "search_round" not in results(reference)
    page = (reference / "lr-search-2" / "report.md").read_text()
    assert page.startswith("# normlab sweep: MNIST, bn, gn:2 over lr")
    assert "## Validation error (%)" in page and "Test error" not in page and "test error" not in page
    assert "Which norm is better" not in page and "Needs two values" not in page
    for v in ("bn", "gn:2"):
        lrs = sorted(r["axes"]["lr"] for r in second["runs"] if r["variant"] == v)
        assert f"`{v} at lr {lrs[0]:g}` vs `{v} at lr {lrs[1]:g}`" in page
    # The table's numbers are validation errors: 100 - each run's validation accuracy at its best epoch.
    run = second["runs"][0]
    assert f"{100 - run['final']['val_acc']:.2f}" in page
    rows = (reference / "lr-search-2" / "sweep.csv").read_text().splitlines()
    assert "val_err_mean" in rows[0] and "test_err" not in rows[0]


def test_each_round_is_longer_than_the_last_and_costs_a_share_of_the_real_runs():
    assert [search_epochs(n) for n in (1, 2, 3, 10, 20)] == [[1], [1, 2], [1, 2], [1, 3], [2, 6]]


def test_scrambled_test_labels_change_no_choice(reference, data, home, tmp_path):
    scrambled = tmp_path / "mnist"
    shutil.copytree(data, scrambled)
    path = scrambled / "t10k-labels-idx1-ubyte.gz"
    labels = np.frombuffer(gzip.decompress(path.read_bytes())[8:], dtype=np.uint8)
    write_idx(path, (labels + 1 + np.random.default_rng(0).integers(0, 9, len(labels))) % 10)
    out = tmp_path / "run"
    proc = normlab(home, *ARGS, "--data-dir", scrambled, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert choices(out) == choices(reference)
    # The test set did change: every test accuracy is another.
    before, after = ([r["final"]["test_acc"] for r in results(o)["runs"]] for o in (reference, out))
    assert all(a != b for a, b in zip(before, after))


def test_a_kill_in_the_search_or_the_real_runs_resumes_to_the_same_choices(reference, data, home, tmp_path):
    out = tmp_path / "run"
    base = [*ARGS, "--data-dir", data, "--out", out]
    proc = normlab(home, *base, kill=(f"step:{3 * STEPS + 2}", "KILL"))      # inside round 1's 4th run
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (out / "results.json").exists() and (out / "lr-search" / "results.json").is_file()
    # Without --resume the folder the user named is refused, before anything is written.
    proc = normlab(home, *base)
    assert proc.returncode == 2 and proc.stderr.strip().endswith(
        f"error: {out} already holds a run (its --lr auto search began); pass --resume to continue it, "
        f"--overwrite to replace it, or choose another --out"), proc.stderr
    proc = normlab(home, "report", out)          # nothing to report yet: said so, not "no normlab run"
    assert proc.returncode == 2 and proc.stderr.strip().endswith(
        f"error: {out} holds a run stopped in its --lr auto search, before its real runs began: nothing to report "
        f"yet (the search so far is in {out / 'lr-search'}); run the same command again with --resume to finish it"), proc.stderr
    # Round 1's 7 runs left, then round 2's second run (2 epochs each), in its 2nd epoch.
    proc = normlab(home, *base, "--resume", kill=(f"step:{7 * STEPS + 3 * STEPS + 2}", "KILL"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (out / "results.json").exists() and (out / "lr-search-2" / "results.json").is_file()
    proc = normlab(home, *base, "--resume", kill=(f"step:{5 * STEPS + STEPS + 3}", "KILL"))  # the 2nd real epoch
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "lr_search" in results(out)
    stamps = {p: p.stat().st_mtime_ns for f in ("lr-search", "lr-search-2") for p in (out / f / "checkpoints").iterdir()}
    proc = normlab(home, *base, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("is finished; not rerun") == 2
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps and len(stamps) == 14     # the search was not trained again
    assert numbers(results(out)["runs"]) == numbers(results(reference)["runs"])
    untimed = lambda search: {k: v for k, v in search.items() if k != "seconds"}     # wall time differs run to run
    assert untimed(results(out)["lr_search"]) == untimed(results(reference)["lr_search"])
    assert numbers(results(out / "lr-search-2")["runs"]) == numbers(results(reference / "lr-search-2")["runs"])


def test_the_choice_follows_the_search_results_on_resume(reference, data, home, tmp_path):
    """Make the worst finalist of gn:2's round 2 the best on validation: a resume reuses the search, chooses it."""
    out = tmp_path / "run"
    for folder in ("lr-search", "lr-search-2"):
        shutil.copytree(reference / folder, out / folder)
    (out / "checkpoints").mkdir()
    saved = results(out / "lr-search-2")
    runs = [r for r in saved["runs"] if r["variant"] == "gn:2"]
    worst = min(runs, key=score)
    assert worst["axes"]["lr"] != results(reference)["lr_search"]["variants"]["gn:2"]["lr"]
    for epoch in worst["epochs"]:
        epoch["val_acc"] = 100.0
    worst["final"]["val_acc"] = 100.0
    (out / "lr-search-2" / "results.json").write_text(json.dumps(saved))
    proc = normlab(home, *ARGS, "--data-dir", data, "--out", out, "--resume")
    assert proc.returncode == 0, proc.stderr
    chosen = {r["variant"]: r["lr"] for r in results(out)["runs"]}
    assert chosen == {"bn": results(reference)["lr_search"]["variants"]["bn"]["lr"], "gn:2": worst["axes"]["lr"]}


@pytest.mark.parametrize("args, message", [
    (["sweep", "--over", "lr=0.05,0.1", "--lr", "auto"], "--lr auto searches the learning rate itself, so lr cannot also be swept"),
    (["sweep", "--over", "lr=auto,0.1"], "so lr cannot also be swept"),
    (["compare", "--lr", "auto", "--val", "0"], "--lr auto chooses on the validation split, and --val 0 turns it off"),
    (["compare", "--lr", "fast"], "--lr: invalid number_or_auto value: 'fast'"),
    (["compare", "--lr", "0"], "--lr 0.0 must be a positive number or auto"),
])
def test_bad_uses_of_lr_auto_are_one_line_and_write_nothing(args, message, data, tmp_path, capsys):
    out = tmp_path / "never"
    assert run_cli(*args, "--norms", "bn", "--epochs", "1", "--data-dir", data, "--out", out) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not out.exists()


def test_a_batch_size_sweep_scales_each_variants_chosen_lr():
    exp = Experiment([Variant.parse("bn"), Variant.parse("ln")], TrainConfig(lr="auto"), None,
                     {"batch_size": [32, 256]}, "linear", lrs={"bn": 0.2, "ln": 0.025})
    assert {(s.variant.norm, s.cfg.batch_size): s.cfg.lr for s in exp.specs()} == {
        ("bn", 32): 0.05, ("bn", 256): 0.4, ("ln", 32): 0.00625, ("ln", 256): 0.05}


def test_a_batch_size_sweep_searches_at_batch_128_and_scales_the_choice(data, tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLAB_OFFLINE", "1")
    out = tmp_path / "sweep"
    assert run_cli("sweep", "--batch-sizes", "8,32", "--norms", "gn:2", "--seeds", "1", "--epochs", "1", "--lr", "auto",
                   "--device", "cpu", "--data-dir", data, "--out", out) == 0
    main, search = results(out), results(out / "lr-search")
    assert search["config"]["batch_size"] == 128 and main["config"]["lr"] == "auto"
    chosen = main["lr_search"]["variants"]["gn:2"]["lr"]
    # the default rule of a batch-size sweep: the square root of B / 128
    assert {r["axes"]["batch_size"]: r["lr"] for r in main["runs"]} == {
        8: pytest.approx(chosen / 4), 32: pytest.approx(chosen / 2)}
    assert main["config"]["lr_scaling"] == "sqrt" and "searched lr x sqrt(B / 128)" in main["config"]["lr_rule"]
    assert "## Learning rate search" in (out / "report.md").read_text()


def test_an_epochs_sweep_sizes_its_search_by_the_longest_run():
    """--over epochs=1,2 with the default --epochs 20 searched with 2- and 6-epoch rounds: longer
    than any run it chose for."""
    exp = Experiment([Variant.parse("bn")], TrainConfig(lr="auto"), Path("/never"), {"epochs": [1, 2]}, "none")
    assert exp.longest_epochs() == 2
    assert [search_experiment(exp, k).cfg.epochs for k in range(len(search_epochs(2)))] == [1, 2]
