"""The runner: profiles, devices and slots, jobs in their own processes, crashes, signals, several
workers on one SQLite file (and PostgreSQL database, where BENCH_TEST_POSTGRES_URL gives one), and
`bench status`.

Every test runs real `bench worker` / `bench run` processes on tiny jobs (synthetic data, depth 8,
a few iterations per epoch, one CPU thread). GPUs are faked with BENCH_FAKE_GPUS; BENCH_FAULT
makes chosen jobs raise, run out of memory, crash or slow down (see benchmark/runner/child.py).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmark.cli import main
from benchmark.runner.devices import Device, DeviceError, SlotPool, discover
from benchmark.runner.profile import RunnerProfileError, load_profile
from benchmark.store import Store
from benchmark.store.store import _pid_alive  # the check the store uses to spot dead local workers

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"seconds", "images_per_second"}
# The tests that share one queue between processes also run on PostgreSQL when it is given (as the
# store tests do): that is the database several Slurm nodes share.
PG_URL = os.environ.get("BENCH_TEST_POSTGRES_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])

SUITE = """
[suite]
name = "{name}"
seeds = {seeds}
[defaults.data]
dataset = "synthetic"
synthetic_train = {images}
synthetic_test = 64
[defaults.optim]
batch_size = 64
[defaults.schedule]
unit = "epoch"
length = {epochs}
milestones = [1]
[defaults.model]
depth = 8
"""
ENTRY = """
[[entry]]
label = "{label}"
{extra}
"""


def write_suite(path: Path, name: str = "tiny", seeds=(0,), images: int = 128, epochs: int = 2,
                entries: dict[str, str] | None = None) -> str:
    text = SUITE.format(name=name, seeds=list(seeds), images=images, epochs=epochs)
    for label, extra in (entries or {"net": ""}).items():
        text += ENTRY.format(label=label, extra=extra)
    path.write_text(text)
    return str(path)


def write_profile(tmp_path: Path, name: str = "profile.toml", **keys) -> str:
    values = dict(threads=1, heartbeat_seconds=1.0, stale_timeout=60.0, max_attempts=3, poll_seconds=0.5,
                  lock_dir=str(tmp_path / "locks"), checkpoint_dir=str(tmp_path / "ckpt"))
    values.update(keys)
    lines = ["[runner]"] + [f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"' for k, v in values.items()]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
    e.update(extra)
    return e


def bench_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmark.cli", *args]


def start(tmp_path: Path, *args: str, **extra_env: str) -> subprocess.Popen:
    return subprocess.Popen(bench_cmd(*args), cwd=tmp_path, env=env(**extra_env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(p: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = p.communicate(timeout=timeout)
    assert "Traceback" not in out, out
    return out


def assert_clean_logs(folder: Path) -> None:
    """The jobs' own logs (their stderr) hold no traceback and no database-locked error: finish()
    sees only the worker's output."""
    logs = list(folder.glob("**/logs/*.log"))
    assert logs, f"no job logs under {folder}"
    for log in logs:
        text = log.read_text()
        assert "Traceback" not in text and "locked" not in text, f"{log}:\n{text}"


