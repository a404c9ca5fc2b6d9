"""Train / validation / test splits for a :class:`DataConfig`.

Validation split (He 2016 §4.2 uses 45k/5k): a permutation of the *full* training set drawn from a
fixed generator (seed ``VAL_SPLIT_SEED``, independent of the job seed); its LAST ``val_size`` indices
are the validation images, the others stay in training, both kept in their original file order.
The split is carved BEFORE ``train_size`` truncation, so a quick run with ``train_size=1000`` uses
the same validation images as the full run, and its training images are the first 1000 of the
remaining ones. ``test_size`` keeps the first N test images.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from benchmark.config import NUM_CLASSES, DataConfig
from benchmark.data.cifar import DataError, read_cifar10, read_cifar100, resolve_data_dir
from benchmark.data.synthetic import synthetic_splits

VAL_SPLIT_SEED = 20160101


@dataclass(frozen=True, eq=False)
class Splits:
    train_x: torch.Tensor  # uint8 N x 3 x 32 x 32, on CPU
    train_y: torch.Tensor  # int64 N
    val_x: torch.Tensor | None
    val_y: torch.Tensor | None
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    dataset: str  # cifar10 | cifar100 | synthetic


def val_split_indices(n: int, val_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, val indices) into a training set of ``n`` images, each sorted ascending."""
    if not 0 <= val_size < n:
        raise DataError(f"val_size={val_size} must be at least 0 and smaller than the {n} training "
                        f"images available. Fix: lower data.val_size in the suite.")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))
    cut = n - val_size
    return perm[:cut].sort().values, perm[cut:].sort().values


def load_splits(cfg: DataConfig, data_dir: str | os.PathLike | None = None) -> Splits:
    """Read (or generate) the dataset named by ``cfg`` and cut it into train / val / test."""
    if cfg.dataset == "synthetic":
        (tx, ty), (ex, ey) = synthetic_splits(cfg.synthetic_train, cfg.synthetic_test)
        source = "synthetic"
    else:
        root = resolve_data_dir(data_dir)
        if cfg.dataset not in ("cifar10", "cifar100"):
            raise DataError(f"unknown dataset {cfg.dataset!r}; expected cifar10, cifar100 or synthetic")
        reader = read_cifar10 if cfg.dataset == "cifar10" else read_cifar100
        tx, ty = reader(root, "train")
        ex, ey = reader(root, "test")
        source = str(root)

    val_x = val_y = None
    if cfg.val_size:
        keep, val_idx = val_split_indices(len(tx), cfg.val_size)
        val_x, val_y = tx[val_idx], ty[val_idx]
        tx, ty = tx[keep], ty[keep]

    def first(x, y, n, what):
        if n is None:
            return x, y
        if not 0 < n <= len(x):
            raise DataError(f"data.{what}={n} but only {len(x)} images are available in {source} "
                            f"(after the validation split). Fix: lower data.{what} or use the full dataset.")
        return x[:n], y[:n]

    tx, ty = first(tx, ty, cfg.train_size, "train_size")
    ex, ey = first(ex, ey, cfg.test_size, "test_size")
    return Splits(tx.contiguous(), ty.contiguous(), val_x, val_y, ex.contiguous(), ey.contiguous(),
                  NUM_CLASSES[cfg.dataset], cfg.dataset)
