"""A fully resolved job: every protocol choice as a typed, frozen field.

"Protocol is data" (DESIGN.md): each silent choice a paper or a repository makes (normalisation
constants, padding mode, flips, shortcut type, schedule unit, warm-up rule, which parameters get
weight decay) is a field here, stored with the results and shown next to the number it produced.

The suite parser validates TOML against these dataclasses by introspection: a field's type hint
(``Literal[...]``, ``int``, ``tuple[float, ...]``, ...) *is* the schema (``benchmark.validation.convert``),
so adding a knob means adding a field here and nowhere else. Rules on values live beside the fields:
each section's ``check()`` (and its ``RULES`` table of single-field ranges); the model's, which need
the layout arithmetic, are ``benchmark.models.validate``. Keep every field documented with the paper
detail it encodes.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from functools import cached_property
from typing import Any, ClassVar, Literal

from benchmark.errors import UserError
from benchmark.validation import Rule, broken_rules

# ----------------------------------------------------------------------------------------------
# Model: one CIFAR ResNet family (He 2016 §4.2) whose knobs cover every seed variant.

Block = Literal["basic", "bottleneck"]
Order = Literal["post", "pre"]  # post-activation (He 2016) or full pre-activation (He 2016b)
Shortcut = Literal["A", "B", "none"]  # A: zero-padded identity; B: 1x1 projection; none: plain net
ShortcutPool = Literal["stride", "avg"]
ShortcutZeros = Literal["split", "after"]  # how option A subsamples: x[..., ::2, ::2] or 2x2 average
ResidualScale = Literal["none", "tau", "rezero", "tanh_rezero"]
TauMode = Literal["fixed", "shared_learnable"]  # tau-ResNet BN code: fixed float; no-BN code: one shared nn.Parameter
# fixup: no normalisation, Zhang et al. 2019 (arXiv:1901.09321) scalar biases and multiplier and their
# initialisation, as tbachlechner/Fixup (upstream hongyi-zhang/Fixup) e57b6c0 cifar/models/fixup_resnet_cifar.py.
Norm = Literal["batchnorm", "none", "fixup"]
Init = Literal["he_fan_out", "he_fan_in", "torch_default"]


@dataclass(frozen=True)
class ModelConfig:
    # Depth counts weighted layers: 6n+2 for basic blocks, 9n+2 for bottleneck blocks (He 2016 §4.2,
    # He 2016b). When ``stages`` is given it wins and depth is only a label (PreAct-18 = [2,2,2,2]).
    depth: int = 20
    block: Block = "basic"
    order: Order = "post"
    shortcut: Shortcut = "A"
    shortcut_pool: ShortcutPool = "stride"  # techxzen uses avg_pool2d(2); akamaster strides
    shortcut_norm: bool = False  # tau-ResNet/Fixup code puts a BatchNorm on the downsampling shortcut
    widths: tuple[int, ...] = (16, 32, 64)  # He 2016 CIFAR; PreAct-18/50 for CIFAR-100 use (64,128,256,512)
    stages: tuple[int, ...] | None = None  # blocks per stage; None -> n = (depth-2)/6 (or /9) each
    residual_scale: ResidualScale = "none"
    tau: float | None = None  # resolved value when residual_scale == "tau" (suite may write "1/sqrt(L)")
    tau_mode: TauMode = "fixed"
    norm: Norm = "batchnorm"
    init: Init = "he_fan_out"  # He 2015 normal(0, sqrt(2/n)), n = k*k*out_channels (He 2016 §3.4)
    init_linear: bool = False  # Lab1 report and akamaster also Kaiming-init the final Linear layer
    conv_bias: bool = False  # techxzen leaves PyTorch's default bias=True on every conv
    final_norm: bool = True  # pre-activation: extra BN-ReLU after the last unit (He 2016b appendix)
    # Pre-activation: He 2016b appendix "the first unit takes the activation right after conv1, before
    # splitting into two paths", so its shortcut sees BN-ReLU(stem) too. kuangliu PreActResNet
    # (ReZero-Cifar100) shares the pre-activation only when the shape changes (False).
    first_unit_shares_preact: bool = True
    zero_init_last_norm: bool = False  # "zero gamma" (Goyal et al.), as in tbachlechner/Fixup resnet_cifar.py
    num_classes: int = 10  # resolved from the dataset by the suite parser
    # Fields added after key version 1 (THE RULE below: their defaults are what bench did before).
    # BatchNorm statistics per device under nn.DataParallel (He 2016 trained on 2 GPUs): in training,
    # the batch is cut as ``torch.chunk(x, bn_splits)`` (DataParallel's scatter) and each piece is
    # normalised with its own mean and variance. The running averages follow PyTorch's BatchNorm update
    # from the FIRST piece only: DataParallel keeps only device 0's in-place buffer updates (the other
    # replicas' are discarded). 1 = statistics over the whole batch (one device), as before.
    bn_splits: int = 1
    # Option A's zero channels: half before and half after the input's (akamaster F.pad(planes//4,
    # planes//4)), or all after it (tbachlechner/Fixup torch.cat((identity, zeros_like(identity)), 1)).
    shortcut_zeros: ShortcutZeros = "split"


# ----------------------------------------------------------------------------------------------
# Data: readers, splits and the device-resident augmentation pipeline.

Dataset = Literal["cifar10", "cifar100", "synthetic"]
NUM_CLASSES: dict[str, int] = {"cifar10": 10, "cifar100": 100, "synthetic": 10}
Normalize = Literal["per_pixel_mean", "channel_mean", "channel_mean_std"]
PadMode = Literal["zeros", "edge", "reflect"]
# Zero padding before normalising pads black (torchvision Pad/RandomCrop before Normalize); after
# normalising, the zeros are the mean colour (fb.resnet.torch cifar10.lua: the data set is normalised
# once, then RandomCrop pads the normalised tensor with zeros).
PadOrder = Literal["before_normalize", "after_normalize"]
PixelScale = Literal["unit", "byte"]  # normalise x/255 (0..1) or x itself (0..255, techxzen run.py)
# How ShiftScaleRotate resamples: in float32 (bilinear at exact positions, not rounded), or as
# cv2.warpAffine (INTER_LINEAR) does on a uint8 image, which is what albumentations calls on the
# np.uint8 CIFAR arrays of statsu1990/ReZero-Cifar100: positions at 1/32 pixel, result rounded to 0..255.
AffineArithmetic = Literal["float", "opencv_uint8"]
Flip = Literal["none", "horizontal", "any"]  # any = albumentations Flip: horizontal, vertical or both


@dataclass(frozen=True)
class DataConfig:
    dataset: Dataset = "cifar10"
    train_size: int | None = None  # use only the first N training images (quick runs); None = all
    test_size: int | None = None  # likewise for the test set
    val_size: int = 0  # carve a deterministic validation split off the training set (He 2016: 5000)
    # He 2016 §4.2 subtracts the per-pixel mean; most repositories use per-channel constants.
    normalize: Normalize = "per_pixel_mean"
    mean: tuple[float, ...] | None = None  # per-channel, on the 0..1 scale; None = computed from train
    std: tuple[float, ...] | None = None
    pad: int = 4  # "4 pixels are padded on each side, and a 32x32 crop is randomly sampled" (§4.2)
    pad_mode: PadMode = "zeros"
    flip: Flip = "horizontal"
    flip_p: float = 0.5
    # albumentations ShiftScaleRotate (ReZero-Cifar100): limits and probability; 0 disables.
    shift: float = 0.0  # fraction of the image size
    scale: float = 0.0  # relative, e.g. 0.1 -> factor in [0.9, 1.1]
    rotate: float = 0.0  # degrees
    affine_p: float = 0.0
    synthetic_train: int = 2000  # synthetic dataset sizes (deterministic, learnable)
    synthetic_test: int = 500
    # Fields added after key version 1 (defaults: what bench did before).
    pad_order: PadOrder = "before_normalize"  # see PadOrder; matters for zeros padding (and per_pixel_mean)
    # "byte": (x - 255 * mean) / std on 0..255 pixels, e.g. techxzen ToTensor, mul(255),
    # Normalize((125, 123, 114), (1, 1, 1)): inputs 255x larger than on the 0..1 scale.
    pixel_scale: PixelScale = "unit"
    affine_arithmetic: AffineArithmetic = "float"  # see AffineArithmetic; used when affine_p > 0

    def check(self) -> list[tuple[str, str]]:
        """(field, what is wrong) for every rule this config breaks that needs no data (torch-free, so
        ``bench validate`` and the suite parser can call it; the pipeline relies on these rules)."""
        p: list[tuple[str, str]] = []
        if self.pad < 0:
            p.append(("pad", f"{self.pad} is not allowed; expected 0 or more pixels"))
        if self.pad_mode == "reflect" and self.pad > MAX_REFLECT_PAD:
            p.append(("pad", f"{self.pad} is too large for pad_mode = 'reflect' (at most {MAX_REFLECT_PAD})"))
        for name in ("flip_p", "affine_p"):
            if not 0 <= getattr(self, name) <= 1:
                p.append((name, f"{getattr(self, name)} is not allowed; expected a probability in [0, 1]"))
        for name in ("shift", "scale", "rotate"):
            if getattr(self, name) < 0:
                p.append((name, f"{getattr(self, name)} is not allowed; expected a limit of 0 or more"))
        if self.affine_arithmetic == "opencv_uint8" and self.pad_order == "after_normalize":
            p.append(("affine_arithmetic", "'opencv_uint8' rounds the warped pixels to 0..255, but with "
                                           "pad_order = 'after_normalize' the warp sees normalised images"))
        if self.normalize == "per_pixel_mean" and (self.mean is not None or self.std is not None):
            p.append(("mean", "mean/std are not used with normalize = 'per_pixel_mean' (the mean image is "
                              "computed from the training split); remove them or use channel_mean[_std]"))
        if self.normalize == "channel_mean" and self.std is not None:
            p.append(("std", "normalize = 'channel_mean' does not divide; remove std or use 'channel_mean_std'"))
        if self.normalize == "channel_mean_std" and (self.mean is None) != (self.std is None):
            p.append(("mean", "give both mean and std, or neither (then they are computed from the training set)"))
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is not None and len(v) != 3:
                p.append((name, f"{list(v)} is not allowed; expected 3 values (R, G, B) on the 0..1 scale"))
        if self.std is not None and any(s <= 0 for s in self.std):
            p.append(("std", f"{list(self.std)} is not allowed; every value must be positive"))
        # Sizes known before any file is read (the readers still check the real files).
        synthetic = self.dataset == "synthetic"
        if synthetic:
            for name in ("synthetic_train", "synthetic_test"):
                if getattr(self, name) <= 0:
                    p.append((name, f"{getattr(self, name)} is not allowed; expected a positive number of images"))
        n_train = self.synthetic_train if synthetic else CIFAR_TRAIN_IMAGES
        n_test = self.synthetic_test if synthetic else CIFAR_TEST_IMAGES
        if not 0 <= self.val_size < n_train:
            p.append(("val_size", f"{self.val_size} is not allowed; expected 0 up to {n_train - 1} "
                                  f"(the {self.dataset} training set has {n_train} images)"))
        elif self.train_size is not None and not 0 < self.train_size <= n_train - self.val_size:
            p.append(("train_size", f"{self.train_size} is not allowed; expected 1 up to {n_train - self.val_size} "
                                    f"({n_train} training images less val_size = {self.val_size})"))
        if self.test_size is not None and not 0 < self.test_size <= n_test:
            p.append(("test_size", f"{self.test_size} is not allowed; expected 1 up to {n_test} test images"))
        return p


# Official training / test set sizes (CIFAR-10 and CIFAR-100 alike).
CIFAR_TRAIN_IMAGES = 50_000
CIFAR_TEST_IMAGES = 10_000
MAX_REFLECT_PAD = 31  # reflect padding mirrors without repeating the border: at most 32 - 1 pixels


class DataConfigError(UserError, ValueError):
    """A DataConfig breaks a rule that needs no data. ``problems``: (field, what is wrong) pairs."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"data.{k}: {m}" for k, m in problems))


