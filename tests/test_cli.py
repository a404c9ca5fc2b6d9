"""The `bench` commands end to end on tiny suites: run, rerun, status, export, models, bad input."""
from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from benchmark.cli import main
from benchmark.store import Store

TINY = """
[suite]
name = "tiny"
seeds = [0, 1]
[defaults.data]
dataset = "{dataset}"
synthetic_train = 128
synthetic_test = 64
train_size = {train_size}
test_size = 64
[defaults.optim]
batch_size = 64
[defaults.schedule]
unit = "epoch"
length = 2
milestones = [1]
[[entry]]
label = "{{model.shortcut}}-{{depth}}"
grid = {{ model.depth = [8], model.shortcut = ["none", "A"] }}
"""
METRICS = {"train_loss", "train_error", "test_loss", "test_error", "lr", "seconds", "images_per_second", "iterations"}


def tiny_suite(tmp_path: Path, dataset: str = "synthetic", train_size: int = 128) -> str:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(dataset=dataset, train_size=train_size))
    return str(path)


def bench(*args: str) -> object:
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output, result.output
    return result


def test_run_fills_the_database_and_a_second_run_trains_nothing(tmp_path, db_url):
    suite = tiny_suite(tmp_path)
    ckpt = str(tmp_path / "ckpt")
    first = bench("run", suite, "--db", db_url, "--device", "cpu", "--checkpoint-dir", ckpt)
    assert first.exit_code == 0, first.output
    assert "4 new" in first.output and "4 done" in first.output
    store = Store(db_url)
    jobs = store.jobs_frame(["tiny"])
    metrics = store.metrics_frame(["tiny"])
    assert (jobs.state == "done").all() and (jobs.epochs_done == 2).all()
    assert len(metrics) == 4 * 2 * len(METRICS)
    assert set(metrics.name.astype(str)) == METRICS

    second = bench("run", suite, "--db", db_url, "--device", "cpu", "--checkpoint-dir", ckpt)
    assert second.exit_code == 0, second.output
    assert "0 new, 4 already registered" in second.output
    again = store.jobs_frame(["tiny"])
    assert (again.attempts == 1).all()  # nothing was claimed again
    pd.testing.assert_series_equal(again.finished_at, jobs.finished_at)
    assert len(store.metrics_frame(["tiny"])) == len(metrics)


def test_status_and_export_formats(tmp_path, db_url):
    suite = tiny_suite(tmp_path)
    assert bench("run", suite, "--db", db_url, "--device", "cpu", "--checkpoint-dir", str(tmp_path / "c")).exit_code == 0
    status = bench("status", "--db", db_url, "--format", "json")
    rows = json.loads(status.output)
    assert len(rows) == 4 and {r["state"] for r in rows} == {"done"}
    assert {r["label"] for r in rows} == {"none-8", "A-8"}
    assert "4 done" in bench("status", "--db", db_url).output

    out = tmp_path / "m.csv"
    assert bench("export", "--db", db_url, "--format", "csv", "--out", str(out)).exit_code == 0
    frame = pd.read_csv(out)
    assert list(frame.columns[:7]) == ["suite", "key", "label", "seed", "epoch", "name", "value"]
    assert {"state", "config.model.depth", "env.torch"} <= set(frame.columns)  # then the job's config and environment
    assert len(frame) == 4 * 2 * len(METRICS)
    assert not frame.duplicated(["key", "epoch", "name"]).any()
    exported = json.loads(bench("export", "--db", db_url, "--suite", "tiny", "--format", "json").output)
    assert len(exported) == len(frame) and exported[0].keys() == set(frame.columns)


def test_models_lists_every_architecture_as_json():
    result = bench("models", "--format", "json")
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["resnet20"]["depth"] == 20 and rows["resnet20"]["params"] == 269_722
    assert rows["plain56"]["params"] == rows["resnet56"]["params"]
    assert {"resnet110", "resnet1202", "preact_resnet18", "preact_resnet50"} <= rows.keys()


def test_smoke_models_train_on_real_cifar10(tmp_path, db_url, shared_data):
    suite = tiny_suite(tmp_path, dataset="cifar10", train_size=256)
    result = bench("run", suite, "--db", db_url, "--device", "cpu", "--data-dir", str(shared_data),
                   "--checkpoint-dir", str(tmp_path / "c"))
    assert result.exit_code == 0, result.output
    assert (Store(db_url).jobs_frame().state == "done").all()


def test_missing_data_is_a_clear_error_not_a_traceback(tmp_path, db_url):
    suite = tiny_suite(tmp_path, dataset="cifar10")
    result = bench("run", suite, "--db", db_url, "--device", "cpu", "--data-dir", str(tmp_path / "nowhere"),
                   "--checkpoint-dir", str(tmp_path / "c"))
    # the job fails with the reader's message; the run itself carries on and reports it
    frame = Store(db_url).jobs_frame()
    assert (frame.state == "failed").all(), result.output
    assert "bench data download cifar10" in frame.error.iloc[0]


