"""tasks: status, due date and completion on activities; typed names

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns only: the rows already stored are not tasks, and
    # SQLite adds such columns in place, without copying the table.
    with op.batch_alter_table("activities", schema=None) as batch_op:
        batch_op.add_column(sa.Column("task_status", sa.String(length=30)))
        batch_op.add_column(sa.Column("due_at", sa.DateTime()))
        batch_op.add_column(sa.Column("due_is_date", sa.Boolean()))
        batch_op.add_column(sa.Column("completed_at", sa.DateTime()))

    op.create_table(
        "activity_names",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("activity_id", sa.Integer(), nullable=False),
        sa.Column("field", sa.String(length=10), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("name_key", sa.String(length=300), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("rule", sa.String(length=20), nullable=True),
        sa.Column("contact_id", sa.Integer(), nullable=True),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["activity_id"], ["activities.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("activity_id", "field", "name_key"),
    )
    with op.batch_alter_table("activity_names", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_activity_names_activity_id"), ["activity_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_activity_names_name_key"), ["name_key"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("activity_names", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_activity_names_name_key"))
        batch_op.drop_index(batch_op.f("ix_activity_names_activity_id"))
    op.drop_table("activity_names")

    # Dropped one by one, outside a batch: SQLite (3.35 and newer) drops a
    # plain column in place, where a batch would copy "activities" and drop
    # the original, and with foreign keys on, dropping it would cascade into
    # the sources, keys and links of every activity.
    for column in ("completed_at", "due_is_date", "due_at", "task_status"):
        op.drop_column("activities", column)
