"""Pull subscriptions: the cheap change check between syncs.

First the simulator against the EWS reference, through exchangelib's own
services: Subscribe answers a SubscriptionId and a Watermark; GetEvents from
a watermark answers a Notification with the events since (a StatusEvent when
there are none), PreviousWatermark and MoreEvents; the Timeout (minutes) is
how long a subscription may stay idle, reset by each GetEvents. Then the
connector's ``changed_folders`` and the core's ``check_and_sync`` on both
databases.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from exchangelib.errors import ErrorExpiredSubscription, ErrorSubscriptionNotFound
from exchangelib.properties import (
    CreatedEvent,
    MovedEvent,
    NewMailEvent,
    StatusEvent,
)
from exchangelib.protocol import close_connections
from exchangelib.services import GetEvents, SubscribeToPull, Unsubscribe
from sqlalchemy import select

from mailsync.config import Config, parse_config
from mailsync.store.models import Activity, Cursor, Source
from mailsync.sync import SUBSCRIPTION_SCOPE, check_and_sync, sync_mailbox
from tests.ews.conftest import REP, SERVICE_PASSWORD
from tests.ews.simulator import Address, Call, EwsSimulator, SimMailbox, SimMessage
from tests.ews.test_connector import connect, settings
from tests.faults import Crash, CrashAfter
from tests.test_sync import import_crm

TAMARA = Address(REP, "Tamara Johnston")
ANDY = Address("andy.carothers@tailspintoys.com", "Andy Carothers")
STRANGER = Address("someone@unknown-company.example", "Someone")


@pytest.fixture(autouse=True)
def _close_sessions() -> Iterator[None]:
    yield
    close_connections()


def mail(n: int, author: Address = STRANGER) -> SimMessage:
    return SimMessage(
        subject=f"Order {n}",
        author=author,
        to=(TAMARA,),
        message_id=f"<order{n}@example.com>",
        datetime_sent=datetime(2026, 9, 1, tzinfo=UTC) + timedelta(hours=n),
        body=f"About order {n}.",
    )


# --- the simulator, through exchangelib's services ---------------------------


def test_get_events_answers_what_happened_in_the_subscribed_folder(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    connector, _ = connect(ews)
    account = connector.account
    subscription_id, watermark = SubscribeToPull(account=account).get(
        folders=[account.inbox],
        event_types=["NewMailEvent", "CreatedEvent", "MovedEvent"],
        watermark=None,
        timeout=10,
    )
    inbox = rep_mailbox.folder("inbox").folder_id
    item = rep_mailbox.add(mail(1), "inbox")
    rep_mailbox.add(mail(2), "sentitems")  # not subscribed

    notification = GetEvents(account=account).get(
        subscription_id=subscription_id, watermark=watermark
    )
    assert notification.subscription_id == subscription_id
    assert notification.previous_watermark == watermark
    assert notification.more_events is False
    kinds = [type(e) for e in notification.events]
    assert kinds == [CreatedEvent, NewMailEvent]
    for event in notification.events:
        assert event.item_id.id == item.item_id
        assert event.parent_folder_id.id == inbox

    # From the last event's watermark: nothing new, one StatusEvent.
    last = notification.events[-1].watermark
    quiet = GetEvents(account=account).get(
        subscription_id=subscription_id, watermark=last
    )
    assert [type(e) for e in quiet.events] == [StatusEvent]

    # A move is one MovedEvent, with the old id and folder.
    moved = rep_mailbox.move(item, "deleteditems")
    again = GetEvents(account=account).get(
        subscription_id=subscription_id, watermark=last
    )
    (event,) = again.events
    assert isinstance(event, MovedEvent)
    assert (event.item_id.id, event.old_item_id.id) == (moved.item_id, item.item_id)
    assert event.old_parent_folder_id.id == inbox


def test_a_subscription_expires_when_idle_past_its_timeout(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    account = connect(ews)[0].account
    subscription_id, watermark = SubscribeToPull(account=account).get(
        folders=None, event_types=["ModifiedEvent"], watermark=None, timeout=10
    )
    events = GetEvents(account=account)
    ews.clock.advance(minutes=9)
    events.get(subscription_id=subscription_id, watermark=watermark)  # resets
    ews.clock.advance(minutes=9)
    events.get(subscription_id=subscription_id, watermark=watermark)
    ews.clock.advance(minutes=11)
    with pytest.raises(ErrorExpiredSubscription):
        events.get(subscription_id=subscription_id, watermark=watermark)

    fresh, mark = SubscribeToPull(account=account).get(
        folders=None, event_types=["ModifiedEvent"], watermark=None, timeout=10
    )
    Unsubscribe(account=account).get(expect_result=None, subscription_id=fresh)
    with pytest.raises(ErrorSubscriptionNotFound):
        events.get(subscription_id=fresh, watermark=mark)


def test_many_events_come_in_notifications_of_fifty(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    account = connect(ews)[0].account
    subscription_id, watermark = SubscribeToPull(account=account).get(
        folders=None, event_types=["NewMailEvent"], watermark=None, timeout=10
    )
    rep_mailbox.add_many([mail(n) for n in range(60)], "inbox")
    events = GetEvents(account=account)
    first = events.get(subscription_id=subscription_id, watermark=watermark)
    assert (len(first.events), first.more_events) == (50, True)
    rest = events.get(
        subscription_id=subscription_id, watermark=first.events[-1].watermark
    )
    assert (len(rest.events), rest.more_events) == (10, False)
    # An older watermark reads its events again (a client that crashed).
    assert (
        len(events.get(subscription_id=subscription_id, watermark=watermark).events)
        == 50
    )


# --- the connector's change check -------------------------------------------


def test_changed_folders_names_the_folders_with_news(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    connector, _ = connect(ews)
    changed, state = connector.changed_folders(None)
    assert changed is None  # a new subscription: sync every folder
    assert ews.requests["Subscribe"] == 1

    inbox = rep_mailbox.folder("inbox").folder_id
    item = rep_mailbox.add(mail(1), "inbox")
    changed, state = connector.changed_folders(state)
    assert changed == {inbox}

    ews.reset_counts()
    changed, state = connector.changed_folders(state)
    assert changed == set()
    assert ews.calls == [Call("GetEvents", REP, 200)]  # the whole check

    tailspin = rep_mailbox.add_folder("Tailspin", parent="inbox")
    rep_mailbox.move(item, tailspin.folder_id)
    changed, state = connector.changed_folders(state)
    assert changed == {inbox, tailspin.folder_id}
    rep_mailbox.mark_read(rep_mailbox.folder_items(tailspin)[0])
    assert connector.changed_folders(state)[0] == {tailspin.folder_id}


@pytest.mark.parametrize("state", ["graph-delta-links", "{}", '{"id": 1}', "[]"])
def test_a_state_this_connector_did_not_write_subscribes_anew(
    ews: EwsSimulator, rep_mailbox: SimMailbox, state: str
) -> None:
    # The mailbox was on Microsoft 365 (kind = "graph") before, say.
    connector, _ = connect(ews)
    changed, new_state = connector.changed_folders(state)
    assert changed is None  # sync every folder
    assert ews.requests["Subscribe"] == 1
    rep_mailbox.add(mail(1), "inbox")
    assert connector.changed_folders(new_state)[0] == {
        rep_mailbox.folder("inbox").folder_id
    }


@pytest.mark.parametrize("lapse", ["expired", "server restarted"])
def test_a_lapsed_subscription_is_renewed_and_every_folder_synced(
    ews: EwsSimulator, rep_mailbox: SimMailbox, lapse: str
) -> None:
    connector, _ = connect(ews)
    _, state = connector.changed_folders(None)
    if lapse == "expired":
        ews.clock.advance(minutes=31)  # the connector subscribes for 30
    else:
        rep_mailbox.drop_subscriptions()
    ews.reset_counts()

    changed, renewed = connector.changed_folders(state)
    assert changed is None
    assert [c.operation for c in ews.calls] == ["GetEvents", "Subscribe"]
    assert json.loads(renewed)["id"] != json.loads(state)["id"]
    rep_mailbox.add(mail(1), "inbox")
    assert connector.changed_folders(renewed)[0] == {
        rep_mailbox.folder("inbox").folder_id
    }


# --- the core: check, then sync what changed ---------------------------------


def configure(url: str, sim: EwsSimulator) -> Config:
    return parse_config(
        {
            "database": {"url": url},
            "organisation": {"internal_domains": ["contoso.com"]},
            "mailboxes": [settings(sim, page_size=5).model_dump(mode="json")],
        }
    )


@pytest.fixture
def config(
    factory: Any, store_url: str, ews: EwsSimulator, monkeypatch: pytest.MonkeyPatch
) -> Config:
    monkeypatch.setenv("MAILSYNC_TEST_EWS_PASSWORD", SERVICE_PASSWORD)
    config = configure(store_url, ews)
    import_crm(factory, config)
    return config


def subjects(factory: Any) -> set[str]:
    with factory() as session:
        return set(session.scalars(select(Activity.subject)))


def check(factory: Any, config: Config, sim: EwsSimulator, connector: Any = None):
    return check_and_sync(
        factory, config, config.mailboxes[0], connector or connect(sim)[0]
    )


def test_only_the_folders_that_changed_are_synced(
    factory: Any, config: Config, ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    rep_mailbox.add(mail(1), "sentitems")
    first = check(factory, config, ews)
    every = sync_mailbox(factory, config, config.mailboxes[0], connect(ews)[0])
    assert first.folders == every.folders > 1
    assert subjects(factory) == {"Order 1"}

    rep_mailbox.add(mail(2), "inbox")
    connector, _ = connect(ews)
    ews.reset_counts()
    report = check(factory, config, ews, connector)
    assert (report.folders, report.new) == (1, 1)
    assert ews.requests["SyncFolderItems"] == 1

    connector, _ = connect(ews)
    ews.reset_counts()
    quiet = check(factory, config, ews, connector)
    assert (quiet.folders, quiet.items) == (0, 0)
    assert ews.calls == [Call("GetEvents", REP, 200)]


def test_a_category_write_costs_the_next_check_one_sync_and_no_get_item(
    factory: Any, config: Config, ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    check(factory, config, ews)
    item = rep_mailbox.add(mail(1, author=ANDY), "inbox")
    assert check(factory, config, ews).categories_written == 1
    assert rep_mailbox.get(item).categories == ("Tailspin Toys",)

    connector, _ = connect(ews)
    ews.reset_counts()
    ours = check(factory, config, ews, connector)  # GetEvents saw our write
    assert (ours.folders, ours.items) == (1, 0)
    assert ews.requests["GetItem"] == 0
    assert check(factory, config, ews).folders == 0


def test_mail_that_came_while_the_subscription_lapsed_is_synced(
    factory: Any, config: Config, ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    check(factory, config, ews)
    ews.clock.advance(hours=2)  # the service was stopped
    rep_mailbox.add(mail(1), "inbox")
    rep_mailbox.add(mail(2), "sentitems")

    report = check(factory, config, ews)
    assert report.folders > 1  # every folder
    assert subjects(factory) == {"Order 1", "Order 2"}
    with factory() as session:
        saved = session.scalar(
            select(Cursor.value).where(Cursor.scope == SUBSCRIPTION_SCOPE)
        )
    assert saved is not None
    rep_mailbox.add(mail(3), "inbox")
    assert check(factory, config, ews).folders == 1  # the renewed one works


def test_a_crash_between_the_check_and_the_sync_loses_nothing(
    factory: Any, config: Config, ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    check(factory, config, ews)
    rep_mailbox.add(mail(1), "inbox")
    with pytest.raises(Crash):
        check(factory, config, ews, CrashAfter(connect(ews)[0], pages=0))
    assert subjects(factory) == set()

    report = check(factory, config, ews)  # GetEvents from the saved watermark
    assert (report.folders, report.new) == (1, 1)
    assert subjects(factory) == {"Order 1"}


def test_each_check_is_the_mailboxs_last_cycle_in_its_status(
    factory: Any, config: Config, ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    from mailsync.errors import TransientError
    from mailsync.queries import mailbox_status

    def status() -> Any:
        with factory() as session:
            (row,) = mailbox_status(session, 60, {REP})
        return row

    check(factory, config, ews)
    synced = status()
    ews.clock.advance(minutes=1)
    connector, _ = connect(ews)
    assert check(factory, config, ews, connector).folders == 0
    quiet = status()
    # An idle mailbox's check is its last cycle: no lag piles up between
    # the sweeps, and the next cycle is counted from it.
    assert quiet.last_cycle_at > synced.last_cycle_at
    assert quiet.last_error is None
    assert quiet.schedule.last_success_at == quiet.last_cycle_at

    rep_mailbox.faults.http_error(times=50, status=503, operation="GetEvents")
    with pytest.raises(TransientError):
        check(factory, config, ews, connector)
    failed = status()
    assert failed.last_cycle_at > quiet.last_cycle_at
    assert failed.last_error is not None
    assert "GetEvents still failing" in failed.last_error
    # The lag still counts from the last good check, not from the last page
    # the mailbox ever committed.
    assert failed.schedule.last_success_at == quiet.last_cycle_at


def test_a_name_in_folders_that_is_no_folder_stays_in_the_status_between_checks(
    factory: Any, config: Config, ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    from mailsync.queries import mailbox_status

    mailbox = config.mailboxes[0].model_copy(update={"folders": ["Inbox", "Inboxx"]})
    config = config.model_copy(update={"mailboxes": [mailbox]})
    rep_mailbox.add(mail(1), "inbox")

    def last_error() -> str | None:
        with factory() as session:
            (row,) = mailbox_status(session)
        return row.last_error

    connector, _ = connect(ews)
    first = check_and_sync(factory, config, mailbox, connector, keep_open=True)
    assert (first.folders, first.new) == (1, 1)  # the Inbox, all the same
    assert first.misconfigured and "'Inboxx' is no folder" in first.misconfigured
    quiet = check_and_sync(factory, config, mailbox, connector, keep_open=True)
    assert quiet.folders == 0
    assert last_error() == first.misconfigured
    rep_mailbox.add(mail(2), "inbox")  # and the checks go on working
    assert check_and_sync(factory, config, mailbox, connector).new == 1


def test_mail_moved_into_a_folder_made_since_is_synced_there_at_once(
    factory: Any, config: Config, ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    item = rep_mailbox.add(mail(1, author=ANDY), "inbox")
    connector, _ = connect(ews)
    mailbox = config.mailboxes[0]
    check_and_sync(factory, config, mailbox, connector, keep_open=True)
    check_and_sync(factory, config, mailbox, connector, keep_open=True)

    tailspin = rep_mailbox.add_folder("Tailspin", parent="inbox")
    rep_mailbox.move(item, tailspin.folder_id)
    report = check_and_sync(factory, config, mailbox, connector, keep_open=True)
    assert (report.folders, report.new) == (2, 0)  # the Inbox and the new one
    with factory() as session:
        live = session.execute(
            select(Source.folder, Source.activity_id).where(Source.removed_at.is_(None))
        ).all()
        activities = session.scalars(select(Activity.id)).all()
    assert live == [("Inbox/Tailspin", activities[0])] and len(activities) == 1
