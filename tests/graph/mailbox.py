"""The mailbox behind the Graph simulator: folders, messages, events, To Do.

A :class:`Mailbox` holds what one user's Exchange Online mailbox would:
mail folders (the well-known ones made at creation) with messages, a default
calendar with single events and recurring series, and Microsoft To Do lists
with tasks. Tests change it through its methods (``add``, ``move``,
``delete``, ``update``, ``mark_read``, ...), as the rep or mail delivery
would; the simulator's handlers read it and change it for PATCH.

Ids are immutable ids (``Prefer: IdType="ImmutableId"``): a message keeps
its id through a move. :meth:`Mailbox.rest_id` gives the other kind, which
changes with the folder, as Graph's default ids do.

Delta queries work on snapshots: a delta token remembers, for each item that
matched the query, the version it had; the next round reports what was added
or changed since (a change of the read flag alone as a partial entry: id,
isRead, parentFolderId) and what left (``@removed``). A round's entries are
fixed when it starts and rendered when each page is served.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import hashlib
import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any
from zoneinfo import ZoneInfo

from dateutil.rrule import DAILY, MONTHLY, WEEKLY, rrule, weekday

WELL_KNOWN_FOLDERS = (
    ("inbox", "Inbox"),
    ("drafts", "Drafts"),
    ("sentitems", "Sent Items"),
    ("deleteditems", "Deleted Items"),
    ("junkemail", "Junk Email"),
    ("outbox", "Outbox"),
    ("archive", "Archive"),
)
GOID_CLASS = bytes.fromhex("040000008200E00074C5B7101A82E008")
WEEKDAYS = (
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
)
# Windows zone names Graph writes for the IANA zones tests use.
WINDOWS_ZONES = {
    "UTC": "UTC",
    "Europe/Berlin": "W. Europe Standard Time",
    "Europe/London": "GMT Standard Time",
    "America/New_York": "Eastern Standard Time",
}


class Ids:
    """Ids shaped like Exchange Online's: URL-safe base64 of an entry id."""

    def __init__(self, seed: str) -> None:
        self._seed = seed
        self._next = itertools.count(1)
        self._lock = threading.Lock()

    def new(self, prefix: bytes = b"\x00\x00\x00\x00") -> str:
        with self._lock:
            number = next(self._next)
        digest = hashlib.sha256(f"{self._seed}:{number}".encode()).digest()
        raw = prefix + digest[:24] + number.to_bytes(4, "big")
        return "AAMk" + base64.urlsafe_b64encode(raw).decode()

    def change_key(self) -> str:
        with self._lock:
            number = next(self._next)
        digest = hashlib.sha256(f"ck:{self._seed}:{number}".encode()).digest()
        return base64.b64encode(b"\x16\x00\x00\x00" + digest[:18]).decode()


# ------------------------------------------------------------------ people


@dataclass(frozen=True)
class Address:
    address: str
    name: str = ""

    @classmethod
    def of(cls, value: str | Address) -> Address:
        if isinstance(value, Address):
            return value
        name, address = getaddresses([value])[0]
        return cls(address or value, name)

    def json(self) -> dict[str, Any]:
        return {"emailAddress": {"name": self.name, "address": self.address}}


@dataclass(frozen=True)
class Attendee:
    address: Address
    type: str = "required"  # required, optional, resource
    response: str = "none"  # none, organizer, tentativelyAccepted, accepted, ...


# ------------------------------------------------------------------- mail


@dataclass(frozen=True)
class FileAttachment:
    """A file attached to a message (Graph's fileAttachment)."""

    id: str
    name: str
    content_type: str
    content: bytes = field(repr=False)
    is_inline: bool = False
    modified: datetime | None = None


