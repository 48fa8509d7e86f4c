"""Outlook categories that show reps the linking, written after each page.

A recorded item linked to accounts gets one category per account, made by
``[categories] link`` (``"{account}"`` by default). The categories mailsync
manages are that format applied to every account in the directory: an item
keeps all its other categories, loses the managed ones it is no longer linked
to (a relinked, unlinked or opted-out item) and gets the ones it is.

Deciding is pure (:func:`wanted_categories`). Doing runs after a page's
transaction committed: it reads the links of the page's items, asks the
connector to write the items whose categories differ, and stores each written
item's new change key on its source. A write that fails (the rep changed the
item meanwhile, the server refused) is logged and counted, and is tried again
when the item next comes through a sync. A connector without the
:class:`~mailsync.connectors.base.CategoryWriter` capability is left alone.

Known shortcomings: an account renamed or deleted leaves its old category on
items until the rep removes it; a link made or removed by hand shows in
Outlook when the item next comes through a sync.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from mailsync.config import CategoriesConfig
from mailsync.connectors.base import CategoryWriter, CategoryWrites
from mailsync.items import ChangeBatch, Item
from mailsync.store.db import transaction
from mailsync.store.models import Account, Activity, Link, Source

log = logging.getLogger(__name__)


@dataclass
class Written:
    """What writing one page's categories did."""

    written: int = 0
    failed: int = 0


def wanted_categories(
    own: Sequence[str],
    accounts: Iterable[str],
    managed: frozenset[str],
    settings: CategoriesConfig,
) -> tuple[str, ...]:
    """The item's categories minus the managed ones, plus one per account.

    ``managed`` holds the casefolded categories that the link format makes
    of every account in the directory.
    """
    wanted = [c for c in own if c.casefold() not in managed]
    for name in accounts:
        category = settings.link_category(name)
        if category.casefold() not in {c.casefold() for c in wanted}:
            wanted.append(category)
    return tuple(wanted)


def plan_writes(
    items: Iterable[Item],
    linked: dict[str, list[str]],
    managed: frozenset[str],
    settings: CategoriesConfig,
) -> dict[str, tuple[str | None, tuple[str, ...]]]:
    """``{provider_id: (change_key, categories)}`` for the items to write.

    ``linked`` names the accounts of each recorded item; an item missing from
    it (not recorded) is left as it is, and so is an item that already has
    what it should.
    """
    writes = {}
    for item in items:
        if item.provider_id not in linked:
            continue
        wanted = wanted_categories(
            item.categories, linked[item.provider_id], managed, settings
        )
        if set(wanted) != set(item.categories):
            writes[item.provider_id] = (item.change_key, wanted)
    return writes


def write_back(
    factory: sessionmaker[Session],
    connector: object,
    mailbox_id: int,
    mailbox: str,
    batch: ChangeBatch,
    settings: CategoriesConfig,
) -> Written:
    """Write the categories of one committed page's items, where they differ."""
    if not settings.link or not isinstance(connector, CategoryWriter):
        return Written()
    # Occurrences of a recurring series carry the series' categories.
    items = [i for i in batch.items if "#" not in i.provider_id]
    if not items:
        return Written()

    with factory() as session:
        linked = linked_accounts(session, mailbox_id, [i.provider_id for i in items])
        managed = frozenset(
            settings.link_category(name).casefold()
            for name in session.scalars(select(Account.name))
        )
    writes = plan_writes(items, linked, managed, settings)
    if not writes:
        return Written()

    result = _write(connector, mailbox, batch, writes)
    if result.change_keys:
        with transaction(factory) as session:
            _save_change_keys(session, mailbox_id, result.change_keys)
    log.debug(
        "mailbox %s: folder %s: categories written on %d items",
        mailbox,
        batch.folder.name,
        len(result.change_keys),
    )
    return Written(len(result.change_keys), len(writes) - len(result.change_keys))


def _write(
    connector: CategoryWriter,
    mailbox: str,
    batch: ChangeBatch,
    writes: dict[str, tuple[str | None, tuple[str, ...]]],
) -> CategoryWrites:
    try:
        result = connector.write_categories(batch.folder, writes)
    except Exception as exc:  # noqa: BLE001 - a failed write never stops a cycle
        log.warning(
            "mailbox %s: folder %s: categories of %d items not written, tried "
            "again when they next sync: %s: %s",
            mailbox,
            batch.folder.name,
            len(writes),
            type(exc).__name__,
            exc,
        )
        return CategoryWrites()
    for provider_id, reason in result.failed.items():
        log.warning(
            "mailbox %s: categories of %s not written, tried again when it "
            "next syncs: %s",
            mailbox,
            provider_id,
            reason,
        )
    return result


def linked_accounts(
    session: Session, mailbox_id: int, provider_ids: Sequence[str]
) -> dict[str, list[str]]:
    """The account names each recorded item is linked to, by provider id.

    An opted-out activity has none, whatever manual links it kept: the rep
    asked for it not to be tracked.
    """
    rows = session.execute(
        select(Source.provider_id, Source.activity_id, Activity.status)
        .join(Activity, Activity.id == Source.activity_id)
        .where(
            Source.mailbox_id == mailbox_id,
            Source.provider_id.in_(provider_ids),
            Source.removed_at.is_(None),
        )
    ).all()
    activities = {activity_id for _, activity_id, status in rows}
    names: dict[int, list[str]] = {}
    for activity_id, name in session.execute(
        select(Link.activity_id, Account.name)
        .join(Account, Account.id == Link.target_id)
        .where(
            Link.activity_id.in_(activities),
            Link.target_kind == "account",
            Link.suppressed.is_(False),
        )
        .order_by(Account.name)
    ):
        names.setdefault(activity_id, []).append(name)
    return {
        provider_id: [] if status == "opted_out" else names.get(activity_id, [])
        for provider_id, activity_id, status in rows
    }


def _save_change_keys(
    session: Session, mailbox_id: int, change_keys: dict[str, str]
) -> None:
    """A written item has a new change key; its source keeps it, so that a
    resync does not take the write for a change."""
    for provider_id, change_key in change_keys.items():
        session.execute(
            update(Source)
            .where(Source.mailbox_id == mailbox_id, Source.provider_id == provider_id)
            .values(change_key=change_key)
        )
