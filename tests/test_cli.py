"""The command line: a run folder as DESIGN.md lays it out, and bad input as one line, exit 2."""

import csv
import json
import subprocess
import sys

import pytest
import torch

from conftest import make_idx_dataset, run_cli
import normlab
from normlab import load_run
from normlab.cli import print_outcome
from normlab.errors import UserError
from normlab.runs import metrics_csv
from normlab.train import final_metrics


@pytest.fixture
def run_dir(fashion_dir, tmp_path):
    out = tmp_path / "run"
    code = run_cli("compare", "--norms", "bn,gn:2", "--epochs", "2", "--batch-size", "32", "--data-dir", fashion_dir, "--out", out)
    assert code == 0
    return out


def test_compare_writes_the_run_folder(run_dir, fashion_dir):
    results = json.loads((run_dir / "results.json").read_text())
    assert results["normlab"] == normlab.__version__ and results["dataset"] == "fashion-mnist"
    assert results["config"]["epochs"] == 2 and results["config"]["variants"] == ["bn", "gn:2"]
    assert results["schema"] == 2 and results["config"]["axes"] == {} and results["config"]["data_fingerprint"].startswith("sha256:")
    assert results["config"]["momentum_used"] == "momentum 0.9 cycled 0.95 -> 0.85 -> 0.95 against the lr"
    assert [(r["key"], r["variant"], r["axes"], r["lr"]) for r in results["runs"]] == [("bn-seed1", "bn", {}, 0.1), ("gn2-seed1", "gn:2", {}, 0.1)]
    for run in results["runs"]:
        assert run["status"] == "done" and run["seed"] == 1 and 0 < run["params"] < 20_000
        assert [e["epoch"] for e in run["epochs"]] == [1, 2]
        assert set(run["epochs"][0]) >= {"train_loss", "train_acc", "test_loss", "test_acc", "seconds"}
        assert run["final"]["chosen_by"] == "val_acc" and "best_test_acc" not in run["final"]
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert len(rows) == 2 * 2 * 3 and {r["split"] for r in rows} == {"train", "val", "test"} and rows[0].keys() == {"variant", "seed", "epoch", "split", "loss", "accuracy"}
    assert (run_dir / "metrics.csv").read_text() == metrics_csv(results)
    for name in ("bn-seed1.pt", "gn2-seed1.pt"):
        state = torch.load(run_dir / "checkpoints" / name, weights_only=True)
        assert "model" in state


def test_the_table_on_screen_shows_the_epoch_validation_chose(run_dir, capsys):
    results = json.loads((run_dir / "results.json").read_text())
    bn, gn = results["runs"]
    bn["epochs"][0]["val_acc"] = 100.0                       # validation now prefers bn's first epoch
    bn.update(final_metrics(bn["epochs"]))
    capsys.readouterr()
    print_outcome(results, run_dir)
    lines = capsys.readouterr().out.splitlines()
    for run, epoch in ((bn, bn["epochs"][0]), (gn, gn["epochs"][gn["final"]["best_val_epoch"] - 1])):
        row = next(line.split() for line in lines if line.startswith(run["variant"] + " "))
        assert row[3:6] == [str(epoch["epoch"]), f"{epoch['test_acc']:.2f}%", f"{epoch['test_loss']:.4f}"]
    assert bn["final"]["best_val_epoch"] == 1 and bn["final"]["test_acc"] == bn["epochs"][-1]["test_acc"]
    assert any(line.startswith("epoch: chosen by validation accuracy on ") for line in lines)


def test_misclassified_are_really_misclassified(tmp_path):
    # gn:2 got every generated test image right at 2 epochs; wrong labels guarantee mistakes.
    data = make_idx_dataset(tmp_path / "fashion", wrong_test_labels=8)
    run_dir = tmp_path / "run"
    assert run_cli("compare", "--norms", "bn,gn:2", "--epochs", "2", "--batch-size", "32", "--data-dir", data, "--out", run_dir) == 0
    run = load_run(run_dir)
    test = run.test_set(data)
    mistakes = run.misclassified
    assert set(mistakes) == {"bn", "gn:2"}
    for variant, items in mistakes.items():
        assert 0 < len(items) <= 10
        index = torch.tensor([m["index"] for m in items])
        pred, conf = run.predict(variant, test.images[index])
        assert pred.tolist() == [m["pred"] for m in items]
        assert test.labels[index].tolist() == [m["true"] for m in items]
        assert all(m["pred"] != m["true"] for m in items)
        assert [m["confidence"] for m in items] == sorted((m["confidence"] for m in items), reverse=True)
    # A NumPy array works as the tensor does; a wrong shape is a one-line UserError.
    index = [m["index"] for m in mistakes["bn"]]
    assert run.predict("bn", test.images[index].numpy())[0].tolist() == run.predict("bn", test.images[index])[0].tolist()
    for wrong in (test.images[:2, 0], test.images[:2].transpose(1, 3)):
        with pytest.raises(UserError, match=r"predict takes images of 1x28x28 \(N x 1x28x28 for several\), got shape"):
            run.predict("bn", wrong)


