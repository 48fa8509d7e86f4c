"""The follow-up commands as an admin runs them: reminders list, add, remove,
run --once, and calendar export, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import icalendar
import pytest
import time_machine

from tests.conftest import CONTOSO
from tests.test_cli import Mailsync, write_config
from tests.test_followups import ANDY, DEADLINE, SENT, TEMPLATES, Mailbox

OUTBOX = "outbox"


@pytest.fixture
def admin(tmp_path: Path, store_url: str) -> Mailsync:
    box = Mailbox(tmp_path / "mail")
    box.sent(ANDY, "Pilot quote", SENT, "quote-cli@contoso.com")
    config = write_config(tmp_path / "mailsync.toml", store_url, tmp_path / "mail")
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            "[[mailboxes]]",
            f"[followups]\ntemplates = {str(TEMPLATES)!r}\n\n[[mailboxes]]",
        )
        + f'timezone = "Europe/Berlin"\noutbox = {str(tmp_path / OUTBOX)!r}\n',
        encoding="utf-8",
    )
    run = Mailsync(config)
    run("init")
    run("accounts", "import", str(CONTOSO / "accounts.csv"))
    run("contacts", "import", str(CONTOSO / "contacts.csv"))
    return run


def test_list_shows_what_is_pending_and_why(admin: Mailsync):
    with time_machine.travel(SENT + timedelta(hours=2), tick=False):
        admin("sync", "--once")
        admin("reminders", "run", "--once")
        shown = admin.json("reminders", "list")
        text = admin("reminders", "list").output

    [reminder] = shown["reminders"]
    assert reminder["rule"] == "no_reply"
    assert reminder["kind"] == "task"
    assert reminder["status"] == "pending"
    assert reminder["due"] == "2026-04-01T13:00:00Z"
    assert reminder["rep"] == "tamara@contoso.com"
    assert reminder["contact"]["name"] == "Andy Carothers"
    assert reminder["account"]["name"] == "Tailspin Toys"
    assert reminder["trigger"]["kind"] == "message"
    assert reminder["trigger"]["subject"] == "Pilot quote"
    assert reminder["why"].startswith(
        "e-mail to Andy Carothers of 2026-03-27 15:00 (CET)"
    )
    assert shown["check_ins"] == []
    assert "2026-04-01 13:00  pending" in text
    assert "why: e-mail to Andy Carothers" in text


def test_add_a_weekly_check_in_and_remove_it(admin: Mailsync):
    with time_machine.travel(datetime(2026, 3, 4, 12, 0, tzinfo=UTC), tick=False):
        added = admin(
            "reminders", "add", "--contact", ANDY, "--every", "week", "--on", "monday"
        )
        assert "check-in c1 added: every week on Monday at 09:00" in added.output
        admin("reminders", "add", "--contact", ANDY, "--cron", "0 14 * * 5")
        [weekly, friday] = admin.json("reminders", "list")["check_ins"]
    assert weekly["next"] == "2026-03-09T08:00:00Z"  # Monday 09:00 CET
    assert weekly["cron"] == "0 9 * * mon"
    assert friday["next"] == "2026-03-06T13:00:00Z"  # Friday 14:00 CET
    assert friday["cron"] == "0 14 * * fri"

    with time_machine.travel(datetime(2026, 3, 9, 8, 5, tzinfo=UTC), tick=False):
        report = admin.json("reminders", "run", "--once")
    assert report["check_ins"] == 1
    assert report["delivery"]["delivered"] == 1

    removed = admin("reminders", "remove", "c1")
    assert "check-in c1 removed" in removed.output
    assert [c["id"] for c in admin.json("reminders", "list")["check_ins"]] == ["c2"]


def test_remove_a_pending_reminder_and_bad_ids(admin: Mailsync):
    with time_machine.travel(SENT + timedelta(hours=2), tick=False):
        admin("sync", "--once")
        admin("reminders", "run", "--once")
        [reminder] = admin.json("reminders", "list")["reminders"]
        assert "removed" in admin("reminders", "remove", str(reminder["id"])).output
        assert admin.json("reminders", "list")["reminders"] == []
        with time_machine.travel(DEADLINE + timedelta(hours=1), tick=False):
            assert (
                admin.json("reminders", "run", "--once")["delivery"]["delivered"] == 0
            )
    assert "no reminder 99" in admin.fails("reminders", "remove", "99")
    assert "is removed; only a failed one is retried" in admin.fails(
        "reminders", "retry", str(reminder["id"])
    )
    assert "is not a reminder id" in admin.fails("reminders", "remove", "soon")
    assert "either --every" in admin.fails("reminders", "add", "--contact", ANDY)
    assert "weekdays" in admin.fails(
        "reminders", "add", "--contact", ANDY, "--every", "week", "--on", "someday"
    )
    assert "five fields" in admin.fails(
        "reminders", "add", "--contact", ANDY, "--cron", "0 9 *"
    )
    assert "no contact" in admin.fails(
        "reminders", "add", "--contact", "nobody@x.com", "--every", "day"
    )


def test_calendar_export_is_a_feed_of_the_pending_reminders(
    admin: Mailsync, tmp_path: Path
):
    with time_machine.travel(SENT + timedelta(hours=2), tick=False):
        admin("sync", "--once")
        admin("reminders", "run", "--once")
    out = tmp_path / "tamara.ics"
    admin("calendar", "export", "--rep", "tamara@contoso.com", "--out", str(out))

    calendar = icalendar.Calendar.from_ical(out.read_bytes())
    [todo] = calendar.walk("VTODO")
    assert todo.decoded("DUE") == DEADLINE
    assert str(todo["UID"]).startswith("no_reply:")
    [alarm] = todo.walk("VALARM")
    assert alarm.decoded("TRIGGER") == DEADLINE
    assert "Andy Carothers" in str(todo["SUMMARY"])

    printed = admin("calendar", "export", "--rep", "tamara@contoso.com").output
    assert printed.startswith("BEGIN:VCALENDAR")
    assert "unknown@contoso.com" in admin.fails(
        "calendar", "export", "--rep", "unknown@contoso.com"
    )
