"""Reading the history back: timelines, unknown addresses, status.

Each view has a stable JSON shape (``as_json``), documented in the README.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailsync.store.models import (
    Account,
    Activity,
    ActivityName,
    Contact,
    ContactAddress,
    Link,
    Mailbox,
    ParticipantRow,
    Rep,
    SkippedItem,
    Source,
)


@dataclass
class TaskView:
    """A task's Outlook status, due date (a date, or a time) and completion."""

    status: str | None
    due: datetime | date | None
    completed_at: datetime | None

    @classmethod
    def of(cls, activity: Activity) -> TaskView:
        due: datetime | date | None = activity.due_at
        if activity.due_at is not None and activity.due_is_date:
            due = activity.due_at.date()
        return cls(activity.task_status, due, activity.completed_at)

    def as_json(self) -> dict[str, Any]:
        due = self.due
        return {
            "status": self.status,
            "due": iso(due) if isinstance(due, datetime) else _day(due),
            "completed": iso(self.completed_at),
        }


def _day(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass
class ActivityView:
    id: int
    kind: str
    direction: str
    occurred_at: datetime
    subject: str
    status: str
    task: TaskView | None = None
    participants: list[dict[str, Any]] = field(default_factory=list)
    contacts: list[dict[str, Any]] = field(default_factory=list)
    accounts: list[dict[str, Any]] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    link_rules: list[dict[str, Any]] = field(default_factory=list)
    # What could not be read in the item's headers (a malformed address list,
    # a bad date): the part was left out, never linked.
    defects: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "direction": self.direction,
            "occurred_at": iso(self.occurred_at),
            "subject": self.subject,
            "status": self.status,
            "task": self.task.as_json() if self.task else None,
            "participants": self.participants,
            "contacts": self.contacts,
            "accounts": self.accounts,
            "sources": self.sources,
            "link_rules": self.link_rules,
            "defects": self.defects,
        }


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def history(session: Session, target_kind: str, target_id: int) -> list[ActivityView]:
    """The timeline of a contact or an account, oldest first."""
    query = select(Link.activity_id).where(
        Link.target_kind == target_kind,
        Link.target_id == target_id,
        Link.suppressed.is_(False),
    )
    ids = list(session.scalars(query))
    return activity_views(session, ids)


def activity_views(session: Session, ids: Sequence[int]) -> list[ActivityView]:
    query = (
        select(Activity)
        .where(Activity.id.in_(ids))
        .order_by(Activity.occurred_at, Activity.id)
    )
    activities = list(session.scalars(query))
    views = {
        a.id: ActivityView(
            a.id,
            a.kind,
            a.direction,
            a.occurred_at,
            a.subject,
            a.status,
            TaskView.of(a) if a.kind == "task" else None,
            defects=defects_of(a),
        )
        for a in activities
    }
    _add_participants(session, views)
    _add_links(session, views)
    _add_sources(session, views)
    return list(views.values())


def defects_of(activity: Activity) -> list[str]:
    found = json.loads(activity.defects or "[]")
    return [str(d) for d in found] if isinstance(found, list) else []


def _add_participants(session: Session, views: dict[int, ActivityView]) -> None:
    rows = session.scalars(
        select(ParticipantRow)
        .where(ParticipantRow.activity_id.in_(views))
        .order_by(ParticipantRow.role, ParticipantRow.address)
    )
    for row in rows:
        views[row.activity_id].participants.append(
            {
                "address": row.address,
                "name": row.name,
                "role": row.role,
                "status": row.status,
                "response": row.response,
            }
        )


def _add_links(session: Session, views: dict[int, ActivityView]) -> None:
    links = list(
        session.scalars(
            select(Link)
            .where(Link.activity_id.in_(views), Link.suppressed.is_(False))
            .order_by(Link.target_kind.desc(), Link.target_id)
        )
    )
    contacts = _names(
        session, Contact, [x.target_id for x in links if x.target_kind == "contact"]
    )
    accounts = _names(
        session, Account, [x.target_id for x in links if x.target_kind == "account"]
    )
    emails = _first_addresses(session, list(contacts))
    for link in links:
        view = views[link.activity_id]
        if link.target_kind == "contact":
            name = contacts.get(link.target_id, "?")
            view.contacts.append(
                {
                    "id": link.target_id,
                    "name": name,
                    "email": emails.get(link.target_id),
                }
            )
        else:
            name = accounts.get(link.target_id, "?")
            view.accounts.append({"id": link.target_id, "name": name})
        view.link_rules.append(
            {"target": link.target_kind, "name": name, "rule": link.rule}
        )


