"""``bench plan SUITE``: how many seeds each cell needs to be decided, and what they would cost.

Per compared cell: the seeds that decide its verdict (reproduces or differs) with 80 % power at the
suite's margin (``stats.seeds_needed``), from the spread and difference measured in the database
where the cell has results, else from the dataset's prior spread and no difference (i.e. "if the
paper is right"); then the compute: images one job trains on, divided by the images/s that
finished jobs of the same model measured (any device; the median over their epochs), else by the
figure of ``MEASURED_SPEED`` that the output names.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from benchmark.config import JobSpec
from benchmark.report.aggregate import SuiteResults, _with_printed_means
from benchmark.report.stats import PRIOR_SPREAD, Target, compare, seeds_needed
from benchmark.suite_types import Suite
from benchmark.vocabulary import IMAGES_PER_SECOND, JobState


CIFAR_TRAIN = 50_000


@dataclass(frozen=True)
class Speed:
    images_per_second: float
    source: str


# Measured training throughput of ResNet-20 (fp32, batch 128), used only where no finished job of
# the model is in the database. Deeper nets of the same width cost in proportion to their depth
# (the 3x3 convolutions dominate): depth 110 is taken as 110/20 times slower.
MEASURED_SPEED: dict[str, Speed] = {
    "cpu": Speed(565.0, "ResNet-20 fp32 on the idle 2-core dev VM (Intel, AVX-512; torch 2.13 CPU, 2 threads): "
                        "benchmarks/train_speed.py --models resnet20 --epochs 3 --images 4096, 543/565/567 "
                        "images/s per epoch (release 0.1.0 notes); replace it with your own figure"),
}


@dataclass(frozen=True)
class PlanRow:
    label: str
    published: str  # the published text it is compared with
    seeds_done: int
    seeds_in_suite: int
    spread: float
    spread_source: str  # "measured (n=5)" | "prior (cifar10)"
    verdict: str  # the verdict now (or "no results")
    seeds_needed: int | None  # None: no number up to stats.MAX_SEEDS decides it
    images_per_job: int
    images_per_second: float
    speed_source: str
    hours: float  # compute for seeds_needed seeds of this cell (all of them, not only the missing)

    @property
    def seeds_to_add(self) -> int | None:
        return None if self.seeds_needed is None else max(0, self.seeds_needed - self.seeds_done)


def images_per_job(spec: JobSpec) -> int:
    """Training images one job goes through (evaluation not counted)."""
    d, s = spec.data, spec.schedule
    if s.unit == "iteration":
        return s.length * spec.optim.batch_size
    full = d.synthetic_train if d.dataset == "synthetic" else CIFAR_TRAIN
    n = d.train_size if d.train_size is not None else full - d.val_size
    return s.length * n


def measured_speed(jobs: pd.DataFrame | None, metrics: pd.DataFrame | None, spec: JobSpec) -> Speed | None:
    """Median images/s over the epochs of finished jobs with this model configuration."""
    if jobs is None or jobs.empty or metrics is None or metrics.empty or "config" not in jobs.columns:
        return None
    model = json.loads(json.dumps(spec.to_dict()["model"]))  # as stored: tuples become lists

    def same(config: str) -> bool:  # fields only one side knows (added later, at defaults) are skipped
        stored = json.loads(config).get("model", {})
        return all(stored[k] == v for k, v in model.items() if k in stored)

    done = jobs[jobs["state"] == JobState.DONE]
    ids = [r.job_id for r in done.itertuples() if same(r.config)]
    m = metrics[metrics["job_id"].isin(ids) & (metrics["name"] == IMAGES_PER_SECOND)]["value"].dropna()
    if m.empty:
        return None
    devices = sorted({str(d) for d in done[done["job_id"].isin(ids)]["device"].dropna()})
    return Speed(float(m.median()), f"measured: {len(ids)} finished job(s) of this model on {', '.join(devices) or '?'}")


def fallback_speed(spec: JobSpec, device: str = "cpu") -> Speed:
    base = MEASURED_SPEED[device]
    depth = spec.model.depth
    return Speed(base.images_per_second * 20 / depth,
                 f"table (no finished job of the model): {base.images_per_second:g} img/s x 20/depth, {base.source}")


def plan_rows(res: SuiteResults, jobs: pd.DataFrame | None, speed_metrics: pd.DataFrame | None) -> list[PlanRow]:
    suite: Suite = res.suite
    spec_of = {}
    for j in suite.jobs:
        spec_of.setdefault(j.label, j.spec)
    rows = []
    published = _with_printed_means(suite.published)
    for p in published:
        spec = spec_of[p.label]
        target = Target(p.kind, p.value, p.runs, p.std, p.reading_uncertainty)
        margin = p.tolerance if p.tolerance is not None else suite.tolerance
        done = res.cells[p.label][0] == JobState.DONE
        values = res._seed_values(res.at_selected, p.label, p.metric) if done else np.array([])
        values = values[np.isfinite(values)]
        prior = PRIOR_SPREAD.get(spec.data.dataset)
        n_expected = sum(1 for j in suite.jobs if j.label == p.label)
        if p.kind == "expected":
            need, sigma, source, verdict = n_expected, math.nan, "exact comparison", "exact"
        elif len(values) >= 2:
            c = compare(target, values, margin, spec.data.dataset)
            sigma, source, verdict = float(values.std(ddof=1)), f"measured (n={len(values)})", c.verdict
            need = len(values) if c.verdict != "inconclusive" else c.seeds_needed
        elif prior is not None:
            sigma, source, verdict = prior.std, f"prior ({spec.data.dataset})", "no results"
            need = seeds_needed(target, 0.0, sigma, margin, prior=True)
        else:
            sigma, source, verdict, need = math.nan, f"none: no prior for {spec.data.dataset}", "no results", None
        speed = measured_speed(jobs, speed_metrics, spec) or fallback_speed(spec)
        per_job = images_per_job(spec)
        hours = (need or 0) * per_job / speed.images_per_second / 3600
        rows.append(PlanRow(p.label, _text(p), len(values), n_expected, sigma, source, verdict, need, per_job,
                            speed.images_per_second, speed.source, hours if need else math.nan))
    return rows


def _text(p: Any) -> str:
    from benchmark.report.aggregate import published_text

    return published_text(p)
