"""Items and folders as EWS XML, and EWS XML back into items.

Each property the simulator knows is a :class:`Prop`: its FieldURI, how to
render it, and whether FindItem and SyncFolderItems can return it (the EWS
reference: "SyncFolderItems is similar to the FindItem operation in that it
cannot return properties like Body or Attachments"). Properties render in
the order of the schema; unset values are left out, as Exchange leaves them.
"""

from __future__ import annotations

import base64
import email
import email.policy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import Any
from xml.etree import ElementTree as ET
from zoneinfo import ZoneInfo

from tests.ews.mailbox import (
    Address,
    Attendee,
    MeetingKind,
    Occurrence,
    Recurrence,
    SimAttachment,
    SimCalendarItem,
    SimFolder,
    SimItem,
    SimMailbox,
    SimMeetingMessage,
    SimMessage,
    SimTask,
)

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
MNS = "http://schemas.microsoft.com/exchange/services/2006/messages"
TNS = "http://schemas.microsoft.com/exchange/services/2006/types"
ENS = "http://schemas.microsoft.com/exchange/services/2006/errors"

for _prefix, _uri in (("s", SOAP), ("m", MNS), ("t", TNS), ("e", ENS)):
    ET.register_namespace(_prefix, _uri)

Resolver = Callable[[Address], Address | None]


