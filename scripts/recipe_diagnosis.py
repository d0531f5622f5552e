"""The runs behind docs/recipe.md: one recipe change at a time, same data and seeds, every norm.

    nice .venv/bin/python scripts/recipe_diagnosis.py --recipes baseline,zero-head --norms bn,ln \
        --first 0 --count 4000 --epochs 10 --seeds 1 --out benchmarks/results/recipe.jsonl

Each (recipe, subset, epochs, norm, seed) is one JSON line appended to --out, with the per-step
training loss and train_run's record; lines already there are skipped, so an interrupted
diagnosis picks up where it stopped. A recipe is a set of knobs applied by swapping train.py's
init_weights / make_optimizer / make_schedule for the run (the product code has no such knobs).
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from normlab import models
from normlab.data import Dataset, load_splits
from normlab.data.split import holdout
from normlab.variants import DEFAULT_VARIANTS, Variant, parse_variants

T = importlib.import_module("normlab.train")     # the module: normlab.train is the library function

# knob -> value, one change from "baseline": the recipe before docs/recipe.md (PyTorch's default
# init, SGD + Nesterov, one-cycle to 0.1 with 25% warm-up, weight decay 5e-4 on every kernel).
# "kaiming+lars-0.1" is the recipe train.py now uses; "current" runs train.py as it is.
RECIPES = {
    "baseline": {},
    "current": {"init": "current"},
    "current+momentum-0.9": {"init": "current", "momentum": 0.9},
    "zero-head": {"init": "zero-head"},
    "kaiming": {"init": "kaiming"},
    "kaiming+zero-head": {"init": "kaiming+zero-head"},
    "kaiming-normed-only": {"init": "kaiming-normed"},   # which half of kaiming's change matters:
    "kaiming-others-only": {"init": "kaiming-others"},   # the scale-invariant kernels, or the rest
    "normed-x4": {"init": "normed-x4"},           # default init, scale-invariant kernels 4x: effective lr / 16
    "normed-x2": {"init": "normed-x2"},
    "kaiming+centered": {"init": "kaiming+centered"},
    "batch-32": {"batch_size": 32},               # 4x the steps per epoch
    "kaiming+batch-32": {"init": "kaiming", "batch_size": 32},
    "adamw-lr0.01": {"optimizer": "adamw", "lr": 0.01},
    "kaiming+lr-0.2": {"init": "kaiming", "lr": 0.2},
    "kaiming+lr-0.05": {"init": "kaiming", "lr": 0.05},
    "centered-init": {"init": "centered"},       # zero-mean filters: no per-channel offset for ln/gn to keep
    "warmup-10%": {"pct": 0.10},
    "warmup-50%": {"pct": 0.50},
    "start-lr/100": {"div": 100.0},               # OneCycle starts at peak/div; default div 25
    "start-lr/5": {"div": 5.0},
    "no-wd-on-normed": {"wd_normed": 0.0},        # kernels right before a norm: scale-invariant
    "wd-5e-5": {"weight_decay": 5e-5},
    "wd-5e-3": {"weight_decay": 5e-3},
    "lr-0.02": {"lr": 0.02},
    "lr-0.05": {"lr": 0.05},
    "lr-0.2": {"lr": 0.2},
    "adamw": {"optimizer": "adamw"},
    "adamw-wd0.05": {"optimizer": "adamw", "weight_decay": 0.05},
    "kaiming+adamw": {"init": "kaiming", "optimizer": "adamw"},
    # On top of He init (the default since docs/recipe.md's first round), one change each:
    "kaiming+warmup-10%": {"init": "kaiming", "pct": 0.10},
    "kaiming+warmup-40%": {"init": "kaiming", "pct": 0.40},
    "kaiming+start-lr/5": {"init": "kaiming", "div": 5.0},
    "kaiming+lr-0.03": {"init": "kaiming", "lr": 0.03},
    "kaiming+wd-5e-3": {"init": "kaiming", "weight_decay": 5e-3},
    "kaiming+wd-0": {"init": "kaiming", "weight_decay": 0.0},
    # OneCycleLR cycles SGD's momentum 0.95 -> 0.85 -> 0.95 by itself (cycle_momentum), whatever
    # TrainConfig.momentum says; these hold it flat at the value named.
    "kaiming+momentum-0.8": {"init": "kaiming", "momentum": 0.8},
    "kaiming+momentum-0.9": {"init": "kaiming", "momentum": 0.9},
    "kaiming+momentum-0.95": {"init": "kaiming", "momentum": 0.95},
    "kaiming+clip-1": {"init": "kaiming", "clip": 1.0},               # gradient norm (all parameters) clipped to 1
    "kaiming+clip-0.5": {"init": "kaiming", "clip": 0.5},
    "kaiming+no-nesterov": {"init": "kaiming", "nesterov": False},
    "kaiming+smooth-0.1": {"init": "kaiming", "smoothing": 0.1},
    "kaiming+head-lr-x10": {"init": "kaiming", "head_lr": 10.0},     # classifier 1x1 conv: 10x the lr
    "kaiming+affine-lr-x10": {"init": "kaiming", "affine_lr": 10.0}, # norm scales/shifts (and biases): 10x
    "kaiming+head-x3": {"init": "kaiming+head-x3"},                  # classifier init 3x larger
    "kaiming+lars-0.1": {"init": "kaiming", "lars": 0.1},            # every kernel's gradient rescaled to 0.1 |w|
    "kaiming+lars-0.03": {"init": "kaiming", "lars": 0.03},
    "kaiming+lars-0.3": {"init": "kaiming", "lars": 0.3},
    "kaiming+lars-0.1+smooth-0.1": {"init": "kaiming", "lars": 0.1, "smoothing": 0.1},
    "kaiming+lars-0.1+momentum-0.9": {"init": "kaiming", "lars": 0.1, "momentum": 0.9},
    "kaiming+lars-0.1+head-lr-x10": {"init": "kaiming", "lars": 0.1, "head_lr": 10.0},
    "kaiming+lars-0.1+warmup-10%": {"init": "kaiming", "lars": 0.1, "pct": 0.10},
    "kaiming+lars-0.1+batch-64": {"init": "kaiming", "lars": 0.1, "batch_size": 64},
    "kaiming+lars-0.1+batch-32": {"init": "kaiming", "lars": 0.1, "batch_size": 32},
    "kaiming+lars-0.1+lr-0.2": {"init": "kaiming", "lars": 0.1, "lr": 0.2},
    # The order inside the conv blocks (models.ConvBlock; docs/recipe.md, "Block order"): the current
    # net is conv -> ReLU -> norm, with norm -> ReLU in the last block only for norms that would
    # pool to a constant (in). These force one order in every block.
    "current+conv-norm-relu": {"init": "current", "block": "conv-norm-relu"},   # normlab before 0.2.0
    "current+conv-relu-norm-all": {"init": "current", "block": "conv-relu-norm"},
    # On top of the 0.2.0 net (conv -> ReLU -> norm), one change each:
    "current+lr-0.2": {"init": "current", "lr": 0.2},
    "current+lr-0.05": {"init": "current", "lr": 0.05},
    "current+trust-0.2": {"init": "current", "trust": 0.2},
    "current+trust-0.05": {"init": "current", "trust": 0.05},
    "current+warmup-10%": {"init": "current", "pct": 0.10},
    "current+batch-64": {"init": "current", "batch_size": 64},
    "current+wd-5e-3": {"init": "current", "weight_decay": 5e-3},
}
DEFAULTS = [str(v) for v in parse_variants(DEFAULT_VARIANTS)]     # normlab compare's, as runs name them (gn:4)
CONFIG_KNOBS = ("lr", "optimizer", "weight_decay", "momentum", "batch_size", "trust")


def normed_kernels(model: nn.Module) -> list[nn.Parameter]:
    """Conv kernels whose output goes straight into a norm layer (their scale cannot matter)."""
    return [m.conv.weight for m in model.modules() if hasattr(m, "conv") and hasattr(m, "norm")
            and not isinstance(m.norm, nn.Identity)]


def classifier(model: nn.Module) -> nn.Conv2d:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]


@contextmanager
def recipe(knobs: dict):
    original = T.init_weights, T.make_optimizer, T.make_schedule

    def init_weights(model):
        kind = knobs.get("init", "torch")
        if kind == "current":
            return original[0](model)
        if kind == "torch":
            return None                            # build_model's layers keep PyTorch's init
        if "kaiming" in kind:
            normed = {id(w) for w in normed_kernels(model)}
            for m in model.modules():
                if isinstance(m, nn.Conv2d) and not (kind == "kaiming-normed" and id(m.weight) not in normed) \
                        and not (kind == "kaiming-others" and id(m.weight) in normed):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
        if "centered" in kind:
            for w in normed_kernels(model):
                w.data -= w.data.mean(dim=(1, 2, 3), keepdim=True)
        if kind.startswith("normed-x"):
            for w in normed_kernels(model):
                w.data *= float(kind[len("normed-x"):])
        if kind.endswith("head-x3"):
            classifier(model).weight.data *= 3.0
        if "zero-head" in kind:
            nn.init.zeros_(classifier(model).weight)
            nn.init.zeros_(classifier(model).bias)

    def make_optimizer(model, cfg):
        optimizer = original[1](model, cfg)
        if knobs.get("init") != "current":
            optimizer._optimizer_step_pre_hooks.clear()    # train.py's trust ratio: only with the "lars" knob
        if "wd_normed" in knobs:
            normed = {id(p) for p in normed_kernels(model)}
            decayed = optimizer.param_groups[0]
            moved = [p for p in decayed["params"] if id(p) in normed]
            decayed["params"] = [p for p in decayed["params"] if id(p) not in normed]
            optimizer.add_param_group({"params": moved, "weight_decay": knobs["wd_normed"]})
        head = {id(p) for p in classifier(model).parameters()}
        for knob, chosen in (("head_lr", lambda p: id(p) in head), ("affine_lr", lambda p: p.ndim == 1 and id(p) not in head)):
            if knob in knobs:   # a group of its own, whose peak lr make_schedule multiplies
                for group in list(optimizer.param_groups):
                    moved = [p for p in group["params"] if chosen(p)]
                    group["params"] = [p for p in group["params"] if not chosen(p)]
                    optimizer.add_param_group({**{k: v for k, v in group.items() if k != "params"}, "params": moved,
                                               "lr_mult": knobs[knob]})
        if "nesterov" in knobs:
            for group in optimizer.param_groups:
                group["nesterov"] = knobs["nesterov"]
        if "clip" in knobs:
            parameters = list(model.parameters())
            optimizer.register_step_pre_hook(lambda opt, a, kw: nn.utils.clip_grad_norm_(parameters, knobs["clip"]) and None)
        if "lars" in knobs:     # layer-wise trust ratio: each kernel's step is a set fraction of its norm
            kernels = T.weights(model)

            def rescale(opt, args, kwargs):
                for w in kernels:
                    if w.grad is not None:
                        w.grad.mul_(knobs["lars"] * w.norm() / (w.grad.norm() + 1e-12))
            optimizer.register_step_pre_hook(rescale)
        return optimizer

    def make_schedule(optimizer, cfg, steps_per_epoch):
        if not {"pct", "div", "head_lr", "affine_lr", "momentum"} & knobs.keys():
            return original[2](optimizer, cfg, steps_per_epoch)
        peaks = [cfg.peak_lr * g.get("lr_mult", 1.0) for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=cfg.epochs * steps_per_epoch,
                                                   pct_start=knobs.get("pct", 0.25), div_factor=knobs.get("div", 25.0),
                                                   cycle_momentum="momentum" not in knobs)

    functional = T.F
    if "smoothing" in knobs:    # training loss only: evaluation runs under inference_mode, unsmoothed
        class Smoothed:
            def __getattr__(self, name):
                return getattr(functional, name)

            def cross_entropy(self, logits, y, **kw):
                return functional.cross_entropy(logits, y, label_smoothing=knobs["smoothing"] if torch.is_grad_enabled() else 0.0, **kw)
        T.F = Smoothed()
    block = models.ConvBlock
    if "block" in knobs:
        class OneOrder(block):
            def __init__(self, cin, cout, variant, height, width, dropout, relu_last=False):
                super().__init__(cin, cout, variant, height, width, dropout, relu_last=knobs["block"] == "conv-norm-relu")
        models.ConvBlock = OneOrder
    T.init_weights, T.make_optimizer, T.make_schedule = init_weights, make_optimizer, make_schedule
    try:
        yield
    finally:
        T.init_weights, T.make_optimizer, T.make_schedule = original
        T.F = functional
        models.ConvBlock = block


def subset(data: Dataset, first: int, count: int) -> Dataset:
    return replace(data, images=data.images[first:first + count], labels=data.labels[first:first + count])


def read_lines(paths: list[Path]) -> list[dict]:
    return [json.loads(line) for path in paths if path.exists() for line in path.read_text().splitlines()]


def table(lines: list[dict]) -> str:
    """Markdown: one row per (subset, recipe, seed), test accuracy at the best-validation epoch
    per norm (the number normlab reports; the final epoch for runs before the split), the spread
    of the default variants run (best minus worst of bn, bn+l1, gn:4, ln: the issue's target; in
    is not a default), and ln's mean training loss in epoch 1."""
    norms = list(dict.fromkeys(r["norm"] for r in lines))
    groups: dict = {}
    for r in lines:
        groups.setdefault((r["first"], r["count"], r["epochs"], r["test_size"], r["recipe"], r["seed"]), {}).setdefault(r["norm"], []).append(r)
    rows = [f"| subset | recipe | seeds | {' | '.join(norms)} | spread of defaults | ln epoch-1 train loss |", "|" + " --- |" * (len(norms) + 5)]
    for (first, count, epochs, test_size, name, _), by_norm in groups.items():
        acc = {n: sum(r["final"].get("test_acc_at_best_val", r["final"]["test_acc"]) for r in rs) / len(rs) for n, rs in by_norm.items() if all(r["final"] for r in rs)}
        seeds = sorted({r["seed"] for rs in by_norm.values() for r in rs})
        ln1 = [r["epochs_record"][0]["train_loss"] for r in by_norm.get("ln", []) if r["epochs_record"]]
        defaults = [acc[n] for n in DEFAULTS if n in acc]
        rows.append(f"| {first}-{first + count}, {epochs} ep, {test_size:,} test | {name} | {','.join(map(str, seeds))} | "
                    + " | ".join(f"{acc[n]:.2f}" if n in acc else "-" for n in norms)
                    + (f" | {max(defaults) - min(defaults):.2f} | " if len(defaults) > 1 else " | - | ") + (f"{sum(ln1) / len(ln1):.3f}" if ln1 else "-") + " |")
    return "\n".join(rows)


