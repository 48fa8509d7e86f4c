"""The EWS operations the simulator answers, one handler each.

A handler gets the parsed request and returns the ``m:<Operation>Response``
element. Errors about one item or folder are error ``ResponseMessage``
elements, as in the EWS reference; errors about the whole request raise
:class:`SoapFault`.

Known differences from Exchange (each a choice, not an accident):

- SyncFolderItems leaves out the properties the reference says it cannot
  return (Body, MimeContent, InternetMessageHeaders, the recipient lists,
  ReplyTo, Categories, attendees, recurrence). Whether a real server omits
  them or refuses the request was not verified; fetch them with GetItem.
- A sync state is gzip+base64 like Exchange's, but it points at what the
  client knows, kept in the simulator: it does not outlive the simulator.
  Each call hands out a new state, even when nothing changed.
- Marking an item read keeps its ChangeKey (a ReadFlagChange); any other
  change, and a move, gives a new one. A move also gives a new ItemId.
- UpdateItem gives the item a new ChangeKey, answered in the response and
  reported by the next SyncFolderItems as an Update. Only
  ``NeverOverwrite`` compares the ChangeKey sent (any other is
  ErrorIrresolvableConflict); ``AutoResolve`` and ``AlwaysOverwrite``
  always overwrite, without Exchange's per-property merge.
- ``SoftDelete`` removes the item as ``HardDelete`` does; there is no
  Recoverable Items content. ``MoveToDeletedItems`` moves to Deleted Items.
- CreateItem takes file attachments inline (``t:Attachments`` of a new
  item, as Exchange 2010 SP1 and later do) and answers each one's
  AttachmentId; GetItem gives their AttachmentId, Name, ContentType and
  Size (never Content), and MimeContent carries them as MIME parts. Item
  attachments, CreateAttachment, GetAttachment and DeleteAttachment are not
  simulated. A new item keeps the InternetMessageId it was created with.
- A task created with ReminderIsSet and ReminderDueBy keeps both as given;
  Exchange's reminder defaults (ReminderMinutesBeforeStart, the reminder of
  a task with a due date and no reminder) are not applied.
- Not simulated: FindItem, restrictions and sorting, extended
  properties other than PR_SEARCH_KEY (asked-for ones are left out),
  PermissionSet, body conversion (``BodyType`` in a shape), time zones
  (every time is UTC; the ``TimeZoneContext`` header is ignored),
  expansion of recurrences, push and streaming notifications, NTLM and
  Negotiate (HTTP Basic and OAuth bearer tokens from
  :mod:`tests.token_server` only), and Autodiscover.
- Over HTTPS (``EwsSimulator(tls=TestCA(...))``) the certificate is for
  127.0.0.1 and localhost, signed by the test CA.
- PR_SEARCH_KEY (``PropertyTag="0x300b"``) is 16 random bytes given to each
  new item and kept by a move; Exchange derives its own.
- Recurring masters carry their modified and deleted occurrences; GetItem
  finds a modified occurrence by its ItemId (as an Exception item), with the
  master's fields where the occurrence has none of its own.
- StartTimeZone and EndTimeZone carry the zone's ``Id`` only (no ``Name``,
  Periods or Transitions); the times themselves stay UTC.
- A meeting message's text/calendar part writes its times with a TZID and a
  VTIMEZONE only for the zones in ``render.VTIMEZONES`` (else in UTC); it
  has no X-MICROSOFT-* properties, no RRULE for a series, and no
  description.
- Pull notifications: Subscribe (to given folders or to all folders),
  GetEvents and Unsubscribe. The events come from the mailbox's events
  table (see :mod:`tests.ews.mailbox`); at most 50 a GetEvents, then
  MoreEvents. With no event the answer is one StatusEvent. An older
  watermark of the subscription reads its events again. A subscription
  idle longer than its Timeout answers ErrorExpiredSubscription, an unknown
  one (``drop_subscriptions``, a restart) ErrorSubscriptionNotFound.
  CopiedEvent, FreeBusyChangedEvent, folder create/delete events and
  server affinity (``X-BackEndOverrideCookie``) are not simulated.
- Impersonation is allowed per user (``can_impersonate``) and per mailbox
  (``allow_impersonation``); Exchange's RBAC scopes are not modelled.
- ResolveNames searches the simulator's directory only (SMTP address, X500
  address, or the start of a name or address), not contact folders.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

from tests.ews.mailbox import (
    Address,
    Change,
    ChangeKind,
    Known,
    SimEvent,
    SimFolder,
    SimItem,
    SimMailbox,
    SimMessage,
    SimSubscription,
)
from tests.ews.render import (
    DEFAULT_SHAPE,
    FOLDER_DEFAULT_SHAPE,
    ITEM_PROPS,
    Context,
    attachment_id_elem,
    attr_for_uri,
    build_item,
    iso,
    local,
    m,
    mailbox_elem,
    parse_values,
    render_folder,
    render_item,
    render_occurrence,
    t,
)

if TYPE_CHECKING:
    from tests.ews.simulator import EwsSimulator, SimUser


class SoapFault(Exception):
    """An error about the whole request, sent as a SOAP fault with HTTP 500."""

    def __init__(
        self, code: str, text: str, values: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text
        self.values = values or {}


@dataclass
class Request:
    operation: str
    element: ET.Element
    user: SimUser
    mailbox: SimMailbox | None


# ------------------------------------------------------------ response shapes


def response(operation: str, messages: Iterable[ET.Element]) -> ET.Element:
    root = m(f"{operation}Response")
    container = m("ResponseMessages")
    container.extend(messages)
    root.append(container)
    return root


def success(operation: str, *children: ET.Element) -> ET.Element:
    message = m(f"{operation}ResponseMessage", ResponseClass="Success")
    message.append(m("ResponseCode", "NoError"))
    message.extend(children)
    return message


def error(
    operation: str,
    code: str,
    text: str,
    *children: ET.Element,
    response_class: str = "Error",
    message_xml: ET.Element | None = None,
) -> ET.Element:
    message = m(f"{operation}ResponseMessage", ResponseClass=response_class)
    message.append(m("MessageText", text))
    message.append(m("ResponseCode", code))
    message.append(m("DescriptiveLinkKey", "0"))
    if message_xml is not None:
        message.append(message_xml)
    message.extend(children)
    return message


def sync_error_extras(operation: str) -> tuple[ET.Element, ...]:
    """The elements a failed sync answer still carries (see the reference's
    SyncFolderItems error example)."""
    if operation == "SyncFolderItems":
        return m("SyncState"), m("IncludesLastItemInRange", "true")
    if operation == "SyncFolderHierarchy":
        return m("SyncState"), m("IncludesLastFolderInRange", "true")
    return ()


def busy_message(operation: str, back_off_ms: int) -> ET.Element:
    values = t("Value", str(back_off_ms), Name="BackOffMilliseconds")
    message_xml = m("MessageXml")
    message_xml.append(values)
    return response(
        operation,
        [
            error(
                operation,
                "ErrorServerBusy",
                "The server cannot service this request right now. Try again later.",
                *sync_error_extras(operation),
                message_xml=message_xml,
            )
        ],
    )


# --------------------------------------------------------------- the handlers


class Operations:
    """Handlers for the EWS operations, over the simulator's mailboxes."""

    def __init__(self, sim: EwsSimulator) -> None:
        self.sim = sim
        self.handlers: dict[str, Callable[[Request], ET.Element]] = {
            "ConvertId": self.convert_id,
            "GetFolder": self.get_folder,
            "FindFolder": self.find_folder,
            "SyncFolderHierarchy": self.sync_folder_hierarchy,
            "SyncFolderItems": self.sync_folder_items,
            "GetItem": self.get_item,
            "ResolveNames": self.resolve_names,
            "CreateItem": self.create_item,
            "UpdateItem": self.update_item,
            "MoveItem": self.move_item,
            "DeleteItem": self.delete_item,
            "Subscribe": self.subscribe,
            "GetEvents": self.get_events,
            "Unsubscribe": self.unsubscribe,
        }

    def handle(self, request: Request) -> ET.Element:
        handler = self.handlers.get(request.operation)
        if handler is None:
            raise SoapFault(
                "ErrorInvalidRequest",
                f"The EWS simulator does not implement {request.operation}.",
            )
        with self.sim.lock:
            return handler(request)

    # ------------------------------------------------------------ ConvertId

    def convert_id(self, request: Request) -> ET.Element:
        # exchangelib sends a ConvertId for a dummy id to learn the server
        # version from the SOAP header; the answer itself does not matter.
        ids = _child(request.element, "SourceIds")
        count = max(1, len(ids)) if ids is not None else 1
        op = request.operation
        return response(
            op,
            [
                error(op, "ErrorInvalidIdMalformed", "Id is malformed.")
                for _ in range(count)
            ],
        )

    # -------------------------------------------------------------- folders

    def get_folder(self, request: Request) -> ET.Element:
        op, mailbox = request.operation, _need_mailbox(request)
        uris = _shape(request.element, "FolderShape", FOLDER_DEFAULT_SHAPE)
        messages = []
        for ref in _children(_child(request.element, "FolderIds")):
            folder = _folder_from_ref(mailbox, ref)
            if folder is None:
                messages.append(_folder_not_found(op))
                continue
            folders = m("Folders")
            folders.append(render_folder(folder, uris, mailbox))
            messages.append(success(op, folders))
        return response(op, messages)

    def find_folder(self, request: Request) -> ET.Element:
        op, mailbox = request.operation, _need_mailbox(request)
        uris = _shape(request.element, "FolderShape", FOLDER_DEFAULT_SHAPE)
        deep = request.element.get("Traversal", "Shallow") == "Deep"
        view = _child(request.element, "IndexedPageFolderView")
        offset = int(view.get("Offset", "0")) if view is not None else 0
        limit = (
            int(view.get("MaxEntriesReturned", "1000")) if view is not None else 1000
        )
        messages = []
        for ref in _children(_child(request.element, "ParentFolderIds")):
            parent = _folder_from_ref(mailbox, ref)
            if parent is None:
                messages.append(_folder_not_found(op))
                continue
            found = (mailbox.descendants if deep else mailbox.children)(
                parent.folder_id
            )
            messages.append(_folder_page(op, found, offset, limit, uris, mailbox))
        return response(op, messages)

    def sync_folder_hierarchy(self, request: Request) -> ET.Element:
        op, mailbox = request.operation, _need_mailbox(request)
        uris = _shape(request.element, "FolderShape", FOLDER_DEFAULT_SHAPE)
        sync_ref = _child(request.element, "SyncFolderId")
        top = _folder_from_ref(mailbox, sync_ref[0]) if sync_ref is not None else None
        top = top or mailbox.folder("root")
        known = _hierarchy_state(_text(request.element, "SyncState"), mailbox, top)
        if known is None:
            extras = sync_error_extras(op)
            return response(
                op, [error(op, "ErrorInvalidSyncStateData", _BAD_STATE, *extras)]
            )
        current = {
            f.folder_id: f.change_key for f in mailbox.descendants(top.folder_id)
        }
        changes = m("Changes")
        for folder_id, change_key in current.items():
            if known.get(folder_id) != change_key:
                kind = "Update" if folder_id in known else "Create"
                change = t(kind)
                change.append(render_folder(mailbox.folders[folder_id], uris, mailbox))
                changes.append(change)
        for folder_id in known.keys() - current.keys():
            change = t("Delete")
            change.append(t("FolderId", Id=folder_id))
            changes.append(change)
        state = _encode_state(
            {"h": top.folder_id, "k": current, "e": mailbox.sync_epoch}
        )
        last = m("IncludesLastFolderInRange", "true")
        return response(op, [success(op, m("SyncState", state), last, changes)])

    # ------------------------------------------------------------ sync items

    def sync_folder_items(self, request: Request) -> ET.Element:
        op, mailbox = request.operation, _need_mailbox(request)
        sync_ref = _child(request.element, "SyncFolderId")
        folder = (
            _folder_from_ref(mailbox, sync_ref[0]) if sync_ref is not None else None
        )
        if folder is None:
            extras = sync_error_extras(op)
            text = "The specified folder could not be found in the store."
            return response(op, [error(op, "ErrorSyncFolderNotFound", text, *extras)])
        found = _item_state(_text(request.element, "SyncState"), mailbox, folder)
        if found is None:
            extras = sync_error_extras(op)
            return response(
                op, [error(op, "ErrorInvalidSyncStateData", _BAD_STATE, *extras)]
            )
        limit = int(_text(request.element, "MaxChangesReturned") or "512")
        if not 1 <= limit <= 512:
            raise SoapFault(
                "ErrorSchemaValidation", "MaxChangesReturned must be 1 to 512."
            )
        ignore = {e.get("Id", "") for e in _children(_child(request.element, "Ignore"))}
        page = mailbox.changes_since(folder, found[0], found[1], limit, ignore)
        uris = _shape(request.element, "ItemShape", DEFAULT_SHAPE)
        ctx = Context(mailbox, self.sim.resolve)
        changes = m("Changes")
        changes.extend(_change_elem(change, uris, ctx) for change in page.changes)
        payload = {"f": folder.folder_id, "p": page.position, "e": mailbox.sync_epoch}
        payload["s"] = mailbox.remember(page.known)
        new_state = _encode_state(payload)
        last = m("IncludesLastItemInRange", "true" if page.includes_last else "false")
        return response(op, [success(op, m("SyncState", new_state), last, changes)])

    # --------------------------------------------------------------- items

    def get_item(self, request: Request) -> ET.Element:
        op, mailbox = request.operation, _need_mailbox(request)
        uris = _shape(request.element, "ItemShape", DEFAULT_SHAPE)
        ctx = Context(mailbox, self.sim.resolve)
        messages = []
        for ref in _children(_child(request.element, "ItemIds")):
            found = self._render_by_id(ref.get("Id", ""), uris, ctx)
            if found is None:
                messages.append(_item_not_found(op))
                continue
            items = m("Items")
            items.append(found)
            messages.append(success(op, items))
        return response(op, messages)

    def _render_by_id(
        self, item_id: str, uris: list[str], ctx: Context
    ) -> ET.Element | None:
        mailbox = ctx.mailbox
        if item_id in mailbox.items:
            return render_item(mailbox.items[item_id], uris, ctx, summary=False)
        occurrence = mailbox.find_occurrence(item_id)
        if occurrence is not None:
            return render_occurrence(occurrence[0], occurrence[1], uris, ctx)
        return None

    def create_item(self, request: Request) -> ET.Element:
        op, mailbox = request.operation, _need_mailbox(request)
        disposition = request.element.get("MessageDisposition", "SaveOnly")
        saved = _child(request.element, "SavedItemFolderId")
        target = _folder_from_ref(mailbox, saved[0]) if saved is not None else None
        ctx = Context(mailbox, self.sim.resolve)
        messages = []
        for elem in _children(_child(request.element, "Items")):
            try:
                item = build_item(elem)
            except (ValueError, TypeError) as exc:
                messages.append(error(op, "ErrorInvalidRequest", str(exc)))
                continue
            stored = self._store_new(mailbox, item, target, disposition)
            items = m("Items")
            if stored is not None:
                items.append(_created(stored, ctx))
            messages.append(success(op, items))
        return response(op, messages)

    def _store_new(
        self,
        mailbox: SimMailbox,
        item: SimItem,
        target: SimFolder | None,
        disposition: str,
    ) -> SimItem | None:
        sending = disposition in ("SendOnly", "SendAndSaveCopy")
        if isinstance(item, SimMessage):
            item.is_draft = not sending
            if item.author is None:
                item.author = Address(
                    mailbox.smtp, mailbox.name, mailbox_type="Mailbox"
                )
            if sending:
                self.sim.sent.append(item)
            if disposition == "SendOnly":
                return None
        default = {"Message": "sentitems" if sending else "drafts"}.get(item.element)
        default = default or {"CalendarItem": "calendar", "Task": "tasks"}[item.element]
        folder = (
            target if target is not None and not sending else mailbox.folder(default)
        )
        return mailbox.add(item, folder.folder_id)

    def update_item(self, request: Request) -> ET.Element:
        op, mailbox = request.operation, _need_mailbox(request)
        never = request.element.get("ConflictResolution") == "NeverOverwrite"
        ctx = Context(mailbox, self.sim.resolve)
        messages = []
        for change in _children(_child(request.element, "ItemChanges")):
            ref = _child(change, "ItemId")
            item = mailbox.items.get(ref.get("Id", "")) if ref is not None else None
            if item is None or ref is None:
                messages.append(_item_not_found(op))
                continue
            if never and ref.get("ChangeKey") not in (None, item.change_key):
                text = "The send or update operation could not be performed because the change key passed in the request does not match the current change key for the item."  # noqa: E501
                messages.append(error(op, "ErrorIrresolvableConflict", text))
                continue
            updates = _updates(item, _child(change, "Updates"))
            if updates:
                mailbox.update(item, **updates)
            items = m("Items")
            items.append(render_item(item, ["item:ItemId"], ctx, summary=True))
            conflicts = m("ConflictResults")
            conflicts.append(t("Count", "0"))
            messages.append(success(op, items, conflicts))
        return response(op, messages)

    def move_item(self, request: Request) -> ET.Element:
        op, mailbox = request.operation, _need_mailbox(request)
        to = _child(request.element, "ToFolderId")
        target = _folder_from_ref(mailbox, to[0]) if to is not None else None
        if target is None:
            raise SoapFault(
                "ErrorFolderNotFound", "The specified folder could not be found."
            )
        ctx = Context(mailbox, self.sim.resolve)
        messages = []
        for ref in _children(_child(request.element, "ItemIds")):
            item_id = ref.get("Id", "")
            if item_id not in mailbox.items:
                messages.append(_item_not_found(op))
                continue
            moved = mailbox.move(item_id, target.folder_id)
            items = m("Items")
            items.append(render_item(moved, ["item:ItemId"], ctx, summary=True))
            messages.append(success(op, items))
        return response(op, messages)

    def delete_item(self, request: Request) -> ET.Element:
        op, mailbox = request.operation, _need_mailbox(request)
        to_trash = request.element.get("DeleteType") == "MoveToDeletedItems"
        messages = []
        for ref in _children(_child(request.element, "ItemIds")):
            item_id = ref.get("Id", "")
            if item_id not in mailbox.items:
                messages.append(_item_not_found(op))
                continue
            mailbox.delete(item_id, hard=not to_trash)
            messages.append(success(op))
        return response(op, messages)

    # -------------------------------------------------------- notifications

    def subscribe(self, request: Request) -> ET.Element:
        op, mailbox = request.operation, _need_mailbox(request)
        pull = _child(request.element, "PullSubscriptionRequest")
        if pull is None:
            raise SoapFault(
                "ErrorInvalidRequest",
                "The EWS simulator answers pull subscriptions only.",
            )
        folders: set[str] | None = None
        if pull.get("SubscribeToAllFolders", "false").lower() != "true":
            folders = set()
            for ref in _children(_child(pull, "FolderIds")):
                folder = _folder_from_ref(mailbox, ref)
                if folder is None:
                    return response(op, [_folder_not_found(op)])
                folders.add(folder.folder_id)
        types = {(e.text or "").strip() for e in _children(_child(pull, "EventTypes"))}
        timeout = int(_text(pull, "Timeout") or "0")
        if not types or not 1 <= timeout <= 1440:
            raise SoapFault(
                "ErrorSchemaValidation",
                "A pull subscription needs EventTypes and a Timeout of 1 to 1440.",
            )
        start = None
        if _text(pull, "Watermark"):
            start = _watermark(_text(pull, "Watermark"), mailbox)
            if start is None:
                return response(op, [_bad_watermark(op)])
        made = mailbox.subscribe(folders, types, timeout, start)
        watermark = m("Watermark", _encode_watermark(made.start))
        return response(
            op, [success(op, m("SubscriptionId", made.subscription_id), watermark)]
        )

    def get_events(self, request: Request) -> ET.Element:
        op, mailbox = request.operation, _need_mailbox(request)
        found = _subscription(op, mailbox, _text(request.element, "SubscriptionId"))
        if isinstance(found, ET.Element):
            return response(op, [found])
        after = _watermark(_text(request.element, "Watermark"), mailbox)
        if after is None or after < found.start:
            return response(op, [_bad_watermark(op)])
        found.last_used = mailbox.clock.now()  # a GetEvents resets the timeout
        events, more = mailbox.pending_events(found, after, EVENTS_PER_NOTIFICATION)
        notification = m("Notification")
        notification.append(t("SubscriptionId", found.subscription_id))
        notification.append(t("PreviousWatermark", _encode_watermark(after)))
        notification.append(t("MoreEvents", "true" if more else "false"))
        if not events:
            status = t("StatusEvent")
            status.append(t("Watermark", _encode_watermark(len(mailbox.events))))
            notification.append(status)
        notification.extend(_event_elem(event, mailbox) for event in events)
        return response(op, [success(op, notification)])

    def unsubscribe(self, request: Request) -> ET.Element:
        op, mailbox = request.operation, _need_mailbox(request)
        found = _subscription(op, mailbox, _text(request.element, "SubscriptionId"))
        if isinstance(found, ET.Element):
            return response(op, [found])
        del mailbox.subscriptions[found.subscription_id]
        return response(op, [success(op)])

    # ----------------------------------------------------------- directory

    def resolve_names(self, request: Request) -> ET.Element:
        op = request.operation
        full = request.element.get("ReturnFullContactData", "false").lower() == "true"
        messages = []
        for entry in _children(request.element):
            if local(entry) != "UnresolvedEntry":
                continue
            found = self.sim.directory.lookup(entry.text or "")
            messages.append(_resolution(op, found, full))
        return response(op, messages)