def wait_until(condition, timeout: float = 120, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def epochs_done(url: str) -> int:
    with Store(url) as s:
        frame = s.jobs_frame()
    return int(frame.epochs_done.max()) if len(frame) else 0


def metric_table(url: str, suite: str | None = None) -> dict[tuple[str, int, int, str], float]:
    """(label, seed, epoch, name) -> value, without the timing metrics; asserts no duplicate rows."""
    with Store(url) as s:
        m = s.metrics_frame([suite] if suite else None)
    assert not m.duplicated(["job_id", "epoch", "name"]).any()
    m = m[~m.name.isin(TIMING)]
    return {(str(r.label), int(r.seed), int(r.epoch), str(r.name)): float(r.value) for r in m.itertuples()}


def assert_complete(url: str, epochs: int) -> None:
    """Every job done, with epochs 1..E and every metric exactly once per epoch."""
    with Store(url) as s:
        jobs = s.jobs_frame()
        m = s.metrics_frame()
    assert (jobs.state == "done").all(), jobs[["label", "seed", "state", "error"]]
    assert not m.duplicated(["job_id", "epoch", "name"]).any()
    names = set(m.name.astype(str))
    for jid in jobs.job_id:
        rows = m[m.job_id == jid]
        assert sorted(set(rows.epoch)) == list(range(1, epochs + 1))
        assert len(rows) == epochs * len(names)


@pytest.fixture(params=BACKENDS)
def url(request, tmp_path) -> str:
    """A fresh database at the newest schema: a SQLite file, or the emptied PostgreSQL test database.
    Created here, so a test polling it never races a worker that creates it."""
    if request.param == "postgresql":
        from conftest import drop_all

        drop_all(PG_URL)
        url = PG_URL
    else:
        url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    Store(url).close()
    return url


# ----------------------------------------------------------------------------------------------
# Profiles and devices (no processes)


def test_profiles_in_runners_load_and_mistakes_name_file_key_and_allowed(tmp_path):
    local = load_profile(ROOT / "runners" / "local.toml")
    assert local.devices == "auto" and local.jobs_per_device == 1 and local.slurm is None
    slurm = load_profile(ROOT / "runners" / "slurm.toml")
    assert slurm.slurm is not None and slurm.slurm.time == 24 * 60 and slurm.jobs_per_device == 2

    bad = tmp_path / "bad.toml"
    bad.write_text('[runner]\njobs_per_devise = 2\ndevices = "gpu0"\nmax_attempts = 0\n'
                   '[slurm]\ntime = "forever"\n[cluster]\n')
    with pytest.raises(RunnerProfileError) as e:
        load_profile(bad)
    text = str(e.value)
    assert str(bad) in text and "5 problem(s)" in text
    assert "runner.jobs_per_devise: unknown key; did you mean 'jobs_per_device'?" in text
    assert "runner.devices = 'gpu0'" in text and '"0,1"' in text
    assert "runner.max_attempts = 0: must be an integer >= 1" in text
    assert "slurm.time = 'forever'" in text and "[cluster]: unknown table" in text
    with pytest.raises(RunnerProfileError, match="jobs_per_device = 0"):
        local.override(jobs_per_device=0)
    assert local.override(devices="cpu", workers=None).devices == "cpu"

    # the CLI reports it with exit code 2 and no traceback
    result = CliRunner().invoke(main, ["worker", "--runner", str(bad), "--db", f"sqlite:///{tmp_path / 'r.sqlite'}"])
    assert result.exit_code == 2 and "jobs_per_devise" in result.output and "Traceback" not in result.output


def test_cpu_threads_leave_a_core_free_unless_the_profile_or_flag_says_otherwise(tmp_path):
    from benchmark.runner.profile import job_threads, usable_cores

    assert job_threads(0, 1, cores=2) == 1  # this project's 2-core machine: one core for the rest
    assert job_threads(0, 2, cores=2) == 1
    assert job_threads(0, 1, cores=16) == 15 and job_threads(0, 4, cores=16) == 3
    assert job_threads(0, 3, cores=1) == 1
    assert job_threads(3, 4, cores=2) == 3  # the profile's (or --threads') value wins
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)
    # --threads reaches the profile, and a submitted Slurm worker gets it as a flag
    from benchmark.runner.api import runner_profile
    from benchmark.runner.slurm import worker_command

    path = ROOT / "runners" / "slurm.toml"
    profile, overrides = runner_profile({"runner_path": str(path), "threads": 2, "workers": None})
    assert profile.threads == 2 and overrides == {"threads": 2}
    assert worker_command("sqlite:////x.sqlite", str(path), ["s"], overrides)[-2:] == ["--threads", "2"]
    result = CliRunner().invoke(main, ["worker", "--threads", "0", "--db", f"sqlite:///{tmp_path / 'r.sqlite'}"])
    assert result.exit_code == 2 and "--threads" in result.output


