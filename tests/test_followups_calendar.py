"""Invitations and replies by mail become meetings with their attendees.

RFC 5546 methods REQUEST, REPLY and CANCEL; STATUS:CANCELLED under any
method; the highest SEQUENCE wins; a reply from someone not invited adds
them as an attendee; Windows zone names in TZID are read as the IANA zones
they stand for, and an embedded VTIMEZONE is used for a name no zone table
knows. Messages go through the local connector and the sync core on SQLite
and PostgreSQL; some calendars come from ../shared/corpus/ics-icalendar.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
import time_machine
from sqlalchemy import select

from mailsync.store.models import Activity, ParticipantRow
from tests.conftest import SHARED
from tests.test_followups import ANDY, LORRAINE, TAMARA, World, invitation, mail

ICS = SHARED / "corpus" / "ics-icalendar" / "tests"
needs_ics = pytest.mark.skipif(not ICS.is_dir(), reason="../shared/corpus is absent")
UID = "pilot-review@contoso.com"
START, END = (
    datetime(2026, 3, 10, 15, 0, tzinfo=UTC),
    datetime(2026, 3, 10, 16, 0, tzinfo=UTC),
)


@pytest.fixture
def world(factory, store_url, tmp_path) -> World:
    return World(factory, store_url, tmp_path)


def synced(world: World) -> None:
    with time_machine.travel(datetime(2026, 3, 1, tzinfo=UTC), tick=False):
        world.sync()


def meetings(world: World) -> list[Activity]:
    with world.factory() as session:
        return list(session.scalars(select(Activity).where(Activity.kind == "meeting")))


def attendees(world: World, activity_id: int) -> dict[str, str | None]:
    with world.factory() as session:
        rows = session.scalars(
            select(ParticipantRow).where(
                ParticipantRow.activity_id == activity_id,
                ParticipantRow.role == "attendee",
            )
        )
        return {row.address: row.response for row in rows}


def calendar_mail(
    body: str, method: str, sender: str = TAMARA, to: str = ANDY, mid: str = "x"
) -> EmailMessage:
    message = mail(sender, to, "Pilot review", START - timedelta(days=3), mid)
    text = body.replace("\n", "\r\n")
    message.add_alternative(text, subtype="calendar", params={"method": method})
    return message


def event(extra: str, method: str = "REQUEST", zones: str = "") -> str:
    return (
        "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//Contoso//Test//EN\n"
        f"METHOD:{method}\n{zones}BEGIN:VEVENT\nUID:{UID}\n"
        "DTSTAMP:20260301T090000Z\nSUMMARY:Pilot review\n"
        f"ORGANIZER:mailto:{TAMARA}\n{extra}END:VEVENT\nEND:VCALENDAR\n"
    )


# --- methods ---------------------------------------------------------------------


def test_a_request_and_its_reply_are_one_meeting_with_the_answer(world):
    world.box.write("Sent", invitation("REQUEST", UID, START, END))
    reply = invitation("REPLY", UID, START, END, attendees=(ANDY,))
    world.box.write("Inbox", _accepted(reply, ANDY))
    synced(world)

    [meeting] = meetings(world)
    assert (meeting.starts_at, meeting.ends_at) == (START, END)
    assert attendees(world, meeting.id) == {ANDY: "ACCEPTED"}


def test_a_reply_from_someone_not_invited_adds_them(world):
    world.box.write("Sent", invitation("REQUEST", UID, START, END))
    forwarded = invitation("REPLY", UID, START, END, attendees=(LORRAINE,))
    world.box.write("Inbox", _accepted(forwarded, LORRAINE))
    synced(world)

    [meeting] = meetings(world)
    assert attendees(world, meeting.id) == {ANDY: "NEEDS-ACTION", LORRAINE: "ACCEPTED"}


def test_cancel_cancels_and_status_cancelled_under_request_too(world):
    world.box.write("Sent", invitation("REQUEST", UID, START, END))
    world.box.write(
        "Sent", invitation("CANCEL", UID, START, END, sequence=1, status="CANCELLED")
    )
    other = "other@contoso.com"
    subject = "Rollout kick-off"
    world.box.write("Sent", invitation("REQUEST", other, START, END, subject=subject))
    world.box.write(
        "Sent",
        invitation(
            "REQUEST",
            other,
            START,
            END,
            sequence=3,
            status="CANCELLED",
            subject=subject,
            mid="other-cancelled",
        ),
    )
    synced(world)
    assert sorted((m.meeting_uid, m.status) for m in meetings(world)) == [
        (other, "cancelled"),
        (UID, "cancelled"),
    ]


def test_the_highest_sequence_wins_whatever_order_they_come_in(world):
    later = START + timedelta(days=2)
    # The update (SEQUENCE 2) is older on disk than the first invitation.
    world.box.write(
        "Sent",
        invitation(
            "REQUEST", UID, later, later + timedelta(hours=1), sequence=2, mid="update"
        ),
    )
    world.box.write("Sent", invitation("REQUEST", UID, START, END, sequence=1))
    synced(world)
    [meeting] = meetings(world)
    assert meeting.sequence == 2
    assert meeting.starts_at == later


# --- time zones ------------------------------------------------------------------


def test_a_windows_zone_name_without_vtimezone_is_read_as_its_iana_zone(world):
    body = event(
        "DTSTART;TZID=W. Europe Standard Time:20260710T100000\n"
        "DTEND;TZID=Central Standard Time:20260710T100000\n"
        f"ATTENDEE:mailto:{ANDY}\n"
    )
    world.box.write("Sent", calendar_mail(body, "REQUEST"))
    synced(world)
    [meeting] = meetings(world)
    # W. Europe is Europe/Berlin (CEST in July), Central is America/Chicago (CDT).
    assert meeting.starts_at == datetime(2026, 7, 10, 8, 0, tzinfo=UTC)
    assert meeting.ends_at == datetime(2026, 7, 10, 15, 0, tzinfo=UTC)


def test_an_unknown_zone_name_uses_its_embedded_vtimezone(world):
    zones = (
        "BEGIN:VTIMEZONE\nTZID:Contoso Plant Time\nBEGIN:STANDARD\n"
        "DTSTART:16010101T000000\nTZOFFSETFROM:+0530\nTZOFFSETTO:+0530\n"
        "END:STANDARD\nEND:VTIMEZONE\n"
    )
    body = event(
        f"DTSTART;TZID=Contoso Plant Time:20260710T100000\nATTENDEE:mailto:{ANDY}\n",
        zones=zones,
    )
    world.box.write("Sent", calendar_mail(body, "REQUEST"))
    synced(world)
    [meeting] = meetings(world)
    assert meeting.starts_at == datetime(2026, 7, 10, 4, 30, tzinfo=UTC)


@needs_ics
def test_the_corpus_vtimezone_of_a_windows_display_name(world):
    # "(UTC-03:00) Brasília" is how Outlook names a zone; no zone table knows
    # it. Its VTIMEZONE: standard time (-0300) from the third Saturday of
    # February, summer time (-0200) from the second Saturday of October.
    zones = (ICS / "timezones" / "issue_237_brazilia_standard.ics").read_text(
        encoding="utf-8"
    )
    vtimezone = zones.replace("\r\n", "\n")
    body = event(
        # A parameter value with a colon is quoted (RFC 5545 section 3.2).
        'DTSTART;TZID="(UTC-03:00) Brasília":20260710T100000\n'
        f"ATTENDEE:mailto:{ANDY}\n",
        zones=vtimezone,
    )
    world.box.write("Sent", calendar_mail(body, "REQUEST"))
    synced(world)
    [meeting] = meetings(world)
    assert meeting.starts_at == datetime(2026, 7, 10, 13, 0, tzinfo=UTC)


@needs_ics
def test_the_corpus_calendar_with_its_own_vienna_vtimezone(world):
    # 13 February 2012 10:00 in Vienna (CET, +0100) to the 17th at 18:00.
    text = (ICS / "calendars" / "timezoned.ics").read_text(encoding="utf-8")
    text = text.replace(
        "BEGIN:VEVENT",
        f"BEGIN:VEVENT\r\nORGANIZER:mailto:{TAMARA}\r\nATTENDEE:mailto:{ANDY}",
        1,
    )
    world.box.write("Sent", calendar_mail(text.replace("\r\n", "\n"), "PUBLISH"))
    synced(world)
    [meeting] = meetings(world)
    assert meeting.starts_at == datetime(2012, 2, 13, 9, 0, tzinfo=UTC)
    assert meeting.ends_at == datetime(2012, 2, 17, 17, 0, tzinfo=UTC)


def _accepted(message: EmailMessage, who: str) -> EmailMessage:
    """A reply whose ATTENDEE line says ACCEPTED."""
    for part in message.walk():
        if part.get_content_type() == "text/calendar":
            text = part.get_content().replace(
                f"ATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:{who}",
                f"ATTENDEE;PARTSTAT=ACCEPTED:mailto:{who}",
            )
            part.set_content(text, subtype="calendar", params={"method": "REPLY"})
    return message
