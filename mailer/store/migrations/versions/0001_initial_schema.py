"""Initial schema: subscribers, the delivery ledger, and installation meta values.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Instant = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.create_table(
        "subscribers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", Instant, nullable=False),
        sa.Column("confirmed_at", Instant, nullable=True),
        sa.Column("status_changed_at", Instant, nullable=False),
        sa.Column("started_at", Instant, nullable=True),
        sa.Column("next_lesson", sa.Integer(), nullable=True),
        sa.Column("next_due_at", Instant, nullable=True),
    )
    op.create_index("uq_subscribers_email", "subscribers", [sa.text("lower(email)")], unique=True)
    op.create_index("ix_subscribers_due", "subscribers", ["status", "next_due_at"])
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "subscriber_id",
            sa.Integer(),
            sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("due_at", Instant, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", Instant, nullable=True),
        sa.Column("claim_token", sa.String(32), nullable=True),
        sa.Column("claimed_until", Instant, nullable=True),
        sa.Column("sent_at", Instant, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", Instant, nullable=False),
        sa.UniqueConstraint("subscriber_id", "key", name="uq_deliveries_subscriber_key"),
    )
    op.create_index("ix_deliveries_status", "deliveries", ["status"])
    op.create_index("ix_deliveries_subscriber_id", "deliveries", ["subscriber_id"])


def downgrade() -> None:
    op.drop_table("deliveries")
    op.drop_table("subscribers")
    op.drop_table("meta")