def test_corrupt_database_and_bad_suite_exit_2(tmp_path):
    bad_db = tmp_path / "bad.sqlite"
    bad_db.write_bytes(b"this is not a database" * 100)
    result = bench("status", "--db", f"sqlite:///{bad_db}")
    assert result.exit_code == 2 and "bad.sqlite" in result.output
    bad_suite = tmp_path / "bad.toml"
    bad_suite.write_text('[suite]\nname = "x"\n[[entry]]\nlabel = "a"\nmodel = { depth = 21 }\n')
    result = bench("run", str(bad_suite), "--db", f"sqlite:///{tmp_path / 'ok.sqlite'}")
    assert result.exit_code == 2 and "6n+2" in result.output


def test_cpu_torch_brings_no_cuda_packages():
    """On a CPU machine the install must not have pulled the multi-GB CUDA build of torch."""
    if torch.version.cuda is not None:
        pytest.skip("a CUDA build of torch is installed (a GPU user's own torch is kept)")
    names = {d.metadata["Name"].lower() for d in importlib.metadata.distributions()}
    assert not {n for n in names if n.startswith("nvidia-")}


ROOT = Path(__file__).resolve().parents[1]


def test_quick_runs_a_paper_suite_end_to_end_on_real_images(shared_data):
    """--quick: every cell of a real suite for a few iterations, into a throw-away database."""
    result = bench("run", str(ROOT / "suites" / "rezero_resnet56.toml"), "--quick", "--devices", "cpu",
                   "--data-dir", str(shared_data))
    assert result.exit_code == 0, result.output
    assert "rezero_resnet56-quick" in result.output and "5 done" in result.output


def test_dry_run_lists_the_jobs_and_touches_nothing(tmp_path):
    db = tmp_path / "untouched.sqlite"
    result = bench("run", str(ROOT / "suites" / "he2016_table.toml"), "--dry-run", "--db", f"sqlite:///{db}")
    assert result.exit_code == 0, result.output
    assert "50 jobs" in result.output and "resnet-110" in result.output
    assert not db.exists()


def test_user_errors_print_verbatim_even_with_brackets(tmp_path):
    """Messages are not rich markup: '[[published]]' in a hint must reach the user unchanged."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[suite]\nname = "x"\n[[entry]]\nlabel = "a"\n[published]\nlabel = "a"\n')
    result = bench("run", str(bad), "--db", f"sqlite:///{tmp_path / 'x.sqlite'}")
    assert result.exit_code == 2
    assert "write [[published]]" in result.output


def test_db_status_and_upgrade(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.sqlite'}"
    assert bench("db", "status", "--db", url).exit_code == 1  # no database yet
    assert bench("db", "upgrade", "--db", url).exit_code == 0
    result = bench("db", "status", "--db", url)
    assert result.exit_code == 0 and "up to date" in result.output
    blocked = tmp_path / "afile"
    blocked.write_text("x")
    result = bench("db", "upgrade", "--db", f"sqlite:///{blocked / 'x.sqlite'}")
    assert result.exit_code == 2 and "writable folder" in result.output
    result = bench("status", "--db", f"sqlite:///{blocked / 'x.sqlite'}")  # read-only: names the missing file
    assert result.exit_code == 2 and "no bench database" in result.output


def test_report_and_check_on_a_quick_run_use_the_quick_jobs(tmp_path, db_url):
    """A quick variant is registered as <name>-quick with its parent's text: the reporter must rebuild
    the quick suite from it, not report the parent suite's (never run) jobs."""
    assert bench("run", str(ROOT / "suites" / "smoke.toml"), "--quick", "--db", db_url, "--devices", "cpu",
                 "--checkpoint-dir", str(tmp_path / "c")).exit_code == 0
    result = bench("report", "smoke-quick", "--db", db_url, "--out", str(tmp_path / "out"), "--no-figures")
    assert result.exit_code == 0, result.output
    assert "smoke-quick: 4/4 jobs done" in result.output


def test_retry_queues_failed_jobs_again(tmp_path, db_url):
    suite = tiny_suite(tmp_path, dataset="cifar10")
    bench("run", suite, "--db", db_url, "--devices", "cpu", "--data-dir", str(tmp_path / "nowhere"),
          "--checkpoint-dir", str(tmp_path / "c"))
    assert (Store(db_url).jobs_frame().state == "failed").all()
    result = bench("retry", "tiny", "--db", db_url)
    assert result.exit_code == 0 and "4 job(s)" in result.output
    jobs = Store(db_url).jobs_frame()
    assert (jobs.state == "queued").all() and (jobs.attempts == 0).all()
    assert bench("retry", "nope", "--db", db_url).exit_code == 2
