"""Protocol knobs against the reference code's own behaviour (issue 10).

Each test re-states, in a few lines, what the reference repository does (cited at the test), runs it
on the same tensors as bench, and compares: an lr sequence, an SGD step with the reference's
parameter groups, the momentum reset, the input scale, the padding order, BatchNorm over devices,
Fixup, and OpenCV's uint8 warp.
"""
from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import fields, replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import (KEY_V1_FIELDS, SECTIONS, DataConfig, DataConfigError, JobSpec, ModelConfig, OptimConfig,
                              ScheduleConfig, validate_data)
from benchmark.data.pipeline import DeviceLoader, _inverse_affine, affine_warp, draw_epoch, normalization_stats
from benchmark.models import build_model
from benchmark.models.blocks import SplitBatchNorm2d
from benchmark.suite import load_suite
from benchmark.train import _optimizer, _set_lr, _State
from conftest import ROOT


def _lrs_bench(spec: JobSpec, per_epoch: int, epochs: int, model: nn.Module | None = None) -> list[list[float]]:
    """Every group's lr at every step, as bench's training loop sets them."""
    model = model or nn.Linear(2, 2)
    opt = _optimizer(model, spec)
    state, out = _State(), []
    for epoch in range(epochs):
        for _ in range(per_epoch):
            _set_lr(opt, spec, state, per_epoch)
            out.append([g["lr"] for g in opt.param_groups])
            state.iteration += 1
        state.epoch += 1
    return out


# ----------------------------------------------------------------------------------------------
# 1. Warm-up: statsu1990/ReZero-Cifar100 b7b7c24 src/train/scheduler.py + src/train/training.py


class WarmUpLR(torch.optim.lr_scheduler._LRScheduler):
    """src/train/scheduler.py, verbatim but for the docstring."""

    def __init__(self, optimizer, total_iters, last_epoch=-1):
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base_lr * self.last_epoch / (self.total_iters + 1e-8) for base_lr in self.base_lrs]


def _statsu_lrs(per_epoch: int, epochs: int, milestones: list[int], gamma: float) -> list[float]:
    """train_model()/trainer(): MultiStepLR stepped at the start of every epoch after the warm-up
    epoch, WarmUpLR stepped before every batch of epoch 0; record the lr each optimizer.step uses."""
    p = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=5e-4)
    step_scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)
    warmup_scheduler = WarmUpLR(optimizer, per_epoch * 1)
    used = []
    for epoch in range(epochs):
        if epoch > 1 - 1:
            warm_sch = None
            step_scheduler.step()
        else:
            warm_sch = warmup_scheduler
        for _ in range(per_epoch):
            if warm_sch is not None:
                warm_sch.step()
            used.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
    return used


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # the reference's own order
def test_linear_pre_step_warmup_is_statsu1990s_lr_sequence() -> None:
    per_epoch, epochs = 7, 6
    spec = JobSpec(schedule=ScheduleConfig(unit="epoch", length=epochs, milestones=(2, 4), gamma=0.2,
                                           warmup="linear_pre_step", warmup_length=per_epoch))
    ours = [g[0] for g in _lrs_bench(spec, per_epoch, epochs)]
    ref = _statsu_lrs(per_epoch, epochs, [2, 4], 0.2)
    assert ours == pytest.approx(ref, rel=3e-9)  # WarmUpLR's + 1e-8: 1e-8 / N relative, left out by bench
    assert ours[0] == pytest.approx(0.1 / per_epoch) and ours[per_epoch - 1] == pytest.approx(0.1)


def test_linear_warmup_keeps_its_meaning() -> None:
    """'linear' (the key of every job that used it) still starts at 0: step i uses lr * i / N."""
    spec = JobSpec(schedule=ScheduleConfig(unit="epoch", length=2, milestones=(), warmup="linear", warmup_length=4))
    assert [g[0] for g in _lrs_bench(spec, 4, 2)] == pytest.approx([0, 0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.1])


