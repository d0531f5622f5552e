"""A stack's memory format: ms per model-step of one model (channels_last, what train_run uses),
a stack in channels_last and a stack in NCHW, as JSON.

    python benchmarks/stack_memory_format.py                      # bn, gn:4, ln at batch 2-32
    python benchmarks/stack_memory_format.py --batches 8 --norms gn:2,gn:8

Every path is the code a run executes (`Training.step` on `TrainBatches`, `StackedTraining.step`
on `stacked_epoch`), on the 28x28 net with random uint8 images, 1 intra-op thread, K seeds per
stack as `stacked.stack_size` would stack them (16 up to batch 4, 8 at 8, 4 at 16 and 32). The
three paths take turns window by window (20 steps each, 2 untimed first), and each number is the
median of 5 windows; read the ratios, not the rates. Prints JSON with the load average.
"""

import argparse
import json
import os
import statistics
import time

import torch

from normlab.data.batches import Normalizer, TrainBatches
from normlab.data.catalog import dataset_info
from normlab.stacked import StackedTraining, stacked_epoch
from normlab.train import TrainConfig, Training
from normlab.variants import Variant

K = {2: 16, 4: 16, 8: 8, 16: 4, 32: 4}
STEPS = 20


def paths_of(variant: Variant, batch: int, images, labels) -> dict:
    info, cpu = dataset_info("fashion-mnist"), torch.device("cpu")
    cfg, k = TrainConfig(dataset="fashion-mnist", batch_size=batch, epochs=1000), K[batch]
    paths = {}
    for name, channels_last, stack in (("one_cl", True, False), ("stack_cl", True, True), ("stack_nchw", False, True)):
        data = TrainBatches(images, labels, info, batch, Normalizer(info, cpu, channels_last))
        if stack:
            model = StackedTraining(variant, list(range(1, k + 1)), cfg, cpu, len(data), channels_last=channels_last)
            batches = stacked_epoch(data, [torch.Generator().manual_seed(i) for i in range(k)])
        else:
            model = Training(variant, cfg, cpu, len(data), channels_last=channels_last)
            batches = data.epoch(torch.Generator().manual_seed(0))
        paths[name] = (model, [next(batches) for _ in range(STEPS)], k if stack else 1)
    return paths


def window(path) -> float:
    """ms per model-step over one pass of the path's batches."""
    model, batches, models = path
    started = time.perf_counter()
    for x, y in batches:
        loss, _ = model.step(x, y)
    loss.sum().item()
    return (time.perf_counter() - started) / len(batches) / models * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--norms", default="bn,gn:4,ln")
    parser.add_argument("--batches", default="2,4,8,16,32")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = torch.randint(0, 256, (4096, 1, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (4096,))
    rows, load_before = [], os.getloadavg()
    for variant in map(Variant.parse, args.norms.split(",")):
        for batch in map(int, args.batches.split(",")):
            paths = paths_of(variant, batch, images, labels)
            for path in paths.values():
                window(path)                      # warm-up, untimed
            times = {name: [] for name in paths}
            for _ in range(args.rounds):
                for name, path in paths.items():
                    times[name].append(window(path))
            ms = {name: statistics.median(t) for name, t in times.items()}
            rows.append({"variant": str(variant), "batch": batch, "K": K[batch],
                         **{f"{name}_ms_per_model": round(t, 3) for name, t in ms.items()},
                         "stack_cl_x": round(ms["one_cl"] / ms["stack_cl"], 2),
                         "stack_nchw_x": round(ms["one_cl"] / ms["stack_nchw"], 2)})
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"what": f"ms per model-step, 1 thread, paths alternated, median of {args.rounds} windows of "
                              f"{STEPS} steps", "load_before": load_before, "load_after": os.getloadavg(), "rows": rows}))


if __name__ == "__main__":
    main()
