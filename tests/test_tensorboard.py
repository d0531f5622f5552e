"""--tensorboard: event files that TensorBoard's own reader reads back, matching results.json."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from conftest import make_idx_dataset, run_cli  # noqa: E402
from normlab.tensorboard import write_events  # noqa: E402


def epochs(n, offset=0.0):
    return [{"epoch": e, "train_loss": 1.0 / e + offset, "train_acc": 50.0 + e, "val_loss": 1.1 / e, "val_acc": 49.0 + e,
             "test_loss": 1.2 / e, "test_acc": 48.0 + e, "lr": 0.1 / e, "seconds": 1.0} for e in range(1, n + 1)]


def read(folder):
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return acc


def test_event_files_hold_every_epoch_of_every_run(tmp_path):
    results = {"runs": [{"key": "bn-seed1", "variant": "bn", "seed": 1, "epochs": epochs(3)},
                        {"key": "gn4-seed2", "variant": "gn:4", "seed": 2, "epochs": epochs(2, offset=0.5)}]}
    root = write_events(tmp_path, results)
    bn, gn = read(root / "bn-seed1"), read(root / "gn4-seed2")
    assert set(bn.Tags()["scalars"]) == {"loss/train", "loss/val", "loss/test", "accuracy/train", "accuracy/val",
                                         "accuracy/test", "lr"}
    assert [(s.step, round(s.value, 5)) for s in bn.Scalars("accuracy/test")] == [(1, 49.0), (2, 50.0), (3, 51.0)]
    assert [round(s.value, 5) for s in gn.Scalars("loss/train")] == [1.5, 1.0]


def test_rewriting_replaces_the_old_events_and_keeps_other_files(tmp_path):
    results = {"runs": [{"key": "bn-seed1", "variant": "bn", "seed": 1, "epochs": epochs(3)}]}
    root = write_events(tmp_path, results)
    mine = root / "bn-seed1" / "notes.txt"
    mine.write_text("mine")
    results["runs"][0]["epochs"] = epochs(1)
    write_events(tmp_path, results)
    assert [s.step for s in read(root / "bn-seed1").Scalars("loss/test")] == [1]
    assert mine.read_text() == "mine"


def test_a_run_with_tensorboard_logs_every_epoch_and_its_figures(tmp_path):
    data = make_idx_dataset(tmp_path / "mnist", n_train=256, n_test=64)
    out = tmp_path / "run"
    args = ["train", "--norm", "gn:2", "--dataset", "mnist", "--epochs", "2", "--batch-size", "32",
            "--data-dir", data, "--out", out, "--tensorboard"]
    assert run_cli(*args) == 0
    results = json.loads((out / "results.json").read_text())
    run = read(out / "tensorboard" / "gn2-seed1")
    assert [round(s.value, 3) for s in run.Scalars("accuracy/val")] == [round(e["val_acc"], 3) for e in results["runs"][0]["epochs"]]
    assert "curves" in read(out / "tensorboard" / "figures").Tags()["images"]
    # Once each: the report rewrites the events, and the training's writers are closed before it.
    assert len(read(out / "tensorboard" / "figures").Images("curves")) == 1
    assert [len(list((out / "tensorboard" / k).glob("events.*"))) for k in ("figures", "gn2-seed1")] == [1, 1]
    manifest = json.loads((out / ".normlab-manifest.json").read_text())
    events = [p.relative_to(out).as_posix() for p in (out / "tensorboard").rglob("events.out.tfevents.*")]
    assert events and set(events) <= set(manifest)          # --overwrite may remove them, and only them
    (out / "tensorboard" / "mine.txt").write_text("mine")
    assert run_cli(*args, "--overwrite") == 0
    assert (out / "tensorboard" / "mine.txt").read_text() == "mine"
    assert len(read(out / "tensorboard" / "gn2-seed1").Scalars("accuracy/val")) == 2


def test_normlab_touches_only_the_event_files_and_figures_it_wrote(tmp_path):
    # A tensorboard/ folder of the user's in a run folder: `normlab report` once deleted every
    # event file under it and started writing events for a run trained without --tensorboard,
    # and a --tensorboard run read any *.png there as its figure (a stray non-PNG crashed it).
    data = make_idx_dataset(tmp_path / "mnist", n_train=256, n_test=64)
    out = tmp_path / "run"
    args = ["train", "--norm", "bn", "--dataset", "mnist", "--epochs", "1", "--batch-size", "32", "--data-dir", data, "--out", out]
    assert run_cli(*args) == 0
    mine = out / "tensorboard" / "myexp" / "events.out.tfevents.123.myhost"
    mine.parent.mkdir(parents=True)
    mine.write_text("mine")
    stray = out / "misclassified-mine.png"
    stray.write_text("not a png")
    assert run_cli("report", out) == 0
    assert sorted(p.relative_to(out).as_posix() for p in (out / "tensorboard").rglob("*") if p.is_file()) == [
        "tensorboard/myexp/events.out.tfevents.123.myhost"]
    assert run_cli(*args, "--overwrite", "--tensorboard") == 0
    assert mine.read_text() == "mine" and stray.read_text() == "not a png"
    figures = read(out / "tensorboard" / "figures").Tags()["images"]
    assert "curves" in figures and "misclassified-mine" not in figures
    assert run_cli("report", out) == 0
    assert mine.read_text() == "mine"
    assert len(read(out / "tensorboard" / "bn-seed1").Scalars("accuracy/val")) == 1