# ----------------------------------------------------------------------------------------------
# 2. Parameter groups: tbachlechner/Fixup cifar/cifar_train.py (e57b6c0; c821673 for the elif)


def _fixup_adjust(optimizer, epoch: int, base: float, step1: int, step2: int, elif_bug: bool) -> None:
    """adjust_learning_rate, batch 128 on one GPU (base_learning_rate == args.base_lr)."""
    lr = base
    if epoch >= step1:
        lr /= 10
    if epoch >= step2:
        lr /= 10
    for param_group in optimizer.param_groups:
        if param_group["initial_lr"] == base:
            param_group["lr"] = lr
        else:
            if epoch <= 9:
                param_group["lr"] = param_group["initial_lr"] * lr / base
            elif epoch < step1:
                param_group["lr"] = param_group["initial_lr"]
            elif epoch < (step1 if elif_bug else step2):
                param_group["lr"] = param_group["initial_lr"] / 10.
            else:
                param_group["lr"] = param_group["initial_lr"] / 100.


def _fixup_optimizer(net: nn.Module, base: float, decay: float) -> torch.optim.SGD:
    parameters_bias = [p[1] for p in net.named_parameters() if "bias" in p[0]]
    parameters_scale = [p[1] for p in net.named_parameters() if "scale" in p[0]]
    parameters_others = [p[1] for p in net.named_parameters() if not ("bias" in p[0] or "scale" in p[0])]
    opt = torch.optim.SGD([{"params": parameters_bias, "lr": base / 10.}, {"params": parameters_scale, "lr": base / 10.},
                           {"params": parameters_others}], lr=base, momentum=0.9, weight_decay=decay)
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]  # set by the CosineAnnealingLR that cifar_train.py always builds (e57b6c0 line 226)
    return opt


REZERO_FORK = ModelConfig(depth=8, shortcut_norm=True, residual_scale="rezero")  # small rezero_resnet_cifar.py


def _fork_spec(schedule: str) -> JobSpec:
    return JobSpec(model=REZERO_FORK,
                   optim=OptimConfig(weight_decay=5e-4, scalar_lr_scale=0.1, lr_scale_on="names",
                                     lr_scale_names=("bias", "scale"), lr_scale_schedule=schedule),
                   schedule=ScheduleConfig(unit="epoch", length=16, milestones=(11, 14)))


@pytest.mark.parametrize("schedule,elif_bug", [("same", False), ("first_milestone_final", True)])
def test_lr_groups_follow_the_fixup_fork_per_parameter(schedule: str, elif_bug: bool) -> None:
    spec = _fork_spec(schedule)
    torch.manual_seed(0)
    model = build_model(spec.model)
    ours = _optimizer(model, spec)
    ref = _fixup_optimizer(model, 0.1, 5e-4)
    state = _State()
    lr_of = lambda opt: {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}  # noqa: E731
    # milestones after epoch 9: the fork's scaled groups follow lr / base while epoch <= 9
    for epoch in range(16):
        state.epoch, state.iteration = epoch, epoch * 5
        _set_lr(ours, spec, state, 5)
        _fixup_adjust(ref, epoch, 0.1, 11, 14, elif_bug)
        assert lr_of(ours) == pytest.approx(lr_of(ref), rel=1e-12), f"epoch {epoch}"
    bn_beta = dict(model.named_parameters())["stages.0.0.branch.bn1.bias"]
    assert lr_of(ours)[id(bn_beta)] == pytest.approx(0.1 / 1000)  # epoch 15: lr/10, /100 (bug or not)
    state.epoch = 12  # between the milestones: the elif bug shows
    _set_lr(ours, spec, state, 5)
    assert lr_of(ours)[id(bn_beta)] == pytest.approx(0.1 / 1000 if elif_bug else 0.1 / 100)
    alpha = model.units()[0].alpha
    assert lr_of(ours)[id(alpha)] == pytest.approx(0.01)  # 'resweight' is in the others group: full lr


