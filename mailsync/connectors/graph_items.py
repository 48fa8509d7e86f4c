"""Messages, events and To Do tasks read from Microsoft Graph JSON.

Messages
    An item carries what :mod:`mailsync.mime` makes of the same message
    where Graph gives it: ``internetMessageId`` is the Message-ID (without
    its angle brackets), ``from`` the author, ``sender`` a delegate when it
    is someone else (MIME has a Sender header only then),
    ``toRecipients``, ``ccRecipients``, ``bccRecipients`` and ``replyTo``
    their roles, ``sentDateTime`` the Date and ``receivedDateTime`` the
    receipt. The body is the text Graph makes of it (``Prefer:
    outlook.body-content-type="text"``; HTML is stripped if it comes
    anyway). In-Reply-To, References, the list headers (List-Id,
    Precedence, Auto-Submitted ...) and a ``multipart/report`` content type
    come from ``internetMessageHeaders``, which the delta query can
    ``$select``. Graph gives no internet headers for mail the rep wrote
    (Sent Items, drafts): such an item has no In-Reply-To or References, and
    threading relies on its Message-ID and on the replies' own references.
    Graph has no sensitivity for messages: it is PidTagSensitivity, expanded
    as a single-value extended property in the delta query (1 personal, 2
    private, 3 confidential: ``company-confidential``, as MIME's Sensitivity
    header names it; 0 normal: none).

Events (the calendar view of the default calendar)
    A ``singleInstance`` event is one meeting; an ``occurrence`` or an
    ``exception`` of a series is a meeting whose recurrence id is its
    original start: a UTC isoformat instant, or a date for an all-day
    series, as :mod:`mailsync.connectors.ews_items` and
    :mod:`mailsync.calendar` write it, so that a meeting read through EWS
    and through Graph is one activity.

    The identity is the meeting's iCalendar UID, the one EWS calls ``UID``.
    Graph v1.0 has ``iCalUId`` only (``uid``, the same for every instance, is
    beta): it is the hex of the meeting's PidLidGlobalObjectId, which for an
    instance of a series holds that instance's date ([MS-OXOCAL] 2.2.1.27:
    bytes 16-19, year high and low, month, day). The UID is that id with those
    bytes zeroed (PidLidCleanGlobalObjectId, the series' own), or, for a
    meeting that came in from another calendar system, the UID it carried
    (a ``vCal-Uid`` global object id holds it as text), as EWS gives it.

    An all-day event stays dates (its end exclusive): Graph gives its start
    and end as midnights that are the dates themselves. An all-day
    exception's original start is an instant, read by the nearest UTC
    midnight (right for zones within twelve hours of UTC). ``isCancelled``
    makes the status CANCELLED. The organizer and the required and optional
    attendees are participants, each attendee with its response
    (``notResponded``: NEEDS-ACTION, ``accepted``, ``declined``,
    ``tentativelyAccepted``: TENTATIVE, ``none``: none).

To Do tasks
    A task's uid is its Graph id: To Do tasks have no PR_SEARCH_KEY through
    Graph (todoTask has no extended properties), so a task read through EWS
    before and through Graph now are two activities. Its status takes the
    EWS spelling (``notStarted``: NotStarted, ...); its due and completion
    dates are dates (To Do keeps midnights, in UTC read by the nearest
    midnight); its change key is its ``@odata.etag``.
"""

from __future__ import annotations

import binascii
import html
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

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
from mailsync.mime import _LIST_HEADERS as LIST_HEADERS  # the same set as MIME's
from mailsync.mime import message_ids, normalise_message_id

