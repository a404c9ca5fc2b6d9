"""``Store``: the only code that reads or writes the results database.

Job life cycle (``jobs.state``)::

    queued --claim_job--> running --finish--> done | diverged | failed
                            +--release (Ctrl-C; attempt not counted)--> queued
                            +--requeue_stale / fail_attempt--> queued, or failed after
                                 max_attempts ("gave up after N attempts; last error: ...")
    failed | diverged --reset_jobs--> queued

Conventions:

- Epochs are numbered from 1: ``record_epoch(job, 1, ...)`` is the end of the first epoch, and
  ``jobs.epochs_done`` is the highest epoch recorded so far. Epoch 0 may hold an evaluation before
  training; it does not count as done.
- NaN metric values are stored as SQL NULL (portable: SQLite turns NaN into NULL anyway) and come
  back as NaN from ``metrics_frame``. +-inf are stored as they are.
- ``attempts`` counts claims. ``release`` gives the attempt back (an interrupted run is not a
  failure); a lost worker (``requeue_stale``) or ``fail_attempt`` keeps it.
- Every timestamp is the database's clock (``schema.utcnow``), in UTC.
- A worker is named ``"host:pid"`` (anything may follow the pid: ``"host:pid:cuda:0"``); that is how
  ``requeue_stale`` sees that a job's process on this host has died.
"""
from __future__ import annotations

import functools
import json
import math
import os
import socket
import weakref
from dataclasses import dataclass
from pathlib import Path
from datetime import timedelta
from typing import Any, Collection, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from sqlalchemy import and_, bindparam, case, delete, func, literal, select, update

from benchmark.config import JobSpec
from benchmark.errors import UserError
from benchmark.suite_types import Job, Suite
from benchmark.vocabulary import BROKEN_STATES, FINAL_STATES, JobState

from . import db
from .db import NotFound, StoreError, display_url, resolve_url, translate_errors
from .environment import Provenance
from .schema import (
    code_diffs_table as CD,
    database_table as D,
    jobs_table as J,
    metrics_table as M,
    suites_table as S,
    utcnow,
)

class SuiteConflict(UserError):
    """A suite name is registered with other jobs than the text being registered under it."""


_CLAIM_BATCH = 16  # SQLite: candidates read per round; losing all of them to other workers means re-read


@dataclass(frozen=True)
class JobRecord:
    id: int
    suite: str
    key: str
    cell: str
    label: str
    seed: int
    spec: JobSpec
    state: str
    attempts: int
    epochs_done: int
    worker: str | None
    device: str | None
    error: str | None
    code_version: str | None = None


def gave_up(attempts: int, reason: str) -> str:
    """The error of a job failed for good after ``attempts`` claims, the last for ``reason``."""
    return f"gave up after {attempts} attempts; last error: {reason}"


def _metric_value(v: Any) -> float | None:
    f = float(v)  # also takes 0-d tensors and numpy scalars
    return None if math.isnan(f) else f


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True  # cannot tell: let the heartbeat timeout decide
    try:  # Linux: a killed child its parent has not reaped yet is a zombie, not alive
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:][:1] != "Z"
    except (OSError, ValueError):
        return True


def dead_local_worker(worker: str | None, host: str | None = None) -> bool:
    """True when ``worker`` ("host:pid...") names a process on this host that no longer exists."""
    if not worker or ":" not in worker:
        return False
    whost, rest = worker.split(":", 1)
    digits = ""
    for ch in rest:
        if not ch.isdigit():
            break
        digits += ch
    if whost != (host or socket.gethostname()) or not digits or int(digits) <= 0:
        return False
    return not _pid_alive(int(digits))


