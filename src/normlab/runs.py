"""A run folder: its layout, and reading one back (``load_run``) for reports and notebooks.

    results.json  metrics.csv  misclassified.json  checkpoints/<variant>[-seed<k>].pt  figures...
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from .data import Dataset, dataset_info, load_dataset
from .data.batches import Normalizer
from .errors import UserError
from .models import build_model
from .storage import load_checkpoint, read_json, write_json, write_text
from .variants import Variant

RESULTS = "results.json"
METRICS = "metrics.csv"
MISCLASSIFIED = "misclassified.json"
CHECKPOINTS = "checkpoints"


def checkpoint_name(variant: Variant, seed: int, multi_seed: bool) -> str:
    return f"{variant.slug}-seed{seed}.pt" if multi_seed else f"{variant.slug}.pt"


def metrics_csv(results: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["variant", "seed", "epoch", "split", "loss", "accuracy"])
    for run in results["runs"]:
        for e in run["epochs"]:
            writer.writerow([run["variant"], run["seed"], e["epoch"], "train", e["train_loss"], e["train_acc"]])
            writer.writerow([run["variant"], run["seed"], e["epoch"], "test", e["test_loss"], e["test_acc"]])
    return out.getvalue()


def save_results(folder: Path, results: dict) -> None:
    write_json(folder / RESULTS, results)
    write_text(folder / METRICS, metrics_csv(results))


class Run:
    """A finished (or partly finished) run folder, read from disk."""

    def __init__(self, folder: Path, results: dict):
        self.folder = Path(folder)
        self.results = results
        self.config = results["config"]
        self.dataset = results["dataset"]
        self.runs = results["runs"]

    @property
    def variants(self) -> list[str]:
        return list(dict.fromkeys(run["variant"] for run in self.runs))

    @property
    def misclassified(self) -> dict:
        path = self.folder / MISCLASSIFIED
        return read_json(path) if path.exists() else {}

    @property
    def figures(self) -> dict[str, Path]:
        return {p.stem: p for p in sorted(self.folder.glob("*.png"))}

    def record(self, variant: str, seed: int | None = None) -> dict:
        name = str(Variant.parse(variant))
        for run in self.runs:
            if run["variant"] == name and (seed is None or run["seed"] == seed):
                return run
        have = ", ".join(f"{r['variant']} seed {r['seed']}" for r in self.runs)
        raise UserError(f"{self.folder} has no run of {variant}" + (f" seed {seed}" if seed is not None else ""),
                        f"choose one of: {have}")

    def checkpoint_path(self, variant: str, seed: int | None = None) -> Path:
        record = self.record(variant, seed)
        multi = len({r["seed"] for r in self.runs}) > 1 or self.config.get("seeds", 1) > 1
        return self.folder / CHECKPOINTS / checkpoint_name(Variant.parse(record["variant"]), record["seed"], multi)

    def load_model(self, variant: str, seed: int | None = None, device: str = "cpu") -> torch.nn.Module:
        """The trained model, weights loaded, in eval mode."""
        path = self.checkpoint_path(variant, seed)
        if not path.exists():
            raise UserError(f"no checkpoint {path}", "train that variant first (normlab compare --resume finishes a run)")
        model = build_model(Variant.parse(variant), self.dataset, self.config.get("dropout", 0.0))
        model.load_state_dict(load_checkpoint(path, map_location=device)["model"])
        return model.to(device).eval()

    def test_set(self, data_dir=None) -> Dataset:
        return load_dataset(self.dataset, "test", data_dir or self.config.get("data_dir"))

    @torch.inference_mode()
    def predict(self, variant: str, images: torch.Tensor, seed: int | None = None):
        """Labels and confidences for uint8 images as stored (N x C x H x W, or one C x H x W)."""
        model = self.load_model(variant, seed)
        if images.dtype != torch.uint8:
            raise UserError(f"predict takes uint8 images as stored in the dataset, got {images.dtype}",
                            "pass e.g. load_dataset(...).images[:10]")
        if images.ndim == 3:
            images = images[None]
        probabilities = model(Normalizer(dataset_info(self.dataset), torch.device("cpu"))(images)).softmax(1)
        confidence, label = probabilities.max(1)
        return label, confidence


def load_run(folder) -> Run:
    folder = Path(folder)
    path = folder / RESULTS
    if not path.is_file():
        raise UserError(f"{folder} holds no normlab run (no {RESULTS})", "pass the --out folder of a normlab compare or train")
    results = read_json(path)
    if isinstance(results, dict) and results.get("kind") == "sweep":
        raise UserError(f"{folder} holds a normlab sweep, not a run",
                        "read it with normlab.report.sweep.load_sweep (sweep.md and sweep.csv hold its table)")
    problem = results_problem(results)
    if problem:
        raise UserError(f"{path} is not a normlab results file ({problem})", "pass the --out folder of a normlab compare or train")
    return Run(folder, results)


def results_problem(results) -> str | None:
    """What makes ``results`` unreadable as a normlab results.json, or None."""
    if not isinstance(results, dict):
        return "not a JSON object"
    for key, kind in (("dataset", str), ("config", dict), ("runs", list)):
        if not isinstance(results.get(key), kind):
            return f"no {key!r} {kind.__name__}"
    for i, run in enumerate(results["runs"]):
        if not isinstance(run, dict) or not isinstance(run.get("variant"), str) or not isinstance(run.get("epochs"), list):
            return f"runs[{i}] has no variant and epochs"
        for e in run["epochs"]:
            if not isinstance(e, dict) or not all(isinstance(e.get(k), (int, float)) for k in
                                                  ("epoch", "train_loss", "train_acc", "test_loss", "test_acc")):
                return f"runs[{i}] ({run['variant']}) has an epoch without its losses and accuracies"
    return None
