"""`normlab bench`: training throughput of normlab's path against the seed-style reference.

Both pipelines train the same model (same variant, same initial weights) on the same data in
one process. They take turns in short windows (normlab, reference, normlab, ...) and each
reports the median window: a background job that slows the machine for a while then slows
both, instead of whichever ran during it.

normlab's path is the one `train_run` executes (`Training.step` on `TrainBatches`), so the
number is the speed of a real run, not of a benchmark special.
"""

from __future__ import annotations

import itertools
import platform
import statistics
import time
from contextlib import redirect_stdout
from dataclasses import dataclass

import torch

from . import __version__
from .data import Dataset, dataset_info, load_splits
from .data.batches import Normalizer, TrainBatches
from .data.sources import locate
from .errors import UserError
from .models import build_model, count_params
from .reference import seed_style_loader, seed_style_step
from .train import CHANNELS_LAST, TrainConfig, Training, evaluate, make_optimizer, resolve_device
from .variants import Variant

SYNTHETIC_IMAGES = 10_000


@dataclass
class BenchConfig:
    """Defaults: the quick bench (about a minute on CPU). ``bench_config(full=True)``: the long one."""
    dataset: str = "cifar10"
    variants: tuple[str, ...] = ("bn", "gn")
    device: str = "auto"
    batch_size: int = 128
    steps: int = 15                    # training steps per timed window
    windows: int = 3                   # windows per pipeline; the median is reported
    reference_workers: tuple[int, ...] = (0,)
    full: bool = False                 # also time the whole job through train_run (and the full preset)
    compile: bool = False              # also time normlab's path under torch.compile
    nchw: bool = False                 # also time normlab's path with NCHW tensors
    epochs: int = 20                   # of the full job
    data_dir: str | None = None

    def validate(self) -> None:
        for ok, what, fix in [
            (self.steps >= 1, f"--steps {self.steps} must be at least 1", "pass e.g. --steps 40"),
            (self.windows >= 1, f"--windows {self.windows} must be at least 1", "pass e.g. --windows 5"),
            (self.batch_size >= 2, f"--batch-size {self.batch_size} must be at least 2", "pass e.g. --batch-size 128"),
            (self.epochs >= 1, f"--epochs {self.epochs} must be at least 1", "pass e.g. --epochs 20"),
            (all(w >= 0 for w in self.reference_workers), "--reference-workers must be whole numbers >= 0",
             "pass e.g. --reference-workers 0,2"),
        ]:
            if not ok:
                raise UserError(what, fix)


# --full: every seed norm, longer windows, the reference with loader workers too, and the whole job.
FULL = {"variants": ("bn", "ln", "gn"), "steps": 40, "windows": 5, "reference_workers": (0, 2)}


def bench_config(full: bool = False, **given) -> BenchConfig:
    """The quick bench or, with ``full``, the long one; options given (not None) win over either."""
    return BenchConfig(full=full, **{**(FULL if full else {}), **{k: v for k, v in given.items() if v is not None}})


def bench_data(cfg: BenchConfig) -> tuple[Dataset, Dataset, str]:
    """The real dataset when it is on this machine, else random images of its shape: the
    speed of a step does not depend on what the pixels show."""
    info = dataset_info(cfg.dataset)
    if cfg.full or info.format in ("folder", "npz") or locate(info, cfg.data_dir, download=False).found:
        # Found but unreadable is an error, not a reason to time fake data.
        train, test = load_splits(info.name, cfg.data_dir, download=False)
        return train, test, f"{info.title} from {train.source}"
    g = torch.Generator().manual_seed(0)

    def fake(n: int, split: str) -> Dataset:
        images = torch.randint(0, 256, (n, *info.shape), dtype=torch.uint8, generator=g)
        return Dataset(info, split, images, torch.randint(0, len(info.classes), (n,), generator=g), "synthetic")
    return fake(SYNTHETIC_IMAGES, "train"), fake(SYNTHETIC_IMAGES // 5, "test"), f"synthetic {info.title}-shaped images"


def endless(make_epoch):
    while True:
        yield from make_epoch()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class NormlabPipeline:
    """normlab's path: uint8 data on the device, whole-batch crop/flip, Training.step."""

    def __init__(self, variant: Variant, train: Dataset, cfg: BenchConfig, device: torch.device, compiled: bool = False,
                 channels_last: bool = CHANNELS_LAST):
        # A schedule long enough never to end while timing; the step costs the same at any lr.
        run_cfg = TrainConfig(dataset=train.info.name, batch_size=cfg.batch_size, epochs=10_000, device=str(device))
        normalizer = Normalizer(train.info, device, channels_last)
        self.batches = TrainBatches(train.images.to(device), train.labels.to(device), train.info, cfg.batch_size, normalizer)
        torch.manual_seed(0)
        self.training = Training(variant, run_cfg, device, len(self.batches), channels_last)
        if compiled:
            # Compiles on the first steps, which the warm-up window times.
            self.training.model = torch.compile(self.training.model)
        generator = torch.Generator(device=device).manual_seed(0)
        self.stream = endless(lambda: self.batches.epoch(generator))
        self.device, self.normalizer = device, normalizer

    def run(self, steps: int) -> float:
        synchronize(self.device)
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=self.device)
        for x, y in itertools.islice(self.stream, steps):
            loss, _ = self.training.step(x, y)
            loss_sum += loss
        loss_sum.item()                 # once per window, as train_run reads once per epoch
        return time.perf_counter() - started

    def evaluate_seconds(self, test: Dataset) -> float:
        images, labels = test.images.to(self.device), test.labels.to(self.device)
        started = time.perf_counter()
        evaluate(self.training.model, images, labels, self.normalizer)
        return time.perf_counter() - started


