"""bench export: csv/json/Parquet with config and environment columns; MLflow and TensorBoard
round trips, read back through MLflow's own client and TensorBoard's own event reader."""
from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from click.testing import CliRunner

from benchmark.cli import main
from benchmark.report.export import LONG_COLUMNS, code_version, flat_config, job_runs, tensorboard_run_dir
from benchmark.report.synthetic import fake_curves, make_suite
from benchmark.store import Store

EPOCHS = 3
ENV = {"torch": "2.13.0", "cuda": None, "gpu": None, "host": "box", "device": "cpu",
       "git_commit": "0123456789abcdef", "git_dirty": True}


def bench(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def filled(db_url):
    """A suite of 4 jobs (plain-20, resnet-20, seeds 0 and 1): three done, resnet-20 seed 1 running
    after two epochs."""
    suite = make_suite(name="exp", depths=(20,), seeds=(0, 1), epochs=EPOCHS)
    with Store(db_url) as store:
        store.register_suite(suite)
        for r in store.jobs_frame(["exp"]).itertuples():
            assert store.claim_job("w", "cpu", job_id=r.job_id) is not None
            store.set_environment(r.job_id, ENV)
            running = (r.label, r.seed) == ("resnet-20", 1)
            curves = fake_curves(r.label, r.seed, EPOCHS, with_alpha=True)
            for e in range(EPOCHS - 1 if running else EPOCHS):
                store.record_epoch(r.job_id, e + 1, {k: float(v[e]) for k, v in curves.items()})
            if not running:
                store.finish(r.job_id, "done")
        yield store, suite


def test_flat_config_and_code_version():
    assert flat_config({"model": {"depth": 20, "widths": [16, 32]}, "seed": 1}) == \
        {"model.depth": 20, "model.widths": "[16, 32]", "seed": 1}
    assert code_version(ENV) == "0123456789abcdef+dirty"
    assert code_version({**ENV, "code_version": "bench 0.2.0 @ abc"}) == "bench 0.2.0 @ abc"
    assert code_version(ENV, stored="v9") == "v9" and code_version({}) is None


def test_csv_and_json_keep_long_rows_and_gain_config_and_environment(filled, db_url, tmp_path):
    store, suite = filled
    out = tmp_path / "m.csv"
    res = bench("export", "--db", db_url, "--format", "csv", "--out", str(out))
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(out)
    assert list(frame.columns[:7]) == LONG_COLUMNS
    n_metrics = len(fake_curves("plain-20", 0, EPOCHS, with_alpha=True))
    assert len(frame) == (4 * EPOCHS - 1) * n_metrics
    assert {"state", "code_version", "config.model.depth", "config.model.shortcut", "config.optim.lr",
            "env.torch", "env.host", "env.git_commit"} <= set(frame.columns)
    row = frame[(frame.label == "plain-20") & (frame.epoch == 2) & (frame.name == "test_error")].iloc[0]
    assert row["config.model.shortcut"] == "none" and row["config.model.depth"] == 20 and row["state"] == "done"
    assert row["env.torch"] == "2.13.0" and row["code_version"] == "0123456789abcdef+dirty"
    assert set(frame[frame.label == "resnet-20"]["state"]) == {"done", "running"}
    docs = json.loads(bench("export", "--db", db_url, "--format", "json").output)
    assert len(docs) == len(frame) and docs[0]["config.model.depth"] == 20
    wide = pd.read_csv(io.StringIO(bench("export", "--db", db_url, "--format", "csv", "--wide").output))
    assert len(wide) == 4 * EPOCHS - 1


def test_parquet_one_row_per_job_and_epoch(filled, db_url, tmp_path):
    pytest.importorskip("pyarrow")
    store, suite = filled
    out = tmp_path / "m.parquet"
    res = bench("export", "--db", db_url, "--format", "parquet", "--out", str(out))
    assert res.exit_code == 0, res.output
    frame = pd.read_parquet(out)
    assert list(frame.columns[:6]) == ["suite", "key", "label", "seed", "state", "epoch"]
    assert len(frame) == 4 * EPOCHS - 1 and not frame.duplicated(["key", "epoch"]).any()
    assert {"test_error", "train_error", "lr", "alpha.stage1.block0", "config.model.depth", "env.git_dirty",
            "code_version"} <= set(frame.columns)
    curves = fake_curves("plain-20", 1, EPOCHS)
    got = frame[(frame.label == "plain-20") & (frame.seed == 1)].sort_values("epoch")["test_error"].tolist()
    assert got == pytest.approx(curves["test_error"].tolist())
    assert frame["env.git_dirty"].dtype == bool and frame["config.model.depth"].dtype.kind == "i"
    assert bench("export", "--db", db_url, "--format", "parquet").exit_code == 2  # binary: needs --out


def test_usage_errors_exit_2(filled, db_url):
    assert bench("export", "--db", db_url).exit_code == 2
    assert bench("export", "--db", db_url, "--format", "csv", "--to", "mlflow").exit_code == 2
    res = bench("export", "--db", db_url, "--to", "tensorboard")
    assert res.exit_code == 2 and "log directory" in res.output


def test_mlflow_round_trip(filled, db_url, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    store, suite = filled
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = bench("export", "--db", db_url, "--to", "mlflow", "--tracking-uri", uri)
    assert res.exit_code == 0, res.output
    assert "4 runs created, 0 updated" in res.output
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("exp")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 4
    by = {(r.data.tags["bench.label"], r.data.tags["bench.seed"]): r for r in runs}
    r = by["plain-20", "0"]
    assert r.data.params["model.depth"] == "20" and r.data.params["model.shortcut"] == "none"
    assert r.data.params["optim.lr"] == "0.1" and r.data.params["seed"] == "0"
    assert r.data.tags["bench.suite"] == "exp" and r.data.tags["bench.code_version"] == "0123456789abcdef+dirty"
    assert r.data.tags["mlflow.source.git.commit"] == "0123456789abcdef" and r.info.status == "FINISHED"
    assert r.info.run_name == "plain-20 seed 0"
    hist = sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, "test_error"))
    assert [s for s, _ in hist] == list(range(1, EPOCHS + 1))
    assert [v for _, v in hist] == pytest.approx(fake_curves("plain-20", 0, EPOCHS)["test_error"].tolist())
    running = by["resnet-20", "1"]
    assert running.info.status == "RUNNING" and running.data.tags["bench.state"] == "running"
    assert len(client.get_metric_history(running.info.run_id, "test_error")) == EPOCHS - 1

    # The running job finishes its last epoch; a second export updates, never duplicates.
    job = store.jobs_frame(["exp"]).set_index(["label", "seed"]).loc[("resnet-20", 1), "job_id"]
    store.record_epoch(int(job), EPOCHS, {"test_error": 7.5, "train_error": 3.0})
    store.finish(int(job), "done")
    res = bench("export", "--db", db_url, "--to", "mlflow", "--tracking-uri", uri)
    assert res.exit_code == 0 and "0 runs created, 4 updated, 2 metric values" in res.output
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 4
    done = client.get_run(running.info.run_id)
    assert done.info.status == "FINISHED" and done.data.tags["bench.epochs"] == str(EPOCHS)
    steps = [m.step for m in client.get_metric_history(running.info.run_id, "test_error")]
    assert sorted(steps) == list(range(1, EPOCHS + 1))
    assert len(client.get_metric_history(r.info.run_id, "test_error")) == EPOCHS


