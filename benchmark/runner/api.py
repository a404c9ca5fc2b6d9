"""The run engine's entry points over a Store: the runner profile of a command line, register a
suite, then work its queue here or submit ``bench worker`` jobs to Slurm.

Kept apart from the click commands (``benchmark.cli`` only parses, calls these and prints), as
``benchmark.report.api`` is for the reporter, so tests and scripts can call them directly. The
command line's profile overrides travel as a dict of profile keys (``runner_profile``) straight to
the submitted workers' flags (``benchmark.runner.slurm.worker_command``).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from rich.console import Console

from benchmark.runner.profile import RunnerProfile, load_profile
from benchmark.store import Store
from benchmark.suite_types import Suite


def runner_profile(runner: Mapping[str, Any]) -> tuple[RunnerProfile, dict[str, Any]]:
    """The runner profile of a command line's options (``runner_path``: the profile file, None: the
    built-in defaults; every other key a profile key, None: not given), and the keys the command line
    set: a submitted worker reads the file again, so these travel as its flags."""
    runner = dict(runner)
    profile = load_profile(runner.pop("runner_path", None))
    if runner.get("devices"):
        runner["devices"] = runner["devices"].removeprefix("cuda:")  # --device cuda:1, as before
    overrides = {k: v for k, v in runner.items() if v is not None}
    return profile.override(**overrides), overrides


@dataclass(frozen=True)
class Registration:
    """What ``register`` did: the suite's jobs, how many were new, and its orphans (registered jobs
    its text no longer has: not trained or reported)."""

    suite: str
    jobs: int
    added: int
    present: int
    orphans: int


def register(store: Store, suite: Suite, *, replace: bool = False) -> Registration:
    added, present = store.register_suite(suite, replace=replace)
    orphans = store.prune_orphans(suite.name, dry_run=True)
    return Registration(suite.name, len(suite.jobs), added, present, len(orphans))


@dataclass(frozen=True)
class WorkResult:
    """What working the queue of some suites here ended with."""

    outcomes: Counter  # jobs this call ran, by outcome
    code: int  # the exit code (benchmark.runner.worker's EXIT_*; 128 + a signal)
    summary: str  # the suites' jobs by state, one line
    failed: list[str]  # 'label seed N (state)' of every failed or diverged job of the suites

    @property
    def paused(self) -> bool:
        return bool(self.outcomes.get("released"))


def work(store: Store, profile: RunnerProfile, suites: Sequence[str], *, console: Console) -> WorkResult:
    """Train the queued jobs of ``suites`` here until their queue is empty (or a signal). The exit code
    is 1 also when a job of an earlier run ended failed or diverged: the suites are not done."""
    from benchmark.runner.status import status_frame, summary
    from benchmark.runner.worker import EXIT_JOBS_FAILED, EXIT_OK, failed_jobs, run_worker

    outcomes, code = run_worker(store, profile, list(suites), console=console)
    line = summary(status_frame(store, list(suites)))
    bad = failed_jobs(store, suites=list(suites))
    if bad and code == EXIT_OK:
        code = EXIT_JOBS_FAILED
    return WorkResult(outcomes, code, line, bad)


def submit(profile: RunnerProfile, url: str, suites: Sequence[str], overrides: Mapping[str, Any], *,
           console: Console) -> list[Any]:
    """Submit the profile's ``[slurm] workers`` for ``suites`` (``overrides``: the command line's profile
    keys, as ``runner_profile`` returns them); a SQLite URL gets a warning on ``console`` first.
    Returns submitit's job objects."""
    from benchmark.runner.slurm import sqlite_warning
    from benchmark.runner.slurm import submit as submit_workers

    warning = sqlite_warning(url)
    if warning:
        console.print(f"[yellow]{warning}[/yellow]", highlight=False)
    return submit_workers(profile, url, suites, overrides)
