"""Train one job: SGD, a multi-step schedule in epochs or iterations, warm-up, evaluation every epoch,
a checkpoint after every epoch, exact resume, and divergence detection.

Knows nothing about databases or processes: the caller passes ``on_epoch`` (to record metrics) and
``should_stop`` (Ctrl-C, a lost claim, an epoch budget). Errors are reported in percent, like the
papers, so 8.75 means 8.75 %.

Exact resume: all randomness of epoch k comes from generators seeded with (seed, k) (model init
from the seed, augmentation and batch order from (seed, k)), and the checkpoint holds the model,
the optimiser (momentum buffers) and the schedule state. So a run resumed from the checkpoint of
epoch k computes bit-identical epochs k+1... on CPU.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from benchmark import checkpoint as ckpt
from benchmark.checkpoint import CheckpointError, Owner
from benchmark.config import JobSpec, ScheduleConfig
from benchmark.data import DeviceLoader, load_splits, make_loaders
from benchmark.models import build_model, residual_scales
from benchmark.vocabulary import (IMAGES_PER_SECOND, ITERATIONS, LR, SECONDS, SPLIT_METRICS, TRAIN_ERROR, TRAIN_LOSS,
                                  JobState)
from benchmark.progress import Step  # torch-free, so the worker reads it without torch

Status = Literal[JobState.DONE, JobState.DIVERGED, "stopped"]  # "stopped": asked to stop, the job is not finished
REPORT_SECONDS = 0.25  # on_step at most this often: each report waits for the device (one sync)
WARMUP_WINDOW = 50  # iterations over which "training error below X" is judged (He 2016 §4.2)


@dataclass
class TrainResult:
    status: Status
    epochs_done: int
    history: list[dict[str, float]] = field(default_factory=list)
    message: str = ""


@dataclass
class _State:
    """What a checkpoint must hold besides model and optimiser to continue exactly."""

    epoch: int = 0  # epochs completed
    iteration: int = 0  # optimiser steps completed
    warming: bool = True  # until_error warm-up still active
    recent_errors: deque = field(default_factory=lambda: deque(maxlen=WARMUP_WINDOW))
    history: list[dict[str, float]] = field(default_factory=list)


def train(
    spec: JobSpec,
    *,
    device: str | torch.device = "cpu",
    data_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    owner: Owner | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] = lambda epoch, metrics: None,
    on_step: Callable[[Step], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    max_epochs: int | None = None,
    resume: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Run (or continue) ``spec``. ``on_epoch(epoch, metrics)`` is called once per epoch, 1-based,
    after the checkpoint of that epoch is on disk; on resume it is replayed for the epochs already done
    so a store that missed them catches up (writes are idempotent upserts).

    ``checkpoint`` is resumed from only when it names ``owner`` (the database job it belongs to; None
    for a run outside any database, whose checkpoint must then name none and have ``spec``'s key);
    anything else raises ``CheckpointError``. ``resume``: the contents of ``checkpoint`` when the caller
    has read them already (``benchmark.runner.job.claim_checkpoint``), so the file is read once; they
    are checked as the file would be."""
    device = torch.device(device)
    splits = load_splits(spec.data, data_dir)

    torch.manual_seed(spec.seed)  # model initialisation is a function of the seed alone
    model = build_model(spec.model).to(device)
    if spec.runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(model, spec)

    train_loader, val_loader, test_loader = make_loaders(
        splits, spec.data, batch_size=spec.optim.batch_size, device=device,
        channels_last=spec.runtime.channels_last)
    evals = {"test": test_loader} if val_loader is None else {"test": test_loader, "val": val_loader}

    per_epoch = len(train_loader)
    total_iterations, total_epochs = _length(spec.schedule, per_epoch)
    state = _State()
    if checkpoint is not None and Path(checkpoint).exists():
        state = _load_checkpoint(Path(checkpoint), spec, owner, model, optimizer, device, resume)
        for i, metrics in enumerate(state.history, start=1):
            on_epoch(i, metrics)
    step_fn = torch.compile(model) if spec.runtime.compile else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec.runtime.precision == "bf16")

    epochs_this_call = 0
    last_report = -math.inf
    while state.epoch < total_epochs:
        if should_stop() or (max_epochs is not None and epochs_this_call >= max_epochs):
            return TrainResult("stopped", state.epoch, state.history)
        epoch = state.epoch + 1
        t0 = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        wrong = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        lr = 0.0
        for x, y in train_loader.epoch(spec.seed, epoch):
            if state.iteration >= total_iterations:
                break  # an iteration schedule ends mid-epoch (64k iterations is not a whole epoch)
            lr = _set_lr(optimizer, spec, state, per_epoch)
            with autocast:
                out = step_fn(x)
                loss = F.cross_entropy(out.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            state.iteration += 1
            with torch.no_grad():
                loss_sum += loss.detach() * len(y)
                batch_wrong = (out.argmax(1) != y).sum()
                wrong += batch_wrong
            seen += len(y)
            if spec.schedule.warmup == "until_error" and state.warming:
                # He 2016 §4.2: 0.01 "until the training error is below 80%", then back to 0.1.
                state.recent_errors.append(batch_wrong.item() / len(y))
                if (len(state.recent_errors) == WARMUP_WINDOW
                        and sum(state.recent_errors) / WARMUP_WINDOW < spec.schedule.warmup_until_error):
                    state.warming = False
            # the clock first, so the steps between reports never wait for the device
            if on_step is not None and time.monotonic() - last_report >= REPORT_SECONDS:
                last_report = time.monotonic()
                loss_total, wrong_total = torch.stack([loss_sum, wrong.to(loss_sum.dtype)]).tolist()
                running = loss_total / seen
                if not math.isfinite(running):
                    break  # diverged: no point finishing the epoch
                on_step(Step(epoch, total_epochs, state.iteration, total_iterations, running,
                             100.0 * wrong_total / seen))
            if should_stop():
                return TrainResult("stopped", state.epoch, state.history)
        if device.type == "cuda":
            # The clock must stop after the epoch's work, not when the host has queued it: CUDA
            # kernels run asynchronously, so wait for them explicitly rather than rely on the
            # implicit sync of the .item() below (airbench times its epochs with CUDA events read
            # after torch.cuda.synchronize(): KellerJordan/airbench airbench94.py).
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - t0
        train_loss = loss_sum.item() / max(seen, 1)
        metrics = {
            TRAIN_LOSS: train_loss,
            TRAIN_ERROR: 100.0 * wrong.item() / max(seen, 1),
            LR: lr,
            ITERATIONS: float(state.iteration),
            IMAGES_PER_SECOND: seen / train_seconds if train_seconds > 0 else float("nan"),
        }
        if not math.isfinite(train_loss):
            metrics[SECONDS] = time.perf_counter() - t0
            state.history.append(metrics)
            on_epoch(epoch, metrics)
            return TrainResult(JobState.DIVERGED, epoch, state.history,
                               f"training loss became {train_loss} in epoch {epoch} (iteration {state.iteration})")
        for split, loader in evals.items():
            loss_name, error_name = SPLIT_METRICS[split]
            metrics[loss_name], metrics[error_name] = evaluate(model, loader, autocast)
        metrics.update(residual_scales(model))
        metrics[SECONDS] = time.perf_counter() - t0

        state.epoch = epoch
        state.history.append(metrics)
        if checkpoint is not None:
            _save_checkpoint(Path(checkpoint), spec, owner, model, optimizer, state)
        on_epoch(epoch, metrics)
        epochs_this_call += 1
    return TrainResult(JobState.DONE, state.epoch, state.history)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DeviceLoader, autocast) -> tuple[float, float]:
    """Single view of the original image, as He 2016 §4.2 tests. Returns (mean loss, error %)."""
    model.eval()
    loss_sum = torch.zeros((), device=loader.device)
    wrong = torch.zeros((), device=loader.device, dtype=torch.long)
    n = 0
    for x, y in loader.epoch(0, 0):
        with autocast:
            out = model(x).float()
        loss_sum += F.cross_entropy(out, y, reduction="sum")
        wrong += (out.argmax(1) != y).sum()
        n += len(y)
    return loss_sum.item() / n, 100.0 * wrong.item() / n


