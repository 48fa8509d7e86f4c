"""What the admin and the managers read: the preview of a mailbox's back-fill,
the reconciliation of every item seen, and the activity report.

The preview reads the mailbox through its connector and decides each item
with the sync core's pure step (:func:`~mailsync.sync.plan_item`). It reads
the directory and the stored threads and writes nothing: no source, no
cursor, no category written back.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailsync.config import Config, MailboxConfig
from mailsync.connectors.base import Connector
from mailsync.items import Folder, Item
from mailsync.linker.rules import Target, direct_links
from mailsync.linker.screen import ExcludeReason
from mailsync.queries import defects_of, iso
from mailsync.store.directory import load_directory
from mailsync.store.history import ItemPlan
from mailsync.store.models import (
    Account,
    Activity,
    ActivityKey,
    Contact,
    Link,
    Mailbox,
    Rep,
    SkippedItem,
    Source,
)
from mailsync.sync import Linking, Skip, folder_wanted, linking_for, plan_item

OUTCOMES = ("linked", "unlinked", "excluded", "rejected")
# Reasons whose item keeps no subject in the history (README rules 9 and 15).
_HIDDEN = (ExcludeReason.PRIVATE, ExcludeReason.OPTED_OUT, ExcludeReason.DRAFT)


@dataclass
class ItemOutcome:
    """One item of a mailbox and what became (or would become) of it."""

    folder: str
    provider_id: str
    outcome: str  # one of OUTCOMES
    occurred_at: datetime | None
    subject: str | None  # None: not shown (private, opted out, a draft)
    kind: str | None = None
    links: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None
    removed: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "provider_id": self.provider_id,
            "kind": self.kind,
            "date": iso(self.occurred_at),
            "subject": self.subject,
            "outcome": self.outcome,
            "links": self.links,
            "reason": self.reason,
            "removed": self.removed,
        }

    def explanation(self) -> str:
        if self.links:
            return ", ".join(
                f"{x['target']} {x['name']} ({x['rule']})" for x in self.links
            )
        if self.reason:
            return self.reason
        return "no contact or account matched"


def summarise(rows: Sequence[ItemOutcome]) -> dict[str, Any]:
    counts: dict[str, Any] = {outcome: 0 for outcome in OUTCOMES}
    excluded_by: dict[str, int] = {}
    for row in rows:
        counts[row.outcome] += 1
        if row.outcome == "excluded" and row.reason:
            key = row.reason.split(":", 1)[0]
            excluded_by[key] = excluded_by.get(key, 0) + 1
    return {"items": len(rows), **counts, "excluded_by": excluded_by}


# --- preview ---------------------------------------------------------------


@dataclass
class Preview:
    mailbox: str
    rows: list[ItemOutcome]
    activities: int  # the items that would make one activity each, merged
    complete: bool  # False when --limit stopped the reading

    def summary(self) -> dict[str, Any]:
        return {
            **summarise(self.rows),
            "activities": self.activities,
            "complete": self.complete,
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "mailbox": self.mailbox,
            "items": [row.as_json() for row in self.rows],
            "summary": self.summary(),
        }


def preview(
    session: Session,
    config: Config,
    mailbox: MailboxConfig,
    connector: Connector,
    limit: int | None = None,
) -> Preview:
    """A dry run of the mailbox's back-fill: every wanted folder from the start.

    Reads the connector and the database, writes neither.
    """
    linking = linking_for(config, mailbox.address, load_directory(session))
    rows: list[ItemOutcome] = []
    plans: list[tuple[ItemOutcome, ItemPlan]] = []
    complete = True
    for folder in connector.folders():
        if not folder_wanted(folder, mailbox):
            continue
        if not _read_folder(connector, folder, linking, rows, plans, limit):
            complete = False
            break
    _link_plans(session, plans)
    rows.sort(key=_row_order)
    return Preview(mailbox.address, rows, _activities(plans), complete)


def _read_folder(
    connector: Connector,
    folder: Folder,
    linking: Linking,
    rows: list[ItemOutcome],
    plans: list[tuple[ItemOutcome, ItemPlan]],
    limit: int | None,
) -> bool:
    """Decide one folder's items; False once ``limit`` items were read."""
    def full() -> bool:
        return limit is not None and len(rows) >= limit

    for batch in connector.changes(folder, None):
        for rejected in batch.rejected:
            if full():
                return False
            rows.append(
                ItemOutcome(
                    folder.name,
                    rejected.provider_id,
                    "rejected",
                    None,
                    None,
                    reason=rejected.reason,
                )
            )
        for item in batch.items:
            if full():
                return False
            decision = plan_item(item, linking)
            row = _planned_row(item, decision)
            rows.append(row)
            if isinstance(decision, ItemPlan):
                plans.append((row, decision))
    return True


