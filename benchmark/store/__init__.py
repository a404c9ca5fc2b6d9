"""The results database: the only code that touches it. See ``store.py`` for the job life cycle,
epoch numbering and NaN handling, ``db.py`` for SQLite settings and migrations. Job states are
``benchmark.vocabulary.JobState``."""
from __future__ import annotations

from .db import (
    DEFAULT_URL,
    URL_HELP,
    NotFound,
    SchemaError,
    StoreError,
    display_url,
    head_revision,
    resolve_url,
)
from .environment import Provenance, environment, git_version, provenance
from .store import JobRecord, Store


def upgrade(url: str | None = None) -> tuple[str | None, str]:
    """``bench db upgrade``: create the database or migrate it to the newest schema revision.
    Returns (revision before or None for a new database, revision now)."""
    from . import db

    url = resolve_url(url)
    db.check_url(url)
    db.make_sqlite_folder(url)
    with db.translate_errors(url):
        engine = db.make_engine(url)
    try:
        return db.upgrade_engine(engine, url)
    finally:
        engine.dispose()


def schema_revision(url: str | None = None) -> tuple[str | None, str]:
    """``bench db status``: (the database's schema revision or None, the revision this code needs)."""
    from . import db

    url = resolve_url(url)
    db.check_url(url)
    path = db.sqlite_path(url)
    if path is not None and not path.exists():
        return None, db.head_revision()
    with db.translate_errors(url):
        engine = db.make_engine(url)
    try:
        rev, head, _ = db.schema_status(engine, url)
        return rev, head
    finally:
        engine.dispose()


__all__ = [
    "DEFAULT_URL", "URL_HELP",
    "JobRecord", "NotFound", "SchemaError", "Store", "StoreError", "display_url", "environment",
    "Provenance", "git_version", "head_revision", "provenance", "resolve_url", "schema_revision", "upgrade",
]
