"""Calendar items and tasks read from EWS fields, for the Exchange connector.

:mod:`mailsync.connectors.ews` reads mail from its MIME content. A calendar
item or a task has no useful MIME: this module turns the fields GetItem gives
(only those in :data:`CALENDAR_FIELDS`, :data:`EXCEPTION_FIELDS` and
:data:`TASK_FIELDS`) into items.

Calendar items
    A Single becomes one meeting item (method ``None``: the calendar's own
    copy, not an invitation) with the organizer and the required and optional
    attendees; each attendee's ResponseType becomes its response (Unknown:
    none, NoResponseReceived: NEEDS-ACTION, Accept: ACCEPTED, Decline:
    DECLINED, Tentative: TENTATIVE; an attendee whose ResponseType is
    Organizer is the organizer). IsCancelled makes the status CANCELLED.

    A RecurringMaster becomes the master itself (recurrence id ``None``, its
    own start, which Exchange makes the first occurrence's) and one item per
    occurrence whose original start is inside the :class:`Window` (from the
    back-fill days ago to a year ahead; at most 1000, the nearest to now, with
    a line at INFO when a series has more). The pattern is expanded here with
    dateutil's rrule (EWS's own expansion, FindItem with a CalendarView, would
    cost a call per master and gives no original starts of deleted ones).
    Deleted occurrences are left out; a modified occurrence (an exception) is
    fetched by its ItemId and keeps its own start, end, subject, location,
    attendees and cancellation. An occurrence's provider id is
    ``<master id>#<original start>`` and its recurrence id is that original
    start, as a UTC isoformat string (a date for an all-day series): what
    :mod:`mailsync.calendar` makes of the RECURRENCE-ID of a cancellation or
    a reply by mail, so both reach the same activity.

    The window is the one of the sync that read the master. So that an
    endless series keeps reaching a year ahead, the connector reads the
    calendar over from nothing a month after it last did (the calendar's
    cursor keeps the day its series reach); what is already recorded is
    found again by its keys, without a duplicate.

Time zones
    Times are instants (UTC). A series is expanded in the wall time of its
    StartTimeZone when exchangelib knows that zone, so 09:00 stays 09:00
    across a change to summer time. When it does not ("Customized Time Zone",
    a localised name), the master keeps its own start and nothing is dropped,
    but the series is expanded in UTC, shifted by whole days so that the first
    occurrence falls on the recurrence's start date: after a change to or from
    summer time the later occurrences are then an hour off, and their
    recurrence ids do not match a RECURRENCE-ID by mail. Deleted and modified
    occurrences still match, as their own original starts are taken within
    three hours.

    An all-day event is a date, not a midnight: Exchange sends the local
    midnights as UTC instants, which are turned into dates in the item's
    StartTimeZone, or by the nearest UTC midnight when the zone is unknown
    (right for zones within twelve hours of UTC). Its end is exclusive, as an
    iCalendar DTEND. exchangelib would make the dates itself, in this
    machine's zone when it does not know the item's: :class:`GetItemAsSent`
    keeps the instants as the server sent them.

Tasks
    A task (IPM.Task) becomes a task item with its status (the EWS value:
    NotStarted, InProgress, Completed, WaitingOnOthers, Deferred), due date,
    completion date, owner, and the names typed in its Contacts and Companies
    fields. Its uid is its PR_SEARCH_KEY, in hex: EWS tasks have no UID, the
    ItemId changes with every move, and the creation time does not tell apart
    two tasks made in the same second (as a script or our own reminders make
    them). PR_SEARCH_KEY is unique, set by the store, and kept by a move and
    by a copy ([MS-OXCPRPT] 2.2.1.9), so a copy of a task is the same task.
    A due date and a completion date are dates ([MS-OXOTASK]: midnight in the
    user's zone), read by the nearest UTC midnight. The owner is a
    participant (role ``to``: whom the task is for) only when it is an
    address; Outlook usually stores a display name there.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import DAILY, MONTHLY, WEEKLY, YEARLY, rrule, weekday
from exchangelib import ExtendedProperty, HTMLBody
from exchangelib.fields import MONTHS, WEEK_NUMBERS, WEEKDAYS
from exchangelib.items import CalendarItem
from exchangelib.items import Task as EwsTask
from exchangelib.recurrence import (
    AbsoluteMonthlyPattern,
    AbsoluteYearlyPattern,
    DailyPattern,
    EndDatePattern,
    NumberedPattern,
    RelativeMonthlyPattern,
    RelativeYearlyPattern,
    WeeklyPattern,
)
from exchangelib.services import GetItem
from exchangelib.util import TNS

from mailsync.errors import ParseError
from mailsync.items import (
    Folder,
    Item,
    ItemKind,
    Meeting,
    Participant,
    Role,
    Task,
)

log = logging.getLogger(__name__)

CALENDAR_FIELDS = [
    "uid",
    "subject",
    "start",
    "end",
    "is_all_day",
    "location",
    "organizer",
    "required_attendees",
    "optional_attendees",
    "is_cancelled",
    "categories",
    "sensitivity",
    "type",
    "recurrence",
    "modified_occurrences",
    "deleted_occurrences",
    "appointment_sequence_number",
    "datetime_created",
    "_start_timezone",
]
EXCEPTION_FIELDS = [
    "subject",
    "start",
    "end",
    "is_all_day",
    "location",
    "required_attendees",
    "optional_attendees",
    "is_cancelled",
    "original_start",
]
TASK_FIELDS = [
    "subject",
    "body",
    "status",
    "due_date",
    "complete_date",
    "owner",
    "companies",
    "contacts",
    "categories",
    "sensitivity",
    "datetime_created",
    "search_key",
]
SENSITIVITY = {"Confidential": "company-confidential"}
RESPONSES: dict[str, str | None] = {
    "Unknown": None,
    "NoResponseReceived": "NEEDS-ACTION",
    "Accept": "ACCEPTED",
    "Decline": "DECLINED",
    "Tentative": "TENTATIVE",
}
OCCURRENCE_LIMIT = 1000
LOOK_AHEAD = timedelta(days=365)
# How far an occurrence expanded in UTC may be from the server's original
# start of the same one (a change to summer time the zone's id hid from us).
_TOLERANCE = timedelta(hours=3)
_HALF_DAY = timedelta(hours=12)
_DAYS = [weekday(n) for n in range(7)]

AddressOf = Callable[[Any], tuple[str, bool]]
"""An EWS mailbox as (SMTP address, unresolved), X500 addresses resolved."""
Slot = datetime | date  # an occurrence's original start: an instant, or a day


class SearchKey(ExtendedProperty):
    """PR_SEARCH_KEY (PidTagSearchKey), a task's id that survives a move."""

    property_tag = 0x300B
    property_type = "Binary"


