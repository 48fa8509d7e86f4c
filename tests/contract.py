"""The contract every connector passes (local today; EWS and Graph use it too).

A subclass provides ``mailbox``, a fixture returning a :class:`MailboxFiller`
that puts real messages into the real backing store (files for the local
connector, the protocol simulator for EWS and Graph), and
``connector(mailbox)``, which opens the real connector on it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Protocol

from mailsync.connectors.base import Connector
from mailsync.items import ChangeBatch, Folder, FolderRole, Item


class MailboxFiller(Protocol):
    def add(self, folder: str, raw: bytes) -> None: ...
    def remove(self, folder: str, index: int) -> None: ...
    def add_unreadable(self, folder: str) -> None: ...


def message(number: int, sender: str = "andy@tailspintoys.com") -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Andy Carothers <{sender}>"
    msg["To"] = "Tamara Johnston <tamara@contoso.com>"
    msg["Subject"] = f"Order {number}"
    msg["Message-ID"] = make_msgid(idstring=f"n{number}", domain="tailspintoys.com")
    when = datetime(2026, 10, 1, 9, 0, tzinfo=UTC) + timedelta(hours=number)
    msg["Date"] = format_datetime(when)
    msg.set_content(f"Please ship order {number}.\n")
    return bytes(msg)


def drain(
    connector: Connector, folder: Folder, cursor: str | None
) -> tuple[list[Item], list[str], list[ChangeBatch], str | None]:
    items: list[Item] = []
    removed: list[str] = []
    batches = list(connector.changes(folder, cursor))
    for batch in batches:
        items.extend(batch.items)
        removed.extend(batch.removed)
        cursor = batch.cursor if batch.cursor is not None else cursor
    return items, removed, batches, cursor


class ConnectorContract:
    """Subclasses set ``mailbox`` (a fixture) and ``connector``."""

    def connector(self, mailbox: Any) -> Connector:  # pragma: no cover - abstract
        raise NotImplementedError

    def folder(self, connector: Connector, name: str) -> Folder:
        """The folder with the role that ``name`` means (Inbox, Sent, Drafts)."""
        role = FolderRole(name.lower())
        for folder in connector.folders():
            if folder.role is role:
                return folder
        raise AssertionError(f"no {role} folder in {connector.folders()}")

    def fill(self, mailbox: Any, count: int, folder: str = "Inbox") -> None:
        for number in range(count):
            mailbox.add(folder, message(number))

    def test_folders_have_unique_ids_and_roles(self, mailbox: Any) -> None:
        mailbox.add("Inbox", message(1))
        mailbox.add("Sent", message(2, sender="tamara@contoso.com"))
        folders = self.connector(mailbox).folders()
        assert len({f.id for f in folders}) == len(folders)
        roles = {f.role for f in folders}
        assert {FolderRole.INBOX, FolderRole.SENT} <= roles

    def test_first_sync_reads_everything_once(self, mailbox: Any) -> None:
        self.fill(mailbox, 7)
        connector = self.connector(mailbox)
        items, removed, _, cursor = drain(
            connector, self.folder(connector, "Inbox"), None
        )
        assert sorted(i.subject for i in items) == sorted(
            f"Order {n}" for n in range(7)
        )
        assert len({i.provider_id for i in items}) == 7
        assert removed == [] and cursor is not None

    def test_second_sync_reads_nothing(self, mailbox: Any) -> None:
        self.fill(mailbox, 3)
        connector = self.connector(mailbox)
        inbox = self.folder(connector, "Inbox")
        _, _, _, cursor = drain(connector, inbox, None)
        items, removed, _, _ = drain(self.connector(mailbox), inbox, cursor)
        assert (items, removed) == ([], [])

    def test_only_new_items_come_after_a_cursor(self, mailbox: Any) -> None:
        self.fill(mailbox, 3)
        connector = self.connector(mailbox)
        inbox = self.folder(connector, "Inbox")
        first, _, _, cursor = drain(connector, inbox, None)
        mailbox.add("Inbox", message(99))
        items, _, _, _ = drain(self.connector(mailbox), inbox, cursor)
        assert [i.subject for i in items] == ["Order 99"]
        assert items[0].provider_id not in {i.provider_id for i in first}

    def test_removal_names_the_provider_id_seen_before(self, mailbox: Any) -> None:
        self.fill(mailbox, 3)
        connector = self.connector(mailbox)
        inbox = self.folder(connector, "Inbox")
        first, _, _, cursor = drain(connector, inbox, None)
        mailbox.remove("Inbox", 1)
        _, removed, _, _ = drain(self.connector(mailbox), inbox, cursor)
        assert len(removed) == 1
        assert removed[0] in {i.provider_id for i in first}

    def test_resuming_from_any_page_loses_and_repeats_nothing(
        self, mailbox: Any
    ) -> None:
        self.fill(mailbox, 12)
        connector = self.connector(mailbox)
        inbox = self.folder(connector, "Inbox")
        _, _, batches, _ = drain(connector, inbox, None)
        seen: list[str] = []
        for index, batch in enumerate(batches):
            seen_before = [i.subject for b in batches[: index + 1] for i in b.items]
            rest, _, _, _ = drain(self.connector(mailbox), inbox, batch.cursor)
            seen = seen_before + [i.subject for i in rest]
            assert sorted(seen) == sorted(f"Order {n}" for n in range(12))

    def test_an_unreadable_item_is_rejected_and_the_rest_still_come(
        self, mailbox: Any
    ) -> None:
        self.fill(mailbox, 2)
        mailbox.add_unreadable("Inbox")
        connector = self.connector(mailbox)
        inbox = self.folder(connector, "Inbox")
        batches = list(connector.changes(inbox, None))
        assert sum(len(b.items) for b in batches) == 2
        rejected = [r for b in batches for r in b.rejected]
        assert len(rejected) == 1 and rejected[0].reason
