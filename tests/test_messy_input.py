"""Messy input an admin meets, each case once found by trying to break mailsync."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from mailsync.connectors.local import LocalConnector
from mailsync.items import ChangeBatch, Folder
from mailsync.store.db import masked
from mailsync.store.models import Activity, Contact, ContactAddress, SkippedItem, Source
from mailsync.sync import sync_mailbox
from tests.conftest import contoso_config
from tests.test_sync import import_crm

NOBODY = 65534


def write(folder: Path, name: str, data: bytes) -> Path:
    (folder / "cur").mkdir(parents=True, exist_ok=True)
    path = folder / "cur" / name
    path.write_bytes(data)
    return path


def mail(
    subject: bytes, sender: bytes = b"ben.miller@fabrikam.com", **extra: bytes
) -> bytes:
    head = b"From: " + sender + b"\nTo: tamara@contoso.com\nSubject: " + subject + b"\n"
    for name, value in extra.items():
        head += name.replace("_", "-").encode() + b": " + value + b"\n"
    if "Date" not in extra:
        head += b"Date: Tue, 06 Oct 2026 10:00:00 +0000\n"
    return head + b"\nHello.\n"


def test_database_passwords_never_show() -> None:
    url = "postgresql+psycopg://sync@db.example/m?password=ssw0rdX&sslpassword=abc"
    assert "ssw0rdX" not in masked(url) and "abc" not in masked(url)
    assert "ssw0rdX" not in masked("postgresql://admin:Pa@ssw0rdX@127.0.0.1:5999/db")


def test_text_every_database_takes(factory, contoso, contoso_maildir) -> None:
    long_id = b"<" + b"x" * 1200 + b"@fabrikam.com>"
    write(contoso_maildir, "1700000100.nul", mail(b"Quote\x00 for Q4"))
    write(contoso_maildir, "1700000101.long", mail(b"Long id", Message_ID=long_id))
    report = sync_mailbox(factory, contoso, contoso.mailboxes[0])
    assert report.rejected == 0
    with factory() as session:
        subjects = set(session.scalars(select(Activity.subject)))
    assert {"Quote for Q4", "Long id"} <= subjects


def test_headers_in_raw_latin1_are_read(factory, contoso, contoso_maildir) -> None:
    write(contoso_maildir, "1700000102.latin", mail("Grüße aus Köln".encode("latin-1")))
    sync_mailbox(factory, contoso, contoso.mailboxes[0])
    with factory() as session:
        assert session.scalar(
            select(Activity.id).where(Activity.subject == "Grüße aus Köln")
        )


def test_a_missing_date_shows_when_the_mail_came_not_the_sync(
    factory, contoso, contoso_maildir
) -> None:
    received = (
        b"from mx.fabrikam.com by mail.contoso.com; Mon, 5 Oct 2026 09:00:00 +0000"
    )
    write(
        contoso_maildir,
        "1700000103.nodate",
        mail(b"No date", Date=b"yesterday at noon", Received=received),
    )
    stamped = write(
        contoso_maildir, "1700000104.nodate", mail(b"No date either", Date=b"")
    )
    os.utime(stamped, (1790000000, 1790000000))
    sync_mailbox(factory, contoso, contoso.mailboxes[0])
    with factory() as session:
        when = dict(
            session.execute(select(Activity.subject, Activity.occurred_at)).all()
        )
    assert when["No date"] == datetime(2026, 10, 5, 9, 0, tzinfo=UTC)
    assert when["No date either"] == datetime.fromtimestamp(1790000000, UTC)


def test_subfolders_of_excluded_folders_are_not_synced(
    factory, contoso, contoso_maildir
) -> None:
    write(contoso_maildir / ".Junk.Phish", "1700000105.phish", mail(b"You won"))
    write(contoso_maildir / ".Deleted Items.Old", "1700000106.old", mail(b"Old thing"))
    (contoso_maildir / ".Junk.Phish" / "new").mkdir()
    (contoso_maildir / ".Deleted Items.Old" / "new").mkdir()
    report = sync_mailbox(factory, contoso, contoso.mailboxes[0])
    assert report.folders == 4
    with factory() as session:
        subjects = set(session.scalars(select(Activity.subject)))
    assert not {"You won", "Old thing"} & subjects


def test_customer_mail_filed_in_sent_is_inbound(
    factory, contoso, contoso_maildir
) -> None:
    write(contoso_maildir / ".Sent", "1700000107.filed", mail(b"Filed by hand"))
    sync_mailbox(factory, contoso, contoso.mailboxes[0])
    with factory() as session:
        direction = session.scalar(
            select(Activity.direction).where(Activity.subject == "Filed by hand")
        )
    assert direction == "inbound"


def test_written_to_policy_covers_people_known_by_domain_only(
    store_url, factory, contoso_maildir
) -> None:
    config = contoso_config(store_url, contoso_maildir, create_contacts="written_to")
    import_crm(factory, config)
    sync_mailbox(factory, config, config.mailboxes[0])
    with factory() as session:
        pat = session.scalar(
            select(Contact)
            .join(ContactAddress)
            .where(ContactAddress.address == "pat.coleman@tailspintoys.com")
        )
        assert pat is not None and pat.account is not None
        assert pat.account.name == "Tailspin Toys"


class FailingFolder:
    """The real local connector, whose one folder cannot be listed."""

    def __init__(self, inner: LocalConnector, broken: str) -> None:
        self.inner, self.broken = inner, broken

    def folders(self) -> list[Folder]:
        return self.inner.folders()

    def changes(self, folder: Folder, cursor: str | None) -> Iterator[ChangeBatch]:
        if folder.name == self.broken:
            raise PermissionError(13, "Permission denied", folder.id)
        return self.inner.changes(folder, cursor)

    def close(self) -> None:
        self.inner.close()


def test_an_unreadable_folder_does_not_stop_the_others(
    factory, contoso, contoso_maildir
) -> None:
    connector = FailingFolder(LocalConnector(contoso_maildir), "Sent")
    report = sync_mailbox(factory, contoso, contoso.mailboxes[0], connector)
    assert report.error and "folder Sent" in report.error
    again = sync_mailbox(factory, contoso, contoso.mailboxes[0])
    # The Sent items waited for the next cycle, and nothing was lost.
    assert again.error is None and again.new > 0
    assert report.new + again.new == 29


@pytest.mark.skipif(
    shutil.which("setpriv") is None and os.geteuid() == 0,
    reason="needs a user that file permissions apply to",
)
def test_an_unreadable_file_is_tried_again_once_it_can_be_read() -> None:
    import tempfile

    from tests.conftest import CONTOSO

    root = Path(tempfile.mkdtemp(prefix="mailsync-perm-"))
    try:
        _unreadable_then_readable(root, CONTOSO)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _unreadable_then_readable(root: Path, contoso: Path) -> None:
    shutil.copytree(contoso / "maildir", root / "maildir")
    locked = sorted((root / "maildir" / ".Sent" / "cur").iterdir())[0]
    config = root / "mailsync.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{root / "m.db"}"\n'
        '[organisation]\ninternal_domains = ["contoso.com"]\n'
        '[[mailboxes]]\naddress = "tamara@contoso.com"\nrep = "Tamara Johnston"\n'
        f'kind = "local"\npath = "{root / "maildir"}"\n'
    )
    for path in [*root.rglob("*"), root]:
        os.chmod(path, 0o777 if path.is_dir() else 0o666)
    locked.chmod(0o000)
    command = [str(Path(sys.executable).parent / "mailsync"), "--config", str(config)]
    if os.geteuid() == 0:  # root reads anything: run as nobody
        command = [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            *command,
        ]

    def run(*args: str) -> None:
        subprocess.run([*command, *args], check=True, capture_output=True)

    run("init")
    run("sync", "--once")
    locked.chmod(0o644)
    run("sync", "--once")

    from mailsync.store import db

    engine = db.open_engine(f"sqlite:///{root / 'm.db'}")
    with db.sessions(engine)() as session:
        rejected = session.scalars(select(SkippedItem.reason)).all()
        sources = session.scalars(select(Source.provider_id)).all()
    engine.dispose()
    assert not [r for r in rejected if "cannot read" in r]
    assert f".Sent/{locked.name}" in sources


@pytest.fixture
def contoso(store_url, factory, contoso_maildir):
    config = contoso_config(store_url, contoso_maildir)
    import_crm(factory, config)
    return config


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"linking": {"record_internal": "no"}}, "'no' is not true or false"),
        ({"batch_size": "500"}, "'500' is not a number"),
        ({"internal_domains": ["contoso"]}, "'contoso' is not a domain"),
        ({"twice": True}, "configured twice"),
    ],
)
def test_config_values_are_not_guessed(changes, expected) -> None:
    from mailsync.config import parse_config
    from mailsync.errors import ConfigError

    mailbox = {"address": "t@contoso.com", "rep": "T", "kind": "local", "path": "x"}
    if "batch_size" in changes:
        mailbox["batch_size"] = changes["batch_size"]
    raw = {
        "organisation": {
            "internal_domains": changes.get("internal_domains", ["contoso.com"])
        },
        "linking": changes.get("linking", {}),
        "mailboxes": [mailbox]
        + ([dict(mailbox, address="T@Contoso.com")] if "twice" in changes else []),
    }
    with pytest.raises(ConfigError, match=expected):
        parse_config(raw)


def test_internal_domains_written_loosely_mean_the_domain() -> None:
    from mailsync.config import parse_config

    raw = {
        "organisation": {
            "internal_domains": ["*.contoso.com", "Fabrikam.com.", "@wingtip.example"]
        }
    }
    assert parse_config(raw).organisation.internal_domains == [
        "contoso.com",
        "fabrikam.com",
        "wingtip.example",
    ]
