"""K seeds of one variant trained as one network: small batches fast on a CPU.

At batch 2 a step of the 28x28 net is almost all per-op overhead (~7 ms, issue 16), so K models
stepped together cost little more than one. The K nets become one: every conv a grouped conv
(groups x K) whose output channels are model 0's, then model 1's, ...; every norm the same layer
over K*C channels with K*G groups, which normalizes each model's channels with that model's
statistics only (bn: per channel; gn, ln = GroupNorm(1, C): per sample and group, and no group
straddles two models; in: per sample and channel). ReLU, max-pool and GAP act per channel; the
classifier is already a 1x1 conv. The input is the K batches side by side along channels, and
the loss is the sum of the K mean losses, so model k's gradient is exactly its own. SGD and
AdamW update elementwise, and make_optimizer groups weight decay by tensor rank, which stacking
keeps, so one update of a fused parameter is K separate updates. Training.step has no
whole-tensor operation (no gradient clipping, no norm of all weights); one added there must be
done per model here, and tests/test_stacked.py, which checks all of this step by step in float64
against Training.step, fails until it is.

Every fused tensor is the K models' tensors concatenated along dim 0 (kernels, biases, norm
scales, running statistics, momentum buffers, Adam moments), so stacking and unstacking a state
dict is one concatenation and one chunk per tensor, and each seed's checkpoint is the one
train_run would have written.
"""

from __future__ import annotations

import copy
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .data import Dataset
from .data.batches import Normalizer, TrainBatches
from .errors import UserError
from .layers import BatchRenorm2d, FilterResponseNorm2d, WSConv2d
from .models import BLOCK_ORDER, build_model, count_params
from .progress import EpochBar
from .storage import save_checkpoint
from .checkpoints import read_checkpoint
from .train import (CHANNELS_LAST, RunResult, TrainConfig, autocast, check_batch, chosen_weights, close_epoch, eval_splits,
                    evaluate, final_metrics, keep_freed_memory, init_weights, make_optimizer, make_schedule, train_run, weights)
from .variants import Variant

# Layers that act on each channel alone, so K models side by side need the very same layer.
PER_CHANNEL = (nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.Identity, nn.Flatten)


class NotStackable(Exception):
    pass


class StackedDropout2d(nn.Module):
    """Dropout2d for K models side by side, model k's mask drawn from generator k exactly as
    Dropout2d draws one alone (bernoulli_(1 - p) on N x C x 1 x 1, divided by 1 - p): seeded
    like a separate run's global stream, it drops the same channels."""

    def __init__(self, p: float, generators: list[torch.Generator]):
        super().__init__()
        self.p, self.generators = p, generators

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        n, c = x.shape[0], x.shape[1] // len(self.generators)
        noise = torch.cat([x.new_empty(n, c, 1, 1).bernoulli_(1 - self.p, generator=g) for g in self.generators], 1)
        return x * noise.div_(1 - self.p)


def widen(layer: nn.Module, k: int, generators: list[torch.Generator]) -> nn.Module:
    """The layer that does ``layer``'s work for K models side by side along channels."""
    kind = type(layer)
    if kind in (nn.Conv2d, WSConv2d):      # WS standardizes each output channel's kernel: a grouped conv's too
        return kind(layer.in_channels * k, layer.out_channels * k, layer.kernel_size, layer.stride, layer.padding,
                    layer.dilation, layer.groups * k, layer.bias is not None, layer.padding_mode)
    if kind in (nn.BatchNorm2d, nn.InstanceNorm2d):
        return kind(layer.num_features * k, layer.eps, layer.momentum, layer.affine, layer.track_running_stats)
    if kind is BatchRenorm2d:              # per channel, and its step count is the same in every model
        return BatchRenorm2d(layer.num_features * k, layer.rmax, layer.dmax, layer.hold, layer.relax, layer.eps,
                             layer.momentum)
    if kind is FilterResponseNorm2d and layer.eps_l is None:     # per sample and channel; a learned eps is per model
        return FilterResponseNorm2d(layer.num_features * k, layer.eps)
    if kind is nn.GroupNorm:
        return nn.GroupNorm(layer.num_groups * k, layer.num_channels * k, layer.eps, layer.affine)
    if kind is nn.Dropout2d and not layer.inplace:
        return StackedDropout2d(layer.p, generators)
    if kind in PER_CHANNEL:
        return copy.deepcopy(layer)
    raise NotStackable(f"{kind.__name__} mixes channels or is not known to stack")


