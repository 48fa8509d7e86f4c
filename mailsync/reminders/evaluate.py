"""Evaluating the rules: read the facts, decide (:mod:`.rules`), write.

:func:`evaluate` brings the ``reminders`` table in line with what the rules
want now: a condition new since the last run gets a pending reminder; a
pending one whose condition moved (a meeting moved) gets its new due time;
a pending one whose condition went away (a reply came, the meeting was
cancelled, the rule was switched off) is cancelled with the reason. A
reminder once delivered, removed or missed is never made again for the same
condition: its key stays taken.

:func:`settle` does only the cancelling, for the pending reminders; the sync
core calls it in the transaction of each page it writes, so that a reply
synced cancels its reminder at once.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailsync.config import Config, FollowupsConfig
from mailsync.reminders.rules import (
    AccountFact,
    Mail,
    MeetingFact,
    Outcome,
    Person,
    Rule,
    Status,
    Wanted,
    after_meeting,
    dormant_accounts,
    no_reply,
)
from mailsync.reminders.workdays import WorkCalendar
from mailsync.store.models import (
    Activity,
    Contact,
    Link,
    Mailbox,
    ParticipantRow,
    Reminder,
    Source,
    ThreadRef,
)
from mailsync.store.models import (
    now as utc_now,
)

log = logging.getLogger(__name__)

_MAIL_ROLES = ("from", "to")
_MEETING_ROLES = ("organizer", "attendee")


@dataclass
class EvaluationReport:
    created: int = 0
    updated: int = 0
    cancelled: int = 0
    reopened: int = 0

    def log_line(self) -> str:
        return (
            f"follow-ups: {self.created} new, {self.updated} moved, "
            f"{self.cancelled} cancelled, {self.reopened} reopened"
        )


def calendars(config: Config) -> dict[str, WorkCalendar]:
    """Each enabled mailbox's business-day calendar, by address."""
    followups = config.followups
    return {
        m.address: WorkCalendar.of(
            followups.zone_of(m), followups.holidays, followups.workdays
        )
        for m in config.mailboxes
        if m.enabled
    }


def remind_at(followups: FollowupsConfig) -> time:
    hour, minute = followups.remind_at.split(":")
    return time(int(hour), int(minute))


def evaluate(
    session: Session, config: Config, now: datetime | None = None
) -> EvaluationReport:
    """Every rule over the history; the reminders written (not the check-ins,
    whose turns come from their schedules, see :mod:`.scheduler`)."""
    now = now or utc_now()
    books = calendars(config)
    outcome = decide(session, config.followups, books, now, settle_only=False)
    return write(session, config.followups, outcome, now)


def settle(
    session: Session, followups: FollowupsConfig, now: datetime | None = None
) -> int:
    """Cancel the pending reminders whose condition went away; how many."""
    now = now or utc_now()
    pending = _pending(session)
    if not pending:
        return 0
    outcome = decide(session, followups, {}, now, settle_only=True)
    return _cancel_gone(session, followups, outcome, pending, now, settle_only=True)


def settle_after_page(session: Session, followups: FollowupsConfig) -> None:
    """:func:`settle` in the sync's transaction of a page, in a savepoint: a
    failure here is logged and never keeps the page from being written."""
    try:
        with session.begin_nested():
            settle(session, followups)
    except Exception:
        log.exception("follow-ups: settling the pending reminders failed")


def decide(
    session: Session,
    followups: FollowupsConfig,
    books: Mapping[str, WorkCalendar],
    now: datetime,
    *,
    settle_only: bool,
) -> Outcome:
    """What the enabled rules want now, from the facts in the database."""
    keep = _pending_triggers(session)
    outcome = Outcome()
    if not followups.enabled:
        return outcome
    if followups.no_reply.enabled:
        since = now - timedelta(days=followups.no_reply.lookback_days)
        ids = keep[Rule.NO_REPLY]
        if not settle_only or ids:
            mails = load_mail(session, since, ids, only_kept=settle_only)
            _merge(outcome, no_reply(mails, followups.no_reply, books, since, ids))
    if followups.after_meeting.enabled:
        since = now - timedelta(days=followups.after_meeting.lookback_days)
        ids = keep[Rule.AFTER_MEETING]
        if not settle_only or ids:
            meetings = load_meetings(session, since, ids, only_kept=settle_only)
            rule = followups.after_meeting
            _merge(outcome, after_meeting(meetings, rule, books, since, ids))
    if followups.dormant_account.enabled and not settle_only:
        accounts = load_accounts(
            session, now - timedelta(days=followups.dormant_account.days)
        )
        _merge(
            outcome,
            dormant_accounts(
                accounts, followups.dormant_account, books, remind_at(followups), now
            ),
        )
    return outcome


