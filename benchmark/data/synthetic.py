"""A deterministic, CIFAR-shaped synthetic dataset for smoke runs and tests (no download needed).

Ten classes = five shapes x two colour families. Each image is a noisy random background with one
shape of the class (random position, size and colour within the family) and one small distractor
square of a random colour. The shapes (disc, ring, horizontal stripes, vertical stripes, plus sign)
are symmetric under horizontal and vertical flips and survive a 4-pixel crop, so the label is kept by
every augmentation in the pipeline. A linear model on mean colour cannot exceed about 20%; a small
ResNet learns it in a few epochs.

Same seed, same bytes: everything comes from one CPU ``torch.Generator`` in a fixed order.
"""
from __future__ import annotations

import torch

from benchmark.config import NUM_CLASSES as CLASSES

NUM_CLASSES = CLASSES["synthetic"]
TRAIN_SEED = 0xC1FA
TEST_SEED = 0xC1FB

# Colour families (0..255): warm and cool. A class's foreground is one member plus jitter.
_WARM = torch.tensor([[220, 60, 40], [230, 150, 30], [200, 60, 160]], dtype=torch.float32)
_COOL = torch.tensor([[40, 90, 220], [40, 190, 120], [60, 200, 220]], dtype=torch.float32)


def make_synthetic(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images (uint8, n x 3 x 32 x 32) and labels (int64 in 0..9), a pure function of ``seed``."""
    g = torch.Generator().manual_seed(int(seed))

    def rand(*shape):
        return torch.rand(*shape, generator=g)

    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    shape, family = y % 5, y // 5
    coords = torch.arange(32, dtype=torch.float32)
    yy, xx = coords.view(1, 32, 1), coords.view(1, 1, 32)

    cy = (9 + 14 * rand(n)).view(n, 1, 1)  # centre 9..23 keeps most of the shape inside any crop
    cx = (9 + 14 * rand(n)).view(n, 1, 1)
    r = (5 + 3 * rand(n)).view(n, 1, 1)  # radius 5..8
    dy, dx = yy - cy, xx - cx
    dist = (dy * dy + dx * dx).sqrt()
    box = (dy.abs() <= r) & (dx.abs() <= r)
    phase = (2 * rand(n)).floor().view(n, 1, 1)
    masks = torch.stack([
        dist <= r,  # disc
        (dist - 0.75 * r).abs() <= 1.2,  # ring
        box & ((((yy + phase) / 2).floor() % 2) == 0),  # horizontal stripes, period 4
        box & ((((xx + phase) / 2).floor() % 2) == 0),  # vertical stripes
        ((dx.abs() <= 1.5) & (dy.abs() <= r)) | ((dy.abs() <= 1.5) & (dx.abs() <= r)),  # plus
    ])  # 5 x n x 32 x 32
    mask = masks[shape, torch.arange(n)].unsqueeze(1).float()  # n x 1 x 32 x 32

    palette = torch.stack([_WARM, _COOL])  # 2 x 3 x 3
    pick = torch.randint(0, 3, (n,), generator=g)
    fg = palette[family, pick] + 25 * (2 * rand(n, 3) - 1)  # n x 3
    bg = 70 + 90 * rand(n, 3)  # muted background colour
    img = bg.view(n, 3, 1, 1) * (1 - mask) + fg.view(n, 3, 1, 1) * mask

    # Distractor: a 4x4 square of random colour at a random place (may overlap the shape).
    sy = torch.randint(0, 29, (n, 1, 1), generator=g)
    sx = torch.randint(0, 29, (n, 1, 1), generator=g)
    dmask = ((yy >= sy) & (yy < sy + 4) & (xx >= sx) & (xx < sx + 4)).unsqueeze(1).float()
    dcol = (255 * rand(n, 3)).view(n, 3, 1, 1)
    img = img * (1 - dmask) + dcol * dmask

    img = img + 20 * torch.randn(n, 3, 32, 32, generator=g)
    return img.round().clamp(0, 255).to(torch.uint8), y.to(torch.int64)


def synthetic_splits(n_train: int, n_test: int):
    """Train and test sets; each has its own fixed seed, so changing one size never changes the other."""
    return make_synthetic(n_train, TRAIN_SEED), make_synthetic(n_test, TEST_SEED)
