"""normlab.stats on inputs whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from normlab.stats import compare_pairs, holm, spread


def test_spread_is_mean_sample_std_and_the_t_interval():
    s = spread([91.0, 92.0, 93.0])
    assert s.n == 3 and s.mean == 92.0 and s.std == pytest.approx(1.0)
    # t(0.975, df=2) = 4.3027; half-width t * s / sqrt(n)
    half = 4.302652729911275 * 1.0 / math.sqrt(3)
    assert (s.low, s.high) == (pytest.approx(92.0 - half), pytest.approx(92.0 + half))


def test_spread_of_degenerate_samples():
    assert spread([]).n == 0 and math.isnan(spread([]).mean)
    one = spread([90.5])
    assert (one.n, one.mean, one.std, one.low, one.high) == (1, 90.5, None, None, None)
    same = spread([90.5, 90.5, 90.5])
    assert (same.std, same.low, same.high) == (0.0, 90.5, 90.5)


def test_holm_matches_the_step_down_rule():
    # Sorted p: 0.01 (x3 = 0.03), 0.02 (x2 = 0.04), 0.04 (x1 = 0.04); back in input order.
    assert holm([0.04, 0.01, 0.02]) == [pytest.approx(0.04), pytest.approx(0.03), pytest.approx(0.04)]
    # Monotone: a larger raw p never gets a smaller adjusted one, and nothing exceeds 1.
    assert holm([0.5, 0.001, 0.6]) == [pytest.approx(1.0), pytest.approx(0.003), pytest.approx(1.0)]
    assert holm([]) == []


def test_equal_runs_are_not_significant():
    rng = np.random.default_rng(1)
    same = rng.normal(91.0, 0.3, size=5)
    (t,) = compare_pairs({"bn": list(same), "gn:4": list(same + rng.normal(0, 1e-3, size=5))})
    assert t.tested and t.p > 0.9 and t.significant is False
    assert t.low < 0 < t.high
    assert "not significant at the 5% level" in t.sentence()


def test_noise_alone_is_rarely_called_significant():
    """Two variants drawn from one distribution: about alpha of the pairs come out significant."""
    rng = np.random.default_rng(7)
    hits = sum(compare_pairs({"x": list(rng.normal(90, 0.5, 3)), "y": list(rng.normal(90, 0.5, 3))})[0].significant
               for _ in range(400))
    assert hits / 400 < 0.1


def test_well_separated_runs_are_significant():
    (t,) = compare_pairs({"gn:4": [91.0, 91.2, 91.1], "bn": [92.0, 92.3, 92.1]})
    assert (t.a, t.b) == ("bn", "gn:4"), "oriented so the first has the higher mean"
    assert t.difference == pytest.approx(92.1333 - 91.1, abs=1e-3)
    expected = scipy_stats.ttest_ind([92.0, 92.3, 92.1], [91.0, 91.2, 91.1], equal_var=False).pvalue
    assert t.p == pytest.approx(expected) and t.p < 0.01 and t.significant
    assert 0 < t.low <= t.difference <= t.high
    text = t.sentence()
    assert text.startswith("`bn` 92.13 vs `gn:4` 91.10") and "significant at the 5% level" in text
    assert "not significant" not in text


def test_holm_correction_is_applied_across_pairs():
    samples = {"a": [90.0, 90.4, 90.2], "b": [90.9, 91.1, 91.3], "c": [90.1, 90.6, 90.2]}
    tests = compare_pairs(samples)
    assert [(t.a, t.b) for t in tests] == [("b", "a"), ("c", "a"), ("b", "c")]
    raw = [t.p for t in tests]
    assert [t.p_holm for t in tests] == [pytest.approx(p) for p in holm(raw)]
    assert all(t.family == 3 for t in tests)
    assert "after Holm's correction for 3 comparisons" in tests[0].sentence()


def test_one_seed_is_not_tested():
    (t,) = compare_pairs({"bn": [92.5], "gn:4": [92.1, 92.0]})
    assert not t.tested and t.significant is None and t.p_holm is None and t.verdict == "not tested"
    assert "at least 2 finished seeds of each (there are 1 and 2)" in t.sentence() and "--seeds 3" in t.sentence()


def test_zero_variance_on_both_sides_is_not_tested():
    """SciPy says p = 0 here; a gap between two constants says nothing about noise."""
    (t,) = compare_pairs({"bn": [92.0, 92.0], "gn:4": [91.0, 91.0]})
    assert not t.tested and t.significant is None and "exactly the same value" in t.sentence()


def test_zero_variance_on_one_side_is_still_a_welch_test():
    (t,) = compare_pairs({"bn": [92.0, 92.0, 92.0], "gn:4": [91.0, 91.6, 90.7]})
    # Welch with one side constant: t = gap / (s_b / sqrt(n_b)), df = n_b - 1, two-sided.
    b = np.array([91.0, 91.6, 90.7])
    t_stat = (92.0 - b.mean()) / (b.std(ddof=1) / math.sqrt(3))
    expected = 2 * scipy_stats.t.sf(t_stat, df=2)
    assert t.tested and t.p == pytest.approx(expected) and t.significant is False


def test_untestable_pairs_do_not_count_in_the_correction():
    tests = compare_pairs({"a": [90.0, 90.5], "b": [92.0, 92.4], "c": [91.0]})
    tested = [t for t in tests if t.tested]
    assert len(tested) == 1 and tested[0].family == 1 and tested[0].p_holm == tested[0].p


def test_a_p_value_never_prints_as_the_5_percent_line_it_is_not_on():
    from normlab.stats import fmt_p
    assert fmt_p(0.049979) == "0.04998" and fmt_p(0.05004) == "0.05004" and fmt_p(0.05) == "0.05"
    assert fmt_p(0.012345) == "0.0123" and fmt_p(0.4567) == "0.46" and fmt_p(3.2e-5) == "3.2e-05"


def test_an_interval_of_tied_seeds_is_not_shown_as_certain():
    from normlab.report.aggregate import percent_interval
    assert percent_interval(spread([90.0, 90.0, 90.0])) is None
    assert percent_interval(spread([89.0, 90.0, 91.0])) == pytest.approx((90 - 4.302652729911275 / math.sqrt(3),
                                                                          90 + 4.302652729911275 / math.sqrt(3)))