if "search_key" not in {f.name for f in EwsTask.FIELDS}:
    EwsTask.register("search_key", SearchKey)


class GetItemAsSent(GetItem):
    """GetItem whose all-day events and task dates come as the server sent them.

    exchangelib turns an all-day event's Start and End into dates in the
    item's StartTimeZone, and when it does not know that zone, in this
    machine's zone; it takes a task's DueDate as the date of the UTC instant.
    Here an all-day event keeps its instants (and ``is_all_day``), and a task
    date is moved to its nearest UTC midnight before exchangelib reads it.
    """

    def _elem_to_obj(self, elem: Any) -> Any:
        if elem.tag == CalendarItem.response_tag():
            flag = elem.find(f"{{{TNS}}}IsAllDayEvent")
            if flag is not None and (flag.text or "").strip() == "true":
                flag.text = "false"
                item = super()._elem_to_obj(elem)
                item.is_all_day = True
                return item
        elif elem.tag == EwsTask.response_tag():
            for tag in ("DueDate", "StartDate"):
                field = elem.find(f"{{{TNS}}}{tag}")
                if field is not None and field.text:
                    field.text = _midnight_text(field.text)
        return super()._elem_to_obj(elem)


@dataclass(frozen=True)
class Window:
    """The original starts whose occurrences a series yields."""

    start: datetime
    end: datetime
    now: datetime
    limit: int = OCCURRENCE_LIMIT

    @classmethod
    def around(cls, now: datetime, backfill_days: int) -> Window:
        return cls(now - timedelta(days=backfill_days), now + LOOK_AHEAD, now)

    def holds(self, slot: Slot) -> bool:
        if isinstance(slot, datetime):
            return self.start <= slot <= self.end
        return self.start.date() <= slot <= self.end.date()

    def holds_end(self, end: Slot) -> bool:
        """Whether something that ends then is not over before the window."""
        if isinstance(end, datetime):
            return end >= self.start
        return end > self.start.date()

    def distance(self, slot: Slot) -> timedelta:
        return abs(_as_instant(slot) - self.now)