# ------------------------------------------------------------------ helpers

_BAD_STATE = "Synchronization state data is corrupt or otherwise invalid."


def _created(item: SimItem, ctx: Context) -> ET.Element:
    """A created item in the CreateItem response: its ItemId, and the
    AttachmentId of each attachment made with it."""
    elem = render_item(item, ["item:ItemId"], ctx, summary=True)
    if item.attachments:
        attachments = t("Attachments")
        for attachment in item.attachments:
            file = t("FileAttachment")
            file.append(attachment_id_elem(item, attachment))
            attachments.append(file)
        elem.append(attachments)
    return elem


def _child(elem: ET.Element | None, name: str) -> ET.Element | None:
    if elem is None:
        return None
    for child in elem:
        if local(child) == name:
            return child
    return None


def _children(elem: ET.Element | None) -> list[ET.Element]:
    return list(elem) if elem is not None else []


def _text(elem: ET.Element, name: str) -> str | None:
    child = _child(elem, name)
    return (child.text or "").strip() or None if child is not None else None


def _need_mailbox(request: Request) -> SimMailbox:
    if request.mailbox is None:
        raise SoapFault(
            "ErrorNonExistentMailbox",
            "The SMTP address has no mailbox associated with it.",
        )
    return request.mailbox


def _shape(elem: ET.Element, tag: str, default: Iterable[str]) -> list[str]:
    """The FieldURIs a shape asks for: the base shape and the additions."""
    shape = _child(elem, tag)
    base = _text(shape, "BaseShape") if shape is not None else "IdOnly"
    uris: list[str] = []
    if base == "Default":
        uris.extend(default)
    elif base == "AllProperties":
        uris.extend(ITEM_PROPS if tag == "ItemShape" else FOLDER_DEFAULT_SHAPE)
    for prop in _children(_child(shape, "AdditionalProperties")):
        uri = prop.get("FieldURI")
        if uri:
            uris.append(uri)
        elif local(prop) == "ExtendedFieldURI" and prop.get("PropertyTag"):
            # A tag property such as PR_SEARCH_KEY: "ext:0x300b" in ITEM_PROPS.
            uris.append(f"ext:{int(prop.get('PropertyTag', '0'), 16):#06x}")
    return uris


