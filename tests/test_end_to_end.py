"""The real thing: `normlab compare` as a process, on the real Fashion-MNIST (Debian's package)."""

import json
import subprocess
import sys

import pytest

from conftest import FASHION_DIR

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist (make test installs it as root)"),
]


def test_compare_on_real_fashion_mnist(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "normlab", "compare", "--dataset", "fashion-mnist", "--quick",
                           "--epochs", "1", "--norms", "bn,gn", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["data_source"] == str(FASHION_DIR)
    accuracy = {run["variant"]: run["final"]["test_acc"] for run in results["runs"]}
    # 1 epoch on 10,000 images; chance is 10%.
    assert accuracy["bn"] > 50 and accuracy["gn:4"] > 25, accuracy
    assert "bn" in proc.stdout and "gn:4" in proc.stdout
