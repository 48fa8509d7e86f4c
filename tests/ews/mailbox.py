"""The in-memory Exchange mailbox behind the EWS simulator.

Words used here, after the EWS reference:

- **folder**: a mailbox folder with an opaque ``FolderId``; the well-known ones
  also have a distinguished id (``inbox``, ``sentitems``, ``msgfolderroot``...).
- **item**: a message, calendar item, meeting message or task, with an opaque
  ``ItemId`` and a ``ChangeKey`` that changes whenever the item changes.
- **change log**: each folder records every create, update, read-flag change
  and delete in order. A sync state names a position in that log.

Moving an item gives it a new ItemId (and ChangeKey) in the target folder: the
source folder logs a delete and the target folder a create, as Exchange does.
The item keeps its PR_SEARCH_KEY (``search_key``), which the store gives
every new item and copies with it.

Tests fill a :class:`SimMailbox` directly (``add``, ``update``, ``mark_read``,
``move``, ``delete``); exchangelib sees the same state through the simulator.

- **events table**: the mailbox also records every change as an event, as
  Exchange's mailbox events table does: Created, Modified (of the item, and
  of its folder with its UnreadCount), Deleted, Moved (one event, with the
  old ItemId and folder) and NewMail for a delivered message. A pull
  subscription (:meth:`SimMailbox.subscribe`) reads it from a watermark, a
  position in that table. A subscription idle for longer than its timeout on
  the mailbox's :class:`SimClock` has expired; ``clock.advance`` moves time.
"""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import itertools
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime, timedelta
from email.utils import getaddresses, parsedate_to_datetime
from enum import StrEnum
from typing import Any

from tests.ews.faults import Faults

MSG_FOLDER_ROOT = "msgfolderroot"
ROOT = "root"


