"""A comparison: every variant x seed trained on one dataset, written into one run folder.

Input is checked before anything is written; then each (variant, seed) is trained in turn,
and results.json, metrics.csv and the checkpoints are rewritten after every epoch, so a run
killed at any point loses at most the epoch in flight (``--resume`` picks it up).
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .data import Dataset, dataset_info, load_splits
from .errors import UserError
from .models import build_model
from .runs import CHECKPOINTS, MISCLASSIFIED, RESULTS, checkpoint_name, save_results
from .storage import LOCK_NAME, TEMP_SUFFIX, is_leftover, lock_folder, read_json, remove_leftovers, unlock_folder, write_json
from .train import TrainConfig, check_batch, read_checkpoint, resolve_device, train_run
from .variants import Variant

# Settings that change the numbers: a resumed run must match them exactly.
RESUME_KEYS = ("dataset", "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule",
               "dropout", "seed", "seeds", "train_limit", "test_limit")
MISCLASSIFIED_PER_VARIANT = 10
RUN_FILES = (RESULTS, "metrics.csv", MISCLASSIFIED, "summary.txt", "report.md", "report.html")


@dataclass
class Plan:
    variants: list[Variant]
    cfg: TrainConfig
    out: Path
    data_dir: str | None = None
    resume: bool = False
    overwrite: bool = False
    workers: int = 1                   # runs trained at once, in local worker processes


def default_out(dataset: str) -> Path:
    return Path("runs") / f"{dataset_info(dataset).name}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_plan(plan: Plan) -> None:
    """Everything that can be refused without reading data or writing files."""
    cfg = plan.cfg
    cfg.dataset = dataset_info(cfg.dataset).name
    cfg.validate()
    resolve_device(cfg.device)
    if plan.workers < 1:
        raise UserError(f"--workers {plan.workers} must be at least 1", "pass e.g. --workers 2")
    train_size = min(dataset_info(cfg.dataset).train_size, cfg.train_limit or 10**9)
    for variant in plan.variants:
        build_model(variant, cfg.dataset)          # refuses a group count that does not divide the widths
        check_batch(variant, cfg.batch_size, train_size)


def prepare_folder(plan: Plan) -> dict | None:
    """Check the out folder (writing nothing); return the results of the run being resumed, if any."""
    out = plan.out
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file", "choose a folder path for --out")
    existing = out / RESULTS
    if existing.exists():
        if plan.resume:
            results = read_json(existing)
            check_resumable(results, plan)
            return results
        if not plan.overwrite:
            raise UserError(f"{out} already holds a run", "pass --resume to continue it, --overwrite to replace it, or choose another --out")
    elif plan.resume and not (out.is_dir() and (out / CHECKPOINTS).is_dir() and holds_only_leftovers(out)):
        raise UserError(f"--resume: {out} holds no run to resume", "drop --resume to start a new run there")
    elif out.is_dir() and not holds_only_leftovers(out) and not plan.overwrite:
        raise UserError(f"{out} is not empty and holds no normlab run", "choose a new or empty folder for --out")
    return None


def holds_only_leftovers(out: Path) -> bool:
    """True for an empty folder, or one that a run killed before its first results.json left:
    an empty checkpoints/ folder, temp files of unfinished writes, the lock file."""
    for path in out.iterdir():
        if path.name == CHECKPOINTS and path.is_dir():
            if not all(is_leftover(p) for p in path.iterdir()):
                return False
        elif not (is_leftover(path) or path.name == LOCK_NAME):
            return False
    return True


def open_folder(plan: Plan) -> None:
    """The first writes, once every check has passed: take the folder, clear what a killed run left."""
    out = plan.out
    try:
        (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".normlab-write-test.", suffix=TEMP_SUFFIX)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"cannot write to {out} ({exc.strerror})", "make it writable or choose another folder with --out") from None
    lock_folder(out)
    remove_leftovers(out)     # temp files of writes that a kill interrupted: never a live process's, we hold the lock
    if plan.overwrite and not plan.resume:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        for png in out.glob("*.png"):
            png.unlink()
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
        (out / CHECKPOINTS).mkdir()


def check_resumable(results: dict, plan: Plan) -> None:
    runs = results.get("runs") if isinstance(results, dict) else None
    saved = results.get("config") if isinstance(results, dict) else None
    if not (isinstance(saved, dict) and "dataset" in saved and isinstance(runs, list)
            and all(isinstance(r, dict) and {"variant", "seed", "status", "epochs"} <= r.keys() for r in runs)):
        raise UserError(f"{plan.out / RESULTS} is not a normlab results file", "choose the --out folder of a normlab run")
    wanted = plan.cfg.to_dict()
    differs = [f"{key} {saved.get(key)!r} -> {wanted[key]!r}" for key in RESUME_KEYS if saved.get(key) != wanted[key]]
    if differs:
        raise UserError(f"{plan.out} was run with other settings ({'; '.join(differs)})",
                        "resume with the same options, or start a new run with another --out")
    before, now = saved.get("variants"), [str(v) for v in plan.variants]
    if before is not None and sorted(before) != sorted(now):
        # Resuming with another list would drop the missing variants' results from results.json.
        option = f"--norms {','.join(before)}" if len(before) > 1 else f"--norm {before[0]}"
        raise UserError(f"{plan.out} was run with other variants ({', '.join(before)} -> {', '.join(now)})",
                        f"resume with {option}, or start a new run with another --out")


def check_resumed_inputs(previous: dict, plan: Plan, train: Dataset, test: Dataset) -> None:
    """The resumed run's data and checkpoints are the ones it was run with, before anything is written."""
    saved = previous["config"]
    if saved.get("train_size") is not None and (saved.get("train_size"), saved.get("test_size")) != (len(train), len(test)):
        raise UserError(f"{plan.out} was run on {saved['train_size']} training and {saved['test_size']} test images, "
                        f"this data has {len(train)} and {len(test)}",
                        "point --data-dir at the data it was run on, or start a new run with another --out")
    seeds = plan.cfg.seed_list()
    for seed in seeds:
        for variant in plan.variants:
            path = plan.out / CHECKPOINTS / checkpoint_name(variant, seed, len(seeds) > 1)
            if path.exists():
                read_checkpoint(path, variant, seed)


