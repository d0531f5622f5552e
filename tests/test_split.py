"""The validation split: fixed, class-stratified, disjoint from training, the same for every run."""

import numpy as np
import pytest
import torch

from conftest import make_idx_dataset
from normlab.data import load_dataset
from normlab.data.split import holdout
from normlab.errors import UserError


@pytest.fixture
def train_set(tmp_path):
    return load_dataset("mnist", "train", make_idx_dataset(tmp_path / "mnist", n_train=1000, n_test=10))


def test_split_is_disjoint_complete_and_keeps_file_order(train_set):
    part, val, description = holdout(train_set, 100)
    assert len(part) == 900 and len(val) == 100 and val.split == "val" and part.split == "train"
    # Every image lands in exactly one part, and both parts keep the file's order.
    where = {img.numpy().tobytes(): i for i, img in enumerate(train_set.images)}
    assert len(where) == 1000, "the generated images are all different"
    rows = lambda d: [where[img.numpy().tobytes()] for img in d.images]
    assert sorted(rows(part) + rows(val)) == list(range(1000))
    assert rows(part) == sorted(rows(part)) and rows(val) == sorted(rows(val))
    assert torch.equal(part.labels, train_set.labels[rows(part)])
    assert description["size"] == 100 and description["of"] == 1000 and description["seed"] == 0


def test_split_is_stratified_by_class(train_set):
    _, val, _ = holdout(train_set, 200)
    labels = train_set.labels.numpy()
    expected = np.bincount(labels, minlength=10) * 200 / len(labels)
    got = np.bincount(val.labels.numpy(), minlength=10)
    assert got.sum() == 200 and np.all(np.abs(got - expected) < 1), (got, expected)


def test_split_depends_on_its_own_seed_only(train_set):
    torch.manual_seed(123)                     # the run's seed must not move the split
    _, a, da = holdout(train_set, 100)
    torch.manual_seed(456)
    np.random.seed(456)
    _, b, db = holdout(train_set, 100)
    _, _, dc = holdout(train_set, 100, seed=1)
    assert torch.equal(a.images, b.images) and da == db
    assert dc["indices_sha256"] != da["indices_sha256"]


def test_default_sizes_and_no_split(train_set):
    part, val, description = holdout(train_set, None)
    assert len(val) == 100 and len(part) == 900            # 10% of a small set
    part, val, description = holdout(train_set, 0)
    assert val is None and part is train_set and description["size"] == 0 and "no validation" in description["note"]


def test_large_sets_hold_out_5000():
    from normlab.data.split import default_size
    assert default_size(60_000) == 5000 and default_size(50_000) == 5000 and default_size(4000) == 400


@pytest.mark.parametrize("size", [-1, 1000, 5000])
def test_impossible_sizes_are_user_errors(train_set, size):
    with pytest.raises(UserError, match="--val"):
        holdout(train_set, size)
