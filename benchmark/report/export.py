"""Results into the tools researchers already use: tables (csv, json, Parquet), MLflow, TensorBoard.

``bench export`` is a thin click command over these functions:

    frame = export_frame(store, suites, wide=True)   # one row per job x epoch, config and environment as columns
    write_frame(frame, "parquet", "results.parquet")
    to_mlflow(store, suites, tracking_uri="sqlite:///mlflow.db")   # one MLflow run per job
    to_tensorboard(store, suites, "runs/")                          # one TensorBoard run per job

Every job carries its resolved configuration (``config.*`` columns, MLflow params), its
environment (``env.*``: torch, CUDA, GPU, host, git commit) and its code version, so a number
that leaves the database still says what produced it. Parquet needs ``pip install 'bench[parquet]'``,
MLflow ``bench[mlflow]``, TensorBoard ``bench[tensorboard]``; each is imported only when used.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from benchmark.errors import UserError
from benchmark.escaping import spreadsheet_safe
from benchmark.vocabulary import SECONDS, JobState


FORMATS = ("csv", "json", "parquet")
LONG_COLUMNS = ["suite", "key", "label", "seed", "epoch", "name", "value"]  # the export's columns before config
JOB_COLUMNS = ["suite", "key", "label", "seed", "state", "attempts", "epochs_done", "device", "worker",
               "started_at", "finished_at", "code_version"]


class ExportError(UserError, ValueError):
    """An export that cannot be made as asked (a missing extra, no output file for Parquet)."""


def _need(module: str, extra: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ExportError(f"{what} needs the {module.split('.')[0]} package: pip install 'bench[{extra}]' "
                          f"({e})") from None


# ----------------------------------------------------------------------------------------------
# A job's configuration and environment as flat columns


def flat_config(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"depth": 20}}`` -> ``{"model.depth": 20}``; a list becomes its JSON text
    (``"[16, 32, 64]"``), so every value is a scalar a column, a param or a Parquet cell can hold."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_config(v, f"{prefix}{k}."))
        elif isinstance(v, (list, tuple)):
            out[f"{prefix}{k}"] = json.dumps(list(v))
        else:
            out[f"{prefix}{k}"] = v
    return out


def code_version(env: dict[str, Any] | None, stored: Any = None) -> str | None:
    """The code a job ran: the store's ``code_version`` (column or environment key) when it has
    one, else the git commit from the environment, with "+dirty" when the tree had changes."""
    if isinstance(stored, str) and stored:
        return stored
    env = env or {}
    if env.get("code_version"):
        return str(env["code_version"])
    commit = env.get("git_commit")
    if not commit:
        return None
    return f"{commit}+dirty" if env.get("git_dirty") else str(commit)


def _uniform(values: list[Any]) -> list[Any]:
    """One type per column (Parquet has no mixed columns): int and float mix to float, bools
    stay bools, anything else mixed becomes text. None stays missing."""
    types = {type(v) for v in values if v is not None}
    if types <= {bool} or types <= {str} or types <= {int} or types <= {float}:
        return values
    if types <= {int, float}:
        return [None if v is None else float(v) for v in values]
    return [None if v is None else str(v) for v in values]


def job_table(jobs: pd.DataFrame) -> pd.DataFrame:
    """One row per job (``Store.jobs_frame``): job_id, JOB_COLUMNS, then ``config.*`` and ``env.*``."""
    configs = [flat_config(json.loads(c)) if isinstance(c, str) and c else {} for c in jobs["config"]]
    envs = [json.loads(e) if isinstance(e, str) and e else {} for e in jobs["environment"]]
    stored = jobs["code_version"] if "code_version" in jobs.columns else [None] * len(jobs)
    out = {"job_id": jobs["job_id"].to_numpy()}
    for col in JOB_COLUMNS:
        if col == "code_version":
            out[col] = [code_version(e, s) for e, s in zip(envs, stored)]
        else:
            out[col] = jobs[col].to_numpy() if col in jobs.columns else None
    for prefix, dicts in (("config.", configs), ("env.", [flat_config(e) for e in envs])):
        names = list(dict.fromkeys(k for d in dicts for k in d))
        for k in names:
            out[prefix + k] = _uniform([d.get(k) for d in dicts])
    frame = pd.DataFrame(out)
    for col in ("started_at", "finished_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame


def export_frame(store: Any, suites: Sequence[str] | None = None, wide: bool = False) -> pd.DataFrame:
    """Every metric of the jobs of ``suites`` (default: all) with their config and environment.

    long (``wide=False``): one row per job, epoch and metric, columns LONG_COLUMNS then the job's
    state, config and environment; wide: one row per job and epoch with one column per metric."""
    metrics = store.metrics_frame(list(suites) if suites else None)
    jobs = job_table(store.jobs_frame(list(suites) if suites else None))
    if wide:
        values = metrics.set_index(["job_id", "epoch", "name"])["value"].unstack("name")
        values.columns = [f"metric.{c}" if c in jobs.columns or c == "epoch" else str(c) for c in values.columns]
        values = values.reset_index()
        # Jobs without an epoch yet keep a row (epoch missing): the export lists every job.
        frame = jobs.merge(values, on="job_id", how="left")
        metric_cols = [c for c in values.columns if c not in ("job_id", "epoch")]
        front = ["suite", "key", "label", "seed", "state", "epoch", *metric_cols]
        frame["epoch"] = frame["epoch"].astype("Int64")
    else:
        frame = metrics[["job_id", "epoch", "name", "value"]].merge(jobs, on="job_id", how="left")
        frame["name"] = frame["name"].astype(str)
        front = LONG_COLUMNS
    rest = [c for c in frame.columns if c not in front and c != "job_id"]
    return frame[front + rest].reset_index(drop=True)


def write_frame(frame: pd.DataFrame, fmt: str, out: str | Path | None) -> str | None:
    """Write ``frame`` as csv, json (records) or Parquet to ``out``; csv/json to a string when
    ``out`` is None (Parquet is binary: it needs a file)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        if out is None:
            raise ExportError("--format parquet writes a binary file: give it one with --out FILE")
        _need("pyarrow", "parquet", "--format parquet")
        frame.to_parquet(out, index=False)
        return None
    if fmt == "csv":
        text = spreadsheet_safe(frame).to_csv(index=False)  # no cell a spreadsheet would run as a formula
    else:
        text = frame.to_json(orient="records", indent=1, date_format="iso")
    if out is None:
        return text
    try:
        Path(out).write_text(text)
    except OSError as e:
        raise ExportError(f"cannot write {out}: {e.strerror or e}; choose another --out") from None
    return None


