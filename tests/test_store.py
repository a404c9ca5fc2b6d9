"""The results store's API: registration, claims, heartbeats, epoch upserts, recovery, frames.

Runs on a fresh SQLite file; also on PostgreSQL when BENCH_TEST_POSTGRES_URL is set (the database
it names is emptied of bench tables first).
"""
from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
from sqlalchemy import text

from benchmark.config import JobSpec, ModelConfig
from benchmark.store import Store, StoreError, environment
from benchmark.store.store import dead_local_worker
from benchmark.suite_types import Job, Suite


def make_suite(name: str = "s", n: int = 4, depth: int = 20, label: str | None = None) -> Suite:
    jobs = tuple(Job(label=label or f"resnet-{depth}", spec=JobSpec(model=ModelConfig(depth=depth), seed=i))
                 for i in range(n))
    return Suite(name=name, path=f"suites/{name}.toml", title=f"suite {name}", text=f"# {name}\n", jobs=jobs)



@pytest.fixture
def url(backend_url) -> str:
    return backend_url


@pytest.fixture
def store(url):
    with Store(url) as s:
        yield s


def me(suffix: str = "") -> str:
    return f"{socket.gethostname()}:{os.getpid()}{suffix}"


def set_heartbeat(store: Store, job_id: int, when: str) -> None:
    with store._write.begin() as c:
        c.execute(text("UPDATE jobs SET heartbeat_at = :t WHERE id = :i"), {"t": when, "i": job_id})


# -- registration ---------------------------------------------------------------------------------


def test_register_twice_no_duplicates_and_states_kept(store):
    suite = make_suite(n=4)
    assert store.register_suite(suite) == (4, 0)
    job = store.claim_job(me(), "cpu")
    store.record_epoch(job.id, 1, {"loss": 1.0}, worker=me())
    assert store.finish(job.id, "done", worker=me())
    assert store.register_suite(suite) == (0, 4)

    df = store.jobs_frame()
    assert len(df) == 4 and df["key"].is_unique
    done = df[df.job_id == job.id].iloc[0]
    assert (done.state, done.epochs_done, done.attempts) == ("done", 1, 1)
    assert sorted(df.state) == ["done", "queued", "queued", "queued"]


def test_register_adds_new_jobs_updates_text_and_label(store):
    store.register_suite(make_suite(n=2))
    bigger = make_suite(n=3, label="renamed")
    bigger = Suite(**{**bigger.__dict__, "text": "# edited\n", "path": "elsewhere.toml"})
    assert store.register_suite(bigger) == (1, 2)
    assert store.suite_text("s") == "# edited\n"
    assert set(store.jobs_frame()["label"]) == {"renamed"}
    [info] = store.suites()
    assert (info["name"], info["path"], info["jobs"], info["queued"]) == ("s", "elsewhere.toml", 3, 3)


def test_job_record_roundtrips_spec(store):
    suite = make_suite(n=1, depth=56)
    store.register_suite(suite)
    job = store.claim_job(me(), "cuda:0")
    spec = suite.jobs[0].spec
    assert job.spec == spec and job.key == spec.key and job.cell == spec.cell_key
    assert (job.suite, job.label, job.seed, job.state, job.attempts, job.device) == (
        "s", "resnet-56", 0, "running", 1, "cuda:0")
    assert store.get_job(job.id) == job


def test_unknown_suite_and_job(store):
    with pytest.raises(StoreError, match="no suite named 'nope'"):
        store.suite_text("nope")
    with pytest.raises(LookupError):
        store.get_job(12345)


# -- claims ---------------------------------------------------------------------------------------


def test_claim_order_filter_and_exhaustion(store):
    store.register_suite(make_suite("a", n=2))
    store.register_suite(make_suite("b", n=2, depth=32))
    first = store.claim_job(me(), "cpu", suites=["b"])
    assert first.suite == "b" and first.seed == 0  # oldest queued of suite b
    assert store.claim_job(me(), "cpu", suites=["zzz"]) is None
    ids = store.jobs_frame(suites=["a"])["job_id"].tolist()
    assert store.claim_job(me(), "cpu", job_id=ids[1]).id == ids[1]
    assert store.claim_job(me(), "cpu", job_id=ids[1]) is None  # not queued any more
    rest = [store.claim_job(me(), "cpu") for _ in range(3)]
    assert rest[-1] is None and {j.id for j in rest[:2]} | {first.id, ids[1]} == set(
        store.jobs_frame()["job_id"])


