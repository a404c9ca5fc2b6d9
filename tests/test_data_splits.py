"""Synthetic data and the train / validation / test splits."""
from pathlib import Path

import pytest
import torch

from benchmark.config import DataConfig
from benchmark.data import DataError, load_splits, make_loaders, make_synthetic, normalization_stats
from benchmark.data import val_split_indices

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_synthetic_deterministic():
    x, y = make_synthetic(200, 3)
    x2, y2 = make_synthetic(200, 3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert x.shape == (200, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert set(y.tolist()) == set(range(10))
    assert not torch.equal(make_synthetic(200, 4)[0], x)
    assert 20 < x.float().mean() < 230 and x.float().std() > 20


def test_synthetic_not_trivial():
    """Mean colour alone (nearest class centroid) must not solve it."""
    x, y = make_synthetic(2000, 0)
    f = x.float().mean((2, 3))
    cent = torch.stack([f[y == c].mean(0) for c in range(10)])
    acc = (torch.cdist(f, cent).argmin(1) == y).float().mean()
    assert acc < 0.35


def test_load_splits_synthetic():
    s = load_splits(DataConfig(dataset="synthetic", synthetic_train=300, synthetic_test=100, val_size=50))
    assert (len(s.train_x), len(s.val_x), len(s.test_x)) == (250, 50, 100)
    assert s.num_classes == 10 and s.dataset == "synthetic"
    s2 = load_splits(DataConfig(dataset="synthetic", synthetic_train=300, synthetic_test=100, val_size=50))
    assert torch.equal(s.train_x, s2.train_x) and torch.equal(s.val_x, s2.val_x)


def test_val_split_deterministic_disjoint():
    tr, va = val_split_indices(1000, 100)
    tr2, va2 = val_split_indices(1000, 100)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)
    assert len(va) == 100 and len(set(tr.tolist()) | set(va.tolist())) == 1000
    assert not set(tr.tolist()) & set(va.tolist())
    assert torch.equal(va, va.sort().values) and va.max() > 900 and va.min() < 100  # spread out, not a tail
    with pytest.raises(DataError, match="val_size"):
        val_split_indices(10, 10)


def test_val_split_before_train_size():
    base = dict(dataset="synthetic", synthetic_train=400, synthetic_test=50, val_size=40)
    full = load_splits(DataConfig(**base))
    quick = load_splits(DataConfig(**base, train_size=100, test_size=10))
    assert torch.equal(full.val_x, quick.val_x)  # same validation images for quick runs
    assert torch.equal(quick.train_x, full.train_x[:100]) and torch.equal(quick.test_x, full.test_x[:10])
    with pytest.raises(DataError, match="train_size=500"):
        load_splits(DataConfig(**base, train_size=500))


def test_load_splits_real():
    if not (SHARED / "cifar-10-batches-py").is_dir():
        pytest.skip("no real CIFAR subsets")
    s = load_splits(DataConfig(val_size=500, train_size=1000), SHARED)
    assert (len(s.train_x), len(s.val_x), len(s.test_x)) == (1000, 500, 1017)
    s100 = load_splits(DataConfig(dataset="cifar100"), SHARED)
    assert s100.num_classes == 100 and s100.val_x is None and len(s100.train_x) == 486
    tr, va, te = make_loaders(s, DataConfig(), batch_size=128)
    # normalised with the TRAINING split's mean image (per_pixel_mean: shift = mean / 1)
    assert torch.equal(te._shift, normalization_stats(s.train_x, DataConfig()).mean)
    assert len(tr) == 8 and va is not None and len(te) == 2  # eval batches of 1000


def test_load_splits_env(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_DATA", str(tmp_path))
    with pytest.raises(DataError, match=str(tmp_path)):
        load_splits(DataConfig(dataset="cifar10"))