def _folder_from_ref(mailbox: SimMailbox, ref: ET.Element) -> SimFolder | None:
    if local(ref) == "DistinguishedFolderId":
        return mailbox.find_folder(ref.get("Id", ""))
    folder_id = ref.get("Id", "")
    return mailbox.folders.get(folder_id)


def _folder_not_found(op: str) -> ET.Element:
    return error(
        op,
        "ErrorFolderNotFound",
        "The specified folder could not be found in the store.",
    )


def _item_not_found(op: str) -> ET.Element:
    return error(
        op, "ErrorItemNotFound", "The specified object was not found in the store."
    )


def _folder_page(
    op: str,
    found: list[SimFolder],
    offset: int,
    limit: int,
    uris: list[str],
    mailbox: SimMailbox,
) -> ET.Element:
    page = found[offset : offset + limit]
    end = offset + len(page)
    attrs = {
        "IndexedPagingOffset": str(end),
        "TotalItemsInView": str(len(found)),
        "IncludesLastItemInRange": "true" if end >= len(found) else "false",
    }
    root = m("RootFolder", **attrs)
    container = t("Folders")
    container.extend(render_folder(f, uris, mailbox) for f in page)
    root.append(container)
    return success(op, root)


def _change_elem(change: Change, uris: list[str], ctx: Context) -> ET.Element:
    if change.kind is ChangeKind.DELETE:
        elem = t("Delete")
        elem.append(t("ItemId", Id=change.item_id))
        return elem
    assert change.item is not None
    if change.kind is ChangeKind.READ_FLAG:
        elem = t("ReadFlagChange")
        elem.append(t("ItemId", Id=change.item_id, ChangeKey=change.item.change_key))
        elem.append(t("IsRead", "true" if change.is_read else "false"))
        return elem
    elem = t("Create" if change.kind is ChangeKind.CREATE else "Update")
    elem.append(render_item(change.item, uris, ctx, summary=True))
    return elem


