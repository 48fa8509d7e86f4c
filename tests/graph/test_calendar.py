"""The calendar through Graph: calendarView delta, series, all-day events.

Expected values come from the Graph reference and iCalendar, not from the
connector: calendarView expands a series into ``occurrence`` and
``exception`` events with ``seriesMasterId`` and ``originalStart``; a
series repeats in the wall time of its zone (09:00 in Berlin is 08:00 UTC
in winter and 07:00 UTC in summer); an all-day event's end is exclusive;
the RECURRENCE-ID of an instance is its original start (RFC 5545 3.8.4.4).
The UID is the series' clean global object id ([MS-OXOCAL] 2.2.1.27),
which Graph's per-instance iCalUId holds with the instance's date.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from mailsync.config import Config, parse_config
from mailsync.connectors.graph_items import meeting_uid
from mailsync.identity import identity_keys
from mailsync.items import FolderRole, Item, Role
from mailsync.store.models import Activity
from mailsync.sync import sync_mailbox
from tests.contract import drain
from tests.graph.conftest import REP, connect, settings
from tests.graph.mailbox import (
    Address,
    Attendee,
    Event,
    Mailbox,
    Recurrence,
    global_object_id,
    new_uid,
)
from tests.graph.simulator import GraphSimulator
from tests.test_sync import import_crm

TAMARA = Address(REP, "Tamara Johnston")
ANDY = Address("andy.carothers@tailspintoys.com", "Andy Carothers")
LORRAINE = Address("lorraine.nay@tailspintoys.com", "Lorraine Nay")
BEN = Address("ben.miller@fabrikam.com", "Ben Miller")
ROOM = Address("joliet-room@contoso.com", "Joliet meeting room")
SERIES_UID = new_uid("weekly pilot check-in")


def calendar_items(sim: GraphSimulator, **changes: Any) -> tuple[list[Item], Any]:
    connector, _ = connect(sim, **changes)
    calendar = next(f for f in connector.folders() if f.role is FolderRole.CALENDAR)
    items, removed, batches, cursor = drain(connector, calendar, None)
    return items, cursor


def weekly_series(box: Mailbox) -> Event:
    """Mondays at 09:00 in Berlin, 15 March to 5 April 2027: summer time
    begins on 28 March. The 22nd is moved to 10:00; the 5th is deleted."""
    series = box.add_event(
        Event(
            uid=SERIES_UID,
            subject="Pilot check-in",
            start=datetime(2027, 3, 15, 8, tzinfo=UTC),
            end=datetime(2027, 3, 15, 8, 30, tzinfo=UTC),
            organizer=TAMARA,
            attendees=(Attendee(ANDY, "required", "accepted"),),
            zone="Europe/Berlin",
            recurrence=Recurrence(start=date(2027, 3, 15), end=date(2027, 4, 5)),
            sequence=1,
        )
    )
    box.change_occurrence(
        series,
        datetime(2027, 3, 22, 8, tzinfo=UTC),
        start=datetime(2027, 3, 22, 9, tzinfo=UTC),
        end=datetime(2027, 3, 22, 9, 30, tzinfo=UTC),
        subject="Pilot check-in (moved)",
        sequence=2,
    )
    box.change_occurrence(series, datetime(2027, 4, 5, 7, tzinfo=UTC), deleted=True)
    return series


def test_a_single_meeting_with_its_people_and_sequence(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    uid = new_uid("pilot review")
    event = rep_box.add_event(
        Event(
            uid=uid,
            subject="Tailspin Toys pilot review",
            start=datetime(2027, 1, 12, 17, tzinfo=UTC),
            end=datetime(2027, 1, 12, 18, tzinfo=UTC),
            location="Joliet DC",
            organizer=TAMARA,
            attendees=(
                Attendee(ANDY, "required", "accepted"),
                Attendee(LORRAINE, "optional", "tentativelyAccepted"),
                Attendee(BEN, "required", "notResponded"),
                Attendee(ROOM, "resource", "accepted"),
            ),
            sequence=2,
        )
    )
    (item,), _ = calendar_items(graph)
    assert item.provider_id == event.id
    meeting = item.meeting
    assert meeting is not None
    assert (meeting.uid, meeting.recurrence_id, meeting.sequence) == (uid, None, 2)
    assert (meeting.start, meeting.end) == (
        datetime(2027, 1, 12, 17, tzinfo=UTC),
        datetime(2027, 1, 12, 18, tzinfo=UTC),
    )
    assert (meeting.status, meeting.location) == ("CONFIRMED", "Joliet DC")
    assert item.occurred_at == meeting.start
    people = {(p.address, p.role, p.response) for p in item.participants}
    assert people == {
        (REP, Role.ORGANIZER, None),
        (ANDY.address, Role.ATTENDEE, "ACCEPTED"),
        (LORRAINE.address, Role.ATTENDEE, "TENTATIVE"),
        (BEN.address, Role.ATTENDEE, "NEEDS-ACTION"),
    }
    assert graph.batched["events.get"] == 1  # its sequence, in a $batch


def test_a_series_is_expanded_in_its_zone_with_its_exception(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    series = weekly_series(rep_box)
    items, _ = calendar_items(graph)
    found = {i.meeting.recurrence_id: i for i in items if i.meeting}
    assert sorted(found) == [
        "2027-03-15T08:00:00+00:00",
        "2027-03-22T08:00:00+00:00",
        "2027-03-29T07:00:00+00:00",  # summer time: 09:00 in Berlin
    ]
    moved = found["2027-03-22T08:00:00+00:00"]
    assert moved.subject == "Pilot check-in (moved)"
    assert moved.meeting and moved.meeting.start == datetime(2027, 3, 22, 9, tzinfo=UTC)
    assert moved.meeting.sequence == 2  # the exception's own
    assert found["2027-03-15T08:00:00+00:00"].meeting.sequence == 1  # type: ignore[union-attr]
    assert {i.meeting.uid for i in items if i.meeting} == {SERIES_UID}
    assert all(i.provider_id.split("#")[1].endswith("Z") for i in items)
    # Parts of a series: never written to (see connectors.base).
    assert all("#" in i.provider_id for i in items)
    # Graph gave each instance its own iCalUId, with its date in it.
    assert global_object_id(SERIES_UID, date(2027, 3, 15)) != SERIES_UID
    assert meeting_uid(global_object_id(SERIES_UID, date(2027, 3, 15))) == SERIES_UID
    assert graph.batched["events.get"] == 2  # the series' and the exception's
    assert series.id


def test_an_occurrence_is_the_meeting_a_cancellation_by_mail_names() -> None:
    from mailsync.calendar import read_invitation

    ics = (
        "BEGIN:VCALENDAR\r\nMETHOD:CANCEL\r\nPRODID:Microsoft Exchange Server 2010\r\n"
        "VERSION:2.0\r\nBEGIN:VEVENT\r\n"
        f"UID:{SERIES_UID}\r\nRECURRENCE-ID:20270322T080000Z\r\nSEQUENCE:3\r\n"
        "DTSTART:20270322T090000Z\r\nDTEND:20270322T093000Z\r\nSTATUS:CANCELLED\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    ).encode()
    by_mail, _ = read_invitation(ics)
    assert by_mail.recurrence_id == "2027-03-22T08:00:00+00:00"
    assert by_mail.uid == SERIES_UID


def test_meeting_identity_matches_a_cancellation_by_mail(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    weekly_series(rep_box)
    items, _ = calendar_items(graph)
    moved = next(i for i in items if i.subject.endswith("(moved)"))
    wanted = f"uid:{SERIES_UID}|2027-03-22T08:00:00+00:00"
    assert wanted in identity_keys(moved, None)


def test_an_all_day_event_and_series_stay_dates(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    rep_box.add_event(
        Event(
            subject="Office closed",
            start=date(2026, 12, 24),
            end=date(2026, 12, 25),
            is_all_day=True,
            zone="Europe/Berlin",
        )
    )
    trade_fair = rep_box.add_event(
        Event(
            subject="Toy fair Nuremberg",
            start=date(2027, 1, 4),
            end=date(2027, 1, 5),
            is_all_day=True,
            zone="Europe/Berlin",
            recurrence=Recurrence(start=date(2027, 1, 4), pattern="daily", count=3),
        )
    )
    rep_box.change_occurrence(
        trade_fair, date(2027, 1, 5), start=date(2027, 1, 8), end=date(2027, 1, 9)
    )
    items, _ = calendar_items(graph)
    by_subject = {}
    for item in items:
        assert item.meeting is not None
        by_subject.setdefault(item.subject, []).append(item.meeting)
    (closed,) = by_subject["Office closed"]
    assert (closed.start, closed.end, closed.recurrence_id) == (
        date(2026, 12, 24),
        date(2026, 12, 25),
        None,
    )
    fair = sorted(by_subject["Toy fair Nuremberg"], key=lambda m: str(m.start))
    assert [(m.start, m.end, m.recurrence_id) for m in fair] == [
        (date(2027, 1, 4), date(2027, 1, 5), "2027-01-04"),
        (date(2027, 1, 6), date(2027, 1, 7), "2027-01-06"),
        (date(2027, 1, 8), date(2027, 1, 9), "2027-01-05"),  # the moved one
    ]


def test_an_imported_meeting_keeps_the_uid_it_came_with(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    rep_box.add_event(
        Event(
            uid="7kq4d1m0s9@google.com",
            subject="Fabrikam call",
            start=datetime(2027, 2, 1, 15, tzinfo=UTC),
            end=datetime(2027, 2, 1, 16, tzinfo=UTC),
            organizer=BEN,
        )
    )
    (item,), _ = calendar_items(graph)
    assert item.meeting and item.meeting.uid == "7kq4d1m0s9@google.com"


# --- through the core ------------------------------------------------------


def configure(url: str, sim: GraphSimulator) -> Config:
    return parse_config(
        {
            "database": {"url": url},
            "organisation": {"internal_domains": ["contoso.com"]},
            "mailboxes": [settings(sim, folders=["Calendar"]).model_dump(mode="json")],
        }
    )


def statuses(factory: Any) -> dict[str, str]:
    with factory() as session:
        rows = session.execute(
            select(Activity.starts_at, Activity.status).where(
                Activity.kind == "meeting"
            )
        ).all()
    return {start.isoformat()[:16]: status for start, status in rows}


def test_changes_to_a_series_reach_the_history(
    store_url: str, factory: Any, graph: GraphSimulator, rep_box: Mailbox
) -> None:
    config = configure(store_url, graph)
    import_crm(factory, config)
    series = weekly_series(rep_box)
    first = sync_mailbox(factory, config, config.mailboxes[0])
    assert (first.new, first.error) == (3, None)

    # Andy cancels one occurrence (his calendar's copy says isCancelled).
    rep_box.change_occurrence(
        series, datetime(2027, 3, 29, 7, tzinfo=UTC), is_cancelled=True, sequence=3
    )
    second = sync_mailbox(factory, config, config.mailboxes[0])
    # The series changed too (its exceptions are part of it): all three come.
    assert (second.new, second.items) == (0, 3)
    assert statuses(factory)["2027-03-29T07:00"] == "cancelled"

    rep_box.update_event(series, subject="Pilot weekly check-in", sequence=4)
    third = sync_mailbox(factory, config, config.mailboxes[0])
    assert (third.new, third.updated) == (0, 3)
    with factory() as session:
        subjects = set(session.scalars(select(Activity.subject)))
    assert "Pilot weekly check-in" in subjects

    rep_box.delete_event(series)
    fourth = sync_mailbox(factory, config, config.mailboxes[0])
    assert (fourth.new, fourth.removed) == (0, 3)


def test_the_window_is_begun_anew_before_it_runs_out(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    weekly_series(rep_box)
    connector, _ = connect(graph)
    calendar = next(f for f in connector.folders() if f.role is FolderRole.CALENDAR)
    _, _, _, cursor = drain(connector, calendar, None)
    assert cursor is not None
    # Months later: the window's end is less than eleven months ahead.
    data = json.loads(cursor)
    soon = datetime.now(UTC) + timedelta(days=200)
    data["window_end"] = soon.strftime("%Y-%m-%dT%H:%M:%SZ")
    graph.reset_counts()
    items, removed, _, after = drain(connector, calendar, json.dumps(data))
    assert len(items) == 3 and removed == []  # all read again in the new window
    assert graph.requests["calendarView.delta"] == 2
    assert json.loads(after or "{}")["window_end"] > data["window_end"]


@pytest.mark.parametrize("page_size", [1, 2])
def test_a_series_over_several_pages_resumes_from_any_page(
    graph: GraphSimulator, rep_box: Mailbox, page_size: int
) -> None:
    weekly_series(rep_box)
    connector, _ = connect(graph, page_size=page_size)
    calendar = next(f for f in connector.folders() if f.role is FolderRole.CALENDAR)
    items, _, batches, _ = drain(connector, calendar, None)
    assert len(items) == 3 and len(batches) == -(-3 // page_size)
    for index, batch in enumerate(batches):
        seen = [i.provider_id for b in batches[: index + 1] for i in b.items]
        rest = drain(connector, calendar, batch.cursor)[0]
        assert sorted(seen + [i.provider_id for i in rest]) == sorted(
            i.provider_id for i in items
        )