def test_one_sgd_step_with_the_fixup_forks_groups() -> None:
    spec = _fork_spec("same")
    torch.manual_seed(0)
    model = build_model(spec.model)
    twin = copy.deepcopy(model)
    ours, ref = _optimizer(model, spec), _fixup_optimizer(twin, 0.1, 5e-4)
    _set_lr(ours, spec, _State(), 5)
    _fixup_adjust(ref, 0, 0.1, 11, 14, False)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    for net, opt in ((model, ours), (twin, ref)):
        for _ in range(2):  # two steps: momentum buffers matter
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7, msg=name)
    scaled = {n for n, _ in model.named_parameters() if "bias" in n}
    assert "fc.bias" in scaled and any("shortcut.norm.bias" in n for n in scaled)


def test_biases_mode_takes_every_modules_bias() -> None:
    spec = JobSpec(model=REZERO_FORK, optim=OptimConfig(scalar_lr_scale=0.1, lr_scale_on="biases"))
    model = build_model(spec.model)
    opt = _optimizer(model, spec)
    scaled = {id(p) for g in opt.param_groups if g["lr_scale"] != 1.0 for p in g["params"]}
    assert scaled == {id(m.bias) for m in model.modules() if getattr(m, "bias", None) is not None}


# ----------------------------------------------------------------------------------------------
# 3. Momentum reset: techxzen/pytorch-residual-networks 3d0f2e4 run.py train()


def test_momentum_reset_is_a_new_optimizer_at_each_milestone() -> None:
    spec = JobSpec(optim=OptimConfig(weight_decay=1e-4, reset_momentum_at_milestones=True),
                   schedule=ScheduleConfig(unit="iteration", length=7, milestones=(3, 5)))
    torch.manual_seed(0)
    w0 = torch.randn(4, 3)
    xs, ys = torch.randn(7, 16, 3), torch.randint(0, 4, (7, 16))

    def loss(w, i):
        return F.cross_entropy(xs[i] @ w.t(), ys[i])

    def bench_steps(spec: JobSpec) -> nn.Parameter:  # 7 steps of bench's loop, 100 steps per epoch
        holder = nn.Module()
        holder.weight = w = nn.Parameter(w0.clone())
        opt, state = _optimizer(holder, spec), _State()
        for i in range(7):
            _set_lr(opt, spec, state, 100)
            opt.zero_grad()
            loss(w, i).backward()
            opt.step()
            state.iteration += 1
        return w

    ours_w = bench_steps(spec)

    ref_w = nn.Parameter(w0.clone())  # run.py: lr /10 and a new SGD when train_iter hits 32000 / 48000
    lr = 0.1
    ref = torch.optim.SGD([ref_w], lr=lr, momentum=0.9, weight_decay=0.0001)
    for train_iter in range(7):
        if train_iter in (3, 5):
            lr = lr / 10
            ref = torch.optim.SGD([ref_w], lr=lr, momentum=0.9, weight_decay=0.0001)
        ref.zero_grad()
        loss(ref_w, train_iter).backward()
        ref.step()
    torch.testing.assert_close(ours_w, ref_w, rtol=0, atol=1e-7)

    kept = replace(spec, optim=replace(spec.optim, reset_momentum_at_milestones=False))
    w = bench_steps(kept)
    assert not torch.allclose(w, ref_w, atol=1e-5), "the reset must make a difference here"


# ----------------------------------------------------------------------------------------------
# 4. Input scale and padding order


def _images(n: int = 6) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


def test_byte_pixel_scale_is_techxzens_transform() -> None:
    x = _images()
    cfg = DataConfig(normalize="channel_mean", mean=(125 / 255, 123 / 255, 114 / 255), pixel_scale="byte")
    loader = DeviceLoader(x, torch.zeros(len(x)), cfg, train=False, batch_size=len(x),
                          stats=normalization_stats(x, cfg))
    ours, _ = next(iter(loader))
    # run.py: ToTensor (x / 255), Lambda(x.mul(255)), Normalize([125., 123., 114.], [1., 1., 1.])
    ref = (x.float() / 255).mul(255) - torch.tensor([125., 123., 114.]).view(3, 1, 1)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("normalize", ["channel_mean_std", "per_pixel_mean"])
