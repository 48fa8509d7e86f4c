"""Follow-ups delivered into an Exchange mailbox, against the EWS simulator.

The real exchangelib creates the items (CreateItem): a task with its
reminder set (ReminderIsSet, ReminderDueBy, the EWS Task element's DueDate)
in the Tasks folder, and a draft (saved, not sent) in Drafts with the letter
attached in the same request as a FileAttachment. The next sync of the
Tasks folder reads the task back, keyed by its PR_SEARCH_KEY: it is the
activity recorded at delivery, not a second one.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from docx import Document
from exchangelib.protocol import close_connections
from sqlalchemy import select

from mailsync.config import FollowupsConfig
from mailsync.reminders.scheduler import run_once
from mailsync.reminders.workdays import WorkCalendar
from mailsync.store.models import Activity, Reminder, Source
from mailsync.sync import sync_mailbox
from tests.ews.mailbox import SimAttachment, SimMessage, SimTask
from tests.ews.simulator import Attendee, EwsSimulator, SimCalendarItem, SimMailbox
from tests.ews.test_calendar import ANDY, TAMARA
from tests.ews.test_calendar import exchange as exchange  # noqa: F401 - fixture
from tests.test_followups import TEMPLATES

BERLIN = ZoneInfo("Europe/Berlin")
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


@pytest.fixture(autouse=True)
def _close_sessions() -> Iterator[None]:
    yield
    close_connections()


@pytest.fixture
def config(exchange: Any) -> Any:
    followups = FollowupsConfig(timezone="Europe/Berlin", templates=TEMPLATES)
    return exchange.model_copy(update={"followups": followups})


def quote_mail(sent: datetime) -> bytes:
    message = EmailMessage()
    message["From"] = "Tamara Johnston <tamara@contoso.com>"
    message["To"] = "Andy Carothers <andy.carothers@tailspintoys.com>"
    message["Subject"] = "Pilot quote"
    message["Date"] = format_datetime(sent)
    message["Message-ID"] = "<quote-ews@contoso.com>"
    message.set_content("The quote for 40 scanners, as promised.")
    return message.as_bytes()


def calendar() -> WorkCalendar:
    workdays = ["monday", "tuesday", "wednesday", "thursday", "friday"]
    return WorkCalendar.of(BERLIN, [], workdays)


def sync(factory: Any, config: Any) -> None:
    report = sync_mailbox(factory, config, config.mailboxes[0])
    assert report.error is None, report.error


def items_in(mailbox: SimMailbox, folder: str) -> list[Any]:
    target = mailbox.folder(folder).folder_id
    return [i for i in mailbox.items.values() if i.folder_id == target]


def test_a_task_with_its_reminder_goes_into_the_tasks_folder_once(
    ews: EwsSimulator, rep_mailbox: SimMailbox, factory: Any, config: Any
) -> None:
    sent = (datetime.now(UTC) - timedelta(days=9)).replace(microsecond=0)
    rep_mailbox.add(SimMessage.from_mime(quote_mail(sent)), "sentitems")
    sync(factory, config)

    report = run_once(factory, config)

    assert report.delivery.delivered == 1
    due = calendar().add_workdays(sent, 3)
    [task] = items_in(rep_mailbox, "tasks")
    assert isinstance(task, SimTask)
    assert "Pilot quote" in task.subject
    assert task.reminder_is_set is True
    assert task.reminder_due_by == due
    assert task.due_date is not None
    assert task.due_date.date() == due.astimezone(BERLIN).date()
    assert task.status == "NotStarted"
    assert task.contacts == ("Andy Carothers",)
    assert task.companies == ("Tailspin Toys",)
    assert "no reply in 3 business days" in task.body

    # The next sync reads the task from the Tasks folder: the same activity.
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
    assert [(s.folder, s.provider_id) for s in sources] == [("Tasks", task.item_id)]
    assert tasks[0].due_at is not None
    assert run_once(factory, config).delivery.delivered == 0
    assert len(items_in(rep_mailbox, "tasks")) == 1


def test_a_letter_goes_into_drafts_with_the_docx_attached(
    ews: EwsSimulator, rep_mailbox: SimMailbox, factory: Any, config: Any
) -> None:
    start = (datetime.now(UTC) - timedelta(days=6)).replace(
        hour=13, minute=0, second=0, microsecond=0
    )
    rep_mailbox.add(
        SimCalendarItem(
            subject="Warehouse scanning pilot review",
            uid="040000008200E00074C5B7101A82E008000000005566",
            start=start,
            end=start + timedelta(hours=1),
            organizer=TAMARA,
            required=(Attendee(TAMARA, "Organizer"), Attendee(ANDY, "Accept")),
        ),
        "calendar",
    )
    sync(factory, config)

    report = run_once(factory, config)

    assert report.delivery.delivered == 2
    [draft] = items_in(rep_mailbox, "drafts")
    assert isinstance(draft, SimMessage)
    assert draft.is_draft is True
    assert [a.email for a in draft.to] == ["andy.carothers@tailspintoys.com"]
    assert draft.subject == "Warehouse scanning pilot review"
    assert draft.message_id and draft.message_id.endswith("@contoso.com>")
    [attachment] = draft.attachments
    assert isinstance(attachment, SimAttachment)
    assert attachment.name == "sales_call_follow_up - Andy Carothers.docx"
    assert attachment.content_type == DOCX
    letter = Document(io.BytesIO(attachment.content))
    text = "\n".join(p.text for p in letter.paragraphs)
    assert "Dear Andy," in text
    local = start.astimezone(BERLIN)
    assert f"meet with me on {local:%B} {local.day}, {local.year}" in text
    assert "Proof Step" in text

    [task] = items_in(rep_mailbox, "tasks")
    assert task.subject.startswith("Follow up the meeting with Andy Carothers")

    # The Drafts and Tasks folders synced again: no second activity of either.
    sync(factory, config)
    with factory() as session:
        kinds = sorted(
            k for (k,) in session.execute(select(Activity.kind)).all() if k != "meeting"
        )
    assert kinds == ["letter", "task"]
