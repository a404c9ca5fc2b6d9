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
    other = make_suite(name="other", depths=(32,), seeds=(0,), epochs=2)
    store.register_suite(other)
    jobs = store.jobs_frame(["other"])
    store.record_epoch(int(jobs["job_id"].iloc[0]), 1, {"train_loss": 1.0})
    assert store.metric_names([suite.name]) == ["alpha.b0", "lr", "test_error"]
    assert store.metric_names(["other"]) == ["train_loss"]
    assert store.metric_names([suite.name, "other"]) == ["alpha.b0", "lr", "test_error", "train_loss"]
    assert store.metric_names(["no-such-suite"]) == []


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


def fill(store: Store, suite, epochs: int) -> None:
    store.register_suite(suite)
    for r in store.jobs_frame([suite.name]).itertuples():
        curves = fake_curves(r.label, r.seed, epochs, with_alpha=r.label.startswith("resnet"))
        for e in range(epochs):
            store.record_epoch(r.job_id, e + 1, {k: float(v[e]) for k, v in curves.items()})
        store.finish(r.job_id, "done")


def test_report_built_and_drawn_in_worker_processes_equals_one_process(backend_url, tmp_path, monkeypatch):
    """api.report builds big reports' suites in forked workers (each on its own connections to the
    database, SQLite or PostgreSQL) and draws their figures as each is built (api._in_workers): the
    same files, byte for byte, as one process doing it all."""
    from benchmark.report import api
    from benchmark.report.style import FigureStyle

    store = Store(backend_url)

    suites = [make_suite(name=n, depths=(20, 56), seeds=(0, 1), epochs=6,
                         published=[Published("resnet-20", 8.75, kind="single", source="x")],
                         claims=[Claim("deg", "deg", 'final("plain-56", "train_error") > final("plain-20", "train_error")')])
              for n in ("one", "two", "three")]
    for s in suites:
        fill(store, s, 6)
    formats = ["markdown", "html", "json", "csv"]
    assert api.parallel_plan(store, suites) == 1  # 72 rows: not worth a fork
    serial, serial_files = api.report(store, suites, tmp_path / "serial", formats, style=FigureStyle(dpi=60))
    monkeypatch.setattr(api, "PARALLEL_MIN_ROWS", 0)
    monkeypatch.setattr("os.sched_getaffinity", lambda _: {0, 1})  # two CPUs even where the test has one
    assert api.parallel_plan(store, suites) == 2
    parallel, parallel_files = api.report(store, suites, tmp_path / "parallel", formats, style=FigureStyle(dpi=60))
    assert [r.suite.name for r in parallel] == ["one", "two", "three"]
    assert [r.records for r in parallel] == [r.records for r in serial]
    rel = lambda paths, root: [p.relative_to(root) for p in paths]  # noqa: E731
    assert rel(parallel_files, tmp_path / "parallel") == rel(serial_files, tmp_path / "serial")
    assert any(p.name == "three-scales.png" for p in parallel_files)
    for a, b in zip(serial_files, parallel_files):
        assert a.read_bytes() == b.read_bytes().replace(b"/parallel/", b"/serial/"), a.name
    store.close()


def test_a_worker_s_store_error_reaches_the_caller_as_itself(store, tmp_path, monkeypatch):
    import sqlite3

    from benchmark.report import api
    from benchmark.store import StoreError

    suites = [make_suite(name=n, depths=(20,), seeds=(0,), epochs=3) for n in ("one", "two")]
    for s in suites:
        fill(store, s, 3)
    with sqlite3.connect(tmp_path / "results.sqlite") as c:  # text in a REAL column, written outside bench
        c.execute("UPDATE metrics SET value = 'oops' WHERE epoch = 2 AND name = 'test_error'")
    monkeypatch.setattr(api, "PARALLEL_MIN_ROWS", 0)
    monkeypatch.setattr("os.sched_getaffinity", lambda _: {0, 1})
    with pytest.raises(StoreError, match="corrupt metrics row"):
        api.report(store, suites, tmp_path / "out", ["markdown"], figures=False)
