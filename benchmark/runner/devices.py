"""Devices and device slots.

``discover`` lists the devices jobs may run on: the CUDA devices this process sees (honouring
``CUDA_VISIBLE_DEVICES``), else the CPU. A job runs on one device and holds one of its *slots*:
``jobs_per_device`` slots per GPU (several small networks share a GPU), ``workers`` slots for the
CPU. A slot is a file lock, ``<lock_dir>/gpu<N>.slot<k>.lock``, taken without blocking; the
operating system drops it when its holder dies, so a crashed worker never leaves a slot taken. All
``bench`` processes on a host that use the same lock folder (the default is per user, in the temp
folder) therefore never put more than ``jobs_per_device`` jobs on one GPU between them.

Test hook: ``BENCH_FAKE_GPUS=N`` makes discovery report N CUDA devices that are really the CPU (the
child process gets ``CUDA_VISIBLE_DEVICES`` as on a real machine, and trains on the CPU). It lets
the tests check slots, packing and isolation on a machine without a GPU.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from filelock import FileLock, Timeout

from benchmark.errors import UserError

FAKE_GPUS_ENV = "BENCH_FAKE_GPUS"


class DeviceError(UserError, ValueError):
    """The requested devices do not exist here; the message says what does."""


@dataclass(frozen=True)
class Device:
    kind: str  # "cuda" or "cpu"
    physical: str = ""  # what CUDA_VISIBLE_DEVICES names it (an index or a GPU UUID); "" for the CPU
    fake: bool = False  # BENCH_FAKE_GPUS: a "GPU" that is the CPU

    @property
    def name(self) -> str:
        """Stored as the job's device: ``cuda:<physical id>`` or ``cpu``."""
        return "cpu" if self.kind == "cpu" else f"cuda:{self.physical}"

    @property
    def lock_name(self) -> str:
        return "cpu" if self.kind == "cpu" else "gpu" + re.sub(r"[^A-Za-z0-9_-]", "_", self.physical)

    def child_env(self) -> dict[str, str]:
        """Environment of a job on this device: it sees exactly one GPU, as cuda:0."""
        return {} if self.kind == "cpu" else {"CUDA_VISIBLE_DEVICES": self.physical}

    @property
    def torch_device(self) -> str:
        """The device string inside the job's process (after ``child_env``)."""
        return "cuda:0" if self.kind == "cuda" and not self.fake else "cpu"


def _visible_ids(count: int) -> list[str]:
    """Physical ids of the ``count`` devices torch sees, in torch's order."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return [str(i) for i in range(count)]
    ids = [p.strip() for p in env.split(",") if p.strip()]
    return ids[:count]


def cuda_count() -> int:
    """Visible CUDA devices, without creating a CUDA context in this process (torch asks NVML first)."""
    fake = os.environ.get(FAKE_GPUS_ENV)
    if fake:
        if not fake.isdigit():
            raise DeviceError(f"{FAKE_GPUS_ENV}={fake!r}: must be a number of fake GPUs")
        return int(fake)
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken driver: run on the CPU rather than not at all
        return 0


def discover(devices: str = "auto") -> list[Device]:
    """``auto``: every visible GPU, else the CPU. ``cpu``. ``cuda``: every visible GPU (an error if
    none). ``"0,2"``: those CUDA indices, as this process sees them."""
    spec = devices.strip().lower()
    if spec == "cpu":
        return [Device("cpu")]
    fake = bool(os.environ.get(FAKE_GPUS_ENV))
    count = cuda_count()
    ids = _visible_ids(count)
    gpus = [Device("cuda", ids[i] if i < len(ids) else str(i), fake) for i in range(count)]
    if spec == "auto":
        return gpus or [Device("cpu")]
    if not gpus:
        raise DeviceError(f"devices {devices!r}: no CUDA device is visible here "
                          f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); use cpu")
    if spec == "cuda":
        return gpus
    wanted = [int(p) for p in spec.split(",")]
    bad = [i for i in wanted if i >= len(gpus)]
    if bad:
        raise DeviceError(f"devices {devices!r}: no CUDA device {', '.join(map(str, bad))}; this process sees "
                          f"{len(gpus)} (indices 0..{len(gpus) - 1})")
    return [gpus[i] for i in wanted]


def slot_name(device: Device, k: int) -> str:
    """``gpu<N>.slot<k>``: the lock file's name, and the last part of the worker name a job is claimed in."""
    return f"{device.lock_name}.slot{k}"


@dataclass
class Slot:
    device: Device
    k: int
    lock: FileLock

    @property
    def name(self) -> str:
        return slot_name(self.device, self.k)

    def release(self) -> None:
        self.lock.release(force=True)


class SlotPool:
    """The slots of ``devices``: ``per_device`` each, taken with non-blocking file locks."""

    def __init__(self, devices: Sequence[Device], per_device: int, lock_dir: str | Path):
        self.devices = list(devices)
        self.per_device = per_device
        self.lock_dir = Path(lock_dir)
        try:
            self.lock_dir.mkdir(parents=True, exist_ok=True)
            probe = self.lock_dir / f".probe-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as e:
            raise DeviceError(f"cannot use the device-slot lock folder {self.lock_dir} ({e.strerror or e}): "
                              "set lock_dir in the runner profile to a writable folder") from None

    @property
    def size(self) -> int:
        return len(self.devices) * self.per_device

    def path(self, device: Device, k: int) -> Path:
        return self.lock_dir / f"{slot_name(device, k)}.lock"

    def acquire(self) -> Slot | None:
        """A free slot or None. Fills every device's first slot before any second one, so jobs
        spread over the GPUs before they are packed."""
        for k in range(self.per_device):
            for device in self.devices:
                # thread_local=False: the slot belongs to this process, whichever thread frees it;
                # a fresh FileLock object per try, so one process never "re-enters" a held slot.
                lock = FileLock(str(self.path(device, k)), timeout=0, thread_local=False)
                try:
                    lock.acquire(timeout=0)
                except Timeout:
                    continue
                return Slot(device, k, lock)
        return None
