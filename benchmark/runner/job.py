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
"""
from __future__ import annotations

import errno
import logging
import os
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

from benchmark.store import JobRecord, Store, StoreError, environment, provenance
from benchmark.vocabulary import JobState

if TYPE_CHECKING:
    from benchmark.train import Step

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
    heartbeat_seconds: float
    max_attempts: int  # an out-of-memory job is retried until it has been claimed this often
    log: str = ""  # this job's log file (recorded with its environment, for `bench show`)


# Release 0.1.0 kept every database's checkpoints here (relative to the working directory). A job
# whose own checkpoint is missing looks here once and adopts what the database vouches for.
LEGACY_CHECKPOINT_DIR = Path("db/checkpoints")


def checkpoint_path(options: JobOptions, job: JobRecord) -> Path:
    return Path(options.checkpoint_dir) / f"{job.key}.pt"


def claim_checkpoint(store: Store, job: JobRecord, path: Path, warn: Callable[[str], None]) -> None:
    """Leave at ``path`` only a checkpoint of this database's ``job``, so that training resumes
    from it or starts at epoch 1: a legacy (release 0.1.0) checkpoint that the database vouches for
    is adopted (rewritten with its owner); another database's or job's is set aside, with a warning
    naming it. An unreadable one is left for ``execute`` to set aside as corrupt."""
    from benchmark import checkpoint as ckpt  # torch: only in the job's process

    source = path
    if not source.exists():
        source = LEGACY_CHECKPOINT_DIR / path.name
        if job.epochs_done == 0 or not source.is_file() or source.resolve() == path.resolve():
            return
    payload = ckpt.read(source)
    owner = ckpt.Owner(store.database_id, job.id, job.key)
    found = ckpt.owner_of(payload)
    if found == owner:
        return
    if found is None and ckpt.adoptable(payload, job.key, store.job_history(job.id)):
        ckpt.save(path, payload, owner)
        if source != path:
            source.unlink()
        warn(f"adopted the release 0.1.0 checkpoint {source} (epoch {payload.get('epoch')}): "
             f"the database holds its epochs")
        return
    if source != path:
        return  # another database's legacy file in the old shared folder: not ours, leave it
    aside = path.with_name(f"{path.name}.foreign")
    os.replace(path, aside)
    whose = found.describe() if found else "a release 0.1.0 run whose epochs this database does not hold"
    warn(f"ignored checkpoint {path}: it belongs to {whose}, not to this database's job {job.id}; "
         f"moved it to {aside}; the job starts from epoch 1")


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
) -> Outcome:
    """Train a job this worker has claimed and leave it in a final or queued state."""
    from benchmark.checkpoint import CheckpointError, Owner  # torch: only in the job's process
    from benchmark.train import train

    env = environment(options.device)
    if options.log:
        env["log"] = options.log
    store.set_environment(job.id, env, provenance())
    lost = threading.Event()
    done = threading.Event()

    def beat() -> None:
        while not done.wait(options.heartbeat_seconds):
            try:
                if not store.heartbeat(job.id, worker):
                    lost.set()
            except Exception as e:  # a flaky database must not kill training; the next beat retries
                log.warning("heartbeat for job %s failed: %s", job.id, e)

    def record(epoch: int, metrics: dict[str, float]) -> None:
        store.record_epoch(job.id, epoch, metrics, worker=worker)
        if on_epoch is not None:
            on_epoch(epoch, metrics)

    ckpt = checkpoint_path(options, job)
    thread = threading.Thread(target=beat, name=f"heartbeat-{job.id}", daemon=True)
    thread.start()
    try:
        kwargs = dict(device=options.device, data_dir=options.data_dir, checkpoint=ckpt,
                      owner=Owner(store.database_id, job.id, job.key), on_epoch=record,
                      on_step=on_step, should_stop=lambda: lost.is_set() or should_stop(),
                      max_epochs=options.max_epochs)
        try:
            claim_checkpoint(store, job, ckpt, warn)
            result = train(job.spec, **kwargs)
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
            return "retry" if state else "lost"
        if not store.finish(job.id, JobState.FAILED, error=traceback.format_exc(), worker=worker):
            return "lost"
        return "failed"
    finally:
        done.set()
        thread.join()

    if result.status == JobState.DONE:
        # the final checkpoint stays: it holds the trained weights
        return "done" if store.finish(job.id, JobState.DONE, worker=worker) else "lost"
    if result.status == JobState.DIVERGED:
        return "diverged" if store.finish(job.id, JobState.DIVERGED, error=result.message, worker=worker) else "lost"
    if lost.is_set() or not store.release(job.id, worker=worker):
        return "lost"
    return "released"


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