def test_claim_compare_and_set_two_stores_race(url):
    """Two Store objects (two engines, two connections) race for one job, many times over:
    exactly one wins each round."""
    a, b = Store(url), Store(url)
    try:
        rounds = 8
        for r in range(rounds):
            a.register_suite(make_suite(f"race{r}", n=1))
        for r in range(rounds):
            barrier = threading.Barrier(2)
            won: dict[str, object] = {}

            def go(name, s):
                barrier.wait()
                won[name] = s.claim_job(me(name), "cpu", suites=[f"race{r}"])

            ts = [threading.Thread(target=go, args=(n, s)) for n, s in (("a", a), ("b", b))]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            winners = [n for n, j in won.items() if j is not None]
            assert len(winners) == 1, won
            job = a.get_job(won[winners[0]].id)
            assert job.worker == me(winners[0]) and job.attempts == 1
    finally:
        a.close()
        b.close()


# -- heartbeats and epochs --------------------------------------------------------------------------


def test_heartbeat_only_for_owner(store):
    store.register_suite(make_suite(n=1))
    job = store.claim_job(me(), "cpu")
    assert store.heartbeat(job.id, me())
    assert not store.heartbeat(job.id, "otherhost:1")
    assert store.release(job.id, worker=me())
    assert not store.heartbeat(job.id, me())  # requeued: the worker must stop
    assert not store.record_epoch(job.id, 1, {"loss": 1.0}, worker=me())
    assert store.metrics_frame().empty


def test_record_epoch_upsert_and_epochs_done(store):
    store.register_suite(make_suite(n=1))
    job = store.claim_job(me(), "cpu")
    store.record_epoch(job.id, 1, {"loss": 2.0, "test_error": 50.0}, worker=me())
    store.record_epoch(job.id, 2, {"loss": 1.5, "test_error": 40.0}, worker=me())
    # a resumed run writes epoch 2 again: one row per (epoch, name), the newer value
    store.record_epoch(job.id, 2, {"loss": 1.25, "test_error": 39.0}, worker=me())
    store.record_epoch(job.id, 0, {"test_error": 90.0})  # evaluation before training
    m = store.metrics_frame()
    assert len(m) == 5
    assert not m.duplicated(["job_id", "epoch", "name"]).any()
    e2 = m[m.epoch == 2].set_index("name")["value"]
    assert e2["loss"] == 1.25 and e2["test_error"] == 39.0
    assert store.get_job(job.id).epochs_done == 2


def test_nan_and_inf_roundtrip(store):
    store.register_suite(make_suite(n=1))
    job = store.claim_job(me(), "cpu")
    store.record_epoch(job.id, 1, {"loss": float("nan"), "grad": float("inf"), "neg": -math.inf,
                                   "ok": 0.5})
    v = store.metrics_frame().set_index("name")["value"]
    assert v.dtype == "float64"
    assert math.isnan(v["loss"]) and v["grad"] == math.inf and v["neg"] == -math.inf and v["ok"] == 0.5


def test_finish_release_and_reset(store):
    store.register_suite(make_suite(n=3))
    j1, j2, j3 = (store.claim_job(me(), "cpu") for _ in range(3))
    assert store.finish(j1.id, "done", worker=me())
    assert not store.finish(j1.id, "failed", worker=me())  # no longer running: untouched
    assert store.finish(j2.id, "diverged", error="loss is nan at epoch 3")
    assert store.release(j3.id)
    assert store.get_job(j3.id).attempts == 0  # an interrupt is not a failed attempt
    with pytest.raises(ValueError):
        store.finish(j1.id, "running")
    assert store.get_job(j2.id).error == "loss is nan at epoch 3"
    assert store.reset_jobs("s") == 1  # failed + diverged by default
    j2b = store.get_job(j2.id)
    assert (j2b.state, j2b.attempts, j2b.error) == ("queued", 0, None)
    assert store.get_job(j1.id).state == "done"
    assert store.reset_jobs("s", states=("done",), clear_metrics=True) == 1
    assert store.get_job(j1.id).state == "queued"


