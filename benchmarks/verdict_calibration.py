"""Are the verdicts calibrated? Monte Carlo over synthetic seed results from known normals.

For each published kind and n = 3, 5, 10 seeds: draw the paper's printed number from the true
distribution (one run, the best / median of N runs, or a mean ± std of N runs; a chart reading
adds its reading noise), draw our n seeds from a distribution whose mean is the paper's plus a
gap, and ask ``benchmark.report.stats.compare`` for a verdict at the margin. Printed per row:

- gap 0 (the truth equals the published number): the rate of *differs* (a false alarm; it must
  stay at or below alpha + 1 pp = 6 %) and the rate of *reproduces*;
- gaps 0.25, 0.5, 1.0 pp: the rate of *differs* (power to see a real gap; at the margin 0.5 a
  gap is not yet "beyond the margin", so about half is the most to expect there).

    .venv/bin/python benchmarks/verdict_calibration.py [--trials 10000] [--sigma 0.2] [--margin 0.5]

Spread 0.2 pp and margin 0.5 pp are CIFAR-10's (stats.PRIOR_SPREAD; he2016_table's tolerance).
The expected kind is left out: it is an exact comparison with a reference run, not a test.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.report.stats import ALPHA, Target, compare  # noqa: E402

KINDS = ("mean_std", "single", "best_of", "median_of", "chart_reading")
GAPS = (0.25, 0.5, 1.0)
RUNS = 5  # N of best_of / median_of / mean_std, as He 2016 and He 2016b print them
READING_SD = 0.1  # the default reading uncertainty of a chart value


def published_draw(kind: str, rng: np.random.Generator, mu: float, sigma: float) -> Target:
    """The paper's printed number for a population N(mu, sigma^2)."""
    if kind == "mean_std":
        runs = rng.normal(mu, sigma, RUNS)
        return Target(kind, float(runs.mean()), RUNS, float(runs.std(ddof=1)))
    if kind == "best_of":
        return Target(kind, float(rng.normal(mu, sigma, RUNS).min()), RUNS)
    if kind == "median_of":
        return Target(kind, float(np.median(rng.normal(mu, sigma, RUNS))), RUNS)
    value = float(rng.normal(mu, sigma))
    if kind == "chart_reading":
        return Target(kind, value + float(rng.normal(0, READING_SD)), reading_uncertainty=READING_SD)
    return Target(kind, value)


def rates(kind: str, n: int, gap: float, trials: int, sigma: float, margin: float, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    counts = {"reproduces": 0, "differs": 0, "inconclusive": 0}
    mu = 6.6
    for _ in range(trials):
        target = published_draw(kind, rng, mu, sigma)
        ours = rng.normal(mu + gap, sigma, n)
        # "cifar10" gives the prior spread; it is used only below 3 seeds, i.e. never here.
        counts[compare(target, ours, margin, "cifar10", plan=False).verdict] += 1
    return {k: v / trials for k, v in counts.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--sigma", type=float, default=0.2, help="true seed spread, pp")
    ap.add_argument("--margin", type=float, default=0.5, help="equivalence margin (suite tolerance), pp")
    ap.add_argument("--kinds", nargs="*", default=list(KINDS))
    args = ap.parse_args()
    t0 = time.perf_counter()
    print(f"{args.trials} trials per cell; true seed spread {args.sigma} pp; margin ±{args.margin} pp; "
          f"alpha {ALPHA}; published N = {RUNS}\n")
    head = ["kind", "n", "differs@0", "reproduces@0"] + [f"differs@{g}" for g in GAPS]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    worst = 0.0
    for kind in args.kinds:
        for n in (3, 5, 10):
            base = rates(kind, n, 0.0, args.trials, args.sigma, args.margin, seed=KINDS.index(kind) * 100 + n)
            power = [rates(kind, n, g, args.trials, args.sigma, args.margin, seed=KINDS.index(kind) * 100_000 + n * 1000 + int(g * 100))["differs"]
                     for g in GAPS]
            worst = max(worst, base["differs"])
            cells = [kind, str(n), f"{base['differs']:.2%}", f"{base['reproduces']:.2%}"] + [f"{p:.2%}" for p in power]
            print("| " + " | ".join(cells) + " |", flush=True)
    verdict = "OK" if worst <= ALPHA + 0.01 else "TOO HIGH"
    print(f"\nlargest false 'differs' rate at gap 0: {worst:.2%} (limit {ALPHA + 0.01:.0%}): {verdict}; "
          f"took {time.perf_counter() - t0:.0f} s")
    sys.exit(0 if worst <= ALPHA + 0.01 else 1)


if __name__ == "__main__":
    main()
