"""The reader's pace: time of day and weeks off per subscriber, and the history of changes.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (no batch copy): SQLite's table copy would lose the lower(email)
    # unique index, which SQLAlchemy cannot reflect.
    op.add_column(
        "subscribers",
        sa.Column("time_of_day", sa.String(16), nullable=False, server_default="morning"),
    )
    op.add_column(
        "subscribers", sa.Column("weeks_off", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column("subscribers", sa.Column("weeks_off_lesson", sa.Integer(), nullable=True))
    op.create_table(
        "changes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "subscriber_id",
            sa.Integer(),
            sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(16), nullable=False),
        sa.Column("via", sa.String(32), nullable=False),
        sa.Column("change", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    op.create_index("ix_changes_subscriber", "changes", ["subscriber_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_changes_subscriber", table_name="changes")
    op.drop_table("changes")
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("weeks_off_lesson")
        batch.drop_column("weeks_off")
        batch.drop_column("time_of_day")
    if op.get_bind().dialect.name == "sqlite":  # the table copy dropped it
        op.create_index(
            "uq_subscribers_email", "subscribers", [sa.text("lower(email)")], unique=True
        )
