"""How many CPU threads should a job use when something else runs on the machine too?

Each measurement is a fresh process (OpenMP reads its settings when torch loads) that trains
ResNet-20 on a fixed batch for ``--seconds`` and prints images/s. It runs at each thread count and
OpenMP wait policy, alone and next to a competitor:

- ``none``: nothing of ours besides it;
- ``busy``: one process spinning on one core (another user's single-threaded work);
- ``twin``: a second copy of the same measurement (two jobs of the same kind side by side); the
  figure is the pair's combined images/s.

Rounds alternate the configurations; the table shows medians. ``OMP_WAIT_POLICY=PASSIVE`` makes
libgomp's idle threads sleep at once instead of spinning (GCC manual, "OMP_WAIT_POLICY"): a spinning
thread holds a core that the descheduled thread it waits for needs, which is how a 2-thread job on
2 busy cores collapses.

    .venv/bin/python benchmarks/threads_speed.py                   # threads 1 2, policies default passive
    .venv/bin/python benchmarks/threads_speed.py --threads 1 2 4 --runtime fp32 --rounds 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = """
import sys, time, torch, torch.nn.functional as F
sys.path.insert(0, {root!r})
from benchmark.models import build_model, get_preset
torch.set_num_threads({threads})
cl, bf16 = {channels_last}, {bf16}
torch.manual_seed(0)
model = build_model(get_preset("resnet20"))
fmt = torch.channels_last if cl else torch.contiguous_format
model = model.to(memory_format=fmt)
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
x = torch.randn(128, 3, 32, 32).contiguous(memory_format=fmt)
y = torch.randint(0, 10, (128,))
def step():
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = F.cross_entropy(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
for _ in range(3):
    step()
print("ready", flush=True)
sys.stdin.readline()  # start together with a twin
t0, n = time.perf_counter(), 0
while time.perf_counter() - t0 < {seconds} or n < 2:
    step()
    n += 1
print(n * 128 / (time.perf_counter() - t0), flush=True)
"""


def start_worker(threads: int, policy: str, args) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "KMP_"))}
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy.upper()
    code = WORKER.format(root=str(ROOT), threads=threads, channels_last="channels_last" in args.runtime,
                         bf16="bf16" in args.runtime, seconds=args.seconds)
    p = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def result(p: subprocess.Popen) -> float:
    out, _ = p.communicate()
    return float(out.strip().splitlines()[-1])


def measure(threads: int, policy: str, competitor: str, args) -> float:
    busy = None
    if competitor == "busy":
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        procs = [start_worker(threads, policy, args) for _ in range(2 if competitor == "twin" else 1)]
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        return sum(result(p) for p in procs)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--policies", nargs="+", default=["default", "passive"], choices=["default", "passive", "active"])
    ap.add_argument("--competitors", nargs="+", default=["none", "busy", "twin"], choices=["none", "busy", "twin"])
    ap.add_argument("--runtime", default="bf16+channels_last", help="fp32, bf16, channels_last joined by '+'")
    ap.add_argument("--seconds", type=float, default=4.0, help="timed seconds per measurement")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    configs = [(t, p, c) for c in args.competitors for t in args.threads for p in args.policies]
    results: dict[tuple[int, str, str], list[float]] = {c: [] for c in configs}
    print(f"ResNet-20, batch 128, {args.runtime}, {os.cpu_count()} cores, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}, median of {args.rounds} round(s) of {args.seconds:g} s",
          flush=True)
    started = time.monotonic()
    for r in range(args.rounds):
        for c in configs:
            results[c].append(measure(*c, args))
            print(f"  round {r + 1} threads={c[0]} policy={c[1]} with {c[2]}: {results[c][-1]:,.0f} images/s",
                  file=sys.stderr, flush=True)
    print(f"{'competitor':<10} {'threads':>7} {'OMP policy':<11} {'images/s':>9}  (twin: both jobs together)")
    for c in configs:
        print(f"{c[2]:<10} {c[0]:>7} {c[1]:<11} {statistics.median(results[c]):9,.0f}")
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