MESSAGE_FIELDS = (
    "id",
    "changeKey",
    "subject",
    "body",
    "from",
    "sender",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "sentDateTime",
    "receivedDateTime",
    "internetMessageId",
    "internetMessageHeaders",
    "categories",
    "isDraft",
)
# A message's sensitivity is no Graph property: PidTagSensitivity, expanded.
SENSITIVITY_PROPERTY = "Integer 0x0036"
_SENSITIVITY_VALUES = {"1": "personal", "2": "private", "3": "company-confidential"}
# What a delta entry holds when only the read flag changed.
READ_FLAG_ONLY = frozenset({"id", "isRead", "parentFolderId"})
SENSITIVITY = {"normal": None, "confidential": "company-confidential"}
RESPONSES: dict[str, str | None] = {
    "none": None,
    "notResponded": "NEEDS-ACTION",
    "accepted": "ACCEPTED",
    "declined": "DECLINED",
    "tentativelyAccepted": "TENTATIVE",
}
TASK_STATUS = {
    "notStarted": "NotStarted",
    "inProgress": "InProgress",
    "completed": "Completed",
    "waitingOnOthers": "WaitingOnOthers",
    "deferred": "Deferred",
}
_ADDRESS_FIELDS = (
    ("from", Role.FROM),
    ("toRecipients", Role.TO),
    ("ccRecipients", Role.CC),
    ("bccRecipients", Role.BCC),
    ("replyTo", Role.REPLY_TO),
)
# PidLidGlobalObjectId: the 16-byte class id every one starts with.
_GOID_PREFIX = "040000008200E00074C5B7101A82E008"
_VCAL_UID = b"vCal-Uid\x01\x00\x00\x00"
_HALF_DAY = timedelta(hours=12)
_TAG = re.compile(r"<[^>]*>")


def is_read_flag_only(entry: Mapping[str, Any]) -> bool:
    """A delta entry for a read or unread change: nothing we record changed."""
    keys = {k for k in entry if not k.startswith("@")}
    return bool(keys) and keys <= READ_FLAG_ONLY and "isRead" in keys


def is_meeting_message(entry: Mapping[str, Any]) -> bool:
    """A meeting request, response or cancellation (Graph's eventMessage)."""
    return str(entry.get("@odata.type", "")).startswith("#microsoft.graph.eventMessage")


# --- messages -----------------------------------------------------------------


def read_message(entry: Mapping[str, Any], provider_id: str, folder: Folder) -> Item:
    """An item from a message's JSON (the fields of :data:`MESSAGE_FIELDS`)."""
    if "id" not in entry:
        raise ParseError("the message has no id")
    headers = _headers(entry.get("internetMessageHeaders"))
    defects: list[str] = []
    raw_id = str(entry.get("internetMessageId") or "")
    item = Item(
        provider_id=provider_id,
        folder=folder,
        kind=ItemKind.MESSAGE,
        subject=" ".join(str(entry.get("subject") or "").split()),
        occurred_at=_instant(entry.get("sentDateTime")),
        received_at=_instant(entry.get("receivedDateTime")),
        participants=list(_message_people(entry)),
        message_id=normalise_message_id(raw_id),
        in_reply_to=message_ids(headers.get("in-reply-to")),
        references=message_ids(headers.get("references")),
        body_text=body_text(entry.get("body")),
        sensitivity=message_sensitivity(entry, headers),
        categories=tuple(entry.get("categories") or ()),
        list_headers={h: headers[h] for h in LIST_HEADERS if h in headers},
        defects=defects,
        change_key=entry.get("changeKey"),
        is_draft=bool(entry.get("isDraft")),
        is_report=headers.get("content-type", "")
        .lower()
        .startswith("multipart/report"),
    )
    if item.occurred_at is None:
        defects.append("no Date")
    if item.message_id is None:
        defects.append(
            f"Message-ID unusable ({len(raw_id)} characters)"
            if raw_id
            else "no Message-ID"
        )
    return item


def amend_from_json(item: Item, entry: Mapping[str, Any]) -> Item:
    """A message read from its MIME, with the Outlook fields MIME lacks."""
    item.change_key = entry.get("changeKey")
    item.received_at = _instant(entry.get("receivedDateTime")) or item.received_at
    item.categories = tuple(entry.get("categories") or ())
    item.sensitivity = message_sensitivity(entry, {}) or item.sensitivity
    item.is_draft = bool(entry.get("isDraft"))
    return item


