"""End to end: a few hundred real Enron messages on the simulated Exchange.

The same files are synced twice: from the simulator through exchangelib and
the EWS connector, and from disk through the local connector. Both paths
share only the core, so the oracle is independent of the EWS code: the
activities and links of the messages must be the same. The Exchange mailbox
also holds a weekly meeting series with an ERCOT contact and a task naming
her, whose history is checked value by value. Then the mailbox changes (new
mail, a move, a delete, a cancellation of one occurrence, the task completed)
and both are synced again.

Skipped when ../shared/corpus is absent; tests/ews/test_connector.py covers
the same ground with the Contoso sample written here.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from exchangelib.protocol import close_connections
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mailsync.config import parse_config
from mailsync.store import db
from mailsync.store.models import (
    Account,
    Activity,
    ActivityKey,
    Contact,
    Link,
    Source,
)
from mailsync.sync import sync_mailbox
from tests.conftest import ENRON, SHARED, needs_corpus
from tests.ews.conftest import SERVICE_PASSWORD, SERVICE_USER
from tests.ews.simulator import (
    Address,
    Attendee,
    EwsSimulator,
    MeetingKind,
    Recurrence,
    SimCalendarItem,
    SimMailbox,
    SimMeetingMessage,
    SimMessage,
    SimTask,
)
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

CRAIG = Address(REP, "Craig Dean")
CHERYL = Address("cmoseley@ercot.com", "Cheryl Moseley")
SERIES_UID = "040000008200E00074C5B7101A82E00800000000E2E0ERCOT0001"
MONDAYS = [datetime(2026, 11, 2, 15, tzinfo=UTC) + timedelta(weeks=n) for n in range(4)]


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
    """The messages' history: activities, keys, links and live sources."""
    seen = snapshot(factory)
    with factory() as session:
        others = set(
            session.scalars(select(Activity.subject).where(Activity.kind != "message"))
        )
        live = session.execute(
            select(Activity.subject)
            .join(Source)
            .where(Source.removed_at.is_(None), Activity.kind == "message")
        ).all()
    del seen["sources"]  # provider ids differ by connector, by design
    seen["activities"] = [s for s in seen["activities"] if s not in others]  # type: ignore[attr-defined]
    seen["links"] = [x for x in seen["links"] if x[0] not in others]  # type: ignore[attr-defined]
    seen["live_sources"] = len(live)
    del seen["keys"]  # meetings and tasks have keys of their own
    return seen


def market_call() -> SimCalendarItem:
    """Four Mondays with ERCOT, organised by the rep."""
    return SimCalendarItem(
        subject="ERCOT market call",
        uid=SERIES_UID,
        start=MONDAYS[0],
        end=MONDAYS[0] + timedelta(minutes=45),
        organizer=CRAIG,
        required=(Attendee(CRAIG, "Organizer"), Attendee(CHERYL, "Accept")),
        recurrence=Recurrence(
            start=date(2026, 11, 2), days_of_week=("Monday",), count=4
        ),
    )


def interconnect_task() -> SimTask:
    return SimTask(
        subject="Send ERCOT the interconnect study",
        body="Cheryl asked for the study before the next call.",
        due_date=datetime(2026, 11, 20, tzinfo=UTC),
        contacts=("Moseley, Cheryl",),
        companies=("ERCOT",),
    )


def meeting_history(factory: sessionmaker[Session]) -> dict[str, Any]:
    """Per meeting and task activity: start or due, status, and its links."""
    with factory() as session:
        names = {("contact", c.id): c.name for c in session.scalars(select(Contact))}
        names |= {("account", a.id): a.name for a in session.scalars(select(Account))}
        rows = {}
        for activity in session.scalars(
            select(Activity).where(Activity.kind != "message")
        ):
            links = sorted(
                (names[(link.target_kind, link.target_id)], link.rule)
                for link in session.scalars(
                    select(Link).where(
                        Link.activity_id == activity.id, Link.suppressed.is_(False)
                    )
                )
            )
            when = activity.starts_at or activity.due_at
            series = session.scalar(
                select(ActivityKey.id).where(
                    ActivityKey.activity_id == activity.id,
                    ActivityKey.key == f"uid:{SERIES_UID}|",
                )
            )
            subject = activity.subject + (" (series)" if series else "")
            key = (activity.kind, subject, when)
            assert key not in rows, f"two activities for {key}"
            rows[key] = (activity.status, activity.task_status, links)
    return rows


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

    sim_box.add(market_call(), "calendar")
    task = sim_box.add(interconnect_task(), "tasks")

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
    assert by_files.items == wanted
    assert by_ews.items == wanted + 1 + 4 + 1  # the series, 4 occurrences, a task
    assert (by_ews.new, by_ews.excluded, by_ews.rejected) == (
        by_files.new + 6,
        by_files.excluded,
        by_files.rejected,
    )
    ercot = [("Cheryl Moseley", "address"), ("ERCOT", "address")]
    # The account comes through its contact first (the stronger rule).
    by_name = [("Cheryl Moseley", "contact_name"), ("ERCOT", "contact_name")]
    meetings = {
        ("meeting", "ERCOT market call", start): ("active", None, ercot)
        for start in MONDAYS
    }
    due = datetime(2026, 11, 20, tzinfo=UTC)
    task_key = ("task", "Send ERCOT the interconnect study", due)
    series = ("meeting", "ERCOT market call (series)", MONDAYS[0])
    expected = {
        **meetings,
        series: ("active", None, ercot),
        task_key: ("active", "NotStarted", by_name),
    }
    assert meeting_history(ews_store) == expected

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
    # Cheryl cancels the third call; the task is done.
    sim_box.add(
        SimMeetingMessage(
            kind=MeetingKind.CANCELLATION,
            subject="Canceled: ERCOT market call",
            author=CRAIG,
            to=(CHERYL,),
            uid=SERIES_UID,
            sequence=1,
            recurrence_id=MONDAYS[2],
            start=MONDAYS[2],
            end=MONDAYS[2] + timedelta(minutes=45),
            organizer=CRAIG,
            required=(Attendee(CHERYL),),
            message_id="<cancel-ercot-1116@enron.com>",
            datetime_sent=datetime(2026, 11, 12, 9, tzinfo=UTC),
        ),
        "sentitems",
    )
    sim_box.update(
        task, status="Completed", complete_date=datetime(2026, 11, 19, tzinfo=UTC)
    )

    by_ews, by_files = both()
    assert by_ews.error is None and by_files.error is None
    second = history_of(ews_store)
    assert second == history_of(file_store)
    cancelled = ("meeting", "ERCOT market call", MONDAYS[2])
    expected[cancelled] = ("cancelled", None, ercot)
    expected[task_key] = ("active", "Completed", by_name)
    now = meeting_history(ews_store)
    assert now == expected  # the cancellation is that occurrence, not a new one
    assert second["activities"] != first["activities"]
    with ews_store() as session:
        assert session.scalar(select(func.count()).select_from(Activity)) == len(
            second["activities"]  # type: ignore[arg-type]
        ) + len(now)

    # A third sync changes nothing on either side.
    by_ews, by_files = both()
    assert (by_ews.new, by_ews.updated) == (0, 0)
    assert history_of(ews_store) == second


def placed_folder(mailbox: SimMailbox, name: str) -> str:
    folder = mailbox.find_folder(name)
    assert folder is not None
    return folder.folder_id