def _add_sources(session: Session, views: dict[int, ActivityView]) -> None:
    rows = session.execute(
        select(Source, Mailbox.address)
        .join(Mailbox, Mailbox.id == Source.mailbox_id)
        .where(Source.activity_id.in_(views))
        .order_by(Source.id)
    )
    for source, mailbox in rows:
        views[source.activity_id].sources.append(
            {
                "mailbox": mailbox,
                "folder": source.folder,
                "provider_id": source.provider_id,
                "removed": source.removed_at is not None,
            }
        )


def _names(
    session: Session, model: type[Contact] | type[Account], ids: list[int]
) -> dict[int, str]:
    if not ids:
        return {}
    return dict(
        session.execute(
            select(model.id, model.name).where(model.id.in_(set(ids)))
        ).all()
    )


def _first_addresses(session: Session, contact_ids: list[int]) -> dict[int, str]:
    found: dict[int, str] = {}
    rows = session.execute(
        select(ContactAddress.contact_id, ContactAddress.address)
        .where(ContactAddress.contact_id.in_(contact_ids))
        .order_by(ContactAddress.id)
    )
    for contact_id, address in rows:
        found.setdefault(contact_id, address)
    return found


# --- unknown addresses -----------------------------------------------------


@dataclass
class UnlinkedAddress:
    address: str
    name: str
    count: int
    first_seen: datetime
    last_seen: datetime
    sample_subject: str
    activity_ids: list[int] = field(default_factory=list)
    status: str = "unknown"  # or "unresolved"
    kind = "address"

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "status": self.status,
            "address": self.address,
            "name": self.name,
            "count": self.count,
            "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen),
            "sample_subject": self.sample_subject,
            "activity_ids": self.activity_ids,
        }


@dataclass
class UnlinkedName:
    """A name typed in tasks that matched no one, or more than one contact.

    It has no address: it is shown as the rep typed it.
    """

    typed_in: str  # "contact" or "company": the task's field it was typed in
    name: str
    status: str  # "unknown" or "ambiguous"
    first_seen: datetime
    count: int = 0
    last_seen: datetime | None = None
    sample_subject: str = ""
    activity_ids: list[int] = field(default_factory=list)
    address: None = None

    @property
    def kind(self) -> str:
        return f"{self.typed_in}_name"

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "status": self.status,
            "address": None,
            "name": self.name,
            "count": self.count,
            "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen),
            "sample_subject": self.sample_subject,
            "activity_ids": self.activity_ids,
        }


def unlinked(session: Session) -> list[UnlinkedAddress | UnlinkedName]:
    """External addresses that matched nothing, most frequent first (rule 10),
    then the names typed in tasks that matched nothing or were ambiguous
    (rule 12), which have no address.

    Mail the rep marked private after it was recorded (``opted_out``) is left
    out: its addresses and subject are not shown for review.
    """
    return [*_unlinked_addresses(session), *_unlinked_names(session)]


def _unlinked_addresses(session: Session) -> list[UnlinkedAddress]:
    waiting = (
        ParticipantRow.status.in_(["unknown", "unresolved"]),
        Activity.status != "opted_out",
    )
    stats = session.execute(
        select(
            ParticipantRow.address,
            func.count(func.distinct(ParticipantRow.activity_id)),
            func.min(Activity.occurred_at),
            func.max(Activity.occurred_at),
            func.max(ParticipantRow.name),
            func.max(Activity.id),
            func.max(ParticipantRow.status),
        )
        .join(Activity, Activity.id == ParticipantRow.activity_id)
        .where(*waiting)
        .group_by(ParticipantRow.address)
    ).all()
    ids: dict[str, set[int]] = defaultdict(set)
    for address, activity_id in session.execute(
        select(ParticipantRow.address, ParticipantRow.activity_id)
        .join(Activity, Activity.id == ParticipantRow.activity_id)
        .where(*waiting)
    ):
        ids[address].add(activity_id)
    samples = dict(
        session.execute(
            select(Activity.id, Activity.subject).where(
                Activity.id.in_([s[5] for s in stats])
            )
        ).all()
    )
    result = [
        UnlinkedAddress(
            address,
            name or "",
            count,
            _aware(first),
            _aware(last),
            samples.get(latest, ""),
            sorted(ids[address]),
            status,
        )
        for address, count, first, last, name, latest, status in stats
    ]
    result.sort(key=lambda u: (-u.count, u.address))
    return result


