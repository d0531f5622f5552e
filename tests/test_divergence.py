"""A variant whose loss turns NaN or infinite stops alone; the comparison goes on.

`none+l1=1e30` diverges by arithmetic, not by luck: every step moves every conv weight by about
lr x 1e30 (the L1 gradient is lambda x sign(w)), and with no normalization between the ten conv
layers the activations overflow float32 (max 3.4e38) in the first epoch, whatever the data,
seed or kernel. The normalized variant beside it trains normally.
"""

import json
import math

import torch

from conftest import make_idx_dataset, run_cli
import importlib
from normlab.data import load_splits
from normlab.train import TrainConfig, train_run
from normlab.variants import Variant

train = importlib.import_module("normlab.train")   # normlab.train is the library function


def strict_json(path):
    """results.json as a strict parser (a browser, jq) reads it: no NaN or Infinity."""
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_diverging_variant_stops_and_the_others_go_on(tmp_path, capsys):
    # L1 at 1e39 overflows float32 (an infinite gradient, then NaN weights). 1e30 no longer
    # diverges: the trust ratio keeps each step a fixed fraction of a kernel, so finite
    # gradients never blow the weights up.
    data = make_idx_dataset(tmp_path / "mnist", n_train=256, n_test=64)
    out = tmp_path / "run"
    args = ["compare", "--dataset", "mnist", "--norms", "none+l1=1e39,gn:2", "--epochs", "2", "--batch-size", "32",
            "--data-dir", data, "--out", out]
    assert run_cli(*args) == 0
    printed = capsys.readouterr().out
    results = strict_json(out / "results.json")
    diverged, trained = results["runs"]
    assert diverged["variant"] == "none+l1=1e+39" and diverged["status"] == "diverged at epoch 1"
    assert diverged["epochs"] == [] and "final" not in diverged
    assert trained["status"] == "done" and len(trained["epochs"]) == 2 and trained["final"]["test_acc"] > 0
    assert set(json.loads((out / "misclassified.json").read_text())) == {"gn:2"}
    # The closing table says so, on the variant's own line.
    table = {line.split()[0]: line for line in printed.splitlines() if line[:1].isalpha()}
    assert table["none+l1=1e+39"].rstrip().endswith("diverged at epoch 1")
    assert table["gn:2"].rstrip().endswith("done")

    # Resuming keeps the verdict and trains nothing again.
    before = (out / "checkpoints" / "none-l1-1e+39-seed1.pt").read_bytes()
    assert run_cli(*args, "--resume") == 0
    again = strict_json(out / "results.json")
    assert again["runs"] == results["runs"]
    assert (out / "checkpoints" / "none-l1-1e+39-seed1.pt").read_bytes() == before


def test_a_non_finite_test_loss_is_divergence_too(tmp_path, monkeypatch):
    data = make_idx_dataset(tmp_path / "mnist", n_train=64, n_test=32)
    train_set, test_set = load_splits("mnist", data)
    real = train.evaluate
    calls = {"n": 0}

    def evaluate(*args, **kwargs):
        result = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:             # the test loss after epoch 2 is infinite
            result.loss = math.inf
        return result

    monkeypatch.setattr(train, "evaluate", evaluate)
    cfg = TrainConfig(dataset="mnist", epochs=3, batch_size=16, seed=1)
    outcome = train_run(Variant.parse("gn:2"), 1, cfg, train_set, test_set, torch.device("cpu"))
    record = outcome.record
    assert record["status"] == "diverged at epoch 2"
    assert [e["epoch"] for e in record["epochs"]] == [1]
    assert record["final"]["test_acc"] == record["epochs"][0]["test_acc"]
    assert outcome.final is None
