"""Images per second: device-resident batched augmentation vs a classic per-sample DataLoader.

Both pipelines do the He 2016 augmentation (pad 4 + random 32x32 crop + horizontal flip, then
normalise) on the same uint8 images; optionally each batch also goes through a model's forward and
backward pass and an SGD step (ResNet-20 from ``benchmark.models``, or a tiny CNN).

    python benchmarks/pipeline_speed.py --device cuda --n 50000 --batch-size 128 --workers 0 4 --model resnet20
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmark.config import DataConfig  # noqa: E402
from benchmark.data import DeviceLoader, normalization_stats  # noqa: E402
from benchmark.models import build_model, get_preset  # noqa: E402

CFG = DataConfig(normalize="channel_mean_std", mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))


class PerSampleCifar(Dataset):
    """What a torchvision pipeline does, one image at a time: Pad, RandomCrop, RandomHorizontalFlip,
    ToTensor, Normalize (torch ops instead of PIL, which only makes this baseline faster)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, pad: int = 4):
        self.x, self.y, self.pad = x, y, pad
        self.mean = torch.tensor(CFG.mean).view(3, 1, 1)
        self.std = torch.tensor(CFG.std).view(3, 1, 1)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        img = F.pad(self.x[i], (self.pad,) * 4)
        oy, ox = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
        img = img[:, oy:oy + 32, ox:ox + 32]
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        return (img.float() / 255 - self.mean) / self.std, self.y[i]


def tiny_cnn(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(32, num_classes))


def make_model(name: str, device, channels_last: bool):
    if name == "none":
        return None, "none"
    label = name
    model = build_model(get_preset("resnet20")) if name == "resnet20" else tiny_cnn()
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, label


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_epoch(batches, device, model, opt, channels_last: bool, limit: int | None = None) -> int:
    seen = 0
    for i, (x, y) in enumerate(batches):
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if model is not None:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        seen += len(y)
        if limit is not None and i + 1 >= limit:
            break
    sync(device)
    return seen


def timed(make_batches, device, model, opt, channels_last, epochs: int):
    run_epoch(make_batches(-1), device, model, opt, channels_last, limit=3)  # warm-up (workers, kernels)
    t0, seen = time.perf_counter(), 0
    for e in range(epochs):
        seen += run_epoch(make_batches(e), device, model, opt, channels_last)
    dt = time.perf_counter() - t0
    return seen / dt, dt / epochs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n", type=int, default=10000, help="images per epoch (random uint8 CIFAR-shaped data)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs (after a short warm-up)")
    p.add_argument("--workers", type=int, nargs="+", default=[0], help="DataLoader num_workers to try")
    p.add_argument("--model", choices=["none", "tiny", "resnet20", "both"], default="both",
                   help="'both' = data only, then with resnet20")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (a.n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (a.n,), generator=g)

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    print(f"# torch {torch.__version__}, device {device} {gpu}, threads {torch.get_num_threads()}, "
          f"n={a.n}, batch={a.batch_size}, epochs={a.epochs}, channels_last={a.channels_last}")
    print(f"{'pipeline':<28} {'model':<10} {'img/s':>10} {'s/epoch':>9}")
    models = ["none", "resnet20"] if a.model == "both" else [a.model]
    for mname in models:
        results = []
        torch.manual_seed(0)
        model, label = make_model(mname, device, a.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9) if model is not None else None

        stats = normalization_stats(x, CFG)
        dev = DeviceLoader(x, y, CFG, train=True, batch_size=a.batch_size, device=device, stats=stats,
                           channels_last=a.channels_last)
        results.append(("device-resident", *timed(lambda e: dev.epoch(0, max(e, 0)), device, model, opt,
                                                   a.channels_last, a.epochs)))
        ds = PerSampleCifar(x, y)
        for w in a.workers:
            dl = DataLoader(ds, batch_size=a.batch_size, shuffle=True, num_workers=w,
                            pin_memory=device.type == "cuda", persistent_workers=w > 0)
            results.append((f"DataLoader workers={w}", *timed(lambda e, dl=dl: iter(dl), device, model, opt,
                                                              a.channels_last, a.epochs)))
            del dl
        for name, ips, spe in results:
            print(f"{name:<28} {label:<10} {ips:>10,.0f} {spe:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
