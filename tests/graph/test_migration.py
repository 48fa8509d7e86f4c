"""A mailbox moved from Exchange Server to Microsoft 365 keeps its history.

The same content sits in the EWS simulator (the mailbox on premises) and in
the Graph simulator (the mailbox after the move): the Contoso sample mail,
a single meeting, a weekly series with an exception and a deleted
occurrence across the change to summer time, and an all-day event. The
rep's mailbox is synced through EWS, then its ``kind`` changes to
``graph`` and it is synced again: not one activity is added, because
identity is by Message-ID and iCalendar UID with the original start, not by
provider id. Runs on SQLite and PostgreSQL.

To Do tasks are left out: Graph shows no PR_SEARCH_KEY, the uid the EWS
connector gives a task (see :mod:`mailsync.connectors.graph_items`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from exchangelib.protocol import close_connections
from sqlalchemy import func, select

from mailsync.config import Config, parse_config
from mailsync.store.models import Activity, Source
from mailsync.store.models import Mailbox as MailboxRow
from mailsync.sync import sync_mailbox
from tests.conftest import CONTOSO
from tests.ews.simulator import Address as EwsAddress
from tests.ews.simulator import Attendee as EwsAttendee
from tests.ews.simulator import (
    EwsSimulator,
    Occurrence,
    SimCalendarItem,
    SimMailbox,
    SimMessage,
)
from tests.ews.simulator import Recurrence as EwsRecurrence
from tests.ews.test_connector import settings as ews_settings
from tests.graph.conftest import REP, settings
from tests.graph.mailbox import (
    Address,
    Attendee,
    Event,
    Mailbox,
    Message,
    Recurrence,
    new_uid,
)
from tests.graph.simulator import GraphSimulator
from tests.test_sync import import_crm

SERVICE_USER, SERVICE_PASSWORD = "svc-mailsync@contoso.com", "moving-day password"
BERLIN = ZoneInfo("Europe/Berlin")
WEST_EUROPE = "W. Europe Standard Time"
REVIEW_UID = new_uid("pilot review")
SERIES_UID = new_uid("weekly check-in")
CLOSED_UID = new_uid("office closed")
TAMARA = ("tamara@contoso.com", "Tamara Johnston")
ANDY = ("andy.carothers@tailspintoys.com", "Andy Carothers")
LORRAINE = ("lorraine.nay@tailspintoys.com", "Lorraine Nay")


def berlin(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=BERLIN).astimezone(UTC)


MONDAYS = (date(2027, 3, 15), date(2027, 4, 5))  # summer time from 28 March
MOVED = (berlin(2027, 3, 22, 9), berlin(2027, 3, 22, 10))  # original, new start
DELETED = berlin(2027, 4, 5, 9)


def contoso_files() -> Iterator[tuple[str, bytes]]:
    places = {"": "inbox", ".Sent": "sentitems", ".Drafts": "drafts"}
    for path in sorted((CONTOSO / "maildir").rglob("*")):
        if path.name.startswith(".") or path.parent.name not in ("cur", "new"):
            continue
        top = path.parent.parent.name
        top = top if top.startswith(".") else ""
        if top == ".Junk":
            continue
        folder = "Tailspin" if top == ".Tailspin" else places.get(top, "inbox")
        yield folder, path.read_bytes()


def on_exchange(box: SimMailbox) -> None:
    tailspin = box.add_folder("Tailspin", parent="inbox")
    for folder, raw in contoso_files():
        place = tailspin.folder_id if folder == "Tailspin" else folder
        box.add(SimMessage.from_mime(raw), place)
    tamara, andy, lorraine = (EwsAddress(*p) for p in (TAMARA, ANDY, LORRAINE))
    box.add(
        SimCalendarItem(
            uid=REVIEW_UID,
            subject="Tailspin Toys pilot review",
            start=datetime(2027, 1, 12, 17, tzinfo=UTC),
            end=datetime(2027, 1, 12, 18, tzinfo=UTC),
            organizer=tamara,
            required=(EwsAttendee(tamara, "Organizer"), EwsAttendee(andy, "Accept")),
            optional=(EwsAttendee(lorraine, "Tentative"),),
        ),
        "calendar",
    )
    box.add(
        SimCalendarItem(
            uid=SERIES_UID,
            subject="Weekly check-in",
            start=berlin(2027, 3, 15, 9),
            end=berlin(2027, 3, 15, 9) + timedelta(minutes=30),
            start_timezone=WEST_EUROPE,
            organizer=tamara,
            required=(EwsAttendee(tamara, "Organizer"), EwsAttendee(andy, "Accept")),
            recurrence=EwsRecurrence(
                start=MONDAYS[0], days_of_week=("Monday",), end=MONDAYS[1]
            ),
            modified_occurrences=(
                Occurrence(
                    original_start=MOVED[0],
                    start=MOVED[1],
                    end=MOVED[1] + timedelta(minutes=30),
                    subject="Weekly check-in (later)",
                ),
            ),
            deleted_occurrences=(DELETED,),
        ),
        "calendar",
    )
    box.add(
        SimCalendarItem(
            uid=CLOSED_UID,
            subject="Office closed",
            start=berlin(2026, 12, 24),
            end=berlin(2026, 12, 25),
            is_all_day=True,
            start_timezone=WEST_EUROPE,
            organizer=tamara,
            required=(EwsAttendee(andy, "Accept"),),
        ),
        "calendar",
    )


def on_microsoft_365(box: Mailbox) -> None:
    box.add_folder("Tailspin", parent="inbox")
    for folder, raw in contoso_files():
        place = "Inbox/Tailspin" if folder == "Tailspin" else folder
        box.add(Message.from_mime(raw), place)
    tamara, andy, lorraine = (Address(*p) for p in (TAMARA, ANDY, LORRAINE))
    box.add_event(
        Event(
            uid=REVIEW_UID,
            subject="Tailspin Toys pilot review",
            start=datetime(2027, 1, 12, 17, tzinfo=UTC),
            end=datetime(2027, 1, 12, 18, tzinfo=UTC),
            organizer=tamara,
            attendees=(
                Attendee(andy, "required", "accepted"),
                Attendee(lorraine, "optional", "tentativelyAccepted"),
            ),
        )
    )
    series = box.add_event(
        Event(
            uid=SERIES_UID,
            subject="Weekly check-in",
            start=berlin(2027, 3, 15, 9),
            end=berlin(2027, 3, 15, 9) + timedelta(minutes=30),
            zone="Europe/Berlin",
            organizer=tamara,
            attendees=(Attendee(andy, "required", "accepted"),),
            recurrence=Recurrence(start=MONDAYS[0], end=MONDAYS[1]),
        )
    )
    box.change_occurrence(
        series,
        MOVED[0],
        start=MOVED[1],
        end=MOVED[1] + timedelta(minutes=30),
        subject="Weekly check-in (later)",
    )
    box.change_occurrence(series, DELETED, deleted=True)
    box.add_event(
        Event(
            uid=CLOSED_UID,
            subject="Office closed",
            start=date(2026, 12, 24),
            end=date(2026, 12, 25),
            is_all_day=True,
            zone="Europe/Berlin",
            organizer=tamara,
            attendees=(Attendee(andy, "required", "accepted"),),
        )
    )


def configure(url: str, mailbox: Any) -> Config:
    return parse_config(
        {
            "database": {"url": url},
            "organisation": {"internal_domains": ["contoso.com"]},
            "mailboxes": [mailbox.model_dump(mode="json")],
        }
    )


@pytest.fixture
def exchange(monkeypatch: pytest.MonkeyPatch) -> Iterator[EwsSimulator]:
    monkeypatch.setenv("MAILSYNC_TEST_EWS_PASSWORD", SERVICE_PASSWORD)
    with EwsSimulator() as sim:
        sim.add_user(SERVICE_USER, SERVICE_PASSWORD)
        on_exchange(sim.add_mailbox(REP, "Tamara Johnston"))
        yield sim
    close_connections()
    assert not sim.errors, "\n".join(sim.errors)


def counts(factory: Any) -> tuple[int, int]:
    with factory() as session:
        activities = session.scalar(select(func.count()).select_from(Activity))
        sources = session.scalar(select(func.count()).select_from(Source))
    return activities or 0, sources or 0


def test_a_mailbox_moved_from_exchange_to_microsoft_365_keeps_its_history(
    store_url: str,
    factory: Any,
    exchange: EwsSimulator,
    graph: GraphSimulator,
    rep_box: Mailbox,
) -> None:
    on_microsoft_365(rep_box)
    before = configure(store_url, ews_settings(exchange, page_size=10))
    import_crm(factory, before)
    on_premises = sync_mailbox(factory, before, before.mailboxes[0])
    assert on_premises.error is None
    activities, sources = counts(factory)
    # 29 activities of mail (as from files), the review, the series' master
    # and three occurrences, and the all-day event.
    assert on_premises.new == activities == 29 + 1 + 4 + 1

    after = configure(store_url, settings(graph, page_size=10))
    moved = sync_mailbox(factory, after, after.mailboxes[0])
    assert moved.error is None
    assert moved.new == 0  # not one duplicate
    assert moved.items == on_premises.items - 1  # Graph gives no series master
    assert counts(factory) == (activities, sources + moved.items - moved.excluded)
    with factory() as session:
        assert session.scalar(select(MailboxRow.kind)) == "graph"
        per_occurrence = session.execute(
            select(Activity.starts_at, func.count(Source.id))
            .join(Source)
            .where(Activity.meeting_uid == SERIES_UID, Activity.starts_at.is_not(None))
            .group_by(Activity.id, Activity.starts_at)
        ).all()
    # Each occurrence has its EWS source and its Graph source; the master its
    # EWS one only.
    assert sorted(n for _, n in per_occurrence) == [1, 2, 2, 2]
