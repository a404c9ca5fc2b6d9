"""Slurm: submit ``bench worker`` processes through submitit.

``bench run SUITE --runner runners/slurm.toml`` registers the suite, then submits
``[slurm] workers`` Slurm jobs (one array), each running ``bench worker --db URL --runner PROFILE
--suite NAME`` on a node: the worker uses the node's GPUs with the profile's ``[runner]`` settings,
takes jobs from the shared database until the queue is empty, and exits. Several nodes share one
queue through the database, so the URL should be PostgreSQL (SQLite locking does not work across
machines on a network file system).

When Slurm's time limit is near, Slurm sends SIGTERM: each job stops at its next step, keeps its
last epoch checkpoint and goes back to the queue; submit again (or ``bench worker``) to continue.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from benchmark.errors import UserError
from benchmark.runner.profile import RunnerProfile, SlurmOptions, load_profile
from benchmark.store import display_url
from benchmark.store.db import sqlite_path


class SlurmError(UserError, RuntimeError):
    """Submission is impossible (submitit missing, no Slurm); the message says how to fix it."""


# The profile keys `bench run` takes as flags, and the `bench worker` flag that sets each.
OVERRIDE_FLAGS = {"devices": "--devices", "jobs_per_device": "--jobs-per-device", "workers": "--workers",
                  "threads": "--threads", "data_dir": "--data-dir", "max_epochs": "--max-epochs",
                  "checkpoint_dir": "--checkpoint-dir"}


def profile_overrides(profile: RunnerProfile) -> dict[str, Any]:
    """The flag-settable keys where ``profile`` differs from its file: what the command line changed.
    The submitted worker reads the file again, so these must travel as its flags."""
    in_file = load_profile(profile.path or None)
    return {k: getattr(profile, k) for k in OVERRIDE_FLAGS if getattr(profile, k) != getattr(in_file, k)}


def worker_command(db_url: str, profile_path: str, suites: Sequence[str],
                   overrides: Mapping[str, Any] | None = None) -> list[str]:
    """The command each Slurm job runs (absolute paths: it runs on another machine); ``overrides``
    (profile keys of ``OVERRIDE_FLAGS``, None: not given) become its flags."""
    path = sqlite_path(db_url)
    if path is not None and not path.is_absolute():
        db_url = f"sqlite:///{path.resolve()}"
    cmd = [sys.executable, "-m", "benchmark.cli", "worker", "--db", db_url, "--runner", str(Path(profile_path).resolve())]
    for name in suites:
        cmd += ["--suite", name]
    for key, value in (overrides or {}).items():
        if value is not None:
            cmd += [OVERRIDE_FLAGS[key], str(value)]
    return cmd


def slurm_parameters(opts: SlurmOptions) -> dict[str, Any]:
    """submitit's ``update_parameters`` for one worker."""
    params: dict[str, Any] = dict(
        name="bench-worker", timeout_min=opts.time, nodes=1, tasks_per_node=1,
        gpus_per_node=opts.gpus_per_node, cpus_per_task=opts.cpus_per_task, mem_gb=opts.mem_gb,
        # SIGTERM 2 minutes before the limit: the jobs checkpoint and go back to the queue
        slurm_signal_delay_s=120,
    )
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(opts, key)
        if value:
            params[f"slurm_{key}"] = value
    if opts.array_parallelism:
        params["slurm_array_parallelism"] = opts.array_parallelism
    if opts.extra:
        params["slurm_additional_parameters"] = dict(opts.extra)
    return params


def _submitit():
    try:
        import submitit
    except ImportError:
        raise SlurmError("submitting to Slurm needs submitit: pip install -e '.[slurm]' "
                         "(or pip install submitit)") from None
    return submitit


def submit(profile: RunnerProfile, db_url: str, suites: Sequence[str]) -> list[Any]:
    """Submit ``profile.slurm.workers`` workers; returns submitit's job objects."""
    opts = profile.slurm
    if opts is None:
        raise SlurmError(f"{profile.path or 'the runner profile'} has no [slurm] table")
    submitit = _submitit()
    folder = Path(opts.log_dir).resolve() / "%j"
    command = worker_command(db_url, profile.path, suites, profile_overrides(profile))
    if opts.executor == "local":  # test hook: the same submission, run as local processes
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=opts.time, gpus_per_node=0)
    else:
        if not any((Path(d) / "sbatch").exists() for d in os.environ.get("PATH", "").split(os.pathsep) if d):
            raise SlurmError("sbatch is not on PATH: run this on the cluster's login node "
                             "(or use runners/local.toml on this machine)")
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(**slurm_parameters(opts))
    function = submitit.helpers.CommandFunction(command, cwd=os.getcwd(), verbose=False)
    with executor.batch():
        jobs = [executor.submit(function) for _ in range(opts.workers)]
    return jobs


def sqlite_warning(db_url: str) -> str | None:
    if sqlite_path(db_url) is None:
        return None
    return (f"warning: {display_url(db_url)} is a SQLite file; Slurm jobs on several nodes need a database "
            "server they all reach (PostgreSQL: --db postgresql+psycopg://user@host/bench). SQLite works only "
            "when every worker runs on this machine's file system and SQLite's locks work on it.")
