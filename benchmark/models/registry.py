"""Named presets, timm style: ``@register`` a tiny function returning a ModelConfig, one per name, so
``grep resnet56`` finds the preset.

Suites may start from a preset and override fields; ``list_models()`` is what ``bench models`` shows.
"""
from __future__ import annotations

from dataclasses import asdict
from functools import lru_cache
from typing import Any, Callable

from benchmark.config import ModelConfig
from benchmark.models.layout import num_blocks, tau_rule
from benchmark.validation import did_you_mean

PRESETS: dict[str, ModelConfig] = {}


def register(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
    """Register ``fn()`` under ``fn.__name__``."""
    if fn.__name__ in PRESETS:
        raise ValueError(f"model preset {fn.__name__!r} registered twice")
    PRESETS[fn.__name__] = fn()
    return fn


def get_preset(name: str) -> ModelConfig:
    """The preset's ModelConfig; KeyError with a did-you-mean suggestion for unknown names."""
    try:
        return PRESETS[name]
    except KeyError:
        close = did_you_mean(name, PRESETS, n=3)
        hint = f"; {close}" if close else f"; known: {', '.join(PRESETS)}"
        raise KeyError(f"unknown model {name!r}{hint}") from None


@lru_cache(maxsize=None)
def _params(name: str) -> int:
    from benchmark.models.resnet import build_model, count_params  # torch: only when counting

    return count_params(build_model(PRESETS[name]))


def list_models() -> list[dict[str, Any]]:
    """One row per preset: name, depth, params (built and counted once, cached) and the main knobs."""
    rows = []
    for name, cfg in PRESETS.items():
        d = asdict(cfg)
        rows.append({"name": name, "depth": cfg.depth, "params": _params(name), "blocks": num_blocks(cfg),
                     **{k: d[k] for k in ("block", "order", "shortcut", "residual_scale", "tau", "norm",
                                          "num_classes")}})
    return rows


def _tau(depth: int) -> float:
    return tau_rule(ModelConfig(depth=depth))


# ----------------------------------------------------------------------------------------------
# He 2016 §4.2, Table 6: post-activation, option A, 6n+2 layers.


@register
def resnet20() -> ModelConfig:
    return ModelConfig(depth=20)


@register
def resnet32() -> ModelConfig:
    return ModelConfig(depth=32)


@register
def resnet44() -> ModelConfig:
    return ModelConfig(depth=44)


@register
def resnet56() -> ModelConfig:
    return ModelConfig(depth=56)


@register
def resnet110() -> ModelConfig:
    return ModelConfig(depth=110)


@register
def resnet1202() -> ModelConfig:
    return ModelConfig(depth=1202)


# Plain counterparts (He 2016 Fig. 6): same layers, no shortcut, exactly the same parameters.


@register
def plain20() -> ModelConfig:
    return ModelConfig(depth=20, shortcut="none")


@register
def plain32() -> ModelConfig:
    return ModelConfig(depth=32, shortcut="none")


@register
def plain44() -> ModelConfig:
    return ModelConfig(depth=44, shortcut="none")


@register
def plain56() -> ModelConfig:
    return ModelConfig(depth=56, shortcut="none")


@register
def plain110() -> ModelConfig:
    return ModelConfig(depth=110, shortcut="none")


# tau-ResNet (dayu11/tau-ResNet resnet_cifar.py): x tau before the addition, BN on the strided
# shortcut; tau = 1/sqrt(L). Depths of the README chart.


@register
def tau_resnet20() -> ModelConfig:
    return ModelConfig(depth=20, residual_scale="tau", tau=_tau(20), shortcut_norm=True)


@register
def tau_resnet32() -> ModelConfig:
    return ModelConfig(depth=32, residual_scale="tau", tau=_tau(32), shortcut_norm=True)


@register
def tau_resnet56() -> ModelConfig:
    return ModelConfig(depth=56, residual_scale="tau", tau=_tau(56), shortcut_norm=True)


@register
def tau_resnet110() -> ModelConfig:
    return ModelConfig(depth=110, residual_scale="tau", tau=_tau(110), shortcut_norm=True)


@register
def tau_resnet1202() -> ModelConfig:
    return ModelConfig(depth=1202, residual_scale="tau", tau=_tau(1202), shortcut_norm=True)


# tau-ResNet without BN (resnet_cifar_nobn.py): scalar biases, one shared learnable tau.


@register
def tau_resnet20_nobn() -> ModelConfig:
    return ModelConfig(depth=20, norm="none", residual_scale="tau", tau=_tau(20),
                       tau_mode="shared_learnable")


@register
def tau_resnet32_nobn() -> ModelConfig:
    return ModelConfig(depth=32, norm="none", residual_scale="tau", tau=_tau(32),
                       tau_mode="shared_learnable")


@register
def tau_resnet56_nobn() -> ModelConfig:
    return ModelConfig(depth=56, norm="none", residual_scale="tau", tau=_tau(56),
                       tau_mode="shared_learnable")


@register
def tau_resnet110_nobn() -> ModelConfig:
    return ModelConfig(depth=110, norm="none", residual_scale="tau", tau=_tau(110),
                       tau_mode="shared_learnable")


@register
def tau_resnet1202_nobn() -> ModelConfig:
    return ModelConfig(depth=1202, norm="none", residual_scale="tau", tau=_tau(1202),
                       tau_mode="shared_learnable")


# ReZero author's notebook: akamaster ResNet (option A, kaiming_normal_ on conv and Linear) with
# out = alpha * relu(F(x)) + x, alpha init 0 per block.


@register
def rezero_resnet20() -> ModelConfig:
    return ModelConfig(depth=20, residual_scale="rezero", init="he_fan_in", init_linear=True)


@register
def rezero_resnet56() -> ModelConfig:
    return ModelConfig(depth=56, residual_scale="rezero", init="he_fan_in", init_linear=True)


@register
def rezero_resnet110() -> ModelConfig:
    return ModelConfig(depth=110, residual_scale="rezero", init="he_fan_in", init_linear=True)


# ----------------------------------------------------------------------------------------------
# He 2016b: full pre-activation units on CIFAR.


@register
def preact_resnet110() -> ModelConfig:
    """He 2016b Table 3 ResNet-110 with pre-activation units (option A as in He 2016)."""
    return ModelConfig(depth=110, order="pre")


@register
def preact_resnet164() -> ModelConfig:
    """He 2016b ResNet-164: bottleneck, widths 64/128/256 out, projection when increasing dims; 1.7M."""
    return ModelConfig(depth=164, block="bottleneck", order="pre", shortcut="B")


@register
def preact_resnet1001() -> ModelConfig:
    """He 2016b ResNet-1001 (333 units); Table 4 prints 10.2M."""
    return ModelConfig(depth=1001, block="bottleneck", order="pre", shortcut="B")


# ----------------------------------------------------------------------------------------------
# kuangliu PreActResNet with ImageNet widths, as used by statsu1990/ReZero-Cifar100 (CIFAR-100).

_KUANGLIU = dict(order="pre", widths=(64, 128, 256, 512), shortcut="B", init="torch_default", final_norm=False,
                 first_unit_shares_preact=False, num_classes=100)


def _preact_imagenet(depth: int, **kw: Any) -> ModelConfig:
    block, stages = ("basic", (2, 2, 2, 2)) if depth == 18 else ("bottleneck", (3, 4, 6, 3))
    return ModelConfig(depth=depth, block=block, stages=stages, **_KUANGLIU, **kw)


@register
def preact_resnet18() -> ModelConfig:
    return _preact_imagenet(18)


@register
def rezero_preact_resnet18() -> ModelConfig:
    return _preact_imagenet(18, residual_scale="rezero")


@register
def tanh_rezero_preact_resnet18() -> ModelConfig:
    return _preact_imagenet(18, residual_scale="tanh_rezero")


@register
def preact_resnet50() -> ModelConfig:
    return _preact_imagenet(50)


@register
def rezero_preact_resnet50() -> ModelConfig:
    return _preact_imagenet(50, residual_scale="rezero")


@register
def tanh_rezero_preact_resnet50() -> ModelConfig:
    return _preact_imagenet(50, residual_scale="tanh_rezero")
