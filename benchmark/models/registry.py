"""Named presets, timm style: ``@register`` a tiny function returning a ModelConfig.

Suites may start from a preset and override fields; ``list_models()`` is what ``bench models`` shows.
"""
from __future__ import annotations

import difflib
from dataclasses import asdict
from functools import lru_cache
from typing import Any, Callable

from benchmark.config import ModelConfig
from benchmark.models.layout import num_blocks, tau_rule

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
        close = difflib.get_close_matches(name, PRESETS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(PRESETS)}"
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


def _resnet(depth: int, **kw: Any) -> Callable[[], ModelConfig]:
    return lambda: ModelConfig(depth=depth, **kw)


def _named(name: str, make: Callable[[], ModelConfig]) -> None:
    make.__name__ = name
    register(make)


for _d in (20, 32, 44, 56, 110, 1202):
    _named(f"resnet{_d}", _resnet(_d))
# Plain counterparts (He 2016 Fig. 6): same layers, no shortcut, exactly the same parameters.
for _d in (20, 32, 44, 56, 110):
    _named(f"plain{_d}", _resnet(_d, shortcut="none"))
# tau-ResNet (dayu11/tau-ResNet resnet_cifar.py): x tau before the addition, BN on the strided
# shortcut; tau = 1/sqrt(L). Depths of the README chart.
for _d in (20, 32, 56, 110, 1202):
    _named(f"tau_resnet{_d}", _resnet(_d, residual_scale="tau", tau=_tau(_d), shortcut_norm=True))
# tau-ResNet without BN (resnet_cifar_nobn.py): scalar biases, one shared learnable tau.
for _d in (20, 32, 56, 110, 1202):
    _named(f"tau_resnet{_d}_nobn", _resnet(_d, norm="none", residual_scale="tau", tau=_tau(_d),
                                           tau_mode="shared_learnable"))
# ReZero author's notebook: akamaster ResNet (option A, kaiming_normal_ on conv and Linear) with
# out = alpha * relu(F(x)) + x, alpha init 0 per block.
for _d in (20, 56, 110):
    _named(f"rezero_resnet{_d}", _resnet(_d, residual_scale="rezero", init="he_fan_in", init_linear=True))


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


for _d in (18, 50):
    _named(f"preact_resnet{_d}", lambda d=_d: _preact_imagenet(d))
    _named(f"rezero_preact_resnet{_d}", lambda d=_d: _preact_imagenet(d, residual_scale="rezero"))
    _named(f"tanh_rezero_preact_resnet{_d}", lambda d=_d: _preact_imagenet(d, residual_scale="tanh_rezero"))
