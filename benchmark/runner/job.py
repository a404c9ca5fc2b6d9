"""Run one claimed job: glue between the trainer and the store.

Heartbeats go out from a background thread (with the database's clock, see store.heartbeat), so a
long epoch never looks dead; if the claim is lost (the job was requeued as stale) training stops at
the next step instead of racing another worker.

Outcomes: ``done``, ``diverged`` and ``failed`` (an exception: a bug or bad input, not worth
retrying) are final. ``retry`` (CUDA out of memory, a full disk, a database locked by another
process: faults the next attempt may not meet) counts as one failed attempt: the job goes back to
the queue, where it may land on a less crowded GPU, until ``max_attempts``; then it is failed with
the message. ``released``: stopped on request (Ctrl-C, ``max_epochs``), back in the queue
without spending the attempt. ``lost``: another worker took the job over (our heartbeat was
stale); nothing is written.

The heartbeat is a ``Heartbeat`` (a daemon thread, started and stopped as a context manager) or its
no-op twin ``NullHeartbeat``, as Optuna's ``HeartbeatThread`` / ``NullHeartbeatThread``
(optuna/storages/_heartbeat.py). What the worker sends a job's process, and what that process sends
back, is in ``benchmark.runner.messages``.
"""
from __future__ import annotations

import errno
import logging
import os
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from benchmark.store import JobRecord, Store, StoreError, environment, provenance
from benchmark.store.store import gave_up
from benchmark.vocabulary import JobState

if TYPE_CHECKING:
    from benchmark.checkpoint import Owner
    from benchmark.progress import Step

log = logging.getLogger(__name__)
Outcome = Literal["done", "diverged", "failed", "retry", "released", "lost"]


@dataclass(frozen=True)
class JobOptions:
    """How the worker runs its jobs, built from its runner profile (whose defaults are the only ones).
    Torch-free and picklable: the worker sends it to the job's process."""

    device: str  # the torch device inside the job's process
    data_dir: str | None
    checkpoint_dir: Path
    max_epochs: int | None  # an epoch budget for this call; the job stays resumable
    heartbeat_seconds: float | None  # None: no heartbeat (``NullHeartbeat``)
    max_attempts: int  # an out-of-memory job is retried until it has been claimed this often
    log: str = ""  # this job's log file (recorded with its environment, for `bench show`)


# Release 0.1.0 kept every database's checkpoints here (relative to the working directory). A job
# whose own checkpoint is missing looks here once and adopts what the database vouches for.
LEGACY_CHECKPOINT_DIR = Path("db/checkpoints")


def checkpoint_path(options: JobOptions, job: JobRecord) -> Path:
    return Path(options.checkpoint_dir) / f"{job.key}.pt"


def claim_checkpoint(store: Store, job: JobRecord, path: Path, owner: Owner,
                     warn: Callable[[str], None]) -> dict[str, Any] | None:
    """Leave at ``path`` only a checkpoint of this database's ``job`` (``owner``), so that training
    resumes from it or starts at epoch 1: a legacy (release 0.1.0) checkpoint that the database
    vouches for is adopted (rewritten with its owner); another database's or job's is set aside, with
    a warning naming it. An unreadable one is left for ``execute`` to set aside as corrupt.

    Returns the contents of ``path`` when it was already ours, so that training resumes from them
    without reading the file a second time (None: ``train`` reads whatever ``path`` holds now)."""
    from benchmark import checkpoint as ckpt  # torch: only in the job's process

    source = path
    if not source.exists():
        source = LEGACY_CHECKPOINT_DIR / path.name
        if job.epochs_done == 0 or not source.is_file() or source.resolve() == path.resolve():
            return None
    payload = ckpt.read(source)
    found = ckpt.owner_of(payload)
    if found == owner:
        return payload if source == path else None
    if found is None and ckpt.adoptable(payload, job.key, store.job_history(job.id)):
        ckpt.save(path, payload, owner)
        if source != path:
            source.unlink()
        warn(f"adopted the release 0.1.0 checkpoint {source} (epoch {payload.get('epoch')}): "
             f"the database holds its epochs")
        return None
    if source != path:
        return None  # another database's legacy file in the old shared folder: not ours, leave it
    aside = path.with_name(f"{path.name}.foreign")
    os.replace(path, aside)
    whose = found.describe() if found else "a release 0.1.0 run whose epochs this database does not hold"
    warn(f"ignored checkpoint {path}: it belongs to {whose}, not to this database's job {job.id}; "
         f"moved it to {aside}; the job starts from epoch 1")
    return None


class Heartbeat:
    """Stamps ``job_id``'s heartbeat every ``seconds`` from a daemon thread while it runs (``with``,
    or ``start`` / ``stop``); ``lost`` once the store says the job is no longer ``worker``'s (it was
    requeued as stale or reset): the job must stop. A failed stamp (a flaky database) is logged and
    retried at the next beat rather than killing the training."""

    def __init__(self, store: Store, job_id: int, worker: str, seconds: float):
        self.store, self.job_id, self.worker, self.seconds = store, job_id, worker, seconds
        self._lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def __enter__(self) -> "Heartbeat":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _beat(self) -> None:
        while not self._done.wait(self.seconds):
            try:
                if not self.store.heartbeat(self.job_id, self.worker):
                    self._lost.set()
            except Exception as e:  # a flaky database must not kill training; the next beat retries
                log.warning("heartbeat for job %s failed: %s", self.job_id, e)


