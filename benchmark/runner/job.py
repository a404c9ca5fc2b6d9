"""Run one claimed job: glue between the trainer and the store.

Heartbeats go out from a background thread (with the database's clock, see store.heartbeat), so a
long epoch never looks dead; if the claim is lost (the job was requeued as stale) training stops at
the next step instead of racing another worker.
"""
from __future__ import annotations

import logging
import os
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from benchmark.store import JobRecord, Store, environment
from benchmark.train import CheckpointError, Step, train

log = logging.getLogger(__name__)
Outcome = Literal["done", "diverged", "failed", "released"]
HEARTBEAT_SECONDS = 10.0


@dataclass(frozen=True)
class JobOptions:
    device: str = "cpu"
    data_dir: str | None = None
    checkpoint_dir: Path = Path("db/checkpoints")
    max_epochs: int | None = None  # an epoch budget for this call; the job stays resumable
    heartbeat_seconds: float = HEARTBEAT_SECONDS


def checkpoint_path(options: JobOptions, job: JobRecord) -> Path:
    return Path(options.checkpoint_dir) / f"{job.key}.pt"


def execute(
    store: Store,
    job: JobRecord,
    worker: str,
    options: JobOptions,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    on_step: Callable[[Step], None] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> Outcome:
    """Train a job this worker has claimed and leave it in a final or queued state."""
    store.set_environment(job.id, environment(options.device))
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
        kwargs = dict(device=options.device, data_dir=options.data_dir, checkpoint=ckpt, on_epoch=record,
                      on_step=on_step, should_stop=lambda: lost.is_set() or should_stop(),
                      max_epochs=options.max_epochs)
        try:
            result = train(job.spec, **kwargs)
        except CheckpointError as e:
            # Keep the bad file for inspection and start over: nothing is lost, because epochs are
            # upserted and a fresh run of the same seed recomputes them.
            aside = ckpt.with_suffix(".corrupt")
            os.replace(ckpt, aside)
            log.warning("%s; moved it to %s and restarting job %s from epoch 1", e, aside, job.label)
            result = train(job.spec, **kwargs)
    except Exception:
        store.finish(job.id, "failed", error=traceback.format_exc())
        return "failed"
    finally:
        done.set()
        thread.join()

    if result.status == "done":
        store.finish(job.id, "done")  # the final checkpoint stays: it holds the trained weights
        return "done"
    if result.status == "diverged":
        store.finish(job.id, "diverged", error=result.message)
        return "diverged"
    if not lost.is_set():
        store.release(job.id)
    return "released"
