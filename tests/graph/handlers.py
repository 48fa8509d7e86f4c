"""The Microsoft Graph endpoints the simulator serves, and their JSON.

Shapes follow the Graph v1.0 reference and the recordings in
``../shared/corpus/graph-json-*``. Every path is under ``/v1.0`` and names
the mailbox as ``/users/{address or id}``. Operation names (for counts and
faults) are in :data:`ROUTES`.

Known differences from Microsoft Graph:

- ``$select`` is honoured and an unknown property in it refused, as Graph
  does; ``$filter`` only as ``receivedDateTime ge <instant>`` on message
  delta, ``$orderby`` not at all, ``$top`` and ``$skip`` on lists.
- Delta tokens are snapshots of versions: an item changed twice between two
  rounds is one entry; the order of a round's entries is oldest first (Graph
  guarantees none). A skip token stays valid for as long as the simulator runs.
- ``@removed`` always says ``"reason": "deleted"``, for a move out too.
- calendarView delta expands daily, weekly and absoluteMonthly series only,
  in the series' IANA zone; instance ids are derived from the series id and
  the original start. ``originalStart`` of an all-day instance is its local
  midnight as an instant.
- To Do due dates are the user's local midnights, given in UTC.
- Internet headers are not given for mail in Sent Items and Drafts (as
  Exchange Online does not), nor without ``$select``; they are all the
  headers of the MIME the message was made from.
- A message's sensitivity is given only as the extended property
  ``Integer 0x36`` when ``$expand`` asks for it; an event's changeKey changes
  for every change of its series, so each instance comes again in the delta.
- ``$batch`` runs its requests four at a time, in order of their ids; the
  ``truncate`` and ``cut`` faults act on whole HTTP answers only.
- Only the operations listed in :data:`ROUTES` exist; ``IdType`` changes
  message ids only (folders, events and tasks have one kind of id).
- Errors carry Graph's codes and messages for the cases simulated, with a
  fixed request-id.
- Creating: ``POST messages`` makes a draft in Drafts (text bodies only;
  its sentDateTime and receivedDateTime are its creation time; with no
  internetMessageId given, one is made), and takes fileAttachments in the
  same request; ``POST messages/{id}/attachments`` and ``GET`` of them
  know fileAttachment only (no item or reference attachments, no upload
  session: 3 MB or more is refused with 413). ``POST todo/lists/{id}/tasks``
  keeps the due date as the day its dateTime falls on in the user's zone,
  and ``timeZone`` may be UTC, an IANA name or a Windows name of
  :data:`~tests.graph.mailbox.WINDOWS_ZONES`. A property the simulator does
  not take is refused (Graph would keep it).
"""

from __future__ import annotations

import base64
import email.message
import email.policy
import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote
from zoneinfo import ZoneInfo

from tests.graph.mailbox import (
    WINDOWS_ZONES,
    Address,
    Event,
    FileAttachment,
    Instance,
    Mailbox,
    Message,
    TodoTask,
    fingerprint,
    global_object_id,
)

if TYPE_CHECKING:
    from tests.graph.simulator import GraphSimulator

SENSITIVITY_VALUES = {"normal": 0, "personal": 1, "private": 2, "confidential": 3}
SEQUENCE_PROPERTY = "Integer {00062002-0000-0000-C000-000000000046} Id 0x8201"
MESSAGE_PROPERTIES = {
    "id",
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "receivedDateTime",
    "sentDateTime",
    "hasAttachments",
    "internetMessageId",
    "internetMessageHeaders",
    "subject",
    "bodyPreview",
    "importance",
    "parentFolderId",
    "conversationId",
    "isRead",
    "isDraft",
    "body",
    "sender",
    "from",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "flag",
    "webLink",
}
MAIL_BASIC = frozenset({"Mail.ReadBasic.All", "Mail.Read", "Mail.ReadWrite"})
MAIL_READ = frozenset({"Mail.Read", "Mail.ReadWrite"})
MAIL_WRITE = frozenset({"Mail.ReadWrite"})
CALENDAR_READ = frozenset({"Calendars.Read", "Calendars.ReadWrite"})
CALENDAR_WRITE = frozenset({"Calendars.ReadWrite"})
TASKS_READ = frozenset({"Tasks.Read.All", "Tasks.ReadWrite.All"})
TASKS_WRITE = frozenset({"Tasks.ReadWrite.All"})
DEFAULT_PAGE = 10  # Graph's page size for messages when none is asked
ATTACHMENT_LIMIT = 3 * 1024 * 1024  # a fileAttachment in one request
TASK_FIELDS = {
    "title",
    "body",
    "status",
    "importance",
    "categories",
    "dueDateTime",
    "isReminderOn",
    "reminderDateTime",
}
DRAFT_FIELDS = {
    "subject",
    "body",
    "from",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "internetMessageId",
    "categories",
    "attachments",
}


