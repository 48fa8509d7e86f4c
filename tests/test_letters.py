"""Letters from .docx templates: merge fields, runs split by Word, errors.

The resulting documents are opened with python-docx and their text checked.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from io import BytesIO
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from docx import Document

from mailsync.reminders.letters import (
    LetterError,
    MergeData,
    find_template,
    placeholders,
    render,
    split_name,
)
from tests.conftest import CONTOSO
from tests.test_cli import Mailsync, write_config
from tests.test_followups import TEMPLATES

SECTIONS = [
    "Needs",
    "Reasons",
    "Buying Vision",
    "Agreement to Explore",
    "Access to the Decision Maker",
    "Proof Step",
]


def andy() -> MergeData:
    return MergeData(
        contact_name="Andy Carothers",
        contact_email="andy.carothers@tailspintoys.com",
        contact_title="VP Operations",
        contact_phone="+1 312 555 0187",
        account_name="Tailspin Toys",
        account_phone="+1 312 555 0100",
        rep_name="Tamara Johnston",
        rep_email="tamara@contoso.com",
        activity_subject="Warehouse scanning pilot review",
        activity_kind="meeting",
        # 23:30 UTC on 10 March is already 11 March in Berlin.
        activity_at=datetime(2026, 3, 10, 23, 30, tzinfo=UTC),
        zone=ZoneInfo("Europe/Berlin"),
        today=date(2026, 3, 12),
    )


def text_of(data: bytes) -> str:
    document = Document(BytesIO(data))
    parts = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            parts.extend(cell.text for cell in row.cells)
    for section in document.sections:
        parts.extend(p.text for p in section.header.paragraphs)
    return "\n".join(parts)


def test_the_sales_call_letter_has_its_six_sections_filled():
    data = render(TEMPLATES / "sales_call_follow_up.docx", andy().fields())

    document = Document(BytesIO(data))
    headings = [p.text for p in document.paragraphs if p.style.name == "Heading 2"]
    assert headings == SECTIONS
    text = text_of(data)
    assert "{{" not in text and "}}" not in text
    assert "Dear Andy," in text
    assert "Tamara Johnston\ntamara@contoso.com" in text
    assert "March 12, 2026" in text
    assert "meet with me on March 11, 2026." in text
    assert "Our conversation about Warehouse scanning pilot review" in text
    assert "Andy Carothers\nTailspin Toys" in text


def test_the_project_review_letter_asks_for_a_review_meeting():
    text = text_of(render(TEMPLATES / "project_review.docx", andy().fields()))
    assert "Review of Warehouse scanning pilot review" in text
    assert "review meeting with you and your team at Tailspin Toys" in text
    assert "Dear Andy," in text


def split_template(path: Path) -> Path:
    """A paragraph whose placeholders Word split over several runs, with
    formatting, and placeholders in a table and in the header."""
    document = Document()
    paragraph = document.add_paragraph()
    for piece, bold in (
        ("Dear {", False),
        ("{contact.", True),
        ("first_", False),
        ("name}} of {{ acc", False),
        ("ount.name }}", True),
        (", about {{activity.subject}}.", False),
    ):
        paragraph.add_run(piece).bold = bold
    table = document.add_table(rows=1, cols=2)
    table.cell(0, 0).text = "Phone"
    table.cell(0, 1).text = "{{contact.phone}}"
    document.sections[0].header.paragraphs[0].text = "{{rep.name}}"
    document.save(str(path))
    return path


def test_placeholders_split_across_runs_are_filled(tmp_path: Path):
    template = split_template(tmp_path / "split.docx")
    assert placeholders(template) == [
        "contact.first_name",
        "account.name",
        "activity.subject",
        "contact.phone",
        "rep.name",
    ]

    document = Document(BytesIO(render(template, andy().fields())))

    [paragraph] = document.paragraphs
    assert paragraph.text == (
        "Dear Andy of Tailspin Toys, about Warehouse scanning pilot review."
    )
    # Each value takes the formatting of the run where its placeholder began.
    runs = [(r.text, bool(r.bold)) for r in paragraph.runs if r.text]
    assert runs[0] == ("Dear Andy", False)
    assert document.tables[0].cell(0, 1).text == "+1 312 555 0187"
    assert document.sections[0].header.paragraphs[0].text == "Tamara Johnston"


def test_a_value_holding_braces_is_not_filled_again(tmp_path: Path):
    template = split_template(tmp_path / "split.docx")
    fields = andy().fields() | {"activity.subject": "{{contact.phone}} review"}
    paragraph = Document(BytesIO(render(template, fields))).paragraphs[0]
    assert paragraph.text.endswith("about {{contact.phone}} review.")


def test_a_placeholder_that_cannot_be_filled_names_itself_and_the_template(
    tmp_path: Path,
):
    template = split_template(tmp_path / "split.docx")
    fields = andy().fields() | {"contact.phone": ""}

    with pytest.raises(LetterError) as caught:
        render(template, fields)

    message = str(caught.value)
    assert "split.docx" in message
    assert "{{contact.phone}} cannot be filled" in message
    assert "{{account.name}}" not in message


def test_an_unknown_placeholder_is_an_error_too(tmp_path: Path):
    document = Document()
    document.add_paragraph("Dear {{contact.nickname}},")
    document.save(str(tmp_path / "typo.docx"))

    with pytest.raises(LetterError, match=r"\{\{contact.nickname\}\} is not a merge"):
        render(tmp_path / "typo.docx", andy().fields())


def test_templates_are_found_by_name_or_path(tmp_path: Path):
    assert (
        find_template(TEMPLATES, "project_review") == TEMPLATES / "project_review.docx"
    )
    own = split_template(tmp_path / "mine.docx")
    assert find_template(TEMPLATES, str(own)) == own
    with pytest.raises(LetterError, match="project_review, sales_call_follow_up"):
        find_template(TEMPLATES, "thank_you")


def test_a_file_that_is_not_docx_is_a_clear_error(tmp_path: Path):
    broken = tmp_path / "broken.docx"
    broken.write_text("not a document", encoding="utf-8")
    with pytest.raises(LetterError, match="not a readable .docx"):
        render(broken, andy().fields())


def test_names_split_into_first_and_last():
    assert split_name("Andy Carothers") == ("Andy", "Carothers")
    assert split_name("Nay, Lorraine") == ("Lorraine", "Nay")
    assert split_name("Cher") == ("Cher", "")


# --- mailsync letters render ---------------------------------------------------


@pytest.fixture
def crm(tmp_path: Path, store_url: str, contoso_maildir: Path) -> Mailsync:
    config = write_config(tmp_path / "mailsync.toml", store_url, contoso_maildir)
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace(
            "[[mailboxes]]",
            f"[followups]\ntemplates = {str(TEMPLATES)!r}\n"
            'timezone = "America/Chicago"\n\n[[mailboxes]]',
        ),
        encoding="utf-8",
    )
    run = Mailsync(config)
    run("init")
    run("accounts", "import", str(CONTOSO / "accounts.csv"))
    run("contacts", "import", str(CONTOSO / "contacts.csv"))
    run("sync", "--once")
    return run


def test_letters_render_by_hand(crm: Mailsync, tmp_path: Path):
    out = tmp_path / "andy.docx"
    result = crm(
        "letters",
        "render",
        "sales_call_follow_up",
        "--contact",
        "andy.carothers@tailspintoys.com",
        "--out",
        str(out),
    )
    assert str(out) in result.output
    text = text_of(out.read_bytes())
    assert "Dear Andy," in text
    assert "Tailspin Toys" in text
    assert "{{" not in text


def test_letters_render_refuses_a_missing_value(crm: Mailsync, tmp_path: Path):
    contacts = tmp_path / "pat.csv"
    contacts.write_text(
        "name,emails,account,title,phone\n"
        "Pat Coleman,pat.coleman@tailspintoys.com,Tailspin Toys,,\n",
        encoding="utf-8",
    )
    crm("contacts", "import", str(contacts))
    document = Document()
    document.add_paragraph("Dear {{contact.first_name}}, {{contact.title}}")
    document.save(str(tmp_path / "titled.docx"))
    out = tmp_path / "never.docx"

    message = crm.fails(
        "letters",
        "render",
        str(tmp_path / "titled.docx"),
        "--contact",
        "pat.coleman@tailspintoys.com",
        "--out",
        str(out),
    )

    assert "titled.docx" in message
    assert "{{contact.title}} cannot be filled" in message
    assert not out.exists()