def test_pad_after_normalize_pads_the_mean_colour(normalize: str) -> None:
    """fb.resnet.torch datasets/cifar10.lua + datasets/transforms.lua: the data set is normalised
    once, then RandomCrop pads with zeros (temp:zero()) and crops; HorizontalFlip flips."""
    x = _images()
    mean_std = dict(mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26)) if normalize == "channel_mean_std" else {}
    cfg = DataConfig(normalize=normalize, pad=4, pad_order="after_normalize", **mean_std)
    stats = normalization_stats(x, cfg)
    loader = DeviceLoader(x, torch.arange(len(x)), cfg, train=True, batch_size=len(x), stats=stats)
    ours, order = next(loader.epoch(3, 1))
    plan = draw_epoch(len(x), cfg, 3, 1)
    normed = (x.float() / 255 - stats.mean) / stats.std
    padded = F.pad(normed, (4, 4, 4, 4))  # zeros after normalising
    for k, i in enumerate(order.tolist()):
        oy, ox = int(plan.oy[i]), int(plan.ox[i])
        crop = padded[i, :, oy:oy + 32, ox:ox + 32]
        if plan.hflip[i]:
            crop = crop.flip(-1)
        torch.testing.assert_close(ours[k], crop, rtol=0, atol=1e-5)
    assert (plan.oy != 4).any() or (plan.ox != 4).any()  # some crops show the border


