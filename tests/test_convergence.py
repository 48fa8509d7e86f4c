"""Sync converges: whatever mix of new mail, removals and crashes mid-sync,
the history ends as one clean sync of the final mailbox would make it."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from mailsync.config import Config
from mailsync.connectors.local import LocalConnector
from mailsync.store import db
from mailsync.store.db import transaction
from mailsync.store.models import Account, AccountDomain, Activity, Link, Source
from mailsync.sync import sync_mailbox
from tests.conftest import contoso_config
from tests.faults import Crash, CrashAfter

SENDERS = [
    "andy@tailspintoys.com",
    "pat@tailspintoys.com",
    "jordan@northwind.example",
    "friend@gmail.com",
]


def raw(number: int, *, copy: bool = False, reply_to: int | None = None) -> bytes:
    """Message ``number``; a copy has the same content under another Message-ID."""
    msg = EmailMessage()
    sender = SENDERS[number % len(SENDERS)] if reply_to is None else "friend@gmail.com"
    msg["From"] = sender
    msg["To"] = "tamara@contoso.com"
    msg["Subject"] = f"Topic {number}" if reply_to is None else f"Re: Topic {reply_to}"
    suffix = ".copy" if copy else ""
    msg["Message-ID"] = f"<m{number}{suffix}@example.test>"
    if reply_to is not None:
        msg["In-Reply-To"] = f"<m{reply_to}@example.test>"
    when = datetime(2026, 3, 1, 9, 0, tzinfo=UTC) + timedelta(minutes=number)
    msg["Date"] = format_datetime(when)
    msg.set_content(f"Body of message {number}.\n")
    return bytes(msg)


POOL = (
    [raw(n) for n in range(6)]
    + [raw(n, copy=True) for n in range(3)]
    + [raw(10 + n, reply_to=n) for n in range(3)]
)

operation = st.one_of(
    st.tuples(
        st.just("add"), st.integers(0, len(POOL) - 1), st.sampled_from(["", ".Sent"])
    ),
    st.tuples(st.just("remove"), st.integers(0, 30), st.just("")),
    st.tuples(st.just("sync"), st.integers(0, 4), st.just("")),  # crash after N pages
)


def new_store(path: Path, maildir: Path) -> tuple[Config, object]:
    url = f"sqlite:///{path}"
    engine = db.open_engine(url)
    db.upgrade(engine)
    factory = db.sessions(engine)
    with transaction(factory) as session:
        account = Account(name="Tailspin Toys", name_key="tailspin toys")
        account.domains.append(AccountDomain(domain="tailspintoys.com"))
        session.add(account)
    return contoso_config(url, maildir), factory


def live_view(factory) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """Activities with a live source, their live sources and their links."""
    with factory() as session:
        sources: dict[int, list[str]] = {}
        for s in session.scalars(select(Source).where(Source.removed_at.is_(None))):
            sources.setdefault(s.activity_id, []).append(s.provider_id)
        links: dict[int, list[str]] = {}
        for link in session.scalars(select(Link)):
            links.setdefault(link.activity_id, []).append(
                f"{link.target_kind}:{link.rule}"
            )
        subjects = dict(session.execute(select(Activity.id, Activity.subject)).all())
    return sorted(
        (subjects[a], tuple(sorted(p)), tuple(sorted(links.get(a, []))))
        for a, p in sources.items()
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, min_size=1, max_size=14))
def test_sync_converges_under_crashes_and_changes(ops):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        maildir = root / "maildir"
        for sub in ("", ".Sent"):
            for part in ("cur", "new", "tmp"):
                (maildir / sub / part).mkdir(parents=True, exist_ok=True)
        config, factory = new_store(root / "run.db", maildir)
        mailbox = config.mailboxes[0]
        files: list[Path] = []

        for number, (kind, value, folder) in enumerate(ops):
            if kind == "add":
                path = (
                    maildir / folder / "new" / f"{1700000000 + number}.M{number}.host"
                )
                path.write_bytes(POOL[value])
                files.append(path)
            elif kind == "remove" and files:
                files.pop(value % len(files)).unlink()
            elif kind == "sync":
                connector = CrashAfter(LocalConnector(maildir, batch_size=2), value)
                try:
                    sync_mailbox(factory, config, mailbox, connector)
                except Crash:
                    pass
        sync_mailbox(factory, config, mailbox, LocalConnector(maildir, batch_size=2))

        clean_config, clean_factory = new_store(root / "clean.db", maildir)
        sync_mailbox(clean_factory, clean_config, clean_config.mailboxes[0])
        view = live_view(factory)
        assert view == live_view(clean_factory)

        # One activity per real message: a copy under another Message-ID, or
        # the same file in two folders, is the same activity.
        expected = {_subject(path.read_bytes()) for path in files}
        assert sorted(subject for subject, _, _ in view) == sorted(expected)
        live = sorted(p for _, paths, _ in view for p in paths)
        assert live == sorted(f"{_folder(p)}/{p.name}" for p in files)


def _folder(path: Path) -> str:
    return path.parent.parent.name if path.parent.parent.name == ".Sent" else "."


def _subject(data: bytes) -> str:
    for line in data.decode().splitlines():
        if line.startswith("Subject: "):
            return line[len("Subject: ") :]
    raise AssertionError("no subject")
