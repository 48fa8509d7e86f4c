"""The local connector on its three layouts, each through the connector contract."""

from __future__ import annotations

import mailbox as stdlib_mailbox
import os
import resource
import tomllib
from pathlib import Path

import pytest

from mailsync.config import parse_config
from mailsync.connectors.local import LocalConnector
from mailsync.errors import ConfigError, UserError
from mailsync.items import FolderRole, Item
from tests.contract import ConnectorContract, drain, message

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


# --- max_message_mb --------------------------------------------------------

MB = 1024 * 1024


def big_message(number: int) -> bytes:
    """A message of about 0.2 MB: over a limit of 0.1."""
    return message(number) + b"a long line of the body, many times over\n" * 5000


def too_large(what: str, size: int, limit: str) -> str:
    return (
        f"{what} is {size / MB:.1f} MB, more than max_message_mb ({limit}); raise "
        "max_message_mb for this mailbox to read it"
    )


def subjects(items: list[Item]) -> list[str | None]:
    return [item.subject for item in items]


def test_a_file_over_max_message_mb_is_rejected_once_and_read_when_it_fits(
    tmp_path: Path,
) -> None:
    box = MaildirBox(tmp_path / "maildir")
    box.add("Inbox", message(1))
    box.add("Inbox", big_message(2))
    box.add("Inbox", big_message(3))
    two, three = box.files["Inbox"][1:]
    connector = LocalConnector(box.root, max_message_mb=0.1)
    (inbox,) = connector.folders()

    items, _, batches, cursor = drain(connector, inbox, None)
    assert subjects(items) == ["Order 1"]
    reasons = sorted(r.reason for b in batches for r in b.rejected)
    assert reasons == [
        too_large(str(two), two.stat().st_size, "0.1"),
        too_large(str(three), three.stat().st_size, "0.1"),
    ]

    # Not reported again while the file stays as it is.
    items, _, batches, cursor = drain(connector, inbox, cursor)
    assert (items, [r for b in batches for r in b.rejected]) == ([], [])

    # A file that shrinks is read at once.
    two.write_bytes(message(2))
    items, _, batches, cursor = drain(connector, inbox, cursor)
    assert subjects(items) == ["Order 2"]
    assert [r for b in batches for r in b.rejected] == []

    # And with the limit raised, the next cycle reads the other one.
    raised = LocalConnector(box.root, max_message_mb=1)
    items, _, batches, cursor = drain(raised, inbox, cursor)
    assert subjects(items) == ["Order 3"]
    assert drain(raised, inbox, cursor)[0] == []


def test_a_huge_file_is_never_read_into_memory(tmp_path: Path) -> None:
    box = MaildirBox(tmp_path / "maildir")
    box.add("Inbox", message(1))
    huge = box.files["Inbox"][0]
    with open(huge, "r+b") as handle:  # sparse: 4 GB on no disk
        handle.truncate(4096 * MB)
    connector = LocalConnector(box.root)  # the default limit, 64 MB
    (inbox,) = connector.folders()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux

    [batch] = connector.changes(inbox, None)

    assert batch.items == []
    assert [r.reason for r in batch.rejected] == [too_large(str(huge), 4096 * MB, "64")]
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
    assert grown < 512 * 1024  # read whole, it would be 4 GB and more


def test_an_mbox_message_over_max_message_mb_is_rejected_once(
    tmp_path: Path,
) -> None:
    box = MboxBox(tmp_path)
    for raw in (message(1), big_message(2), message(3)):
        box.add("Inbox", raw)
    path = box.paths["Inbox"]
    connector = LocalConnector(path, max_message_mb=0.1)
    (inbox,) = connector.folders()

    items, _, batches, cursor = drain(connector, inbox, None)
    assert subjects(items) == ["Order 1", "Order 3"]
    [rejected] = [r for b in batches for r in b.rejected]
    size = len(stdlib_mailbox.mbox(path).get_bytes(1))
    assert rejected.reason == too_large(f"message 2 in {path}", size, "0.1")

    # A new message is read; the large one is not reported again.
    box.add("Inbox", message(4))
    items, removed, batches, cursor = drain(connector, inbox, cursor)
    assert subjects(items) == ["Order 4"]
    assert ([r for b in batches for r in b.rejected], removed) == ([], [])

    # With the limit raised, the next cycle reads it, under the same id.
    raised = LocalConnector(path, max_message_mb=1)
    items, removed, _, cursor = drain(raised, inbox, cursor)
    assert (subjects(items), removed) == (["Order 2"], [])
    assert items[0].provider_id == rejected.provider_id
    assert drain(raised, inbox, cursor)[0] == []


@pytest.mark.parametrize("value", ["0", "-1"])
def test_max_message_mb_must_be_more_than_zero(value: str) -> None:
    raw = tomllib.loads(
        '[organisation]\ninternal_domains = ["contoso.com"]\n\n[[mailboxes]]\n'
        'address = "tamara@contoso.com"\nrep = "Tamara Johnston"\nkind = "local"\n'
        f'path = "maildir"\nmax_message_mb = {value}\n'
    )
    with pytest.raises(ConfigError) as raised:
        parse_config(raw)
    assert (
        f"mailboxes[0].max_message_mb: {value} is not more than 0; give the size "
        "in MB of the largest message to read, such as 64"
    ) in str(raised.value)


def test_max_message_mb_is_64_unless_set() -> None:
    raw = {
        "organisation": {"internal_domains": ["contoso.com"]},
        "mailboxes": [
            {"address": "a@contoso.com", "rep": "A", "kind": "local", "path": "x"},
            {
                "address": "b@contoso.com",
                "rep": "B",
                "kind": "local",
                "path": "x",
                "max_message_mb": 250,
            },
        ],
    }
    default, raised = parse_config(raw).mailboxes
    assert (default.max_message_mb, raised.max_message_mb) == (64, 250)