@dataclass(eq=False)
class Message:
    """An e-mail; ``kind`` is ``message`` or an eventMessage type
    (``eventMessageRequest``, ...), whose MIME holds the invitation."""

    subject: str = ""
    body: str = ""
    author: Address | None = None
    sender: Address | None = None
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    internet_message_id: str | None = None
    sent: datetime | None = None
    received: datetime | None = None
    categories: tuple[str, ...] = ()
    sensitivity: str = "normal"
    is_draft: bool = False
    is_read: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    mime: bytes | None = None
    kind: str = "message"
    attachments: tuple[FileAttachment, ...] = ()
    # Set by the mailbox.
    id: str = ""
    folder_id: str = ""
    change_key: str = ""
    version: int = 0
    created: datetime | None = None
    modified: datetime | None = None

    @classmethod
    def from_mime(cls, raw: bytes, **overrides: Any) -> Message:
        """A message whose fields are what Exchange reads from these bytes."""
        parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
        sent = _date(parsed.get("Date"))
        values: dict[str, Any] = {
            "mime": raw,
            "subject": _text(parsed.get("Subject")),
            "author": _first(parsed, "From"),
            "sender": _first(parsed, "Sender") or _first(parsed, "From"),
            "to": _addresses(parsed, "To"),
            "cc": _addresses(parsed, "Cc"),
            "bcc": _addresses(parsed, "Bcc"),
            "reply_to": _addresses(parsed, "Reply-To"),
            "internet_message_id": _text(parsed.get("Message-ID")) or None,
            "sent": sent,
            "received": sent,
            "headers": tuple((k, _text(v)) for k, v in parsed.items()),
            "body": _plain(parsed),
        }
        # Exchange sets PidTagSensitivity from the Sensitivity header.
        marked = _text(parsed.get("Sensitivity")).lower()
        values["sensitivity"] = {
            "personal": "personal",
            "private": "private",
            "company-confidential": "confidential",
        }.get(marked, "normal")
        keywords = _text(parsed.get("Keywords"))
        values["categories"] = tuple(
            k.strip() for k in keywords.split(",") if k.strip()
        )
        method = _calendar_method(parsed)
        if method:
            values["kind"] = {
                "REQUEST": "eventMessageRequest",
                "REPLY": "eventMessageResponse",
            }.get(method, "eventMessage")
        values.update(overrides)
        return cls(**values)


@dataclass
class MailFolder:
    id: str
    display_name: str
    parent_id: str
    well_known: str | None = None


# ----------------------------------------------------------------- events


@dataclass(frozen=True)
class Recurrence:
    """A series' pattern and range, in the wall time of the event's zone.

    ``pattern`` is ``daily``, ``weekly`` (``days_of_week``) or
    ``absoluteMonthly`` (``day_of_month``); ``end`` or ``count`` bounds it.
    """

    start: date
    pattern: str = "weekly"
    interval: int = 1
    days_of_week: tuple[str, ...] = ("monday",)
    day_of_month: int = 1
    end: date | None = None
    count: int | None = None

    def json(self, zone: str) -> dict[str, Any]:
        pattern: dict[str, Any] = {"type": self.pattern, "interval": self.interval}
        if self.pattern == "weekly":
            pattern["daysOfWeek"] = list(self.days_of_week)
            pattern["firstDayOfWeek"] = "sunday"
        if self.pattern == "absoluteMonthly":
            pattern["dayOfMonth"] = self.day_of_month
        kind = "endDate" if self.end else "numbered" if self.count else "noEnd"
        rng: dict[str, Any] = {
            "type": kind,
            "startDate": self.start.isoformat(),
            "endDate": self.end.isoformat() if self.end else "0001-01-01",
            "recurrenceTimeZone": WINDOWS_ZONES.get(zone, zone),
            "numberOfOccurrences": self.count or 0,
        }
        return {"pattern": pattern, "range": rng}


@dataclass(frozen=True)
class Override:
    """An exception of a series (what is ``None`` is the series'), or, with
    ``cancelled_occurrence``, an occurrence deleted from it."""

    start: datetime | date | None = None
    end: datetime | date | None = None
    subject: str | None = None
    location: str | None = None
    is_cancelled: bool = False
    sequence: int | None = None
    deleted: bool = False


