"""Follow-up rules on a real history: no_reply, after_meeting, dormant_account
and check-ins, with time frozen or shifted (time-machine).

Mail is written as RFC 822 files into a mailbox tree and synced by the real
local connector and sync core, on SQLite and PostgreSQL (``store_url``).
Reminders are delivered by the local connector into an outbox: an .ics with
a VTODO and a VALARM, read back with icalendar. Expected due times are
worked out here from the rules as specified (N business days in the rep's
zone, Monday to Friday less holidays), not taken from what the code gives.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
import pytest
import time_machine
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailsync.config import Config, parse_config
from mailsync.connectors.local import LocalConnector
from mailsync.errors import UserError
from mailsync.queries import history
from mailsync.reminders.scheduler import run_once
from mailsync.reminders.views import retry
from mailsync.reminders.workdays import WorkCalendar
from mailsync.store.db import transaction
from mailsync.store.models import Activity, Reminder
from mailsync.sync import sync_mailbox
from tests.faults import Crash, CrashAfter
from tests.test_sync import import_crm

TAMARA = "tamara@contoso.com"
ANDY = "andy.carothers@tailspintoys.com"
LORRAINE = "lorraine.nay@tailspintoys.com"
KIM = "kim.abercrombie@wingtiptoys.com"
BERLIN = ZoneInfo("Europe/Berlin")
CHICAGO = ZoneInfo("America/Chicago")


# --- the mailbox on disk -------------------------------------------------------


class Mailbox:
    """A tree of message files, as the local connector reads it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0
        for folder in ("Inbox", "Sent"):
            (root / folder).mkdir(parents=True, exist_ok=True)

    def write(self, folder: str, message: EmailMessage) -> None:
        self.count += 1
        (self.root / folder / f"{self.count}_").write_bytes(message.as_bytes())

    def sent(
        self, to: str, subject: str, when: datetime, mid: str, **headers: str
    ) -> None:
        self.write("Sent", mail(TAMARA, to, subject, when, mid, **headers))

    def received(
        self, sender: str, subject: str, when: datetime, mid: str, **headers: str
    ) -> None:
        self.write("Inbox", mail(sender, TAMARA, subject, when, mid, **headers))


