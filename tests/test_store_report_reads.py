"""The reporter's narrow reads: Store.metric_names, and loading only the metrics a report reads
(build_tables) must give the same tables, claims and curves as loading every metric."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from benchmark.report.aggregate import metrics_needed, summarize
from benchmark.report.api import build_tables
from benchmark.claims import claim_metrics
from benchmark.report.curves import cell_curves
from benchmark.report.synthetic import fake_curves, make_suite
from benchmark.store import Store
from benchmark.suite_types import Claim, Published


@pytest.fixture
def store(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'results.sqlite'}") as s:
        yield s


def test_metric_names_sorted_and_distinct(store):
    assert store.metric_names() == []
    suite = make_suite(depths=(20,), seeds=(0,), epochs=2)
    store.register_suite(suite)
    for job_id in store.jobs_frame()["job_id"]:
        store.record_epoch(int(job_id), 1, {"test_error": 9.0, "lr": 0.1, "alpha.b0": math.nan})
        store.record_epoch(int(job_id), 2, {"test_error": 8.0, "lr": 0.1})
    assert store.metric_names() == ["alpha.b0", "lr", "test_error"]


def test_claim_metrics_reads_metric_arguments_and_defaults():
    assert claim_metrics('final("a") < best("b", "train_error")') == {"test_error", "train_error"}
    assert claim_metrics('epoch_reaching("a", metric="val_error", threshold=10) < 5 and last("a", "tau") > 0') \
        == {"val_error", "tau"}
    assert claim_metrics("final(") == set()  # invalid: evaluating it raises the real error later


def test_metrics_needed():
    recorded = ["alpha.s1.b0", "images_per_second", "iterations", "lr", "seconds", "tau", "test_error",
                "test_loss", "train_error", "val_error"]
    suite = make_suite(published=[Published("resnet-20", 8.0, metric="test_loss")],
                       claims=[Claim("c", "c", 'final("plain-20", "lr") > 0')])
    assert metrics_needed(suite, "final", recorded) == ["alpha.s1.b0", "lr", "tau", "test_error", "test_loss",
                                                        "train_error"]
    assert "val_error" in metrics_needed(suite, "best_val", recorded)


def test_report_from_needed_metrics_equals_report_from_all(store):
    suite = make_suite(
        depths=(20, 56), seeds=(0, 1), epochs=6,
        published=[Published("resnet-20", 8.75, kind="single", source="x")],
        claims=[Claim("deg", "deg", 'final("plain-56", "train_error") > final("plain-20", "train_error")'),
                Claim("reach", "reach", 'epoch_reaching("resnet-20", "test_error", 20) < 6'),
                Claim("alpha", "alpha", 'last("resnet-56", "alpha.stage1.block0") > 0')],
    )
    store.register_suite(suite)
    for r in store.jobs_frame([suite.name]).itertuples():
        curves = fake_curves(r.label, r.seed, 6, with_alpha=True)
        for e in range(6):
            store.record_epoch(r.job_id, e + 1, {k: float(v[e]) for k, v in curves.items()})
        store.finish(r.job_id, "done")

    (res,) = build_tables(store, [suite])
    assert set(res.metrics["name"]) == {"test_error", "train_error", "alpha.stage1.block0",
                                        "alpha.stage1.block1", "alpha.stage1.block2"}
    full = summarize(suite, store.jobs_frame([suite.name]), store.metrics_frame([suite.name]))
    assert len(full.metrics) > len(res.metrics)
    assert res.records == full.records
    assert [(c.name, r.verdict, r.numbers) for c, r in res.claims] == \
           [(c.name, r.verdict, r.numbers) for c, r in full.claims]
    for names in (["test_error", "train_error"], None):
        a = cell_curves(res, names).sort_values(["label", "name", "epoch"]).reset_index(drop=True)
        b = cell_curves(full, names).sort_values(["label", "name", "epoch"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(a.astype({"name": str}), b.astype({"name": str}))