def _merge(into: Outcome, other: Outcome) -> None:
    into.wanted.extend(other.wanted)
    into.gone.update(other.gone)


# --- writing ---------------------------------------------------------------


def write(
    session: Session, followups: FollowupsConfig, outcome: Outcome, now: datetime
) -> EvaluationReport:
    report = EvaluationReport()
    mailbox_ids = dict(session.execute(select(Mailbox.address, Mailbox.id)).all())
    wanted = {w.key: w for w in outcome.wanted if w.mailbox in mailbox_ids}
    existing = _rows(session, list(wanted))
    for key, want in wanted.items():
        row = existing.get(key)
        if row is None:
            report.created += _insert(session, want, mailbox_ids[want.mailbox], now)
        elif row.status == Status.PENDING and _moved(row, want):
            row.due_at, row.subject, row.reason = want.due_at, want.subject, want.reason
            row.updated_at = now
            report.updated += 1
        elif row.status == Status.CANCELLED:
            row.status, row.note, row.updated_at = Status.PENDING, None, now
            row.due_at = want.due_at
            report.reopened += 1
    pending = [r for r in _pending(session) if r.key not in wanted]
    report.cancelled = _cancel_gone(session, followups, outcome, pending, now)
    session.flush()
    return report


def _insert(session: Session, want: Wanted, mailbox_id: int, now: datetime) -> int:
    row = Reminder(
        key=want.key,
        rule=want.rule.value,
        kind=want.kind.value,
        status=Status.PENDING.value,
        mailbox_id=mailbox_id,
        contact_id=want.contact_id,
        account_id=want.account_id,
        trigger_activity_id=want.trigger_activity_id,
        check_in_id=want.check_in_id,
        due_at=want.due_at,
        subject=want.subject,
        reason=want.reason,
        template=want.template,
        attempts=0,
        created_at=now,
        updated_at=now,
    )
    # The key may have been taken meanwhile by another process evaluating:
    # then that one's row stands.
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        return 0
    log.debug("follow-ups: new reminder %s due %s", want.key, want.due_at)
    return 1


def _moved(row: Reminder, want: Wanted) -> bool:
    return row.due_at != want.due_at or row.subject != want.subject


def _cancel_gone(
    session: Session,
    followups: FollowupsConfig,
    outcome: Outcome,
    pending: Sequence[Reminder],
    now: datetime,
    settle_only: bool = False,
) -> int:
    """Cancel the pending reminders that the rules no longer want.

    In a settle, only those the rules found gone; a full evaluation also
    cancels those that no rule wants any more (the rule switched off, the
    contact or the trigger deleted). Check-ins are cancelled only when their
    rule is switched off.
    """
    switched_off = {
        rule
        for rule, on in (
            (Rule.NO_REPLY, followups.no_reply.enabled),
            (Rule.AFTER_MEETING, followups.after_meeting.enabled),
            (Rule.CHECK_IN, followups.check_in.enabled),
            (Rule.DORMANT_ACCOUNT, followups.dormant_account.enabled),
        )
        if not (on and followups.enabled)
    }
    cancelled = 0
    for row in pending:
        why = outcome.gone.get(row.key)
        if why is None and row.rule in switched_off:
            why = f"the rule {row.rule} is switched off"
        elif why is None and not settle_only and row.rule != Rule.CHECK_IN:
            why = "the condition no longer holds"
        if why is None:
            continue
        row.status, row.note, row.updated_at = Status.CANCELLED.value, why, now
        cancelled += 1
        log.info("follow-ups: reminder %d (%s) cancelled: %s", row.id, row.rule, why)
    return cancelled


def _rows(session: Session, keys: Sequence[str]) -> dict[str, Reminder]:
    found: dict[str, Reminder] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        for row in session.scalars(select(Reminder).where(Reminder.key.in_(chunk))):
            found[row.key] = row
    return found


