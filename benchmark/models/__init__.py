"""One CIFAR ResNet family whose ModelConfig knobs cover every seed variant, and a preset registry.

The network code (and so torch) loads on first use of ``build_model`` and friends: suites are parsed
and reports rendered without importing torch (PEP 562 module ``__getattr__``).
"""
from importlib import import_module

from benchmark.models.layout import ModelConfigError, num_blocks, stage_sizes, tau_rule, validate
from benchmark.models.registry import PRESETS, get_preset, list_models, register

_TORCH_BACKED = {"CifarResNet", "build_model", "count_params", "residual_scales"}

__all__ = ["CifarResNet", "ModelConfigError", "PRESETS", "build_model", "count_params", "get_preset",
           "list_models", "num_blocks", "register", "residual_scales", "stage_sizes", "tau_rule", "validate"]


def __getattr__(name: str):
    if name in _TORCH_BACKED:
        return getattr(import_module("benchmark.models.resnet"), name)
    raise AttributeError(f"module 'benchmark.models' has no attribute {name!r}")