class Refusal(Exception):
    """An error answer: status, Graph error code and message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}")
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": {
                    "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                    "request-id": "6bc0a761-534b-4850-875e-bf3adfed7f64",
                },
            }
        }


@dataclass
class Req:
    """One request (or one request of a ``$batch``) as the handlers see it."""

    method: str
    path: str  # below /v1.0, without the query
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any
    client_id: str = ""
    batched: bool = False
    params: dict[str, str] = field(default_factory=dict)
    mailbox: Mailbox | None = None

    @property
    def prefer(self) -> str:
        return self.headers.get("prefer", "")

    def page_size(self) -> int:
        found = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", self.prefer)
        return max(1, int(found.group(1))) if found else DEFAULT_PAGE

    @property
    def immutable(self) -> bool:
        return bool(re.search(r'IdType\s*=\s*"?ImmutableId"?', self.prefer, re.I))

    @property
    def text_body(self) -> bool:
        return bool(
            re.search(r'outlook\.body-content-type\s*=\s*"?text"?', self.prefer)
        )


@dataclass
class Reply:
    status: int
    body: Any = None  # a dict (JSON) or bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json; odata.metadata=minimal"


Handler = Callable[["Handlers", Req], Reply]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    operation: str
    permissions: frozenset[str]
    handler: Handler
    policy: bool = True  # an application access policy applies


USER = r"/users/(?P<user>[^/]+)"


class Handlers:
    def __init__(self, sim: GraphSimulator) -> None:
        self.sim = sim

    def _root(self, box: Mailbox) -> str:
        return f"{self.sim.url}/v1.0/users/{box.user_id}"

    # --- mail folders --------------------------------------------------------

    def list_folders(self, req: Req) -> Reply:
        box = _box(req)
        return self._folder_page(req, box, box.children(box.root_id), "mailFolders")

    def child_folders(self, req: Req) -> Reply:
        box = _box(req)
        parent = _folder(box, req.params["folder"])
        path = f"mailFolders/{parent.id}/childFolders"
        return self._folder_page(req, box, box.children(parent.id), path)

    def _folder_page(
        self, req: Req, box: Mailbox, folders: list[Any], path: str
    ) -> Reply:
        top = int(req.query.get("$top", "10"))
        skip = int(req.query.get("$skip", "0"))
        chosen = folders[skip : skip + top]
        body: dict[str, Any] = {
            "@odata.context": f"{self.sim.url}/v1.0/$metadata#users/{path}",
            "value": [_folder_json(box, f) for f in chosen],
        }
        if skip + top < len(folders):
            after = f"$top={top}&$skip={skip + top}"
            body["@odata.nextLink"] = f"{self._root(box)}/{path}?{after}"
        return Reply(200, body)

    def get_folder(self, req: Req) -> Reply:
        box = _box(req)
        folder = _folder(box, req.params["folder"])
        return Reply(200, _select(_folder_json(box, folder), req, None))

    # --- messages ------------------------------------------------------------

    def list_messages(self, req: Req) -> Reply:
        box = _box(req)
        folder = _folder(box, req.params["folder"])
        top = int(req.query.get("$top", "10"))
        found = sorted(box.folder_messages(folder.id), key=_received, reverse=True)
        return Reply(200, {"value": [self._message(req, box, m) for m in found[:top]]})

    def messages_delta(self, req: Req) -> Reply:
        box = _box(req)
        folder = _folder(box, req.params["folder"])
        scope = f"mail:{folder.id}"

        def current(params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
            since = params.get("since")
            found = [
                m
                for m in box.folder_messages(folder.id)
                if since is None or _received(m) >= since
            ]
            found.sort(key=_received)
            return {m.id: (m.version, m.is_read) for m in found}, [m.id for m in found]

        def initial() -> dict[str, Any]:
            _check_select(req, MESSAGE_PROPERTIES)
            return {
                "select": req.query.get("$select"),
                "expand": req.query.get("$expand"),
                "since": _since(req.query.get("$filter")),
            }

        def render(change: str, item_id: str, params: dict[str, Any]) -> dict[str, Any]:
            message = box.messages.get(item_id)
            shown = item_id if req.immutable else box.rest_id(item_id, folder.id)
            if change == "removed" or message is None or message.folder_id != folder.id:
                return _removed("message", shown)
            if change == "read":
                return {
                    "@odata.type": "#microsoft.graph.message",
                    "@odata.etag": f'W/"{message.change_key}"',
                    "id": shown,
                    "isRead": message.is_read,
                    "parentFolderId": folder.id,
                }
            copy = replace(req, query={**req.query, **_as_query(params)})
            return self._message(copy, box, message)

        base = f"{self._root(box)}/mailFolders/{folder.id}/messages/delta"
        return self._delta(req, box, scope, base, initial, current, render)

    def _message(self, req: Req, box: Mailbox, message: Message) -> dict[str, Any]:
        shown = (
            message.id if req.immutable else box.rest_id(message.id, message.folder_id)
        )
        full = _message_json(box, message, shown, req.text_body)
        select = req.query.get("$select")
        if select and "internetMessageHeaders" in select.split(","):
            folder = box.folders.get(message.folder_id)
            if folder is None or folder.well_known not in ("sentitems", "drafts"):
                full["internetMessageHeaders"] = [
                    {"name": k, "value": v} for k, v in message.headers
                ]
        expand = req.query.get("$expand") or ""
        if "singleValueExtendedProperties" in expand and "0x0036" in expand.lower():
            value = SENSITIVITY_VALUES.get(message.sensitivity, 0)
            full["singleValueExtendedProperties"] = [
                {"id": "Integer 0x36", "value": str(value)}
            ]
        return _select(full, req, "message", keep=("singleValueExtendedProperties",))

    def get_message(self, req: Req) -> Reply:
        box = _box(req)
        _check_select(req, MESSAGE_PROPERTIES)
        return Reply(200, self._message(req, box, _message(box, req.params["item"])))

    def message_value(self, req: Req) -> Reply:
        box = _box(req)
        message = _message(box, req.params["item"])
        raw = message.mime if message.mime is not None else _mime_of(message)
        return Reply(200, raw, content_type="text/plain")

    def patch_message(self, req: Req) -> Reply:
        box = _box(req)
        with box.lock:
            message = _message(box, req.params["item"])
            _check_etag(req, message.change_key)
            changes = req.body if isinstance(req.body, dict) else {}
            allowed = {"categories": "categories", "isRead": "is_read"}
            unknown = set(changes) - set(allowed)
            if unknown:
                raise Refusal(
                    400, "ErrorInvalidProperty", f"Cannot update {sorted(unknown)}."
                )
            box.update(
                message,
                **{
                    allowed[k]: tuple(v) if k == "categories" else v
                    for k, v in changes.items()
                },
            )
        return Reply(200, self._message(req, box, message))

    def create_message(self, req: Req) -> Reply:
        """POST messages: a draft in Drafts (201), attachments with it."""
        box = _box(req)
        given = _payload(req, DRAFT_FIELDS, "message")
        body = given.get("body") or {}
        if str(body.get("contentType", "text")).lower() != "text":
            raise Refusal(400, "ErrorInvalidRequest", "Only text bodies here.")
        attachments = tuple(
            _file_attachment(box, a) for a in given.get("attachments") or ()
        )
        now = datetime.now(UTC)
        message = Message(
            subject=str(given.get("subject") or ""),
            body=str(body.get("content") or ""),
            author=_person(given.get("from")),
            sender=_person(given.get("from")),
            to=_people(given.get("toRecipients")),
            cc=_people(given.get("ccRecipients")),
            bcc=_people(given.get("bccRecipients")),
            reply_to=_people(given.get("replyTo")),
            internet_message_id=given.get("internetMessageId")
            or f"<{box.ids.new()[4:28]}@{_HOST}>",
            categories=tuple(given.get("categories") or ()),
            is_draft=True,
            is_read=True,
            sent=now,
            received=now,
            attachments=attachments,
        )
        box.add(message, "drafts")
        return Reply(201, self._message(req, box, message))

    def add_attachment(self, req: Req) -> Reply:
        """POST messages/{id}/attachments: a fileAttachment (201)."""
        box = _box(req)
        with box.lock:
            message = _message(box, req.params["item"])
            attachment = _file_attachment(box, req.body)
            box.update(message, attachments=(*message.attachments, attachment))
        return Reply(201, _attachment_json(attachment))

    def list_attachments(self, req: Req) -> Reply:
        box = _box(req)
        message = _message(box, req.params["item"])
        return Reply(200, {"value": [_attachment_json(a) for a in message.attachments]})

    # --- calendar ------------------------------------------------------------

    def get_calendar(self, req: Req) -> Reply:
        box = _box(req)
        body = {
            "id": box.calendar_id,
            "name": "Calendar",
            "color": "auto",
            "changeKey": "nfZyf7VcrEKLNoU37KWlkQAAA0x0+w==",
            "canEdit": True,
            "owner": {"name": box.name, "address": box.address},
        }
        return Reply(200, _select(body, req, None))

    def calendar_delta(self, req: Req) -> Reply:
        box = _box(req)

        def initial() -> dict[str, Any]:
            for name in ("$select", "$filter", "$orderby", "$expand", "$search"):
                if name in req.query:
                    raise Refusal(
                        400,
                        "ErrorInvalidUrlQuery",
                        f"The following parameters are not supported with change "
                        f"tracking over the 'CalendarView' resource: '{name}'.",
                    )
            try:
                start = _instant(req.query["startDateTime"])
                end = _instant(req.query["endDateTime"])
            except (KeyError, ValueError):
                raise Refusal(
                    400,
                    "ErrorInvalidParameter",
                    "This request requires a time window specified by the query "
                    "string parameters StartDateTime and EndDateTime.",
                ) from None
            return {"start": start, "end": end}

        def instances(params: dict[str, Any]) -> dict[str, Instance]:
            found = box.instances(params["start"], params["end"])
            return {i.id: i for i in found}

        def current(params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
            found = instances(params)
            versions = {i: fingerprint(_event_json(box, v)) for i, v in found.items()}
            return versions, list(found)

        def render(change: str, item_id: str, params: dict[str, Any]) -> dict[str, Any]:
            instance = instances(params).get(item_id) if change != "removed" else None
            if instance is None:
                return _removed("event", item_id)
            return _event_json(box, instance, req.text_body)

        base = f"{self.sim.url}/v1.0/users/{box.user_id}/calendarView/delta"
        return self._delta(req, box, "calendar", base, initial, current, render)

    def get_event(self, req: Req) -> Reply:
        box = _box(req)
        found = box.find_event(req.params["item"])
        if found is None:
            raise _not_found()
        event, instance = found
        body = (
            _event_json(box, instance, req.text_body)
            if instance is not None
            else _master_json(box, event, req.text_body)
        )
        expand = req.query.get("$expand") or ""
        if "singleValueExtendedProperties" in expand and "0x8201" in expand:
            sequence = instance.sequence if instance is not None else event.sequence
            body["singleValueExtendedProperties"] = [
                {"id": SEQUENCE_PROPERTY, "value": str(sequence)}
            ]
        return Reply(
            200, _select(body, req, "event", keep=("singleValueExtendedProperties",))
        )

    def patch_event(self, req: Req) -> Reply:
        box = _box(req)
        with box.lock:
            found = box.find_event(req.params["item"])
            if found is None or found[1] is not None:
                raise _not_found()
            event = found[0]
            _check_etag(req, event.change_key)
            changes = req.body if isinstance(req.body, dict) else {}
            if set(changes) - {"categories"}:
                raise Refusal(400, "ErrorInvalidProperty", "Only categories here.")
            box.update_event(event, categories=tuple(changes.get("categories", ())))
        return Reply(200, _master_json(box, event, req.text_body))

    # --- To Do ---------------------------------------------------------------

    def todo_lists(self, req: Req) -> Reply:
        box = _box(req)
        value = [
            {
                "@odata.etag": 'W/"4rfRVIPi9EqXgDbc8U7HGwADLLQ93w=="',
                "displayName": t.display_name,
                "isOwner": True,
                "isShared": False,
                "wellknownListName": t.well_known,
                "id": t.id,
            }
            for t in box.todo_lists.values()
        ]
        top = int(req.query.get("$top", str(len(value) or 1)))
        return Reply(200, {"value": value[:top]})

    def tasks_delta(self, req: Req) -> Reply:
        box = _box(req)
        todo = box.todo_lists.get(req.params["list"])
        if todo is None:
            raise _not_found()
        scope = f"todo:{todo.id}"

        def current(params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
            found = sorted(box.list_tasks(todo.id), key=lambda t: t.created or _EPOCH)
            return {t.id: t.version for t in found}, [t.id for t in found]

        def render(change: str, item_id: str, params: dict[str, Any]) -> dict[str, Any]:
            task = box.tasks.get(item_id)
            if change == "removed" or task is None or task.list_id != todo.id:
                return _removed("todoTask", item_id)
            return _task_json(box, task)

        base = (
            f"{self.sim.url}/v1.0/users/{box.user_id}/todo/lists/{todo.id}/tasks/delta"
        )
        return self._delta(req, box, scope, base, dict, current, render)

    def create_task(self, req: Req) -> Reply:
        """POST todo/lists/{id}/tasks: a task in the list (201)."""
        box = _box(req)
        todo = box.todo_lists.get(req.params["list"])
        if todo is None:
            raise _not_found()
        given = _payload(req, TASK_FIELDS, "todoTask")
        if not str(given.get("title") or "").strip():
            raise Refusal(400, "invalidRequest", "A task needs a title.")
        due = _date_time_zone(given.get("dueDateTime"))
        reminder = _date_time_zone(given.get("reminderDateTime"))
        task = TodoTask(
            title=str(given["title"]),
            body=str((given.get("body") or {}).get("content") or ""),
            status=str(given.get("status") or "notStarted"),
            importance=str(given.get("importance") or "normal"),
            categories=tuple(given.get("categories") or ()),
            due=due.astimezone(ZoneInfo(box.zone)).date() if due else None,
            reminder=reminder if given.get("isReminderOn") else None,
        )
        box.add_task(task, todo)
        return Reply(201, _task_json(box, task))

    def patch_task(self, req: Req) -> Reply:
        box = _box(req)
        with box.lock:
            task = box.tasks.get(req.params["item"])
            if task is None or task.list_id != req.params["list"]:
                raise _not_found()
            wanted = req.headers.get("if-match")
            if wanted and wanted != task.etag:
                raise Refusal(
                    412,
                    "PreconditionFailed",
                    "The ETag value in the If-Match header does not match.",
                )
            changes = req.body if isinstance(req.body, dict) else {}
            if set(changes) - {"categories", "status"}:
                raise Refusal(400, "invalidRequest", "Only categories and status here.")
            values: dict[str, Any] = {}
            if "categories" in changes:
                values["categories"] = tuple(changes["categories"])
            if "status" in changes:
                values["status"] = changes["status"]
            box.update_task(task, **values)
        return Reply(200, _task_json(box, task))

    # --- delta, shared by all three ------------------------------------------

    def _delta(
        self,
        req: Req,
        box: Mailbox,
        scope: str,
        base_url: str,
        initial: Callable[[], dict[str, Any]],
        current: Callable[[dict[str, Any]], tuple[dict[str, Any], list[str]]],
        render: Callable[[str, str, dict[str, Any]], dict[str, Any]],
    ) -> Reply:
        book = box.delta
        skip, token = req.query.get("$skiptoken"), req.query.get("$deltatoken")
        with box.lock:
            if skip is not None:
                if skip not in book.skips or book.skips[skip][0].scope != scope:
                    raise _sync_state_gone()
                round_, offset = book.skips[skip]
            else:
                if token is not None:
                    if token not in book.deltas or book.deltas[token][0] != scope:
                        raise _sync_state_gone()
                    _, params, snapshot = book.deltas[token]
                else:
                    params, snapshot = initial(), {}
                versions, order = current(params)
                round_ = book.begin(scope, params, snapshot, versions, order)
                offset = 0
            size = req.page_size()
            chosen = round_.entries[offset : offset + size]
            value = [
                render(change, item_id, round_.params) for change, item_id in chosen
            ]
            body: dict[str, Any] = {
                "@odata.context": f"{self.sim.url}/v1.0/$metadata#Collection",
                "value": value,
            }
            following = book.token()
            if offset + size < len(round_.entries):
                book.skips[following] = (round_, offset + size)
                body["@odata.nextLink"] = f"{base_url}?$skiptoken={following}"
            else:
                book.deltas[following] = (scope, round_.params, round_.snapshot)
                body["@odata.deltaLink"] = f"{base_url}?$deltatoken={following}"
        headers = {"Preference-Applied": f"odata.maxpagesize={size}"}
        return Reply(200, body, headers)


ROUTES: list[Route] = [
    Route(
        "GET",
        re.compile(f"{USER}/mailFolders"),
        "mailFolders",
        MAIL_BASIC,
        Handlers.list_folders,
    ),
    Route(
        "GET",
        re.compile(f"{USER}/mailFolders/(?P<folder>[^/]+)/childFolders"),
        "childFolders",
        MAIL_BASIC,
        Handlers.child_folders,
    ),
    Route(
        "GET",
        re.compile(f"{USER}/mailFolders/(?P<folder>[^/]+)/messages/delta"),
        "messages.delta",
        MAIL_READ,
        Handlers.messages_delta,
    ),
    Route(
        "GET",
        re.compile(f"{USER}/mailFolders/(?P<folder>[^/]+)/messages"),
        "messages.list",
        MAIL_READ,
        Handlers.list_messages,
    ),
    Route(
        "GET",
        re.compile(f"{USER}/mailFolders/(?P<folder>[^/]+)"),
        "mailFolders.get",
        MAIL_BASIC,
        Handlers.get_folder,
    ),
    Route(
        "GET",
        re.compile(f"{USER}/messages/(?P<item>[^/]+)/\\$value"),
        "messages.value",
        MAIL_READ,
        Handlers.message_value,
    ),
    Route(
        "GET",
        re.compile(f"{USER}/messages/(?P<item>[^/]+)"),
        "messages.get",
        MAIL_READ,
        Handlers.get_message,
    ),
    Route(
        "POST",
        re.compile(f"{USER}/messages"),
        "messages.create",
        MAIL_WRITE,
        Handlers.create_message,
    ),
    Route(
        "POST",
        re.compile(f"{USER}/messages/(?P<item>[^/]+)/attachments"),
        "attachments.create",
        MAIL_WRITE,
        Handlers.add_attachment,
    ),
    Route(
        "GET",
        re.compile(f"{USER}/messages/(?P<item>[^/]+)/attachments"),
        "attachments.list",
        MAIL_READ,
        Handlers.list_attachments,
    ),
    Route(
        "PATCH",
        re.compile(f"{USER}/messages/(?P<item>[^/]+)"),
        "messages.patch",
        MAIL_WRITE,
        Handlers.patch_message,
    ),
    Route(
        "GET",
        re.compile(f"{USER}/calendar"),
        "calendar.get",
        CALENDAR_READ,
        Handlers.get_calendar,
    ),
    Route(
        "GET",
        re.compile(f"{USER}/calendarView/delta"),
        "calendarView.delta",
        CALENDAR_READ,
        Handlers.calendar_delta,
    ),
    Route(
        "GET",
        re.compile(f"{USER}/events/(?P<item>[^/]+)"),
        "events.get",
        CALENDAR_READ,
        Handlers.get_event,
    ),
    Route(
        "PATCH",
        re.compile(f"{USER}/events/(?P<item>[^/]+)"),
        "events.patch",
        CALENDAR_WRITE,
        Handlers.patch_event,
    ),
    Route(
        "GET",
        re.compile(f"{USER}/todo/lists"),
        "todo.lists",
        TASKS_READ,
        Handlers.todo_lists,
        policy=False,
    ),
    Route(
        "GET",
        re.compile(f"{USER}/todo/lists/(?P<list>[^/]+)/tasks/delta"),
        "todo.tasks.delta",
        TASKS_READ,
        Handlers.tasks_delta,
        policy=False,
    ),
    Route(
        "POST",
        re.compile(f"{USER}/todo/lists/(?P<list>[^/]+)/tasks"),
        "todo.tasks.create",
        TASKS_WRITE,
        Handlers.create_task,
        policy=False,
    ),
    Route(
        "PATCH",
        re.compile(f"{USER}/todo/lists/(?P<list>[^/]+)/tasks/(?P<item>[^/]+)"),
        "todo.tasks.patch",
        TASKS_WRITE,
        Handlers.patch_task,
        policy=False,
    ),
]


def match_route(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    for route in ROUTES:
        if route.method != method:
            continue
        found = route.pattern.fullmatch(path)
        if found:
            return route, {k: unquote(v) for k, v in found.groupdict().items()}
    return None


# --- JSON ---------------------------------------------------------------------


def _folder_json(box: Mailbox, folder: Any) -> dict[str, Any]:
    messages = box.folder_messages(folder.id)
    return {
        "id": folder.id,
        "displayName": folder.display_name,
        "parentFolderId": folder.parent_id,
        "childFolderCount": len(box.children(folder.id)),
        "unreadItemCount": sum(1 for m in messages if not m.is_read),
        "totalItemCount": len(messages),
        "isHidden": False,
    }


def _message_json(
    box: Mailbox, message: Message, shown: str, text: bool
) -> dict[str, Any]:
    def people(values: tuple[Any, ...]) -> list[dict[str, Any]]:
        return [a.json() for a in values]

    author = message.author.json() if message.author else None
    sender = message.sender.json() if message.sender else author
    return {
        "@odata.type": f"#microsoft.graph.{message.kind}",
        "@odata.etag": f'W/"{message.change_key}"',
        "id": shown,
        "createdDateTime": _iso(message.created),
        "lastModifiedDateTime": _iso(message.modified),
        "changeKey": message.change_key,
        "categories": list(message.categories),
        "receivedDateTime": _iso(message.received),
        "sentDateTime": _iso(message.sent),
        "hasAttachments": any(not a.is_inline for a in message.attachments),
        "internetMessageId": message.internet_message_id,
        "subject": message.subject,
        "bodyPreview": " ".join(message.body.split())[:255],
        "importance": "normal",
        "parentFolderId": message.folder_id,
        "conversationId": "AAQkAD" + message.id[8:40],
        "isRead": message.is_read,
        "isDraft": message.is_draft,
        "webLink": f"https://outlook.office365.com/owa/?ItemID={quote(message.id)}",
        "body": _body(message.body, text),
        "sender": sender,
        "from": author,
        "toRecipients": people(message.to),
        "ccRecipients": people(message.cc),
        "bccRecipients": people(message.bcc),
        "replyTo": people(message.reply_to),
        "flag": {"flagStatus": "notFlagged"},
    }


def _event_json(box: Mailbox, instance: Instance, text: bool = True) -> dict[str, Any]:
    event, override = instance.event, instance.override
    body = _event_common(box, event, text)
    change_key = event.change_key
    if instance.type == "exception":
        change_key = fingerprint([event.change_key, str(instance.original)])[:24]
    zone = WINDOWS_ZONES.get(event.zone, event.zone)
    body.update(
        {
            "@odata.etag": f'W/"{change_key}"',
            "id": instance.id,
            "changeKey": change_key,
            "iCalUId": instance.ical_uid,
            "subject": override.subject
            if override.subject is not None
            else event.subject,
            "isCancelled": override.is_cancelled or event.is_cancelled,
            "seriesMasterId": event.id if instance.original is not None else None,
            "type": instance.type,
            "start": _when(instance.start),
            "end": _when(instance.end),
            "originalStartTimeZone": zone,
            "originalEndTimeZone": zone,
            "recurrence": None,
        }
    )
    if override.location is not None:
        body["location"] = _location(override.location)
    if instance.original is not None:
        body["originalStart"] = _original(instance.original, event.zone)
    return body


def _master_json(box: Mailbox, event: Event, text: bool = True) -> dict[str, Any]:
    body = _event_common(box, event, text)
    body.update(
        {
            "@odata.etag": f'W/"{event.change_key}"',
            "id": event.id,
            "changeKey": event.change_key,
            "iCalUId": global_object_id(event.uid),
            "subject": event.subject,
            "isCancelled": event.is_cancelled,
            "seriesMasterId": None,
            "type": "seriesMaster" if event.recurrence else "singleInstance",
            "start": _when(event.start),
            "end": _when(event.end),
            "recurrence": event.recurrence.json(event.zone)
            if event.recurrence
            else None,
        }
    )
    return body


def _event_common(box: Mailbox, event: Event, text: bool) -> dict[str, Any]:
    organizer = event.organizer
    is_organizer = organizer is None or organizer.address.lower() == box.address
    zone = WINDOWS_ZONES.get(event.zone, event.zone)
    return {
        "@odata.type": "#microsoft.graph.event",
        "createdDateTime": _iso(event.created),
        "lastModifiedDateTime": _iso(event.created),
        "categories": list(event.categories),
        "transactionId": None,
        "originalStartTimeZone": zone,
        "originalEndTimeZone": zone,
        "reminderMinutesBeforeStart": 15,
        "isReminderOn": True,
        "hasAttachments": False,
        "bodyPreview": " ".join(event.body.split())[:255],
        "importance": "normal",
        "sensitivity": event.sensitivity,
        "isAllDay": event.is_all_day,
        "isOrganizer": is_organizer,
        "responseRequested": True,
        "showAs": "busy",
        "webLink": f"https://outlook.office365.com/owa/?itemid={quote(event.id)}",
        "onlineMeetingUrl": None,
        "isOnlineMeeting": False,
        "onlineMeetingProvider": "unknown",
        "allowNewTimeProposals": True,
        "isDraft": False,
        "hideAttendees": False,
        "responseStatus": {
            "response": "organizer" if is_organizer else "accepted",
            "time": "0001-01-01T00:00:00Z",
        },
        "body": _body(event.body, text),
        "location": _location(event.location),
        "locations": [_location(event.location)] if event.location else [],
        "attendees": [
            {
                "type": a.type,
                "status": {"response": a.response, "time": "0001-01-01T00:00:00Z"},
                "emailAddress": {"name": a.address.name, "address": a.address.address},
            }
            for a in event.attendees
        ],
        "organizer": (organizer or Address(box.address, box.name)).json(),
    }


def _task_json(box: Mailbox, task: TodoTask) -> dict[str, Any]:
    body: dict[str, Any] = {
        "@odata.etag": task.etag,
        "importance": task.importance,
        "isReminderOn": task.reminder is not None,
        "status": task.status,
        "title": task.title,
        "createdDateTime": _iso(task.created, seven=True),
        "lastModifiedDateTime": _iso(task.created, seven=True),
        "hasAttachments": False,
        "categories": list(task.categories),
        "id": task.id,
        "body": {"content": task.body, "contentType": "text"},
    }
    if task.due is not None:
        body["dueDateTime"] = _local_midnight(task.due, box.zone)
    if task.completed is not None:
        body["completedDateTime"] = _local_midnight(task.completed, box.zone)
    if task.reminder is not None:
        body["reminderDateTime"] = _when(task.reminder)
    return body


def _local_midnight(day: date, zone: str) -> dict[str, str]:
    """A To Do date: the user's midnight, as an instant in UTC."""
    instant = datetime.combine(day, time(), ZoneInfo(zone)).astimezone(UTC)
    return {
        "dateTime": instant.strftime("%Y-%m-%dT%H:%M:%S.0000000"),
        "timeZone": "UTC",
    }


