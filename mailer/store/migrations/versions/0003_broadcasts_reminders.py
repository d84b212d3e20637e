"""Broadcast newsletters; per-subscriber reminder switch and course round.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Instant = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "broadcasts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("segment", sa.String(16), nullable=False),
        sa.Column("created_at", Instant, nullable=False),
        sa.Column("queued_at", Instant, nullable=True),
        sa.Column("send_at", Instant, nullable=True),
        sa.Column("recipients", sa.Integer(), nullable=False),
    )
    # Plain ADD COLUMN (no batch copy): SQLite's table copy would lose the lower(email)
    # unique index, which SQLAlchemy cannot reflect.
    op.add_column(
        "subscribers",
        sa.Column("course_round", sa.Integer(), nullable=False, server_default="1"),
    )
    op.add_column(
        "subscribers",
        sa.Column("reminders", sa.Boolean(), nullable=False, server_default=sa.true()),
    )


def downgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("reminders")
        batch.drop_column("course_round")
    if op.get_bind().dialect.name == "sqlite":  # the table copy dropped it
        op.create_index(
            "uq_subscribers_email", "subscribers", [sa.text("lower(email)")], unique=True
        )
    op.drop_table("broadcasts")
