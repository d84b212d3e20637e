"""The due index ends with the subscriber id: the keyset walk over due subscribers is a range scan.

`send` walks the due subscribers in (next_due_at, id) order, fifty at a time.
On SQLite every index ends with the rowid anyway; on PostgreSQL, without the id,
a Monday morning with 100,000 subscribers due at one instant made every batch
re-read all of them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_subscribers_due", table_name="subscribers")
    op.create_index("ix_subscribers_due", "subscribers", ["status", "next_due_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_subscribers_due", table_name="subscribers")
    op.create_index("ix_subscribers_due", "subscribers", ["status", "next_due_at"])
