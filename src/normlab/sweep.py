"""A sweep: every (batch size, variant, seed) trained, into one folder, by any executor.

The Group Normalization paper's point is a curve, not a number: BatchNorm's error grows as the
batch shrinks, GroupNorm's does not. A sweep measures that curve on our data. Each cell is an
ordinary normlab training (``train_run``) at one batch size, with the learning rate scaled by a
stated rule; results.json keeps every cell, and sweep.png / sweep.md / sweep.csv are built
from it alone (``normlab report SWEEP_DIR`` rebuilds them).

Learning rate: linear scaling (Goyal et al. 2017, "Accurate, Large Minibatch SGD"): the peak lr
is ``lr_ref * B / 128``, with ``lr_ref`` the peak lr at batch 128 (``--lr``, default 0.1 for
SGD). Every cell trains the same number of epochs, so a smaller batch takes more, smaller steps.

The driver alone writes results.json, after each finished cell; a killed sweep run again with
``--resume`` skips finished cells and continues unfinished ones from their checkpoints.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .data import dataset_info, load_splits
from .errors import UserError
from .executors import Cell, CellResult, LocalExecutor, RayExecutor
from .runs import CHECKPOINTS, RESULTS
from .storage import lock_folder, read_json, remove_leftovers, unlock_folder, write_bytes, write_json
from .train import TrainConfig
from .variants import Variant

REFERENCE_BATCH = 128
LR_SCALINGS = ("linear", "none")
KIND = "sweep"
SWEEP_FILES = (RESULTS, "sweep.csv", "sweep.md", "sweep.png")
FINISHED = "done"
# Settings that change the numbers: a resumed sweep must match them exactly.
RESUME_KEYS = ("dataset", "epochs", "optimizer", "lr", "momentum", "weight_decay", "schedule", "dropout", "seed",
               "seeds", "train_limit", "test_limit", "batch_sizes", "variants", "lr_scaling")


def parse_batch_sizes(text: str) -> list[int]:
    """'2,8,32,128' -> [2, 8, 32, 128]; anything else is a one-line UserError."""
    example = "pass e.g. --batch-sizes 2,8,32,128"
    words = [w.strip() for w in str(text).split(",")]
    if not any(words):
        raise UserError("--batch-sizes is empty", example)
    sizes = []
    for word in words:
        if not word:
            raise UserError(f"--batch-sizes {text!r} has an empty entry", example)
        if not word.isdigit():
            raise UserError(f"batch size {word!r} in --batch-sizes is not a whole number", example)
        size = int(word)
        if size < 1:
            raise UserError(f"batch size {size} in --batch-sizes must be at least 1", example)
        if size in sizes:
            raise UserError(f"batch size {size} is listed twice in --batch-sizes", "list each batch size once")
        sizes.append(size)
    return sorted(sizes)


def scaled_lr(reference_lr: float, batch_size: int, scaling: str) -> float:
    return reference_lr * batch_size / REFERENCE_BATCH if scaling == "linear" else reference_lr


def lr_rule(cfg: TrainConfig, scaling: str) -> str:
    if scaling == "linear":
        return (f"linear scaling: peak lr = {cfg.peak_lr:g} x B / {REFERENCE_BATCH} "
                f"({cfg.peak_lr:g} at batch {REFERENCE_BATCH}; Goyal et al. 2017)")
    return f"no scaling: peak lr {cfg.peak_lr:g} at every batch size"


def cell_key(batch_size: int, variant: Variant, seed: int) -> str:
    return f"b{batch_size}-{variant.slug}-seed{seed}"


@dataclass
class SweepPlan:
    batch_sizes: list[int]
    variants: list[Variant]
    cfg: TrainConfig                   # batch_size is set per cell; lr is the batch-128 reference
    out: Path
    data_dir: str | None = None
    resume: bool = False
    overwrite: bool = False
    lr_scaling: str = "linear"
    executor: object = field(default_factory=LocalExecutor)

    def cells(self) -> list[tuple[int, Variant, int]]:
        return [(b, v, s) for b in self.batch_sizes for v in self.variants for s in self.cfg.seed_list()]


def check_plan(plan: SweepPlan) -> None:
    """Everything that can be refused before reading data or writing files."""
    from .models import build_model
    from .train import resolve_device
    cfg = plan.cfg
    cfg.dataset = dataset_info(cfg.dataset).name
    if not plan.batch_sizes:
        raise UserError("--batch-sizes is empty", "pass e.g. --batch-sizes 2,8,32,128")
    if not plan.variants:
        raise UserError("--norms is empty", "pass e.g. --norms bn,gn,ln")
    if plan.lr_scaling not in LR_SCALINGS:
        raise UserError(f"unknown --lr-scaling {plan.lr_scaling!r}", f"choose one of {', '.join(LR_SCALINGS)}")
    cfg.batch_size = max(plan.batch_sizes)
    cfg.validate()
    if not isinstance(plan.executor, RayExecutor):
        resolve_device(cfg.device)         # a Ray cluster's GPUs need not be visible here
    smallest = min(plan.batch_sizes)
    for variant in plan.variants:
        build_model(variant, cfg.dataset)  # refuses a group count that does not divide the widths
        if variant.depends_on_batch and smallest < 2:
            raise UserError(f"--batch-sizes includes {smallest}, and {variant} needs at least 2 samples per batch "
                            f"to compute a variance", f"drop {smallest} from --batch-sizes or {variant} from --norms")
    check_sizes(plan, min(dataset_info(cfg.dataset).train_size, cfg.train_limit or 10**9))


def check_sizes(plan: SweepPlan, train_size: int) -> None:
    largest = max(plan.batch_sizes)
    if largest > train_size:
        raise UserError(f"batch size {largest} in --batch-sizes exceeds the {train_size} training images",
                        f"use batch sizes up to {train_size} (or more training images: --train-limit)")


def prepare_folder(plan: SweepPlan) -> dict | None:
    """Check the out folder (writing nothing); return the sweep being resumed, if any."""
    out = plan.out
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file", "choose a folder path for --out")
    existing = out / RESULTS
    if existing.exists():
        previous = read_json(existing)
        if not (isinstance(previous, dict) and previous.get("kind") == KIND):
            raise UserError(f"{out} holds a normlab run, not a sweep", "choose another --out for the sweep")
        if plan.resume:
            check_resumable(previous, plan)
            return previous
        if not plan.overwrite:
            raise UserError(f"{out} already holds a sweep",
                            "pass --resume to continue it, --overwrite to replace it, or choose another --out")
        return None
    from .experiment import holds_only_leftovers
    if plan.resume and not (out.is_dir() and holds_only_leftovers(out)):
        raise UserError(f"--resume: {out} holds no sweep to resume", "drop --resume to start a new sweep there")
    if out.is_dir() and not holds_only_leftovers(out) and not plan.overwrite:
        raise UserError(f"{out} is not empty and holds no normlab sweep", "choose a new or empty folder for --out")
    return None


def sweep_config(plan: SweepPlan) -> dict:
    cfg = {k: v for k, v in plan.cfg.to_dict().items() if k != "batch_size"}
    return {**cfg, "batch_sizes": plan.batch_sizes, "variants": [str(v) for v in plan.variants],
            "lr_scaling": plan.lr_scaling, "lr_rule": lr_rule(plan.cfg, plan.lr_scaling),
            "reference_batch": REFERENCE_BATCH, "data_dir": plan.data_dir}


def check_resumable(previous: dict, plan: SweepPlan) -> None:
    saved, cells = previous.get("config"), previous.get("cells")
    if not (isinstance(saved, dict) and isinstance(cells, list)
            and all(isinstance(c, dict) and {"key", "status"} <= c.keys() for c in cells)):
        raise UserError(f"{plan.out / RESULTS} is not a normlab sweep file", "choose the --out folder of a normlab sweep")
    wanted = sweep_config(plan)
    differs = [f"{key} {saved.get(key)!r} -> {wanted[key]!r}" for key in RESUME_KEYS if saved.get(key) != wanted[key]]
    if differs:
        raise UserError(f"{plan.out} was swept with other settings ({'; '.join(differs)})",
                        "resume with the same options, or start a new sweep with another --out")


def open_folder(plan: SweepPlan) -> None:
    out = plan.out
    try:
        (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write to {out} ({exc.strerror})", "make it writable or choose another folder with --out") from None
    lock_folder(out)
    remove_leftovers(out)
    if plan.overwrite and not plan.resume:
        for name in SWEEP_FILES:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
        (out / CHECKPOINTS).mkdir()


def run_sweep(plan: SweepPlan, log=print) -> dict:
    """Train every cell not finished yet; return results (also in ``plan.out``/results.json)."""
    from .experiment import environment, limit
    from .train import check_batch, resolve_device

    check_plan(plan)
    cfg = plan.cfg
    train, test = load_splits(cfg.dataset, plan.data_dir)
    train, test = limit(train, cfg.train_limit), limit(test, cfg.test_limit)
    check_sizes(plan, len(train))
    previous = prepare_folder(plan)
    saved = (previous or {}).get("config", {})
    if previous is not None and (saved.get("train_size"), saved.get("test_size")) != (len(train), len(test)):
        raise UserError(f"{plan.out} was swept on {saved.get('train_size')} training and {saved.get('test_size')} "
                        f"test images, this data has {len(train)} and {len(test)}",
                        "point --data-dir at the data it was run on, or start a new sweep with another --out")
    open_folder(plan)
    out = plan.out
    local = isinstance(plan.executor, LocalExecutor)
    driver_device = resolve_device(cfg.device) if local else resolve_device("cpu")
    results = {
        "normlab": __version__, "kind": KIND, "dataset": cfg.dataset,
        "config": {**sweep_config(plan), "data_source": str(train.source), "train_size": len(train),
                   "test_size": len(test)},
        "executor": plan.executor.describe(),
        **environment(driver_device),
        "started": (previous or {}).get("started") or time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cells": [],
    }
    before = {c["key"]: c for c in (previous or {}).get("cells", [])}
    todo = []
    for batch_size, variant, seed in plan.cells():
        key = cell_key(batch_size, variant, seed)
        record = before.get(key) or {"key": key, "batch_size": batch_size, "variant": str(variant), "seed": seed,
                                     "lr": scaled_lr(cfg.peak_lr, batch_size, plan.lr_scaling),
                                     "status": "pending", "epochs": []}
        results["cells"].append(record)
        if record["status"] == FINISHED or str(record["status"]).startswith("diverged"):
            continue                     # finished: skipped on --resume
        check_batch(variant, batch_size, len(train))
        lr = scaled_lr(cfg.peak_lr, batch_size, plan.lr_scaling)
        cell_cfg = {**cfg.to_dict(), "batch_size": batch_size, "lr": lr, "seeds": 1, "seed": seed}
        checkpoint = out / CHECKPOINTS / f"{key}.pt"
        # Local workers share this disk and checkpoint every epoch in place; a Ray task may run
        # elsewhere: it gets the partial checkpoint, if any, and returns the final one.
        todo.append(Cell(key, str(variant), seed, batch_size, lr, cell_cfg,
                         checkpoint=str(checkpoint) if local else None,
                         resume_from=None if local or not checkpoint.exists() else checkpoint.read_bytes()))
    write_json(out / RESULTS, results)
    total, skipped = len(results["cells"]), len(results["cells"]) - len(todo)
    log(f"sweep: {total} cells ({len(plan.batch_sizes)} batch sizes x {len(plan.variants)} variants x "
        f"{cfg.seeds} seeds), {skipped} already finished, {len(todo)} to train; {lr_rule(cfg, plan.lr_scaling)}")
    index = {c["key"]: i for i, c in enumerate(results["cells"])}
    finished = [skipped]
    started = time.perf_counter()

    def on_result(result: CellResult) -> None:
        if result.checkpoint is not None:
            write_bytes(out / CHECKPOINTS / f"{result.key}.pt", result.checkpoint)
        results["cells"][index[result.key]] = result.record
        write_json(out / RESULTS, results)
        finished[0] += 1
        r = result.record
        final = r.get("final", {})
        acc = f"test error {100 - final['test_acc']:.2f}%" if final else "no finished epoch"
        log(f"[{finished[0]}/{total}] b{r['batch_size']} {r['variant']} seed {r['seed']}: {acc}, {r['status']} "
            f"({r.get('cell_seconds', 0):.1f} s on {r.get('device')}, worker {r.get('worker')})")

    plan.executor.run_cells(todo, train, test, on_result)
    results["executor"] = plan.executor.describe()
    results["seconds"] = round(time.perf_counter() - started + (previous or {}).get("seconds", 0.0), 3)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    write_json(out / RESULTS, results)
    from .report.sweep import write_sweep_report
    write_sweep_report(out)
    unlock_folder(out)
    return results