def _pending(session: Session) -> list[Reminder]:
    return list(
        session.scalars(
            select(Reminder)
            .where(Reminder.status == Status.PENDING.value)
            .order_by(Reminder.id)
        )
    )


def _pending_triggers(session: Session) -> dict[Rule, set[int]]:
    found: dict[Rule, set[int]] = defaultdict(set)
    rows = session.execute(
        select(Reminder.rule, Reminder.trigger_activity_id).where(
            Reminder.status == Status.PENDING.value,
            Reminder.trigger_activity_id.is_not(None),
        )
    )
    for rule, activity_id in rows:
        if activity_id is not None:
            found[Rule(rule)].add(activity_id)
    return found


# --- facts -----------------------------------------------------------------


def load_mail(
    session: Session, since: datetime, keep: Iterable[int], only_kept: bool = False
) -> list[Mail]:
    """The e-mails since ``since`` (or since the oldest kept one), with
    their contacts, thread references and mailboxes."""
    kept = set(keep)
    if kept:
        oldest = session.scalar(
            select(func.min(Activity.occurred_at)).where(Activity.id.in_(kept))
        )
        if oldest is not None:
            oldest = _aware(oldest)
            since = oldest if only_kept or oldest < since else since
    scope = select(Activity.id).where(
        Activity.kind == "message",
        Activity.status != "opted_out",
        Activity.occurred_at >= since,
    )
    rows = session.execute(
        select(
            Activity.id,
            Activity.occurred_at,
            Activity.direction,
            Activity.subject,
            Activity.message_id,
            Activity.author,
        ).where(Activity.id.in_(scope))
    ).all()
    people = _people(session, scope, _MAIL_ROLES)
    refs = _refs(session, scope)
    boxes = _mailboxes(session, scope)
    return [
        Mail(
            activity_id=id_,
            occurred_at=occurred,
            outbound=direction == "outbound",
            subject=subject,
            message_id=message_id,
            refs=frozenset(refs.get(id_, ())),
            mailboxes=tuple(boxes.get(id_, ())),
            author=author,
            senders=frozenset(
                p.contact_id for r, p in people.get(id_, ()) if r == "from"
            ),
            recipients=_unique(p for r, p in people.get(id_, ()) if r == "to"),
        )
        for id_, occurred, direction, subject, message_id, author in rows
    ]


def load_meetings(
    session: Session, since: datetime, keep: Iterable[int], only_kept: bool = False
) -> list[MeetingFact]:
    kept = set(keep)
    ended: Any = Activity.ends_at >= since
    condition: Any
    if only_kept:
        condition = Activity.id.in_(kept)
    else:
        condition = or_(ended, Activity.id.in_(kept)) if kept else ended
    scope = select(Activity.id).where(
        Activity.kind == "meeting", Activity.ends_at.is_not(None), condition
    )
    rows = session.execute(
        select(
            Activity.id,
            Activity.subject,
            Activity.ends_at,
            Activity.status,
            Activity.meeting_uid,
        ).where(Activity.id.in_(scope))
    ).all()
    uids = {uid for *_, uid in rows if uid}
    series = _series(session, uids)
    people = _people(session, scope, _MEETING_ROLES)
    organizers = _organizers(session, scope)
    boxes = _mailboxes(session, scope)
    return [
        MeetingFact(
            activity_id=id_,
            subject=subject,
            ends_at=_aware(ends_at) if ends_at else since,
            cancelled=status == "cancelled",
            in_series=uid in series,
            mailboxes=tuple(boxes.get(id_, ())),
            organizer=organizers.get(id_),
            contacts=_unique(p for _, p in people.get(id_, ())),
        )
        for id_, subject, ends_at, status, uid in rows
    ]


