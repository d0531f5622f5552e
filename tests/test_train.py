"""The training path on generated data: batches, augmentation, determinism, L1, divergence."""

import importlib

import pytest
import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_pre_hook

from conftest import record_pads
from normlab.data import load_splits
from normlab.data.batches import Normalizer, TrainBatches
from normlab.data.catalog import dataset_info
from normlab.models import build_model
from normlab.train import TrainConfig, train_run, weights
from normlab.variants import Variant


def test_normalizer_matches_the_formula():
    info = dataset_info("cifar10")
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    expected = (images.float() / 255 - torch.tensor(info.mean).view(1, 3, 1, 1)) / torch.tensor(info.std).view(1, 3, 1, 1)
    assert torch.allclose(Normalizer(info, torch.device("cpu"))(images), expected, atol=1e-5)


def test_crops_are_shifted_windows_and_flips_are_mirrors():
    info = dataset_info("cifar10")
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    batches = TrainBatches(images, torch.zeros(64, dtype=torch.long), info, 64, Normalizer(info, torch.device("cpu")))
    index, shift, flip = next(batches.plan(torch.Generator().manual_seed(0)))
    out = batches.crop_and_flip(index, shift, flip)
    padded = F.pad(images, (4, 4, 4, 4))[index]
    flipped_count = 0
    for i in range(64):
        windows = [(padded[i, :, dy:dy + 32, dx:dx + 32], flip) for dy in range(9) for dx in range(9) for flip in (False, True)]
        matches = [flip for w, flip in windows if torch.equal(out[i], w.flip(-1) if flip else w)]
        assert matches, f"image {i} is not a (flipped) shifted window of its padded original"
        flipped_count += matches[0]
    assert 10 < flipped_count < 54, "about half the batch is flipped"


def test_28x28_sets_are_translated_but_never_flipped():
    info = dataset_info("fashion-mnist")
    images = torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8)
    batches = TrainBatches(images, torch.zeros(32, dtype=torch.long), info, 32, Normalizer(info, torch.device("cpu")))
    index, shift, flip = next(batches.plan(torch.Generator().manual_seed(1)))
    assert flip is None
    out = batches.crop_and_flip(index, shift, flip)
    padded = F.pad(images, (1, 1, 1, 1))[index]
    for i in range(32):
        assert any(torch.equal(out[i], padded[i, :, dy:dy + 28, dx:dx + 28]) for dy in range(3) for dx in range(3))
    unshifted = sum(torch.equal(out[i], images[index[i]]) for i in range(32))
    assert unshifted < 16, "most images are moved (8 of the 9 offsets move the image)"


def test_epoch_visits_each_image_at_most_once_and_drops_the_partial_batch():
    info = dataset_info("fashion-mnist")
    images = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1).expand(50, 1, 28, 28).contiguous()
    labels = torch.arange(50)
    batches = TrainBatches(images, labels, info, 16, Normalizer(info, torch.device("cpu")), augment=False)
    seen = torch.cat([y for _, y in batches.epoch(torch.Generator().manual_seed(0))])
    assert len(batches) == 3 and len(seen) == 48 and len(set(seen.tolist())) == 48


def small_config(**overrides):
    values = dict(dataset="fashion-mnist", epochs=2, batch_size=32, seed=3)    # the default lr
    values.update(overrides)
    return TrainConfig(**values)


def test_training_learns_and_is_repeatable(fashion_dir):
    train, test = load_splits("fashion-mnist", fashion_dir)
    cfg = small_config(epochs=3)
    first = train_run(Variant.parse("gn:4"), 3, cfg, train, test, torch.device("cpu"))
    second = train_run(Variant.parse("gn:4"), 3, cfg, train, test, torch.device("cpu"))
    assert first.record["status"] == "done" and len(first.record["epochs"]) == 3
    assert first.record["final"]["test_acc"] > 50, "the bar's row gives the class away"
    strip = lambda r: [{k: v for k, v in e.items() if k != "seconds"} for e in r["epochs"]]
    assert strip(first.record) == strip(second.record)
    assert first.final.predictions.shape == (len(test),)


def test_l1_shrinks_the_weights(fashion_dir):
    train, test = load_splits("fashion-mnist", fashion_dir)
    cfg = small_config(epochs=1, weight_decay=0.0)
    l1_sum = lambda model: sum(w.abs().sum().item() for w in weights(model))
    plain = train_run(Variant.parse("bn"), 3, cfg, train, test, torch.device("cpu")).model
    sparse = train_run(Variant.parse("bn+l1=0.01"), 3, cfg, train, test, torch.device("cpu")).model
    assert l1_sum(sparse) < 0.9 * l1_sum(plain)


def test_a_nan_loss_stops_the_run_and_says_when(fashion_dir):
    train, test = load_splits("fashion-mnist", fashion_dir)
    cfg = small_config(epochs=3, lr=1e6, schedule="constant")
    outcome = train_run(Variant.parse("none"), 3, cfg, train, test, torch.device("cpu"))
    assert outcome.record["status"] == "diverged at epoch 1"
    assert outcome.final is None


