"""Device-resident augmentation against small per-sample reference implementations."""
import math

import pytest
import torch
import torch.nn.functional as F

from benchmark.config import DataConfig, DataConfigError
from benchmark.data import DeviceLoader, augment, draw_epoch, make_synthetic, normalization_stats
from benchmark.data.pipeline import _inverse_affine, affine_warp

X, Y = make_synthetic(64, 5)
TORCH_PAD = {"zeros": "constant", "edge": "replicate", "reflect": "reflect"}


def reference_crop_flip(img, oy, ox, hflip, vflip, pad, mode):
    """One image, the obvious way: pad (torch F.pad), slice, flip."""
    p = F.pad(img.float().unsqueeze(0), (pad,) * 4, mode=TORCH_PAD[mode]).squeeze(0)
    out = p[:, oy:oy + 32, ox:ox + 32]
    if hflip:
        out = out.flip(-1)
    if vflip:
        out = out.flip(-2)
    return out


def loader(cfg, x=X, y=Y, bs=16, train=True, **kw):
    return DeviceLoader(x, y, cfg, train=train, batch_size=bs, stats=normalization_stats(x, cfg), **kw)


@pytest.mark.parametrize("mode", ["zeros", "edge", "reflect"])
@pytest.mark.parametrize("flip", ["horizontal", "any"])
def test_crop_flip_matches_reference(mode, flip):
    cfg = DataConfig(pad=4, pad_mode=mode, flip=flip)
    plan = draw_epoch(len(X), cfg, seed=3, epoch=1)
    idx = plan.perm
    out = augment(X[idx], plan, idx, cfg)
    assert out.dtype == torch.float32 and out.shape == (64, 3, 32, 32)
    for k in range(len(idx)):
        i = int(idx[k])
        ref = reference_crop_flip(X[i], int(plan.oy[i]), int(plan.ox[i]), bool(plan.hflip[i]), bool(plan.vflip[i]),
                                  4, mode)
        assert torch.equal(out[k], ref), (mode, flip, k)
    # offsets cover the whole 0..2*pad range
    assert set(plan.oy.tolist()) == set(range(9))


def test_padding_values():
    img = torch.full((1, 3, 32, 32), 7, dtype=torch.uint8)
    img[..., 0, :] = 200  # top row
    zero = torch.zeros(1, dtype=torch.long)
    from benchmark.data.pipeline import crop_flip
    f = torch.zeros(1, dtype=torch.bool)
    z = crop_flip(img, zero, zero, f, f, 4, "zeros")  # top-left corner of the padded image
    assert (z[..., :4, :] == 0).all() and (z[..., :, :4] == 0).all() and (z[..., 4, 4:] == 200).all()
    e = crop_flip(img, zero, zero, f, f, 4, "edge")
    assert (e[..., :5, :] == 200).all() and (e[..., 5:, :] == 7).all()
    r = crop_flip(img, zero, zero, f, f, 4, "reflect")
    assert (r[..., 4, :] == 200).all() and (r[..., :4, :] == 7).all()  # the border row is not repeated


def test_horizontal_flip_mask():
    cfg = DataConfig(pad=0, flip="horizontal", flip_p=0.5)
    x, y = make_synthetic(400, 1)
    plan = draw_epoch(400, cfg, 1, 0)
    idx = torch.arange(400)
    out = augment(x, plan, idx, cfg)
    assert torch.equal(out[plan.hflip], x[plan.hflip].flip(-1).float())
    assert torch.equal(out[~plan.hflip], x[~plan.hflip].float())
    assert not plan.vflip.any() and 150 < int(plan.hflip.sum()) < 250


def test_any_flip_includes_vertical_and_both():
    cfg = DataConfig(pad=0, flip="any", flip_p=0.5)
    plan = draw_epoch(3000, cfg, 0, 0)
    h, v = plan.hflip, plan.vflip
    counts = [int((h & ~v).sum()), int((~h & v).sum()), int((h & v).sum()), int((~h & ~v).sum())]
    assert all(400 < c < 600 for c in counts[:3]) and 1350 < counts[3] < 1650, counts
    x = X[:8]
    out = augment(x, plan, torch.arange(8), cfg)
    for k in range(8):
        ref = x[k].flip(-1) if h[k] else x[k]
        ref = ref.flip(-2) if v[k] else ref
        assert torch.equal(out[k], ref.float())


def test_flip_none_and_p1():
    assert not draw_epoch(100, DataConfig(flip="none"), 0, 0).hflip.any()
    assert draw_epoch(100, DataConfig(flip="horizontal", flip_p=1.0), 0, 0).hflip.all()


def test_affine_zero_limits_is_identity():
    cfg = DataConfig(pad=0, flip="none", affine_p=1.0)  # limits all 0
    plan = draw_epoch(len(X), cfg, 0, 0)
    assert plan.theta is None
    assert torch.equal(augment(X, plan, torch.arange(len(X)), cfg), X.float())
    theta = _inverse_affine(torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64),
                            torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
    assert torch.allclose(affine_warp(X[:4].float(), theta), X[:4].float(), atol=1e-3)