def _attachment_json(attachment: FileAttachment) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "id": attachment.id,
        "lastModifiedDateTime": _iso(attachment.modified),
        "name": attachment.name,
        "contentType": attachment.content_type,
        "size": len(attachment.content),
        "isInline": attachment.is_inline,
        "contentId": None,
        "contentLocation": None,
        "contentBytes": base64.b64encode(attachment.content).decode(),
    }


def _file_attachment(box: Mailbox, given: Any) -> FileAttachment:
    if not isinstance(given, dict):
        raise Refusal(400, "ErrorInvalidRequest", "An attachment must be an object.")
    kind = given.get("@odata.type")
    if kind != "#microsoft.graph.fileAttachment":
        raise Refusal(
            400,
            "ErrorInvalidRequest",
            f"The attachment type {kind!r} is not simulated; use fileAttachment.",
        )
    try:
        content = base64.b64decode(str(given["contentBytes"]), validate=True)
    except (KeyError, ValueError):
        raise Refusal(
            400, "ErrorInvalidRequest", "contentBytes must be base64."
        ) from None
    if len(content) >= ATTACHMENT_LIMIT:
        raise Refusal(
            413,
            "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
            "The attachment is 3 MB or more; use an upload session.",
        )
    if not str(given.get("name") or ""):
        raise Refusal(400, "ErrorInvalidRequest", "An attachment needs a name.")
    return FileAttachment(
        id=box.ids.new(b"ATCH"),
        name=str(given["name"]),
        content_type=str(given.get("contentType") or "application/octet-stream"),
        content=content,
        is_inline=bool(given.get("isInline")),
        modified=datetime.now(UTC),
    )


