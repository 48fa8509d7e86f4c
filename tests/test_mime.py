"""Reading raw messages as real mail is written, linking rule 2 (mailsync.mime).

Each case is a small message written out here. Expected values come from the
RFCs (5322 messages, 2047 encoded words, 6532 UTF-8 headers, 5545 calendars)
or are worked out by hand, never copied from what the code prints.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from mailsync.errors import ParseError
from mailsync.items import Folder, FolderRole, Item, ItemKind, Participant, Role
from mailsync.mime import parse_message
from tests.conftest import CONTOSO, SHARED

INBOX = Folder(id="inbox", name="Inbox", role=FolderRole.INBOX)
MIKEL = SHARED / "corpus" / "eml-mikel-mail-fixtures"


def parse(data: bytes) -> Item:
    return parse_message(data, "1", INBOX)


def people(data: bytes, role: Role) -> list[Participant]:
    return [p for p in parse(data).participants if p.role is role]


# --- address headers (RFC 5322 section 3.4, RFC 2047) ----------------------


def test_q_encoded_display_name_with_a_comma_is_one_participant():
    data = (
        b"From: =?utf-8?Q?Carothers=2C_Andy?= <andy@x.com>\n"
        b"To: tamara@contoso.com\n"
        b"Date: Tue, 10 Nov 2026 10:00:00 -0800\n"
        b"Message-ID: <q@x.com>\n"
        b"\n"
        b"Hello\n"
    )

    senders = people(data, Role.FROM)

    assert [(p.address, p.name) for p in senders] == [("andy@x.com", "Carothers, Andy")]


def test_b_encoded_display_name_with_a_comma_is_one_participant():
    # Q2Fyb3RoZXJzLCBBbmR5 is base64 for "Carothers, Andy".
    data = (
        b"From: =?UTF-8?B?Q2Fyb3RoZXJzLCBBbmR5?= <andy@x.com>\n"
        b"Date: Tue, 10 Nov 2026 10:00:00 -0800\n"
        b"\n"
        b"Hello\n"
    )

    senders = people(data, Role.FROM)

    assert [(p.address, p.name) for p in senders] == [("andy@x.com", "Carothers, Andy")]


def test_unquoted_last_first_name_is_not_split_in_two():
    data = (
        b"From: tamara@contoso.com\n"
        b"To: Nay, Lorraine <lorraine@x.com>, Bob <bob@y.com>\n"
        b"Date: Tue, 10 Nov 2026 10:00:00 -0800\n"
        b"\n"
        b"Hello\n"
    )

    recipients = people(data, Role.TO)

    assert [(p.address, p.name) for p in recipients] == [
        ("lorraine@x.com", "Nay, Lorraine"),
        ("bob@y.com", "Bob"),
    ]


def test_quoted_display_name_with_a_comma():
    data = (
        b"From: tamara@contoso.com\n"
        b'Cc: "Jacobs, Ted K" <tjacobs@ou.edu>\n'
        b"Date: Tue, 10 Nov 2026 10:00:00 -0800\n"
        b"\n"
        b"Hello\n"
    )

    copied = people(data, Role.CC)

    assert [(p.address, p.name) for p in copied] == [
        ("tjacobs@ou.edu", "Jacobs, Ted K")
    ]


def test_a_bare_word_in_a_list_is_a_defect_not_a_participant():
    data = (
        b"From: tamara@contoso.com\n"
        b"To: bogus, real@x.com\n"
        b"Date: Tue, 10 Nov 2026 10:00:00 -0800\n"
        b"\n"
        b"Hello\n"
    )

    item = parse(data)

    recipients = [p for p in item.participants if p.role is Role.TO]
    assert [p.address for p in recipients] == ["real@x.com"]
    assert any("bogus" in defect for defect in item.defects)
    assert not any("bogus" in p.address or "bogus" in p.name for p in item.participants)


def test_empty_group_gives_no_participant():
    data = (
        b"From: andy@x.com\n"
        b"To: andy@x.com\n"
        b"Cc: undisclosed-recipients:;\n"
        b"Date: Tue, 10 Nov 2026 10:00:00 -0800\n"
        b"\n"
        b"Hello\n"
    )

    assert people(data, Role.CC) == []


def test_group_members_are_participants():
    data = (
        b"From: tamara@contoso.com\n"
        b"To: team: a@x.com, b@y.com;\n"
        b"Date: Tue, 10 Nov 2026 10:00:00 -0800\n"
        b"\n"
        b"Hello\n"
    )

    assert [p.address for p in people(data, Role.TO)] == ["a@x.com", "b@y.com"]


def test_empty_address_header_gives_no_participant():
    data = (
        b"From: tamara@contoso.com\n"
        b"Cc: \n"
        b"Date: Tue, 10 Nov 2026 10:00:00 -0800\n"
        b"\n"
        b"Hello\n"
    )

    item = parse(data)

    assert [p.role for p in item.participants] == [Role.FROM]
    assert item.defects == ["no Message-ID"]


def test_deeply_nested_comments_are_a_defect_not_a_crash():
    # RFC 5322 comments nest; the standard library parser recurses on them.
    data = (
        b"From: tamara@contoso.com\n"
        b"To: " + b"(" * 5000 + b"a@x.com\n"
        b"Date: Tue, 10 Nov 2026 10:00:00 -0800\n"
        b"\n"
        b"Hello\n"
    )

    item = parse(data)

    assert [p.role for p in item.participants] == [Role.FROM]
    assert any(defect.startswith("to:") for defect in item.defects)


def test_sender_is_the_delegate():
    data = (
        b"From: Lorraine Nay <lorraine@x.com>\n"
        b"Sender: Kelly Focht <kelly@x.com>\n"
        b"Date: Tue, 10 Nov 2026 10:00:00 -0800\n"
        b"\n"
        b"Hello\n"
    )

    assert [p.address for p in people(data, Role.DELEGATE)] == ["kelly@x.com"]


def test_raw_utf8_in_headers():
    # RFC 6532: UTF-8 written straight into the header, no encoded words.
    data = (
        "From: Jürgen Müller <jürgen@bücher.de>\n"
        "Subject: Grüße aus München\n"
        "Date: Tue, 10 Nov 2026 10:00:00 +0100\n"
        "\n"
        "Hallo\n"
    ).encode()

    item = parse(data)

    assert [(p.address, p.name) for p in item.participants] == [
        ("jürgen@bücher.de", "Jürgen Müller")
    ]
    assert item.subject == "Grüße aus München"


def test_encoded_subject_is_decoded():
    # RFC 2047 section 6.2: the space between two encoded words is dropped.
    data = (
        b"From: andy@x.com\n"
        b"Subject: =?iso-8859-1?Q?Gr=FC=DFe?= =?utf-8?Q?_aus_M=C3=BCnchen?=\n"
        b"Date: Tue, 10 Nov 2026 10:00:00 +0100\n"
        b"\n"
        b"Hallo\n"
    )

    assert parse(data).subject == "Grüße aus München"


# --- message ids (RFC 5322 section 3.6.4) ----------------------------------


def test_missing_message_id_is_none_and_a_defect():
    data = b"From: andy@x.com\nDate: Tue, 10 Nov 2026 10:00:00 -0800\n\nHello\n"

    item = parse(data)

    assert item.message_id is None
    assert "no Message-ID" in item.defects


def test_folded_message_id():
    data = (
        b"From: andy@x.com\r\n"
        b"Date: Tue, 10 Nov 2026 10:00:00 -0800\r\n"
        b"Message-ID:\r\n"
        b" <abc@x.com>\r\n"
        b"\r\n"
        b"Hello\r\n"
    )

    item = parse(data)

    assert item.message_id == "abc@x.com"
    assert item.defects == []


def test_in_reply_to_and_references_in_order():
    data = (
        b"From: andy@x.com\n"
        b"Date: Tue, 10 Nov 2026 10:00:00 -0800\n"
        b"Message-ID: <4@x.com>\n"
        b"In-Reply-To: <3@contoso.com>\n"
        b"References: <1@contoso.com> <2@x.com>\n"
        b"\t<3@contoso.com>\n"
        b"\n"
        b"Hello\n"
    )

    item = parse(data)

    assert item.message_id == "4@x.com"
    assert item.in_reply_to == ["3@contoso.com"]
    assert item.references == ["1@contoso.com", "2@x.com", "3@contoso.com"]


# --- bodies ----------------------------------------------------------------


def test_latin1_label_with_cp1252_bytes_reads_as_cp1252():
    # 0x93 0x94 0x96 0x80 are C1 controls in ISO 8859-1 but quotes, an en
    # dash and the euro sign in windows-1252, which is what the sender meant.
    data = (
        b"From: andy@tailspintoys.co.uk\n"
        b"Date: Tue, 20 Oct 2026 09:00:00 +0100\n"
        b"MIME-Version: 1.0\n"
        b'Content-Type: text/plain; charset="iso-8859-1"\n'
        b"Content-Transfer-Encoding: 8bit\n"
        b"\n"
        b"\x93Dublin\x94 \x96 1\x80\n"
    )

    assert parse(data).body_text == "\u201cDublin\u201d \u2013 1\u20ac\n"


def test_quoted_printable_utf8_body():
    data = (
        b"From: sam@example.com\n"
        b"Date: Tue, 10 Nov 2026 10:00:00 -0800\n"
        b"MIME-Version: 1.0\n"
        b"Content-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: quoted-printable\n"
        b"\n"
        b"Gr=C3=BC=C3=9Fe, a long line that is wrapped by a soft line =\n"
        b"break =E2=82=AC\n"
    )

    assert parse(data).body_text == (
        "Grüße, a long line that is wrapped by a soft line break €\n"
    )


def test_html_only_body_has_its_tags_stripped():
    data = (
        b"From: news@example.com\n"
        b"Date: Tue, 10 Nov 2026 10:00:00 -0800\n"
        b"MIME-Version: 1.0\n"
        b"Content-Type: text/html; charset=us-ascii\n"
        b"\n"
        b"<html><body><p>Hello&nbsp;<b>Andy</b> &amp; team</p></body></html>\n"
    )

    text = parse(data).body_text

    assert "<" not in text
    assert " ".join(text.split()) == "Hello Andy & team"


def test_plain_part_is_preferred_to_html():
    data = (
        b"From: news@example.com\n"
        b"Date: Tue, 10 Nov 2026 10:00:00 -0800\n"
        b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/alternative; boundary="b1"\n'
        b"\n"
        b"--b1\n"
        b"Content-Type: text/html\n"
        b"\n"
        b"<p>html</p>\n"
        b"--b1\n"
        b"Content-Type: text/plain\n"
        b"\n"
        b"plain\n"
        b"--b1--\n"
    )

    assert parse(data).body_text.strip() == "plain"


def test_unknown_charset_is_a_defect_not_a_crash():
    data = (
        b"From: andy@x.com\n"
        b"Date: Tue, 10 Nov 2026 10:00:00 -0800\n"
        b"Message-ID: <c@x.com>\n"
        b"MIME-Version: 1.0\n"
        b"Content-Type: text/plain; charset=x-no-such-charset\n"
        b"\n"
        b"Hello\n"
    )

    item = parse(data)

    assert item.body_text == "Hello\n"
    assert len(item.defects) == 1
    assert "x-no-such-charset" in item.defects[0]


def test_charset_with_a_nul_is_a_defect_not_a_crash():
    data = (
        b"From: andy@x.com\n"
        b"Date: Tue, 10 Nov 2026 10:00:00 -0800\n"
        b"Message-ID: <c@x.com>\n"
        b"Content-Type: text/plain; charset=utf\x008\n"
        b"\n"
        b"Hello\n"
    )

    item = parse(data)

    assert item.body_text == "Hello\n"
    assert len(item.defects) == 1


# --- dates (RFC 5322 section 3.3) ------------------------------------------


def test_date_with_a_zone_becomes_utc():
    data = b"From: andy@x.com\nDate: Tue, 10 Nov 2026 10:00:00 -0800\n\nHello\n"

    assert parse(data).occurred_at == datetime(2026, 11, 10, 18, 0, tzinfo=UTC)


def test_obsolete_zone_name_is_read():
    # RFC 5322 section 4.3: "EDT" is -0400.
    data = b"From: andy@x.com\nDate: Mon, 5 Oct 2026 09:30:00 EDT\n\nHello\n"

    assert parse(data).occurred_at == datetime(2026, 10, 5, 13, 30, tzinfo=UTC)


def test_missing_date_is_none_and_a_defect():
    data = b"From: andy@x.com\nMessage-ID: <d@x.com>\n\nHello\n"

    item = parse(data)

    assert item.occurred_at is None
    assert item.defects == ["no Date"]


@pytest.mark.parametrize(
    "written",
    [
        b"next Tuesday",
        b"Tue, 31 Feb 2026 10:00:00 -0800",
        # 23:00 at -0500 on the last day of 9999 is in the year 10000 in UTC.
        b"Fri, 31 Dec 9999 23:00:00 -0500",
    ],
)
def test_unreadable_date_is_none_and_a_defect(written: bytes):
    data = b"From: andy@x.com\nMessage-ID: <d@x.com>\nDate: " + written + b"\n\nHi\n"

    item = parse(data)

    assert item.occurred_at is None
    assert len(item.defects) == 1
    assert item.defects[0].startswith("Date:")


# --- headers that mark the kind of mail ------------------------------------


def test_sensitivity_is_lower_cased():
    data = (
        b"From: andy@x.com\n"
        b"Date: Fri, 9 Oct 2026 18:00:00 -0500\n"
        b"Sensitivity: Company-Confidential\n"
        b"\n"
        b"Hello\n"
    )

    assert parse(data).sensitivity == "company-confidential"


def test_bulk_and_automatic_headers_land_in_list_headers():
    data = (
        b"From: news@toyretail.example\n"
        b"Date: Tue, 6 Oct 2026 06:00:00 -0500\n"
        b"List-Id: Toy Retail Weekly <weekly.toyretail.example>\n"
        b"List-Unsubscribe: <mailto:leave@toyretail.example>\n"
        b"Precedence: bulk\n"
        b"Auto-Submitted: auto-generated\n"
        b"\n"
        b"News\n"
    )

    item = parse(data)

    assert dict(item.list_headers) == {
        "list-id": "Toy Retail Weekly <weekly.toyretail.example>",
        "list-unsubscribe": "<mailto:leave@toyretail.example>",
        "precedence": "bulk",
        "auto-submitted": "auto-generated",
    }
    assert item.sensitivity is None


def test_multipart_report_is_a_report():
    # RFC 3464: a delivery status notification.
    data = (
        b"From: MAILER-DAEMON@mail.contoso.com\n"
        b"To: tamara@contoso.com\n"
        b"Date: Tue, 10 Nov 2026 10:00:00 -0800\n"
        b"MIME-Version: 1.0\n"
        b"Content-Type: multipart/report; report-type=delivery-status;\n"
        b'\tboundary="r1"\n'
        b"\n"
        b"--r1\n"
        b"Content-Type: text/plain\n"
        b"\n"
        b"Your message could not be delivered.\n"
        b"--r1\n"
        b"Content-Type: message/delivery-status\n"
        b"\n"
        b"Reporting-MTA: dns; mail.contoso.com\n"
        b"\n"
        b"Final-Recipient: rfc822; nobody@x.com\n"
        b"Action: failed\n"
        b"Status: 5.1.1\n"
        b"--r1--\n"
    )

    item = parse(data)

    assert item.is_report
    # RFC 2046 section 5.1.1: the line break before a boundary belongs to it.
    assert item.body_text == "Your message could not be delivered."


def test_ordinary_message_is_not_a_report():
    data = b"From: andy@x.com\nDate: Tue, 10 Nov 2026 10:00:00 -0800\n\nHello\n"

    item = parse(data)

    assert not item.is_report
    assert item.kind is ItemKind.MESSAGE
    assert item.list_headers == {}


# --- calendar parts (RFC 5545, RFC 5546) -----------------------------------


def _invitation(calendar: str) -> bytes:
    """A message whose second part is the given iCalendar text."""
    head = (
        "From: Tamara Johnston <tamara@contoso.com>\r\n"
        "To: Andy Carothers <andy@x.com>\r\n"
        "Date: Tue, 27 Oct 2026 10:05:00 -0700\r\n"
        "Message-ID: <invite@contoso.com>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="c1"\r\n'
        "\r\n"
        "--c1\r\n"
        "Content-Type: text/plain\r\n"
        "\r\n"
        "Pilot review\r\n"
        "--c1\r\n"
        'Content-Type: text/calendar; charset="utf-8"; method=REQUEST\r\n'
        "\r\n"
    )
    tail = "--c1--\r\n"
    return (head + calendar.replace("\n", "\r\n") + tail).encode()


_PACIFIC = """\
BEGIN:VTIMEZONE
TZID:Pacific Standard Time
BEGIN:STANDARD
DTSTART:16011104T020000
RRULE:FREQ=YEARLY;BYDAY=1SU;BYMONTH=11
TZOFFSETFROM:-0700
TZOFFSETTO:-0800
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:16010311T020000
RRULE:FREQ=YEARLY;BYDAY=2SU;BYMONTH=3
TZOFFSETFROM:-0800
TZOFFSETTO:-0700
END:DAYLIGHT
END:VTIMEZONE
"""


def test_request_makes_a_meeting_with_its_people():
    # 2026-11-10 is after the first Sunday of November, so Pacific is -0800:
    # 10:00 there is 18:00 UTC.
    item = parse(
        _invitation(
            "BEGIN:VCALENDAR\n"
            "VERSION:2.0\n"
            "PRODID:-//Contoso//Test//EN\n"
            "METHOD:REQUEST\n" + _PACIFIC + "BEGIN:VEVENT\n"
            "UID:pilot-review-1@contoso.com\n"
            "DTSTAMP:20261027T170500Z\n"
            "SEQUENCE:2\n"
            "DTSTART;TZID=Pacific Standard Time:20261110T100000\n"
            "DTEND;TZID=Pacific Standard Time:20261110T110000\n"
            "SUMMARY:Pilot review\n"
            "STATUS:CONFIRMED\n"
            "ORGANIZER;CN=Tamara Johnston:mailto:tamara@contoso.com\n"
            "ATTENDEE;PARTSTAT=ACCEPTED;CN=Andy Carothers:mailto:andy@x.com\n"
            'ATTENDEE;PARTSTAT=tentative;CN="Nay, Lorraine":MAILTO:lorraine@x.com\n'
            "END:VEVENT\n"
            "END:VCALENDAR\n"
        )
    )

    assert item.kind is ItemKind.MEETING
    assert item.meeting is not None
    assert item.meeting.uid == "pilot-review-1@contoso.com"
    assert item.meeting.method == "REQUEST"
    assert item.meeting.sequence == 2
    assert item.meeting.status == "CONFIRMED"
    assert item.meeting.start == datetime(2026, 11, 10, 18, 0, tzinfo=UTC)
    assert item.meeting.end == datetime(2026, 11, 10, 19, 0, tzinfo=UTC)
    calendar_people = [
        (p.role, p.address, p.name, p.response)
        for p in item.participants
        if p.role in (Role.ORGANIZER, Role.ATTENDEE)
    ]
    assert calendar_people == [
        (Role.ORGANIZER, "tamara@contoso.com", "Tamara Johnston", None),
        (Role.ATTENDEE, "andy@x.com", "Andy Carothers", "ACCEPTED"),
        (Role.ATTENDEE, "lorraine@x.com", "Nay, Lorraine", "TENTATIVE"),
    ]
    assert item.defects == []


def test_all_day_event_keeps_its_dates():
    item = parse(
        _invitation(
            "BEGIN:VCALENDAR\n"
            "VERSION:2.0\n"
            "METHOD:REQUEST\n"
            "BEGIN:VEVENT\n"
            "UID:offsite@contoso.com\n"
            "DTSTAMP:20261027T170500Z\n"
            "DTSTART;VALUE=DATE:20261110\n"
            "DTEND;VALUE=DATE:20261111\n"
            "END:VEVENT\n"
            "END:VCALENDAR\n"
        )
    )

    assert item.meeting is not None
    assert item.meeting.start == date(2026, 11, 10)
    assert not isinstance(item.meeting.start, datetime)
    assert item.meeting.end == date(2026, 11, 11)


def _fixed_zone_invitation(uid: str, offset: str) -> bytes:
    # Outlook writes "Customized Time Zone" for a zone it has no name for, so
    # the same TZID means different zones in different invitations.
    return _invitation(
        "BEGIN:VCALENDAR\n"
        "VERSION:2.0\n"
        "METHOD:REQUEST\n"
        "BEGIN:VTIMEZONE\n"
        "TZID:Customized Time Zone\n"
        "BEGIN:STANDARD\n"
        "DTSTART:16010101T000000\n"
        f"TZOFFSETFROM:{offset}\n"
        f"TZOFFSETTO:{offset}\n"
        "END:STANDARD\n"
        "END:VTIMEZONE\n"
        "BEGIN:VEVENT\n"
        f"UID:{uid}\n"
        "DTSTAMP:20261027T170500Z\n"
        "DTSTART;TZID=Customized Time Zone:20261110T100000\n"
        "END:VEVENT\n"
        "END:VCALENDAR\n"
    )


def test_each_invitation_uses_its_own_vtimezone():
    # RFC 5545 section 3.8.3.1: a TZID names a VTIMEZONE in its own object only.
    first = parse(_fixed_zone_invitation("one@contoso.com", "-0500"))
    second = parse(_fixed_zone_invitation("two@contoso.com", "+0100"))

    assert first.meeting is not None and second.meeting is not None
    assert first.meeting.start == datetime(2026, 11, 10, 15, 0, tzinfo=UTC)
    assert second.meeting.start == datetime(2026, 11, 10, 9, 0, tzinfo=UTC)


def test_utc_and_floating_times():
    item = parse(
        _invitation(
            "BEGIN:VCALENDAR\n"
            "VERSION:2.0\n"
            "BEGIN:VEVENT\n"
            "UID:utc@contoso.com\n"
            "DTSTAMP:20261027T170500Z\n"
            "DTSTART:20261110T180000Z\n"
            "DTEND:20261110T190000\n"
            "END:VEVENT\n"
            "END:VCALENDAR\n"
        )
    )

    assert item.meeting is not None
    assert item.meeting.start == datetime(2026, 11, 10, 18, 0, tzinfo=UTC)
    # A floating time has no zone; it is read as UTC.
    assert item.meeting.end == datetime(2026, 11, 10, 19, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "calendar",
    [
        "this is not a calendar\n",
        "BEGIN:VCALENDAR\nVERSION:2.0\nEND:VCALENDAR\n",
        "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART:20261110T100000Z\nEND:VEVENT\n"
        "END:VCALENDAR\n",
        "BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:bad-start@contoso.com\n"
        "DTSTART:INVALID-DATE\nEND:VEVENT\nEND:VCALENDAR\n",
    ],
    ids=["not-icalendar", "no-vevent", "no-uid", "bad-dtstart"],
)
def test_broken_calendar_part_is_a_defect(calendar: str):
    item = parse(_invitation(calendar))

    assert item.kind is ItemKind.MESSAGE
    assert item.meeting is None
    assert len(item.defects) == 1
    assert item.defects[0].startswith("calendar part:")
    assert [p.role for p in item.participants] == [Role.FROM, Role.TO]


def test_a_second_dtstart_is_ignored():
    # RFC 5545 allows one DTSTART; a calendar with two is read by its first.
    item = parse(
        _invitation(
            "BEGIN:VCALENDAR\n"
            "BEGIN:VEVENT\n"
            "UID:twice@contoso.com\n"
            "DTSTART:20261110T180000Z\n"
            "DTSTART:20261110T200000Z\n"
            "END:VEVENT\n"
            "END:VCALENDAR\n"
        )
    )

    assert item.meeting is not None
    assert item.meeting.start == datetime(2026, 11, 10, 18, 0, tzinfo=UTC)


# --- what is not mail ------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\r\n\r\n  \n"], ids=["empty", "blank"])
def test_empty_file_is_a_parse_error(data: bytes):
    with pytest.raises(ParseError):
        parse(data)


@pytest.mark.parametrize(
    "data",
    [
        b"Just some text.\nNo headers at all.\n",
        b"Note: buy milk\n\nand bread\n",
    ],
    ids=["no-headers", "no-from-no-date"],
)
def test_text_that_is_not_a_message_is_a_parse_error(data: bytes):
    with pytest.raises(ParseError):
        parse(data)


def test_space_before_the_colon_is_read():
    # RFC 5322 section 4.5: obsolete syntax allows white space before the ":",
    # and section 4 says a receiver must accept it.
    data = (
        b"From  : John Doe <jdoe@machine.example>\r\n"
        b"To    : mary@example.net\r\n"
        b"Date  : Fri, 21 Nov 1997 09:55:06 -0600\r\n"
        b"\r\n"
        b"Hello\r\n"
    )

    item = parse(data)

    assert [(p.role, p.address) for p in item.participants] == [
        (Role.FROM, "jdoe@machine.example"),
        (Role.TO, "mary@example.net"),
    ]
    assert item.occurred_at == datetime(1997, 11, 21, 15, 55, 6, tzinfo=UTC)


def test_a_stray_line_in_the_header_block_is_dropped():
    data = (
        b"Received: from relay.x.com by mx.contoso.com;\n"
        b"\tWed, 23 Feb 2005 17:51:49 -0500\n"
        b"stray Delivered-To: tamara@contoso.com\n"
        b"Date: Wed, 23 Feb 2005 18:20:17 -0400\n"
        b"From: andy@x.com\n"
        b"Message-ID: <stray@x.com>\n"
        b"Subject: Hello\n"
        b"\n"
        b"Body\n"
    )

    item = parse(data)

    assert item.subject == "Hello"
    assert item.body_text == "Body\n"
    assert item.message_id == "stray@x.com"
    assert len(item.defects) == 1
    assert "stray Delivered-To" in item.defects[0]


# --- real mail -------------------------------------------------------------

# Files in the mikel/mail fixtures that are rightly refused: they are not mail.
_NOT_MAIL = {
    ".gitattributes": "a git attributes file",
    "sample_output_multipart": "an empty file",
    # Only a Subject: RFC 5322 section 3.6 requires an origination date and a
    # From field, and it has neither.
    "error_emails/bad_encoded_subject.eml": "a Subject header and nothing else",
}


@pytest.mark.corpus
@pytest.mark.skipif(not MIKEL.is_dir(), reason="../shared/corpus is absent")
def test_mail_fixtures_parse_or_are_refused_as_not_mail():
    refused, failed = set(), []
    for path in sorted(p for p in MIKEL.rglob("*") if p.is_file()):
        name = path.relative_to(MIKEL).as_posix()
        try:
            parse_message(path.read_bytes(), name, INBOX)
        except ParseError:
            refused.add(name)
        except Exception as exc:  # any other exception is a bug in the reader
            failed.append(f"{name}: {type(exc).__name__}: {exc}")

    assert failed == []
    assert refused == set(_NOT_MAIL)


def _contoso_messages() -> list[Path]:
    # Maildir names starting with a dot (.gitkeep) and the maildirfolder
    # marker are not messages.
    folders = [CONTOSO / "maildir", *(CONTOSO / "maildir").glob(".*")]
    return sorted(
        path
        for folder in folders
        for sub in ("cur", "new")
        for path in (folder / sub).iterdir()
        if not path.name.startswith(".")
    )


# The sample's README: the ERP purchase order has no Message-ID on purpose.
_CONTOSO_DEFECTS = {"1790710804.M162993P9993.contoso-srv": ["no Message-ID"]}


def test_contoso_sample_parses_without_unexpected_defects():
    messages = _contoso_messages()

    defects = {
        path.name: item.defects
        for path in messages
        if (item := parse_message(path.read_bytes(), path.name, INBOX)).defects
    }

    assert len(messages) == 39
    assert defects == _CONTOSO_DEFECTS


def test_unlabelled_8bit_body_is_read_as_utf8_when_it_is_utf8() -> None:
    utf8 = (
        b"From: a@x.com\nDate: Tue, 1 Sep 2026 10:00:00 +0000\n\nGr\xc3\xbc\xc3\x9fe\n"
    )
    latin = b"From: a@x.com\nDate: Tue, 1 Sep 2026 10:00:00 +0000\n\nGr\xfc\xdfe \x93\n"
    folder = Folder("inbox", "Inbox")
    assert parse_message(utf8, "1", folder).body_text.strip() == "Grüße"
    assert parse_message(latin, "2", folder).body_text.strip() == "Grüße \u201c"
