"""End to end: the Contoso sample mailbox on the simulated Microsoft 365.

The same files are synced twice: from disk through the local connector, and
from the Graph simulator through the Graph connector. The two paths share
only the core, so the oracle is independent of the Graph code: the
activities and their links must be the same. Then the rep moves and deletes
mail: a move is an ``@removed`` in one folder's delta and a new entry in the
other's (with immutable ids, the same id), and the activity stays one
whichever folder is synced first. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from mailsync.config import Config, parse_config
from mailsync.store import db
from mailsync.store.models import Activity, Source
from mailsync.sync import sync_mailbox
from tests.conftest import CONTOSO, contoso_config
from tests.graph.conftest import settings
from tests.graph.mailbox import Mailbox, Message
from tests.graph.simulator import GraphSimulator
from tests.test_sync import account_timeline, import_crm, snapshot

PLACES = {"": "inbox", ".Sent": "sentitems", ".Drafts": "drafts", ".Junk": "junkemail"}


def contoso_on_graph(box: Mailbox) -> None:
    """The Contoso sample maildir, delivered into the simulated mailbox."""
    box.add_folder("Tailspin", parent="inbox")
    for path in sorted((CONTOSO / "maildir").rglob("*")):
        if path.name.startswith(".") or path.parent.name not in ("cur", "new"):
            continue
        top = path.parent.parent.name
        top = top if top.startswith(".") else ""
        folder = "Inbox/Tailspin" if top == ".Tailspin" else PLACES.get(top, "inbox")
        box.add(Message.from_mime(path.read_bytes()), folder)


def graph_config(url: str, sim: GraphSimulator) -> Config:
    return parse_config(
        {
            "database": {"url": url},
            "organisation": {"internal_domains": ["contoso.com"]},
            "mailboxes": [settings(sim, page_size=10).model_dump(mode="json")],
        }
    )


@pytest.fixture
def m365(
    store_url: str, factory: Any, graph: GraphSimulator, rep_box: Mailbox
) -> Config:
    contoso_on_graph(rep_box)
    config = graph_config(store_url, graph)
    import_crm(factory, config)
    return config


def from_files(tmp_path: Path, contoso_maildir: Path) -> dict[str, Any]:
    url = f"sqlite:///{tmp_path / 'files.db'}"
    config = contoso_config(url, contoso_maildir)
    engine = db.open_engine(url)
    db.upgrade(engine)
    factory = db.sessions(engine)
    import_crm(factory, config)
    sync_mailbox(factory, config, config.mailboxes[0])
    found = snapshot(factory)
    engine.dispose()
    return found


def test_contoso_on_microsoft_365_gives_the_same_history_as_from_files(
    factory: Any, m365: Config, tmp_path: Path, contoso_maildir: Path
) -> None:
    report = sync_mailbox(factory, m365, m365.mailboxes[0])
    assert report.error is None
    # As from files: 17 Inbox + 12 Sent + 8 Tailspin + 1 Drafts items; the
    # invitation and its acceptance (read from their MIME) are one meeting.
    assert (report.items, report.new, report.excluded, report.rejected) == (
        38,
        29,
        8,
        0,
    )
    assert report.excluded_by == {
        "draft": 1,
        "private": 1,
        "automated": 2,
        "internal_only": 4,
    }
    mine, theirs = snapshot(factory), from_files(tmp_path, contoso_maildir)
    assert mine["activities"] == theirs["activities"]
    assert mine["links"] == theirs["links"]
    [meeting] = [a for a in account_timeline(factory) if a.kind == "meeting"]
    assert meeting.subject == "Tailspin Toys pilot review"
    assert len(meeting.sources) == 2


def present_folders(factory: Any, subject: str) -> list[tuple[str, bool]]:
    with factory() as session:
        rows = session.execute(
            select(Source.folder, Source.removed_at.is_(None))
            .join(Activity)
            .where(Activity.subject == subject)
        ).all()
    return sorted((folder, bool(present)) for folder, present in rows)


def activities(factory: Any) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(Activity)) or 0


@pytest.mark.parametrize(
    ("subject", "origin", "into"),
    [
        ("Dublin DC pricing in euros", "Inbox", "Inbox/Tailspin"),
        ("Budget line for scanners in FY27", "Inbox/Tailspin", "Inbox"),
    ],
    ids=["removed-first", "arrived-first"],
)
def test_a_move_rekeys_the_source_without_a_duplicate(
    factory: Any, m365: Config, rep_box: Mailbox, subject: str, origin: str, into: str
) -> None:
    # Inbox is synced before its subfolder: the removal comes first in one
    # case, the arrival in the other.
    sync_mailbox(factory, m365, m365.mailboxes[0])
    before = activities(factory)
    moved = next(m for m in rep_box.messages.values() if m.subject == subject)
    assert rep_box.path(rep_box.folders[moved.folder_id]) == origin
    kept_id = moved.id
    rep_box.move(moved, into)
    assert moved.id == kept_id  # an immutable id

    again = sync_mailbox(factory, m365, m365.mailboxes[0])
    assert (again.new, again.removed, again.error) == (0, 1, None)
    assert activities(factory) == before
    assert present_folders(factory, subject) == sorted([(origin, False), (into, True)])


def test_a_deleted_message_and_a_forgotten_sync_state(
    factory: Any, m365: Config, rep_box: Mailbox
) -> None:
    sync_mailbox(factory, m365, m365.mailboxes[0])
    before = activities(factory)
    subject = "Budget line for scanners in FY27"
    gone = next(m for m in rep_box.messages.values() if m.subject == subject)
    rep_box.delete(gone, hard=False)  # into Deleted Items, which is not synced
    again = sync_mailbox(factory, m365, m365.mailboxes[0])
    assert (again.new, again.removed) == (0, 1)
    assert present_folders(factory, subject) == [("Inbox/Tailspin", False)]

    # A mailbox move forgets every delta token: each folder is read again
    # (410), and identity keys keep the history free of duplicates.
    rep_box.delta.forget()
    third = sync_mailbox(factory, m365, m365.mailboxes[0])
    assert third.error is None and third.new == 0
    assert activities(factory) == before