class NullHeartbeat:
    """``Heartbeat``'s twin that does nothing: for a job nobody else can take over (no heartbeat)."""

    lost = False

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def __enter__(self) -> "NullHeartbeat":
        return self

    def __exit__(self, *exc) -> None:
        pass


def heartbeat(store: Store, job_id: int, worker: str, seconds: float | None) -> Heartbeat | NullHeartbeat:
    """A ``Heartbeat`` every ``seconds``; ``NullHeartbeat`` without an interval (None or 0)."""
    return Heartbeat(store, job_id, worker, seconds) if seconds else NullHeartbeat()


def execute(
    store: Store,
    job: JobRecord,
    worker: str,
    options: JobOptions,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    on_step: Callable[[Step], None] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    warn: Callable[[str], None] = log.warning,
) -> tuple[Outcome, str]:
    """Train a job this worker has claimed and leave it in a final or queued state. Returns the
    outcome and, for ``failed``, ``diverged`` and ``retry``, the last line of the error it recorded
    ("" otherwise)."""
    from benchmark.checkpoint import CheckpointError, Owner  # torch: only in the job's process
    from benchmark.train import train

    env = environment(options.device)
    if options.log:
        env["log"] = options.log
    store.set_environment(job.id, env, provenance())

    def record(epoch: int, metrics: dict[str, float]) -> None:
        store.record_epoch(job.id, epoch, metrics, worker=worker)
        if on_epoch is not None:
            on_epoch(epoch, metrics)

    ckpt = checkpoint_path(options, job)
    with heartbeat(store, job.id, worker, options.heartbeat_seconds) as beat:
        try:
            owner = Owner(store.database_id, job.id, job.key)  # once: claim_checkpoint and train check it
            kwargs = dict(device=options.device, data_dir=options.data_dir, checkpoint=ckpt, owner=owner,
                          on_epoch=record, on_step=on_step, should_stop=lambda: beat.lost or should_stop(),
                          max_epochs=options.max_epochs)
            try:
                resume = claim_checkpoint(store, job, ckpt, owner, warn)
                result = train(job.spec, resume=resume, **kwargs)
            except CheckpointError as e:
                # Keep the bad file for inspection and start over: nothing is lost, because epochs are
                # upserted and a fresh run of the same seed recomputes them.
                aside = ckpt.with_suffix(".corrupt")
                if ckpt.exists():  # (an unreadable file in the legacy folder stays where it is)
                    os.replace(ckpt, aside)
                warn(f"{e}; moved it to {aside} and restarting job {job.id} from epoch 1")
                result = train(job.spec, **kwargs)
        except Exception as e:
            note = _passing_fault(e, options)
            if note is not None:  # worth another attempt: back in the queue until max_attempts
                state = store.fail_attempt(job.id, note, options.max_attempts, worker=worker)
                # what fail_attempt recorded: the claim counted this attempt in job.attempts
                error = gave_up(job.attempts, note) if state == JobState.FAILED else note
                return ("retry", _last_line(error)) if state else ("lost", "")
            error = traceback.format_exc()
            if not store.finish(job.id, JobState.FAILED, error=error, worker=worker):
                return "lost", ""
            return "failed", _last_line(error)

    if result.status == JobState.DONE:
        # the final checkpoint stays: it holds the trained weights
        return ("done" if store.finish(job.id, JobState.DONE, worker=worker) else "lost"), ""
    if result.status == JobState.DIVERGED:
        if not store.finish(job.id, JobState.DIVERGED, error=result.message, worker=worker):
            return "lost", ""
        return "diverged", _last_line(result.message)
    if beat.lost or not store.release(job.id, worker=worker):
        return "lost", ""
    return "released", ""


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def _passing_fault(e: BaseException, options: JobOptions) -> str | None:
    """The reason, when ``e`` is a fault the next attempt may not meet (memory taken by another
    job, a full disk, a database locked by another process); None for a bug or bad input."""
    first = str(e).splitlines()[0] if str(e) else ""
    if _out_of_memory(e):
        return (f"out of memory on {options.device} ({type(e).__name__}: {first}); another job may have "
                "shared the GPU: lower jobs_per_device or the batch size if this repeats")
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return (f"disk full writing {e.filename or 'a file'} ({first}): free space in the checkpoint folder "
                f"({options.checkpoint_dir}); the job resumes from its last checkpoint")
    if isinstance(e, StoreError) and ("locked" in first or "busy" in first):
        return f"the database stayed locked by another process ({first}); the job resumes from its last checkpoint"
    return None


def _out_of_memory(e: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(e, oom) or "CUDA out of memory" in str(e)
