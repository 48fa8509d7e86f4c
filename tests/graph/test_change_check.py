"""The cheap change check between syncs, for Microsoft 365: each folder's
deltaLink asked again, 20 to a ``$batch``.

Expected values follow the Graph reference: a delta query from a deltaLink
answers an empty ``value`` and a new deltaLink when nothing changed; a
``$batch`` takes up to 20 requests with URLs relative to the version; an
expired token is 410 SyncStateNotFound. The EWS equivalents, with a pull
subscription, are in tests/ews/test_subscriptions.py.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from sqlalchemy import func, select

from mailsync.config import Config
from mailsync.connectors.graph import GraphConnector
from mailsync.errors import TransientError
from mailsync.store.models import Activity, Source
from mailsync.sync import CycleReport, CycleStopped, check_and_sync, sync_mailbox
from tests.graph.conftest import connect
from tests.graph.mailbox import Address, Mailbox
from tests.graph.simulator import GraphSimulator
from tests.graph.test_categories import configure, mail
from tests.test_sync import import_crm

DELTAS = ("messages.delta", "calendarView.delta", "todo.tasks.delta")
STRANGER = Address("someone@unknown-company.example", "Someone")


@pytest.fixture
def config(factory: Any, store_url: str, graph: GraphSimulator) -> Config:
    config = configure(store_url, graph)
    import_crm(factory, config)
    return config


def check(factory: Any, config: Config, connector: GraphConnector) -> CycleReport:
    """A check and a sync of what changed, the connector kept open between
    checks as the service keeps it."""
    report = check_and_sync(
        factory, config, config.mailboxes[0], connector, keep_open=True
    )
    assert report.error is None
    return report


def sweep(factory: Any, config: Config, connector: GraphConnector) -> CycleReport:
    report = sync_mailbox(
        factory, config, config.mailboxes[0], connector, keep_open=True
    )
    assert report.error is None
    return report


def deltas(sim: GraphSimulator, counter: str = "requests") -> dict[str, int]:
    counts = getattr(sim, counter)
    return {op: counts[op] for op in DELTAS if counts[op]}


def count(factory: Any, model: type) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def inbox_of(connector: GraphConnector) -> str:
    return next(f.id for f in connector.folders() if f.name == "Inbox")


# --- the connector's change check -------------------------------------------


def test_a_fresh_connector_cannot_tell_and_asks_nothing(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    connector, _ = connect(graph)
    graph.reset_counts()
    changed, state = connector.changed_folders(None)
    assert changed is None and state
    assert connector.changed_folders(state)[0] is None
    connector.folders()  # a listing alone settles nothing
    assert connector.changed_folders(state)[0] is None
    assert not deltas(graph) and not deltas(graph, "batched")


def test_an_idle_check_is_one_batch_of_delta_links_per_twenty_folders(
    factory: Any, config: Config, graph: GraphSimulator, rep_box: Mailbox
) -> None:
    connector, _ = connect(graph)
    rep_box.add(mail(1, author=STRANGER), "inbox")
    first = check(factory, config, connector)  # cannot tell: every folder
    assert first.folders == 6  # 4 mail folders, the calendar, the To Do list
    assert count(factory, Activity) == 1

    graph.reset_counts()
    quiet = check(factory, config, connector)
    assert (quiet.folders, quiet.items) == (0, 0)
    assert dict(graph.requests) == {"$batch": 1}  # the whole check
    assert deltas(graph, "batched") == {
        "messages.delta": 4,
        "calendarView.delta": 1,
        "todo.tasks.delta": 1,
    }

    # 25 folders more, found by the sweep: 31 delta links, two $batch.
    for n in range(25):
        rep_box.add_folder(f"Customer {n}", parent="inbox")
    assert sweep(factory, config, connector).folders == 31
    graph.reset_counts()
    assert check(factory, config, connector).folders == 0
    assert dict(graph.requests) == {"$batch": math.ceil(31 / 20)}
    assert sum(deltas(graph, "batched").values()) == 31
    # And again: each quiet answer's new deltaLink is as good as the old.
    graph.reset_counts()
    assert check(factory, config, connector).folders == 0
    assert dict(graph.requests) == {"$batch": 2}


def test_new_mail_in_one_folder_is_named_and_only_it_is_read(
    factory: Any, config: Config, graph: GraphSimulator, rep_box: Mailbox
) -> None:
    connector, _ = connect(graph)
    check(factory, config, connector)
    inbox = inbox_of(connector)
    rep_box.add(mail(2, author=STRANGER), "inbox")

    changed, _ = connector.changed_folders(None)
    assert changed == {inbox}
    graph.reset_counts()
    report = check(factory, config, connector)
    assert (report.folders, report.new) == (1, 1)
    # The check's $batch, then the listing and one delta GET of the Inbox.
    assert deltas(graph) == {"messages.delta": 1}
    assert graph.batched["messages.delta"] == 4
    assert check(factory, config, connector).folders == 0


def test_a_read_flag_is_no_news_for_the_check(
    factory: Any, config: Config, graph: GraphSimulator, rep_box: Mailbox
) -> None:
    connector, _ = connect(graph)
    item = rep_box.add(mail(3, author=STRANGER), "inbox")
    check(factory, config, connector)
    rep_box.mark_read(item)
    assert connector.changed_folders(None)[0] == set()
    rep_box.update(item, subject="Pilot question 3, answered")
    assert connector.changed_folders(None)[0] == {inbox_of(connector)}


def test_a_folder_whose_sync_failed_midway_is_not_trusted(
    factory: Any, config: Config, graph: GraphSimulator, rep_box: Mailbox
) -> None:
    connector, _ = connect(graph, retries=1)
    check(factory, config, connector)
    rep_box.add_many([mail(10 + n, author=STRANGER) for n in range(12)], "inbox")

    def fail_after_the_first_page() -> bool:
        graph.faults.unavailable(times=10, operation="messages.delta")
        return False

    with pytest.raises(TransientError):
        check_and_sync(
            factory,
            config,
            config.mailboxes[0],
            connector,
            keep_open=True,
            stop=fail_after_the_first_page,
        )
    assert count(factory, Activity) == 5  # the first page is committed
    graph.faults.clear()
    assert connector.changed_folders(None)[0] is None  # sync every folder

    again = check(factory, config, connector)
    assert again.folders == 6
    assert count(factory, Activity) == 12
    assert check(factory, config, connector).folders == 0


def test_a_folder_whose_sync_was_stopped_is_not_trusted(
    factory: Any, config: Config, graph: GraphSimulator, rep_box: Mailbox
) -> None:
    connector, _ = connect(graph)
    check(factory, config, connector)
    rep_box.add_many([mail(30 + n, author=STRANGER) for n in range(7)], "inbox")
    with pytest.raises(CycleStopped):
        check_and_sync(
            factory,
            config,
            config.mailboxes[0],
            connector,
            keep_open=True,
            stop=lambda: True,
        )
    assert count(factory, Activity) == 5
    assert connector.changed_folders(None)[0] is None
    check(factory, config, connector)
    assert count(factory, Activity) == 7


def test_an_expired_token_in_a_check_is_a_change_and_the_sync_recovers(
    factory: Any, config: Config, graph: GraphSimulator, rep_box: Mailbox
) -> None:
    connector, _ = connect(graph)
    rep_box.add_many([mail(40 + n, author=STRANGER) for n in range(3)], "inbox")
    check(factory, config, connector)
    inbox = inbox_of(connector)
    stored = count(factory, Activity), count(factory, Source)

    rep_box.delta.forget(f"mail:{inbox}")  # the Inbox's tokens expired
    graph.reset_counts()
    changed, _ = connector.changed_folders(None)
    assert changed == {inbox}
    assert [c.status for c in graph.calls if c.status == 410] == [410]

    graph.reset_counts()
    report = check(factory, config, connector)  # 410, then the window again
    assert (report.folders, report.new) == (1, 0)
    assert graph.requests["messages.delta"] == 2
    assert (count(factory, Activity), count(factory, Source)) == stored
    assert check(factory, config, connector).folders == 0


def test_a_category_write_costs_the_next_check_one_sync_and_no_get_of_the_item(
    factory: Any, config: Config, graph: GraphSimulator, rep_box: Mailbox
) -> None:
    connector, _ = connect(graph)
    check(factory, config, connector)
    item = rep_box.add(mail(50), "inbox")
    assert check(factory, config, connector).categories_written == 1
    assert rep_box.get(item).categories == ("Tailspin Toys",)

    graph.reset_counts()
    ours = check(factory, config, connector)  # the delta shows our write
    assert (ours.folders, ours.items) == (1, 0)
    for operation in ("messages.get", "messages.value"):
        assert graph.requests[operation] + graph.batched[operation] == 0
    assert deltas(graph) == {"messages.delta": 1}
    assert check(factory, config, connector).folders == 0
