"""Memory kept by the allocator vs glibc's defaults: whole runs, timed and counted, as JSON.

    python benchmarks/page_faults.py                     # bn at batch 2 (3 seeds stacked) and 128, ~3 min
    python benchmarks/page_faults.py --batch-sizes 128 --epochs 3 --repeats 3

Three arms, each a fresh process (glibc's malloc settings are per process), taking turns:

- **normlab**: what a run does: `train.keep_freed_memory()` keeps freed memory in the process
  and evaluation goes in batches of `data.batches.EVAL_BATCH` (256).
- **eval 256**: evaluation in batches of 256, `keep_freed_memory` a no-op (glibc's defaults).
- **eval 1000**: glibc's defaults and evaluation in batches of 1,000: normlab's path before both.

Each arm trains the sweep's cell (Fashion-MNIST, the first --train-limit images less --val held
out, --test-limit test images, one-cycle SGD, evaluation on validation and test after every epoch)
with `train_stack` for 3 seeds (small batches, as a sweep stacks them) or `train_run` for one, on
1 thread, and reports wall seconds, CPU seconds in user and kernel mode and minor page faults
(getrusage). Keeps a copy in benchmarks/results/<date>-page-faults.json. Measure on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARMS = ("eval1000", "eval256", "normlab")

CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(1)
arm, batch, epochs, train_limit, val, test_limit, data_dir = sys.argv[1:8]
import importlib
train, stacked = importlib.import_module("normlab.train"), importlib.import_module("normlab.stacked")   # normlab.train is also a function
if arm != "normlab":
    train.keep_freed_memory = stacked.keep_freed_memory = lambda: False
if arm == "eval1000":
    train.evaluate.__wrapped__.__defaults__ = (False, 1000)
from normlab.config import TrainConfig
from normlab.data import load_splits
from normlab.runs import limit
from normlab.data.split import holdout
from normlab.stacked import train_stack
from normlab.variants import Variant
tr, te = load_splits("fashion-mnist", data_dir or None)
tr, te = limit(tr, int(train_limit)), limit(te, int(test_limit))
tr, va, _ = holdout(tr, int(val))
cfg = TrainConfig(batch_size=int(batch), epochs=int(epochs))
seeds = [1, 2, 3] if int(batch) <= 16 else [1]
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
if len(seeds) > 1:
    train_stack(Variant.parse("bn"), seeds, cfg, tr, te, torch.device("cpu"), val=va)
else:
    train.train_run(Variant.parse("bn"), 1, cfg, tr, te, torch.device("cpu"), val=va)
r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
print(json.dumps({"seconds": round(t1 - t0, 3), "user": round(r1.ru_utime - r0.ru_utime, 3),
                  "kernel": round(r1.ru_stime - r0.ru_stime, 3), "minor_faults": r1.ru_minflt - r0.ru_minflt,
                  "models": len(seeds)}))
"""


def run_arm(arm: str, batch: int, opts) -> dict:
    env = dict(os.environ, NORMLAB_OFFLINE="1", PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run([sys.executable, "-c", CHILD, arm, str(batch), str(opts.epochs), str(opts.train_limit),
                          str(opts.val), str(opts.test_limit), opts.data_dir or ""],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="2,128")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-limit", type=int, default=1500)
    parser.add_argument("--val", type=int, default=500)
    parser.add_argument("--test-limit", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist"
                        if Path("/usr/share/datasets/fashion-mnist").is_dir() else None)
    opts = parser.parse_args()
    cells = []
    for batch in map(int, opts.batch_sizes.split(",")):
        runs = {arm: [] for arm in ARMS}
        for _ in range(opts.repeats):
            for arm in ARMS:
                runs[arm].append(run_arm(arm, batch, opts))
        median = {arm: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "user", "kernel", "minor_faults")}
                  for arm, rs in runs.items()}
        cells.append({"batch_size": batch, "models": runs["normlab"][0]["models"], "runs": runs, "median": median,
                      "speedup_over_eval1000": {arm: round(median["eval1000"]["seconds"] / median[arm]["seconds"], 3)
                                                for arm in ARMS},
                      "load_average": os.getloadavg()})
        print(f"batch {batch}: " + ", ".join(f"{arm} {m['seconds']:.1f} s ({m['minor_faults']:.0f} faults)"
                                             for arm, m in median.items()), file=sys.stderr)
    result = {"benchmark": "page_faults", "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "options": vars(opts),
              "threads": 1, "cells": cells}
    text = json.dumps(result, indent=1)
    print(text)
    keep = ROOT / "benchmarks" / "results" / f"{time.strftime('%Y%m%d-%H%M')}-page-faults.json"
    keep.write_text(text + "\n")


if __name__ == "__main__":
    main()