def test_pad_before_normalize_is_black() -> None:
    x = _images()
    cfg = DataConfig(normalize="channel_mean_std", mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26), pad=4, flip="none")
    loader = DeviceLoader(x, torch.arange(len(x)), cfg, train=True, batch_size=len(x), stats=normalization_stats(x, cfg))
    ours, order = next(loader.epoch(3, 1))
    plan = draw_epoch(len(x), cfg, 3, 1)
    k = next(k for k, i in enumerate(order.tolist()) if plan.oy[i] < 4)  # the crop's top row is padding
    black = (0 - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    torch.testing.assert_close(ours[k, :, 0, 0], black, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# 5. BatchNorm over devices: torch.nn.DataParallel's scatter (chunk) and device-0 buffers


def test_split_batchnorm_is_dataparallels_per_device_batchnorm() -> None:
    torch.manual_seed(0)
    bn = SplitBatchNorm2d(5, splits=2)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    ref0 = nn.BatchNorm2d(5)  # the replica on device 0 (shares the module's buffers)
    ref0.load_state_dict(bn.state_dict())
    ref1 = copy.deepcopy(ref0)  # another device's replica: its buffer updates are discarded
    for n in (128, 80):  # a full batch and the epoch's last one (80 -> 40 + 40)
        x = torch.randn(n, 5, 4, 4) * 3 + 1
        ours = bn(x)
        a, b = x.chunk(2)
        ref = torch.cat([ref0(a), ref1(b)])
        ref1.load_state_dict(ref0.state_dict())  # the next forward broadcasts device 0's buffers again
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
        torch.testing.assert_close(bn.running_mean, ref0.running_mean, rtol=0, atol=1e-7)
        torch.testing.assert_close(bn.running_var, ref0.running_var, rtol=0, atol=1e-7)
        assert bn.num_batches_tracked == ref0.num_batches_tracked
    bn.eval(), ref0.eval()
    x = torch.randn(6, 5, 4, 4)
    torch.testing.assert_close(bn(x), ref0(x), rtol=0, atol=1e-6)


def test_bn_splits_swaps_every_batchnorm_and_keeps_the_init() -> None:
    cfg = ModelConfig(depth=8, shortcut_norm=True, zero_init_last_norm=True)
    torch.manual_seed(0)
    plain = build_model(cfg)
    torch.manual_seed(0)
    split = build_model(replace(cfg, bn_splits=2))
    bns = [m for m in split.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(isinstance(m, SplitBatchNorm2d) and m.splits == 2 for m in bns)
    for (name, a), b in zip(plain.state_dict().items(), split.state_dict().values()):
        assert torch.equal(a, b), name
    x = torch.randn(4, 3, 32, 32)
    plain.eval(), split.eval()
    torch.testing.assert_close(plain(x), split(x))  # evaluation uses the running stats alike
    split.train(), plain.train()
    assert not torch.allclose(plain(x), split(x))  # training: statistics over 2 x 2 images, not 4


# ----------------------------------------------------------------------------------------------
# 6. Job keys: the new fields moved the keys of the suites issue 10 changed, and of no other.

# sha256 of ",".join(sorted job keys) of each suite at 9a658a0, before the fields of issue 10.
KEYS_BEFORE = {
    "he2016_resnet1202": "153315f68a168c4d",
    "he2016_table": "cc4af5078fed018d",
    "identity_mappings": "e42dab4e16c472cb",
    "lab1_2018": "05596fd89b92e0b8",
    "rezero_cifar100": "8b54381d9e516d37",
    "rezero_resnet56": "0f7da04ac3aa0beb",
    "smoke": "6016175b6728dfab",
    "tau_resnet": "4c70278add906318",
    "techxzen_replication": "9c7587a0eba4d320",
}
# Changed on purpose (each suite file says why): warm-up fix, init + lr groups, momentum reset and
# 0..255 inputs, 2-GPU BN statistics; and the smoke suite, which now runs bf16 + channels_last
# (issue 14: its expected values were regenerated with it).
CHANGED = {"he2016_table", "he2016_resnet1202", "identity_mappings", "rezero_cifar100", "rezero_resnet56",
           "techxzen_replication", "smoke"}


@pytest.mark.parametrize("name", sorted(KEYS_BEFORE))
def test_only_the_deliberately_changed_suites_have_new_keys(name: str) -> None:
    jobs = load_suite(ROOT / "suites" / f"{name}.toml").jobs
    digest = hashlib.sha256(",".join(sorted(j.key for j in jobs)).encode()).hexdigest()[:16]
    assert (digest != KEYS_BEFORE[name]) == (name in CHANGED)


def test_new_fields_are_at_their_defaults_outside_the_changed_suites() -> None:
    new = [(s, f) for s, cls in SECTIONS.items() for f in fields(cls) if f"{s}.{f.name}" not in KEY_V1_FIELDS]
    assert {f.name for _, f in new} >= {"bn_splits", "pad_order", "pixel_scale", "lr_scale_on", "lr_scale_names",
                                        "lr_scale_schedule", "reset_momentum_at_milestones"}
    for name in sorted(set(KEYS_BEFORE) - CHANGED):
        for job in load_suite(ROOT / "suites" / f"{name}.toml").jobs:
            for section, f in new:
                assert getattr(getattr(job.spec, section), f.name) == f.default, (name, job.label, f.name)


# ----------------------------------------------------------------------------------------------
# 7. Fixup: tbachlechner/Fixup e57b6c0 cifar/models/fixup_resnet_cifar.py (upstream hongyi-zhang/Fixup)


class FixupBasicBlock(nn.Module):
    """fixup_resnet_cifar.py, verbatim but for the in-place ReLU."""

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.bias1a = nn.Parameter(torch.zeros(1))
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bias1b = nn.Parameter(torch.zeros(1))
        self.relu = nn.ReLU()
        self.bias2a = nn.Parameter(torch.zeros(1))
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.scale = nn.Parameter(torch.ones(1))
        self.bias2b = nn.Parameter(torch.zeros(1))
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.conv1(x + self.bias1a)
        out = self.relu(out + self.bias1b)
        out = self.conv2(out + self.bias2a)
        out = out * self.scale + self.bias2b
        if self.downsample is not None:
            identity = self.downsample(x + self.bias1a)
            identity = torch.cat((identity, torch.zeros_like(identity)), 1)
        out += identity
        return self.relu(out)


class FixupResNet(nn.Module):
    def __init__(self, layers, num_classes=10):
        super().__init__()
        self.num_layers = sum(layers)
        self.inplanes = 16
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bias1 = nn.Parameter(torch.zeros(1))
        self.relu = nn.ReLU()
        self.layer1 = self._make_layer(16, layers[0])
        self.layer2 = self._make_layer(32, layers[1], stride=2)
        self.layer3 = self._make_layer(64, layers[2], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.bias2 = nn.Parameter(torch.zeros(1))
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, FixupBasicBlock):
                w = m.conv1.weight
                nn.init.normal_(w, mean=0, std=(2 / (w.shape[0] * w.shape[2] * w.shape[3])) ** 0.5 * self.num_layers ** (-0.5))
                nn.init.constant_(m.conv2.weight, 0)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.weight, 0)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = nn.AvgPool2d(1, stride=stride) if stride != 1 else None
        layers = [FixupBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [FixupBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.conv1(x) + self.bias1)
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.avgpool(x).view(x.size(0), -1)
        return self.fc(x + self.bias2)


FIXUP = ModelConfig(depth=14, norm="fixup", init="torch_default", shortcut_zeros="after")  # [2, 2, 2]


def _fixup_name(name: str) -> str:
    """The fork's parameter name of a bench Fixup parameter."""
    fixed = {"stem.conv.weight": "conv1.weight", "stem.bias.bias": "bias1", "head_bias.bias": "bias2"}
    if name in fixed or name.startswith("fc."):
        return fixed.get(name, name)
    _, i, j, *rest = name.split(".")
    leaf = {"preact.bias1a.bias": "bias1a", "branch.conv1.weight": "conv1.weight", "branch.bias1b.bias": "bias1b",
            "branch.bias2a.bias": "bias2a", "branch.conv2.weight": "conv2.weight", "branch.scale.scale": "scale",
            "branch.bias2b.bias": "bias2b"}[".".join(rest)]
    return f"layer{int(i) + 1}.{j}.{leaf}"


def test_fixup_network_is_the_forks_weight_for_weight() -> None:
    torch.manual_seed(5)
    ours = build_model(FIXUP)
    torch.manual_seed(5)
    ref = FixupResNet([2, 2, 2])
    ref_params = dict(ref.named_parameters())
    ours_params = dict(ours.named_parameters())
    assert sorted(_fixup_name(n) for n in ours_params) == sorted(ref_params)
    for n, p in ours_params.items():  # the same seed gives the same init: same draws in the same order
        assert torch.equal(p, ref_params[_fixup_name(n)]), n
    w = ours.stages[1][1].branch.conv1.weight
    assert w.std().item() == pytest.approx((2 / (32 * 9)) ** 0.5 / 6 ** 0.5, rel=0.1)
    # perturb every parameter alike, then forward and backward on the same images
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in ours_params.items():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
            ref_params[_fixup_name(n)].copy_(p)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 5, 9])
    out_ours, out_ref = ours(x), ref(x)
    torch.testing.assert_close(out_ours, out_ref, rtol=0, atol=1e-5)
    F.cross_entropy(out_ours, y).backward()
    F.cross_entropy(out_ref, y).backward()
    for n, p in ours_params.items():
        torch.testing.assert_close(p.grad, ref_params[_fixup_name(n)].grad, rtol=1e-4, atol=1e-6, msg=n)


def test_fixup_block_params_and_output() -> None:
    """One downsampling block alone: the bench unit against FixupBasicBlock on the same tensors."""
    torch.manual_seed(2)
    ours = build_model(FIXUP).stages[1][0]
    ref = FixupBasicBlock(16, 32, 2, nn.AvgPool2d(1, stride=2))
    names = {"preact.bias1a.bias": "bias1a", "branch.conv1.weight": "conv1.weight", "branch.bias1b.bias": "bias1b",
             "branch.bias2a.bias": "bias2a", "branch.conv2.weight": "conv2.weight", "branch.scale.scale": "scale",
             "branch.bias2b.bias": "bias2b"}
    assert set(dict(ours.named_parameters())) == set(names)
    with torch.no_grad():
        for n, p in ours.named_parameters():
            p.copy_(torch.randn(p.shape))
            dict(ref.named_parameters())[names[n]].copy_(p)
    x = torch.randn(3, 16, 8, 8)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-5)