class ReferencePipeline:
    """The seeds' path: per-image transforms in a DataLoader, eager NCHW, .item() every step."""

    def __init__(self, variant: Variant, train: Dataset, cfg: BenchConfig, device: torch.device, workers: int):
        torch.manual_seed(0)
        self.model = build_model(variant, train.info.name).to(device)
        self.optimizer = make_optimizer(self.model, TrainConfig(dataset=train.info.name))
        self.l1 = variant.l1
        loader = seed_style_loader(train, cfg.batch_size, workers)
        self.stream = endless(lambda: iter(loader))
        self.device = device

    def run(self, steps: int) -> float:
        self.model.train()
        started = time.perf_counter()
        for x, y in itertools.islice(self.stream, steps):
            seed_style_step(self.model, self.optimizer, x.to(self.device), y.to(self.device), self.l1)
        return time.perf_counter() - started

    def evaluate_seconds(self, test: Dataset) -> float:
        self.model.eval()
        started = time.perf_counter()
        with torch.no_grad():
            for x, y in seed_style_loader(test, 1000, augment=False, order=list(range(len(test)))):
                x, y = x.to(self.device), y.to(self.device)
                torch.nn.functional.cross_entropy(self.model(x), y).item()
        return time.perf_counter() - started


def race(pipelines: dict[str, object], steps: int, windows: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds per window for each pipeline, the pipelines taking turns; and the
    seconds of each one's untimed warm-up (allocator, kernel choice, workers, compilation)."""
    warmup = {name: p.run(max(3, steps // 4)) for name, p in pipelines.items()}
    times: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(windows):
        for name, p in pipelines.items():
            times[name].append(p.run(steps))
    return {name: statistics.median(t) for name, t in times.items()}, warmup


def run_bench(cfg: BenchConfig, log=print) -> dict:
    cfg.validate()
    cfg.dataset = dataset_info(cfg.dataset).name
    device = resolve_device(cfg.device)
    variants = [Variant.parse(v) for v in cfg.variants]
    for v in variants:
        build_model(v, cfg.dataset)      # a bad group count is refused before any timing
    train, test, data = bench_data(cfg)
    if cfg.batch_size > len(train):
        # A batch is drawn from one epoch of the training set: a larger one is never formed
        # (at --batch-size 100000 the bench ran for minutes and printed nothing).
        raise UserError(f"--batch-size {cfg.batch_size} exceeds the {len(train):,} training images it times on",
                        f"pass at most --batch-size {len(train)}")
    images_per_window = cfg.steps * cfg.batch_size
    train_size = dataset_info(cfg.dataset).train_size
    rows = []
    for v in variants:
        log(f"bench {v}: {cfg.windows} windows of {cfg.steps} steps per pipeline")
        pipelines = {"normlab": NormlabPipeline(v, train, cfg, device)}
        if cfg.compile:
            pipelines["normlab compiled"] = NormlabPipeline(v, train, cfg, device, compiled=True)
        if cfg.nchw:
            pipelines["normlab other layout"] = NormlabPipeline(v, train, cfg, device, channels_last=not CHANNELS_LAST)
        for w in cfg.reference_workers:
            pipelines[f"reference workers={w}"] = ReferencePipeline(v, train, cfg, device, w)
        seconds, warmup = race(pipelines, cfg.steps, cfg.windows)
        speed = {name: images_per_window / s for name, s in seconds.items()}
        best_reference = max((n for n in speed if n.startswith("reference")), key=speed.get, default=None)
        evals = {name: p.evaluate_seconds(test) * dataset_info(cfg.dataset).test_size / len(test)
                 for name, p in pipelines.items() if name in ("normlab", best_reference)}
        row = {"variant": str(v), "params": count_params(pipelines["normlab"].training.model),
               "normlab_images_per_s": round(speed["normlab"], 1),
               "normlab_epoch_seconds": round(train_size / speed["normlab"] + evals["normlab"], 2),
               "reference_images_per_s": {n.split(" ", 1)[1]: round(s, 1) for n, s in speed.items() if n.startswith("reference")}}
        if cfg.compile:
            row["compiled_images_per_s"] = round(speed["normlab compiled"], 1)
            row["compiled_warmup_seconds"] = round(warmup["normlab compiled"], 1)
            row["eager_warmup_seconds"] = round(warmup["normlab"], 1)
        if cfg.nchw:
            row["other_layout_images_per_s"] = round(speed["normlab other layout"], 1)
            row["layout"] = "channels_last" if CHANNELS_LAST else "nchw"
        if best_reference:
            row["reference_epoch_seconds"] = round(train_size / speed[best_reference] + evals[best_reference], 2)
            row["speedup_vs_best_reference"] = round(speed["normlab"] / speed[best_reference], 2)
        rows.append(row)
        del pipelines                    # ends DataLoader worker processes before the next variant
    result = {
        "normlab": __version__, "date": time.strftime("%Y-%m-%d %H:%M"), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"{platform.processor() or platform.machine()} CPU",
        "threads": torch.get_num_threads(), "torch": torch.__version__, "dataset": cfg.dataset, "data": data,
        "batch_size": cfg.batch_size, "steps_per_window": cfg.steps, "windows": cfg.windows,
        "epoch_seconds_are": "full training set at the measured rate + one measured pass over the test set",
        "variants": rows,
    }
    bn = next((r for r in rows if r["variant"] == "bn"), None)
    if bn and len(rows) > 1:                   # with bn alone there is nothing to compare it with
        result["slowdown_vs_bn"] = {r["variant"]: round(bn["normlab_images_per_s"] / r["normlab_images_per_s"], 2)
                                    for r in rows if r is not bn}
    if cfg.full:
        result["full_job"] = full_job(cfg, variants, device, log)
    return result


def full_job(cfg: BenchConfig, variants: list[Variant], device: torch.device, log) -> dict:
    """The whole comparison through train_run: every epoch with its evaluation, as `compare` runs it."""
    from .train import train_run
    train, test = load_splits(cfg.dataset, cfg.data_dir, download=False)
    run_cfg = TrainConfig(dataset=cfg.dataset, epochs=cfg.epochs, batch_size=cfg.batch_size, device=str(device))
    runs, started = [], time.perf_counter()
    for v in variants:
        log(f"full job: {v}, {cfg.epochs} epochs")
        with redirect_stdout(None):      # train_run's epoch lines; the bench prints its own
            outcome = train_run(v, run_cfg.seed, run_cfg, train, test, device)
        runs.append({"variant": str(v), "seconds": outcome.record["seconds"],
                     "test_acc": outcome.record["final"]["test_acc"]})
    return {"epochs": cfg.epochs, "seconds": round(time.perf_counter() - started, 1), "runs": runs}


def format_table(result: dict) -> str:
    lines = [f"normlab bench: {result['dataset']} ({result['data']}), batch {result['batch_size']}, "
             f"{result['device_name']}, {result['threads']} threads, {result['date']}",
             f"{'variant':<10} {'params':>7} {'normlab img/s':>14} {'reference img/s':>24} {'speedup':>8} "
             f"{'epoch s':>8} {'ref epoch s':>12}"]
    for r in result["variants"]:
        ref = ", ".join(f"{k}: {v:,.0f}" for k, v in r["reference_images_per_s"].items())
        lines.append(f"{r['variant']:<10} {r['params']:>7,} {r['normlab_images_per_s']:>14,.0f} {ref:>24} "
                     f"{r.get('speedup_vs_best_reference', float('nan')):>7.2f}x {r['normlab_epoch_seconds']:>8.1f} "
                     f"{r.get('reference_epoch_seconds', float('nan')):>12.1f}")
    if "slowdown_vs_bn" in result:
        lines.append("time per image relative to bn: " + ", ".join(f"{k} {v:.2f}x" for k, v in result["slowdown_vs_bn"].items()))
    for r in result["variants"]:
        if "compiled_images_per_s" in r:
            lines.append(f"{r['variant']} under torch.compile: {r['compiled_images_per_s']:,.0f} img/s after a "
                         f"{r['compiled_warmup_seconds']:.1f} s warm-up (eager: {r['eager_warmup_seconds']:.1f} s)")
        if "other_layout_images_per_s" in r:
            lines.append(f"{r['variant']} with the other memory layout: {r['other_layout_images_per_s']:,.0f} img/s "
                         f"(normlab uses {r['layout']})")
    if "full_job" in result:
        job = result["full_job"]
        lines.append(f"full job, {job['epochs']} epochs: {job['seconds']:.1f} s (" +
                     ", ".join(f"{r['variant']} {r['seconds']:.1f} s, {r['test_acc']:.2f}%" for r in job["runs"]) + ")")
    return "\n".join(lines) + "\n"