def t(tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    elem = ET.Element(f"{{{TNS}}}{tag}", attrs)
    elem.text = text
    return elem


def m(tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    elem = ET.Element(f"{{{MNS}}}{tag}", attrs)
    elem.text = text
    return elem


def local(elem: ET.Element) -> str:
    return elem.tag.rsplit("}", 1)[-1]


def iso(value: datetime) -> str:
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Context:
    """What rendering needs beyond the item: its mailbox and the directory."""

    mailbox: SimMailbox
    resolve: Resolver


Renderer = Callable[[SimItem, Context], ET.Element | None]


@dataclass(frozen=True)
class Prop:
    uri: str
    render: Renderer
    summary: bool = True


# ------------------------------------------------------------ small renderers


def _value(item: SimItem, attr: str) -> Any:
    value = getattr(item, attr, None)
    return None if value in ("", ()) else value


def _text(tag: str, attr: str) -> Renderer:
    def render(item: SimItem, ctx: Context) -> ET.Element | None:
        value = _value(item, attr)
        return None if value is None else t(tag, str(value))

    return render


def _bool(tag: str, attr: str) -> Renderer:
    def render(item: SimItem, ctx: Context) -> ET.Element | None:
        value = getattr(item, attr, None)
        return None if value is None else t(tag, "true" if value else "false")

    return render


def _time(tag: str, attr: str) -> Renderer:
    def render(item: SimItem, ctx: Context) -> ET.Element | None:
        value = getattr(item, attr, None)
        if isinstance(value, datetime):
            return t(tag, iso(value))
        return None

    return render


def _const(tag: str, text: str, *types: type) -> Renderer:
    def render(item: SimItem, ctx: Context) -> ET.Element | None:
        return t(tag, text) if isinstance(item, types) else None

    return render


def mailbox_elem(address: Address) -> ET.Element:
    elem = t("Mailbox")
    if address.name:
        elem.append(t("Name", address.name))
    elem.append(t("EmailAddress", address.email))
    elem.append(t("RoutingType", address.routing_type))
    elem.append(t("MailboxType", address.mailbox_type))
    return elem


def _one_mailbox(tag: str, attr: str) -> Renderer:
    def render(item: SimItem, ctx: Context) -> ET.Element | None:
        value = getattr(item, attr, None)
        if not isinstance(value, Address):
            return None
        elem = t(tag)
        elem.append(mailbox_elem(value))
        return elem

    return render


def _mailboxes(tag: str, attr: str) -> Renderer:
    def render(item: SimItem, ctx: Context) -> ET.Element | None:
        values = _value(item, attr)
        if not values:
            return None
        elem = t(tag)
        elem.extend(mailbox_elem(a) for a in values)
        return elem

    return render


def _attendees(tag: str, attr: str) -> Renderer:
    def render(item: SimItem, ctx: Context) -> ET.Element | None:
        values: tuple[Attendee, ...] | None = _value(item, attr)
        if not values:
            return None
        elem = t(tag)
        for attendee in values:
            child = t("Attendee")
            child.append(mailbox_elem(attendee.address))
            child.append(t("ResponseType", attendee.response))
            if attendee.last_response_time:
                child.append(t("LastResponseTime", iso(attendee.last_response_time)))
            elem.append(child)
        return elem

    return render


def _strings(tag: str, attr: str) -> Renderer:
    def render(item: SimItem, ctx: Context) -> ET.Element | None:
        values = _value(item, attr)
        if not values:
            return None
        elem = t(tag)
        elem.extend(t("String", v) for v in values)
        return elem

    return render


# ---------------------------------------------------------- special renderers


def _item_id(item: SimItem, ctx: Context) -> ET.Element:
    return t("ItemId", Id=item.item_id, ChangeKey=item.change_key)


def _parent_folder_id(item: SimItem, ctx: Context) -> ET.Element:
    folder = ctx.mailbox.folders[item.folder_id]
    return t("ParentFolderId", Id=folder.folder_id, ChangeKey=folder.change_key)


def _item_class(item: SimItem, ctx: Context) -> ET.Element:
    return t("ItemClass", item.effective_item_class)


def _body(item: SimItem, ctx: Context) -> ET.Element:
    return t("Body", item.body, BodyType=item.body_type, IsTruncated="false")


def _attachments(item: SimItem, ctx: Context) -> ET.Element | None:
    if not item.attachments:
        return None
    elem = t("Attachments")
    for attachment in item.attachments:
        file = t("FileAttachment")
        file.append(attachment_id_elem(item, attachment))
        file.append(t("Name", attachment.name))
        file.append(t("ContentType", attachment.content_type))
        file.append(t("Size", str(len(attachment.content))))
        file.append(t("IsInline", "false"))
        file.append(t("IsContactPhoto", "false"))
        elem.append(file)
    return elem


def attachment_id_elem(item: SimItem, attachment: SimAttachment) -> ET.Element:
    return t(
        "AttachmentId",
        Id=attachment.attachment_id,
        RootItemId=item.item_id,
        RootItemChangeKey=item.change_key,
    )


def _has_attachments(item: SimItem, ctx: Context) -> ET.Element:
    return t("HasAttachments", "true" if item.attachments else "false")


def _size(item: SimItem, ctx: Context) -> ET.Element:
    return t("Size", str(item.size()))


def _mime(item: SimItem, ctx: Context) -> ET.Element | None:
    if not isinstance(item, SimMessage):
        return None
    data = mime_bytes(item, ctx.resolve)
    return t(
        "MimeContent", base64.b64encode(data).decode("ascii"), CharacterSet="UTF-8"
    )


def _headers(item: SimItem, ctx: Context) -> ET.Element | None:
    if not isinstance(item, SimMessage):
        return None
    parsed = email.message_from_bytes(mime_bytes(item, ctx.resolve))
    elem = t("InternetMessageHeaders")
    for name, value in parsed.items():
        elem.append(
            t("InternetMessageHeader", " ".join(str(value).split()), HeaderName=name)
        )
    return elem


def _display(attr: str, tag: str) -> Renderer:
    def render(item: SimItem, ctx: Context) -> ET.Element | None:
        values = getattr(item, attr, None)
        if values is None:
            return None
        return t(tag, "; ".join(a.name or a.email for a in values))

    return render


def _conversation_topic(item: SimItem, ctx: Context) -> ET.Element | None:
    if not isinstance(item, SimMessage):
        return None
    topic = item.subject
    while topic[:3].lower() in ("re:", "fw:") or topic[:4].lower() == "fwd:":
        topic = topic.split(":", 1)[1].strip()
    return t("ConversationTopic", topic)


def _conversation_id(item: SimItem, ctx: Context) -> ET.Element | None:
    if not isinstance(item, SimMessage):
        return None
    topic = _conversation_topic(item, ctx)
    text = topic.text if topic is not None else ""
    digest = base64.b64encode(f"conv:{ctx.mailbox.smtp}:{text}".encode()[:48])
    return t("ConversationId", Id=digest.decode("ascii"))


def _is_from_me(item: SimItem, ctx: Context) -> ET.Element | None:
    if not isinstance(item, SimMessage):
        return None
    author = item.author.email.lower() if item.author else ""
    mine = author in (ctx.mailbox.smtp.lower(), ctx.mailbox.legacy_dn.lower())
    return t("IsFromMe", "true" if mine else "false")


def _is_meeting(item: SimItem, ctx: Context) -> ET.Element | None:
    if isinstance(item, SimCalendarItem):
        return t("IsMeeting", "true" if item.is_meeting else "false")
    return None


def _is_recurring(item: SimItem, ctx: Context) -> ET.Element | None:
    if isinstance(item, SimCalendarItem):
        return t("IsRecurring", "true" if item.recurrence else "false")
    return None


def _calendar_item_type(item: SimItem, ctx: Context) -> ET.Element | None:
    if isinstance(item, SimCalendarItem):
        return t("CalendarItemType", item.calendar_item_type)
    if isinstance(item, SimMeetingMessage) and item.kind is MeetingKind.REQUEST:
        return t("CalendarItemType", "Single")
    return None


def _duration(item: SimItem, ctx: Context) -> ET.Element | None:
    start, end = getattr(item, "start", None), getattr(item, "end", None)
    if not (isinstance(start, datetime) and isinstance(end, datetime)):
        return None
    minutes = int((end - start).total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    text = "P" + (f"{days}D" if days else "")
    if hours or mins or not days:
        text += (
            "T"
            + (f"{hours}H" if hours else "")
            + (f"{mins}M" if mins or not hours else "")
        )
    return t("Duration", text)


def _recurrence(item: SimItem, ctx: Context) -> ET.Element | None:
    rule: Recurrence | None = getattr(item, "recurrence", None)
    if rule is None:
        return None
    elem = t("Recurrence")
    elem.append(_pattern(rule))
    elem.append(_range(rule))
    return elem


def _pattern(rule: Recurrence) -> ET.Element:
    if rule.pattern == "Daily":
        pattern = t("DailyRecurrence")
        pattern.append(t("Interval", str(rule.interval)))
    elif rule.pattern == "AbsoluteMonthly":
        pattern = t("AbsoluteMonthlyRecurrence")
        pattern.append(t("Interval", str(rule.interval)))
        pattern.append(t("DayOfMonth", str(rule.day_of_month)))
    elif rule.pattern == "RelativeMonthly":
        pattern = t("RelativeMonthlyRecurrence")
        pattern.append(t("Interval", str(rule.interval)))
        pattern.append(t("DaysOfWeek", rule.days_of_week[0]))
        pattern.append(t("DayOfWeekIndex", rule.week_index))
    elif rule.pattern == "AbsoluteYearly":
        pattern = t("AbsoluteYearlyRecurrence")
        pattern.append(t("DayOfMonth", str(rule.day_of_month)))
        pattern.append(t("Month", rule.month))
    elif rule.pattern == "RelativeYearly":
        pattern = t("RelativeYearlyRecurrence")
        pattern.append(t("DaysOfWeek", rule.days_of_week[0]))
        pattern.append(t("DayOfWeekIndex", rule.week_index))
        pattern.append(t("Month", rule.month))
    else:
        pattern = t("WeeklyRecurrence")
        pattern.append(t("Interval", str(rule.interval)))
        pattern.append(t("DaysOfWeek", " ".join(rule.days_of_week)))
        pattern.append(t("FirstDayOfWeek", "Monday"))
    return pattern


def _range(rule: Recurrence) -> ET.Element:
    if rule.end is not None:
        boundary = t("EndDateRecurrence")
        boundary.append(t("StartDate", rule.start.isoformat()))
        boundary.append(t("EndDate", rule.end.isoformat()))
    elif rule.count is not None:
        boundary = t("NumberedRecurrence")
        boundary.append(t("StartDate", rule.start.isoformat()))
        boundary.append(t("NumberOfOccurrences", str(rule.count)))
    else:
        boundary = t("NoEndRecurrence")
        boundary.append(t("StartDate", rule.start.isoformat()))
    return boundary


def _modified(item: SimItem, ctx: Context) -> ET.Element | None:
    occurrences: tuple[Occurrence, ...] = getattr(item, "modified_occurrences", ())
    if not occurrences:
        return None
    elem = t("ModifiedOccurrences")
    for occurrence in occurrences:
        child = t("Occurrence")
        child.append(
            t("ItemId", Id=occurrence.item_id, ChangeKey=occurrence.change_key)
        )
        child.append(t("Start", iso(occurrence.start)))
        child.append(t("End", iso(occurrence.end)))
        child.append(t("OriginalStart", iso(occurrence.original_start)))
        elem.append(child)
    return elem


def _deleted(item: SimItem, ctx: Context) -> ET.Element | None:
    starts: tuple[datetime, ...] = getattr(item, "deleted_occurrences", ())
    if not starts:
        return None
    elem = t("DeletedOccurrences")
    for start in starts:
        child = t("DeletedOccurrence")
        child.append(t("Start", iso(start)))
        elem.append(child)
    return elem


def _timezone(tag: str) -> Renderer:
    """StartTimeZone or EndTimeZone: the zone's id only, no Periods."""

    def render(item: SimItem, ctx: Context) -> ET.Element | None:
        zone = getattr(item, "start_timezone", None)
        return t(tag, Id=zone) if isinstance(zone, str) else None

    return render


SEARCH_KEY_URI = "ext:0x300b"  # PR_SEARCH_KEY, PtypBinary


def _search_key(item: SimItem, ctx: Context) -> ET.Element | None:
    if not item.search_key:
        return None
    elem = t("ExtendedProperty")
    elem.append(t("ExtendedFieldURI", PropertyTag="0x300b", PropertyType="Binary"))
    elem.append(t("Value", base64.b64encode(item.search_key).decode("ascii")))
    return elem


def _associated(item: SimItem, ctx: Context) -> ET.Element | None:
    if not isinstance(item, SimMeetingMessage) or not item.associated_calendar_item_id:
        return None
    target = ctx.mailbox.items.get(item.associated_calendar_item_id)
    change_key = target.change_key if target else ""
    return t(
        "AssociatedCalendarItemId",
        Id=item.associated_calendar_item_id,
        ChangeKey=change_key,
    )


def _meeting_only(render: Renderer, *kinds: MeetingKind) -> Renderer:
    def wrapped(item: SimItem, ctx: Context) -> ET.Element | None:
        if isinstance(item, SimMeetingMessage) and item.kind in kinds:
            return render(item, ctx)
        return None

    return wrapped


def _calendar_or_request(render: Renderer) -> Renderer:
    """Calendar properties a MeetingRequest carries too, but not other messages."""

    def wrapped(item: SimItem, ctx: Context) -> ET.Element | None:
        if isinstance(item, SimMeetingMessage) and item.kind is not MeetingKind.REQUEST:
            return None
        return render(item, ctx)

    return wrapped


# ------------------------------------------------------------ the property table

_REQ = MeetingKind.REQUEST
_ALL_MEETINGS = (MeetingKind.REQUEST, MeetingKind.RESPONSE, MeetingKind.CANCELLATION)

ITEM_PROPS: dict[str, Prop] = {
    p.uri: p
    for p in (
        Prop("item:MimeContent", _mime, summary=False),
        Prop("item:ItemId", _item_id),
        Prop("item:ParentFolderId", _parent_folder_id),
        Prop("item:ItemClass", _item_class),
        Prop("item:Subject", _text("Subject", "subject")),
        Prop("item:Sensitivity", _text("Sensitivity", "sensitivity")),
        Prop("item:Body", _body, summary=False),
        Prop("item:Attachments", _attachments, summary=False),
        Prop("item:DateTimeReceived", _time("DateTimeReceived", "datetime_received")),
        Prop("item:Size", _size),
        Prop("item:Categories", _strings("Categories", "categories"), summary=False),
        Prop("item:Importance", _text("Importance", "importance")),
        Prop("item:InReplyTo", _text("InReplyTo", "in_reply_to")),
        Prop("item:IsSubmitted", _const("IsSubmitted", "false", SimItem)),
        Prop("item:IsDraft", _bool("IsDraft", "is_draft")),
        Prop("item:IsFromMe", _is_from_me),
        Prop("item:IsResend", _const("IsResend", "false", SimItem)),
        Prop("item:IsUnmodified", _const("IsUnmodified", "false", SimItem)),
        Prop("item:InternetMessageHeaders", _headers, summary=False),
        Prop("item:DateTimeSent", _time("DateTimeSent", "datetime_sent")),
        Prop("item:DateTimeCreated", _time("DateTimeCreated", "datetime_created")),
        Prop("item:ReminderDueBy", _time("ReminderDueBy", "reminder_due_by")),
        Prop("item:ReminderIsSet", _bool("ReminderIsSet", "reminder_is_set")),
        Prop("item:DisplayCc", _display("cc", "DisplayCc")),
        Prop("item:DisplayTo", _display("to", "DisplayTo")),
        Prop("item:HasAttachments", _has_attachments),
        Prop(SEARCH_KEY_URI, _search_key, summary=False),
        Prop("item:Culture", _const("Culture", "en-US", SimItem)),
        Prop("item:LastModifiedTime", _time("LastModifiedTime", "last_modified_time")),
        Prop("item:IsAssociated", _const("IsAssociated", "false", SimItem)),
        Prop("item:ConversationId", _conversation_id),
        Prop("message:Sender", _one_mailbox("Sender", "sender")),
        Prop("message:ToRecipients", _mailboxes("ToRecipients", "to"), summary=False),
        Prop("message:CcRecipients", _mailboxes("CcRecipients", "cc"), summary=False),
        Prop(
            "message:BccRecipients", _mailboxes("BccRecipients", "bcc"), summary=False
        ),
        Prop("message:ConversationTopic", _conversation_topic),
        Prop("message:From", _one_mailbox("From", "author")),
        Prop("message:InternetMessageId", _text("InternetMessageId", "message_id")),
        Prop("message:IsRead", _bool("IsRead", "is_read")),
        Prop("message:References", _text("References", "references")),
        Prop("message:ReplyTo", _mailboxes("ReplyTo", "reply_to"), summary=False),
        Prop("message:ReceivedBy", _one_mailbox("ReceivedBy", "received_by")),
        Prop("meeting:AssociatedCalendarItemId", _associated),
        Prop(
            "meeting:IsOutOfDate",
            _meeting_only(_const("IsOutOfDate", "false", SimItem), *_ALL_MEETINGS),
        ),
        Prop(
            "meeting:HasBeenProcessed",
            _meeting_only(_const("HasBeenProcessed", "true", SimItem), *_ALL_MEETINGS),
        ),
        Prop(
            "meeting:ResponseType",
            _meeting_only(_text("ResponseType", "response_type"), *_ALL_MEETINGS),
        ),
        Prop(
            "meetingRequest:MeetingRequestType",
            _meeting_only(_text("MeetingRequestType", "meeting_request_type"), _REQ),
        ),
        Prop("calendar:UID", _text("UID", "uid")),
        Prop("calendar:Start", _calendar_or_request(_time("Start", "start"))),
        Prop("calendar:End", _calendar_or_request(_time("End", "end"))),
        Prop(
            "calendar:IsAllDayEvent",
            _calendar_or_request(_bool("IsAllDayEvent", "is_all_day")),
        ),
        Prop(
            "calendar:LegacyFreeBusyStatus",
            _text("LegacyFreeBusyStatus", "legacy_free_busy_status"),
        ),
        Prop("calendar:Location", _calendar_or_request(_text("Location", "location"))),
        Prop("calendar:IsMeeting", _is_meeting),
        Prop("calendar:IsCancelled", _bool("IsCancelled", "is_cancelled")),
        Prop("calendar:IsRecurring", _is_recurring),
        Prop("calendar:CalendarItemType", _calendar_item_type),
        Prop("calendar:MyResponseType", _text("MyResponseType", "my_response_type")),
        Prop(
            "calendar:Organizer",
            _calendar_or_request(_one_mailbox("Organizer", "organizer")),
        ),
        Prop(
            "calendar:RequiredAttendees",
            _calendar_or_request(_attendees("RequiredAttendees", "required")),
            summary=False,
        ),
        Prop(
            "calendar:OptionalAttendees",
            _calendar_or_request(_attendees("OptionalAttendees", "optional")),
            summary=False,
        ),
        Prop("calendar:Resources", _attendees("Resources", "resources"), summary=False),
        Prop("calendar:Duration", _calendar_or_request(_duration)),
        Prop(
            "calendar:AppointmentSequenceNumber",
            _calendar_or_request(_text("AppointmentSequenceNumber", "sequence")),
        ),
        Prop("calendar:Recurrence", _recurrence, summary=False),
        Prop("calendar:ModifiedOccurrences", _modified, summary=False),
        Prop("calendar:DeletedOccurrences", _deleted, summary=False),
        Prop("calendar:StartTimeZone", _timezone("StartTimeZone"), summary=False),
        Prop("calendar:EndTimeZone", _timezone("EndTimeZone"), summary=False),
        Prop("task:CompleteDate", _time("CompleteDate", "complete_date")),
        Prop("task:Companies", _strings("Companies", "companies"), summary=False),
        Prop("task:Contacts", _strings("Contacts", "contacts"), summary=False),
        Prop("task:DueDate", _time("DueDate", "due_date")),
        Prop("task:IsComplete", _bool("IsComplete", "is_complete")),
        Prop("task:Owner", _text("Owner", "owner")),
        Prop("task:PercentComplete", _text("PercentComplete", "percent_complete")),
        Prop("task:StartDate", _time("StartDate", "start_date")),
        Prop("task:Status", _text("Status", "status")),
    )
}

DEFAULT_SHAPE = (
    "item:ItemId",
    "item:ParentFolderId",
    "item:ItemClass",
    "item:Subject",
    "item:Sensitivity",
    "item:DateTimeReceived",
    "item:Size",
    "item:Importance",
    "item:HasAttachments",
    "message:From",
    "message:IsRead",
    "calendar:Start",
    "calendar:End",
    "calendar:Organizer",
    "task:DueDate",
    "task:Status",
)


def render_item(
    item: SimItem, uris: Iterable[str], ctx: Context, summary: bool
) -> ET.Element:
    """``item`` as its EWS element with the asked-for properties.

    With ``summary`` (FindItem, SyncFolderItems) the properties those
    operations cannot return are left out.
    """
    wanted = set(uris) | {"item:ItemId"}
    elem = t(item.element)
    for uri, prop in ITEM_PROPS.items():
        if uri not in wanted or (summary and not prop.summary):
            continue
        child = prop.render(item, ctx)
        if child is not None:
            elem.append(child)
    return elem


def render_occurrence(
    master: SimCalendarItem, occurrence: Occurrence, uris: Iterable[str], ctx: Context
) -> ET.Element:
    """A modified occurrence, fetched by its own ItemId (an Exception item)."""
    exception = SimCalendarItem(
        subject=occurrence.subject or master.subject,
        uid=master.uid,
        start=occurrence.start,
        end=occurrence.end,
        location=occurrence.location or master.location,
        organizer=master.organizer,
        required=_either(occurrence.required, master.required),
        optional=_either(occurrence.optional, master.optional),
        is_cancelled=occurrence.is_cancelled,
        is_all_day=master.is_all_day,
        start_timezone=master.start_timezone,
        item_id=occurrence.item_id,
        change_key=occurrence.change_key,
        folder_id=master.folder_id,
    )
    elem = render_item(exception, uris, ctx, summary=False)
    for child in elem:
        if local(child) == "CalendarItemType":
            child.text = "Exception"
    if "calendar:OriginalStart" in set(uris):
        elem.append(t("OriginalStart", iso(occurrence.original_start)))
    return elem


def _either(own: tuple[Attendee, ...] | None, master: tuple[Attendee, ...]) -> Any:
    return master if own is None else own


# ------------------------------------------------------------------ folders


def render_folder(
    folder: SimFolder, uris: Iterable[str], mailbox: SimMailbox
) -> ET.Element:
    wanted = set(uris) | {"folder:FolderId"}
    elem = t(folder.element)
    elem.append(t("FolderId", Id=folder.folder_id, ChangeKey=folder.change_key))
    parent = mailbox.folders.get(folder.parent_id or "")
    if "folder:ParentFolderId" in wanted and parent is not None:
        elem.append(
            t("ParentFolderId", Id=parent.folder_id, ChangeKey=parent.change_key)
        )
    if "folder:FolderClass" in wanted and folder.folder_class:
        elem.append(t("FolderClass", folder.folder_class))
    if "folder:DisplayName" in wanted:
        elem.append(t("DisplayName", folder.name))
    _folder_counts(elem, folder, wanted, mailbox)
    if "folder:DistinguishedFolderId" in wanted and folder.distinguished_id:
        elem.append(t("DistinguishedFolderId", folder.distinguished_id))
    if "folder:EffectiveRights" in wanted:
        elem.append(_rights())
    return elem


def _folder_counts(
    elem: ET.Element, folder: SimFolder, wanted: set[str], mailbox: SimMailbox
) -> None:
    items = mailbox.folder_items(folder)
    unread = sum(1 for i in items if getattr(i, "is_read", True) is False)
    counts = (
        ("folder:TotalCount", "TotalCount", len(items)),
        (
            "folder:ChildFolderCount",
            "ChildFolderCount",
            len(mailbox.children(folder.folder_id)),
        ),
        ("folder:UnreadCount", "UnreadCount", unread),
    )
    for uri, tag, value in counts:
        if uri in wanted:
            elem.append(t(tag, str(value)))


def _rights() -> ET.Element:
    rights = t("EffectiveRights")
    for name in (
        "CreateAssociated",
        "CreateContents",
        "CreateHierarchy",
        "Delete",
        "Modify",
    ):
        rights.append(t(name, "true"))
    rights.append(t("Read", "true"))
    rights.append(t("ViewPrivateItems", "true"))
    return rights


FOLDER_DEFAULT_SHAPE = (
    "folder:FolderId",
    "folder:DisplayName",
    "folder:TotalCount",
    "folder:ChildFolderCount",
    "folder:UnreadCount",
)


# -------------------------------------------------------------------- MIME


def smtp_of(address: Address, resolve: Resolver) -> Address:
    """The SMTP form of an address, as Exchange writes it into MIME content.

    An X500 address the directory does not know becomes an IMCEAEX address,
    Exchange's encapsulation of an X500 address in SMTP syntax.
    """
    if address.routing_type.upper() != "EX":
        return address
    found = resolve(address)
    if found is not None:
        return Address(email=found.email, name=address.name or found.name)
    encoded = address.email.replace("/", "_").replace("=", "+3D").replace(" ", "+20")
    return Address(email=f"IMCEAEX-{encoded}@exchange.invalid", name=address.name)


def mime_bytes(item: SimMessage, resolve: Resolver) -> bytes:
    """The MIME content of a message: as stored, or made from its fields."""
    if item.mime is not None:
        return item.mime
    msg = EmailMessage(policy=email.policy.SMTP)
    _address_headers(msg, item, resolve)
    msg["Subject"] = item.subject
    sent = item.datetime_sent or item.datetime_received
    if sent is not None:
        msg["Date"] = format_datetime(sent.astimezone(UTC))
    for name, attr in (
        ("Message-ID", "message_id"),
        ("In-Reply-To", "in_reply_to"),
        ("References", "references"),
    ):
        value = getattr(item, attr)
        if value:
            msg[name] = value
    for name, value in item.extra_headers:
        msg[name] = value
    msg["MIME-Version"] = "1.0"
    _mime_body(msg, item, resolve)
    return msg.as_bytes()


def _address_headers(msg: EmailMessage, item: SimMessage, resolve: Resolver) -> None:
    singles = (("From", item.author), ("Sender", item.sender))
    for name, address in singles:
        if address is not None:
            msg[name] = _format(smtp_of(address, resolve))
    lists = [("To", item.to), ("Cc", item.cc), ("Reply-To", item.reply_to)]
    if item.bcc:
        lists.append(("Bcc", item.bcc))
    for name, addresses in lists:
        if addresses:
            msg[name] = ", ".join(_format(smtp_of(a, resolve)) for a in addresses)


def _format(address: Address) -> str:
    return formataddr((address.name, address.email)) if address.name else address.email


def _mime_body(msg: EmailMessage, item: SimMessage, resolve: Resolver) -> None:
    subtype = "html" if item.body_type == "HTML" else "plain"
    msg.set_content(item.body, subtype=subtype)
    if isinstance(item, SimMeetingMessage):
        calendar = _ics(item, resolve)
        msg.add_alternative(
            calendar, subtype="calendar", params={"method": _ics_method(item)}
        )
    for attachment in item.attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        msg.add_attachment(
            attachment.content,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=attachment.name,
        )


def _ics_method(item: SimMeetingMessage) -> str:
    return {
        MeetingKind.REQUEST: "REQUEST",
        MeetingKind.RESPONSE: "REPLY",
        MeetingKind.CANCELLATION: "CANCEL",
    }[item.kind]


# The VTIMEZONEs the simulator writes into a text/calendar part, by Windows id,
# with the IANA zone that gives the local times: Exchange's shape (see
# Exchange-made calendars such as the icalendar project's test files).
VTIMEZONES: dict[str, tuple[str, tuple[str, ...]]] = {
    "W. Europe Standard Time": (
        "Europe/Berlin",
        (
            "BEGIN:VTIMEZONE",
            "TZID:W. Europe Standard Time",
            "BEGIN:STANDARD",
            "DTSTART:16010101T030000",
            "TZOFFSETFROM:+0200",
            "TZOFFSETTO:+0100",
            "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10",
            "END:STANDARD",
            "BEGIN:DAYLIGHT",
            "DTSTART:16010101T020000",
            "TZOFFSETFROM:+0100",
            "TZOFFSETTO:+0200",
            "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=3",
            "END:DAYLIGHT",
            "END:VTIMEZONE",
        ),
    ),
}


def _ics(item: SimMeetingMessage, resolve: Resolver) -> str:
    zone = VTIMEZONES.get(item.timezone or "")
    lines = [
        "BEGIN:VCALENDAR",
        f"METHOD:{_ics_method(item)}",
        "PRODID:Microsoft Exchange Server 2016",
        "VERSION:2.0",
        *(zone[1] if zone else ()),
        "BEGIN:VEVENT",
    ]
    if item.organizer:
        lines.append("ORGANIZER:mailto:" + smtp_of(item.organizer, resolve).email)
    lines.extend(_ics_attendees(item, resolve))
    lines += [f"UID:{item.uid}", f"SUMMARY:{item.subject}"]
    for name, value in (
        ("RECURRENCE-ID", item.recurrence_id),
        ("DTSTART", item.start),
        ("DTEND", item.end),
    ):
        if value is not None:
            lines.append(_ics_when(name, value, item.timezone if zone else None))
    status = "CANCELLED" if item.kind is MeetingKind.CANCELLATION else "CONFIRMED"
    lines += [f"STATUS:{status}", f"SEQUENCE:{item.sequence}"]
    stamp = item.datetime_sent or item.datetime_received
    if stamp is not None:
        lines.append("DTSTAMP:" + _ics_time(stamp))
    if item.location:
        lines.append(f"LOCATION:{item.location}")
    lines += ["END:VEVENT", "END:VCALENDAR", ""]
    return "\r\n".join(lines)


def _ics_when(name: str, value: datetime, zone: str | None) -> str:
    """``DTSTART;TZID="W. Europe Standard Time":20260309T090000``, as Exchange
    writes times, or a UTC time when the simulator knows no zone for it."""
    if zone is None:
        return f"{name}:{_ics_time(value)}"
    local = value.astimezone(ZoneInfo(VTIMEZONES[zone][0]))
    return f'{name};TZID="{zone}":{local.strftime("%Y%m%dT%H%M%S")}'


def _ics_attendees(item: SimMeetingMessage, resolve: Resolver) -> list[str]:
    partstat = {"Accept": "ACCEPTED", "Decline": "DECLINED", "Tentative": "TENTATIVE"}
    lines = []
    for role, attendees in (
        ("REQ-PARTICIPANT", item.required),
        ("OPT-PARTICIPANT", item.optional),
    ):
        for attendee in attendees:
            stat = partstat.get(attendee.response, "NEEDS-ACTION")
            address = smtp_of(attendee.address, resolve).email
            lines.append(f"ATTENDEE;ROLE={role};PARTSTAT={stat}:mailto:{address}")
    return lines


def _ics_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


# ------------------------------------------------------------ XML into items


def _parse_text(elem: ET.Element) -> str:
    return elem.text or ""


def _parse_bool(elem: ET.Element) -> bool:
    # xs:boolean is "true", "false", "1" or "0"; exchangelib sends "1".
    return (elem.text or "").strip().lower() in ("true", "1")


def _parse_time(elem: ET.Element) -> datetime:
    return parse_iso(elem.text or "")


def _parse_int(elem: ET.Element) -> int:
    return int(float(elem.text or "0"))


def _parse_strings(elem: ET.Element) -> tuple[str, ...]:
    return tuple(s.text or "" for s in elem if local(s) == "String")


def parse_mailbox(elem: ET.Element) -> Address:
    values = {local(child): child.text or "" for child in elem}
    return Address(
        email=values.get("EmailAddress", ""),
        name=values.get("Name", ""),
        routing_type=values.get("RoutingType", "SMTP") or "SMTP",
        mailbox_type=values.get("MailboxType", "OneOff") or "OneOff",
    )


def _parse_one_mailbox(elem: ET.Element) -> Address:
    return parse_mailbox(elem[0])


def _parse_mailboxes(elem: ET.Element) -> tuple[Address, ...]:
    return tuple(parse_mailbox(child) for child in elem if local(child) == "Mailbox")


def _parse_attendees(elem: ET.Element) -> tuple[Attendee, ...]:
    found = []
    for child in elem:
        values = {local(c): c for c in child}
        response = values.get("ResponseType")
        found.append(
            Attendee(
                address=parse_mailbox(values["Mailbox"]),
                response=(response.text or "Unknown")
                if response is not None
                else "Unknown",
            )
        )
    return tuple(found)


Parser = Callable[[ET.Element], Any]

_PARSERS: dict[str, tuple[str, Parser]] = {
    "ItemClass": ("item_class", _parse_text),
    "Subject": ("subject", _parse_text),
    "Sensitivity": ("sensitivity", _parse_text),
    "Categories": ("categories", _parse_strings),
    "Importance": ("importance", _parse_text),
    "InReplyTo": ("in_reply_to", _parse_text),
    "ReminderDueBy": ("reminder_due_by", _parse_time),
    "ReminderIsSet": ("reminder_is_set", _parse_bool),
    "Sender": ("sender", _parse_one_mailbox),
    "ToRecipients": ("to", _parse_mailboxes),
    "CcRecipients": ("cc", _parse_mailboxes),
    "BccRecipients": ("bcc", _parse_mailboxes),
    "From": ("author", _parse_one_mailbox),
    "InternetMessageId": ("message_id", _parse_text),
    "IsRead": ("is_read", _parse_bool),
    "References": ("references", _parse_text),
    "ReplyTo": ("reply_to", _parse_mailboxes),
    "UID": ("uid", _parse_text),
    "Start": ("start", _parse_time),
    "End": ("end", _parse_time),
    "IsAllDayEvent": ("is_all_day", _parse_bool),
    "LegacyFreeBusyStatus": ("legacy_free_busy_status", _parse_text),
    "Location": ("location", _parse_text),
    "RequiredAttendees": ("required", _parse_attendees),
    "OptionalAttendees": ("optional", _parse_attendees),
    "Resources": ("resources", _parse_attendees),
    "Companies": ("companies", _parse_strings),
    "Contacts": ("contacts", _parse_strings),
    "DueDate": ("due_date", _parse_time),
    "PercentComplete": ("percent_complete", _parse_int),
    "StartDate": ("start_date", _parse_time),
    "Status": ("status", _parse_text),
}

ITEM_TYPES: dict[str, type[SimItem]] = {
    "Message": SimMessage,
    "CalendarItem": SimCalendarItem,
    "Task": SimTask,
}


def attr_for_uri(uri: str) -> str | None:
    """The item field a FieldURI such as ``item:Subject`` stands for."""
    tag = uri.split(":")[-1]
    if tag == "Body":
        return "body"
    entry = _PARSERS.get(tag)
    return entry[0] if entry else None


def parse_values(elem: ET.Element) -> dict[str, Any]:
    """The fields an item element sets; properties the simulator does not
    model are ignored."""
    values: dict[str, Any] = {}
    for child in elem:
        name = local(child)
        if name == "Body":
            values["body"] = child.text or ""
            values["body_type"] = child.get("BodyType", "Text")
        elif name == "MimeContent":
            values["mime"] = base64.b64decode(child.text or "")
        elif name in _PARSERS:
            attr, parse = _PARSERS[name]
            values[attr] = parse(child)
    return values


def _parse_attachments(elem: ET.Element) -> tuple[SimAttachment, ...]:
    """File attachments sent inline with a new item (Exchange 2010 SP1 and
    later take them in CreateItem)."""
    found = []
    for child in elem:
        if local(child) != "FileAttachment":
            raise ValueError(f"the simulator cannot attach a {local(child)}")
        values = {local(c): c.text or "" for c in child}
        if not values.get("Name"):
            raise ValueError("a FileAttachment needs a Name")
        found.append(
            SimAttachment(
                name=values["Name"],
                content=base64.b64decode(values.get("Content", "")),
                content_type=values.get("ContentType") or "application/octet-stream",
            )
        )
    return tuple(found)


def build_item(elem: ET.Element) -> SimItem:
    """A new item from a CreateItem ``t:Message``, ``t:Task``...element."""
    cls = ITEM_TYPES.get(local(elem))
    if cls is None:
        raise ValueError(f"the simulator cannot create a {local(elem)}")
    values = parse_values(elem)
    files = next((c for c in elem if local(c) == "Attachments"), None)
    if files is not None:
        values["attachments"] = _parse_attachments(files)
    if cls is SimMessage and "mime" in values:
        mime = values.pop("mime")
        return SimMessage.from_mime(mime, **values)
    known = {f for f in cls.__dataclass_fields__}
    return cls(**{k: v for k, v in values.items() if k in known})
