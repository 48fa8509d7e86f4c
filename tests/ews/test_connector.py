"""The Exchange connector against the EWS simulator, through the real exchangelib.

Nothing is patched: exchangelib talks HTTP to the simulator on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from exchangelib.protocol import close_connections
from sqlalchemy import func, select

from mailsync.config import EwsMailbox, parse_config
from mailsync.connectors.ews import EwsConnector
from mailsync.errors import TransientError, UserError
from mailsync.secrets import Secret
from mailsync.store.models import Activity, Source
from mailsync.sync import sync_mailbox
from tests.conftest import CONTOSO
from tests.contract import ConnectorContract, message
from tests.ews.conftest import REP, SERVICE_PASSWORD, SERVICE_USER
from tests.ews.simulator import EwsSimulator, SimMailbox, SimMessage

FOLDERS = {"Inbox": "inbox", "Sent": "sentitems", "Drafts": "drafts"}


@pytest.fixture(autouse=True)
def _close_sessions() -> Iterator[None]:
    yield
    close_connections()


def settings(sim: EwsSimulator, **changes: Any) -> EwsMailbox:
    values: dict[str, Any] = {
        "address": REP,
        "rep": "Tamara Johnston",
        "kind": "ews",
        "endpoint": sim.url,
        "username": SERVICE_USER,
        "auth": "basic",
        "password_env": "MAILSYNC_TEST_EWS_PASSWORD",
        "page_size": 5,
        "max_retry_wait": 1.0,
    }
    values.update(changes)
    return EwsMailbox.model_validate(values)


def connect(sim: EwsSimulator, password: str = SERVICE_PASSWORD, **changes: Any):
    waits: list[float] = []
    connector = EwsConnector(
        settings(sim, **changes), Secret(password, "test"), sleep=waits.append
    )
    return connector, waits


class SimBox:
    """Puts real messages into the simulated mailbox, as Exchange delivery would."""

    def __init__(self, sim: EwsSimulator, mailbox: SimMailbox) -> None:
        self.sim, self.mailbox = sim, mailbox
        self.items: dict[str, list[SimMessage]] = {}

    def add(self, folder: str, raw: bytes) -> None:
        item = self.mailbox.add(SimMessage.from_mime(raw), FOLDERS[folder])
        self.items.setdefault(folder, []).append(item)

    def remove(self, folder: str, index: int) -> None:
        self.mailbox.delete(self.items[folder].pop(index), hard=True)

    def add_unreadable(self, folder: str) -> None:
        item = self.mailbox.add(SimMessage(subject="broken", mime=b""), FOLDERS[folder])
        self.items.setdefault(folder, []).append(item)


class TestEwsContract(ConnectorContract):
    @pytest.fixture
    def mailbox(self, ews: EwsSimulator, rep_mailbox: SimMailbox) -> SimBox:
        return SimBox(ews, rep_mailbox)

    def connector(self, mailbox: SimBox) -> EwsConnector:
        connector, _ = connect(mailbox.sim)
        return connector

    def test_pages_follow_the_page_size_and_fetch_in_chunks(
        self, mailbox: SimBox
    ) -> None:
        self.fill(mailbox, 12)
        connector = self.connector(mailbox)
        inbox = self.folder(connector, "Inbox")
        mailbox.sim.reset_counts()
        batches = list(connector.changes(inbox, None))
        assert [len(b.items) for b in batches] == [5, 5, 2]
        assert mailbox.sim.requests["SyncFolderItems"] == 3
        assert mailbox.sim.requests["GetItem"] == 3


def test_server_busy_waits_the_back_off_and_retries_the_same_page(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    for n in range(3):
        rep_mailbox.add(SimMessage.from_mime(message(n)), "inbox")
    connector, waits = connect(ews)
    inbox = next(f for f in connector.folders() if f.name == "Inbox")
    rep_mailbox.faults.server_busy(
        times=2, back_off_ms=250, operation="SyncFolderItems"
    )
    ews.reset_counts()

    items = [i for b in connector.changes(inbox, None) for i in b.items]
    assert len(items) == 3
    assert waits == [0.25, 0.25]
    assert ews.requests["SyncFolderItems"] == 3  # two refused, one answered


def test_temporary_failures_are_retried_then_reported(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    rep_mailbox.add(SimMessage.from_mime(message(1)), "inbox")
    connector, waits = connect(ews, retries=2)
    inbox = next(f for f in connector.folders() if f.name == "Inbox")
    rep_mailbox.faults.http_error(times=1, operation="GetItem")
    assert len([i for b in connector.changes(inbox, None) for i in b.items]) == 1
    assert waits == [1.0]

    rep_mailbox.faults.http_error(times=5, operation="SyncFolderItems")
    with pytest.raises(TransientError, match="SyncFolderItems still failing"):
        list(connector.changes(inbox, None))


def test_a_wrong_password_is_a_user_error(ews: EwsSimulator) -> None:
    connector, _ = connect(ews, password="wrong")
    with pytest.raises(UserError, match="refused the credentials of svc-mailsync"):
        connector.folders()


def contoso_on_exchange(sim: EwsSimulator, mailbox: SimMailbox) -> None:
    """The Contoso sample mailbox, delivered into the simulated Exchange mailbox."""
    places = {
        "": "inbox",
        ".Sent": "sentitems",
        ".Drafts": "drafts",
        ".Junk": "junkemail",
    }
    tailspin = mailbox.add_folder("Tailspin", parent="inbox")
    for path in sorted((CONTOSO / "maildir").rglob("*")):
        if (
            not path.is_file()
            or path.name.startswith(".")
            or path.parent.name not in ("cur", "new")
            or path.name == "maildirfolder"
        ):
            continue
        top = path.parent.parent.name
        folder = (
            tailspin.folder_id
            if top == ".Tailspin"
            else places.get(top if top.startswith(".") else "", "inbox")
        )
        mailbox.add(SimMessage.from_mime(path.read_bytes()), folder)


def store_config(url: str, sim: EwsSimulator) -> Any:
    return parse_config(
        {
            "database": {"url": url},
            "organisation": {"internal_domains": ["contoso.com"]},
            "mailboxes": [settings(sim, page_size=10).model_dump(mode="json")],
        }
    )


@pytest.fixture
def exchange(
    store_url: str, factory: Any, ews: EwsSimulator, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """The configuration of the simulated mailbox, the Contoso CRM imported."""
    from tests.test_sync import import_crm

    monkeypatch.setenv("MAILSYNC_TEST_EWS_PASSWORD", SERVICE_PASSWORD)
    config = store_config(store_url, ews)
    import_crm(factory, config)
    return config


def test_contoso_on_exchange_gives_the_same_history_as_from_files(
    factory: Any, ews: EwsSimulator, rep_mailbox: SimMailbox, exchange: Any
) -> None:
    from tests.test_sync import account_timeline

    contoso_on_exchange(ews, rep_mailbox)
    config = exchange

    report = sync_mailbox(factory, config, config.mailboxes[0])
    assert (report.items, report.new, report.excluded, report.rejected) == (
        38,
        29,
        8,
        0,
    )
    pilot = [
        a
        for a in account_timeline(factory)
        if a.subject.endswith("warehouse scanning pilot")
    ]
    assert len(pilot) == 7

    # A move re-keys the source; the activity stays one, with no duplicate.
    first = next(
        i
        for i in rep_mailbox.items.values()
        if getattr(i, "subject", "") == "Dublin DC pricing in euros"
    )
    rep_mailbox.move(first, "Inbox/Tailspin")
    again = sync_mailbox(factory, config, config.mailboxes[0])
    assert (again.new, again.removed) == (0, 1)
    with factory() as session:
        rows = session.execute(
            select(Source.folder, Source.removed_at.is_(None))
            .join(Activity)
            .where(Activity.subject == "Dublin DC pricing in euros")
        ).all()
        assert sorted(rows) == [("Inbox", False), ("Inbox/Tailspin", True)]

    # A reset mailbox refuses every sync state: the folders start over, and
    # identity keys keep the history free of duplicates.
    rep_mailbox.reset_sync_states()
    with factory() as session:
        before = session.scalar(select(func.count()).select_from(Activity))
    sync_mailbox(factory, config, config.mailboxes[0])
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Activity)) == before


def test_missing_password_variable_names_it(
    store_url: str,
    factory: Any,
    ews: EwsSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from mailsync.errors import ConfigError

    monkeypatch.delenv("MAILSYNC_TEST_EWS_PASSWORD", raising=False)
    config = store_config(store_url, ews)
    with pytest.raises(ConfigError, match="MAILSYNC_TEST_EWS_PASSWORD is not set"):
        sync_mailbox(factory, config, config.mailboxes[0])


def test_x500_senders_are_resolved_or_kept_unresolved(
    factory: Any, ews: EwsSimulator, rep_mailbox: SimMailbox, exchange: Any
) -> None:
    from tests.ews.simulator import Address

    known_dn = "/o=Tailspin/ou=Exchange Administrative Group/cn=Recipients/cn=lnay"
    lorraine = ews.directory.add(
        "lorraine.nay@tailspintoys.com", "Lorraine Nay", known_dn
    )
    gone = Address.x500(
        "/o=Tailspin/ou=First/cn=Recipients/cn=left-the-company", "Former Buyer"
    )
    rep = Address(REP, "Tamara Johnston")
    rep_mailbox.add(
        SimMessage(
            subject="Budget",
            author=lorraine,
            to=(rep,),
            message_id="<x1@tailspintoys.com>",
            body="b",
        ),
        "inbox",
    )
    rep_mailbox.add(
        SimMessage(
            subject="Old order",
            author=gone,
            to=(rep,),
            message_id="<x2@tailspintoys.com>",
            body="o",
        ),
        "inbox",
    )
    sync_mailbox(factory, exchange, exchange.mailboxes[0])

    from mailsync.queries import unlinked
    from tests.test_sync import account_timeline

    budget = next(a for a in account_timeline(factory) if a.subject == "Budget")
    assert [c["name"] for c in budget.contacts] == ["Lorraine Nay"]
    with factory() as session:
        waiting = {u.address: u for u in unlinked(session)}
    assert gone.email.lower() in waiting
    assert "Old order" not in {a.subject for a in account_timeline(factory)}
    assert ews.requests["ResolveNames"] == 2


def test_mailboxes_test_says_which_right_is_missing(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    connector, _ = connect(ews)
    assert connector.check()[-1] == "the Inbox can be synced (SyncFolderItems)"

    rep_mailbox.allow_impersonation = False
    refused, _ = connect(ews)
    with pytest.raises(
        UserError, match="may not impersonate.*ApplicationImpersonation"
    ):
        refused.check()

    missing, _ = connect(ews, address="nobody@contoso.com")
    with pytest.raises(UserError, match="no such mailbox"):
        missing.check()

    wrong, _ = connect(ews, password="wrong")
    with pytest.raises(UserError, match="refused the credentials"):
        wrong.check()


def test_an_item_the_rep_opts_out_loses_its_links(
    factory: Any, ews: EwsSimulator, rep_mailbox: SimMailbox, exchange: Any
) -> None:
    from tests.test_sync import account_timeline

    contoso_on_exchange(ews, rep_mailbox)
    config = exchange
    sync_mailbox(factory, config, config.mailboxes[0])
    subjects = {a.subject for a in account_timeline(factory)}
    assert {
        "Dublin DC pricing in euros",
        "Budget line for scanners in FY27",
    } <= subjects

    items = {getattr(i, "subject", ""): i for i in rep_mailbox.items.values()}
    rep_mailbox.update(items["Dublin DC pricing in euros"], categories=("Don't track",))
    rep_mailbox.update(items["Budget line for scanners in FY27"], sensitivity="Private")
    sync_mailbox(factory, config, config.mailboxes[0])

    subjects = {a.subject for a in account_timeline(factory)}
    assert "Dublin DC pricing in euros" not in subjects
    assert "Budget line for scanners in FY27" not in subjects
    assert "Tailspin Toys pilot review" in subjects