@dataclass(eq=False)
class Event:
    """A single event, or a series when ``recurrence`` is set.

    ``uid`` is the meeting's iCalendar UID: a clean global object id in hex
    (as Outlook makes them), or another calendar's UID. ``start`` and
    ``end`` are UTC instants, or dates for an all-day event (``end``
    exclusive). ``zone`` is the IANA zone a series repeats in.
    ``overrides`` holds exceptions and deleted occurrences by original start.
    """

    uid: str = ""
    subject: str = ""
    body: str = ""
    start: datetime | date | None = None
    end: datetime | date | None = None
    is_all_day: bool = False
    location: str = ""
    organizer: Address | None = None
    attendees: tuple[Attendee, ...] = ()
    categories: tuple[str, ...] = ()
    sensitivity: str = "normal"
    is_cancelled: bool = False
    sequence: int = 0
    zone: str = "UTC"
    recurrence: Recurrence | None = None
    overrides: dict[datetime | date, Override] = field(default_factory=dict)
    # Set by the mailbox.
    id: str = ""
    change_key: str = ""
    created: datetime | None = None

    def instances(self, start: datetime, end: datetime) -> Iterator[Instance]:
        """What a calendar view from ``start`` to ``end`` shows of it."""
        if self.recurrence is None:
            if _overlaps(self.start, self.end, start, end):
                yield Instance(self, "singleInstance", None, self.start, self.end)
            return
        length = _length(self)
        for original in self.originals(end):
            override = self.overrides.get(original, Override())
            if override.deleted:
                continue
            first = override.start if override.start is not None else original
            last = override.end if override.end is not None else _plus(first, length)
            if _overlaps(first, last, start, end):
                kind = "exception" if original in self.overrides else "occurrence"
                yield Instance(self, kind, original, first, last, override)

    def originals(self, until: datetime) -> Iterator[datetime | date]:
        """The original starts of the series, up to ``until``."""
        assert self.recurrence is not None and self.start is not None
        rule = _rule(self.recurrence, self.start, self.zone, self.is_all_day)
        zone = ZoneInfo(self.zone)
        for local in rule:
            if self.is_all_day:
                found: datetime | date = local.date()
                if datetime.combine(local.date(), time(), UTC) > until:
                    return
            else:
                found = local.replace(tzinfo=zone).astimezone(UTC)
                if found > until:
                    return
            yield found


@dataclass(frozen=True)
class Instance:
    """One event of a calendar view: a single one, or an occurrence or
    exception of a series."""

    event: Event
    type: str
    original: datetime | date | None
    start: datetime | date | None
    end: datetime | date | None
    override: Override = Override()

    @property
    def id(self) -> str:
        if self.original is None:
            return self.event.id
        suffix = self.original.isoformat().encode()
        token = base64.urlsafe_b64encode(hashlib.sha1(suffix).digest()[:9]).decode()
        return f"{self.event.id[:-4]}{token}AAA="

    @property
    def ical_uid(self) -> str:
        return global_object_id(self.event.uid, self.original, self.event.zone)

    @property
    def sequence(self) -> int:
        if self.override.sequence is not None:
            return self.override.sequence
        return self.event.sequence


def global_object_id(
    uid: str, instance: datetime | date | None = None, zone: str = "UTC"
) -> str:
    """The hex PidLidGlobalObjectId Graph gives as ``iCalUId`` ([MS-OXOCAL]
    2.2.1.27): the class id, the instance's date (zero for the series or a
    single event), a creation time, and the data; a UID of another calendar
    system is kept in the data after ``vCal-Uid``."""
    try:
        raw = bytearray(binascii.unhexlify(uid))
        if not raw.startswith(GOID_CLASS) or len(raw) < 40:
            raise ValueError(uid)
    except (binascii.Error, ValueError):
        data = b"vCal-Uid\x01\x00\x00\x00" + uid.encode() + b"\x00"
        raw = bytearray(GOID_CLASS + bytes(4) + bytes(8) + bytes(8))
        raw += len(data).to_bytes(4, "little") + data
    if instance is not None:
        day = (
            instance.astimezone(ZoneInfo(zone)).date()
            if isinstance(instance, datetime)
            else instance
        )
        raw[16:20] = day.year.to_bytes(2, "big") + bytes([day.month, day.day])
    return binascii.hexlify(bytes(raw)).decode().upper()


def new_uid(seed: str) -> str:
    """A clean global object id, as Outlook makes for a new meeting."""
    digest = hashlib.sha256(seed.encode()).digest()
    data = digest[:16]
    raw = GOID_CLASS + bytes(4) + b"\x00" * 8 + bytes(8)
    raw += len(data).to_bytes(4, "little") + data
    return binascii.hexlify(raw).decode().upper()


# ------------------------------------------------------------------- To Do


@dataclass
class TodoList:
    id: str
    display_name: str
    well_known: str = "none"  # defaultList, flaggedEmails, none


@dataclass(eq=False)
class TodoTask:
    title: str = ""
    body: str = ""
    status: str = "notStarted"
    due: date | None = None
    completed: date | None = None
    categories: tuple[str, ...] = ()
    importance: str = "normal"
    reminder: datetime | None = None  # isReminderOn when set
    # Set by the mailbox.
    id: str = ""
    list_id: str = ""
    etag: str = ""
    version: int = 0
    created: datetime | None = None


# ------------------------------------------------------------------- delta


