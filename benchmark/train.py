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
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import JobSpec, ScheduleConfig
from benchmark.data import DeviceLoader, load_splits, make_loaders
from benchmark.models import build_model, residual_scales

Status = Literal["done", "diverged", "stopped"]
REPORT_SECONDS = 0.25  # on_step at most this often: each report waits for the device (one sync)
WARMUP_WINDOW = 50  # iterations over which "training error below X" is judged (He 2016 §4.2)
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class Step:
    """Progress of the current epoch, for progress bars."""

    epoch: int  # 1-based
    epochs: int
    iteration: int  # global, 0-based count of optimiser steps done
    iterations: int  # total in the schedule
    loss: float
    error: float  # running training error of this epoch, percent


@dataclass
class TrainResult:
    status: Status
    epochs_done: int
    history: list[dict[str, float]] = field(default_factory=list)
    message: str = ""


class CheckpointError(RuntimeError):
    pass


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
    on_epoch: Callable[[int, dict[str, float]], None] = lambda epoch, metrics: None,
    on_step: Callable[[Step], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    max_epochs: int | None = None,
) -> TrainResult:
    """Run (or continue) ``spec``. ``on_epoch(epoch, metrics)`` is called once per epoch, 1-based,
    after the checkpoint of that epoch is on disk; on resume it is replayed for the epochs already done
    so a store that missed them catches up (writes are idempotent upserts)."""
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
        state = _load_checkpoint(Path(checkpoint), spec, model, optimizer, device)
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
            lr = _lr(spec, state, per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
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
        train_loss = loss_sum.item() / max(seen, 1)  # waits for the device: the clock reads after the work
        train_seconds = time.perf_counter() - t0
        metrics = {
            "train_loss": train_loss,
            "train_error": 100.0 * wrong.item() / max(seen, 1),
            "lr": lr,
            "iterations": float(state.iteration),
            "images_per_second": seen / train_seconds if train_seconds > 0 else float("nan"),
        }
        if not math.isfinite(train_loss):
            metrics["seconds"] = time.perf_counter() - t0
            state.history.append(metrics)
            on_epoch(epoch, metrics)
            return TrainResult("diverged", epoch, state.history,
                               f"training loss became {train_loss} in epoch {epoch} (iteration {state.iteration})")
        for split, loader in evals.items():
            loss_value, error = evaluate(model, loader, autocast)
            metrics[f"{split}_loss"] = loss_value
            metrics[f"{split}_error"] = error
        metrics.update(residual_scales(model))
        metrics["seconds"] = time.perf_counter() - t0

        state.epoch = epoch
        state.history.append(metrics)
        if checkpoint is not None:
            _save_checkpoint(Path(checkpoint), spec, model, optimizer, state)
        on_epoch(epoch, metrics)
        epochs_this_call += 1
    return TrainResult("done", state.epoch, state.history)


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
    decay, and the lr/10 that the Fixup and tau-ResNet code give to scalar parameters (biases, tau)."""
    o = spec.optim
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        scalar = p.numel() == 1
        decay = o.weight_decay_on == "all" or p.ndim > 1
        groups.setdefault((scalar, decay), []).append(p)
    param_groups = [
        {"params": ps, "weight_decay": o.weight_decay if decay else 0.0,
         "lr_scale": o.scalar_lr_scale if scalar else 1.0}
        for (scalar, decay), ps in sorted(groups.items())
    ]
    return torch.optim.SGD(param_groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)


def _length(s: ScheduleConfig, per_epoch: int) -> tuple[int, int]:
    """(total iterations, total epochs). Epoch schedules count whole epochs; iteration schedules end
    mid-epoch when the length is not a multiple of the epoch (64k / 391 = 163.7 epochs)."""
    if s.unit == "epoch":
        return s.length * per_epoch, s.length
    return s.length, math.ceil(s.length / per_epoch)


def _lr(spec: JobSpec, state: _State, per_epoch: int) -> float:
    """Learning rate for the next step (the state counts completed steps and epochs)."""
    s, base = spec.schedule, spec.optim.lr
    it = state.iteration
    if s.warmup == "constant" and it < s.warmup_length:
        return s.warmup_lr
    if s.warmup == "until_error" and state.warming:
        return s.warmup_lr
    if s.warmup == "linear" and it < s.warmup_length:
        # ReZero-Cifar100's WarmUpLR: base * it / total, so its logged lr of epoch 0 starts at 0.0.
        return base * it / s.warmup_length
    # MultiStepLR semantics: stepped once per completed epoch (or iteration).
    position = state.epoch if s.unit == "epoch" else it
    return base * s.gamma ** sum(position >= m for m in s.milestones)


# ----------------------------------------------------------------------------------------------
# Checkpoints: written atomically (temp file + rename) so a kill mid-write leaves the last good one.


def _save_checkpoint(path: Path, spec: JobSpec, model: nn.Module, optimizer, state: _State) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "version": CHECKPOINT_VERSION,
        "key": spec.key,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": state.epoch,
        "iteration": state.iteration,
        "warming": state.warming,
        "recent_errors": list(state.recent_errors),
        "history": state.history,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, spec: JobSpec, model: nn.Module, optimizer, device) -> _State:
    try:
        payload = torch.load(path, map_location=device, weights_only=False)
        if payload.get("version") != CHECKPOINT_VERSION or payload.get("key") != spec.key:
            raise CheckpointError("it belongs to another job or another bench version")
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
    except CheckpointError as e:
        raise CheckpointError(f"checkpoint {path} cannot be used: {e}; delete it to restart the job from epoch 1")
    except Exception as e:  # truncated or corrupt file: torch raises many different types
        raise CheckpointError(
            f"checkpoint {path} is corrupt ({type(e).__name__}: {e}); delete it to restart the job from epoch 1"
        ) from None
    state = _State(epoch=payload["epoch"], iteration=payload["iteration"], warming=payload["warming"],
                   history=list(payload["history"]))
    state.recent_errors.extend(payload["recent_errors"])
    return state
