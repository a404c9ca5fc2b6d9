"""Is bench faster than the training loop people already have? One process, interleaved rounds.

For each model, every round measures, in turn:

- **classic**: the akamaster/pytorch_resnet_cifar10 loop: a per-sample ``Dataset`` (pad, random crop,
  flip, normalise, one image at a time; torch ops instead of PIL, which only makes it faster) behind a
  ``DataLoader(num_workers=2, shuffle=True)``, fp32 NCHW, ``loss.item()`` and the batch accuracy read
  every step as its ``train()`` does;
- **ceiling** at each runtime: the model alone on one fixed, already normalised batch (forward,
  loss, backward, SGD step, nothing else): what no input pipeline can beat;
- **bench** at each runtime: ``benchmark.train.train`` on a 2-epoch synthetic job, as a worker runs
  it (``on_step`` reporting included); its second epoch's images/s (the first pays the warm-up:
  allocator, oneDNN/cuDNN primitives, ``torch.compile``).

Rounds alternate the variants, so a machine whose load changes during the run slows them alike; the
table shows the median over rounds, bench's ratio to the classic loop, and the input pipeline's
overhead: 1 - bench / ceiling at the same runtime.

    .venv/bin/python benchmarks/train_speed.py                          # ResNet-20 on the CPU
    .venv/bin/python benchmarks/train_speed.py --threads 1 --rounds 5
    .venv/bin/python benchmarks/train_speed.py --device cuda --images 50000 --rounds 1 \\
        --models resnet20 resnet56 resnet110 --runtimes fp32 tf32 bf16 bf16+channels_last+compile \\
        --project suites/he2016_table.toml

A runtime is ``+``-joined options: ``fp32`` (the default: NCHW, float32), ``channels_last``, ``bf16``
(autocast), ``compile`` (``torch.compile``), and on CUDA ``tf32``. On CUDA, rows without ``tf32``
run strict float32 (``allow_tf32`` off for cuDNN and matmul); bench jobs and the classic loop run at
PyTorch's defaults, where cuDNN convolutions may use TF32 (Ampere and newer), like the ``tf32`` row.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark.config import NUM_CLASSES, DataConfig, JobSpec, OptimConfig, RuntimeConfig, ScheduleConfig  # noqa: E402
from benchmark.data import load_splits, make_loaders  # noqa: E402
from benchmark.models import build_model, get_preset  # noqa: E402
from benchmark.train import train  # noqa: E402
from pipeline_speed import PerSampleCifar  # noqa: E402

OPTIONS = ("fp32", "bf16", "channels_last", "compile", "tf32")
DEFAULT_RUNTIMES = ("fp32", "channels_last", "bf16", "bf16+channels_last", "bf16+channels_last+compile")


@dataclass(frozen=True)
class Runtime:
    config: RuntimeConfig
    tf32: bool = False  # CUDA only: not a job field; PyTorch's default lets cuDNN convolutions use TF32

    @property
    def label(self) -> str:
        parts = [self.config.precision]
        parts += ["tf32"] * self.tf32 + ["channels_last"] * self.config.channels_last + ["compile"] * self.config.compile
        return "+".join(parts)


def parse_runtime(text: str, device: torch.device) -> Runtime:
    tokens = [t.strip().lower() for t in text.replace(",", "+").split("+") if t.strip()]
    unknown = [t for t in tokens if t not in OPTIONS]
    if unknown or not tokens:
        raise SystemExit(f"--runtimes {text!r}: unknown option {', '.join(unknown) or '(empty)'}; "
                         f"join any of {', '.join(OPTIONS)} with '+'")
    if "tf32" in tokens and device.type != "cuda":
        raise SystemExit(f"--runtimes {text!r}: tf32 is a CUDA setting (on a CPU fp32 is fp32)")
    if "tf32" in tokens and "bf16" in tokens:
        raise SystemExit(f"--runtimes {text!r}: tf32 applies to float32 math; bf16 autocast replaces it")
    config = RuntimeConfig(channels_last="channels_last" in tokens, precision="bf16" if "bf16" in tokens else "fp32",
                           compile="compile" in tokens)
    return Runtime(config, tf32="tf32" in tokens)


def set_tf32(device: torch.device, on: bool | None) -> None:
    """None: PyTorch's defaults (what a bench job and the classic loop get)."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.allow_tf32 = True if on is None else on
    torch.backends.cuda.matmul.allow_tf32 = False if on is None else on


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else math.nan


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def job_spec(model: str, images: int, batch_size: int, runtime: RuntimeConfig, epochs: int = 2) -> JobSpec:
    """A He 2016 job on synthetic CIFAR-shaped data; no learning-rate steps."""
    return JobSpec(
        model=replace(get_preset(model), num_classes=NUM_CLASSES["synthetic"]),
        data=DataConfig(dataset="synthetic", synthetic_train=images, synthetic_test=256),
        optim=OptimConfig(batch_size=batch_size),
        schedule=ScheduleConfig(unit="epoch", length=epochs, milestones=()),
        runtime=runtime,
    )


