"""The training loop: one variant, one seed, every epoch checkpointed.

    for epoch in epochs:
        for x, y in batches:   loss = CE(model(x), y) + l1 * sum|w|;  step
        evaluate on the validation split and the test set;  checkpoint;  report the epoch

Everything a resumed run needs (weights, optimizer, schedule, history) is in the checkpoint;
the random streams are re-seeded from (seed, epoch) at the start of each epoch, so an epoch
replayed after a kill draws exactly the same batches, crops and dropout masks.
"""

from __future__ import annotations

import ctypes
import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .data import Dataset
from .data.batches import EVAL_BATCH, Normalizer, TrainBatches, eval_batches
from .checkpoints import read_checkpoint
from .config import ONECYCLE_MIN_STEPS, TrainConfig
from .errors import UserError
from .models import BLOCK_ORDER, build_model, count_params
from .progress import EpochBar
from .storage import save_checkpoint
from .variants import Variant

# The settings that shape optimization: variants compared under different values of these are
# compared partly on those values, and the report must say so (issue 11, item 4).
RECIPE_FIELDS = ("optimizer", "lr", "momentum", "weight_decay", "trust", "schedule", "epochs", "batch_size", "dropout", "pad")


def recipe_note(configs: dict[str, dict], tuned: dict[str, str] | None = None) -> str:
    """The sentence the report's findings carry about how fairly the variants were trained.

    ``configs``: variant -> its TrainConfig as a dict; ``tuned``: variant -> how its settings
    were chosen (e.g. "lr 0.02 chosen from 0.005-0.2 by validation accuracy after 3 epochs"),
    for the variants whose settings were searched. A ranking is only stated without a caveat
    when every variant ran the same recipe, or every variant had the same search."""
    tuned = tuned or {}
    differing = [f for f in RECIPE_FIELDS if len({repr(c.get(f)) for c in configs.values()}) > 1]
    if tuned and set(tuned) != set(configs):
        return (f"Settings were tuned for {', '.join(sorted(tuned))} only ({'; '.join(f'{v}: {t}' for v, t in tuned.items())}); "
                "the others ran the default recipe, so the ranking favours the tuned variants.")
    if tuned:
        return "Each variant's settings were chosen by the same search on the validation split: " + "; ".join(
            f"{v}: {t}" for v, t in tuned.items()) + "."
    if differing:
        return (f"The variants were trained with different {', '.join(differing)}: the ranking reflects those "
                "settings as well as the normalization.")
    return ("Every variant ran the same recipe (docs/recipe.md), none tuned for one variant; the best epoch "
            "and every other choice were made on the validation split, not the test set. A variant that needs "
            "another learning rate may rank lower for that reason alone (`--lr auto` searches one per variant).")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but PyTorch sees no CUDA GPU here", "use --device cpu or --device auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"unknown device {name!r}", "use auto, cpu or cuda")
    return torch.device(name)


def check_batch(variant: Variant, batch_size: int, train_size: int) -> None:
    if variant.depends_on_batch and batch_size < 2:
        raise UserError(
            f"batch size {batch_size} with {variant}: BatchNorm needs at least 2 samples to compute a variance",
            "use --batch-size 2 or more, or a norm that does not use the batch (gn, ln, in)",
        )
    if batch_size > train_size:
        raise UserError(f"batch size {batch_size} exceeds the {train_size} training images", f"use --batch-size {train_size} or less")


def weights(model: nn.Module) -> list[nn.Parameter]:
    """Conv kernels: what weight decay and L1 act on (not biases or norm scales, which set the
    scale normalization exists to control)."""
    return [p for p in model.parameters() if p.ndim > 1]


