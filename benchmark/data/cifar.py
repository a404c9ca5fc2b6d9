"""CIFAR-10/100 readers: the official python-pickle layout and the CIFAR-10 binary layout.

Both give one uint8 tensor N x 3 x 32 x 32 (R, G, B planes, rows top to bottom, as stored) and int64
labels. Files are read whole and viewed with ``np.frombuffer``: the full CIFAR-10 train set loads in
well under a second. Anything wrong with a file (missing, truncated, not a pickle, wrong shape, label
out of range) raises :class:`DataError` naming the file, what was expected and how to fix it.

Layouts (www.cs.toronto.edu/~kriz/cifar.html):
- ``cifar-10-batches-py/data_batch_1..5, test_batch``: pickled dicts, ``data`` uint8 N x 3072 and
  ``labels`` (list of N ints in 0..9).
- ``cifar-100-python/train, test``: same, with ``fine_labels`` (0..99) used here.
- ``cifar-10-batches-bin/data_batch_1..5.bin, test_batch.bin``: 3073-byte records, one label byte
  then 3072 pixel bytes (1024 R, 1024 G, 1024 B).
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from benchmark.errors import UserError

Split = Literal["train", "test"]

CIFAR10_PY = "cifar-10-batches-py"
CIFAR10_BIN = "cifar-10-batches-bin"
CIFAR100_PY = "cifar-100-python"

CIFAR10_PY_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR10_BIN_FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
CIFAR100_PY_FILES = {"train": ["train"], "test": ["test"]}

IMAGE_BYTES = 3 * 32 * 32
RECORD_BYTES = 1 + IMAGE_BYTES  # CIFAR-10 binary: label byte + image


class DataError(UserError):
    """A dataset is missing, damaged or misconfigured. The message says which file and how to fix it."""


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Where datasets live: ``data_dir`` if given, else ``$BENCH_DATA``, else a per-user cache folder
    (``$XDG_CACHE_HOME/bench/data``, default ``~/.cache/bench/data``). The folder need not exist."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get("BENCH_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "bench" / "data"


def _fix_hint(dataset: str, root: Path) -> str:
    folder = CIFAR100_PY if dataset == "cifar100" else CIFAR10_PY
    return (
        f"run `bench data download {dataset} --data-dir {root}`, or point --data-dir / BENCH_DATA at a "
        f"folder holding {folder}/"
    )


# Official pickles hold a dict of lists, bytes and one numpy array: nothing else may be constructed.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes in protocol 2
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def _read_bytes(path: Path, dataset: str, root: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (expected the official {dataset} file). "
                        f"Fix: {_fix_hint(dataset, root)}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror}). Fix: check permissions, "
                        f"or {_fix_hint(dataset, root)}") from None


def _load_pickle(path: Path, dataset: str, root: Path) -> dict:
    raw = _read_bytes(path, dataset, root)
    try:
        obj = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # EOFError, UnpicklingError, ValueError from numpy, ...
        raise DataError(
            f"{path}: not a readable CIFAR pickle ({type(e).__name__}: {e}); the file is truncated or "
            f"corrupt. Fix: delete {path.parent} and {_fix_hint(dataset, root)}"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(obj).__name__}. "
                        f"Fix: {_fix_hint(dataset, root)}")
    # encoding="bytes" gives bytes keys (Python-2 pickles); files written by Python 3 have str keys.
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _check(path: Path, x: np.ndarray, y: np.ndarray, num_classes: int, dataset: str, root: Path) -> None:
    if y.shape[0] != x.shape[0]:
        raise DataError(f"{path}: {x.shape[0]} images but {y.shape[0]} labels. "
                        f"Fix: delete {path.parent} and {_fix_hint(dataset, root)}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{path}: labels must lie in 0..{num_classes - 1}, found {y.min()}..{y.max()} "
                        f"(wrong dataset in this folder?). Fix: {_fix_hint(dataset, root)}")


def _read_pickle_batch(path: Path, label_key: str, num_classes: int, dataset: str, root: Path):
    d = _load_pickle(path, dataset, root)
    if "data" not in d or label_key not in d:
        raise DataError(f"{path}: expected keys 'data' and '{label_key}', found {sorted(d)}. "
                        f"Fix: {_fix_hint(dataset, root)}")
    x = d["data"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != IMAGE_BYTES:
        desc = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise DataError(f"{path}: 'data' must be a uint8 array N x {IMAGE_BYTES}, found {desc}. "
                        f"Fix: {_fix_hint(dataset, root)}")
    try:
        y = np.asarray(d[label_key], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: '{label_key}' is not a list of integers ({e}). "
                        f"Fix: {_fix_hint(dataset, root)}") from None
    _check(path, x, y, num_classes, dataset, root)
    return x, y


def _read_binary_batch(path: Path, root: Path):
    raw = _read_bytes(path, "cifar10", root)
    if len(raw) == 0 or len(raw) % RECORD_BYTES:
        raise DataError(
            f"{path}: {len(raw)} bytes is not a whole number of {RECORD_BYTES}-byte records "
            f"(label byte + {IMAGE_BYTES} pixels); the file is truncated or not CIFAR-10 binary. "
            f"Fix: delete {path.parent} and {_fix_hint('cifar10', root)}"
        )
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    x, y = rec[:, 1:], rec[:, 0].astype(np.int64)
    _check(path, x, y, 10, "cifar10", root)
    return x, y


def _to_torch(xs: list[np.ndarray], ys: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    x = np.concatenate(xs) if len(xs) > 1 else np.array(xs[0], copy=True)  # writable, contiguous
    y = np.concatenate(ys)
    return torch.from_numpy(x.reshape(-1, 3, 32, 32)), torch.from_numpy(y)


def read_cifar10(root: str | os.PathLike, split: Split,
                 layout: Literal["auto", "python", "binary"] = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 ``split`` from ``root``. ``auto`` prefers ``cifar-10-batches-py/`` and falls back to
    ``cifar-10-batches-bin/`` when only the binary layout is complete."""
    root = Path(root)
    _check_split(split)
    py, bn = root / CIFAR10_PY, root / CIFAR10_BIN
    if layout == "auto":
        py_ok = all((py / f).is_file() for f in CIFAR10_PY_FILES[split])
        bin_ok = all((bn / f).is_file() for f in CIFAR10_BIN_FILES[split])
        layout = "binary" if (bin_ok and not py_ok) else "python"
        if not py_ok and not bin_ok and not py.is_dir() and not bn.is_dir():
            raise DataError(f"CIFAR-10 not found in {root}: expected {CIFAR10_PY}/ (python version) "
                            f"or {CIFAR10_BIN}/ (binary version). Fix: {_fix_hint('cifar10', root)}")
    if layout == "python":
        parts = [_read_pickle_batch(py / f, "labels", 10, "cifar10", root) for f in CIFAR10_PY_FILES[split]]
    elif layout == "binary":
        parts = [_read_binary_batch(bn / f, root) for f in CIFAR10_BIN_FILES[split]]
    else:
        raise ValueError(f"layout must be auto, python or binary, not {layout!r}")
    return _to_torch([p[0] for p in parts], [p[1] for p in parts])


def read_cifar100(root: str | os.PathLike, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-100 ``split`` from ``root/cifar-100-python``, with the 100 fine labels."""
    root = Path(root)
    _check_split(split)
    folder = root / CIFAR100_PY
    if not folder.is_dir():
        raise DataError(f"CIFAR-100 not found in {root}: expected {CIFAR100_PY}/ (python version). "
                        f"Fix: {_fix_hint('cifar100', root)}")
    x, y = _read_pickle_batch(folder / CIFAR100_PY_FILES[split][0], "fine_labels", 100, "cifar100", root)
    return _to_torch([x], [y])


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
