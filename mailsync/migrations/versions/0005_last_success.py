"""mailboxes.last_success_at: when the mailbox's last cycle without error ended

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 22:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


# Plain ALTER TABLE on both backends (SQLite 3.35 and newer drops a column
# itself): a batch copy of the table would drop it, and with the foreign keys
# on, SQLite would delete the mailboxes' sources with it.


def upgrade() -> None:
    op.add_column(
        "mailboxes", sa.Column("last_success_at", sa.DateTime(), nullable=True)
    )
    # What is known: a last cycle without error was the last success.
    op.execute(
        "UPDATE mailboxes SET last_success_at = last_cycle_at WHERE last_error IS NULL"
    )


def downgrade() -> None:
    op.drop_column("mailboxes", "last_success_at")
