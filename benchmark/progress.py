"""What a training run reports while it runs: ``Step``, emitted by ``benchmark.train``.

Torch-free, and apart from the trainer, so that the worker, which only shows a job's progress,
unpickles the steps a job's process sends it (``benchmark.runner.messages``) without importing torch.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    """Progress of the current epoch, for progress bars."""

    epoch: int  # 1-based
    epochs: int
    iteration: int  # global, 0-based count of optimiser steps done
    iterations: int  # total in the schedule
    loss: float
    error: float  # running training error of this epoch, percent
