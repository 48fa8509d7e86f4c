"""Reading RFC 822 / MIME messages into items, as real mail is written.

Used by every connector that gets raw MIME (the local connector, and EWS or
Graph when they fetch MIME content). It deals with what real mail does:

- RFC 2047 encoded display names that hold a comma;
- unquoted ``Last, First <addr>`` names, which a strict parser splits in two;
- malformed address lists: the bad part is recorded as a defect, not linked;
- a missing or folded Message-ID;
- a body labelled iso-8859-1 that is really cp1252 (as browsers read it);
- a text/calendar part or an .ics attachment, which makes the item a meeting.
"""

from __future__ import annotations

import email
import email.errors
import email.policy
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.headerregistry import Address, Group
from email.message import Message
from email.utils import parsedate_to_datetime

from mailsync.errors import ParseError
from mailsync.items import Folder, Item, ItemKind, Meeting, Participant, Role

_POLICY = email.policy.default
_ADDRESS_HEADERS = (
    ("from", Role.FROM),
    ("to", Role.TO),
    ("cc", Role.CC),
    ("bcc", Role.BCC),
    ("reply-to", Role.REPLY_TO),
    ("sender", Role.DELEGATE),
)
_LIST_HEADERS = (
    "list-id",
    "list-unsubscribe",
    "list-post",
    "precedence",
    "auto-submitted",
    "x-auto-response-suppress",
    "x-autoreply",
    "x-autorespond",
    "feedback-id",
)
_MSGID = re.compile(r"<([^<>\s]+)>")
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")  # RFC 5322 ftext
_LATIN1_LABELS = {"iso-8859-1", "iso8859-1", "latin-1", "latin1", "l1"}
_ASCII_LABELS = {"us-ascii", "ascii", "ansi_x3.4-1968"}


def parse_message(data: bytes, provider_id: str, folder: Folder) -> Item:
    """Parse one raw message. Raises :class:`ParseError` if it is not mail."""
    if not data.strip():
        raise ParseError("empty file")
    msg = _parse(data)
    defects: list[str] = []
    if "from" not in msg and "date" not in msg:
        data, defects = _repair_headers(data)
        msg = _parse(data)

    if not any(msg.keys()):
        raise ParseError("no headers: not an RFC 822 message")
    if "from" not in msg and "date" not in msg:
        raise ParseError("no From and no Date header: not an RFC 822 message")
    return _build_item(msg, provider_id, folder, defects)


def _parse(data: bytes) -> Message:
    try:
        # compat32 leaves header values undecoded and is several times faster
        # than the default policy; we decode the few headers we use below.
        return email.message_from_bytes(data, policy=email.policy.compat32)
    except Exception as exc:  # the parser is lenient; this is a real failure
        raise ParseError(f"MIME parser failed: {type(exc).__name__}") from exc


def _repair_headers(data: bytes) -> tuple[bytes, list[str]]:
    """The message with its header block made readable, and what was changed.

    The standard library parser ends the header block at the first line that is
    not a header field, and it does not know the space before the colon that
    RFC 5322 section 4.5 allows (``From  : ...``). Either way every header after
    that point lands in the body. Such a line is dropped, such a space removed.
    """
    end = _BLANK_LINE.search(data)
    head, rest = (data[: end.start()], data[end.start() :]) if end else (data, b"")
    kept: list[bytes] = []
    defects: list[str] = []
    for line in head.splitlines(keepends=True):
        field = _FIELD.match(line)
        if field:
            kept.append(field.group(1) + b":" + line[field.end() :])
        elif line[:1] in (b" ", b"\t"):
            kept.append(line)
        else:
            text = line.strip()[:60].decode("ascii", errors="replace")
            defects.append(f"headers: dropped a line that is not a header: {text!r}")
    return b"".join(kept) + rest, defects


def _build_item(
    msg: Message, provider_id: str, folder: Folder, defects: list[str]
) -> Item:
    participants = list(_participants(msg, defects))
    body = _body_text(msg, defects)
    meeting, meeting_people = _meeting(msg, defects)

    item = Item(
        provider_id=provider_id,
        folder=folder,
        kind=ItemKind.MEETING if meeting else ItemKind.MESSAGE,
        subject=_header_text(msg, "subject", defects),
        occurred_at=_date(msg, defects),
        received_at=_received(msg),
        participants=participants + meeting_people,
        message_id=normalise_message_id(_raw(msg, "message-id")),
        in_reply_to=message_ids(_raw(msg, "in-reply-to")),
        references=message_ids(_raw(msg, "references")),
        body_text=body,
        sensitivity=(_raw(msg, "sensitivity") or "").strip().lower() or None,
        categories=_categories(msg),
        list_headers={h: _raw(msg, h).strip() for h in _LIST_HEADERS if h in msg},
        defects=defects,
        meeting=meeting,
        is_report=msg.get_content_type() == "multipart/report",
    )
    if item.message_id is None:
        raw_id = _raw(msg, "message-id").strip()
        defects.append(
            f"Message-ID unusable ({len(raw_id)} characters)"
            if raw_id
            else "no Message-ID"
        )
    return item