def test_batch_statistics_differ_between_norms():
    """bn's output for a sample depends on the rest of the batch; gn/ln/in's does not."""
    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    for name, batch_dependent in [("bn", True), ("gn:4", False), ("ln", False), ("in", False)]:
        model = build_model(name, "cifar10").train()
        alone = model(x[:2])[0]
        together = model(x)[0]
        assert (not torch.allclose(alone, together, atol=1e-5)) == batch_dependent, name



def test_one_cycle_with_very_few_steps():
    """OneCycleLR divides by the warm-up length; 4 steps in all once made that zero."""
    from normlab.train import make_optimizer, make_schedule
    for total in range(1, 9):
        model = torch.nn.Conv2d(1, 1, 1)
        optimizer = make_optimizer(model, small_config(epochs=1))
        schedule = make_schedule(optimizer, small_config(epochs=1), total)
        for _ in range(total):
            optimizer.step()
            schedule.step()
        assert optimizer.param_groups[0]["lr"] > 0


def test_validation_is_evaluated_every_epoch_and_chooses_the_epoch(fashion_dir):
    """The best epoch follows validation accuracy; scrambling the test labels changes no choice."""
    from dataclasses import replace
    from normlab.data.split import holdout
    full, test = load_splits("fashion-mnist", fashion_dir)
    train, val, _ = holdout(full)
    cfg = small_config(epochs=3)
    plain = train_run(Variant.parse("gn:4"), 3, cfg, train, test, torch.device("cpu"), val=val).record
    scrambled_test = replace(test, labels=test.labels[torch.randperm(len(test), generator=torch.Generator().manual_seed(0))])
    scrambled = train_run(Variant.parse("gn:4"), 3, cfg, train, scrambled_test, torch.device("cpu"), val=val).record
    epochs = plain["epochs"]
    assert all({"val_loss", "val_acc", "test_loss", "test_acc"} <= e.keys() for e in epochs)
    best = max(epochs, key=lambda e: (e["val_acc"], -e["val_loss"]))
    final = plain["final"]
    assert final["best_val_epoch"] == best["epoch"] and final["val_acc"] == best["val_acc"]
    assert final["test_acc_at_best_val"] == best["test_acc"] and final["test_acc"] == epochs[-1]["test_acc"]
    assert final["chosen_by"] == "val_acc" and "best_test_acc" not in final
    assert [e["test_acc"] for e in scrambled["epochs"]] != [e["test_acc"] for e in epochs], "the scramble bites"
    for key in ("best_val_epoch", "val_acc"):
        assert scrambled["final"][key] == final[key]


def test_without_validation_the_last_epoch_is_reported_and_says_so(fashion_dir):
    train, test = load_splits("fashion-mnist", fashion_dir)
    record = train_run(Variant.parse("bn"), 3, small_config(epochs=2), train, test, torch.device("cpu")).record
    final = record["final"]
    assert "val_acc" not in record["epochs"][-1]
    assert final["best_val_epoch"] == 2 and final["test_acc_at_best_val"] == final["test_acc"]
    assert "no validation" in final["chosen_by"]


def test_recipe_note_says_when_a_ranking_rests_on_unequal_settings():
    from normlab.train import recipe_note
    same = {v: small_config().to_dict() for v in ("bn", "ln")}
    assert "same recipe" in recipe_note(same)
    assert "different lr" in recipe_note({**same, "ln": small_config(lr=0.02).to_dict()})
    one = recipe_note(same, tuned={"ln": "lr 0.02 chosen from 0.005-0.2 by validation accuracy"})
    assert "tuned for ln only" in one and "favours" in one
    both = recipe_note(same, tuned={"bn": "lr 0.1 chosen", "ln": "lr 0.02 chosen"})
    assert "same search" in both and "ln: lr 0.02 chosen" in both


def test_the_trust_ratio_is_on_from_batch_32_unless_told():
    assert [small_config(batch_size=b).trust_used for b in (2, 16, 31, 32, 128)] == [0.0, 0.0, 0.0, 0.1, 0.1]
    assert small_config(batch_size=2, trust=0.1).trust_used == 0.1
    assert small_config(batch_size=128, trust=0.0).trust_used == 0.0


@pytest.mark.parametrize("trust", [0.1, 0.3, 0.0])
def test_every_kernel_moves_by_the_same_fraction_of_its_norm(trust):
    """The trust ratio: with plain SGD (no momentum, no decay) one step moves each kernel by
    lr * trust of its norm, whatever its gradient's size; biases and norm scales take raw steps.
    --trust 0 is plain SGD: every parameter takes its raw step."""
    from normlab.train import make_optimizer
    torch.manual_seed(0)
    model = build_model("gn:4", "fashion-mnist")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = make_optimizer(model, small_config(lr=0.05, momentum=0.0, weight_decay=0.0, trust=trust))
    F.cross_entropy(model(torch.randn(16, 1, 28, 28)), torch.randint(0, 10, (16,))).backward()
    raw = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    optimizer.step()
    for name, p in model.named_parameters():
        moved = (p.detach() - before[name]).norm().item()
        if p.ndim > 1 and trust:
            assert abs(moved / before[name].norm().item() - 0.05 * trust) < 1e-5, name
        else:
            assert abs(moved - 0.05 * raw[name].norm().item()) < 1e-6, name


