"""Microsoft To Do tasks through Graph.

Expected values from the todoTask reference: ``status`` is one of
notStarted, inProgress, completed, waitingOnOthers, deferred;
``dueDateTime`` and ``completedDateTime`` are dateTimeTimeZone values,
which To Do keeps as the user's local midnight (here Berlin, so 23:00 or
22:00 UTC the day before); delta pages end in an ``@odata.deltaLink`` and a
deleted task is an ``@removed`` entry. The flagged-e-mail list holds mail,
not tasks.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from mailsync.config import Config, parse_config
from mailsync.items import FolderRole, ItemKind
from mailsync.sync import sync_mailbox
from tests.contract import drain
from tests.graph.conftest import connect, settings
from tests.graph.mailbox import Mailbox, TodoTask
from tests.graph.simulator import GraphSimulator
from tests.test_sync import import_crm


def test_tasks_come_with_their_status_and_dates(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    task = rep_box.add_task(
        TodoTask(
            title="Send Tailspin the pilot quote",
            body="Include the scanner leasing option.",
            status="inProgress",
            due=date(2027, 1, 15),
            categories=("Tailspin Toys",),
        )
    )
    done = rep_box.add_task(
        TodoTask(
            title="Book the Joliet visit",
            status="completed",
            due=date(2026, 11, 30),
            completed=date(2026, 11, 27),
        )
    )
    connector, _ = connect(graph)
    folders = connector.folders()
    assert [f.name for f in folders if f.role is FolderRole.TASKS] == ["Tasks"]
    assert "Tasks/Flagged Emails" not in {f.name for f in folders}
    tasks = next(f for f in folders if f.role is FolderRole.TASKS)
    items = {i.subject: i for i in drain(connector, tasks, None)[0]}

    quote = items["Send Tailspin the pilot quote"]
    assert quote.kind is ItemKind.TASK and quote.task is not None
    assert (quote.task.uid, quote.task.status, quote.task.due) == (
        task.id,
        "InProgress",
        date(2027, 1, 15),
    )
    assert quote.body_text == "Include the scanner leasing option."
    assert quote.categories == ("Tailspin Toys",)
    assert quote.change_key == task.etag

    visit = items["Book the Joliet visit"]
    assert visit.task is not None
    assert (visit.task.uid, visit.task.status) == (done.id, "Completed")
    assert (visit.task.due, visit.task.completed) == (
        date(2026, 11, 30),
        date(2026, 11, 27),
    )


def test_other_lists_are_folders_and_a_deleted_task_is_removed(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    follow_ups = rep_box.add_todo_list("Follow-ups")
    call = rep_box.add_task(TodoTask(title="Call Lorraine"), follow_ups)
    connector, _ = connect(graph)
    folder = next(f for f in connector.folders() if f.name == "Tasks/Follow-ups")
    items, _, _, cursor = drain(connector, folder, None)
    assert [i.provider_id for i in items] == [call.id]

    rep_box.update_task(call, status="completed")
    rep_box.add_task(TodoTask(title="Send the contract"), follow_ups)
    items, removed, _, cursor = drain(connector, folder, cursor)
    assert sorted(i.subject for i in items) == ["Call Lorraine", "Send the contract"]
    assert removed == []

    rep_box.delete_task(call)
    items, removed, _, _ = drain(connector, folder, cursor)
    assert (items, removed) == ([], [call.id])


def configure(url: str, sim: GraphSimulator) -> Config:
    return parse_config(
        {
            "database": {"url": url},
            "organisation": {"internal_domains": ["contoso.com"]},
            "mailboxes": [settings(sim, folders=["Tasks"]).model_dump(mode="json")],
        }
    )


def test_a_task_is_one_activity_through_its_changes(
    store_url: str, factory: Any, graph: GraphSimulator, rep_box: Mailbox
) -> None:
    from sqlalchemy import select

    from mailsync.store.models import Activity

    config = configure(store_url, graph)
    import_crm(factory, config)
    task = rep_box.add_task(TodoTask(title="Send the quote", due=date(2027, 1, 15)))
    first = sync_mailbox(factory, config, config.mailboxes[0])
    assert (first.new, first.error) == (1, None)
    rep_box.update_task(task, status="completed", completed=date(2027, 1, 14))
    again = sync_mailbox(factory, config, config.mailboxes[0])
    assert (again.new, again.updated) == (0, 1)
    with factory() as session:
        (activity,) = session.scalars(select(Activity)).all()
    assert (activity.kind, activity.task_status) == ("task", "Completed")
    assert activity.completed_at is not None
    assert activity.completed_at.date() == date(2027, 1, 14)
    assert activity.due_is_date is True
