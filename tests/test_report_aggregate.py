"""Aggregation from hand-made frames: mean/std/n/best, states, epoch selection, verdicts, notes."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmark.config import RuntimeConfig
from benchmark.report.aggregate import (
    ReportError,
    cell_state,
    protocol_notes,
    published_text,
    resolve_select,
    summarize,
)
from benchmark.report.synthetic import fake_jobs, make_suite
from benchmark.suite_types import Claim, Published


def frame(suite, values: dict[tuple[str, int], dict[str, list[float]]]) -> pd.DataFrame:
    """Long metrics from {(label, seed): {metric: [epoch1, epoch2, ...]}}; job_id = job key."""
    key = {(j.label, j.seed): j.key for j in suite.jobs}
    rows = []
    for (label, seed), metrics in values.items():
        for name, vals in metrics.items():
            for e, v in enumerate(vals, start=1):
                rows.append((key[(label, seed)], e, name, v))
    return pd.DataFrame(rows, columns=["job_id", "epoch", "name", "value"])


@pytest.fixture
def suite():
    return make_suite(
        depths=(20,), seeds=(0, 1, 2), epochs=3, tolerance=0.5,
        published=[Published("resnet-20", 8.75, kind="single", source="He 2016 Table 6"),
                   Published("plain-20", 9.5, kind="chart_reading", approx=True)],
        claims=[Claim("c", "resnet beats plain", 'final("resnet-20") < final("plain-20")')],
    )


def values_for(suite, resnet_final=(8.0, 9.0, 8.6), plain_final=(9.6, 9.4, 9.5)):
    v = {}
    for s, f in enumerate(resnet_final):
        v[("resnet-20", s)] = {"test_error": [50.0, 20.0, f], "train_error": [60.0, 15.0, f - 3]}
    for s, f in enumerate(plain_final):
        v[("plain-20", s)] = {"test_error": [55.0, 25.0, f], "train_error": [65.0, 18.0, f - 2]}
    return frame(suite, v)


def row(res, label):
    (r,) = [r for r in res.records if r["label"] == label]
    return r


def test_mean_std_n_best_from_a_hand_made_frame(suite):
    res = summarize(suite, fake_jobs(suite), values_for(suite))
    r = row(res, "resnet-20")
    assert r["state"] == "done" and r["n"] == 3 and r["n_expected"] == 3
    assert r["mean"] == pytest.approx(np.mean([8.0, 9.0, 8.6]))
    assert r["std"] == pytest.approx(np.std([8.0, 9.0, 8.6], ddof=1))
    assert r["best"] == pytest.approx(8.0)
    assert r["diff"] == pytest.approx(np.mean([8.0, 9.0, 8.6]) - 8.75)
    # A single published run against 3 seeds: a prediction interval, mean ± t s sqrt(1 + 1/n).
    x = np.array([8.0, 9.0, 8.6])
    half = stats.t.ppf(0.975, 2) * x.std(ddof=1) * math.sqrt(1 + 1 / 3)
    assert r["statistic"].startswith("one run") and r["tolerance"] == 0.5
    assert (r["low"], r["high"]) == pytest.approx((x.mean() - half, x.mean() + half))
    # Its spread (0.5) is as wide as the margin: no number of seeds can show equivalence.
    assert r["verdict"] == "inconclusive" and r["seeds_needed"] is None and "no number of seeds" in r["note"]
    assert r["published_text"] == "8.75 (single run)"
    assert row(res, "plain-20")["published_text"] == "≈ 9.5 (chart reading)"
    (claim, cr), = res.claims
    assert cr.verdict == "holds"
    assert cr.numbers['final("resnet-20")'] == pytest.approx(r["mean"])


def test_value_significantly_beyond_the_margin_differs(suite):
    res = summarize(suite, fake_jobs(suite), values_for(suite, resnet_final=(9.5, 9.4, 9.6)))
    r = row(res, "resnet-20")
    assert r["verdict"] == "differs" and r["diff"] == pytest.approx(0.75)
    assert r["p_difference"] < 0.05 and r["seeds_needed"] is None


def test_published_tolerance_overrides_the_suite(suite):
    suite = replace(suite, published=(Published("resnet-20", 8.75, tolerance=2.0),))
    res = summarize(suite, fake_jobs(suite), values_for(suite, resnet_final=(9.5, 9.4, 9.6)))
    r = row(res, "resnet-20")
    assert r["verdict"] == "reproduces" and r["tolerance"] == 2.0 and -2.0 < r["diff_low"] < r["diff_high"] < 2.0


@pytest.mark.parametrize(
    "states, shown",
    [
        (["done", "running", "done"], "running"),
        (["done", "queued", "done"], "queued"),
        (["running", "failed", "done"], "failed"),
        (["diverged", "done", "done"], "diverged"),
        (["done", "running", "diverged"], "diverged"),
    ],
)
def test_state_precedence_never_shows_numbers(suite, states, shown):
    jobs = fake_jobs(suite)
    idx = jobs.index[jobs["label"] == "resnet-20"]
    jobs.loc[idx, "state"] = states
    res = summarize(suite, jobs, values_for(suite))
    r = row(res, "resnet-20")
    assert r["state"] == shown
    assert r["mean"] is None and r["std"] is None and r["best"] is None and r["diff"] is None
    assert r["verdict"] == ("pending" if shown in ("running", "queued") else "broken")
    assert row(res, "plain-20")["state"] == "done"
    # Claims wait for unfinished or failed jobs; a diverged run counts with its values.
    assert res.claims[0][1].verdict == ("holds" if states.count("done") == 2 and "diverged" in states else "pending")


def test_missing_jobs_are_missing(suite):
    jobs = fake_jobs(suite)
    jobs = jobs[~((jobs["label"] == "resnet-20") & (jobs["seed"] == 2))]
    res = summarize(suite, jobs, values_for(suite))
    assert row(res, "resnet-20")["state"] == "missing"
    assert "2/3 done" in row(res, "resnet-20")["state_text"]
    res = summarize(suite, None, None)
    assert {r["state"] for r in res.records} == {"missing"}


def test_cell_state_text():
    assert cell_state(["done", "done"]) == ("done", "done")
    assert cell_state(["running", "running"]) == ("running", "running")
    state, text = cell_state(["done", "running", "queued"])
    assert state == "running" and text == "running (1 running, 1 queued; 1/3 done)"


def test_best_val_selects_on_validation_and_reports_test_at_that_epoch():
    suite = make_suite(depths=(20,), seeds=(0, 1), epochs=4, val_size=5000, select="best_val",
                       families=("resnet",))
    v = {
        ("resnet-20", 0): {"val_error": [30.0, 9.0, 10.0, 11.0], "test_error": [31.0, 9.5, 7.0, 8.0]},
        ("resnet-20", 1): {"val_error": [30.0, 12.0, 10.0, 8.0], "test_error": [31.0, 6.0, 9.0, 8.5]},
    }
    res = summarize(suite, fake_jobs(suite), frame(suite, v))
    assert res.select == "best_val"
    assert sorted(res.selected_epoch.tolist()) == [2, 4]
    r = row(res, "resnet-20")
    assert r["mean"] == pytest.approx((9.5 + 8.5) / 2)  # test error at the best-val epochs
    assert res.best("resnet-20").tolist() == [7.0, 6.0]  # min over epochs, for contrast
    assert res.last("resnet-20").tolist() == [8.0, 8.5]
    # Final-epoch selection on the same data gives the last epoch.
    res = summarize(replace(suite, select="final"), fake_jobs(suite), frame(suite, v))
    assert row(res, "resnet-20")["mean"] == pytest.approx((8.0 + 8.5) / 2)


def test_best_test_is_refused_unless_the_suite_selects_it():
    suite = make_suite(depths=(20,), seeds=(0,), epochs=2, families=("resnet",))
    v = {("resnet-20", 0): {"test_error": [7.0, 9.0]}}
    with pytest.raises(ReportError, match="test set"):
        summarize(suite, fake_jobs(suite), frame(suite, v), select="best_test")
    with pytest.raises(ReportError, match="validation split"):
        resolve_select(suite, "best_val")
    res = summarize(replace(suite, select="best_test"), fake_jobs(suite), frame(suite, v))
    assert row(res, "resnet-20")["mean"] == 7.0 and row(res, "resnet-20")["select"] == "best_test"


def test_nan_values_of_a_done_job_are_not_averaged_in(suite):
    df = values_for(suite)
    key = next(j.key for j in suite.jobs if j.label == "resnet-20" and j.seed == 1)
    df.loc[(df["job_id"] == key) & (df["epoch"] == 3), "value"] = math.nan
    r = row(summarize(suite, fake_jobs(suite), df), "resnet-20")
    assert r["n"] == 2 and r["mean"] == pytest.approx(8.3)


def test_claim_functions(suite):
    res = summarize(suite, fake_jobs(suite), values_for(suite))
    assert res.selected("plain-20", "train_error") == pytest.approx([7.6, 7.4, 7.5])
    assert res.final("plain-20", "train_error") == pytest.approx([7.6, 7.4, 7.5])  # the old name
    assert res.std("resnet-20") == pytest.approx(np.std([8.0, 9.0, 8.6], ddof=1))
    assert res.epoch_reaching("resnet-20", "test_error", 20.0).tolist() == [2.0, 2.0, 2.0]
    assert res.epoch_reaching("resnet-20", "test_error", 8.5).tolist() == [3.0, math.inf, math.inf]


def test_protocol_notes_show_what_departs_from_the_usual():
    suite = make_suite(depths=(20, 32, 44), seeds=(0,), families=("resnet",))
    jobs = list(suite.jobs)
    odd = jobs[2]
    jobs[2] = replace(odd, spec=replace(odd.spec, optim=replace(odd.spec.optim, weight_decay=5e-4),
                                        data=replace(odd.spec.data, pad_mode="reflect")))
    notes = protocol_notes(replace(suite, jobs=tuple(jobs)))
    assert notes == {"resnet-20": "", "resnet-32": "", "resnet-44": "pad_mode=reflect; weight_decay=0.0005"}


def test_published_text_kinds():
    assert published_text(Published("r", 6.43, kind="best_of", runs=5, mean=6.61, std=0.16)) == \
        "6.43 (best of 5; 6.61±0.16)"
    assert published_text(Published("r", 6.61, kind="mean_std", runs=5, std=0.16)) == "6.61±0.16 (mean±std of 5)"
    assert published_text(Published("r", 4.92, kind="median_of", runs=5, mean=4.89, std=0.14)) == \
        "4.92 (median of 5; 4.89±0.14)"
    assert published_text(Published("r", 13.5, kind="chart_reading")) == "≈ 13.5 (chart reading)"
    assert published_text(Published("r", 11, kind="derived", approx=True)) == "≈ 11 (derived)"


# ----------------------------------------------------------------------------------------------
# The "done means": ResNet-110 as He 2016 prints it, 6.43 best of 5 (6.61 ± 0.16)


def _resnet110(seeds):
    suite = make_suite(depths=(110,), seeds=tuple(range(len(seeds))), epochs=2, tolerance=0.5, families=("resnet",),
                       published=[Published("resnet-110", 6.43, kind="best_of", runs=5, mean=6.61, std=0.16)])
    v = {("resnet-110", s): {"test_error": [30.0, x]} for s, x in enumerate(seeds)}
    return summarize(suite, fake_jobs(suite), frame(suite, v))


def test_five_seeds_reproduce_he2016_resnet110_and_two_are_inconclusive():
    res = _resnet110([6.4, 6.5, 6.6, 6.7, 6.8])
    best, mean = res.records  # best of 5, then the printed mean ± std
    assert (best["published_kind"], mean["published_kind"]) == ("best_of", "mean_std")
    assert mean["verdict"] == "reproduces" and mean["estimate"] == pytest.approx(6.6)
    assert mean["low"] < 6.6 < mean["high"] and -0.5 < mean["diff_low"] < mean["diff_high"] < 0.5
    assert best["verdict"] == "reproduces" and best["estimate"] == pytest.approx(6.4)  # 5 seeds: the best of them
    assert best["statistic"] == "best of 5, from the 5 seeds"
    res = _resnet110([6.4, 6.8])
    best, mean = res.records
    assert mean["verdict"] == "inconclusive" and mean["seeds_needed"] is not None and mean["seeds_needed"] > 2
    assert best["verdict"] == "inconclusive" and "fitted normal" in best["statistic"]


def test_a_quick_suite_is_plumbing_only(suite):
    res = summarize(replace(suite, quick=True), fake_jobs(suite), values_for(suite))
    assert {r["verdict"] for r in res.records} == {"plumbing"}
    assert res.claims[0][1].verdict == "plumbing"


def test_protocol_notes_always_show_a_runtime_other_than_fp32_nchw():
    """bf16 changes the numbers and the papers trained in fp32: every cell says so, even a shared one."""
    suite = make_suite(depths=(20, 32), seeds=(0,), families=("resnet",))
    fast = RuntimeConfig(channels_last=True, precision="bf16")
    jobs = tuple(replace(j, spec=replace(j.spec, runtime=fast)) for j in suite.jobs)
    notes = protocol_notes(replace(suite, jobs=jobs))
    assert notes == {"resnet-20": "channels_last=True; precision=bf16", "resnet-32": "channels_last=True; precision=bf16"}
    one = protocol_notes(replace(suite, jobs=jobs[:1]))
    assert one == {"resnet-20": "channels_last=True; precision=bf16"}
    assert protocol_notes(suite) == {"resnet-20": "", "resnet-32": ""}
