"""The Exchange Server connector (``kind = "ews"``), through exchangelib.

One service account reaches each rep's mailbox by impersonation or delegate
access. For every mail folder, a cursor holds the EWS sync state:

1. SyncFolderItems, up to ``page_size`` (512) changes a call, with only the
   summary fields we use;
2. GetItem for the created and updated items (exchangelib sends 100 ids a
   request), asking for the MIME content, which :mod:`mailsync.mime` reads
   like any other message, plus the Outlook fields MIME does not carry
   (categories, sensitivity, draft flag);
3. one :class:`~mailsync.items.ChangeBatch` a page, whose cursor is the sync
   state after that page, so the core commits each page with its state.

Faults, for this mailbox only: ErrorServerBusy waits the BackOffMilliseconds
the server gives and retries the same request with the same sync state; a
timeout, an HTTP 500 or a dropped connection is retried with exponential
back-off; an invalid sync state (ErrorInvalidSyncStateData) starts the folder
over from nothing, which identity keys make free of duplicates.

Mail with X500 (routing type EX) addresses takes its participants from the
EWS fields, resolved to SMTP with ResolveNames and cached.

An item that gets the ``Don't track`` category or Sensitivity Private comes
back as an update, and the core withdraws its links.

The Calendar and Tasks folders (the default ones) are read from EWS fields,
not MIME: :mod:`mailsync.connectors.ews_items` turns calendar items into
meetings, a recurring series into its master and its occurrences in the
back-fill window, and tasks into task items. An updated calendar item comes
as a removal of its id followed by its current items, so that the
occurrences it no longer has are marked removed (see
:mod:`mailsync.connectors.base`). Calendar items are fetched whatever their
received time: a series made years ago still has occurrences now.

Categories the core asks for are written with UpdateItem
(:meth:`EwsConnector.write_categories`); the cursor remembers the ChangeKey
each write gave, so that the write does not come back as a change.

Follow-ups (:class:`~mailsync.connectors.base.FollowUpWriter`) are written
with CreateItem: a task with its reminder set in the Tasks folder, a letter
as a draft in Drafts with the .docx attached in the same request. Each is
read back with GetItem as its folder's sync would read it. CreateItem is
retried only after ErrorServerBusy; after a timeout or a dropped connection
the item may exist, and :class:`~mailsync.connectors.base.DeliveryUncertain`
says so instead of making a second one.

A pull subscription on all the mailbox's folders is the cheap check between
syncs (:meth:`EwsConnector.changed_folders`): one GetEvents names the
folders that changed. A subscription that lapsed (idle past its timeout, or
forgotten by a restarted server) is renewed, and every folder is synced.

Signing in (:mod:`mailsync.connectors.ews_auth`): basic or NTLM with the
service account's password, or OAuth client credentials through msal; a
token the server refuses is renewed once. ``ca_bundle`` verifies the server
whatever the environment says. ``autodiscover = true`` leaves finding the
EWS URL to exchangelib (not covered by the simulator: exchangelib looks the
domain up in DNS first).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from exchangelib import (
    BASIC,
    DELEGATE,
    IMPERSONATION,
    NTLM,
    OAUTH2,
    Account,
    Configuration,
    Credentials,
    EWSDate,
    EWSDateTime,
    EWSTimeZone,
    FailFast,
    FileAttachment,
)
from exchangelib import Mailbox as EwsMailboxAddress
from exchangelib import Message as EwsMessage
from exchangelib.errors import (
    AutoDiscoverFailed,
    ErrorAccessDenied,
    ErrorExpiredSubscription,
    ErrorImpersonateUserDenied,
    ErrorImpersonationDenied,
    ErrorInternalServerTransientError,
    ErrorInvalidSubscription,
    ErrorInvalidSyncStateData,
    ErrorInvalidWatermark,
    ErrorIrresolvableConflict,
    ErrorItemNotFound,
    ErrorNonExistentMailbox,
    ErrorServerBusy,
    ErrorSubscriptionNotFound,
    ErrorTimeoutExpired,
    ResponseMessageError,
    TransportError,
    UnauthorizedError,
)
from exchangelib.fields import FieldPath
from exchangelib.folders import BaseFolder
from exchangelib.items import ID_ONLY, NEVER_OVERWRITE, SAVE_ONLY, SEND_TO_NONE
from exchangelib.items import Item as EwsItem
from exchangelib.items import Task as EwsTask
from exchangelib.items.calendar_item import CalendarItem
from exchangelib.services import (
    GetEvents,
    SubscribeToPull,
    SyncFolderItems,
    UpdateItem,
)
from requests.exceptions import SSLError

from mailsync.config import EwsMailbox
from mailsync.connectors.base import (
    CategoryWrites,
    DeliveryUncertain,
    FollowUpTask,
    LetterDraft,
    role_from_name,
)
from mailsync.connectors.ews_auth import MsalCredentials, trust_ca
from mailsync.connectors.ews_items import (
    CALENDAR_FIELDS,
    EXCEPTION_FIELDS,
    LOOK_AHEAD,
    SENSITIVITY,
    TASK_FIELDS,
    CalendarReader,
    GetItemAsSent,
    Window,
    read_task,
)
from mailsync.errors import ParseError, TransientError, UserError
from mailsync.items import (
    ChangeBatch,
    Folder,
    FolderRole,
    Item,
    Participant,
    RejectedItem,
    Role,
)
from mailsync.mime import parse_message
from mailsync.secrets import Secret

log = logging.getLogger(__name__)
T = TypeVar("T")

SYNC_FIELDS = ["datetime_received", "item_class"]
# How often the calendar is read over, so that its series are expanded a year
# ahead again (SyncFolderItems says nothing of a master that did not change).
RENEW_LOOK_AHEAD = timedelta(days=30)
FETCH_FIELDS = [
    "mime_content",
    "categories",
    "sensitivity",
    "is_draft",
    "datetime_received",
    "author",
    "sender",
    "to_recipients",
    "cc_recipients",
    "bcc_recipients",
    "reply_to",
]
# The EWS address fields and the roles they give, for mail with X500 senders.
_ADDRESS_FIELDS = (
    ("author", Role.FROM),
    ("sender", Role.DELEGATE),
    ("to_recipients", Role.TO),
    ("cc_recipients", Role.CC),
    ("bcc_recipients", Role.BCC),
    ("reply_to", Role.REPLY_TO),
)
_SENSITIVITY = SENSITIVITY
# Only failures known to pass. exchangelib gives an HTTP 500 as ErrorServerBusy
# and a dropped connection as ErrorTimeoutExpired; requests' own connection
# errors are OSErrors. Every other ResponseMessageError is a real answer.
_TEMPORARY = (
    ErrorServerBusy,
    ErrorTimeoutExpired,
    ErrorInternalServerTransientError,
    OSError,
)


class EwsConnector:
    def __init__(
        self,
        mailbox: EwsMailbox,
        password: Secret,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.mailbox = mailbox
        self.sleep = sleep
        if mailbox.ca_bundle is not None:
            domain = mailbox.address.rsplit("@", 1)[1]
            # Autodiscover asks the domain and autodiscover.<domain> first.
            first = (f"https://{domain}", f"https://autodiscover.{domain}")
            for url in (mailbox.endpoint, *first):
                if url:
                    trust_ca(url, mailbox.ca_bundle)
        self.credentials = _credentials(mailbox, password)
        config = Configuration(
            service_endpoint=mailbox.endpoint,
            credentials=self.credentials,
            auth_type=_AUTH_TYPES[mailbox.auth],
            retry_policy=FailFast(),  # we retry ourselves, for this mailbox only
        )
        access = IMPERSONATION if mailbox.access == "impersonation" else DELEGATE
        self.account = self._call(
            "Autodiscover" if mailbox.autodiscover else "ConvertId",
            lambda: Account(
                primary_smtp_address=mailbox.address,
                config=config,
                autodiscover=mailbox.autodiscover,
                access_type=access,
                default_timezone=EWSTimeZone("UTC"),
            ),
        )
        if mailbox.ca_bundle is not None and mailbox.autodiscover:
            trust_ca(self.account.protocol.service_endpoint, mailbox.ca_bundle)
        self._folders: dict[str, BaseFolder] = {}
        self._x500: dict[str, str | None] = {}
        # Per folder id: {item id: the ChangeKey our category write gave}.
        self._written: dict[str, dict[str, str]] = {}

    def close(self) -> None:
        self.account.protocol.close()

    # --- folders -----------------------------------------------------------

    def folders(self) -> list[Folder]:
        """Every mail folder under the mailbox's top of information store,
        and the default Calendar and Tasks folders."""
        top = self._call("GetFolder", lambda: self.account.msg_folder_root)
        # The walk loads the well-known folders too, so the roles cost nothing.
        tree = self._call("FindFolder", lambda: list(top.walk()))
        roles = self._well_known_roles()
        found = []
        for ews_folder in tree:
            own = roles.get(ews_folder.id)
            mail = str(ews_folder.folder_class or "IPF.Note").startswith("IPF.Note")
            if not mail and own not in (FolderRole.CALENDAR, FolderRole.TASKS):
                continue  # only the default Calendar and Tasks of the others
            name = _path_under(ews_folder, top)
            role = own or role_from_name(name)
            self._folders[ews_folder.id] = ews_folder
            found.append(Folder(ews_folder.id, name, role))
        return found

    def _well_known_roles(self) -> dict[str, FolderRole]:
        wanted = {
            "inbox": FolderRole.INBOX,
            "sent": FolderRole.SENT,
            "drafts": FolderRole.DRAFTS,
            "junk": FolderRole.JUNK,
            "trash": FolderRole.DELETED,
            "outbox": FolderRole.OUTBOX,
            "calendar": FolderRole.CALENDAR,
            "tasks": FolderRole.TASKS,
        }
        roles = {}
        for attribute, role in wanted.items():
            try:
                folder = getattr(self.account, attribute)
            except Exception:  # noqa: BLE001 - a mailbox may lack one
                continue
            roles[folder.id] = role
        return roles

    # --- changes -----------------------------------------------------------

    def changes(self, folder: Folder, cursor: str | None) -> Iterator[ChangeBatch]:
        """Pages of SyncFolderItems changes since the cursor.

        The cursor is ``{"state": ..., "written": {item id: ChangeKey}}``:
        the sync state, and the ChangeKeys that :meth:`write_categories` got
        back since (older cursors have the state only). SyncFolderItems
        reports our own write as an update; one with exactly the remembered
        ChangeKey is dropped without a GetItem, while a later change by the
        rep has another ChangeKey and goes through. The core writes after it
        committed a page, so the memory rides on the next page's cursor; when
        that page was the last, one more page with no changes carries it.
        """
        if folder.id not in self._folders:
            self.folders()
        ews_folder = self._folders.get(folder.id)
        if ews_folder is None:
            # TODO(issue 3): report the sources of a deleted folder as removed.
            log.warning(
                "mailbox %s: folder %s is gone", self.mailbox.address, folder.name
            )
            return
        state, written, window_end = _read_cursor(cursor)
        self._written[folder.id] = written
        now = datetime.now(UTC)
        cutoff = now - timedelta(days=self.mailbox.backfill_days)
        calendar = folder.role is FolderRole.CALENDAR
        if calendar and (state is None or _look_ahead_runs_out(window_end, now)):
            if state is not None:
                log.info(
                    "mailbox %s: the calendar's series were expanded up to %s; "
                    "reading the calendar over to expand them a year ahead again",
                    self.mailbox.address,
                    window_end or "an unknown day",
                )
            state, window_end = None, (now + LOOK_AHEAD).date().isoformat()
            written.clear()
        restarted = False
        while True:
            try:
                page, new_state, last = self._sync_page(ews_folder, state)
            except ErrorInvalidSyncStateData:
                if restarted:
                    raise
                log.warning(
                    "mailbox %s: folder %s: sync state refused; starting "
                    "the folder over",
                    self.mailbox.address,
                    folder.name,
                )
                state, restarted = None, True
                if calendar:
                    window_end = (now + LOOK_AHEAD).date().isoformat()
                written.clear()
                continue
            batch = self._batch(folder, page, new_state, cutoff)
            batch.cursor = _cursor(new_state, written, window_end)
            carried = dict(written)
            yield batch
            if last or new_state == state:
                break
            state = new_state
        if written != carried:
            yield ChangeBatch(folder, cursor=_cursor(new_state, written, window_end))

    def _sync_page(
        self, ews_folder: BaseFolder, state: str | None
    ) -> tuple[list[tuple[str, Any]], str, bool]:
        fields = {
            f
            for f in ews_folder.normalize_fields(fields=SYNC_FIELDS)
            if not f.field.is_attribute
        }

        def call() -> tuple[list[tuple[str, Any]], str, bool]:
            service = SyncFolderItems(account=self.account)
            page = list(
                service.call(
                    folder=ews_folder,
                    shape=ID_ONLY,
                    additional_fields=fields,
                    sync_state=state,
                    ignore=None,
                    max_changes_returned=self.mailbox.page_size,
                    sync_scope=None,
                )
            )
            return page, service.sync_state, bool(service.includes_last_item_in_range)

        return self._call("SyncFolderItems", call)

    def _batch(
        self, folder: Folder, page: list[tuple[str, Any]], state: str, cutoff: datetime
    ) -> ChangeBatch:
        batch = ChangeBatch(folder)
        written = self._written.setdefault(folder.id, {})
        wanted, updated = [], set()
        for change, value in page:
            ours = written.pop(value.id, None) if change != "read_flag_change" else None
            if change == "delete":
                batch.removed.append(value.id)
            elif change == "update" and ours is not None and ours == value.changekey:
                continue  # our own category write: nothing new
            elif change in ("create", "update"):
                received = getattr(value, "datetime_received", None)
                if change == "update":
                    updated.add(value.id)
                if isinstance(value, CalendarItem):
                    wanted.append(value)  # the window is the event's, not receipt's
                elif received is None or received >= cutoff:
                    wanted.append(value)
        mail = [v for v in wanted if not isinstance(v, CalendarItem | EwsTask)]
        for result, asked in zip(self._fetch(mail), mail, strict=True):
            self._read(result, asked, folder, batch)
        self._read_calendar(
            [v for v in wanted if isinstance(v, CalendarItem)], folder, batch, updated
        )
        tasks = [v for v in wanted if isinstance(v, EwsTask)]
        fetched = self._fetch_as_sent(tasks, EwsTask, TASK_FIELDS)
        for result, asked in zip(fetched, tasks, strict=True):
            self._read(result, asked, folder, batch, lambda r: [read_task(r, folder)])
        batch.cursor = _cursor(state, written)
        return batch

    def _fetch(self, items: list[Any]) -> list[Any]:
        if not items:
            return []
        ids = [(i.id, i.changekey) for i in items]
        return self._call(
            "GetItem", lambda: list(self.account.fetch(ids, only_fields=FETCH_FIELDS))
        )

    def _fetch_as_sent(
        self, items: list[Any], model: type[EwsItem], fields: list[str]
    ) -> list[Any]:
        """GetItem for calendar items or tasks, with only these fields of the
        model (a folder would take ``companies`` for a contact's)."""
        if not items:
            return []
        ids = [(i.id, i.changekey) for i in items]
        paths = {FieldPath(field=model.get_field_by_fieldname(f)) for f in fields}
        service = GetItemAsSent(account=self.account)
        return self._call(
            "GetItem",
            lambda: list(
                service.call(items=ids, additional_fields=paths, shape=ID_ONLY)
            ),
        )

    def _read_calendar(
        self, asked: list[Any], folder: Folder, batch: ChangeBatch, updated: set[str]
    ) -> None:
        """Calendar items with their occurrences; an updated one replaces all
        it gave before (a removal of its id comes first, see base)."""
        results = self._fetch_as_sent(asked, CalendarItem, CALENDAR_FIELDS)
        window = Window.around(datetime.now(UTC), self.mailbox.backfill_days)
        reader = CalendarReader(
            f"mailbox {self.mailbox.address}", window, self._address
        )
        masters = [r for r in results if not isinstance(r, Exception)]
        wanted = [o for r in masters for o in reader.exceptions_wanted(r)]
        fetched = self._fetch_as_sent(wanted, CalendarItem, EXCEPTION_FIELDS)
        exceptions = {
            o.id: r
            for o, r in zip(wanted, fetched, strict=True)
            if not isinstance(r, Exception)
        }
        for result, item in zip(results, asked, strict=True):
            self._read(
                result,
                item,
                folder,
                batch,
                lambda r: reader.items(r, folder, exceptions),
                replaces=item.id in updated,
            )

    def _read(
        self,
        result: Any,
        asked: Any,
        folder: Folder,
        batch: ChangeBatch,
        convert: Callable[[Any], list[Item]] | None = None,
        replaces: bool = False,
    ) -> None:
        if isinstance(result, ErrorItemNotFound):
            return  # moved or deleted since the sync: its delete comes next
        if isinstance(result, Exception):
            reason = f"GetItem failed: {type(result).__name__}: {result}"
            batch.rejected.append(RejectedItem(asked.id, folder, reason))
            return
        try:
            items = convert(result) if convert else [self._item(result, folder)]
        except ParseError as exc:
            batch.rejected.append(RejectedItem(asked.id, folder, str(exc)))
            return
        if replaces and items:
            batch.removed.append(asked.id)
        batch.items.extend(items)

    def _item(self, ews_item: Any, folder: Folder) -> Item:
        mime = getattr(ews_item, "mime_content", None)
        if not mime:
            raise ParseError("the server gave no MIME content for the item")
        item = parse_message(mime, ews_item.id, folder)
        item.change_key = ews_item.changekey
        item.received_at = getattr(ews_item, "datetime_received", None)
        item.categories = tuple(ews_item.categories or ())
        sensitivity = getattr(ews_item, "sensitivity", None)
        if sensitivity and sensitivity != "Normal":
            item.sensitivity = _SENSITIVITY.get(sensitivity, sensitivity.lower())
        item.is_draft = bool(getattr(ews_item, "is_draft", False))
        if any(_is_x500(m) for _, m in _mailboxes(ews_item)):
            item.participants = self._participants(ews_item) + [
                p
                for p in item.participants
                if p.role in (Role.ORGANIZER, Role.ATTENDEE)
            ]
        return item

    # --- change check ------------------------------------------------------

    def changed_folders(self, state: str | None) -> tuple[set[str] | None, str]:
        """The folder ids that changed since ``state``, and the state after.

        ``state`` is ``{"id": subscription id, "watermark": ...}`` from the
        last call. GetEvents from its watermark names the folders of the
        events since (one request, more only while the server has MoreEvents).
        With no state, or when the subscription lapsed, a new subscription is
        made and the folders are ``None``: sync every folder, which catches
        whatever happened meanwhile.
        """
        saved = _subscription_state(state)
        if saved is not None:
            try:
                changed, watermark = self._call(
                    "GetEvents", lambda: self._events(saved["id"], saved["watermark"])
                )
            except _LAPSED as exc:
                log.info(
                    "mailbox %s: the pull subscription lapsed (%s); subscribing "
                    "anew and syncing every folder",
                    self.mailbox.address,
                    type(exc).__name__,
                )
            else:
                if changed - set(self._folders):
                    # A folder this connector has not listed: one made since
                    # (mail moved into it). exchangelib keeps the folder tree,
                    # so it is read again and the sync's listing has it.
                    self.account.root.clear_cache()
                    self.folders()
                return changed, _subscription(saved["id"], watermark)
        subscription_id, watermark = self._call("Subscribe", self._subscribe)
        return None, _subscription(subscription_id, watermark)

    def _subscribe(self) -> tuple[str, str]:
        service = SubscribeToPull(account=self.account)
        found: tuple[str, str] = service.get(
            folders=None,  # SubscribeToAllFolders: new folders are covered too
            event_types=_EVENT_TYPES,
            watermark=None,
            timeout=SUBSCRIPTION_TIMEOUT,
        )
        return found

    def _events(self, subscription_id: str, watermark: str) -> tuple[set[str], str]:
        service = GetEvents(account=self.account)
        changed: set[str] = set()
        while True:
            notification = service.get(
                subscription_id=subscription_id, watermark=watermark
            )
            for event in notification.events:
                changed |= _event_folders(event)
                watermark = event.watermark or watermark
            if not notification.more_events:
                return changed, watermark

    # --- categories --------------------------------------------------------

    def write_categories(
        self,
        folder: Folder,
        wanted: Mapping[str, tuple[str | None, Sequence[str]]],
    ) -> CategoryWrites:
        """Set items' categories with UpdateItem, 100 items a request.

        Each item carries the ChangeKey it was read with, and the conflict
        resolution is NeverOverwrite. The categories we send are the ones we
        read plus ours: an item the rep changed meanwhile must not be
        overwritten, and the EWS reference says AlwaysOverwrite overwrites
        and AutoResolve "in most cases" does too. Exchange refuses such an
        item with ErrorIrresolvableConflict; the rep's change comes through
        the next sync, and the core writes again then.
        """
        result = CategoryWrites()
        memory = self._written.setdefault(folder.id, {})
        ids = list(wanted)
        for start in range(0, len(ids), _WRITE_CHUNK):
            chunk = ids[start : start + _WRITE_CHUNK]
            items = [
                (
                    EwsItem(
                        account=self.account,
                        id=provider_id,
                        changekey=wanted[provider_id][0],
                        categories=list(wanted[provider_id][1]) or None,
                    ),
                    ["categories"],
                )
                for provider_id in chunk
            ]
            try:
                answers = self._update(items)
            except (TransientError, UserError) as exc:
                result.failed.update((i, str(exc)) for i in ids[start:])
                break
            for provider_id, answer in zip(chunk, answers, strict=True):
                if isinstance(answer, Exception):
                    why = f"{type(answer).__name__}: {answer}"
                    result.failed[provider_id] = why
                else:
                    memory[provider_id] = result.change_keys[provider_id] = answer[1]
        return result

    def _update(self, items: list[tuple[EwsItem, list[str]]]) -> list[Any]:
        def call() -> list[Any]:
            service = _UpdateCategories(account=self.account, chunk_size=_WRITE_CHUNK)
            return list(
                service.call(
                    items=items,
                    conflict_resolution=NEVER_OVERWRITE,
                    message_disposition=SAVE_ONLY,
                    send_meeting_invitations_or_cancellations=SEND_TO_NONE,
                    suppress_read_receipts=True,
                )
            )

        return self._call("UpdateItem", call)

    # --- follow-ups --------------------------------------------------------

    def save_task(self, task: FollowUpTask) -> Item:
        """CreateItem of a task in the default Tasks folder, its reminder set
        (ReminderIsSet, ReminderDueBy) and its due date the rep's local date
        of ``task.due``; then GetItem of it, read as the Tasks folder's sync
        reads it (its uid is its PR_SEARCH_KEY), so that the sync finds the
        activity recorded for it."""
        folder = self._neutral_folder(FolderRole.TASKS)
        due_day = task.due.astimezone(ZoneInfo(task.zone)).date()
        ews_task = EwsTask(
            account=self.account,
            folder=self._folders[folder.id],
            subject=task.subject,
            body=task.body,
            status="NotStarted",
            due_date=EWSDate.from_date(due_day),
            reminder_is_set=True,
            reminder_due_by=EWSDateTime.from_datetime(task.due.astimezone(UTC)),
            contacts=[task.contact] if task.contact else None,
            companies=[task.company] if task.company else None,
        )
        self._create(ews_task, "a task")
        [fetched] = self._fetch_as_sent([ews_task], EwsTask, TASK_FIELDS)
        if isinstance(fetched, Exception):
            raise TransientError(
                f"mailbox {self.mailbox.address}: the task was made but cannot "
                f"be read back: {type(fetched).__name__}"
            )
        return read_task(fetched, folder)

    def save_letter(self, letter: LetterDraft) -> Item:
        """CreateItem of a draft in Drafts (saved, not sent) to the contact,
        the letter attached in the same request; then GetItem of it, read as
        the Drafts folder's sync reads it."""
        folder = self._neutral_folder(FolderRole.DRAFTS)
        message = EwsMessage(
            account=self.account,
            folder=self._folders[folder.id],
            subject=letter.subject,
            body=letter.body,
            to_recipients=[
                EwsMailboxAddress(name=letter.to_name, email_address=letter.to_address)
            ],
            message_id=f"<{letter.message_id}>" if letter.message_id else None,
        )
        message.attach(
            FileAttachment(
                name=letter.filename, content=letter.content, content_type=_DOCX
            )
        )
        self._create(message, "a draft")
        [fetched] = self._fetch([message])
        if isinstance(fetched, Exception):
            raise TransientError(
                f"mailbox {self.mailbox.address}: the draft was made but cannot "
                f"be read back: {type(fetched).__name__}"
            )
        return self._item(fetched, folder)

    def _create(self, ews_item: EwsItem, what: str) -> None:
        """CreateItem, retried only when the server refused it unread: after
        a dropped connection or a timeout the item may exist, and a second
        one must not be made."""
        try:
            self._call("CreateItem", ews_item.save, temporary=(ErrorServerBusy,))
        except (
            ErrorTimeoutExpired,
            ErrorInternalServerTransientError,
            OSError,
        ) as exc:
            raise DeliveryUncertain(
                f"mailbox {self.mailbox.address}: CreateItem of {what} got no "
                f"answer ({type(exc).__name__}); it may have been made"
            ) from exc

    def _neutral_folder(self, role: FolderRole) -> Folder:
        found = next((f for f in self.folders() if f.role is role), None)
        if found is None:
            raise UserError(
                f"mailbox {self.mailbox.address}: no {role.value} folder was found"
            )
        return found

    # --- X500 addresses ----------------------------------------------------

    def _participants(self, ews_item: Any) -> list[Participant]:
        """The people from the EWS fields, X500 addresses resolved to SMTP.

        The MIME that Exchange makes for an X500 address it cannot resolve
        holds an ``IMCEAEX-...`` stand-in, useless for matching; the EWS
        fields hold the X500 address itself, which ResolveNames can turn into
        SMTP. An address that stays unresolved is kept, marked so, and never
        matched by domain.
        """
        people = []
        for role, mailbox in _mailboxes(ews_item):
            address, unresolved = self._address(mailbox)
            people.append(
                Participant(address, mailbox.name or "", role, unresolved=unresolved)
            )
        return people

    def _address(self, mailbox: Any) -> tuple[str, bool]:
        """An EWS mailbox's SMTP address, and whether it stayed X500."""
        if not _is_x500(mailbox):
            return mailbox.email_address or "", False
        smtp = self._resolve(mailbox.email_address)
        return smtp or mailbox.email_address, smtp is None

    def _resolve(self, legacy_dn: str) -> str | None:
        key = legacy_dn.lower()
        if key not in self._x500:
            found = self._call(
                "ResolveNames",
                lambda: list(self.account.protocol.resolve_names([legacy_dn])),
            )
            smtp = next(
                (
                    r.email_address
                    for r in found
                    if not isinstance(r, Exception)
                    and getattr(r, "email_address", None)
                ),
                None,
            )
            self._x500[key] = smtp.lower() if smtp and "@" in smtp else None
            if self._x500[key] is None:
                log.debug(
                    "mailbox %s: an X500 address stays unresolved", self.mailbox.address
                )
        return self._x500[key]

    # --- retries -----------------------------------------------------------

    def _call(
        self,
        operation: str,
        call: Callable[[], T],
        temporary: tuple[type[Exception], ...] = _TEMPORARY,
    ) -> T:
        """Run one EWS call; temporary faults are retried for this mailbox only.

        ``temporary`` narrows what is retried: a call that creates an item
        retries only what the server refused before doing anything.
        """
        attempt = 0
        renewed = False
        while True:
            try:
                return call()
            except UnauthorizedError:
                if isinstance(self.credentials, MsalCredentials) and not renewed:
                    # The server may have dropped the token before its time:
                    # a new one, and new sessions, once.
                    renewed = True
                    self.credentials.refresh(None)
                    if hasattr(self, "account"):
                        self.account.protocol.close()
                    continue
                raise UserError(
                    f"mailbox {self.mailbox.address}: the server refused the "
                    f"credentials of {self.mailbox.service_account}; check the "
                    f"{'client secret' if renewed else 'password'} and the auth type"
                ) from None
            except AutoDiscoverFailed as exc:
                raise UserError(
                    f"mailbox {self.mailbox.address}: autodiscover found no EWS "
                    f"server ({exc}); set endpoint = the EWS URL instead"
                ) from None
            except SSLError:
                raise UserError(self._untrusted()) from None
            except (ErrorImpersonateUserDenied, ErrorImpersonationDenied):
                raise UserError(self._missing_right()) from None
            except ErrorNonExistentMailbox:
                raise UserError(
                    f"mailbox {self.mailbox.address}: the server has no such "
                    "mailbox; check the address (its primary SMTP address)"
                ) from None
            except ErrorAccessDenied:
                raise UserError(
                    f"mailbox {self.mailbox.address}: {operation} was refused: "
                    + self._missing_right()
                ) from None
            except temporary as exc:
                attempt += 1
                self._pause(operation, exc, attempt)
            except TransportError as exc:
                # exchangelib gives a failed TLS handshake, and a server it
                # cannot reach, as a bare TransportError; every server answer
                # (ResponseMessageError) is one too, and goes to the caller.
                if isinstance(exc, ResponseMessageError):
                    raise
                if "SSL" in str(exc) or "certificate" in str(exc):
                    raise UserError(self._untrusted()) from None
                if OSError not in temporary:
                    raise  # the call may have done its work: not retried
                attempt += 1
                self._pause(operation, exc, attempt, unreachable=True)

    def _pause(
        self, operation: str, exc: Exception, attempt: int, unreachable: bool = False
    ) -> None:
        """Wait before the next attempt, or give up with a TransientError."""
        wait = self._wait(exc, attempt)
        if attempt > self.mailbox.retries:
            if unreachable:
                first_line = str(exc).splitlines()[0][:300] if str(exc) else ""
                raise TransientError(
                    f"mailbox {self.mailbox.address}: cannot reach the EWS server "
                    f"at {self.mailbox.endpoint or 'the autodiscovered URL'} "
                    f"({first_line}); check endpoint and that the server is up",
                    retry_after=wait,
                ) from exc
            raise TransientError(
                f"mailbox {self.mailbox.address}: {operation} still failing "
                f"after {attempt - 1} retries: {type(exc).__name__}",
                retry_after=wait,
            ) from exc
        log.warning(
            "mailbox %s: %s failed (%s), attempt %d, waiting %.1fs",
            self.mailbox.address,
            operation,
            type(exc).__name__,
            attempt,
            wait,
        )
        self.sleep(wait)

    def _untrusted(self) -> str:
        return (
            f"mailbox {self.mailbox.address}: the server's TLS certificate is not "
            "trusted (or not for this host name); if a private CA signed it, set "
            "ca_bundle = the PEM file of that CA"
        )

    def _missing_right(self) -> str:
        who, where = self.mailbox.service_account, self.mailbox.address
        if self.mailbox.access == "impersonation":
            return (
                f"{who} may not impersonate {where}; give it the "
                "ApplicationImpersonation role (New-ManagementRoleAssignment "
                f"-Role ApplicationImpersonation -User {who}), or set "
                'access = "delegate" with Full Access on the mailbox'
            )
        return (
            f"{who} has no delegate access to {where}; grant Full Access "
            f"(Add-MailboxPermission {where} -User {who} -AccessRights FullAccess)"
        )

    def check(self) -> list[str]:
        """What works, line by line; a UserError names the right that is missing."""
        folders = self.folders()
        inbox = next((f for f in folders if f.role is FolderRole.INBOX), None)
        if inbox is None:
            raise UserError(f"mailbox {self.mailbox.address}: no Inbox was found")
        self._sync_page(self._folders[inbox.id], None)
        return [
            f"signed in as {self.mailbox.service_account} ({self.mailbox.auth}), "
            f"{self.mailbox.access} access",
            f"{len(folders)} folders found (mail, the Calendar and Tasks)",
            "the Inbox can be synced (SyncFolderItems)",
        ]

    def _wait(self, exc: Exception, attempt: int) -> float:
        back_off = getattr(exc, "back_off", None)
        wait = float(back_off) if back_off else float(2 ** (attempt - 1))
        return min(wait, self.mailbox.max_retry_wait)


_AUTH_TYPES = {"basic": BASIC, "ntlm": NTLM, "oauth": OAUTH2}
_DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def _credentials(mailbox: EwsMailbox, secret: Secret) -> Any:
    if mailbox.auth != "oauth":
        return Credentials(mailbox.username, secret.reveal())
    assert mailbox.tenant_id and mailbox.client_id  # the config checks them
    return MsalCredentials(
        tenant_id=mailbox.tenant_id,
        client_id=mailbox.client_id,
        secret=secret,
        authority=mailbox.authority,
        scope=mailbox.scope,
        ca_bundle=mailbox.ca_bundle,
        who=f"mailbox {mailbox.address}",
    )


_WRITE_CHUNK = 100  # items per UpdateItem request, as exchangelib chunks

# Minutes a pull subscription lives without a GetEvents (1 to 1440): a check
# every minute keeps it; a service stopped for longer gets a full sync.
SUBSCRIPTION_TIMEOUT = 30
_EVENT_TYPES = (
    "CopiedEvent",
    "CreatedEvent",
    "DeletedEvent",
    "ModifiedEvent",
    "MovedEvent",
    "NewMailEvent",
)
# What GetEvents answers for a subscription that is gone: make a new one.
_LAPSED = (
    ErrorExpiredSubscription,
    ErrorSubscriptionNotFound,
    ErrorInvalidSubscription,
    ErrorInvalidWatermark,
)


def _subscription_state(state: str | None) -> dict[str, str] | None:
    """A saved subscription, or None for none: also for a state this
    connector did not write (the mailbox was on Microsoft 365 before)."""
    if not state:
        return None
    try:
        saved = json.loads(state)
        return {"id": str(saved["id"]), "watermark": str(saved["watermark"])}
    except (ValueError, KeyError, TypeError):
        return None


def _subscription(subscription_id: str, watermark: str) -> str:
    return json.dumps({"id": subscription_id, "watermark": watermark})


def _event_folders(event: Any) -> set[str]:
    """The folders an event changed: an item's folder (and the one it left),
    or a folder itself. A StatusEvent changes none."""
    if getattr(event, "folder_id", None) is not None:
        return {event.folder_id.id}
    found = set()
    for name in ("parent_folder_id", "old_parent_folder_id"):
        folder = getattr(event, name, None)
        if folder is not None and folder.id:
            found.add(folder.id)
    return found


class _UpdateCategories(UpdateItem):
    """UpdateItem that gives a conflict back for its item, as Exchange
    answers it, instead of raising it for the whole request (exchangelib
    raises each per-item error it does not list, losing the other answers)."""

    ERRORS_TO_CATCH_IN_RESPONSE = (
        *UpdateItem.ERRORS_TO_CATCH_IN_RESPONSE,
        ErrorIrresolvableConflict,
    )


def _read_cursor(cursor: str | None) -> tuple[str | None, dict[str, str], str | None]:
    """The sync state, the remembered writes (none in an older cursor) and,
    for the calendar, the day its series were expanded up to."""
    if not cursor:
        return None, {}, None
    data = json.loads(cursor)
    return data["state"], dict(data.get("written", {})), data.get("window_end")


def _cursor(state: str, written: dict[str, str], window_end: str | None = None) -> str:
    data: dict[str, Any] = {"state": state}
    if written:
        data["written"] = written
    if window_end:
        data["window_end"] = window_end
    return json.dumps(data)


def _look_ahead_runs_out(window_end: str | None, now: datetime) -> bool:
    """Whether the calendar's series should be expanded anew: a month after
    they were (or never known: a cursor from before this was kept)."""
    if window_end is None:
        return True
    try:
        end = date.fromisoformat(window_end)
    except ValueError:
        return True
    return end - now.date() < LOOK_AHEAD - RENEW_LOOK_AHEAD


def _mailboxes(ews_item: Any) -> Iterator[tuple[Role, Any]]:
    for field, role in _ADDRESS_FIELDS:
        value = getattr(ews_item, field, None)
        for mailbox in value if isinstance(value, list | tuple) else [value]:
            if mailbox is not None and getattr(mailbox, "email_address", None):
                yield role, mailbox


def _is_x500(mailbox: Any) -> bool:
    return getattr(mailbox, "routing_type", None) == "EX" or str(
        getattr(mailbox, "email_address", "")
    ).lower().startswith("/o=")


def _path_under(folder: BaseFolder, top: BaseFolder) -> str:
    """The folder's path below the top of the store, such as ``Inbox/Tailspin``."""
    absolute = str(folder.absolute)
    prefix = str(top.absolute).rstrip("/") + "/"
    return absolute[len(prefix) :] if absolute.startswith(prefix) else folder.name