def test_resume_of_a_finished_run_retrains_nothing(run_dir, fashion_dir):
    before = json.loads((run_dir / "results.json").read_text())
    code = run_cli("compare", "--norms", "bn,gn:2", "--epochs", "2", "--batch-size", "32", "--data-dir", fashion_dir,
                   "--out", run_dir, "--resume")
    after = json.loads((run_dir / "results.json").read_text())
    assert code == 0 and after["runs"] == before["runs"]


def test_errors_as_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "normlab", "compare", "--norms", "gn:5", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "use gn:G with G one of 1, 2, 4, 8" in proc.stderr


def test_datasets_command(tmp_path, capsys):
    make_idx_dataset(tmp_path / "root" / "fashion-mnist", n_train=20, n_test=10)
    assert run_cli("datasets", "--json", "--data-dir", tmp_path / "root") == 0
    entries = {e["dataset"]: e for e in json.loads(capsys.readouterr().out)}
    assert entries["fashion-mnist"]["found"] and not entries["mnist"]["found"]


def test_summary_command(capsys):
    assert run_cli("summary", "--dataset", "cifar10", "--norms", "bn,ln-elem") == 0
    out = capsys.readouterr().out
    assert "BatchNorm2d" in out and "LayerNorm" in out and "40,210" in out


def test_every_command_that_trains_takes_every_trainconfig_field():
    from dataclasses import fields
    from normlab.cli import build_parser
    from normlab.config import TrainConfig
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for command in ("compare", "train", "sweep"):
        flags = {flag for action in commands[command]._actions for flag in action.option_strings}
        for field in fields(TrainConfig):
            assert "--" + field.name.replace("_", "-") in flags, (command, field.name)


def test_help_and_input_errors_answer_without_torch():
    code = ("import sys; from normlab.cli import main\n"
            "for argv in (['compare', '--help'], ['sweep', '--epochs', '0'], ['train', '--norm', 'bn', '--seed', '-1']):\n"
            "    try: main(argv)\n"
            "    except SystemExit: pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "--epochs 0 must be at least 1" in proc.stderr and "--seed -1 (with --seeds 1) is out of range" in proc.stderr


def test_compare_takes_the_limits_and_the_library_returns_the_run(fashion_dir, tmp_path, capsys):
    import normlab
    assert run_cli("compare", "--norms", "gn:2", "--epochs", "1", "--train-limit", "64", "--test-limit", "32",
                   "--batch-size", "16", "--data-dir", fashion_dir, "--out", tmp_path / "cli") == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("normlab: 1 run (1 variant x 1 seed) of fashion-mnist, 1 epoch each, into ")
    run = normlab.train(norm="gn:2", epochs=1, train_limit=64, test_limit=32, batch_size=16, data_dir=fashion_dir,
                        out=tmp_path / "lib")
    assert isinstance(run, normlab.runs.Run) and run.config["train_size"] == 58 and run.config["val_size"] == 6 and run.config["test_size"] == 32
    cli = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert cli["runs"][0]["final"] == run.runs[0]["final"], "the command line and the library train the same run"
    swept = normlab.sweep(over={"lr": [0.05, 0.1]}, norms="gn:2", seeds=1, epochs=1, train_limit=64, test_limit=32,
                          batch_size=16, data_dir=fashion_dir, out=tmp_path / "sweep")
    assert [(r["key"], r["lr"]) for r in swept.runs] == [("lr0.05-gn2-seed1", 0.05), ("lr0.1-gn2-seed1", 0.1)]
    assert swept.runs[1]["final"] == run.runs[0]["final"], "lr 0.1 is the default the train run used"
    assert (tmp_path / "sweep" / "sweep.png").is_file() and set(swept.misclassified) == {"gn:2 lr=0.05", "gn:2 lr=0.1"}
    with pytest.raises(normlab.errors.UserError, match="unknown option 'colour'"):
        normlab.compare(norms="bn", colour="red")


def test_a_closed_stdout_stops_training_with_exit_141_and_says_how_to_continue(tmp_path):
    # `normlab compare ... | head -1` once ended with exit 0, nothing on stderr and the run pending.
    from test_resume import env, read_results
    data = make_idx_dataset(tmp_path / "mnist", n_train=160, n_test=48)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "normlab", "compare", "--dataset", "mnist", "--norms", "bn,gn:2", "--epochs", "1",
               "--batch-size", "32", "--data-dir", str(data), "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(tmp_path / "home"))
    assert process.stdout.readline().startswith("normlab: 2 runs")
    process.stdout.close()                        # the reader leaves, as head -1 does
    err = process.stderr.read()
    assert process.wait(timeout=300) == 141, err
    assert err.strip().count("\n") == 0 and "Traceback" not in err, err
    assert "output was closed (broken pipe)" in err and "--resume" in err, err
    resumed = subprocess.run(err.strip().split("continue with: ")[1].replace("normlab", f"{sys.executable} -m normlab", 1),
                             shell=True, capture_output=True, text=True, env=env(tmp_path / "home"), timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert [r["status"] for r in read_results(out)["runs"]] == ["done", "done"]
