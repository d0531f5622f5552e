"""One small sweep with the local executor, 1 worker vs 2, and what N machines would give; as JSON.

    python benchmarks/sweep_workers.py                   # Fashion-MNIST subset, 12 cells, 3 configs x 2, ~2 min on 2 cores
    python benchmarks/sweep_workers.py --workers 4 --batch-sizes 8,32,128 --train-limit 8000

Each configuration runs as its own `normlab sweep` process (startup, data loading and, for
workers, process spawning all count), timed from outside. 1 worker trains cells one after
another with torch using every core (and again with cores/N threads, the fair baseline: same
threads per cell); N workers train N cells at once with cores/N threads each.

The N-machine estimate is arithmetic on the measured cell times, not a measurement: with M
machines running k cells at once each, a sweep takes at least max(sum of cell times / (M k),
longest cell) plus the fixed start-up, if cells are spread evenly (Ray hands a free slot the
next cell, which approaches that for many short cells).
Keeps a copy in benchmarks/results/<date>-sweep-workers.json. Measure on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sweep(out: Path, workers: int, opts, threads: int | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)

    command = [sys.executable, "-m", "normlab", "sweep", "--batch-sizes", opts.batch_sizes, "--norms", opts.norms,
               "--seeds", str(opts.seeds), "--epochs", str(opts.epochs), "--train-limit", str(opts.train_limit),
               "--test-limit", str(opts.test_limit), "--dataset", opts.dataset, "--out", str(out),
               "--workers", str(workers)] + (["--data-dir", opts.data_dir] if opts.data_dir else []) + \
              (["--threads", str(threads)] if threads else [])
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    results = json.loads((out / "results.json").read_text())
    cells = [c["seconds"] for c in results["runs"]]
    by_batch: dict[int, list[float]] = {}
    for c in results["runs"]:
        by_batch.setdefault(c["axes"]["batch_size"], []).append(c["seconds"])
    longest = max(results["runs"], key=lambda c: c["seconds"])
    return {"workers": workers, "threads_per_worker": threads or results["executor"].get("threads_per_worker") or
            results["runs"][0]["threads"], "wall_seconds": round(wall, 2), "cells": len(cells),
            "sum_cell_seconds": round(sum(cells), 2), "longest_cell_seconds": round(max(cells), 2),
            "longest_cell": longest["key"],
            "mean_cell_seconds_by_batch_size": {b: round(statistics.fmean(v), 2) for b, v in sorted(by_batch.items())},
            "overhead_seconds": round(wall - sum(cells) / workers, 2) if workers == 1 else None,
            "table": (out / "sweep.csv").read_text()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batch-sizes", default="16,128")
    p.add_argument("--norms", default="bn,gn,ln")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--train-limit", type=int, default=3000)
    p.add_argument("--test-limit", type=int, default=500)
    p.add_argument("--workers", type=int, default=2, help="compared against 1 worker")
    p.add_argument("--repeats", type=int, default=2, help="runs of each configuration, taken in turn (default 2)")
    opts = p.parse_args()

    load_before = [round(v, 2) for v in os.getloadavg()]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    runs: dict[str, list[dict]] = {"one": [], "single": [], "many": []}
    with tempfile.TemporaryDirectory() as tmp:
        # Taken in turn, repeatedly, so a burst of load from another job hits every configuration;
        # each keeps its fastest repeat, the one least disturbed.
        for repeat in range(opts.repeats):
            # The default (one process, torch on every core), one process on cores/N threads, N processes.
            runs["one"].append(sweep(Path(tmp) / f"one{repeat}", 1, opts))
            runs["single"].append(sweep(Path(tmp) / f"single{repeat}", 1, opts, threads=max(1, cores // opts.workers)))
            runs["many"].append(sweep(Path(tmp) / f"many{repeat}", opts.workers, opts))
    walls = {k: [r["wall_seconds"] for r in v] for k, v in runs.items()}
    one, single, many = (min(runs[k], key=lambda r: r["wall_seconds"]) for k in ("one", "single", "many"))
    # Every column but the last (seconds per cell).
    tables = [[row.rsplit(",", 1)[0] for row in r.pop("table").splitlines()] for r in (one, single, many)]
    # Numbers depend on the thread count (sums in another order), not on the executor.
    same = tables[1] == tables[2]

    # The unit of work a slot gets: one cell at cores/N threads (the single-process run on as many threads).
    n = opts.workers
    work, longest = single["sum_cell_seconds"], single["longest_cell_seconds"]
    startup = round(single["wall_seconds"] - work, 2)
    estimate = {m: round(max(work / (m * n), longest) + startup, 1) for m in (1, 2, 4, 8, 16, 32)}
    ratio = round(one["wall_seconds"] / many["wall_seconds"], 2)
    ratio_same_threads = round(single["wall_seconds"] / many["wall_seconds"], 2)
    saturation = math.ceil(work / (n * longest))
    paragraph = (
        f"On this {cores}-core machine, shared with other jobs (load average {load_before[0]} before), the same "
        f"{one['cells']}-cell sweep took {one['wall_seconds']:.0f} s as one process with torch on "
        f"{one['threads_per_worker']} threads, {single['wall_seconds']:.0f} s as one process on "
        f"{single['threads_per_worker']} thread, and {many['wall_seconds']:.0f} s as {n} worker processes of "
        f"{many['threads_per_worker']} thread each: {ratio_same_threads}x the speed of one process at the "
        f"same threads per cell, and {ratio}x that of the default one-process run"
        + (" (torch's threads wait on each other when the cores are shared)" if ratio > ratio_same_threads else "")
        + f". Each is the fastest of {opts.repeats} runs taken in turn. At {single['threads_per_worker']} thread the cells add up to "
        f"{work:.0f} s of training (longest {longest:.1f} s, {single['longest_cell']}); start-up, data loading and "
        f"the figure take {startup:.0f} s. Cells are independent, so on M machines of {n} such slots (Ray handing "
        f"each free slot the next cell) a sweep takes about max(work / (M x {n}), longest cell) + start-up: "
        f"{estimate[1]:.0f} s for this one machine (measured: {many['wall_seconds']:.0f} s), "
        + ", ".join(f"{estimate[m]:.0f} s on {m}" for m in (2, 4, 8)) +
        f". Past {saturation} machine{'s' if saturation > 1 else ''} the longest cell sets the time for a sweep this "
        f"small; a real one (more epochs, more cells) has more work per longest cell and spreads further, each "
        f"node also paying Ray's worker start-up and one copy of the data from the object store.")
    result = {
        "benchmark": "sweep_workers", "dataset": opts.dataset, "cores": cores,
        "sweep": {"batch_sizes": opts.batch_sizes, "norms": opts.norms, "seeds": opts.seeds, "epochs": opts.epochs,
                  "train_limit": opts.train_limit, "test_limit": opts.test_limit},
        "one_worker": one, "one_worker_one_thread_per_n": single, f"{opts.workers}_workers": many,
        "wall_seconds_every_repeat": walls, "wall_time_ratio_1_over_n": ratio, "wall_time_ratio_1_over_n_same_threads_per_cell": ratio_same_threads,
        "same_table_at_same_threads_per_cell": same, "same_table_as_default_threads": tables[0] == tables[2],
        "estimated_wall_seconds_on_m_machines_of_n_slots": estimate,
        "load_average_before": load_before, "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "readme_paragraph": paragraph,
    }
    out = ROOT / "benchmarks" / "results" / f"{time.strftime('%Y%m%d-%H%M')}-sweep-workers.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print(f"saved {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
