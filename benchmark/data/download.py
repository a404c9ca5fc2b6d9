"""Download the official CIFAR archives, check their MD5, and extract them safely.

- Base URL: argument, else ``$BENCH_DATA_URL``, else the official https://www.cs.toronto.edu/~kriz/.
- The archive streams to a temporary file next to the data (with an optional progress callback or a
  rich progress bar); a checksum mismatch removes it and raises :class:`DataError`.
- Extraction refuses absolute paths, ``..`` components, links that point outside the archive's folder,
  and devices / FIFOs (our own check on every member, plus ``tarfile``'s ``filter="data"`` where the
  Python version has it), extracts into a temporary folder and moves the dataset folder into place
  with one atomic rename.
- A file lock per dataset (``<data dir>/.<name>.lock``) serialises concurrent downloads: the second
  process waits, then finds the folder in place and returns.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from benchmark.data.cifar import CIFAR10_BIN, CIFAR10_PY, CIFAR100_PY, DataError, resolve_data_dir

DEFAULT_BASE_URL = "https://www.cs.toronto.edu/~kriz/"


@dataclass(frozen=True)
class Archive:
    filename: str
    md5: str
    folder: str  # the top-level folder the archive holds
    files: tuple[str, ...]  # files that must exist after extraction


ARCHIVES: dict[str, Archive] = {
    "cifar10": Archive("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", CIFAR10_PY,
                       tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)),
    "cifar100": Archive("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", CIFAR100_PY,
                        ("train", "test")),
    "cifar10-binary": Archive("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530", CIFAR10_BIN,
                              tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)),
}

Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)


def is_present(name: str, data_dir=None) -> bool:
    a = _archive(name)
    folder = resolve_data_dir(data_dir) / a.folder
    return all((folder / f).is_file() for f in a.files)


def _archive(name: str) -> Archive:
    if name not in ARCHIVES:
        raise DataError(f"unknown dataset {name!r}: expected one of {', '.join(ARCHIVES)}")
    return ARCHIVES[name]


def download(name: str, data_dir=None, *, base_url: str | None = None, md5: str | None = None,
             force: bool = False, progress: bool | Progress = False, timeout: float = 60.0) -> Path:
    """Fetch and extract dataset ``name`` (cifar10, cifar100, cifar10-binary) into the data folder.

    Returns the dataset folder. Does nothing if it is already complete (unless ``force``). ``md5``
    overrides the official checksum (tests serve small archives). ``progress``: True for a rich
    progress bar, or a callable ``(done, total)``.
    """
    a = _archive(name)
    root = resolve_data_dir(data_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create data folder {root} ({e.strerror}). Fix: choose another --data-dir "
                        f"or BENCH_DATA") from None
    base = base_url or os.environ.get("BENCH_DATA_URL") or DEFAULT_BASE_URL
    url = base.rstrip("/") + "/" + a.filename
    with FileLock(str(root / f".{name}.lock")):
        if not force and is_present(name, root):
            return root / a.folder
        fd, tmp = tempfile.mkstemp(prefix=f".{a.filename}.", suffix=".part", dir=root)
        try:
            with os.fdopen(fd, "wb") as f:
                digest = _fetch(url, f, progress, timeout)
            expected = (md5 or a.md5).lower()
            if digest != expected:
                raise DataError(f"{url}: MD5 {digest} does not match the expected {expected}; the download "
                                f"is corrupt or not the official file. It was deleted; try again, or fetch "
                                f"{a.filename} by hand and extract it into {root}.")
            _extract(Path(tmp), root, a)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return root / a.folder


def _fetch(url: str, out, progress: bool | Progress, timeout: float) -> str:
    h = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            total = r.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            with _progress(progress, url, total) as tick:
                done = 0
                while chunk := r.read(1 << 20):
                    out.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    tick(done, total)
    except urllib.error.HTTPError as e:
        raise DataError(f"{url}: HTTP {e.code} {e.reason}. Fix: check --base-url / BENCH_DATA_URL, or "
                        f"download the archive by hand from {DEFAULT_BASE_URL}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(f"{url}: download failed ({reason}). Fix: check the network or BENCH_DATA_URL, or "
                        f"download the archive by hand from {DEFAULT_BASE_URL} and extract it into the "
                        f"data folder") from None
    return h.hexdigest()


class _progress:
    """Context manager giving a ``tick(done, total)`` function: a callback, a rich bar, or nothing."""

    def __init__(self, progress, url: str, total: int | None):
        self.progress, self.url, self.total, self.bar = progress, url, total, None

    def __enter__(self):
        if callable(self.progress):
            return self.progress
        if not self.progress:
            return lambda done, total: None
        from rich.progress import (BarColumn, DownloadColumn, Progress, TimeRemainingColumn,
                                   TransferSpeedColumn)
        self.bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), TimeRemainingColumn())
        self.bar.__enter__()
        task = self.bar.add_task(posixpath.basename(self.url), total=self.total)
        return lambda done, total: self.bar.update(task, completed=done)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False


def check_members(members: list[tarfile.TarInfo], archive: str) -> None:
    """Refuse any member that could write outside the extraction folder."""
    for m in members:
        name = m.name
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
            raise DataError(f"{archive}: unsafe member path {name!r} (absolute or with '..'); "
                            f"refusing to extract. The archive is not the official one.")
        if m.issym() or m.islnk():
            target = m.linkname
            # symlinks resolve relative to the member's folder, hard links relative to the archive root
            base = posixpath.dirname(name) if m.issym() else ""
            resolved = posixpath.normpath(posixpath.join(base, target))
            if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
                raise DataError(f"{archive}: link {name!r} -> {target!r} points outside the archive; "
                                f"refusing to extract. The archive is not the official one.")
        elif not (m.isfile() or m.isdir()):
            raise DataError(f"{archive}: member {name!r} is a device, FIFO or other special file; "
                            f"refusing to extract. The archive is not the official one.")


def _extract(archive: Path, root: Path, a: Archive) -> None:
    tmpdir = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                check_members(members, a.filename)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmpdir, members=members, filter="data")
                else:  # pragma: no cover - Python < 3.11.4
                    tar.extractall(tmpdir, members=members)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataError(f"{a.filename}: cannot extract ({e}); the archive is damaged. "
                            f"Delete it and download again.") from None
        src = tmpdir / a.folder
        if src.is_symlink() or any((src / f).is_symlink() for f in a.files):
            # a link would be moved into place as a link, pointing into the folder deleted below
            raise DataError(f"{a.filename}: {a.folder} or its files are symbolic links in the archive; "
                            "it is not the official archive.")
        missing = [f for f in a.files if not (src / f).is_file()]
        if missing:
            raise DataError(f"{a.filename}: the archive lacks {a.folder}/{missing[0]} "
                            f"(expected {', '.join(a.files)}); it is not the official archive.")
        dest = root / a.folder
        if dest.exists():  # incomplete leftover or force: move aside, then replace atomically
            old = tmpdir / ".old"
            os.replace(dest, old)
        os.replace(src, dest)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
