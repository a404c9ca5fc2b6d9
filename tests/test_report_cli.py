"""`bench report` and `bench check` over a real Store on a temporary SQLite file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmark import store as store_mod
from benchmark import suite as suite_mod
from benchmark.cli import main
from benchmark.report.synthetic import fake_curves

SUITE_TOML = """
[suite]
name = "tiny"
title = "Tiny <suite> | for tests"
source = "tests"
protocol = "synthetic, 3 epochs"
tolerance = 1.0
select = "final"
seeds = [0, 1]

[defaults.data]
dataset = "synthetic"

[defaults.schedule]
unit = "epoch"
length = 3
milestones = [2]

[[entry]]
label = "plain-{depth}"
model = { shortcut = "none" }
grid = { model.depth = [8] }

[[entry]]
label = "resnet-{depth}"
model = { shortcut = "A" }
grid = { model.depth = [8] }

[[published]]
label = "resnet-8"
value = 10.0
kind = "single"
source = "made up"

[[published]]
label = "plain-8"
value = 12.0
kind = "chart_reading"
approx = true
source = "made up"

[[claim]]
name = "residual-helps"
text = "resnet-8 ends below plain-8"
expr = 'selected("resnet-8") < selected("plain-8")'
"""

FINAL = {"plain-8": 12.2, "resnet-8": 10.3}  # test error at the last epoch, every seed


def fill(store, suite, final=FINAL, leave: tuple[str, int, str] | None = None) -> None:
    """Run every job on paper: three epochs each, then done (``leave``: (label, seed, state))."""
    store.register_suite(suite)
    jobs = store.jobs_frame([suite.name])
    for r in jobs.itertuples():
        if leave and (r.label, r.seed) == leave[:2] and leave[2] == "queued":
            continue
        assert store.claim_job("w", "cpu", job_id=r.job_id) is not None
        curves = fake_curves(r.label, r.seed, 3)
        for e in range(3):
            m = {k: float(v[e]) for k, v in curves.items()}
            m["images_per_second"] = 5000.0  # what bench plan prices seeds with
            if e == 2:  # one value for every seed, or one per seed
                v = final[r.label]
                m["test_error"] = v[r.seed] if isinstance(v, (list, tuple)) else v
            store.record_epoch(r.job_id, e + 1, m)
        if leave and (r.label, r.seed) == leave[:2]:
            if leave[2] != "running":
                store.finish(r.job_id, leave[2], error="boom" if leave[2] == "failed" else None)
            continue
        store.finish(r.job_id, "done")


@pytest.fixture
def suite_file(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.toml"
    p.write_text(SUITE_TOML)
    return p


def run_check(suite_file, db_url, final=FINAL, leave=None, toml=None):
    if toml is not None:
        suite_file.write_text(toml)
    suite = suite_mod.load_suite(suite_file)
    with store_mod.Store(db_url) as store:
        fill(store, suite, final, leave)
    return CliRunner().invoke(main, ["check", str(suite_file), "--db", db_url])


def test_check_passes_within_tolerance(suite_file, db_url):
    res = run_check(suite_file, db_url)
    assert res.exit_code == 0, res.output
    assert "OK" in res.output


def test_check_by_registered_name(suite_file, db_url):
    run_check(suite_file, db_url)
    res = CliRunner().invoke(main, ["check", "tiny", "--db", db_url])
    assert res.exit_code == 0, res.output


def test_check_value_outside_tolerance(suite_file, db_url):
    res = run_check(suite_file, db_url, final={"plain-8": 12.2, "resnet-8": 11.5})
    assert res.exit_code == 1
    assert "resnet-8" in res.output and "+1.50" in res.output and "by 0.50" in res.output


def test_check_inconclusive_exits_3_unless_allowed(suite_file, db_url):
    # Seeds that spread: 2 seeds of a single-run value on synthetic data (no prior) cannot decide.
    res = run_check(suite_file, db_url, final={"plain-8": [11.0, 14.0], "resnet-8": [9.0, 11.5]})
    assert res.exit_code == 3, res.output
    assert "resnet-8 (single)" in res.output and "inconclusive" in res.output
    assert "claim residual-helps inconclusive" in res.output
    res = CliRunner().invoke(main, ["check", str(suite_file), "--db", db_url, "--allow-inconclusive"])
    assert res.exit_code == 0, res.output
    assert "inconclusive" in res.output


def test_check_failing_claim(suite_file, db_url):
    toml = SUITE_TOML.replace("tolerance = 1.0", "tolerance = 5.0")
    res = run_check(suite_file, db_url, final={"plain-8": 10.0, "resnet-8": 11.0}, toml=toml)
    assert res.exit_code == 1
    assert "claim residual-helps fails" in res.output


@pytest.mark.parametrize("state", ["running", "queued", "failed", "diverged"])
def test_check_unfinished_or_broken_jobs_are_out(suite_file, db_url, state):
    res = run_check(suite_file, db_url, leave=("resnet-8", 1, state))
    assert res.exit_code == 1, res.output
    if state in ("running", "queued"):
        assert "not finished" in res.output and f"resnet-8 seed 1 ({state})" in res.output
    else:
        assert f"resnet-8 seed 1 {state}" in res.output


def test_check_missing_jobs_are_out(suite_file, db_url):
    store_mod.Store(db_url).close()  # an empty database: nothing registered, nothing run
    res = CliRunner().invoke(main, ["check", str(suite_file), "--db", db_url])
    assert res.exit_code == 1
    assert "4 of 4 jobs not finished" in res.output and "(missing)" in res.output


def test_check_usage_errors_exit_2(tmp_path, db_url):
    res = CliRunner().invoke(main, ["check", str(tmp_path / "nope.toml"), "--db", db_url])
    assert res.exit_code == 2 and "error:" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["check", "not-a-suite", "--db", db_url])
    assert res.exit_code == 2 and "no bench database" in res.output  # read-only: never creates one
    store_mod.Store(db_url).close()
    res = CliRunner().invoke(main, ["check", "not-a-suite", "--db", db_url])
    assert res.exit_code == 2 and "not a suite file and not a suite in the database" in res.output
    res = CliRunner().invoke(main, ["check", ])
    assert res.exit_code == 2


def test_check_refuses_best_test_unless_the_suite_selects_it(suite_file, db_url):
    run_check(suite_file, db_url)
    res = CliRunner().invoke(main, ["check", str(suite_file), "--db", db_url, "--select", "best_test"])
    assert res.exit_code == 2 and "test set" in res.output


def test_report_every_format_from_the_database(suite_file, db_url, tmp_path):
    run_check(suite_file, db_url, leave=("plain-8", 0, "running"))
    out = tmp_path / "out"
    args = ["--db", db_url, "--out", str(out)] + sum((["--format", f] for f in
                                                      ("markdown", "html", "csv", "latex", "json")), [])
    res = CliRunner().invoke(main, ["report", *args])  # no SUITE: every suite in the database
    assert res.exit_code == 0, res.output
    for name in ("tiny.md", "tiny.html", "tiny.csv", "tiny.tex", "tiny.json", "figures/tiny-errors.png",
                 "figures/tiny-errors.svg"):
        assert (out / name).is_file(), name
        assert f"wrote {out / name}" in res.output
    doc = json.loads((out / "tiny.json").read_text())
    rows = {r["label"]: r for r in doc["rows"]}
    assert rows["plain-8"]["state"] == "running" and rows["plain-8"]["mean"] is None
    assert rows["resnet-8"]["mean"] == pytest.approx(10.3) and rows["resnet-8"]["n"] == 2
    assert rows["resnet-8"]["verdict"] == "reproduces"  # identical seeds: no spread, |diff| 0.3 < 1
    assert [s["seed"] for s in rows["resnet-8"]["seeds"]] == [0, 1]
    md = (out / "tiny.md").read_text()
    assert "# Tiny &lt;suite&gt; \\| for tests" in md and "running" in md
    assert "shortcut=" in md  # the protocol note: the cells differ in shortcut


def test_plan_counts_seeds_and_prices_them_from_finished_jobs(suite_file, db_url):
    from benchmark.report.api import plan_suite

    run_check(suite_file, db_url, final={"plain-8": [11.0, 14.0], "resnet-8": [9.0, 11.5]})
    with store_mod.Store(db_url) as store:
        rows = {r.label: r for r in plan_suite(store, suite_mod.load_suite(suite_file))}
    r = rows["resnet-8"]
    assert r.spread_source == "measured (n=2)" and r.verdict == "inconclusive" and r.seeds_done == 2
    assert r.images_per_second == 5000.0 and r.speed_source.startswith("measured: 2 finished job(s)")
    assert r.images_per_job == 3 * 2000  # 3 epochs of the synthetic set's 2,000 images
    if r.seeds_needed is not None:
        assert r.hours == pytest.approx(r.seeds_needed * 6000 / 5000 / 3600)
    res = CliRunner().invoke(main, ["plan", str(suite_file), "--db", db_url])
    assert res.exit_code == 0, res.output
    assert "resnet-8" in res.output and "images/s: measured" in res.output


def test_plan_without_results_uses_the_prior_and_the_named_table(tmp_path):
    from benchmark.report.api import plan_suite

    suite = suite_mod.load_suite(Path(__file__).resolve().parents[1] / "suites" / "he2016_table.toml")
    with store_mod.Store(f"sqlite:///{tmp_path / 'empty.sqlite'}") as store:
        rows = plan_suite(store, suite)
    (mean_std,) = [r for r in rows if r.label == "resnet-110" and "mean±std" in r.published]
    assert mean_std.spread_source == "prior (cifar10)" and mean_std.seeds_done == 0
    assert mean_std.seeds_needed is not None and mean_std.seeds_needed >= 2
    assert mean_std.speed_source.startswith("table") and mean_std.hours > 0