def test_fail_attempt_retries_then_gives_up(store):
    store.register_suite(make_suite(n=1))
    for attempt in (1, 2):
        job = store.claim_job(me(), "cpu")
        assert store.fail_attempt(job.id, f"CUDA error {attempt}", max_attempts=3) == "queued"
    job = store.claim_job(me(), "cpu")
    assert store.fail_attempt(job.id, "CUDA error 3", max_attempts=3) == "failed"
    job = store.get_job(job.id)
    assert job.state == "failed" and job.error == "gave up after 3 attempts; last error: CUDA error 3"


# -- recovery of lost workers ----------------------------------------------------------------------


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_requeue_dead_local_pid_at_once(store):
    store.register_suite(make_suite(n=4))
    host, gone = socket.gethostname(), dead_pid()
    dead = store.claim_job(f"{host}:{gone}", "cpu")
    dead_suffix = store.claim_job(f"{host}:{gone}:cuda:1", "cuda:1")
    alive = store.claim_job(me(), "cpu")
    elsewhere = store.claim_job(f"some-other-host:{gone}", "cpu")  # cannot check its pid: wait
    assert store.requeue_stale(timeout_s=3600) == [dead.id, dead_suffix.id]
    assert store.get_job(dead.id).state == "queued"
    assert "no longer exists" in store.get_job(dead.id).error
    assert store.get_job(alive.id).state == "running"
    assert store.get_job(elsewhere.id).state == "running"
    assert dead_local_worker(f"{host}:{gone}") and not dead_local_worker(me())
    assert not dead_local_worker("garbage") and not dead_local_worker(None)


def test_requeue_old_heartbeat_by_database_clock(store):
    store.register_suite(make_suite(n=2))
    old = store.claim_job("otherhost:1", "cpu")
    fresh = store.claim_job("otherhost:2", "cpu")
    set_heartbeat(store, old.id, "2000-01-01 00:00:00")
    assert store.requeue_stale(timeout_s=120) == [old.id]
    assert store.get_job(old.id).state == "queued" and store.get_job(fresh.id).state == "running"
    assert not store.heartbeat(old.id, "otherhost:1")
    # a fresh heartbeat with timeout 0 is stale a moment later
    time.sleep(0.01)
    assert store.requeue_stale(timeout_s=0) == [fresh.id]


def test_requeue_stale_writes_only_when_it_finds_a_lost_job(store, monkeypatch):
    """Every worker calls it every heartbeat tick: a write transaction each time would take SQLite's
    database-wide write lock, which every claim and epoch of every worker waits for."""
    store.register_suite(make_suite(n=3))
    lost = store.claim_job("otherhost:1", "cpu")
    store.claim_job("otherhost:2", "cpu")
    store.claim_job(me(), "cpu")  # this host, alive
    writes = []
    real = store._write

    class Counting:
        def begin(self):
            writes.append(1)
            return real.begin()

    monkeypatch.setattr(store, "_write", Counting())
    assert store.requeue_stale(timeout_s=3600) == [] and writes == []
    monkeypatch.setattr(store, "_write", real)
    set_heartbeat(store, lost.id, "2000-01-01 00:00:00")
    monkeypatch.setattr(store, "_write", Counting())
    assert store.requeue_stale(timeout_s=3600) == [lost.id] and len(writes) == 1


def test_requeue_gives_up_after_max_attempts(store):
    store.register_suite(make_suite(n=1))
    for attempt in (1, 2, 3):
        job = store.claim_job("otherhost:7", "cpu")
        assert job.attempts == attempt
        set_heartbeat(store, job.id, "2000-01-01 00:00:00")
        assert store.requeue_stale(timeout_s=60, max_attempts=3) == [job.id]
    job = store.get_job(job.id)
    assert job.state == "failed"
    assert job.error.startswith("gave up after 3 attempts; last error: worker otherhost:7 lost")
    assert store.claim_job("otherhost:7", "cpu") is None


# -- frames -----------------------------------------------------------------------------------------

