"""Engines, storage errors and schema migrations: the plumbing under ``Store``.

SQLite (the embedded default) is configured for several worker processes on one machine:

- WAL journal, so readers (``bench report``) never block the workers' writes;
- a busy timeout, so a writer waits for the lock instead of failing at once;
- pysqlite's own transaction handling switched off (``isolation_level = None``) and our own
  ``BEGIN`` emitted in a ``begin`` event, as SQLAlchemy documents for pysqlite
  ("Serializable isolation / Savepoints / Transactional DDL"). Write transactions use
  ``BEGIN IMMEDIATE``: they take the write lock up front, where the busy timeout applies. With
  pysqlite's default deferred transactions two connections can both read, then both try to upgrade
  to writing, and one fails at once with "database is locked" whatever the timeout.

The same code runs against PostgreSQL (or any SQLAlchemy URL): every SQLite detail sits behind a
``dialect.name == "sqlite"`` branch.

Schema: ``benchmark/migrations`` (Alembic, configured in code, no alembic.ini). A new, empty
database is brought to the newest revision when a ``Store`` opens it; an existing database at an
older revision is refused with a ``SchemaError`` that says to run ``bench db upgrade``, so that
migrations run once, before workers start, and never from inside a worker.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Iterator

from sqlalchemy import Connection, Engine, create_engine, event, exc, inspect, text
from sqlalchemy.engine import make_url

from benchmark.errors import UserError

DEFAULT_URL = "sqlite:///db/results.sqlite"
URL_HELP = f"SQLAlchemy URL of the results database [default: $BENCH_DB, else {DEFAULT_URL}]"
BUSY_TIMEOUT_S = 30.0
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
BENCH_TABLES = frozenset({"suites", "jobs", "metrics"})
# The newest migration's revision, so that opening a database at it needs no alembic (importing
# its migration machinery is a quarter of a second of every `bench` command). Another revision
# takes alembic's own path (check_schema). tests/test_store_migrations.py checks it is the head.
SCHEMA_HEAD = "0003"
_PG_LOCK_KEY = 0x62656E6368  # "bench": pg_advisory_xact_lock key serialising schema creation


class StoreError(UserError, RuntimeError):
    """A storage problem with a message fit for the user: what, where (the URL) and how to fix it."""


class SchemaError(StoreError):
    """The database's schema revision is not the one this code needs."""


class NotFound(StoreError, LookupError):
    """No such suite or job."""


# ----------------------------------------------------------------------------------------------
# URLs


def resolve_url(url: str | None) -> str:
    """``url``, else ``$BENCH_DB``, else the default SQLite file ``db/results.sqlite`` (from CWD)."""
    return url or os.environ.get("BENCH_DB") or DEFAULT_URL


def check_url(url: str) -> None:
    """Refuse, up front and with the reason, a URL bench cannot use: malformed, another backend, a
    missing driver, an in-memory SQLite database (each job runs in its own process, which would see
    its own empty database), or SQLite URL options (``?mode=ro`` would be silently ignored)."""
    try:
        u = make_url(url)
    except Exception as e:  # sqlalchemy.exc.ArgumentError and friends
        raise StoreError(f"{url!r} is not a database URL ({e}); expected sqlite:///path/results.sqlite "
                         "or postgresql+psycopg://user@host/dbname") from None
    backend = u.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise StoreError(f"{display_url(url)}: bench stores results in SQLite or PostgreSQL, not {backend!r}")
    if backend == "sqlite":
        if sqlite_path(url) is None:
            raise StoreError(f"{display_url(url)} is not a SQLite file (in memory, or a file: URI): bench runs "
                             "each job in its own process, which must open the same file. Give a path: "
                             "sqlite:///path/results.sqlite")
        if u.query:
            raise StoreError(f"{display_url(url)}: bench does not take SQLite URL options "
                             f"({', '.join(sorted(u.query))}); every command opens the file as it needs. "
                             "To read a database without touching it, copy the file first")
        return
    try:
        u.get_dialect()  # imports the driver
    except Exception as e:  # NoSuchModuleError, ModuleNotFoundError
        raise StoreError(f"{display_url(url)}: cannot load the PostgreSQL driver ({type(e).__name__}: {e}); "
                         "install it with pip install -e '.[postgres]' and use postgresql+psycopg://...") from None


