"""Runner profiles: ``runners/*.toml`` say where and how jobs run (devices, jobs per device, liveness
timeouts, folders, and for a cluster the Slurm request).

A profile has a ``[runner]`` table (every key optional, defaults below) and, for a cluster, a
``[slurm]`` table. Command-line flags override single keys (``--jobs-per-device 2``). A mistake is
reported like a suite mistake: the file, the key, the bad value and what is allowed, all at once.

A table becomes its dataclass the way a suite's sections do (``benchmark.validation.convert``: the
field's type hint is the schema), then each class's ``RULES`` (beside its fields) check the values.
"""
from __future__ import annotations

import os
import tempfile
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Mapping

from benchmark.errors import ConfigFileError
from benchmark.validation import Rule, convert, did_you_mean, field_hints


class RunnerProfileError(ConfigFileError):
    """A runner profile is wrong. The message names the file, each bad key and what is allowed."""

    what = "runner profile"


def default_lock_dir() -> str:
    """Device-slot locks are per host, not per checkout: two clones of the repository on one machine
    must still share its GPUs, so the default lives in the system's temp folder."""
    user = os.environ.get("USER") or str(os.getuid())
    return str(Path(tempfile.gettempdir()) / f"bench-{user}" / "locks")


AT_LEAST_1 = Rule("an integer >= 1", lambda v: v >= 1)
AT_LEAST_0 = Rule("an integer >= 0", lambda v: v >= 0)
POSITIVE = Rule("a number > 0", lambda v: v > 0)


def _devices_ok(v: str) -> bool:
    v = v.strip().lower()
    if v in ("auto", "cpu", "cuda"):
        return True
    parts = [p.strip() for p in v.split(",")]
    return all(p.isdigit() for p in parts) and len(set(parts)) == len(parts)


def _minutes(v: str) -> int | None:
    """A Slurm time limit "HH:MM:SS", "MM:SS" or "D-HH:MM:SS" in minutes (seconds round up); None if it is none."""
    days, _, rest = v.rpartition("-")
    try:
        parts = [int(p) for p in rest.split(":")]
        d = int(days) if days else 0
    except ValueError:
        return None
    if len(parts) == 3:
        h, m, s = parts
    elif len(parts) == 2:
        h, m, s = 0, *parts
    else:
        return None
    total = d * 1440 + h * 60 + m + (1 if s else 0)
    return total if total > 0 else None


@dataclass(frozen=True)
class SlurmOptions:
    """What each Slurm job asks for; every Slurm job runs one ``bench worker``."""

    workers: int = 1  # how many Slurm jobs (an array), i.e. how many `bench worker` processes
    partition: str = ""
    time: int = 60 * 24  # minutes; also "HH:MM:SS" or "D-HH:MM:SS" in the file
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: int = 32
    account: str = ""
    qos: str = ""
    constraint: str = ""
    array_parallelism: int = 0  # 0: no limit on how many run at once
    log_dir: str = "db/slurm"  # submitit's folder: scripts, stdout/stderr of each Slurm job
    extra: Mapping[str, Any] = field(default_factory=dict)  # more sbatch options, as submitit passes them
    executor: str = "slurm"  # test hook: "local" runs the workers as local processes (submitit's LocalExecutor)
    # Seconds before the time limit when Slurm tells the workers to stop (SIGUSR2): each job stops at its
    # next step, keeps its last epoch checkpoint and goes back to the queue. Slurm looks at its jobs' time
    # only every 30 s, so the signal comes 0-30 s earlier than this, and the kill up to 30 s later.
    signal_delay: int = 120
    # How many times each worker requeues itself (scontrol requeue: same job id, back in Slurm's queue)
    # after its time limit or a preemption while queued jobs remain; 0: never (resubmit by hand).
    requeues: int = 10

    INTERNAL: ClassVar[tuple[str, ...]] = ()  # fields a profile does not set
    RULES: ClassVar[dict[str, Rule]] = {
        "workers": AT_LEAST_1,
        "time": Rule('minutes (an integer) or "HH:MM:SS" / "D-HH:MM:SS"', lambda v: v > 0),  # strings: _minutes
        "gpus_per_node": AT_LEAST_0,
        "cpus_per_task": AT_LEAST_1,
        "mem_gb": AT_LEAST_1,
        "array_parallelism": AT_LEAST_0,
        "executor": Rule('"slurm" or "local" (a test hook)', lambda v: v in ("slurm", "local")),
        "signal_delay": AT_LEAST_1,
        "requeues": AT_LEAST_0,
    }


