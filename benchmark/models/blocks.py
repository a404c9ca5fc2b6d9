"""Residual units of the CIFAR ResNet family: one unit class, its branch and its shortcut.

A unit is ``out = combine(scale * branch(x), shortcut(x))``. What varies between papers is
*which* branch (basic / bottleneck, post- / pre-activation, with or without BN), *which*
shortcut (option A / B / none), *which* scale (none, tau, ReZero alpha) and where the final ReLU
goes. Each choice is a knob of ``ModelConfig``; nothing here is copied per paper.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv(in_ch: int, out_ch: int, k: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """k x k convolution with 'same' padding (He 2016 §4.2: all convs are 3x3, padding 1)."""
    return nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=k // 2, bias=bias)


class ScalarBias(nn.Module):
    """A learnable scalar added to a tensor, init 0 (Fixup; tau-ResNet resnet_cifar_nobn.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias


class ScalarScale(nn.Module):
    """A learnable scalar multiplier, init 1 (Fixup's ``scale``; the name keeps 'scale' in the
    parameter's name, which the Fixup code's lr groups test)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d as nn.DataParallel over ``splits`` devices computes it (``ModelConfig.bn_splits``).

    Training: the batch is cut as ``x.chunk(splits)`` (DataParallel's scatter: 128 -> 64 + 64, the
    last batch of an epoch 80 -> 40 + 40) and each piece is normalised with its own batch mean and
    biased variance. Running averages: PyTorch's BatchNorm update from the first piece only, because
    DataParallel's replica on device 0 shares the module's buffers and the other replicas' in-place
    updates are discarded (torch.nn.DataParallel docs, "in-place updates ... on device[0] will be
    recorded"). Evaluation: the running averages, as BatchNorm2d.
    """

    def __init__(self, num_features: int, splits: int) -> None:
        super().__init__(num_features)
        self.splits = splits

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.splits == 1:
            return super().forward(x)
        self.num_batches_tracked.add_(1)
        pieces = x.chunk(self.splits)
        out = [F.batch_norm(p, self.running_mean if i == 0 else None, self.running_var if i == 0 else None,
                            self.weight, self.bias, True, self.momentum, self.eps)
               for i, p in enumerate(pieces)]
        return torch.cat(out)


def split_batchnorms(model: nn.Module, splits: int) -> None:
    """Replace every BatchNorm2d of ``model`` by a :class:`SplitBatchNorm2d` (fresh, same shape)."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is nn.BatchNorm2d:
                setattr(module, name, SplitBatchNorm2d(child.num_features, splits))


# ----------------------------------------------------------------------------------------------
# Shortcuts


class ZeroPadShortcut(nn.Module):
    """Option A (He 2016 §4.1): parameter-free subsampling plus zero channels.

    ``pool="stride"`` takes x[:, :, ::s, ::s] (akamaster; AvgPool2d(1, stride) in tau-ResNet),
    ``pool="avg"`` averages s x s windows (techxzen). Zeros go planes//2 on each side as in
    akamaster's ``F.pad(..., planes//4, planes//4)`` for a doubling (``zeros="split"``), or all after
    the input's channels as the Fixup fork's ``torch.cat((identity, zeros), 1)`` (``zeros="after"``). ``norm=True`` adds a BatchNorm on
    the subsampled input before padding, as tau-ResNet's and Fixup's ``downsample``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, pool: str, norm: bool, zeros: str = "split") -> None:
        super().__init__()
        assert out_ch >= in_ch, "option A can only widen"
        self.stride, self.pool = stride, pool
        extra = out_ch - in_ch
        self.pad = (0, extra) if zeros == "after" else (extra // 2, extra - extra // 2)
        self.norm = nn.BatchNorm2d(in_ch) if norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            s = self.stride
            x = x[:, :, ::s, ::s] if self.pool == "stride" else F.avg_pool2d(x, s)
        x = self.norm(x)
        return F.pad(x, (0, 0, 0, 0, *self.pad))


def make_shortcut(
    kind: str, in_ch: int, out_ch: int, stride: int, *, pool: str, shortcut_norm: bool,
    projection_norm: bool, bias: bool, zeros: str = "split",
) -> nn.Module | None:
    """None for a plain net, identity when the shape is kept, else option A or B."""
    if kind == "none":
        return None
    if in_ch == out_ch and stride == 1:
        return nn.Identity()
    if kind == "A":
        return ZeroPadShortcut(in_ch, out_ch, stride, pool, shortcut_norm, zeros)
    # Option B: 1x1 projection; BN after it in post-activation nets (He 2016), none in the
    # pre-activation nets (He 2016b resnet-1k-layers, kuangliu PreActResNet).
    proj = conv(in_ch, out_ch, 1, stride, bias=bias)
    return nn.Sequential(proj, nn.BatchNorm2d(out_ch)) if projection_norm else proj


# ----------------------------------------------------------------------------------------------
# Branches (the residual function F), named so that state_dict keys read conv1, bn1, ...


def post_branch(in_ch: int, mid: int, out_ch: int, stride: int, bottleneck: bool, bias: bool) -> nn.Sequential:
    """He 2016 §3.4: BN right after each conv, ReLU after BN; the last BN is not followed by ReLU."""
    if not bottleneck:
        layers = [("conv1", conv(in_ch, mid, 3, stride, bias)), ("bn1", nn.BatchNorm2d(mid)), ("relu1", nn.ReLU()),
                  ("conv2", conv(mid, out_ch, 3, 1, bias)), ("bn2", nn.BatchNorm2d(out_ch))]
    else:  # 1x1 reduce, 3x3 (carries the stride, as kuangliu / torchvision), 1x1 expand
        layers = [("conv1", conv(in_ch, mid, 1, 1, bias)), ("bn1", nn.BatchNorm2d(mid)), ("relu1", nn.ReLU()),
                  ("conv2", conv(mid, mid, 3, stride, bias)), ("bn2", nn.BatchNorm2d(mid)), ("relu2", nn.ReLU()),
                  ("conv3", conv(mid, out_ch, 1, 1, bias)), ("bn3", nn.BatchNorm2d(out_ch))]
    return nn.Sequential(OrderedDict(layers))


def pre_branch(in_ch: int, mid: int, out_ch: int, stride: int, bottleneck: bool, bias: bool) -> nn.Sequential:
    """He 2016b full pre-activation, after the unit's first BN-ReLU (which the unit owns)."""
    if not bottleneck:
        layers = [("conv1", conv(in_ch, mid, 3, stride, bias)), ("bn2", nn.BatchNorm2d(mid)), ("relu2", nn.ReLU()),
                  ("conv2", conv(mid, out_ch, 3, 1, bias))]
    else:
        layers = [("conv1", conv(in_ch, mid, 1, 1, bias)), ("bn2", nn.BatchNorm2d(mid)), ("relu2", nn.ReLU()),
                  ("conv2", conv(mid, mid, 3, stride, bias)), ("bn3", nn.BatchNorm2d(mid)), ("relu3", nn.ReLU()),
                  ("conv3", conv(mid, out_ch, 1, 1, bias))]
    return nn.Sequential(OrderedDict(layers))


def nonorm_branch(in_ch: int, out_ch: int, stride: int, bias: bool) -> nn.Sequential:
    """tau-ResNet without BN (resnet_cifar_nobn.py, after Fixup):
    conv1(x + b1a) -> relu(. + b1b) -> conv2(. + b2a) + b2b. The tau multiply is the unit's."""
    layers = [("bias1a", ScalarBias()), ("conv1", conv(in_ch, out_ch, 3, stride, bias)), ("bias1b", ScalarBias()),
              ("relu1", nn.ReLU()), ("bias2a", ScalarBias()), ("conv2", conv(out_ch, out_ch, 3, 1, bias)),
              ("bias2b", ScalarBias())]
    return nn.Sequential(OrderedDict(layers))


def fixup_branch(in_ch: int, out_ch: int, stride: int, bias: bool) -> nn.Sequential:
    """Fixup basic block (fixup_resnet_cifar.py FixupBasicBlock) after its input bias ``bias1a``,
    which the unit owns because the downsampling shortcut sees it too:
    relu(conv1(.) + b1b) -> conv2(. + b2a) * scale + b2b."""
    layers = [("conv1", conv(in_ch, out_ch, 3, stride, bias)), ("bias1b", ScalarBias()), ("relu1", nn.ReLU()),
              ("bias2a", ScalarBias()), ("conv2", conv(out_ch, out_ch, 3, 1, bias)), ("scale", ScalarScale()),
              ("bias2b", ScalarBias())]
    return nn.Sequential(OrderedDict(layers))


# ----------------------------------------------------------------------------------------------
# The unit


class ResidualUnit(nn.Module):
    """One residual block. ``order`` decides where activations go, ``scale`` how F is weighted.

    post (He 2016):  relu(s * F(x) + shortcut(x))
    post + rezero:   alpha * relu(F(x)) + shortcut(x), no ReLU after the addition (ReZero
                     author's notebook: "the skip connection is after the nonlinearity")
    pre  (He 2016b): a = relu(bn1(x)); s * F(a) + shortcut(a if shared else x)
    plain (shortcut none): relu(F(x)) (post) or F(a) (pre).

    scale: "none" | "tau" (fixed float, or a shared tensor passed to ``forward``) | "rezero" (own
    alpha, init 0) | "tanh_rezero" (tanh of own alpha, init 0).
    """

    def __init__(self, branch: nn.Sequential, shortcut: nn.Module | None, *, order: str, scale: str,
                 tau: float | None = None, preact: nn.Module | None = None, share_preact: bool = False) -> None:
        super().__init__()
        self.scale_kind, self.share_preact = scale, share_preact
        self.preact = preact  # BN-ReLU on the input of a pre-activation unit
        self.branch = branch
        self.shortcut = shortcut
        self.tau = tau  # fixed tau (python float); None when shared or unused
        rezero = scale in ("rezero", "tanh_rezero")
        if rezero:
            self.alpha = nn.Parameter(torch.zeros(1))  # ReZero: one scalar per block, init 0
        # Post-activation ReLU: after the addition (He 2016), or inside the branch for ReZero, whose
        # author puts the skip connection after the nonlinearity (ReZero-examples notebook).
        self.relu_in_branch = order == "post" and rezero
        self.relu_after_add = order == "post" and not rezero

    def multiplier(self) -> Tensor | float | None:
        """The effective scale of this unit's own branch (not the shared tau)."""
        if self.scale_kind == "rezero":
            return self.alpha
        if self.scale_kind == "tanh_rezero":
            return torch.tanh(self.alpha)
        return self.tau

    def forward(self, x: Tensor, shared_tau: Tensor | None = None) -> Tensor:
        if self.preact is not None:
            a = self.preact(x)
            shortcut_in = a if self.share_preact else x
        else:
            a = shortcut_in = x
        f = self.branch(a)
        s = shared_tau if shared_tau is not None else self.multiplier()
        if self.relu_in_branch:
            f = F.relu(f)
        if s is not None:
            f = f * s
        out = f if self.shortcut is None else f + self.shortcut(shortcut_in)
        if self.relu_after_add:
            out = F.relu(out)
        return out