@dataclass
class Round:
    """One round of a delta query: its entries, fixed when it began, and the
    snapshot its delta token will hold."""

    scope: str
    params: dict[str, Any]
    entries: list[tuple[str, str]]  # ("upsert" | "read" | "removed", id)
    snapshot: dict[str, Any]


class DeltaBook:
    """Rounds (skip tokens) and snapshots (delta tokens) of one mailbox."""

    def __init__(self) -> None:
        self.skips: dict[str, tuple[Round, int]] = {}
        self.deltas: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {}
        self._numbers = itertools.count(1)

    def token(self) -> str:
        number = next(self._numbers)
        return base64.urlsafe_b64encode(
            hashlib.sha256(f"token{number}".encode()).digest()[:18]
        ).decode()

    def begin(
        self,
        scope: str,
        params: dict[str, Any],
        base: dict[str, Any],
        current: dict[str, Any],
        order: list[str],
    ) -> Round:
        """A round from the ``base`` snapshot to ``current`` (both
        ``{id: version}``; a version ``(n, is_read)`` tells read flags)."""
        entries = [("removed", i) for i in base if i not in current]
        for item_id in order:
            before, now = base.get(item_id), current[item_id]
            if before is None or _changed(before, now):
                entries.append(("upsert", item_id))
            elif before != now:
                entries.append(("read", item_id))
        return Round(scope, params, entries, dict(current))

    def forget(self, scope: str | None = None) -> None:
        """Every token stops working (a 410 for each), as after a mailbox move;
        with ``scope`` (``mail:<folder id>``, ``calendar``, ``todo:<list
        id>``), only that one's, as when a folder's token expired."""
        if scope is None:
            self.skips.clear()
            self.deltas.clear()
            return
        for token, (round_, _) in list(self.skips.items()):
            if round_.scope == scope:
                del self.skips[token]
        for token, (kept, _, _) in list(self.deltas.items()):
            if kept == scope:
                del self.deltas[token]


def _changed(before: Any, now: Any) -> bool:
    if isinstance(before, tuple) and isinstance(now, tuple):
        return before[0] != now[0]
    return bool(before != now)


# ----------------------------------------------------------------- mailbox


