"""Writing the Activity History: activities, sources, participants and links.

Every function here runs inside a transaction that the caller owns; the sync
core commits a page of items together with its cursor.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from mailsync.items import Item, ItemKind
from mailsync.linker.rules import (
    Directory,
    LinkRule,
    Match,
    MatchStatus,
    NameField,
    NameMatch,
    Target,
    direct_links,
    links_for,
    match_names,
    name_key,
    person_key,
)
from mailsync.store.models import (
    Activity,
    ActivityKey,
    ActivityName,
    Contact,
    Link,
    ParticipantRow,
    SkippedItem,
    Source,
    ThreadRef,
    now,
)

log = logging.getLogger(__name__)

PREVIEW_LENGTH = 200
# How far apart the dates of two copies of one message may be.
SAME_MESSAGE_SPREAD = timedelta(days=1)


@dataclass
class Recorded:
    """What storing one item did."""

    activity_id: int
    created: bool
    changed: bool
    links: int
    added_links: int


@dataclass
class ItemPlan:
    """What to record for one item: the outcome of the pure deciding step."""

    item: Item
    direction: str
    author: str | None
    matches: list[Match]
    keys: list[str]
    names: list[NameMatch] = field(default_factory=list)


# --- lookups ---------------------------------------------------------------


def _copy_of(session: Session, plan: ItemPlan) -> int | None:
    """The activity that ``plan``'s item is a copy of, by its keys.

    A Message-ID alone does not make two items one when they cannot be one
    message: another author, or dates more than a day apart. A sender that
    reuses Message-IDs (a broken mailer, a forgery) must not file one
    customer's mail under another's; the fingerprint still merges true copies.
    """
    rows = dict(
        session.execute(
            select(ActivityKey.key, ActivityKey.activity_id).where(
                ActivityKey.key.in_(plan.keys)
            )
        ).all()
    )
    for key in plan.keys:
        if key not in rows:
            continue
        if key.startswith("mid:") and _unlike(session.get(Activity, rows[key]), plan):
            log.warning(
                "activity %d: another message has its Message-ID; kept apart",
                rows[key],
            )
            continue
        return rows[key]
    return None


def _unlike(activity: Activity | None, plan: ItemPlan) -> bool:
    """Whether a stored message and a new item cannot be copies of one."""
    if activity is None or plan.item.meeting is not None:
        return False
    theirs, ours = activity.author, plan.author
    if theirs and ours and theirs != ours and _plain(theirs) and _plain(ours):
        return True
    gap = abs(_aware(activity.occurred_at) - _occurred_at(plan.item))
    return gap > SAME_MESSAGE_SPREAD


def _plain(address: str) -> bool:
    """An SMTP address (not an Exchange X500 one still unresolved)."""
    return "@" in address and not address.startswith(("/", "imcea"))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def find_source(session: Session, mailbox_id: int, provider_id: str) -> Source | None:
    return session.scalar(
        select(Source).where(
            Source.mailbox_id == mailbox_id, Source.provider_id == provider_id
        )
    )


# --- recording -------------------------------------------------------------


def record_item(session: Session, mailbox_id: int, plan: ItemPlan) -> Recorded:
    """Store one item as a new activity or as one more source of an existing one."""
    item = plan.item
    source = find_source(session, mailbox_id, item.provider_id)
    activity_id = source.activity_id if source else _copy_of(session, plan)

    if activity_id is None:
        activity_id = _insert_activity(session, plan)
        created, changed = True, True
    else:
        created = False
        changed = _merge_into(session, activity_id, plan)

    _write_source(session, mailbox_id, activity_id, item, source)
    session.execute(
        delete(SkippedItem).where(
            SkippedItem.mailbox_id == mailbox_id,
            SkippedItem.provider_id == item.provider_id,
        )
    )
    links, added = relink_activity(
        session, activity_id, known_matches=plan.matches if created else None
    )
    if item.message_id and (created or changed):
        # Replies stored earlier may point at this Message-ID (a copy merged
        # by content brings a Message-ID the activity did not have).
        relink_replies(session, item.message_id)
    return Recorded(activity_id, created, changed, links, added)


def _insert_activity(session: Session, plan: ItemPlan) -> int:
    item = plan.item
    meeting = item.meeting
    activity = Activity(
        kind=item.kind.value,
        direction=plan.direction,
        occurred_at=_occurred_at(item),
        subject=_clean(item.subject),
        preview=_preview(item),
        message_id=item.message_id,
        author=plan.author,
        defects=json.dumps(item.defects),
        meeting_uid=meeting.uid if meeting else None,
        starts_at=_instant(meeting.start) if meeting else None,
        ends_at=_instant(meeting.end) if meeting else None,
        all_day=bool(meeting and _is_date(meeting.start)),
        status=_meeting_status(item) or "active",
        sequence=meeting.sequence if meeting else 0,
        **_task_fields(item),
    )
    session.add(activity)
    session.flush()
    _replace_names(session, activity.id, plan.names)
    # A key another activity holds stays there (a reused Message-ID).
    _add_keys(session, activity.id, plan.keys)
    session.add_all(
        ThreadRef(activity_id=activity.id, message_id=ref) for ref in _refs(item)
    )
    session.add_all(_participant_row(activity.id, m) for m in plan.matches)
    session.flush()
    return activity.id


def _merge_into(session: Session, activity_id: int, plan: ItemPlan) -> bool:
    """Add what this copy knows that the activity does not. True if it changed."""
    changed = _add_keys(session, activity_id, plan.keys)
    meeting = plan.item.meeting
    # A reply answers for its sender; a calendar's own copy of the meeting
    # (no method: the organizer's calendar item) holds every attendee's answer.
    replied = meeting is not None and meeting.method in ("REPLY", None)
    changed |= _add_participants(session, activity_id, plan.matches, replied)
    changed |= _add_refs(session, activity_id, _refs(plan.item))
    if plan.item.meeting is not None:
        changed |= _update_meeting(session, activity_id, plan.item)
    if plan.item.task is not None:
        changed |= _update_task(session, activity_id, plan)
    if plan.direction == "outbound":
        session.execute(
            update(Activity)
            .where(Activity.id == activity_id)
            .values(direction="outbound")
        )
    return changed


def _add_keys(session: Session, activity_id: int, keys: Sequence[str]) -> bool:
    taken = set(
        session.scalars(select(ActivityKey.key).where(ActivityKey.key.in_(keys))).all()
    )
    # A key held by another activity stays there: the two are not merged after
    # the fact, since either may already carry manual links.
    fresh = [key for key in keys if key not in taken]
    session.add_all(ActivityKey(key=key, activity_id=activity_id) for key in fresh)
    return bool(fresh)


def _add_refs(session: Session, activity_id: int, refs: Sequence[str]) -> bool:
    if not refs:
        return False
    known = set(
        session.scalars(
            select(ThreadRef.message_id).where(ThreadRef.activity_id == activity_id)
        ).all()
    )
    fresh = [ref for ref in refs if ref not in known]
    session.add_all(ThreadRef(activity_id=activity_id, message_id=ref) for ref in fresh)
    return bool(fresh)


def _add_participants(
    session: Session, activity_id: int, matches: Iterable[Match], replied: bool
) -> bool:
    """Add new participants. An attendee's response changes only by a reply
    (or a calendar's copy), and never back to NEEDS-ACTION: the invitation's
    NEEDS-ACTION must not undo an answer synced before it."""
    rows = {
        (row.address, row.role): row
        for row in session.scalars(
            select(ParticipantRow).where(ParticipantRow.activity_id == activity_id)
        )
    }
    changed = False
    for match in matches:
        row = rows.get((match.address, match.role.value))
        if row is None:
            session.add(_participant_row(activity_id, match))
            rows[(match.address, match.role.value)] = ParticipantRow()
            changed = True
        elif (
            match.response
            and row.response != match.response
            and (row.response is None or (replied and match.response != "NEEDS-ACTION"))
        ):
            row.response = match.response
            changed = True
    session.flush()
    return changed


def _update_meeting(session: Session, activity_id: int, item: Item) -> bool:
    """Apply a newer invitation or a cancellation; the highest SEQUENCE wins."""
    meeting = item.meeting
    assert meeting is not None
    activity = session.get(Activity, activity_id)
    if (
        activity is None
        or meeting.method == "REPLY"
        or meeting.sequence < activity.sequence
    ):
        return False
    activity.kind = ItemKind.MEETING.value
    activity.meeting_uid = meeting.uid
    activity.sequence = meeting.sequence
    activity.starts_at = _instant(meeting.start) or activity.starts_at
    activity.ends_at = _instant(meeting.end) or activity.ends_at
    activity.occurred_at = activity.starts_at or activity.occurred_at
    activity.status = _meeting_status(item) or activity.status
    if meeting.method != "CANCEL":
        # A cancellation's subject is the meeting's with "Canceled: " (or a
        # localised word) in front; the meeting keeps its own.
        activity.subject = _clean(item.subject) or activity.subject
    activity.updated_at = now()
    return True


def _update_task(session: Session, activity_id: int, plan: ItemPlan) -> bool:
    """A task's state as read now replaces the stored one: status, due date,
    completion, subject, body and the names typed in it.

    The copy read last wins: a task carries no sequence that orders its
    versions the way a meeting's SEQUENCE does.
    """
    item = plan.item
    activity = session.get(Activity, activity_id)
    if activity is None:
        return False
    state: dict[str, object] = {
        "kind": ItemKind.TASK.value,
        "subject": _clean(item.subject),
        "preview": _preview(item),
        "occurred_at": _occurred_at(item),
        **_task_fields(item),
    }
    changed = any(getattr(activity, key) != value for key, value in state.items())
    for key, value in state.items():
        setattr(activity, key, value)
    changed |= _replace_names(session, activity_id, plan.names)
    if changed:
        activity.updated_at = now()
    return changed


def _task_fields(item: Item) -> dict[str, object]:
    task = item.task
    if task is None:
        return {}
    return {
        "task_status": _clean(task.status)[:30] if task.status else None,
        "due_at": _instant(task.due),
        "due_is_date": _is_date(task.due) if task.due is not None else None,
        "completed_at": _instant(task.completed),
    }


def _replace_names(
    session: Session, activity_id: int, names: Iterable[NameMatch]
) -> bool:
    """Make the activity's typed names these; True if any row changed."""
    wanted: dict[tuple[str, str], ActivityName] = {}
    for match in names:
        row = _name_row(activity_id, match)
        wanted.setdefault((row.field, row.name_key), row)
    stored = {
        (row.field, row.name_key): row
        for row in session.scalars(
            select(ActivityName).where(ActivityName.activity_id == activity_id)
        )
    }
    changed = False
    for key, row in stored.items():
        if key not in wanted:
            session.delete(row)
            changed = True
    for key, new in wanted.items():
        old = stored.get(key)
        if old is None:
            session.add(new)
            changed = True
            continue
        for column in ("name", "status", "rule", "contact_id", "account_id"):
            if getattr(old, column) != getattr(new, column):
                setattr(old, column, getattr(new, column))
                changed = True
    session.flush()
    return changed


def _name_row(activity_id: int, match: NameMatch) -> ActivityName:
    name = _clean(match.name)
    key = person_key(name) if match.field is NameField.CONTACT else name_key(name)
    return ActivityName(
        activity_id=activity_id,
        field=match.field.value,
        name=name[:300],
        name_key=key[:300],
        status=match.status.value,
        rule=match.rule.value if match.rule else None,
        contact_id=match.contact_id,
        account_id=match.account_id,
    )


def _write_source(
    session: Session,
    mailbox_id: int,
    activity_id: int,
    item: Item,
    source: Source | None,
) -> None:
    if source is None:
        session.add(
            Source(
                activity_id=activity_id,
                mailbox_id=mailbox_id,
                folder=item.folder.name,
                provider_id=item.provider_id,
                change_key=item.change_key,
            )
        )
        return
    source.folder = item.folder.name
    source.change_key = item.change_key
    source.last_seen = now()
    source.removed_at = None


def _participant_row(activity_id: int, match: Match) -> ParticipantRow:
    return ParticipantRow(
        activity_id=activity_id,
        address=match.address,
        name=_clean(match.name)[:300],
        role=match.role.value,
        response=match.response,
        unresolved=match.unresolved,
        status=match.status.value,
        rule=match.rule.value if match.rule else None,
        contact_id=match.contact_id,
        account_id=match.account_id,
    )


def record_skipped(
    session: Session,
    mailbox_id: int,
    item_id: str,
    folder: str,
    outcome: str,
    reason: str,
    subject: str | None = None,
    occurred_at: datetime | None = None,
) -> None:
    """Keep an excluded or rejected item with its reason (one row per item)."""
    existing = session.scalar(
        select(SkippedItem).where(
            SkippedItem.mailbox_id == mailbox_id, SkippedItem.provider_id == item_id
        )
    )
    if existing is None:
        existing = SkippedItem(mailbox_id=mailbox_id, provider_id=item_id)
        session.add(existing)
    existing.folder = folder
    existing.outcome = outcome
    existing.reason = reason
    existing.subject = _clean(subject) if subject is not None else None
    existing.occurred_at = occurred_at
    existing.seen_at = now()


def withdraw_source(session: Session, mailbox_id: int, provider_id: str) -> bool:
    """An item the rep opted out of after it was recorded: drop its links.

    The activity and its manual links stay; its automatic links go, and it is
    marked so that relinking leaves it unlinked.
    """
    source = find_source(session, mailbox_id, provider_id)
    if source is None:
        return False
    # README rule 9: neither its subject nor its words are kept.
    session.execute(
        update(Activity)
        .where(Activity.id == source.activity_id)
        .values(status="opted_out", subject="", preview="")
    )
    session.execute(
        delete(Link).where(
            Link.activity_id == source.activity_id,
            Link.manual.is_(False),
            Link.suppressed.is_(False),
        )
    )
    return True


def mark_removed(
    session: Session, mailbox_id: int, provider_ids: Sequence[str]
) -> set[str]:
    """Sources gone from the mailbox, with the parts of each (provider id
    ``<id>#<suffix>``, see :mod:`mailsync.connectors.base`). Their activities
    stay in the history. Returns the provider ids that were marked."""
    marked: set[str] = set()
    for start in range(0, len(provider_ids), _REMOVE_CHUNK):
        chunk = provider_ids[start : start + _REMOVE_CHUNK]
        sources = session.execute(
            select(Source.id, Source.provider_id).where(
                Source.mailbox_id == mailbox_id,
                Source.removed_at.is_(None),
                _named(Source.provider_id, chunk),
            )
        ).all()
        gone = [(i, p) for i, p in sources if _is_named(p, chunk)]
        if gone:
            session.execute(
                update(Source)
                .where(Source.id.in_([i for i, _ in gone]))
                .values(removed_at=now())
            )
            marked.update(p for _, p in gone)
        skipped = session.execute(
            select(SkippedItem.id, SkippedItem.provider_id).where(
                SkippedItem.mailbox_id == mailbox_id,
                _named(SkippedItem.provider_id, chunk),
            )
        ).all()
        ids = [i for i, p in skipped if _is_named(p, chunk)]
        if ids:
            session.execute(delete(SkippedItem).where(SkippedItem.id.in_(ids)))
    return marked


_REMOVE_CHUNK = 100  # provider ids a statement: each is an IN entry and a LIKE


def _named(column: Any, provider_ids: Sequence[str]) -> Any:
    """The ids, and the parts of each (a LIKE, narrowed by _is_named)."""
    parts = (column.startswith(f"{p}#", autoescape=True) for p in provider_ids)
    return or_(column.in_(provider_ids), *parts)


def _is_named(provider_id: str, provider_ids: Sequence[str]) -> bool:
    """The id or a part of one, exactly: SQLite's LIKE ignores case."""
    wanted, head = set(provider_ids), provider_id
    while head not in wanted:
        if "#" not in head:
            return False
        head = head.rsplit("#", 1)[0]
    return True


# --- links -----------------------------------------------------------------


def set_manual_link(
    session: Session, activity_id: int, target: Target, linked: bool
) -> None:
    """Link (or unlink) one activity by hand; no later sync or relink undoes it.

    Linking a contact also links the contact's account, as matching does
    (rule 3); unlinking takes away only what is named.
    """
    if linked and target[0] == "contact":
        account_id = session.scalar(
            select(Contact.account_id).where(Contact.id == target[1])
        )
        if account_id is not None:
            _set_manual(session, activity_id, ("account", account_id), linked)
    _set_manual(session, activity_id, target, linked)
    relink_activity(session, activity_id)


def _set_manual(
    session: Session, activity_id: int, target: Target, linked: bool
) -> None:
    session.execute(
        delete(Link).where(
            Link.activity_id == activity_id,
            Link.target_kind == target[0],
            Link.target_id == target[1],
        )
    )
    session.add(
        Link(
            activity_id=activity_id,
            target_kind=target[0],
            target_id=target[1],
            rule=LinkRule.MANUAL.value,
            manual=linked,
            suppressed=not linked,
        )
    )
    session.flush()


def relink_activity(
    session: Session, activity_id: int, known_matches: list[Match] | None = None
) -> tuple[int, int]:
    """Bring one activity's automatic links in line with its participants.

    Manual links and manual unlinks are left as they are. Returns the number
    of links the activity has afterwards and how many of them are new.
    """
    kind, status = session.execute(
        select(Activity.kind, Activity.status).where(Activity.id == activity_id)
    ).one()
    matches: list[Match | NameMatch] = [
        *(
            known_matches
            if known_matches is not None
            else _stored_matches(session, activity_id)
        )
    ]
    if kind == ItemKind.TASK.value:
        matches += _stored_names(session, activity_id)
    existing = {
        (row.target_kind, row.target_id): row
        for row in session.scalars(select(Link).where(Link.activity_id == activity_id))
    }
    manual = {
        t: not row.suppressed
        for t, row in existing.items()
        if row.manual or row.suppressed
    }
    if status == "opted_out":
        wanted = {t: LinkRule.MANUAL for t, linked in manual.items() if linked}
    else:
        thread = [] if direct_links(matches) else thread_targets(session, activity_id)
        wanted = links_for(matches, thread, manual)
    added = _write_links(session, activity_id, wanted, existing)
    return len(wanted), added


def _write_links(
    session: Session,
    activity_id: int,
    wanted: dict[Target, LinkRule],
    existing: dict[Target, Link],
) -> int:
    """Write the difference; returns the number of links added."""
    for target, row in existing.items():
        if row.manual or row.suppressed:
            continue
        if target not in wanted:
            session.delete(row)
        elif row.rule != wanted[target].value:
            row.rule = wanted[target].value
    added = 0
    for target, rule in wanted.items():
        if target not in existing:
            added += 1
            session.add(
                Link(
                    activity_id=activity_id,
                    target_kind=target[0],
                    target_id=target[1],
                    rule=rule.value,
                )
            )
    session.flush()
    return added


def _stored_matches(session: Session, activity_id: int) -> list[Match]:
    from mailsync.items import Role

    rows = session.scalars(
        select(ParticipantRow).where(ParticipantRow.activity_id == activity_id)
    )
    return [
        Match(
            address=row.address,
            name=row.name,
            role=Role(row.role),
            status=MatchStatus(row.status),
            contact_id=row.contact_id,
            account_id=row.account_id,
            rule=LinkRule(row.rule) if row.rule else None,
            response=row.response,
            unresolved=row.unresolved,
        )
        for row in rows
    ]


def _stored_names(session: Session, activity_id: int) -> list[NameMatch]:
    rows = session.scalars(
        select(ActivityName)
        .where(ActivityName.activity_id == activity_id)
        .order_by(ActivityName.id)
    )
    return [_name_match(row) for row in rows]


def _name_match(row: ActivityName) -> NameMatch:
    return NameMatch(
        name=row.name,
        field=NameField(row.field),
        status=MatchStatus(row.status),
        contact_id=row.contact_id,
        account_id=row.account_id,
        rule=LinkRule(row.rule) if row.rule else None,
    )


def rematch_names(session: Session, directory: Directory) -> set[int]:
    """Match the stored typed names again (rule 12); the activities that changed.

    Each activity's names are matched together, as when its task was read, so
    that a list of names stored whole splits once one of them is known.
    """
    typed: dict[int, tuple[list[str], list[str]]] = {}
    for row in session.scalars(select(ActivityName).order_by(ActivityName.id)):
        contacts, companies = typed.setdefault(row.activity_id, ([], []))
        (contacts if row.field == NameField.CONTACT.value else companies).append(
            row.name
        )
    return {
        activity_id
        for activity_id, (contacts, companies) in typed.items()
        if _replace_names(
            session, activity_id, match_names(contacts, companies, directory)
        )
    }


def thread_targets(session: Session, activity_id: int) -> list[Target]:
    """The links of the messages this activity replies to (rule 8)."""
    refs = session.scalars(
        select(ThreadRef.message_id).where(ThreadRef.activity_id == activity_id)
    ).all()
    if not refs:
        return []
    parents = (
        select(ActivityKey.activity_id)
        .where(ActivityKey.key.in_([f"mid:{ref}" for ref in refs]))
        .where(ActivityKey.activity_id != activity_id)
    )
    rows = session.execute(
        select(Link.target_kind, Link.target_id)
        .where(Link.activity_id.in_(parents), Link.suppressed.is_(False))
        .distinct()
    ).all()
    return sorted((kind, target_id) for kind, target_id in rows)


def relink_replies(session: Session, message_id: str, depth: int = 0) -> None:
    """Replies that arrived before this message now inherit its links."""
    if depth > 50:  # a References loop; real threads are never this deep
        return
    children = session.scalars(
        select(ThreadRef.activity_id)
        .where(ThreadRef.message_id == message_id)
        .distinct()
    ).all()
    for child in children:
        before = _link_set(session, child)
        relink_activity(session, child)
        if _link_set(session, child) != before:
            child_mid = session.scalar(
                select(Activity.message_id).where(Activity.id == child)
            )
            if child_mid:
                relink_replies(session, child_mid, depth + 1)


def _link_set(session: Session, activity_id: int) -> set[tuple[str, int]]:
    rows = session.execute(
        select(Link.target_kind, Link.target_id).where(
            Link.activity_id == activity_id, Link.suppressed.is_(False)
        )
    ).all()
    return {(kind, target_id) for kind, target_id in rows}


# --- small helpers ---------------------------------------------------------


def _clean(text: str) -> str:
    """Text as every database takes it: PostgreSQL refuses NUL characters."""
    return text.replace("\x00", "")


def _preview(item: Item) -> str:
    return _clean(" ".join(item.body_text.split())[:PREVIEW_LENGTH])


def _refs(item: Item) -> list[str]:
    seen: dict[str, None] = {}
    for ref in [*item.in_reply_to, *item.references]:
        if ref != item.message_id:
            seen.setdefault(ref, None)
    return list(seen)


def _occurred_at(item: Item) -> datetime:
    """When the item sits in the history: a meeting at its start, a task at its
    due date (or its completion), anything else at what it says."""
    if item.meeting is not None:
        start = _instant(item.meeting.start)
        if start is not None:
            return start
    if item.task is not None:
        due = _instant(item.task.due) or _instant(item.task.completed)
        if due is not None:
            return due
    return item.occurred_at or item.received_at or now()


def _instant(value: datetime | date | None) -> datetime | None:
    """A datetime as it is; an all-day date as midnight UTC of that date."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    from datetime import UTC

    return datetime.combine(value, time(0), tzinfo=UTC)


def _is_date(value: object) -> bool:
    return isinstance(value, date) and not isinstance(value, datetime)


def _meeting_status(item: Item) -> str | None:
    meeting = item.meeting
    if meeting is None:
        return None
    if meeting.method == "CANCEL" or meeting.status == "CANCELLED":
        return "cancelled"
    return None
