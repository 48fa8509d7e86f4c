"""Categories written back to Outlook, through the real exchangelib.

A linked item gets a category naming each of its accounts; the write is not
taken for new work by the next sync; a rep opts an item out with a category.
Expected values follow the EWS reference: UpdateItem answers with the item's
new ChangeKey, the next SyncFolderItems reports the write as an Update, and
NeverOverwrite with a stale ChangeKey is ErrorIrresolvableConflict.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from exchangelib.protocol import close_connections
from sqlalchemy import select

from mailsync.categories import wanted_categories
from mailsync.config import CategoriesConfig, Config, parse_config
from mailsync.connectors.base import CategoryWrites
from mailsync.connectors.ews import EwsConnector
from mailsync.items import ChangeBatch, Folder
from mailsync.store.db import transaction
from mailsync.store.directory import account_by_name
from mailsync.store.history import set_manual_link
from mailsync.store.models import Activity, Source
from mailsync.sync import CycleReport, sync_mailbox
from tests.ews.conftest import REP, SERVICE_PASSWORD
from tests.ews.simulator import Address, EwsSimulator, SimMailbox, SimMessage
from tests.ews.test_connector import connect, settings
from tests.test_sync import account_timeline, import_crm

TAMARA = Address(REP, "Tamara Johnston")
ANDY = Address("andy.carothers@tailspintoys.com", "Andy Carothers")
BEN = Address("ben.miller@fabrikam.com", "Ben Miller")


@pytest.fixture(autouse=True)
def _close_sessions() -> Iterator[None]:
    yield
    close_connections()


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILSYNC_TEST_EWS_PASSWORD", SERVICE_PASSWORD)


def configure(url: str, sim: EwsSimulator, **categories: str) -> Config:
    return parse_config(
        {
            "database": {"url": url},
            "organisation": {"internal_domains": ["contoso.com"]},
            "categories": categories,
            "mailboxes": [settings(sim, page_size=5).model_dump(mode="json")],
        }
    )


@pytest.fixture
def crm(factory: Any, store_url: str, ews: EwsSimulator) -> None:
    import_crm(factory, configure(store_url, ews))


def mail(
    n: int, author: Address = ANDY, categories: tuple[str, ...] = ()
) -> SimMessage:
    return SimMessage(
        subject=f"Pilot question {n}",
        author=author,
        to=(TAMARA,),
        message_id=f"<q{n}@example.com>",
        datetime_sent=datetime(2026, 9, 1, tzinfo=UTC) + timedelta(hours=n),
        body=f"Question {n} about the scanning pilot.",
        categories=categories,
    )


def sync(factory: Any, config: Config, connector: Any = None) -> CycleReport:
    report = sync_mailbox(factory, config, config.mailboxes[0], connector)
    assert report.error is None
    return report


def test_a_linked_item_is_categorised_and_the_write_is_no_new_work(
    factory: Any, store_url: str, ews: EwsSimulator, rep_mailbox: SimMailbox, crm: Any
) -> None:
    config = configure(store_url, ews)
    item = rep_mailbox.add(mail(1, categories=("Follow up",)), "inbox")
    first = sync(factory, config)
    assert (first.new, first.categories_written) == (1, 1)
    assert rep_mailbox.get(item).categories == ("Follow up", "Tailspin Toys")
    with factory() as session:
        stored = session.scalar(select(Source.change_key))
    assert stored == rep_mailbox.get(item).change_key

    # The write is an Update in the next SyncFolderItems, with the ChangeKey
    # UpdateItem gave: dropped without a GetItem.
    ews.reset_counts()
    again = sync(factory, config)
    assert (again.items, again.updated, again.categories_written) == (0, 0, 0)
    assert ews.requests["GetItem"] == 0
    assert ews.requests["UpdateItem"] == 0

    # A later change by the rep has another ChangeKey and is read.
    rep_mailbox.update(item, categories=("Follow up", "Tailspin Toys", "Urgent"))
    ews.reset_counts()
    changed = sync(factory, config)
    assert changed.items == 1
    assert ews.requests["GetItem"] == 1
    assert ews.requests["UpdateItem"] == 0  # it already has what it should
    assert [a.subject for a in account_timeline(factory)] == ["Pilot question 1"]


def test_writes_over_several_pages_are_remembered_in_the_cursors(
    factory: Any, store_url: str, ews: EwsSimulator, rep_mailbox: SimMailbox, crm: Any
) -> None:
    config = configure(store_url, ews)  # five changes a page
    items = rep_mailbox.add_many([mail(n) for n in range(12)], "inbox")
    first = sync(factory, config)
    assert first.categories_written == 12
    assert ews.requests["UpdateItem"] == 3  # one request per page of items
    assert all(rep_mailbox.get(i).categories == ("Tailspin Toys",) for i in items)

    ews.reset_counts()
    again = sync(factory, config)
    assert (again.items, ews.requests["GetItem"], ews.requests["UpdateItem"]) == (
        0,
        0,
        0,
    )


def test_an_item_linked_to_no_account_and_link_off_are_left_alone(
    factory: Any, store_url: str, ews: EwsSimulator, rep_mailbox: SimMailbox, crm: Any
) -> None:
    stranger = Address("someone@unknown-company.example", "Someone")
    alone = rep_mailbox.add(mail(1, author=stranger, categories=("Red",)), "inbox")
    sync(factory, configure(store_url, ews))
    assert rep_mailbox.get(alone).categories == ("Red",)

    linked = rep_mailbox.add(mail(2), "inbox")
    ews.reset_counts()
    report = sync(factory, configure(store_url, ews, link=""))
    assert (report.new, report.categories_written) == (1, 0)
    assert ews.requests["UpdateItem"] == 0
    assert rep_mailbox.get(linked).categories == ()


def test_a_custom_format_names_the_account(
    factory: Any, store_url: str, ews: EwsSimulator, rep_mailbox: SimMailbox, crm: Any
) -> None:
    item = rep_mailbox.add(mail(1), "inbox")
    sync(factory, configure(store_url, ews, link="CRM: {account}"))
    assert rep_mailbox.get(item).categories == ("CRM: Tailspin Toys",)


def test_a_custom_opt_out_category_unlinks_and_takes_ours_away(
    factory: Any, store_url: str, ews: EwsSimulator, rep_mailbox: SimMailbox, crm: Any
) -> None:
    config = configure(store_url, ews, opt_out="CRM: skip")
    item = rep_mailbox.add(mail(1), "inbox")
    kept = rep_mailbox.add(mail(2, categories=("Don't track",)), "inbox")
    sync(factory, config)
    # "Don't track" is no opt-out any more: the item is linked.
    assert rep_mailbox.get(kept).categories == ("Don't track", "Tailspin Toys")
    assert rep_mailbox.get(item).categories == ("Tailspin Toys",)

    rep_mailbox.update(item, categories=("Tailspin Toys", "crm: SKIP"))
    report = sync(factory, config)
    assert report.excluded_by == {"opted_out": 1}
    subjects = [a.subject for a in account_timeline(factory)]
    assert subjects == ["Pilot question 2"]
    assert rep_mailbox.get(item).categories == ("crm: SKIP",)


def test_a_manual_unlink_takes_the_category_away_at_the_resync(
    factory: Any, store_url: str, ews: EwsSimulator, rep_mailbox: SimMailbox, crm: Any
) -> None:
    config = configure(store_url, ews)
    item = rep_mailbox.add(mail(1, categories=("Follow up",)), "inbox")
    sync(factory, config)
    assert rep_mailbox.get(item).categories == ("Follow up", "Tailspin Toys")

    with transaction(factory) as session:
        activity_id = session.scalar(select(Activity.id))
        tailspin = account_by_name(session, "Tailspin Toys")
        assert activity_id is not None and tailspin is not None
        set_manual_link(session, activity_id, ("account", tailspin.id), False)
    rep_mailbox.reset_sync_states()  # every folder is read again
    report = sync(factory, config)
    assert report.categories_written == 1
    assert rep_mailbox.get(item).categories == ("Follow up",)


def test_relinking_swaps_the_managed_category_and_keeps_the_others() -> None:
    settings = CategoriesConfig()
    managed = frozenset(
        settings.link_category(n).casefold()
        for n in ("Tailspin Toys", "Fabrikam, Inc.", "Wingtip Toys")
    )
    own = ("fabrikam, inc.", "Urgent", "Tailspin Toys")
    assert wanted_categories(own, ["Tailspin Toys"], managed, settings) == (
        "Urgent",
        "Tailspin Toys",
    )
    assert wanted_categories(own, [], managed, settings) == ("Urgent",)


class RepEditsMeanwhile:
    """The real connector; the rep changes the first item mailsync is about
    to write, between its GetItem and its UpdateItem."""

    def __init__(self, inner: EwsConnector, mailbox: SimMailbox) -> None:
        self.inner, self.mailbox = inner, mailbox

    def folders(self) -> list[Folder]:
        return self.inner.folders()

    def changes(self, folder: Folder, cursor: str | None) -> Iterator[ChangeBatch]:
        return self.inner.changes(folder, cursor)

    def close(self) -> None:
        self.inner.close()

    def write_categories(
        self, folder: Folder, wanted: Mapping[str, tuple[str | None, Sequence[str]]]
    ) -> CategoryWrites:
        first = next(iter(wanted))
        self.mailbox.update(first, categories=("Urgent",))
        return self.inner.write_categories(folder, wanted)


def test_a_write_conflict_is_logged_and_tried_again_next_time(
    factory: Any,
    store_url: str,
    ews: EwsSimulator,
    rep_mailbox: SimMailbox,
    crm: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = configure(store_url, ews)
    first = rep_mailbox.add(mail(1), "inbox")
    second = rep_mailbox.add(mail(2), "inbox")
    connector, _ = connect(ews)
    with caplog.at_level(logging.WARNING, logger="mailsync"):
        report = sync(factory, config, RepEditsMeanwhile(connector, rep_mailbox))
    assert (report.new, report.categories_written, report.categories_failed) == (
        2,
        1,
        1,
    )
    warning = next(r for r in caplog.records if "not written" in r.getMessage())
    assert REP in warning.getMessage()
    assert "ErrorIrresolvableConflict" in warning.getMessage()
    assert rep_mailbox.get(first).categories == ("Urgent",)  # the rep's change
    assert rep_mailbox.get(second).categories == ("Tailspin Toys",)

    again = sync(factory, config)
    assert (again.items, again.categories_written) == (1, 1)
    assert rep_mailbox.get(first).categories == ("Urgent", "Tailspin Toys")


def test_a_server_error_on_the_write_does_not_stop_the_cycle(
    factory: Any, store_url: str, ews: EwsSimulator, rep_mailbox: SimMailbox, crm: Any
) -> None:
    config = configure(store_url, ews)
    item = rep_mailbox.add(mail(1), "inbox")
    rep_mailbox.faults.http_error(times=2, operation="UpdateItem")
    connector, waits = connect(ews, retries=1)
    report = sync(factory, config, connector)
    assert (report.new, report.categories_written, report.categories_failed) == (
        1,
        0,
        1,
    )
    assert waits == [1.0]  # retried once, as any temporary failure
    assert rep_mailbox.get(item).categories == ()
    assert report.folders > 1  # the other folders were synced


def test_the_write_gives_a_new_change_key_that_the_cursor_remembers(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    sim_item = rep_mailbox.add(mail(1, categories=("Red",)), "inbox")
    connector, _ = connect(ews)
    inbox = next(f for f in connector.folders() if f.name == "Inbox")
    pages = connector.changes(inbox, None)
    page = next(pages)
    (item,) = page.items
    assert page.cursor is not None
    assert "written" not in json.loads(page.cursor)  # the shape older cursors have

    result = connector.write_categories(
        inbox, {item.provider_id: (item.change_key, ["Red", "Tailspin Toys"])}
    )
    new_key = result.change_keys[item.provider_id]
    assert new_key != item.change_key
    assert new_key == rep_mailbox.get(sim_item).change_key
    # The write came after the last page: one more page carries the memory.
    (tail,) = list(pages)
    assert (tail.items, tail.removed, tail.rejected) == ([], [], [])
    assert tail.cursor is not None
    assert json.loads(tail.cursor)["written"] == {item.provider_id: new_key}

    # Exchange reports the write as an Update with that ChangeKey ...
    state = json.loads(page.cursor)["state"]
    ews_inbox = connector.account.inbox
    changes = list(ews_inbox.sync_items(sync_state=state, only_fields=["subject"]))
    assert [(kind, i.id, i.changekey) for kind, i in changes] == [
        ("update", item.provider_id, new_key)
    ]
    # ... which the cursor's memory drops without a GetItem.
    ews.reset_counts()
    assert [b.items for b in connector.changes(inbox, tail.cursor)] == [[]]
    assert ews.requests["GetItem"] == 0

    stale = connector.write_categories(
        inbox, {item.provider_id: (item.change_key, ["Blue"])}
    )
    assert "ErrorIrresolvableConflict" in stale.failed[item.provider_id]
    assert rep_mailbox.get(sim_item).categories == ("Red", "Tailspin Toys")


@pytest.mark.parametrize(
    ("categories", "says"),
    [
        ({"link": "{acount}"}, "categories.link: '{acount}' must name the account"),
        ({"link": "{account"}, "categories.link: '{account' is not a category"),
        ({"opt_out": " "}, "categories.opt_out: is empty; give the category"),
        ({"color": "red"}, "categories.color: unknown key"),
    ],
)
def test_a_wrong_categories_setting_names_the_key_and_the_fix(
    categories: dict[str, str], says: str
) -> None:
    from mailsync.errors import ConfigError

    raw = {"organisation": {"internal_domains": ["contoso.com"]}}
    with pytest.raises(ConfigError, match=re.escape(says)):
        parse_config({**raw, "categories": categories})
