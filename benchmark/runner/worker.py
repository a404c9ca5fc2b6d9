"""The worker: fill every free device slot with a queued job, each job in its own process.

One ``Worker`` is one ``bench worker`` (or the working half of ``bench run``). Its loop:

1. take a free device slot (a file lock shared with every other bench process on the host, see
   ``devices``), then claim the oldest queued job by compare-and-set in the database;
2. start the job's process (``child``) with one ``JobRequest`` (the claimed job, its spec decoded
   once by the claim; ``messages``) and the slot's GPU in its environment; the claim is made in
   the name ``host:<worker pid>:<slot>``, which the job's heartbeats carry;
3. read the children's progress (typed messages: ``messages``) from their pipes into a live view;
4. when a child exits: if it said how its job ended, count that; if it died without a word (a
   segfault, ``kill -9``, the OOM killer), record a failed attempt (``store.fail_attempt``): the job
   goes back to the queue and resumes from its last checkpoint, or is failed after
   ``max_attempts`` claims with the exit reason and the tail of its log;
5. every ``heartbeat_seconds``, ``store.requeue_stale``: jobs of dead workers on this host come back
   at once, others once their heartbeat is ``stale_timeout`` old.

It stops when the queue is empty and its children are done (``wait``: polls forever). The first
SIGINT/SIGTERM (or SIGUSR2, Slurm's time-limit warning) stops taking jobs and asks every child to
stop (SIGTERM: each stops at its next step, keeps its last epoch checkpoint, gives its job back
without spending the attempt); the worker waits for them. A second Ctrl-C kills the children at once; their jobs are given back too.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for
from pathlib import Path
from typing import Any, Iterable, Sequence

from rich.markup import escape
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn

from benchmark.runner.devices import Device, DeviceError, Slot, SlotPool, discover
from benchmark.progress import Step
from benchmark.runner.job import JobOptions
from benchmark.runner.messages import EpochDone, Finished, JobRequest, Message, Started, Warned
from benchmark.runner.profile import RunnerProfile, job_threads
from benchmark.runner.slurm import slurm_job_id
from benchmark.store import JobRecord, NotFound, Store, StoreError, display_url
from benchmark.vocabulary import BROKEN_STATES, FINAL_STATES, JobState

LOG_TAIL_CHARS = 1500
# SIGUSR2: Slurm's warning before the time limit (see runner/slurm.py); it stops the worker like SIGTERM
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


def job_context():
    """A fork server that has imported torch and the trainer: a job's process starts in milliseconds
    and never inherits threads, CUDA state or database connections from the worker. The first call
    starts it (its imports take about 4 s of one core); later calls return the running one."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["benchmark.runner.child", "benchmark.runner.worker"])
        from multiprocessing import forkserver

        # Slurm signals every process of a job step (SIGUSR2 before the time limit): the fork server and
        # the jobs it forks inherit "ignore" (kept across exec); only the worker acts on it, and stops
        # its jobs with SIGTERM.
        ignore = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGUSR2, signal.SIG_IGN) if ignore else None
        try:
            forkserver.ensure_running()  # it imports torch while this process looks at the queue
        finally:
            if ignore:
                signal.signal(signal.SIGUSR2, previous)
        return ctx
    return mp.get_context("spawn")


def _run_job(conn, request: JobRequest) -> None:
    """A job process's target. Importing the child here, not in the worker, keeps torch, git and
    the dynamo warm-up (about 2 s) out of the worker: the fork server has them loaded already."""
    from benchmark.runner.child import run_child

    run_child(conn, request)


def exit_reason(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of host memory? the kernel's OOM killer sends SIGKILL)" if -exitcode == signal.SIGKILL else ""
        return f"job process killed by {name}{hint}"
    return f"job process exited with code {exitcode} without finishing its job"


def log_tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - chars))
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


@dataclass
class Running:
    """A job this worker runs, and what its process told us so far."""

    slot: Slot
    job: JobRecord
    worker: str
    process: Any
    conn: Any
    log: Path
    task: TaskID
    eof: bool = False
    epoch: int = 0
    epochs: int = 0
    loss: float | None = None
    error: float | None = None
    test_error: float | None = None
    outcome: str | None = None
    message: str = ""
    stop_sent: bool = False
    timed: bool = False  # the progress task has been reset at the first step, so its ETA is honest

    @property
    def title(self) -> str:
        return escape(f"{self.slot.device.name:<7} {self.job.label} s{self.job.seed} #{self.job.id}")

    def info(self) -> str:
        parts = [f"epoch {self.epoch}/{self.epochs or '?'}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.3f}")
        if self.error is not None:
            parts.append(f"err {self.error:.1f}%")
        if self.test_error is not None:
            parts.append(f"test {self.test_error:.1f}%")
        return " ".join(parts)