# --- calendar items ----------------------------------------------------------


class CalendarReader:
    """Turns one mailbox's calendar items into meeting items."""

    def __init__(self, where: str, window: Window, address_of: AddressOf) -> None:
        self.where = where  # "mailbox x@y", for log lines
        self.window = window
        self.address_of = address_of

    def exceptions_wanted(self, ews_item: Any) -> list[Any]:
        """The modified occurrences of a master whose slot is in the window."""
        if getattr(ews_item, "type", None) != "RecurringMaster":
            return []
        clock = _clock(ews_item)
        return [
            o
            for o in ews_item.modified_occurrences or ()
            if o.original_start is not None
            and self.window.holds(clock.slot(o.original_start, ews_item.is_all_day))
        ]

    def items(
        self, ews_item: Any, folder: Folder, exceptions: Mapping[str, Any]
    ) -> list[Item]:
        """The item, and for a recurring master its occurrences in the window.

        ``exceptions`` holds the fetched modified occurrences by ItemId; one
        missing there is read from the master with its own start and end.
        """
        uid = str(getattr(ews_item, "uid", None) or "").strip()
        if not uid:
            raise ParseError("the calendar item has no UID")
        if ews_item.start is None:
            raise ParseError("the calendar item has no start")
        clock = _clock(ews_item)
        start, end = clock.span(ews_item, bool(ews_item.is_all_day))
        head = self._item(ews_item, folder, uid, start, end)
        if getattr(ews_item, "type", None) != "RecurringMaster":
            last = end if end is not None else start
            return [head] if last is None or self.window.holds_end(last) else []
        if ews_item.recurrence is None:
            raise ParseError("the recurring master has no recurrence")
        head.occurred_at = _instant(getattr(ews_item, "datetime_created", None))
        return [head, *self._occurrences(ews_item, folder, uid, clock, exceptions)]

    def _occurrences(
        self,
        master: Any,
        folder: Folder,
        uid: str,
        clock: _Clock,
        exceptions: Mapping[str, Any],
    ) -> Iterator[Item]:
        all_day = bool(master.is_all_day)
        deleted = {
            clock.slot(d.start, all_day) for d in master.deleted_occurrences or ()
        }
        modified = {
            clock.slot(o.original_start, all_day): o
            for o in master.modified_occurrences or ()
            if o.original_start is not None
        }
        slots = self._slots(master, clock, all_day)
        length = _length(master, clock)
        for slot in sorted(slots, key=_as_instant):
            known = _match(slot, deleted) or _match(slot, modified)
            if known in deleted:
                continue
            if known is not None:
                occurrence = modified.pop(known)
                yield self._exception(
                    master, folder, uid, known, occurrence, exceptions
                )
                continue
            yield self._item(
                master, folder, uid, slot, slot + length, recurrence_id=slot
            )
        for slot, occurrence in modified.items():  # not where the pattern puts it
            if self.window.holds(slot):
                yield self._exception(master, folder, uid, slot, occurrence, exceptions)

    def _slots(self, master: Any, clock: _Clock, all_day: bool) -> list[Slot]:
        first = clock.day(master.start) if all_day else clock.when(master.start)
        assert first is not None
        every = expand(master.recurrence, first, clock, until=self.window.end)
        found = [s for s in every if self.window.holds(s)]
        if len(found) <= self.window.limit:
            return found
        log.info(
            "%s: series %s has %d occurrences in the window; keeping the %d "
            "nearest to now",
            self.where,
            master.id,
            len(found),
            self.window.limit,
        )
        return sorted(found, key=self.window.distance)[: self.window.limit]

    def _exception(
        self,
        master: Any,
        folder: Folder,
        uid: str,
        slot: Slot,
        occurrence: Any,
        exceptions: Mapping[str, Any],
    ) -> Item:
        own = exceptions.get(occurrence.id)
        source = own if own is not None else occurrence
        start, end = _clock(master).span(source, bool(master.is_all_day))
        return self._item(master, folder, uid, start, end, recurrence_id=slot, own=own)

    def _item(
        self,
        master: Any,
        folder: Folder,
        uid: str,
        start: Slot | None,
        end: Slot | None,
        *,
        recurrence_id: Slot | None = None,
        own: Any = None,
    ) -> Item:
        """A meeting item: the master's fields, or an exception's own."""
        fields = own if own is not None else master
        rid = recurrence_id.isoformat() if recurrence_id is not None else None
        cancelled = bool(getattr(fields, "is_cancelled", False))
        meeting = Meeting(
            uid=uid,
            method=None,
            sequence=int(getattr(master, "appointment_sequence_number", None) or 0),
            start=start,
            end=end,
            status="CANCELLED" if cancelled else "CONFIRMED",
            recurrence_id=rid,
            location=str(getattr(fields, "location", None) or ""),
        )
        return Item(
            provider_id=master.id if rid is None else f"{master.id}#{rid}",
            folder=folder,
            kind=ItemKind.MEETING,
            subject=str(getattr(fields, "subject", None) or ""),
            occurred_at=_instant(recurrence_id if rid else start),
            participants=self._people(master, own),
            categories=tuple(master.categories or ()),
            sensitivity=sensitivity(getattr(master, "sensitivity", None)),
            change_key=own.changekey if own is not None else master.changekey,
            meeting=meeting,
        )

    def _people(self, master: Any, own: Any) -> list[Participant]:
        fields = own if own is not None else master
        people: list[Participant] = []
        organizer = getattr(master, "organizer", None)
        if organizer is not None and organizer.email_address:
            people.append(self._person(organizer, Role.ORGANIZER, None))
        attendees = [
            *(fields.required_attendees or ()),
            *(fields.optional_attendees or ()),
        ]
        for attendee in attendees:
            mailbox = attendee.mailbox
            if mailbox is None or not mailbox.email_address:
                continue
            if attendee.response_type == "Organizer":
                if not any(p.role is Role.ORGANIZER for p in people):
                    people.append(self._person(mailbox, Role.ORGANIZER, None))
                continue
            response = RESPONSES.get(str(attendee.response_type))
            people.append(self._person(mailbox, Role.ATTENDEE, response))
        return people

    def _person(self, mailbox: Any, role: Role, response: str | None) -> Participant:
        address, unresolved = self.address_of(mailbox)
        return Participant(
            address, mailbox.name or "", role, response=response, unresolved=unresolved
        )