def _payload(req: Req, known: set[str], kind: str) -> dict[str, Any]:
    """A create's JSON body; a property Graph has but the simulator does not
    take is refused, so that a test never passes on one it ignored."""
    if not isinstance(req.body, dict):
        raise Refusal(400, "BadRequest", "Empty Payload. JSON content expected.")
    unknown = sorted(k for k in req.body if not k.startswith("@") and k not in known)
    if unknown:
        raise Refusal(
            400,
            "RequestBroker--ParseUri",
            f"The properties {unknown} of 'microsoft.graph.{kind}' are not simulated.",
        )
    return req.body


def _person(value: Any) -> Address | None:
    if not isinstance(value, dict):
        return None
    mailbox = value.get("emailAddress") or {}
    address = str(mailbox.get("address") or "")
    if "@" not in address:
        raise Refusal(400, "ErrorInvalidRecipients", "A recipient has no address.")
    return Address(address, str(mailbox.get("name") or ""))


def _people(values: Any) -> tuple[Address, ...]:
    return tuple(p for p in (_person(v) for v in values or ()) if p is not None)


def _date_time_zone(value: Any) -> datetime | None:
    """A dateTimeTimeZone: its dateTime in its timeZone (UTC, a Windows name
    or an IANA name), as an instant."""
    if value is None:
        return None
    if not isinstance(value, dict) or not value.get("dateTime"):
        raise Refusal(400, "invalidRequest", "A dateTimeTimeZone needs a dateTime.")
    name = str(value.get("timeZone") or "UTC")
    windows = {w: iana for iana, w in WINDOWS_ZONES.items()}
    try:
        zone = ZoneInfo(windows.get(name, name))
    except (KeyError, ValueError):
        raise Refusal(
            400, "invalidRequest", f"The time zone {name!r} is not supported."
        ) from None
    text = re.sub(r"(\.\d{6})\d+", r"\1", str(value["dateTime"]))
    local = datetime.fromisoformat(text)
    if local.tzinfo is not None:
        raise Refusal(400, "invalidRequest", "dateTime carries no offset.")
    return local.replace(tzinfo=zone).astimezone(UTC)