class Store:
    """The results database. ``url``: any SQLAlchemy URL; default ``$BENCH_DB`` or
    ``sqlite:///db/results.sqlite`` relative to the current directory.

    A new empty database is created at the newest schema revision (unless ``create=False``); an
    existing one must already be at it, else ``SchemaError`` says to run ``bench db upgrade``.
    Every method raises ``StoreError`` (never a raw driver error) when the database fails.
    """

    def __init__(self, url: str | None = None, *, create: bool = True):
        self.url = resolve_url(url)
        db.check_url(self.url)
        path = db.sqlite_path(self.url)
        if path is not None:
            if not path.exists() and not create:
                raise StoreError(f"no bench database at {display_url(self.url)} (no file {path}): "
                                 f"`bench run SUITE --db {display_url(self.url)}` creates it and registers a "
                                 f"suite (`bench db upgrade --db {display_url(self.url)}` creates an empty one)")
        db.make_sqlite_folder(self.url)
        with translate_errors(self.url):
            self._engine = db.make_engine(self.url)
        self._write = db.writer(self._engine)
        try:
            db.check_schema(self._engine, self.url, create=create)
        except BaseException:
            self._engine.dispose()
            raise
        # A forked child (multiprocessing 'fork') must not reuse the parent's pooled connections:
        # it drops them, without closing them under the parent, and opens its own.
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (s := ref()) and s._engine.dispose(close=False))

    # -- plumbing ------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"Store({display_url(self.url)!r})"

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._engine.dispose()

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def _guard(self):
        return translate_errors(self.url)

    def _insert(self, table):
        """INSERT with ON CONFLICT (upserts): SQLite and PostgreSQL, the two backends bench supports."""
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        elif self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            raise StoreError(f"{display_url(self.url)}: bench stores results in SQLite or PostgreSQL, "
                             f"not {self.dialect}")
        return dialect_insert(table)

    def _suite_id(self, conn, name: str) -> int:
        sid = conn.execute(select(S.c.id).where(S.c.name == name)).scalar()
        if sid is None:
            raise NotFound(f"no suite named {name!r} in {display_url(self.url)}; "
                           f"registered: {', '.join(self._suite_names(conn)) or 'none'}")
        return sid

    @staticmethod
    def _suite_names(conn) -> list[str]:
        return list(conn.execute(select(S.c.name).order_by(S.c.name)).scalars())

    # -- suites --------------------------------------------------------------------------------

    def register_suite(self, suite: Suite, *, replace: bool = False) -> tuple[int, int]:
        """Insert the suite and its jobs that are not there yet, by (suite, job key); update its
        text, path, title and changed labels. Existing jobs keep their state and results.

        A suite owns its name: when ``suite`` lacks some of its registered jobs (cells removed or
        changed; adding cells or seeds is fine), registering is refused with ``SuiteConflict`` naming
        the cells, unless ``replace``: then the registered jobs the new text lacks become orphans (kept with their
        results, never trained or reported; ``prune_orphans`` deletes them) and a job that comes
        back is adopted again. Returns (jobs added, jobs already present)."""
        from benchmark.suite import job_differences

        jobs: dict[str, Any] = {}
        for job in suite.jobs:  # the parser rejects duplicates; first one wins if any slip through
            jobs.setdefault(job.key, job)
        values = dict(path=str(suite.path), text=suite.text or "", title=suite.title or "")
        with self._guard(), self._write.begin() as c:
            sid = c.execute(select(S.c.id).where(S.c.name == suite.name)).scalar()
            if sid is None:
                c.execute(self._insert(S).on_conflict_do_nothing(index_elements=["name"])
                          .values(name=suite.name, registered_at=utcnow(), **values))
                sid = c.execute(select(S.c.id).where(S.c.name == suite.name)).scalar_one()
            rows = c.execute(select(J.c.id, J.c.key, J.c.label, J.c.seed, J.c.orphaned_at)
                             .where(J.c.suite_id == sid)).all()
            existing = {r.key: r for r in rows}
            current = [Job(r.label, JobSpec(seed=r.seed), stored_key=r.key) for r in rows if r.orphaned_at is None]
            lost = [j for j in current if j.key not in jobs]  # adding cells or seeds orphans nothing
            differs = job_differences(list(jobs.values()), current) if lost else ""
            if differs and not replace:
                raise SuiteConflict(
                    f"suite {suite.name!r} is already registered in {display_url(self.url)} with other jobs: "
                    f"{differs}. Give the new text another [suite] name, or register it with --replace: "
                    f"then the {len(lost)} registered job(s) it lacks are kept "
                    f"with their results as orphans (never trained or reported; `bench prune "
                    f"{suite.name}` deletes them)")
            c.execute(update(S).where(S.c.id == sid).values(**values))
            new = [dict(suite_id=sid, key=k, cell=j.spec.cell_key, label=j.label, seed=j.seed,
                        config=j.spec.canonical_json(), state=JobState.QUEUED, attempts=0, epochs_done=0)
                   for k, j in jobs.items() if k not in existing]
            if new:
                c.execute(self._insert(J).on_conflict_do_nothing(index_elements=["suite_id", "key"])
                          .values(created_at=utcnow()), new)
            relabel = [dict(_id=existing[k].id, _label=j.label)
                       for k, j in jobs.items() if k in existing and existing[k].label != j.label]
            if relabel:
                c.execute(update(J).where(J.c.id == bindparam("_id")).values(label=bindparam("_label")),
                          relabel)
            gone = [r.id for r in rows if r.key not in jobs and r.orphaned_at is None]
            back = [r.id for r in rows if r.key in jobs and r.orphaned_at is not None]
            if gone:
                c.execute(update(J).where(J.c.id.in_(gone)).values(orphaned_at=utcnow()))
            if back:
                c.execute(update(J).where(J.c.id.in_(back)).values(orphaned_at=None))
        return len(new), len(jobs) - len(new)

    def prune_orphans(self, suite: str, *, dry_run: bool = False) -> list[tuple[int, str, int, str]]:
        """Delete a suite's orphaned jobs (see ``register_suite``) with their metrics; returns
        (id, label, seed, state) of each. Running orphans are kept (their worker still writes).
        ``dry_run`` (every `bench run` asks) only reads: no write lock."""
        with self._guard(), (self._engine.connect() if dry_run else self._write.begin()) as c:
            sid = self._suite_id(c, suite)
            where = and_(J.c.suite_id == sid, J.c.orphaned_at.is_not(None), J.c.state != JobState.RUNNING)
            rows = [tuple(r) for r in c.execute(select(J.c.id, J.c.label, J.c.seed, J.c.state)
                                                 .where(where).order_by(J.c.id))]
            if rows and not dry_run:
                ids = [r[0] for r in rows]
                c.execute(delete(M).where(M.c.job_id.in_(ids)))
                c.execute(delete(J).where(J.c.id.in_(ids)))
        return rows

    def suites(self) -> list[dict[str, Any]]:
        """One dict per suite: name, path, title, registered_at, jobs, and a count per state (orphaned
        jobs not counted)."""
        counts = (select(J.c.suite_id, J.c.state, func.count().label("n")).where(J.c.orphaned_at.is_(None))
                  .group_by(J.c.suite_id, J.c.state))
        with self._guard(), self._engine.connect() as c:
            rows = c.execute(select(S.c.id, S.c.name, S.c.path, S.c.title, S.c.registered_at)
                             .order_by(S.c.name)).all()
            per: dict[int, dict[str, int]] = {}
            for sid, state, n in c.execute(counts):
                per.setdefault(sid, {})[state] = n
        out = []
        for r in rows:
            states = {s.value: per.get(r.id, {}).get(s, 0) for s in JobState}
            out.append(dict(name=r.name, path=r.path, title=r.title, registered_at=r.registered_at,
                            jobs=sum(states.values()), **states))
        return out

    def suite_text(self, name: str) -> str:
        """The TOML source of a suite as it was last registered."""
        with self._guard(), self._engine.connect() as c:
            sid = self._suite_id(c, name)
            return c.execute(select(S.c.text).where(S.c.id == sid)).scalar_one()

    def delete_suite(self, name: str) -> int:
        """Delete a suite with its jobs and metrics; returns the number of jobs deleted."""
        with self._guard(), self._write.begin() as c:
            sid = self._suite_id(c, name)
            ids = select(J.c.id).where(J.c.suite_id == sid).scalar_subquery()
            c.execute(delete(M).where(M.c.job_id.in_(ids)))
            n = c.execute(delete(J).where(J.c.suite_id == sid)).rowcount
            c.execute(delete(S).where(S.c.id == sid))
        return n

    def reset_jobs(self, suite: str, states: Iterable[str] = BROKEN_STATES, *,
                   clear_metrics: bool = False) -> int:
        """Put a suite's jobs in ``states`` back in the queue with a fresh attempt count; returns how
        many. Their metrics are kept (a resumed run overwrites them epoch by epoch) unless
        ``clear_metrics``, which also sets epochs_done to 0. Running jobs are never reset."""
        states = [s for s in states if s != JobState.RUNNING]
        bad = set(states) - set(JobState)
        if bad:
            raise ValueError(f"unknown job states {sorted(bad)}; states are {', '.join(JobState)}")
        with self._guard(), self._write.begin() as c:
            sid = self._suite_id(c, suite)
            where = and_(J.c.suite_id == sid, J.c.state.in_(states))
            values: dict[str, Any] = dict(state=JobState.QUEUED, attempts=0, error=None, worker=None,
                                          device=None, started_at=None, heartbeat_at=None,
                                          finished_at=None)
            if clear_metrics:
                c.execute(delete(M).where(M.c.job_id.in_(select(J.c.id).where(where))))
                values["epochs_done"] = 0
            return c.execute(update(J).where(where).values(**values)).rowcount

    # -- the job life cycle ---------------------------------------------------------------------

    def claim_job(self, worker: str, device: str, suites: Sequence[str] | None = None,
                  job_id: int | None = None, exclude: Collection[int] = ()) -> JobRecord | None:
        """``claim_job_id``, then the job taken (its stored spec decoded), or None when there is none."""
        jid = self.claim_job_id(worker, device, suites, job_id, exclude)
        return None if jid is None else self.get_job(jid)

    def claim_job_id(self, worker: str, device: str, suites: Sequence[str] | None = None,
                     job_id: int | None = None, exclude: Collection[int] = ()) -> int | None:
        """Take the oldest queued job (of ``suites`` if given; exactly ``job_id`` if given; none of
        ``exclude``) for ``worker`` on ``device``, or None when there is none. Compare-and-set: the
        UPDATE only succeeds while the job is still queued, so two workers never get the same job.

        On PostgreSQL (many nodes claiming at once) the job is picked inside the claiming transaction,
        skipping rows other claimers hold (``FOR UPDATE SKIP LOCKED``, the PostgreSQL manual's queue
        idiom): N workers no longer race for the same oldest job, where N-1 lost. At 32-64 workers this
        doubled claims/s and cut the p99 claim latency ~9x (benchmarks/queue_scale.py, README).
        On SQLite (one host, one writer at a time) candidates are read outside the write lock and
        taken one compare-and-set at a time: fewer statements per claim, which measured faster there.
        Returns the id of the job taken (a claimer that needs no more reads nothing back), or None."""
        q = select(J.c.id).where(J.c.state == JobState.QUEUED, J.c.orphaned_at.is_(None))
        if job_id is not None:
            q = q.where(J.c.id == job_id)
        if exclude:
            q = q.where(J.c.id.not_in(list(exclude)))
        if suites is not None:
            q = q.where(J.c.suite_id.in_(select(S.c.id).where(S.c.name.in_(list(suites)))))
        q = q.order_by(J.c.id)
        take = dict(state=JobState.RUNNING, worker=worker, device=device, attempts=J.c.attempts + 1,
                    started_at=utcnow(), heartbeat_at=utcnow(), finished_at=None)
        with self._guard():
            while True:
                with self._engine.connect() as c:
                    candidates = list(c.execute(q.limit(_CLAIM_BATCH)).scalars())
                if not candidates:
                    return None
                if self.dialect == "postgresql":
                    with self._write.begin() as c:
                        jid = c.execute(q.limit(1).with_for_update(skip_locked=True)).scalar()
                        won = jid is not None and c.execute(
                            update(J).where(J.c.id == jid, J.c.state == JobState.QUEUED).values(**take)).rowcount == 1
                    if won:
                        return jid
                    continue  # every queued row was being claimed: look again
                for jid in candidates:
                    with self._write.begin() as c:
                        won = c.execute(update(J).where(J.c.id == jid, J.c.state == JobState.QUEUED)
                                        .values(**take)).rowcount == 1
                    if won:
                        return jid

    def holds(self, job_id: int, worker: str) -> bool:
        """Whether ``job_id`` is running for ``worker``: a read (no stored spec decoded, nothing written)."""
        with self._guard(), self._engine.connect() as c:
            return c.execute(select(J.c.id).where(J.c.id == job_id, J.c.state == JobState.RUNNING,
                                                  J.c.worker == worker)).first() is not None

    def heartbeat(self, job_id: int, worker: str) -> bool:
        """Stamp the job's heartbeat. False when the job is no longer running for ``worker`` (it was
        requeued or reset): the worker must stop working on it."""
        with self._guard(), self._write.begin() as c:
            return c.execute(update(J).where(J.c.id == job_id, J.c.state == JobState.RUNNING,
                                              J.c.worker == worker)
                             .values(heartbeat_at=utcnow())).rowcount == 1

    def record_epoch(self, job_id: int, epoch: int, metrics: Mapping[str, float],
                     worker: str | None = None) -> bool:
        """Write one epoch's metrics (1-based ``epoch``) in one transaction: upsert every
        (job, epoch, name) row, raise epochs_done to ``epoch``, stamp the heartbeat.

        With ``worker``, only while the job is running for that worker: returns False and writes
        nothing otherwise (the job was taken away; stop). NaN is stored as NULL."""
        rows = [dict(job_id=job_id, epoch=int(epoch), name=str(k), value=_metric_value(v))
                for k, v in metrics.items()]
        upd = update(J).where(J.c.id == job_id).values(
            epochs_done=case((J.c.epochs_done < epoch, epoch), else_=J.c.epochs_done),
            heartbeat_at=utcnow())
        if worker is not None:
            upd = upd.where(J.c.state == JobState.RUNNING, J.c.worker == worker)
        with self._guard(), self._write.begin() as c:
            if c.execute(upd).rowcount != 1:
                if worker is not None:
                    return False
                raise NotFound(f"no job {job_id} in {display_url(self.url)}")
            if rows:
                ins = self._insert(M)
                c.execute(ins.on_conflict_do_update(index_elements=["job_id", "epoch", "name"],
                                                    set_={"value": ins.excluded.value}), rows)
        return True

    def finish(self, job_id: int, state: str, error: str | None = None,
               worker: str | None = None) -> bool:
        """End a job as done, diverged or failed (``error``: the traceback or reason). With
        ``worker``, only while it is running for that worker; returns whether the row changed."""
        if state not in FINAL_STATES:
            raise ValueError(f"finish() takes one of {', '.join(FINAL_STATES)}, not {state!r}")
        upd = update(J).where(J.c.id == job_id).values(
            state=state, error=error, finished_at=utcnow(), heartbeat_at=utcnow())
        if worker is not None:
            upd = upd.where(J.c.state == JobState.RUNNING, J.c.worker == worker)
        with self._guard(), self._write.begin() as c:
            return c.execute(upd).rowcount == 1

    def release(self, job_id: int, worker: str | None = None) -> bool:
        """Put a running job back in the queue without counting the attempt (Ctrl-C, shutdown).
        Its metrics stay; the next worker resumes from the last checkpoint."""
        upd = update(J).where(J.c.id == job_id, J.c.state == JobState.RUNNING).values(
            state=JobState.QUEUED, attempts=case((J.c.attempts > 0, J.c.attempts - 1), else_=0),
            worker=None, device=None, heartbeat_at=None)
        if worker is not None:
            upd = upd.where(J.c.worker == worker)
        with self._guard(), self._write.begin() as c:
            return c.execute(upd).rowcount == 1

    def fail_attempt(self, job_id: int, error: str, max_attempts: int = 3,
                     worker: str | None = None) -> str:
        """One attempt failed for a reason worth retrying (a crashed subprocess, a lost node):
        requeue the job, or fail it for good once it has been claimed ``max_attempts`` times.
        Returns the new state ('queued' or 'failed'), or '' if the job was not running (for
        ``worker``)."""
        with self._guard(), self._write.begin() as c:
            q = select(J.c.attempts).where(J.c.id == job_id, J.c.state == JobState.RUNNING)
            if worker is not None:
                q = q.where(J.c.worker == worker)
            attempts = c.execute(q).scalar()
            if attempts is None:
                return ""
            state = self._lose(c, job_id, attempts, error, max_attempts)
        return state

    @staticmethod
    def _lose(c, job_id: int, attempts: int, reason: str, max_attempts: int, *where) -> str:
        if attempts >= max_attempts:
            values = dict(state=JobState.FAILED, finished_at=utcnow(), error=gave_up(attempts, reason))
        else:
            values = dict(state=JobState.QUEUED, worker=None, device=None, heartbeat_at=None, error=reason)
        n = c.execute(update(J).where(J.c.id == job_id, J.c.state == JobState.RUNNING, *where)
                      .values(**values)).rowcount
        return values["state"] if n == 1 else ""

    def requeue_stale(self, timeout_s: float = 120, max_attempts: int = 3) -> list[int]:
        """Recover jobs whose worker is gone: running jobs whose heartbeat is older than
        ``timeout_s`` (database clock), or whose worker is a process on this host that no longer
        exists (a SIGKILLed ``bench run``: taken up at once). Each goes back to the queue, or to
        'failed' once it has been claimed ``max_attempts`` times. Returns the ids of the jobs
        moved (requeued or failed)."""
        host = socket.gethostname()
        # Read first, write only what is found: nearly every call (each worker, every heartbeat tick)
        # finds nothing, and on SQLite a write transaction takes the one database-wide write lock
        # (BEGIN IMMEDIATE) that every claim, heartbeat and epoch of every worker waits for.
        # Only stale jobs and this host's jobs are read (a dead local pid is checked here).
        with self._guard(), self._engine.connect() as c:
            now = c.execute(select(utcnow())).scalar_one()
            cutoff = now - timedelta(seconds=timeout_s)
            running = c.execute(
                select(J.c.id, J.c.worker, J.c.heartbeat_at, J.c.attempts)
                .where(J.c.state == JobState.RUNNING, J.c.heartbeat_at.is_(None) | (J.c.heartbeat_at < cutoff)
                       | J.c.worker.like(f"{host}:%"))
                .order_by(J.c.id)).all()
        lost = []
        for r in running:
            if r.heartbeat_at is None or r.heartbeat_at < cutoff:
                reason = (f"worker {r.worker} lost: no heartbeat for more than {timeout_s:g} s "
                          f"(last at {r.heartbeat_at} UTC)")
                guard = J.c.heartbeat_at.is_(None) | (J.c.heartbeat_at < cutoff)
            elif dead_local_worker(r.worker, host):
                reason = f"worker {r.worker} lost: its process no longer exists"
                guard = J.c.worker == r.worker
            else:
                continue
            lost.append((r, reason, guard))
        if not lost:
            return []
        moved = []
        with self._guard(), self._write.begin() as c:
            for r, reason, guard in lost:  # the guards: still the same claim, still lost
                if self._lose(c, r.id, r.attempts, reason, max_attempts, guard, J.c.attempts == r.attempts):
                    moved.append(r.id)
        return moved

    def set_environment(self, job_id: int, env: Mapping[str, Any], code: Provenance | None = None) -> None:
        """Store what the job runs on (see ``benchmark.store.environment()``) as JSON, and the code
        it runs: ``code.code_version`` on the job, the uncommitted diff (if any) in ``code_diffs``."""
        env = dict(env)
        with self._guard(), self._write.begin() as c:
            if code is not None:
                # A resumed job whose earlier epochs ran other code keeps a record of it.
                old = c.execute(select(J.c.code_version, J.c.environment).where(J.c.id == job_id)).first()
                if old is not None and old.code_version:
                    earlier = json.loads(old.environment or "{}").get("earlier_code_versions", [])
                    if old.code_version != code.code_version and old.code_version not in earlier:
                        earlier = [*earlier, old.code_version]
                    if earlier:
                        env["earlier_code_versions"] = earlier
            values: dict[str, Any] = dict(environment=json.dumps(env, sort_keys=True, default=str))
            if code is not None:
                values["code_version"] = code.code_version
            if code is not None and code.diff_sha256:
                c.execute(self._insert(CD).on_conflict_do_nothing(index_elements=["sha256"])
                          .values(sha256=code.diff_sha256, size=code.diff_size, diff=code.diff or ""))
            c.execute(update(J).where(J.c.id == job_id).values(**values))

    @functools.cached_property
    def database_id(self) -> str:
        """This database's UUID (made when it was created): every checkpoint of its jobs carries it."""
        with self._guard(), self._engine.connect() as c:
            return c.execute(select(D.c.uuid)).scalar_one()

    def code_diff(self, sha256: str) -> tuple[int, str] | None:
        """(size of the whole diff, the stored, possibly cut, text) of an uncommitted change."""
        with self._guard(), self._engine.connect() as c:
            r = c.execute(select(CD.c.size, CD.c.diff).where(CD.c.sha256 == sha256)).first()
        return None if r is None else (r.size, r.diff)

    # -- reads ---------------------------------------------------------------------------------

    def get_job(self, job_id: int) -> JobRecord:
        q = (select(J.c.id, S.c.name.label("suite"), J.c.key, J.c.cell, J.c.label, J.c.seed,
                    J.c.config, J.c.state, J.c.attempts, J.c.epochs_done, J.c.worker, J.c.device,
                    J.c.error, J.c.code_version)
             .join_from(J, S, J.c.suite_id == S.c.id).where(J.c.id == job_id))
        with self._guard(), self._engine.connect() as c:
            r = c.execute(q).first()
        if r is None:
            raise NotFound(f"no job {job_id} in {display_url(self.url)}")
        return JobRecord(id=r.id, suite=r.suite, key=r.key, cell=r.cell, label=r.label,
                         seed=r.seed, spec=self.stored_spec(r.id, r.config), state=r.state,
                         attempts=r.attempts, epochs_done=r.epochs_done, worker=r.worker,
                         device=r.device, error=r.error, code_version=r.code_version)

    def stored_spec(self, job_id: int, config: str) -> JobSpec:
        """A job's stored configuration (``jobs.config``) as a JobSpec; a damaged row is a StoreError."""
        try:
            return JobSpec.from_dict(json.loads(config))
        except UserError:
            raise
        except Exception as e:  # not JSON, or not a config: the row was damaged outside bench
            raise StoreError(f"job {job_id} in {display_url(self.url)} has a corrupt stored config "
                             f"({type(e).__name__}: {e}); the row was changed outside bench. Delete the job "
                             "(or restore the database) and register the suite again") from None

    def get_environment(self, job_id: int) -> dict[str, Any] | None:
        with self._guard(), self._engine.connect() as c:
            s = c.execute(select(J.c.environment).where(J.c.id == job_id)).scalar()
        return json.loads(s) if s else None

    def _suite_filter(self, q, suites: Sequence[str] | None):
        return q if suites is None else q.where(S.c.name.in_(list(suites)))

    def jobs_frame(self, suites: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per job: job_id, suite, key, cell, label, seed, state, attempts, epochs_done,
        worker, device, created_at, started_at, heartbeat_at, finished_at (UTC), error, config
        (canonical JSON), environment (JSON or None), code_version (None before a job starts),
        orphaned_at (NaT unless the suite was registered again without this job)."""
        q = self._suite_filter(
            select(J.c.id.label("job_id"), S.c.name.label("suite"), J.c.key, J.c.cell, J.c.label,
                   J.c.seed, J.c.state, J.c.attempts, J.c.epochs_done, J.c.worker, J.c.device,
                   J.c.created_at, J.c.started_at, J.c.heartbeat_at, J.c.finished_at, J.c.error,
                   J.c.config, J.c.environment, J.c.code_version, J.c.orphaned_at)
            .join_from(J, S, J.c.suite_id == S.c.id).order_by(J.c.id), suites)
        with self._guard(), self._engine.connect() as c:
            result = c.execute(q)
            df = pd.DataFrame(result.all(), columns=list(result.keys()))
        for col in ("created_at", "started_at", "heartbeat_at", "finished_at", "orphaned_at"):
            df[col] = pd.to_datetime(df[col], utc=True, format="ISO8601")
        for col in ("job_id", "seed", "attempts", "epochs_done"):
            df[col] = df[col].astype("int64")
        return df

    def job_history(self, job_id: int) -> list[dict[str, float]]:
        """A job's recorded metrics of epochs 1, 2, ... up to its first missing epoch, one dict each."""
        with self._guard(), self._engine.connect() as c:
            rows = c.execute(select(M.c.epoch, M.c.name, M.c.value).where(M.c.job_id == job_id, M.c.epoch >= 1)
                             .order_by(M.c.epoch)).all()
        by_epoch: dict[int, dict[str, float]] = {}
        for epoch, name, value in rows:
            by_epoch.setdefault(epoch, {})[name] = math.nan if value is None else value
        history = []
        while len(history) + 1 in by_epoch:
            history.append(by_epoch[len(history) + 1])
        return history

    def metric_names(self, suites: Sequence[str] | None = None) -> list[str]:
        """Every metric name recorded in the database (or for the jobs of ``suites``), sorted.
        Cheap (one pass over the metrics index); the reporter uses it to load only the metrics it
        reads, e.g. ``alpha.*``."""
        q = select(M.c.name).distinct()
        if suites is not None:
            q = q.where(M.c.job_id.in_(select(J.c.id).join_from(J, S, J.c.suite_id == S.c.id)
                                       .where(S.c.name.in_(list(suites)))))
        with self._guard(), self._engine.connect() as c:
            return sorted(c.execute(q).scalars())

    def metrics_frame(self, suites: Sequence[str] | None = None, names: Sequence[str] | None = None,
                      job_ids: Sequence[int] | None = None) -> pd.DataFrame:
        """Per-epoch metrics in long form: job_id, suite, key, label, seed, epoch, name, value
        (float64; NaN where NaN was recorded), ordered by job, epoch, name. suite, key, label and
        name are pandas categoricals (lexically ordered categories) to keep 1.6M rows small."""
        where = []
        if names is not None:
            where.append(M.c.name.in_(list(names)))
        if job_ids is not None:
            where.append(M.c.job_id.in_([int(j) for j in job_ids]))
        if suites is not None:
            where.append(M.c.job_id.in_(
                select(J.c.id).join_from(J, S, J.c.suite_id == S.c.id)
                .where(S.c.name.in_(list(suites)))))
        jq = self._suite_filter(
            select(J.c.id.label("job_id"), S.c.name.label("suite"), J.c.key, J.c.label, J.c.seed)
            .join_from(J, S, J.c.suite_id == S.c.id), suites)
        with self._guard(), self._engine.connect() as c:
            if names is None:
                names = list(c.execute(select(M.c.name).distinct()).scalars())
            names = sorted(set(names))
            # 1.6M rows must load in about a second. What costs is one Python object per value:
            # so no ORM objects and no SQLAlchemy Row (plain tuples from the driver's cursor), and
            # no 1.6M name strings either: the database sends each name's index in ``names``.
            code = case({n: i for i, n in enumerate(names)}, value=M.c.name, else_=-1) if names \
                else literal(-1)
            q = (select(M.c.job_id, M.c.epoch, code, M.c.value).where(*where)
                 .order_by(M.c.job_id, M.c.epoch, M.c.name))
            rows = c.execute(q).cursor.fetchall()
            jobs = pd.DataFrame(c.execute(jq).all(), columns=["job_id", "suite", "key", "label", "seed"])
        # One C-level conversion of the list of tuples; None (a stored NaN) becomes NaN.
        try:
            a = np.array(rows, dtype=np.float64).reshape(len(rows), 4)
        except (TypeError, ValueError) as e:  # SQLite stores what it is given: text in a REAL column
            raise StoreError(f"{display_url(self.url)} has a corrupt metrics row ({e}): a value that is not a "
                             "number was written outside bench; restore the database or delete that row") from None
        del rows
        job_id = a[:, 0].astype(np.int64)
        jobs = jobs.astype({"job_id": "int64", "seed": "int64"}).set_index("job_id")
        at = jobs.index.get_indexer(job_id)  # every metric row has its job row (foreign key)
        out: dict[str, Any] = {"job_id": job_id}
        for col in ("suite", "key", "label"):
            cats = sorted(set(jobs[col]))
            codes = pd.Categorical(jobs[col], categories=cats).codes
            out[col] = pd.Categorical.from_codes(codes[at], categories=cats)
        out["seed"] = jobs["seed"].to_numpy(dtype=np.int64)[at]
        out["epoch"] = a[:, 1].astype(np.int64)
        out["name"] = pd.Categorical.from_codes(a[:, 2].astype(np.int64), categories=names)
        out["value"] = a[:, 3]
        return pd.DataFrame(out)
