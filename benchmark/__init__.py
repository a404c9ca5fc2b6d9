"""bench: a reproducibility benchmark for residual networks on CIFAR."""
