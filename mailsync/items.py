"""Connector-neutral items: what a connector reads, before any linking.

A connector turns each change in a mailbox folder into an :class:`Item` (a
message, a meeting or a task), a removal, or a :class:`RejectedItem` when the
change could not be read. The sync core and the linker only see these types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum


class ItemKind(StrEnum):
    MESSAGE = "message"
    MEETING = "meeting"
    TASK = "task"


class Role(StrEnum):
    """The role of an address on an item."""

    FROM = "from"
    TO = "to"
    CC = "cc"
    BCC = "bcc"
    REPLY_TO = "reply_to"
    DELEGATE = "delegate"
    ORGANIZER = "organizer"
    ATTENDEE = "attendee"


class FolderRole(StrEnum):
    """What a folder is for, as far as the connector can tell."""

    INBOX = "inbox"
    SENT = "sent"
    DRAFTS = "drafts"
    JUNK = "junk"
    DELETED = "deleted"
    OUTBOX = "outbox"
    CALENDAR = "calendar"
    TASKS = "tasks"
    OTHER = "other"


@dataclass(frozen=True)
class Participant:
    """An address on an item, as written, with its role.

    ``unresolved`` marks an address the connector could not turn into SMTP (an
    Exchange X500 address, say): it is kept but never matched by domain.
    """

    address: str
    name: str
    role: Role
    response: str | None = None
    unresolved: bool = False


@dataclass(frozen=True)
class Meeting:
    uid: str
    method: str | None
    sequence: int
    start: datetime | date | None
    end: datetime | date | None
    status: str | None
    recurrence_id: str | None = None
    location: str = ""


@dataclass(frozen=True)
class Task:
    """An Outlook task. ``uid`` is the connector's stable id for it, the same
    after a move and in every mailbox that holds it; ``contacts`` and
    ``companies`` are the names a rep typed in the task's Contacts and
    Companies fields."""

    uid: str
    status: str | None
    due: datetime | date | None
    owner: str | None = None
    contacts: tuple[str, ...] = ()
    companies: tuple[str, ...] = ()
    completed: datetime | date | None = None


@dataclass(frozen=True)
class Folder:
    """A folder of a mailbox: its provider id, its display path and its role."""

    id: str
    name: str
    role: FolderRole = FolderRole.OTHER


@dataclass
class Item:
    """One thing read from a mailbox, before linking.

    ``message_id`` is the normalised Message-ID (no angle brackets, no
    whitespace), or ``None``. ``body_text`` is used for the content fingerprint
    and the preview; it is personal data and is never logged. ``list_headers``
    carries the headers that mark automated mail (List-Id, List-Unsubscribe,
    Precedence, Auto-Submitted, ...), lower-cased names. ``occurred_at`` is
    what the item says (its Date), part of its identity; ``received_at`` is
    when the mailbox got it, shown when the item says nothing usable.
    """

    provider_id: str
    folder: Folder
    kind: ItemKind
    subject: str
    occurred_at: datetime | None
    participants: list[Participant]
    message_id: str | None = None
    received_at: datetime | None = None
    in_reply_to: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    body_text: str = ""
    sensitivity: str | None = None
    categories: tuple[str, ...] = ()
    list_headers: Mapping[str, str] = field(default_factory=dict)
    defects: list[str] = field(default_factory=list)
    change_key: str | None = None
    meeting: Meeting | None = None
    task: Task | None = None
    is_draft: bool = False
    is_report: bool = False


@dataclass(frozen=True)
class RejectedItem:
    """A change that could not be read, kept with its reason."""

    provider_id: str
    folder: Folder
    reason: str


@dataclass
class ChangeBatch:
    """A page of changes in one folder, and the cursor that follows it.

    The store writes the items, the removals and the cursor in one transaction.
    """

    folder: Folder
    items: list[Item] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rejected: list[RejectedItem] = field(default_factory=list)
    cursor: str | None = None
