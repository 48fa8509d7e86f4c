"""The tables. Schema changes go through the Alembic migrations beside them."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as naive UTC, and hands them back aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(
        self, value: datetime | None, dialect: object
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(
        self, value: datetime | None, dialect: object
    ) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


def now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    name_key: Mapped[str] = mapped_column(String(300), unique=True)
    phone: Mapped[str] = mapped_column(String(100), default="")
    notes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    domains: Mapped[list[AccountDomain]] = relationship(
        back_populates="account", cascade="all, delete-orphan"
    )


class AccountDomain(Base):
    __tablename__ = "account_domains"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE")
    )
    domain: Mapped[str] = mapped_column(String(255), unique=True)
    account: Mapped[Account] = relationship(back_populates="domains")


class Contact(Base):
    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    account_id: Mapped[int | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL"), index=True
    )
    title: Mapped[str] = mapped_column(String(300), default="")
    phone: Mapped[str] = mapped_column(String(100), default="")
    origin: Mapped[str] = mapped_column(String(20), default="import")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    addresses: Mapped[list[ContactAddress]] = relationship(
        back_populates="contact", cascade="all, delete-orphan"
    )
    account: Mapped[Account | None] = relationship()


class ContactAddress(Base):
    __tablename__ = "contact_addresses"
    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE")
    )
    address: Mapped[str] = mapped_column(String(320), unique=True)
    contact: Mapped[Contact] = relationship(back_populates="addresses")


class AddressLink(Base):
    """A manual link of one address, made by ``mailsync link ADDRESS``."""

    __tablename__ = "address_links"
    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    target_kind: Mapped[str] = mapped_column(String(10))
    target_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class Rep(Base):
    __tablename__ = "reps"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(300), unique=True)


class Mailbox(Base):
    __tablename__ = "mailboxes"
    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    rep_id: Mapped[int] = mapped_column(ForeignKey("reps.id"))
    kind: Mapped[str] = mapped_column(String(20))
    last_cycle_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When its last cycle without error ended (a check that found nothing
    # included): the status's lag counts from it.
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_counts: Mapped[str | None] = mapped_column(Text)
    rep: Mapped[Rep] = relationship()


class Cursor(Base):
    """A connector's opaque sync position for one scope (a folder) of a mailbox."""

    __tablename__ = "cursors"
    __table_args__ = (UniqueConstraint("mailbox_id", "scope"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailboxes.id", ondelete="CASCADE")
    )
    scope: Mapped[str] = mapped_column(String(500))
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class Activity(Base):
    """One real-world item in the history, however many sources it has."""

    __tablename__ = "activities"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    direction: Mapped[str] = mapped_column(String(20))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    preview: Mapped[str] = mapped_column(Text, default="")
    message_id: Mapped[str | None] = mapped_column(String(998))
    author: Mapped[str | None] = mapped_column(String(320))
    defects: Mapped[str] = mapped_column(Text, default="[]")
    meeting_uid: Mapped[str | None] = mapped_column(String(998))
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    all_day: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(20), default="active")
    sequence: Mapped[int] = mapped_column(Integer, default=0)
    # A task's Outlook status, due date and completion. A due date without a
    # time is stored as midnight UTC of that day with ``due_is_date`` set.
    task_status: Mapped[str | None] = mapped_column(String(30))
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    due_is_date: Mapped[bool | None] = mapped_column(Boolean)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class ActivityKey(Base):
    """An identity of an activity: a Message-ID, a fingerprint or a meeting UID."""

    __tablename__ = "activity_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(1000), unique=True)
    activity_id: Mapped[int] = mapped_column(
        ForeignKey("activities.id", ondelete="CASCADE"), index=True
    )