class Worker:
    def __init__(self, store: Store, profile: RunnerProfile, suites: Sequence[str] | None = None, *,
                 wait: bool = False, show: bool = True, console: Console | None = None,
                 devices: list[Device] | None = None):
        self.store = store
        self.profile = profile
        self.suites = list(suites) if suites else None
        if self.suites:
            registered = {s["name"] for s in store.suites()}
            missing = [name for name in self.suites if name not in registered]
            if missing:
                raise NotFound(f"no suite named {', '.join(map(repr, missing))} in {display_url(store.url)}; "
                               f"registered: {', '.join(sorted(registered)) or 'none'} (register one with "
                               "`bench run SUITE.toml`)")
        self.wait = wait
        self.console = console or Console(stderr=True)
        self.devices = devices if devices is not None else discover(profile.devices)
        per_device = profile.workers if self.devices[0].kind == "cpu" else profile.jobs_per_device
        self.pool = SlotPool(self.devices, per_device, profile.lock_dir)
        self.threads = job_threads(profile.threads, self.pool.size)
        self.checkpoints = profile.checkpoint_folder(store.url, store.database_id)
        self.logs = profile.log_folder(self.checkpoints)
        for folder, key in ((self.checkpoints, "checkpoint_dir"), (self.logs, "log_dir")):
            try:  # here, with a message, rather than in every job's process
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise DeviceError(f"cannot create the folder {folder} ({e.strerror or e}): set {key} "
                                  "(runner profile or --checkpoint-dir) to a writable folder") from None
        self.host = socket.gethostname()
        slurm = slurm_job_id()  # in the workers' names, so `bench status` shows each job's Slurm job
        self.name_tail = f":slurm={slurm}" if slurm else ""
        self.running: list[Running] = []
        self.outcomes: Counter = Counter()
        self.tried: set[int] = set()  # jobs paused by max_epochs: not taken again in this call
        self.started: set[int] = set()  # every job this worker started a process for
        self.signals: list[int] = []
        self.exhausted = False  # the last claim found no queued job
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), console=self.console, disable=not show, transient=False)
        self.overall: TaskID | None = None
        self._ctx = job_context()

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> Counter:
        """Work until the queue is empty (or forever with ``wait``) or a signal; returns how many
        jobs ended in each outcome here. ``self.signals`` holds the signals received."""
        where = ", ".join(sorted({d.name + (" (fake)" if d.fake else "") for d in self.devices}))
        self.console.print(f"worker {self.host}:{os.getpid()}: {self.pool.size} slot(s) on {where}, "
                           f"{self.threads} CPU thread(s) per job", highlight=False)
        previous = {}
        if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
            previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        next_stale = next_overall = next_poll = 0.0
        try:
            with self.progress:
                self.overall = self.progress.add_task("[bold]all jobs", total=None, info="")
                while True:
                    self._act_on_signals()
                    now = time.monotonic()
                    if now >= next_stale and not self.signals:
                        self._requeue_stale()
                        next_stale = now + self.profile.heartbeat_seconds
                    if now >= next_overall:
                        self._refresh_overall()
                        next_overall = now + 2.0
                    if now >= next_poll:  # look at the queue again even while jobs run: with free
                        self.exhausted = False  # slots, jobs queued since the last claim start now
                        next_poll = now + self.profile.poll_seconds
                    if not self.signals:
                        self._fill()
                    if not self.running:
                        if self.signals:
                            break
                        if self.exhausted or self._queued() == 0:
                            if not self.wait:
                                break
                            self._sleep(self.profile.poll_seconds)
                            self.exhausted = False
                        else:
                            self._sleep(0.5)  # queued jobs, but every slot is taken by other workers
                        continue
                    objects = [r.conn for r in self.running if not r.eof] + [r.process.sentinel for r in self.running]
                    wait_for(objects, timeout=0.5)
                    self._pump()
                self._refresh_overall()
        finally:
            # an unexpected error in the loop: leave nothing behind. Kill every child before settling
            # any job, and settle each on its own, so one failure cannot leave the others running.
            for r in self.running:
                r.process.kill()
            for r in list(self.running):
                try:
                    self._reap(r, interrupted=True)
                except Exception as e:  # its job comes back by requeue_stale: this worker is gone
                    self._warn(f"could not give back job {r.job.id}: {e}")
            for s, h in previous.items():
                signal.signal(s, h)
        return self.outcomes

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self.signals:
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))

    def _on_signal(self, signum, frame) -> None:
        self.signals.append(signum)

    def _act_on_signals(self) -> None:
        if not self.signals:
            return
        hard = len(self.signals) > 1 and self.signals[-1] == signal.SIGINT
        for r in self.running:
            if hard and r.process.exitcode is None:
                r.process.kill()
            elif not r.stop_sent:
                r.stop_sent = True
                self.progress.update(r.task, info="stopping at the next step...")
                if r.process.exitcode is None:
                    r.process.terminate()  # SIGTERM: stop at the next step, checkpoint, give the job back

    # -- starting jobs -------------------------------------------------------------------------

    def _fill(self) -> None:
        while len(self.running) < self.pool.size and not self.exhausted:
            slot = self.pool.acquire()
            if slot is None:
                return
            worker = f"{self.host}:{os.getpid()}:{slot.name}{self.name_tail}"
            try:
                job = self.store.claim_job(worker, slot.device.name, self.suites, exclude=self.tried)
            except BaseException:
                slot.release()
                raise
            if job is None:
                slot.release()
                self.exhausted = True
                return
            self._start(slot, job, worker)

    def _queued(self) -> int:
        """Queued jobs this worker may take; 1 when the database cannot tell (keep looking)."""
        try:
            return self._count_queued()
        except StoreError as e:
            self._warn(f"could not count queued jobs (retrying): {e}")
            return 1

    def _count_queued(self) -> int:
        if self.tried:
            frame = self.store.jobs_frame(self.suites)
            return int(((frame.state == JobState.QUEUED) & frame.orphaned_at.isna()
                        & ~frame.job_id.isin(list(self.tried))).sum())
        return sum(s[JobState.QUEUED] for s in self.store.suites() if self.suites is None or s["name"] in self.suites)

    def _start(self, slot: Slot, job: JobRecord, worker: str) -> None:
        p = self.profile
        log = self.logs / f"job{job.id}-{job.key[:12]}.log"
        options = JobOptions(device=slot.device.torch_device, data_dir=p.data_dir or None,
                             checkpoint_dir=self.checkpoints, max_epochs=p.max_epochs or None,
                             heartbeat_seconds=p.heartbeat_seconds, max_attempts=p.max_attempts,
                             log=str(log))
        request = JobRequest(job, worker, self.store.url, slot.device, options, self.threads)
        reader, writer = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(target=_run_job, args=(writer, request), name=f"bench-job-{job.id}")
        try:
            process.start()
        except BaseException as e:
            reader.close()
            writer.close()
            self.store.fail_attempt(job.id, f"could not start the job's process: {e}", p.max_attempts, worker=worker)
            slot.release()
            raise
        writer.close()
        task = self.progress.add_task("", total=None, info="starting")
        r = Running(slot, job, worker, process, reader, log, task)
        self.progress.update(task, description=r.title)
        self.running.append(r)
        self.started.add(job.id)

    # -- children ------------------------------------------------------------------------------

    def _pump(self) -> None:
        for r in list(self.running):
            while not r.eof:
                try:
                    if not r.conn.poll():
                        break
                    message = r.conn.recv()
                except (EOFError, OSError):
                    r.eof = True
                    break
                self._message(r, message)
            if r.process.exitcode is not None:
                self._reap(r, interrupted=bool(self.signals))

    def _message(self, r: Running, message: Message) -> None:
        """One message of ``r``'s process (``benchmark.runner.messages``)."""
        if isinstance(message, Step):
            r.epoch, r.epochs, r.loss, r.error = message.epoch, message.epochs, message.loss, message.error
            if not r.timed:  # start the clock at the first step, so a resumed job's ETA is not skewed
                r.timed = True
                self.progress.reset(r.task, total=message.iterations, completed=message.iteration)
            self.progress.update(r.task, total=message.iterations, completed=message.iteration, info=r.info())
        elif isinstance(message, EpochDone):
            r.epoch = max(r.epoch, message.epoch)
            r.loss, r.error, r.test_error = message.train_loss, message.train_error, message.test_error
            if r.timed and message.iterations is not None:
                self.progress.update(r.task, completed=message.iterations)
            self.progress.update(r.task, info=r.info())
        elif isinstance(message, Started):
            self.progress.update(r.task, info=f"epoch {message.epochs_done + 1}: loading data")
        elif isinstance(message, Warned):
            self._say(f"[yellow]{escape(r.job.label)} s{r.job.seed} (job {r.job.id}): {escape(message.text)}[/yellow]")
        elif isinstance(message, Finished):
            r.outcome, r.message = message.outcome, message.message

    def _reap(self, r: Running, *, interrupted: bool) -> None:
        """The child has exited (or was killed): settle its job and free its slot."""
        r.process.join(5)
        while not r.eof:  # what it said just before exiting may still be in the pipe
            try:
                if not r.conn.poll(1.0):
                    break
                message = r.conn.recv()
            except (EOFError, OSError):
                break
            self._message(r, message)
        label = escape(f"{r.job.label} s{r.job.seed} (job {r.job.id})")  # rich markup in a label is text
        outcome = r.outcome
        if outcome is None:  # died without telling us how its job ended
            reason = exit_reason(r.process.exitcode)
            if interrupted:
                released = self.store.release(r.job.id, worker=r.worker)
                outcome = "released" if released else "lost"
            else:
                tail = log_tail(r.log)
                state = self.store.fail_attempt(
                    r.job.id, f"{reason}; log {r.log}" + (f", last lines:\n{tail}" if tail else ""),
                    self.profile.max_attempts, worker=r.worker)
                outcome = "crashed" if state else "lost"
                self._say(f"[red]{label}: {escape(reason)}; "
                          + ("back in the queue" if state == JobState.QUEUED else f"{state or 'gone'}") + "[/red]")
        elif outcome in ("failed", "diverged"):
            self._say(f"[{'red' if outcome == 'failed' else 'yellow'}]{label}: {outcome}: {escape(r.message)}"
                      f"[/]")
        elif outcome == "retry":
            self._say(f"[red]{label}: attempt failed: {escape(r.message)}[/red]")
        elif outcome == "released":
            if not interrupted:
                self.tried.add(r.job.id)  # paused by max_epochs
            self._say(f"{label}: paused at its last checkpoint (queued)")
        elif outcome == "done":
            self._say(f"[green]{label}: done[/green]")
        self.outcomes[outcome] += 1
        r.conn.close()
        try:
            r.process.close()
        except ValueError:
            pass
        r.slot.release()
        self.progress.remove_task(r.task)
        self.running.remove(r)
        self.exhausted = False  # a job may have gone back to the queue
        self._refresh_overall()

    def _say(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def _warn(self, text: str) -> None:
        self.console.print(f"warning: {text}", style="yellow", markup=False, highlight=False)

    # -- the database --------------------------------------------------------------------------

    # The periodic calls below survive a StoreError (a database briefly locked or unreachable): killing
    # the worker would kill every running job with it; the next tick tries again.

    def _requeue_stale(self) -> None:
        try:
            moved = self.store.requeue_stale(self.profile.stale_timeout, self.profile.max_attempts)
        except StoreError as e:
            self._warn(f"could not look for jobs of lost workers (retrying): {e}")
            return
        if moved:
            self._say(f"took back {len(moved)} job(s) of lost workers: {', '.join(map(str, moved))}")
            self.exhausted = False

    def _refresh_overall(self) -> None:
        if self.overall is None:
            return
        try:
            suites = self.store.suites()
        except StoreError as e:
            self._warn(f"could not read the suites' progress (retrying): {e}")
            return
        rows = [s for s in suites if self.suites is None or s["name"] in self.suites]
        total = sum(s["jobs"] for s in rows)
        final = sum(s[state] for s in rows for state in FINAL_STATES)
        counts = {state: sum(s[state] for s in rows)
                  for state in (JobState.QUEUED, JobState.RUNNING, *BROKEN_STATES)}
        info = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        names = escape(", ".join(s["name"] for s in rows) or "no suite")
        self.progress.update(self.overall, description=f"[bold]{names}", total=total, completed=final, info=info)


# Exit codes of `bench run` and `bench worker` (README "Limits and error codes").
EXIT_OK, EXIT_JOBS_FAILED, EXIT_USAGE = 0, 1, 2  # 2: a UserError (benchmark.errors), from the CLI


def run_worker(store: Store, profile: RunnerProfile, suites: Sequence[str] | None = None, *, wait: bool = False,
               show: bool = True, console: Console | None = None) -> tuple[Counter, int]:
    """Run a worker; returns (outcomes, exit code): 128 + the signal that stopped it; else 1 when a
    job it ran ended failed or diverged (a script must not take that for success); else 0."""
    worker = Worker(store, profile, suites, wait=wait, show=show, console=console)
    outcomes = worker.run()
    if worker.signals:
        return outcomes, 128 + worker.signals[0]
    return outcomes, EXIT_JOBS_FAILED if failed_jobs(store, worker.started) else EXIT_OK


def failed_jobs(store: Store, job_ids: Iterable[int] | None = None, suites: Sequence[str] | None = None) -> list[str]:
    """'label seed N (state)' of the jobs (``job_ids``, or every job of ``suites``) that ended failed or
    diverged: what makes `bench run` / `bench worker` exit 1."""
    frame = store.jobs_frame(suites)
    if job_ids is not None:
        frame = frame[frame.job_id.isin(list(job_ids))]
    bad = frame[frame.state.isin(BROKEN_STATES)]
    return [f"{r.label} seed {r.seed} ({r.state})" for r in bad.itertuples()]