def _message_people(entry: Mapping[str, Any]) -> Iterator[Participant]:
    author = _address(entry.get("from"))
    for field_name, role in _ADDRESS_FIELDS:
        for person in _recipients(entry.get(field_name)):
            yield person_as(person, role)
    sender = _address(entry.get("sender"))
    if sender and sender[0] and (not author or sender[0].lower() != author[0].lower()):
        yield person_as(sender, Role.DELEGATE)


def person_as(
    person: tuple[str, str], role: Role, response: str | None = None
) -> Participant:
    address, name = person
    unresolved = address.lower().startswith("/o=") or "@" not in address
    return Participant(address, name, role, response=response, unresolved=unresolved)


def _recipients(value: Any) -> Iterator[tuple[str, str]]:
    for entry in value if isinstance(value, list) else [value]:
        found = _address(entry)
        if found and found[0]:
            yield found


def _address(value: Any) -> tuple[str, str] | None:
    if not isinstance(value, dict):
        return None
    mailbox = value.get("emailAddress") or {}
    address = str(mailbox.get("address") or "").strip()
    name = " ".join(str(mailbox.get("name") or "").split())
    return (address, name) if address else None


def _headers(value: Any) -> dict[str, str]:
    """Internet headers by lower-cased name (the first of each)."""
    found: dict[str, str] = {}
    for header in value if isinstance(value, list) else []:
        name = str(header.get("name", "")).lower()
        if name and name not in found:
            found[name] = " ".join(str(header.get("value", "")).split())
    return found


