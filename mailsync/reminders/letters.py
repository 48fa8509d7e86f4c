"""Letters: .docx templates with merge fields, filled by python-docx.

A template is a Word document a user may edit in Word. A merge field is
written ``{{contact.first_name}}``; :data:`FIELDS` lists them. Word often
splits what one types into several runs (a spelling mark, a change of
formatting, an edit in the middle), so a placeholder is found in the text
of a whole paragraph and replaced in the runs it spans; the replacement
takes the formatting of the run where the placeholder starts.

Every placeholder of a template is checked before anything is filled: one
that is unknown, or whose value is empty for this contact, is a
:class:`LetterError` naming the placeholder and the template, and no letter
is made.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from io import BytesIO
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from docx import Document
from docx.text.paragraph import Paragraph
from docx.text.run import Run

from mailsync.errors import UserError

PLACEHOLDER = re.compile(
    r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*\}\}"
)

FIELDS = {
    "contact.name": "the contact's full name",
    "contact.first_name": "the contact's first name",
    "contact.last_name": "the contact's last name",
    "contact.title": "the contact's job title",
    "contact.email": "the contact's e-mail address",
    "contact.phone": "the contact's phone number",
    "account.name": "the account's name",
    "account.phone": "the account's phone number",
    "rep.name": "the rep's name",
    "rep.email": "the rep's e-mail address",
    "activity.subject": "the subject of the triggering activity",
    "activity.date": "the date of the triggering activity, in the rep's zone",
    "activity.kind": "the kind of the triggering activity (message, meeting...)",
    "today": "today's date, in the rep's zone",
}


class LetterError(UserError):
    """A template that cannot be filled for this contact."""


@dataclass(frozen=True)
class MergeData:
    """What a letter can be filled with."""

    contact_name: str
    contact_email: str
    contact_title: str = ""
    contact_phone: str = ""
    account_name: str = ""
    account_phone: str = ""
    rep_name: str = ""
    rep_email: str = ""
    activity_subject: str = ""
    activity_kind: str = ""
    activity_at: datetime | None = None
    zone: ZoneInfo = ZoneInfo("UTC")
    today: date | None = None

    def fields(self) -> dict[str, str]:
        first, last = split_name(self.contact_name)
        when = (
            self.activity_at.astimezone(self.zone).date() if self.activity_at else None
        )
        return {
            "contact.name": self.contact_name,
            "contact.first_name": first,
            "contact.last_name": last,
            "contact.title": self.contact_title,
            "contact.email": self.contact_email,
            "contact.phone": self.contact_phone,
            "account.name": self.account_name,
            "account.phone": self.account_phone,
            "rep.name": self.rep_name,
            "rep.email": self.rep_email,
            "activity.subject": self.activity_subject,
            "activity.date": long_date(when) if when else "",
            "activity.kind": self.activity_kind,
            "today": long_date(self.today) if self.today else "",
        }


def split_name(name: str) -> tuple[str, str]:
    """First and last name of "Andy Carothers" or "Carothers, Andy"."""
    text = " ".join(name.split())
    if "," in text:
        last, _, first = text.partition(",")
        return first.strip(), last.strip()
    parts = text.split(" ")
    return parts[0], parts[-1] if len(parts) > 1 else ""


def long_date(day: date) -> str:
    return f"{day:%B} {day.day}, {day.year}"


# --- templates ---------------------------------------------------------------


def find_template(directory: Path, name: str) -> Path:
    """A template by name (``sales_call_follow_up``) in ``directory``, or a
    path to a .docx file."""
    given = Path(name)
    if given.suffix.lower() == ".docx" and given.is_file():
        return given
    candidate = directory / f"{name}.docx"
    if candidate.is_file():
        return candidate
    known = (
        sorted(p.stem for p in directory.glob("*.docx")) if directory.is_dir() else []
    )
    listed = ", ".join(known) if known else "none"
    raise LetterError(
        f"no letter template {name!r} in {directory} (there: {listed}); give a "
        "template name, a .docx path, or set followups.templates"
    )


def placeholders(template: Path) -> list[str]:
    """The merge fields a template uses, in order, each once."""
    document = _open(template)
    seen: dict[str, None] = {}
    for paragraph in _paragraphs(document):
        for match in PLACEHOLDER.finditer(_text(_runs(paragraph))):
            seen.setdefault(match.group(1), None)
    return list(seen)


def render(template: Path, fields: Mapping[str, str]) -> bytes:
    """The filled letter as .docx bytes; a LetterError if any placeholder
    cannot be filled (then nothing is made)."""
    document = _open(template)
    paragraphs = list(_paragraphs(document))
    used: dict[str, None] = {}
    for paragraph in paragraphs:
        for match in PLACEHOLDER.finditer(_text(_runs(paragraph))):
            used.setdefault(match.group(1), None)
    problems = [_problem(name, fields) for name in used]
    missing = [p for p in problems if p]
    if missing:
        raise LetterError(f"letter template {template.name}: " + "; ".join(missing))
    for paragraph in paragraphs:
        _fill(paragraph, fields)
    buffer = BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _problem(name: str, fields: Mapping[str, str]) -> str | None:
    if name not in FIELDS:
        return (
            f"{{{{{name}}}}} is not a merge field (use one of "
            f"{', '.join(sorted(FIELDS))}); correct it in the template"
        )
    if not fields.get(name, "").strip():
        return (
            f"{{{{{name}}}}} cannot be filled: no value for {FIELDS[name]}; add it "
            "to the CRM (and import again) or take it out of the template"
        )
    return None


def _open(template: Path) -> Any:
    try:
        return Document(str(template))
    except Exception as exc:  # python-docx raises several kinds for a bad file
        raise LetterError(
            f"letter template {template}: not a readable .docx file "
            f"({type(exc).__name__}); save it from Word as .docx"
        ) from None


def _paragraphs(document: Any) -> Iterator[Paragraph]:
    """Every paragraph: the body, tables (nested too), headers and footers."""
    yield from _in_container(document)
    for section in document.sections:
        for part in (
            section.header,
            section.footer,
            section.first_page_header,
            section.first_page_footer,
            section.even_page_header,
            section.even_page_footer,
        ):
            if not part.is_linked_to_previous:
                yield from _in_container(part)


def _in_container(container: Any) -> Iterator[Paragraph]:
    yield from container.paragraphs
    for table in container.tables:
        for row in table.rows:
            for cell in row.cells:
                yield from _in_container(cell)


def _fill(paragraph: Paragraph, fields: Mapping[str, str]) -> None:
    """Replace each placeholder in the runs it spans, left to right."""
    position = 0
    while True:
        runs = _runs(paragraph)
        text = _text(runs)
        match = PLACEHOLDER.search(text, position)
        if match is None:
            return
        value = fields[match.group(1)]
        _splice(runs, match.start(), match.end(), value)
        position = match.start() + len(value)


def _runs(paragraph: Paragraph) -> list[Run]:
    """The paragraph's runs, those in hyperlinks and tracked insertions too
    (``paragraph.runs`` has only its direct ones), not those of a text box."""
    found = paragraph._p.xpath(".//w:r[not(ancestor::w:txbxContent)]")
    return [Run(r, paragraph) for r in found]


def _text(runs: list[Run]) -> str:
    return "".join(run.text for run in runs)


def _splice(runs: list[Any], start: int, end: int, value: str) -> None:
    """Put ``value`` in place of the text from ``start`` to ``end`` of the
    runs' joined text: into the run where it starts, taking the rest of the
    span out of the runs after it."""
    offset = 0
    first = True
    for run in runs:
        text = run.text
        low, high = offset, offset + len(text)
        offset = high
        if high <= start or low >= end:
            continue
        cut_from, cut_to = max(start, low) - low, min(end, high) - low
        if first:
            run.text = text[:cut_from] + value + text[cut_to:]
            first = False
        else:
            run.text = text[:cut_from] + text[cut_to:]
