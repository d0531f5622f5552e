"""Training throughput, normlab's path vs the seed-style reference, as JSON.

    python benchmarks/throughput.py                      # CIFAR-10 net, bn/ln/gn, this machine
    python benchmarks/throughput.py --dataset fashion-mnist --full   # plus the whole 20-epoch job

Takes the options of `normlab bench`; prints its JSON and keeps a copy in
benchmarks/results/<date>-<device>-<dataset>.json. Measure on a quiet machine: `uptime`'s
load average should be near 0 before starting.
"""

import json
import os
import sys
import time
from pathlib import Path

from normlab.cli import main

if __name__ == "__main__":
    import contextlib
    import io
    args = sys.argv[1:]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["bench", "--json", *args])
    if code:
        sys.exit(code)
    result = json.loads(buffer.getvalue())
    result["load_average_1_5_15_min_after"] = [round(v, 2) for v in os.getloadavg()]
    out = Path(__file__).parent / "results" / (
        f"{time.strftime('%Y%m%d-%H%M')}-{result['device']}-{result['dataset']}.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print(f"saved {out}", file=sys.stderr)