class Mailbox:
    """One user's mailbox; ``lock`` guards it against the server's threads."""

    def __init__(self, address: str, name: str, ids: Ids, zone: str = "UTC") -> None:
        self.address = address.lower()
        self.name = name
        self.user_id = ids.new(b"USER")[4:40]
        self.ids = ids
        self.zone = zone
        self.lock = threading.RLock()
        self.folders: dict[str, MailFolder] = {}
        self.messages: dict[str, Message] = {}
        self.events: dict[str, Event] = {}
        self.todo_lists: dict[str, TodoList] = {}
        self.tasks: dict[str, TodoTask] = {}
        self.delta = DeltaBook()
        self.calendar_id = ids.new(b"CALN")
        self.root_id = ids.new(b"ROOT")
        self.on_premises = False  # hybrid: not yet moved to Exchange Online
        self.blocked_apps: set[str] = set()  # an application access policy
        self._rest_ids: dict[str, str] = {}
        for well_known, display in WELL_KNOWN_FOLDERS:
            self.add_folder(display, well_known=well_known)
        self.add_todo_list("Tasks", well_known="defaultList")
        self.add_todo_list("Flagged Emails", well_known="flaggedEmails")

    # --- folders -----------------------------------------------------------

    def add_folder(
        self, name: str, parent: str | None = None, well_known: str | None = None
    ) -> MailFolder:
        parent_id = self.folder(parent).id if parent else self.root_id
        folder = MailFolder(self.ids.new(b"FOLD"), name, parent_id, well_known)
        with self.lock:
            self.folders[folder.id] = folder
        return folder

    def folder(self, ref: str) -> MailFolder:
        """A folder by id, well-known name or path (``Inbox/Tailspin``)."""
        with self.lock:
            if ref in self.folders:
                return self.folders[ref]
            for folder in self.folders.values():
                if folder.well_known == ref.lower():
                    return folder
            for folder in self.folders.values():
                if self.path(folder).lower() == ref.lower():
                    return folder
        raise KeyError(f"no folder {ref!r}")

    def path(self, folder: MailFolder) -> str:
        parts = [folder.display_name]
        while folder.parent_id in self.folders:
            folder = self.folders[folder.parent_id]
            parts.append(folder.display_name)
        return "/".join(reversed(parts))

    def children(self, folder_id: str) -> list[MailFolder]:
        with self.lock:
            return [f for f in self.folders.values() if f.parent_id == folder_id]

    # --- messages ----------------------------------------------------------

    def add(self, message: Message, folder: str = "inbox") -> Message:
        with self.lock:
            message.id = self.ids.new(b"MESS")
            message.folder_id = self.folder(folder).id
            message.created = message.modified = datetime.now(UTC)
            if message.received is None:
                message.received = message.sent or message.created
            self._touch(message)
            self.messages[message.id] = message
        return message

    def add_many(self, messages: list[Message], folder: str = "inbox") -> list[Message]:
        return [self.add(m, folder) for m in messages]

    def get(self, ref: Message | str) -> Message:
        item_id = ref.id if isinstance(ref, Message) else ref
        with self.lock:
            return self.messages[self.immutable_id(item_id)]

    def update(self, ref: Message | str, **changes: Any) -> Message:
        """The rep changes a message (its categories, say): a new change key."""
        with self.lock:
            message = self.get(ref)
            for key, value in changes.items():
                setattr(message, key, value)
            self._touch(message)
        return message

    def mark_read(self, ref: Message | str, is_read: bool = True) -> Message:
        """Only the read flag: Graph's delta gives a partial entry for it."""
        with self.lock:
            message = self.get(ref)
            message.is_read = is_read
        return message

    def move(self, ref: Message | str, folder: str) -> Message:
        """A move keeps the immutable id; the delta of the old folder gives
        ``@removed``, the new one the message."""
        with self.lock:
            message = self.get(ref)
            message.folder_id = self.folder(folder).id
            self._touch(message)
        return message

    def delete(self, ref: Message | str, hard: bool = True) -> None:
        """Hard: gone; soft: moved to Deleted Items."""
        with self.lock:
            message = self.get(ref)
            if hard:
                del self.messages[message.id]
            else:
                self.move(message, "deleteditems")

    def _touch(self, message: Message) -> None:
        message.version += 1
        message.change_key = self.ids.change_key()
        message.modified = datetime.now(UTC)

    def rest_id(self, item_id: str, folder_id: str) -> str:
        """The default (non-immutable) id, which changes with the folder."""
        digest = hashlib.sha256(f"{item_id}|{folder_id}".encode()).digest()
        rest = "AQMk" + base64.urlsafe_b64encode(digest[:30]).decode()
        with self.lock:
            self._rest_ids[rest] = item_id
        return rest

    def immutable_id(self, item_id: str) -> str:
        with self.lock:
            return self._rest_ids.get(item_id, item_id)

    def folder_messages(self, folder_id: str) -> list[Message]:
        with self.lock:
            return [m for m in self.messages.values() if m.folder_id == folder_id]

    # --- events ------------------------------------------------------------

    def add_event(self, event: Event) -> Event:
        with self.lock:
            event.id = self.ids.new(b"EVNT")
            event.uid = event.uid or new_uid(event.id)
            event.change_key = self.ids.change_key()
            event.created = datetime.now(UTC)
            self.events[event.id] = event
        return event

    def update_event(self, event: Event, **changes: Any) -> Event:
        with self.lock:
            for key, value in changes.items():
                setattr(event, key, value)
            event.change_key = self.ids.change_key()
        return event

    def change_occurrence(
        self, event: Event, original: datetime | date, **changes: Any
    ) -> Event:
        """Make or change an exception (``deleted=True``: delete it)."""
        with self.lock:
            event.overrides[original] = replace(
                event.overrides.get(original, Override()), **changes
            )
            event.change_key = self.ids.change_key()
        return event

    def delete_event(self, event: Event) -> None:
        with self.lock:
            del self.events[event.id]

    def instances(self, start: datetime, end: datetime) -> list[Instance]:
        with self.lock:
            found = [i for e in self.events.values() for i in e.instances(start, end)]
        return sorted(found, key=lambda i: (_as_instant(i.start), i.id))

    def find_event(self, event_id: str) -> tuple[Event, Instance | None] | None:
        """A series or single event by id, or an instance by its id (within
        two years either way)."""
        with self.lock:
            if event_id in self.events:
                return self.events[event_id], None
            now = datetime.now(UTC)
            for instance in self.instances(
                now - timedelta(days=730), now + timedelta(days=730)
            ):
                if instance.id == event_id:
                    return instance.event, instance
        return None

    # --- To Do -------------------------------------------------------------

    def add_todo_list(self, name: str, well_known: str = "none") -> TodoList:
        todo = TodoList(self.ids.new(b"LIST"), name, well_known)
        with self.lock:
            self.todo_lists[todo.id] = todo
        return todo

    def default_list(self) -> TodoList:
        return next(
            t for t in self.todo_lists.values() if t.well_known == "defaultList"
        )

    def add_task(self, task: TodoTask, todo: TodoList | None = None) -> TodoTask:
        with self.lock:
            task.id = self.ids.new(b"TASK")
            task.list_id = (todo or self.default_list()).id
            task.created = datetime.now(UTC)
            self._touch_task(task)
            self.tasks[task.id] = task
        return task

    def update_task(self, task: TodoTask, **changes: Any) -> TodoTask:
        with self.lock:
            for key, value in changes.items():
                setattr(task, key, value)
            self._touch_task(task)
        return task

    def delete_task(self, task: TodoTask) -> None:
        with self.lock:
            del self.tasks[task.id]

    def _touch_task(self, task: TodoTask) -> None:
        task.version += 1
        task.etag = f'W/"{self.ids.change_key()}"'

    def list_tasks(self, list_id: str) -> list[TodoTask]:
        with self.lock:
            return [t for t in self.tasks.values() if t.list_id == list_id]


