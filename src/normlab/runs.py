"""A run folder: its file names, status words and schema, checked at the door, and ``load_run``.

    results.json  metrics.csv  misclassified.json  checkpoints/<key>.pt  figures...  report.*

One schema for a comparison and a sweep alike (docs/results-schema.md): a list of runs, each a
(variant, seed, axis values) with its key. Every reader (``load_run``, ``--resume``, ``report``)
goes through ``read_results``/``read_misclassified``, which refuse a file of the wrong kind,
size or shape with one line before anything else looks at it.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import torch

from .data import Dataset, dataset_info, load_dataset
from .data.batches import Normalizer
from .checkpoints import read_checkpoint
from .config import saved_config_problem
from .errors import UserError
from .models import build_model
from .storage import read_json, write_json, write_text
from .variants import Variant

SCHEMA = 2
RESULTS = "results.json"
METRICS = "metrics.csv"
MISCLASSIFIED = "misclassified.json"
CHECKPOINTS = "checkpoints"
SEARCH_FOLDERS = ("lr-search", "lr-search-2")   # --lr auto's rounds, each a run folder inside the run's
SEARCH_ROUND = "search_round"      # results.json of a --lr auto search round: which round (1, 2)
# A run's status: pending (not started), running (some epochs), done, or "diverged at epoch N".
PENDING, RUNNING, DONE, DIVERGED = "pending", "running", "done", "diverged"
MISCLASSIFIED_PER_VARIANT = 10
SAFE_KEY = re.compile(r"[A-Za-z0-9_.+=-]+")
STATUS = re.compile(rf"{PENDING}|{RUNNING}|{DONE}|{DIVERGED} at epoch [0-9]+")
EPOCH_FIELDS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc")
RERUN = "it was written by an older normlab; run the command again with --overwrite (or another --out) to redo it"


def is_finished(status) -> bool:
    return status == DONE or str(status).startswith(DIVERGED)


def checkpoint_path(folder: Path, key: str) -> Path:
    return Path(folder) / CHECKPOINTS / f"{key}.pt"


def misclassified_key(variant: str, axes: dict) -> str:
    """misclassified.json's key of a run's first seed: its variant, and axis values in a grid."""
    return variant + "".join(f" {name}={value}" for name, value in axes.items())


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


def chosen_epoch(run: dict) -> dict | None:
    """The epoch a run is judged by: the one validation chose (final.best_val_epoch; the last
    epoch without a validation split), so the screen shows the number the report ranks by and
    never a test-chosen one. None before the first epoch."""
    epochs, best = run.get("epochs") or [], run.get("final", {}).get("best_val_epoch")
    return next((e for e in epochs if e.get("epoch") == best), epochs[-1] if epochs else None)


def metrics_csv(results: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    axes = list(results["config"].get("axes", {}))
    writer.writerow(["variant", "seed", *axes, "epoch", "split", "loss", "accuracy"])
    for run in results["runs"]:
        where = [run["variant"], run["seed"], *(run["axes"][a] for a in axes)]
        for e in run["epochs"]:
            for split in ("train", "val", "test"):
                if f"{split}_loss" in e:
                    writer.writerow([*where, e["epoch"], split, e[f"{split}_loss"], e[f"{split}_acc"]])
    return out.getvalue()


def save_results(folder: Path, results: dict) -> None:
    write_json(folder / RESULTS, results)
    write_text(folder / METRICS, metrics_csv(results))


# ---- the schema, checked once at the door ----------------------------------------------------

def number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def whole(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def accuracy(x) -> bool:
    """A percentage: a loss may be NaN (a diverged run's), an accuracy never is."""
    return number(x) and 0 <= x <= 100


def text(x) -> bool:
    return x is None or isinstance(x, str)


TEXTS = ("normlab", "device", "device_name", "torch", "started", "finished")     # what the reports print
CONFIG_TEXTS = ("lr_scaling", "lr_rule", "data_dir", "momentum_used", "trust_used")


def variant_problem(name: str) -> str | None:
    try:
        Variant.parse(name)
    except UserError as e:
        return f"config.variants: {e.what}"
    return None


def lr_search_problem(search) -> str | None:
    """--lr auto's record (engine.search_lrs), as the report reads it, or None when it is fine or absent."""
    if search is None:
        return None
    tried = lambda ts: isinstance(ts, list) and all(
        isinstance(t, dict) and number(t.get("lr")) and all(t.get(k) is None or number(t[k]) for k in ("val_acc", "val_loss"))
        for t in ts)
    rounds = search.get("rounds", [search]) if isinstance(search, dict) else None
    ok = (isinstance(rounds, list) and rounds and isinstance(search.get("grid"), list) and search["grid"]
          and all(number(x) for x in search["grid"]) and number(search.get("cost_runs", 0))
          and number(search.get("seconds", 0)) and whole(search.get("cost_run_epochs", 1))
          and all(isinstance(r, dict) and whole(r.get("epochs")) and isinstance(r.get("folder"), str)
                  and whole(r.get("per_variant", 1)) for r in rounds)
          and isinstance(search.get("variants"), dict)
          and all(isinstance(r, dict) and number(r.get("lr")) and tried(r.get("tried")) and tried(r.get("round2", []))
                  and isinstance(r.get("note", ""), str) for r in search["variants"].values()))
    return None if ok else "lr_search is not a table of the searched lrs"


def results_problem(results) -> str | None:
    """What makes ``results`` unreadable as a normlab results.json (schema 2), or None."""
    if not isinstance(results, dict):
        return "not a JSON object"
    if "cells" not in results and "runs" not in results:
        return "no 'runs' list"
    schema = results.get("schema", 1)
    if isinstance(schema, int) and not isinstance(schema, bool) and schema > SCHEMA:
        return f"schema {schema}, newer than this normlab's {SCHEMA}: upgrade normlab to read it"
    if "cells" in results or schema != SCHEMA:
        return f"schema {schema!r}, not {SCHEMA}: {RERUN}"
    config = results.get("config")
    if not isinstance(results.get("dataset"), str) or not isinstance(config, dict):
        return "no 'dataset' or 'config'"
    axes = config.get("axes")
    if not (isinstance(axes, dict) and all(isinstance(v, list) for v in axes.values())):
        return "config.axes is not an object of lists"
    if not (isinstance(config.get("variants"), list) and all(isinstance(v, str) for v in config["variants"])):
        return "config.variants is not a list of names"
    problem = (saved_config_problem(config) or lr_search_problem(results.get("lr_search"))
               or next(filter(None, map(variant_problem, config["variants"])), None))
    if problem:
        return problem
    bad = [k for k in TEXTS if not text(results.get(k))] + [f"config.{k}" for k in CONFIG_TEXTS if not text(config.get(k))]
    if bad:
        return f"{bad[0]} is not text"
    executor = results.get("executor", {})
    if not (isinstance(executor, dict) and text(executor.get("executor")) and whole(executor.get("workers", 1))):
        return "executor is not an object with a name and a number of workers"
    if not (whole(results.get(SEARCH_ROUND, 1)) and results.get(SEARCH_ROUND, 1) >= 1):
        return f"{SEARCH_ROUND} is not a round number"
    if not all(config.get(k) is None or whole(config[k]) and config[k] >= 0 for k in ("train_size", "val_size", "test_size")):
        return "config's image counts are not whole numbers"
    if not isinstance(results.get("runs"), list) or not results["runs"]:
        return "no 'runs' list" if not isinstance(results.get("runs"), list) else "an empty 'runs' list"
    for i, run in enumerate(results["runs"]):
        if not isinstance(run, dict):
            return f"runs[{i}] is not an object"
        started = isinstance(run.get("epochs"), list) and run["epochs"]      # a trained run has all of these
        optional = {} if started else {"seconds": 0, "params": 1, "final": {}}
        bad = [k for k, ok in (("key", isinstance(run.get("key"), str) and SAFE_KEY.fullmatch(run["key"])),
                               ("variant", run.get("variant") in config["variants"]), ("seed", whole(run.get("seed"))),
                               ("status", isinstance(run.get("status"), str) and STATUS.fullmatch(run["status"])), ("epochs", isinstance(run.get("epochs"), list)),
                               ("axes", isinstance(run.get("axes"), dict) and run["axes"].keys() == axes.keys()),
                               ("final", isinstance(run.get("final", optional.get("final")), dict)),
                               ("seconds", number(run.get("seconds", optional.get("seconds")))),
                               ("params", whole(run.get("params", optional.get("params"))) and run.get("params", 1) >= 1),
                               ("lr", number(run.get("lr", 0))),
                               ("stacked", whole(run.get("stacked", 1)) and run.get("stacked", 1) >= 1)) if not ok]
        if bad:
            return f"runs[{i}] has no valid {bad[0]!r}"
        problem = saved_config_problem({**config, **run["axes"]})
        if problem:
            return f"runs[{i}] ({run['variant']}): {problem}"
        for e in run["epochs"]:
            if (not isinstance(e, dict) or not all(number(e.get(k)) for k in EPOCH_FIELDS)
                    or not (whole(e["epoch"]) and e["epoch"] >= 1)        # an epoch of inf crashed the curves
                    or not all(accuracy(e[k]) for k in ("train_acc", "val_acc", "test_acc") if k in e)):
                return f"runs[{i}] ({run['variant']}) has an epoch without its losses and accuracies"
        if not all(isinstance(v, str) if k == "chosen_by" else accuracy(v) if "_acc" in k else number(v)
                   for k, v in run.get("final", {}).items()):
            return f"runs[{i}] ({run['variant']}) has a 'final' entry that is not a number (an accuracy: 0 to 100)"
    return None


def misclassified_problem(value, test_size: int | None = None, classes: int | None = None) -> str | None:
    if not isinstance(value, dict):
        return "not a JSON object"
    top = {"index": test_size or float("inf"), "true": classes or 1000, "pred": classes or 1000}
    for name, items in value.items():
        if not isinstance(items, list) or not all(
                isinstance(m, dict) and all(whole(m.get(k)) and 0 <= m[k] < top[k] for k in top)
                and number(m.get("confidence")) and 0 <= m["confidence"] <= 1 for m in items):
            return f"{name!r} is not a list of {{index, true, pred, confidence}} within the test set"
    return None


def read_results(folder: Path) -> dict:
    path = Path(folder) / RESULTS
    results = read_json(path)
    problem = results_problem(results)
    if problem:
        raise UserError(f"{path} is not a normlab results file ({problem})", "pass the --out folder of a normlab run")
    return results


def read_misclassified(folder: Path, test_size: int | None = None, classes: int | None = None) -> dict:
    path = Path(folder) / MISCLASSIFIED
    if not path.exists():
        return {}
    value = read_json(path)
    problem = misclassified_problem(value, test_size, classes)
    if problem:
        raise UserError(f"{path} is not a normlab misclassified file ({problem})",
                        "delete it; `normlab report` recomputes it from the checkpoints")
    return value


class Run:
    """A finished (or partly finished) run folder, read from disk: a comparison or a sweep."""

    def __init__(self, folder: Path, results: dict):
        self.folder = Path(folder)
        self.results = results
        self.config = results["config"]
        self.dataset = results["dataset"]
        self.runs = results["runs"]
        self.axes = self.config["axes"]
        self.point: dict = {}          # set by at(): the axis values of a sweep's point this view shows

    @property
    def variants(self) -> list[str]:
        return list(dict.fromkeys(run["variant"] for run in self.runs))

    @property
    def misclassified(self) -> dict:
        saved = read_misclassified(self.folder, self.config.get("test_size"), len(dataset_info(self.dataset).classes))
        if not self.point:
            return saved
        return {v: saved[misclassified_key(v, self.point)] for v in self.variants if misclassified_key(v, self.point) in saved}

    @property
    def axes_example(self) -> str:
        """The first run's axis values as keyword arguments ("batch_size=32"): how to name a sweep's run."""
        return ", ".join(f"{a}={v!r}" for a, v in self.runs[0]["axes"].items())

    def at(self, **axes) -> "Run":
        """One point of a sweep (every swept axis named) as a comparison of its variants: what
        plot_curves and plot_misclassified draw. A comparison is returned as it is."""
        if not self.axes and not axes:
            return self
        if set(axes) != set(self.axes):
            raise UserError(f"{self.folder} is a sweep over {', '.join(self.axes) or 'nothing'}: its runs at different "
                            f"values would be drawn as if they were seeds", f"name its point, e.g. {self.axes_example}")
        runs = [r for r in self.runs if all(r["axes"].get(k) == v for k, v in axes.items())]
        if not runs:
            raise UserError(f"{self.folder} has no run at {', '.join(f'{k}={v!r}' for k, v in axes.items())}",
                            "choose " + "; ".join(f"{a} from {', '.join(map(repr, vals))}" for a, vals in self.axes.items()))
        view = Run(self.folder, {**self.results, "config": {**self.config, **axes, "axes": {}}, "runs": runs})
        view.point = dict(axes)
        return view

    @property
    def figures(self) -> dict[str, Path]:
        return {p.stem: p for p in sorted(self.folder.glob("*.png"))}

    def record(self, variant: str, seed: int | None = None, **axes) -> dict:
        name = str(Variant.parse(variant))
        unknown = sorted(set(axes) - set(self.axes))
        if unknown:
            raise UserError(f"{self.folder} swept no {unknown[0]}", f"pick a run by {', '.join(self.axes) or 'variant and seed only'}")
        if self.axes and len({tuple(r["axes"].get(a) for a in self.axes) for r in self.runs if r["variant"] == name}) > 1 \
                and set(axes) != set(self.axes):
            # A sweep's first run of this variant would be taken silently (load_run(sweep).predict('bn', x)).
            raise UserError(f"{self.folder} is a sweep: {variant} has a run at every value of {', '.join(self.axes)}",
                            f"name them, e.g. {self.axes_example}")
        for run in self.runs:
            if run["variant"] == name and seed in (None, run["seed"]) and all(run["axes"].get(k) == v for k, v in axes.items()):
                return run
        have = sorted({f"{r['variant']} seed {r['seed']}" + "".join(f" {a}={r['axes'].get(a)!r}" for a in self.axes)
                       for r in self.runs})
        at = "".join(f" {k}={v!r}" for k, v in axes.items())
        raise UserError(f"{self.folder} has no run of {variant}" + (f" seed {seed}" if seed is not None else "") + at,
                        f"choose one of: {', '.join(have[:12])}" + (f" (and {len(have) - 12} more)" if len(have) > 12 else ""))

    def checkpoint_path(self, variant: str, seed: int | None = None, **axes) -> Path:
        return checkpoint_path(self.folder, self.record(variant, seed, **axes)["key"])

    def load_model(self, variant: str, seed: int | None = None, device: str = "cpu", **axes) -> torch.nn.Module:
        """The trained model in eval mode, with the weights of the epoch validation chose (whose
        accuracy results.json and the report give; the last epoch's in a checkpoint without them)."""
        from .train import resolve_device
        # Checked first: loading onto a device this machine lacks failed as a "damaged" checkpoint,
        # with the advice to delete it.
        device = resolve_device(str(device))
        record = self.record(variant, seed, **axes)
        path = checkpoint_path(self.folder, record["key"])
        if not path.exists():
            raise UserError(f"no checkpoint {path}", "train that variant first (normlab compare --resume finishes a run)")
        run_variant = Variant.parse(record["variant"])
        model = build_model(run_variant, self.dataset, {**self.config, **record["axes"]}.get("dropout", 0.0), self.config.get("model"))
        read_checkpoint(path, run_variant, record["seed"], model, map_location=device, chosen=True)
        return model.to(device).eval()

    def test_set(self, data_dir=None) -> Dataset:
        return load_dataset(self.dataset, "test", data_dir or self.config.get("data_dir"))

    @torch.inference_mode()
    def predict(self, variant: str, images, seed: int | None = None, **axes):
        """Labels and confidences for uint8 images as stored (N x C x H x W, or one C x H x W; a
        tensor or a NumPy array); in a sweep, ``axes`` pick the run (``batch_size=32``)."""
        if not (isinstance(images, torch.Tensor) or type(images).__module__ == "numpy"):
            raise UserError(f"predict takes a tensor or NumPy array of uint8 images, got {type(images).__name__}",
                            "pass e.g. load_dataset(...).images[:10]")
        model = self.load_model(variant, seed, **axes)
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8:
            raise UserError(f"predict takes uint8 images as stored in the dataset, got {images.dtype}",
                            "pass e.g. load_dataset(...).images[:10]")
        if images.ndim == 3:
            images = images[None]
        shape = dataset_info(self.dataset).shape
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape) or not len(images):
            size = "x".join(map(str, shape))
            raise UserError(f"predict takes images of {size} (N x {size} for several), got shape {tuple(images.shape)}",
                            "pass e.g. load_dataset(...).images[:10]; channels come first")
        probabilities = model(Normalizer(dataset_info(self.dataset), torch.device("cpu"))(images)).softmax(1)
        confidence, label = probabilities.max(1)
        return label, confidence


def load_run(folder) -> Run:
    """Any normlab run folder (compare, train or sweep), its files checked at the door."""
    folder = Path(folder)
    if not (folder / RESULTS).exists():
        searched = [f for f in SEARCH_FOLDERS if (folder / f / RESULTS).exists()]
        if searched:      # killed in its --lr auto search, before the real runs' results.json
            raise UserError(f"{folder} holds a run stopped in its --lr auto search, before its real runs began: "
                            f"nothing to report yet (the search so far is in {folder / searched[-1]})",
                            "run the same command again with --resume to finish it")
        raise UserError(f"{folder} holds no normlab run (no {RESULTS})", "pass the --out folder of a normlab compare, train or sweep")
    return Run(folder, read_results(folder))