def test_tensorboard_round_trip(filled, db_url, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store, suite = filled
    log_dir = tmp_path / "tb"
    for _ in range(2):  # a repeated export replaces the event files
        res = bench("export", "--db", db_url, "--to", "tensorboard", str(log_dir))
        assert res.exit_code == 0, res.output
    assert "0 runs created, 4 updated" in res.output
    runs = {run.key: run for run in job_runs(store, ["exp"])}
    assert len(runs) == 4
    for run in runs.values():
        run_dir = tensorboard_run_dir(log_dir, run)
        assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
        acc = EventAccumulator(str(run_dir))
        acc.Reload()
        want = run.metrics[run.metrics["name"] == "test_error"].sort_values("epoch")
        got = acc.Scalars("test_error")
        assert [e.step for e in got] == want["epoch"].tolist()
        assert [e.value for e in got] == pytest.approx(want["value"].tolist(), rel=1e-6)
        assert {"alpha.stage1.block0", "train_error", "lr"} <= set(acc.Tags()["scalars"])
    run = next(r for r in runs.values() if r.label == "plain-20" and r.seed == 0)
    assert tensorboard_run_dir(log_dir, run) == log_dir / "exp" / "plain-20" / "seed0"
    acc = EventAccumulator(str(tensorboard_run_dir(log_dir, run)))
    acc.Reload()
    text = acc.Tensors("bench/config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "**model.depth**: 20" in text