def init_weights(model: nn.Module) -> None:
    """He initialization (normal, fan-in, ReLU gain) of every conv and linear kernel; biases zero.

    PyTorch's default draws kernels 2.4x smaller. Before a norm a kernel's scale does not change
    what the net computes, only its effective step (lr / |w|^2): with the default, ln and gn:4
    took steps of 5% of a kernel per update near the one-cycle peak, lost channels and fell back
    towards chance loss after epoch 2. Measured on 3,600 Fashion-MNIST images, 10 epochs, seed 1
    (test accuracy on the first 2,000 test images; docs/recipe.md, also a second seed and subset),
    with the pre-0.2 block order: ln 60.1 -> 75.1%, gn:4 56.5 -> 78.3%, bn 83.9 -> 84.3%."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def make_optimizer(model: nn.Module, cfg: TrainConfig, models: int = 1) -> torch.optim.Optimizer:
    """``models``: how many models each parameter holds along dim 0 (stacked.py trains K as one);
    the trust ratio below is then each model's own."""
    kernel_ids = {id(p) for p in weights(model)}
    groups = [
        {"params": [p for p in model.parameters() if id(p) in kernel_ids], "weight_decay": cfg.weight_decay},
        {"params": [p for p in model.parameters() if id(p) not in kernel_ids], "weight_decay": 0.0},
    ]
    # foreach: one multi-tensor kernel per update instead of one per parameter; PyTorch picks it
    # by itself only on CUDA, and on this CPU it cuts the SGD step from 0.89 to 0.24 ms.
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.peak_lr, betas=(cfg.momentum, 0.999), foreach=True)
    sgd = torch.optim.SGD(groups, lr=cfg.peak_lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, foreach=True)
    if cfg.trust_used > 0:
        sgd.register_step_pre_hook(trust_ratio(groups[0]["params"], models, cfg.trust_used))
    return sgd


# Every kernel's gradient is rescaled to config.TRUST times the kernel's norm before the SGD step (a
# LARS-style layer-wise trust ratio): the lr then sets each layer's step relative to its size,
# the same for the first block as for the last. With raw gradients an ln net's last blocks moved
# 4x faster than its first (relative to their size) and broke down near the one-cycle peak: at 20
# epochs on 3,600 Fashion-MNIST images ln fell to chance at epoch 8 and ended at 51.9% (bn 85.9);
# with the trust ratio it ends at 85.6% (bn 87.7, gn:4 84.8: within 3 points; images 20,000-
# 24,000: within 2.2; seed 2: 4.6 apart). At 10 epochs, test accuracy on the first 2,000 test images
# (docs/recipe.md), He init without -> with: seed 1 ln 75.1 -> 78.0, gn:4 78.3 -> 81.0,
# bn 84.3 -> 84.3, bn+l1 83.2 -> 85.6; seed 2 and images 20,000-24,000 gain 1-8 points for every
# norm. TRUST 0.03 and 0.3 gave ln 76.6 and 77.4 (seed 1). At small batches it costs every norm,
# so by default it is on from batch 32 only (TrainConfig.trust_used says why, with the numbers).
# All measured with the pre-0.2 block order (conv -> norm -> ReLU; models.ConvBlock).


