"""Random kills on both backends: SIGKILL, SIGTERM or SIGINT at a moment drawn from a seeded
generator, then a rerun. Whatever the moment: no duplicate or missing epoch row, no job left
running, and the non-timing metrics of an uninterrupted run."""
from __future__ import annotations

import random
import signal
import subprocess
import time

import pytest

from benchmark.store import Store
from conftest import PG_URL, drop_all
from test_runner import assert_complete, finish, metric_table, start, write_profile, write_suite

TRIALS = 10
EPOCHS = 3
SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    url = f"sqlite:///{tmp / 'ref.sqlite'}"
    suite = write_suite(tmp / "k.toml", name="k", seeds=(0, 1), images=64, epochs=EPOCHS)
    p = start(tmp, "run", suite, "--db", url, "--runner", write_profile(tmp))
    finish(p)
    assert p.returncode == 0
    return metric_table(url)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_random_kills_then_rerun_finish_exactly(backend, tmp_path, uninterrupted):
    if backend == "postgresql" and not PG_URL:
        pytest.skip("BENCH_TEST_POSTGRES_URL is not set (.ci/postgres.sh starts a PostgreSQL in CI)")
    rng = random.Random(f"kills-{backend}")  # the moments are the same in every run of the test
    for trial in range(TRIALS):
        folder = tmp_path / f"t{trial}"
        folder.mkdir()
        if backend == "postgresql":
            drop_all(PG_URL)
            url = PG_URL
        else:
            url = f"sqlite:///{folder / 'r.sqlite'}"
        suite = write_suite(folder / "k.toml", name="k", seeds=(0, 1), images=64, epochs=EPOCHS)
        profile = write_profile(folder)
        sig, delay = rng.choice(SIGNALS), rng.uniform(0.2, 5.0)
        p = start(folder, "run", suite, "--db", url, "--runner", profile, BENCH_FAULT="*=slow")
        time.sleep(delay)
        p.send_signal(sig)
        try:
            p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
        where = f"trial {trial}: {sig.name} after {delay:.2f} s"
        rerun = start(folder, "run", suite, "--db", url, "--runner", profile)
        out = finish(rerun)
        assert rerun.returncode == 0, f"{where}\n{out}"
        with Store(url) as s:
            jobs = s.jobs_frame()
        assert not (jobs.state == "running").any(), where
        assert_complete(url, epochs=EPOCHS)
        assert metric_table(url) == uninterrupted, where
