"""The job queue at cluster scale: N worker processes against 10,000 queued jobs, on SQLite and PostgreSQL.

    .venv/bin/python benchmarks/queue_scale.py --backend sqlite --workers 8 32 64
    .venv/bin/python benchmarks/queue_scale.py --backend postgresql --pg-url postgresql+psycopg://bench@127.0.0.1:5432/b

Each worker process makes the database calls a real ``bench worker`` and its job makes, through the
real ``Store`` (benchmark/store/store.py), with fake jobs that sleep instead of training:

- ``claim_job`` (timed: the claim latency), then per epoch a sleep of ``--epoch-s`` and
  ``record_epoch`` (3 metrics, in the name of the claiming worker), then ``finish``;
- a heartbeat thread: ``heartbeat`` of the running job every ``--heartbeat-s`` (the job's process);
- every ``--heartbeat-s`` also ``requeue_stale`` (the worker's tick) and every 2 s ``suites()`` (its
  progress line), as ``Worker.run`` does.

It runs for ``--seconds`` (or until the queue is empty), then checks the database: no job claimed by
two workers (every claim is logged by the claimer), no metric row lost (every ``record_epoch`` that
returned True has all its rows) and none duplicated. Claims are the queue's bottleneck: each one
takes the write lock (SQLite) or a row lock (PostgreSQL), where heartbeats and epochs are spread out.
Run on the 2-core CI machine, so N processes also share the CPU: the figures are an upper bound on
what the database does, not what a cluster of N nodes would see from its side.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmark.config import JobSpec, ModelConfig  # noqa: E402
from benchmark.store import Store, StoreError  # noqa: E402
from benchmark.suite_types import Job, Suite  # noqa: E402

METRICS = ("loss", "error", "test_error")
SUITE = "queue-scale"


@dataclass(frozen=True)
class Settings:
    url: str
    seconds: float
    epochs: int
    epoch_s: float
    heartbeat_s: float
    variant: str = "now"  # or "before": claim_job and requeue_stale as they were before the fixes (--compare)


def requeue_stale_write_locked(self: Store, timeout_s: float = 120, max_attempts: int = 3) -> list[int]:
    """``Store.requeue_stale`` as it was before it read first (commit 934279a): every call, found
    something or not, is a write transaction (on SQLite: the database's write lock). Kept only for
    ``--compare``, the before/after figure."""
    import socket
    from datetime import timedelta

    from sqlalchemy import select

    from benchmark.store.schema import jobs_table as J, utcnow
    from benchmark.vocabulary import JobState
    from benchmark.store.store import dead_local_worker

    host = socket.gethostname()
    moved = []
    with self._guard(), self._write.begin() as c:
        now = c.execute(select(utcnow())).scalar_one()
        cutoff = now - timedelta(seconds=timeout_s)
        running = c.execute(select(J.c.id, J.c.worker, J.c.heartbeat_at, J.c.attempts)
                            .where(J.c.state == JobState.RUNNING).order_by(J.c.id)).all()
        for r in running:
            if r.heartbeat_at is None or r.heartbeat_at < cutoff:
                guard = (J.c.heartbeat_at.is_(None) | (J.c.heartbeat_at < cutoff),)
            elif dead_local_worker(r.worker, host):
                guard = (J.c.worker == r.worker,)
            else:
                continue
            if self._lose(c, r.id, r.attempts, "lost", max_attempts, *guard):
                moved.append(r.id)
    return moved


def claim_job_racing(self: Store, worker: str, device: str, suites=None) -> object:
    """``Store.claim_job`` as it was before it picked inside its write transaction (commit a6222e4):
    16 candidates read outside, then one compare-and-set write transaction per candidate, so N
    workers claiming at once race for the same oldest job. Kept only for ``--compare``."""
    from sqlalchemy import select, update

    from benchmark.store.schema import jobs_table as J, suites_table as S, utcnow
    from benchmark.vocabulary import JobState

    q = select(J.c.id).where(J.c.state == JobState.QUEUED)
    if suites is not None:
        q = q.where(J.c.suite_id.in_(select(S.c.id).where(S.c.name.in_(list(suites)))))
    q = q.order_by(J.c.id).limit(16)
    with self._guard():
        while True:
            with self._engine.connect() as c:
                candidates = list(c.execute(q).scalars())
            if not candidates:
                return None
            for jid in candidates:
                with self._write.begin() as c:
                    won = c.execute(update(J).where(J.c.id == jid, J.c.state == JobState.QUEUED).values(
                        state=JobState.RUNNING, worker=worker, device=device, attempts=J.c.attempts + 1,
                        started_at=utcnow(), heartbeat_at=utcnow(), finished_at=None)).rowcount == 1
                if won:
                    return self.get_job(jid)


def fill_queue(url: str, jobs: int) -> None:
    """``jobs`` queued fake jobs: registered once, then put back in the queue with their metrics gone."""
    with Store(url) as s:
        present = next((x["jobs"] for x in s.suites() if x["name"] == SUITE), 0)
        if present != jobs:
            if present:
                s.delete_suite(SUITE)
            specs = tuple(Job(label="fake", spec=JobSpec(model=ModelConfig(depth=20), seed=i)) for i in range(jobs))
            s.register_suite(Suite(name=SUITE, path="benchmarks/queue_scale.py", title="fake jobs", text="",
                                   jobs=specs))
        s.reset_jobs(SUITE, states=("queued", "done", "failed", "diverged"), clear_metrics=True)


def fake_worker(index: int, settings: Settings, start: float, out) -> None:
    """One worker process: claim, sleep and record epochs, finish, until time is up or the queue is empty."""
    name = f"bench-{index}:{os.getpid()}:fake"  # not this host's name: requeue_stale must not see a dead pid
    store = Store(settings.url, create=False)
    requeue_stale, claim_job = store.requeue_stale, store.claim_job
    if settings.variant == "before":
        requeue_stale = lambda *a: requeue_stale_write_locked(store, *a)  # noqa: E731
        claim_job = lambda *a: claim_job_racing(store, *a)  # noqa: E731
    claims, latencies, recorded, errors = [], [], 0, 0
    current: list[int] = []
    beats = [0, 0]  # heartbeat writes, requeue_stale calls
    stop = threading.Event()

    def heartbeat() -> None:  # the job process's heartbeat thread
        while not stop.wait(settings.heartbeat_s):
            if current:
                try:
                    store.heartbeat(current[0], name)
                    beats[0] += 1
                except StoreError:
                    pass

    thread = threading.Thread(target=heartbeat, daemon=True)
    while time.time() < start:
        time.sleep(0.01)
    thread.start()
    end = start + settings.seconds
    next_tick = next_overview = 0.0
    while time.time() < end:
        now = time.monotonic()
        try:
            if now >= next_tick:  # the worker's tick
                requeue_stale(3600, 3)
                beats[1] += 1
                next_tick = now + settings.heartbeat_s
            if now >= next_overview:
                store.suites()
                next_overview = now + 2.0
            t0 = time.perf_counter()
            job = claim_job(name, "cpu", [SUITE])
            latencies.append(time.perf_counter() - t0)
            if job is None:
                break
            claims.append(job.id)
            current[:] = [job.id]
            for epoch in range(1, settings.epochs + 1):
                time.sleep(settings.epoch_s)
                if store.record_epoch(job.id, epoch, {m: 0.5 for m in METRICS}, worker=name):
                    recorded += 1
            store.finish(job.id, "done", worker=name)
            current.clear()
        except StoreError as e:
            errors += 1
            print(f"worker {index}: {e}", file=sys.stderr)
    stop.set()
    thread.join()
    store.close()
    out.put(dict(claims=claims, latencies=latencies, recorded=recorded, errors=errors, heartbeats=beats[0],
                 ticks=beats[1], elapsed=min(time.time(), end) - start))


def run(settings: Settings, workers: int, jobs: int) -> dict:
    fill_queue(settings.url, jobs)
    ctx = mp.get_context("fork")  # the parent has imported everything: 64 processes start at once
    out = ctx.Queue()
    start = time.time() + 2.0
    procs = [ctx.Process(target=fake_worker, args=(i, settings, start, out)) for i in range(workers)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    claims = [j for r in results for j in r["claims"]]
    latencies = np.array([x for r in results for x in r["latencies"]]) * 1000
    elapsed = max(r["elapsed"] for r in results)
    with Store(settings.url) as s:
        m = s.metrics_frame([SUITE])
        frame = s.jobs_frame([SUITE])
    expected_rows = sum(r["recorded"] for r in results) * len(METRICS)
    recorded_epochs = sum(r["recorded"] for r in results)
    writes = len(claims) + recorded_epochs + int((frame.state == "done").sum()) + sum(r["heartbeats"] for r in results)
    return dict(
        workers=workers, claims=len(claims), claims_per_s=len(claims) / elapsed,
        p50_ms=float(np.percentile(latencies, 50)), p99_ms=float(np.percentile(latencies, 99)),
        heartbeats_per_s=sum(r["heartbeats"] for r in results) / elapsed,
        ticks_per_s=sum(r["ticks"] for r in results) / elapsed,
        writes_per_s=writes / elapsed,
        double_claims=len(claims) - len(set(claims)),
        lost_rows=expected_rows - len(m),
        duplicated_rows=int(m.duplicated(["job_id", "epoch", "name"]).sum()),
        errors=sum(r["errors"] for r in results),
    )


def reset(url: str) -> None:
    with Store(url) as s:
        if any(x["name"] == SUITE for x in s.suites()):
            s.delete_suite(SUITE)


COLUMNS = [("workers", "{}"), ("claims", "{}"), ("claims_per_s", "{:.0f}"), ("p50_ms", "{:.1f}"),
           ("p99_ms", "{:.1f}"), ("heartbeats_per_s", "{:.1f}"), ("ticks_per_s", "{:.1f}"),
           ("writes_per_s", "{:.0f}"), ("double_claims", "{}"), ("lost_rows", "{}"),
           ("duplicated_rows", "{}"), ("errors", "{}")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--pg-url", default=os.environ.get("BENCH_TEST_POSTGRES_URL"),
                    help="PostgreSQL URL (its bench tables are used; the benchmark's suite is deleted before "
                         "and after) [default: $BENCH_TEST_POSTGRES_URL]")
    ap.add_argument("--workers", type=int, nargs="+", default=[8, 32, 64])
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=20.0, help="how long each run lasts (if the queue lasts)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per fake job")
    ap.add_argument("--epoch-s", type=float, default=0.05, help="sleep per fake epoch")
    ap.add_argument("--heartbeat-s", type=float, default=1.0, help="heartbeat and requeue_stale period")
    ap.add_argument("--compare", action="store_true",
                    help="also run each case with claim_job and requeue_stale as they were before the fixes")
    ap.add_argument("--variants", nargs="+", choices=["before", "now"], default=None,
                    help="which code to run, in this order [default: now; with --compare: before now]")
    args = ap.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    if "postgresql" in backends and not args.pg_url:
        ap.error("PostgreSQL needs --pg-url (or $BENCH_TEST_POSTGRES_URL; bash .ci/postgres.sh starts one)")
    variants = args.variants or (["before", "now"] if args.compare else ["now"])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
        for backend in backends:
            for n in args.workers:
                for variant in variants:
                    url = f"sqlite:///{tmp}/queue.sqlite" if backend == "sqlite" else args.pg_url
                    settings = Settings(url, args.seconds, args.epochs, args.epoch_s, args.heartbeat_s, variant)
                    row = dict(backend=backend, code=variant, **run(settings, n, args.jobs))
                    rows.append(row)
                    print(f"{backend} x{n} ({variant}): {row['claims_per_s']:.0f} claims/s", file=sys.stderr,
                          flush=True)
        if "postgresql" in backends:
            reset(args.pg_url)
    first = ["backend", "code"] if len(variants) > 1 or variants != ["now"] else ["backend"]
    header = first + [c for c, _ in COLUMNS]
    table = [[r[c] for c in first] + [fmt.format(r[c]) for c, fmt in COLUMNS] for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(header)]
    print(f"{args.jobs} queued jobs, {args.epochs} epochs of {args.epoch_s} s each, heartbeat and requeue_stale "
          f"every {args.heartbeat_s} s, {args.seconds} s per run, {os.cpu_count()} CPU cores")
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for t in table:
        print("  ".join(x.rjust(w) for x, w in zip(t, widths)))


if __name__ == "__main__":
    main()
