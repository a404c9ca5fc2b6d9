"""One CIFAR ResNet family whose ModelConfig knobs cover every seed variant, and a preset registry."""
from benchmark.models.registry import PRESETS, get_preset, list_models, register
from benchmark.models.resnet import (CifarResNet, ModelConfigError, build_model, count_params, num_blocks,
                                     residual_scales, validate)

__all__ = ["CifarResNet", "ModelConfigError", "PRESETS", "build_model", "count_params", "get_preset",
           "list_models", "num_blocks", "register", "residual_scales", "validate"]