def test_discovery_honours_fake_gpus_and_cuda_visible_devices(monkeypatch):
    monkeypatch.delenv("BENCH_FAKE_GPUS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert discover("cpu") == [Device("cpu")]
    monkeypatch.setenv("BENCH_FAKE_GPUS", "3")
    gpus = discover("auto")
    assert [d.name for d in gpus] == ["cuda:0", "cuda:1", "cuda:2"] and all(d.fake for d in gpus)
    assert gpus[1].child_env() == {"CUDA_VISIBLE_DEVICES": "1"} and gpus[1].torch_device == "cpu"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7,9")
    picked = discover("0,2")  # indices as this process sees them, physical ids from CUDA_VISIBLE_DEVICES
    assert [d.name for d in picked] == ["cuda:5", "cuda:9"] and picked[1].child_env()["CUDA_VISIBLE_DEVICES"] == "9"
    with pytest.raises(DeviceError, match="no CUDA device 3"):
        discover("3")
    monkeypatch.setenv("BENCH_FAKE_GPUS", "0")
    assert discover("auto") == [Device("cpu")]
    with pytest.raises(DeviceError, match="no CUDA device is visible"):
        discover("cuda")


def test_a_slot_held_by_another_process_is_never_given_out(tmp_path):
    pool = SlotPool([Device("cuda", "0", True), Device("cuda", "1", True)], 2, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from filelock import FileLock\n"
        f"l = FileLock({str(pool.path(pool.devices[0], 0))!r}); l.acquire()\n"
        "print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        got = [pool.acquire() for _ in range(4)]
        assert [s.name for s in got[:3]] == ["gpu1.slot0", "gpu0.slot1", "gpu1.slot1"] and got[3] is None
        got[0].release()
        assert pool.acquire().name == "gpu1.slot0"
    finally:
        holder.kill()
        holder.wait()
    assert pool.acquire().name == "gpu0.slot0"  # the dead holder's lock is gone with it


def test_claim_job_skips_excluded_jobs(tmp_path):
    """The worker's max_epochs rule: a job it paused is not taken again in the same call."""
    from benchmark.suite import load_suite

    with Store(f"sqlite:///{tmp_path / 'r.sqlite'}") as s:
        s.register_suite(load_suite(write_suite(tmp_path / "s.toml", seeds=[0, 1])))
        first, second = sorted(s.jobs_frame().job_id)
        assert s.claim_job("h:1:a", "cpu", exclude={first}).id == second
        assert s.claim_job("h:1:b", "cpu", exclude={first}) is None


# ----------------------------------------------------------------------------------------------
# Workers


@pytest.mark.slow
def test_four_workers_share_one_database(tmp_path, url):
    """4 `bench worker` processes (as if on 4 hosts: each its own slot locks), 40 jobs, one SQLite
    file or PostgreSQL database: every job done exactly once, epochs 1..E once each, no locking error."""
    suite = write_suite(tmp_path / "many.toml", name="many", seeds=range(20), images=64,
                        entries={"plain": 'model = { shortcut = "none" }', "res": ""})
    from benchmark.suite import load_suite

    with Store(url) as s:
        s.register_suite(load_suite(suite))
    workers = []
    for i in range(4):
        profile = write_profile(tmp_path, f"w{i}.toml", lock_dir=str(tmp_path / f"locks{i}"))
        workers.append(start(tmp_path, "worker", "--db", url, "--runner", profile))
    outputs = [finish(w, timeout=400) for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0, 0], outputs
    assert not any("locked" in o for o in outputs), outputs
    assert_clean_logs(tmp_path)
    assert_complete(url, epochs=2)
    with Store(url) as s:
        jobs = s.jobs_frame()
    assert len(jobs) == 40 and (jobs.attempts == 1).all()
    pids = {w.split(":")[1] for w in jobs.worker}
    assert len(pids) >= 2, pids  # the work was really shared


@pytest.mark.slow
def test_device_slots_never_hold_more_than_jobs_per_device_across_processes(tmp_path):
    """Two workers, 2 fake GPUs, 2 jobs per GPU: worker A may only use GPU 0, worker B both. B
    wants 4 jobs at once but must leave A's slots alone: never more than 2 jobs on one GPU."""
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    suite = write_suite(tmp_path / "s.toml", seeds=range(16))  # enough for A not to finish before B starts
    from benchmark.suite import load_suite

    with Store(url) as s:
        s.register_suite(load_suite(suite))
    trace = tmp_path / "trace.log"
    profile = write_profile(tmp_path, jobs_per_device=2)
    hooks = dict(BENCH_FAKE_GPUS="2", BENCH_SLOT_TRACE=str(trace), BENCH_FAULT="*=slow")
    a = start(tmp_path, "worker", "--db", url, "--runner", profile, "--devices", "0", **hooks)
    wait_until(lambda: trace.exists() and trace.read_text().count(" start ") >= 2, what="A's two jobs")
    b = start(tmp_path, "worker", "--db", url, "--runner", profile, **hooks)
    finish(a), finish(b)
    assert a.returncode == 0 and b.returncode == 0
    assert_clean_logs(tmp_path)
    assert_complete(url, epochs=2)

    events = []
    for line in trace.read_text().splitlines():
        t, kind, device, job, pid = line.split()
        events.append((float(t), 0 if kind == "end" else 1, device, int(job)))
    now: dict[str, int] = {}
    peak: dict[str, int] = {}
    for _, start_, device, _ in sorted(events):
        now[device] = now.get(device, 0) + (1 if start_ else -1)
        peak[device] = max(peak.get(device, 0), now[device])
    assert set(peak) == {"cuda:0", "cuda:1"}
    assert max(peak.values()) == 2, peak  # packed two per GPU, never three
    with Store(url) as s:
        jobs = s.jobs_frame()
    by_worker = jobs.groupby(jobs.worker.str.split(":").str[1]).device.agg(set)
    assert len(by_worker) == 2 and {"cuda:0"} in list(by_worker)  # both ran jobs; A only on GPU 0
    assert set(jobs.device) == {"cuda:0", "cuda:1"}


def test_a_waiting_worker_starts_newly_queued_jobs_while_another_job_runs(tmp_path):
    """`bench worker --wait` with 2 slots, one busy: a suite registered meanwhile starts at once,
    not when the running job ends."""
    from benchmark.suite import load_suite

    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    with Store(url) as s:
        s.register_suite(load_suite(write_suite(tmp_path / "long.toml", name="long", epochs=50,
                                                entries={"slow": ""})))
    trace = tmp_path / "trace.log"
    w = start(tmp_path, "worker", "--wait", "--db", url, "--runner", write_profile(tmp_path, devices="cpu", workers=2),
              BENCH_FAULT="slow=slow", BENCH_SLOT_TRACE=str(trace))
    try:
        wait_until(lambda: trace.exists() and " start " in trace.read_text(), what="the long job")
        with Store(url) as s:
            s.register_suite(load_suite(write_suite(tmp_path / "short.toml", name="short", epochs=1)))
        wait_until(lambda: trace.read_text().count(" end ") >= 1, 60, "the new job")
        with Store(url) as s:
            states = dict(zip(s.jobs_frame().label, s.jobs_frame().state))
        assert states == {"slow": "running", "net": "done"}, states
    finally:
        w.send_signal(signal.SIGINT)
    finish(w, timeout=60)
    assert w.returncode == 130


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Metrics of the 3-epoch job below, run once without interruption by a worker."""
    tmp = tmp_path_factory.mktemp("reference")
    url = f"sqlite:///{tmp / 'r.sqlite'}"
    suite = write_suite(tmp / "one.toml", name="one", images=256, epochs=3)
    out = finish(start(tmp, "run", suite, "--db", url, "--runner", write_profile(tmp)))
    assert "1 done" in out, out
    assert_clean_logs(tmp)
    return metric_table(url)


@pytest.mark.slow
def test_worker_killed_with_sigkill_mid_job_is_taken_over_and_finishes_identically(tmp_path, url, reference):
    suite = write_suite(tmp_path / "one.toml", name="one", images=256, epochs=3)
    profile = write_profile(tmp_path)
    first = start(tmp_path, "run", suite, "--db", url, "--runner", profile, BENCH_FAULT="net=slow@2")
    wait_until(lambda: epochs_done(url) >= 1, what="epoch 1")
    first.kill()
    first.wait()
    with Store(url) as s:
        job = s.jobs_frame().iloc[0]
    assert job.state == "running" and job.epochs_done < 3  # nobody told the database
    # its job process notices that the worker is gone and kills itself
    log = next((tmp_path / "ckpt" / "logs").glob("job*.log")).read_text()
    child = int(log.split(" pid ")[1].split()[0])
    wait_until(lambda: not _pid_alive(child), 10, "the job process to die")

    out = finish(start(tmp_path, "worker", "--db", url, "--runner", profile))
    assert "took back 1 job(s)" in out, out
    with Store(url) as s:
        job = s.jobs_frame().iloc[0]
    assert job.state == "done" and job.attempts == 2
    assert metric_table(url) == reference


@pytest.mark.slow
def test_sigint_gives_the_job_back_with_its_checkpoint_and_a_rerun_finishes_it_identically(tmp_path, reference):
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    suite = write_suite(tmp_path / "one.toml", name="one", images=256, epochs=3)
    profile = write_profile(tmp_path)
    first = start(tmp_path, "run", suite, "--db", url, "--runner", profile, BENCH_FAULT="net=slow@2")
    wait_until(lambda: Path(tmp_path / "r.sqlite").exists() and epochs_done(url) >= 1, what="epoch 1")
    first.send_signal(signal.SIGINT)
    out = finish(first, timeout=60)
    assert first.returncode == 130, out
    assert "paused at its last checkpoint" in out
    with Store(url) as s:
        job = s.jobs_frame().iloc[0]
    assert job.state == "queued" and job.attempts == 0 and 1 <= job.epochs_done < 3
    assert list((tmp_path / "ckpt").glob("*.pt")), "the last epoch's checkpoint is kept"

    second = start(tmp_path, "run", suite, "--db", url, "--runner", profile)
    out = finish(second)
    assert second.returncode == 0 and "0 new" in out
    with Store(url) as s:
        job = s.jobs_frame().iloc[0]
    assert job.state == "done" and job.attempts == 1
    assert metric_table(url) == reference


@pytest.mark.slow
def test_raise_oom_crash_and_divergence_end_in_their_states_while_other_jobs_finish(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    suite = write_suite(tmp_path / "bad.toml", name="bad", entries={
        "ok": "seeds = [1]", "boom": "seeds = [2]", "oom": "seeds = [3]", "crash": "seeds = [4]",
        "diverge": 'model = { norm = "none", residual_scale = "tau", tau = 1.0 }\noptim = { lr = 1e6 }'})
    profile = write_profile(tmp_path, max_attempts=2, workers=2)
    p = start(tmp_path, "run", suite, "--db", url, "--runner", profile,
              BENCH_FAULT="boom=raise;oom=oom;crash=exit@2")
    out = finish(p)
    assert p.returncode == 1, out  # exit 1: jobs ended failed or diverged (a script must notice)
    assert "4 job(s) ended failed or diverged" in out and "bench retry bad" in out
    with Store(url) as s:
        jobs = s.jobs_frame().set_index("label")
    assert jobs.loc["ok", "state"] == "done"
    assert jobs.loc["boom", "state"] == "failed" and "fault injected" in jobs.loc["boom", "error"]
    assert jobs.loc["boom", "attempts"] == 1 and "Traceback" in jobs.loc["boom", "error"]
    # out of memory: retried (another job may have crowded the GPU), then failed with the reason
    assert jobs.loc["oom", "state"] == "failed" and jobs.loc["oom", "attempts"] == 2
    assert "gave up after 2 attempts" in jobs.loc["oom", "error"] and "out of memory" in jobs.loc["oom", "error"]
    # a process that dies without a word: requeued, resumed from its checkpoint, failed after 2 claims
    assert jobs.loc["crash", "state"] == "failed" and jobs.loc["crash", "attempts"] == 2
    assert "exited with code 3" in jobs.loc["crash", "error"] and jobs.loc["crash", "epochs_done"] == 1
    assert jobs.loc["diverge", "state"] == "diverged" and "training loss became" in jobs.loc["diverge", "error"]
    assert "out of memory" in out and "diverged" in out


@pytest.mark.slow
def test_bench_run_killed_with_sigkill_then_rerun_finishes_every_job_without_duplicates(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    suite = write_suite(tmp_path / "s.toml", seeds=[0, 1], epochs=3)
    ckpt = str(tmp_path / "ckpt")
    args = ("run", suite, "--db", url, "--devices", "cpu", "--workers", "2", "--checkpoint-dir", ckpt)
    first = start(tmp_path, *args, BENCH_FAULT="net=slow@2")
    wait_until(lambda: Path(tmp_path / "r.sqlite").exists() and epochs_done(url) >= 1, what="epoch 1")
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    second = start(tmp_path, *args)
    out = finish(second)
    assert second.returncode == 0 and "2 done" in out, out
    assert_clean_logs(tmp_path)
    assert_complete(url, epochs=3)


def test_status_shows_progress_test_error_and_eta(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    suite = write_suite(tmp_path / "s.toml", epochs=3)
    out = finish(start(tmp_path, "run", suite, "--db", url, "--runner", write_profile(tmp_path), "--max-epochs", "1"))
    assert "paused" in out
    assert_clean_logs(tmp_path)
    import json

    result = CliRunner().invoke(main, ["status", "--db", url, "--format", "json"])
    row = json.loads(result.output)[0]
    assert row["state"] == "queued" and row["epochs_done"] == 1 and row["epochs"] == 3
    assert 0 <= row["test_error"] <= 100 and row["eta_s"] > 0
    table = CliRunner().invoke(main, ["status", "--db", url])
    assert "1/3" in table.output and "1 queued" in table.output


def test_worker_refuses_an_old_schema_with_exit_2_and_the_upgrade_command(tmp_path):
    from alembic import command

    from benchmark.store import db

    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = db.make_engine(url)
    with db.writer(engine).begin() as c:
        command.upgrade(db.alembic_config(c), "0001")
    engine.dispose()
    result = subprocess.run(bench_cmd("worker", "--db", url), cwd=tmp_path, env=env(), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "bench db upgrade" in result.stderr and "Traceback" not in result.stderr + result.stdout


def test_worker_for_an_unknown_suite_names_the_registered_ones(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    result = CliRunner().invoke(main, ["worker", "--db", url, "--suite", "nope", "--devices", "cpu"])
    assert result.exit_code == 2 and "no suite named 'nope'" in result.output and "registered: none" in result.output


# ----------------------------------------------------------------------------------------------
# Slurm (no cluster here: the parameters are checked against submitit's, and the same submission
# runs through submitit's LocalExecutor)


def test_slurm_parameters_are_ones_submitit_accepts_and_the_command_is_a_worker(tmp_path):
    pytest.importorskip("submitit")
    from submitit.auto.auto import AutoExecutor
    from submitit.slurm.slurm import SlurmExecutor, _make_sbatch_string

    from benchmark.runner.slurm import slurm_parameters, worker_command

    profile = load_profile(ROOT / "runners" / "slurm.toml")
    params = slurm_parameters(profile.slurm)
    generic = AutoExecutor._valid_parameters()
    for key in params:
        assert key in generic or key.removeprefix("slurm_") in SlurmExecutor._valid_parameters(), key
    assert params["slurm_partition"] == "gpu" and params["timeout_min"] == 24 * 60 and params["gpus_per_node"] == 1
    slurm_only = {k.removeprefix("slurm_"): v for k, v in params.items() if k.startswith("slurm_")}
    sbatch = _make_sbatch_string(command="bench worker", folder=tmp_path, job_name="bench-worker",
                                 time=params["timeout_min"], gpus_per_node=params["gpus_per_node"],
                                 cpus_per_task=params["cpus_per_task"], mem=f"{params['mem_gb']}GB", **slurm_only)
    assert "#SBATCH --partition=gpu" in sbatch and "#SBATCH --gpus-per-node=1" in sbatch

    cmd = worker_command("sqlite:///db/results.sqlite", "runners/slurm.toml", ["he2016"])
    assert cmd[1:4] == ["-m", "benchmark.cli", "worker"]
    assert cmd[cmd.index("--db") + 1] == f"sqlite:///{Path('db/results.sqlite').resolve()}"  # absolute: another node
    assert cmd[cmd.index("--runner") + 1] == str((Path("runners") / "slurm.toml").resolve())
    assert cmd[-2:] == ["--suite", "he2016"]


def test_slurm_workers_get_the_command_line_overrides_and_quick_runs_here(tmp_path):
    from benchmark.runner.api import runner_profile
    from benchmark.runner.slurm import worker_command

    path = ROOT / "runners" / "slurm.toml"
    # the overrides the command line parsed travel as they are (typed in any order), never re-read from the file
    profile, overrides = runner_profile(dict(runner_path=str(path), max_epochs=2, jobs_per_device=4, workers=None))
    assert overrides == {"jobs_per_device": 4, "max_epochs": 2}
    assert (profile.jobs_per_device, profile.max_epochs) == (4, 2)
    cmd = worker_command("sqlite:////x.sqlite", str(path), ["s"], overrides)
    assert cmd[cmd.index("--suite"):] == ["--suite", "s", "--jobs-per-device", "4", "--max-epochs", "2"]
    assert runner_profile({"runner_path": str(path)}) == (load_profile(path), {})

    # --quick checks this machine's set-up: it trains here even with a [slurm] profile, never submits
    profile = write_profile(tmp_path)
    Path(profile).write_text(Path(profile).read_text() + '[slurm]\nexecutor = "local"\n')
    result = CliRunner().invoke(main, ["run", write_suite(tmp_path / "s.toml"), "--quick", "--runner", profile])
    assert result.exit_code == 0 and "submitted" not in result.output, result.output
    assert "done" in result.output


def test_slurm_without_submitit_says_how_to_install_it(tmp_path, monkeypatch):
    from benchmark.runner.slurm import SlurmError, submit

    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    with pytest.raises(SlurmError, match=r"pip install -e '\.\[slurm\]'"):
        submit(load_profile(ROOT / "runners" / "slurm.toml"), "sqlite:///x.sqlite", ["s"])


@pytest.mark.slow
def test_run_with_a_slurm_profile_submits_workers_that_do_the_jobs(tmp_path):
    """`bench run SUITE --runner slurm-profile` registers and submits; the submitted `bench worker`
    (run here by submitit's LocalExecutor, the test hook `executor = "local"`) does the jobs."""
    pytest.importorskip("submitit")
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    suite = write_suite(tmp_path / "s.toml", seeds=[0, 1])
    profile = write_profile(tmp_path, devices="cpu", workers=2)
    Path(profile).write_text(Path(profile).read_text() + f'[slurm]\nworkers = 1\ntime = 10\nexecutor = "local"\n'
                             f'log_dir = "{tmp_path / "slurm"}"\n')
    out = finish(start(tmp_path, "run", suite, "--db", url, "--runner", profile))
    assert "submitted 1 `bench worker` job(s)" in out and "SQLite file" in out, out
    wait_until(lambda: (Store(url).jobs_frame().state == "done").all(), 180, "the submitted worker")
    assert_complete(url, epochs=2)
