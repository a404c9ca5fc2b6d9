"""The results database schema, as SQLAlchemy 2.x typed declarative models.

The models describe the schema at the newest migration (``benchmark/migrations``). They are used
to build queries; the tables themselves are only ever created or changed by Alembic migrations,
and ``tests/test_store_migrations.py`` checks that the two agree.

Timestamps always come from the database's clock (``utcnow()`` below), never from Python's, so
workers on several machines with skewed clocks still agree on whose heartbeat is stale.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.functions import FunctionElement

from benchmark.vocabulary import JobState



class utcnow(FunctionElement):
    """The database's current UTC time, with sub-second precision where the backend allows."""

    type = DateTime(timezone=True)
    inherit_cache = True


@compiles(utcnow)
def _utcnow_default(element, compiler, **kw):  # pragma: no cover - other backends
    return "CURRENT_TIMESTAMP"


@compiles(utcnow, "sqlite")
def _utcnow_sqlite(element, compiler, **kw):
    # CURRENT_TIMESTAMP has whole seconds only. '%f' gives SS.SSS; the literal 000 pads it to
    # microseconds so stored text compares correctly with datetimes bound by SQLAlchemy.
    return "STRFTIME('%Y-%m-%d %H:%M:%f000', 'now')"


@compiles(utcnow, "postgresql")
def _utcnow_postgresql(element, compiler, **kw):
    return "CURRENT_TIMESTAMP"  # timestamptz: an absolute instant, whatever the session zone


class Base(DeclarativeBase):
    pass


class SuiteRow(Base):
    __tablename__ = "suites"
    __table_args__ = (UniqueConstraint("name", name="uq_suites_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")  # the TOML source, as registered
    title: Mapped[str] = mapped_column(Text, default="")
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("suite_id", "key", name="uq_jobs_suite_key"),
        Index("ix_jobs_state_id", "state", "id"),  # claim: oldest queued job
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    suite_id: Mapped[int] = mapped_column(ForeignKey("suites.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))  # JobSpec.key
    cell: Mapped[str] = mapped_column(String(64))  # JobSpec.cell_key
    label: Mapped[str] = mapped_column(String(200))
    seed: Mapped[int] = mapped_column(Integer)
    config: Mapped[str] = mapped_column(Text)  # JobSpec.canonical_json()
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED.value)  # a JobState
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200))  # "host:pid[...]"
    device: Mapped[str | None] = mapped_column(String(100))
    epochs_done: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)  # last traceback / reason
    environment: Mapped[str | None] = mapped_column(Text)  # JSON: torch, cuda, gpu, host, git
    # The code that produced the results: "<bench version>+g<commit>[.dirty.<diff hash>]" (see
    # environment.Provenance); the diff itself is in code_diffs.
    code_version: Mapped[str | None] = mapped_column(String(200))
    # Set when the suite was registered again (--replace) with a text that no longer has this job:
    # kept with its results, never trained or reported again; `bench prune` deletes it.
    orphaned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DatabaseRow(Base):
    """One row: this database's identity, made when it is created (or upgraded to revision 0003).
    Every checkpoint carries it, so a checkpoint is never replayed into another database."""

    __tablename__ = "bench_database"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CodeDiffRow(Base):
    """The uncommitted change a job ran with (``git diff HEAD``), by its SHA-256, size-capped."""

    __tablename__ = "code_diffs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)  # bytes of the whole diff; ``diff`` may be cut short
    diff: Mapped[str] = mapped_column(Text)


class MetricRow(Base):
    """Long form: one row per (job, epoch, metric name). The primary key makes writes upserts, and
    its leading column serves queries by job."""

    __tablename__ = "metrics"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[float | None] = mapped_column(Float)  # NULL stores NaN


suites_table = SuiteRow.__table__
jobs_table = JobRow.__table__
metrics_table = MetricRow.__table__
database_table = DatabaseRow.__table__
code_diffs_table = CodeDiffRow.__table__
