"""Several processes on one SQLite file: creation, registration and claims never collide, and no
writer ever sees "database is locked"."""
from __future__ import annotations

import multiprocessing as mp
import os
import socket
import traceback

from benchmark.store import Store

N_PROCS, N_JOBS, N_EPOCHS = 4, 40, 5
NAMES = ("train_loss", "train_error", "test_loss", "test_error")


def _suite():
    from benchmark.config import JobSpec
    from benchmark.suite_types import Job, Suite

    return Suite(name="mp", path="suites/mp.toml", text="# mp\n",
                 jobs=tuple(Job(label="resnet-20", spec=JobSpec(seed=i)) for i in range(N_JOBS)))


def _worker(url, barrier, results) -> None:
    """A tiny `bench run`: open (maybe create) the database, register, claim until empty."""
    try:
        barrier.wait()
        store = Store(url)
        added, _ = store.register_suite(_suite())
        me = f"{socket.gethostname()}:{os.getpid()}"
        done = []
        while (job := store.claim_job(me, "cpu")) is not None:
            for epoch in range(1, N_EPOCHS + 1):
                assert store.heartbeat(job.id, me)
                assert store.record_epoch(job.id, epoch, {n: job.id + epoch / 10 for n in NAMES},
                                          worker=me)
            assert store.finish(job.id, "done", worker=me)
            done.append(job.id)
        store.close()
        results.put(("ok", added, done))
    except BaseException:
        results.put(("error", traceback.format_exc(), []))


def test_processes_share_one_sqlite_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'results.sqlite'}"  # does not exist yet: created concurrently
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(N_PROCS), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, barrier, results)) for _ in range(N_PROCS)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    errors = [o[1] for o in outcomes if o[0] == "error"]
    assert not errors, "\n".join(errors)

    assert sum(o[1] for o in outcomes) == N_JOBS  # registered once in all, whoever did it
    claimed = [j for o in outcomes for j in o[2]]
    assert len(claimed) == N_JOBS and len(set(claimed)) == N_JOBS  # every job exactly once

    with Store(url) as store:
        jobs = store.jobs_frame()
        assert len(jobs) == N_JOBS
        assert (jobs.state == "done").all() and (jobs.attempts == 1).all()
        assert (jobs.epochs_done == N_EPOCHS).all()
        m = store.metrics_frame()
        assert len(m) == N_JOBS * N_EPOCHS * len(NAMES)
        assert not m.duplicated(["job_id", "epoch", "name"]).any()
