"""Reading and changing the follow-ups by hand: the listing, check-ins added
and removed, a reminder removed, the .ics feed of a rep's reminders.

``reminders list --format json`` prints :meth:`Listing.as_json`, a stable
shape documented in the README.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailsync.calendar import calendar_of, todo
from mailsync.config import Config, MailboxConfig
from mailsync.errors import UserError
from mailsync.linker.addresses import normalise
from mailsync.queries import iso
from mailsync.reminders import checkins
from mailsync.reminders.rules import Status
from mailsync.store.directory import contact_by_address, ensure_mailbox
from mailsync.store.models import (
    Account,
    Activity,
    CheckIn,
    Contact,
    Mailbox,
    Reminder,
)
from mailsync.store.models import (
    now as utc_now,
)

SHOWN = (Status.PENDING, Status.DELIVERING, Status.FAILED)


@dataclass
class Listing:
    reminders: list[dict[str, Any]]
    check_ins: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {"reminders": self.reminders, "check_ins": self.check_ins}


def listing(
    session: Session,
    config: Config,
    everything: bool = False,
    now: datetime | None = None,
) -> Listing:
    """The reminders waiting (pending, delivering, failed; all with
    ``everything``), soonest first, and the check-ins with their next turn."""
    now = now or utc_now()
    query = (
        select(Reminder, Mailbox.address)
        .join(Mailbox, Mailbox.id == Reminder.mailbox_id)
        .order_by(Reminder.due_at, Reminder.id)
    )
    if not everything:
        query = query.where(Reminder.status.in_([s.value for s in SHOWN]))
    rows = session.execute(query).all()
    return Listing(
        [_reminder(session, row, address) for row, address in rows],
        check_in_listing(session, config, now),
    )


def _reminder(session: Session, row: Reminder, address: str) -> dict[str, Any]:
    contact = session.get(Contact, row.contact_id) if row.contact_id else None
    account = session.get(Account, row.account_id) if row.account_id else None
    trigger = (
        session.get(Activity, row.trigger_activity_id)
        if row.trigger_activity_id
        else None
    )
    return {
        "id": row.id,
        "rule": row.rule,
        "kind": row.kind,
        "status": row.status,
        "due": iso(row.due_at),
        "rep": address,
        "subject": row.subject,
        "why": row.reason,
        "contact": {"id": contact.id, "name": contact.name} if contact else None,
        "account": {"id": account.id, "name": account.name} if account else None,
        "trigger": (
            {
                "activity_id": trigger.id,
                "kind": trigger.kind,
                "subject": trigger.subject,
                "occurred_at": iso(trigger.occurred_at),
            }
            if trigger
            else None
        ),
        "check_in": row.check_in_id,
        "template": row.template,
        "attempts": row.attempts,
        "error": row.last_error,
        "note": row.note,
        "key": row.key,
        "activity_id": row.activity_id,
    }


def check_in_listing(
    session: Session, config: Config, now: datetime
) -> list[dict[str, Any]]:
    rows = session.execute(
        select(CheckIn, Contact.name, Mailbox.address)
        .join(Contact, Contact.id == CheckIn.contact_id)
        .join(Mailbox, Mailbox.id == CheckIn.mailbox_id)
        .order_by(CheckIn.id)
    ).all()
    found = []
    for check_in, name, address in rows:
        turn = None
        try:
            zone = config.followups.zone_of(config.mailbox(address))
            turn = checkins.next_turn(check_in.cron, zone, now)
        except UserError:
            pass
        found.append(
            {
                "id": f"c{check_in.id}",
                "contact": {"id": check_in.contact_id, "name": name},
                "rep": address,
                "schedule": check_in.schedule,
                "cron": check_in.cron,
                "next": iso(turn.astimezone(UTC)) if turn else None,
                "subject": check_in.subject,
            }
        )
    return found


# --- changing by hand --------------------------------------------------------


def add_check_in(
    session: Session,
    config: Config,
    contact_email: str,
    schedule: checkins.Schedule,
    mailbox: MailboxConfig,
    subject: str = "",
) -> CheckIn:
    address = normalise(contact_email) or contact_email
    contact = contact_by_address(session, address)
    if contact is None:
        raise UserError(
            f"no contact with address {contact_email!r}; see `mailsync contacts list`"
        )
    mailbox_id = ensure_mailbox(session, mailbox.address, mailbox.rep, mailbox.kind).id
    row = CheckIn(
        contact_id=contact.id,
        mailbox_id=mailbox_id,
        cron=schedule.cron,
        schedule=schedule.words,
        subject=subject or f"Check in with {contact.name}",
        created_at=utc_now(),
    )
    session.add(row)
    session.flush()
    return row


def remove(session: Session, ident: str) -> str:
    """Remove a pending reminder (``12``) or a check-in (``c3``, with its
    pending turns); a message saying what was removed."""
    text = ident.strip().lower()
    if text.startswith("c") and text[1:].isdigit():
        check_in = session.get(CheckIn, int(text[1:]))
        if check_in is None:
            raise UserError(f"no check-in {ident}; see `mailsync reminders list`")
        for turn in session.scalars(
            select(Reminder).where(
                Reminder.check_in_id == check_in.id,
                Reminder.status == Status.PENDING.value,
            )
        ):
            turn.status, turn.note = Status.REMOVED.value, "its check-in was removed"
        session.delete(check_in)
        return f"check-in {ident} removed ({check_in.schedule})"
    if not text.isdigit():
        raise UserError(
            f"{ident!r} is not a reminder id; give a number (a reminder) or c<number> "
            "(a check-in), as `mailsync reminders list` shows them"
        )
    row = session.get(Reminder, int(text))
    if row is None:
        raise UserError(f"no reminder {ident}; see `mailsync reminders list`")
    if row.status not in (Status.PENDING.value, Status.FAILED.value):
        raise UserError(f"reminder {ident} is {row.status}; only a pending one goes")
    row.status, row.note, row.updated_at = (
        Status.REMOVED.value,
        "removed by hand",
        utc_now(),
    )
    return f"reminder {ident} removed: {row.subject}"


def retry(session: Session, ident: str, force: bool = False) -> str:
    """Put a failed reminder back to pending, its attempts counted anew, for
    the next run to deliver (once what made it fail is fixed: a contact's
    field, a template, a mailbox's rights). One that may be in the mailbox
    already is retried only with ``force``; a message saying what was done."""
    from mailsync.reminders.deliver import MAYBE_DELIVERED

    text = ident.strip()
    row = session.get(Reminder, int(text)) if text.isdigit() else None
    if row is None:
        raise UserError(
            f"no reminder {ident!r}; give its number, as `mailsync reminders list "
            "--all` shows it"
        )
    if row.status != Status.FAILED.value:
        raise UserError(
            f"reminder {ident} is {row.status}; only a failed one is retried"
        )
    if MAYBE_DELIVERED in (row.note or "") and not force:
        raise UserError(
            f"reminder {ident} may be in the rep's mailbox already ({row.note}); "
            "retry it with --force only if it is not there"
        )
    row.status, row.attempts, row.last_error = Status.PENDING.value, 0, None
    row.note, row.updated_at = "retried by hand", utc_now()
    return (
        f"reminder {ident} will be delivered at the next run "
        f"(`mailsync reminders run --once`, or the service's): {row.subject}"
    )


# --- the feed ----------------------------------------------------------------


def feed(
    session: Session, config: Config, rep: str, now: datetime | None = None
) -> bytes:
    """An iCalendar feed of a rep's pending reminders: one VTODO each, with a
    display alarm at its due time. The UID is the reminder's key, so that a
    calendar that subscribes updates a reminder instead of adding one."""
    now = now or utc_now()
    mailbox = config.mailbox(rep)
    rows = session.execute(
        select(Reminder)
        .join(Mailbox, Mailbox.id == Reminder.mailbox_id)
        .where(
            Mailbox.address == mailbox.address,
            Reminder.status == Status.PENDING.value,
        )
        .order_by(Reminder.due_at, Reminder.id)
    ).scalars()
    entries = []
    for row in rows:
        contact = session.get(Contact, row.contact_id) if row.contact_id else None
        entries.append(
            todo(
                uid=f"{row.key}@mailsync",
                summary=row.subject,
                description=row.reason,
                due=row.due_at,
                stamp=row.updated_at or now,
                contact=contact.name if contact else "",
                categories=(row.rule,),
            )
        )
    return calendar_of(entries, name=f"Follow-ups of {mailbox.rep}")