def _unlinked_names(session: Session) -> list[UnlinkedName]:
    rows = session.execute(
        select(
            ActivityName.field,
            ActivityName.name_key,
            ActivityName.name,
            ActivityName.status,
            Activity.id,
            Activity.occurred_at,
            Activity.subject,
        )
        .join(Activity, Activity.id == ActivityName.activity_id)
        .where(
            ActivityName.status.in_(["unknown", "ambiguous"]),
            Activity.status != "opted_out",
        )
        .order_by(Activity.occurred_at, Activity.id)
    ).all()
    found: dict[tuple[str, str], UnlinkedName] = {}
    for kind, key, name, status, activity_id, when, subject in rows:
        entry = found.get((kind, key))
        if entry is None:
            entry = found[(kind, key)] = UnlinkedName(kind, name, status, when)
        entry.count += 1
        entry.last_seen, entry.sample_subject = when, subject
        entry.activity_ids.append(activity_id)
    return sorted(
        found.values(), key=lambda u: (-u.count, u.typed_in, u.name.casefold())
    )


def _aware(value: Any) -> datetime:
    # min()/max() come back as plain values, not through the column's type.
    from datetime import UTC

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --- status ----------------------------------------------------------------


@dataclass
class MailboxStatus:
    address: str
    rep: str
    kind: str
    last_cycle_at: datetime | None
    last_error: str | None
    last_counts: dict[str, Any]
    activities: int
    links: int
    unlinked: int
    excluded: int
    rejected: list[dict[str, Any]]
    schedule: Schedule = field(default_factory=lambda: Schedule())

    def as_json(self) -> dict[str, Any]:
        return {
            **self._counts_json(),
            **self.schedule.as_json(),
            "rejected_count": len(self.rejected),
        }

    def _counts_json(self) -> dict[str, Any]:
        return {
            "mailbox": self.address,
            "rep": self.rep,
            "kind": self.kind,
            "last_cycle_at": iso(self.last_cycle_at),
            "last_error": self.last_error,
            "last_cycle": self.last_counts,
            "activities": self.activities,
            "links": self.links,
            "unlinked": self.unlinked,
            "excluded": self.excluded,
            "rejected": self.rejected,
        }


@dataclass
class Schedule:
    """How far behind a mailbox is, and when the service syncs it next.

    ``last_success_at`` is the end of the last cycle without error, or the
    last page of this mailbox committed since, by a cycle that then failed.
    ``next_cycle_at`` is known only while a ``mailsync run`` instance holds
    the mailbox's lease or is alive on this database; otherwise the mailbox
    is "not scheduled".
    """

    last_success_at: datetime | None = None
    lag_seconds: float | None = None
    newest_item_at: datetime | None = None
    next_cycle_at: datetime | None = None
    next_cycle: str = "not scheduled"
    held_by: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "last_success_at": iso(self.last_success_at),
            "lag_seconds": self.lag_seconds,
            "newest_item_at": iso(self.newest_item_at),
            "next_cycle_at": iso(self.next_cycle_at),
            "next_cycle": self.next_cycle,
            "held_by": self.held_by,
        }


def mailbox_status(
    session: Session,
    check_interval: float | None = None,
    enabled: set[str] | None = None,
    moment: datetime | None = None,
) -> list[MailboxStatus]:
    """Every mailbox's status. With the service's ``check_interval`` and the
    ``enabled`` addresses, each also says when its next cycle runs."""
    from mailsync.store.models import now

    moment = moment or now()
    result = []
    for mailbox, rep in session.execute(
        select(Mailbox, Rep.name).join(Rep).order_by(Mailbox.address)
    ):
        status = _one_status(session, mailbox, rep)
        status.schedule = _schedule(session, mailbox, check_interval, enabled, moment)
        result.append(status)
    return result


