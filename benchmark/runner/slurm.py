"""Slurm: submit ``bench worker`` processes through submitit.

``bench run SUITE --runner runners/slurm.toml`` registers the suite, then submits
``[slurm] workers`` Slurm jobs (one array), each running ``bench worker --db URL --runner PROFILE
--suite NAME`` on a node: the worker uses the node's GPUs with the profile's ``[runner]`` settings,
takes jobs from the shared database until the queue is empty, and exits. Several nodes share one
queue through the database, so the URL should be PostgreSQL (SQLite locking does not work across
machines on a network file system).

Time limit and preemption. Slurm signals every process of a job step: SIGUSR2 ``[slurm]
signal_delay`` seconds before the time limit (submitit's ``--signal=USR2@delay``), SIGTERM when the job
is preempted or on ``scancel --signal=TERM``. Either way the worker stops: each job stops at its next
step, keeps its last epoch checkpoint and goes back to the queue. Then ``SlurmWorker`` (what each
Slurm job runs) requeues its own Slurm job with ``scontrol requeue`` while its suites have queued jobs,
at most ``[slurm] requeues`` times: the same job id (and array index) goes back to Slurm's queue and
runs the same worker again, which resumes the jobs from their checkpoints.

Why a requeue and not submitit's checkpointing: submitit's USR2 handler requeues only a
``Checkpointable`` function and then exits at once, which would kill the ``bench worker`` child before
it has given its jobs back; it also ignores SIGTERM, so a preemption would not be requeued at all.
Requeueing from here, after the worker has exited, covers both signals with one rule, keeps the job
id (its log folder, ``bench status``'s Slurm column) and needs no second submission from the login
node. A requeued job waits in Slurm's queue like a new one (and at least the cluster's credential
lifetime, 2 minutes by default, before it may start again).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from benchmark.errors import UserError
from benchmark.runner.profile import RunnerProfile, SlurmOptions
from benchmark.store import display_url
from benchmark.store.db import sqlite_path
from benchmark.vocabulary import JobState


class SlurmError(UserError, RuntimeError):
    """Submission is impossible (submitit missing, no Slurm); the message says how to fix it."""


# The profile keys `bench run` takes as flags, and the `bench worker` flag that sets each.
OVERRIDE_FLAGS = {"devices": "--devices", "jobs_per_device": "--jobs-per-device", "workers": "--workers",
                  "threads": "--threads", "data_dir": "--data-dir", "max_epochs": "--max-epochs",
                  "checkpoint_dir": "--checkpoint-dir"}


# Slurm's signals that mean "stop and come back later" (see the module's docstring).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


def slurm_job_id(environ: Mapping[str, str] = os.environ) -> str | None:
    """This process's Slurm job as squeue names it: "<array job>_<index>" in an array, else the job
    id; None outside Slurm. Workers put it in their name, so `bench status` shows it."""
    array, index = environ.get("SLURM_ARRAY_JOB_ID"), environ.get("SLURM_ARRAY_TASK_ID")
    if array and index:
        return f"{array}_{index}"
    return environ.get("SLURM_JOB_ID") or None


def slurm_job_state(job: str) -> str:
    """Slurm's state of ``job`` (RUNNING, COMPLETING...), "" if scontrol cannot tell."""
    result = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, timeout=60)
    match = re.search(r"\bJobState=(\S+)", result.stdout)
    return match.group(1) if match else ""


def queued_jobs(db_url: str, suites: Sequence[str]) -> int:
    from benchmark.store import Store

    with Store(db_url, create=False) as store:
        return sum(s[JobState.QUEUED] for s in store.suites() if not suites or s["name"] in suites)


