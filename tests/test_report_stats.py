"""The verdict statistics against values computed independently: scipy's own tests, textbook
tables, brute force. And: each published kind picks its comparison."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from benchmark.report import stats as S
from benchmark.claims import evaluate_claim

X5 = np.array([6.4, 6.5, 6.6, 6.7, 6.8])


def test_welch_from_summary_statistics_matches_scipy():
    c = S.compare(S.Target("mean_std", 6.61, runs=5, std=0.16), X5, margin=0.5)
    ref = stats.ttest_ind_from_stats(X5.mean(), X5.std(ddof=1), 5, 6.61, 0.16, 5, equal_var=False)
    assert c.p_difference == pytest.approx(ref.pvalue, rel=1e-9)
    assert c.diff / c.se == pytest.approx(ref.statistic, rel=1e-9)
    # TOST = the larger p of two one-sided Welch tests against the shifted published mean.
    lower = stats.ttest_ind_from_stats(X5.mean(), X5.std(ddof=1), 5, 6.61 - 0.5, 0.16, 5, equal_var=False,
                                       alternative="greater").pvalue
    upper = stats.ttest_ind_from_stats(X5.mean(), X5.std(ddof=1), 5, 6.61 + 0.5, 0.16, 5, equal_var=False,
                                       alternative="less").pvalue
    assert c.p_equivalence == pytest.approx(max(lower, upper), rel=1e-9)
    assert c.verdict == "reproduces" and -0.5 < c.diff_low < c.diff_high < 0.5


def test_prediction_interval_of_one_new_run_is_the_textbook_one():
    c = S.compare(S.Target("single", 6.61), X5, margin=0.5)
    half = stats.t.ppf(0.975, 4) * X5.std(ddof=1) * math.sqrt(1 + 1 / 5)
    assert (c.low, c.high) == pytest.approx((X5.mean() - half, X5.mean() + half))
    assert c.df == 4 and not c.prior


def test_fewer_than_three_seeds_use_the_prior_spread_and_say_so():
    c = S.compare(S.Target("single", 6.61), X5[:2], margin=0.5, dataset="cifar10")
    assert c.prior and "prior spread 0.2" in c.note and c.df == math.inf
    assert c.se == pytest.approx(0.2 * math.sqrt(1 + 1 / 2))
    c = S.compare(S.Target("single", 6.61), X5[:2], margin=0.5, dataset="synthetic")  # no prior: the seeds' own
    assert not c.prior and c.df == 1


def test_normal_order_statistics_match_the_textbook_tables():
    # Expected smallest of N standard normals and its variance (Teichroew 1956 / Harter 1961 tables).
    assert S.order_stat_moments(2, "min")[0] == pytest.approx(-1 / math.sqrt(math.pi), abs=1e-7)
    assert S.order_stat_moments(2, "min")[1] == pytest.approx(1 - 1 / math.pi, abs=1e-7)
    assert S.order_stat_moments(5, "min") == pytest.approx((-1.16296, 0.44753), abs=1e-4)
    assert S.order_stat_moments(3, "median") == pytest.approx((0.0, 0.44867), abs=1e-4)
    assert S.order_stat_moments(5, "median") == pytest.approx((0.0, 0.28683), abs=1e-4)
    # Even N: the mean of the two middle ones; the median of 2 is the mean of 2 (variance 1/2).
    assert S.order_stat_moments(2, "median") == pytest.approx((0.0, 0.5), abs=1e-6)


@pytest.mark.parametrize("stat, N", [("min", 5), ("median", 5), ("median", 4), ("min", 1)])
def test_subset_estimate_is_the_mean_over_all_subsets(stat, N):
    x = np.random.default_rng(3).normal(size=7)
    pick = min if stat == "min" else np.median
    brute = np.mean([pick(c) for c in itertools.combinations(x, N)])
    assert S.subset_weights(7, N, stat) @ np.sort(x) == pytest.approx(brute)


def test_c4_is_the_bias_of_the_sample_std():
    # c4(n) = E[s]/sigma: 0.7979 for n = 2, 0.9400 for n = 5 (ASTM / Montgomery's control-chart table).
    assert S.c4(2) == pytest.approx(0.7979, abs=1e-4) and S.c4(5) == pytest.approx(0.9400, abs=1e-4)


@pytest.mark.parametrize("kind, n, statistic, variance", [
    ("mean_std", 5, "mean of 5", lambda s: s**2 / 5 + 0.16**2 / 5),
    ("single", 5, "one run (95 % prediction interval)", lambda s: s**2 * (1 + 1 / 5)),
    ("derived", 5, "one run (95 % prediction interval)", lambda s: s**2 * (1 + 1 / 5)),
    ("chart_reading", 5, "one run (95 % prediction interval)", lambda s: s**2 * (1 + 1 / 5) + 0.3**2),
    ("best_of", 5, "best of 5, from the 5 seeds",
     lambda s: s**2 * (S.subset_estimator_variance(5, 5, "min") + 0.44753)),
    ("best_of", 3, "best of 5, fitted normal (3 seeds)",
     lambda s: s**2 * (1 / 3 + 1.16296**2 * (1 - S.c4(3) ** 2) + 0.44753)),
    ("median_of", 5, "median of 5, from the 5 seeds",
     lambda s: s**2 * (S.subset_estimator_variance(5, 5, "median") + 0.28683)),
    ("median_of", 3, "median of 5, fitted normal (3 seeds)", lambda s: s**2 * (1 / 3 + 0.28683)),
])
def test_each_published_kind_picks_its_comparison(kind, n, statistic, variance):
    x = X5[:n]
    target = S.Target(kind, 6.5, runs=5, std=0.16 if kind == "mean_std" else None,
                      reading_uncertainty=0.3 if kind == "chart_reading" else None)
    c = S.compare(target, x, margin=0.5)
    assert c.statistic == statistic
    assert c.se**2 == pytest.approx(variance(x.std(ddof=1)), rel=1e-3)
    expected_estimate = {"best_of": (x.min() if n >= 5 else x.mean() - 1.16296 * x.std(ddof=1))}.get(kind, x.mean())
    assert c.estimate == pytest.approx(expected_estimate, abs=1e-4)


def test_expected_stays_an_exact_comparison():
    c = S.compare(S.Target("expected", 5.8), [4.2, 7.4], margin=5.0)
    assert c.verdict == "reproduces" and math.isnan(c.se) and "exact" in c.note
    assert S.compare(S.Target("expected", 5.8), [12.0, 12.0], margin=5.0).verdict == "differs"


def test_differs_needs_significance_and_a_gap_beyond_the_margin():
    far = S.compare(S.Target("mean_std", 6.61, 5, 0.16), X5 + 1.0, margin=0.5)
    assert far.verdict == "differs" and far.p_difference < 0.05 and abs(far.diff) > 0.5
    # Significant but inside the margin, and not shown equivalent: neither answer.
    near = S.compare(S.Target("mean_std", 6.61, 5, 0.16), X5[:3] + 0.45, margin=0.5)
    assert near.verdict == "inconclusive" and near.seeds_needed is not None


def test_seeds_needed_reaches_the_power_it_promises():
    target = S.Target("mean_std", 6.61, 5, 0.16)
    c = S.compare(target, X5[[0, 4]], margin=0.5)
    assert c.verdict == "inconclusive" and c.seeds_needed == 5  # the example: two seeds, 6.4 and 6.8
    sigma = X5[[0, 4]].std(ddof=1)

    def p(n):
        comps = S.variance_components(target, sigma, n, prior=False)
        return S.decide_probability(c.diff, np.array([math.sqrt(sum(v for v, _ in comps))]),
                                    np.array([S.welch_df(comps)]), 0.5)[0]

    assert p(c.seeds_needed) >= 0.8 > p(c.seeds_needed - 1)
    # ... and a simulation of that many seeds (the truth = the measured difference and spread) agrees.
    rng = np.random.default_rng(0)
    decided = np.mean([S.compare(target, rng.normal(6.61 + c.diff, sigma, c.seeds_needed), 0.5, plan=False).verdict
                       != "inconclusive" for _ in range(2000)])
    assert decided > 0.7


# ----------------------------------------------------------------------------------------------
# Claims: one-sided Welch tests on the seed samples


class Samples:
    """A lookup with per-seed samples."""

    def __init__(self, **cells):
        self.cells = {k.replace("_", "-"): np.asarray(v, dtype=float) for k, v in cells.items()}

    def selected(self, label, metric):
        return self.cells[label]

    def std(self, label, metric):
        return float(np.std(self.cells[label], ddof=1))


def test_claim_is_a_one_sided_welch_test_with_scipys_interval():
    a, b = [6.0, 6.3, 6.1, 6.4, 6.2], [6.5, 6.9, 6.6, 6.8, 6.7]
    r = evaluate_claim('selected("a") < selected("b")', Samples(a=a, b=b))
    ref = stats.ttest_ind(a, b, equal_var=False, alternative="less")
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(confidence_level=0.90)
    (t,) = r.tests
    assert ref.pvalue < 0.05 and r.verdict == "holds"
    assert (t.low, t.high) == pytest.approx((ci.low, ci.high)) and t.df == pytest.approx(ref.df)
    assert evaluate_claim('selected("a") > selected("b")', Samples(a=a, b=b)).verdict == "fails"
    # Overlapping seeds: a difference of means that seed noise explains decides nothing.
    r = evaluate_claim('selected("a") < selected("b")', Samples(a=[6.0, 6.6, 6.2], b=[6.3, 6.1, 6.7]))
    assert r.verdict == "inconclusive" and r.value is True


def test_claim_against_a_constant_is_a_one_sample_test():
    x = [61.0, 63.0, 62.0]
    r = evaluate_claim('selected("p") > 60', Samples(p=x))
    assert r.verdict == "holds" == ("holds" if stats.ttest_1samp(x, 60, alternative="greater").pvalue < 0.05 else "")
    assert evaluate_claim('selected("p") > 61.5', Samples(p=x)).verdict == "inconclusive"


def test_claim_margins_and_three_valued_logic():
    lk = Samples(a=[6.0, 6.1, 6.2], b=[7.0, 7.1, 7.2], c=[6.0, 6.9, 6.4])
    assert evaluate_claim('selected("a") < selected("b") - 0.5', lk).verdict == "holds"
    assert evaluate_claim('selected("a") < selected("b") - 1.5', lk).verdict == "fails"
    assert evaluate_claim('selected("a") < selected("b") and selected("c") < selected("a")', lk).verdict == "inconclusive"
    assert evaluate_claim('selected("a") < selected("b") or selected("c") < selected("a")', lk).verdict == "holds"
    assert evaluate_claim('not (selected("a") < selected("b"))', lk).verdict == "fails"
    # The same cell twice (a - a): its seeds cancel exactly, no spread is left.
    r = evaluate_claim('selected("a") - selected("a") < 0.1', lk)
    assert r.verdict == "holds" and "no seed spread" in r.tests[0].note
    # The deprecated name reads the same values.
    assert evaluate_claim('final("a") < final("b")', lk).verdict == "holds"


def test_power_through_scipy_special_is_scipy_stats_nct():
    """decide_probability calls scipy.special (scipy.stats costs half a second of a report's import):
    the same numbers as scipy.stats.t / nct, bit for bit, over the seed counts and effects a plan meets."""
    from scipy import special, stats as st

    rng = np.random.default_rng(0)
    df = np.concatenate([np.arange(1, 60, dtype=float), rng.uniform(1, 200, 200), [1e6]])
    nc, x = rng.normal(0, 4, len(df)), rng.normal(0, 4, len(df))
    assert np.array_equal(S._nct_cdf(x, df, nc), st.nct.cdf(x, df, nc), equal_nan=True)
    assert np.array_equal(S._nct_sf(x, df, nc), st.nct.sf(x, df, nc), equal_nan=True)
    assert np.isnan(special.nctdtr(df, -nc, -x)).any()  # the tail where scipy.stats is asked is in the sample
    assert np.array_equal(special.stdtrit(df, 0.95), st.t.ppf(0.95, df))