# ----------------------------------------------------------------------------------------------
# Optimiser and schedule


def _optimizer(model: nn.Module, spec: JobSpec) -> torch.optim.SGD:
    """SGD with momentum. Parameter groups encode two protocol choices: which parameters get weight
    decay, and which train at ``scalar_lr_scale`` x lr (``lr_scale_on``): the scalar biases and tau of
    the Fixup and tau-ResNet code, or, as tbachlechner/Fixup cifar/cifar_train.py (e57b6c0, unchanged
    to 84322e2) builds its groups, every parameter whose name contains 'bias' or 'scale'."""
    o = spec.optim
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scaled = _lr_scaled(name, p, o.lr_scale_on, o.lr_scale_names)
        decay = o.weight_decay_on == "all" or p.ndim > 1
        groups.setdefault((scaled, decay), []).append(p)
    param_groups = [
        {"params": ps, "weight_decay": o.weight_decay if decay else 0.0,
         "lr_scale": o.scalar_lr_scale if scaled else 1.0}
        for (scaled, decay), ps in sorted(groups.items())
    ]
    return torch.optim.SGD(param_groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)


def _lr_scaled(name: str, p: nn.Parameter, on: str, names: tuple[str, ...]) -> bool:
    """Whether parameter ``name`` belongs to the ``scalar_lr_scale`` group (``OptimConfig.lr_scale_on``)."""
    if on == "scalars":
        return p.numel() == 1
    if on == "biases":  # a module's own ``bias`` (BN beta, conv/Linear bias, ScalarBias)
        return name.rsplit(".", 1)[-1] == "bias"
    return any(n in name for n in names)  # "names": the Fixup code's ``'bias' in name`` test


