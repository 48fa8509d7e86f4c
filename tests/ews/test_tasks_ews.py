"""The Tasks folder through the EWS connector, against the EWS simulator.

Expected values come from the EWS Task element (Status is NotStarted,
InProgress, Completed, WaitingOnOthers or Deferred; Contacts and Companies
are lists of strings; Owner is a name) and from [MS-OXOTASK]: a task's due
date is "in the user's local time zone" with "a time component of 12:00
midnight", and its completion date is "midnight in the local time zone,
converted to UTC". [MS-OXCPRPT] says PR_SEARCH_KEY is "a unique
binary-comparable key" that a copy of an object keeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from exchangelib.protocol import close_connections
from sqlalchemy import select

from mailsync.connectors.ews import EwsConnector
from mailsync.items import FolderRole, Item, ItemKind, Participant, Role, Task
from mailsync.store.models import Activity, ActivityKey, Source
from mailsync.sync import sync_mailbox
from tests.ews.simulator import EwsSimulator, SimMailbox, SimTask
from tests.ews.test_calendar import exchange  # noqa: F401 - the fixture
from tests.ews.test_connector import connect

BERLIN = ZoneInfo("Europe/Berlin")
CREATED = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _close_sessions() -> Iterator[None]:
    yield
    close_connections()


def midnight_in_berlin(day: date) -> datetime:
    """How Exchange sends a Berlin user's task date: local midnight, in UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=BERLIN).astimezone(UTC)


def task_items(connector: EwsConnector) -> list[Item]:
    tasks = next(f for f in connector.folders() if f.role is FolderRole.TASKS)
    return [i for b in connector.changes(tasks, None) for i in b.items]


def quote_task(**changes: Any) -> SimTask:
    values: dict[str, Any] = {
        "subject": "Send Andy the pilot quote",
        "body": "Quote for 40 scanners, net 30.",
        "status": "InProgress",
        "percent_complete": 50,
        "due_date": midnight_in_berlin(date(2026, 3, 16)),
        "owner": "Tamara Johnston",
        "contacts": ("Andy Carothers", "Lorraine Nay"),
        "companies": ("Tailspin Toys",),
        "categories": ("Tailspin",),
        "datetime_created": CREATED,
    }
    values.update(changes)
    return SimTask(**values)


def test_a_task_with_contacts_and_companies(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    stored = rep_mailbox.add(quote_task(), "tasks")
    connector, _ = connect(ews)

    [item] = task_items(connector)
    assert item.kind is ItemKind.TASK
    assert item.provider_id == stored.item_id
    assert item.change_key == stored.change_key
    assert item.folder.role is FolderRole.TASKS
    assert item.subject == "Send Andy the pilot quote"
    assert item.body_text == "Quote for 40 scanners, net 30."
    assert item.occurred_at == CREATED
    assert item.categories == ("Tailspin",)
    assert item.sensitivity is None
    assert item.participants == []  # the owner is a name, not an address
    assert item.meeting is None
    assert item.task == Task(
        uid=stored.search_key.hex().upper(),
        status="InProgress",
        due=date(2026, 3, 16),
        owner="Tamara Johnston",
        contacts=("Andy Carothers", "Lorraine Nay"),
        companies=("Tailspin Toys",),
        completed=None,
    )


def test_a_completed_task_and_a_private_one(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    done = rep_mailbox.add(
        quote_task(
            status="Completed",
            percent_complete=100,
            complete_date=midnight_in_berlin(date(2026, 3, 13)),
        ),
        "tasks",
    )
    private = rep_mailbox.add(
        quote_task(subject="Dentist", sensitivity="Private", due_date=None), "tasks"
    )
    connector, _ = connect(ews)

    items = {i.provider_id: i for i in task_items(connector)}
    finished = items[done.item_id].task
    assert finished is not None
    assert (finished.status, finished.completed) == ("Completed", date(2026, 3, 13))
    assert items[private.item_id].sensitivity == "private"
    assert items[private.item_id].task.due is None  # type: ignore[union-attr]


def test_an_owner_address_is_a_participant(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    rep_mailbox.add(quote_task(owner="andy.carothers@tailspintoys.com"), "tasks")
    connector, _ = connect(ews)
    [item] = task_items(connector)
    assert item.participants == [
        Participant("andy.carothers@tailspintoys.com", "", Role.TO)
    ]


def test_a_tasks_uid_survives_a_move_and_tells_tasks_apart(
    ews: EwsSimulator, rep_mailbox: SimMailbox
) -> None:
    # Two tasks made in the same second (as a script or our own reminders
    # make them): the creation time would not tell them apart.
    first = rep_mailbox.add(quote_task(), "tasks")
    second = rep_mailbox.add(quote_task(subject="Call Lorraine"), "tasks")
    connector, _ = connect(ews)
    before = {i.subject: i for i in task_items(connector)}

    rep_mailbox.add_folder("Someday", parent="tasks", folder_class="IPF.Task")
    moved = rep_mailbox.move(first, "Tasks/Someday")
    back = rep_mailbox.move(moved, "tasks")
    after = {i.subject: i for i in task_items(connector)}

    assert back.item_id != first.item_id
    assert after["Send Andy the pilot quote"].provider_id == back.item_id
    uids = {s: i.task.uid for s, i in after.items() if i.task}
    assert uids == {s: i.task.uid for s, i in before.items() if i.task}
    assert uids["Send Andy the pilot quote"] != uids["Call Lorraine"]
    assert second.item_id in {i.provider_id for i in after.values()}


def test_tasks_in_the_history(
    factory: Any,
    ews: EwsSimulator,
    rep_mailbox: SimMailbox,
    exchange: Any,  # noqa: F811 - the fixture
) -> None:
    task = rep_mailbox.add(quote_task(), "tasks")
    report = sync_mailbox(factory, exchange, exchange.mailboxes[0])
    assert report.rejected == 0

    uid = task.search_key.hex().upper()
    with factory() as session:
        activity = session.scalars(
            select(Activity).join(ActivityKey).where(ActivityKey.key == f"task:{uid}")
        ).one()
        assert (activity.kind, activity.task_status) == ("task", "InProgress")
        assert activity.due_at == datetime(2026, 3, 16, tzinfo=UTC)
        assert activity.due_is_date

    # Moved out of the Tasks folder and back: one activity, its source re-keyed.
    rep_mailbox.add_folder("Someday", parent="tasks", folder_class="IPF.Task")
    back = rep_mailbox.move(rep_mailbox.move(task, "Tasks/Someday"), "tasks")
    rep_mailbox.update(back, status="Completed", complete_date=CREATED + timedelta(1))
    again = sync_mailbox(factory, exchange, exchange.mailboxes[0])
    assert (again.new, again.removed) == (0, 1)
    with factory() as session:
        rows = session.execute(
            select(
                Source.provider_id, Source.removed_at.is_(None), Activity.task_status
            )
            .join(Activity)
            .where(Activity.kind == "task")
        ).all()
    assert sorted(rows) == sorted(
        [(task.item_id, False, "Completed"), (back.item_id, True, "Completed")]
    )
