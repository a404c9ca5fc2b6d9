"""bench on a real Slurm cluster: `bench run --runner <profile with [slurm]>` submits through submitit,
the workers run as Slurm jobs, requeue themselves at the time limit and on preemption, and finish
every job exactly once with the numbers of a local run.

Needs a running cluster: ``BENCH_TEST_SLURM_CONF`` names its slurm.conf (``bash .ci/slurm.sh start``
starts a one-node cluster on loopback and prints it; ``.ci/run`` does this). The smoke-suite test
also needs ``BENCH_TEST_POSTGRES_URL`` (``.ci/postgres.sh``): the workers share a PostgreSQL queue, as
on a cluster. Without them these tests skip and say why.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from benchmark.store import Store
from test_runner import ROOT, bench_cmd, env, finish, metric_table, write_profile, write_suite
from conftest import drop_all

SLURM_CONF = os.environ.get("BENCH_TEST_SLURM_CONF")
PG_URL = os.environ.get("BENCH_TEST_POSTGRES_URL")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not SLURM_CONF, reason="no Slurm cluster: BENCH_TEST_SLURM_CONF is unset (`bash .ci/slurm.sh start` starts "
                           "one and prints its slurm.conf, or on stderr why it could not; .ci/run does this)")]


def slurm_env(**extra: str) -> dict[str, str]:
    return env(SLURM_CONF=str(SLURM_CONF), **extra)


def slurm(*args: str) -> str:
    result = subprocess.run(list(args), env=slurm_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def cluster() -> None:
    result = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=slurm_env(), capture_output=True, text=True,
                            timeout=60)
    if result.returncode or "idle" not in result.stdout and "mix" not in result.stdout:
        pytest.skip(f"the Slurm cluster of {SLURM_CONF} does not take jobs: {result.stdout}{result.stderr}")


def poll(condition, timeout: float, what: str, every: float = 1.0) -> None:
    """test_runner's wait_until at a gentler pace: each look runs squeue or opens the database."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(every)


def epochs_done(url: str) -> int:
    with Store(url) as s:
        return int(s.jobs_frame().epochs_done.max() or 0)


def slurm_profile(tmp_path: Path, name: str = "slurm.toml", runner: dict | None = None, **slurm_keys) -> str:
    """A [runner] on the CPU (one thread per job) and a [slurm] request this one-node cluster grants."""
    path = Path(write_profile(tmp_path, name, devices="cpu", **(runner or {})))
    keys = dict(workers=1, time=10, gpus_per_node=0, cpus_per_task=1, mem_gb=1, signal_delay=10, requeues=3,
                log_dir=str(tmp_path / "slurm"))
    keys.update(slurm_keys)
    path.write_text(path.read_text() + "[slurm]\n" + "".join(
        f'{k} = "{v}"\n' if isinstance(v, str) else f"{k} = {v}\n" for k, v in keys.items()))
    return str(path)


def submit(tmp_path: Path, suite: str, url: str, profile: str, **extra_env: str) -> list[str]:
    """`bench run` with the Slurm profile; returns the submitted Slurm job ids ("<array>_<index>")."""
    p = subprocess.run(bench_cmd("run", suite, "--db", url, "--runner", profile), cwd=tmp_path,
                       env=slurm_env(**extra_env), capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "Traceback" not in out, out
    match = re.search(r"submitted \d+ `bench worker` job\(s\): (\S.*?) \(logs", out)
    assert match, out
    return match.group(1).split(", ")


def worker_logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted((tmp_path / "slurm").glob("**/*.out"))
                     + sorted((tmp_path / "slurm").glob("**/*.err")))


