"""What crosses the pipe between the worker and a job's process: typed, frozen, picklable.

The worker starts each job's process (``benchmark.runner.child``) with one ``JobRequest``: the job
as its claim read it (id, key, spec, epochs done), the worker's name, the database, the device slot
and the ``JobOptions``. The process answers with these messages, in this order:

- ``Started`` once it has checked that the job is still its worker's;
- ``benchmark.progress.Step`` (the trainer's own progress record) at most a few times a second;
- ``EpochDone`` after each epoch is recorded; ``Warned`` for a warning the worker shows;
- ``Finished`` last: how the job ended and, when it failed, diverged or will be retried, the last
  line of its error (``benchmark.runner.job.execute`` returns both).

A process that dies without ``Finished`` (a segfault, ``kill -9``) is settled by the worker.
Torch-free: the worker unpickles these without importing torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from benchmark.progress import Step
from benchmark.runner.devices import Device
from benchmark.runner.job import JobOptions, Outcome
from benchmark.store import JobRecord


@dataclass(frozen=True)
class JobRequest:
    """Everything a job's process needs, sent once when the worker starts it."""

    job: JobRecord  # as claimed: the spec decoded once, by the worker's claim
    worker: str  # the claim's name, "host:pid:slot[:slurm=...]"
    db: str  # the database URL
    device: Device  # the slot's device (its GPU goes into the process's environment)
    options: JobOptions
    threads: int  # torch CPU threads

    @property
    def log(self) -> str:
        return self.options.log


@dataclass(frozen=True)
class Started:
    epochs_done: int  # the job resumes after this epoch


@dataclass(frozen=True)
class EpochDone:
    """An epoch recorded; the fields are the metrics of that name the live view shows."""

    epoch: int
    iterations: float | None
    train_loss: float | None
    train_error: float | None
    test_error: float | None


@dataclass(frozen=True)
class Warned:
    text: str


@dataclass(frozen=True)
class Finished:
    outcome: Outcome
    message: str = ""


Message = Union[Started, Step, EpochDone, Warned, Finished]
