"""How sure can we be? Mean, spread and a 95% interval per variant, and pairwise tests.

Each variant's final test accuracy over its seeds is a small sample (2-10 values). For each
variant: mean, sample standard deviation and the 95% t-interval of the mean. For each pair of
variants: Welch's t-test (no equal-variance assumption; SciPy's ``ttest_ind(equal_var=False)``)
and a percentile-bootstrap 95% interval of the difference in means (``scipy.stats.bootstrap``,
resampling each variant's seeds independently). A study compares many pairs at once, so the
p-values are adjusted with Holm's step-down correction, which keeps the chance of any false
"significant" at 5% across the whole table (and, unlike Bonferroni, loses little power doing it).

Degenerate samples are reported as such, not forced through a formula: fewer than 2 values give
no spread and no test; two variants whose seeds all agree exactly (zero variance on both sides)
have no noise to compare a gap with, so no p-value is given (SciPy would say p = 0).
"""

from __future__ import annotations

import inspect
import itertools
import math
import statistics
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05                  # significance level, after Holm's correction
CONFIDENCE = 0.95             # intervals: of a variant's mean, of a difference of means
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0            # the interval is a Monte Carlo estimate; fixed so reports repeat


@dataclass(frozen=True)
class Spread:
    """One variant's values: mean, sample standard deviation and the t-interval of the mean."""
    n: int
    mean: float
    std: float | None            # None with fewer than 2 values
    low: float | None            # 95% interval of the mean; None with fewer than 2 values
    high: float | None


def spread(values, confidence: float = CONFIDENCE) -> Spread:
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return Spread(0, math.nan, None, None, None)
    mean = statistics.fmean(values)
    if n < 2:
        return Spread(1, mean, None, None, None)
    std = statistics.stdev(values)
    if std == 0:
        # Every seed gave the same number: the interval of the mean is that number (SciPy's
        # t.interval returns nan for a zero scale).
        return Spread(n, mean, 0.0, mean, mean)
    half = stats.t.ppf(0.5 + confidence / 2, df=n - 1) * std / math.sqrt(n)
    return Spread(n, mean, std, mean - half, mean + half)


@dataclass
class PairTest:
    """Variant ``a`` (the higher mean) against ``b``."""
    a: str
    b: str
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    p: float | None = None            # Welch's two-sided p-value; None: not tested (see ``why_not``)
    p_holm: float | None = None       # after Holm's correction over every tested pair
    low: float | None = None          # bootstrap 95% interval of mean_a - mean_b
    high: float | None = None
    why_not: str | None = None        # why there is no test
    family: int = 0                   # how many pairs Holm corrected over
    alpha: float = ALPHA

    @property
    def difference(self) -> float:
        return self.mean_a - self.mean_b

    @property
    def tested(self) -> bool:
        return self.p is not None

    @property
    def significant(self) -> bool | None:
        return None if self.p_holm is None else self.p_holm < self.alpha

    @property
    def verdict(self) -> str:
        if not self.tested:
            return "not tested"
        return "significant" if self.significant else "not significant"

    def sentence(self, unit: str = "points", quote: str = "`", higher: str = "ahead") -> str:
        """The comparison in plain words (Markdown `code` spans around the names by default).
        ``higher``: what the higher mean is ("ahead" for accuracy, "higher" for error)."""
        a, b = f"{quote}{self.a}{quote}", f"{quote}{self.b}{quote}"
        head = (f"{a} {self.mean_a:.2f} vs {b} {self.mean_b:.2f} (mean of {self.n_a} and {self.n_b} seeds; "
                f"difference {self.difference:.2f} {unit}")
        if not self.tested:
            return f"{head}): not tested, {self.why_not}."
        level = f"{100 * self.alpha:g}%"
        corrected = (f", {fmt_p(self.p_holm)} after Holm's correction for {self.family} comparisons"
                     if self.family > 1 else "")
        head += (f", bootstrap {100 * CONFIDENCE:g}% interval {self.low:.2f} to {self.high:.2f}); "
                 f"Welch's t-test p = {fmt_p(self.p)}{corrected}")
        if self.significant:
            return (f"{head}: significant at the {level} level. {a} is {higher} by more than the seed-to-seed noise "
                    f"explains.")
        return (f"{head}: not significant at the {level} level. With these seeds the gap cannot be told apart "
                f"from seed-to-seed noise (which does not show that the two are equal).")


