"""The rules, as pure functions: facts from the history in, reminders out.

Each rule gives the reminders its conditions want (:class:`Wanted`, one a
condition key) and, for the conditions it found gone, why
(:class:`Outcome.gone`). Nothing here reads or writes the database; the
facts come from :mod:`mailsync.reminders.evaluate`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from enum import StrEnum

from mailsync.config import AfterMeetingRule, DormantAccountRule, NoReplyRule
from mailsync.reminders.workdays import WorkCalendar


class Rule(StrEnum):
    NO_REPLY = "no_reply"
    AFTER_MEETING = "after_meeting"
    CHECK_IN = "check_in"
    DORMANT_ACCOUNT = "dormant_account"


class Kind(StrEnum):
    TASK = "task"
    LETTER = "letter"


class Status(StrEnum):
    PENDING = "pending"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    REMOVED = "removed"
    MISSED = "missed"
    FAILED = "failed"


@dataclass(frozen=True)
class Person:
    """A contact as the rules see it."""

    contact_id: int
    name: str
    account_id: int | None


@dataclass(frozen=True)
class Wanted:
    """A reminder one condition wants."""

    key: str
    rule: Rule
    kind: Kind
    mailbox: str
    due_at: datetime
    subject: str
    reason: str
    contact_id: int | None = None
    account_id: int | None = None
    trigger_activity_id: int | None = None
    template: str | None = None
    check_in_id: int | None = None


@dataclass
class Outcome:
    wanted: list[Wanted] = field(default_factory=list)
    gone: dict[str, str] = field(default_factory=dict)  # condition key: why


# --- no_reply ----------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    """An e-mail in the history: who it is from and to, and its thread."""

    activity_id: int
    occurred_at: datetime
    outbound: bool
    subject: str
    message_id: str | None
    refs: frozenset[str]
    mailboxes: tuple[str, ...]
    author: str | None = None
    senders: frozenset[int] = frozenset()  # contact ids of From
    recipients: tuple[Person, ...] = ()  # the contacts it is To

    @property
    def thread(self) -> frozenset[str]:
        own = frozenset([self.message_id]) if self.message_id else frozenset()
        return own | self.refs


def no_reply_key(activity_id: int) -> str:
    return f"{Rule.NO_REPLY}:{activity_id}"


def no_reply(
    mails: Sequence[Mail],
    settings: NoReplyRule,
    calendars: Mapping[str, WorkCalendar],
    since: datetime,
    keep: Iterable[int] = (),
) -> Outcome:
    """An outbound e-mail To a contact, with no inbound mail from one of its
    contacts or in its thread after it, and no later e-mail of ours in the
    thread: a reminder N business days after it was sent.

    ``since`` bounds the mail looked at for new conditions; the activities
    in ``keep`` (those of pending reminders) are looked at whatever their age.
    """
    outcome = Outcome()
    kept = set(keep)
    ordered = sorted(mails, key=lambda m: (m.occurred_at, m.activity_id))
    for index, mail in enumerate(ordered):
        if not mail.outbound or not mail.recipients:
            continue
        if mail.occurred_at < since and mail.activity_id not in kept:
            continue
        key = no_reply_key(mail.activity_id)
        why = _answered(mail, ordered[index + 1 :])
        mailbox = _owner(mail.mailboxes, mail.author, calendars)
        if why is not None:
            outcome.gone[key] = why
        elif mailbox is not None:
            outcome.wanted.append(_no_reply_wanted(mail, mailbox, settings, calendars))
    return outcome


def _answered(mail: Mail, later: Sequence[Mail]) -> str | None:
    """Why the mail needs no reminder (a reply came, or we wrote again)."""
    contacts = {p.contact_id: p.name for p in mail.recipients}
    for other in later:
        in_thread = bool(mail.message_id and mail.message_id in other.refs) or bool(
            mail.refs & other.refs
        )
        if other.outbound:
            if in_thread:
                return f"a later e-mail in the thread (activity {other.activity_id})"
            continue
        answered_by = other.senders & contacts.keys()
        if answered_by:
            who = contacts[min(answered_by)]
            return f"{who} wrote on {other.occurred_at:%Y-%m-%d %H:%M} UTC"
        if in_thread:
            return f"a reply in the thread on {other.occurred_at:%Y-%m-%d %H:%M} UTC"
    return None


def _no_reply_wanted(
    mail: Mail,
    mailbox: str,
    settings: NoReplyRule,
    calendars: Mapping[str, WorkCalendar],
) -> Wanted:
    calendar = calendars[mailbox]
    first = mail.recipients[0]
    names = ", ".join(p.name for p in mail.recipients)
    sent = calendar.local(mail.occurred_at)
    return Wanted(
        key=no_reply_key(mail.activity_id),
        rule=Rule.NO_REPLY,
        kind=Kind.TASK,
        mailbox=mailbox,
        due_at=calendar.add_workdays(mail.occurred_at, settings.business_days),
        subject=f"Follow up with {first.name}: no reply to “{mail.subject}”",
        reason=(
            f"e-mail to {names} of {sent:%Y-%m-%d %H:%M} ({sent.tzname()}), "
            f"no reply in {settings.business_days} business days"
        ),
        contact_id=first.contact_id,
        account_id=first.account_id,
        trigger_activity_id=mail.activity_id,
    )


# --- after_meeting -----------------------------------------------------------


@dataclass(frozen=True)
class MeetingFact:
    activity_id: int
    subject: str
    ends_at: datetime
    cancelled: bool
    in_series: bool
    mailboxes: tuple[str, ...]
    organizer: str | None
    contacts: tuple[Person, ...]


def after_meeting_keys(activity_id: int) -> tuple[str, str]:
    base = f"{Rule.AFTER_MEETING}:{activity_id}"
    return f"{base}:task", f"{base}:letter"


def after_meeting(
    meetings: Sequence[MeetingFact],
    settings: AfterMeetingRule,
    calendars: Mapping[str, WorkCalendar],
    since: datetime,
    keep: Iterable[int] = (),
) -> Outcome:
    """A meeting with a contact, not cancelled: N days after it ends, a
    reminder, and a letter drafted from the configured template."""
    outcome = Outcome()
    kept = set(keep)
    for meeting in meetings:
        keys = after_meeting_keys(meeting.activity_id)
        if meeting.ends_at < since and meeting.activity_id not in kept:
            continue
        if meeting.cancelled:
            outcome.gone.update(dict.fromkeys(keys, "the meeting was cancelled"))
            continue
        if meeting.in_series and not settings.recurring:
            continue
        mailbox = _owner(meeting.mailboxes, meeting.organizer, calendars)
        if not meeting.contacts or mailbox is None:
            continue
        outcome.wanted.extend(
            _after_meeting_wanted(meeting, mailbox, settings, calendars)
        )
    return outcome


def _after_meeting_wanted(
    meeting: MeetingFact,
    mailbox: str,
    settings: AfterMeetingRule,
    calendars: Mapping[str, WorkCalendar],
) -> list[Wanted]:
    calendar = calendars[mailbox]
    if settings.business_days:
        due = (
            calendar.add_workdays(meeting.ends_at, settings.days)
            if settings.days
            else calendar.next_workday_from(meeting.ends_at)
        )
    else:
        due = calendar.add_days(meeting.ends_at, settings.days)
    first = meeting.contacts[0]
    ended = calendar.local(meeting.ends_at)
    reason = (
        f"meeting “{meeting.subject}” with {first.name} ended "
        f"{ended:%Y-%m-%d %H:%M} ({ended.tzname()})"
    )
    common = {
        "rule": Rule.AFTER_MEETING,
        "mailbox": mailbox,
        "due_at": due,
        "reason": reason,
        "contact_id": first.contact_id,
        "account_id": first.account_id,
        "trigger_activity_id": meeting.activity_id,
    }
    task_key, letter_key = after_meeting_keys(meeting.activity_id)
    found = [
        Wanted(
            key=task_key,
            kind=Kind.TASK,
            subject=f"Follow up the meeting with {first.name}: {meeting.subject}",
            **common,  # type: ignore[arg-type]
        )
    ]
    if settings.letter:
        found.append(
            Wanted(
                key=letter_key,
                kind=Kind.LETTER,
                subject=f"Follow-up letter to {first.name}: {meeting.subject}",
                template=settings.letter,
                **common,  # type: ignore[arg-type]
            )
        )
    return found


# --- dormant_account ---------------------------------------------------------


@dataclass(frozen=True)
class AccountFact:
    account_id: int
    name: str
    last_at: datetime
    last_activity_id: int
    owner: str | None  # the mailbox with the most of its activities


def dormant_key(account_id: int, last_activity_id: int, period: int) -> str:
    return f"{Rule.DORMANT_ACCOUNT}:{account_id}:{last_activity_id}:{period}"


def dormant_accounts(
    accounts: Sequence[AccountFact],
    settings: DormantAccountRule,
    calendars: Mapping[str, WorkCalendar],
    remind_at: time,
    now: datetime,
) -> Outcome:
    """An account whose last e-mail or meeting is N days old or more: one
    reminder a period of N days of silence, to the rep who deals with it
    most. A new activity starts a new spell (a new key)."""
    outcome = Outcome()
    length = timedelta(days=settings.days)
    for account in accounts:
        quiet = now - account.last_at
        if quiet < length or account.owner not in calendars:
            continue
        assert account.owner is not None
        period = int(quiet // length)
        calendar = calendars[account.owner]
        # Due the day the silence reached N days, or today when that day
        # went by unseen (a back-fill, the service down): never overdue from
        # the start.
        reached = calendar.local(account.last_at + period * length).date()
        day = max(reached, calendar.local(now).date())
        due = calendar.next_workday_from(calendar.instant(day, remind_at))
        last = calendar.local(account.last_at)
        outcome.wanted.append(
            Wanted(
                key=dormant_key(account.account_id, account.last_activity_id, period),
                rule=Rule.DORMANT_ACCOUNT,
                kind=Kind.TASK,
                mailbox=account.owner,
                due_at=due,
                subject=f"Call {account.name}: no contact for {quiet.days} days",
                reason=(
                    f"no e-mail or meeting with {account.name} since "
                    f"{last:%Y-%m-%d} (period {period} of {settings.days} days)"
                ),
                account_id=account.account_id,
                trigger_activity_id=account.last_activity_id,
            )
        )
    return outcome


# --- helpers -----------------------------------------------------------------


def _owner(
    mailboxes: Sequence[str],
    preferred: str | None,
    calendars: Mapping[str, WorkCalendar],
) -> str | None:
    """The rep's mailbox for a reminder: the author's or organizer's when it
    is one of ours, else the first mailbox that holds the item."""
    if preferred in calendars:
        return preferred
    return next((m for m in mailboxes if m in calendars), None)
