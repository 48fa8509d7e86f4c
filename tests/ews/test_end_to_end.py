"""End to end: a few hundred real Enron messages on the simulated Exchange.

The same files are synced twice: from the simulator through exchangelib and
the EWS connector, and from disk through the local connector. Both paths
share only the core, so the oracle is independent of the EWS code: the
activities and links must be the same. Then the mailbox changes (new mail, a
move, a delete) and both are synced again.

Skipped when ../shared/corpus is absent; tests/ews/test_connector.py covers
the same ground with the Contoso sample written here.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from exchangelib.protocol import close_connections
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mailsync.config import parse_config
from mailsync.store import db
from mailsync.store.models import Activity, Link, Source
from mailsync.sync import sync_mailbox
from tests.conftest import ENRON, SHARED, needs_corpus
from tests.ews.conftest import SERVICE_PASSWORD, SERVICE_USER
from tests.ews.simulator import EwsSimulator, SimMailbox, SimMessage
from tests.test_sync import import_crm, snapshot

pytestmark = [needs_corpus, pytest.mark.corpus]

PERSON = "dean-c"
REP = "craig.dean@enron.com"
# Folders of the person's tree and where they go on Exchange (None: a folder
# of that name under the top of the store). all_documents is Lotus Notes'
# copy of the others: the same messages again, to be merged.
FOLDERS = {
    "inbox": "inbox",
    "sent_items": "sentitems",
    "info": None,
    "all_documents": None,
}
PER_FOLDER = 100


@pytest.fixture(autouse=True)
def _close_sessions() -> Iterator[None]:
    yield
    close_connections()


def corpus_files() -> dict[str, list[Path]]:
    chosen = {}
    for name in FOLDERS:
        files = sorted(
            (p for p in (ENRON / PERSON / name).iterdir() if p.is_file()),
            key=lambda p: int("".join(c for c in p.name if c.isdigit()) or 0),
        )
        chosen[name] = files[: PER_FOLDER + 1]
    return chosen


def store(tmp: Path, name: str) -> sessionmaker[Session]:
    engine = db.open_engine(f"sqlite:///{tmp / name}")
    db.upgrade(engine)
    return db.sessions(engine)


def config(url: str, mailbox: dict[str, Any]) -> Any:
    return parse_config(
        {
            "database": {"url": url},
            "organisation": {"internal_domains": ["enron.com"]},
            "mailboxes": [
                {"address": REP, "rep": "Craig Dean", **mailbox},
            ],
        }
    )


def history_of(factory: sessionmaker[Session]) -> dict[str, object]:
    seen = snapshot(factory)
    del seen["sources"]  # provider ids differ by connector, by design
    with factory() as session:
        seen["live_sources"] = session.scalar(
            select(func.count()).select_from(Source).where(Source.removed_at.is_(None))
        )
    return seen


def test_corpus_mailbox_on_exchange_matches_the_files_through_changes(
    tmp_path: Path, ews: EwsSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILSYNC_TEST_EWS_PASSWORD", SERVICE_PASSWORD)
    files = corpus_files()
    sim_box: SimMailbox = ews.add_mailbox(REP, "Craig Dean")
    tree = tmp_path / "tree" / PERSON
    placed: dict[str, list[Any]] = {}
    for name, target in FOLDERS.items():
        folder_id = target or sim_box.add_folder(name).folder_id
        (tree / name).mkdir(parents=True)
        placed[name] = []
        for path in files[name][:PER_FOLDER]:
            shutil.copy(path, tree / name / path.name)
            item = sim_box.add(SimMessage.from_mime(path.read_bytes()), folder_id)
            placed[name].append((item, path.name))

    ews_store, file_store = store(tmp_path, "ews.db"), store(tmp_path, "files.db")
    ews_config = config(
        f"sqlite:///{tmp_path / 'ews.db'}",
        {
            "kind": "ews",
            "endpoint": ews.url,
            "username": SERVICE_USER,
            "auth": "basic",
            "password_env": "MAILSYNC_TEST_EWS_PASSWORD",
            "backfill_days": 36500,
            "page_size": 50,
        },
    )
    file_config = config(
        f"sqlite:///{tmp_path / 'files.db'}", {"kind": "local", "path": str(tree)}
    )
    crm = SHARED / "crm" / "enron"
    import_crm(ews_store, ews_config, crm)
    import_crm(file_store, file_config, crm)

    def both() -> tuple[Any, Any]:
        return (
            sync_mailbox(ews_store, ews_config, ews_config.mailboxes[0]),
            sync_mailbox(file_store, file_config, file_config.mailboxes[0]),
        )

    by_ews, by_files = both()
    assert by_ews.error is None and by_files.error is None
    wanted = sum(min(PER_FOLDER, len(f)) for f in files.values())
    assert by_ews.items == by_files.items == wanted
    assert (by_ews.new, by_ews.excluded, by_ews.rejected) == (
        by_files.new,
        by_files.excluded,
        by_files.rejected,
    )
    first = history_of(ews_store)
    assert first == history_of(file_store)
    with ews_store() as session:
        linked = session.scalar(select(func.count(func.distinct(Link.activity_id))))
    assert by_ews.new > 50 and linked and linked > 10  # a real, linked history

    # New mail in two folders, a message moved, a message deleted.
    for name in ("info", "all_documents"):
        extra = files[name][PER_FOLDER]
        shutil.copy(extra, tree / name / extra.name)
        target = FOLDERS[name] or placed_folder(sim_box, name)
        sim_box.add(SimMessage.from_mime(extra.read_bytes()), target)
    moved, moved_name = placed["info"][5]
    sim_box.move(moved, placed_folder(sim_box, "all_documents"))
    shutil.move(tree / "info" / moved_name, tree / "all_documents" / f"m{moved_name}")
    gone, gone_name = placed["inbox"][9]
    sim_box.delete(gone, hard=True)
    (tree / "inbox" / gone_name).unlink()

    by_ews, by_files = both()
    assert by_ews.error is None and by_files.error is None
    second = history_of(ews_store)
    assert second == history_of(file_store)
    assert second["activities"] != first["activities"]
    with ews_store() as session:
        assert session.scalar(select(func.count()).select_from(Activity)) == len(
            second["activities"]  # type: ignore[arg-type]
        )

    # A third sync changes nothing on either side.
    by_ews, by_files = both()
    assert (by_ews.new, by_ews.updated) == (0, 0)
    assert history_of(ews_store) == second


def placed_folder(mailbox: SimMailbox, name: str) -> str:
    folder = mailbox.find_folder(name)
    assert folder is not None
    return folder.folder_id