# --- recurrence ----------------------------------------------------------------


@dataclass(frozen=True)
class _Clock:
    """A series' wall time: its zone's, or UTC shifted by whole days."""

    zone: tzinfo | None
    shift: timedelta = timedelta(0)

    def local(self, instant: datetime) -> datetime:
        if self.zone is not None:
            return instant.astimezone(self.zone).replace(tzinfo=None)
        return (instant + self.shift).replace(tzinfo=None)

    def instant(self, local: datetime) -> datetime:
        if self.zone is not None:
            return local.replace(tzinfo=self.zone).astimezone(UTC)
        return (local - self.shift).replace(tzinfo=UTC)

    def when(self, value: Any) -> datetime | None:
        return _instant(value)

    def day(self, value: Any) -> date | None:
        """The date an all-day event's local midnight stands for."""
        instant = _instant(value)
        if instant is None:
            return None
        if self.zone is not None:
            return instant.astimezone(self.zone).date()
        return (instant + _HALF_DAY).date()

    def span(self, fields: Any, all_day: bool) -> tuple[Slot | None, Slot | None]:
        """An item's start and end: instants, or days for an all-day one."""
        if all_day:
            return self.day(fields.start), self.day(fields.end)
        return self.when(fields.start), self.when(fields.end)

    def slot(self, value: Any, all_day: bool) -> Slot:
        found = self.day(value) if all_day else self.when(value)
        if found is None:
            raise ParseError("an occurrence of the series has no start")
        return found