def stack_models(models: list[nn.Module], generators: list[torch.Generator]) -> nn.Module:
    """One network computing ``models`` side by side; its weights are theirs, concatenated."""
    fused = copy.deepcopy(models[0])
    for name, module in list(fused.named_modules()):
        children = list(module.named_children())
        if not children:
            continue
        # A container may only chain its layers: anything else (a residual sum, a concat) is unchecked.
        if not isinstance(module, nn.Sequential) or type(module).forward is not nn.Sequential.forward:
            raise NotStackable(f"{type(module).__name__} {name!r} does more than chain its layers")
        for child_name, child in children:
            if not list(child.children()):
                setattr(module, child_name, widen(child, len(models), generators))
    fused.load_state_dict(join_states([m.state_dict() for m in models]))
    return fused


def join_states(states: list[dict]) -> dict:
    """Per-model state dicts -> the fused one: tensors concatenated along dim 0, scalars
    (num_batches_tracked, Adam's step) shared, as they are equal across the K models."""
    return {key: torch.cat([s[key] for s in states]) if torch.is_tensor(v) and v.ndim else v
            for key, v in states[0].items()}


def split_state(state: dict, k: int) -> list[dict]:
    # clone: a chunk is a view, and torch.save of a view writes the whole K-model storage.
    parts = {key: [c.clone() for c in v.chunk(k)] if torch.is_tensor(v) and v.ndim else [v] * k
             for key, v in state.items()}
    return [{key: p[i] for key, p in parts.items()} for i in range(k)]


@lru_cache(maxsize=None)
def can_stack(variant: Variant, dataset: str = "fashion-mnist") -> bool:
    """Whether every layer of the variant's net has an exactly equivalent stacked form (ln-elem's
    per-element LayerNorm, for one, normalizes over all channels and has none)."""
    try:
        stack_models([build_model(variant, dataset, dropout=0.1)] * 2, [])
    except NotStackable:
        return False
    return True


def optimizer_parts(state: dict, k: int) -> list[dict]:
    per_param = {i: split_state(s, k) for i, s in state["state"].items()}
    return [{"state": {i: parts[m] for i, parts in per_param.items()}, "param_groups": state["param_groups"]}
            for m in range(k)]


