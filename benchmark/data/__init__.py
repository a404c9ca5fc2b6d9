"""CIFAR-10/100 readers, download with checksum, synthetic data, device-resident batched augmentation.

Typical use (what ``benchmark.train`` does)::

    splits = load_splits(job.data, data_dir)            # uint8 tensors on the CPU
    train, val, test = make_loaders(splits, job.data, batch_size=128, device="cuda")
    for epoch in range(start_epoch, epochs):
        for x, y in train.epoch(job.seed, epoch):       # same batches after a resume
            ...
"""
from benchmark.data.cifar import DataError, read_cifar10, read_cifar100, resolve_data_dir
from benchmark.data.download import ARCHIVES, download, is_present
from benchmark.data.pipeline import (DeviceLoader, NormStats, augment, draw_epoch, epoch_seed, make_loaders,
                                     normalization_stats)
from benchmark.data.splits import Splits, load_splits, val_split_indices
from benchmark.data.synthetic import make_synthetic

__all__ = [
    "ARCHIVES", "DataError", "DeviceLoader", "NormStats", "Splits", "augment", "download",
    "draw_epoch", "epoch_seed", "is_present", "load_splits", "make_loaders", "make_synthetic",
    "normalization_stats", "read_cifar10", "read_cifar100", "resolve_data_dir", "val_split_indices",
]
