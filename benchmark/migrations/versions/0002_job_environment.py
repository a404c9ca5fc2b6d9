"""Record each job's environment (torch, CUDA, GPU, host, git commit); index jobs by state.

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("environment", sa.Text))
    # claim_job looks for the oldest queued job: WHERE state = 'queued' ORDER BY id.
    op.create_index("ix_jobs_state_id", "jobs", ["state", "id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_state_id", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("environment")