def display_url(url: str) -> str:
    """The URL as it may be printed: password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL; None for other backends and in-memory databases."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        return None
    db = u.database or ""
    if db in ("", ":memory:") or db.startswith("file:") or u.query.get("mode") == "memory":
        return None
    return Path(db)


def make_sqlite_folder(url: str) -> None:
    """Create the folder of a SQLite file, or say clearly why it cannot be (a file in the way, no rights)."""
    path = sqlite_path(url)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create the folder for the SQLite database {path}: {e.strerror or e}; "
                         "give --db a sqlite:///path in a writable folder") from e


# ----------------------------------------------------------------------------------------------
# Engines


def make_engine(url: str) -> Engine:
    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        return create_engine(u, pool_pre_ping=True)

    engine = create_engine(u, connect_args={"timeout": BUSY_TIMEOUT_S})
    in_memory = sqlite_path(url) is None

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, connection_record):
        # Stop pysqlite from issuing BEGIN (and COMMIT before DDL) itself; _on_begin does it.
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if not in_memory:
                cur.execute("PRAGMA journal_mode = WAL")
                cur.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; fsync at checkpoints
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        immediate = conn.get_execution_options().get("bench_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def writer(engine: Engine) -> Engine:
    """The same engine (same pool) whose transactions take SQLite's write lock up front."""
    return engine.execution_options(bench_write=True)


# ----------------------------------------------------------------------------------------------
# Errors


def describe(error: BaseException, url: str) -> str:
    """A one-paragraph explanation of a database error: what happened, where, what to do."""
    orig = getattr(error, "orig", None) or error
    msg = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    shown = display_url(url)
    low = msg.lower()
    path = sqlite_path(url) if url.startswith("sqlite") else None
    if "locked" in low or "busy" in low:
        return (f"database at {shown} is locked ({msg}; waited up to {BUSY_TIMEOUT_S:g} s). "
                "Another process holds a long write transaction: look for a hung `bench` process; "
                "for many workers or several machines use PostgreSQL (--db postgresql://...).")
    if "not a database" in low or "malformed" in low or "disk image" in low:
        fix = f"move it aside (mv {path} {path}.bad) and run again" if path else "restore it"
        return (f"database at {shown} is not a readable SQLite database ({msg}): the file is corrupt "
                f"or not SQLite. {fix[0].upper() + fix[1:]}, or pass another --db URL.")
    if "unable to open" in low:
        return (f"cannot open database at {shown} ({msg}): check that the folder exists and is "
                "writable, or pass another --db URL.")
    if "readonly" in low or "read-only" in low:
        return f"database at {shown} is read-only ({msg}): check the file's permissions."
    if "disk is full" in low or "disk i/o" in low:
        return f"database at {shown} cannot be written ({msg}): check free disk space."
    if any(s in low for s in ("could not connect", "connection refused", "could not translate host",
                              "authentication failed", "does not exist", "timeout expired",
                              "connection to server", "name or service not known")):
        return (f"cannot connect to database at {shown} ({msg}): check that the server is running "
                "and that host, port, database name, user and password in the URL are right.")
    return f"database error at {shown}: {msg}"


@contextlib.contextmanager
def translate_errors(url: str) -> Iterator[None]:
    """Turn driver errors into ``StoreError`` with a message naming the URL and a fix."""
    try:
        yield
    except StoreError:
        raise
    except (exc.DBAPIError, sqlite3.Error) as e:
        raise StoreError(describe(e, url)) from e


# ----------------------------------------------------------------------------------------------
# Migrations