class StackedTraining:
    """K seeds of one variant as one model; ``step`` is Training.step for all K at once."""

    def __init__(self, variant: Variant, seeds: list[int], cfg: TrainConfig, device: torch.device,
                 steps_per_epoch: int, channels_last: bool = CHANNELS_LAST):
        self.variant, self.seeds, self.device = variant, list(seeds), device
        keep_freed_memory()
        self.models = []
        for seed in seeds:
            torch.manual_seed(seed)          # train_run's seeding: each model's init is its own run's
            model = build_model(variant, cfg.dataset, cfg.dropout, cfg.model)
            init_weights(model)              # the recipe Training uses (train.py)
            self.models.append(model.to(device))
        self.generators = [torch.Generator(device=device) for _ in seeds]   # dropout masks, per model
        try:
            self.model = stack_models(self.models, self.generators).to(device)
        except NotStackable as exc:
            raise UserError(f"{variant} cannot be trained stacked ({exc})", "train its seeds one at a time") from None
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.models = [m.to(memory_format=torch.channels_last) for m in self.models]
        self.optimizer = make_optimizer(self.model, cfg, models=len(seeds))
        self.schedule = make_schedule(self.optimizer, cfg, steps_per_epoch)
        self.l1_weights = weights(self.model) if variant.l1 else []

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: N x K*C x H x W, y: K x N. Returns each model's mean loss and correct count (K each)."""
        k, n = y.shape
        with autocast(self.device):
            logits = self.model(x).view(n, k, -1).transpose(0, 1)          # K x N x classes
            losses = F.cross_entropy(logits.reshape(k * n, -1), y.reshape(-1), reduction="none").view(k, n).mean(1)
        # L1 over the fused kernels is the sum of the K models' L1 terms (same lambda).
        total = losses.sum() + self.variant.l1 * sum(w.abs().sum() for w in self.l1_weights)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.schedule.step()
        return losses.detach(), (logits.argmax(2) == y).sum(1)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def unstack(self) -> list[dict]:
        """Each seed's part, as Training.state_dict gives it; also loaded into ``self.models``."""
        k = len(self.seeds)
        models = split_state(self.model.state_dict(), k)
        for model, state in zip(self.models, models):
            model.load_state_dict(state)
        optimizers = optimizer_parts(self.optimizer.state_dict(), k)
        schedule = self.schedule.state_dict()
        return [{"model": m, "optimizer": o, "schedule": schedule} for m, o in zip(models, optimizers)]

    def load_state_dicts(self, saved: list[dict]) -> None:
        self.model.load_state_dict(join_states([s["model"] for s in saved]))
        states = [s["optimizer"]["state"] for s in saved]
        self.optimizer.load_state_dict({"state": {i: join_states([s[i] for s in states]) for i in states[0]},
                                        "param_groups": saved[0]["optimizer"]["param_groups"]})
        self.schedule.load_state_dict(saved[0]["schedule"])


def stacked_epoch(batches: TrainBatches, generators: list[torch.Generator]):
    """The K models' batches side by side, model k's being what ``batches.epoch(generators[k])``
    yields for it alone, gathered for all K in one go: x is N x K*C x H x W, y is K x N."""
    k = len(generators)
    for plans in zip(*(batches.plan(g) for g in generators)):
        index, shift, flip = ([p[i] for p in plans] for i in range(3))
        x = batches.normalize(batches.crop_and_flip(
            torch.cat(index), None if shift[0] is None else torch.cat(shift, 1), None if flip[0] is None else torch.cat(flip)))
        n = len(index[0])
        x = x.view(k, n, *x.shape[1:]).transpose(0, 1).reshape(n, -1, *x.shape[2:])
        yield x.contiguous(memory_format=batches.normalize.memory_format), batches.labels[torch.cat(index)].view(k, n)


