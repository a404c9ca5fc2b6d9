"""Training throughput of real jobs: images/second and seconds per epoch, through `benchmark.train`.

    .venv/bin/python benchmarks/train_speed.py                       # ResNet-20 on the CPU
    .venv/bin/python benchmarks/train_speed.py --device cuda --images 50000 --models resnet20 resnet110 \
        --precision bf16 --channels-last

Each model trains ``--epochs`` epochs on synthetic CIFAR-shaped data (same tensor sizes as CIFAR) with
the He 2016 protocol; the first epoch includes warm-up costs (allocator, cuDNN autotuning, compile),
so the figure printed is the best epoch's.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmark.config import NUM_CLASSES, DataConfig, JobSpec, OptimConfig, RuntimeConfig, ScheduleConfig  # noqa: E402
from benchmark.models import get_preset  # noqa: E402
from benchmark.train import train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet20"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: torch's choice]")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"device {args.device}, {args.images} images/epoch, batch {args.batch_size}, {args.precision}, "
          f"channels_last={args.channels_last}, compile={args.compile}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    for name in args.models:
        spec = JobSpec(
            model=get_preset(name),
            data=DataConfig(dataset="synthetic", synthetic_train=args.images, synthetic_test=1000),
            optim=OptimConfig(batch_size=args.batch_size),
            schedule=ScheduleConfig(unit="epoch", length=args.epochs, milestones=()),
            runtime=RuntimeConfig(channels_last=args.channels_last, precision=args.precision, compile=args.compile),
        )
        spec = replace(spec, model=replace(spec.model, num_classes=NUM_CLASSES["synthetic"]))
        history = train(spec, device=args.device).history
        best = max(history, key=lambda m: m["images_per_second"])
        per_epoch = ", ".join(f"{m['images_per_second']:.0f}" for m in history)
        print(f"{name:>12}: {best['images_per_second']:8.0f} images/s training, "
              f"{best['seconds']:6.2f} s/epoch incl. evaluation (per epoch: {per_epoch} images/s)")


if __name__ == "__main__":
    main()