def _planned_row(item: Item, decision: ItemPlan | Skip) -> ItemOutcome:
    if isinstance(decision, Skip):
        hidden = decision.reason in _HIDDEN
        return ItemOutcome(
            item.folder.name,
            item.provider_id,
            "excluded",
            item.occurred_at,
            None if hidden else item.subject,
            kind=item.kind.value,
            reason=f"{decision.reason.value}: {decision.detail}",
        )
    return ItemOutcome(
        item.folder.name,
        item.provider_id,
        "unlinked",
        item.occurred_at,
        item.subject,
        kind=item.kind.value,
        reason=_unreadable(item.defects),
    )


def _link_plans(session: Session, plans: list[tuple[ItemOutcome, ItemPlan]]) -> None:
    """The links each planned item would get: those of its activity's
    participants (items sharing an identity key are one activity), else its
    thread's (rule 8), from the stored history or from the items previewed."""
    groups = _groups([plan for _, plan in plans])
    direct: dict[int, dict[Target, str]] = defaultdict(dict)
    for (_, plan), group in zip(plans, groups, strict=True):
        for target, rule in direct_links([*plan.matches, *plan.names]).items():
            direct[group].setdefault(target, str(rule))
    by_mid: dict[str, dict[Target, str]] = defaultdict(dict)
    for (_, plan), group in zip(plans, groups, strict=True):
        if plan.item.message_id:
            by_mid[plan.item.message_id].update(direct[group])
    stored = _stored_thread_links(session, [p for _, p in plans])
    inherited: dict[int, dict[Target, str]] = defaultdict(dict)
    # Replies inherit from parents that inherited in turn: repeat until stable.
    for _ in range(50):
        changed = False
        for (_, plan), group in zip(plans, groups, strict=True):
            if direct[group]:
                continue
            refs = _refs(plan.item)
            found = {t: "thread" for ref in refs for t in stored.get(ref, ())}
            for ref in refs:
                found.update({t: "thread" for t in by_mid.get(ref, {})})
            if found.keys() - inherited[group].keys():
                inherited[group].update(found)
                changed = True
            if plan.item.message_id:
                by_mid[plan.item.message_id].update(inherited[group])
        if not changed:
            break
    names = _target_names(session, [*direct.values(), *inherited.values()])
    for (row, _), group in zip(plans, groups, strict=True):
        links = direct[group] or inherited[group]
        row.links = _link_list(links, names)
        row.outcome = "linked" if links else "unlinked"