def train_stack(variant: Variant, seeds: list[int], cfg: TrainConfig, train: Dataset, test: Dataset,
                device: torch.device, checkpoints: list[Path] | None = None,
                on_epoch: Callable[[dict], None] | None = None, val: Dataset | None = None) -> list[RunResult]:
    """train_run for several seeds at once: one RunResult per seed, in ``seeds`` order, with the
    records, checkpoints (``checkpoints[i]`` for ``seeds[i]``, train_run's format) and final
    evaluations train_run gives. ``on_epoch`` gets each seed's record after each epoch (its
    "seed" says which). A record's "seconds" is its share of the stacked training time plus its
    own evaluation. Checkpoints at different epochs (a kill between two seeds' saves) resume
    one at a time through train_run."""
    check_batch(variant, cfg.batch_size, len(train))
    k = len(seeds)
    saved = [read_checkpoint(p, variant, s) for p, s in zip(checkpoints, seeds) if p.exists()] if checkpoints else []
    if saved and (len(saved) < k or len({len(s["epochs"]) for s in saved}) > 1):
        extra = {"val": val} if val is not None else {}
        return [train_run(variant, s, cfg, train, test, device, p, on_epoch, **extra) for s, p in zip(seeds, checkpoints)]
    channels_last = CHANNELS_LAST and not narrow_groups(variant, cfg.dataset, cfg.model)
    normalizer = Normalizer(train.info, device, channels_last)
    batches = TrainBatches(train.images.to(device), train.labels.to(device), train.info, cfg.batch_size, normalizer, pad=cfg.pad)
    splits = eval_splits(test, val, device)
    training = StackedTraining(variant, seeds, cfg, device, len(batches), channels_last)
    if saved:
        try:
            training.load_state_dicts(saved)
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"checkpoints {', '.join(map(str, checkpoints))} do not fit {variant} "
                            f"({str(exc).splitlines()[0][:200]})", "delete them to retrain that variant") from None
    records = [{"variant": str(variant), "seed": seed, "params": count_params(model), "stacked": k,
                "status": s["status"] if saved else "running", "epochs": s["epochs"] if saved else [],
                "seconds": sum(e["seconds"] for e in s["epochs"]) if saved else 0.0}
               for seed, model, s in zip(seeds, training.models, saved or [{}] * k)]
    chosen = [s.get("chosen") for s in saved] if saved else [None] * k
    batch_generators = [torch.Generator(device=device) for _ in seeds]
    name = f"{variant} seeds {','.join(map(str, seeds))}"

    for epoch in range(len(records[0]["epochs"]) + 1, cfg.epochs + 1):
        running = [i for i, r in enumerate(records) if r["status"] == "running"]
        if not running:
            break
        started = time.perf_counter()
        for seed, g, d in zip(seeds, batch_generators, training.generators):
            g.manual_seed(seed * 1_000_003 + epoch)      # train_run's (seed, epoch) streams
            d.manual_seed(seed * 1_000_003 + epoch)
        training.model.train()
        loss_sum = torch.zeros(k, device=device)
        correct = torch.zeros(k, device=device, dtype=torch.long)
        bar = EpochBar(name, epoch, cfg.epochs, len(batches))
        for step, (x, y) in enumerate(stacked_epoch(batches, batch_generators), 1):
            loss, right = training.step(x, y)
            loss_sum += loss * cfg.batch_size
            correct += right
            bar.update(step, loss_sum.sum(), correct.sum(), step * cfg.batch_size * k)
        seen = len(batches) * cfg.batch_size
        parts = training.unstack()
        share = (time.perf_counter() - started) / k
        for i in running:
            started = time.perf_counter()
            record = records[i]
            entry, _ = close_epoch(training.models[i], splits, normalizer, epoch, loss_sum[i].item() / seen,
                                   100.0 * correct[i].item() / seen, training.lr)
            if entry is not None:
                record["epochs"].append({**entry, "seconds": round(share + time.perf_counter() - started, 3)})
                chosen[i] = chosen_weights(record["epochs"], parts[i]["model"], chosen[i])
                record["status"] = "done" if epoch == cfg.epochs else "running"
            else:
                record["status"] = f"diverged at epoch {epoch}"    # this seed stops; the others go on
            record.update(final_metrics(record["epochs"]),
                          seconds=round(record["seconds"] + share + time.perf_counter() - started, 3))
            if checkpoints:
                save_checkpoint(checkpoints[i], {**parts[i], "epochs": record["epochs"], "status": record["status"],
                                                 "variant": str(variant), "seed": seeds[i],
                                                 "block": BLOCK_ORDER, **({"chosen": chosen[i]} if chosen[i] else {})})
            if on_epoch is not None:
                on_epoch(record)
        bar.close("  ".join(f"seed {seeds[i]}: " + (f"test acc {records[i]['epochs'][-1]['test_acc']:5.2f}%"
                                                   if records[i]["status"] in ("running", "done") else records[i]["status"])
                            for i in running))

    training.unstack()
    test_images, test_labels = splits["test"]
    for model, record, kept in zip(training.models, records, chosen):
        if kept and record["status"] == "done":
            model.load_state_dict(kept["model"])         # as train_run: the model validation chose
    return [RunResult(record, model, evaluate(model, test_images, test_labels, normalizer, keep_predictions=True)
                      if record["status"] == "done" else None)
            for record, model in zip(records, training.models)]