def validate_data(cfg: DataConfig) -> None:
    """Refuse a data config that could only fail once a job runs. Raises :class:`DataConfigError`
    listing every problem (:meth:`DataConfig.check`)."""
    problems = cfg.check()
    if problems:
        raise DataConfigError(problems)


# ----------------------------------------------------------------------------------------------
# Optimisation and schedule.

WeightDecayOn = Literal["all", "weights_only"]  # weights_only: no decay on biases, norms, alpha, tau
ScheduleUnit = Literal["epoch", "iteration"]
# linear: step i (0-based) of the warm-up uses lr * i / N (the first step at 0).
# linear_pre_step: lr * (i + 1) / N, a warm-up scheduler stepped BEFORE optimizer.step() (statsu1990
# ReZero-Cifar100 src/train/training.py: warmup_scheduler.step() precedes the batch).
Warmup = Literal["none", "constant", "linear", "until_error", "linear_pre_step"]
# Which parameters get ``scalar_lr_scale``: one-element tensors; every bias (a module's ``bias``
# attribute: BN betas, conv/Linear biases, scalar biases); or names containing one of
# ``lr_scale_names`` (the Fixup code's test ``'bias' in name``, ``'scale' in name``).
LrScaleOn = Literal["scalars", "biases", "names"]
# How the scaled groups follow the milestones: "same" (lr * scale * gamma^k); "first_milestone_final"
# (the tbachlechner/Fixup adjust_learning_rate elif bug from c821673: past the first milestone the
# scaled groups jump straight to the final factor gamma^len(milestones)).
LrScaleSchedule = Literal["same", "first_milestone_final"]


