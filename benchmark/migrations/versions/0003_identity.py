"""Identity and provenance: the database's UUID (checkpoints carry it), each job's code version,
the uncommitted diffs jobs ran with, and jobs orphaned by a suite registered again with --replace.

Jobs written before this revision get a code version from their stored environment: release 0.1.0
recorded the git commit and a dirty flag, but not the diff.

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import json
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    database = op.create_table(
        "bench_database",
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "code_diffs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("diff", sa.Text, nullable=False),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("code_version", sa.String(200)))
        batch.add_column(sa.Column("orphaned_at", sa.DateTime(timezone=True)))
    op.execute(database.insert().values(uuid=str(uuid.uuid4()), created_at=sa.func.current_timestamp()))

    conn = op.get_bind()
    jobs = sa.table("jobs", sa.column("id", sa.Integer), sa.column("environment", sa.Text),
                    sa.column("code_version", sa.String))
    for job_id, env in conn.execute(sa.select(jobs.c.id, jobs.c.environment)
                                    .where(jobs.c.environment.is_not(None))).all():
        version = _release_010_version(env)
        if version:
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(code_version=version))


def _release_010_version(env_json: str) -> str | None:
    try:
        env = json.loads(env_json)
    except ValueError:
        return None
    commit = env.get("git_commit") if isinstance(env, dict) else None
    if not commit:
        return "0.1.0"
    return f"0.1.0+g{commit[:12]}" + (".dirty" if env.get("git_dirty") else "")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("orphaned_at")
        batch.drop_column("code_version")
    op.drop_table("code_diffs")
    op.drop_table("bench_database")
