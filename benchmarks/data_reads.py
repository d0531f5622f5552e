"""Reading data at the door, as JSON: the capped IDX reader against an uncapped gzip.decompress
(main before the cap), and an image folder decoded with Pillow against the same folder read
back from its npz cache.

    python benchmarks/data_reads.py                  # real Fashion-MNIST train images, 3,000 generated 32x32 images

The two paths of each comparison alternate in one process and the medians are reported with
their ratio and the load average: timings on a shared machine are noisy, ratios less so.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

IDX = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def alternate(paths: dict, rounds: int, before=lambda: None) -> dict:
    times = {name: [] for name in paths}
    for _ in range(rounds):
        for name, run in paths.items():
            before()
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    medians = {name: round(statistics.median(t), 4) for name, t in times.items()}
    first, second = medians.values()
    return {"median_s": medians, "ratio": round(first / second, 3)}


def idx_reads() -> dict:
    from normlab.data.formats import read_idx
    uncapped = lambda: np.frombuffer(gzip.decompress(IDX.read_bytes()), np.uint8, offset=16)
    return {"file": str(IDX), **alternate({"capped": lambda: read_idx(IDX, 3), "uncapped": uncapped}, 7)}


def folder_reads(per_class: int = 300) -> dict:
    from PIL import Image
    root = Path(tempfile.mkdtemp())
    os.environ["XDG_CACHE_HOME"] = str(root / "cache")
    from normlab.data import load_dataset, own
    rng = np.random.default_rng(0)
    for c in range(10):
        (root / "images" / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
            image.save(root / "images" / f"c{c}" / f"{i:04d}.{'jpg' if i % 3 == 2 else 'png'}")
    drop_cache = lambda: shutil.rmtree(root / "cache", ignore_errors=True)
    cleared = lambda: own._load.cache_clear()
    try:
        result = alternate({"decode_and_cache": lambda: (drop_cache(), load_dataset(str(root / "images"))),
                            "from_cache": lambda: load_dataset(str(root / "images"))}, 3, cleared)
    finally:
        shutil.rmtree(root)
    return {"images": 10 * per_class, "kind": "32x32 RGB, 2/3 PNG, 1/3 JPEG", **result}


if __name__ == "__main__":
    print(json.dumps({"idx": idx_reads(), "folder": folder_reads(), "loadavg": os.getloadavg()[0]}, indent=1))