def test_fixup_lr_groups_are_the_forks() -> None:
    """'bias' and 'scale' in the name (cifar_train.py): every Fixup scalar, nothing else."""
    model = build_model(FIXUP)
    names = {n for n, _ in model.named_parameters() if "bias" in n or "scale" in n}
    assert names == {n for n, p in model.named_parameters() if p.numel() == 1} | {"fc.bias"}


@pytest.mark.parametrize("optim", ['{ lr_scale_on = "names" }', '{ lr_scale_names = ["bias"] }'])
def test_lr_scale_names_go_with_names_mode(tmp_path, optim: str) -> None:
    from benchmark.suite import SuiteError

    path = tmp_path / "s.toml"
    path.write_text(f'[suite]\nname = "s"\n[[entry]]\nlabel = "x"\noptim = {optim}\n')
    with pytest.raises(SuiteError, match="lr_scale_names"):
        load_suite(path)


# ----------------------------------------------------------------------------------------------
# 8. ShiftScaleRotate on uint8 images: statsu1990/ReZero-Cifar100 b7b7c24 src/make_model.py
#    (albumentations ShiftScaleRotate on the np.uint8 arrays of src/data/cifar.py) -> cv2.warpAffine,
#    INTER_LINEAR, BORDER_REFLECT_101 (opencv modules/imgproc/src/imgwarp.cpp: WarpAffineInvoker, remap)

