"""``bench status``: every job's state, progress, last test error and ETA, once or refreshed."""
from __future__ import annotations

import json
import math
from typing import Sequence

import pandas as pd
from rich import box
from rich.markup import escape
from rich.table import Table

from benchmark.store import Store
from benchmark.vocabulary import ITERATIONS, SECONDS, TEST_ERROR, JobState


STATE_STYLE = {JobState.DONE: "green", JobState.RUNNING: "cyan", JobState.QUEUED: "default",
               JobState.DIVERGED: "yellow", JobState.FAILED: "red"}


def _total_epochs(config: str, iterations_per_epoch: float | None) -> int | None:
    s = json.loads(config).get("schedule", {})
    if s.get("unit") == "epoch":
        return int(s["length"])
    if iterations_per_epoch:
        return math.ceil(s["length"] / iterations_per_epoch)
    return None


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _text(value) -> str:
    return "" if value is None or value != value else str(value)  # None and NaN print empty


def status_frame(store: Store, suites: Sequence[str] | None = None) -> pd.DataFrame:
    """``jobs_frame`` plus ``epochs`` (the schedule's total), ``test_error`` (of the last recorded
    epoch), ``eta_s`` (for running and queued jobs: seconds per epoch so far x epochs left) and
    ``slurm_job`` (the Slurm job that ran it last, or NaN)."""
    jobs = store.jobs_frame(suites)
    metrics = store.metrics_frame(suites, names=[TEST_ERROR, SECONDS, ITERATIONS])
    metrics = metrics[metrics.epoch >= 1]
    last = {}
    per_epoch_s: dict[int, float] = {}
    per_epoch_it: dict[int, float] = {}
    if not metrics.empty:
        wide = metrics.pivot_table(index=["job_id", "epoch"], columns="name", values="value",
                                   observed=True, aggfunc="last")
        for jid, g in wide.groupby(level=0):
            g = g.droplevel(0).sort_index()
            if TEST_ERROR in g:
                last[jid] = g[TEST_ERROR].iloc[-1]
            if SECONDS in g:
                per_epoch_s[jid] = float(g[SECONDS].mean())
            if ITERATIONS in g:
                per_epoch_it[jid] = float(g[ITERATIONS].iloc[-1]) / float(g.index[-1])
    jobs[TEST_ERROR] = [last.get(j, float("nan")) for j in jobs.job_id]
    jobs["epochs"] = [_total_epochs(c, per_epoch_it.get(j)) for c, j in zip(jobs.config, jobs.job_id)]
    eta = []
    for row in jobs.itertuples():
        spe = per_epoch_s.get(row.job_id)
        if row.state in (JobState.RUNNING, JobState.QUEUED) and spe is not None and row.epochs:
            eta.append(spe * max(0, row.epochs - row.epochs_done))
        else:
            eta.append(float("nan"))
    jobs["eta_s"] = eta
    # the Slurm job ("<array>_<index>") of the job's last worker, which carries it in its name
    jobs["slurm_job"] = jobs.worker.str.extract(r":slurm=([\w.-]+)", expand=False)
    return jobs


def status_table(frame: pd.DataFrame, title: str | None = None) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True)
    # Suite and label say which job it is: never truncate them; the worker column gives way first.
    for name in ("suite", "label"):
        table.add_column(name, no_wrap=True, min_width=len(name))
    for name in ("seed", "state", "epochs", "test err", "ETA", "tries"):
        table.add_column(name, no_wrap=True)
    slurm = bool(frame.slurm_job.notna().any()) if "slurm_job" in frame else False
    if slurm:
        table.add_column("slurm job", no_wrap=True)
    table.add_column("worker", overflow="ellipsis")
    table.add_column("device", no_wrap=True)
    for row in frame.itertuples():
        epochs = f"{row.epochs_done}/{row.epochs}" if row.epochs else str(row.epochs_done)
        err = "" if math.isnan(row.test_error) else f"{row.test_error:.2f}%"
        eta = "" if math.isnan(row.eta_s) else _duration(row.eta_s)
        orphan = " (orphan)" if "orphaned_at" in frame.columns and not pd.isna(row.orphaned_at) else ""
        # Suite-provided text is escaped: a label like "[red]x[/red]" or "[/]" is shown, not parsed.
        cells = [escape(row.suite), escape(row.label), str(row.seed), f"[{STATE_STYLE[row.state]}]{row.state}{orphan}",
                 epochs, err, eta, str(row.attempts)] + ([_text(row.slurm_job)] if slurm else []) \
            + [escape(_text(row.worker)), escape(_text(row.device))]
        table.add_row(*cells)
    return table


def summary(frame: pd.DataFrame) -> str:
    counts = frame.state.value_counts().to_dict()
    text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    running = frame[frame.state == JobState.RUNNING]
    if len(running) and running.eta_s.notna().any():
        text += f"; running jobs finish in about {_duration(running.eta_s.max())}"
    return text
