from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
# A throw-away PostgreSQL (.ci/postgres.sh starts one in CI): tests parametrised over BACKENDS also
# run there, on a database emptied of bench's tables first.
PG_URL = os.environ.get("BENCH_TEST_POSTGRES_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])

# Fuzz tests (hypothesis): a few seconds by default; `pytest --hypothesis-profile long` for a soak.
_FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("default", max_examples=40, **_FUZZ)
settings.register_profile("long", max_examples=2000, **_FUZZ)
settings.load_profile("default")

# Two cores on the CI machine: more threads only add contention between test processes.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def shared_data() -> Path:
    """The real CIFAR mini subsets beside the repository; tests using them skip elsewhere."""
    if not (SHARED_DATA / "cifar-10-batches-py").is_dir():
        pytest.skip(f"real CIFAR images not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'results.sqlite'}"


def drop_all(url: str) -> None:
    """Empty a test PostgreSQL database of every table bench made (the schema's and Alembic's)."""
    from sqlalchemy import create_engine, text

    from benchmark.store.schema import Base

    engine = create_engine(url)
    with engine.begin() as c:
        for t in [*reversed(Base.metadata.sorted_tables), "alembic_version"]:
            c.execute(text(f"DROP TABLE IF EXISTS {getattr(t, 'name', t)} CASCADE"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def backend_url(request, tmp_path) -> str:
    """A fresh, empty results database on each backend."""
    if request.param == "postgresql":
        drop_all(PG_URL)
        return PG_URL
    return f"sqlite:///{tmp_path / 'results.sqlite'}"
