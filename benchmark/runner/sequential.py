"""Run queued jobs one after another on one device, in this process."""
from __future__ import annotations

import signal
import socket
import os
from collections import Counter
from contextlib import contextmanager
from typing import Iterator, Sequence

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from benchmark.runner.job import JobOptions, execute
from benchmark.store import Store
from benchmark.train import Step


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextmanager
def stop_on_signals() -> Iterator[list[bool]]:
    """First Ctrl-C (or SIGTERM) asks the job to stop at the next step, keep its last checkpoint and go
    back to the queue; a second Ctrl-C interrupts at once."""
    flag = [False]
    previous = {}

    def handler(signum, frame):
        if flag[0] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag[0] = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield flag
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def progress_bar(console=None) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )


def run_sequential(store: Store, suites: Sequence[str] | None, options: JobOptions, *, show: bool = True) -> Counter:
    """Work through the queue of ``suites``; returns how many jobs ended in each outcome."""
    worker = worker_name()
    outcomes: Counter = Counter()
    store.requeue_stale()
    tried: set[int] = set()  # jobs released under --max-epochs are not taken again in this call
    with stop_on_signals() as stop, progress_bar() as progress:
        frame = store.jobs_frame(suites)
        overall = progress.add_task("suite", total=len(frame), completed=int((frame.state != "queued").sum()),
                                    info="", visible=show)
        while not stop[0]:
            queued = store.jobs_frame(suites)
            candidates = [int(i) for i in queued.job_id[queued.state == "queued"] if int(i) not in tried]
            if not candidates:
                break
            job = store.claim_job(worker, options.device, job_id=candidates[0])
            tried.add(candidates[0])
            if job is None:
                continue  # another worker won the claim
            task = progress.add_task(f"{job.label} s{job.seed}", total=None, info="starting", visible=show)

            def on_step(s: Step, task=task) -> None:
                progress.update(task, total=s.iterations, completed=s.iteration,
                                info=f"epoch {s.epoch}/{s.epochs} loss {s.loss:.3f} err {s.error:.1f}%")

            outcome = execute(store, job, worker, options, should_stop=lambda: stop[0], on_step=on_step)
            outcomes[outcome] += 1
            progress.remove_task(task)
            if outcome != "released":
                progress.advance(overall)
            else:
                progress.console.print(f"{job.label} s{job.seed}: paused at its last checkpoint (queued)")
            if outcome in ("failed", "diverged"):
                progress.console.print(f"[red]{job.label} s{job.seed}: {outcome}[/red]")
    return outcomes