def test_the_momentum_a_run_uses_follows_the_momentum_option(fashion_dir):
    """OneCycleLR cycles the momentum by itself; the cycle is --momentum +- 0.05 (PyTorch's own
    0.95 -> 0.85 -> 0.95 at the default 0.9), none at 0, and AdamW's beta1 follows it too."""
    train, test = load_splits("fashion-mnist", fashion_dir)
    used: list[float] = []
    hook = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: used.append(next(g["betas"][0] if "betas" in g else g["momentum"] for g in opt.param_groups)))
    try:
        for optimizer, momentum, low, high in [("sgd", 0.9, 0.85, 0.95), ("sgd", 0.5, 0.45, 0.55), ("sgd", 0.0, 0.0, 0.0),
                                               ("adamw", 0.6, 0.55, 0.65), ("sgd", 0.98, 0.97, 0.99)]:
            used.clear()
            cfg = small_config(epochs=2, optimizer=optimizer, momentum=momentum)
            assert train_run(Variant.parse("gn:4"), 3, cfg, train, test, torch.device("cpu")).record["status"] == "done"
            assert len(used) > 4 and abs(min(used) - low) < 2e-3 and abs(max(used) - high) < 1e-9, (optimizer, momentum)
            assert used[0] == high and (high == low or min(used) < used[-1]), "high at the start, low near the lr's peak"
            assert abs(sum(used) / len(used) - momentum) < 0.01, "the cycle's mean is the momentum asked for"
        cfg = small_config(epochs=2, momentum=0.5, schedule="cosine")
        used.clear()
        train_run(Variant.parse("gn:4"), 3, cfg, train, test, torch.device("cpu"))
        assert set(used) == {0.5} and cfg.momentum_text() == "momentum 0.5"
    finally:
        hook.remove()
    assert small_config().momentum_text() == "momentum 0.9 cycled 0.95 -> 0.85 -> 0.95 against the lr"


def test_pad_sets_the_shift_range_and_zero_turns_augmentation_off():
    info = dataset_info("cifar10")
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    make = lambda **kw: TrainBatches(images, torch.zeros(32, dtype=torch.long), info, 32, Normalizer(info, torch.device("cpu")), **kw)
    assert make().pad == 4 and make(pad=2).pad == 2
    index, shift, flip = next(make(pad=2).plan(torch.Generator().manual_seed(0)))
    assert int(shift.max()) <= 4
    index, shift, flip = next(make(pad=0).plan(torch.Generator().manual_seed(0)))
    assert shift is None and flip is None
    assert torch.equal(make(pad=0).crop_and_flip(index, shift, flip), images[index])


def test_train_run_hands_pad_to_its_batches(fashion_dir, monkeypatch):
    seen = record_pads(monkeypatch, importlib.import_module("normlab.train"))   # the module: normlab.train is the library function
    train, test = load_splits("fashion-mnist", fashion_dir)
    train_run(Variant.parse("ln"), 3, small_config(epochs=1, pad=0), train, test, torch.device("cpu"))
    assert seen == [0]


def test_the_model_kept_is_the_epoch_validation_chose_and_resume_keeps_it(fashion_dir, tmp_path):
    """A validation split whose labels are each the next class: the more the net learns, the worse
    it scores there, so validation chooses epoch 1 while training goes on to epoch 3. The
    predictions returned (the grids' source) and the checkpoint's "chosen" weights are epoch 1's."""
    from normlab.checkpoints import read_checkpoint
    from normlab.data import Dataset
    train, test = load_splits("fashion-mnist", fashion_dir)
    train = Dataset(train.info, "train", train.images[:1024], train.labels[:1024], train.source)
    test = Dataset(test.info, "test", test.images[:500], test.labels[:500], test.source)
    shifted = Dataset(test.info, "val", test.images, (test.labels + 1) % 10, test.source)
    cfg = TrainConfig(dataset="fashion-mnist", epochs=3, batch_size=64, seed=1)
    variant, cpu, path = Variant.parse("bn"), torch.device("cpu"), tmp_path / "bn.pt"
    result = train_run(variant, 1, cfg, train, test, cpu, path, val=shifted)
    epochs = result.record["epochs"]
    assert result.record["final"]["best_val_epoch"] == 1 and epochs[0]["test_acc"] < epochs[-1]["test_acc"]
    kept = 100.0 * (result.final.predictions == test.labels).double().mean().item()
    assert kept == pytest.approx(epochs[0]["test_acc"], abs=1e-3)
    model = build_model(variant, "fashion-mnist")
    assert read_checkpoint(path, variant, 1, model, chosen=True)["chosen"]["epoch"] == 1
    # A finished run read back by train_run (what --resume does) keeps the same choice.
    again = train_run(variant, 1, cfg, train, test, cpu, path, val=shifted)
    assert torch.equal(again.final.predictions, result.final.predictions)