def body_text(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    text = str(body.get("content") or "")
    if str(body.get("contentType", "")).lower() == "html":
        text = html.unescape(_TAG.sub(" ", text))
    return text.replace("\x00", "")


def message_sensitivity(
    entry: Mapping[str, Any], headers: Mapping[str, str]
) -> str | None:
    """PidTagSensitivity (0 normal, 1 personal, 2 private, 3 confidential),
    else the Sensitivity header the message came with."""
    for prop in entry.get("singleValueExtendedProperties") or ():
        if str(prop.get("id", "")).lower().replace("0x00", "0x") == "integer 0x36":
            return _SENSITIVITY_VALUES.get(str(prop.get("value", "")).strip())
    header = headers.get("sensitivity", "").strip().lower()
    return header or None


def sensitivity(value: Any) -> str | None:
    if not value:
        return None
    key = str(value)
    return SENSITIVITY.get(key, key.lower())


# --- events -------------------------------------------------------------------


def meeting_uid(ical_uid: str) -> str:
    """The iCalendar UID of a meeting from an instance's ``iCalUId``."""
    value = ical_uid.strip()
    if not value.upper().startswith(_GOID_PREFIX):
        return value
    try:
        raw = bytearray(binascii.unhexlify(value))
    except (binascii.Error, ValueError):
        return value
    if len(raw) < 40:
        return value
    raw[16:20] = b"\x00\x00\x00\x00"  # the instance date: the series' own id
    data = bytes(raw[40:])
    if data.startswith(_VCAL_UID):
        return data[len(_VCAL_UID) :].split(b"\x00", 1)[0].decode("utf-8", "replace")
    return binascii.hexlify(bytes(raw)).decode("ascii").upper()


def read_event(
    entry: Mapping[str, Any], provider_id: str, folder: Folder, sequence: int = 0
) -> Item:
    """A meeting item from an event of the calendar view."""
    ical_uid = str(entry.get("iCalUId") or "").strip()
    if not ical_uid:
        raise ParseError("the event has no iCalUId")
    all_day = bool(entry.get("isAllDay"))
    start, end = _when(entry.get("start"), all_day), _when(entry.get("end"), all_day)
    if start is None:
        raise ParseError("the event has no start")
    rid = recurrence_id(entry, all_day)
    meeting = Meeting(
        uid=meeting_uid(ical_uid),
        method=None,
        sequence=sequence,
        start=start,
        end=end,
        status="CANCELLED" if entry.get("isCancelled") else "CONFIRMED",
        recurrence_id=rid.isoformat() if rid is not None else None,
        location=str((entry.get("location") or {}).get("displayName") or ""),
    )
    return Item(
        provider_id=provider_id,
        folder=folder,
        kind=ItemKind.MEETING,
        subject=" ".join(str(entry.get("subject") or "").split()),
        occurred_at=_as_instant(rid if rid is not None else start),
        participants=list(_event_people(entry)),
        body_text=body_text(entry.get("body")),
        categories=tuple(entry.get("categories") or ()),
        sensitivity=sensitivity(entry.get("sensitivity")),
        change_key=entry.get("changeKey"),
        meeting=meeting,
    )


def recurrence_id(entry: Mapping[str, Any], all_day: bool) -> datetime | date | None:
    """An instance's original start: an instant, or a day for an all-day one."""
    if entry.get("type") not in ("occurrence", "exception"):
        return None
    if all_day and entry.get("type") == "occurrence":
        return _when(entry.get("start"), True)  # an unmoved one is on its day
    original = _instant(entry.get("originalStart"))
    if original is None:
        raise ParseError("the occurrence has no originalStart")
    return (original + _HALF_DAY).date() if all_day else original


def _event_people(entry: Mapping[str, Any]) -> Iterator[Participant]:
    organizer = _address(entry.get("organizer"))
    if organizer:
        yield person_as(organizer, Role.ORGANIZER)
    for attendee in entry.get("attendees") or ():
        found = _address(attendee)
        if not found or attendee.get("type") == "resource":
            continue
        response = str((attendee.get("status") or {}).get("response") or "none")
        if response == "organizer":
            if not organizer:
                organizer = found
                yield person_as(found, Role.ORGANIZER)
            continue
        yield person_as(found, Role.ATTENDEE, RESPONSES.get(response))


def _when(value: Any, all_day: bool) -> datetime | date | None:
    """A dateTimeTimeZone (asked for in UTC) as an instant, or its date."""
    if not isinstance(value, dict) or not value.get("dateTime"):
        return None
    text = str(value["dateTime"])
    if all_day:
        try:
            return date.fromisoformat(text[:10])
        except ValueError:
            raise ParseError(f"an all-day date that cannot be read: {text!r}") from None
    zone = str(value.get("timeZone") or "UTC")
    if zone.upper() not in ("UTC", "Z", "ETC/UTC"):
        raise ParseError(f"a time in zone {zone!r}; the connector asks for UTC")
    return _instant(text)


# --- tasks --------------------------------------------------------------------


def read_task(entry: Mapping[str, Any], provider_id: str, folder: Folder) -> Item:
    """A task item from a To Do task."""
    task_id = str(entry.get("id") or "")
    if not task_id:
        raise ParseError("the task has no id")
    status = str(entry.get("status") or "")
    task = Task(
        uid=task_id,
        status=TASK_STATUS.get(status, status or None),
        due=_day(entry.get("dueDateTime")),
        completed=_day(entry.get("completedDateTime")),
    )
    return Item(
        provider_id=provider_id,
        folder=folder,
        kind=ItemKind.TASK,
        subject=" ".join(str(entry.get("title") or "").split()),
        occurred_at=_instant(entry.get("createdDateTime")),
        participants=[],
        body_text=body_text(entry.get("body")),
        categories=tuple(entry.get("categories") or ()),
        change_key=entry.get("@odata.etag"),
        task=task,
    )


def _day(value: Any) -> date | None:
    """A To Do date: its midnight, read by the nearest midnight when in UTC."""
    if not isinstance(value, dict) or not value.get("dateTime"):
        return None
    text = str(value["dateTime"])
    zone = str(value.get("timeZone") or "UTC").upper()
    if zone not in ("UTC", "Z", "ETC/UTC"):
        return date.fromisoformat(text[:10])  # a local midnight: its date
    instant = _instant(text)
    return (instant + _HALF_DAY).date() if instant else None


# --- small helpers --------------------------------------------------------------


def _instant(value: Any) -> datetime | None:
    """An ISO 8601 date-time (Graph's, up to seven decimals) as UTC."""
    if not value:
        return None
    text = str(value).strip().replace("Z", "+00:00")
    # Python reads at most six decimals; Graph writes seven.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ParseError(f"a date that cannot be read: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _as_instant(value: datetime | date) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime(value.year, value.month, value.day, tzinfo=UTC)
