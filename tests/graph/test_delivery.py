"""Follow-ups delivered into a Microsoft 365 mailbox, against the Graph simulator.

Expected values from the Graph v1.0 reference: a todoTask is created with
``POST /users/{id}/todo/lists/{listId}/tasks`` (201) and has ``title``,
``body`` (itemBody), ``status`` (notStarted ...), ``isReminderOn``,
``reminderDateTime`` and ``dueDateTime`` (dateTimeTimeZone values); ``POST
/users/{id}/messages`` (201) saves a draft in Drafts (``isDraft`` true),
and a fileAttachment (``@odata.type`` ``#microsoft.graph.fileAttachment``,
``name``, ``contentType``, ``contentBytes`` in base64) may come in the same
request when it is under 3 MB. A 429 carries Retry-After, the seconds to
wait. The To Do delta gives the task again by its id: it is the activity
recorded at delivery, not a second one. Runs through the core on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from docx import Document
from sqlalchemy import select

from mailsync.config import Config, FollowupsConfig, MailboxConfig, parse_config
from mailsync.connectors.base import FollowUpTask, LetterDraft
from mailsync.connectors.graph import GraphConnector
from mailsync.connectors.graph_auth import Credential
from mailsync.errors import UserError
from mailsync.queries import history
from mailsync.reminders.rules import Status
from mailsync.reminders.scheduler import run_once
from mailsync.reminders.workdays import WorkCalendar
from mailsync.secrets import Secret
from mailsync.store.directory import account_by_name, contact_by_address
from mailsync.store.models import Activity, Reminder, Source
from mailsync.sync import sync_mailbox
from tests.graph.conftest import CLIENT_ID, CLIENT_SECRET, REP, connect, settings
from tests.graph.mailbox import Address, Attendee, Event, Mailbox, Message
from tests.graph.simulator import GraphSimulator
from tests.test_followups import TEMPLATES
from tests.test_sync import import_crm

BERLIN = ZoneInfo("Europe/Berlin")
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
TAMARA = Address(REP, "Tamara Johnston")
ANDY = Address("andy.carothers@tailspintoys.com", "Andy Carothers")

Opener = Callable[[MailboxConfig], Any]


@pytest.fixture
def config(store_url: str, factory: Any, graph: GraphSimulator) -> Config:
    """The simulated mailbox, its rep in Berlin, the CRM imported."""
    parsed = parse_config(
        {
            "database": {"url": store_url},
            "organisation": {"internal_domains": ["contoso.com"]},
            "mailboxes": [settings(graph).model_dump(mode="json")],
        }
    )
    followups = FollowupsConfig(timezone="Europe/Berlin", templates=TEMPLATES)
    config = parsed.model_copy(update={"followups": followups})
    import_crm(factory, config)
    return config


def opener(waits: list[float], timeout: tuple[float, float] | None = None) -> Opener:
    """Connectors that note their waits instead of sleeping."""

    def open_one(mailbox: MailboxConfig) -> GraphConnector:
        extra = {"timeout": timeout} if timeout else {}
        return GraphConnector(
            mailbox,  # type: ignore[arg-type]
            Credential(secret=Secret(CLIENT_SECRET, "test")),
            sleep=waits.append,
            **extra,
        )

    return open_one


def quote_mail(sent: datetime) -> bytes:
    message = EmailMessage()
    message["From"] = "Tamara Johnston <tamara@contoso.com>"
    message["To"] = "Andy Carothers <andy.carothers@tailspintoys.com>"
    message["Subject"] = "Pilot quote"
    message["Date"] = format_datetime(sent)
    message["Message-ID"] = "<quote-graph@contoso.com>"
    message.set_content("The quote for 40 scanners, as promised.")
    return message.as_bytes()


def a_quote_sent(box: Mailbox) -> datetime:
    """Mail to a contact nine days ago, with no reply: a no_reply reminder."""
    sent = (datetime.now(UTC) - timedelta(days=9)).replace(microsecond=0)
    box.add(Message.from_mime(quote_mail(sent)), "sentitems")
    return sent


def a_meeting_held(box: Mailbox) -> datetime:
    start = (datetime.now(UTC) - timedelta(days=6)).replace(
        hour=13, minute=0, second=0, microsecond=0
    )
    box.add_event(
        Event(
            subject="Warehouse scanning pilot review",
            start=start,
            end=start + timedelta(hours=1),
            organizer=TAMARA,
            attendees=(
                Attendee(TAMARA, response="organizer"),
                Attendee(ANDY, response="accepted"),
            ),
            zone="Europe/Berlin",
        )
    )
    return start


def calendar() -> WorkCalendar:
    workdays = ["monday", "tuesday", "wednesday", "thursday", "friday"]
    return WorkCalendar.of(BERLIN, [], workdays)


def sync(factory: Any, config: Config) -> None:
    report = sync_mailbox(factory, config, config.mailboxes[0])
    assert report.error is None, report.error


def todo(box: Mailbox) -> list[Any]:
    return box.list_tasks(box.default_list().id)


def drafts(box: Mailbox) -> list[Message]:
    return box.folder_messages(box.folder("drafts").id)


def test_a_task_with_its_reminder_goes_into_the_to_do_list_once(
    graph: GraphSimulator, rep_box: Mailbox, factory: Any, config: Config
) -> None:
    sent = a_quote_sent(rep_box)
    sync(factory, config)

    report = run_once(factory, config, connectors=opener([]))

    assert report.delivery.delivered == 1
    due = calendar().add_workdays(sent, 3)
    [task] = todo(rep_box)
    assert "Pilot quote" in task.title
    assert task.reminder == due
    assert task.due == due.astimezone(BERLIN).date()
    assert task.status == "notStarted"
    assert "no reply in 3 business days" in task.body
    assert graph.requests["todo.tasks.create"] == 1

    # What Graph gives for it: the reminder on, at the due instant, in UTC.
    connector, _ = connect(graph)
    [entry] = connector.http.get(
        f"{connector.http.user}/todo/lists/{task.list_id}/tasks/delta", "GET"
    )["value"]
    connector.close()
    assert entry["isReminderOn"] is True
    reminder_at = datetime.fromisoformat(entry["reminderDateTime"]["dateTime"][:19])
    assert reminder_at.replace(tzinfo=UTC) == due
    assert entry["reminderDateTime"]["timeZone"] == "UTC"

    # The next sync reads the task from the To Do delta: the same activity.
    sync(factory, config)
    sync(factory, config)
    with factory() as session:
        tasks = list(session.scalars(select(Activity).where(Activity.kind == "task")))
        [reminder] = session.scalars(select(Reminder)).all()
        sources = session.scalars(
            select(Source).where(Source.activity_id == tasks[0].id)
        ).all()
    assert len(tasks) == 1
    assert reminder.activity_id == tasks[0].id
    assert [(s.folder, s.provider_id) for s in sources] == [("Tasks", task.id)]
    assert run_once(factory, config, connectors=opener([])).delivery.delivered == 0
    assert len(todo(rep_box)) == 1


def test_a_letter_goes_into_drafts_with_the_docx_attached(
    graph: GraphSimulator, rep_box: Mailbox, factory: Any, config: Config
) -> None:
    start = a_meeting_held(rep_box)
    sync(factory, config)

    report = run_once(factory, config, connectors=opener([]))

    assert report.delivery.delivered == 2
    [draft] = drafts(rep_box)
    assert draft.is_draft is True
    assert [a.address for a in draft.to] == [ANDY.address]
    assert draft.subject == "Warehouse scanning pilot review"
    assert draft.internet_message_id
    assert draft.internet_message_id.startswith("<followup.")
    assert draft.internet_message_id.endswith("@contoso.com>")

    # The attachment as Graph gives it back: a fileAttachment, base64.
    connector, _ = connect(graph)
    [attachment] = connector.http.get(
        f"{connector.http.user}/messages/{draft.id}/attachments", "GET"
    )["value"]
    connector.close()
    assert attachment["@odata.type"] == "#microsoft.graph.fileAttachment"
    assert attachment["name"] == "sales_call_follow_up - Andy Carothers.docx"
    assert attachment["contentType"] == DOCX
    letter = Document(io.BytesIO(base64.b64decode(attachment["contentBytes"])))
    text = "\n".join(p.text for p in letter.paragraphs)
    assert "Dear Andy," in text
    local = start.astimezone(BERLIN)
    assert f"meet with me on {local:%B} {local.day}, {local.year}" in text
    assert "Proof Step" in text

    [task] = todo(rep_box)
    assert task.title.startswith("Follow up the meeting with Andy Carothers")

    # Drafts and the To Do list synced again: no second activity of either,
    # and both are in the contact's and the account's history.
    sync(factory, config)
    sync(factory, config)
    with factory() as session:
        kinds = sorted(
            k for (k,) in session.execute(select(Activity.kind)).all() if k != "meeting"
        )
        andy = contact_by_address(session, ANDY.address)
        tailspin = account_by_name(session, "Tailspin Toys")
        assert andy is not None and tailspin is not None
        of_andy = {(v.kind, v.subject) for v in history(session, "contact", andy.id)}
        of_tailspin = {
            (v.kind, v.subject) for v in history(session, "account", tailspin.id)
        }
    assert kinds == ["letter", "task"]
    assert ("letter", "Warehouse scanning pilot review") in of_andy
    assert ("letter", "Warehouse scanning pilot review") in of_tailspin
    assert ("task", task.title) in of_andy
    assert ("task", task.title) in of_tailspin
    assert run_once(factory, config, connectors=opener([])).delivery.delivered == 0
    assert (len(drafts(rep_box)), len(todo(rep_box))) == (1, 1)


def test_a_throttled_create_waits_the_retry_after_and_is_made_once(
    graph: GraphSimulator, rep_box: Mailbox, factory: Any, config: Config
) -> None:
    a_quote_sent(rep_box)
    sync(factory, config)
    graph.faults.throttle(times=2, retry_after=7, operation="todo.tasks.create")
    waits: list[float] = []

    report = run_once(factory, config, connectors=opener(waits))

    assert report.delivery.delivered == 1
    assert waits == [7.0, 7.0]
    assert len(todo(rep_box)) == 1
    creates = [c.status for c in graph.calls if c.operation == "todo.tasks.create"]
    assert creates == [429, 429, 201]


@pytest.mark.parametrize("fault", ["timeout", "dropped"])
def test_a_create_with_no_answer_is_uncertain_and_not_sent_again(
    graph: GraphSimulator,
    rep_box: Mailbox,
    factory: Any,
    config: Config,
    fault: str,
) -> None:
    a_quote_sent(rep_box)
    sync(factory, config)
    if fault == "timeout":
        graph.faults.delay(1.5, operation="todo.tasks.create")
    else:
        graph.faults.cut(operation="todo.tasks.create")
    waits: list[float] = []

    report = run_once(factory, config, connectors=opener(waits, (5.0, 0.5)))

    assert (report.delivery.delivered, report.delivery.failed) == (0, 1)
    assert report.delivery.retried == 0
    with factory() as session:
        [reminder] = session.scalars(select(Reminder)).all()
    assert reminder.status == Status.FAILED.value
    assert reminder.last_error is not None
    assert "may have been made" in reminder.last_error
    assert waits == []

    # Later runs leave it: the task the server made stays the only one.
    graph.faults.clear()
    assert run_once(factory, config, connectors=opener(waits)).delivery.delivered == 0
    deadline = time.monotonic() + 5
    while graph.requests["todo.tasks.create"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)  # the delayed create finishes on the server's thread
    assert len(todo(rep_box)) == 1
    assert graph.requests["todo.tasks.create"] == 1


def test_a_letter_of_3_mb_or_more_is_refused_with_the_fix(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    connector, _ = connect(graph)
    letter = LetterDraft(
        key="after_meeting:1",
        subject="Review",
        body="Dear Andy,",
        from_name=TAMARA.name,
        from_address=TAMARA.address,
        to_name=ANDY.name,
        to_address=ANDY.address,
        filename="big.docx",
        content=b"\0" * (3 * 1024 * 1024),
    )
    with pytest.raises(UserError, match="under 3 MB"):
        connector.save_letter(letter)
    connector.close()
    assert drafts(rep_box) == []
    assert graph.requests["messages.create"] == 0


def test_an_app_without_tasks_write_is_told_the_permission(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    graph.add_app(CLIENT_ID, "Mail.ReadWrite", "Tasks.Read.All")
    connector, _ = connect(graph)
    task = FollowUpTask(
        key="no_reply:1",
        subject="Follow up: Pilot quote",
        body="Why: no reply.",
        due=datetime(2027, 1, 15, 8, 0, tzinfo=UTC),
        zone="Europe/Berlin",
    )
    with pytest.raises(UserError, match=r"Tasks\.ReadWrite\.All"):
        connector.save_task(task)
    connector.close()
    assert todo(rep_box) == []


def test_the_simulator_adds_a_file_attachment_to_a_draft(
    graph: GraphSimulator, rep_box: Mailbox
) -> None:
    """POST messages/{id}/attachments, as Graph's Add attachment: 201 and the
    fileAttachment, whose bytes GET gives back."""
    connector, _ = connect(graph)
    user = connector.http.user
    draft = connector.http.create(
        f"{user}/messages", "POST messages", {"subject": "Notes"}
    )
    added = connector.http.create(
        f"{user}/messages/{draft['id']}/attachments",
        "POST attachments",
        {
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": "notes.txt",
            "contentType": "text/plain",
            "contentBytes": base64.b64encode(b"Scanner counts").decode(),
        },
    )
    [listed] = connector.http.get(f"{user}/messages/{draft['id']}/attachments", "GET")[
        "value"
    ]
    connector.close()
    assert draft["isDraft"] is True
    assert draft["parentFolderId"] == rep_box.folder("drafts").id
    assert (added["name"], added["size"]) == ("notes.txt", 14)
    assert base64.b64decode(listed["contentBytes"]) == b"Scanner counts"
    assert rep_box.get(draft["id"]).attachments[0].name == "notes.txt"
