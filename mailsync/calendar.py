"""iCalendar invitations and replies (text/calendar parts, .ics attachments)."""

from __future__ import annotations

from datetime import UTC, date, datetime, tzinfo
from typing import Any

import icalendar
from icalendar.timezone import tzp

from mailsync.errors import ParseError
from mailsync.items import Meeting, Participant, Role


def read_invitation(data: bytes) -> tuple[Meeting, list[Participant]]:
    """The meeting and its people from one iCalendar object.

    The first VEVENT is the meeting; its ORGANIZER and ATTENDEEs become
    participants, each attendee with its PARTSTAT as the response.
    """
    try:
        calendar = icalendar.Calendar.from_ical(data)
    except Exception as exc:  # icalendar raises ValueError and others
        raise ParseError(f"not valid iCalendar: {type(exc).__name__}") from exc
    events = calendar.walk("VEVENT")
    if not events:
        raise ParseError("no VEVENT in the calendar part")
    event = events[0]
    uid = str(event.get("UID", "")).strip()
    if not uid:
        raise ParseError("VEVENT has no UID")

    method = str(calendar.get("METHOD", "")).upper() or None
    zones = _zones(calendar)
    meeting = Meeting(
        uid=uid,
        method=method,
        sequence=_int(event.get("SEQUENCE")),
        start=_when(event, "DTSTART", zones),
        end=_when(event, "DTEND", zones),
        status=str(event.get("STATUS", "")).upper() or None,
        recurrence_id=_recurrence_id(event, zones),
        location=str(event.get("LOCATION", "")),
    )
    return meeting, _people(event)


def _people(event: Any) -> list[Participant]:
    people = []
    organizer = event.get("ORGANIZER")
    if organizer is not None:
        people.append(_person(organizer, Role.ORGANIZER))
    attendees = event.get("ATTENDEE", [])
    if not isinstance(attendees, list):
        attendees = [attendees]
    people.extend(_person(a, Role.ATTENDEE) for a in attendees)
    return [p for p in people if p.address]


def _person(value: Any, role: Role) -> Participant:
    address = str(value)
    if address.lower().startswith("mailto:"):
        address = address[7:]
    params = getattr(value, "params", {})
    response = params.get("PARTSTAT") if role is Role.ATTENDEE else None
    return Participant(
        address=address.strip(),
        name=str(params.get("CN", "")).strip('"'),
        role=role,
        response=str(response).upper() if response else None,
    )


def _zones(calendar: Any) -> dict[str, tzinfo]:
    """The time zones that this calendar's own VTIMEZONEs define, by TZID.

    icalendar keeps the first VTIMEZONE it sees under a name for the whole
    process, but a TZID names a VTIMEZONE only "in the scope of an iCalendar
    object" (RFC 5545 section 3.8.3.1), and Outlook calls every zone it has no
    name for "Customized Time Zone".
    """
    zones: dict[str, tzinfo] = {}
    for component in calendar.walk("VTIMEZONE"):
        try:
            zones[component.tz_name] = component.to_tz(lookup_tzid=False)
        except Exception:  # a broken VTIMEZONE: leave the zone to icalendar
            continue
    return zones


def _when(event: Any, name: str, zones: dict[str, tzinfo]) -> datetime | date | None:
    prop = event.get(name)
    if isinstance(prop, list):  # the property may occur once; read the first
        prop = prop[0]
    if prop is None:
        return None
    try:
        value = prop.dt
    except (AttributeError, ValueError) as exc:  # icalendar's broken property
        raise ParseError(f"{name} cannot be read") from exc
    if isinstance(value, datetime):
        zone = zones.get(str(prop.params.get("TZID", "")))
        if zone is not None:
            value = tzp.localize(value.replace(tzinfo=None), zone)
        if value.tzinfo is None:  # floating time: read as UTC, it has no zone
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    return value if isinstance(value, date) else None


def _recurrence_id(event: Any, zones: dict[str, tzinfo]) -> str | None:
    value = _when(event, "RECURRENCE-ID", zones)
    return value.isoformat() if value is not None else None


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


# --- writing: tasks with an alarm (RFC 5545 VTODO, VALARM) -----------------

PRODID = "-//mailsync//follow-ups//EN"


def todo(
    uid: str,
    summary: str,
    description: str,
    due: datetime,
    stamp: datetime,
    contact: str = "",
    categories: tuple[str, ...] = (),
) -> icalendar.Todo:
    """A VTODO due at ``due`` with a display alarm at the same instant.

    Times are written in UTC. The alarm's TRIGGER is an absolute date-time
    (RFC 5545 section 3.8.6.3), so that it does not depend on how a client
    reads a trigger relative to DUE.
    """
    task = icalendar.Todo()
    task.add("UID", uid)
    task.add("DTSTAMP", stamp.astimezone(UTC))
    task.add("SUMMARY", summary)
    if description:
        task.add("DESCRIPTION", description)
    task.add("DUE", due.astimezone(UTC))
    task.add("STATUS", "NEEDS-ACTION")
    if contact:
        task.add("CONTACT", contact)
    if categories:
        task.add("CATEGORIES", list(categories))
    alarm = icalendar.Alarm()
    alarm.add("ACTION", "DISPLAY")
    alarm.add("DESCRIPTION", summary)
    alarm.add("TRIGGER", due.astimezone(UTC), parameters={"VALUE": "DATE-TIME"})
    task.add_component(alarm)
    return task


def calendar_of(components: list[icalendar.Todo], name: str = "") -> bytes:
    """A VCALENDAR object holding the components, as bytes."""
    calendar = icalendar.Calendar()
    calendar.add("PRODID", PRODID)
    calendar.add("VERSION", "2.0")
    if name:
        calendar.add("X-WR-CALNAME", name)
    for component in components:
        calendar.add_component(component)
    return bytes(calendar.to_ical())