def _removed(kind: str, item_id: str) -> dict[str, Any]:
    return {
        "@odata.type": f"#microsoft.graph.{kind}",
        "id": item_id,
        "@removed": {"reason": "deleted"},
    }


def _body(content: str, text: bool) -> dict[str, str]:
    if text:
        return {"contentType": "text", "content": content}
    paragraphs = "".join(f"<p>{html.escape(p)}</p>" for p in content.split("\n"))
    return {
        "contentType": "html",
        "content": f"<html><head></head><body>{paragraphs}</body></html>",
    }


def _location(name: str) -> dict[str, Any]:
    return {
        "displayName": name,
        "locationType": "default",
        "uniqueId": name or None,
        "uniqueIdType": "private" if name else "unknown",
    }


def _when(value: datetime | date | None) -> dict[str, str] | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        text = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000")
    else:
        text = f"{value.isoformat()}T00:00:00.0000000"  # an all-day date, unshifted
    return {"dateTime": text, "timeZone": "UTC"}


def _original(value: datetime | date, zone: str) -> str:
    if isinstance(value, datetime):
        instant = value
    else:
        instant = datetime.combine(value, time(), ZoneInfo(zone))
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _select(
    body: dict[str, Any], req: Req, kind: str | None, keep: tuple[str, ...] = ()
) -> dict[str, Any]:
    select = req.query.get("$select")
    if not select:
        return body
    wanted = {s.strip() for s in select.split(",")} | {"id", *keep}
    return {k: v for k, v in body.items() if k.startswith("@odata") or k in wanted}