@dataclass(frozen=True)
class OptimConfig:
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    weight_decay_on: WeightDecayOn = "all"
    scalar_lr_scale: float = 1.0  # Fixup/tau-ResNet code: scalar biases and tau train at lr/10
    # Fields added after key version 1 (defaults: what bench did before).
    lr_scale_on: LrScaleOn = "scalars"
    lr_scale_names: tuple[str, ...] = ()  # substrings of parameter names, for lr_scale_on = "names"
    lr_scale_schedule: LrScaleSchedule = "same"
    # Momentum buffers emptied when a milestone is reached (techxzen run.py builds a new SGD at 32k and
    # 48k); False keeps them, as one optimiser for the whole run.
    reset_momentum_at_milestones: bool = False

    RULES: ClassVar[dict[str, Rule]] = {
        "batch_size": Rule("> 0", lambda v: v > 0),
        "lr": Rule(">= 0", lambda v: v >= 0),
        "momentum": Rule("in [0, 1)", lambda v: 0 <= v < 1),
        "weight_decay": Rule(">= 0", lambda v: v >= 0),
        "scalar_lr_scale": Rule(">= 0", lambda v: v >= 0),
    }

    def check(self) -> list[tuple[str, str]]:
        """(field, what is wrong) for every rule this config breaks."""
        p = []
        if (self.lr_scale_on == "names") != bool(self.lr_scale_names):
            p.append(("lr_scale_names", "give lr_scale_names (name substrings, e.g. [\"bias\"]) exactly when "
                                        "lr_scale_on = 'names'"))
        return p + _range_problems(self, self.RULES)


