"""results.json grouped by variant: per-epoch curves across seeds and final metrics.

Plain numbers only (no plotting), so the curves, the results table and the findings all read
the same aggregates.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from ..stats import Spread

METRICS = ("test_loss", "test_acc", "val_loss", "val_acc", "train_loss", "train_acc")

# The accuracy a comparison ranks by. Records with a validation split carry the test accuracy at
# the epoch validation chose; older ones (and --val 0) only the test accuracy after the last epoch.
AT_BEST_VAL = "test_acc_at_best_val"


MIN_SEEDS_FOR_INTERVAL = 3     # from 2 seeds the t-interval is mean ± 12.7 std/sqrt(2): tens of points wide


def percent_interval(s: Spread) -> tuple[float, float] | None:
    """The 95% t-interval of a mean percentage (accuracy, error), kept inside [0, 100]; None
    below MIN_SEEDS_FOR_INTERVAL seeds, and where every seed gave the same value (a zero-width
    interval would claim a certainty that three tied seeds do not give). The report's tables and
    sweep.csv both show this one."""
    if s.low is None or s.n < MIN_SEEDS_FOR_INTERVAL or s.std == 0:
        return None
    return max(0.0, s.low), min(100.0, s.high)


def headline_key(runs: list[dict]) -> str:
    """'test_acc_at_best_val' when every finished run has it, else 'test_acc' (final)."""
    done = [r for r in runs if r.get("status") == "done" and "final" in r]
    return AT_BEST_VAL if done and all(AT_BEST_VAL in r["final"] for r in done) else "test_acc"


def headline_words(key: str, val_size: int | None = None) -> str:
    """What the ranked accuracy is, in words the report uses in its tables and findings."""
    if key != AT_BEST_VAL:
        return "test accuracy after the last epoch (no validation split, so no epoch was chosen)"
    held = f"{val_size:,} held-out training images" if isinstance(val_size, int) else "held-out training images"
    return (f"test accuracy at the epoch chosen by validation accuracy on {held}; the test set was never used "
            f"to choose")


@dataclass
class Curve:
    """One metric of one variant across its seeds: per epoch the mean, min, max and seed count."""
    epochs: list[int] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    low: list[float] = field(default_factory=list)
    high: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)


@dataclass
class VariantRuns:
    variant: str
    runs: list[dict]                   # this variant's entries of results.json, one per seed

    @property
    def done(self) -> list[dict]:
        return [r for r in self.runs if r.get("status") == "done"]

    @property
    def diverged(self) -> list[dict]:
        return [r for r in self.runs if str(r.get("status", "")).startswith("diverged")]

    @property
    def unfinished(self) -> list[dict]:
        return [r for r in self.runs if r.get("status") in ("pending", "running")]

    def final(self, key: str) -> list[float]:
        """A final metric over the seeds that finished (diverged or unfinished runs say nothing
        about where a variant ends up)."""
        return [float(r["final"][key]) for r in self.done if key in r.get("final", {})]

    def values(self, key: str) -> list[float]:
        return [float(r[key]) for r in self.runs if key in r]

    def curve(self, metric: str) -> Curve:
        by_epoch: dict[int, list[float]] = {}
        for run in self.runs:
            for e in run.get("epochs", []):
                if isinstance(e.get(metric), (int, float)):      # val_* is absent with --val 0
                    by_epoch.setdefault(int(e["epoch"]), []).append(float(e[metric]))
        curve = Curve()
        for epoch in sorted(by_epoch):
            values = by_epoch[epoch]
            curve.epochs.append(epoch)
            curve.mean.append(statistics.fmean(values))
            curve.low.append(min(values))
            curve.high.append(max(values))
            curve.seeds.append(len(values))
        return curve

    def status_text(self) -> str:
        """'done', 'diverged at epoch 4', 'running (3/20 epochs)' or, across seeds, '2 done, 1 diverged at epoch 4'."""
        def one(run: dict) -> str:
            status = str(run.get("status", "unknown"))
            if status in ("pending", "running"):
                return f"{status} ({len(run.get('epochs', []))} epochs so far)"
            return status
        texts = [one(r) for r in self.runs]
        if len(texts) == 1:
            return texts[0]
        counts = {t: texts.count(t) for t in dict.fromkeys(texts)}
        return ", ".join(f"{n} {t}" for t, n in counts.items())


def group_runs(run, variants: list[str]) -> list[VariantRuns]:
    groups = [VariantRuns(v, [r for r in run.runs if r["variant"] == v]) for v in variants]
    return [g for g in groups if g.runs]


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None with fewer than two values)."""
    if not values:
        return float("nan"), None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)