def _groups(plans: Sequence[ItemPlan]) -> list[int]:
    """For each plan, the first plan of its activity: plans sharing an
    identity key (the same Message-ID, a meeting's UID) make one activity."""
    parent = list(range(len(plans)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for index, plan in enumerate(plans):
        for key in plan.keys:
            if key in owner:
                parent[root(index)] = root(owner[key])
            else:
                owner[key] = index
    return [root(i) for i in range(len(plans))]


def _refs(item: Item) -> list[str]:
    return [r for r in dict.fromkeys([*item.in_reply_to, *item.references]) if r]


def _stored_thread_links(
    session: Session, plans: Sequence[ItemPlan]
) -> dict[str, list[Target]]:
    refs = {ref for plan in plans for ref in _refs(plan.item)}
    if not refs:
        return {}
    rows = session.execute(
        select(ActivityKey.key, Link.target_kind, Link.target_id)
        .join(Link, Link.activity_id == ActivityKey.activity_id)
        .where(
            ActivityKey.key.in_([f"mid:{ref}" for ref in refs]),
            Link.suppressed.is_(False),
        )
    )
    found: dict[str, list[Target]] = defaultdict(list)
    for key, kind, target_id in rows:
        found[key.removeprefix("mid:")].append((kind, target_id))
    return found


def _target_names(
    session: Session, link_sets: Iterable[dict[Target, Any]]
) -> dict[Target, str]:
    targets = {t for links in link_sets for t in links}
    contacts = [i for kind, i in targets if kind == "contact"]
    accounts = [i for kind, i in targets if kind == "account"]
    names: dict[Target, str] = {}
    if contacts:
        for i, name in session.execute(
            select(Contact.id, Contact.name).where(Contact.id.in_(contacts))
        ):
            names[("contact", i)] = name
    if accounts:
        for i, name in session.execute(
            select(Account.id, Account.name).where(Account.id.in_(accounts))
        ):
            names[("account", i)] = name
    return names


def _link_list(
    links: dict[Target, Any], names: dict[Target, str]
) -> list[dict[str, Any]]:
    return [
        {"target": kind, "id": i, "name": names.get((kind, i), "?"), "rule": str(rule)}
        for (kind, i), rule in sorted(
            links.items(), key=lambda x: (x[0][0] != "account", x[0])
        )
    ]


def _activities(plans: Sequence[tuple[ItemOutcome, ItemPlan]]) -> int:
    """How many activities the planned items make."""
    return len(set(_groups([plan for _, plan in plans])))


def _row_order(row: ItemOutcome) -> tuple[Any, ...]:
    when = row.occurred_at or datetime.max.replace(tzinfo=UTC)
    return (when, row.folder, row.provider_id)


# --- reconcile -------------------------------------------------------------


def reconcile(
    session: Session, address: str, since: datetime | None = None
) -> list[ItemOutcome]:
    """Every item seen in a mailbox: what it became, and by which rule or why."""
    mailbox = session.scalar(select(Mailbox).where(Mailbox.address == address))
    if mailbox is None:
        from mailsync.errors import UserError

        raise UserError(
            f"mailbox {address!r} is not in the database; "
            "run `mailsync init` and `mailsync sync` first"
        )
    recorded = _recorded(session, mailbox.id, since)
    # An item the rep marked private after it was recorded is one row: its
    # activity's, not that and its exclusion too.
    seen = {row.provider_id for row in recorded}
    skipped = [
        r for r in _skipped(session, mailbox.id, since) if r.provider_id not in seen
    ]
    rows = [*recorded, *skipped]
    rows.sort(key=_row_order)
    return rows


def _recorded(
    session: Session, mailbox_id: int, since: datetime | None
) -> list[ItemOutcome]:
    query = (
        select(Source, Activity)
        .join(Activity, Activity.id == Source.activity_id)
        .where(Source.mailbox_id == mailbox_id)
    )
    if since is not None:
        query = query.where(Activity.occurred_at >= since)
    pairs = session.execute(query).all()
    links: dict[int, dict[Target, str]] = defaultdict(dict)
    ids = [activity.id for _, activity in pairs]
    for link in session.scalars(
        select(Link).where(Link.activity_id.in_(ids), Link.suppressed.is_(False))
    ):
        links[link.activity_id][(link.target_kind, link.target_id)] = link.rule
    names = _target_names(session, links.values())
    rows = []
    for source, activity in pairs:
        opted_out = activity.status == "opted_out"
        found = links.get(activity.id, {})
        outcome = "linked" if found else ("excluded" if opted_out else "unlinked")
        rows.append(
            ItemOutcome(
                source.folder,
                source.provider_id,
                outcome,
                activity.occurred_at,
                None if opted_out else activity.subject,
                kind=activity.kind,
                links=_link_list(found, names),
                reason=(
                    "opted_out: the rep marked it private after it was "
                    "recorded; its automatic links were dropped"
                    if opted_out
                    else _unreadable(defects_of(activity))
                ),
                removed=source.removed_at is not None,
            )
        )
    return rows


def _unreadable(defects: list[str]) -> str | None:
    """What in an item could not be read as written (a malformed address
    list, whose bad part took no part in linking; no Message-ID; ...)."""
    return "defects: " + "; ".join(defects) if defects else None


def _skipped(
    session: Session, mailbox_id: int, since: datetime | None
) -> list[ItemOutcome]:
    query = select(SkippedItem).where(SkippedItem.mailbox_id == mailbox_id)
    if since is not None:
        # A rejected item has no date of its own: when it was seen counts.
        query = query.where(
            (SkippedItem.occurred_at >= since)
            | (SkippedItem.occurred_at.is_(None) & (SkippedItem.seen_at >= since))
        )
    return [
        ItemOutcome(
            row.folder,
            row.provider_id,
            row.outcome,
            row.occurred_at or row.seen_at,
            row.subject,
            reason=row.reason,
        )
        for row in session.scalars(query)
    ]


RECONCILE_COLUMNS = (
    "date",
    "folder",
    "outcome",
    "rules",
    "reason",
    "kind",
    "subject",
    "provider_id",
    "removed",
)


def reconcile_csv(rows: Sequence[ItemOutcome]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RECONCILE_COLUMNS)
    for row in rows:
        rules = "; ".join(f"{x['target']} {x['name']} ({x['rule']})" for x in row.links)
        writer.writerow(
            [
                iso(row.occurred_at) or "",
                row.folder,
                row.outcome,
                rules,
                row.reason or "",
                row.kind or "",
                row.subject if row.subject is not None else "",
                row.provider_id,
                "yes" if row.removed else "",
            ]
        )
    return out.getvalue()


# --- activity --------------------------------------------------------------


@dataclass
class Tally:
    """One account's or one rep's activities over the period."""

    scope: str  # "account" or "rep"
    name: str
    emails_in: int = 0
    emails_out: int = 0
    meetings: int = 0
    tasks: int = 0
    last_activity: datetime | None = None  # the last ever, up to the period's end
    dormant: bool = False

    @property
    def total(self) -> int:
        return self.emails_in + self.emails_out + self.meetings + self.tasks

    def count(self, kind: str, direction: str) -> None:
        if kind == "meeting":
            self.meetings += 1
        elif kind == "task":
            self.tasks += 1
        elif direction == "outbound":
            self.emails_out += 1
        else:
            self.emails_in += 1


@dataclass
class ActivityReport:
    since: datetime | None
    until: datetime
    dormant_days: int
    accounts: list[Tally]
    reps: list[Tally]

    @property
    def dormant(self) -> list[Tally]:
        return [a for a in self.accounts if a.dormant]


def activity_report(
    session: Session,
    since: datetime | None,
    until: datetime,
    dormant_days: int,
) -> ActivityReport:
    """Per account and per rep, the e-mails in and out, meetings and tasks
    that occurred in [since, until); and the accounts with no activity in
    the ``dormant_days`` before ``until``. Opted-out items count nowhere."""
    accounts = _account_tallies(session, since, until)
    cutoff = until - timedelta(days=dormant_days)
    for tally in accounts:
        tally.dormant = tally.last_activity is None or tally.last_activity < cutoff
    reps = _rep_tallies(session, since, until)
    return ActivityReport(since, until, dormant_days, accounts, reps)


def _in_period(since: datetime | None, until: datetime) -> list[Any]:
    where = [Activity.occurred_at < until, Activity.status != "opted_out"]
    if since is not None:
        where.append(Activity.occurred_at >= since)
    return where


def _account_tallies(
    session: Session, since: datetime | None, until: datetime
) -> list[Tally]:
    tallies = {
        i: Tally("account", name)
        for i, name in session.execute(select(Account.id, Account.name))
    }
    rows = session.execute(
        select(Link.target_id, Activity.kind, Activity.direction, Activity.occurred_at)
        .join(Activity, Activity.id == Link.activity_id)
        .where(
            Link.target_kind == "account",
            Link.suppressed.is_(False),
            Activity.occurred_at < until,
            Activity.status != "opted_out",
        )
    )
    for account_id, kind, direction, when in rows:
        tally = tallies.get(account_id)
        if tally is None:
            continue
        if tally.last_activity is None or when > tally.last_activity:
            tally.last_activity = when
        if since is None or when >= since:
            tally.count(kind, direction)
    return sorted(tallies.values(), key=lambda t: (-t.total, t.name.casefold()))


def _rep_tallies(
    session: Session, since: datetime | None, until: datetime
) -> list[Tally]:
    tallies = {name: Tally("rep", name) for name in session.scalars(select(Rep.name))}
    # An activity in two mailboxes of one rep counts once for that rep.
    rows = session.execute(
        select(
            Rep.name,
            Activity.id,
            Activity.kind,
            Activity.direction,
            Activity.occurred_at,
        )
        .select_from(Activity)
        .join(Source, Source.activity_id == Activity.id)
        .join(Mailbox, Mailbox.id == Source.mailbox_id)
        .join(Rep, Rep.id == Mailbox.rep_id)
        .where(*_in_period(since, until))
        .distinct()
    )
    for rep, _id, kind, direction, when in rows:
        tally = tallies[rep]
        tally.count(kind, direction)
        if tally.last_activity is None or when > tally.last_activity:
            tally.last_activity = when
    return sorted(tallies.values(), key=lambda t: (-t.total, t.name.casefold()))


ACTIVITY_COLUMNS = (
    "scope",
    "name",
    "emails_in",
    "emails_out",
    "meetings",
    "tasks",
    "total",
    "last_activity",
    "dormant",
)


def activity_csv(report: ActivityReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(ACTIVITY_COLUMNS)
    for tally in [*report.accounts, *report.reps]:
        writer.writerow(
            [
                tally.scope,
                tally.name,
                tally.emails_in,
                tally.emails_out,
                tally.meetings,
                tally.tasks,
                tally.total,
                iso(tally.last_activity) or "",
                ("yes" if tally.dormant else "no") if tally.scope == "account" else "",
            ]
        )
    return out.getvalue()


def activity_chart(tallies: Sequence[Tally]) -> bytes:
    """A PNG: one stacked bar per account or rep, by kind of activity."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    names = [t.name for t in tallies]
    series = {
        "E-mails in": [t.emails_in for t in tallies],
        "E-mails out": [t.emails_out for t in tallies],
        "Meetings": [t.meetings for t in tallies],
        "Tasks": [t.tasks for t in tallies],
    }
    figure = Figure(figsize=(8, 0.5 * len(names) + 1.5), dpi=100)
    axes = figure.subplots()
    left = [0] * len(names)
    for label, values in series.items():
        axes.barh(names, values, left=left, label=label)
        left = [a + b for a, b in zip(left, values, strict=True)]
    axes.invert_yaxis()
    axes.set_xlabel("Activities")
    axes.legend(loc="lower right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def activity_html(report: ActivityReport) -> str:
    """One self-contained page: the chart is embedded as a data: URL."""
    chart = base64.b64encode(activity_chart(report.accounts)).decode("ascii")
    period = (
        f"{_day(report.since)} to {_day(report.until)}"
        if report.since
        else f"up to {_day(report.until)}"
    )
    dormant = (
        "".join(
            f"<li>{html.escape(t.name)}: last activity "
            f"{_day(t.last_activity) if t.last_activity else 'never'}</li>"
            for t in report.dormant
        )
        or "<li>none</li>"
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        "<title>mailsync: activity report</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px}td.n{text-align:right}"
        "</style></head><body>\n"
        f"<h1>Activity, {html.escape(period)}</h1>\n"
        f'<img alt="Activities per account" src="data:image/png;base64,{chart}">\n'
        f"<h2>Accounts</h2>\n{_table(report.accounts)}\n"
        f"<h2>Reps</h2>\n{_table(report.reps)}\n"
        f"<h2>No activity for {report.dormant_days} days</h2>\n<ul>{dormant}</ul>\n"
        "</body></html>\n"
    )


def _table(tallies: Sequence[Tally]) -> str:
    head = "".join(
        f"<th>{h}</th>"
        for h in ("Name", "E-mails in", "E-mails out", "Meetings", "Tasks", "Total")
    )
    body = "".join(
        f"<tr><td>{html.escape(t.name)}</td>"
        + "".join(
            f'<td class="n">{n}</td>'
            for n in (t.emails_in, t.emails_out, t.meetings, t.tasks, t.total)
        )
        + "</tr>"
        for t in tallies
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _day(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d") if value else ""