@dataclass(frozen=True)
class ScheduleConfig:
    unit: ScheduleUnit = "iteration"
    length: int = 64_000  # in ``unit``; He 2016 §4.2: "terminated at 64k iterations"
    milestones: tuple[int, ...] = (32_000, 48_000)  # in ``unit``
    gamma: float = 0.1
    # Warm-up. constant: ``warmup_lr`` for ``warmup_length`` iterations (He 2016b: 0.01 for 400 it);
    # linear / linear_pre_step: a ramp to lr over ``warmup_length`` iterations, from 0 or from lr/N (see
    # Warmup; ReZero-Cifar100: linear_pre_step over one epoch);
    # until_error: ``warmup_lr`` until the running training error drops below ``warmup_until_error``
    # (He 2016 §4.2 ResNet-110: 0.01 "until the training error is below 80% (about 400 iterations)").
    warmup: Warmup = "none"
    warmup_lr: float = 0.01
    warmup_length: int = 0  # iterations
    warmup_until_error: float = 0.8

    RULES: ClassVar[dict[str, Rule]] = {
        "gamma": Rule("> 0", lambda v: v > 0),
        "warmup_lr": Rule(">= 0", lambda v: v >= 0),
        "warmup_length": Rule(">= 0", lambda v: v >= 0),
        "warmup_until_error": Rule("in (0, 1]", lambda v: 0 < v <= 1),
    }

    def check(self) -> list[tuple[str, str]]:
        """(field, what is wrong) for every rule this schedule breaks."""
        p = []
        if self.length <= 0:
            p.append(("length", f"{self.length} is not allowed; expected a positive number of {self.unit}s"))
        if list(self.milestones) != sorted(self.milestones) or any(m <= 0 or m > self.length for m in self.milestones):
            p.append(("milestones", f"{list(self.milestones)} is not allowed; expected increasing {self.unit}s in "
                                    f"1..{self.length}"))
        if self.warmup in ("constant", "linear", "linear_pre_step") and self.warmup_length <= 0:
            p.append(("warmup_length", f"warmup = {self.warmup!r} needs warmup_length > 0 (iterations)"))
        return p + _range_problems(self, self.RULES)


def _range_problems(cfg: Any, rules: dict[str, Rule]) -> list[tuple[str, str]]:
    return [(name, f"{value!r} is not allowed; expected {allowed}")
            for name, value, allowed in broken_rules(cfg, rules)]


Precision = Literal["fp32", "bf16"]


@dataclass(frozen=True)
class RuntimeConfig:
    """Speed options. They can change numerics slightly, so they are part of the job key."""

    channels_last: bool = False
    precision: Precision = "fp32"
    compile: bool = False


