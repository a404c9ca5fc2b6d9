"""Alembic environment for the bench results database.

Run programmatically by ``benchmark.store.db.upgrade_engine`` (``bench db upgrade``, and a new ``Store``), which passes an open
connection, already inside a transaction, in ``config.attributes["connection"]``: the migration
then commits or rolls back together with the revision check around it. There is no alembic.ini.
"""
from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from benchmark.store.schema import Base

config = context.config


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTER TABLE is limited
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=Base.metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    conn = config.attributes.get("connection")
    if conn is not None:
        _run(conn)
    else:  # plain `alembic` command line with sqlalchemy.url set: a throwaway engine
        engine = create_engine(config.get_main_option("sqlalchemy.url"))
        with engine.begin() as conn:
            _run(conn)
        engine.dispose()
