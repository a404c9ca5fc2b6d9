"""Made-up suites and learning curves, for the reporter's tests and ``benchmarks/report_speed.py``.

The curves look like CIFAR training (error falls, steps down at the milestones, deeper plain nets
end higher) so that figures are worth looking at, but they are not results of anything.
"""
from __future__ import annotations

import zlib
from dataclasses import replace
from typing import Iterable

import numpy as np
import pandas as pd

from benchmark.config import JobSpec, ModelConfig, ScheduleConfig
from benchmark.suite_types import Claim, Job, Published, Suite
from benchmark.vocabulary import (IMAGES_PER_SECOND, ITERATIONS, LR, SECONDS, TEST_ERROR, TEST_LOSS, TRAIN_ERROR,
                                  TRAIN_LOSS, JobState)


def make_suite(
    name: str = "toy",
    depths: Iterable[int] = (20, 56),
    seeds: Iterable[int] = (0, 1, 2),
    epochs: int = 10,
    published: Iterable[Published] = (),
    claims: Iterable[Claim] = (),
    tolerance: float = 1.0,
    select: str = "final",
    val_size: int = 0,
    title: str = "",
    families: Iterable[str] = ("plain", "resnet"),
) -> Suite:
    """A suite of plain-/resnet-<depth> cells, epoch-scheduled, on synthetic data."""
    base = JobSpec(schedule=ScheduleConfig(unit="epoch", length=epochs, milestones=(epochs // 2,)))
    base = replace(base, data=replace(base.data, dataset="synthetic", val_size=val_size))
    jobs = []
    for fam in families:
        for d in depths:
            model = ModelConfig(depth=d, shortcut="none" if fam == "plain" else "A")
            for s in seeds:
                jobs.append(Job(label=f"{fam}-{d}", spec=replace(base, model=model, seed=s)))
    return Suite(name=name, path=f"{name}.toml", title=title or f"Toy suite {name}", tolerance=tolerance,
                 select=select, jobs=tuple(jobs), published=tuple(published), claims=tuple(claims),
                 protocol="synthetic data, made-up curves", source="tests")


def fake_curves(label: str, seed: int, epochs: int, with_alpha: bool = False) -> dict[str, np.ndarray]:
    """Per-epoch metric arrays (errors in percent) for one job."""
    rng = np.random.default_rng(zlib.crc32(f"{label}/{seed}".encode()))
    fam, _, depth = label.partition("-")
    depth = int(depth) if depth.isdigit() else 20
    # Plain nets get worse with depth (degradation), residual nets better.
    floor = 8.0 + (depth / 20.0 if fam == "plain" else -depth / 100.0)
    t = np.arange(1, epochs + 1, dtype=float)
    drop = np.where(t > epochs // 2, 0.6, 1.0)
    test = floor + 60.0 * np.exp(-t / max(epochs / 6, 1)) * drop + rng.normal(0, 0.3, epochs)
    train = test - 4.0 - rng.normal(0, 0.3, epochs)
    out = {
        TEST_ERROR: test,
        TRAIN_ERROR: np.clip(train, 0, None),
        TEST_LOSS: test / 30.0,
        TRAIN_LOSS: train / 30.0,
        LR: np.where(t > epochs // 2, 0.01, 0.1),
        SECONDS: np.full(epochs, 10.0),
        IMAGES_PER_SECOND: np.full(epochs, 5000.0),
        ITERATIONS: t * 391,  # CIFAR-10 at batch 128
    }
    if with_alpha:
        for b in range(3):
            out[f"alpha.stage1.block{b}"] = 0.3 * (1 - np.exp(-t / 3)) * (b + 1)
    return out


def fake_metrics(suite: Suite, with_alpha: bool = False, epochs: int | None = None) -> pd.DataFrame:
    """Long-form metrics for every job of ``suite`` (job_id = job key): ``epochs`` epochs each,
    default the schedule's length (which, for an iteration-scheduled suite, is far too many)."""
    frames = []
    for j in suite.jobs:
        n = epochs or j.spec.schedule.length
        for name, v in fake_curves(j.label, j.seed, n, with_alpha).items():
            frames.append(pd.DataFrame({"job_id": j.key, "suite": suite.name, "key": j.key, "label": j.label,
                                        "seed": j.seed, "epoch": np.arange(1, n + 1), "name": name, "value": v}))
    return pd.concat(frames, ignore_index=True)


def fake_jobs(suite: Suite, state: str = JobState.DONE) -> pd.DataFrame:
    """A jobs frame as the store returns it, every job in ``state``."""
    return pd.DataFrame({
        "job_id": [j.key for j in suite.jobs], "suite": suite.name, "key": [j.key for j in suite.jobs],
        "label": [j.label for j in suite.jobs], "seed": [j.seed for j in suite.jobs], "state": state,
        "attempts": 1, "epochs_done": [j.spec.schedule.length for j in suite.jobs], "error": None,
    })


def fill_store(store, suite: Suite, epochs: int | None = None, with_alpha: bool = False,
               env: dict | None = None) -> int:
    """Register ``suite`` in ``store`` and "run" every job on paper: fake_curves for ``epochs``
    epochs (default: the schedule's length in epochs, 64k iterations being 164 epochs at 391 a
    epoch), recorded through the store API, then done. Returns the number of jobs."""
    store.register_suite(suite)
    jobs = store.jobs_frame([suite.name])
    for r in jobs.itertuples():
        spec = next(j.spec for j in suite.jobs if j.key == r.key)
        n = epochs or (spec.schedule.length if spec.schedule.unit == "epoch" else -(-spec.schedule.length // 391))
        assert store.claim_job_id("synthetic", "cpu", job_id=r.job_id) is not None
        store.set_environment(r.job_id, env or {"torch": "synthetic", "device": "cpu", "git_commit": None})
        curves = fake_curves(r.label, r.seed, n, with_alpha)
        for e in range(n):
            store.record_epoch(r.job_id, e + 1, {k: float(v[e]) for k, v in curves.items()})
        store.finish(r.job_id, JobState.DONE)
    return len(jobs)