def _length(s: ScheduleConfig, per_epoch: int) -> tuple[int, int]:
    """(total iterations, total epochs). Epoch schedules count whole epochs; iteration schedules end
    mid-epoch when the length is not a multiple of the epoch (64k / 391 = 163.7 epochs)."""
    if s.unit == "epoch":
        return s.length * per_epoch, s.length
    return s.length, math.ceil(s.length / per_epoch)


def _position(s: ScheduleConfig, state: _State) -> int:
    """Where the schedule stands, in its unit: MultiStepLR stepped once per completed epoch (or step)."""
    return state.epoch if s.unit == "epoch" else state.iteration


def _lr(spec: JobSpec, state: _State, per_epoch: int) -> float:
    """Learning rate for the next step (the state counts completed steps and epochs)."""
    s, base = spec.schedule, spec.optim.lr
    it = state.iteration
    if s.warmup == "constant" and it < s.warmup_length:
        return s.warmup_lr
    if s.warmup == "until_error" and state.warming:
        return s.warmup_lr
    if s.warmup == "linear" and it < s.warmup_length:
        # Step i uses base * i / N: the first step at 0.
        return base * it / s.warmup_length
    if s.warmup == "linear_pre_step" and it < s.warmup_length:
        # statsu1990/ReZero-Cifar100 b7b7c24 src/train/training.py calls warmup_scheduler.step() before
        # each batch's optimizer.step(), and src/train/scheduler.py WarmUpLR gives base * last_epoch /
        # (total_iters + 1e-8): step i uses base * (i + 1) / N. (Its logged epoch-0 lr, 0.0, is read
        # before the first scheduler step.) The 1e-8 moves the lr by < 3e-11 relative, far below
        # float32 resolution, and is left out.
        return base * (it + 1) / s.warmup_length
    return base * s.gamma ** sum(_position(s, state) >= m for m in s.milestones)


def _set_lr(optimizer: torch.optim.SGD, spec: JobSpec, state: _State, per_epoch: int) -> float:
    """Set every group's lr for the next step, and empty the momentum buffers at a milestone when the
    protocol rebuilds its optimiser there. Returns the lr of the unscaled groups."""
    s, o = spec.schedule, spec.optim
    lr = _lr(spec, state, per_epoch)
    scaled_lr = lr
    if o.lr_scale_schedule == "first_milestone_final" and s.milestones and _position(s, state) >= s.milestones[0]:
        # tbachlechner/Fixup cifar_train.py adjust_learning_rate since c821673: for the groups whose
        # initial lr is not the base lr, "elif epoch < args.lr_step1" is written twice, so the lr/10 of
        # the second elif never fires and they go from initial_lr to initial_lr / 100 at lr_step1.
        scaled_lr = o.lr * s.gamma ** len(s.milestones)
    for group in optimizer.param_groups:
        # The Fixup code tells the groups apart by their lr: a group at scale 1 is a base group.
        group["lr"] = (lr if group["lr_scale"] == 1.0 else scaled_lr) * group["lr_scale"]
    if o.reset_momentum_at_milestones:
        # techxzen/pytorch-residual-networks 3d0f2e4 run.py: at train_iter == 32000 and 48000, before
        # that iteration's step, a new torch.optim.SGD is built (momentum buffers start again).
        unit = per_epoch if s.unit == "epoch" else 1
        if any(state.iteration == m * unit for m in s.milestones):
            optimizer.state.clear()
    return lr


# ----------------------------------------------------------------------------------------------
# Checkpoints (format and ownership: benchmark/checkpoint.py)


def _save_checkpoint(path: Path, spec: JobSpec, owner: Owner | None, model: nn.Module, optimizer,
                     state: _State) -> None:
    ckpt.save(path, {
        "key": owner.key if owner is not None else spec.key,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": state.epoch,
        "iteration": state.iteration,
        "warming": state.warming,
        "recent_errors": list(state.recent_errors),
        "history": state.history,
    }, owner)


def _load_checkpoint(path: Path, spec: JobSpec, owner: Owner | None, model: nn.Module, optimizer,
                     device, payload: Mapping[str, Any] | None = None) -> _State:
    # A payload read on the CPU loads the same numbers: load_state_dict copies each tensor into the
    # model's and optimiser's own (the optimiser casts its state to its parameters' device).
    if payload is None:
        payload = ckpt.read(path, map_location=device)
    found = ckpt.owner_of(payload)
    if found != owner or (owner is None and payload.get("key") != spec.key):
        theirs = found.describe() if found else f"no database (key {payload.get('key')})"
        ours = owner.describe() if owner else f"a run outside any database (key {spec.key})"
        raise CheckpointError(f"checkpoint {path} belongs to {theirs}, not to {ours}")
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        state = _State(epoch=int(payload["epoch"]), iteration=int(payload["iteration"]),
                       warming=bool(payload["warming"]), history=list(payload["history"]))
        state.recent_errors.extend(payload["recent_errors"])
    except Exception as e:  # a readable file with the wrong contents
        raise CheckpointError(f"checkpoint {path} does not fit this job's model or optimiser "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    return state
