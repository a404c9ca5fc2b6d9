"""What a job ran on: library versions, device, host, and the code's git commit.

Stored as JSON with every job (``Store.set_environment``) so that a number in a report can be traced
to the code and the machine that produced it.
"""
from __future__ import annotations

import functools
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(_PACKAGE_DIR), *args], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_version() -> dict[str, Any]:
    """Commit and dirty flag of the repository the package runs from (None outside git), as they
    were at the first call in this process: the code a process runs is what it imported then, and
    `git status` of the whole checkout costs a second or more. A copy: callers may change it."""
    return dict(_git_version())


@functools.cache
def _git_version() -> dict[str, Any]:
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    status = _git("status", "--porcelain")
    return {"git_commit": commit.strip(), "git_dirty": bool(status.strip()) if status is not None else None}


def environment(device: str | None = None) -> dict[str, Any]:
    """torch / CUDA / cuDNN versions, GPU name (if CUDA), torch CPU threads, host, python, platform, git commit."""
    env: dict[str, Any] = {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "executable": sys.executable,
    }
    try:
        import torch
    except ImportError:
        env.update(torch=None, cuda=None, cudnn=None, gpu=None)
    else:
        env["torch"] = torch.__version__
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        env["gpu"] = None
        env["cpu_threads"] = torch.get_num_threads()  # on a CPU the thread count changes the last bits
        try:
            if torch.cuda.is_available():
                index = torch.device(device).index if device and device.startswith("cuda") else None
                env["gpu"] = torch.cuda.get_device_name(index or 0)
                env["gpu_count"] = torch.cuda.device_count()
        except Exception as e:  # a broken driver must not stop a job from being recorded
            env["gpu"] = f"unavailable: {e}"
    if device is not None:
        env["device"] = device
    env.update(git_version())
    return env
