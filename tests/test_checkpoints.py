"""Checkpoints at the door: one function (checkpoints.read_checkpoint) refuses, in one line, what
is not this variant's and seed's checkpoint or does not fit its model."""

import os
import pickle
import shutil
import warnings

import pytest
import torch

from conftest import finished_compare
from normlab import load_run
from normlab.checkpoints import read_checkpoint
from normlab.errors import UserError
from normlab.models import build_model
from normlab.variants import Variant

GN2 = Variant.parse("gn:2")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished compare of bn and gn:2 on a tiny generated MNIST (one epoch)."""
    return finished_compare(tmp_path_factory.mktemp("finished"))[1]


@pytest.fixture
def run_copy(finished, tmp_path):
    return shutil.copytree(finished, tmp_path / "run")


def fresh_gn2():
    return build_model(GN2, "mnist")


def test_a_good_checkpoint_is_loaded_into_the_model(run_copy):
    model = fresh_gn2()
    saved = read_checkpoint(run_copy / "checkpoints" / "gn2-seed1.pt", GN2, 1, model)
    assert saved["status"] == "done"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved["model"].items())


def forged(run_copy, change):
    path = run_copy / "checkpoints" / "gn2-seed1.pt"
    saved = torch.load(path, weights_only=True)
    torch.save(change(saved, torch.load(run_copy / "checkpoints" / "bn-seed1.pt", weights_only=True)), path)
    return path


def first_weight(state):
    return next(k for k, v in state.items() if v.ndim == 4)


@pytest.mark.parametrize("change, words", [
    (lambda gn, bn: torch.zeros(3), r"gn2-seed1.pt is not a normlab training checkpoint \(it holds a bare Tensor\)"),
    (lambda gn, bn: {"model": gn["model"]}, r"not a normlab training checkpoint \(no epochs, optimizer, schedule, status\)"),
    (lambda gn, bn: bn, r"gn2-seed1.pt holds bn seed 1, not gn:2 seed 1"),
    (lambda gn, bn: {**bn, "variant": "gn:2"}, r"gn2-seed1.pt does not fit gn:2: it has unexpected weights .*num_batches_tracked and \d+ more"),
    (lambda gn, bn: {**gn, "model": {**gn["model"], first_weight(gn["model"]): torch.zeros(5, 1, 3, 3)}},
     r"gn2-seed1.pt does not fit gn:2: .*weight is \(5, 1, 3, 3\) in the file, \(\d+, 1, 3, 3\) in the model"),
    (lambda gn, bn: {**gn, "model": [1, 2]}, r"its 'model' entry is not a state dict of named tensors"),
], ids=["bare-tensor", "not-training", "other-variant", "other-variants-weights", "wrong-shape", "not-a-state-dict"])
def test_what_is_not_this_variants_checkpoint_is_one_line(run_copy, change, words):
    path = forged(run_copy, change)
    model = fresh_gn2()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError, match=words) as caught:
        read_checkpoint(path, GN2, 1, model)
    assert "\n" not in str(caught.value) and "delete it to retrain that variant" in str(caught.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "refused weights were copied in"


def test_the_report_path_refuses_another_variants_weights(run_copy):
    forged(run_copy, lambda gn, bn: {**bn, "variant": "gn:2"})
    with pytest.raises(UserError, match="does not fit gn:2"):
        load_run(run_copy).load_model("gn:2")


def test_a_checkpoint_of_the_pre_0_2_net_is_refused_not_mispredicted(run_copy):
    """Weights trained conv -> norm -> ReLU fit the conv -> ReLU -> norm net's shapes exactly, so
    only the recorded block order tells them apart."""
    path = forged(run_copy, lambda gn, bn: {k: v for k, v in gn.items() if k != "block"})
    with pytest.raises(UserError, match=r"gn2-seed1.pt holds a conv-norm-relu net \(normlab before 0.2.0\)") as caught:
        load_run(run_copy).load_model("gn:2")
    assert "\n" not in str(caught.value) and "--overwrite" in str(caught.value)
    assert read_checkpoint(path, GN2, 1, own_net=False)["status"] == "done", "a --model run's weights are its own model's"


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_malicious_checkpoint_is_refused_without_torchs_warning(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "gn2.pt"
    # Protocol 4: torch warns (two lines) that it did not write this protocol.
    path.write_bytes(pickle.dumps({"model": RunsCode(marker)}, protocol=4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(UserError, match=r"cannot load checkpoint .*gn2.pt \(UnpicklingError: Unsupported operand") as err:
            read_checkpoint(path, GN2, 1)
    assert not caught, [str(w.message) for w in caught]
    assert "\n" not in str(err.value) and not marker.exists()


@pytest.mark.timeout(60)
def test_a_fifo_in_place_of_a_checkpoint_is_refused(tmp_path):
    os.mkfifo(tmp_path / "gn2.pt")
    with pytest.raises(UserError, match="gn2.pt is a named pipe, not a data file"):
        read_checkpoint(tmp_path / "gn2.pt", GN2, 1)