def _schedule(
    session: Session,
    mailbox: Mailbox,
    check_interval: float | None,
    enabled: set[str] | None,
    moment: datetime,
) -> Schedule:
    from datetime import timedelta

    from mailsync.store.models import Cursor, Lease

    schedule = Schedule()
    known = [mailbox.last_success_at]
    if mailbox.last_error is not None:
        # A page committed since the last cycle without error, by one that
        # then failed, counts too (a cycle without error ends after its pages).
        known.append(
            session.scalar(
                select(func.max(Cursor.updated_at)).where(
                    Cursor.mailbox_id == mailbox.id, ~Cursor.scope.startswith("@")
                )
            )
        )
    found = [_aware(t) for t in known if t is not None]
    schedule.last_success_at = max(found) if found else None
    if schedule.last_success_at is not None:
        lag = (moment - schedule.last_success_at).total_seconds()
        schedule.lag_seconds = round(max(lag, 0.0), 1)
    # The newest e-mail: a meeting may lie a year ahead, a task is dated by
    # its due date, and neither says how fresh the sync is.
    newest = session.scalar(
        select(func.max(Activity.occurred_at))
        .join(Source, Source.activity_id == Activity.id)
        .where(Source.mailbox_id == mailbox.id, Activity.kind == "message")
    )
    schedule.newest_item_at = _aware(newest) if newest else None

    if enabled is not None and mailbox.address not in enabled:
        schedule.next_cycle = "not scheduled (mailbox not enabled)"
        return schedule
    live = {
        name: holder
        for name, holder in session.execute(
            select(Lease.name, Lease.holder).where(Lease.expires_at > moment)
        )
    }
    schedule.held_by = live.get(mailbox.address)
    running = schedule.held_by is not None or any(
        name.startswith("@instance:") for name in live
    )
    if not running or check_interval is None:
        return schedule
    due = moment
    if mailbox.last_cycle_at is not None:
        due = max(moment, mailbox.last_cycle_at + timedelta(seconds=check_interval))
    schedule.next_cycle_at = due
    schedule.next_cycle = "due now" if due <= moment else "scheduled"
    return schedule


def _one_status(session: Session, mailbox: Mailbox, rep: str) -> MailboxStatus:
    activity_ids = select(Source.activity_id).where(Source.mailbox_id == mailbox.id)
    activities = session.scalar(
        select(func.count(func.distinct(Source.activity_id))).where(
            Source.mailbox_id == mailbox.id
        )
    )
    links = session.scalar(
        select(func.count())
        .select_from(Link)
        .where(Link.activity_id.in_(activity_ids), Link.suppressed.is_(False))
    )
    linked_ids = select(Link.activity_id).where(Link.suppressed.is_(False))
    unlinked_count = session.scalar(
        select(func.count())
        .select_from(Activity)
        .where(
            Activity.id.in_(activity_ids),
            Activity.id.not_in(linked_ids),
            Activity.status != "opted_out",  # left unlinked on purpose
        )
    )
    skipped = session.execute(
        select(SkippedItem.outcome, func.count())
        .where(SkippedItem.mailbox_id == mailbox.id)
        .group_by(SkippedItem.outcome)
    ).all()
    rejected = [
        {
            "folder": r.folder,
            "provider_id": r.provider_id,
            "reason": r.reason,
            "seen_at": iso(r.seen_at),
        }
        for r in session.scalars(
            select(SkippedItem)
            .where(
                SkippedItem.mailbox_id == mailbox.id, SkippedItem.outcome == "rejected"
            )
            .order_by(SkippedItem.seen_at.desc(), SkippedItem.id)
        )
    ]
    return MailboxStatus(
        address=mailbox.address,
        rep=rep,
        kind=mailbox.kind,
        last_cycle_at=mailbox.last_cycle_at,
        last_error=mailbox.last_error,
        last_counts=json.loads(mailbox.last_counts) if mailbox.last_counts else {},
        activities=int(activities or 0),
        links=int(links or 0),
        unlinked=int(unlinked_count or 0),
        excluded=dict(skipped).get("excluded", 0),
        rejected=rejected,
    )


def contacts_listing(session: Session) -> list[dict[str, Any]]:
    addresses: dict[int, list[str]] = defaultdict(list)
    for contact_id, address in session.execute(
        select(ContactAddress.contact_id, ContactAddress.address).order_by(
            ContactAddress.id
        )
    ):
        addresses[contact_id].append(address)
    rows = session.execute(
        select(Contact, Account.name)
        .outerjoin(Account)
        .order_by(Contact.name, Contact.id)
    )
    return [
        {
            "id": c.id,
            "name": c.name,
            "emails": addresses[c.id],
            "account": account,
            "title": c.title,
            "phone": c.phone,
            "origin": c.origin,
        }
        for c, account in rows
    ]


def accounts_listing(session: Session) -> list[dict[str, Any]]:
    rows = session.scalars(select(Account).order_by(Account.name))
    return [
        {
            "id": a.id,
            "name": a.name,
            "domains": sorted(d.domain for d in a.domains),
            "phone": a.phone,
            "notes": a.notes,
        }
        for a in rows
    ]
