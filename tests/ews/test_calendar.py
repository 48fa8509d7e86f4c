"""The Calendar folder through the EWS connector, against the EWS simulator.

Expected values come from the EWS reference: a RecurringMaster carries its
Recurrence (pattern and range), ModifiedOccurrences (each with its ItemId,
Start, End and OriginalStart) and DeletedOccurrences (the start of each
deleted occurrence); attendees carry a ResponseType (Unknown, Organizer,
Tentative, Accept, Decline, NoResponseReceived). Local times are worked out
with zoneinfo, independently of the connector.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from exchangelib.protocol import close_connections
from sqlalchemy import select

from mailsync.config import parse_config
from mailsync.connectors.ews import EwsConnector
from mailsync.items import FolderRole, Item, ItemKind, Meeting, Participant, Role
from mailsync.store.models import Activity, ParticipantRow, Source
from mailsync.sync import folder_wanted, sync_mailbox
from tests.ews.conftest import REP, SERVICE_PASSWORD
from tests.ews.simulator import (
    Address,
    Attendee,
    EwsSimulator,
    MeetingKind,
    Occurrence,
    Recurrence,
    SimCalendarItem,
    SimMailbox,
    SimMeetingMessage,
)
from tests.ews.test_connector import connect, settings

BERLIN = ZoneInfo("Europe/Berlin")
SYDNEY = ZoneInfo("Australia/Sydney")
WEST_EUROPE = "W. Europe Standard Time"
TAMARA = Address(REP, "Tamara Johnston")
ANDY = Address("andy.carothers@tailspintoys.com", "Andy Carothers")
LORRAINE = Address("lorraine.nay@tailspintoys.com", "Lorraine Nay")
BEN = Address("ben.miller@fabrikam.com", "Ben Miller")
SERIES_UID = "040000008200E00074C5B7101A82E00800000000A1B2C3D4E5F6"
SINGLE_UID = "040000008200E00074C5B7101A82E0080000000011223344"
# Far enough back that the fixed 2026 dates below are inside the window.
BACKFILL = 3650


@pytest.fixture(autouse=True)
def _close_sessions() -> Iterator[None]:
    yield
    close_connections()


def berlin(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """A wall-clock time in Berlin in 2026, as the UTC instant EWS sends."""
    return datetime(2026, month, day, hour, minute, tzinfo=BERLIN).astimezone(UTC)


def calendar_items(connector: EwsConnector) -> list[Item]:
    calendar = next(f for f in connector.folders() if f.role is FolderRole.CALENDAR)
    return [i for b in connector.changes(calendar, None) for i in b.items]


def weekly_check_in(**changes: Any) -> SimCalendarItem:
    """Six Mondays at 09:00 Berlin time from 2 March 2026, across the change
    to summer time on 29 March; 16 March deleted, 23 March moved to Tuesday."""
    first = berlin(3, 2, 9)
    values: dict[str, Any] = {
        "subject": "Weekly check-in",
        "uid": SERIES_UID,
        "start": first,
        "end": first + timedelta(minutes=30),
        "start_timezone": WEST_EUROPE,
        "location": "Teams",
        "organizer": ANDY,
        "required": (Attendee(ANDY, "Organizer"), Attendee(TAMARA, "Accept")),
        "optional": (Attendee(LORRAINE, "Tentative"),),
        "recurrence": Recurrence(
            start=date(2026, 3, 2), days_of_week=("Monday",), count=6
        ),
        "deleted_occurrences": (berlin(3, 16, 9),),
        "modified_occurrences": (
            Occurrence(
                original_start=berlin(3, 23, 9),
                start=berlin(3, 24, 10),
                end=berlin(3, 24, 10, 30),
                subject="Weekly check-in (Tuesday)",
                required=(Attendee(TAMARA, "Accept"),),
                optional=(),
            ),
        ),
    }
    values.update(changes)
    return SimCalendarItem(**values)


# --- folders -----------------------------------------------------------------


def test_the_calendar_and_tasks_folders_are_listed_and_can_be_excluded(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    rep_mailbox.add_folder(
        "Birthdays", parent="calendar", folder_class="IPF.Appointment"
    )
    rep_mailbox.add_folder("Someday", parent="tasks", folder_class="IPF.Task")
    connector, _ = connect(ews)

    folders = {f.name: f.role for f in connector.folders()}
    assert folders["Calendar"] is FolderRole.CALENDAR
    assert folders["Tasks"] is FolderRole.TASKS
    assert folders["Inbox"] is FolderRole.INBOX
    assert not {"Calendar/Birthdays", "Tasks/Someday", "Contacts"} & set(folders)

    calendar = next(f for f in connector.folders() if f.name == "Calendar")
    tasks = next(f for f in connector.folders() if f.name == "Tasks")
    default = settings(ews)
    assert folder_wanted(calendar, default) and folder_wanted(tasks, default)
    excluded = settings(
        ews, exclude_folders=[*default.exclude_folders, "Calendar", "Tasks"]
    )
    assert not folder_wanted(calendar, excluded)
    assert not folder_wanted(tasks, excluded)


# --- single meetings ---------------------------------------------------------


def test_a_single_meeting_with_two_attendees(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    start = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
    stored = rep_mailbox.add(
        SimCalendarItem(
            subject="Pilot review",
            uid=SINGLE_UID,
            start=start,
            end=start + timedelta(hours=1),
            location="Joliet DC",
            organizer=TAMARA,
            required=(
                Attendee(TAMARA, "Organizer"),
                Attendee(ANDY, "Accept"),
                Attendee(BEN, "Unknown"),
            ),
            optional=(Attendee(LORRAINE, "NoResponseReceived"),),
            categories=("Tailspin",),
            sensitivity="Confidential",
            sequence=2,
        ),
        "calendar",
    )
    connector, _ = connect(ews, backfill_days=BACKFILL)

    [item] = calendar_items(connector)
    assert item.kind is ItemKind.MEETING
    assert item.provider_id == stored.item_id
    assert item.change_key == stored.change_key
    assert item.subject == "Pilot review"
    assert item.occurred_at == start
    assert item.meeting == Meeting(
        uid=SINGLE_UID,
        method=None,
        sequence=2,
        start=start,
        end=start + timedelta(hours=1),
        status="CONFIRMED",
        recurrence_id=None,
        location="Joliet DC",
    )
    assert item.participants == [
        Participant(REP, "Tamara Johnston", Role.ORGANIZER),
        Participant(ANDY.email, "Andy Carothers", Role.ATTENDEE, "ACCEPTED"),
        Participant(BEN.email, "Ben Miller", Role.ATTENDEE, None),
        Participant(LORRAINE.email, "Lorraine Nay", Role.ATTENDEE, "NEEDS-ACTION"),
    ]
    assert item.categories == ("Tailspin",)
    assert item.sensitivity == "company-confidential"


def test_a_cancelled_meeting_has_status_cancelled(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    start = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
    rep_mailbox.add(
        SimCalendarItem(
            subject="Canceled: Pilot review",
            uid=SINGLE_UID,
            start=start,
            end=start + timedelta(hours=1),
            organizer=ANDY,
            required=(Attendee(TAMARA, "Accept"),),
            is_cancelled=True,
        ),
        "calendar",
    )
    connector, _ = connect(ews, backfill_days=BACKFILL)
    [item] = calendar_items(connector)
    assert item.meeting is not None and item.meeting.status == "CANCELLED"


@pytest.mark.filterwarnings("ignore:Cannot convert value")
def test_an_all_day_event_stays_a_date(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    # Exchange keeps an all-day event as midnight to midnight in the zone it
    # was made in, sent as UTC instants: 10 March in Berlin is 23:00 UTC on 9
    # March. A zone exchangelib does not know is read by the nearest midnight.
    for uid, zone in (
        ("allday-berlin", WEST_EUROPE),
        ("allday-custom", "Customized Time Zone"),
    ):
        rep_mailbox.add(
            SimCalendarItem(
                subject="Trade fair",
                uid=uid,
                start=berlin(3, 10, 0),
                end=berlin(3, 11, 0),
                is_all_day=True,
                start_timezone=zone,
                organizer=TAMARA,
                required=(Attendee(ANDY, "Accept"),),
            ),
            "calendar",
        )
    rep_mailbox.add(
        SimCalendarItem(
            subject="Offsite",
            uid="allday-utc",
            start=datetime(2026, 3, 12, tzinfo=UTC),
            end=datetime(2026, 3, 14, tzinfo=UTC),
            is_all_day=True,
            organizer=TAMARA,
            required=(Attendee(ANDY, "Accept"),),
        ),
        "calendar",
    )
    connector, _ = connect(ews, backfill_days=BACKFILL)

    meetings = {
        i.meeting.uid: (i.meeting.start, i.meeting.end)
        for i in calendar_items(connector)
        if i.meeting is not None
    }
    # The end is exclusive, as an iCalendar DTEND;VALUE=DATE.
    assert meetings == {
        "allday-berlin": (date(2026, 3, 10), date(2026, 3, 11)),
        "allday-custom": (date(2026, 3, 10), date(2026, 3, 11)),
        "allday-utc": (date(2026, 3, 12), date(2026, 3, 14)),
    }


# --- recurring series --------------------------------------------------------


def test_a_weekly_series_gives_its_occurrences(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    master = rep_mailbox.add(weekly_check_in(), "calendar")
    connector, _ = connect(ews, backfill_days=BACKFILL)
    ews.reset_counts()

    items = {i.provider_id: i for i in calendar_items(connector)}
    assert ews.requests["GetItem"] == 2  # the master, then its exception

    head = items.pop(master.item_id)
    assert head.meeting is not None
    assert head.meeting.recurrence_id is None
    assert head.meeting.start == berlin(3, 2, 9)
    # Original start -> the occurrence's own start; 16 March was deleted, and
    # from 30 March Berlin is on summer time (07:00 UTC).
    expected = {
        berlin(3, 2, 9): berlin(3, 2, 9),
        berlin(3, 9, 9): berlin(3, 9, 9),
        berlin(3, 23, 9): berlin(3, 24, 10),
        berlin(3, 30, 9): berlin(3, 30, 9),
        berlin(4, 6, 9): berlin(4, 6, 9),
    }
    assert set(items) == {f"{master.item_id}#{o.isoformat()}" for o in expected}
    for original, start in expected.items():
        item = items[f"{master.item_id}#{original.isoformat()}"]
        assert item.meeting is not None
        assert item.meeting.uid == SERIES_UID
        assert item.meeting.recurrence_id == original.isoformat()
        assert item.meeting.start == start
        assert item.meeting.end == start + timedelta(minutes=30)
        assert item.folder.role is FolderRole.CALENDAR

    moved = items[f"{master.item_id}#{berlin(3, 23, 9).isoformat()}"]
    assert moved.subject == "Weekly check-in (Tuesday)"
    assert [(p.address, p.role, p.response) for p in moved.participants] == [
        (ANDY.email, Role.ORGANIZER, None),
        (REP, Role.ATTENDEE, "ACCEPTED"),
    ]
    usual = items[f"{master.item_id}#{berlin(3, 30, 9).isoformat()}"]
    assert usual.subject == "Weekly check-in"
    assert [(p.address, p.role, p.response) for p in usual.participants] == [
        (ANDY.email, Role.ORGANIZER, None),
        (REP, Role.ATTENDEE, "ACCEPTED"),
        (LORRAINE.email, Role.ATTENDEE, "TENTATIVE"),
    ]


def test_each_recurrence_pattern(ews: EwsSimulator, rep_mailbox: SimMailbox) -> None:
    # The patterns of the EWS reference, each at 10:00 UTC; the expected
    # dates are read off a 2026/2027 calendar.
    cases: dict[str, tuple[Recurrence, list[date]]] = {
        "daily-every-3-days-until": (
            Recurrence(date(2026, 1, 5), "Daily", interval=3, end=date(2026, 1, 14)),
            [date(2026, 1, 5), date(2026, 1, 8), date(2026, 1, 11), date(2026, 1, 14)],
        ),
        "every-other-week-mon-thu": (
            Recurrence(
                date(2026, 1, 5),
                "Weekly",
                interval=2,
                days_of_week=("Monday", "Thursday"),
                count=5,
            ),
            [
                date(2026, 1, 5),
                date(2026, 1, 8),
                date(2026, 1, 19),
                date(2026, 1, 22),
                date(2026, 2, 2),
            ],
        ),
        "day-31-monthly": (
            # A month without day 31 gets its last day.
            Recurrence(date(2026, 1, 31), "AbsoluteMonthly", day_of_month=31, count=4),
            [
                date(2026, 1, 31),
                date(2026, 2, 28),
                date(2026, 3, 31),
                date(2026, 4, 30),
            ],
        ),
        "second-tuesday-monthly": (
            Recurrence(
                date(2026, 1, 13),
                "RelativeMonthly",
                days_of_week=("Tuesday",),
                week_index="Second",
                count=4,
            ),
            [
                date(2026, 1, 13),
                date(2026, 2, 10),
                date(2026, 3, 10),
                date(2026, 4, 14),
            ],
        ),
        "last-friday-every-2-months": (
            Recurrence(
                date(2026, 1, 30),
                "RelativeMonthly",
                interval=2,
                days_of_week=("Friday",),
                week_index="Last",
                count=3,
            ),
            [date(2026, 1, 30), date(2026, 3, 27), date(2026, 5, 29)],
        ),
        "first-weekday-monthly": (
            Recurrence(
                date(2026, 2, 2),
                "RelativeMonthly",
                days_of_week=("Weekday",),
                week_index="First",
                count=3,
            ),
            [date(2026, 2, 2), date(2026, 3, 2), date(2026, 4, 1)],
        ),
        "march-15-yearly": (
            Recurrence(
                date(2026, 3, 15),
                "AbsoluteYearly",
                day_of_month=15,
                month="March",
                count=2,
            ),
            [date(2026, 3, 15), date(2027, 3, 15)],
        ),
        "first-monday-of-september": (
            Recurrence(
                date(2026, 9, 7),
                "RelativeYearly",
                days_of_week=("Monday",),
                week_index="First",
                month="September",
                count=2,
            ),
            [date(2026, 9, 7), date(2027, 9, 6)],
        ),
    }
    for uid, (rule, _) in cases.items():
        first = datetime.combine(rule.start, datetime.min.time(), UTC)
        rep_mailbox.add(
            SimCalendarItem(
                subject=uid,
                uid=uid,
                start=first + timedelta(hours=10),
                end=first + timedelta(hours=11),
                organizer=TAMARA,
                required=(Attendee(ANDY, "Accept"),),
                recurrence=rule,
            ),
            "calendar",
        )
    connector, _ = connect(ews, backfill_days=BACKFILL)

    found: dict[str, list[date]] = {uid: [] for uid in cases}
    for item in calendar_items(connector):
        assert item.meeting is not None
        if item.meeting.recurrence_id is not None:
            start = item.meeting.start
            assert isinstance(start, datetime) and start.hour == 10
            found[item.meeting.uid].append(start.date())
    assert {uid: sorted(days) for uid, days in found.items()} == {
        uid: days for uid, (_, days) in cases.items()
    }


def test_occurrences_are_kept_to_the_window(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    # A daily series without end that began 400 days ago, at a time of day
    # six hours away from now, so that the window's edges are not in doubt.
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    first = now - timedelta(days=400) + timedelta(hours=6)
    rep_mailbox.add(
        SimCalendarItem(
            subject="Stand-up",
            uid="daily",
            start=first,
            end=first + timedelta(minutes=15),
            organizer=TAMARA,
            required=(Attendee(ANDY, "Accept"),),
            recurrence=Recurrence(first.date(), "Daily"),
        ),
        "calendar",
    )
    connector, _ = connect(ews, backfill_days=30)

    starts = sorted(
        i.meeting.start
        for i in calendar_items(connector)
        if i.meeting is not None and i.meeting.recurrence_id is not None
    )
    low, high = now - timedelta(days=30), now + timedelta(days=365)
    every_day = (first + timedelta(days=n) for n in range(800))
    assert starts == [s for s in every_day if low <= s <= high]


def test_a_long_series_is_capped_and_says_so(
    ews: EwsSimulator, rep_mailbox: SimMailbox, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    first = now - timedelta(days=3000) + timedelta(hours=6)
    master = rep_mailbox.add(
        SimCalendarItem(
            subject="Stand-up",
            uid="daily-for-years",
            start=first,
            end=first + timedelta(minutes=15),
            organizer=TAMARA,
            required=(Attendee(ANDY, "Accept"),),
            recurrence=Recurrence(first.date(), "Daily"),
        ),
        "calendar",
    )
    connector, _ = connect(ews, backfill_days=BACKFILL)

    with caplog.at_level(logging.INFO, logger="mailsync.connectors"):
        items = calendar_items(connector)
    starts = sorted(
        i.meeting.start
        for i in items
        if i.meeting is not None and i.meeting.recurrence_id is not None
    )
    # The 1000 nearest to now: the whole year ahead, and the 635 days before.
    assert len(starts) == 1000
    assert starts[-1] > now + timedelta(days=364)
    assert now - timedelta(days=636) < starts[0] < now - timedelta(days=634)
    [line] = [r for r in caplog.records if "1000" in r.getMessage()]
    assert line.levelno == logging.INFO
    assert master.item_id in line.getMessage()


# exchangelib warns that it cannot map the zone's id; that is the case here.
@pytest.mark.filterwarnings("ignore:Cannot convert value")
def test_a_zone_exchangelib_does_not_know_keeps_the_series(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    # 09:00 on Tuesdays in Sydney is 22:00 UTC on Mondays (summer time). The
    # zone's id means nothing to exchangelib: the master keeps its start, and
    # the occurrences follow it in UTC, on the same local day.
    first = datetime(2026, 1, 6, 9, 0, tzinfo=SYDNEY).astimezone(UTC)
    master = rep_mailbox.add(
        SimCalendarItem(
            subject="APAC pipeline",
            uid="custom-zone",
            start=first,
            end=first + timedelta(hours=1),
            start_timezone="Customized Time Zone",
            organizer=TAMARA,
            required=(Attendee(ANDY, "Accept"),),
            recurrence=Recurrence(date(2026, 1, 6), days_of_week=("Tuesday",), count=3),
            deleted_occurrences=(first + timedelta(days=7),),
        ),
        "calendar",
    )
    connector, _ = connect(ews, backfill_days=BACKFILL)

    items = {i.provider_id: i for i in calendar_items(connector)}
    head = items.pop(master.item_id)
    assert head.meeting is not None and head.meeting.start == first
    assert sorted(i.meeting.start for i in items.values() if i.meeting) == [
        first,
        first + timedelta(days=14),
    ]


# --- through the core --------------------------------------------------------


def core_config(url: str, sim: EwsSimulator) -> Any:
    return parse_config(
        {
            "database": {"url": url},
            "organisation": {"internal_domains": ["contoso.com"]},
            "mailboxes": [
                settings(sim, page_size=10, backfill_days=BACKFILL).model_dump(
                    mode="json"
                )
            ],
        }
    )


@pytest.fixture
def exchange(
    store_url: str, factory: Any, ews: EwsSimulator, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """The simulated mailbox configured with a long back-fill, CRM imported."""
    from tests.test_sync import import_crm

    monkeypatch.setenv("MAILSYNC_TEST_EWS_PASSWORD", SERVICE_PASSWORD)
    config = core_config(store_url, ews)
    import_crm(factory, config)
    return config


def sync(factory: Any, config: Any) -> Any:
    return sync_mailbox(factory, config, config.mailboxes[0])


def calendar_rows(factory: Any, uid: str) -> dict[str | None, tuple[Any, str, bool]]:
    """The activities of a series' calendar sources, by the occurrence's
    original start (None for the master): the activity's start, its status,
    and whether the source is still there."""
    with factory() as session:
        rows = session.execute(
            select(
                Source.provider_id,
                Activity.starts_at,
                Activity.status,
                Source.removed_at.is_(None),
            )
            .join(Source, Source.activity_id == Activity.id)
            .where(Activity.meeting_uid == uid, Source.folder == "Calendar")
        ).all()
    return {
        (provider_id.split("#", 1) + [None])[1]: (start, status, live)
        for provider_id, start, status, live in rows
    }


def occurrence_rows(factory: Any, uid: str) -> dict[Any, tuple[str, bool]]:
    """The occurrences (not the master) by their start: status, and whether
    the source is still there."""
    rows = calendar_rows(factory, uid)
    return {start: (status, live) for rid, (start, status, live) in rows.items() if rid}


def responses(factory: Any, uid: str) -> set[tuple[datetime | None, str, str | None]]:
    with factory() as session:
        rows = session.execute(
            select(Activity.starts_at, ParticipantRow.address, ParticipantRow.response)
            .join(ParticipantRow, ParticipantRow.activity_id == Activity.id)
            .where(Activity.meeting_uid == uid, ParticipantRow.role == "attendee")
        ).all()
    return {(start, address, response) for start, address, response in rows}


def test_a_series_in_the_history(
    factory: Any, ews: EwsSimulator, rep_mailbox: SimMailbox, exchange: Any
) -> None:
    rep_mailbox.add(weekly_check_in(), "calendar")
    report = sync(factory, exchange)
    assert (report.new, report.rejected, report.removed) == (6, 0, 0)

    # The master (starting with the first occurrence) and five occurrences,
    # each its own activity.
    rows = calendar_rows(factory, SERIES_UID)
    live = ("active", True)
    assert rows == {
        None: (berlin(3, 2, 9), *live),
        berlin(3, 2, 9).isoformat(): (berlin(3, 2, 9), *live),
        berlin(3, 9, 9).isoformat(): (berlin(3, 9, 9), *live),
        berlin(3, 23, 9).isoformat(): (berlin(3, 24, 10), *live),
        berlin(3, 30, 9).isoformat(): (berlin(3, 30, 9), *live),
        berlin(4, 6, 9).isoformat(): (berlin(4, 6, 9), *live),
    }
    with factory() as session:
        activities = session.scalars(
            select(Activity.id).where(Activity.meeting_uid == SERIES_UID)
        ).all()
    assert len(set(activities)) == 6
    again = sync(factory, exchange)
    assert (again.new, again.updated, again.removed) == (0, 0, 0)


def test_a_series_without_end_goes_on_a_year_ahead_as_time_passes(
    factory: Any, ews: EwsSimulator, rep_mailbox: SimMailbox, exchange: Any
) -> None:
    import time_machine

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    first = now - timedelta(days=14) + timedelta(hours=6)
    rep_mailbox.add(
        SimCalendarItem(
            subject="Weekly pipeline review",
            uid="weekly-without-end",
            start=first,
            end=first + timedelta(minutes=30),
            organizer=TAMARA,
            required=(Attendee(ANDY, "Accept"),),
            recurrence=Recurrence(
                first.date(), "Weekly", days_of_week=(first.strftime("%A"),)
            ),
        ),
        "calendar",
    )

    def starts() -> list[datetime]:
        with factory() as session:
            found = session.scalars(
                select(Activity.starts_at).where(
                    Activity.meeting_uid == "weekly-without-end"
                )
            ).all()
        return sorted({s if s.tzinfo else s.replace(tzinfo=UTC) for s in found})

    sync(factory, exchange)
    before = starts()
    assert before[-1] <= now + timedelta(days=365)
    # Forty days later, with nothing changed in the calendar: the series
    # reaches a year ahead of then, read over once, without a duplicate.
    later = now + timedelta(days=40)
    with time_machine.travel(later, tick=True):
        grown = sync(factory, exchange)
        again = sync(factory, exchange)
    weeks = [first + timedelta(weeks=n) for n in range(80)]
    assert starts() == [s for s in weeks if s <= later + timedelta(days=365)]
    assert grown.new == len(starts()) - len(before) > 0
    assert (again.new, again.updated) == (0, 0)


def test_the_organizers_calendar_carries_the_responses(
    factory: Any, ews: EwsSimulator, rep_mailbox: SimMailbox, exchange: Any
) -> None:
    master = rep_mailbox.add(
        weekly_check_in(
            organizer=TAMARA,
            required=(
                Attendee(TAMARA, "Organizer"),
                Attendee(ANDY, "NoResponseReceived"),
            ),
            optional=(),
            modified_occurrences=(),
            deleted_occurrences=(),
            recurrence=Recurrence(date(2026, 3, 2), days_of_week=("Monday",), count=2),
        ),
        "calendar",
    )
    sync(factory, exchange)
    firsts = {berlin(3, 2, 9), berlin(3, 9, 9)}  # the master starts with the first
    assert responses(factory, SERIES_UID) == {
        (start, ANDY.email, "NEEDS-ACTION") for start in firsts
    }

    # Andy accepts: Exchange updates the organizer's calendar item.
    rep_mailbox.update(
        master, required=(Attendee(TAMARA, "Organizer"), Attendee(ANDY, "Accept"))
    )
    report = sync(factory, exchange)
    assert report.removed == 0  # the series was rewritten, nothing went away
    assert responses(factory, SERIES_UID) == {
        (start, ANDY.email, "ACCEPTED") for start in firsts
    }

    # The invitation sent again (NEEDS-ACTION) does not undo the answer; a
    # reply by mail from Lorraine is added to the series.
    rep_mailbox.update(master, sequence=1)
    rep_mailbox.add(
        SimMeetingMessage(
            kind=MeetingKind.REQUEST,
            subject="Weekly check-in",
            author=TAMARA,
            to=(ANDY,),
            uid=SERIES_UID,
            sequence=1,
            start=berlin(3, 2, 9),
            end=berlin(3, 2, 9, 30),
            timezone=WEST_EUROPE,
            organizer=TAMARA,
            required=(Attendee(ANDY),),
            message_id="<request-2@contoso.com>",
        ),
        "sentitems",
    )
    rep_mailbox.add(
        SimMeetingMessage(
            kind=MeetingKind.RESPONSE,
            subject="Declined: Weekly check-in",
            author=LORRAINE,
            to=(TAMARA,),
            uid=SERIES_UID,
            organizer=TAMARA,
            required=(Attendee(LORRAINE, "Decline"),),
            response_type="Decline",
            message_id="<reply-1@tailspintoys.com>",
        ),
        "inbox",
    )
    sync(factory, exchange)
    assert (berlin(3, 2, 9), ANDY.email, "ACCEPTED") in responses(factory, SERIES_UID)
    assert (berlin(3, 2, 9), LORRAINE.email, "DECLINED") in responses(
        factory, SERIES_UID
    )

    # The calendar may change an answer (Andy declines after all), but its
    # "no response yet" does not undo one.
    rep_mailbox.update(
        master, required=(Attendee(TAMARA, "Organizer"), Attendee(ANDY, "Decline"))
    )
    sync(factory, exchange)
    assert (berlin(3, 9, 9), ANDY.email, "DECLINED") in responses(factory, SERIES_UID)
    rep_mailbox.update(
        master,
        required=(Attendee(TAMARA, "Organizer"), Attendee(ANDY, "NoResponseReceived")),
    )
    sync(factory, exchange)
    assert (berlin(3, 9, 9), ANDY.email, "DECLINED") in responses(factory, SERIES_UID)


def test_a_cancellation_mail_cancels_one_occurrence(
    factory: Any, ews: EwsSimulator, rep_mailbox: SimMailbox, exchange: Any
) -> None:
    rep_mailbox.add(weekly_check_in(), "calendar")
    sync(factory, exchange)

    # Andy cancels 30 March only; Exchange's text/calendar part names it by
    # RECURRENCE-ID in Berlin time, with a VTIMEZONE.
    rep_mailbox.add(
        SimMeetingMessage(
            kind=MeetingKind.CANCELLATION,
            subject="Canceled: Weekly check-in",
            author=ANDY,
            to=(TAMARA,),
            uid=SERIES_UID,
            sequence=1,
            recurrence_id=berlin(3, 30, 9),
            start=berlin(3, 30, 9),
            end=berlin(3, 30, 9, 30),
            timezone=WEST_EUROPE,
            organizer=ANDY,
            required=(Attendee(TAMARA),),
            message_id="<cancel-0330@tailspintoys.com>",
        ),
        "inbox",
    )
    report = sync(factory, exchange)
    assert report.new == 0

    rows = occurrence_rows(factory, SERIES_UID)
    assert rows[berlin(3, 30, 9)] == ("cancelled", True)
    assert {start for start, (status, _) in rows.items() if status == "active"} == {
        berlin(3, 2, 9),
        berlin(3, 9, 9),
        berlin(3, 24, 10),
        berlin(4, 6, 9),
    }
    with factory() as session:
        folders = session.scalars(
            select(Source.folder)
            .join(Activity)
            .where(Activity.starts_at == berlin(3, 30, 9))
        ).all()
    assert sorted(folders) == ["Calendar", "Inbox"]


def test_a_shortened_or_deleted_series_removes_its_occurrences(
    factory: Any, ews: EwsSimulator, rep_mailbox: SimMailbox, exchange: Any
) -> None:
    master = rep_mailbox.add(weekly_check_in(), "calendar")
    sync(factory, exchange)

    # Four Mondays instead of six: 30 March and 6 April go.
    rep_mailbox.update(
        master,
        recurrence=Recurrence(date(2026, 3, 2), days_of_week=("Monday",), count=4),
    )
    report = sync(factory, exchange)
    assert (report.new, report.removed) == (0, 2)
    rows = occurrence_rows(factory, SERIES_UID)
    assert {s for s, (_, live) in rows.items() if not live} == {
        berlin(3, 30, 9),
        berlin(4, 6, 9),
    }
    assert {s for s, (_, live) in rows.items() if live} == {
        berlin(3, 2, 9),
        berlin(3, 9, 9),
        berlin(3, 24, 10),
    }

    # The series deleted: the master and its three remaining occurrences go;
    # the activities stay in the history.
    rep_mailbox.delete(master, hard=True)
    report = sync(factory, exchange)
    assert report.removed == 4
    rows = calendar_rows(factory, SERIES_UID)
    assert len(rows) == 6 and not any(live for _, _, live in rows.values())


def test_an_all_day_event_in_the_history(
    factory: Any, ews: EwsSimulator, rep_mailbox: SimMailbox, exchange: Any
) -> None:
    rep_mailbox.add(
        SimCalendarItem(
            subject="Trade fair",
            uid="allday-berlin",
            start=berlin(3, 10, 0),
            end=berlin(3, 11, 0),
            is_all_day=True,
            start_timezone=WEST_EUROPE,
            organizer=TAMARA,
            required=(Attendee(ANDY, "Accept"),),
        ),
        "calendar",
    )
    sync(factory, exchange)
    with factory() as session:
        activity = session.scalars(
            select(Activity).where(Activity.meeting_uid == "allday-berlin")
        ).one()
        assert activity.all_day
        assert activity.starts_at == datetime(2026, 3, 10, tzinfo=UTC)
        assert activity.ends_at == datetime(2026, 3, 11, tzinfo=UTC)