JOB_COLUMNS = ["job_id", "suite", "key", "cell", "label", "seed", "state", "attempts", "epochs_done",
               "worker", "device", "started_at", "heartbeat_at", "finished_at", "error", "config"]
METRIC_COLUMNS = ["job_id", "suite", "key", "label", "seed", "epoch", "name", "value"]


def test_frames_columns_and_filters(store):
    store.register_suite(make_suite("a", n=2))
    store.register_suite(make_suite("b", n=1, depth=32))
    for _ in range(3):
        job = store.claim_job(me(), "cpu")
        for e in (1, 2):
            store.record_epoch(job.id, e, {"loss": 1.0 / e, "test_error": 10.0 * job.id + e})
        store.finish(job.id, "done")

    jobs = store.jobs_frame()
    assert set(JOB_COLUMNS) <= set(jobs.columns) and len(jobs) == 3
    assert pd.api.types.is_datetime64_any_dtype(jobs["finished_at"])
    assert jobs["finished_at"].notna().all()
    assert JobSpec.from_dict(__import__("json").loads(jobs.config[0])).key == jobs.key[0]
    assert list(store.jobs_frame(suites=["b"]).suite) == ["b"]

    m = store.metrics_frame()
    assert list(m.columns) == METRIC_COLUMNS and len(m) == 3 * 2 * 2
    assert m.value.dtype == "float64" and m.epoch.dtype == "int64"
    assert set(store.metrics_frame(suites=["b"]).suite) == {"b"}
    assert set(store.metrics_frame(names=["loss"]).name) == {"loss"}
    one = store.metrics_frame(job_ids=[jobs.job_id[0]], names=["test_error"])
    assert list(one.value) == [10.0 * jobs.job_id[0] + 1, 10.0 * jobs.job_id[0] + 2]
    assert list(store.metrics_frame(suites=["nope"]).columns) == METRIC_COLUMNS


def test_environment_stored(store):
    store.register_suite(make_suite(n=1))
    job = store.claim_job(me(), "cpu")
    env = environment("cpu")
    assert {"torch", "cuda", "gpu", "host", "python", "git_commit", "git_dirty"} <= set(env)
    store.set_environment(job.id, env)
    assert store.get_environment(job.id) == __import__("json").loads(__import__("json").dumps(env))
    assert store.jobs_frame()["environment"].notna().all()


def test_delete_suite(store):
    store.register_suite(make_suite("a", n=2))
    store.register_suite(make_suite("b", n=1))
    job = store.claim_job(me(), "cpu", suites=["a"])
    store.record_epoch(job.id, 1, {"loss": 1.0})
    assert store.delete_suite("a") == 2
    assert [s["name"] for s in store.suites()] == ["b"]
    assert store.metrics_frame().empty


def test_metrics_frame_is_fast(tmp_path):
    """The reporter reads 1.6M rows (1000 jobs x 200 epochs x 8 metrics) in well under 5 s; here a
    tenth of that must take well under a second (ORM objects or per-row Python would not)."""
    from benchmark.store.schema import metrics_table

    with Store(f"sqlite:///{tmp_path / 'big.sqlite'}") as store:
        store.register_suite(make_suite(n=100))
        names = [f"metric_{k}" for k in range(8)]
        with store._write.begin() as c:
            c.execute(metrics_table.insert(), [
                dict(job_id=j, epoch=e, name=n, value=j + e / 1000)
                for j in range(1, 101) for e in range(1, 201) for n in names])
        t = time.process_time()
        m = store.metrics_frame()
        cpu = time.process_time() - t
    assert len(m) == 100 * 200 * 8 and m["value"].iloc[-1] == 100.2
    assert cpu < 1.5, f"metrics_frame took {cpu:.2f} s of CPU for 160k rows"


def test_unreaped_killed_child_counts_as_dead():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not dead_local_worker(f"{socket.gethostname()}:{p.pid}")
        p.kill()
        time.sleep(0.3)  # killed, not yet reaped by us: a zombie
        if os.path.exists(f"/proc/{p.pid}/stat"):
            assert dead_local_worker(f"{socket.gethostname()}:{p.pid}")
    finally:
        p.kill()
        p.wait()