# ----------------------------------------------------------- notifications

EVENTS_PER_NOTIFICATION = 50


def _subscription(
    op: str, mailbox: SimMailbox, subscription_id: str | None
) -> SimSubscription | ET.Element:
    """The subscription a request names, or the error message to answer."""
    found = mailbox.subscriptions.get(subscription_id or "")
    if found is None:
        text = "The specified subscription was not found."
        return error(op, "ErrorSubscriptionNotFound", text)
    if found.expired(mailbox.clock.now()):
        return error(op, "ErrorExpiredSubscription", "The subscription has expired.")
    return found


def _bad_watermark(op: str) -> ET.Element:
    return error(op, "ErrorInvalidWatermark", "The watermark is invalid.")


def _encode_watermark(position: int) -> str:
    return base64.b64encode(f"SIMWM:{position:012d}".encode()).decode("ascii")


def _watermark(text: str | None, mailbox: SimMailbox) -> int | None:
    """The events-table position a watermark names, or None if it names none."""
    try:
        decoded = base64.b64decode(text or "", validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        return None
    prefix, _, number = decoded.partition(":")
    if prefix != "SIMWM" or not number.isdigit():
        return None
    position = int(number)
    return position if position <= len(mailbox.events) else None


def _event_elem(event: SimEvent, mailbox: SimMailbox) -> ET.Element:
    def folder_ref(tag: str, folder_id: str) -> ET.Element:
        folder = mailbox.folders.get(folder_id)
        return t(tag, Id=folder_id, ChangeKey=folder.change_key if folder else "")

    elem = t(str(event.kind))
    elem.append(t("Watermark", _encode_watermark(event.position)))
    elem.append(t("TimeStamp", iso(event.timestamp)))
    if event.folder_id is not None:
        elem.append(folder_ref("FolderId", event.folder_id))
    else:
        item_ref = {"Id": event.item_id or ""}
        if event.change_key:
            item_ref["ChangeKey"] = event.change_key
        elem.append(t("ItemId", **item_ref))
    elem.append(folder_ref("ParentFolderId", event.parent_folder_id))
    if event.old_item_id is not None:
        elem.append(t("OldItemId", Id=event.old_item_id))
    if event.old_parent_folder_id is not None:
        elem.append(folder_ref("OldParentFolderId", event.old_parent_folder_id))
    if event.unread_count is not None:
        elem.append(t("UnreadCount", str(event.unread_count)))
    return elem


# ------------------------------------------------------------- sync states


def _encode_state(payload: dict[str, Any]) -> str:
    """An opaque sync state: gzip and base64, like Exchange's (``H4sI...``)."""
    raw = json.dumps(payload, sort_keys=True).encode()
    return base64.b64encode(gzip.compress(raw, mtime=0)).decode("ascii")


def _decode_state(state: str) -> dict[str, Any] | None:
    try:
        decoded = json.loads(gzip.decompress(base64.b64decode(state, validate=True)))
    except (binascii.Error, OSError, EOFError, ValueError):
        return None
    return decoded if isinstance(decoded, dict) else None


def _item_state(
    state: str | None, mailbox: SimMailbox, folder: SimFolder
) -> tuple[int, Known] | None:
    """The change-log position a SyncFolderItems state names and what the
    client had then, or None when the state is not valid for this folder."""
    if state is None:
        return 0, {}
    if state in mailbox.invalid_sync_states:
        return None
    payload = _decode_state(state)
    if payload is None or payload.get("f") != folder.folder_id:
        return None
    position, known = payload.get("p"), mailbox.sync_snapshots.get(payload.get("s", 0))
    if payload.get("e") != mailbox.sync_epoch or not isinstance(position, int):
        return None
    if known is None or not 0 <= position <= len(folder.log):
        return None
    return position, known


def _hierarchy_state(
    state: str | None, mailbox: SimMailbox, top: SimFolder
) -> dict[str, str] | None:
    if state is None:
        return {}
    if state in mailbox.invalid_sync_states:
        return None
    payload = _decode_state(state)
    if payload is None or payload.get("h") != top.folder_id:
        return None
    known = payload.get("k")
    if payload.get("e") != mailbox.sync_epoch or not isinstance(known, dict):
        return None
    return known


# ------------------------------------------------------------ item updates


def _updates(item: SimItem, updates: ET.Element | None) -> dict[str, Any]:
    """The field values an UpdateItem ``t:Updates`` element sets."""
    names = {f.name: f for f in fields(item)}
    values: dict[str, Any] = {}
    for update in _children(updates):
        kind = local(update)
        if kind in ("SetItemField", "AppendToItemField"):
            carrier = [c for c in update if local(c) not in _PATH_TAGS]
            if carrier:
                values.update(parse_values(carrier[0]))
        elif kind == "DeleteItemField":
            path = _child(update, "FieldURI")
            attr = attr_for_uri(path.get("FieldURI", "")) if path is not None else None
            if attr in names:
                values[attr] = names[attr].default
    return {k: v for k, v in values.items() if k in names}


_PATH_TAGS = {"FieldURI", "IndexedFieldURI", "ExtendedFieldURI"}


def _resolution(op: str, found: list[Address], full: bool) -> ET.Element:
    if not found:
        return error(op, "ErrorNameResolutionNoResults", "No results were found.")
    resolutions = m(
        "ResolutionSet",
        TotalItemsInView=str(len(found)),
        IncludesLastItemInRange="true",
    )
    for address in found:
        resolution = t("Resolution")
        resolution.append(mailbox_elem(address))
        if full:
            contact = t("Contact")
            contact.append(t("DisplayName", address.name))
            contact.append(t("ContactSource", "ActiveDirectory"))
            resolution.append(contact)
        resolutions.append(resolution)
    if len(found) == 1:
        return success(op, resolutions)
    text = "Multiple results were found."
    return error(
        op,
        "ErrorNameResolutionMultipleResults",
        text,
        resolutions,
        response_class="Warning",
    )
