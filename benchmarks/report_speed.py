"""How long does `bench report` take over a full database? Target: under 5 s on 2 CPU cores.

Fills a temporary SQLite database with 1,000 jobs x 200 epochs x 8 metrics (5 suites of 2 model
families x 20 depths x 5 seeds; 1.6 M metric rows), then times
  1. the phases in-process (load frames + aggregate + claims in one process, render tables, then
     all of it as `bench report` does it: api.report, which builds the suites and draws their
     figures in worker processes), and
  2. `report` end to end in a fresh Python process (imports included), markdown + html + json.

    .venv/bin/python benchmarks/report_speed.py [--epochs 200] [--repeat 3] [--keep DIR [--reuse]]

Jobs are registered through the Store API; the 1.6 M metric rows are bulk-inserted with sqlite3
(record_epoch would need 200,000 transactions, which measures the store, not the reporter).

The machine is often shared, so each time is printed as wall and CPU seconds (user + system): on a
busy machine the CPU time is the better guide to what an idle one would take. The fresh-process
run is repeated (--repeat) and its best and median printed.
"""
from __future__ import annotations

import argparse
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark.report.api import build_tables, report, resolve_suites, write_reports  # noqa: E402
from benchmark.report.synthetic import fake_curves  # noqa: E402
from benchmark.store import Store  # noqa: E402
from benchmark.suite import parse_suite  # noqa: E402

METRICS = ("train_loss", "train_error", "test_loss", "test_error", "lr", "seconds", "images_per_second",
           "iterations")

SUITE = """
[suite]
name = "speed{i}"
title = "Speed suite {i}"
source = "benchmarks/report_speed.py"
protocol = "made-up curves"
tolerance = 1.0
seeds = [{seeds}]

[defaults.data]
dataset = "synthetic"

[defaults.schedule]
unit = "epoch"
length = {epochs}
milestones = [{half}]

[[entry]]
label = "plain-{{depth}}"
model = {{ shortcut = "none" }}
grid = {{ model.depth = [{depths}] }}

[[entry]]
label = "resnet-{{depth}}"
model = {{ shortcut = "A" }}
grid = {{ model.depth = [{depths}] }}

[[published]]
label = "resnet-20"
value = 8.75
kind = "single"
source = "He et al. 2016, Table 6"

[[published]]
label = "plain-56"
value = 13.5
kind = "chart_reading"
approx = true
source = "a-martyn/resnet README, reading of Fig. 6"

[[claim]]
name = "degradation"
text = "plain-56 ends with higher training error than plain-20 (He 2016, Fig. 6)"
expr = 'selected("plain-56", "train_error") > selected("plain-20", "train_error")'

[[claim]]
name = "depth-helps"
text = "resnet-56 beats resnet-20"
expr = 'selected("resnet-56") < selected("resnet-20")'
"""


def fill(db_path: Path, suites: int, depths: int, seeds: int, epochs: int) -> int:
    url = f"sqlite:///{db_path}"
    depth_list = ", ".join(str(6 * n + 2) for n in range(1, depths + 1))
    with Store(url) as store:
        for i in range(suites):
            text = SUITE.format(i=i, seeds=", ".join(map(str, range(seeds))), epochs=epochs, half=epochs // 2,
                                depths=depth_list)
            store.register_suite(parse_suite(text, f"speed{i}.toml"))
        jobs = store.jobs_frame(None)
    con = sqlite3.connect(db_path)
    with con:
        rows = []
        for r in jobs.itertuples():
            curves = fake_curves(r.label, r.seed, epochs)
            for name in METRICS:
                rows.extend(zip([r.job_id] * epochs, range(1, epochs + 1), [name] * epochs, curves[name].tolist()))
        con.executemany("INSERT INTO metrics (job_id, epoch, name, value) VALUES (?, ?, ?, ?)", rows)
        con.execute("UPDATE jobs SET state = 'done', epochs_done = ?, attempts = 1", (epochs,))
    con.close()
    return len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suites", type=int, default=5)
    ap.add_argument("--depths", type=int, default=20, help="depths per family (6n+2, n = 1..)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--keep", type=Path, default=None, help="keep the database and reports here")
    ap.add_argument("--reuse", action="store_true", help="with --keep: reuse the database filled by an earlier run")
    ap.add_argument("--repeat", type=int, default=3, help="fresh-process runs (best and median printed)")
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-report-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    db_path = work / "results.sqlite"
    n_jobs = args.suites * 2 * args.depths * args.seeds
    if args.reuse and db_path.exists():
        print(f"reusing {db_path} (filled by an earlier run; --suites/--depths/--seeds/--epochs ignored)")
        with Store(f"sqlite:///{db_path}") as store:
            n_jobs = len(store.jobs_frame(None))
    else:
        db_path.unlink(missing_ok=True)
        t0 = time.perf_counter()
        n_rows = fill(db_path, args.suites, args.depths, args.seeds, args.epochs)
        print(f"filled {db_path}: {n_jobs} jobs x {args.epochs} epochs x {len(METRICS)} metrics = "
              f"{n_rows:,} rows in {time.perf_counter() - t0:.1f} s")

    url = f"sqlite:///{db_path}"
    phases: dict[str, tuple[float, float]] = {}

    def children_cpu() -> float:  # the workers' CPU (api.report forks them for a report this big)
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    def phase(name: str, fn, *a, **kw):
        t, c = time.perf_counter(), time.process_time() + children_cpu()
        out = fn(*a, **kw)
        phases[name] = (time.perf_counter() - t, time.process_time() + children_cpu() - c)
        return out

    def open_and_parse():
        store = Store(url)
        return store, resolve_suites(store, [])

    store, suites = phase("open + parse suites", open_and_parse)
    results = phase("load frames + aggregate + claims", build_tables, store, suites)
    phase("render 5 formats (no figures)", write_reports, results, work / "tables",
          ["markdown", "html", "csv", "latex", "json"], figures=False)
    phase("api.report: markdown + html + figures", report, store, suites, work / "full", ["markdown", "html"])
    store.close()
    print("in-process phases (this process has imported everything already; CPU includes worker processes):")
    total_wall = sum(w for w, _ in phases.values())
    for k, (wall, cpu) in phases.items():
        print(f"  {k:36s} {wall:6.2f} s wall ({wall / total_wall:4.0%}) {cpu:6.2f} s CPU")

    cmd = [sys.executable, "-c", "from benchmark.report.cli import report; report()", "--db", url,
           "--out", str(work / "cli"), "--format", "markdown", "--format", "html", "--format", "json"]
    walls, cpus = [], []
    for _ in range(args.repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        walls.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            sys.exit(f"report failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    print(f"bench report (fresh process, {n_jobs} jobs, {args.suites} suites, markdown+html+json with figures), "
          f"{args.repeat} runs:")
    print(f"  wall best {min(walls):.2f} s, median {statistics.median(walls):.2f} s   "
          f"[target < 5 s]   ({', '.join(f'{w:.2f}' for w in walls)})")
    print(f"  CPU  best {min(cpus):.2f} s, median {statistics.median(cpus):.2f} s   "
          f"({', '.join(f'{c:.2f}' for c in cpus)})")
    print(f"reports in {work}")


if __name__ == "__main__":
    main()
