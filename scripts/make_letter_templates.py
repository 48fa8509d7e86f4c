#!/usr/bin/env python3
"""Write the two letter templates shipped in config/templates/.

The .docx files are committed and meant to be edited in Word; run this only
to start them over (it overwrites them). Merge fields are written
``{{contact.first_name}}``; the bracketed text is for the rep to replace
before sending.

    .venv/bin/python scripts/make_letter_templates.py [DIRECTORY]
"""

from __future__ import annotations

import sys
from pathlib import Path

from docx import Document
from docx.shared import Pt

TARGET = Path(__file__).resolve().parent.parent / "config" / "templates"


def _letter_head(document: Document, subject: str) -> None:
    style = document.styles["Normal"]
    style.font.name = "Calibri"
    style.font.size = Pt(11)
    document.add_paragraph("{{rep.name}}\n{{rep.email}}")
    document.add_paragraph("{{today}}")
    document.add_paragraph("{{contact.name}}\n{{account.name}}")
    heading = document.add_paragraph()
    heading.add_run(subject).bold = True


def _sections(document: Document, sections: list[tuple[str, str]]) -> None:
    for title, prompt in sections:
        document.add_heading(title, level=2)
        document.add_paragraph(prompt)


def _closing(document: Document, text: str) -> None:
    document.add_paragraph(text)
    document.add_paragraph("Kind regards,")
    document.add_paragraph("{{rep.name}}")


def sales_call_follow_up() -> Document:
    """The letter after a sales call: what we heard, in six sections."""
    document = Document()
    _letter_head(document, "Our conversation about {{activity.subject}}")
    document.add_paragraph("Dear {{contact.first_name}},")
    document.add_paragraph(
        "Thank you for taking the time to meet with me on {{activity.date}}. "
        "So that we both remember the same conversation, here is what I "
        "understood and what we agreed. If I have anything wrong or missing, "
        "please tell me."
    )
    _sections(
        document,
        [
            (
                "Needs",
                "[The problem or goal {{account.name}} has, in your buyer's own "
                "words: what is not working today, and for whom.]",
            ),
            (
                "Reasons",
                "[Why it matters now: what it costs {{account.name}} to leave it "
                "as it is, and what changes if it is solved.]",
            ),
            (
                "Buying Vision",
                "[What {{contact.first_name}} said a solution would have to do, "
                "as you saw it together: the capabilities that make the "
                "difference.]",
            ),
            (
                "Agreement to Explore",
                "[What we agreed to look at together next, and that it is worth "
                "both sides' time to go on.]",
            ),
            (
                "Access to the Decision Maker",
                "[Who else takes part in the decision, and how we agreed to "
                "involve them: a meeting, an introduction, a date.]",
            ),
            (
                "Proof Step",
                "[The next step that shows it works for {{account.name}} (a "
                "demonstration, a reference call, a pilot), with its date.]",
            ),
        ],
    )
    _closing(
        document,
        "I look forward to the next step. Please call me if anything above "
        "should change.",
    )
    return document


def project_review() -> Document:
    """The letter asking for a review meeting when a project phase is done."""
    document = Document()
    _letter_head(document, "Review of {{activity.subject}}")
    document.add_paragraph("Dear {{contact.first_name}},")
    document.add_paragraph(
        "With the phase we worked on together now complete, I would like to "
        "ask for a short review meeting with you and your team at "
        "{{account.name}}."
    )
    _sections(
        document,
        [
            ("What we set out to do", "[The goals of this phase, as agreed.]"),
            ("What was delivered", "[What is now in place, and since when.]"),
            (
                "What we would like to review",
                "[What worked, what did not, and what your users are saying.]",
            ),
            ("The next phase", "[What we propose next, to be decided together.]"),
        ],
    )
    _closing(
        document,
        "Would an hour in the next two weeks suit you? I will send a few "
        "times, or simply reply with one that works for you.",
    )
    return document


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else TARGET
    target.mkdir(parents=True, exist_ok=True)
    for name, make in (
        ("sales_call_follow_up", sales_call_follow_up),
        ("project_review", project_review),
    ):
        path = target / f"{name}.docx"
        make().save(str(path))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