class ChangeKind(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    READ_FLAG = "read_flag"
    DELETE = "delete"


# What a sync client has of each item: the ChangeKey and read flag it last saw.
Known = dict[str, tuple[str, bool]]


class MeetingKind(StrEnum):
    REQUEST = "MeetingRequest"
    RESPONSE = "MeetingResponse"
    CANCELLATION = "MeetingCancellation"


# ---------------------------------------------------------------- addresses


@dataclass(frozen=True)
class Address:
    """An EWS ``Mailbox``: an SMTP address, or an X500 one (routing type EX)."""

    email: str
    name: str = ""
    routing_type: str = "SMTP"
    mailbox_type: str = "OneOff"

    @classmethod
    def of(cls, value: str | Address) -> Address:
        """``"Name <a@b>"``, ``"a@b"`` or an Address, as an Address."""
        if isinstance(value, Address):
            return value
        name, address = getaddresses([value])[0]
        return cls(email=address or value, name=name)

    @classmethod
    def x500(cls, legacy_dn: str, name: str = "") -> Address:
        """An Exchange-internal address, as EWS returns internal senders."""
        return cls(
            email=legacy_dn, name=name, routing_type="EX", mailbox_type="Mailbox"
        )


@dataclass(frozen=True)
class Attendee:
    address: Address
    response: str = "Unknown"
    last_response_time: datetime | None = None


@dataclass(frozen=True)
class Recurrence:
    """A recurrence pattern and range, as in ``t:Recurrence``.

    ``pattern`` is ``Daily``, ``Weekly``, ``AbsoluteMonthly``,
    ``RelativeMonthly``, ``AbsoluteYearly`` or ``RelativeYearly``; the
    relative ones take the first of ``days_of_week`` (or ``Day``, ``Weekday``,
    ``WeekendDay``) and ``week_index`` (``First`` ... ``Fourth``, ``Last``),
    the yearly ones ``month`` (``January`` ...). ``end`` or ``count`` bounds
    the range (neither: no end).
    """

    start: date
    pattern: str = "Weekly"
    interval: int = 1
    days_of_week: tuple[str, ...] = ("Monday",)
    day_of_month: int = 1
    week_index: str = "First"
    month: str = "January"
    end: date | None = None
    count: int | None = None


@dataclass
class Occurrence:
    """A modified occurrence (an exception) of a recurring master; what is
    left ``None`` is the master's."""

    original_start: datetime
    start: datetime
    end: datetime
    subject: str | None = None
    location: str | None = None
    required: tuple[Attendee, ...] | None = None
    optional: tuple[Attendee, ...] | None = None
    is_cancelled: bool = False
    item_id: str = ""
    change_key: str = ""


# -------------------------------------------------------------------- items


@dataclass(frozen=True)
class SimAttachment:
    """A file attachment (``t:FileAttachment``); the store gives its id."""

    name: str
    content: bytes = field(repr=False)
    content_type: str = "application/octet-stream"
    attachment_id: str = ""


@dataclass(eq=False)
class SimItem:
    """What every item has. ``item_id``, ``change_key`` and ``folder_id`` are
    set by the mailbox; leave them empty."""

    ELEMENT = "Item"
    ITEM_CLASS = "IPM"

    subject: str = ""
    body: str = ""
    body_type: str = "Text"
    categories: tuple[str, ...] = ()
    sensitivity: str = "Normal"
    importance: str = "Normal"
    datetime_received: datetime | None = None
    datetime_created: datetime | None = None
    last_modified_time: datetime | None = None
    reminder_is_set: bool = False
    reminder_due_by: datetime | None = None
    item_class: str | None = None
    search_key: bytes = b""
    attachments: tuple[SimAttachment, ...] = ()
    item_id: str = ""
    change_key: str = ""
    folder_id: str = ""

    @property
    def element(self) -> str:
        return self.ELEMENT

    @property
    def effective_item_class(self) -> str:
        return self.item_class or self.ITEM_CLASS

    def size(self) -> int:
        return len(self.subject) + len(self.body) + 200


@dataclass(eq=False)
class SimMessage(SimItem):
    """An e-mail. Give either ``mime`` (see :meth:`from_mime`) or the fields;
    the simulator makes MIME content from the fields when asked for it."""

    ELEMENT = "Message"
    ITEM_CLASS = "IPM.Note"

    author: Address | None = None
    sender: Address | None = None
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    received_by: Address | None = None
    message_id: str | None = None
    in_reply_to: str | None = None
    references: str | None = None
    datetime_sent: datetime | None = None
    is_read: bool = False
    is_draft: bool = False
    extra_headers: tuple[tuple[str, str], ...] = ()
    mime: bytes | None = None

    @classmethod
    def from_mime(cls, data: bytes, **overrides: Any) -> SimMessage:
        """A message whose fields are read from its RFC 822 bytes."""
        parsed = email.message_from_bytes(data, policy=email.policy.compat32)
        values: dict[str, Any] = {
            "mime": data,
            "subject": _header(parsed, "Subject") or "",
            "author": _first_address(parsed, "From"),
            "sender": _first_address(parsed, "Sender"),
            "to": _addresses(parsed, "To"),
            "cc": _addresses(parsed, "Cc"),
            "bcc": _addresses(parsed, "Bcc"),
            "reply_to": _addresses(parsed, "Reply-To"),
            "message_id": _header(parsed, "Message-ID"),
            "in_reply_to": _header(parsed, "In-Reply-To"),
            "references": _header(parsed, "References"),
            "datetime_sent": _date(parsed),
            "body": _plain_body(parsed),
        }
        values["categories"] = _keywords(parsed)
        values.update(overrides)
        return cls(**values)

    def size(self) -> int:
        return len(self.mime) if self.mime else super().size()


@dataclass(eq=False)
class SimMeetingMessage(SimMessage):
    """A meeting request, response or cancellation sent to or by the rep."""

    kind: MeetingKind = MeetingKind.REQUEST
    uid: str = ""
    sequence: int = 0
    start: datetime | None = None
    end: datetime | None = None
    location: str | None = None
    organizer: Address | None = None
    required: tuple[Attendee, ...] = ()
    optional: tuple[Attendee, ...] = ()
    response_type: str = "NoResponseReceived"
    meeting_request_type: str = "NewMeetingRequest"
    associated_calendar_item_id: str | None = None
    # One occurrence of a series: its original start (RECURRENCE-ID).
    recurrence_id: datetime | None = None
    # The zone the text/calendar part writes its times in (a Windows id the
    # simulator knows, see render.VTIMEZONES), else UTC.
    timezone: str | None = None

    @property
    def element(self) -> str:
        return str(self.kind)

    @property
    def effective_item_class(self) -> str:
        if self.item_class:
            return self.item_class
        if self.kind is MeetingKind.CANCELLATION:
            return "IPM.Schedule.Meeting.Canceled"
        if self.kind is MeetingKind.RESPONSE:
            suffix = {"Accept": "Pos", "Decline": "Neg", "Tentative": "Tent"}
            return "IPM.Schedule.Meeting.Resp." + suffix.get(self.response_type, "Pos")
        return "IPM.Schedule.Meeting.Request"


@dataclass(eq=False)
class SimCalendarItem(SimItem):
    """An appointment or meeting; a recurring master when ``recurrence`` is set.

    ``start_timezone`` is the Windows zone id that StartTimeZone and
    EndTimeZone give (such as ``W. Europe Standard Time``, or
    ``Customized Time Zone``); ``start`` and ``end`` stay UTC instants.
    """


    ELEMENT = "CalendarItem"
    ITEM_CLASS = "IPM.Appointment"

    uid: str = ""
    start: datetime | None = None
    end: datetime | None = None
    is_all_day: bool = False
    location: str | None = None
    organizer: Address | None = None
    required: tuple[Attendee, ...] = ()
    optional: tuple[Attendee, ...] = ()
    resources: tuple[Attendee, ...] = ()
    is_cancelled: bool = False
    my_response_type: str = "Organizer"
    sequence: int = 0
    legacy_free_busy_status: str = "Busy"
    start_timezone: str | None = None
    recurrence: Recurrence | None = None
    modified_occurrences: tuple[Occurrence, ...] = ()
    deleted_occurrences: tuple[datetime, ...] = ()

    @property
    def is_meeting(self) -> bool:
        return bool(self.required or self.optional or self.resources)

    @property
    def calendar_item_type(self) -> str:
        return "RecurringMaster" if self.recurrence else "Single"


@dataclass(eq=False)
class SimTask(SimItem):
    ELEMENT = "Task"
    ITEM_CLASS = "IPM.Task"

    status: str = "NotStarted"
    start_date: datetime | None = None
    due_date: datetime | None = None
    complete_date: datetime | None = None
    percent_complete: int = 0
    owner: str | None = None
    companies: tuple[str, ...] = ()
    contacts: tuple[str, ...] = ()

    @property
    def is_complete(self) -> bool:
        return self.status == "Completed"


# ------------------------------------------------------------------ folders


@dataclass(eq=False)
class SimFolder:
    folder_id: str
    name: str
    folder_class: str | None
    parent_id: str | None
    distinguished_id: str | None = None
    change_key: str = ""
    element: str = "Folder"
    log: list[tuple[str, ChangeKind]] = field(default_factory=list)
    item_ids: dict[str, None] = field(default_factory=dict)


_WELL_KNOWN: tuple[tuple[str, str, str | None, str, str], ...] = (
    # distinguished id, display name, folder class, parent, element
    ("recoverableitemsroot", "Recoverable Items", None, ROOT, "Folder"),
    (MSG_FOLDER_ROOT, "Top of Information Store", None, ROOT, "Folder"),
    ("inbox", "Inbox", "IPF.Note", MSG_FOLDER_ROOT, "Folder"),
    ("sentitems", "Sent Items", "IPF.Note", MSG_FOLDER_ROOT, "Folder"),
    ("deleteditems", "Deleted Items", "IPF.Note", MSG_FOLDER_ROOT, "Folder"),
    ("drafts", "Drafts", "IPF.Note", MSG_FOLDER_ROOT, "Folder"),
    ("junkemail", "Junk Email", "IPF.Note", MSG_FOLDER_ROOT, "Folder"),
    ("outbox", "Outbox", "IPF.Note", MSG_FOLDER_ROOT, "Folder"),
    ("calendar", "Calendar", "IPF.Appointment", MSG_FOLDER_ROOT, "CalendarFolder"),
    ("tasks", "Tasks", "IPF.Task", MSG_FOLDER_ROOT, "TasksFolder"),
    ("contacts", "Contacts", "IPF.Contact", MSG_FOLDER_ROOT, "ContactsFolder"),
)

_ELEMENT_BY_CLASS = {
    "IPF.Appointment": "CalendarFolder",
    "IPF.Task": "TasksFolder",
    "IPF.Contact": "ContactsFolder",
}


# ------------------------------------------------------------------ ids


class IdFactory:
    """Opaque, unique ids and change keys, shaped like Exchange's base64 ones."""

    def __init__(self, seed: str = "sim") -> None:
        self._seed = seed
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def _blob(self, prefix: bytes, size: int) -> str:
        with self._lock:
            serial = next(self._counter)
        digest = hashlib.sha256(f"{self._seed}:{serial}".encode()).digest()
        return base64.b64encode(prefix + digest[:size]).decode("ascii")

    def item_id(self) -> str:
        return self._blob(b"\x00\x00\x00\x00SIMITEM\x07\x00", 42)

    def folder_id(self) -> str:
        return self._blob(b"\x00\x00\x00\x00SIMFLDR\x01\x00", 30)

    def change_key(self) -> str:
        return self._blob(b"\x0f\x00\x00\x00\x16\x00\x00\x00", 16)

    def subscription_id(self) -> str:
        return self._blob(b"\x1b\x00SIMSUB", 24)

    def search_key(self) -> bytes:
        """A PR_SEARCH_KEY: 16 bytes, unique, kept by a move or a copy."""
        return base64.b64decode(self._blob(b"", 16))

    def attachment_id(self) -> str:
        return self._blob(b"\x00\x00\x00\x00SIMATT\x12\x00", 42)


# ------------------------------------------------------------------ sync


@dataclass(frozen=True)
class Change:
    """One entry of a SyncFolderItems answer."""

    kind: ChangeKind
    item_id: str
    item: SimItem | None = None
    is_read: bool | None = None


@dataclass(frozen=True)
class SyncPage:
    changes: list[Change]
    position: int
    includes_last: bool
    known: Known


# ----------------------------------------------------------- notifications


class EventKind(StrEnum):
    """The event types of a subscription, by their EWS element names."""

    CREATED = "CreatedEvent"
    DELETED = "DeletedEvent"
    MODIFIED = "ModifiedEvent"
    MOVED = "MovedEvent"
    COPIED = "CopiedEvent"
    NEW_MAIL = "NewMailEvent"


@dataclass(frozen=True)
class SimEvent:
    """One row of the events table. ``position`` is its place in the table
    (a watermark names the position after the last event a client has);
    ``folder_id`` is set for a folder's own event, ``item_id`` otherwise."""

    position: int
    kind: EventKind
    timestamp: datetime
    parent_folder_id: str
    item_id: str | None = None
    change_key: str | None = None
    folder_id: str | None = None
    old_item_id: str | None = None
    old_parent_folder_id: str | None = None
    unread_count: int | None = None

    def folders(self) -> set[str]:
        found = {self.parent_folder_id, self.folder_id, self.old_parent_folder_id}
        return {f for f in found if f}


@dataclass
class SimSubscription:
    """A pull subscription: which folders (``None``: all) and event types,
    where it started, and when a client last asked for its events."""

    subscription_id: str
    folder_ids: frozenset[str] | None
    event_types: frozenset[str]
    timeout: timedelta
    start: int
    last_used: datetime

    def wants(self, event: SimEvent) -> bool:
        if event.kind not in self.event_types:
            return False
        return self.folder_ids is None or bool(event.folders() & self.folder_ids)

    def expired(self, now: datetime) -> bool:
        return now - self.last_used > self.timeout


class SimClock:
    """The simulator's time: the real clock, moved on by :meth:`advance`."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        """Move time on, as ``timedelta(**delta)`` (``minutes=31``)."""
        self.offset += timedelta(**delta)


# ------------------------------------------------------------------ mailbox


class SimMailbox:
    """One Exchange mailbox: folders, items and a change log per folder."""

    def __init__(
        self,
        smtp: str,
        name: str = "",
        *,
        ids: IdFactory | None = None,
        lock: threading.RLock | None = None,
        legacy_dn: str | None = None,
        clock: SimClock | None = None,
    ) -> None:
        self.smtp = smtp
        self.name = name or smtp.split("@")[0]
        self.legacy_dn = legacy_dn or _legacy_dn(smtp)
        self.allow_impersonation = True
        self.delegates: set[str] = set()
        self.faults = Faults()
        self.invalid_sync_states: set[str] = set()
        self.sync_epoch = 1
        self.sync_snapshots: dict[int, Known] = {}
        self.clock = clock or SimClock()
        self.events: list[SimEvent] = []
        self.subscriptions: dict[str, SimSubscription] = {}
        self._moving = False
        self._ids = ids or IdFactory(smtp)
        self._lock = lock or threading.RLock()
        self.folders: dict[str, SimFolder] = {}
        self.items: dict[str, SimItem] = {}
        self._by_distinguished: dict[str, str] = {}
        self._make_well_known_folders()

    # ------------------------------------------------------------- folders

    def _make_well_known_folders(self) -> None:
        root = self._new_folder("Root", None, None, ROOT, "Folder")
        self._by_distinguished[ROOT] = root.folder_id
        for distinguished, name, folder_class, parent, element in _WELL_KNOWN:
            parent_id = self._by_distinguished[parent]
            folder = self._new_folder(
                name, folder_class, parent_id, distinguished, element
            )
            self._by_distinguished[distinguished] = folder.folder_id

    def _new_folder(
        self,
        name: str,
        folder_class: str | None,
        parent_id: str | None,
        distinguished: str | None,
        element: str,
    ) -> SimFolder:
        folder = SimFolder(
            folder_id=self._ids.folder_id(),
            name=name,
            folder_class=folder_class,
            parent_id=parent_id,
            distinguished_id=distinguished,
            change_key=self._ids.change_key(),
            element=element,
        )
        self.folders[folder.folder_id] = folder
        return folder

    def add_folder(
        self, name: str, parent: str = MSG_FOLDER_ROOT, folder_class: str = "IPF.Note"
    ) -> SimFolder:
        """A user folder under ``parent`` (a distinguished id, id or path)."""
        with self._lock:
            parent_folder = self.folder(parent)
            element = _ELEMENT_BY_CLASS.get(folder_class, "Folder")
            return self._new_folder(
                name, folder_class, parent_folder.folder_id, None, element
            )

    def folder(self, ref: str) -> SimFolder:
        """A folder by distinguished id, FolderId or path under the message root
        (``"Inbox/Customers"``). Raises KeyError when there is none."""
        if ref in self._by_distinguished:
            return self.folders[self._by_distinguished[ref]]
        if ref in self.folders:
            return self.folders[ref]
        return self._folder_by_path(ref)

    def find_folder(self, ref: str) -> SimFolder | None:
        try:
            return self.folder(ref)
        except KeyError:
            return None

    def _folder_by_path(self, path: str) -> SimFolder:
        current = self.folder(MSG_FOLDER_ROOT)
        for part in path.strip("/").split("/"):
            matches = [f for f in self.children(current.folder_id) if f.name == part]
            if not matches:
                raise KeyError(path)
            current = matches[0]
        return current

    def children(self, folder_id: str) -> list[SimFolder]:
        return [f for f in self.folders.values() if f.parent_id == folder_id]

    def descendants(self, folder_id: str) -> list[SimFolder]:
        found: list[SimFolder] = []
        for child in self.children(folder_id):
            found.append(child)
            found.extend(self.descendants(child.folder_id))
        return found

    def folder_items(self, folder: SimFolder) -> list[SimItem]:
        return [self.items[item_id] for item_id in folder.item_ids]

    # --------------------------------------------------------------- items

    def add(self, item: SimItem, folder: str = "inbox") -> SimItem:
        """Store ``item`` in ``folder``; it gets its ItemId and ChangeKey."""
        with self._lock:
            target = self.folder(folder)
            self._place(item, target)
            delivered = {self.folder(f).folder_id for f in ("sentitems", "drafts")}
            if isinstance(item, SimMessage) and target.folder_id not in delivered:
                self._event(EventKind.NEW_MAIL, target, item.item_id)
            return item

    def add_many(
        self, items: Iterable[SimItem], folder: str = "inbox"
    ) -> list[SimItem]:
        with self._lock:
            return [self.add(item, folder) for item in items]

    def _place(self, item: SimItem, target: SimFolder) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        item.item_id = self._ids.item_id()
        item.change_key = self._ids.change_key()
        item.folder_id = target.folder_id
        item.datetime_received = item.datetime_received or now
        item.datetime_created = item.datetime_created or item.datetime_received
        item.last_modified_time = item.last_modified_time or item.datetime_created
        item.search_key = item.search_key or self._ids.search_key()
        item.attachments = tuple(
            replace(a, attachment_id=a.attachment_id or self._ids.attachment_id())
            for a in item.attachments
        )
        for occurrence in getattr(item, "modified_occurrences", ()):
            occurrence.item_id = occurrence.item_id or self._ids.item_id()
            occurrence.change_key = occurrence.change_key or self._ids.change_key()
        self.items[item.item_id] = item
        target.item_ids[item.item_id] = None
        self._log(target, item.item_id, ChangeKind.CREATE)

    def get(self, item_or_id: SimItem | str) -> SimItem:
        item_id = item_or_id if isinstance(item_or_id, str) else item_or_id.item_id
        return self.items[item_id]

    def update(self, item_or_id: SimItem | str, **changes: Any) -> SimItem:
        """Change fields of an item; it gets a new ChangeKey and an Update
        (only the read flag: a ReadFlagChange, and the ChangeKey stays)."""
        with self._lock:
            item = self.get(item_or_id)
            for name, value in changes.items():
                if name not in {f.name for f in fields(item)}:
                    raise AttributeError(f"{type(item).__name__} has no field {name!r}")
                setattr(item, name, value)
            kind = (
                ChangeKind.READ_FLAG
                if set(changes) == {"is_read"}
                else ChangeKind.UPDATE
            )
            self._touch(item, kind)
            return item

    def mark_read(self, item_or_id: SimItem | str, is_read: bool = True) -> SimItem:
        return self.update(item_or_id, is_read=is_read)

    def _touch(self, item: SimItem, kind: ChangeKind) -> None:
        # The read flag is per-user state, not content: Exchange reports it as
        # a ReadFlagChange and keeps the ChangeKey.
        if kind is not ChangeKind.READ_FLAG:
            item.change_key = self._ids.change_key()
            item.last_modified_time = datetime.now(UTC).replace(microsecond=0)
        self._log(self.folders[item.folder_id], item.item_id, kind)

    def move(self, item_or_id: SimItem | str, folder: str) -> SimItem:
        """Move an item: the old ItemId is gone, the moved item has a new one."""
        with self._lock:
            item = self.get(item_or_id)
            target = self.folder(folder)
            source = self.folders[item.folder_id]
            self._moving = True  # one MovedEvent, not a Deleted and a Created
            try:
                self._remove(item)
                moved = replace(item, item_id="", change_key="", folder_id="")
                self._place(moved, target)
            finally:
                self._moving = False
            self._event(
                EventKind.MOVED,
                target,
                moved.item_id,
                old_item_id=item.item_id,
                old_parent_folder_id=source.folder_id,
            )
            self._folder_modified(source)
            self._folder_modified(target)
            return moved

    def delete(
        self, item_or_id: SimItem | str, *, hard: bool = False
    ) -> SimItem | None:
        """Soft delete moves to Deleted Items (and returns the moved item);
        hard delete removes the item for good."""
        with self._lock:
            item = self.get(item_or_id)
            in_trash = item.folder_id == self.folder("deleteditems").folder_id
            if hard or in_trash:
                self._remove(item)
                return None
            return self.move(item, "deleteditems")

    def _remove(self, item: SimItem) -> None:
        source = self.folders[item.folder_id]
        del self.items[item.item_id]
        del source.item_ids[item.item_id]
        self._log(source, item.item_id, ChangeKind.DELETE)

    def find_occurrence(
        self, item_id: str
    ) -> tuple[SimCalendarItem, Occurrence] | None:
        for item in self.items.values():
            for occurrence in getattr(item, "modified_occurrences", ()):
                if occurrence.item_id == item_id and isinstance(item, SimCalendarItem):
                    return item, occurrence
        return None

    # ---------------------------------------------------------------- sync

    def _log(self, folder: SimFolder, item_id: str, kind: ChangeKind) -> None:
        folder.log.append((item_id, kind))
        if not self._moving:
            self._event(_EVENT_OF[kind], folder, item_id)
            self._folder_modified(folder)

    # ------------------------------------------------------- notifications

    def _event(
        self, kind: EventKind, folder: SimFolder, item_id: str, **more: Any
    ) -> None:
        item = self.items.get(item_id)
        self.events.append(
            SimEvent(
                position=len(self.events) + 1,
                kind=kind,
                timestamp=self.clock.now(),
                parent_folder_id=folder.folder_id,
                item_id=item_id,
                change_key=item.change_key if item else None,
                **more,
            )
        )

    def _folder_modified(self, folder: SimFolder) -> None:
        unread = sum(
            1 for i in self.folder_items(folder) if not getattr(i, "is_read", True)
        )
        self.events.append(
            SimEvent(
                position=len(self.events) + 1,
                kind=EventKind.MODIFIED,
                timestamp=self.clock.now(),
                parent_folder_id=folder.parent_id or folder.folder_id,
                folder_id=folder.folder_id,
                unread_count=unread,
            )
        )

    def subscribe(
        self,
        folder_ids: set[str] | None,
        event_types: set[str],
        timeout_minutes: int,
        start: int | None = None,
    ) -> SimSubscription:
        """A new pull subscription, reading from ``start`` (default: now)."""
        with self._lock:
            subscription = SimSubscription(
                subscription_id=self._ids.subscription_id(),
                folder_ids=frozenset(folder_ids) if folder_ids is not None else None,
                event_types=frozenset(event_types),
                timeout=timedelta(minutes=timeout_minutes),
                start=len(self.events) if start is None else start,
                last_used=self.clock.now(),
            )
            self.subscriptions[subscription.subscription_id] = subscription
            return subscription

    def pending_events(
        self, subscription: SimSubscription, after: int, limit: int
    ) -> tuple[list[SimEvent], bool]:
        """The subscription's events after position ``after``, at most
        ``limit``, and whether more are waiting."""
        with self._lock:
            wanted = [e for e in self.events[after:] if subscription.wants(e)]
            return wanted[:limit], len(wanted) > limit

    def drop_subscriptions(self) -> None:
        """Forget every subscription, as a restarted Client Access server does."""
        with self._lock:
            self.subscriptions.clear()

    def reset_sync_states(self) -> None:
        """Make every sync state handed out so far invalid (a mailbox move)."""
        with self._lock:
            self.sync_epoch += 1
            self.sync_snapshots.clear()

    def remember(self, known: Known) -> int:
        """Keep what a client knows after a sync page; the key goes into the
        sync state, as Exchange's own state carries the client's id set."""
        with self._lock:
            key = len(self.sync_snapshots) + 1
            self.sync_snapshots[key] = known
            return key

    def changes_since(
        self,
        folder: SimFolder,
        position: int,
        known: Known,
        limit: int,
        ignore: set[str],
    ) -> SyncPage:
        """The changes after ``position`` for a client that has ``known``.

        ``known`` maps each item the client has to the ChangeKey and read flag
        it last saw, so several changes to one item collapse into one (its
        current state) and nothing is reported twice. A page holds at most
        ``limit`` changes; it ends before the first change that does not fit
        but skips entries that bring nothing new, so ``includes_last`` is exact.
        """
        with self._lock:
            seen = dict(known)
            changes: list[Change] = []
            for seq, (item_id, _) in enumerate(folder.log[position:], position + 1):
                change = (
                    None
                    if item_id in ignore
                    else self._change_for(folder, item_id, seen)
                )
                if change is None:
                    continue
                if len(changes) == limit:
                    return SyncPage(changes, seq - 1, False, known=seen)
                changes.append(change)
                _learn(seen, change)
            return SyncPage(changes, len(folder.log), True, known=seen)

    def _change_for(
        self, folder: SimFolder, item_id: str, seen: Known
    ) -> Change | None:
        if item_id not in folder.item_ids:
            return Change(ChangeKind.DELETE, item_id) if item_id in seen else None
        item = self.items[item_id]
        is_read = bool(getattr(item, "is_read", False))
        if item_id not in seen:
            return Change(ChangeKind.CREATE, item_id, item)
        change_key, was_read = seen[item_id]
        if change_key != item.change_key:
            return Change(ChangeKind.UPDATE, item_id, item)
        if was_read != is_read:
            return Change(ChangeKind.READ_FLAG, item_id, item, is_read=is_read)
        return None


_EVENT_OF = {
    ChangeKind.CREATE: EventKind.CREATED,
    ChangeKind.UPDATE: EventKind.MODIFIED,
    ChangeKind.READ_FLAG: EventKind.MODIFIED,
    ChangeKind.DELETE: EventKind.DELETED,
}


def _learn(seen: Known, change: Change) -> None:
    if change.kind is ChangeKind.DELETE:
        del seen[change.item_id]
        return
    assert change.item is not None
    seen[change.item_id] = (
        change.item.change_key,
        bool(getattr(change.item, "is_read", False)),
    )


def _legacy_dn(smtp: str) -> str:
    local = smtp.split("@")[0]
    digest = hashlib.md5(smtp.lower().encode()).hexdigest()[:32]
    return (
        "/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)"
        f"/cn=Recipients/cn={digest}-{local}"
    )


# ----------------------------------------------------------------- MIME input


def _header(msg: email.message.Message, name: str) -> str | None:
    value = msg.get(name)
    if value is None:
        return None
    return " ".join(str(value).split())


def _addresses(msg: email.message.Message, name: str) -> tuple[Address, ...]:
    values = [str(v) for v in msg.get_all(name, [])]
    return tuple(Address(email=a, name=n) for n, a in getaddresses(values) if a)


def _first_address(msg: email.message.Message, name: str) -> Address | None:
    found = _addresses(msg, name)
    return found[0] if found else None


def _date(msg: email.message.Message) -> datetime | None:
    value = msg.get("Date")
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _keywords(msg: email.message.Message) -> tuple[str, ...]:
    value = _header(msg, "Keywords")
    return tuple(k.strip() for k in value.split(",") if k.strip()) if value else ()


def _plain_body(msg: email.message.Message) -> str:
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                charset = part.get_content_charset() or "utf-8"
                return payload.decode(charset, errors="replace")
    return ""