def load_accounts(session: Session, quiet_since: datetime) -> list[AccountFact]:
    """The accounts whose last e-mail or meeting is older than ``quiet_since``."""
    linked = (
        select(
            Link.target_id.label("account_id"),
            Activity.id.label("activity_id"),
            Activity.occurred_at.label("occurred_at"),
        )
        .join(Activity, Activity.id == Link.activity_id)
        .where(
            Link.target_kind == "account",
            Link.suppressed.is_(False),
            Activity.kind.in_(["message", "meeting"]),
            Activity.status.not_in(["opted_out", "cancelled"]),
        )
        .subquery()
    )
    last = session.execute(
        select(linked.c.account_id, func.max(linked.c.occurred_at))
        .group_by(linked.c.account_id)
        .having(func.max(linked.c.occurred_at) < quiet_since)
    ).all()
    from mailsync.store.models import Account

    names = dict(session.execute(select(Account.id, Account.name)).all())
    found = []
    for account_id, last_at in last:
        activity_id = session.scalar(
            select(func.max(linked.c.activity_id)).where(
                linked.c.account_id == account_id, linked.c.occurred_at == last_at
            )
        )
        if activity_id is None or account_id not in names:
            continue
        found.append(
            AccountFact(
                account_id=account_id,
                name=names[account_id],
                last_at=_aware(last_at),
                last_activity_id=activity_id,
                owner=_account_owner(session, account_id),
            )
        )
    return found


def _account_owner(session: Session, account_id: int) -> str | None:
    """The mailbox that holds the most of the account's activities."""
    linked = select(Link.activity_id).where(
        Link.target_kind == "account",
        Link.target_id == account_id,
        Link.suppressed.is_(False),
    )
    row = session.execute(
        select(Mailbox.address, func.count(func.distinct(Source.activity_id)))
        .join(Mailbox, Mailbox.id == Source.mailbox_id)
        .where(Source.activity_id.in_(linked))
        .group_by(Mailbox.address)
        .order_by(func.count(func.distinct(Source.activity_id)).desc(), Mailbox.address)
        .limit(1)
    ).first()
    return row[0] if row else None


def _people(
    session: Session, scope: Any, roles: Sequence[str]
) -> dict[int, list[tuple[str, Person]]]:
    rows = session.execute(
        select(
            ParticipantRow.activity_id,
            ParticipantRow.role,
            ParticipantRow.contact_id,
            Contact.name,
            Contact.account_id,
        )
        .join(Contact, Contact.id == ParticipantRow.contact_id)
        .where(ParticipantRow.activity_id.in_(scope), ParticipantRow.role.in_(roles))
        .order_by(ParticipantRow.activity_id, ParticipantRow.id)
    )
    found: dict[int, list[tuple[str, Person]]] = defaultdict(list)
    for activity_id, role, contact_id, name, account_id in rows:
        if contact_id is not None:
            found[activity_id].append((role, Person(contact_id, name, account_id)))
    return found


def _refs(session: Session, scope: Any) -> dict[int, list[str]]:
    found: dict[int, list[str]] = defaultdict(list)
    rows = session.execute(
        select(ThreadRef.activity_id, ThreadRef.message_id).where(
            ThreadRef.activity_id.in_(scope)
        )
    )
    for activity_id, message_id in rows:
        found[activity_id].append(message_id)
    return found


def _mailboxes(session: Session, scope: Any) -> dict[int, list[str]]:
    found: dict[int, list[str]] = defaultdict(list)
    rows = session.execute(
        select(Source.activity_id, Mailbox.address)
        .join(Mailbox, Mailbox.id == Source.mailbox_id)
        .where(Source.activity_id.in_(scope), Source.removed_at.is_(None))
        .order_by(Source.id)
    )
    for activity_id, address in rows:
        if address not in found[activity_id]:
            found[activity_id].append(address)
    return found


def _organizers(session: Session, scope: Any) -> dict[int, str]:
    rows = session.execute(
        select(ParticipantRow.activity_id, ParticipantRow.address).where(
            ParticipantRow.activity_id.in_(scope), ParticipantRow.role == "organizer"
        )
    )
    return dict(rows.all())


def _series(session: Session, uids: set[str]) -> set[str]:
    """The meeting UIDs that several activities share: a recurring series."""
    if not uids:
        return set()
    found: set[str] = set()
    listed = sorted(uids)
    for start in range(0, len(listed), 500):
        rows = session.execute(
            select(Activity.meeting_uid)
            .where(Activity.meeting_uid.in_(listed[start : start + 500]))
            .group_by(Activity.meeting_uid)
            .having(func.count() > 1)
        )
        found.update(uid for (uid,) in rows if uid)
    return found


def _unique(people: Iterable[Person]) -> tuple[Person, ...]:
    seen: dict[int, Person] = {}
    for person in people:
        seen.setdefault(person.contact_id, person)
    return tuple(seen.values())


def _aware(value: datetime | str) -> datetime:
    from datetime import UTC

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