def mail(
    sender: str, to: str, subject: str, when: datetime, mid: str, **headers: str
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(when)
    message["Message-ID"] = f"<{mid}>"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(f"{subject}\n\nBest regards")
    return message


def invitation(
    method: str,
    uid: str,
    start: datetime,
    end: datetime,
    sequence: int = 0,
    status: str = "CONFIRMED",
    subject: str = "Warehouse scanning pilot review",
    attendees: tuple[str, ...] = (ANDY,),
    organizer: str = TAMARA,
    mid: str = "",
    recurrence_id: datetime | None = None,
) -> EmailMessage:
    """A meeting message with its text/calendar part (RFC 5546)."""
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//Contoso//Test//EN",
        f"METHOD:{method}",
        "BEGIN:VEVENT",
        f"UID:{uid}",
        "DTSTAMP:20260301T090000Z",
        f"SEQUENCE:{sequence}",
        *([f"RECURRENCE-ID:{recurrence_id:%Y%m%dT%H%M%SZ}"] if recurrence_id else []),
        f"DTSTART:{start:%Y%m%dT%H%M%SZ}",
        f"DTEND:{end:%Y%m%dT%H%M%SZ}",
        f"SUMMARY:{subject}",
        f"STATUS:{status}",
        f"ORGANIZER:mailto:{organizer}",
        *(f"ATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:{a}" for a in attendees),
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    sender = organizer if method != "REPLY" else attendees[0]
    to = attendees[0] if method != "REPLY" else organizer
    message = mail(
        sender, to, subject, start - timedelta(days=3), mid or f"{uid}.{method}"
    )
    message.add_alternative(
        "\r\n".join(lines) + "\r\n", subtype="calendar", params={"method": method}
    )
    return message


# --- fixtures ------------------------------------------------------------------


def followups_config(
    url: str, root: Path, zone: str = "Europe/Berlin", **followups: Any
) -> Config:
    return parse_config(
        {
            "database": {"url": url},
            "organisation": {"internal_domains": ["contoso.com"]},
            "followups": {"timezone": "UTC", "templates": str(TEMPLATES), **followups},
            "mailboxes": [
                {
                    "address": TAMARA,
                    "rep": "Tamara Johnston",
                    "kind": "local",
                    "path": str(root / "mail"),
                    "outbox": str(root / "outbox"),
                    "timezone": zone,
                }
            ],
        }
    )


TEMPLATES = Path(__file__).resolve().parent.parent / "config" / "templates"


class World:
    """A rep's mailbox, the CRM, the database and the outbox."""

    def __init__(
        self, factory: sessionmaker[Session], url: str, root: Path, **settings: Any
    ) -> None:
        self.factory, self.url, self.root = factory, url, root
        self.box = Mailbox(root / "mail")
        self.outbox = root / "outbox"
        self.configure(**settings)
        import_crm(factory, self.config)

    def configure(self, zone: str = "Europe/Berlin", **followups: Any) -> None:
        self.config = followups_config(self.url, self.root, zone, **followups)

    def sync(self) -> None:
        report = sync_mailbox(self.factory, self.config, self.config.mailboxes[0])
        assert report.error is None, report.error

    def run(self) -> Any:
        return run_once(self.factory, self.config)

    def reminders(self) -> list[Reminder]:
        with self.factory() as session:
            return list(session.scalars(select(Reminder).order_by(Reminder.id)))

    def reminder(self, rule: str) -> Reminder:
        [found] = [r for r in self.reminders() if r.rule == rule]
        return found

    def tasks(self) -> list[icalendar.Todo]:
        found = []
        for path in sorted(self.outbox.glob("*.ics")):
            calendar = icalendar.Calendar.from_ical(path.read_bytes())
            found.extend(calendar.walk("VTODO"))
        return found

    def activities(self, kind: str) -> list[Activity]:
        with self.factory() as session:
            return list(session.scalars(select(Activity).where(Activity.kind == kind)))


@pytest.fixture
def world(
    factory: sessionmaker[Session], store_url: str, tmp_path: Path
) -> Iterator[World]:
    yield World(factory, store_url, tmp_path)


def at(zone: ZoneInfo, *parts: int) -> datetime:
    return datetime(*parts, tzinfo=zone)  # type: ignore[misc]


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


# --- business days -------------------------------------------------------------


def test_business_days_skip_weekends_and_holidays():
    calendar = WorkCalendar.of(
        BERLIN,
        [date(2026, 12, 24), date(2026, 12, 25), date(2026, 12, 31), date(2027, 1, 1)],
        ["monday", "tuesday", "wednesday", "thursday", "friday"],
    )
    tuesday = at(BERLIN, 2026, 12, 22, 10, 0)
    # Wed 23 is the first; 24 and 25 are holidays, 26 and 27 a weekend; Mon 28
    # the second, Tue 29 the third.
    assert calendar.add_workdays(tuesday, 3) == at(BERLIN, 2026, 12, 29, 10, 0)
    # Wed 30 is the fourth, 31 and 1 holidays, 2 and 3 a weekend: Mon 4.
    assert calendar.add_workdays(tuesday, 5) == at(BERLIN, 2027, 1, 4, 10, 0)
    # Sent on a Saturday: Monday is the first business day after it.
    assert calendar.add_workdays(at(BERLIN, 2026, 11, 7, 11, 0), 1) == at(
        BERLIN, 2026, 11, 9, 11, 0
    )
    assert not calendar.is_workday(date(2026, 12, 24))
    assert calendar.next_workday_from(at(BERLIN, 2026, 12, 24, 9, 0)) == at(
        BERLIN, 2026, 12, 28, 9, 0
    )


def test_business_days_keep_the_wall_time_across_daylight_saving():
    berlin = WorkCalendar.of(
        BERLIN, [], ["monday", "tuesday", "wednesday", "thursday", "friday"]
    )
    # Friday 27 March 2026 15:00 CET is 14:00 UTC; summer time starts on
    # Sunday the 29th, so Wednesday 1 April 15:00 CEST is 13:00 UTC.
    assert berlin.add_workdays(utc(2026, 3, 27, 14, 0), 3) == utc(2026, 4, 1, 13, 0)
    chicago = WorkCalendar.of(
        CHICAGO, [], ["monday", "tuesday", "wednesday", "thursday", "friday"]
    )
    # Friday 30 October 2026 16:00 CDT is 21:00 UTC; standard time is back on
    # Sunday 1 November, so Tuesday 3 November 16:00 CST is 22:00 UTC.
    assert chicago.add_workdays(utc(2026, 10, 30, 21, 0), 2) == utc(2026, 11, 3, 22, 0)


# --- no_reply --------------------------------------------------------------------

SENT = utc(2026, 3, 27, 14, 0)  # Friday 15:00 in Berlin
DEADLINE = utc(2026, 4, 1, 13, 0)  # three business days later, 15:00 CEST


def send_quote(world: World) -> None:
    world.box.sent(ANDY, "Pilot quote", SENT, "quote-1@contoso.com")


def test_no_reply_is_due_three_business_days_later_in_the_reps_zone(world):
    send_quote(world)
    with time_machine.travel(SENT + timedelta(hours=1), tick=False):
        world.sync()
        report = world.run()

    assert report.evaluation.created == 1
    reminder = world.reminder("no_reply")
    assert reminder.status == "pending"
    assert reminder.due_at == DEADLINE
    assert "Andy Carothers" in reminder.subject
    assert "Pilot quote" in reminder.subject


def test_a_reply_one_minute_before_the_deadline_cancels_the_reminder(world):
    send_quote(world)
    with time_machine.travel(SENT + timedelta(hours=1), tick=False):
        world.sync()
        world.run()
    reply = DEADLINE - timedelta(minutes=1)
    world.box.received(
        ANDY,
        "Re: Pilot quote",
        reply,
        "re-quote-1@tailspintoys.com",
        In_Reply_To="<quote-1@contoso.com>",
    )
    with time_machine.travel(reply + timedelta(seconds=20), tick=False):
        world.sync()
    # Cancelled by the sync itself, before any run of the rules.
    assert world.reminder("no_reply").status == "cancelled"
    assert "Andy Carothers wrote" in (world.reminder("no_reply").note or "")

    with time_machine.travel(DEADLINE + timedelta(hours=1), tick=False):
        report = world.run()
    assert report.delivery.delivered == 0
    assert world.tasks() == []


def test_a_reply_in_the_thread_from_someone_else_also_cancels(world):
    send_quote(world)
    with time_machine.travel(SENT + timedelta(hours=1), tick=False):
        world.sync()
        world.run()
    world.box.received(
        "procurement@tailspintoys.com",
        "Re: Pilot quote",
        SENT + timedelta(days=1),
        "re-2@tailspintoys.com",
        References="<quote-1@contoso.com>",
    )
    with time_machine.travel(SENT + timedelta(days=2), tick=False):
        world.sync()
        world.run()
    assert [r.status for r in world.reminders()] == ["cancelled"]


def test_a_reply_before_any_run_makes_no_reminder_at_all(world):
    send_quote(world)
    world.box.received(
        ANDY, "Re: Pilot quote", SENT + timedelta(hours=2), "re-3@tailspintoys.com"
    )
    with time_machine.travel(SENT + timedelta(days=1), tick=False):
        world.sync()
        world.run()
    assert world.reminders() == []


def test_no_reply_delivers_one_task_and_records_it_once(world):
    send_quote(world)
    with time_machine.travel(SENT + timedelta(hours=1), tick=False):
        world.sync()
        world.run()
    with time_machine.travel(DEADLINE + timedelta(minutes=1), tick=False):
        report = world.run()
        again = world.run()

    assert report.delivery.delivered == 1
    assert again.delivery.delivered == 0
    [task] = world.tasks()
    assert task.decoded("DUE") == DEADLINE
    [alarm] = task.walk("VALARM")
    assert str(alarm["ACTION"]) == "DISPLAY"
    assert alarm.decoded("TRIGGER") == DEADLINE
    assert "Pilot quote" in str(task["SUMMARY"])

    reminder = world.reminder("no_reply")
    assert reminder.status == "delivered"
    [activity] = world.activities("task")
    assert activity.id == reminder.activity_id
    assert activity.due_at == DEADLINE
    with world.factory() as session:
        from mailsync.store.directory import account_by_name, contact_by_address

        andy = contact_by_address(session, ANDY)
        tailspin = account_by_name(session, "Tailspin Toys")
        assert andy is not None and tailspin is not None
        andy_kinds = [v.kind for v in history(session, "contact", andy.id)]
        account_kinds = [v.kind for v in history(session, "account", tailspin.id)]
    assert andy_kinds == ["message", "task"]
    assert account_kinds == ["message", "task"]


def test_a_later_email_of_ours_in_the_thread_takes_over(world):
    send_quote(world)
    world.box.sent(
        ANDY,
        "Re: Pilot quote",
        SENT + timedelta(days=1),
        "quote-2@contoso.com",
        In_Reply_To="<quote-1@contoso.com>",
    )
    with time_machine.travel(SENT + timedelta(days=1, hours=1), tick=False):
        world.sync()
        world.run()
    rows = {r.key: r.status for r in world.reminders()}
    assert sorted(rows.values()) == ["pending"]
    [pending] = [r for r in world.reminders() if r.status == "pending"]
    # Saturday 28 March 15:00 plus three business days: Wednesday 1 April.
    assert pending.due_at == DEADLINE


def test_holidays_and_weekends_move_the_deadline(world):
    world.configure(holidays=["2026-12-24", "2026-12-25", "2026-12-31"])
    sent = at(BERLIN, 2026, 12, 22, 10, 0)
    world.box.sent(LORRAINE, "Budget for 2027", sent, "budget@contoso.com")
    with time_machine.travel(sent + timedelta(minutes=5), tick=False):
        world.sync()
        world.run()
    assert world.reminder("no_reply").due_at == at(BERLIN, 2026, 12, 29, 10, 0)


def test_daylight_saving_in_chicago(world):
    world.configure(zone="America/Chicago", no_reply={"business_days": 2})
    sent = utc(2026, 10, 30, 21, 0)  # Friday 16:00 CDT
    world.box.sent(ANDY, "Rollout plan", sent, "rollout@contoso.com")
    with time_machine.travel(sent + timedelta(minutes=5), tick=False):
        world.sync()
        world.run()
    assert world.reminder("no_reply").due_at == utc(2026, 11, 3, 22, 0)


def test_old_mail_of_a_backfill_makes_no_reminder(world):
    world.box.sent(ANDY, "Old thread", SENT - timedelta(days=40), "old@contoso.com")
    with time_machine.travel(SENT, tick=False):
        world.sync()
        world.run()
    assert world.reminders() == []


def test_switching_the_rule_off_cancels_what_is_pending(world):
    send_quote(world)
    with time_machine.travel(SENT + timedelta(hours=1), tick=False):
        world.sync()
        world.run()
    world.configure(no_reply={"enabled": False})
    with time_machine.travel(DEADLINE + timedelta(hours=1), tick=False):
        report = world.run()
    assert report.delivery.delivered == 0
    reminder = world.reminder("no_reply")
    assert reminder.status == "cancelled"
    assert reminder.note == "the rule no_reply is switched off"


# --- idempotence: resync, crash ------------------------------------------------------


def test_a_resync_from_nothing_makes_no_second_reminder(world):
    send_quote(world)
    with time_machine.travel(SENT + timedelta(hours=1), tick=False):
        world.sync()
        world.run()
    with transaction(world.factory) as session:
        from mailsync.store.models import Cursor

        for cursor in session.scalars(select(Cursor)):
            session.delete(cursor)
    with time_machine.travel(DEADLINE + timedelta(minutes=1), tick=False):
        world.sync()
        world.run()
        world.sync()
        world.run()
    assert [(r.rule, r.status) for r in world.reminders()] == [
        ("no_reply", "delivered")
    ]
    assert len(world.tasks()) == 1
    assert len(world.activities("task")) == 1


def test_a_crash_in_the_middle_of_a_sync_makes_no_second_reminder(world):
    for n in range(6):
        world.box.sent(
            ANDY, f"Quote {n}", SENT + timedelta(minutes=n), f"q{n}@contoso.com"
        )
    config = world.config.model_copy(
        update={
            "mailboxes": [
                world.config.mailboxes[0].model_copy(update={"batch_size": 2})
            ]
        }
    )
    mailbox = config.mailboxes[0]
    with time_machine.travel(SENT + timedelta(hours=1), tick=False):
        local = LocalConnector(mailbox.path, batch_size=2, outbox=world.outbox)
        with pytest.raises(Crash):
            sync_mailbox(world.factory, config, mailbox, CrashAfter(local, 1))
        run_once(world.factory, config)
        sync_mailbox(world.factory, config, mailbox)
        run_once(world.factory, config)
        run_once(world.factory, config)
    keys = [r.key for r in world.reminders()]
    assert len(keys) == 6 == len(set(keys))


class CrashWhileDelivering:
    """A real local connector whose process dies right after it wrote the
    task's file, before the delivery is recorded."""

    def __init__(self, inner: LocalConnector) -> None:
        self.inner = inner

    def save_task(self, task: Any) -> Any:
        self.inner.save_task(task)
        raise Crash("the process died after writing the task")

    def save_letter(self, letter: Any) -> Any:
        return self.inner.save_letter(letter)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_crash_while_delivering_never_delivers_twice(world):
    send_quote(world)
    with time_machine.travel(SENT + timedelta(hours=1), tick=False):
        world.sync()
        world.run()
    mailbox = world.config.mailboxes[0]
    dying = CrashWhileDelivering(LocalConnector(mailbox.path, outbox=world.outbox))
    with time_machine.travel(DEADLINE + timedelta(minutes=1), tick=False):
        with pytest.raises(Crash):
            run_once(world.factory, world.config, connectors=lambda m: dying)
    assert world.reminder("no_reply").status == "delivering"

    # Restarted a quarter of an hour later: it is not delivered again.
    with time_machine.travel(DEADLINE + timedelta(minutes=16), tick=False):
        report = world.run()
        world.run()
    assert report.delivery.interrupted == 1
    assert report.delivery.delivered == 0
    reminder = world.reminder("no_reply")
    assert reminder.status == "failed"
    assert "interrupted" in (reminder.note or "")
    assert len(world.tasks()) == 1
    assert world.activities("task") == []

    # Retried only by an admin who looked in the mailbox and says so.
    with transaction(world.factory) as session:
        with pytest.raises(UserError, match="may be in the rep's mailbox already"):
            retry(session, str(reminder.id))
    with transaction(world.factory) as session:
        retry(session, str(reminder.id), force=True)
    with time_machine.travel(DEADLINE + timedelta(minutes=20), tick=False):
        assert world.run().delivery.delivered == 1
    assert world.reminder("no_reply").status == "delivered"
    assert len(world.activities("task")) == 1


# --- after_meeting ---------------------------------------------------------------

START, END = utc(2026, 3, 10, 15, 0), utc(2026, 3, 10, 16, 0)  # Tuesday


def invite(world: World, **changes: Any) -> None:
    values: dict[str, Any] = {
        "uid": "pilot-review@contoso.com",
        "start": START,
        "end": END,
    }
    values.update(changes)
    method = values.pop("method", "REQUEST")
    world.box.write("Sent", invitation(method, **values))


def test_after_a_meeting_a_reminder_and_a_letter_are_due_the_next_business_day(world):
    invite(world)
    with time_machine.travel(START - timedelta(days=2), tick=False):
        world.sync()
        world.run()
    rows = {r.kind: r for r in world.reminders()}
    assert set(rows) == {"task", "letter"}
    # One business day after Tuesday 17:00 in Berlin: Wednesday 17:00.
    assert rows["task"].due_at == rows["letter"].due_at == utc(2026, 3, 11, 16, 0)
    assert rows["letter"].template == "sales_call_follow_up"
    assert all(r.status == "pending" for r in rows.values())


def test_a_cancelled_meeting_drops_its_pending_follow_ups(world):
    invite(world)
    with time_machine.travel(START - timedelta(days=2), tick=False):
        world.sync()
        world.run()
    invite(world, method="CANCEL", sequence=1, status="CANCELLED")
    with time_machine.travel(START - timedelta(days=1), tick=False):
        world.sync()
    assert [(r.kind, r.status) for r in world.reminders()] == [
        ("task", "cancelled"),
        ("letter", "cancelled"),
    ]
    assert {r.note for r in world.reminders()} == {"the meeting was cancelled"}
    with time_machine.travel(END + timedelta(days=2), tick=False):
        report = world.run()
    assert report.delivery.delivered == 0
    assert list(world.outbox.glob("*")) == []


def test_status_cancelled_in_a_request_also_drops_them(world):
    invite(world)
    with time_machine.travel(START - timedelta(days=2), tick=False):
        world.sync()
        world.run()
    invite(world, sequence=2, status="CANCELLED", mid="cancelled-request@contoso.com")
    with time_machine.travel(START - timedelta(days=1), tick=False):
        world.sync()
    assert {r.status for r in world.reminders()} == {"cancelled"}


def test_a_moved_meeting_moves_its_follow_ups(world):
    invite(world)
    with time_machine.travel(START - timedelta(days=5), tick=False):
        world.sync()
        world.run()
    later = START + timedelta(days=1)
    invite(
        world,
        start=later,
        end=later + timedelta(hours=1),
        sequence=1,
        mid="moved@contoso.com",
    )
    with time_machine.travel(START - timedelta(days=4), tick=False):
        world.sync()
        report = world.run()
    assert report.evaluation.updated == 2
    # Wednesday 17:00 plus one business day: Thursday 12 March.
    assert {r.due_at for r in world.reminders()} == {utc(2026, 3, 12, 16, 0)}


def test_the_letter_is_delivered_filled_beside_its_task(world):
    from docx import Document

    invite(world)
    with time_machine.travel(START - timedelta(days=2), tick=False):
        world.sync()
        world.run()
    with time_machine.travel(utc(2026, 3, 11, 16, 5), tick=False):
        report = world.run()
    assert report.delivery.delivered == 2
    [docx] = list(world.outbox.glob("*.docx"))
    document = Document(str(docx))
    text = "\n".join(p.text for p in document.paragraphs)
    assert "{{" not in text
    assert "Dear Andy," in text
    # 15:00 UTC is 16:00 in Berlin, on 10 March.
    assert "meet with me on March 10, 2026" in text
    assert "Our conversation about Warehouse scanning pilot review" in text
    assert "Tailspin Toys" in text
    headings = [p.text for p in document.paragraphs if p.style.name == "Heading 2"]
    assert headings == [
        "Needs",
        "Reasons",
        "Buying Vision",
        "Agreement to Explore",
        "Access to the Decision Maker",
        "Proof Step",
    ]
    [eml] = list(world.outbox.glob("*.eml"))
    assert b"X-Unsent: 1" in eml.read_bytes()
    [letter] = world.activities("letter")
    assert letter.direction == "outbound"
    kinds = sorted(
        a.kind for a in world.activities("task") + world.activities("letter")
    )
    assert kinds == ["letter", "task"]


def test_a_letter_with_a_placeholder_that_cannot_be_filled_is_not_delivered(
    world, tmp_path
):
    from docx import Document

    templates = tmp_path / "templates"
    templates.mkdir()
    document = Document()
    document.add_paragraph("Dear {{contact.first_name}}, at {{account.fax}}")
    document.save(str(templates / "sales_call_follow_up.docx"))
    world.configure(templates=str(templates))
    invite(world)
    with time_machine.travel(START - timedelta(days=2), tick=False):
        world.sync()
        world.run()
    with time_machine.travel(utc(2026, 3, 11, 16, 5), tick=False):
        report = world.run()
    assert report.delivery.delivered == 1  # the task
    assert report.delivery.failed == 1
    letter = next(r for r in world.reminders() if r.kind == "letter")
    assert letter.status == "failed"
    assert "{{account.fax}}" in (letter.last_error or "")
    assert "sales_call_follow_up.docx" in (letter.last_error or "")
    assert list(world.outbox.glob("*.docx")) == []
    assert world.activities("letter") == []

    # The admin mends the template and retries the letter: it goes at the
    # next run, filled, and the task is not delivered again.
    document = Document()
    document.add_paragraph("Dear {{contact.first_name}}, at {{account.name}}")
    document.save(str(templates / "sales_call_follow_up.docx"))
    with transaction(world.factory) as session:
        with pytest.raises(UserError, match="is delivered; only a failed one"):
            retry(
                session, str(next(r.id for r in world.reminders() if r.kind == "task"))
            )
        said = retry(session, str(letter.id))
    assert said.startswith(f"reminder {letter.id} will be delivered at the next run")
    with time_machine.travel(utc(2026, 3, 11, 16, 20), tick=False):
        report = world.run()
    assert (report.delivery.delivered, report.delivery.failed) == (1, 0)
    [docx] = list(world.outbox.glob("*.docx"))
    text = "\n".join(p.text for p in Document(str(docx)).paragraphs)
    assert text == "Dear Andy, at Tailspin Toys"
    assert len(world.activities("letter")) == 1
    assert len(world.tasks()) == 1


def weekly_status_call(world: World) -> None:
    """Two occurrences of a weekly call, each sent with its RECURRENCE-ID."""
    for week in (0, 1):
        start = START + timedelta(weeks=week)
        world.box.write(
            "Sent",
            invitation(
                "REQUEST",
                "status-call@contoso.com",
                start,
                start + timedelta(minutes=30),
                subject="Weekly status call",
                recurrence_id=start,
                mid=f"status-{week}@contoso.com",
            ),
        )


def test_a_weekly_series_makes_no_letter_each_week_unless_asked(world):
    weekly_status_call(world)
    with time_machine.travel(utc(2026, 3, 1), tick=False):
        world.sync()
        world.run()
    assert world.reminders() == []

    world.configure(after_meeting={"recurring": True, "letter": ""})
    with time_machine.travel(utc(2026, 3, 1), tick=False):
        world.run()
    assert [(r.rule, r.kind) for r in world.reminders()] == [
        ("after_meeting", "task"),
        ("after_meeting", "task"),
    ]


# --- dormant_account -------------------------------------------------------------


def test_a_dormant_account_is_reminded_once_a_period(world):
    last = utc(2026, 1, 5, 10, 0)
    world.box.received(KIM, "Thanks for the visit", last, "kim-1@wingtiptoys.com")
    with time_machine.travel(last + timedelta(hours=1), tick=False):
        world.sync()
        assert world.run().evaluation.created == 0

    # 5 January + 90 days is Sunday 5 April: the reminder is for Monday 09:00.
    with time_machine.travel(utc(2026, 4, 6, 12, 0), tick=False):
        first = world.run()
        second = world.run()
    assert first.evaluation.created == 1
    assert first.delivery.delivered == 1
    assert second.evaluation.created == 0
    dormant = world.reminder("dormant_account")
    assert dormant.due_at == at(BERLIN, 2026, 4, 6, 9, 0)
    assert "Wingtip Toys" in dormant.subject

    with time_machine.travel(utc(2026, 5, 20, 12, 0), tick=False):
        assert world.run().evaluation.created == 0
    with time_machine.travel(utc(2026, 7, 6, 12, 0), tick=False):  # 182 days
        assert world.run().evaluation.created == 1
    assert len(world.tasks()) == 2

    # New mail starts a new spell: nothing until 90 days after it.
    world.box.received(
        KIM, "Back again", utc(2026, 7, 7, 9, 0), "kim-2@wingtiptoys.com"
    )
    with time_machine.travel(utc(2026, 7, 7, 10, 0), tick=False):
        world.sync()
        assert world.run().evaluation.created == 0
    with time_machine.travel(utc(2026, 10, 6, 10, 0), tick=False):
        assert world.run().evaluation.created == 1


def test_a_dormant_account_found_by_a_back_fill_is_due_today_not_overdue(world):
    last = utc(2026, 1, 5, 10, 0)
    world.box.received(KIM, "Thanks for the visit", last, "kim-1@wingtiptoys.com")
    # The mailbox is first synced on Monday 1 June, at 12:30 there: 147 days
    # of silence, which reached 90 days on Sunday 5 April, unseen.
    with time_machine.travel(utc(2026, 6, 1, 10, 30), tick=False):
        world.sync()
        report = world.run()
    assert report.evaluation.created == 1
    dormant = world.reminder("dormant_account")
    assert dormant.due_at == at(BERLIN, 2026, 6, 1, 9, 0)  # today, 09:00 there
    assert dormant.subject == "Call Wingtip Toys: no contact for 147 days"


# --- check-ins -------------------------------------------------------------------


def add_check_in(world: World, **schedule: str) -> int:
    from mailsync.reminders import checkins
    from mailsync.reminders.views import add_check_in as add

    if "cron" in schedule:
        made = checkins.from_cron(schedule["cron"])
    else:
        made = checkins.from_every(
            schedule["every"], schedule.get("on"), schedule.get("at", "09:00")
        )
    with transaction(world.factory) as session:
        return add(session, world.config, ANDY, made, world.config.mailboxes[0]).id


def test_a_weekly_check_in_gives_one_reminder_a_turn(world):
    world.configure(zone="America/Chicago")
    with time_machine.travel(utc(2026, 3, 4, 12, 0), tick=False):  # a Wednesday
        add_check_in(world, every="week", on="monday")
    # Monday 9 March 09:00 CDT (summer time began on the 8th) is 14:00 UTC.
    with time_machine.travel(utc(2026, 3, 9, 14, 10), tick=False):
        report = world.run()
        again = world.run()
    assert (report.check_ins, report.delivery.delivered) == (1, 1)
    assert (again.check_ins, again.delivery.delivered) == (0, 0)
    [turn] = world.reminders()
    assert turn.due_at == utc(2026, 3, 9, 14, 0)
    # Monday 2 March 09:00 CST was 15:00 UTC: before the change, an hour later.
    with time_machine.travel(utc(2026, 3, 16, 14, 5), tick=False):
        assert world.run().check_ins == 1
    assert sorted(t.decoded("DUE") for t in world.tasks()) == [
        utc(2026, 3, 9, 14, 0),
        utc(2026, 3, 16, 14, 0),
    ]


def test_a_check_in_by_cron_and_a_turn_missed_beyond_the_grace_time(world):
    world.configure(misfire_grace_minutes=30)
    with time_machine.travel(utc(2026, 3, 2, 6, 0), tick=False):
        add_check_in(world, cron="30 8 * * 1-5")  # weekdays 08:30 in Berlin
    # Tuesday 3 March 08:30 CET is 07:30 UTC; at 07:45 it is within the grace.
    with time_machine.travel(utc(2026, 3, 3, 7, 45), tick=False):
        assert world.run().check_ins == 1
    # Wednesday's turn at 07:30 UTC, and the run only at 09:00: missed.
    with time_machine.travel(utc(2026, 3, 4, 9, 0), tick=False):
        report = world.run()
    assert report.check_ins == 0
    assert [r.due_at for r in world.reminders()] == [utc(2026, 3, 3, 7, 30)]


def test_reminders_list_says_why(world):
    from mailsync.reminders.views import listing

    send_quote(world)
    with time_machine.travel(SENT + timedelta(hours=1), tick=False):
        world.sync()
        world.run()
        add_check_in(world, every="week", on="monday")
        with world.factory() as session:
            shown = listing(session, world.config).as_json()
    json.dumps(shown)
    [entry] = shown["reminders"]
    assert entry["rule"] == "no_reply"
    assert entry["due"] == "2026-04-01T13:00:00Z"
    assert entry["contact"]["name"] == "Andy Carothers"
    assert entry["trigger"]["subject"] == "Pilot quote"
    assert "no reply in 3 business days" in entry["why"]
    [check_in] = shown["check_ins"]
    # The first Monday after Friday 27 March, 09:00 CEST.
    assert check_in["next"] == "2026-03-30T07:00:00Z"
