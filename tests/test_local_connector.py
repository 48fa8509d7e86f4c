"""The local connector on its three layouts, each through the connector contract."""

from __future__ import annotations

import mailbox as stdlib_mailbox
import os
from pathlib import Path

import pytest

from mailsync.connectors.local import LocalConnector
from mailsync.errors import UserError
from mailsync.items import FolderRole
from tests.contract import ConnectorContract, message

FOLDERS = {"Inbox": "", "Sent": ".Sent", "Drafts": ".Drafts"}


class MaildirBox:
    """A Maildir++ mailbox; messages land in new/ like a delivery agent's."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, list[Path]] = {}
        self.count = 0

    def _dir(self, folder: str) -> Path:
        base = self.root / FOLDERS[folder] if FOLDERS[folder] else self.root
        for sub in ("cur", "new", "tmp"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        return base

    def add(self, folder: str, raw: bytes) -> None:
        self.count += 1
        path = self._dir(folder) / "new" / f"17000{self.count:05d}.M{self.count}P1.host"
        path.write_bytes(raw)
        self.files.setdefault(folder, []).append(path)

    def remove(self, folder: str, index: int) -> None:
        self.files[folder].pop(index).unlink()

    def add_unreadable(self, folder: str) -> None:
        self.add(folder, b"")


class TreeBox(MaildirBox):
    """One message per file, any name, one directory per folder (Enron layout)."""

    def _dir(self, folder: str) -> Path:
        path = self.root / folder.lower()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add(self, folder: str, raw: bytes) -> None:
        self.count += 1
        path = self._dir(folder) / f"{self.count}_"
        path.write_bytes(raw)
        self.files.setdefault(folder, []).append(path)


class MboxBox:
    """An mbox file; the connector sees one folder named after the file."""

    def __init__(self, root: Path) -> None:
        self.paths = {"Inbox": root / "Inbox.mbox", "Sent": root / "Sent.mbox"}

    def _box(self, folder: str) -> stdlib_mailbox.mbox:
        return stdlib_mailbox.mbox(self.paths[folder])

    def add(self, folder: str, raw: bytes) -> None:
        box = self._box(folder)
        box.add(raw)
        box.close()

    def remove(self, folder: str, index: int) -> None:
        box = self._box(folder)
        box.lock()
        box.remove(list(box.keys())[index])
        box.flush()
        box.unlock()
        box.close()

    def add_unreadable(self, folder: str) -> None:
        with open(self.paths[folder], "ab") as handle:
            handle.write(
                b"From junk Thu Jan  1 00:00:00 2026\n\x00\x01\x02 no headers\n\n"
            )


class TestMaildir(ConnectorContract):
    @pytest.fixture
    def mailbox(self, tmp_path: Path) -> MaildirBox:
        return MaildirBox(tmp_path / "maildir")

    def connector(self, mailbox: MaildirBox) -> LocalConnector:
        return LocalConnector(mailbox.root, batch_size=5)

    def test_flags_in_file_names_do_not_change_identity(
        self, mailbox: MaildirBox
    ) -> None:
        mailbox.add("Inbox", message(1))
        inbox = self.folder(self.connector(mailbox), "Inbox")
        [first] = [
            i for b in self.connector(mailbox).changes(inbox, None) for i in b.items
        ]
        cursor = list(self.connector(mailbox).changes(inbox, None))[-1].cursor
        # The rep reads it: the file moves from new/ to cur/ and gains ":2,S".
        path = mailbox.files["Inbox"][0]
        path.rename(path.parent.parent / "cur" / f"{path.name}:2,S")
        again = [
            i for b in self.connector(mailbox).changes(inbox, cursor) for i in b.items
        ]
        assert again == []
        assert first.provider_id == f"./{path.name}"

    def test_dot_files_are_not_messages(self, mailbox: MaildirBox) -> None:
        mailbox.add("Inbox", message(1))
        (mailbox.root / "new" / ".gitkeep").write_bytes(b"")
        inbox = self.folder(self.connector(mailbox), "Inbox")
        batches = list(self.connector(mailbox).changes(inbox, None))
        assert sum(len(b.items) + len(b.rejected) for b in batches) == 1

    def test_what_cannot_be_a_message_file_is_rejected_once_never_opened(
        self, mailbox: MaildirBox
    ) -> None:
        mailbox.add("Inbox", message(1))
        os.mkfifo(mailbox.root / "cur" / "1700000099.M99P1.host:2,S")  # would block
        (mailbox.root / "new" / "1700000098.M98P1.host").symlink_to("/nowhere/98")
        (mailbox.root / "cur" / "stray").mkdir()
        connector = self.connector(mailbox)
        inbox = self.folder(connector, "Inbox")
        batches = list(connector.changes(inbox, None))

        assert sum(len(b.items) for b in batches) == 1
        reasons = {r.provider_id: r.reason for b in batches for r in b.rejected}
        assert sorted(reasons) == [
            "./1700000098.M98P1.host",
            "./1700000099.M99P1.host",
            "./stray",
        ]
        assert (
            "is a link to /nowhere/98, which does not exist; remove the link"
            in (reasons["./1700000098.M98P1.host"])
        )
        assert (
            "is not a regular file (a named pipe)"
            in (reasons["./1700000099.M99P1.host"])
        )
        assert "is a directory where message files belong" in reasons["./stray"]
        # Reported once: the next cycle finds nothing new.
        again = list(connector.changes(inbox, batches[-1].cursor))
        assert [r for b in again for r in b.rejected] == []

    def test_draft_flag_marks_a_draft(self, mailbox: MaildirBox) -> None:
        mailbox.add("Inbox", message(1))
        path = mailbox.files["Inbox"][0]
        path.rename(path.parent.parent / "cur" / f"{path.name}:2,DS")
        inbox = self.folder(self.connector(mailbox), "Inbox")
        [item] = [
            i for b in self.connector(mailbox).changes(inbox, None) for i in b.items
        ]
        assert item.is_draft


class TestTree(ConnectorContract):
    @pytest.fixture
    def mailbox(self, tmp_path: Path) -> TreeBox:
        return TreeBox(tmp_path / "person")

    def connector(self, mailbox: TreeBox) -> LocalConnector:
        return LocalConnector(mailbox.root, batch_size=5)

    def test_a_named_pipe_among_the_files_is_rejected_not_opened(
        self, mailbox: TreeBox
    ) -> None:
        mailbox.add("Inbox", message(1))
        os.mkfifo(mailbox.root / "inbox" / "2_")
        connector = self.connector(mailbox)
        batches = list(connector.changes(self.folder(connector, "inbox"), None))
        assert sum(len(b.items) for b in batches) == 1
        [rejected] = [r for b in batches for r in b.rejected]
        assert rejected.reason.endswith(
            "2_ is not a regular file (a named pipe); mail must be plain files, "
            "remove it"
        )

    def test_folders_have_unique_ids_and_roles(self, mailbox: TreeBox) -> None:
        mailbox.add("Inbox", message(1))
        for name in ("_sent_mail", "sent_items", "Sent Items", "deleted_items"):
            (mailbox.root / name).mkdir()
            (mailbox.root / name / "1_").write_bytes(message(2))
        roles = {f.name: f.role for f in self.connector(mailbox).folders()}
        assert roles == {
            "inbox": FolderRole.INBOX,
            "_sent_mail": FolderRole.SENT,
            "sent_items": FolderRole.SENT,
            "Sent Items": FolderRole.SENT,
            "deleted_items": FolderRole.DELETED,
        }


class TestMbox(ConnectorContract):
    @pytest.fixture
    def mailbox(self, tmp_path: Path) -> MboxBox:
        return MboxBox(tmp_path)

    def connector(self, mailbox: MboxBox) -> LocalConnector:
        mailbox.paths["Inbox"].touch()
        return LocalConnector(mailbox.paths["Inbox"])

    def test_folders_have_unique_ids_and_roles(self, mailbox: MboxBox) -> None:
        mailbox.add("Sent", message(1, sender="tamara@contoso.com"))
        [folder] = LocalConnector(mailbox.paths["Sent"]).folders()
        assert (folder.name, folder.role) == ("Sent", FolderRole.SENT)


def test_a_missing_path_is_an_error_that_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist.*set `path`"):
        LocalConnector(tmp_path / "nowhere")


EMPTY = (
    "is an empty directory: is the share mounted? (a new maildir has cur, new and tmp)"
)


def test_an_empty_directory_is_an_error_that_asks_for_the_share(
    tmp_path: Path,
) -> None:
    with pytest.raises(UserError) as raised:
        LocalConnector(tmp_path)
    assert str(raised.value) == f"path {tmp_path} {EMPTY}"


def test_a_share_gone_while_open_is_an_error_not_removals(tmp_path: Path) -> None:
    box = MaildirBox(tmp_path / "share")
    box.add("Inbox", message(1))
    connector = LocalConnector(box.root)
    (inbox,) = connector.folders()
    list(connector.changes(inbox, None))
    # Unmounted under the open connector: the mount point is left empty.
    box.root.rename(tmp_path / "away")
    box.root.mkdir()
    with pytest.raises(UserError, match="empty directory: is the share mounted"):
        connector.folders()


def test_a_new_maildir_with_nothing_in_it_is_fine(tmp_path: Path) -> None:
    for sub in ("cur", "new", "tmp"):
        (tmp_path / sub).mkdir()
    connector = LocalConnector(tmp_path)
    (inbox,) = connector.folders()
    batches = list(connector.changes(inbox, None))
    assert [i for b in batches for i in b.items + b.rejected] == []
