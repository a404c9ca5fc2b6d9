"""Device-resident batched augmentation (DESIGN.md "Speed").

A split lives as ONE uint8 tensor N x 3 x 32 x 32 on the training device. Each training epoch:

1. ``draw_epoch`` draws, on a CPU ``torch.Generator`` seeded from (job seed, epoch), a permutation
   and every image's augmentation parameters (crop offset, flips, affine jitter). Drawing on the CPU
   makes the batches identical on every device, and the seed depends only on (seed, epoch), so epoch
   k is the same whether or not the run was interrupted and resumed.
2. Images are taken in permuted order in chunks (``chunk_size``, bounding memory), and each chunk is
   augmented with batched tensor ops, no per-sample Python loop:
   - pad + random crop + flips in one ``gather`` of pixel indices on the uint8 images. Padding:
     ``zeros`` (black, value 0 before normalisation, as torchvision ``Pad`` before ``Normalize``),
     ``edge`` (replicate the border pixel), ``reflect`` (mirror without repeating the border, numpy /
     torch "reflect"). Crop offsets are uniform in 0..2*pad per axis (torchvision ``RandomCrop``).
     The flip is applied to the crop; flipping the padded image first gives the same distribution.
   - flips: ``horizontal`` flips with probability ``flip_p``; ``any`` is albumentations ``Flip``:
     with probability ``flip_p`` one of horizontal, vertical or both, chosen uniformly.
   - ShiftScaleRotate (albumentations semantics) with probability ``affine_p``: angle uniform in
     +-rotate degrees, scale uniform in 1 +- scale, shift uniform in +-shift of the image size per
     axis, about the image centre; ``affine_grid`` + bilinear ``grid_sample`` with
     ``padding_mode="reflection", align_corners=True``, which mirrors about the border pixel
     centres: OpenCV BORDER_REFLECT_101, the albumentations default. ``affine_arithmetic =
     "opencv_uint8"`` also takes cv2.warpAffine's uint8 arithmetic: sampling positions rounded to
     1/32 pixel (INTER_BITS = 5) and the result rounded half up to an integer level; the default,
     "float", keeps exact positions and unrounded values.
3. Normalise (below) and yield mini-batches: consecutive slices of the permutation. The last partial
   batch is kept (PyTorch ``DataLoader`` default, ``drop_last=False``).

Normalisation happens AFTER the geometric augmentation, on the 0..1 scale (``x / 255``), unless
``pad_order = "after_normalize"`` (normalise the stored images, then pad: zeros are the mean colour)
or ``pixel_scale = "byte"`` (the 0..255 scale, ``x - 255 * mean``):
- ``per_pixel_mean``: subtract the mean image (3 x 32 x 32) of the training split (He 2016 §4.2),
  no division; the mean image is aligned with the output crop.
- ``channel_mean``: subtract per-channel constants (``cfg.mean``, e.g. techxzen (125,123,114)/255),
  or the training split's channel means when ``cfg.mean`` is None.
- ``channel_mean_std``: ``(x - mean) / std`` with ``cfg.mean``/``cfg.std`` or training-split values.

Evaluation loaders: no augmentation, file order, large batches.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from benchmark.config import DataConfig, validate_data
from benchmark.data.cifar import DataError

H = W = 32


# ----------------------------------------------------------------------------------------------
# Normalisation statistics (training split only).

@dataclass(frozen=True, eq=False)
class NormStats:
    """What is subtracted and divided, on the 0..1 scale. ``mean`` is 3x32x32 or 3x1x1; ``std`` 3x1x1."""

    kind: str
    mean: torch.Tensor
    std: torch.Tensor

    def to(self, device) -> "NormStats":
        return NormStats(self.kind, self.mean.to(device), self.std.to(device))


def _channel_moments(x: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel sum and sum of squares in float64, chunked so a 50k set never becomes one float copy."""
    s = torch.zeros(3, H, W, dtype=torch.float64, device=x.device)
    s2 = torch.zeros_like(s)
    for part in x.split(chunk):
        p = part.to(torch.float64)
        s += p.sum(0)
        s2 += (p * p).sum(0)
    return s, s2


def _triple(v) -> torch.Tensor:
    return torch.tensor([float(a) for a in v], dtype=torch.float32).view(3, 1, 1)


