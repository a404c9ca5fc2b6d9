"""The worker and a job's process talk in typed messages (benchmark.runner.messages), and a job's
heartbeat is a ``Heartbeat`` or its no-op twin ``NullHeartbeat`` (benchmark.runner.job)."""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmark.progress import Step
from benchmark.runner.devices import Device
from benchmark.runner.job import Heartbeat, JobOptions, NullHeartbeat, heartbeat
from benchmark.runner.messages import EpochDone, Finished, JobRequest, Started
from benchmark.store import Store
from benchmark.suite import load_suite
from test_runner import write_suite  # the runner tests' tiny synthetic suite (2 epochs of 2 steps)

class Beats:
    """A stand-in store that records each heartbeat; ``ours`` is what it answers."""

    def __init__(self, ours: bool = True):
        self.times: list[float] = []
        self.ours = ours

    def heartbeat(self, job_id: int, worker: str) -> bool:
        self.times.append(time.monotonic())
        return self.ours


def test_the_heartbeat_beats_at_its_interval_and_stops_on_exit():
    store = Beats()
    started = time.monotonic()
    with Heartbeat(store, 7, "h:1:cpu", 0.05) as beat:
        time.sleep(0.5)
        assert beat._thread.is_alive()
    assert not beat._thread.is_alive() and not beat.lost
    assert 3 <= len(store.times) <= 11, store.times  # ~10 at 0.05 s (fewer on a busy machine)
    assert store.times[0] - started >= 0.04  # the first beat waits one interval
    gaps = [b - a for a, b in zip(store.times, store.times[1:])]
    assert min(gaps) >= 0.04, gaps
    count = len(store.times)
    time.sleep(0.2)
    assert len(store.times) == count  # no beat after the exit


def test_a_heartbeat_the_store_refuses_marks_the_job_lost():
    beat = Heartbeat(Beats(ours=False), 7, "h:1:cpu", 0.02)
    beat.start()
    deadline = time.monotonic() + 5
    while not beat.lost and time.monotonic() < deadline:
        time.sleep(0.01)
    beat.stop()
    assert beat.lost


def test_the_null_heartbeat_does_nothing():
    store = Beats()
    before = threading.active_count()
    beat = heartbeat(store, 7, "h:1:cpu", None)  # no interval: the no-op twin
    assert isinstance(beat, NullHeartbeat)
    with beat:
        assert threading.active_count() == before
        time.sleep(0.1)
    beat.start()
    beat.stop()
    assert store.times == [] and beat.lost is False


def test_the_job_process_gets_one_request_and_answers_in_typed_messages(tmp_path):
    from benchmark.runner.worker import _run_job

    suite_path = write_suite(tmp_path / "pipe.toml")
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    worker = f"{socket.gethostname()}:{os.getpid()}:cpu"  # this process: the job's watchdog sees it alive
    with Store(url) as store:
        store.register_suite(load_suite(suite_path))
        job = store.claim_job(worker, "cpu")
    log = tmp_path / "job.log"
    options = JobOptions(device="cpu", data_dir=None, checkpoint_dir=tmp_path / "ckpt", max_epochs=None,
                         heartbeat_seconds=1.0, max_attempts=3, log=str(log))
    request = JobRequest(job, worker, url, Device("cpu"), options, threads=1)
    ctx = mp.get_context("spawn")
    reader, writer = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_run_job, args=(writer, request))
    process.start()
    writer.close()
    messages = []
    while True:
        try:
            messages.append(reader.recv())
        except EOFError:
            break
    process.join(60)
    assert process.exitcode == 0, log.read_text()
    kinds = {type(m) for m in messages}
    assert kinds <= {Started, Step, EpochDone, Finished}, kinds
    assert all(dataclasses.is_dataclass(m) and type(m).__dataclass_params__.frozen for m in messages)
    assert messages[0] == Started(0) and messages[-1] == Finished("done", "")
    epochs = [m for m in messages if isinstance(m, EpochDone)]
    assert [e.epoch for e in epochs] == [1, 2] and epochs[-1].iterations == 4.0
    assert all(e.train_loss is not None and e.test_error is not None for e in epochs)
    with Store(url) as store:
        assert store.get_job(job.id).state == "done"


def test_the_worker_reads_the_messages_without_importing_torch():
    code = ("import pickle, sys; import benchmark.runner.worker; "
            "from benchmark.runner.messages import Finished; from benchmark.progress import Step; "
            "pickle.loads(pickle.dumps((Step(1, 2, 3, 4, 0.5, 10.0), Finished('done')))); "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