def test_affine_shift_and_rotation_semantics():
    x = X[:2].float()
    z = torch.zeros(2, dtype=torch.float64)
    # shift right by 2 pixels (dx = 2/32 of the width); the left border is reflect-101
    out = affine_warp(x, _inverse_affine(z, z + 1, z + 2 / 32, z))
    assert torch.allclose(out[..., 2:], x[..., :30], atol=1e-3)
    assert torch.allclose(out[..., 0], x[..., 2], atol=1e-3) and torch.allclose(out[..., 1], x[..., 1], atol=1e-3)
    # +90 degrees is counter-clockwise, as OpenCV getRotationMatrix2D
    out = affine_warp(x, _inverse_affine(z + 90, z + 1, z, z))
    assert torch.allclose(out, torch.rot90(x, 1, (-2, -1)), atol=1e-3)
    # scale 2 about the centre (15.5, 15.5): output pixel 0 samples source 15.5 - 15.5 / 2 = 7.75
    out = affine_warp(x, _inverse_affine(z, z + 2, z, z))
    w = torch.tensor([0.25, 0.75])
    ref = torch.einsum("nchw,h,w->nc", x[..., 7:9, 7:9], w, w)
    assert torch.allclose(out[..., 0, 0], ref, atol=1e-2)


def test_affine_probability_and_ranges():
    cfg = DataConfig(pad=0, flip="none", shift=0.1, scale=0.1, rotate=15, affine_p=0.5)
    plan = draw_epoch(1000, cfg, 0, 0)
    assert 400 < int(plan.affine.sum()) < 600
    out = augment(X, draw_epoch(len(X), cfg, 0, 0), torch.arange(len(X)), cfg)
    p = draw_epoch(len(X), cfg, 0, 0).affine
    assert torch.equal(out[~p], X[~p].float()) and not torch.allclose(out[p], X[p].float())
    assert out.min() >= -1e-3 and out.max() <= 255 + 1e-3


def test_normalisation():
    x, y = make_synthetic(300, 2)
    cfg = DataConfig(normalize="per_pixel_mean")
    ev = loader(cfg, x, y, bs=64, train=False)
    z = torch.cat([b for b, _ in ev])
    assert z.mean(0).abs().max() < 1e-5  # per-pixel mean of the normalised train set is 0
    assert torch.allclose(z + (x / 255.).mean(0), x / 255., atol=1e-6)  # and nothing else changed
    cfg = DataConfig(normalize="channel_mean_std")
    z = torch.cat([b for b, _ in loader(cfg, x, y, train=False)])
    assert z.mean((0, 2, 3)).abs().max() < 1e-4 and (z.std((0, 2, 3)) - 1).abs().max() < 1e-3
    cfg = DataConfig(normalize="channel_mean", mean=(125 / 255, 123 / 255, 114 / 255))
    z = torch.cat([b for b, _ in loader(cfg, x, y, train=False)])
    assert torch.allclose(z, x / 255. - torch.tensor([125, 123, 114]).view(3, 1, 1) / 255., atol=1e-6)
    cfg = DataConfig(normalize="channel_mean_std", mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    z = torch.cat([b for b, _ in loader(cfg, x, y, train=False)])
    assert torch.allclose(z, (x / 255. - 0.5) / torch.tensor([0.25, 0.5, 1.0]).view(3, 1, 1), atol=1e-5)


def test_normalisation_misconfig():
    # The rules live in config.validate_data; the pipeline still applies them to a config built in code.
    with pytest.raises(DataConfigError, match="per_pixel_mean"):
        normalization_stats(X, DataConfig(normalize="per_pixel_mean", mean=(0.5, 0.5, 0.5)))
    with pytest.raises(DataConfigError, match="3 values"):
        normalization_stats(X, DataConfig(normalize="channel_mean", mean=(0.5,)))
    with pytest.raises(DataConfigError, match="std"):
        normalization_stats(X, DataConfig(normalize="channel_mean", std=(0.5, 0.5, 0.5)))


def _batches(ld, seed, epoch, **kw):
    return [(x.clone(), y.clone()) for x, y in ld.epoch(seed, epoch, **kw)]


def test_epochs_deterministic_and_complete():
    ids = torch.arange(len(X))  # labels = image ids
    cfg = DataConfig(flip="any", pad_mode="reflect", shift=0.1, scale=0.1, rotate=15, affine_p=0.5)
    ld = loader(cfg, X, ids, bs=24)
    assert len(ld) == 3 == math.ceil(64 / 24)
    a, b = _batches(ld, 7, 2), _batches(loader(cfg, X, ids, bs=24), 7, 2)
    assert [len(y) for _, y in a] == [24, 24, 16]  # last partial batch kept
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert sorted(torch.cat([y for _, y in a]).tolist()) == list(range(64))  # each image once
    for other in (_batches(ld, 7, 3), _batches(ld, 8, 2)):
        assert not torch.equal(torch.cat([y for _, y in other]), torch.cat([y for _, y in a]))
    # chunking gives the same batches
    small = loader(cfg, X, ids, bs=24, chunk_size=1)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, _batches(small, 7, 2)))


def test_eval_loader_and_channels_last():
    cfg = DataConfig(normalize="channel_mean", mean=(0, 0, 0))
    ev = loader(cfg, bs=50, train=False, channels_last=True)
    out = list(ev)
    assert [len(y) for _, y in out] == [50, 14]
    assert out[0][0].is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(torch.cat([b for b, _ in out]), X / 255.) and torch.equal(torch.cat([y for _, y in out]), Y)
    with pytest.raises(TypeError):
        iter(loader(cfg))