def environment(device: torch.device) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    return {"device": str(device), "device_name": name, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def limit(dataset: Dataset, n: int | None) -> Dataset:
    # The first n images, so test-set indices in misclassified.json stay indices of the file.
    if n is None or n >= len(dataset):
        return dataset
    return Dataset(dataset.info, dataset.split, dataset.images[:n], dataset.labels[:n], dataset.source)


def most_confident_mistakes(predictions: torch.Tensor, confidences: torch.Tensor, labels: torch.Tensor,
                            k: int = MISCLASSIFIED_PER_VARIANT) -> list[dict]:
    wrong = (predictions != labels).nonzero().flatten().tolist()
    # Most confident first; ties broken by index, so the choice is deterministic.
    wrong.sort(key=lambda i: (-float(confidences[i]), i))
    return [{"index": i, "true": int(labels[i]), "pred": int(predictions[i]), "confidence": round(float(confidences[i]), 4)}
            for i in wrong[:k]]


def write_misclassified(out: Path, misclassified: dict, variants: list[Variant]) -> None:
    """In the plan's variant order, whatever order the runs finished in (workers finish in any)."""
    order = {str(v): i for i, v in enumerate(variants)}
    write_json(out / MISCLASSIFIED, dict(sorted(misclassified.items(), key=lambda item: order.get(item[0], len(order)))))


def run_plan(plan: Plan) -> dict:
    """Train every (variant, seed) of the plan; return the final results."""
    check_plan(plan)
    cfg = plan.cfg
    device = resolve_device(cfg.device)
    train, test = load_splits(cfg.dataset, plan.data_dir)
    train, test = limit(train, cfg.train_limit), limit(test, cfg.test_limit)
    for variant in plan.variants:
        check_batch(variant, cfg.batch_size, len(train))     # the data's real size, now that it is loaded
    previous = prepare_folder(plan)
    if previous is not None:
        check_resumed_inputs(previous, plan, train, test)
    out = plan.out
    misclassified = read_json(out / MISCLASSIFIED) if previous is not None and (out / MISCLASSIFIED).exists() else {}
    open_folder(plan)
    seeds = cfg.seed_list()
    multi_seed = len(seeds) > 1
    results = {
        "normlab": __version__, "dataset": cfg.dataset,
        "config": {**cfg.to_dict(), "variants": [str(v) for v in plan.variants], "data_dir": plan.data_dir,
                   "data_source": str(train.source), "train_size": len(train), "test_size": len(test)},
        **environment(device),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "runs": [],
    }
    done_before = {(r["variant"], r["seed"]): r for r in (previous or {}).get("runs", [])}
    results["runs"] = [done_before.get((str(v), s)) or {"variant": str(v), "seed": s, "status": "pending", "epochs": []}
                       for s in seeds for v in plan.variants]
    save_results(out, results)
    started = time.perf_counter()
    if plan.workers > 1:
        train_in_workers(plan, results, misclassified, train, test)   # the loop below then skips them

    for index, entry in enumerate(results["runs"]):
        variant, seed = Variant.parse(entry["variant"]), entry["seed"]
        checkpoint = out / CHECKPOINTS / checkpoint_name(variant, seed, multi_seed)
        wants_grid = seed == seeds[0] and str(variant) not in misclassified and entry["status"] == "done"
        # A finished run whose checkpoint is gone (deleted after a refusal) is trained again.
        if entry["status"] not in ("pending", "running") and checkpoint.exists() and not wants_grid:
            continue

        def on_epoch(record, index=index):
            results["runs"][index] = {k: v for k, v in record.items()}
            save_results(out, results)

        label = f"{variant}" + (f" seed {seed}" if multi_seed else "")
        outcome = train_run(variant, seed, cfg, train, test, device, checkpoint=checkpoint, on_epoch=on_epoch, label=label)
        results["runs"][index] = outcome.record
        if outcome.final is not None and seed == seeds[0]:
            misclassified[str(variant)] = most_confident_mistakes(outcome.final.predictions, outcome.final.confidences, test.labels)
            write_misclassified(out, misclassified, plan.variants)
        save_results(out, results)

    results["seconds"] = round(time.perf_counter() - started + (previous or {}).get("seconds", 0.0), 3)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    save_results(out, results)
    write_run_report(out, test)
    unlock_folder(out)
    return results


def train_in_workers(plan: Plan, results: dict, misclassified: dict, train: Dataset, test: Dataset) -> None:
    """Train the plan's unfinished runs in ``plan.workers`` local processes (the sweep's local
    executor). Each worker checkpoints its run after every epoch, as the sequential loop does;
    results.json is rewritten here, by this process alone, as each run finishes."""
    from .executors import Cell, LocalExecutor
    cfg, out = plan.cfg, plan.out
    seeds = cfg.seed_list()
    multi_seed = len(seeds) > 1
    cells, index = [], {}
    for i, entry in enumerate(results["runs"]):
        if entry["status"] not in ("pending", "running"):
            continue
        variant, seed = Variant.parse(entry["variant"]), entry["seed"]
        name = checkpoint_name(variant, seed, multi_seed)
        index[name] = i
        cells.append(Cell(name, str(variant), seed, cfg.batch_size, cfg.peak_lr, {**cfg.to_dict(), "seed": seed},
                          checkpoint=str(out / CHECKPOINTS / name), name=f"{variant}" + (f" seed {seed}" if multi_seed else ""),
                          keep_predictions=seed == seeds[0]))

    def on_result(result) -> None:
        record = {k: v for k, v in result.record.items() if k not in ("key", "batch_size", "lr")}
        results["runs"][index[result.key]] = record
        if result.predictions is not None:
            misclassified[record["variant"]] = most_confident_mistakes(
                torch.from_numpy(result.predictions), torch.from_numpy(result.confidences), test.labels)
            write_misclassified(out, misclassified, plan.variants)
        save_results(out, results)

    LocalExecutor(plan.workers, cfg.device).run_cells(cells, train, test, on_result)


def write_run_report(out: Path, test: Dataset) -> None:
    """Figures, summary.txt and the report, read back from the folder just written (the same
    code `normlab report RUN_DIR` runs)."""
    from .report.build import write_report
    write_report(out, test=test)