def _opencv_warp_uint8(img: np.ndarray, m: np.ndarray) -> np.ndarray:
    """cv2.warpAffine(img, m, (32, 32), INTER_LINEAR, BORDER_REFLECT_101) on a uint8 C x 32 x 32 image,
    in OpenCV's fixed-point arithmetic (opencv <= 4.10; equal to opencv-python-headless 4.8.1.78 on
    every pixel of CASES, the test below): the inverse map in 1/1024 pixel (AB_BITS = 10) plus half a
    1/32 step, shifted to 1/32 pixel (INTER_BITS = 5); bilinear weights in 1/32768 (exact products of
    the 1/32 fractions), the sum rounded half up ((v + 2^14) >> 15)."""
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    y, x = np.mgrid[0:32, 0:32]
    X = (np.rint((inv[0, 1] * y + inv[0, 2]) * 1024).astype(np.int64) + 16 + np.rint(inv[0, 0] * x * 1024).astype(np.int64)) >> 5
    Y = (np.rint((inv[1, 1] * y + inv[1, 2]) * 1024).astype(np.int64) + 16 + np.rint(inv[1, 0] * x * 1024).astype(np.int64)) >> 5
    ix, fx, iy, fy = X >> 5, X & 31, Y >> 5, Y & 31

    def reflect101(i):  # ... 2 1 | 0 1 2 ... 31 | 30 29 ...
        i = np.abs(i)
        return np.where(i > 31, 62 - i, i)

    out = np.zeros_like(img, dtype=np.int64)
    for dy, wy in ((0, 32 - fy), (1, fy)):
        for dx, wx in ((0, 32 - fx), (1, fx)):
            out += img[:, reflect101(iy + dy), reflect101(ix + dx)].astype(np.int64) * (wy * wx * 32)
    return np.clip((out + (1 << 14)) >> 15, 0, 255).astype(np.uint8)


