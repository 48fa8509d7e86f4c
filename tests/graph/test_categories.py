"""Categories written back to Outlook through Graph, as for EWS.

A linked item gets a category naming each of its accounts; the write is not
taken for new work by the next sync; an item the rep changed meanwhile is
not overwritten. Expected values follow the Graph reference: PATCH answers
with the message, its new changeKey included; the next delta reports the
write as an update with that changeKey; a PATCH whose If-Match is an older
change key is refused with 412 ErrorIrresolvableConflict.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from mailsync.config import Config, parse_config
from mailsync.connectors.base import CategoryWrites
from mailsync.connectors.graph import GraphConnector
from mailsync.items import ChangeBatch, Folder, FolderRole
from mailsync.store.models import Source
from mailsync.sync import CycleReport, sync_mailbox
from tests.graph.conftest import CLIENT_ID, REP, connect, settings
from tests.graph.mailbox import Address, Mailbox, Message
from tests.graph.simulator import GraphSimulator
from tests.test_sync import account_timeline, import_crm

TAMARA = Address(REP, "Tamara Johnston")
ANDY = Address("andy.carothers@tailspintoys.com", "Andy Carothers")


def configure(url: str, sim: GraphSimulator, **categories: str) -> Config:
    return parse_config(
        {
            "database": {"url": url},
            "organisation": {"internal_domains": ["contoso.com"]},
            "categories": categories,
            "mailboxes": [settings(sim).model_dump(mode="json")],
        }
    )


@pytest.fixture
def crm(factory: Any, store_url: str, graph: GraphSimulator) -> None:
    import_crm(factory, configure(store_url, graph))


def mail(n: int, author: Address = ANDY, categories: tuple[str, ...] = ()) -> Message:
    when = datetime.now(UTC) - timedelta(days=3) + timedelta(hours=n)
    return Message(
        subject=f"Pilot question {n}",
        body=f"Question {n} about the scanning pilot.",
        author=author,
        sender=author,
        to=(TAMARA,),
        internet_message_id=f"<q{n}@example.com>",
        sent=when,
        received=when,
        categories=categories,
    )


def sync(factory: Any, config: Config, connector: Any = None) -> CycleReport:
    report = sync_mailbox(factory, config, config.mailboxes[0], connector)
    assert report.error is None
    return report


def patches(sim: GraphSimulator) -> int:
    return sim.batched["messages.patch"]


def test_a_linked_item_is_categorised_and_the_write_is_no_new_work(
    factory: Any, store_url: str, graph: GraphSimulator, rep_box: Mailbox, crm: Any
) -> None:
    config = configure(store_url, graph)
    item = rep_box.add(mail(1, categories=("Follow up",)))
    first = sync(factory, config)
    assert (first.new, first.categories_written) == (1, 1)
    assert rep_box.get(item).categories == ("Follow up", "Tailspin Toys")
    with factory() as session:
        stored = session.scalar(select(Source.change_key))
    assert stored == rep_box.get(item).change_key

    # The write is an update in the next delta, with the changeKey PATCH gave.
    graph.reset_counts()
    again = sync(factory, config)
    assert (again.items, again.updated, again.categories_written) == (0, 0, 0)
    assert patches(graph) == 0

    # A later change by the rep has another changeKey and is read.
    rep_box.update(item, categories=("Follow up", "Tailspin Toys", "Urgent"))
    graph.reset_counts()
    changed = sync(factory, config)
    assert changed.items == 1
    assert patches(graph) == 0  # it already has what it should
    assert [a.subject for a in account_timeline(factory)] == ["Pilot question 1"]


def test_writes_over_several_pages_are_remembered_in_the_cursors(
    factory: Any, store_url: str, graph: GraphSimulator, rep_box: Mailbox, crm: Any
) -> None:
    config = configure(store_url, graph)  # five changes a page
    items = rep_box.add_many([mail(n) for n in range(12)])
    graph.reset_counts()
    first = sync(factory, config)
    assert first.categories_written == 12
    assert patches(graph) == 12
    patched = [c for c in graph.calls if c.operation == "messages.patch"]
    assert len(patched) == 12 and all(c.batched for c in patched)
    assert all(rep_box.get(i).categories == ("Tailspin Toys",) for i in items)

    graph.reset_counts()
    again = sync(factory, config)
    assert (again.items, patches(graph)) == (0, 0)


def test_an_item_linked_to_no_account_and_link_off_are_left_alone(
    factory: Any, store_url: str, graph: GraphSimulator, rep_box: Mailbox, crm: Any
) -> None:
    stranger = Address("someone@unknown-company.example", "Someone")
    alone = rep_box.add(mail(1, author=stranger, categories=("Red",)))
    sync(factory, configure(store_url, graph))
    assert rep_box.get(alone).categories == ("Red",)

    linked = rep_box.add(mail(2))
    graph.reset_counts()
    report = sync(factory, configure(store_url, graph, link=""))
    assert (report.new, report.categories_written) == (1, 0)
    assert patches(graph) == 0
    assert rep_box.get(linked).categories == ()


def test_the_opt_out_category_unlinks_and_takes_ours_away(
    factory: Any, store_url: str, graph: GraphSimulator, rep_box: Mailbox, crm: Any
) -> None:
    config = configure(store_url, graph)
    item = rep_box.add(mail(1))
    sync(factory, config)
    assert rep_box.get(item).categories == ("Tailspin Toys",)
    rep_box.update(item, categories=("Tailspin Toys", "Don't track"))
    report = sync(factory, config)
    assert report.excluded_by == {"opted_out": 1}
    assert account_timeline(factory) == []
    assert rep_box.get(item).categories == ("Don't track",)


class RepEditsMeanwhile:
    """The real connector; the rep changes the first item mailsync is about
    to write, between the delta and the PATCH."""

    def __init__(self, inner: GraphConnector, box: Mailbox) -> None:
        self.inner, self.box = inner, box

    def folders(self) -> list[Folder]:
        return self.inner.folders()

    def changes(self, folder: Folder, cursor: str | None) -> Iterator[ChangeBatch]:
        return self.inner.changes(folder, cursor)

    def close(self) -> None:
        self.inner.close()

    def write_categories(
        self, folder: Folder, wanted: Mapping[str, tuple[str | None, Sequence[str]]]
    ) -> CategoryWrites:
        first = next(iter(wanted)).rsplit("/", 1)[-1]
        self.box.update(first, categories=("Urgent",))
        return self.inner.write_categories(folder, wanted)


def test_a_write_conflict_is_logged_and_tried_again_next_time(
    factory: Any,
    store_url: str,
    graph: GraphSimulator,
    rep_box: Mailbox,
    crm: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = configure(store_url, graph)
    first = rep_box.add(mail(1))
    second = rep_box.add(mail(2))
    connector, _ = connect(graph)
    with caplog.at_level(logging.WARNING, logger="mailsync"):
        report = sync(factory, config, RepEditsMeanwhile(connector, rep_box))
    assert (report.new, report.categories_written, report.categories_failed) == (
        2,
        1,
        1,
    )
    warning = next(r for r in caplog.records if "not written" in r.getMessage())
    assert REP in warning.getMessage()
    assert "ErrorIrresolvableConflict" in warning.getMessage()
    assert rep_box.get(first).categories == ("Urgent",)  # the rep's change
    assert rep_box.get(second).categories == ("Tailspin Toys",)

    again = sync(factory, config)
    assert (again.items, again.categories_written) == (1, 1)
    assert rep_box.get(first).categories == ("Urgent", "Tailspin Toys")


def test_a_server_error_on_the_write_does_not_stop_the_cycle(
    factory: Any, store_url: str, graph: GraphSimulator, rep_box: Mailbox, crm: Any
) -> None:
    config = configure(store_url, graph)
    item = rep_box.add(mail(1))
    graph.faults.unavailable(times=2, operation="messages.patch")
    connector, waits = connect(graph, retries=1)
    report = sync(factory, config, connector)
    assert (report.new, report.categories_written, report.categories_failed) == (
        1,
        0,
        1,
    )
    assert waits == [1.0]  # retried once, as any temporary failure
    assert rep_box.get(item).categories == ()
    assert report.folders > 1  # the other folders were synced


def test_without_mail_readwrite_the_write_fails_and_says_why(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    graph.add_app(CLIENT_ID, "Mail.Read", "Calendars.Read", "Tasks.Read.All")
    rep_box.add(mail(1))
    connector, _ = connect(graph)
    inbox = next(f for f in connector.folders() if f.role is FolderRole.INBOX)
    (item,) = next(connector.changes(inbox, None)).items
    result = connector.write_categories(
        inbox, {item.provider_id: (item.change_key, ["Tailspin Toys"])}
    )
    assert "ErrorAccessDenied" in result.failed[item.provider_id]
    assert "needs Mail.ReadWrite" in result.failed[item.provider_id]


def test_the_write_gives_a_new_change_key_that_the_cursor_remembers(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    sim_item = rep_box.add(mail(1, categories=("Red",)))
    connector, _ = connect(graph)
    inbox = next(f for f in connector.folders() if f.role is FolderRole.INBOX)
    pages = connector.changes(inbox, None)
    page = next(pages)
    (item,) = page.items
    assert page.cursor is not None
    assert "written" not in json.loads(page.cursor)

    result = connector.write_categories(
        inbox, {item.provider_id: (item.change_key, ["Red", "Tailspin Toys"])}
    )
    new_key = result.change_keys[item.provider_id]
    assert new_key != item.change_key
    assert new_key == rep_box.get(sim_item).change_key
    # The write came after the last page: one more page carries the memory.
    (tail,) = list(pages)
    assert (tail.items, tail.removed, tail.rejected) == ([], [], [])
    assert tail.cursor is not None
    assert json.loads(tail.cursor)["written"] == {sim_item.id: new_key}

    # Graph reports the write as an update with that changeKey, which the
    # cursor's memory drops.
    graph.reset_counts()
    batches = list(connector.changes(inbox, tail.cursor))
    assert [b.items for b in batches] == [[]]
    assert graph.requests["messages.delta"] == 1

    stale = connector.write_categories(
        inbox, {item.provider_id: (item.change_key, ["Blue"])}
    )
    assert "ErrorIrresolvableConflict" in stale.failed[item.provider_id]
    assert rep_box.get(sim_item).categories == ("Red", "Tailspin Toys")