def _raw(msg: Message, name: str) -> str:
    """A header's text without the structured parsing (cheap, never raises)."""
    for key, value in msg.raw_items():
        if key.lower() == name:
            return unfold(str(value))
    return ""


def _header_text(msg: Message, name: str, defects: list[str]) -> str:
    """A header decoded from RFC 2047 encoded words, on one line."""
    raw = _raw(msg, name)
    if "=?" not in raw:
        return raw
    try:
        return " ".join(str(make_header(decode_header(raw))).split())
    except (LookupError, UnicodeError, ValueError, email.errors.HeaderParseError):
        defects.append(f"{name}: undecodable encoded words")
        return raw


def unfold(value: str) -> str:
    """A header value on one line; raw 8-bit bytes read as UTF-8 (RFC 6532)."""
    text = " ".join(value.split())
    if any("\udc80" <= char <= "\udcff" for char in text):
        raw = text.encode("utf-8", errors="surrogateescape")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:  # unlabelled 8-bit text from an old mailer
            text = raw.decode("cp1252", errors="replace")
    return text.replace("\x00", "")


MAX_ID = 900  # longer ids are not ids a mailer meant; identity falls back to content


def normalise_message_id(value: str | None) -> str | None:
    """The Message-ID without angle brackets or folding whitespace."""
    if not value or len(value) > MAX_ID:
        return None
    found = _MSGID.search(value)
    if found:
        return found.group(1)
    bare = "".join(value.split())
    return bare.strip("<>") or None


def message_ids(value: str | None) -> list[str]:
    """All message ids in an In-Reply-To or References header, in order."""
    if not value:
        return []
    return [ref for ref in _MSGID.findall(value) if len(ref) <= MAX_ID]


def _categories(msg: Message) -> tuple[str, ...]:
    raw = _raw(msg, "keywords") or _raw(msg, "x-categories")
    return tuple(c.strip() for c in raw.split(",") if c.strip())


# --- addresses -------------------------------------------------------------


def _participants(msg: Message, defects: list[str]) -> Iterator[Participant]:
    # The raw text, not the decoded header: encoded words must stay whole tokens
    # so that a comma inside an encoded display name does not split the list.
    roles = dict(_ADDRESS_HEADERS)
    for name, value in msg.raw_items():
        role = roles.get(name.lower())
        if role is not None:
            text = unfold(str(value))
            yield from parse_address_list(text, role, defects, name.lower())


def parse_address_list(
    value: str, role: Role, defects: list[str], header: str = "address"
) -> Iterator[Participant]:
    """Parse one address header. Bad parts become defects, never participants."""
    for piece in _rejoin_last_first(_split_top_level(value)):
        simple = _simple_address(piece)
        if simple is not None:
            yield Participant(address=simple[1], name=simple[0], role=role)
            continue
        try:
            parsed = _POLICY.header_factory(header, piece)
        except (ValueError, IndexError, TypeError, RecursionError):
            # RecursionError: the parser recurses once per nested comment.
            defects.append(f"{header}: cannot parse {piece.strip()[:80]!r}")
            continue
        for group in getattr(parsed, "groups", ()):
            yield from _group_members(group, role, defects, header, piece)


def _group_members(
    group: Group, role: Role, defects: list[str], header: str, piece: str
) -> Iterator[Participant]:
    for address in group.addresses:
        if not _plausible(address):
            defects.append(f"{header}: not an address: {piece.strip()[:80]!r}")
            continue
        addr = f"{address.username}@{address.domain}"
        yield Participant(address=addr, name=address.display_name.strip(), role=role)


def _plausible(address: Address) -> bool:
    domain = address.domain
    return bool(address.username and domain and "." in domain.strip("[]"))


_ADDR_SPEC = r"([^\s\"<>()\[\],;:@\\]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)"
_BARE = re.compile(rf"\s*<?{_ADDR_SPEC}>?\s*")
_NAMED = re.compile(rf"\s*(\"?)([A-Za-z0-9 .'_-]*)\1\s*<{_ADDR_SPEC}>\s*")


def _simple_address(piece: str) -> tuple[str, str] | None:
    """A plain ``addr`` or ``Name <addr>`` read without the full parser.

    Most addresses are this simple; anything else (encoded words, comments,
    quoting, groups, non-ASCII) goes through the standard library's parser.
    """
    bare = _BARE.fullmatch(piece)
    if bare:
        return "", bare.group(1)
    named = _NAMED.fullmatch(piece)
    if named:
        return named.group(2).strip(), named.group(3)
    return None