def _albumentations_matrix(angle: float, scale: float, dx: float, dy: float) -> np.ndarray:
    """albumentations ShiftScaleRotate: cv2.getRotationMatrix2D(centre, angle, scale), then the shift
    in pixels (the centre (W/2 - 0.5, H/2 - 0.5), as bench's _inverse_affine)."""
    a, b = scale * math.cos(math.radians(angle)), scale * math.sin(math.radians(angle))
    c = 15.5
    return np.array([[a, b, (1 - a) * c - b * c + dx * 32], [-b, a, b * c + (1 - a) * c + dy * 32]])


CASES = [(12.0, 1.07, 0.05, -0.08), (-15.0, 0.9, -0.1, 0.1), (3.3, 1.0, 0.0, 0.02), (0.0, 1.1, 0.031, 0.0)]


def _smooth_images(n: int) -> torch.Tensor:
    """Made-up images with smooth areas and edges, like photos (pixel noise would hide ties and edges)."""
    g = torch.Generator().manual_seed(3)
    coarse = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8).float()
    return F.interpolate(coarse, size=32, mode="bilinear", align_corners=False).round().to(torch.uint8)


@pytest.mark.parametrize("angle,scale,dx,dy", CASES)
def test_opencv_uint8_warp_is_cv2_warpaffine_on_uint8(angle, scale, dx, dy) -> None:
    x = _smooth_images(4)
    z = torch.zeros(len(x), dtype=torch.float64)
    theta = _inverse_affine(z + angle, z + scale, z + dx, z + dy)
    ours = affine_warp(x.float(), theta, "opencv_uint8")
    ref = torch.stack([torch.from_numpy(_opencv_warp_uint8(img.numpy(), _albumentations_matrix(angle, scale, dx, dy)))
                       for img in x]).float()
    assert torch.equal(ours, ours.round()) and ours.min() >= 0 and ours.max() <= 255
    assert torch.equal(ours, ref)
    floating = affine_warp(x.float(), theta)  # the default keeps exact positions and unrounded levels
    assert (floating != floating.round()).float().mean() > 0.5


def test_the_restatement_is_opencv_itself_where_cv2_is_installed() -> None:
    cv2 = pytest.importorskip("cv2", reason="opencv is not installed (an optional oracle; the restatement above stands in)")
    if tuple(int(v) for v in cv2.__version__.split(".")[:2]) >= (4, 11):
        pytest.skip(f"opencv {cv2.__version__} warps in float (new kernels since 4.11); the 2020 runs used "
                    "the fixed-point path of opencv <= 4.10 (checked against opencv-python-headless 4.8.1.78)")
    img = _smooth_images(1)[0].permute(1, 2, 0).contiguous().numpy()  # H x W x C, as albumentations
    for angle, scale, dx, dy in CASES:
        m = _albumentations_matrix(angle, scale, dx, dy)
        theirs = cv2.warpAffine(img, m, (32, 32), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        mine = _opencv_warp_uint8(img.transpose(2, 0, 1).copy(), m).transpose(1, 2, 0)
        np.testing.assert_array_equal(mine, theirs)


def test_opencv_uint8_refuses_normalised_images() -> None:
    with pytest.raises(DataConfigError, match="affine_arithmetic"):
        validate_data(DataConfig(affine_arithmetic="opencv_uint8", pad_order="after_normalize"))


def test_the_loader_warps_with_the_configured_arithmetic() -> None:
    x = _smooth_images(8)
    levels = dict(normalize="channel_mean", mean=(0.0, 0.0, 0.0), pixel_scale="byte", pad=0, flip="none",
                  shift=0.1, scale=0.1, rotate=15.0, affine_p=1.0)  # the batch is the warped 0..255 levels

    def batch(arithmetic: str) -> torch.Tensor:
        cfg = DataConfig(affine_arithmetic=arithmetic, **levels)
        loader = DeviceLoader(x, torch.arange(len(x)), cfg, train=True, batch_size=len(x), stats=normalization_stats(x, cfg))
        return next(loader.epoch(0, 1))[0]

    opencv, floating = batch("opencv_uint8"), batch("float")
    assert torch.equal(opencv, opencv.round())
    assert (floating != floating.round()).any()
    assert (opencv - floating).abs().max() < 9
