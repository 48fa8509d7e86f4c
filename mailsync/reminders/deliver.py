"""Delivering due reminders into the reps' mailboxes, and recording them.

One reminder goes through three steps, each its own transaction:

1. **claim**: pending becomes delivering, only if it is still pending (two
   processes never both deliver one); the task or letter is composed, and a
   letter whose template cannot be filled fails here, before anything is
   written anywhere;
2. **write**: the rep's connector writes it (:class:`FollowUpWriter`);
3. **record**: the item the connector gives back is recorded as an activity
   of the history (a task, or a letter), linked to its contact and account,
   and the reminder is delivered.

A failure that may pass (the server busy) puts the reminder back to pending
for the next run, up to ``followups.delivery_attempts`` tries. A reminder
left delivering by a process that stopped between step 1 and step 3 is
failed, never delivered again: its task may be in the mailbox already, and
one condition gives at most one reminder. ``mailsync reminders list`` shows
it with the reason.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from mailsync.config import Config, MailboxConfig
from mailsync.connectors import open_connector
from mailsync.connectors.base import (
    Connector,
    DeliveryUncertain,
    FollowUpTask,
    FollowUpWriter,
    LetterDraft,
)
from mailsync.errors import ConfigError, UserError
from mailsync.identity import identity_keys
from mailsync.items import Item, ItemKind, Role
from mailsync.linker.addresses import normalise
from mailsync.linker.rules import match_participants
from mailsync.reminders import letters
from mailsync.reminders.evaluate import settle
from mailsync.reminders.rules import Kind, Rule, Status
from mailsync.store.db import transaction
from mailsync.store.directory import load_directory
from mailsync.store.history import ItemPlan, record_item, set_manual_link
from mailsync.store.models import (
    Account,
    Activity,
    Contact,
    ContactAddress,
    Link,
    Mailbox,
    Reminder,
)
from mailsync.store.models import (
    now as utc_now,
)
from mailsync.sync import Skip, linking_for, plan_item

log = logging.getLogger(__name__)

Opener = Callable[[MailboxConfig], Connector]

# A reminder delivering for longer than this was left by a process that stopped.
STALE = timedelta(minutes=10)
# The note of a failed reminder whose task or letter may have been written.
MAYBE_DELIVERED = "it may be in the mailbox already: look there"


@dataclass
class DeliveryReport:
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    missed: int = 0
    interrupted: int = 0

    def log_line(self) -> str:
        return (
            f"follow-ups delivered: {self.delivered}, to try again: {self.retried}, "
            f"failed: {self.failed}, missed turns: {self.missed}, "
            f"interrupted: {self.interrupted}"
        )


def deliver_due(
    factory: sessionmaker[Session],
    config: Config,
    now: datetime | None = None,
    connectors: Opener = open_connector,
    only: Iterable[int] | None = None,
) -> DeliveryReport:
    """Deliver the pending reminders that are due (or only those named)."""
    now = now or utc_now()
    report = DeliveryReport()
    with transaction(factory) as session:
        report.interrupted = _fail_interrupted(session, now)
        settle(session, config.followups, now)
        report.missed = _miss_late_turns(session, config, now)
        due = _due(session, now, only)
    for address, ids in due.items():
        _deliver_mailbox(factory, config, address, ids, now, connectors, report)
    if due or report.interrupted or report.missed:
        log.info(report.log_line())
    return report


def _due(
    session: Session, now: datetime, only: Iterable[int] | None
) -> dict[str, list[int]]:
    query = (
        select(Reminder.id, Mailbox.address)
        .join(Mailbox, Mailbox.id == Reminder.mailbox_id)
        .where(Reminder.status == Status.PENDING.value, Reminder.due_at <= now)
        .order_by(Reminder.due_at, Reminder.id)
    )
    if only is not None:
        query = query.where(Reminder.id.in_(list(only)))
    found: dict[str, list[int]] = defaultdict(list)
    for reminder_id, address in session.execute(query):
        found[address].append(reminder_id)
    return found


def _fail_interrupted(session: Session, now: datetime) -> int:
    stale = list(
        session.scalars(
            select(Reminder).where(
                Reminder.status == Status.DELIVERING.value,
                Reminder.updated_at < now - STALE,
            )
        )
    )
    for row in stale:
        row.status = Status.FAILED.value
        row.note = (
            "interrupted while it was being delivered (the process stopped); "
            + MAYBE_DELIVERED
        )
        row.updated_at = now
        log.warning("follow-ups: reminder %d was interrupted; not tried again", row.id)
    return len(stale)


def _miss_late_turns(session: Session, config: Config, now: datetime) -> int:
    """A check-in's turn past its grace time is missed, not delivered late:
    the next turn comes on its own schedule."""
    grace = timedelta(minutes=config.followups.misfire_grace_minutes)
    late = list(
        session.scalars(
            select(Reminder).where(
                Reminder.status == Status.PENDING.value,
                Reminder.rule == Rule.CHECK_IN.value,
                Reminder.due_at < now - grace,
            )
        )
    )
    for row in late:
        row.status, row.updated_at = Status.MISSED.value, now
        row.note = f"missed: due {row.due_at:%Y-%m-%d %H:%M} UTC, past the grace time"
    return len(late)


def _deliver_mailbox(
    factory: sessionmaker[Session],
    config: Config,
    address: str,
    ids: list[int],
    now: datetime,
    connectors: Opener,
    report: DeliveryReport,
) -> None:
    try:
        mailbox = config.mailbox(address)
        connector = connectors(mailbox)
    except ConfigError as exc:
        _give_up(factory, ids, f"{exc}", now, report)
        return
    except Exception as exc:  # the mailbox cannot be reached now
        _again(factory, config, ids, f"{type(exc).__name__}: {exc}", now, report)
        return
    try:
        if not isinstance(connector, FollowUpWriter):
            why = f"mailbox {address} (kind {mailbox.kind}) cannot take follow-ups"
            _give_up(factory, ids, why, now, report)
            return
        for reminder_id in ids:
            _deliver_one(factory, config, mailbox, connector, reminder_id, now, report)
    finally:
        connector.close()


def _deliver_one(
    factory: sessionmaker[Session],
    config: Config,
    mailbox: MailboxConfig,
    writer: FollowUpWriter,
    reminder_id: int,
    now: datetime,
    report: DeliveryReport,
) -> None:
    with transaction(factory) as session:
        if not _claim(session, reminder_id, now):
            return
        row = session.get(Reminder, reminder_id)
        assert row is not None
        try:
            followup = compose(session, config, mailbox, row, now)
        except UserError as exc:
            _fail(row, str(exc), now)
            report.failed += 1
            return
        kind = row.kind

    try:
        if isinstance(followup, FollowUpTask):
            item = writer.save_task(followup)
        else:
            item = writer.save_letter(followup)
    except DeliveryUncertain as exc:
        _give_up(factory, [reminder_id], str(exc), now, report, MAYBE_DELIVERED)
        return
    except Exception as exc:
        log.warning(
            "follow-ups: reminder %d not delivered (%s); tried again later",
            reminder_id,
            type(exc).__name__,
        )
        why = f"{type(exc).__name__}: {exc}"
        _again(factory, config, [reminder_id], why, now, report)
        return

    with transaction(factory) as session:
        row = session.get(Reminder, reminder_id)
        assert row is not None
        activity_id = record(session, config, mailbox, row, item, Kind(kind))
        row.status, row.activity_id = Status.DELIVERED.value, activity_id
        row.delivered_at = row.updated_at = now
        row.last_error = None
    report.delivered += 1
    log.info("follow-ups: reminder %d (%s) delivered", reminder_id, row.rule)


def _claim(session: Session, reminder_id: int, now: datetime) -> bool:
    result = session.execute(
        update(Reminder)
        .where(Reminder.id == reminder_id, Reminder.status == Status.PENDING.value)
        .values(
            status=Status.DELIVERING.value,
            attempts=Reminder.attempts + 1,
            updated_at=now,
        )
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def _fail(row: Reminder, why: str, now: datetime) -> None:
    row.status, row.last_error, row.updated_at = Status.FAILED.value, why, now
    log.warning("follow-ups: reminder %d failed: %s", row.id, why)


def _give_up(
    factory: sessionmaker[Session],
    ids: list[int],
    why: str,
    now: datetime,
    report: DeliveryReport,
    note: str | None = None,
) -> None:
    with transaction(factory) as session:
        for reminder_id in ids:
            row = session.get(Reminder, reminder_id)
            if row is not None and row.status in (
                Status.PENDING.value,
                Status.DELIVERING.value,
            ):
                _fail(row, why, now)
                row.note = note or row.note
                report.failed += 1


def _again(
    factory: sessionmaker[Session],
    config: Config,
    ids: list[int],
    why: str,
    now: datetime,
    report: DeliveryReport,
) -> None:
    """Back to pending for the next run, or failed after the last attempt."""
    attempts = config.followups.delivery_attempts
    with transaction(factory) as session:
        for reminder_id in ids:
            row = session.get(Reminder, reminder_id)
            if row is None:
                continue
            if row.status not in (Status.PENDING.value, Status.DELIVERING.value):
                continue
            if row.attempts >= attempts:
                _fail(row, f"{why} (after {row.attempts} attempts)", now)
                report.failed += 1
                continue
            row.status, row.last_error = Status.PENDING.value, why
            row.updated_at = now
            report.retried += 1


# --- composing -------------------------------------------------------------


def compose(
    session: Session,
    config: Config,
    mailbox: MailboxConfig,
    row: Reminder,
    now: datetime,
) -> FollowUpTask | LetterDraft:
    """The task or the letter a reminder gives; a UserError (a LetterError)
    when its letter cannot be filled."""
    contact = session.get(Contact, row.contact_id) if row.contact_id else None
    account = session.get(Account, row.account_id) if row.account_id else None
    if account is None and contact is not None and contact.account_id:
        account = session.get(Account, contact.account_id)
    zone = config.followups.zone_of(mailbox)
    if row.kind == Kind.LETTER.value:
        return _letter(session, config, mailbox, row, contact, account, now)
    lines = [f"Why: {row.reason}."]
    if contact is not None:
        lines.append(f"Contact: {contact.name} {_address(session, contact)}".strip())
    if account is not None:
        lines.append(f"Account: {account.name}")
    lines.append(f"(mailsync follow-up {row.key})")
    return FollowUpTask(
        key=row.key,
        subject=row.subject,
        body="\n".join(lines),
        due=row.due_at,
        zone=zone.key,
        contact=contact.name if contact else "",
        company=account.name if account else "",
    )


def _letter(
    session: Session,
    config: Config,
    mailbox: MailboxConfig,
    row: Reminder,
    contact: Contact | None,
    account: Account | None,
    now: datetime,
) -> LetterDraft:
    if contact is None or not row.template:
        raise UserError(f"reminder {row.id}: a letter needs a contact and a template")
    address = _address(session, contact)
    trigger = (
        session.get(Activity, row.trigger_activity_id)
        if row.trigger_activity_id
        else None
    )
    data = merge_data(config, mailbox, contact, address, account, trigger, now)
    template = letters.find_template(config.followups.templates, row.template)
    content = letters.render(template, data.fields())
    first = letters.split_name(contact.name)[0] or contact.name
    return LetterDraft(
        key=row.key,
        subject=row.subject.split(": ", 1)[-1] if ": " in row.subject else row.subject,
        body=(
            f"Dear {first},\n\nthank you for your time. Please find my summary "
            f"attached.\n\nKind regards,\n{mailbox.rep}\n"
        ),
        from_name=mailbox.rep,
        from_address=mailbox.address,
        to_name=contact.name,
        to_address=address,
        filename=_filename(template.stem, contact.name),
        content=content,
        message_id=_message_id(row.key, mailbox.address),
    )


def merge_data(
    config: Config,
    mailbox: MailboxConfig,
    contact: Contact,
    address: str,
    account: Account | None,
    trigger: Activity | None,
    now: datetime,
) -> letters.MergeData:
    zone = config.followups.zone_of(mailbox)
    return letters.MergeData(
        contact_name=contact.name,
        contact_email=address,
        contact_title=contact.title,
        contact_phone=contact.phone,
        account_name=account.name if account else "",
        account_phone=account.phone if account else "",
        rep_name=mailbox.rep,
        rep_email=mailbox.address,
        activity_subject=trigger.subject if trigger else "",
        activity_kind=trigger.kind if trigger else "",
        activity_at=(trigger.starts_at or trigger.occurred_at) if trigger else None,
        zone=zone,
        today=now.astimezone(zone).date(),
    )


def _address(session: Session, contact: Contact) -> str:
    found = session.scalar(
        select(ContactAddress.address)
        .where(ContactAddress.contact_id == contact.id)
        .order_by(ContactAddress.id)
        .limit(1)
    )
    return found or ""


def _filename(stem: str, name: str) -> str:
    clean = re.sub(r"[^\w\- ]+", "", name).strip() or "contact"
    return f"{stem} - {clean}.docx"


def _message_id(key: str, address: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return f"followup.{digest}@{address.rsplit('@', 1)[-1]}"


# --- recording -------------------------------------------------------------


def record(
    session: Session,
    config: Config,
    mailbox: MailboxConfig,
    row: Reminder,
    item: Item,
    kind: Kind,
) -> int:
    """Record the delivered item as an activity, as a sync of it would, and
    link it to the reminder's contact and account."""
    linking = linking_for(config, mailbox.address, load_directory(session))
    plan: ItemPlan | Skip
    if item.kind is ItemKind.TASK:
        plan = plan_item(item, linking)
        if isinstance(plan, Skip):
            plan = _plan(item, linking.directory, linking.org, mailbox.address)
    else:
        # A draft is left out of a sync (unless record_drafts); this one is
        # the letter, and it is recorded.
        plan = _plan(item, linking.directory, linking.org, mailbox.address)
    plan.keys = [*plan.keys, f"reminder:{row.key}"]
    mailbox_id = row.mailbox_id
    recorded = record_item(session, mailbox_id, plan)
    activity = session.get(Activity, recorded.activity_id)
    assert activity is not None
    if kind is Kind.LETTER:
        activity.kind = Kind.LETTER.value
    _ensure_link(session, recorded.activity_id, "contact", row.contact_id)
    _ensure_link(session, recorded.activity_id, "account", row.account_id)
    return recorded.activity_id


def _plan(item: Item, directory: object, org: object, address: str) -> ItemPlan:
    sender = next((p for p in item.participants if p.role is Role.FROM), None)
    author = (normalise(sender.address) if sender else None) or address
    matches = match_participants(
        item.participants,
        sent=True,
        directory=directory,  # type: ignore[arg-type]
        org=org,  # type: ignore[arg-type]
    )
    return ItemPlan(
        item=item,
        direction="outbound",
        author=address,
        matches=matches,
        keys=identity_keys(item, author),
    )


def _ensure_link(
    session: Session, activity_id: int, kind: str, target_id: int | None
) -> None:
    """A link the activity lacks after matching (a name two contacts share)
    is made by hand, so that it stays."""
    if target_id is None:
        return
    linked = session.scalar(
        select(Link.id).where(
            Link.activity_id == activity_id,
            Link.target_kind == kind,
            Link.target_id == target_id,
            Link.suppressed.is_(False),
        )
    )
    if linked is None:
        set_manual_link(session, activity_id, (kind, target_id), True)