# ----------------------------------------------------------------------------------------------
# One run per job: what MLflow and TensorBoard both need


@dataclass(frozen=True)
class JobRun:
    """One job as an experiment tracker sees it."""

    suite: str
    key: str
    label: str
    seed: int
    state: str
    params: dict[str, str]  # the flattened config, as text
    tags: dict[str, str]
    start_ms: int | None
    end_ms: int | None
    metrics: pd.DataFrame  # epoch, name, value, timestamp_ms


def _ms(t: Any) -> int | None:
    return None if t is None or pd.isna(t) else int(pd.Timestamp(t).timestamp() * 1000)


def _database(store: Any) -> str:
    from benchmark.store.db import display_url, sqlite_path

    path = sqlite_path(store.url)
    return f"sqlite:///{path.resolve()}" if path is not None else display_url(store.url)


def job_runs(store: Any, suites: Sequence[str] | None = None) -> Iterable[JobRun]:
    """Every job of ``suites`` (default: all) with its params, tags and per-epoch metrics."""
    jobs = store.jobs_frame(list(suites) if suites else None)
    table = job_table(jobs).set_index("job_id")
    metrics = store.metrics_frame(list(suites) if suites else None)
    by_job = {j: g for j, g in metrics.groupby("job_id", sort=False)}
    database = _database(store)
    for job_id, row in table.iterrows():
        m = by_job.get(job_id, pd.DataFrame(columns=["epoch", "name", "value"]))
        m = m[["epoch", "name", "value"]].assign(name=m["name"].astype(str)).sort_values(["epoch", "name"])
        start = _ms(row["started_at"])
        # A step's wall time: the job's start plus the training seconds of the epochs so far (the
        # "seconds" metric); the store keeps no per-epoch timestamp.
        secs = m[m["name"] == SECONDS].set_index("epoch")["value"].sort_index().cumsum()
        offset = m["epoch"].map(secs).fillna(0.0).to_numpy() if len(secs) else np.zeros(len(m))
        base = start if start is not None else _ms(pd.Timestamp.now(tz="UTC"))
        m = m.assign(timestamp_ms=(base + 1000 * np.nan_to_num(offset)).astype(np.int64))
        params = {k.removeprefix("config."): "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                  for k, v in row.items() if k.startswith("config.")}
        tags = {"bench.suite": row["suite"], "bench.label": row["label"], "bench.seed": str(row["seed"]),
                "bench.key": row["key"], "bench.state": row["state"], "bench.database": database}
        cv = row["code_version"]
        if isinstance(cv, str) and cv:
            tags["bench.code_version"] = cv
        for k in ("torch", "cuda", "gpu", "host", "device"):
            v = row.get(f"env.{k}")
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                tags[f"bench.env.{k}"] = str(v)
        commit = row.get("env.git_commit")
        if isinstance(commit, str) and commit:
            tags["mlflow.source.git.commit"] = commit  # MLflow's own tag: its UI shows and links it
        yield JobRun(row["suite"], row["key"], row["label"], int(row["seed"]), row["state"], params, tags,
                     start, _ms(row["finished_at"]), m)


@dataclass(frozen=True)
class ExportSummary:
    runs_created: int
    runs_updated: int
    metrics_logged: int
    where: str

    def __str__(self) -> str:
        return (f"{self.runs_created} runs created, {self.runs_updated} updated, "
                f"{self.metrics_logged} metric values logged to {self.where}")


# ----------------------------------------------------------------------------------------------
# MLflow

# MLflow's RunStatus for a job's state. A queued or running job is exported as far as it got.
MLFLOW_STATUS = {JobState.DONE: "FINISHED", JobState.FAILED: "FAILED", JobState.DIVERGED: "FAILED",
                 JobState.RUNNING: "RUNNING", JobState.QUEUED: "SCHEDULED"}
_MLFLOW_BATCH = 1000  # MLflow's log_batch limit: 1000 metrics, 100 params, 100 tags per call


def to_mlflow(store: Any, suites: Sequence[str] | None = None, tracking_uri: str | None = None,
              experiment: str | None = None) -> ExportSummary:
    """Log every job as an MLflow run: params = the flattened config, metrics per epoch (step =
    epoch), tags = suite, label, seed, key, state, code version. One experiment per suite (named
    after it), or all in ``experiment``.

    Safe to repeat: a job already exported from this database (tags ``bench.key`` and
    ``bench.database``) is updated in place, logging only the epochs past those it has."""
    _need("mlflow", "mlflow", "--to mlflow")
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiments: dict[str, tuple[str, dict[str, Any]]] = {}  # name -> (id, key -> run)
    created = updated = logged = 0
    try:
        for run in job_runs(store, suites):
            name = experiment or run.suite
            if name not in experiments:
                exp = client.get_experiment_by_name(name)
                exp_id = exp.experiment_id if exp is not None else client.create_experiment(name)
                known = {}
                for r in _all_runs(client, exp_id):
                    t = r.data.tags
                    if t.get("bench.database") == run.tags["bench.database"] and "bench.key" in t:
                        known[t["bench.key"]] = r
                experiments[name] = (exp_id, known)
            exp_id, known = experiments[name]
            old = known.get(run.key)
            if old is None:
                mrun = client.create_run(exp_id, start_time=run.start_ms, tags=run.tags,
                                         run_name=f"{run.label} seed {run.seed}")
                run_id, done_epochs = mrun.info.run_id, 0
                params = [Param(k, v) for k, v in run.params.items()]
                for i in range(0, len(params), 100):
                    client.log_batch(run_id, params=params[i:i + 100])
                created += 1
            else:
                run_id, done_epochs = old.info.run_id, int(old.data.tags.get("bench.epochs", 0))
                updated += 1
            m = run.metrics[run.metrics["epoch"] > done_epochs]
            batch = [Metric(n, float(v), int(t), int(e)) for e, n, v, t in
                     zip(m["epoch"], m["name"], m["value"], m["timestamp_ms"])]
            for i in range(0, len(batch), _MLFLOW_BATCH):
                client.log_batch(run_id, metrics=batch[i:i + _MLFLOW_BATCH])
            logged += len(batch)
            epochs = int(run.metrics["epoch"].max()) if len(run.metrics) else 0
            tags = {**run.tags, "bench.epochs": str(max(epochs, done_epochs))}
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            status = MLFLOW_STATUS.get(run.state, "KILLED")
            if status in ("FINISHED", "FAILED", "KILLED"):
                client.set_terminated(run_id, status, end_time=run.end_ms)
            else:
                client.update_run(run_id, status=status)
    except MlflowException as e:
        raise ExportError(f"MLflow at {client.tracking_uri}: {e.message}") from None
    return ExportSummary(created, updated, logged, f"MLflow {client.tracking_uri}")


def _all_runs(client, exp_id: str) -> list[Any]:
    out, token = [], None
    while True:
        page = client.search_runs([exp_id], max_results=1000, page_token=token)
        out += list(page)
        token = page.token
        if not token:
            return out


# ----------------------------------------------------------------------------------------------
# TensorBoard

_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def tensorboard_run_dir(log_dir: str | Path, run: JobRun) -> Path:
    """``LOG_DIR/<suite>/<label>/seed<seed>``: TensorBoard lists runs by their path under the log dir."""
    part = lambda s: _UNSAFE.sub("_", s).strip("._") or "_"  # noqa: E731
    return Path(log_dir) / part(run.suite) / part(run.label) / f"seed{run.seed}"


def to_tensorboard(store: Any, suites: Sequence[str] | None, log_dir: str | Path) -> ExportSummary:
    """Write one TensorBoard run per job: a scalar per metric and epoch (step = epoch), the config
    and tags as text. A repeated export replaces the job's event files, never duplicates them."""
    _need("tensorboard", "tensorboard", "--to tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    created = updated = logged = 0
    for run in job_runs(store, suites):
        run_dir = tensorboard_run_dir(log_dir, run)
        old = list(run_dir.glob("events.out.tfevents.*")) if run_dir.is_dir() else []
        for f in old:  # only the event files this exporter writes: anything else there is left alone
            f.unlink()
        created += not old
        updated += bool(old)
        with SummaryWriter(log_dir=str(run_dir)) as w:
            w.add_text("bench/tags", "\n".join(f"- **{k}**: {v}" for k, v in run.tags.items()), 0)
            w.add_text("bench/config", "\n".join(f"- **{k}**: {v}" for k, v in run.params.items()), 0)
            for e, n, v, t in zip(run.metrics["epoch"], run.metrics["name"], run.metrics["value"],
                                  run.metrics["timestamp_ms"]):
                w.add_scalar(n, float(v), int(e), walltime=t / 1000.0)
            logged += len(run.metrics)
    return ExportSummary(created, updated, logged, f"TensorBoard log dir {log_dir}")
