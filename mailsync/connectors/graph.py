"""The Microsoft 365 connector (``kind = "graph"``), through Microsoft Graph.

An app registration reads each rep's mailbox with application permissions
(Mail.Read, or Mail.ReadWrite to write categories; Calendars.Read;
Tasks.Read.All), signing in with msal (:mod:`mailsync.connectors.graph_auth`).
HTTP, throttling and ``$batch`` are :mod:`mailsync.connectors.graph_http`'s;
the JSON is read by :mod:`mailsync.connectors.graph_items`.

Folders
    Every mail folder under the top of the mailbox (child folders are listed
    four at a time), with its role from the well-known names (``inbox``,
    ``sentitems``, ``drafts``, ``junkemail``, ``deleteditems``, ``outbox``,
    asked in one ``$batch``); the default calendar (``Calendar``); and each
    Microsoft To Do list (``Tasks`` for the default one, ``Tasks/<name>``
    for the others; the flagged-e-mail list is mail, not tasks). The
    calendar and the lists come last, so that a missing permission for them
    stops a cycle only after the mail.

Changes: one delta query per folder, a :class:`~mailsync.items.ChangeBatch`
a page, whose cursor is ``{"link": ..., "written": {...}}``: the
``@odata.nextLink`` after that page, or the ``@odata.deltaLink`` after the
last one (kept until the next sync).

- Mail: ``mailFolders/{id}/messages/delta`` with ``$select`` of the fields
  used, ``$filter=receivedDateTime ge`` the back-fill window, ``Prefer:
  odata.maxpagesize``, ``IdType="ImmutableId"`` and a text body. An
  immutable id stays with a message through a move, so a message's provider
  id is ``<folder id>/<message id>``: a move is an ``@removed`` in one
  folder and a new source in the other, whichever is synced first, and the
  activity stays one (as for EWS, whose ids change with a move). A delta
  entry that only changed the read flag is skipped. A meeting request,
  response or cancellation (an eventMessage) is read from its MIME
  (``$value``, 20 to a ``$batch``), as the EWS connector reads every
  message, so that its text/calendar part makes it the meeting it is.
- Calendar: ``calendarView/delta`` over the back-fill window and a year
  ahead, in UTC. Graph expands series into occurrences and exceptions; each
  is a part ``<event id>#<original start>`` (see
  :mod:`mailsync.connectors.base`): Graph names it by its own id in
  ``@removed``, and it takes the series' categories. Each meeting's
  sequence number (PidLidAppointmentSequence, which a rescheduling raises)
  is read in ``$batch`` calls of 20, so that the highest SEQUENCE wins as
  for mail and EWS. When the window's end comes within eleven months, the
  delta is drained and a new window begins.
- Tasks: ``todo/lists/{id}/tasks/delta``.

A 410 (SyncStateNotFound, an expired delta token) drops the cursor and
reads the folder's window again: the provider ids are the same (immutable
ids), so nothing is recorded twice. A link to another host (a cursor of
another endpoint) or a cursor of another kind (a mailbox moved from EWS)
also starts the folder over.

Categories are written with PATCH (``If-Match`` the change key the item
was read with, 20 to a ``$batch``): an item changed since is refused with
412 ErrorIrresolvableConflict and not overwritten. The cursor remembers
the change key each write gave, so the write does not come back as a change.

The change check (:meth:`GraphConnector.changed_folders`, see
:class:`~mailsync.connectors.base.ChangeChecker`) GETs each folder's delta
again from the deltaLink its last sync ended on, 20 folders to a
``$batch``: an idle mailbox of up to 20 synced folders costs one request.
The links live in this connector's memory. A folder's link is set only
when its ``changes()`` ran to the end, which the core asks for only after
it committed the last page. While a folder of the last listing has begun
a sync that did not end (it failed, or was stopped), or no folder has a
link (a new connector, after a restart), the check cannot tell and the
core syncs every folder. A folder the core does not sync (an excluded
one) never begins one and is never checked. An answer with an
empty ``value`` (or read flags only) and a deltaLink is no change: the next
check starts from the new link, while the stored cursor stays as it is.
Entries, a nextLink, a 410 or an error for that request name the folder,
and its sync deals with them from the stored cursor; our own category
writes too, which that sync then skips without reading the items. The
check knows only the folders of the last ``folders()``: a new or removed
folder, and a calendar window to renew, are found by the service's sweep,
a sync of every folder that lists them again. A check that fails (throttled
past its retries) costs the connector, which the service then opens anew,
and so the next cycle syncs every folder.

Follow-ups (:class:`~mailsync.connectors.base.FollowUpWriter`, with
Tasks.ReadWrite.All and Mail.ReadWrite): a reminder is a To Do task in the
default list (``POST todo/lists/{id}/tasks``), its reminder on at the due
instant and its due date the rep's local midnight, given in UTC; a letter
is a draft in Drafts (``POST messages``) to the contact, carrying the
letter's Message-ID, with the .docx as a fileAttachment in the same
request, so that no draft is ever left without its letter (a request
attachment is limited to 3 MB; a larger letter is refused). Each is read
from the answer as its folder's delta reads it: the task's uid is its id,
which the To Do delta gives again, so the next sync finds the activity
recorded for it. A create is sent again only after a 429 or a 503; a
timeout is :class:`~mailsync.connectors.base.DeliveryUncertain` (see
:mod:`mailsync.connectors.graph_http`).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as day_time
from functools import partial
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from mailsync.config import GraphMailbox
from mailsync.connectors.base import (
    CategoryWrites,
    FollowUpTask,
    LetterDraft,
    role_from_name,
)
from mailsync.connectors.graph_auth import Credential, GraphTokens
from mailsync.connectors.graph_http import (
    MAILBOX_CONCURRENCY,
    TIMEOUT,
    Answer,
    GraphClient,
    GraphError,
    Request,
)
from mailsync.connectors.graph_items import (
    MESSAGE_FIELDS,
    SENSITIVITY_PROPERTY,
    amend_from_json,
    is_meeting_message,
    is_read_flag_only,
    read_event,
    read_message,
    read_task,
)
from mailsync.errors import ParseError, TransientError, UserError
from mailsync.items import ChangeBatch, Folder, FolderRole, Item, RejectedItem
from mailsync.mime import parse_message

log = logging.getLogger(__name__)

WELL_KNOWN = {
    "inbox": FolderRole.INBOX,
    "sentitems": FolderRole.SENT,
    "drafts": FolderRole.DRAFTS,
    "junkemail": FolderRole.JUNK,
    "deleteditems": FolderRole.DELETED,
    "outbox": FolderRole.OUTBOX,
}
LOOK_AHEAD = timedelta(days=365)
RENEW_WINDOW = timedelta(days=335)  # a window ending sooner is begun anew
SEQUENCE_PROPERTY = "Integer {00062002-0000-0000-C000-000000000046} Id 0x8201"
_FOLDER_PAGE = 250
ATTACHMENT_LIMIT = 3 * 1024 * 1024  # Graph's limit for an attachment in a request
_DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
_MAIL, _CALENDAR, _TASKS = "mail", "calendar", "tasks"
# What each kind of folder needs, for messages that name the fix.
_PERMISSIONS = {
    _MAIL: "Mail.Read (Mail.ReadWrite to write categories)",
    _CALENDAR: "Calendars.Read",
    _TASKS: "Tasks.Read.All",
}


@dataclass(frozen=True)
class _Scope:
    kind: str
    path: str  # the collection under /users/{id}, e.g. /mailFolders/{id}


class DeltaExpired(Exception):
    """The server no longer knows the delta token (HTTP 410)."""


class _Unpermitted(UserError):
    """The app lacks an application permission."""


_EXPIRED_CODES = {"syncstatenotfound", "syncstateinvalid", "resyncrequired"}
# What changed_folders gives the core to keep: the check's memory is the
# connector's own, so there is nothing else to save.
CHECK_STATE = "graph-delta-links"


class GraphConnector:
    def __init__(
        self,
        mailbox: GraphMailbox,
        credential: Credential,
        sleep: Callable[[float], None] = time.sleep,
        timeout: tuple[float, float] = TIMEOUT,
    ) -> None:
        self.mailbox = mailbox
        self.tokens = GraphTokens(mailbox, credential)
        self.http = GraphClient(
            address=mailbox.address,
            graph_url=mailbox.graph_url,
            tokens=self.tokens,
            ca_bundle=mailbox.ca_bundle,
            retries=mailbox.retries,
            max_retry_wait=mailbox.max_retry_wait,
            sleep=sleep,
            timeout=timeout,
        )
        self._scopes: dict[str, _Scope] = {}
        # Per folder id: {item id: the change key our category write gave}.
        self._written: dict[str, dict[str, str]] = {}
        # The change check's memory: the folders of the last listing, the
        # deltaLink each folder's last sync ran to the end on, and the
        # folders whose sync has begun and not run to its end.
        self._listed: list[str] = []
        self._settled: dict[str, str] = {}
        self._unsettled: set[str] = set()

    def close(self) -> None:
        self.http.close()

    @property
    def _user(self) -> str:
        return self.http.user

    # --- folders -----------------------------------------------------------

    def folders(self) -> list[Folder]:
        """The mail folders, then the default calendar and the To Do lists."""
        roles, calendar_id = self._well_known()
        found = [
            Folder(fid, name, roles.get(fid) or role_from_name(name))
            for fid, name in self._mail_tree()
        ]
        for folder in found:
            self._scopes[folder.id] = _Scope(_MAIL, f"/mailFolders/{folder.id}")
        if calendar_id:
            found.append(Folder(calendar_id, "Calendar", FolderRole.CALENDAR))
            self._scopes[calendar_id] = _Scope(_CALENDAR, "/calendarView")
        for list_id, name in self._todo_lists():
            found.append(Folder(list_id, name, role_from_name(name)))
            self._scopes[list_id] = _Scope(_TASKS, f"/todo/lists/{list_id}")
        self._listed = [f.id for f in found]
        return found

    def _well_known(self) -> tuple[dict[str, FolderRole], str | None]:
        """The ids of the well-known mail folders and of the default calendar,
        in one ``$batch``. A mailbox may lack one (Outbox, say)."""
        names = list(WELL_KNOWN)
        asked = [
            Request("GET", f"{self._user}/mailFolders/{n}?$select=id") for n in names
        ]
        asked.append(Request("GET", f"{self._user}/calendar?$select=id"))
        answers = self.http.batch(asked, "well-known folders")
        roles = {}
        for name, answer in zip(names, answers[:-1], strict=True):
            if answer.ok:
                roles[answer.body["id"]] = WELL_KNOWN[name]
            elif answer.status != 404 or _mailbox_error(answer):
                raise self._refused(answer.error(f"GET mailFolders/{name}"), _MAIL)
        calendar = answers[-1]
        if calendar.ok:
            return roles, calendar.body["id"]
        error = calendar.error("GET calendar")
        if calendar.status == 403 and not error.access_policy:
            log.warning(
                "mailbox %s: the calendar is not read: the app lacks %s",
                self.mailbox.address,
                _PERMISSIONS[_CALENDAR],
            )
            return roles, None
        raise self._refused(error, _CALENDAR)

    def _mail_tree(self) -> list[tuple[str, str]]:
        """(id, path) of every mail folder, each level's children four at a time."""
        top = self._collection(
            f"{self._user}/mailFolders?$top={_FOLDER_PAGE}", "GET mailFolders", _MAIL
        )
        found: list[tuple[str, str]] = []
        level = [(f, f["displayName"]) for f in top]
        with ThreadPoolExecutor(MAILBOX_CONCURRENCY, "graph-folders") as pool:
            while level:
                found.extend((f["id"], path) for f, path in level)
                parents = [(f, p) for f, p in level if f.get("childFolderCount")]
                children = pool.map(self._children, [f["id"] for f, _ in parents])
                level = [
                    (child, f"{path}/{child['displayName']}")
                    for (_, path), kids in zip(parents, children, strict=True)
                    for child in kids
                ]
        return found

    def _children(self, folder_id: str) -> list[dict[str, Any]]:
        url = f"{self._user}/mailFolders/{folder_id}/childFolders?$top={_FOLDER_PAGE}"
        return self._collection(url, "GET childFolders", _MAIL)

    def _todo_lists(self) -> list[tuple[str, str]]:
        try:
            lists = self._collection(
                f"{self._user}/todo/lists", "GET todo/lists", _TASKS
            )
        except _Unpermitted:
            log.warning(
                "mailbox %s: the To Do lists are not read: the app lacks %s",
                self.mailbox.address,
                _PERMISSIONS[_TASKS],
            )
            return []
        found = []
        for entry in lists:
            kind = entry.get("wellknownListName")
            if kind == "flaggedEmails":
                continue  # flagged mail, which the mail folders hold
            name = "Tasks" if kind == "defaultList" else f"Tasks/{entry['displayName']}"
            found.append((entry["id"], name))
        return found

    def _collection(self, url: str, operation: str, kind: str) -> list[dict[str, Any]]:
        """Every entry of a collection, following @odata.nextLink."""
        entries: list[dict[str, Any]] = []
        next_url: str | None = url
        while next_url:
            page = self._get(next_url, operation, kind)
            entries.extend(page.get("value", []))
            next_url = page.get("@odata.nextLink")
        return entries

    def _get(
        self,
        url: str,
        operation: str,
        kind: str,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        try:
            return self.http.get(url, operation, headers)
        except GraphError as exc:
            if exc.status == 410 or exc.code.lower() in _EXPIRED_CODES:
                raise DeltaExpired(exc.code) from None
            raise self._refused(exc, kind) from None

    # --- changes -----------------------------------------------------------

    def changes(self, folder: Folder, cursor: str | None) -> Iterator[ChangeBatch]:
        """Pages of the folder's delta since the cursor (see the module)."""
        if folder.id not in self._scopes:
            self.folders()
        scope = self._scopes.get(folder.id)
        if scope is None:
            log.warning(
                "mailbox %s: folder %s is gone", self.mailbox.address, folder.name
            )
            return
        self._settled.pop(folder.id, None)
        self._unsettled.add(folder.id)
        link, written, window_end = self._read_cursor(folder, cursor)
        self._written[folder.id] = written
        restarted = False
        while True:
            try:
                last = yield from self._pages(folder, scope, link, window_end)
                break
            except DeltaExpired:
                if restarted:
                    raise TransientError(
                        f"mailbox {self.mailbox.address}: folder {folder.name}: "
                        "the delta token expired twice in a row"
                    ) from None
                log.warning(
                    "mailbox %s: folder %s: the delta token expired (410); "
                    "reading the folder's window again",
                    self.mailbox.address,
                    folder.name,
                )
                link, window_end, restarted = None, None, True
                written.clear()
        # Only here, once the core asked for more after the last page: it
        # commits a page before it asks for the next (see mailsync.sync).
        self._unsettled.discard(folder.id)
        self._settled[folder.id] = last

    def _pages(
        self, folder: Folder, scope: _Scope, link: str | None, window_end: str | None
    ) -> Generator[ChangeBatch, None, str]:
        """The pages from ``link`` on; returns the deltaLink they end on."""
        written = self._written[folder.id]
        if link is None:
            link, window_end = self._first_link(scope)
        while True:
            page = self._get(
                link, f"GET {scope.kind} delta", scope.kind, self._prefer(scope)
            )
            next_link = page.get("@odata.nextLink")
            delta_link = page.get("@odata.deltaLink")
            following = next_link or delta_link
            if not following:
                raise TransientError(
                    f"mailbox {self.mailbox.address}: folder {folder.name}: a delta "
                    "page with neither nextLink nor deltaLink"
                )
            batch = self._batch(folder, scope, page.get("value", []))
            batch.cursor = _cursor(following, written, window_end)
            carried = dict(written)
            yield batch
            link = following
            if next_link:
                continue
            if scope.kind == _CALENDAR and _window_is_old(window_end):
                log.info(
                    "mailbox %s: the calendar window ends %s; beginning a new one",
                    self.mailbox.address,
                    window_end,
                )
                link, window_end = self._first_link(scope)
                continue
            break
        if written != carried:
            yield ChangeBatch(folder, cursor=_cursor(link, written, window_end))
        return link

    def _first_link(self, scope: _Scope) -> tuple[str, str | None]:
        now = datetime.now(UTC).replace(microsecond=0)
        start = now - timedelta(days=self.mailbox.backfill_days)
        if scope.kind == _MAIL:
            query = urlencode(
                {
                    "$select": ",".join(MESSAGE_FIELDS),
                    "$expand": _expand(SENSITIVITY_PROPERTY),
                    "$filter": f"receivedDateTime ge {_iso(start)}",
                },
                safe="$,",
                quote_via=quote,
            )
            return f"{self._user}{scope.path}/messages/delta?{query}", None
        if scope.kind == _CALENDAR:
            end = now + LOOK_AHEAD
            query = urlencode({"startDateTime": _iso(start), "endDateTime": _iso(end)})
            return f"{self._user}/calendarView/delta?{query}", _iso(end)
        return f"{self._user}{scope.path}/tasks/delta", None

    def _prefer(self, scope: _Scope) -> dict[str, str]:
        prefer = [
            f"odata.maxpagesize={self.mailbox.page_size}",
            'IdType="ImmutableId"',
            'outlook.body-content-type="text"',
        ]
        if scope.kind == _CALENDAR:
            prefer.append('outlook.timezone="UTC"')
        return {"Prefer": ", ".join(prefer)}

    def _read_cursor(
        self, folder: Folder, cursor: str | None
    ) -> tuple[str | None, dict[str, str], str | None]:
        """The link, the remembered writes and the calendar window's end; a
        cursor this connector cannot use starts the folder over."""
        if not cursor:
            return None, {}, None
        try:
            data = json.loads(cursor)
            link = data["link"]
        except (ValueError, KeyError, TypeError):
            data, link = {}, None
        if not isinstance(link, str) or not self.http.same_host(link):
            log.warning(
                "mailbox %s: folder %s: the stored cursor is not a Graph delta "
                "link of %s; reading the folder's window again",
                self.mailbox.address,
                folder.name,
                self.mailbox.graph_url,
            )
            return None, {}, None
        return link, dict(data.get("written", {})), data.get("window_end")

    # --- one page ----------------------------------------------------------

    def _batch(
        self, folder: Folder, scope: _Scope, entries: list[dict[str, Any]]
    ) -> ChangeBatch:
        batch = ChangeBatch(folder)
        written = self._written.setdefault(folder.id, {})
        wanted = []
        for entry in entries:
            item_id = str(entry.get("id", ""))
            if "@removed" in entry:
                written.pop(item_id, None)
                batch.removed.append(self._provider_id(folder, scope, item_id))
            elif scope.kind == _MAIL and is_read_flag_only(entry):
                continue
            elif written.get(item_id) and written.get(item_id) == _change_key(entry):
                del written[item_id]  # our own category write: nothing new
            else:
                written.pop(item_id, None)
                wanted.append(entry)
        if scope.kind == _MAIL:
            self._read_mail(folder, wanted, batch)
        elif scope.kind == _CALENDAR:
            self._read_events(folder, wanted, batch)
        else:
            for entry in wanted:
                pid = str(entry.get("id", ""))
                self._read(batch, folder, pid, partial(read_task, entry, pid, folder))
        return batch

    def _provider_id(self, folder: Folder, scope: _Scope, item_id: str) -> str:
        return f"{folder.id}/{item_id}" if scope.kind == _MAIL else item_id

    def _read(
        self,
        batch: ChangeBatch,
        folder: Folder,
        provider_id: str,
        convert: Callable[[], Item],
    ) -> None:
        """One item, or the reason it could not be read."""
        try:
            batch.items.append(convert())
        except ParseError as exc:
            batch.rejected.append(RejectedItem(provider_id, folder, str(exc)))

    def _read_mail(
        self, folder: Folder, entries: list[dict[str, Any]], batch: ChangeBatch
    ) -> None:
        meetings = [e for e in entries if is_meeting_message(e)]
        mime = self._mime(meetings)
        for entry in entries:
            provider_id = f"{folder.id}/{entry.get('id', '')}"
            if not is_meeting_message(entry):
                convert = partial(read_message, entry, provider_id, folder)
                self._read(batch, folder, provider_id, convert)
                continue
            answer = mime[entry["id"]]
            if not answer.ok:
                reason = f"GET $value failed: {answer.error('GET $value')}"
                batch.rejected.append(RejectedItem(provider_id, folder, reason))
                continue
            self._read(
                batch,
                folder,
                provider_id,
                partial(_from_mime, answer.raw(), entry, provider_id, folder),
            )

    def _mime(self, entries: list[dict[str, Any]]) -> dict[str, Answer]:
        if not entries:
            return {}
        asked = [
            Request("GET", f"{self._user}/messages/{e['id']}/$value") for e in entries
        ]
        answers = self.http.batch(asked, "GET messages/$value")
        return {e["id"]: a for e, a in zip(entries, answers, strict=True)}

    def _read_events(
        self, folder: Folder, entries: list[dict[str, Any]], batch: ChangeBatch
    ) -> None:
        sequences = self._sequences(entries)
        for entry in entries:
            item_id = str(entry.get("id", ""))
            provider_id = item_id
            if entry.get("type") in ("occurrence", "exception"):
                provider_id = f"{item_id}#{entry.get('originalStart') or ''}"
            sequence = sequences.get(_sequence_source(entry), 0)
            convert = partial(read_event, entry, provider_id, folder, sequence)
            self._read(batch, folder, provider_id, convert)

    def _sequences(self, entries: list[dict[str, Any]]) -> dict[str, int]:
        """PidLidAppointmentSequence of each event, or of its series, by id."""
        ids = list(dict.fromkeys(_sequence_source(e) for e in entries if e.get("id")))
        expand = quote(_expand(SEQUENCE_PROPERTY))
        asked = [
            Request("GET", f"{self._user}/events/{i}?$select=id&$expand={expand}")
            for i in ids
        ]
        found: dict[str, int] = {}
        for event_id, answer in zip(
            ids, self.http.batch(asked, "GET events"), strict=True
        ):
            if not answer.ok:
                continue  # gone since the delta; its removal comes next
            for prop in answer.body.get("singleValueExtendedProperties") or ():
                if str(prop.get("id", "")).lower() == SEQUENCE_PROPERTY.lower():
                    try:
                        found[event_id] = int(prop.get("value", 0))
                    except (TypeError, ValueError):
                        pass
        return found

    # --- change check ------------------------------------------------------

    def changed_folders(self, state: str | None) -> tuple[set[str] | None, str]:
        """The folders whose delta has news, by one GET of each folder's
        deltaLink, 20 to a ``$batch``; ``None`` until every folder a sync
        began has run to its end (see the module). ``state`` is not used:
        what the check needs lives in this connector."""
        ids = [f for f in self._listed if f in self._settled]
        if not ids or self._unsettled.intersection(self._listed):
            return None, CHECK_STATE
        asked, changed = [], set()
        for folder_id in ids:
            path = self.http.relative(self._settled[folder_id])
            if path is None:
                changed.add(folder_id)  # the sync will say what is wrong
            else:
                prefer = self._prefer(self._scopes[folder_id])
                asked.append((folder_id, Request("GET", path, prefer)))
        answers = self.http.batch([r for _, r in asked], "GET delta (check)")
        for (folder_id, _), answer in zip(asked, answers, strict=True):
            quiet = self._quiet_link(answer, self._scopes[folder_id])
            if quiet is None:
                changed.add(folder_id)
            else:
                # Nothing lay between the two links: the next check may
                # start from the new one. The stored cursor stays as it is.
                self._settled[folder_id] = quiet
        return changed, CHECK_STATE

    def _quiet_link(self, answer: Answer, scope: _Scope) -> str | None:
        """The new deltaLink of an answer that shows nothing to sync; None
        for anything else (entries, a nextLink, a 410, an error)."""
        body = answer.body if answer.ok else None
        if not isinstance(body, dict) or body.get("@odata.nextLink"):
            return None
        link, entries = body.get("@odata.deltaLink"), body.get("value")
        if not isinstance(link, str) or not isinstance(entries, list):
            return None
        if not self.http.same_host(link):
            return None
        # A read flag is no news: the sync skips such entries too.
        if not all(scope.kind == _MAIL and is_read_flag_only(e) for e in entries):
            return None
        return link

    # --- categories --------------------------------------------------------

    def write_categories(
        self,
        folder: Folder,
        wanted: Mapping[str, tuple[str | None, Sequence[str]]],
    ) -> CategoryWrites:
        """PATCH the items' categories, 20 to a ``$batch``, each ``If-Match``
        the change key it was read with: an item changed meanwhile is refused
        (412 ErrorIrresolvableConflict) and comes through the next sync."""
        result = CategoryWrites()
        scope = self._scopes.get(folder.id)
        memory = self._written.setdefault(folder.id, {})
        if scope is None:
            result.failed.update((p, "the folder is not known") for p in wanted)
            return result
        ids = list(wanted)
        asked = [self._patch(folder, scope, p, *wanted[p]) for p in ids]
        try:
            answers = self.http.batch(asked, "PATCH categories")
        except (TransientError, UserError) as exc:
            result.failed.update((p, str(exc)) for p in ids)
            return result
        for provider_id, answer in zip(ids, answers, strict=True):
            if answer.ok and isinstance(answer.body, dict):
                key = _change_key(answer.body)
                item_id = provider_id.rsplit("/", 1)[-1]
                memory[item_id] = result.change_keys[provider_id] = key or ""
            else:
                error = answer.error("PATCH")
                why = f"{error.code or 'HTTP ' + str(error.status)}: {error.message}"
                if error.status == 403 and not error.access_policy:
                    why += f" (the app needs {_WRITE_PERMISSIONS[scope.kind]})"
                result.failed[provider_id] = why
        return result

    def _patch(
        self,
        folder: Folder,
        scope: _Scope,
        provider_id: str,
        change_key: str | None,
        categories: Sequence[str],
    ) -> Request:
        item_id = provider_id.rsplit("/", 1)[-1] if scope.kind == _MAIL else provider_id
        if scope.kind == _MAIL:
            url = f"{self._user}/messages/{item_id}"
        elif scope.kind == _CALENDAR:
            url = f"{self._user}/events/{item_id}"
        else:
            url = f"{self._user}{scope.path}/tasks/{item_id}"
        headers = {"Prefer": 'IdType="ImmutableId"'}
        if change_key:
            etag = change_key if change_key.startswith("W/") else f'W/"{change_key}"'
            headers["If-Match"] = etag
        return Request("PATCH", url, headers, {"categories": list(categories)})

    # --- follow-ups --------------------------------------------------------

    def save_task(self, task: FollowUpTask) -> Item:
        """POST a To Do task to the default list, its reminder on at
        ``task.due`` and its due date the rep's local day of it; read from
        the answer as the list's delta reads it (its uid is its id)."""
        folder = self._folder_of(FolderRole.TASKS, _TASKS)
        zone = ZoneInfo(task.zone)
        due_day = task.due.astimezone(zone).date()
        midnight = datetime.combine(due_day, day_time(), zone)
        body = {
            "title": task.subject,
            "body": {"content": task.body, "contentType": "text"},
            "status": "notStarted",
            "importance": "normal",
            "isReminderOn": True,
            "reminderDateTime": _date_time(task.due),
            "dueDateTime": _date_time(midnight),
        }
        url = f"{self._user}{self._scopes[folder.id].path}/tasks"
        entry = self._create(url, body, "POST todo/lists/tasks", _TASKS)
        return read_task(entry, str(entry.get("id", "")), folder)

    def save_letter(self, letter: LetterDraft) -> Item:
        """POST a draft to the contact (saved in Drafts, not sent), the
        letter attached in the same request; read from the answer as the
        Drafts delta reads it."""
        if len(letter.content) >= ATTACHMENT_LIMIT:
            raise UserError(
                f"mailbox {self.mailbox.address}: the letter {letter.filename} is "
                f"{len(letter.content) // 1024} KB; Microsoft Graph takes an "
                "attachment of under 3 MB in one request: make the template "
                "smaller (its pictures, say)"
            )
        folder = self._folder_of(FolderRole.DRAFTS, _MAIL)
        body: dict[str, Any] = {
            "subject": letter.subject,
            "body": {"contentType": "text", "content": letter.body},
            "from": _recipient(letter.from_name, letter.from_address),
            "toRecipients": [_recipient(letter.to_name, letter.to_address)],
            "attachments": [
                {
                    "@odata.type": "#microsoft.graph.fileAttachment",
                    "name": letter.filename,
                    "contentType": _DOCX,
                    "contentBytes": base64.b64encode(letter.content).decode(),
                }
            ],
        }
        if letter.message_id:
            body["internetMessageId"] = f"<{letter.message_id}>"
        entry = self._create(f"{self._user}/messages", body, "POST messages", _MAIL)
        if not entry.get("sentDateTime"):
            entry["sentDateTime"] = entry.get("createdDateTime")
        return read_message(entry, f"{folder.id}/{entry.get('id', '')}", folder)

    def _create(self, url: str, body: Any, operation: str, kind: str) -> Any:
        headers = {"Prefer": 'IdType="ImmutableId", outlook.body-content-type="text"'}
        try:
            entry = self.http.create(url, operation, body, headers)
        except GraphError as exc:
            if exc.status == 403 and not exc.access_policy:
                raise UserError(
                    f"mailbox {self.mailbox.address}: app {self.mailbox.client_id} "
                    f"lacks the application permission {_WRITE_PERMISSIONS[kind]} "
                    f"on Microsoft Graph ({operation}: {exc.code}); add it in the "
                    "app registration and grant admin consent"
                ) from None
            raise self._refused(exc, kind) from None
        if not isinstance(entry, dict) or not entry.get("id"):
            raise TransientError(
                f"mailbox {self.mailbox.address}: {operation} answered without "
                "the new item's id"
            )
        return entry

    def _folder_of(self, role: FolderRole, kind: str) -> Folder:
        """The folder of that role (the mail one, or the default To Do list)."""
        found = next(
            (
                f
                for f in self.folders()
                if f.role is role and self._scopes[f.id].kind == kind
            ),
            None,
        )
        if found is None:
            raise UserError(
                f"mailbox {self.mailbox.address}: no {role.value} folder was found"
            )
        return found

    # --- errors and the check ----------------------------------------------

    def _refused(self, error: GraphError, kind: str) -> Exception:
        """A refusal as advice that names the fix; other errors as they are."""
        where, app = self.mailbox.address, self.mailbox.client_id
        if error.access_policy:
            return UserError(
                f"mailbox {where}: an application access policy keeps app {app} "
                f"out of this mailbox ({error.message}); add the mailbox to the "
                "policy's group, and check it with Test-ApplicationAccessPolicy "
                f"-Identity {where} -AppId {app}"
            )
        if error.status == 403:
            return _Unpermitted(
                f"mailbox {where}: app {app} lacks the application permission "
                f"{_PERMISSIONS[kind]} on Microsoft Graph ({error.operation}: "
                f"{error.code}); add it in the app registration (API permissions, "
                "Application permissions) and grant admin consent"
            )
        if error.code == "MailboxNotEnabledForRESTAPI":
            return UserError(
                f"mailbox {where} is not in Exchange Online (it is inactive, or "
                'still on the Exchange Server on premises); keep kind = "ews" '
                "for it until it is moved"
            )
        if _unknown_user(error):
            return UserError(
                f"mailbox {where}: Microsoft 365 has no such user or mailbox "
                f"({error.code}); check the address (its user principal name "
                "or primary SMTP address) and tenant_id"
            )
        if error.status >= 500 or error.status == 429:  # busy: try again later
            return TransientError(f"mailbox {where}: {error}")
        return error

    def check(self) -> list[str]:
        """What works, line by line; a UserError names what is missing."""
        self.tokens.token()
        missing = self._probe()
        if missing:
            raise UserError(
                f"mailbox {self.mailbox.address}: app {self.mailbox.client_id} lacks "
                f"the application permission(s) {', '.join(missing)} on Microsoft "
                "Graph; add them in the app registration (API permissions, "
                "Application permissions) and grant admin consent"
            )
        folders = self.folders()
        mail = sum(1 for f in folders if self._scopes[f.id].kind == _MAIL)
        lists = sum(1 for f in folders if self._scopes[f.id].kind == _TASKS)
        return [
            f"signed in as app {self.mailbox.client_id} ({self.tokens.kind}) to "
            f"tenant {self.mailbox.tenant_id}",
            f"{mail} mail folders, the calendar and {lists} To Do lists found",
            "mail, calendar and tasks can be read (Mail.Read, Calendars.Read, "
            "Tasks.Read.All); categories are written with Mail.ReadWrite",
        ]

    def _probe(self) -> list[str]:
        """One read of each kind, in one ``$batch``: the permissions missing.
        A refusal that is not a permission's is raised as advice."""
        probes = {
            _MAIL: f"{self._user}/mailFolders/inbox/messages?$top=1&$select=id",
            _CALENDAR: f"{self._user}/calendar?$select=id",
            _TASKS: f"{self._user}/todo/lists?$top=1",
        }
        asked = [Request("GET", url) for url in probes.values()]
        missing = []
        for kind, answer in zip(probes, self.http.batch(asked, "check"), strict=True):
            if answer.ok:
                continue
            error = answer.error(f"GET {kind}")
            if answer.status == 403 and not error.access_policy:
                missing.append(_PERMISSIONS[kind])
            else:
                raise self._refused(error, kind)
        return missing


_WRITE_PERMISSIONS = {
    _MAIL: "Mail.ReadWrite",
    _CALENDAR: "Calendars.ReadWrite",
    _TASKS: "Tasks.ReadWrite.All",
}


def _from_mime(
    raw: bytes, entry: Mapping[str, Any], provider_id: str, folder: Folder
) -> Item:
    return amend_from_json(parse_message(raw, provider_id, folder), entry)


def _change_key(entry: Mapping[str, Any]) -> str | None:
    key = entry.get("changeKey") or entry.get("@odata.etag")
    return str(key) if key else None


def _sequence_source(entry: Mapping[str, Any]) -> str:
    """Whose sequence an event has: an occurrence its series', else its own."""
    if entry.get("type") == "occurrence" and entry.get("seriesMasterId"):
        return str(entry["seriesMasterId"])
    return str(entry.get("id", ""))


def _mailbox_error(answer: Answer) -> bool:
    """A 404 about the mailbox itself, not about one folder of it."""
    error = answer.error("")
    return error.code == "MailboxNotEnabledForRESTAPI" or _unknown_user(error)


def _unknown_user(error: GraphError) -> bool:
    if error.status != 404:
        return False
    text = error.message.lower()
    return error.code == "ErrorInvalidUser" or (
        error.code == "ResourceNotFound" and ("user" in text or "mailbox" in text)
    )


def _cursor(link: str, written: dict[str, str], window_end: str | None) -> str:
    data: dict[str, Any] = {"link": link}
    if written:
        data["written"] = written
    if window_end:
        data["window_end"] = window_end
    return json.dumps(data)


def _window_is_old(window_end: str | None) -> bool:
    if not window_end:
        return False
    end = datetime.fromisoformat(window_end.replace("Z", "+00:00"))
    return end - datetime.now(UTC) < RENEW_WINDOW


def _recipient(name: str, address: str) -> dict[str, Any]:
    return {"emailAddress": {"name": name, "address": address}}


def _date_time(value: datetime) -> dict[str, str]:
    """A dateTimeTimeZone in UTC, which every Graph method takes."""
    utc = value.astimezone(UTC)
    return {"dateTime": utc.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"}


def _expand(prop: str) -> str:
    return f"singleValueExtendedProperties($filter=id eq '{prop}')"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