def trust_ratio(kernels: list[nn.Parameter], models: int, trust: float):
    """The SGD step pre-hook that rescales each kernel's gradient to trust * |kernel| (with
    ``models`` > 1, each model's slice of a stacked kernel by its own norms)."""
    @torch.no_grad()
    def rescale(optimizer, args, kwargs) -> None:
        moving = [w for w in kernels if w.grad is not None]
        if not moving:
            return
        grads = [w.grad for w in moving]
        if models == 1:
            ratios = [trust * w / (g + 1e-12) for w, g in zip(torch._foreach_norm(moving), torch._foreach_norm(grads))]
            torch._foreach_mul_(grads, ratios)
            return
        for w, g in zip(moving, grads):       # model k's slice is [k * n / models, (k + 1) * n / models) of dim 0
            ratio = trust * w.reshape(models, -1).norm(dim=1) / (g.reshape(models, -1).norm(dim=1) + 1e-12)
            g.mul_(ratio.repeat_interleave(len(g) // models).view(-1, *[1] * (g.ndim - 1)))
    return rescale


def make_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle" and total >= ONECYCLE_MIN_STEPS:
        # Warm up for the first 25% of steps, then anneal: fast and forgiving on these small nets.
        # At least 2 warm-up steps: with fewer, OneCycleLR divides by zero (e.g. 4 steps in all).
        # Its momentum cycle is TrainConfig.momentum_cycle's: PyTorch's fixed 0.85-0.95 would
        # overwrite --momentum every step.
        cycle = cfg.momentum_cycle()
        high, low = cycle or (cfg.momentum, cfg.momentum)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.peak_lr, total_steps=total,
                                                   pct_start=max(0.25, 2 / total), cycle_momentum=cycle is not None,
                                                   base_momentum=low, max_momentum=high)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


@dataclass
class Evaluation:
    loss: float
    accuracy: float                    # percent
    predictions: torch.Tensor | None = None
    confidences: torch.Tensor | None = None


@torch.inference_mode()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, normalizer: Normalizer,
             keep_predictions: bool = False, batch_size: int = EVAL_BATCH) -> Evaluation:
    model.eval()
    loss_sum = torch.zeros((), device=labels.device)
    correct = torch.zeros((), device=labels.device, dtype=torch.long)
    predictions, confidences = [], []
    for x, y in eval_batches(images, labels, normalizer, batch_size):
        with autocast(labels.device):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        conf, pred = logits.softmax(1).max(1)
        correct += (pred == y).sum()
        if keep_predictions:
            predictions.append(pred)
            confidences.append(conf)
    n = len(labels)
    result = Evaluation(loss_sum.item() / n, 100.0 * correct.item() / n)
    if keep_predictions:
        result.predictions = torch.cat(predictions).cpu()
        result.confidences = torch.cat(confidences).cpu()
    return result


def autocast(device: torch.device):
    # bf16 on CUDA halves memory traffic and uses tensor cores; fp32 on CPU, where bf16 is slower
    # on most machines. bf16 needs no loss scaling.
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def final_metrics(epochs: list[dict]) -> dict:
    """The record's "final" entry, kept current after every epoch: a run killed or diverged
    after epoch k reports epoch k's numbers, in results.json as well as on the screen.

    The best epoch is chosen by validation accuracy (ties: the lower validation loss, then the
    earlier epoch), never by the test set; without a validation split it is the last epoch."""
    if not epochs:
        return {}
    last = epochs[-1]
    final = {"test_acc": last["test_acc"], "test_loss": last["test_loss"],
             "train_acc": last["train_acc"], "train_loss": last["train_loss"]}
    if "val_acc" in last:
        best = max(epochs, key=lambda e: (e["val_acc"], -e["val_loss"], -e["epoch"]))
        final.update(best_val_epoch=best["epoch"], val_acc=best["val_acc"], chosen_by="val_acc")
    else:
        best = last
        final.update(best_val_epoch=best["epoch"], chosen_by="last epoch: no validation split")
    final["test_acc_at_best_val"] = best["test_acc"]
    return {"final": final}


def chosen_weights(epochs: list[dict], weights: dict, chosen: dict | None) -> dict | None:
    """The checkpoint's "chosen" entry after an epoch: these weights when validation chose this
    epoch (final_metrics), else the weights kept before. The report's grids and Run.predict use
    the model whose accuracy the report gives, not the last epoch's."""
    best = final_metrics(epochs).get("final", {}).get("best_val_epoch")
    if best == epochs[-1]["epoch"]:
        return {"epoch": best, "model": {k: v.detach().clone() for k, v in weights.items()}}
    return chosen


# channels_last (NHWC) lets oneDNN on CPU and cuDNN on GPU run the convolutions without
# reordering every activation; measured on the 2-core CPU it is faster for bn, ln and gn alike
# (benchmarks/RESULTS.md), so one layout serves every variant.
CHANNELS_LAST = True


