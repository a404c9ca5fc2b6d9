"""The words bench stores and reads back: job states, metric names, selection rules.

One place names them (as Optuna's ``TrialState``), so the trainer, the worker, the store, the suite
parser, the claims and the reporter cannot drift apart. Every name here is the string the database
holds (``jobs.state``, ``metrics.name``, ``suites.text``): ``JobState`` is a ``StrEnum`` whose members
*are* those strings, so SQL, JSON and printed output read exactly as plain strings would.
Torch-free and import-free, so every layer may import it.
"""
from __future__ import annotations

from enum import StrEnum
from typing import Literal, get_args


class JobState(StrEnum):
    """A job's state: queued -> running -> done | diverged | failed; running -> queued on a lost
    worker (``Store.requeue_stale``) or on Ctrl-C (``Store.release``)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    DIVERGED = "diverged"
    FAILED = "failed"

    def is_finished(self) -> bool:
        """A final state: no worker will touch the job again unless it is reset (``bench reset``)."""
        return self in FINAL_STATES


FINAL_STATES: tuple[JobState, ...] = (JobState.DONE, JobState.DIVERGED, JobState.FAILED)
BROKEN_STATES: tuple[JobState, ...] = (JobState.FAILED, JobState.DIVERGED)  # finished, without a result
TRAINED_STATES: tuple[JobState, ...] = (JobState.DONE, JobState.DIVERGED)  # finished with recorded epochs

# ----------------------------------------------------------------------------------------------
# Metric names (``metrics.name``). Errors are in percent, losses are mean cross-entropy.

TRAIN_LOSS = "train_loss"
TRAIN_ERROR = "train_error"
TEST_LOSS = "test_loss"
TEST_ERROR = "test_error"
VAL_LOSS = "val_loss"  # only with a validation split (data.val_size > 0)
VAL_ERROR = "val_error"
LR = "lr"  # the base learning rate of the epoch's last step
SECONDS = "seconds"  # wall-clock seconds of the epoch, evaluation included
IMAGES_PER_SECOND = "images_per_second"  # training images per second, evaluation excluded
ITERATIONS = "iterations"  # optimiser steps done so far (global)
TAU = "tau"  # a shared learnable tau (tau-ResNet without BN)
ALPHA_PREFIX = "alpha."  # ReZero multipliers, one per block: "alpha.stage1.block0"

# The loss and error names of each evaluated split, as ``train`` names its evaluation loaders.
SPLIT_METRICS: dict[str, tuple[str, str]] = {"test": (TEST_LOSS, TEST_ERROR), "val": (VAL_LOSS, VAL_ERROR)}
# What ``train`` records after every epoch; with a validation split also VAL_METRICS, and the
# model's residual scales (TAU or ALPHA_PREFIX + block) when it has learnable ones.
EPOCH_METRICS: tuple[str, ...] = (TRAIN_LOSS, TRAIN_ERROR, LR, ITERATIONS, IMAGES_PER_SECOND, TEST_LOSS,
                                  TEST_ERROR, SECONDS)
VAL_METRICS: tuple[str, ...] = (VAL_LOSS, VAL_ERROR)
KNOWN_METRICS: tuple[str, ...] = (
    TRAIN_LOSS, TRAIN_ERROR, TEST_LOSS, TEST_ERROR, VAL_LOSS, VAL_ERROR,
    LR, SECONDS, IMAGES_PER_SECOND, ITERATIONS, TAU,
)  # plus ALPHA_PREFIX + "<block name>"


def is_scale_metric(name: str) -> bool:
    """A residual-scale metric: the shared tau or one block's ReZero alpha."""
    return name == TAU or (name.startswith(ALPHA_PREFIX) and len(name) > len(ALPHA_PREFIX))


def is_known_metric(name: str) -> bool:
    return name in KNOWN_METRICS or is_scale_metric(name)


# ----------------------------------------------------------------------------------------------
# Which epoch a suite reports (``[suite] select``, ``bench report --select``).

Selection = Literal["final", "best_val", "best_test"]
SELECTIONS: tuple[str, ...] = get_args(Selection)
# The metric whose minimum over epochs picks the reported epoch.
SELECTION_METRIC: dict[str, str] = {"best_val": VAL_ERROR, "best_test": TEST_ERROR}
