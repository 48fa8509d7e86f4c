"""Which items are not recorded at all, and why.

Checked in this order, the first that applies wins:

1. drafts (rule 9) unless ``record_drafts``;
2. items marked Private or Confidential by their Sensitivity (rule 9),
   unless ``record_private``, and items carrying the opt-out category
   (``[categories] opt_out``, compared without case), always;
3. automated mail (rule 6): List-Id, List-Unsubscribe, ``Precedence:
   bulk/list/junk``, ``Auto-Submitted`` other than ``no``, delivery reports,
   and noreply-style senders. Never for mail the rep sent.

Internal-only mail (rule 5) is decided after matching, in :mod:`.rules`.
"""

from __future__ import annotations

import re
from enum import StrEnum

from mailsync.items import FolderRole, Item, Role
from mailsync.linker.addresses import normalise

OPT_OUT_CATEGORY = "Don't track"


class ExcludeReason(StrEnum):
    DRAFT = "draft"
    PRIVATE = "private"
    OPTED_OUT = "opted_out"
    AUTOMATED = "automated"
    INTERNAL_ONLY = "internal_only"


_NOREPLY = re.compile(
    r"^(no[-_.]?reply|do[-_.]?not[-_.]?reply|dont[-_.]?reply|mailer[-_.]?daemon"
    r"|postmaster|bounces?|notifications?|automated|auto[-_.]?confirm)"
    r"([-+_.].*)?$"
)
_BULK_PRECEDENCE = {"bulk", "list", "junk"}


def screen(
    item: Item,
    *,
    sent: bool,
    record_drafts: bool = False,
    record_private: bool = False,
    private_sensitivities: frozenset[str] = frozenset(
        {"private", "company-confidential"}
    ),
    noreply: re.Pattern[str] | None = None,
    opt_out: str = OPT_OUT_CATEGORY,
) -> tuple[ExcludeReason, str] | None:
    """The reason an item is not recorded, with its detail, or ``None``."""
    if not record_drafts and (item.is_draft or item.folder.role is FolderRole.DRAFTS):
        return ExcludeReason.DRAFT, f"in {item.folder.name}"
    if not record_private and item.sensitivity in private_sensitivities:
        return ExcludeReason.PRIVATE, f"Sensitivity: {item.sensitivity}"
    wanted = opt_out.casefold()
    if any(c.strip().casefold() == wanted for c in item.categories):
        return ExcludeReason.OPTED_OUT, f"category {opt_out!r}"
    if not sent:
        why = automated_reason(item, noreply)
        if why:
            return ExcludeReason.AUTOMATED, why
    return None


def automated_reason(item: Item, noreply: re.Pattern[str] | None = None) -> str | None:
    """Why an item looks machine-sent, or ``None``."""
    headers = item.list_headers
    if "list-id" in headers:
        return "List-Id header"
    if "list-unsubscribe" in headers:
        return "List-Unsubscribe header"
    precedence = headers.get("precedence", "").strip().lower()
    if precedence in _BULK_PRECEDENCE:
        return f"Precedence: {precedence}"
    submitted = headers.get("auto-submitted", "").strip().lower()
    if submitted and not submitted.startswith("no"):
        return f"Auto-Submitted: {submitted}"
    if item.is_report:
        return "delivery or read report"
    return _noreply_sender(item, noreply)


def _noreply_sender(item: Item, noreply: re.Pattern[str] | None) -> str | None:
    for person in item.participants:
        if person.role not in (Role.FROM, Role.DELEGATE):
            continue
        address = normalise(person.address)
        if address is None:
            continue
        local = address.partition("@")[0]
        if _NOREPLY.match(local) or (noreply is not None and noreply.search(address)):
            return f"noreply-style sender {address}"
    return None