@dataclass(frozen=True)
class RunnerProfile:
    devices: str = "auto"  # auto | cpu | "0,1" (CUDA indices as this process sees them)
    jobs_per_device: int = 1  # several small networks share one GPU
    workers: int = 1  # concurrent jobs when running on the CPU
    threads: int = 0  # torch CPU threads per job; 0: job_threads' rule, (cores - 1) // concurrent jobs
    heartbeat_seconds: float = 10.0
    stale_timeout: float = 120.0  # a running job with no heartbeat for this long goes back to the queue
    max_attempts: int = 3  # claims before a job that keeps crashing is marked failed
    poll_seconds: float = 5.0  # `bench worker --wait`: how often an idle worker looks at the queue
    lock_dir: str = field(default_factory=default_lock_dir)
    checkpoint_dir: str = ""  # "" follows the database: see checkpoint_folder()
    log_dir: str = ""  # each job's stderr (tracebacks, warnings); "" means <checkpoint folder>/logs
    data_dir: str = ""  # "" means --data-dir, else $BENCH_DATA, else ~/.cache/bench/data
    max_epochs: int = 0  # 0: no budget; N: each job trains at most N epochs per call
    path: str = ""  # the file this came from ("" for the defaults)
    slurm: SlurmOptions | None = None

    INTERNAL: ClassVar[tuple[str, ...]] = ("path", "slurm")  # set by load_profile, not by a [runner] key
    RULES: ClassVar[dict[str, Rule]] = {
        "devices": Rule('"auto", "cpu", "cuda" (every visible GPU) or a list of CUDA indices like "0,1"', _devices_ok),
        "jobs_per_device": AT_LEAST_1,
        "workers": AT_LEAST_1,
        "threads": AT_LEAST_0,
        "heartbeat_seconds": POSITIVE,
        "stale_timeout": POSITIVE,
        "max_attempts": AT_LEAST_1,
        "poll_seconds": POSITIVE,
        "max_epochs": AT_LEAST_0,
    }

    def checkpoint_folder(self, database_url: str, database_id: str) -> Path:
        """Where the jobs of one database keep their checkpoints: ``checkpoint_dir`` when set;
        else beside a SQLite file (``db/results.sqlite`` -> ``db/results.checkpoints``); else, for
        a server database, ``db/checkpoints/<database UUID>`` under the working directory (set
        checkpoint_dir to a shared folder when workers on several machines should resume each
        other's jobs). Each checkpoint names its database too, so a folder shared by mistake
        never replays one database's results into another."""
        from benchmark.store.db import sqlite_path  # torch-free, SQLAlchemy only

        if self.checkpoint_dir:
            return Path(self.checkpoint_dir)
        path = sqlite_path(database_url)
        if path is not None:
            return path.with_name(f"{path.stem}.checkpoints")
        return Path("db/checkpoints") / database_id

    def log_folder(self, checkpoints: Path) -> Path:
        return Path(self.log_dir) if self.log_dir else checkpoints / "logs"

    def override(self, **values: Any) -> "RunnerProfile":
        """The profile with command-line values set (None means: not given); validated again."""
        given = {k: v for k, v in values.items() if v is not None}
        if not given:
            return self
        values, problems = _build(RunnerProfile, given, "")
        if problems:
            raise RunnerProfileError("command line", problems)
        return replace(self, **values)


def usable_cores() -> int:
    """The cores this process may run on: Slurm (``--cpus-per-task``), cgroups' cpusets and ``taskset``
    narrow the affinity mask, which ``os.cpu_count()`` ignores."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def job_threads(threads: int, concurrent_jobs: int, cores: int | None = None) -> int:
    """torch CPU threads per job: ``threads`` when the profile sets it, else ``(cores - 1) // jobs``, at
    least 1: one core is left for the worker, the database and whatever else runs on the machine.

    Why not all the cores: on this project's 2-core machine, a 2-thread job next to one other busy
    process ran about 10x slower than a 1-thread job (OpenMP threads wait for their descheduled peer
    at every parallel region; benchmarks/threads_speed.py, README "Speed"). On a CPU the thread count
    also changes the last bits of the results (the reductions split differently), so it is a fixed
    rule of the machine and the profile, never a guess from the current load, and every job records
    it (environment ``cpu_threads``)."""
    if threads:
        return threads
    return max(1, ((cores or usable_cores()) - 1) // max(1, concurrent_jobs))


def _build(cls: type, table: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """A TOML table checked against the user-set fields of ``cls``: (converted values, problems). Types
    come from the fields' hints (``convert``, as for suites), value rules from ``cls.RULES``."""
    hints = field_hints(cls)
    allowed = [name for name in hints if name not in cls.INTERNAL]
    values: dict[str, Any] = {}
    problems = []
    for key, value in table.items():
        name = f"{where}{key}"
        if key not in allowed:
            close = did_you_mean(key, allowed)
            problems.append(f"{name}: unknown key{'; ' + close if close else ''} (allowed: {', '.join(allowed)})")
            continue
        ok, converted, expected = convert(value, hints[key])
        rule = cls.RULES.get(key)
        if ok and (rule is None or rule.ok(converted)):
            values[key] = converted
        else:
            problems.append(f"{name} = {value!r}: must be {rule.allowed if rule else expected}")
    return values, problems


def load_profile(path: str | Path | None) -> RunnerProfile:
    """Read and validate a profile; ``None`` gives the defaults (what ``runners/local.toml`` holds)."""
    if path is None:
        return RunnerProfile()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunnerProfileError(str(path), ["file not found (profiles live under runners/, e.g. runners/local.toml)"])
    except (OSError, UnicodeDecodeError) as e:
        raise RunnerProfileError(str(path), [f"cannot read the file: {e}"])
    except tomllib.TOMLDecodeError as e:
        raise RunnerProfileError(str(path), [f"not valid TOML: {e}"])
    problems = []
    for key in data:
        if key not in ("runner", "slurm"):
            problems.append(f"[{key}]: unknown table (allowed: [runner], [slurm])")
    runner = data.get("runner", {})
    slurm = data.get("slurm")
    if not isinstance(runner, dict):
        problems.append("runner: must be a table ([runner])")
        runner = {}
    if slurm is not None and not isinstance(slurm, dict):
        problems.append("slurm: must be a table ([slurm])")
        slurm = None
    runner_values, runner_problems = _build(RunnerProfile, runner, "runner.")
    problems += runner_problems
    slurm_options = None
    if slurm is not None:
        if isinstance(slurm.get("time"), str):  # "HH:MM:SS" -> minutes; a bad string stays, to be refused
            slurm = {**slurm, "time": _minutes(slurm["time"]) or slurm["time"]}
        slurm_values, slurm_problems = _build(SlurmOptions, slurm, "slurm.")
        problems += slurm_problems
        slurm_options = SlurmOptions(**slurm_values)
    if problems:
        raise RunnerProfileError(str(path), problems)
    return RunnerProfile(**runner_values, path=str(path), slurm=slurm_options)