def _model_and_optimizer(spec: JobSpec, device: torch.device, channels_last: bool):
    torch.manual_seed(spec.seed)
    model = build_model(spec.model).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    o = spec.optim
    return model, torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


# ----------------------------------------------------------------------------------------------
# The three ways of training


def classic(spec: JobSpec, device: torch.device, loader: DataLoader) -> float:
    """One epoch of the akamaster loop (trainer.py ``train``); images/s."""
    model, optimizer = _model_and_optimizer(spec, device, channels_last=False)
    model.train()
    seen, correct, loss_sum = 0, 0.0, 0.0
    t0 = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        out = model(x)
        loss = F.cross_entropy(out, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(y)  # AverageMeter.update(loss.item(), n): one sync per step
        correct += (out.argmax(1) == y).sum().item()
        seen += len(y)
    sync(device)
    return seen / (time.perf_counter() - t0)


def ceiling(spec: JobSpec, device: torch.device, warmup: int = 12) -> float:
    """The model alone: the step of ``train()`` (autocast, float loss, zero_grad, backward, step) on one
    fixed batch, repeated as many times as the epoch has batches; images/s. The warm-up is 12 steps:
    with 3, oneDNN's bf16 + channels_last kernels were still warming (measured idle here: the ceiling
    read 460 img/s against bench's 623, a "-35 % overhead"; with 12, 575 against 507)."""
    rt = spec.runtime
    model, optimizer = _model_and_optimizer(spec, device, rt.channels_last)
    step_fn = torch.compile(model) if rt.compile else model
    model.train()
    bs = spec.optim.batch_size
    x = torch.randn(bs, 3, 32, 32, device=device)
    if rt.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, spec.model.num_classes, (bs,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=rt.precision == "bf16")

    def step() -> None:
        with autocast:
            loss = F.cross_entropy(step_fn(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    steps = min(spec.data.synthetic_train // bs, 100)  # a fixed batch: 100 steps time it well enough
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * bs / (time.perf_counter() - t0)


def bench(spec: JobSpec, device: torch.device) -> float:
    """``train()`` as a worker calls it; the last epoch's images/s."""
    history = train(spec, device=device, on_step=lambda step: None).history
    return history[-1]["images_per_second"]


# ----------------------------------------------------------------------------------------------
# Rounds and the table


@dataclass(frozen=True)
class Row:
    model: str
    variant: str  # classic | ceiling | bench
    runtime: str
    images_per_second: list[float]
    peak_mib: float

    @property
    def median(self) -> float:
        return statistics.median(self.images_per_second)


def measure(model: str, runtimes: list[Runtime], device: torch.device, args) -> list[Row]:
    spec = job_spec(model, args.images, args.batch_size, RuntimeConfig())
    splits = load_splits(spec.data)
    loader = DataLoader(PerSampleCifar(splits.train_x, splits.train_y), batch_size=args.batch_size, shuffle=True,
                        num_workers=args.workers, pin_memory=device.type == "cuda",
                        persistent_workers=args.workers > 0)
    next(iter(loader))  # start the workers once, outside the timed epochs
    plans: list[tuple[str, str, Callable[[], float]]] = [("classic", "fp32", lambda: classic(spec, device, loader))]
    for rt in runtimes:
        s = replace(spec, runtime=rt.config)
        plans.append(("ceiling", rt.label, lambda s=s, rt=rt: _with_tf32(device, rt, lambda: ceiling(s, device))))
        plans.append(("bench", rt.label, lambda s=s, rt=rt: _with_tf32(device, rt, lambda: bench(s, device))))
    results: dict[tuple[str, str], list[float]] = {(v, r): [] for v, r, _ in plans}
    peaks: dict[tuple[str, str], float] = {}
    for r in range(args.rounds):
        for variant, label, fn in plans:
            if "compile" in label:
                torch._dynamo.reset()  # a fresh compile per round, never a silent eager fall-back
            reset_peak(device)
            ips = fn()
            peaks[(variant, label)] = max(peaks.get((variant, label), 0.0), peak_mib(device))
            results[(variant, label)].append(ips)
            print(f"  round {r + 1}/{args.rounds} {model} {variant:<7} {label:<28} {ips:9,.0f} images/s",
                  file=sys.stderr, flush=True)
    return [Row(model, v, r, results[(v, r)], peaks.get((v, r), math.nan)) for v, r, _ in plans]


def _with_tf32(device: torch.device, rt: Runtime, fn: Callable[[], float]) -> float:
    set_tf32(device, rt.tf32)
    try:
        return fn()
    finally:
        set_tf32(device, None)


def table(rows: list[Row], device: torch.device) -> str:
    gpu = device.type == "cuda"
    head = f"{'model':<10} {'runtime':<28} {'classic':>9} {'ceiling':>9} {'bench':>9} {'× classic':>9} {'overhead':>9}"
    head += f" {'peak MiB':>9}" if gpu else ""
    lines = [head, "-" * len(head)]
    for model in dict.fromkeys(r.model for r in rows):
        mine = {(r.variant, r.runtime): r for r in rows if r.model == model}
        base = mine[("classic", "fp32")]
        line = f"{model:<10} {'classic loop (fp32, NCHW)':<28} {base.median:9,.0f} {'':>9} {'':>9} {1:9.2f}× {'':>9}"
        lines.append(line + (f" {base.peak_mib:9,.0f}" if gpu else ""))
        for (variant, runtime), row in mine.items():
            if variant != "bench":
                continue
            top = mine[("ceiling", runtime)]
            overhead = 100 * (1 - row.median / top.median)
            line = (f"{'':<10} {runtime:<28} {'':>9} {top.median:9,.0f} {row.median:9,.0f} "
                    f"{row.median / base.median:8.2f}× {overhead:8.1f}%")
            lines.append(line + (f" {max(row.peak_mib, top.peak_mib):9,.0f}" if gpu else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Projection of a suite's wall time


def project(suite_path: str, rows: list[Row], jobs_at_once: int) -> str:
    """Wall time of a whole suite from the measured bench images/s: per runtime, seconds per training
    image fitted as a + b * depth over the measured models (a ResNet's cost is close to linear in its
    depth; plain nets cost the same as residual ones), evaluation of each epoch's test set counted at
    a third of a training image (forward only)."""
    from benchmark.suite import load_suite

    suite = load_suite(suite_path)
    measured = [r for r in rows if r.variant == "bench"]
    depth = {r.model: get_preset(r.model).depth for r in measured}
    lines = [f"projected wall time of {suite.name} ({len(suite.jobs)} jobs, {jobs_at_once} at a time), "
             "from bench's measured images/s:"]
    own = {j.spec.runtime for j in suite.jobs}
    for runtime in dict.fromkeys(r.runtime for r in measured):
        points = [(depth[r.model], 1 / r.median) for r in measured if r.runtime == runtime]
        a, b = _line(points)
        total = 0.0
        for job in suite.jobs:
            s = job.spec
            per_epoch = math.ceil(_train_images(s) / s.optim.batch_size)
            iterations = s.schedule.length * per_epoch if s.schedule.unit == "epoch" else s.schedule.length
            epochs = math.ceil(iterations / per_epoch)
            images = iterations * s.optim.batch_size + epochs * _eval_images(s) / 3
            total += images * max(a + b * s.model.depth, 1e-9)
        mark = "  <- the suite's runtime" if any(_label(o) == runtime for o in own) else ""
        lines.append(f"  {runtime:<28} {total / 3600 / jobs_at_once:8.1f} h{mark}")
    return "\n".join(lines)


def _label(rt: RuntimeConfig) -> str:
    return Runtime(rt).label


def _train_images(s: JobSpec) -> int:
    n = s.data.synthetic_train if s.data.dataset == "synthetic" else 50_000
    return s.data.train_size or n - s.data.val_size


def _eval_images(s: JobSpec) -> int:
    n = s.data.synthetic_test if s.data.dataset == "synthetic" else 10_000
    return (s.data.test_size or n) + s.data.val_size


def _line(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares a + b * x; one point: through the origin."""
    if len(points) == 1:
        x, y = points[0]
        return 0.0, y / x
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    b = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return my - b * mx, b


def _cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet20"], help="registry presets [default: resnet20]")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=3072, help="images per epoch, a multiple of the batch size")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="the classic loop's DataLoader workers")
    ap.add_argument("--runtimes", nargs="+", default=list(DEFAULT_RUNTIMES), metavar="RUNTIME",
                    help=f"[default: {' '.join(DEFAULT_RUNTIMES)}]")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: torch's choice]")
    ap.add_argument("--project", metavar="SUITE", help="also print this suite's projected wall time")
    ap.add_argument("--jobs-at-once", type=int, default=1, help="for --project: jobs running side by side")
    ap.add_argument("--json", metavar="FILE", help="write the measurements and the set-up here")
    args = ap.parse_args()
    if args.images % args.batch_size:
        raise SystemExit(f"--images {args.images} is not a multiple of --batch-size {args.batch_size}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    runtimes = [parse_runtime(t, device) for t in args.runtimes]
    set_tf32(device, None)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    setup = (f"device {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
             f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}, batch {args.batch_size}, "
             f"{args.images} images per epoch, classic loop with {args.workers} DataLoader workers, "
             f"median of {args.rounds} interleaved round(s)")
    print(setup, flush=True)
    rows = [row for model in args.models for row in measure(model, runtimes, device, args)]
    print(table(rows, device))
    print("overhead = 1 - bench / ceiling: what bench's input pipeline and bookkeeping cost against the "
          "model alone on a fixed batch")
    if args.project:
        print(project(args.project, rows, args.jobs_at_once))
    if args.json:
        Path(args.json).write_text(json.dumps({"setup": setup, "rows": [asdict(r) for r in rows]}, indent=1))


if __name__ == "__main__":
    main()