def _check_select(req: Req, known: set[str]) -> None:
    select = req.query.get("$select")
    for name in (s.strip() for s in (select or "").split(",") if s.strip()):
        if name not in known:
            raise Refusal(
                400,
                "RequestBroker--ParseUri",
                f"Could not find a property named '{name}' on type "
                "'microsoft.graph.message'.",
            )


def _check_etag(req: Req, change_key: str) -> None:
    wanted = req.headers.get("if-match")
    if not wanted or wanted == "*":
        return
    given = wanted.removeprefix("W/").strip('"')
    if given != change_key:
        raise Refusal(
            412,
            "ErrorIrresolvableConflict",
            "The send or update operation could not be performed because the "
            "change key passed in the request does not match the current change "
            "key for the item.",
        )


def _since(text: str | None) -> datetime | None:
    if not text:
        return None
    found = re.fullmatch(r"\s*receivedDateTime\s+(ge|gt)\s+(\S+)\s*", text)
    if not found:
        raise Refusal(
            400,
            "ErrorInvalidUrlQueryFilter",
            "The query filter contains one or more invalid nodes.",
        )
    return _instant(found.group(2))


def _as_query(params: dict[str, Any]) -> dict[str, str]:
    query = {}
    if params.get("select"):
        query["$select"] = params["select"]
    if params.get("expand"):
        query["$expand"] = params["expand"]
    return query


