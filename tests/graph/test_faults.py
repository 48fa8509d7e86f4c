"""Throttling and faults: what Graph's throttling guidance asks, shown.

Graph answers an app over its limits with 429 and, usually, Retry-After in
seconds; a 503 may carry Retry-After too. Where none is given the client
backs off exponentially. A delta token the server forgot is a 410
(SyncStateNotFound): the folder is read again. Outlook allows four
requests in flight per app and mailbox.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from mailsync.config import parse_config
from mailsync.errors import TransientError
from mailsync.items import FolderRole
from mailsync.store.models import Activity, Source
from mailsync.sync import sync_mailbox
from tests.contract import drain, message
from tests.graph.conftest import connect, settings
from tests.graph.mailbox import Mailbox, Message
from tests.graph.simulator import GraphSimulator


def fill(box: Mailbox, count: int) -> None:
    for n in range(count):
        box.add(Message.from_mime(message(n)))


def inbox_of(connector: Any) -> Any:
    return next(f for f in connector.folders() if f.role is FolderRole.INBOX)


def test_a_429_waits_the_retry_after_and_asks_again(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    fill(rep_box, 7)
    connector, waits = connect(graph)
    inbox = inbox_of(connector)
    graph.reset_counts()
    graph.faults.throttle(times=2, retry_after=7, operation="messages.delta")
    items = drain(connector, inbox, None)[0]
    assert len(items) == 7
    assert waits == [7.0, 7.0]
    assert [c.status for c in graph.calls] == [429, 429, 200, 200]


def test_a_429_without_retry_after_backs_off_exponentially(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    fill(rep_box, 3)
    connector, waits = connect(graph)
    inbox = inbox_of(connector)
    graph.faults.throttle(times=3, operation="messages.delta")
    assert len(drain(connector, inbox, None)[0]) == 3
    assert waits == [1.0, 2.0, 4.0]


def test_a_retry_after_longer_than_allowed_is_capped(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    fill(rep_box, 1)
    connector, waits = connect(graph, max_retry_wait=10.0)
    inbox = inbox_of(connector)
    graph.faults.throttle(times=1, retry_after=600, operation="messages.delta")
    drain(connector, inbox, None)
    assert waits == [10.0]


def test_a_503_is_retried_with_its_retry_after_or_backing_off(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    fill(rep_box, 2)
    connector, waits = connect(graph)
    inbox = inbox_of(connector)
    graph.faults.unavailable(times=1, retry_after=3, operation="messages.delta")
    graph.faults.unavailable(times=1, operation="messages.delta")
    assert len(drain(connector, inbox, None)[0]) == 2
    assert waits == [3.0, 2.0]  # the second attempt backs off 2 s


def test_failures_that_last_become_a_transient_error(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    fill(rep_box, 1)
    connector, waits = connect(graph, retries=2)
    inbox = inbox_of(connector)
    graph.faults.unavailable(times=5, operation="messages.delta")
    with pytest.raises(TransientError, match="still failing after 2 retries"):
        drain(connector, inbox, None)
    assert waits == [1.0, 2.0]


@pytest.mark.parametrize("short", [False, True], ids=["connection-closed", "cut-body"])
def test_a_truncated_page_is_asked_for_again(
    graph: GraphSimulator, rep_box: Mailbox, short: bool
) -> None:
    fill(rep_box, 12)
    connector, waits = connect(graph)
    inbox = inbox_of(connector)
    _, _, first, _ = drain(connector, inbox, None)
    graph.faults.truncate(times=1, operation="messages.delta", short=short)
    items, _, batches, _ = drain(connector, inbox, None)
    assert sorted(i.subject for i in items) == sorted(f"Order {n}" for n in range(12))
    assert len(batches) == len(first) == 3
    assert waits == [1.0]


def test_a_cut_connection_is_retried(graph: GraphSimulator, rep_box: Mailbox) -> None:
    fill(rep_box, 3)
    connector, waits = connect(graph)
    inbox = inbox_of(connector)
    graph.faults.cut(times=1, operation="messages.delta")
    assert len(drain(connector, inbox, None)[0]) == 3
    assert waits == [1.0]


def test_a_throttled_request_inside_a_batch_is_sent_again_alone(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    connector, waits = connect(graph)
    graph.reset_counts()
    graph.faults.throttle(times=1, retry_after=2, operation="calendar.get")
    folders = connector.folders()
    assert any(f.role is FolderRole.CALENDAR for f in folders)
    assert graph.requests["$batch"] == 2
    assert graph.batched["mailFolders.get"] == 6  # not asked again
    assert graph.batched["calendar.get"] == 2
    assert waits == [2.0]


def test_a_batch_part_throttled_past_its_retries_is_a_transient_error(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    # The folder listing's $batch: a 429 that lasts is the server busy, to be
    # tried again next cycle, not a bug.
    connector, waits = connect(graph, retries=2)
    graph.faults.throttle(times=10, retry_after=1, operation="calendar.get")
    with pytest.raises(TransientError, match="429"):
        connector.folders()
    assert waits == [1.0, 1.0]


def test_no_more_than_four_requests_are_in_flight_per_mailbox(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    for n in range(12):
        parent = rep_box.add_folder(f"Customer {n}", parent="inbox")
        rep_box.add_folder("Orders", parent=rep_box.path(parent))
    graph.latency = 0.05  # every answer takes a while: requests overlap
    connector, _ = connect(graph)
    graph.reset_counts()
    folders = connector.folders()
    assert len([f for f in folders if f.name.startswith("Inbox/")]) == 24
    assert graph.requests["childFolders"] == 13
    assert graph.max_in_flight[rep_box.address] == 4
    assert graph.refused_concurrency == 0


# --- an expired delta token, through the core -------------------------------


def configure(url: str, sim: GraphSimulator) -> Any:
    return parse_config(
        {
            "database": {"url": url},
            "organisation": {"internal_domains": ["contoso.com"]},
            "mailboxes": [settings(sim).model_dump(mode="json")],
        }
    )


def test_a_410_drops_the_cursor_and_reads_the_window_again_with_no_duplicate(
    store_url: str, factory: Any, graph: GraphSimulator, rep_box: Mailbox
) -> None:
    from tests.test_sync import import_crm

    config = configure(store_url, graph)
    import_crm(factory, config)
    for n in range(7):
        rep_box.add(Message.from_mime(message(n, sender="andy@tailspintoys.com")))
    first = sync_mailbox(factory, config, config.mailboxes[0])
    assert first.new == 7 and first.error is None

    rep_box.add(Message.from_mime(message(50)))
    graph.faults.gone(operation="messages.delta")
    again = sync_mailbox(factory, config, config.mailboxes[0])
    assert again.error is None
    assert (again.new, again.items) == (1, 8)  # all read again, one new
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Activity)) == 8
        assert session.scalar(select(func.count()).select_from(Source)) == 8
    statuses = [
        c.status
        for c in graph.calls
        if c.operation == "messages.delta" and c.status != 200
    ]
    assert statuses == [410]
