"""The Microsoft 365 connector against the Graph simulator, over HTTPS.

Nothing is patched: msal gets its token from the test token endpoint and
requests talks to the simulator with the test CA as the configured
``ca_bundle``, while ``REQUESTS_CA_BUNDLE`` names the system store.
Expected values follow the Graph reference: delta pages carry
``@odata.nextLink`` until the last, which carries ``@odata.deltaLink``;
an ``@removed`` entry names the id seen before; ``Prefer:
odata.maxpagesize`` sets the page size.
"""

from __future__ import annotations

import json

import pytest

from mailsync.connectors.graph import GraphConnector
from mailsync.items import FolderRole
from tests.contract import ConnectorContract, drain, message
from tests.graph.conftest import REP, connect
from tests.graph.mailbox import Mailbox, Message
from tests.graph.simulator import GraphSimulator

FOLDERS = {"Inbox": "inbox", "Sent": "sentitems", "Drafts": "drafts"}


class SimBox:
    """Puts real messages into the simulated mailbox, as delivery would."""

    def __init__(self, sim: GraphSimulator, box: Mailbox) -> None:
        self.sim, self.box = sim, box
        self.items: dict[str, list[Message]] = {}

    def add(self, folder: str, raw: bytes) -> None:
        item = self.box.add(Message.from_mime(raw), FOLDERS[folder])
        self.items.setdefault(folder, []).append(item)

    def remove(self, folder: str, index: int) -> None:
        self.box.delete(self.items[folder].pop(index), hard=True)

    def add_unreadable(self, folder: str) -> None:
        # A meeting request whose MIME Exchange gives empty: it cannot be read.
        broken = Message(subject="broken", kind="eventMessageRequest", mime=b"")
        self.items.setdefault(folder, []).append(self.box.add(broken, FOLDERS[folder]))


class TestGraphContract(ConnectorContract):
    @pytest.fixture
    def mailbox(self, graph: GraphSimulator, rep_box: Mailbox) -> SimBox:
        return SimBox(graph, rep_box)

    def connector(self, mailbox: SimBox) -> GraphConnector:
        connector, _ = connect(mailbox.sim)
        return connector

    def test_pages_follow_the_page_size(self, mailbox: SimBox) -> None:
        self.fill(mailbox, 12)
        connector = self.connector(mailbox)
        inbox = self.folder(connector, "Inbox")
        mailbox.sim.reset_counts()
        batches = list(connector.changes(inbox, None))
        assert [len(b.items) for b in batches] == [5, 5, 2]
        assert mailbox.sim.requests["messages.delta"] == 3
        cursors = [json.loads(b.cursor or "{}")["link"] for b in batches]
        assert ["$skiptoken=" in c for c in cursors] == [True, True, False]
        assert "$deltatoken=" in cursors[-1]