# ----------------------------------------------------------------------------------------------
# Job identity. A job's key must never move when the code grows (DESIGN.md "Identity and
# provenance"): the database, the checkpoints and every report find a result by it.
#
# THE RULE. The key hashes every field below (key version 1, the fields bench had when keys were
# first issued), plus every field added since *only when its value differs from its declared
# default*. Therefore:
#   1. a new field's default must mean exactly what the code did before the field existed;
#   2. a default never changes meaning, and a field is never removed or renamed (deprecate it: keep
#      it, with its default);
#   3. this list is never edited.
# tests/test_job_identity.py pins the keys of fixed specs as literal strings, and checks that a new
# field at its default moves no key.
KEY_V1_FIELDS: frozenset[str] = frozenset(
    ["seed", "model", "data", "optim", "schedule", "runtime"]
    + [f"model.{n}" for n in (
        "depth", "block", "order", "shortcut", "shortcut_pool", "shortcut_norm", "widths", "stages",
        "residual_scale", "tau", "tau_mode", "norm", "init", "init_linear", "conv_bias", "final_norm",
        "first_unit_shares_preact", "zero_init_last_norm", "num_classes")]
    + [f"data.{n}" for n in (
        "dataset", "train_size", "test_size", "val_size", "normalize", "mean", "std", "pad",
        "pad_mode", "flip", "flip_p", "shift", "scale", "rotate", "affine_p", "synthetic_train",
        "synthetic_test")]
    + [f"optim.{n}" for n in (
        "batch_size", "lr", "momentum", "nesterov", "weight_decay", "weight_decay_on", "scalar_lr_scale")]
    + [f"schedule.{n}" for n in (
        "unit", "length", "milestones", "gamma", "warmup", "warmup_lr", "warmup_length",
        "warmup_until_error")]
    + [f"runtime.{n}" for n in ("channels_last", "precision", "compile")]
)


def _default(f) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


@functools.cache  # a report keys every stored job: fields() and the defaults once per class, not per job
def _identity_fields(cls: type, prefix: str) -> tuple[tuple[str, bool, Any], ...]:
    """(field name, versioned: in KEY_V1_FIELDS, default) of each field of the dataclass ``cls``."""
    return tuple((f.name, prefix + f.name in KEY_V1_FIELDS, _default(f)) for f in fields(cls))


def identity(obj: Any, prefix: str = "") -> dict[str, Any]:
    """The part of a config dataclass that its key hashes (THE RULE above), as plain JSON data."""
    out: dict[str, Any] = {}
    for name, versioned, default in _identity_fields(type(obj), prefix):
        value = getattr(obj, name)
        if is_dataclass(value):  # the value, as before the cache: a section is whatever holds one
            value = identity(value, f"{prefix}{name}.")
            if not value and not versioned:
                continue  # a whole new section, all at its defaults
        elif not versioned and value == default:
            continue
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


@dataclass(frozen=True)
class JobSpec:
    """One training run: everything needed to reproduce it, and nothing else."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Every field, as stored with the job (``jobs.config``)."""
        return asdict(self)

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @cached_property  # frozen, so computed once (cached_property writes __dict__ directly)
    def key(self) -> str:
        """Stable identity of the run: a hash of its identity (see THE RULE above)."""
        text = json.dumps(identity(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @cached_property
    def cell_key(self) -> str:
        """Identity of the configuration without its seed: the rows of a comparison table."""
        return replace(self, seed=0).key

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "JobSpec":
        return from_dict(cls, d)


def from_dict(cls: type, d: dict[str, Any]) -> Any:
    """Rebuild a (nested) config dataclass from ``asdict`` output, turning lists back into tuples.

    For stored configs only: user input goes through ``benchmark.suite``, which validates. A field
    this code does not know (a config written by a newer bench) is refused, never dropped: dropping
    it would silently turn the job into another one.
    """
    unknown = sorted(set(d) - {f.name for f in fields(cls)})
    if unknown:
        raise UserError(f"a stored {cls.__name__} has field(s) {', '.join(unknown)} that this bench does "
                        "not know: it was written by a newer bench; update bench (git pull && pip install -e .)")
    kwargs = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        v = d[f.name]
        sub = SECTIONS.get(f.name) if cls is JobSpec else None
        if sub is not None:
            v = from_dict(sub, v)
        elif isinstance(v, list):
            v = tuple(v)
        kwargs[f.name] = v
    return cls(**kwargs)


# The sections of a job, as suite files and stored configs name them.
SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "runtime": RuntimeConfig,
}