# ------------------------------------------------------------ helpers


def _overlaps(
    first: datetime | date | None,
    last: datetime | date | None,
    start: datetime,
    end: datetime,
) -> bool:
    if first is None:
        return False
    begin = _as_instant(first)
    finish = _as_instant(last) if last is not None else begin
    return begin < end and finish > start


def _as_instant(value: datetime | date | None) -> datetime:
    if value is None:
        return datetime.min.replace(tzinfo=UTC)
    if isinstance(value, datetime):
        return value
    return datetime.combine(value, time(), UTC)


def _length(event: Event) -> timedelta:
    if event.start is None or event.end is None:
        return timedelta(0)
    return _as_instant(event.end) - _as_instant(event.start)


def _plus(value: datetime | date, length: timedelta) -> datetime | date:
    if isinstance(value, datetime):
        return value + length
    return value + timedelta(days=max(1, length.days))


def _rule(
    recurrence: Recurrence, start: datetime | date, zone: str, all_day: bool
) -> rrule:
    if all_day or not isinstance(start, datetime):
        clock = time()
    else:
        clock = start.astimezone(ZoneInfo(zone)).time()
    first = datetime.combine(recurrence.start, clock)
    bound: dict[str, Any] = {"dtstart": first, "interval": recurrence.interval}
    if recurrence.count:
        bound["count"] = recurrence.count
    elif recurrence.end:
        bound["until"] = datetime.combine(recurrence.end, time.max)
    if recurrence.pattern == "daily":
        return rrule(DAILY, **bound)
    if recurrence.pattern == "weekly":
        days = [weekday(WEEKDAYS.index(d)) for d in recurrence.days_of_week]
        return rrule(WEEKLY, byweekday=days, **bound)
    if recurrence.pattern == "absoluteMonthly":
        return rrule(MONTHLY, bymonthday=recurrence.day_of_month, **bound)
    raise ValueError(f"pattern {recurrence.pattern!r} is not simulated")


def _text(value: Any) -> str:
    if value is None:
        return ""
    from email.header import decode_header, make_header

    text = " ".join(str(value).split())
    if "=?" in text:
        try:
            text = str(make_header(decode_header(text)))
        except (LookupError, UnicodeError, ValueError):
            pass
    return text


def _first(parsed: email.message.Message, name: str) -> Address | None:
    found = _addresses(parsed, name)
    return found[0] if found else None


def _addresses(parsed: email.message.Message, name: str) -> tuple[Address, ...]:
    values = [_text(v) for v in parsed.get_all(name, [])]
    return tuple(Address(a, n) for n, a in getaddresses(values) if "@" in a)


def _date(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _plain(parsed: email.message.Message) -> str:
    for part in parsed.walk():
        if part.get_content_type() == "text/plain" and not part.get_filename():
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                charset = part.get_content_charset() or "utf-8"
                return payload.decode(charset, errors="replace")
    return ""


def _calendar_method(parsed: email.message.Message) -> str | None:
    """The METHOD of a text/calendar part: the message is a meeting message."""
    for part in parsed.walk():
        if part.get_content_type() != "text/calendar":
            continue
        payload = part.get_payload(decode=True)
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
        for line in text.splitlines():
            if line.upper().startswith("METHOD:"):
                return line.split(":", 1)[1].strip().upper()
        return "PUBLISH"
    return None


def fingerprint(data: Any) -> str:
    """A version of rendered JSON: its hash."""
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