@dataclass(frozen=True)
class SlurmWorker:
    """What each Slurm job runs (submitit pickles it): ``bench worker`` as a child process; when a
    time limit or a preemption stopped it while its suites still have queued jobs, ``scontrol
    requeue`` of this Slurm job, at most ``requeues`` times (``SLURM_RESTART_COUNT`` counts them)."""

    command: tuple[str, ...]
    cwd: str
    db_url: str
    suites: tuple[str, ...]
    requeues: int

    def __call__(self) -> str:
        worker = subprocess.Popen(self.command, cwd=self.cwd)

        def stop(signum, frame) -> None:  # Slurm signalled the worker too; this covers a signal sent
            if worker.poll() is None:  # to this process only (scancel --batch, LocalExecutor)
                worker.send_signal(signal.SIGTERM)

        # replace submitit's handlers (see the module's docstring)
        for s in STOP_SIGNALS:
            signal.signal(s, stop)
        while worker.poll() is None:  # poll, not wait(): the handler may call poll() meanwhile
            time.sleep(0.5)
        code = worker.returncode
        if code not in [0] + [128 + s for s in STOP_SIGNALS] + [-s for s in STOP_SIGNALS]:
            raise RuntimeError(f"bench worker exited with code {code}; see its output above")
        message, requeue = self._after_stop() if code else ("bench worker: the queue is empty", None)
        # In the Slurm job's stdout, beside the worker's, and before a requeue: that ends this
        # allocation at once (Slurm signals every process of the job, often before scontrol exits),
        # so nothing after it is sure to run.
        print(message, flush=True)
        if requeue is not None:
            result = subprocess.run(["scontrol", "requeue", requeue], capture_output=True, text=True, timeout=60)
            if result.returncode > 0:  # < 0: scontrol was killed by the requeue it asked for
                raise RuntimeError(f"scontrol requeue {requeue} failed (exit {result.returncode}): "
                                   f"{result.stderr.strip()}")
        return message

    def _after_stop(self) -> tuple[str, str | None]:
        """What to log after a stopped worker, and the Slurm job to requeue (None: none)."""
        job = slurm_job_id()
        restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        queued = queued_jobs(self.db_url, self.suites)
        if job is None:
            return f"bench worker stopped outside Slurm; {queued} job(s) queued", None
        if queued == 0:
            return "bench worker stopped; no queued job is left", None
        # Only a job Slurm still runs: warned before its time limit (SIGUSR2), or signalled by a
        # preemption / `scancel --signal=TERM`. A job Slurm is already ending (COMPLETING: a plain
        # `scancel`, or the limit passed before the worker had stopped) stays ended: scontrol would
        # requeue even a cancelled job.
        state = slurm_job_state(job)
        if state != "RUNNING":
            return f"Slurm job {job} is ending ({state or 'state unknown'}): not requeued; {queued} job(s) queued", None
        if restarts >= self.requeues:
            raise RuntimeError(f"bench worker stopped with {queued} job(s) still queued after {restarts} requeue(s), "
                               f"the profile's [slurm] requeues: submit again with the same `bench run`")
        return f"requeuing Slurm job {job} ({restarts + 1} of at most {self.requeues}): {queued} job(s) queued", job


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
    overrides = overrides or {}
    for key, flag in OVERRIDE_FLAGS.items():  # in a fixed order, whatever order the flags were typed in
        if overrides.get(key) is not None:
            cmd += [flag, str(overrides[key])]
    return cmd


def slurm_parameters(opts: SlurmOptions) -> dict[str, Any]:
    """submitit's ``update_parameters`` for one worker."""
    params: dict[str, Any] = dict(
        name="bench-worker", timeout_min=opts.time, nodes=1, tasks_per_node=1,
        cpus_per_task=opts.cpus_per_task, mem_gb=opts.mem_gb,
        # SIGUSR2 this long before the limit: the jobs checkpoint and go back to the queue
        slurm_signal_delay_s=opts.signal_delay,
        # requeue-able even where the cluster's JobRequeue default is 0 (SlurmWorker requeues itself)
        slurm_additional_parameters={"requeue": True, **dict(opts.extra)},
    )
    if opts.gpus_per_node:  # "--gpus-per-node=0" is an error on a cluster without GPUs (no gres)
        params["gpus_per_node"] = opts.gpus_per_node
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(opts, key)
        if value:
            params[f"slurm_{key}"] = value
    if opts.array_parallelism:
        params["slurm_array_parallelism"] = opts.array_parallelism
    return params


def _submitit():
    try:
        import submitit
    except ImportError:
        raise SlurmError("submitting to Slurm needs submitit: pip install -e '.[slurm]' "
                         "(or pip install submitit)") from None
    return submitit


def submit(profile: RunnerProfile, db_url: str, suites: Sequence[str],
           overrides: Mapping[str, Any] | None = None) -> list[Any]:
    """Submit ``profile.slurm.workers`` workers; returns submitit's job objects. ``overrides``: the
    profile keys the command line set (``benchmark.runner.api.runner_profile``): each worker reads
    the profile file again, so these travel as its flags."""
    opts = profile.slurm
    if opts is None:
        raise SlurmError(f"{profile.path or 'the runner profile'} has no [slurm] table")
    submitit = _submitit()
    folder = Path(opts.log_dir).resolve() / "%j"
    command = worker_command(db_url, profile.path, suites, overrides)
    function = SlurmWorker(tuple(command), os.getcwd(), command[command.index("--db") + 1], tuple(suites),
                           opts.requeues)
    if opts.executor == "local":  # test hook: the same submission, run as local processes
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=opts.time, gpus_per_node=0)
    else:
        if not any((Path(d) / "sbatch").exists() for d in os.environ.get("PATH", "").split(os.pathsep) if d):
            raise SlurmError("sbatch is not on PATH: run this on the cluster's login node "
                             "(or use runners/local.toml on this machine)")
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(**slurm_parameters(opts))
    with executor.batch():
        jobs = [executor.submit(function) for _ in range(opts.workers)]
    return jobs


def sqlite_warning(db_url: str) -> str | None:
    if sqlite_path(db_url) is None:
        return None
    return (f"warning: {display_url(db_url)} is a SQLite file; Slurm jobs on several nodes need a database "
            "server they all reach (PostgreSQL: --db postgresql+psycopg://user@host/bench). SQLite works only "
            "when every worker runs on this machine's file system and SQLite's locks work on it.")
