"""One job in its own process: the body of every job the worker starts.

The worker claims a job and a device slot, then starts this process (forked from a multiprocessing
fork server that has imported torch once, so a job starts in milliseconds rather than seconds). It:

- sets ``CUDA_VISIBLE_DEVICES`` to the slot's GPU before CUDA is touched, so the job sees exactly one
  GPU, as ``cuda:0``;
- gets one ``JobRequest`` and sends its progress to the worker over a pipe as the typed messages of
  ``benchmark.runner.messages``: ``Started``, ``Step`` at most a few times a second, ``EpochDone``,
  ``Warned`` and finally ``Finished`` (the outcome and message ``execute`` returned);
- writes its stderr (warnings, tracebacks, a fault handler dump on a segfault) to a log file the
  worker quotes when the process dies;
- ignores SIGINT (the worker decides what a Ctrl-C means) and treats SIGTERM as "stop at the next
  step, keep the last epoch checkpoint, give the job back to the queue";
- kills itself if the worker process disappears (``kill -9`` of ``bench worker``): the job is then
  recovered by the next worker, which sees the worker's process is gone.

Test hooks (environment variables, read in the job's process):

- ``BENCH_FAULT="<label>=<kind>[@<epoch>];..."`` (label ``*``: every job) makes a job misbehave from
  epoch ``epoch`` on (default 1): ``raise`` (an exception), ``oom`` (``torch.OutOfMemoryError``, as
  CUDA raises it), ``exit`` (the process exits with code 3), ``kill`` (it SIGKILLs itself) or
  ``slow`` (it sleeps 0.25 s per step, which changes no number: time to interrupt it).
- ``BENCH_SLOT_TRACE=FILE``: each job appends ``<time> start|end <device> <job id> <pid>`` lines,
  so a test can count how many jobs ran on a device at once.
"""
from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch  # noqa: F401  (the fork server imports this module once; every job then starts warm)

from benchmark.runner.devices import Device
from benchmark.runner.job import execute
from benchmark.runner.messages import EpochDone, Finished, JobRequest, Message, Started, Warned
from benchmark.store import Store, head_revision, provenance
from benchmark.store.store import dead_local_worker
from benchmark.vocabulary import ITERATIONS, TEST_ERROR, TRAIN_ERROR, TRAIN_LOSS

FAULT_ENV = "BENCH_FAULT"

# The fork server pays, once, what every job would otherwise pay at its start:
provenance()  # cached: the version, commit and diff of the code the fork server imported, as jobs record
head_revision()  # imports alembic's migration machinery (each Store() still reads the scripts)
# The first optimiser of a process imports torch._dynamo (over a second): pay that once, here.
torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


TRACE_ENV = "BENCH_SLOT_TRACE"


def _trace(event: str, device: Device, job_id: int) -> None:
    path = os.environ.get(TRACE_ENV)
    if path:
        with open(path, "a") as f:  # one short append: atomic between processes
            f.write(f"{time.time():.6f} {event} {device.name} {job_id} {os.getpid()}\n")


def _faults(label: str) -> tuple[str, int] | None:
    for part in os.environ.get(FAULT_ENV, "").split(";"):
        name, _, kind = part.strip().partition("=")
        if name in (label, "*") and kind:
            kind, _, epoch = kind.partition("@")
            return kind, int(epoch or 1)
    return None


def _inject(kind: str) -> None:
    if kind == "raise":
        raise RuntimeError(f"fault injected by {FAULT_ENV}")
    if kind == "oom":
        raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB (simulated by {FAULT_ENV})")
    if kind == "exit":
        sys.stderr.flush()
        os._exit(3)
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "slow":
        time.sleep(0.25)
        return
    raise ValueError(f"{FAULT_ENV}: unknown fault {kind!r} (raise, oom, exit, kill)")


def run_child(conn, request: JobRequest) -> None:
    """Entry point in the job's process."""
    device = request.device
    os.environ.update(device.child_env())  # before anything initialises CUDA
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    job = request.job
    log = Path(request.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    faulthandler.enable()
    print(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} job {job.id} pid {os.getpid()} "
          f"worker {request.worker} device {device.name}"
          f"{' (fake GPU, on the CPU)' if device.fake else ''}", file=sys.stderr, flush=True)

    def send(message: Message) -> None:
        try:
            conn.send(message)
        except (BrokenPipeError, OSError):
            pass  # the worker is gone; the watchdog below ends us

    def watchdog() -> None:
        while True:
            time.sleep(0.5)
            if dead_local_worker(request.worker):
                print("worker process is gone: stopping at once", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watchdog, name="watchdog", daemon=True).start()
    if request.threads:
        torch.set_num_threads(int(request.threads))

    store = Store(request.db, create=False)
    if not store.holds(job.id, request.worker):
        send(Finished("lost", "the job was no longer ours"))
        return
    fault = _faults(job.label)
    completed = [job.epochs_done]
    send(Started(job.epochs_done))

    def should_stop() -> bool:
        if fault is not None and completed[0] + 1 >= fault[1]:
            _inject(fault[0])
        return stop.is_set()

    def warn(text: str) -> None:  # in the job's log, and on the worker's console
        print(f"warning: {text}", file=sys.stderr, flush=True)
        send(Warned(text))

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        completed[0] = max(completed[0], epoch)
        send(EpochDone(epoch, metrics.get(ITERATIONS), metrics.get(TRAIN_LOSS), metrics.get(TRAIN_ERROR),
                       metrics.get(TEST_ERROR)))

    _trace("start", device, job.id)
    try:
        # train() reports a Step at most every REPORT_SECONDS; it goes to the worker as it is
        outcome, message = execute(store, job, request.worker, request.options, should_stop=should_stop,
                                   on_step=send, on_epoch=on_epoch, warn=warn)
        send(Finished(outcome, message))
    finally:
        _trace("end", device, job.id)
        store.close()
        sys.stderr.flush()
