"""Shape arithmetic and validation of a ModelConfig, without torch.

Kept apart from the network code so that parsing a suite (which checks every job's model and
resolves tau = 1/sqrt(L)) and rendering reports never pay for importing torch.
"""
from __future__ import annotations

import math

from benchmark.config import ModelConfig
from benchmark.errors import UserError

BOTTLENECK_EXPANSION = 4  # He 2016 §4.1 / He 2016b ResNet-164: 1x1 reduce, 3x3, 1x1 expand x4


class ModelConfigError(UserError, ValueError):
    """A ModelConfig that does not describe a buildable network; the message says how to fix it."""


# ----------------------------------------------------------------------------------------------
# Validation and shape arithmetic


def _layers_per_block(cfg: ModelConfig) -> int:
    return 3 if cfg.block == "bottleneck" else 2


def stage_sizes(cfg: ModelConfig) -> tuple[int, ...]:
    """Blocks per stage. From ``depth`` = (2 or 3) * n * stages + 2 when ``stages`` is None."""
    per = _layers_per_block(cfg)
    n_stages = len(cfg.widths)
    if n_stages < 1 or any(w < 1 for w in cfg.widths):
        raise ModelConfigError(f"widths must be positive and non-empty, got {cfg.widths}")
    if cfg.stages is not None:
        if len(cfg.stages) != n_stages or any(s < 1 for s in cfg.stages):
            raise ModelConfigError(
                f"stages {cfg.stages} must give one positive block count per width in {cfg.widths}")
        expected = per * sum(cfg.stages) + 2
        if cfg.depth != expected:
            raise ModelConfigError(
                f"depth {cfg.depth} does not match stages {cfg.stages} with {cfg.block} blocks "
                f"({per} layers each + stem + fc = {expected}); set depth = {expected}")
        return tuple(cfg.stages)
    step = per * n_stages  # 6 for basic, 9 for bottleneck with three stages
    if cfg.depth < step + 2 or (cfg.depth - 2) % step:
        lo = max(step + 2, (cfg.depth - 2) // step * step + 2)
        hi = ((cfg.depth - 2) // step + 1) * step + 2
        nearby = sorted({lo, hi})
        raise ModelConfigError(
            f"depth {cfg.depth} is not {step}n+2 for {cfg.block} blocks with {n_stages} stages; "
            f"valid nearby: {', '.join(map(str, nearby))}")
    return ((cfg.depth - 2) // step,) * n_stages


def num_blocks(cfg: ModelConfig) -> int:
    """L, the number of residual blocks (54 for ResNet-110); tau-ResNet sets tau = 1/sqrt(L)."""
    return sum(stage_sizes(cfg))


def tau_rule(cfg: ModelConfig, c: float = 1.0) -> float:
    """tau = c/sqrt(L), L = number of residual blocks (tau-ResNet README: 0.136 for ResNet-110)."""
    return c / math.sqrt(num_blocks(cfg))


def validate(cfg: ModelConfig) -> None:
    """Raise ModelConfigError for knob combinations no source builds (or that are silently ignored)."""
    stage_sizes(cfg)
    err = ModelConfigError
    scaled = cfg.residual_scale in ("rezero", "tanh_rezero")
    if cfg.num_classes < 1:
        raise err(f"num_classes must be >= 1, got {cfg.num_classes}")
    if cfg.residual_scale == "tau":
        if cfg.tau is None:
            raise err("residual_scale='tau' needs tau (e.g. 1/sqrt(L) = "
                      f"{tau_rule(cfg):.4f} for L = {num_blocks(cfg)} blocks)")
        if not cfg.tau > 0:
            raise err(f"tau must be > 0, got {cfg.tau}")
    else:
        if cfg.tau is not None:
            raise err(f"tau={cfg.tau} is set but residual_scale is {cfg.residual_scale!r}; use residual_scale='tau'")
        if cfg.tau_mode != "fixed":
            raise err(f"tau_mode={cfg.tau_mode!r} needs residual_scale='tau'")
    if scaled and cfg.shortcut == "none":
        raise err(f"residual_scale={cfg.residual_scale!r} with shortcut='none': alpha=0 would zero every block")
    if cfg.shortcut_norm and cfg.shortcut != "A":
        raise err("shortcut_norm (BatchNorm on the option-A shortcut, tau-ResNet code) needs shortcut='A'")
    if cfg.shortcut_pool != "stride" and cfg.shortcut != "A":
        raise err("shortcut_pool only applies to option A; set shortcut='A' or shortcut_pool='stride'")
    if cfg.order == "post":
        if not cfg.final_norm:
            raise err("final_norm=False only applies to order='pre' (post-activation ends with ReLU)")
        if not cfg.first_unit_shares_preact:
            raise err("first_unit_shares_preact only applies to order='pre'")
    if cfg.norm == "none":
        # Only the tau-ResNet no-BN network (resnet_cifar_nobn.py) is built without normalisation.
        if cfg.order != "post" or cfg.block != "basic":
            raise err("norm='none' is the tau-ResNet no-BN block: needs order='post' and block='basic'")
        if scaled:
            raise err(f"residual_scale={cfg.residual_scale!r} with norm='none' is not implemented "
                      "(no source for a no-BN ReZero CIFAR block here); use residual_scale='tau'")
        if cfg.shortcut_norm or cfg.zero_init_last_norm:
            raise err("norm='none' has no BatchNorm: shortcut_norm and zero_init_last_norm must be False")
    if cfg.norm == "fixup":
        # Only the Fixup fork's CIFAR network (fixup_resnet_cifar.py) is built.
        if (cfg.order, cfg.block, cfg.shortcut, cfg.residual_scale) != ("post", "basic", "A", "none"):
            raise err("norm='fixup' is the Fixup CIFAR block: needs order='post', block='basic', shortcut='A' "
                      "and residual_scale='none' (its multiplier is built in)")
        if cfg.shortcut_norm or cfg.zero_init_last_norm or cfg.init_linear:
            raise err("norm='fixup' has its own init and no BatchNorm: shortcut_norm, zero_init_last_norm "
                      "and init_linear must be False")
    if cfg.zero_init_last_norm and cfg.shortcut == "none":
        raise err("zero_init_last_norm with shortcut='none' makes every plain block output zero")
    if cfg.init_linear and cfg.init == "torch_default":
        raise err("init_linear=True needs init='he_fan_in' or 'he_fan_out'")
    if cfg.bn_splits < 1:
        raise err(f"bn_splits must be >= 1 (the number of devices the batch is split across), got {cfg.bn_splits}")
    if cfg.bn_splits > 1 and cfg.norm != "batchnorm":
        raise err(f"bn_splits > 1 splits BatchNorm statistics, but norm={cfg.norm!r} has no BatchNorm")