def wait_for_slurm(tmp_path: Path, jobs: list[str], timeout: float) -> dict[str, dict[str, str]]:
    """Wait until the Slurm jobs have ended; returns scontrol's fields of each (State, Restarts...)."""
    end = time.monotonic() + timeout
    while True:
        info = {}
        for job in jobs:
            text = slurm("scontrol", "-o", "show", "job", job)
            info[job] = dict(re.findall(r"(\w+)=(\S*)", text))
        if all(i["JobState"] not in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING") for i in info.values()):
            return info
        assert time.monotonic() < end, f"Slurm jobs still running: {info}\n{worker_logs(tmp_path)}"
        time.sleep(1)


def local_run(tmp_path: Path, suite: str, **runner) -> subprocess.Popen:
    """The same suite on this machine, without Slurm, into its own SQLite file: the reference."""
    ref = tmp_path / "local"
    ref.mkdir()
    profile = write_profile(ref, devices="cpu", **runner)
    return subprocess.Popen(bench_cmd("run", suite, "--db", f"sqlite:///{ref / 'r.sqlite'}", "--runner", profile),
                            cwd=ref, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def assert_done_once(url: str, epochs: int) -> None:
    """Every job done in one attempt (a job given back at a stop does not spend it), epochs 1..E once."""
    with Store(url) as s:
        jobs = s.jobs_frame()
        m = s.metrics_frame()
    assert (jobs.state == "done").all() and (jobs.attempts == 1).all(), jobs[["label", "seed", "state", "attempts"]]
    assert not m.duplicated(["job_id", "epoch", "name"]).any()
    for jid in jobs.job_id:
        assert sorted(set(m[m.job_id == jid].epoch)) == list(range(1, epochs + 1))


@pytest.fixture
def pg_url() -> str:
    if not PG_URL:
        pytest.skip("BENCH_TEST_POSTGRES_URL is unset: the Slurm workers share a PostgreSQL queue (.ci/postgres.sh)")
    drop_all(PG_URL)
    return PG_URL


def smoke_reference() -> str | None:
    """A local `make smoke` run of this code (.ci/run runs it first and passes its database), used
    only if every smoke job there is done; else the test runs the suite locally itself."""
    url = os.environ.get("BENCH_TEST_SMOKE_DB")
    if not url:
        return None
    with Store(url) as s:
        frame = s.jobs_frame(["smoke"]) if any(x["name"] == "smoke" for x in s.suites()) else None
    return url if frame is not None and len(frame) == 8 and (frame.state == "done").all() else None


def test_smoke_suite_through_submitit_and_slurm_matches_a_local_run(tmp_path, cluster, pg_url):
    """suites/smoke.toml, 2 Slurm workers (one array) on the PostgreSQL queue: every job done once, the
    numbers of a local run, squeue and sacct show the array, `bench status` each job's Slurm job."""
    suite = str(ROOT / "suites" / "smoke.toml")
    # The runner defaults of `make smoke` (one job at a time, threads: the cores; the thread count
    # changes CPU results), so its numbers are the reference. Both workers share the host's one slot.
    profile = slurm_profile(tmp_path, runner=dict(workers=1, threads=0), workers=2)
    jobs = submit(tmp_path, suite, pg_url, profile)
    assert len(jobs) == 2 and jobs[0].endswith("_0") and jobs[1].endswith("_1"), jobs
    array = jobs[0].split("_")[0]
    reference_url = smoke_reference()
    reference = None
    if reference_url is None:  # meanwhile, while the Slurm workers start
        reference = local_run(tmp_path, suite, workers=1, threads=0)
        reference_url = f"sqlite:///{tmp_path / 'local' / 'r.sqlite'}"

    seen = set()  # the array tasks squeue listed while they ran
    def all_done() -> bool:
        seen.update(slurm("squeue", "-h", "-r", "-j", array, "-o", "%i %j").split("\n"))
        with Store(pg_url) as s:
            frame = s.jobs_frame()
        return len(frame) == 8 and frame.state.isin(["done", "failed", "diverged"]).all()

    poll(all_done, 900, "the Slurm workers to finish the smoke suite", every=2.0)
    info = wait_for_slurm(tmp_path, jobs, 120)
    assert {f"{j} bench-worker" for j in jobs} <= seen, seen
    assert all(i["JobState"] == "COMPLETED" and i["Restarts"] == "0" for i in info.values()), info
    # jobcomp/filetxt (no slurmdbd on this cluster) records each array task under its own job id
    ids = ",".join(i["JobId"] for i in info.values())
    accounting = slurm("sacct", "-c", "-j", ids, "-o", "JobID,JobName,State", "-n", "-P")
    assert accounting.count("bench-worker|COMPLETED") == 2, accounting

    if reference is not None:
        out = finish(reference, timeout=900)
        assert reference.returncode == 0 and "8 done" in out, out
    assert_done_once(pg_url, epochs=5)
    assert metric_table(pg_url) == metric_table(reference_url, "smoke")

    status = subprocess.run(bench_cmd("status", "--db", pg_url, "--format", "json"), env=env(), capture_output=True,
                            text=True, timeout=120)
    rows = json.loads(status.stdout)
    assert len(rows) == 8 and {r["slurm_job"] for r in rows} <= set(jobs), rows
    table = subprocess.run(bench_cmd("status", "--db", pg_url), env=env(), capture_output=True, text=True,
                           timeout=120).stdout
    assert "slurm job" in table and any(j in table for j in jobs), table


# A job that needs more than one 1-minute allocation: 24 epochs of 8 steps that sleep 0.25 s each
# (BENCH_FAULT "slow": no number changes), over 50 s of training. Slurm looks at time limits every
# 30 s, so with signal_delay = 10 the workers get SIGUSR2 20-50 s after they start.
LONG = dict(images=512, epochs=24)


def test_a_worker_at_its_time_limit_requeues_itself_until_the_suite_is_done(tmp_path, cluster):
    """A 1-minute time limit: SIGUSR2 10-40 s before it, the job goes back to the queue at its last epoch,
    the worker requeues its Slurm job, and the next allocation resumes it: done without a resubmit,
    with the numbers of an uninterrupted local run."""
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"  # one node: the SQLite file works, and it keeps this test light
    suite = write_suite(tmp_path / "long.toml", name="long", **LONG)
    # 1-3 requeues on an idle 2-core machine; the bound leaves room for a loaded one (10 were not
    # enough at a load average of 27, where each allocation trained 2-3 epochs)
    jobs = submit(tmp_path, suite, url, slurm_profile(tmp_path, time=1, requeues=20), BENCH_FAULT="net=slow")
    reference = local_run(tmp_path, suite)
    info = wait_for_slurm(tmp_path, jobs, 900)[jobs[0]]
    logs = worker_logs(tmp_path)
    assert info["JobState"] == "COMPLETED" and int(info["Restarts"]) >= 1, f"{info}\n{logs}"
    assert "requeuing Slurm job" in logs and "paused at its last checkpoint" in logs, logs
    assert_done_once(url, epochs=LONG["epochs"])
    finish(reference)
    assert metric_table(url) == metric_table(f"sqlite:///{tmp_path / 'local' / 'r.sqlite'}")


def test_a_cancelled_worker_gives_its_job_back_and_stays_cancelled(tmp_path, cluster):
    """A plain `scancel`: the jobs go back to the queue, and the Slurm job does not requeue itself."""
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    suite = write_suite(tmp_path / "long.toml", name="long", images=512, epochs=50)
    jobs = submit(tmp_path, suite, url, slurm_profile(tmp_path), BENCH_FAULT="net=slow")
    poll(lambda: epochs_done(url) >= 1, 300, "epoch 1 in the Slurm job")
    slurm("scancel", jobs[0])
    info = wait_for_slurm(tmp_path, jobs, 120)[jobs[0]]
    assert info["JobState"] == "CANCELLED" and info["Restarts"] == "0", f"{info}\n{worker_logs(tmp_path)}"
    with Store(url) as s:
        job = s.jobs_frame().iloc[0]
    assert job.state == "queued" and job.attempts == 0 and job.epochs_done >= 1


def test_a_preempted_worker_gives_its_job_back_and_requeues_itself(tmp_path, cluster):
    """SIGTERM from `scancel --signal=TERM` (what a preemption sends) mid-job: the same as the time
    limit. The job resumes in the requeued allocation and finishes once."""
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    suite = write_suite(tmp_path / "long.toml", name="long", images=1024, epochs=6)
    jobs = submit(tmp_path, suite, url, slurm_profile(tmp_path), BENCH_FAULT="net=slow")
    poll(lambda: epochs_done(url) >= 2, 300, "epoch 2 in the Slurm job")
    slurm("scancel", "--signal=TERM", jobs[0])
    info = wait_for_slurm(tmp_path, jobs, 300)[jobs[0]]
    logs = worker_logs(tmp_path)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", f"{info}\n{logs}"
    assert "paused at its last checkpoint" in logs and "requeuing Slurm job" in logs, logs
    assert_done_once(url, epochs=6)
