"""The statistics behind a verdict: like-for-like comparisons, equivalence tests, seed plans.

A published number is compared with the *matching* statistic of the measured seeds (never a mean
with a best), as a difference ``d = measured statistic - published value`` with a standard error
and Welch-Satterthwaite degrees of freedom. Three answers, at the suite's margin ``delta`` (its
``tolerance``):

- **reproduces**: equivalence shown by two one-sided tests at alpha = 0.05 (TOST; Schuirmann 1987),
  i.e. the 90 % confidence interval of ``d`` lies inside (-delta, +delta);
- **differs**: ``d`` is significant (two-sided test at 0.05: the 95 % interval excludes 0) and its
  estimate lies beyond the margin;
- **inconclusive**: neither; with the number of seeds that would decide it at 80 % power if the
  true difference were the one measured (``seeds_needed``).

How each published kind is matched (``compare``):

| kind | measured statistic | variance of d |
|---|---|---|
| mean_std | mean of the seeds | s^2/n + s_p^2/n_p (Welch from summary statistics) |
| single, derived | mean of the seeds; the printed value is ONE draw | s^2 (1 + 1/n) (prediction interval) |
| chart_reading | as single | s^2 (1 + 1/n) + u^2 (u: reading uncertainty) |
| best_of N | E[min of N draws]: from the seeds if n >= N, else fitted normal | s^2 (c_n + v_N) |
| median_of N | E[median of N draws], likewise | s^2 (c_n + v_N) |
| expected | mean of the seeds (smoke suite: a reference run) | exact: |d| <= tolerance, no test |

``v_N`` is the variance of the min (median) of N standard normal draws (the printed best is one
such draw) and ``c_n`` the variance of our estimator of its mean, both for a unit spread.
With fewer than 3 seeds, ``single`` and ``chart_reading`` take ``s`` from ``PRIOR_SPREAD`` (and the
report says so); every other kind needs at least 2 seeds of its own. Distributions are scipy's.
Errors are "lower is better": best = minimum.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy import special

# scipy.stats and scipy.integrate are imported where they are needed (the order statistics of a
# best-of-N or median-of-N comparison), not here: together they cost ~0.6 s of a report's 5 s
# budget (benchmarks/report_speed.py), and every other path needs only scipy.special's ufuncs.

ALPHA = 0.05  # the level of every test (MLPerf Training's convergence check uses 0.05 too)
POWER = 0.80  # the power a seed plan aims for
MAX_SEEDS = 100  # a plan that needs more than this says so instead of a number


@dataclass(frozen=True)
class PriorSpread:
    """The seed-to-seed std (percentage points of test error) assumed when a cell has < 3 seeds."""

    std: float
    source: str


# Seed spread of one network's final test error on the full test set, from runs printed as mean±std.
PRIOR_SPREAD: dict[str, PriorSpread] = {
    "cifar10": PriorSpread(0.2, "He et al. 2016 Table 6 ResNet-110 6.61±0.16 (5 runs); He et al. 2016b "
                                "Table 4 ResNet-1001 4.89±0.14 and 4.69±0.20 (5 runs each); rounded up to 0.2"),
    "cifar100": PriorSpread(0.3, "He et al. 2016b Table 4 ResNet-1001 CIFAR-100 22.68±0.22 (5 runs); rounded "
                                 "up to 0.3 because smaller CIFAR-100 nets spread more (test-set binomial noise "
                                 "alone is 0.43 pp at 25 % error)"),
}

# Standard uncertainty (1 sd, pp) of a value read off a chart, when the suite gives none.
DEFAULT_READING_UNCERTAINTY = 0.1


@dataclass(frozen=True)
class Comparison:
    """One published value against the matching statistic of the measured seeds."""

    kind: str  # the published kind compared
    statistic: str  # what was computed from the seeds, in words
    estimate: float  # the measured statistic
    low: float  # its 95 % interval (a prediction interval where the published value is one draw)
    high: float
    diff: float  # estimate - published
    se: float  # standard error of diff
    df: float  # Welch-Satterthwaite degrees of freedom (inf: normal quantiles)
    diff_low: float  # 90 % CI of diff: reproduces iff inside (-margin, +margin)
    diff_high: float
    margin: float
    verdict: str  # reproduces | differs | inconclusive
    p_equivalence: float  # TOST p-value (the larger of the two one-sided p-values)
    p_difference: float  # two-sided p-value of d = 0
    seeds_needed: int | None  # inconclusive: seeds for 80 % power; None: more than MAX_SEEDS / unknown
    prior: bool = False  # the measured spread came from PRIOR_SPREAD
    note: str = ""


# ----------------------------------------------------------------------------------------------
# Small helpers over scipy


# Student's t through scipy.special's ufuncs (stdtr, stdtrit: the same functions scipy.stats.t
# calls, without its per-call overhead, which dominated the calibration benchmark); df = inf: normal.
def t_quantile(q: float, df: float) -> float:
    return float(special.ndtri(q) if not math.isfinite(df) else special.stdtrit(df, q))


def t_cdf(x: float, df: float) -> float:
    return float(special.ndtr(x) if not math.isfinite(df) else special.stdtr(df, x))


def welch_df(components: Sequence[tuple[float, float]]) -> float:
    """Welch-Satterthwaite df of a sum of variance components (variance, df); df = inf: known."""
    total = sum(v for v, _ in components)
    denom = sum(v * v / d for v, d in components if math.isfinite(d) and d > 0)
    if total <= 0 or denom <= 0:
        return math.inf
    return total * total / denom


def c4(n: int) -> float:
    """E[s] / sigma for n normal draws (so Var(s / sigma) = 1 - c4^2)."""
    return math.exp(0.5 * math.log(2 / (n - 1)) + special.gammaln(n / 2) - special.gammaln((n - 1) / 2))


@lru_cache(maxsize=None)
def _order_stat(N: int, k: int) -> tuple[float, float]:
    """(mean, variance) of order statistic k of N standard normals: Phi^-1(U), U ~ Beta(k, N-k+1)."""
    from scipy import integrate, stats

    beta = stats.beta(k, N - k + 1)
    m1 = integrate.quad(lambda u: stats.norm.ppf(u) * beta.pdf(u), 0, 1, limit=200)[0]
    m2 = integrate.quad(lambda u: stats.norm.ppf(u) ** 2 * beta.pdf(u), 0, 1, limit=200)[0]
    return m1, m2 - m1 * m1


@lru_cache(maxsize=None)
def order_stat_moments(N: int, stat: str) -> tuple[float, float]:
    """(mean, variance) of the min or median of N standard normal draws, by numerical integration.
    The median of an even N is the mean of the two middle order statistics k, k+1: its variance
    needs their covariance, from their joint density (dblquad)."""
    if stat == "min":
        return _order_stat(N, 1)
    if N % 2 == 1:
        return _order_stat(N, (N + 1) // 2)
    k = N // 2
    m_k, var_k = _order_stat(N, k)  # by symmetry X_(k+1) has mean -m_k and the same variance
    from scipy import integrate, stats

    log_c = special.gammaln(N + 1) - special.gammaln(k) - special.gammaln(N - k)
    phi, Phi = stats.norm.pdf, stats.norm.cdf

    def xy_density(y: float, x: float) -> float:  # x * y * density of (X_(k), X_(k+1)) at x < y
        return x * y * math.exp(log_c) * Phi(x) ** (k - 1) * phi(x) * phi(y) * (1 - Phi(y)) ** (N - k - 1)

    e_xy = integrate.dblquad(xy_density, -8, 8, lambda x: x, lambda x: 8)[0]
    cov = e_xy + m_k * m_k
    return 0.0, (2 * var_k + 2 * cov) / 4


def subset_weights(n: int, N: int, stat: str) -> np.ndarray:
    """Weights w with w @ sorted(x) = the mean, over all N-subsets of the n seeds, of the subset's
    min (median): the unbiased estimate of E[min (median) of N draws] from the seeds alone.
    Order statistic k of a subset is x_(i) with probability C(i-1, k-1) C(n-i, N-k) / C(n, N)."""
    i = np.arange(1, n + 1)
    ks = [1] if stat == "min" else ([(N + 1) // 2] if N % 2 else [N // 2, N // 2 + 1])
    w = np.zeros(n)
    for k in ks:
        w += special.comb(i - 1, k - 1) * special.comb(n - i, N - k) / special.comb(n, N)
    return w / len(ks)


SIMULATED_SEEDS = 30  # the subset estimator's variance is simulated up to this many seeds


@lru_cache(maxsize=None)
def subset_estimator_variance(n: int, N: int, stat: str) -> float:
    """Variance of the subset estimator (``subset_weights``) for n unit-normal seeds. It has no
    closed form: it is measured on 10,000 simulated sets of n seeds (fixed seed, so a report is
    deterministic; relative accuracy about 1.5 %). Beyond SIMULATED_SEEDS it is scaled as 1/n, the
    large-sample rate of a U-statistic (Hoeffding 1948), so a seed plan stays cheap."""
    if n > SIMULATED_SEEDS:
        return subset_estimator_variance(SIMULATED_SEEDS, N, stat) * SIMULATED_SEEDS / n
    rng = np.random.default_rng(20161 + n)
    draws = np.sort(rng.standard_normal((10_000, n)), axis=1)
    return float(np.var(draws @ subset_weights(n, N, stat), ddof=1))


def fitted_estimator_variance(n: int, N: int, stat: str) -> float:
    """Variance of mean + s * e_N (the fitted normal's min / median of N) for n unit-normal seeds:
    Var(mean) + e_N^2 Var(s), the two being independent."""
    e, _ = order_stat_moments(N, stat)
    return 1 / n + e * e * (1 - c4(n) ** 2)


# ----------------------------------------------------------------------------------------------
# Verdicts and power


def decide(diff: float, se: float, df: float, margin: float) -> tuple[str, float, float, float, float]:
    """(verdict, 90 % CI low, high, TOST p, two-sided p) for a difference with its standard error."""
    if se == 0 or not math.isfinite(se):
        if se == 0:  # no spread at all: the difference is exact
            verdict = "reproduces" if abs(diff) < margin else "differs" if abs(diff) > margin else "inconclusive"
            return verdict, diff, diff, float(abs(diff) >= margin), float(diff == 0)
        return "inconclusive", -math.inf, math.inf, 1.0, 1.0
    t90 = t_quantile(1 - ALPHA, df)
    low, high = diff - t90 * se, diff + t90 * se
    p_equiv = max(t_cdf(-(diff + margin) / se, df), t_cdf((diff - margin) / se, df))
    p_diff = 2 * t_cdf(-abs(diff) / se, df)
    if p_equiv < ALPHA:
        verdict = "reproduces"
    elif p_diff < ALPHA and abs(diff) > margin:
        verdict = "differs"
    else:
        verdict = "inconclusive"
    return verdict, low, high, p_equiv, p_diff


# The noncentral t through scipy.special: nctdtr(df, nc, x) is what scipy.stats.nct.cdf(x, df, nc)
# computes, and nct.sf(x, df, nc) equals nctdtr(df, -nc, -x) (T with noncentrality nc is -T' with
# -nc), bit for bit in scipy 1.17 (tests/test_report_stats.py), except far in a tail where nctdtr
# gives NaN and scipy.stats a 0 or 1: there, and only there, scipy.stats is asked.
def _nct_cdf(x: np.ndarray, df: np.ndarray, nc: np.ndarray) -> np.ndarray:
    v = special.nctdtr(df, nc, x)
    if np.isnan(v).any():
        from scipy import stats

        v = np.where(np.isnan(v), stats.nct.cdf(x, df, nc), v)
    return v


def _nct_sf(x: np.ndarray, df: np.ndarray, nc: np.ndarray) -> np.ndarray:
    v = special.nctdtr(df, -nc, -x)
    if np.isnan(v).any():
        from scipy import stats

        v = np.where(np.isnan(v), stats.nct.sf(x, df, nc), v)
    return v


def decide_probability(diff: float, se: np.ndarray, df: np.ndarray, margin: float) -> np.ndarray:
    """P(reproduces) + P(differs) if the true difference is ``diff``, for arrays of (se, df).

    Noncentral t, the usual approximation: P(TOST) >= P(upper test rejects) - P(lower test does
    not reject) (Phillips 1990 gives the exact, Owen's-Q form); P(differs) takes the margin
    condition at the expected standard error."""
    df = np.minimum(df, 1e6)
    t90 = special.stdtrit(df, 1 - ALPHA)
    t975 = special.stdtrit(df, 1 - ALPHA / 2)
    repro = _nct_cdf(-t90, df, (diff - margin) / se) - _nct_cdf(t90, df, (diff + margin) / se)
    cut = np.maximum(t975, margin / se)
    differs = _nct_sf(cut, df, diff / se) + _nct_cdf(-cut, df, diff / se)
    return np.clip(repro, 0, 1) + differs


# ----------------------------------------------------------------------------------------------
# The comparison of each published kind


@dataclass(frozen=True)
class Target:
    """What a published number says about the population it came from."""

    kind: str
    value: float
    runs: int | None = None  # N of best_of / median_of / mean_std
    std: float | None = None  # the printed std of mean_std
    reading_uncertainty: float | None = None  # chart readings


def _stat_of(kind: str) -> str:
    return {"best_of": "min", "median_of": "median"}[kind]


def variance_components(target: Target, sigma: float, n: int, prior: bool) -> list[tuple[float, float]]:
    """(variance, df) components of Var(d) for n seeds of spread ``sigma``."""
    df = math.inf if prior else n - 1
    k = target.kind
    if k == "mean_std":
        runs = target.runs or 1
        sp = target.std if target.std is not None else sigma
        return [(sigma**2 / n, df), (sp**2 / runs, runs - 1 if runs > 1 else math.inf)]
    if k in ("best_of", "median_of"):
        N, stat = target.runs or 1, _stat_of(k)
        c = subset_estimator_variance(n, N, stat) if n >= N else fitted_estimator_variance(n, N, stat)
        return [(sigma**2 * (c + order_stat_moments(N, stat)[1]), df)]
    comps = [(sigma**2 * (1 + 1 / n), df)]  # single, derived, chart_reading: one draw
    if k == "chart_reading":
        u = target.reading_uncertainty if target.reading_uncertainty is not None else DEFAULT_READING_UNCERTAINTY
        comps.append((u * u, math.inf))
    return comps


def estimate(target: Target, values: np.ndarray) -> tuple[float, str]:
    """The measured statistic that matches ``target`` and how it was obtained."""
    n = len(values)
    if target.kind in ("best_of", "median_of"):
        N, stat = target.runs or 1, _stat_of(target.kind)
        what = "best" if stat == "min" else "median"
        if n >= N:
            return float(subset_weights(n, N, stat) @ np.sort(values)), f"{what} of {N}, from the {n} seeds"
        if n < 2:
            return float(values.mean()) if n else math.nan, f"{what} of {N}: needs ≥ 2 seeds"
        e, _ = order_stat_moments(N, stat)
        return float(values.mean() + values.std(ddof=1) * e), f"{what} of {N}, fitted normal ({n} seeds)"
    if target.kind in ("single", "derived", "chart_reading"):
        return float(values.mean()) if n else math.nan, "one run (95 % prediction interval)"
    return float(values.mean()) if n else math.nan, f"mean of {n}"


def seeds_needed(target: Target, diff: float, sigma: float, margin: float, prior: bool = False) -> int | None:
    """The fewest seeds (2..MAX_SEEDS) with P(decided) >= POWER if the truth is ``diff``; None if none."""
    if not (math.isfinite(diff) and math.isfinite(sigma) and sigma > 0):
        return None
    ns = np.arange(2, MAX_SEEDS + 1)
    se, df = np.empty(len(ns)), np.empty(len(ns))
    for j, n in enumerate(ns):
        # A planned run measures its own spread once it has >= 3 seeds; below that a prior stays a prior.
        comps = variance_components(target, sigma, int(n), prior and n < 3)
        se[j] = math.sqrt(sum(v for v, _ in comps))
        df[j] = welch_df(comps)
    ok = np.nonzero(decide_probability(diff, se, df, margin) >= POWER)[0]
    return int(ns[ok[0]]) if len(ok) else None


def compare(target: Target, values: Sequence[float], margin: float, dataset: str | None = None,
            plan: bool = True) -> Comparison:
    """Compare measured per-seed ``values`` with a published ``target`` at the equivalence ``margin``.
    ``plan``: work out ``seeds_needed`` for an inconclusive verdict (the costly part)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    est, statistic = estimate(target, x)
    diff = est - target.value
    note = ""
    if target.kind == "expected":  # a reference run of this benchmark: exact, as CI's gate needs
        t = t_quantile(1 - ALPHA / 2, n - 1) if n > 1 else math.nan
        half = t * x.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
        verdict = "reproduces" if abs(diff) <= margin + 1e-9 else "differs"
        return Comparison(target.kind, statistic, est, est - half, est + half, diff, math.nan, math.nan,
                          math.nan, math.nan, margin, verdict, math.nan, math.nan, None,
                          note="exact comparison with a reference run: |diff| ≤ margin, no test")
    prior = False
    sigma = float(x.std(ddof=1)) if n >= 2 else math.nan
    one_draw = target.kind in ("single", "derived", "chart_reading")
    if one_draw and n < 3:
        p = PRIOR_SPREAD.get(dataset or "")
        if p is not None:
            sigma, prior = p.std, True
            note = f"fewer than 3 seeds: prior spread {p.std:g} pp for {dataset} (sources: stats.PRIOR_SPREAD)"
        elif n < 2:
            note = f"fewer than 2 seeds and no prior spread for dataset {dataset!r}"
    if n == 0 or not math.isfinite(sigma):
        if n and not note:
            note = "needs ≥ 2 seeds to estimate the spread"
        p = PRIOR_SPREAD.get(dataset or "")
        need = seeds_needed(target, 0.0 if n == 0 else diff, p.std, margin, prior=True) if p and plan else None
        return Comparison(target.kind, statistic, est, math.nan, math.nan, diff, math.nan, math.nan,
                          math.nan, math.nan, margin, "inconclusive", math.nan, math.nan, need, prior, note)
    comps = variance_components(target, sigma, n, prior)
    se = math.sqrt(sum(v for v, _ in comps))
    df = welch_df(comps)
    verdict, low90, high90, p_equiv, p_diff = decide(diff, se, df, margin)
    # The measured statistic's own 95 % interval: for one-draw kinds the prediction interval of one
    # new run, mean ± t s sqrt(1 + 1/n); for mean_std the mean's CI; for best/median of N the
    # estimator's CI. The published side (its std, its reading uncertainty, v_N) is left out.
    if target.kind in ("best_of", "median_of"):
        N, stat = target.runs or 1, _stat_of(target.kind)
        c = subset_estimator_variance(n, N, stat) if n >= N else fitted_estimator_variance(n, N, stat)
        own = [(sigma**2 * c, n - 1)]
    else:
        own = comps[:1]
    own_se = math.sqrt(sum(v for v, _ in own))
    half = t_quantile(1 - ALPHA / 2, welch_df(own)) * own_se
    want = plan and verdict == "inconclusive"
    plan = seeds_needed(target, diff, sigma, margin, prior) if want else None
    if want and plan is None:
        why = " (one published run spreads as much as one of ours)" if one_draw else ""
        note = "; ".join(x for x in (note, f"no number of seeds up to {MAX_SEEDS} decides it at ±{margin:g}{why}") if x)
    return Comparison(target.kind, statistic, est, est - half, est + half, diff, se, df, low90, high90, margin,
                      verdict, p_equiv, p_diff, plan, prior, note)
