"""Models trained per second at small batches: one at a time vs K stacked vs torch.compile, as JSON.

    python benchmarks/small_batch.py                          # bn, ln, gn:4 at batch 2, 8, 32, 128
    python benchmarks/small_batch.py --batches 2,8 --compile  # also torch.compile'd one model and stack
    python benchmarks/small_batch.py --whole --norms bn --batches 2,8   # train_stack vs train_run, real data
    python benchmarks/small_batch.py --nchw-stacks --threads 1 --stacks 8   # also each stack in NCHW
    python benchmarks/small_batch.py --nchw-one --threads 1 --stacks 8      # also one model in NCHW
    python benchmarks/small_batch.py --dataset cifar10 --norms gn:4 --nchw-stacks --threads 1   # the 3x32x32 net
    python benchmarks/small_batch.py --whole-layouts --norms gn:4 --batches 128 --stacks 1 --train-images 10000

Every path is the code a run executes: `Training.step` on `TrainBatches` (one at a time, what
train_run does) or `StackedTraining.step` on `stacked_epoch` (train_stack), on the 28x28 net
(`--dataset cifar10`: the CIFAR-10 net) with random uint8 images. The paths of one (variant,
batch) cell take turns window by window in this one process, each window ~0.25 s, and each
path's number is the median over windows, so a machine shared with other jobs slows them alike; the ratios are the result. Each path's rate is
also given as GFLOP/s (the training FLOPs of one image, forward and backward as PyTorch's
FlopCounterMode counts them, times images per second), next to a float32 matrix product's
GFLOP/s on the same threads: how close a path is to what this CPU's cores compute at best. Intra-op threads
(1 or 2) are a path setting too, switched before each window. Prints JSON and keeps a copy in
benchmarks/results/<date>-small-batch.json with the load average before and after.
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from normlab.data.batches import Normalizer, TrainBatches
from normlab.data.catalog import dataset_info
from normlab.stacked import StackedTraining, stacked_epoch
from normlab.train import CHANNELS_LAST, TrainConfig, Training
from normlab.variants import Variant


def endless(make_epoch):
    while True:
        yield from make_epoch()


class Path_:
    """One way to train: ``window(steps)`` runs that many steps and returns the seconds taken."""

    def __init__(self, name, threads, models, step, batches):
        self.name, self.threads, self.models, self.step, self.batches = name, threads, models, step, batches

    def window(self, steps: int) -> float:
        torch.set_num_threads(self.threads)
        started = time.perf_counter()
        for _ in range(steps):
            loss, _ = self.step(*next(self.batches))
        loss.sum().item()          # one sync per window, as train_run reads once per epoch
        return time.perf_counter() - started


def make_paths(variant, batch, images, labels, stacks, threads, compile_one, nchw_stacks=False, nchw_one=False,
               dataset="fashion-mnist"):
    info, cpu = dataset_info(dataset), torch.device("cpu")
    cfg = TrainConfig(dataset=dataset, batch_size=batch, epochs=1000)
    data = TrainBatches(images, labels, info, batch, Normalizer(info, cpu, CHANNELS_LAST))
    nchw = TrainBatches(images, labels, info, batch, Normalizer(info, cpu, False))

    def one(name, t, batches, channels_last=CHANNELS_LAST, compiled=False):
        training = Training(variant, cfg, cpu, len(batches), channels_last)
        if compiled:         # the model compiled (forward and backward); the step around it as is
            training.model = torch.compile(training.model)
        generator = torch.Generator().manual_seed(0)
        return Path_(name, t, 1, training.step, endless(lambda: batches.epoch(generator)))

    def stack(name, t, k, batches, channels_last=CHANNELS_LAST, compiled=False):
        training = StackedTraining(variant, list(range(1, k + 1)), cfg, cpu, len(batches), channels_last)
        if compiled:
            training.model = torch.compile(training.model)
        generators = [torch.Generator().manual_seed(s) for s in range(k)]
        return Path_(name, t, k, training.step, endless(lambda: stacked_epoch(batches, generators)))

    paths = []
    for t in threads:
        paths.append(one(f"one/{t}t", t, data))
        if nchw_one:         # one model in NCHW (train_run stays in channels_last: RESULTS.md)
            paths.append(one(f"one-nchw/{t}t", t, nchw, channels_last=False))
        for k in stacks:
            paths.append(stack(f"stack{k}/{t}t", t, k, data))
            if nchw_stacks:      # the same stack in NCHW, as train_stack trains narrow GroupNorm groups
                paths.append(stack(f"stack{k}-nchw/{t}t", t, k, nchw, channels_last=False))
        if compile_one:
            # Every NormNet shares nn.Sequential.forward, so without a reset dynamo stops compiling
            # after 8 of them (its recompile limit) and silently runs them eagerly.
            torch._dynamo.reset()
            paths.append(one(f"compiled-one/{t}t", t, data, compiled=True))
            if stacks:
                paths.append(stack(f"compiled-stack{stacks[-1]}/{t}t", t, stacks[-1], data, compiled=True))
    return paths


def measure(paths, rounds: int, window_s: float) -> dict:
    steps = {}
    for p in paths:                        # warm up (and compile), then size each path's window
        p.window(3)
        steps[p.name] = max(1, round(window_s / (p.window(3) / 3)))
    rates = {p.name: [] for p in paths}
    for r in range(rounds):
        order = paths[r % len(paths):] + paths[:r % len(paths)]     # rotate who goes first
        for p in order:
            rates[p.name].append(p.models * steps[p.name] / p.window(steps[p.name]))
    return {name: round(statistics.median(v), 2) for name, v in rates.items()}


def train_flops_per_image(variant, dataset: str = "fashion-mnist") -> float:
    """FLOPs of one image's forward and backward pass (convolutions and the classifier)."""
    from torch.utils.flop_counter import FlopCounterMode
    from normlab.models import build_model
    model = build_model(variant, dataset)
    with FlopCounterMode(display=False) as counter:
        x = torch.randn(8, *dataset_info(dataset).shape)
        torch.nn.functional.cross_entropy(model(x), torch.randint(0, 10, (8,))).backward()
    return counter.get_total_flops() / 8


