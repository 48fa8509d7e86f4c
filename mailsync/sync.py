"""The sync core: a connector's pages become linked activities.

For each folder of a mailbox: read the stored cursor, take the connector's
pages of changes, decide for each item what to record (a pure step), then
write the page and its new cursor in one transaction. A crash between two
pages loses nothing and files nothing twice: the next run starts from the
last cursor that was committed, and identity keys merge anything seen again.

This module knows no mailbox protocol, and the connectors know no linking rule.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mailsync.categories import write_back
from mailsync.config import (
    CategoriesConfig,
    Config,
    ContactPolicy,
    FollowupsConfig,
    LinkingConfig,
    MailboxConfig,
)
from mailsync.connectors import open_connector
from mailsync.connectors.base import (
    ChangeChecker,
    Connector,
    folder_key,
    role_from_name,
)
from mailsync.errors import MailsyncError, TransientError, UserError
from mailsync.identity import identity_keys
from mailsync.items import ChangeBatch, Folder, FolderRole, Item, Role
from mailsync.linker.addresses import normalise
from mailsync.linker.freemail import FREE_MAIL_DOMAINS
from mailsync.linker.rules import (
    Directory,
    MatchStatus,
    Organisation,
    author,
    has_counterparty,
    match_names,
    match_participants,
)
from mailsync.linker.screen import ExcludeReason, screen
from mailsync.reminders.evaluate import settle_after_page
from mailsync.store.db import transaction
from mailsync.store.directory import ensure_mailbox, load_directory
from mailsync.store.history import (
    ItemPlan,
    mark_removed,
    record_item,
    record_skipped,
    withdraw_source,
)
from mailsync.store.models import Cursor, Mailbox, now

log = logging.getLogger(__name__)


class CycleStopped(MailsyncError):
    """The caller asked the cycle to stop; what was committed stays."""


@dataclass
class Skip:
    """An item excluded by a rule, with the reason and its detail."""

    item: Item
    reason: ExcludeReason
    detail: str


@dataclass
class CycleReport:
    mailbox: str
    folders: int = 0
    items: int = 0
    new: int = 0
    updated: int = 0
    links: int = 0
    unlinked: int = 0
    excluded: int = 0
    rejected: int = 0
    removed: int = 0
    categories_written: int = 0
    categories_failed: int = 0
    duration: float = 0.0
    error: str | None = None
    # What the configuration asks that the mailbox cannot give (a name in
    # ``folders`` that is no folder): the cycle ran, but the admin must fix it.
    misconfigured: str | None = None
    excluded_by: dict[str, int] = field(default_factory=dict)

    def log_line(self) -> str:
        return (
            "mailbox %s: %d folders, %d items, %d new, %d updated, %d links, "
            "%d unlinked, %d excluded, %d rejected, %d removed in %.1fs"
        )

    def log_args(self) -> tuple[object, ...]:
        return (
            self.mailbox,
            self.folders,
            self.items,
            self.new,
            self.updated,
            self.links,
            self.unlinked,
            self.excluded,
            self.rejected,
            self.removed,
            self.duration,
        )


@dataclass
class Linking:
    """What the deciding step needs, built once per cycle."""

    mailbox: str
    org: Organisation
    directory: Directory
    options: LinkingConfig
    noreply: re.Pattern[str] | None = None
    categories: CategoriesConfig = field(default_factory=CategoriesConfig)
    followups: FollowupsConfig = field(default_factory=FollowupsConfig)


def organisation(config: Config) -> Organisation:
    return Organisation(
        internal_domains=frozenset(config.organisation.internal_domains),
        own_addresses=frozenset(m.address for m in config.mailboxes),
        relay_senders=frozenset(
            a for a in (normalise(r) for r in config.organisation.relay_senders) if a
        ),
        free_mail=FREE_MAIL_DOMAINS | frozenset(config.linking.free_mail_domains),
    )


def linking_for(config: Config, mailbox: str, directory: Directory) -> Linking:
    patterns = config.linking.noreply_patterns
    return Linking(
        mailbox=mailbox,
        org=organisation(config),
        directory=directory,
        options=config.linking,
        noreply=re.compile("|".join(patterns), re.I) if patterns else None,
        categories=config.categories,
        followups=config.followups,
    )


# --- deciding --------------------------------------------------------------


def plan_item(item: Item, linking: Linking) -> ItemPlan | Skip:
    """Decide what to record for one item. Reads nothing, writes nothing."""
    sent = is_sent(item, linking.mailbox, linking.org)
    options = linking.options
    excluded = screen(
        item,
        sent=sent,
        record_drafts=options.record_drafts,
        record_private=options.record_private,
        private_sensitivities=frozenset(options.private_sensitivities),
        noreply=linking.noreply,
        opt_out=linking.categories.opt_out,
    )
    if excluded is not None:
        return Skip(item, excluded[0], excluded[1])

    matches = match_participants(
        item.participants, sent=sent, directory=linking.directory, org=linking.org
    )
    task = item.task
    directory = linking.directory
    names = match_names(task.contacts, task.companies, directory) if task else []
    # A task is the rep's own work: kept even when it names no one outside.
    internal_only = task is None and not has_counterparty(matches)
    if not options.record_internal and internal_only:
        return Skip(item, ExcludeReason.INTERNAL_ONLY, "no external participant")

    who = author(matches, linking.org)
    internal = who is not None and who.status is MatchStatus.INTERNAL
    outbound = sent or task is not None or internal
    author_address = who.address if who else None
    return ItemPlan(
        item=item,
        direction="outbound" if outbound else "inbound",
        author=author_address,
        matches=matches,
        keys=identity_keys(item, _from_address(item) or author_address),
        names=names,
    )


def is_sent(item: Item, mailbox: str, org: Organisation) -> bool:
    """Mail the rep sent: From the rep's own address, or in a Sent folder
    unless it is From someone outside (a customer's mail filed there by hand)."""
    author = _from_address(item)
    if author == mailbox:
        return True
    if item.folder.role is FolderRole.SENT:
        return author is None or org.is_internal(author)
    return False


def _from_address(item: Item) -> str | None:
    for person in item.participants:
        if person.role is Role.FROM:
            return normalise(person.address)
    return None


# Per mailbox, what its last listing of folders found wrong with ``folders``,
# so that a change check that lists nothing still reports it.
_MISCONFIGURED: dict[str, str | None] = {}


def _unmatched_folders(listed: list[Folder], mailbox: MailboxConfig) -> str | None:
    """The names in ``folders`` that are no folder of the mailbox, as advice."""
    if mailbox.folders is None:
        return None
    keys = {folder_key(f.name) for f in listed} | {folder_key(f.id) for f in listed}
    missing = [name for name in mailbox.folders if folder_key(name) not in keys]
    if not missing:
        return None
    names = ", ".join(sorted({f.name for f in listed}, key=str.casefold))
    return (
        f"folders: {', '.join(repr(m) for m in missing)} is no folder of this "
        f"mailbox, so it is not synced; its folders are {names}: correct the name"
    )


def folder_wanted(folder: Folder, mailbox: MailboxConfig) -> bool:
    """Whether a folder is synced: ``folders`` if given, else all but the excluded.

    An excluded name also excludes the folder that has its role, so that
    "Deleted Items" covers ``Trash`` and a connector's well-known folder
    whatever its display name.
    """
    if mailbox.folders is not None:
        wanted = {folder_key(f) for f in mailbox.folders}
        return folder_key(folder.name) in wanted or folder_key(folder.id) in wanted
    excluded = {folder_key(f) for f in mailbox.exclude_folders}
    roles = {role_from_name(f) for f in mailbox.exclude_folders} - {FolderRole.OTHER}
    if folder.role in roles:
        return False
    # A subfolder of an excluded folder (Junk/Phish, Deleted Items/Old) goes too.
    parts = folder.name.split("/")
    return not any(
        folder_key(p) in excluded or role_from_name(p) in roles for p in parts
    )


# --- doing -----------------------------------------------------------------


def sync_mailbox(
    factory: sessionmaker[Session],
    config: Config,
    mailbox: MailboxConfig,
    connector: Connector | None = None,
    only: set[str] | None = None,
    *,
    keep_open: bool = False,
    stop: Callable[[], bool] | None = None,
    log_cycle: bool = True,
) -> CycleReport:
    """One sync cycle of one mailbox: every wanted folder, page by page.

    ``only`` limits the cycle to the wanted folders with those ids (what a
    change check named, see :func:`check_and_sync`). ``keep_open`` leaves
    the connector open for the caller's next cycle. When ``stop()`` turns
    true, the cycle ends after the page in hand is committed, with
    :class:`CycleStopped`. ``log_cycle=False`` leaves the cycle's INFO line
    to the caller (the service adds its own fields).
    """
    started = time.monotonic()
    report = CycleReport(mailbox=mailbox.address)
    with transaction(factory) as session:
        mailbox_id = ensure_mailbox(
            session, mailbox.address, mailbox.rep, mailbox.kind
        ).id
        linking = linking_for(config, mailbox.address, load_directory(session))

    try:
        source = connector or open_connector(mailbox)
    except Exception as exc:
        record_failure(factory, mailbox, exc, time.monotonic() - started)
        raise
    try:
        listed = source.folders()
        report.misconfigured = _unmatched_folders(listed, mailbox)
        _MISCONFIGURED[mailbox.address] = report.misconfigured
        if report.misconfigured:
            log.error("mailbox %s: %s", mailbox.address, report.misconfigured)
        for folder in listed:
            if folder_wanted(folder, mailbox) and (only is None or folder.id in only):
                report.folders += 1
                _sync_folder_safely(
                    factory, source, folder, mailbox_id, linking, report, stop
                )
    except Exception as exc:
        report.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if not keep_open:
            source.close()
        report.duration = time.monotonic() - started
        _save_status(factory, mailbox_id, report)
    if log_cycle:
        log.info(report.log_line(), *report.log_args())
    return report


def check_and_sync(
    factory: sessionmaker[Session],
    config: Config,
    mailbox: MailboxConfig,
    connector: Connector | None = None,
    *,
    keep_open: bool = False,
    stop: Callable[[], bool] | None = None,
    log_cycle: bool = True,
) -> CycleReport:
    """A cheap change check, then a cycle of only the folders that changed.

    The check's state (an EWS pull subscription) is kept in the cursors
    table under :data:`SUBSCRIPTION_SCOPE`. When the connector cannot tell
    (no state yet, a lapsed subscription), every folder is synced; a
    connector with no change check (local files) always syncs every folder.
    The new state is saved only after the folders it named were synced
    without error, so a crash or a failed folder checks again from the old
    state and nothing is missed. When nothing changed, no cycle runs and
    the report counts no folder.
    """
    source = connector or open_connector(mailbox)
    if not isinstance(source, ChangeChecker):
        return sync_mailbox(
            factory,
            config,
            mailbox,
            source,
            keep_open=keep_open,
            stop=stop,
            log_cycle=log_cycle,
        )
    with transaction(factory) as session:
        mailbox_id = ensure_mailbox(
            session, mailbox.address, mailbox.rep, mailbox.kind
        ).id
        state = read_cursor(session, mailbox_id, SUBSCRIPTION_SCOPE)
    started = time.monotonic()
    try:
        changed, new_state = source.changed_folders(state)
    except BaseException as exc:
        if not keep_open:
            source.close()
        if isinstance(exc, Exception):
            record_failure(factory, mailbox, exc, time.monotonic() - started)
        raise

    if changed is not None and not changed:
        if not keep_open:
            source.close()
        log.debug("mailbox %s: no folder changed", mailbox.address)
        # A check that found nothing is this mailbox's last cycle: the
        # status's lag and next cycle count from it.
        report = CycleReport(mailbox=mailbox.address)
        report.duration = time.monotonic() - started
        report.misconfigured = _MISCONFIGURED.get(mailbox.address)
        _save_status(factory, mailbox_id, report)
    else:
        report = sync_mailbox(
            factory,
            config,
            mailbox,
            source,
            only=changed,
            keep_open=keep_open,
            stop=stop,
            log_cycle=log_cycle,
        )
    if report.error is None:
        with transaction(factory) as session:
            save_cursor(session, mailbox_id, SUBSCRIPTION_SCOPE, new_state)
    return report


def _sync_folder_safely(
    factory: sessionmaker[Session],
    connector: Connector,
    folder: Folder,
    mailbox_id: int,
    linking: Linking,
    report: CycleReport,
    stop: Callable[[], bool] | None = None,
) -> None:
    """Sync one folder; a folder that cannot be read does not stop the others.

    What the server or the configuration refuses (a transient or a user
    error) ends the mailbox's cycle instead: the next folders would fail alike.
    """
    try:
        _sync_folder(factory, connector, folder, mailbox_id, linking, report, stop)
    except (TransientError, UserError, CycleStopped):
        raise
    except Exception as exc:
        log.error(
            "mailbox %s: folder %s skipped this cycle: %s: %s",
            linking.mailbox,
            folder.name,
            type(exc).__name__,
            exc,
        )
        problem = f"folder {folder.name}: {type(exc).__name__}: {exc}"
        report.error = f"{report.error}; {problem}" if report.error else problem


def _sync_folder(
    factory: sessionmaker[Session],
    connector: Connector,
    folder: Folder,
    mailbox_id: int,
    linking: Linking,
    report: CycleReport,
    stop: Callable[[], bool] | None = None,
) -> None:
    with factory() as session:
        cursor = read_cursor(session, mailbox_id, folder.id)
    for batch in connector.changes(folder, cursor):
        with transaction(factory) as session:
            apply_batch(session, mailbox_id, linking, batch, report)
            if batch.items:
                # In the page's transaction: a reply stored is a no_reply
                # reminder cancelled, whatever crash comes next.
                settle_after_page(session, linking.followups)
            if batch.cursor is not None:
                save_cursor(session, mailbox_id, folder.id, batch.cursor)
        # After the commit, before the next page: the connector's next
        # cursor remembers what was written (see CategoryWriter).
        written = write_back(
            factory, connector, mailbox_id, linking.mailbox, batch, linking.categories
        )
        report.categories_written += written.written
        report.categories_failed += written.failed
        if stop is not None and stop():
            # The page in hand is committed with its cursor; the next waits.
            raise CycleStopped(f"mailbox {linking.mailbox}: stopped mid-cycle")


def apply_batch(
    session: Session,
    mailbox_id: int,
    linking: Linking,
    batch: ChangeBatch,
    report: CycleReport,
) -> None:
    """Write one page: removals, rejected items and items (not the cursor).

    Removals come first: a connector sends an item that stands for several (a
    series and its occurrences) as a removal of its id followed by its items,
    so that the parts it no longer has stay removed (see connectors.base). A
    source removed and written again in the same page is not counted removed.
    """
    removed = mark_removed(session, mailbox_id, batch.removed)
    for rejected in batch.rejected:
        report.rejected += 1
        log.warning(
            "mailbox %s: rejected %s: %s",
            linking.mailbox,
            rejected.provider_id,
            rejected.reason,
        )
        record_skipped(
            session,
            mailbox_id,
            rejected.provider_id,
            rejected.folder.name,
            "rejected",
            rejected.reason,
        )
    written_to: dict[str, str] = {}
    for item in sorted(batch.items, key=_chronological):
        report.items += 1
        _apply_item(session, mailbox_id, linking, item, report, written_to)
    report.removed += len(removed - {item.provider_id for item in batch.items})
    if written_to and linking.options.create_contacts is ContactPolicy.WRITTEN_TO:
        from mailsync.relink import create_contacts

        create_contacts(session, linking.directory, linking.org, written_to)


def _apply_item(
    session: Session,
    mailbox_id: int,
    linking: Linking,
    item: Item,
    report: CycleReport,
    written_to: dict[str, str],
) -> None:
    # A savepoint per item: a bug or bad data in one item is recorded as a
    # rejected item, and the rest of the page is still written. A unique key
    # taken meanwhile by another writer (a second process on the same item)
    # is no error: the second try finds what it stored.
    try:
        for attempt in (1, 2):
            try:
                with session.begin_nested():
                    decision = plan_item(item, linking)
                    if isinstance(decision, Skip):
                        _skip(session, mailbox_id, decision, report)
                        return
                    recorded = record_item(session, mailbox_id, decision)
                    plan = decision
                break
            except IntegrityError:
                if attempt == 2:
                    raise
                log.debug(
                    "mailbox %s: %s stored meanwhile; looking again",
                    linking.mailbox,
                    item.provider_id,
                )
    except Exception as exc:
        log.exception("mailbox %s: cannot store %s", linking.mailbox, item.provider_id)
        reason = f"internal error while storing: {type(exc).__name__}"
        record_skipped(
            session, mailbox_id, item.provider_id, item.folder.name, "rejected", reason
        )
        report.rejected += 1
        return

    log.debug(
        "mailbox %s: %s activity %d (%d links)",
        linking.mailbox,
        item.provider_id,
        recorded.activity_id,
        recorded.links,
    )
    report.new += recorded.created
    report.updated += recorded.changed and not recorded.created
    report.links += recorded.added_links
    report.unlinked += recorded.created and recorded.links == 0
    if plan.direction == "outbound":
        for match in plan.matches:
            # Unknown people, and people known only by their account's domain.
            wanted = (MatchStatus.UNKNOWN, MatchStatus.ACCOUNT)
            if match.status in wanted and match.role in _RECIPIENTS:
                written_to.setdefault(match.address, match.name)


_RECIPIENTS = (Role.TO, Role.CC, Role.BCC)


def _skip(session: Session, mailbox_id: int, skip: Skip, report: CycleReport) -> None:
    item = skip.item
    report.excluded += 1
    key = skip.reason.value
    report.excluded_by[key] = report.excluded_by.get(key, 0) + 1
    private = skip.reason in (ExcludeReason.PRIVATE, ExcludeReason.OPTED_OUT)
    if private:
        withdraw_source(session, mailbox_id, item.provider_id)
    record_skipped(
        session,
        mailbox_id,
        item.provider_id,
        item.folder.name,
        "excluded",
        f"{skip.reason.value}: {skip.detail}",
        # README rule 9: a draft's subject is not kept either.
        subject=None if private or skip.reason is ExcludeReason.DRAFT else item.subject,
        occurred_at=item.occurred_at,
    )


def _chronological(item: Item) -> tuple[int, datetime | str]:
    # Oldest first, so that a reply in the same page finds its thread.
    return (0, item.occurred_at) if item.occurred_at else (1, item.provider_id)


# --- cursors and status ----------------------------------------------------

# The change check's state, beside the folders' cursors. The "@" keeps it
# apart from every folder id (a local folder may well be called subscription).
SUBSCRIPTION_SCOPE = "@subscription"


def read_cursor(session: Session, mailbox_id: int, scope: str) -> str | None:
    return session.scalar(
        select(Cursor.value).where(
            Cursor.mailbox_id == mailbox_id, Cursor.scope == scope
        )
    )


def save_cursor(session: Session, mailbox_id: int, scope: str, value: str) -> None:
    """Write a cursor; call only inside the transaction of the items it covers."""
    row = session.scalar(
        select(Cursor).where(Cursor.mailbox_id == mailbox_id, Cursor.scope == scope)
    )
    if row is None:
        session.add(Cursor(mailbox_id=mailbox_id, scope=scope, value=value))
    else:
        row.value = value
        row.updated_at = now()


def record_failure(
    factory: sessionmaker[Session],
    mailbox: MailboxConfig,
    exc: BaseException,
    duration: float = 0.0,
) -> None:
    """Save in the mailbox's status a cycle that ended before it read a
    folder: its connector could not be opened (a missing path or secret) or
    its change check failed (a server that does not answer)."""
    report = CycleReport(mailbox=mailbox.address, duration=duration)
    report.error = f"{type(exc).__name__}: {exc}"
    with transaction(factory) as session:
        mailbox_id = ensure_mailbox(
            session, mailbox.address, mailbox.rep, mailbox.kind
        ).id
    _save_status(factory, mailbox_id, report)


def _save_status(
    factory: sessionmaker[Session], mailbox_id: int, report: CycleReport
) -> None:
    with transaction(factory) as session:
        mailbox = session.get(Mailbox, mailbox_id)
        if mailbox is None:
            return
        mailbox.last_cycle_at = now()
        if report.error is None:
            mailbox.last_success_at = mailbox.last_cycle_at
        problems = [p for p in (report.error, report.misconfigured) if p]
        mailbox.last_error = "; ".join(problems) or None
        mailbox.last_counts = json.dumps(asdict(report))