# Models trained per second, K stacked over one at a time, both on 1 intra-op thread, paths taking
# turns in one process (benchmarks/small_batch.py; results/20261123-1512-small-batch.json, 28x28
# net, 2 shared cores at load average 11-13, so read the ratios, not the rates):
#   batch  bn K=4/8/16       ln K=4/8/16       gn:4 K=4/8/16
#     2    2.08 3.18 3.60    2.26 3.49 4.03    2.16 2.90 3.44
#     8    1.56 1.93 1.70    1.50 1.56 1.82    1.60 1.66 1.66
#    16    1.57 1.26  -      1.35 1.26  -      1.31 1.27  -     (results/20261123-1527-small-batch.json)
#    32    1.17 1.08 0.85    0.92 0.83 0.89    1.06 1.01 1.12
#   128    0.88 0.65 0.57    0.83 0.70 0.55    0.94 0.99 0.88
# At batch 2 a step is mostly per-op overhead, which K models share; as the batch grows the
# convolutions take over (at batch 8, K=8, ~60% of a stacked step in a profile), stacking gains
# less, only bn still gains at 32, and nothing does at 128. Runs moved ratios by about +-0.2.
# From batch 8 on a stack runs at 37-45 GFLOP/s, about the most this net's convolutions reach on
# one core at any batch size (benchmarks/RESULTS.md, "Why batch 8 stops short of 3x").
# torch.compile gained nothing (0.8-1.1x) and is not used. GPU: not measured, one at a time.
#
# A stack's memory format (benchmarks/small_batch.py --nchw-stacks, results/20261207-1727-small-
# batch-nchw-stacks.json, and two earlier runs of the same alternation, results/20261207-1650-
# stack-memory-format.json; 1 thread, load average 0.0-1.0): with few channels per group,
# PyTorch's CPU GroupNorm is slow in channels_last (not profiled further), and a stack has K
# times the groups. Stacks in NCHW against stacks in channels_last, batch 2-32, K as below: gn:4
# (2-8 channels per group) 1.12-1.33x faster, gn:8 (1-4) 1.34-1.68x; gn:2 (4-16) 0.98-1.10x and
# ln (8-32) 0.91-1.11x, no clear gain; bn 0.71-0.94x (its convolutions gain from channels_last). So a stack
# whose net has a GroupNorm of at most NARROW_GROUP channels per group trains in NCHW; in NCHW
# gn:4 and gn:8 gain from stacking at batch 32 too (1.23-1.25x and 1.52-1.59x over one at a time in
# channels_last), so those stack there as bn does. On the CIFAR-10 net (results/20261207-2035-
# small-batch.json) the same holds: NCHW stacks 1.02-1.26x over channels_last ones for gn:4 and
# gn:8, and at batch 32 1.05x (gn:4) and 1.15x (gn:8) over one at a time.
NARROW_GROUP = 2


@lru_cache(maxsize=None)
def narrow_groups(variant: Variant, dataset: str = "fashion-mnist", model: str | None = None) -> bool:
    """Whether the variant's net has a GroupNorm with at most NARROW_GROUP channels per group."""
    net = build_model(variant, dataset, model=model)
    return any(isinstance(m, nn.GroupNorm) and m.num_channels // m.num_groups <= NARROW_GROUP for m in net.modules())


def stack_size(variant: Variant, batch_size: int, device: torch.device, dataset: str = "fashion-mnist",
               model: str | None = None) -> int:
    """How many seeds to train as one network on this device; 1: one at a time. The rule was
    measured on normlab's nets (the 28x28 and the CIFAR-10 one), so a ``--model`` of your own,
    whose layers may not stack at all and whose speed was never measured, trains one at a time."""
    if device.type != "cpu" or model or not can_stack(variant, dataset):
        return 1
    if batch_size <= 4:
        return 16
    if batch_size <= 8:
        return 8
    if batch_size <= 16 or (batch_size <= 32 and (variant.norm == "bn" or narrow_groups(variant, dataset))):
        return 4
    return 1


def plan_stacks(variant: Variant, batch_size: int, seeds: list[int], device: torch.device,
                dataset: str = "fashion-mnist", model: str | None = None) -> list[list[int]]:
    """The seeds split into groups to train together (train_stack) or alone (a group of one)."""
    k = stack_size(variant, batch_size, device, dataset, model)
    return [list(seeds[i:i + k]) for i in range(0, len(seeds), k)]