def test_folders_have_the_well_known_roles_and_paths(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    tailspin = rep_box.add_folder("Tailspin", parent="inbox")
    rep_box.add_folder("2026", parent=rep_box.path(tailspin))
    rep_box.add_todo_list("Follow-ups")
    connector, _ = connect(graph)
    folders = {f.name: f.role for f in connector.folders()}
    assert folders == {
        "Inbox": FolderRole.INBOX,
        "Inbox/Tailspin": FolderRole.OTHER,
        "Inbox/Tailspin/2026": FolderRole.OTHER,
        "Drafts": FolderRole.DRAFTS,
        "Sent Items": FolderRole.SENT,
        "Deleted Items": FolderRole.DELETED,
        "Junk Email": FolderRole.JUNK,
        "Outbox": FolderRole.OUTBOX,
        "Archive": FolderRole.OTHER,
        "Calendar": FolderRole.CALENDAR,
        "Tasks": FolderRole.TASKS,
        "Tasks/Follow-ups": FolderRole.OTHER,
    }
    # The well-known ids and the calendar came in one $batch.
    assert graph.requests["$batch"] == 1
    assert graph.batched["mailFolders.get"] == 6
    assert graph.batched["calendar.get"] == 1


def test_an_item_carries_what_the_mime_path_gives(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    from mailsync.items import Role
    from mailsync.mime import parse_message

    raw = (
        b"From: Andy Carothers <andy@tailspintoys.com>\r\n"
        b"Sender: Ben Miller <ben@tailspintoys.com>\r\n"
        b"To: Tamara Johnston <tamara@contoso.com>\r\n"
        b"Cc: Lorraine Nay <lorraine@tailspintoys.com>\r\n"
        b"Reply-To: orders@tailspintoys.com\r\n"
        b"Subject: Re: Pilot order\r\n"
        b"Message-ID: <r2@tailspintoys.com>\r\n"
        b"In-Reply-To: <r1@contoso.com>\r\n"
        b"References: <r0@tailspintoys.com> <r1@contoso.com>\r\n"
        b"List-Id: <pilot.tailspintoys.com>\r\n"
        b"Date: Thu, 01 Oct 2026 09:00:00 +0000\r\n"
        b"\r\n"
        b"We confirm the pilot order.\r\n"
    )
    rep_box.add(Message.from_mime(raw, categories=("Pilot",), sensitivity="private"))
    connector, _ = connect(graph)
    inbox = next(f for f in connector.folders() if f.role is FolderRole.INBOX)
    (item,) = drain(connector, inbox, None)[0]
    expected = parse_message(raw, item.provider_id, inbox)

    assert item.message_id == expected.message_id == "r2@tailspintoys.com"
    assert item.in_reply_to == expected.in_reply_to
    assert item.references == expected.references
    assert item.subject == expected.subject
    assert item.occurred_at == expected.occurred_at
    assert item.list_headers == expected.list_headers
    assert sorted((p.address, p.name, p.role) for p in item.participants) == sorted(
        (p.address, p.name, p.role) for p in expected.participants
    )
    assert {p.role for p in item.participants} >= {Role.DELEGATE, Role.REPLY_TO}
    assert item.body_text.strip() == "We confirm the pilot order."
    assert item.categories == ("Pilot",)
    assert item.sensitivity == "private"
    assert item.received_at is not None and item.change_key


def test_a_read_flag_change_is_no_new_work(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    sim_item = rep_box.add(Message.from_mime(message(1)))
    connector, _ = connect(graph)
    inbox = next(f for f in connector.folders() if f.role is FolderRole.INBOX)
    _, _, _, cursor = drain(connector, inbox, None)
    rep_box.mark_read(sim_item)
    graph.reset_counts()
    items, removed, _, _ = drain(connector, inbox, cursor)
    assert (items, removed) == ([], [])
    assert graph.requests["messages.delta"] == 1


def test_a_cursor_of_another_kind_starts_the_folder_over(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    for n in range(3):
        rep_box.add(Message.from_mime(message(n)))
    connector, _ = connect(graph)
    inbox = next(f for f in connector.folders() if f.role is FolderRole.INBOX)
    ews_cursor = json.dumps({"state": "H4sIAAAAAAAEAGNgYGBg"})
    assert len(drain(connector, inbox, ews_cursor)[0]) == 3
    foreign = json.dumps({"link": "https://graph.example.net/v1.0/x?$deltatoken=1"})
    assert len(drain(connector, inbox, foreign)[0]) == 3


def test_the_back_fill_window_is_a_received_filter(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    rep_box.add(Message.from_mime(message(1), received=now - timedelta(days=10)))
    rep_box.add(Message.from_mime(message(2), received=now - timedelta(days=400)))
    connector, _ = connect(graph, backfill_days=30)
    inbox = next(f for f in connector.folders() if f.role is FolderRole.INBOX)
    items = drain(connector, inbox, None)[0]
    assert [i.subject for i in items] == ["Order 1"]


def test_the_rep_address_is_the_mailbox(graph: GraphSimulator) -> None:
    connector, _ = connect(graph)
    assert connector.http.user == f"/users/{REP}"