class ThreadRef(Base):
    """A Message-ID that an activity points at (In-Reply-To or References)."""

    __tablename__ = "thread_refs"
    __table_args__ = (UniqueConstraint("activity_id", "message_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    activity_id: Mapped[int] = mapped_column(
        ForeignKey("activities.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[str] = mapped_column(String(998), index=True)


class Source(Base):
    """Where an activity was seen: mailbox, folder, provider id, change key."""

    __tablename__ = "sources"
    __table_args__ = (UniqueConstraint("mailbox_id", "provider_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    activity_id: Mapped[int] = mapped_column(
        ForeignKey("activities.id", ondelete="CASCADE"), index=True
    )
    mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailboxes.id", ondelete="CASCADE")
    )
    folder: Mapped[str] = mapped_column(String(500))
    provider_id: Mapped[str] = mapped_column(String(1000))
    change_key: Mapped[str | None] = mapped_column(String(500))
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ParticipantRow(Base):
    __tablename__ = "participants"
    __table_args__ = (
        UniqueConstraint("activity_id", "address", "role"),
        Index("ix_participants_address_status", "address", "status"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    activity_id: Mapped[int] = mapped_column(
        ForeignKey("activities.id", ondelete="CASCADE"), index=True
    )
    address: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(300), default="")
    role: Mapped[str] = mapped_column(String(20))
    response: Mapped[str | None] = mapped_column(String(30))
    unresolved: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(20))
    rule: Mapped[str | None] = mapped_column(String(20))
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL")
    )
    account_id: Mapped[int | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL")
    )


class ActivityName(Base):
    """A name typed in a task's Contacts or Companies field, with its match.

    It is kept as typed: a name that matched nothing waits for review under
    its own text, never as an address.
    """

    __tablename__ = "activity_names"
    __table_args__ = (UniqueConstraint("activity_id", "field", "name_key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    activity_id: Mapped[int] = mapped_column(
        ForeignKey("activities.id", ondelete="CASCADE"), index=True
    )
    field: Mapped[str] = mapped_column(String(10))
    name: Mapped[str] = mapped_column(String(300))
    name_key: Mapped[str] = mapped_column(String(300), index=True)
    status: Mapped[str] = mapped_column(String(20))
    rule: Mapped[str | None] = mapped_column(String(20))
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL")
    )
    account_id: Mapped[int | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL")
    )


class Link(Base):
    """An activity tied to a contact or an account, with the rule that made it.

    A manual unlink is kept as a row with ``suppressed`` set, so that no later
    sync or relink brings the link back.
    """

    __tablename__ = "links"
    __table_args__ = (
        UniqueConstraint("activity_id", "target_kind", "target_id"),
        Index("ix_links_target", "target_kind", "target_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    activity_id: Mapped[int] = mapped_column(
        ForeignKey("activities.id", ondelete="CASCADE"), index=True
    )
    target_kind: Mapped[str] = mapped_column(String(10))
    target_id: Mapped[int] = mapped_column(Integer)
    rule: Mapped[str] = mapped_column(String(20))
    manual: Mapped[bool] = mapped_column(Boolean, default=False)
    suppressed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class SkippedItem(Base):
    """An item seen and not recorded: excluded by a rule, or rejected as unreadable."""

    __tablename__ = "skipped_items"
    __table_args__ = (UniqueConstraint("mailbox_id", "provider_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailboxes.id", ondelete="CASCADE")
    )
    folder: Mapped[str] = mapped_column(String(500))
    provider_id: Mapped[str] = mapped_column(String(1000))
    outcome: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class CheckIn(Base):
    """A recurring reminder for a contact, set by ``mailsync reminders add``.

    ``cron`` is a standard five-field crontab expression in the rep's time
    zone; ``schedule`` says it in words, as it was asked for.
    """

    __tablename__ = "check_ins"
    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailboxes.id", ondelete="CASCADE")
    )
    cron: Mapped[str] = mapped_column(String(100))
    schedule: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class Reminder(Base):
    """A follow-up that a rule produced for a rep: a task, or a letter.

    ``key`` names the condition that made it (``no_reply:<activity id>``, ...)
    and is unique: one condition gives at most one reminder, whatever
    restart, crash or resync comes between. ``activity_id`` is the activity
    recorded when it was delivered.
    """

    __tablename__ = "reminders"
    __table_args__ = (Index("ix_reminders_status_due", "status", "due_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(300), unique=True)
    rule: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(20))
    mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailboxes.id", ondelete="CASCADE")
    )
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL")
    )
    account_id: Mapped[int | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL")
    )
    trigger_activity_id: Mapped[int | None] = mapped_column(
        ForeignKey("activities.id", ondelete="SET NULL"), index=True
    )
    check_in_id: Mapped[int | None] = mapped_column(
        ForeignKey("check_ins.id", ondelete="SET NULL"), index=True
    )
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    subject: Mapped[str] = mapped_column(Text, default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    template: Mapped[str | None] = mapped_column(String(200))
    activity_id: Mapped[int | None] = mapped_column(
        ForeignKey("activities.id", ondelete="SET NULL")
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Lease(Base):
    """Who may sync a mailbox now: one service instance, until ``expires_at``.

    ``name`` is the mailbox's address, or a name that starts with ``@`` for
    other work one instance at a time may do (``@followups``, the scheduler)
    and for the instances themselves (``@instance:<holder>``). ``holder`` is
    ``host:pid:random``. A holder that dies stops renewing: its leases expire.
    """

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(400), primary_key=True)
    holder: Mapped[str] = mapped_column(String(300))
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