def normalization_stats(train_x: torch.Tensor, cfg: DataConfig) -> NormStats:
    """Mean image or channel statistics from the TRAINING split (never the test set)."""
    if train_x.dtype != torch.uint8 or train_x.shape[1:] != (3, H, W):
        raise ValueError(f"expected uint8 N x 3 x 32 x 32 images, got {train_x.dtype} {tuple(train_x.shape)}")
    # Every loader goes through here: a config that bypassed the suite parser still gets its rules.
    validate_data(cfg)
    n = train_x.shape[0]
    kind = cfg.normalize
    need_data = kind == "per_pixel_mean" or cfg.mean is None or (kind == "channel_mean_std" and cfg.std is None)
    if need_data:
        if n == 0:
            raise DataError("cannot compute normalisation statistics from an empty training split")
        s, s2 = _channel_moments(train_x)
    ones = torch.ones(3, 1, 1)
    if kind == "per_pixel_mean":
        return NormStats(kind, (s / n / 255).float(), ones)
    if cfg.mean is not None:
        mean = _triple(cfg.mean)
    else:
        mean = (s.sum((1, 2)) / (n * H * W) / 255).float().view(3, 1, 1)
    if kind == "channel_mean":
        return NormStats(kind, mean, ones)
    if kind != "channel_mean_std":
        raise DataError(f"unknown data.normalize {kind!r}")
    if cfg.std is not None:
        std = _triple(cfg.std)
    else:
        m = s.sum((1, 2)) / (n * H * W)
        var = s2.sum((1, 2)) / (n * H * W) - m * m  # population variance, 0..255 scale
        std = (var.clamp_min(0).sqrt() / 255).float().view(3, 1, 1)
    if (std <= 0).any():
        raise DataError(f"data.std must be positive, got {std.flatten().tolist()}")
    return NormStats(kind, mean, std)


# ----------------------------------------------------------------------------------------------
# Per-epoch randomness.