# glibc's malloc hands freed memory at the top of its heap back to the kernel once more than its
# trim threshold is free, and faults it in again for the next batch: evaluating 2,000 images in
# batches of 256 faulted 48,000-62,000 pages per pass without this and under 500 with it
# (tests/test_fast_path.py; benchmarks/page_faults.py times whole runs). A process then keeps its
# peak memory (a few hundred MB here) until it exits. Set in every process that trains; without
# glibc nothing changes.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


@functools.cache
def keep_freed_memory() -> bool:
    """mallopt: never trim the heap, and serve blocks up to 32 MB (glibc's most) from it; True where it took."""
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) and libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20))
    except (OSError, AttributeError):
        return False


class Training:
    """A model being trained: weights, optimizer, schedule, and the step that moves them.

    `train_run` and `normlab bench` both call this `step`, so the benchmark times the very
    code a run executes.
    """

    def __init__(self, variant: Variant, cfg: TrainConfig, device: torch.device, steps_per_epoch: int,
                 channels_last: bool = CHANNELS_LAST):
        self.variant, self.device = variant, device
        keep_freed_memory()
        self.model = build_model(variant, cfg.dataset, cfg.dropout, cfg.model).to(device)
        init_weights(self.model)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model, cfg)
        self.schedule = make_schedule(self.optimizer, cfg, steps_per_epoch)
        self.l1_weights = weights(self.model) if variant.l1 else []

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step; returns the batch's mean loss and correct count, left on the device
        (reading a number back every step would stall a GPU)."""
        with autocast(self.device):
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
        total = loss + self.variant.l1 * sum(w.abs().sum() for w in self.l1_weights) if self.l1_weights else loss
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.schedule.step()
        return loss.detach(), (logits.argmax(1) == y).sum()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict()}

    def load_state_dict(self, saved: dict) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])


@dataclass
class RunResult:
    record: dict                       # the run's entry in results.json
    model: nn.Module
    final: Evaluation | None           # test-set predictions of the finished model


@dataclass
class RunState:
    """What a checkpoint holds besides tensors: the per-epoch records so far."""
    epochs: list[dict] = field(default_factory=list)
    status: str = "running"


def close_epoch(model: nn.Module, splits: dict, normalizer: Normalizer, epoch: int, train_loss: float,
                train_acc: float, lr: float) -> tuple[dict | None, str]:
    """Evaluate an epoch's model on ``splits`` (val first, then test): the epoch's record without
    its seconds, and a summary line; None instead of the record when a loss is not finite."""
    results = {split: evaluate(model, *data, normalizer) for split, data in splits.items()} if math.isfinite(train_loss) else {}
    bad = next((split for split, r in results.items() if not math.isfinite(r.loss)), None)
    if not results or bad is not None:
        return None, f"diverged: mean {'training' if bad is None else bad} loss is {train_loss if bad is None else results[bad].loss}"
    entry = {"epoch": epoch, "train_loss": round(train_loss, 6), "train_acc": round(train_acc, 4)}
    for split, r in results.items():
        entry.update({f"{split}_loss": round(r.loss, 6), f"{split}_acc": round(r.accuracy, 4)})
    summary = f"train loss {train_loss:.4f} acc {train_acc:5.2f}%  " + "".join(
        f"{split} loss {r.loss:.4f} acc {r.accuracy:5.2f}%  " for split, r in results.items())
    return {**entry, "lr": lr}, summary


def eval_splits(test: Dataset, val: Dataset | None, device: torch.device) -> dict:
    """The sets every epoch is evaluated on, on the device: validation first, then test."""
    splits = {"test": (test.images.to(device), test.labels.to(device))}
    return splits if val is None else {"val": (val.images.to(device), val.labels.to(device)), **splits}


def train_run(variant: Variant, seed: int, cfg: TrainConfig, train: Dataset, test: Dataset,
              device: torch.device, checkpoint: Path | None = None,
              on_epoch: Callable[[dict], None] | None = None, label: str | None = None,
              val: Dataset | None = None, channels_last: bool = CHANNELS_LAST) -> RunResult:
    """Train one variant with one seed; evaluate on ``val`` (the held-out split, data.split.holdout)
    and on the test set after every epoch.

    With ``checkpoint`` set, state is saved there after every epoch, and a run that finds a
    checkpoint of an unfinished run continues from its last finished epoch. ``channels_last``: the
    memory format (NCHW only for benchmarks/small_batch.py --whole-layouts).
    """
    check_batch(variant, cfg.batch_size, len(train))
    normalizer = Normalizer(train.info, device, channels_last)
    train_images, train_labels = train.images.to(device), train.labels.to(device)
    splits = eval_splits(test, val, device)
    batches = TrainBatches(train_images, train_labels, train.info, cfg.batch_size, normalizer, pad=cfg.pad)
    torch.manual_seed(seed)
    training = Training(variant, cfg, device, len(batches), channels_last)
    model = training.model
    state, chosen = RunState(), None
    if checkpoint is not None and checkpoint.exists():
        saved = read_checkpoint(checkpoint, variant, seed, training.model)   # refuses weights that do not fit
        try:
            training.load_state_dict(saved)
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"checkpoint {checkpoint} does not fit {variant} ({str(exc).splitlines()[0][:200]})",
                            "delete it to retrain that variant") from None
        state, chosen = RunState(saved["epochs"], saved["status"]), saved.get("chosen")
    record = {"variant": str(variant), "seed": seed, "params": count_params(model), "status": state.status,
              "seconds": sum(e["seconds"] for e in state.epochs), "epochs": state.epochs}
    generator = torch.Generator(device=device)
    name = label or f"{variant} seed {seed}"

    for epoch in range(len(state.epochs) + 1, cfg.epochs + 1):
        if state.status != "running":
            break
        started = time.perf_counter()
        epoch_seed = seed * 1_000_003 + epoch
        torch.manual_seed(epoch_seed)
        generator.manual_seed(epoch_seed)
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        bar = EpochBar(name, epoch, cfg.epochs, len(batches))
        for step, (x, y) in enumerate(batches.epoch(generator), 1):
            loss, right = training.step(x, y)
            loss_sum += loss * len(y)
            correct += right
            bar.update(step, loss_sum, correct, step * cfg.batch_size)
        seen = len(batches) * cfg.batch_size
        entry, summary = close_epoch(model, splits, normalizer, epoch, loss_sum.item() / seen,
                                     100.0 * correct.item() / seen, training.lr)
        if entry is not None:
            state.epochs.append({**entry, "seconds": round(time.perf_counter() - started, 3)})
            chosen = chosen_weights(state.epochs, model.state_dict(), chosen)
            if epoch == cfg.epochs:
                state.status = "done"
            summary += f"{state.epochs[-1]['seconds']:5.1f}s"
        else:
            state.status = f"diverged at epoch {epoch}"       # this variant stops; the others go on
        record.update(status=state.status, epochs=state.epochs, **final_metrics(state.epochs),
                      seconds=round(record["seconds"] + time.perf_counter() - started, 3))
        if checkpoint is not None:
            save_checkpoint(checkpoint, {**training.state_dict(), "epochs": state.epochs, "status": state.status,
                                         "variant": str(variant), "seed": seed, "block": BLOCK_ORDER,
                                         **({"chosen": chosen} if chosen else {})})
        if on_epoch is not None:
            on_epoch(record)
        bar.close(summary)    # after saving: an epoch on the screen is an epoch on disk

    record.update(final_metrics(state.epochs))
    final = None
    if state.status == "done":
        if chosen:
            model.load_state_dict(chosen["model"])      # training is over: the model validation chose
        final = evaluate(model, *splits["test"], normalizer, keep_predictions=True)
    return RunResult(record, model, final)
