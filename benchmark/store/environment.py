"""What a job ran on: library versions, device, host, and the code that ran (``Provenance``: bench's
version, the git commit, and a hash of the uncommitted diff).

Stored as JSON with every job (``Store.set_environment``, which also keeps the diff itself) so that
a number in a report can be traced to the code and the machine that produced it.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass, field
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


MAX_DIFF_BYTES = 256 * 1024  # a diff larger than this is stored cut short (its hash covers all of it)


@dataclass(frozen=True)
class Provenance:
    """The code a process runs: bench's version, the git commit, and the uncommitted change."""

    bench_version: str
    git_commit: str | None  # None outside a git checkout
    git_dirty: bool | None
    diff_sha256: str | None = None  # of ``git diff HEAD`` plus the untracked files, when dirty
    diff: str | None = field(default=None, repr=False)  # that diff, cut at MAX_DIFF_BYTES
    diff_size: int = 0  # bytes of the whole diff

    @property
    def code_version(self) -> str:
        """``0.2.0+g1a2b3c4d5e6f.dirty.89ab01cd``: what a report groups results by."""
        if not self.git_commit:
            return self.bench_version
        dirty = f".dirty.{self.diff_sha256[:8]}" if self.diff_sha256 else ".dirty" if self.git_dirty else ""
        return f"{self.bench_version}+g{self.git_commit[:12]}{dirty}"


@functools.cache
def provenance() -> Provenance:
    """Provenance of the code this process imported, as it was at the first call (a later edit of
    the checkout does not change the code already running; and `git diff` costs a second or more)."""
    try:
        version = importlib.metadata.version("bench")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return Provenance(version, None, None)
    status = _git("status", "--porcelain", "--untracked-files=all")
    dirty = bool(status.strip()) if status is not None else None
    if not dirty:
        return Provenance(version, commit.strip(), dirty)
    # Tracked changes as a patch; untracked files by name and content hash (their text may be large).
    diff = (_git("diff", "HEAD", "--binary") or "").encode()
    for line in (status or "").splitlines():
        if line.startswith("?? "):
            name = line[3:].strip()
            diff += f"untracked {name} {_file_digest(_PACKAGE_DIR / name.strip(chr(34)))}\n".encode()
    return Provenance(version, commit.strip(), dirty, hashlib.sha256(diff).hexdigest(),
                      diff[:MAX_DIFF_BYTES].decode("utf-8", "replace").replace("\0", ""), len(diff))


def _file_digest(path: Path) -> str:
    try:
        size = path.stat().st_size
        return f"sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}" if size <= 16 << 20 else f"{size} bytes"
    except OSError as e:
        return f"unreadable ({e.strerror})"


def git_version() -> dict[str, Any]:
    """The provenance fields a job's environment records (a fresh dict: callers may change it)."""
    p = provenance()
    return {"bench_version": p.bench_version, "git_commit": p.git_commit, "git_dirty": p.git_dirty,
            "git_diff_sha256": p.diff_sha256, "code_version": p.code_version}


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