TITLES = {"baseline": "old recipe", "kaiming": "He init", "kaiming+lars-0.1": "He init + trust ratio",
          "current": "0.2.0: and conv -> ReLU -> norm"}


def figure(lines: list[dict], recipes: list[str], out: Path, epochs: int = 3) -> None:
    """Training loss per step over the first epochs, per norm: the old recipe beside the new ones."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(recipes), figsize=(5 * len(recipes), 3.6), sharey=True)
    colors = dict(zip(("bn", "bn+l1", "ln", "gn:4"), ("tab:green", "tab:olive", "tab:blue", "tab:orange")))
    for ax, name in zip(axes, recipes):
        for r in lines:
            if (r["recipe"] == name and r["norm"] in colors and r["seed"] == 1 and r["first"] == 0
                    and r["count"] == 4000 and r["epochs"] == 10):
                n = len(r["step_loss"]) * epochs // r["epochs"]
                ax.plot([i / (n / epochs) for i in range(1, n + 1)], r["step_loss"][:n], label=r["norm"], lw=1,
                        color=colors[r["norm"]])
        ax.axhline(2.3026, color="grey", ls=":", lw=1)
        ax.set(title=TITLES.get(name, f"recipe: {name}"), xlabel="epoch")
        ax.legend()
    axes[0].set_ylabel("training loss (per step)")
    fig.suptitle("Fashion-MNIST, first 4,000 training images (3,600 after the validation split), seed 1; dotted: chance")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", nargs="*", type=Path, help="print the results table of these JSONL files and stop")
    p.add_argument("--figure", nargs="+", metavar="PNG RECIPE", help="with --table's files: draw the figure (PNG, then the recipes)")
    p.add_argument("--recipes", default="baseline")
    p.add_argument("--norms", default="bn,ln,gn:4,bn+l1")
    p.add_argument("--seeds", default="1")
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--count", type=int, default=4000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/recipe.jsonl"))
    args = p.parse_args()
    if args.table is not None:
        lines = read_lines(args.table)
        if args.figure:
            return figure(lines, args.figure[1:], Path(args.figure[0]))
        return print(table(lines))
    torch.set_num_threads(args.threads)
    full_train, test = load_splits("fashion-mnist")
    if args.test_limit:
        test = subset(test, 0, args.test_limit)
    train, val, split = holdout(subset(full_train, args.first, args.count))
    done = set()
    if args.out.exists():
        done = {(r["recipe"], r["first"], r["count"], r["epochs"], r["norm"], r["seed"])
                for r in map(json.loads, args.out.read_text().splitlines())}
    for name in args.recipes.split(","):
        knobs = RECIPES[name]
        for seed in map(int, args.seeds.split(",")):
            for norm in args.norms.split(","):
                key = (name, args.first, args.count, args.epochs, norm, seed)
                if key in done:
                    continue
                cfg = T.TrainConfig(epochs=args.epochs, seed=seed, **{k: v for k, v in knobs.items() if k in CONFIG_KNOBS})
                steps = []
                step = T.Training.step

                def logged(self, x, y):
                    loss, right = step(self, x, y)
                    steps.append(round(loss.item(), 4))
                    return loss, right

                started = time.perf_counter()
                with recipe(knobs):
                    T.Training.step = logged
                    try:
                        outcome = T.train_run(Variant.parse(norm), seed, cfg, train, test, torch.device("cpu"), val=val)
                    finally:
                        T.Training.step = step
                line = {"recipe": name, "knobs": knobs, "first": args.first, "count": args.count, "epochs": args.epochs,
                        "norm": norm, "seed": seed, "split": split, "test_size": len(test), "step_loss": steps,
                        "final": outcome.record.get("final"), "status": outcome.record["status"],
                        "epochs_record": outcome.record["epochs"], "wall_s": round(time.perf_counter() - started, 1)}
                with args.out.open("a") as f:
                    f.write(json.dumps(line) + "\n")
                final = line["final"] or {}
                print(f"{name:18s} {norm:6s} seed {seed}: test {final.get('test_acc')}  val {final.get('val_acc')}  "
                      f"loss ep1 {outcome.record['epochs'][0]['train_loss'] if outcome.record['epochs'] else None}  "
                      f"{line['wall_s']}s", flush=True)


if __name__ == "__main__":
    main()