def _clock(ews_item: Any) -> _Clock:
    """The zone exchangelib knows for the item, else UTC shifted by whole days
    so that the master's start falls on the recurrence's start date."""
    zone = getattr(ews_item, "_start_timezone", None)
    key = getattr(zone, "key", None)
    if key:
        try:
            return _Clock(ZoneInfo(key))
        except (ZoneInfoNotFoundError, ValueError):
            pass
    boundary = getattr(getattr(ews_item, "recurrence", None), "boundary", None)
    start = _instant(getattr(ews_item, "start", None))
    if boundary is None or start is None or ews_item.is_all_day:
        return _Clock(None)
    days = (_date(boundary.start) - start.date()).days
    return _Clock(None, timedelta(days=max(-1, min(1, days))))


def expand(
    recurrence: Any, first: Slot, clock: _Clock, until: datetime
) -> Iterator[Slot]:
    """The original starts of a series up to ``until``, from its first:
    instants (UTC), or dates for an all-day series."""
    all_day = not isinstance(first, datetime)
    if all_day:
        dtstart = datetime.combine(_date(recurrence.boundary.start), time())
    else:
        assert isinstance(first, datetime)
        local_time = clock.local(first).time()
        dtstart = datetime.combine(_date(recurrence.boundary.start), local_time)
    rule = _rule(recurrence.pattern, recurrence.boundary, dtstart)
    horizon = clock.local(until) + timedelta(days=2)  # the zone's margin
    for local in _until(rule, horizon):
        yield local.date() if all_day else clock.instant(local)


def _until(rule: rrule, horizon: datetime) -> Iterator[datetime]:
    for local in rule:
        if local > horizon:
            return
        yield local


def _rule(pattern: Any, boundary: Any, dtstart: datetime) -> rrule:
    bound: dict[str, Any] = {"dtstart": dtstart}
    if isinstance(boundary, NumberedPattern):
        bound["count"] = boundary.number
    elif isinstance(boundary, EndDatePattern):
        bound["until"] = datetime.combine(_date(boundary.end), time.max)
    if isinstance(pattern, DailyPattern):
        return rrule(DAILY, interval=pattern.interval, **bound)
    if isinstance(pattern, WeeklyPattern):
        first_day = pattern.first_day_of_week or 1
        return rrule(
            WEEKLY,
            interval=pattern.interval,
            byweekday=[_DAYS[_index(d, WEEKDAYS) - 1] for d in _list(pattern.weekdays)],
            wkst=_DAYS[_index(first_day, WEEKDAYS) - 1],
            **bound,
        )
    if isinstance(pattern, AbsoluteMonthlyPattern):
        return rrule(
            MONTHLY, interval=pattern.interval, **_day_of_month(pattern), **bound
        )
    if isinstance(pattern, RelativeMonthlyPattern):
        return rrule(MONTHLY, interval=pattern.interval, **_nth_day(pattern), **bound)
    if isinstance(pattern, AbsoluteYearlyPattern):
        month = _index(pattern.month, MONTHS)
        return rrule(YEARLY, bymonth=month, **_day_of_month(pattern), **bound)
    if isinstance(pattern, RelativeYearlyPattern):
        month = _index(pattern.month, MONTHS)
        return rrule(YEARLY, bymonth=month, **_nth_day(pattern), **bound)
    raise ParseError(f"the recurrence pattern {type(pattern).__name__} is not known")


def _day_of_month(pattern: Any) -> dict[str, Any]:
    # "If a particular month has fewer days than the day_of_month value, the
    # last day in the month is assumed": the last existing day of d-3 .. d.
    day = int(pattern.day_of_month)
    return {"bymonthday": list(range(min(day, 28), day + 1)), "bysetpos": -1}