def matmul_gflops(threads: int, n: int = 1024, rounds: int = 5) -> float:
    """A float32 n x n matrix product's GFLOP/s on ``threads`` threads, median of ``rounds``: a
    ceiling that small convolutions do not reach."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(4):
            a @ b
        rates.append(4 * 2 * n**3 / (time.perf_counter() - started) / 1e9)
    return round(statistics.median(rates), 1)


def whole_runs(norm: str, batch: int, k: int, train_size: int, test_size: int, rounds: int = 2,
               layouts: bool = False) -> dict:
    """The whole path on real Fashion-MNIST (first images of each split), one epoch with its
    evaluation: K seeds through train_stack against the same seeds through train_run, taking turns;
    with ``layouts``, K seeds through train_run in channels_last against the same in NCHW."""
    import contextlib
    import dataclasses
    from normlab.data import load_splits
    from normlab.stacked import train_stack
    from normlab.train import train_run
    train, test = load_splits("fashion-mnist")
    train = dataclasses.replace(train, images=train.images[:train_size], labels=train.labels[:train_size])
    test = dataclasses.replace(test, images=test.images[:test_size], labels=test.labels[:test_size])
    cfg, variant, cpu = TrainConfig(dataset="fashion-mnist", epochs=1, batch_size=batch), Variant.parse(norm), torch.device("cpu")
    seeds = list(range(1, k + 1))
    if layouts:
        paths = {"train_run x K": lambda: [train_run(variant, s, cfg, train, test, cpu, channels_last=True) for s in seeds],
                 "train_run NCHW x K": lambda: [train_run(variant, s, cfg, train, test, cpu, channels_last=False)
                                                for s in seeds]}
    else:
        paths = {"train_run x K": lambda: [train_run(variant, s, cfg, train, test, cpu) for s in seeds],
                 f"train_stack K={k}": lambda: train_stack(variant, seeds, cfg, train, test, cpu)}
    seconds = {name: [] for name in paths}
    torch.set_num_threads(1)
    for _ in range(rounds):
        for name, run in paths.items():
            started = time.perf_counter()
            with contextlib.redirect_stdout(None):
                results = run()
            seconds[name].append(round(time.perf_counter() - started, 2))
            seconds[name + " test_acc"] = [r.record["final"]["test_acc"] for r in results]
    fastest = {name: min(v) for name, v in seconds.items() if "acc" not in name}
    return {"variant": norm, "batch_size": batch, "train_images": train_size, "test_images": test_size,
            "seconds": seconds, "speedup": round(fastest["train_run x K"] / fastest[list(paths)[1]], 2),
            "load_average_1min": round(os.getloadavg()[0], 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--norms", default="bn,ln,gn:4")
    parser.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "cifar10"),
                        help="whose net and image shape (random images) the step timings use; --whole reads Fashion-MNIST")
    parser.add_argument("--batches", default="2,8,32,128")
    parser.add_argument("--stacks", default="4,8")
    parser.add_argument("--threads", default="1,2", help="intra-op thread counts to compare")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--train-images", type=int, default=1000, help="--whole, --whole-layouts: training images")
    parser.add_argument("--window", type=float, default=0.25, help="seconds per timed window")
    parser.add_argument("--whole", action="store_true", help="time train_stack against train_run on real data instead")
    parser.add_argument("--compile", action="store_true", help="also a torch.compile'd single model and stack of the largest K")
    parser.add_argument("--nchw-stacks", action="store_true", help="also each stack in NCHW instead of channels_last")
    parser.add_argument("--nchw-one", action="store_true", help="also one model at a time in NCHW")
    parser.add_argument("--whole-layouts", action="store_true",
                        help="time train_run in channels_last against train_run in NCHW on real data instead")
    args = parser.parse_args()
    load_before = [round(v, 2) for v in os.getloadavg()]
    torch.manual_seed(0)
    images = torch.randint(0, 256, (4096, *dataset_info(args.dataset).shape), dtype=torch.uint8)
    labels = torch.randint(0, 10, (4096,))
    stacks = [int(k) for k in args.stacks.split(",") if k]     # --stacks "": no stacks
    if (args.whole or args.whole_layouts) and not stacks:
        parser.error("--whole and --whole-layouts train K seeds: pass --stacks K")
    if (args.whole or args.whole_layouts) and args.dataset != "fashion-mnist":
        parser.error("--whole and --whole-layouts train on the real Fashion-MNIST: drop --dataset")
    default_threads = torch.get_num_threads()
    threads = [int(t) for t in args.threads.split(",")]
    matmul = {} if args.whole or args.whole_layouts else {f"{t}t": matmul_gflops(t) for t in threads}
    torch.set_num_threads(default_threads)
    cells = []
    for norm in args.norms.split(","):
        for batch in [int(b) for b in args.batches.split(",")]:
            if args.whole or args.whole_layouts:
                cells.append(whole_runs(norm, batch, stacks[-1], args.train_images, 1000, layouts=args.whole_layouts))
                print(json.dumps(cells[-1]), flush=True)
                continue
            started, flops = time.perf_counter(), train_flops_per_image(Variant.parse(norm), args.dataset)
            rates = measure(make_paths(Variant.parse(norm), batch, images, labels, stacks, threads, args.compile,
                                       args.nchw_stacks, args.nchw_one, args.dataset), args.rounds, args.window)
            # Each path against one model at a time on the same thread count; the thread effect itself
            # is one/1t against one/2t.
            cell = {"dataset": args.dataset, "variant": norm, "batch_size": batch, "models_per_second": rates,
                    "ratio_vs_one_at_a_time_same_threads": {
                        k: round(v / rates["one/" + k.split("/")[1]], 2) for k, v in rates.items()},
                    "train_mflop_per_image": round(flops / 1e6, 2),
                    "gflop_per_second": {k: round(v * batch * flops / 1e9, 1) for k, v in rates.items()},
                    "seconds": round(time.perf_counter() - started, 1),
                    "load_average_1min": round(os.getloadavg()[0], 2)}
            cells.append(cell)
            print(json.dumps(cell), flush=True)
    result = {"benchmark": "small_batch", "torch": torch.__version__, "cpu_count": os.cpu_count(),
              "default_threads": default_threads, "rounds": args.rounds, "window_s": args.window,
              "matmul_1024_gflop_per_second": matmul,
              "load_average_1_5_15_min_before": load_before,
              "load_average_1_5_15_min_after": [round(v, 2) for v in os.getloadavg()], "cells": cells}
    out = Path(__file__).parent / "results" / f"{time.strftime('%Y%m%d-%H%M')}-small-batch{'-whole' if args.whole or args.whole_layouts else ''}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