def _split_top_level(value: str) -> list[str]:
    """Split at commas that are outside quotes, angle brackets and comments."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    angle = comment = 0
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"' and not comment:
            quoted = not quoted
        elif not quoted:
            if char == "(":
                comment += 1
            elif char == ")" and comment:
                comment -= 1
            elif char == "<" and not comment:
                angle += 1
            elif char == ">" and angle and not comment:
                angle -= 1
            elif char == "," and not angle and not comment:
                pieces.append("".join(current))
                current = []
                continue
        current.append(char)
    pieces.append("".join(current))
    return [p for p in pieces if p.strip()]


def _rejoin_last_first(pieces: list[str]) -> list[str]:
    """Join ``Last`` and ``First <addr>`` back into ``"Last, First" <addr>``.

    A bare word with no @ and no angle address, followed by a piece that has a
    display name and an angle address, is the first half of an unquoted
    ``Last, First`` name (Outlook and Lotus Notes gateways write these).
    """
    result: list[str] = []
    index = 0
    while index < len(pieces):
        piece = pieces[index]
        following = pieces[index + 1] if index + 1 < len(pieces) else ""
        if _is_bare_name(piece) and _has_named_angle(following):
            name, _, rest = following.strip().partition("<")
            joined = f"{piece.strip()}, {name.strip()}".replace('"', "")
            result.append(f'"{joined}" <{rest}')
            index += 2
            continue
        result.append(piece)
        index += 1
    return result


def _is_bare_name(piece: str) -> bool:
    text = piece.strip()
    return bool(text) and "@" not in text and "<" not in text and ":" not in text


def _has_named_angle(piece: str) -> bool:
    text = piece.strip()
    return "<" in text and "@" in text and not text.startswith(("<", '"'))


# --- body ------------------------------------------------------------------


def _body_text(msg: Message, defects: list[str]) -> str:
    part = _body_part(msg)
    if part is None:
        return ""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    text = decode_text(payload, part.get_content_charset(), defects)
    if part.get_content_subtype() == "html":
        text = _strip_html(text)
    return text


def _body_part(msg: Message) -> Message | None:
    """The first inline text/plain part, else the first text/html part."""
    html_part = None
    for part in msg.walk():
        if part.is_multipart() or part.get_filename():
            continue
        if "attachment" in str(part.get("content-disposition", "")).lower():
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain":
            return part
        if ctype == "text/html" and html_part is None:
            html_part = part
    return html_part


def decode_text(payload: bytes, charset: str | None, defects: list[str]) -> str:
    """Decode body bytes as real mail is labelled.

    An iso-8859-1 label is read as cp1252, as browsers do: Windows mailers
    label cp1252 text that way. Text with no label, or labelled ASCII, that
    holds 8-bit bytes is read as UTF-8 when it is valid UTF-8, else as cp1252.
    """
    label = (charset or "us-ascii").lower()
    if label in _ASCII_LABELS:
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            label = "iso-8859-1"
    if label in _LATIN1_LABELS:
        try:
            return payload.decode("cp1252")
        except UnicodeDecodeError:  # the five bytes cp1252 leaves undefined
            return payload.decode("latin-1")
    try:
        return payload.decode(label)
    except LookupError:
        defects.append(f"body: unknown charset {charset!r}")
    except ValueError:  # undecodable bytes, or a label the codecs reject (a NUL)
        defects.append(f"body: not valid {charset!r}")
    return payload.decode("utf-8", errors="replace")


_TAG = re.compile(r"<[^>]*>")


def _strip_html(text: str) -> str:
    import html

    return html.unescape(_TAG.sub(" ", text))


# --- date ------------------------------------------------------------------


def _received(msg: Message) -> datetime | None:
    """When the last hop took the message in: the date of the top Received."""
    raw = _raw(msg, "received")
    if ";" not in raw:
        return None
    try:
        parsed = parsedate_to_datetime(raw.rpartition(";")[2].strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def _date(msg: Message, defects: list[str]) -> datetime | None:
    raw = _raw(msg, "date")
    if not raw.strip():
        defects.append("no Date")
        return None
    try:
        parsed = parsedate_to_datetime(" ".join(raw.split()))
        if parsed.tzinfo is None:
            defects.append("Date: no zone; read as UTC")
            parsed = parsed.replace(tzinfo=UTC)
        # OverflowError: a date at the edge of year 1 or 9999 leaves it in UTC.
        return parsed.astimezone(UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        defects.append(f"Date: cannot read {raw.strip()[:40]!r}")
        return None


# --- calendar --------------------------------------------------------------


def _meeting(
    msg: Message, defects: list[str]
) -> tuple[Meeting | None, list[Participant]]:
    part = _calendar_part(msg)
    if part is None:
        return None, []
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return None, []
    from mailsync import calendar

    try:
        return calendar.read_invitation(payload)
    except ParseError as exc:
        defects.append(f"calendar part: {exc}")
        return None, []


def _calendar_part(msg: Message) -> Message | None:
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        filename = (part.get_filename() or "").lower()
        if ctype in ("text/calendar", "application/ics") or filename.endswith(".ics"):
            return part
    return None