def _nth_day(pattern: Any) -> dict[str, Any]:
    """DaysOfWeek (a weekday, or Day, Weekday, WeekendDay) and its index."""
    index = _index(pattern.weekday, WEEKDAYS)
    groups = {8: _DAYS, 9: _DAYS[:5], 10: _DAYS[5:]}
    days = groups[index] if index in groups else [_DAYS[index - 1]]
    number = _index(pattern.week_number, WEEK_NUMBERS)
    return {"byweekday": days, "bysetpos": -1 if number == 5 else number}


def _match(slot: Slot, known: Iterable[Slot]) -> Slot | None:
    """The server's original start for an expanded one: the same, or within
    the tolerance for an instant."""
    candidates = list(known)
    if slot in candidates:
        return slot
    if isinstance(slot, datetime):
        for other in candidates:
            if isinstance(other, datetime) and abs(other - slot) <= _TOLERANCE:
                return other
    return None


def _length(master: Any, clock: _Clock) -> timedelta:
    if master.is_all_day:
        start, end = clock.day(master.start), clock.day(master.end)
        if start is None or end is None:
            return timedelta(days=1)
        return max(end - start, timedelta(days=1))
    start_at, end_at = _instant(master.start), _instant(master.end)
    if start_at is None or end_at is None:
        return timedelta(0)
    return end_at - start_at


# --- tasks ---------------------------------------------------------------------


def read_task(ews_item: Any, folder: Folder) -> Item:
    """A task item; see the module's docstring for its uid and dates."""
    key = getattr(ews_item, "search_key", None)
    if not key:
        raise ParseError("the server gave no PR_SEARCH_KEY for the task")
    owner = str(ews_item.owner or "").strip() or None
    participants = [Participant(owner, "", Role.TO)] if owner and "@" in owner else []
    completed = _instant(ews_item.complete_date)
    task = Task(
        uid=bytes(key).hex().upper(),
        status=ews_item.status,
        due=_date(ews_item.due_date) if ews_item.due_date else None,
        owner=owner,
        contacts=tuple(ews_item.contacts or ()),
        companies=tuple(ews_item.companies or ()),
        completed=(completed + _HALF_DAY).date() if completed else None,
    )
    return Item(
        provider_id=ews_item.id,
        folder=folder,
        kind=ItemKind.TASK,
        subject=str(ews_item.subject or ""),
        occurred_at=_instant(getattr(ews_item, "datetime_created", None)),
        participants=participants,
        body_text=_text(ews_item.body),
        categories=tuple(ews_item.categories or ()),
        sensitivity=sensitivity(getattr(ews_item, "sensitivity", None)),
        change_key=ews_item.changekey,
        task=task,
    )


# --- small helpers ---------------------------------------------------------------


def sensitivity(value: str | None) -> str | None:
    """Outlook's Sensitivity as the core names it; Normal is none."""
    if not value or value == "Normal":
        return None
    return SENSITIVITY.get(value, value.lower())


def _instant(value: Any) -> datetime | None:
    """A plain UTC datetime for an exchangelib one (or a date's midnight)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return datetime.fromtimestamp(value.timestamp(), UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return None


def _as_instant(slot: Slot) -> datetime:
    found = _instant(slot)
    assert found is not None
    return found


def _date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    return date(value.year, value.month, value.day)


def _index(value: Any, names: tuple[str, ...]) -> int:
    """exchangelib's 1-based enum value, given as a number or a name."""
    return int(value) if isinstance(value, int) else names.index(str(value)) + 1


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _midnight_text(text: str) -> str:
    """An xs:dateTime moved to its nearest UTC midnight."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return text
    if value.tzinfo is None:
        return text
    day = (value.astimezone(UTC) + _HALF_DAY).date()
    return f"{day.isoformat()}T00:00:00Z"


_TAG = re.compile(r"<[^>]+>")


def _text(body: Any) -> str:
    if body is None:
        return ""
    if isinstance(body, HTMLBody):
        return html.unescape(_TAG.sub(" ", str(body)))
    return str(body)
