"""The CIFAR ResNet family (He 2016 §4.2, He 2016b), built from one ``ModelConfig``.

    build_model(cfg)    -> nn.Module (a ``CifarResNet``)
    num_blocks(cfg)     -> L, the number of residual blocks (tau = 1/sqrt(L), tau-ResNet README)
    count_params(model) -> number of trainable parameters
    residual_scales(m)  -> current alpha / tanh(alpha) / shared tau, for per-epoch logging

Layout: stem -> stages of units (stride 2 at the first unit of every stage but the first) ->
[final BN-ReLU for pre-activation] -> global average pool -> Linear.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import Tensor, nn

from benchmark.config import ModelConfig
from benchmark.models.blocks import (ResidualUnit, ScalarBias, conv, fixup_branch, make_shortcut, nonorm_branch,
                                     post_branch, pre_branch, split_batchnorms)
from benchmark.models.layout import BOTTLENECK_EXPANSION, stage_sizes, validate
from benchmark.vocabulary import ALPHA_PREFIX, TAU

# ----------------------------------------------------------------------------------------------
# The network


def _grad_scaled(p: Tensor, factor: float) -> Tensor:
    """Value of ``p``, gradient multiplied by ``factor`` (straight-through)."""
    return p.detach() + (p - p.detach()) * factor


class CifarResNet(nn.Module):
    """He 2016 §4.2 CIFAR ResNet and its variants; see ``ModelConfig`` for every knob."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        validate(cfg)
        self.cfg = cfg
        sizes = stage_sizes(cfg)
        self.num_blocks = sum(sizes)
        bn = cfg.norm == "batchnorm"
        pre = cfg.order == "pre"
        bottleneck = cfg.block == "bottleneck"
        expansion = BOTTLENECK_EXPANSION if bottleneck else 1
        bias = cfg.conv_bias

        # Stem: 3x3 conv to widths[0]. Post-activation: conv-BN-ReLU (He 2016); no-BN tau-ResNet:
        # conv-ReLU; pre-activation: a bare conv, its BN-ReLU is the first unit's (He 2016b, kuangliu).
        # Fixup: relu(conv(x) + bias1).
        fixup = cfg.norm == "fixup"
        stem: list[tuple[str, nn.Module]] = [("conv", conv(3, cfg.widths[0], 3, 1, bias))]
        if not pre:
            if bn:
                stem.append(("bn", nn.BatchNorm2d(cfg.widths[0])))
            if fixup:
                stem.append(("bias", ScalarBias()))
            stem.append(("relu", nn.ReLU()))
        self.stem = nn.Sequential(OrderedDict(stem))

        # tau-ResNet no-BN code: ONE learnable tau shared by all blocks; its gradient is divided by the
        # number of blocks each step (scale_tau_grad). Done in forward, so no trainer hook is needed.
        shared = cfg.residual_scale == "tau" and cfg.tau_mode == "shared_learnable"
        self.tau = nn.Parameter(torch.full((1,), float(cfg.tau))) if shared else None
        fixed_tau = cfg.tau if cfg.residual_scale == "tau" and not shared else None
        scale = cfg.residual_scale if cfg.residual_scale != "tau" else ("tau" if fixed_tau is not None else "none")

        self.stages = nn.ModuleList()
        in_ch = cfg.widths[0]
        for i, (width, n) in enumerate(zip(cfg.widths, sizes)):
            units = nn.ModuleList()
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                out_ch = width * expansion
                shape_change = stride != 1 or in_ch != out_ch
                shortcut = make_shortcut(cfg.shortcut, in_ch, out_ch, stride, pool=cfg.shortcut_pool,
                                         shortcut_norm=cfg.shortcut_norm, projection_norm=bn and not pre, bias=bias,
                                         zeros=cfg.shortcut_zeros)
                if fixup:
                    branch = fixup_branch(in_ch, out_ch, stride, bias)
                elif cfg.norm == "none":
                    branch = nonorm_branch(in_ch, out_ch, stride, bias)
                elif pre:
                    branch = pre_branch(in_ch, width, out_ch, stride, bottleneck, bias)
                else:
                    branch = post_branch(in_ch, width, out_ch, stride, bottleneck, bias)
                preact = None
                if pre:
                    preact = nn.Sequential(OrderedDict([("bn1", nn.BatchNorm2d(in_ch)), ("relu1", nn.ReLU())]))
                first = i == 0 and j == 0
                if fixup:  # bias1a: conv1(x + bias1a), and the downsample sees x + bias1a too
                    preact, first = nn.Sequential(OrderedDict([("bias1a", ScalarBias())])), False
                units.append(ResidualUnit(
                    branch, shortcut, order=cfg.order, scale=scale, tau=fixed_tau, preact=preact,
                    share_preact=shape_change or (first and cfg.first_unit_shares_preact)))
                in_ch = out_ch
            self.stages.append(units)

        # He 2016b appendix: extra BN-ReLU after the last unit; kuangliu PreActResNet has none.
        self.head_norm = (nn.Sequential(OrderedDict([("bn", nn.BatchNorm2d(in_ch)), ("relu", nn.ReLU())]))
                          if pre and cfg.final_norm else nn.Identity())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head_bias = ScalarBias() if fixup else nn.Identity()  # Fixup: fc(x + bias2)
        self.fc = nn.Linear(in_ch, cfg.num_classes)
        if cfg.bn_splits > 1:  # before the init, which then sees every norm layer (BN draws no random numbers)
            split_batchnorms(self, cfg.bn_splits)
        self._init_weights()

    def _init_weights(self) -> None:
        cfg = self.cfg
        if cfg.init != "torch_default":
            # he_fan_out: normal(0, sqrt(2/(k*k*out_channels))) (He 2015, fb.resnet.torch, tau-ResNet);
            # he_fan_in: kaiming_normal_ defaults (akamaster, Lab1). Conv biases (conv_bias) start at 0.
            mode = "fan_out" if cfg.init == "he_fan_out" else "fan_in"
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
            if cfg.init_linear:  # weight only; the bias keeps PyTorch's default (akamaster)
                nn.init.kaiming_normal_(self.fc.weight, mode=mode, nonlinearity="relu")
        if cfg.norm == "fixup":
            # fixup_resnet_cifar.py: the first conv of each branch ~ N(0, sqrt(2 / (out_ch * k * k)) * L^(-1/2))
            # (L blocks; m = 2 layers per branch gives L^(-1/(2m-2))), the second conv 0, the Linear
            # 0 (weight and bias). The stem conv keeps the init of cfg.init (the fork: PyTorch's default).
            for unit in self.units():
                w = unit.branch.conv1.weight
                nn.init.normal_(w, mean=0.0, std=math.sqrt(2 / (w.shape[0] * w.shape[2] * w.shape[3]))
                                * self.num_blocks ** -0.5)
                nn.init.zeros_(unit.branch.conv2.weight)
            nn.init.zeros_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)
        if cfg.zero_init_last_norm:  # "zero gamma": last BN of each branch starts at 0
            for unit in self.units():
                last_bn = [m for m in unit.branch if isinstance(m, nn.BatchNorm2d)][-1]
                nn.init.zeros_(last_bn.weight)

    def units(self) -> list[ResidualUnit]:
        return [u for stage in self.stages for u in stage]

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        shared = _grad_scaled(self.tau, 1.0 / self.num_blocks) if self.tau is not None else None
        for stage in self.stages:
            for unit in stage:
                x = unit(x, shared)
        x = self.pool(self.head_norm(x)).flatten(1)
        return self.fc(self.head_bias(x))

    @torch.no_grad()
    def residual_scales(self) -> dict[str, float]:
        """Current learnable residual scales by name, for per-epoch logging.

        rezero: {"alpha.stage1.block0": alpha, ...}; tanh_rezero: the *effective* multiplier tanh(alpha)
        under the same "alpha." names; shared learnable tau: {"tau": tau}; fixed tau or none: {}.
        """
        if self.tau is not None:
            return {TAU: float(self.tau.item())}
        if self.cfg.residual_scale not in ("rezero", "tanh_rezero"):
            return {}
        return {f"{ALPHA_PREFIX}stage{i + 1}.block{j}": float(unit.multiplier().item())
                for i, stage in enumerate(self.stages) for j, unit in enumerate(stage)}


def build_model(cfg: ModelConfig) -> nn.Module:
    """Build the network a ModelConfig describes; raises ModelConfigError if it describes none."""
    return CifarResNet(cfg)


def count_params(model: nn.Module) -> int:
    """Trainable parameters, each shared tensor counted once (as the papers' #params)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def residual_scales(model: nn.Module) -> dict[str, float]:
    """Named current residual scales of a model built here ({} for models without any)."""
    fn = getattr(model, "residual_scales", None)
    return fn() if callable(fn) else {}
