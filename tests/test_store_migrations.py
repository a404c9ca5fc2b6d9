"""Schema revisions and storage errors: what a user sees when the database is old, new, foreign,
corrupt, locked or missing."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from benchmark.store import SchemaError, Store, StoreError, db, head_revision, schema_revision, upgrade
from benchmark.store.schema import Base


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'results.sqlite'}"


def migrate_to(url: str, revision: str) -> None:
    engine = db.make_engine(url)
    with db.writer(engine).begin() as c:
        command.upgrade(db.alembic_config(c), revision)
    engine.dispose()


def test_schema_head_constant_is_alembics_head():
    """Store() opens a database at SCHEMA_HEAD without alembic: a new migration must move it."""
    assert db.SCHEMA_HEAD == head_revision()


def test_new_database_is_created_at_head(url, tmp_path):
    assert schema_revision(url) == (None, head_revision())
    Store(url).close()
    assert schema_revision(url) == (head_revision(), head_revision())
    with sqlite3.connect(tmp_path / "results.sqlite") as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_default_url_is_db_results_sqlite_under_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BENCH_DB", raising=False)
    with Store() as s:
        assert s.url == "sqlite:///db/results.sqlite"
    assert (tmp_path / "db" / "results.sqlite").is_file()


def test_migrations_match_models(url):
    Store(url).close()
    engine = create_engine(url)
    with engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), Base.metadata)
    engine.dispose()
    assert diff == []


def test_old_revision_refused_then_upgraded(url):
    migrate_to(url, "0001")
    engine = create_engine(url)
    with engine.begin() as c:  # data written by the old schema must survive the upgrade
        c.execute(text("INSERT INTO suites (name, path, text, title, registered_at) "
                       "VALUES ('old', 'p', 't', '', '2020-01-01 00:00:00')"))
    engine.dispose()

    with pytest.raises(SchemaError) as e:
        Store(url)
    assert str(e.value) == (f"database at {url} has schema revision 0001, this bench needs "
                            f"{head_revision()}: run `bench db upgrade --db {url}`")

    assert upgrade(url) == ("0001", head_revision())
    assert upgrade(url) == (head_revision(), head_revision())  # idempotent
    with Store(url) as s:
        assert [x["name"] for x in s.suites()] == ["old"]


def test_newer_revision_refused(url):
    Store(url).close()
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(SchemaError, match="revision 9999, which this bench does not know.*newer"):
        Store(url)
    with pytest.raises(SchemaError, match="9999"):
        upgrade(url)


def test_tables_without_revision_refused(url):
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    with pytest.raises(SchemaError, match="no schema revision"):
        Store(url)


def test_create_false_does_not_create(url, tmp_path):
    with pytest.raises(StoreError, match="bench db upgrade"):
        Store(url, create=False)
    assert not (tmp_path / "results.sqlite").exists()
    upgrade(url)
    Store(url, create=False).close()


def test_corrupt_file_is_a_clear_store_error(url, tmp_path):
    path = tmp_path / "results.sqlite"
    path.write_bytes(b"this is not sqlite" + os.urandom(8192))
    with pytest.raises(StoreError) as e:
        Store(url)
    msg = str(e.value)
    assert "is not a readable SQLite database" in msg and url in msg and "mv " in msg
    assert not isinstance(e.value.__cause__, StoreError)


def test_unopenable_path_is_a_store_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError):
        Store(f"sqlite:///{blocker / 'sub' / 'results.sqlite'}")


def test_locked_database_is_a_store_error(url, tmp_path, monkeypatch):
    monkeypatch.setattr(db, "BUSY_TIMEOUT_S", 0.2)
    s = Store(url)
    holder = sqlite3.connect(tmp_path / "results.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process in a long write transaction
    try:
        with pytest.raises(StoreError, match=r"is locked .*hung `bench` process"):
            s.set_environment(1, {})
        assert s.jobs_frame().empty  # WAL: reads still work while someone writes
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        s.close()


def test_unreachable_server_is_a_store_error():
    pytest.importorskip("psycopg")
    with pytest.raises(StoreError, match="cannot connect"):
        Store("postgresql+psycopg://bench:secret@127.0.0.1:1/bench?connect_timeout=2")


def test_migrations_ship_in_the_package():
    """An installed (non-editable) bench must carry every migration: setup.cfg's package_data globs
    have to match every file of benchmark/migrations, or `bench db upgrade` breaks only after release."""
    import configparser
    from fnmatch import fnmatch

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    globs = [g.strip() for g in cfg["options.package_data"]["benchmark"].split(",")]
    package = Path(db.MIGRATIONS_DIR).parent
    files = [p.relative_to(package).as_posix() for p in Path(db.MIGRATIONS_DIR).rglob("*")
             if p.is_file() and "__pycache__" not in p.parts]
    assert {"migrations/env.py", "migrations/versions/0001_initial.py"} <= set(files)
    assert [f for f in files if not any(fnmatch(f, g) for g in globs)] == []