def fmt_p(p: float, alpha: float = 0.05) -> str:
    """Three significant digits below 0.1, more where those would round onto the 5% line (0.049979
    printed as "0.05" beside "significant"); tiny ones in e-notation ("p = 3.2e-05")."""
    if p < 1e-4:
        return f"{p:.1e}"
    if p >= 0.1:
        return f"{p:.2f}"
    for digits in range(3, 8):
        text = f"{p:.{digits}g}"
        if float(text) != alpha or p == alpha:
            return text
    return text


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order.

    The k-th smallest of m p-values is multiplied by (m - k + 1); adjusted values are made
    non-decreasing in that order and capped at 1. Rejecting where adjusted < alpha is Holm's test.
    """
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def welch_p(a: list[float], b: list[float]) -> float:
    with warnings.catch_warnings():
        # Nearly identical seeds make SciPy warn about precision; the p-value is still right.
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _difference_of_means(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


# SciPy 1.15 renamed bootstrap's random_state to rng; pass whichever this SciPy takes.
_RNG_ARG = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


def bootstrap_interval(a: list[float], b: list[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a) - mean(b), each sample resampled on its own.

    Percentile rather than BCa: BCa's jackknife breaks down on the 2-3 seeds a study often has.
    With so few seeds the resamples take few distinct values and the interval is too narrow;
    the t-test, not this interval, decides significance.
    """
    if statistics.pstdev(a) == 0 and statistics.pstdev(b) == 0:
        d = statistics.fmean(a) - statistics.fmean(b)
        return d, d
    result = stats.bootstrap((np.asarray(a, float), np.asarray(b, float)), _difference_of_means, vectorized=True,
                             n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=confidence, method="percentile",
                             **{_RNG_ARG: np.random.default_rng(BOOTSTRAP_SEED)})
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def compare_pairs(samples: dict[str, list[float]], alpha: float = ALPHA) -> list[PairTest]:
    """Every pair of the named samples, each oriented so ``a`` has the higher mean; Holm's
    correction over the pairs that could be tested. Pairs come in the order of ``samples``."""
    tests = []
    for (name_x, x), (name_y, y) in itertools.combinations(samples.items(), 2):
        x, y = [float(v) for v in x], [float(v) for v in y]
        if x and y and statistics.fmean(y) > statistics.fmean(x):
            (name_x, x), (name_y, y) = (name_y, y), (name_x, x)
        test = PairTest(name_x, name_y, len(x), len(y), statistics.fmean(x) if x else math.nan,
                        statistics.fmean(y) if y else math.nan, alpha=alpha)
        if min(len(x), len(y)) < 2:
            test.why_not = (f"a test needs at least 2 finished seeds of each (there are {len(x)} and {len(y)}); "
                            f"rerun with --seeds 3 or more")
        elif statistics.pstdev(x) == 0 and statistics.pstdev(y) == 0:
            test.why_not = ("every seed of each gave exactly the same value, so there is no seed-to-seed noise "
                            "to measure the gap against")
        else:
            p = welch_p(x, y)
            if math.isfinite(p):
                test.p = p
                test.low, test.high = bootstrap_interval(x, y)
            else:
                test.why_not = "Welch's t-test gives no p-value for these values"
        tests.append(test)
    return holm_over(tests)


def holm_over(tests: list[PairTest]) -> list[PairTest]:
    """Holm's correction over every tested one of ``tests`` (one family), in place; returns them."""
    tested = [t for t in tests if t.tested]
    for t, adjusted in zip(tested, holm([t.p for t in tested])):
        t.p_holm = adjusted
        t.family = len(tested)
    return tests