def _box(req: Req) -> Mailbox:
    assert req.mailbox is not None
    return req.mailbox


def _folder(box: Mailbox, ref: str) -> Any:
    try:
        return box.folder(ref)
    except KeyError:
        raise Refusal(
            404, "ErrorItemNotFound", "The specified object was not found in the store."
        ) from None


def _message(box: Mailbox, item_id: str) -> Message:
    try:
        return box.get(item_id)
    except KeyError:
        raise _not_found() from None


def _not_found() -> Refusal:
    return Refusal(
        404, "ErrorItemNotFound", "The specified object was not found in the store."
    )


def _sync_state_gone() -> Refusal:
    return Refusal(
        410, "SyncStateNotFound", "The sync state was not found or has expired."
    )


def _mime_of(message: Message) -> bytes:
    msg = email.message.EmailMessage()
    if message.author:
        msg["From"] = f"{message.author.name} <{message.author.address}>"
    if message.to:
        msg["To"] = ", ".join(f"{a.name} <{a.address}>" for a in message.to)
    msg["Subject"] = message.subject
    if message.internet_message_id:
        msg["Message-ID"] = message.internet_message_id
    msg.set_content(message.body)
    return bytes(msg)


def _received(message: Message) -> datetime:
    return message.received or _EPOCH


def _instant(text: str) -> datetime:
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _iso(value: datetime | None, seven: bool = False) -> str | None:
    if value is None:
        return None
    utc = value.astimezone(UTC)
    if seven:
        return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}0Z"
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HOST = "AM6PR02MB4321.eurprd02.prod.outlook.com"  # where a Message-ID is made


def encode_raw(data: bytes) -> str:
    """A non-JSON body inside a ``$batch`` answer: base64."""
    return base64.b64encode(data).decode()