def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed that depends only on (job seed, epoch): the key to exact resume."""
    h = hashlib.sha256(f"bench.data:{int(seed)}:{int(epoch)}".encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


@dataclass(frozen=True, eq=False)
class EpochPlan:
    """Everything random about one epoch, per image of the split (indexed by image, not position)."""

    perm: torch.Tensor  # order in which images are served
    oy: torch.Tensor  # crop offsets in 0..2*pad
    ox: torch.Tensor
    hflip: torch.Tensor  # bool
    vflip: torch.Tensor  # bool
    theta: torch.Tensor | None  # N x 2 x 3 inverse affine in normalised coords, None when disabled
    affine: torch.Tensor  # bool: ShiftScaleRotate applied

    def to(self, device) -> "EpochPlan":
        t = None if self.theta is None else self.theta.to(device)
        return EpochPlan(self.perm.to(device), self.oy.to(device), self.ox.to(device),
                         self.hflip.to(device), self.vflip.to(device), t, self.affine.to(device))


def draw_epoch(n: int, cfg: DataConfig, seed: int, epoch: int) -> EpochPlan:
    """Draw the epoch's permutation and augmentation parameters on the CPU.

    The draws always happen in this order and all of them happen whatever the config, so switching
    one augmentation on or off never changes the others' values for the same (seed, epoch).
    """
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    perm = torch.randperm(n, generator=g)
    oy = torch.randint(0, 2 * cfg.pad + 1, (n,), generator=g)
    ox = torch.randint(0, 2 * cfg.pad + 1, (n,), generator=g)
    flip_u = torch.rand(n, generator=g)
    flip_kind = torch.randint(0, 3, (n,), generator=g)  # 0 horizontal, 1 vertical, 2 both
    aff_u = torch.rand(n, generator=g)
    aff = torch.rand(n, 4, generator=g, dtype=torch.float64) * 2 - 1  # angle, scale, dx, dy in [-1, 1)

    do_flip = flip_u < cfg.flip_p
    if cfg.flip == "none":
        hflip = vflip = torch.zeros(n, dtype=torch.bool)
    elif cfg.flip == "horizontal":
        hflip, vflip = do_flip, torch.zeros(n, dtype=torch.bool)
    elif cfg.flip == "any":
        hflip = do_flip & (flip_kind != 1)
        vflip = do_flip & (flip_kind != 0)
    else:
        raise DataError(f"unknown data.flip {cfg.flip!r}; expected none, horizontal or any")

    theta = None
    affine = aff_u < cfg.affine_p
    if affine.any() and (cfg.shift or cfg.scale or cfg.rotate):
        theta = _inverse_affine(aff[:, 0] * cfg.rotate, 1 + aff[:, 1] * cfg.scale,
                                aff[:, 2] * cfg.shift, aff[:, 3] * cfg.shift)
    else:
        affine = torch.zeros(n, dtype=torch.bool)
    return EpochPlan(perm, oy, ox, hflip, vflip, theta, affine)


def _inverse_affine(angle_deg, scale, dx, dy) -> torch.Tensor:
    """``affine_grid`` thetas (align_corners=True) for OpenCV ``getRotationMatrix2D(centre, angle,
    scale)`` plus a shift of (dx*W, dy*H) pixels, the albumentations ShiftScaleRotate warp.

    Forward map in pixels: dst = A (src - c) + c + s, A = scale * [[cos, sin], [-sin, cos]].
    In coordinates normalised about the centre (g = (p - c) / k, k = (W-1)/2) the inverse is
    src_g = A^-1 dst_g - A^-1 s / k.
    """
    a = torch.deg2rad(angle_deg)
    cos, sin = torch.cos(a) / scale, torch.sin(a) / scale
    inv = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # N x 2 x 2
    k = (W - 1) / 2
    shift = torch.stack([dx * W, dy * H], -1) / k  # N x 2
    t = -(inv @ shift.unsqueeze(-1))  # N x 2 x 1
    return torch.cat([inv, t], -1).float()


# ----------------------------------------------------------------------------------------------
# Batched augmentation.

def _reflect101(i: torch.Tensor) -> torch.Tensor:
    """Mirror indices about the border pixels without repeating them (OpenCV BORDER_REFLECT_101,
    numpy "reflect"): ... 2 1 | 0 1 ... 31 | 30 29 ...; valid for overshoots up to 31."""
    i = i.abs()  # -k -> k
    return torch.where(i > H - 1, 2 * (H - 1) - i, i)  # 31 + k -> 31 - k


def _source_index(offset: torch.Tensor, flip: torch.Tensor, pad: int, mode: str):
    """Source row (or column) of each output row, N x 32, and whether it lies inside the image."""
    pos = torch.arange(H, device=offset.device)
    pos = torch.where(flip.unsqueeze(1), (H - 1) - pos, pos)  # flip the crop
    src = pos + offset.unsqueeze(1) - pad  # N x 32
    valid = (src >= 0) & (src < H)
    if mode == "reflect":
        src = _reflect101(src)
    return src.clamp(0, H - 1), valid  # "edge" = clamp; "zeros" masks with ``valid`` later


def crop_flip(x: torch.Tensor, oy, ox, hflip, vflip, pad: int, mode: str) -> torch.Tensor:
    """Pad by ``pad`` (``mode``), crop 32x32 at (oy, ox) of the padded image, then flip. uint8 in and
    out (or float in and out, for images normalised before padding: ``pad_order``).

    One ``gather`` on flattened pixels; no padded copy is materialised.
    Reflect padding needs ``pad <= 31``; ``validate_data`` enforces it once, not per chunk.
    """
    n = x.shape[0]
    rows, rvalid = _source_index(oy, vflip, pad, mode)
    cols, cvalid = _source_index(ox, hflip, pad, mode)
    idx = (rows.unsqueeze(2) * W + cols.unsqueeze(1)).view(n, 1, H * W).expand(n, x.shape[1], H * W)
    out = torch.gather(x.reshape(n, x.shape[1], H * W), 2, idx).view(n, x.shape[1], H, W)
    if mode == "zeros" and pad > 0:
        out = out * (rvalid.unsqueeze(2) & cvalid.unsqueeze(1)).unsqueeze(1).to(out.dtype)
    return out


def affine_warp(x: torch.Tensor, theta: torch.Tensor, arithmetic: str = "float") -> torch.Tensor:
    """Bilinear warp of float images with reflect-101 borders (see module docstring). ``arithmetic =
    "opencv_uint8"``: x holds 0..255 levels, warped as cv2.warpAffine warps a uint8 image."""
    if arithmetic == "opencv_uint8":
        return _opencv_warp_uint8(x, theta)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def _opencv_warp_uint8(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """cv2.warpAffine(INTER_LINEAR, BORDER_REFLECT_101) of uint8 images, in OpenCV's fixed-point
    arithmetic (imgproc/src/imgwarp.cpp WarpAffineInvoker + remapBilinear, opencv 2.x-4.10; 4.11 moved
    to float kernels): the inverse map in 1/1024 pixel (AB_BITS = 10), rounded term by term, plus half
    a step, shifted to 1/32 pixel (INTER_BITS = 5); weights (32 - f)(32 - g)... / 1024, exact; the sum
    rounded half up. ``x`` holds integer levels as floats, so every sum is exact in float32."""
    n, c = x.shape[:2]
    t = theta.double()
    a = t[:, :, :2]  # pixel-space inverse map src = a @ dst + b (normalised g = p / k - 1)
    k = (W - 1) / 2
    b = k * (t[:, :, 2] + 1 - a.sum(-1))
    pos = torch.arange(W, dtype=torch.float64, device=x.device)

    def fixed(row: int) -> torch.Tensor:  # n x H x W source coordinate in 1/32 pixel
        per_y = torch.round((a[:, row, 1, None] * pos + b[:, row, None]) * 1024)  # n x H
        per_x = torch.round(a[:, row, 0, None] * pos * 1024)  # n x W
        return (per_y[:, :, None] + per_x[:, None, :] + 16).long() >> 5

    sx, sy = fixed(0), fixed(1)
    ix, fx, iy, fy = sx >> 5, (sx & 31).to(x.dtype), sy >> 5, (sy & 31).to(x.dtype)

    flat = x.reshape(n, c, H * W)
    acc = torch.zeros_like(x)
    for dy, wy in ((0, 32 - fy), (1, fy)):
        for dx, wx in ((0, 32 - fx), (1, fx)):
            idx = (_reflect101(iy + dy).clamp(0, H - 1) * W + _reflect101(ix + dx).clamp(0, W - 1)).reshape(n, 1, H * W).expand(n, c, H * W)
            acc += torch.gather(flat, 2, idx).view(n, c, H, W) * (wy * wx).unsqueeze(1)
    return acc.add_(512).div_(1024).floor_()  # (32 * sum + 2^14) >> 15, with weights summing to 1024


def augment(x: torch.Tensor, plan: EpochPlan, idx: torch.Tensor, cfg: DataConfig,
            warp: torch.Tensor | None = None) -> torch.Tensor:
    """Augment images ``x`` (uint8, the split's images ``idx``) with their planned parameters.

    ``warp``: positions in ``idx`` to warp, when the caller already knows them (the loader finds
    them once per epoch on the CPU); None finds them here. Returns float32 on the 0..255 scale
    (not yet normalised), or float normalised images in and out (``pad_order = "after_normalize"``).
    """
    # Decided from the config, not from the plan: ``plan.hflip.any()`` would sync with the device.
    if cfg.pad or cfg.flip != "none":
        x = crop_flip(x, plan.oy[idx], plan.ox[idx], plan.hflip[idx], plan.vflip[idx], cfg.pad, cfg.pad_mode)
    x = x.float()
    if plan.theta is not None:
        sel = plan.affine[idx].nonzero().squeeze(1) if warp is None else warp
        if len(sel):
            x[sel] = affine_warp(x[sel], plan.theta[idx[sel]], cfg.affine_arithmetic)
    return x


# ----------------------------------------------------------------------------------------------
# Loader.

class DeviceLoader:
    """Mini-batches from one device-resident uint8 split.

    ``train=True``: :meth:`epoch` yields augmented, shuffled batches that depend only on
    (seed, epoch). ``train=False``: no augmentation, file order (the seed and epoch are ignored).
    Batches are float32 normalised N x 3 x 32 x 32 (channels_last if asked) and int64 labels.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, cfg: DataConfig, *, train: bool, batch_size: int,
                 device: torch.device | str = "cpu", stats: NormStats, channels_last: bool = False,
                 chunk_size: int = 8192):
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1:] != (3, H, W):
            raise ValueError(f"expected uint8 N x 3 x 32 x 32 images, got {x.dtype} {tuple(x.shape)}")
        if len(x) != len(y):
            raise ValueError(f"{len(x)} images but {len(y)} labels")
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self.device = torch.device(device)
        self.x = x.to(self.device).contiguous()
        self.y = y.to(self.device, torch.int64)
        self.cfg, self.train, self.batch_size = cfg, train, batch_size
        self.channels_last = channels_last
        # Chunks are whole batches so chunking never changes a batch.
        self.chunk_size = max(batch_size, chunk_size // batch_size * batch_size)
        stats = stats.to(self.device)
        # x * scale - shift == (x/255 - mean) / std; pixel_scale "byte" keeps the 0..255 scale:
        # (x - 255 mean) / std (techxzen run.py: ToTensor, mul(255), Normalize((125,123,114), 1)).
        byte = 255.0 if cfg.pixel_scale == "byte" else 1.0
        self._scale = (byte / (255.0 * stats.std)).float()
        self._shift = (byte * stats.mean / stats.std).float()
        # pad_order "after_normalize": normalise the stored images first, so zero padding is the mean
        # colour (and the per-pixel mean is subtracted at each pixel's source position, as
        # fb.resnet.torch normalises the data set before RandomCrop pads it).
        self._normalize_first = cfg.pad_order == "after_normalize"

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def _finish(self, xf: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        if normalize:
            xf = xf.mul_(self._scale).sub_(self._shift)
        if self.channels_last:
            xf = xf.contiguous(memory_format=torch.channels_last)
        return xf

    def epoch(self, seed: int = 0, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of epoch ``epoch`` (resume is per epoch: the batches depend only on (seed, epoch))."""
        n, bs = len(self.x), self.batch_size
        if not self.train:
            for i in range(0, n, bs):
                yield self._finish(self.x[i:i + bs].float()), self.y[i:i + bs]
            return
        cpu_plan = draw_epoch(n, self.cfg, seed, epoch)
        # Serving positions of the warped images, found once on the CPU: a per-chunk ``nonzero`` on the
        # device would wait for the GPU every chunk.
        warp_pos = cpu_plan.affine[cpu_plan.perm].nonzero().squeeze(1)
        plan = cpu_plan.to(self.device)
        for c in range(0, n, self.chunk_size):
            idx = plan.perm[c:c + self.chunk_size]
            lo, hi = torch.searchsorted(warp_pos, torch.tensor([c, c + len(idx)])).tolist()
            warp = (warp_pos[lo:hi] - c).to(self.device, non_blocking=True)
            if self._normalize_first:
                xn = self.x[idx].float().mul_(self._scale).sub_(self._shift)
                xc = self._finish(augment(xn, plan, idx, self.cfg, warp), normalize=False)
            else:
                xc = self._finish(augment(self.x[idx], plan, idx, self.cfg, warp))
            yc = self.y[idx]
            for i in range(0, len(idx), bs):
                yield xc[i:i + bs], yc[i:i + bs]

    def __iter__(self):
        if self.train:
            raise TypeError("a training DeviceLoader needs a seed and epoch: use loader.epoch(seed, epoch)")
        return self.epoch()


def make_loaders(splits, cfg: DataConfig, *, batch_size: int, eval_batch_size: int = 1000,
                 device: torch.device | str = "cpu", channels_last: bool = False):
    """(train, val or None, test): loaders for a :class:`~benchmark.data.splits.Splits`,
    normalised with statistics of its training split."""
    stats = normalization_stats(splits.train_x, cfg)
    kw = dict(device=device, stats=stats, channels_last=channels_last)
    train = DeviceLoader(splits.train_x, splits.train_y, cfg, train=True, batch_size=batch_size, **kw)
    val = None
    if splits.val_x is not None:
        val = DeviceLoader(splits.val_x, splits.val_y, cfg, train=False, batch_size=eval_batch_size, **kw)
    test = DeviceLoader(splits.test_x, splits.test_y, cfg, train=False, batch_size=eval_batch_size, **kw)
    return train, val, test