def alembic_config(connection: Connection | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _script():
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = _script().get_current_head()
    assert head is not None, f"no migrations in {MIGRATIONS_DIR}"
    return head


def _known(revision: str) -> bool:
    try:
        return _script().get_revision(revision) is not None
    except Exception:  # alembic.util.CommandError / ResolutionError: not in our history
        return False


def _stamped(conn: Connection) -> str | None:
    """The revision in alembic_version, read with plain SQL, without importing alembic (None: no
    such table, or not one row: bench's history has no branches)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return rows[0] if len(rows) == 1 else None


def _current(conn: Connection) -> tuple[str | None, bool]:
    """(revision stamped in alembic_version or None, whether any bench table exists)."""
    tables = set(inspect(conn).get_table_names())
    return _stamped(conn), bool(tables & BENCH_TABLES)


def _mismatch(url: str, rev: str | None, head: str) -> SchemaError:
    shown = display_url(url)
    if rev is None:
        return SchemaError(
            f"database at {shown} has bench tables but no schema revision (no alembic_version "
            f"table), this bench needs {head}: it was not made by `bench`, or by a very early "
            "version. Move it aside and start a new database, or pass another --db URL.")
    if _known(rev):
        return SchemaError(
            f"database at {shown} has schema revision {rev}, this bench needs {head}: "
            f"run `bench db upgrade --db {shown}`")
    return SchemaError(
        f"database at {shown} has schema revision {rev}, which this bench does not know: the "
        f"database is newer than the code (this bench's newest revision is {head}). Update bench "
        "(git pull && pip install -e .), or pass another --db URL.")


def schema_status(engine: Engine, url: str) -> tuple[str | None, str, bool]:
    """(current revision, head revision, bench tables exist)."""
    with translate_errors(url), engine.connect() as conn:
        rev, tables = _current(conn)
    return rev, head_revision(), tables


@contextlib.contextmanager
def creation_lock(url: str) -> Iterator[None]:
    """Serialise schema creation between processes: a file lock next to a SQLite file.

    (PostgreSQL uses a transaction-scoped advisory lock inside ``upgrade_engine`` instead.)
    """
    path = sqlite_path(url)
    if path is None:
        yield
        return
    from filelock import FileLock, Timeout

    lock = FileLock(str(path) + ".lock", timeout=4 * BUSY_TIMEOUT_S)
    try:
        with lock:
            yield
    except Timeout as e:
        raise StoreError(f"timed out waiting for {lock.lock_file} while creating or upgrading "
                         f"{display_url(url)}: is another `bench` stuck? Remove the lock file if "
                         "no bench process is running.") from e


def upgrade_engine(engine: Engine, url: str, *, create: bool = True) -> tuple[str | None, str]:
    """Migrate to the newest revision in one transaction; returns (revision before, after).

    Refuses (``SchemaError``) a database newer than the code, and one with bench tables but no
    revision. With ``create=False`` an empty database is an error rather than created.
    """
    from alembic import command

    head = head_revision()
    with translate_errors(url), creation_lock(url), writer(engine).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        rev, tables = _current(conn)  # re-read under the lock: another process may have won
        if rev == head:
            return rev, head
        if (rev is None and tables) or (rev is not None and not _known(rev)):
            raise _mismatch(url, rev, head)
        if rev is None and not create:
            raise StoreError(f"no bench database at {display_url(url)}: run "
                             f"`bench db upgrade --db {display_url(url)}` to create one")
        command.upgrade(alembic_config(conn), "head")
        return rev, head


def check_schema(engine: Engine, url: str, *, create: bool) -> None:
    """Open-time check: create a new empty database, refuse any other revision than head."""
    with translate_errors(url), engine.connect() as conn:
        if _stamped(conn) == SCHEMA_HEAD:
            return
    rev, head, tables = schema_status(engine, url)
    if rev == head:
        return
    if rev is None and not tables:
        if not create:
            raise StoreError(f"no bench database at {display_url(url)}: run "
                             f"`bench db upgrade --db {display_url(url)}` to create one")
        upgrade_engine(engine, url)
        return
    raise _mismatch(url, rev, head)
