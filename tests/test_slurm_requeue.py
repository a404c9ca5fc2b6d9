"""SlurmWorker's requeue step without a cluster: a fake ``scontrol`` on PATH. The cluster tests
(test_slurm.py) show the whole path; this pins the race they once lost: ``scontrol requeue`` ends
the allocation at once, so Slurm often kills scontrol (and this process) before it exits."""
from __future__ import annotations

import signal
import sys

import pytest

from benchmark.runner import slurm
from benchmark.runner.slurm import SlurmWorker

FAKE_SCONTROL = """#!/bin/sh
case "$1" in
  -o) echo "JobId=7 JobName=bench-worker JobState={state} Restarts=0" ;;
  requeue) {requeue} ;;
esac
"""


@pytest.fixture
def stopped_worker(tmp_path, monkeypatch):
    """A SlurmWorker whose `bench worker` stops as at a preemption (exit 128 + SIGTERM) with 3 jobs
    still queued, in Slurm job 7; returns a function that installs the fake scontrol (what its
    requeue does, and the job state it reports)."""
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    monkeypatch.setenv("PATH", f"{tmp_path}:{slurm.os.environ['PATH']}")
    monkeypatch.setattr(slurm, "queued_jobs", lambda db_url, suites: 3)
    handlers = {s: signal.getsignal(s) for s in slurm.STOP_SIGNALS}  # SlurmWorker installs its own

    def make(requeue: str, state: str = "RUNNING") -> SlurmWorker:
        script = tmp_path / "scontrol"
        script.write_text(FAKE_SCONTROL.format(requeue=requeue, state=state))
        script.chmod(0o755)
        return SlurmWorker(command=(sys.executable, "-c", f"raise SystemExit({128 + signal.SIGTERM})"),
                           cwd=str(tmp_path), db_url="sqlite://", suites=("long",), requeues=3)
    yield make
    for s, handler in handlers.items():
        signal.signal(s, handler)


def test_scontrol_killed_by_its_own_requeue_counts_as_requeued(stopped_worker, capsys):
    worker = stopped_worker("kill -TERM $$")  # what Slurm does to every process of a requeued job
    message = worker()
    assert message == "requeuing Slurm job 7 (1 of at most 3): 3 job(s) queued"
    assert capsys.readouterr().out == message + "\n"


def test_a_refused_requeue_is_an_error_after_the_log_line(stopped_worker, capsys):
    worker = stopped_worker("echo 'Requested operation is presently disabled' >&2; exit 1")
    with pytest.raises(RuntimeError, match=r"scontrol requeue 7 failed \(exit 1\): Requested operation"):
        worker()
    # printed first: a requeue that works ends this process before anything after scontrol runs
    assert "requeuing Slurm job 7" in capsys.readouterr().out


def test_a_job_slurm_is_ending_is_not_requeued(stopped_worker, tmp_path, capsys):
    worker = stopped_worker("touch requeued", state="COMPLETING")
    assert worker() == "Slurm job 7 is ending (COMPLETING): not requeued; 3 job(s) queued"
    assert not (tmp_path / "requeued").exists()
