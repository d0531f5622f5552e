"""A comparison: every variant x seed trained on one dataset, written into one run folder.

Input is checked before anything is written; then each (variant, seed) is trained in turn,
and results.json, metrics.csv and the checkpoints are rewritten after every epoch, so a run
killed at any point loses at most the epoch in flight (``--resume`` picks it up).
"""

from __future__ import annotations

import platform
import shutil
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
from .storage import read_json, write_json
from .train import TrainConfig, check_batch, resolve_device, train_run
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


def default_out(dataset: str) -> Path:
    return Path("runs") / f"{dataset_info(dataset).name}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_plan(plan: Plan) -> None:
    """Everything that can be refused without reading data or writing files."""
    cfg = plan.cfg
    cfg.dataset = dataset_info(cfg.dataset).name
    cfg.validate()
    resolve_device(cfg.device)
    train_size = min(dataset_info(cfg.dataset).train_size, cfg.train_limit or 10**9)
    for variant in plan.variants:
        build_model(variant, cfg.dataset)          # refuses a group count that does not divide the widths
        check_batch(variant, cfg.batch_size, train_size)


def prepare_folder(plan: Plan) -> dict | None:
    """Create or check the out folder; return the results of the run being resumed, if any."""
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
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        for png in out.glob("*.png"):
            png.unlink()
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    elif plan.resume:
        raise UserError(f"--resume: {out} holds no run to resume", "drop --resume to start a new run there")
    elif out.is_dir() and any(out.iterdir()) and not plan.overwrite:
        raise UserError(f"{out} is not empty and holds no normlab run", "choose a new or empty folder for --out")
    try:
        (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        probe = out / ".normlab-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to {out} ({exc.strerror})", "choose a folder you can write to with --out") from None
    return None


def check_resumable(results: dict, plan: Plan) -> None:
    saved = results.get("config", {})
    if not isinstance(saved, dict) or "dataset" not in saved:
        raise UserError(f"{plan.out / RESULTS} is not a normlab results file", "choose the --out folder of a normlab run")
    wanted = plan.cfg.to_dict()
    differs = [f"{key} {saved.get(key)!r} -> {wanted[key]!r}" for key in RESUME_KEYS if saved.get(key) != wanted[key]]
    if differs:
        raise UserError(f"{plan.out} was run with other settings ({'; '.join(differs)})",
                        "resume with the same options, or start a new run with another --out")


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


def run_plan(plan: Plan) -> dict:
    """Train every (variant, seed) of the plan; return the final results."""
    check_plan(plan)
    cfg = plan.cfg
    device = resolve_device(cfg.device)
    train, test = load_splits(cfg.dataset, plan.data_dir)
    train, test = limit(train, cfg.train_limit), limit(test, cfg.test_limit)
    previous = prepare_folder(plan)
    out = plan.out
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
    misclassified = read_json(out / MISCLASSIFIED) if (out / MISCLASSIFIED).exists() else {}
    save_results(out, results)
    started = time.perf_counter()

    for index, entry in enumerate(results["runs"]):
        variant, seed = Variant.parse(entry["variant"]), entry["seed"]
        wants_grid = seed == seeds[0] and str(variant) not in misclassified
        if entry["status"] != "pending" and entry["status"] != "running" and not wants_grid:
            continue

        def on_epoch(record, index=index):
            results["runs"][index] = {k: v for k, v in record.items()}
            save_results(out, results)

        label = f"{variant}" + (f" seed {seed}" if multi_seed else "")
        outcome = train_run(variant, seed, cfg, train, test, device,
                            checkpoint=out / CHECKPOINTS / checkpoint_name(variant, seed, multi_seed),
                            on_epoch=on_epoch, label=label)
        results["runs"][index] = outcome.record
        if outcome.final is not None and seed == seeds[0]:
            misclassified[str(variant)] = most_confident_mistakes(outcome.final.predictions, outcome.final.confidences, test.labels)
            write_json(out / MISCLASSIFIED, misclassified)
        save_results(out, results)

    results["seconds"] = round(time.perf_counter() - started + (previous or {}).get("seconds", 0.0), 3)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    save_results(out, results)
    write_run_report(out, test)
    return results


def write_run_report(out: Path, test: Dataset) -> None:
    """Figures, summary.txt and the report, read back from the folder just written (the same
    code `normlab report RUN_DIR` runs)."""
    from .report.build import write_report
    write_report(out, test=test)
