"""Importing Business Contacts and Accounts from CSV and vCard files.

CSV columns (a header row is required; names are matched without case; the
columns are separated by commas, semicolons or tabs, whichever the header
line uses):

- accounts: ``name``, ``domains`` (several separated by ``;``), ``phone``, ``notes``;
- contacts: ``name``, ``emails`` (several separated by ``;``), ``account`` (by
  name, may be empty), ``title``, ``phone``.

vCard (.vcf, 3.0 or 4.0): a contact per card from FN, EMAIL, ORG, TITLE and TEL;
for accounts, ORG (or FN) names the account and the EMAIL and URL domains are
its domains (free-mail domains left out).

Importing the same file again changes nothing. A column that the file lacks (or
a property that the card lacks) leaves the stored value as it is; an empty cell
clears it. A bad row is reported with the line it starts on and what is wrong,
and the other rows are still imported.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import vobject
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailsync.errors import UserError
from mailsync.linker.addresses import is_within, normalise, normalise_domain
from mailsync.linker.freemail import FREE_MAIL_DOMAINS
from mailsync.linker.rules import Organisation
from mailsync.store.directory import account_by_name, contact_by_address, name_key
from mailsync.store.models import Account, AccountDomain, Contact, ContactAddress

_PHONE = ("phone", "business phone", "telephone")
_COLUMNS = {
    "accounts": {
        "name": ("name", "account", "account name", "company"),
        "domains": ("domains", "domain", "website", "web site"),
        "phone": _PHONE,
        "notes": ("notes", "note", "description"),
    },
    "contacts": {
        "name": ("name", "full name", "display name"),
        "emails": ("emails", "email", "e-mail", "email address", "e-mail address"),
        "account": ("account", "company", "organization", "organisation"),
        "title": ("title", "job title"),
        "phone": _PHONE,
    },
}
_REQUIRED = {"accounts": ("name", "domains"), "contacts": ("name", "emails")}
_DOMAIN = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)+")
_ADDRESS = re.compile(r'[^@\s<>()\[\],;:\\"]+@[a-z0-9-]+(\.[a-z0-9-]+)+')


@dataclass
class Row:
    line: int
    fields: dict[str, str]
    error: str | None = None  # a row that could not even be read


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    # Rows imported, but that will not do what the admin expects.
    warnings: list[tuple[int, str]] = field(default_factory=list)

    def bad(self, line: int, message: str) -> None:
        self.errors.append((line, message))


class RowError(Exception):
    """What is wrong with one row."""


# --- reading files ---------------------------------------------------------


def read_rows(path: Path, kind: str) -> Iterator[Row]:
    """The rows of a CSV or vCard file, as fields named like the CSV columns."""
    if path.is_dir():
        raise UserError(f"{path} is a directory; give the path of a .csv or .vcf file")
    if not path.is_file():
        raise UserError(f"{path}: no such file; give the path of a .csv or .vcf file")
    text = _read_text(path)
    if path.suffix.lower() in (".vcf", ".vcard") or text.lstrip().upper().startswith(
        "BEGIN:VCARD"
    ):
        yield from _vcard_rows(text, kind, path)
    else:
        yield from _csv_rows(text, kind, path)


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")  # Excel's "CSV" on Windows


def _csv_rows(text: str, kind: str, path: Path) -> Iterator[Row]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    header = next(reader, None)
    if header is None:
        raise UserError(f"{path}: the file is empty; it needs a header row")
    columns = _columns(header, kind, path)
    # A quoted field may hold line breaks: a row is reported by its first line.
    start = reader.line_num + 1
    for values in reader:
        line, start = start, reader.line_num + 1
        if not any(v.strip() for v in values):
            continue
        fields = {
            name: values[index].strip() if index < len(values) else ""
            for name, index in columns.items()
        }
        yield Row(line, fields)


def _delimiter(text: str) -> str:
    """The separator of a CSV file, told by its header line: ``,``, or ``;``
    (Excel's "CSV" where the decimal mark is a comma), or a tab."""
    header = text.split("\n", 1)[0]
    counts = {sep: header.count(sep) for sep in (",", ";", "\t")}
    best = max(counts, key=lambda sep: counts[sep])  # a tie keeps the comma
    return best if counts[best] else ","


def _columns(header: list[str], kind: str, path: Path) -> dict[str, int]:
    """Which column holds which field, by the header's names."""
    lowered = [h.strip().lower() for h in header]
    columns = {}
    for name, aliases in _COLUMNS[kind].items():
        found = next((alias for alias in aliases if alias in lowered), None)
        if found is not None:
            columns[name] = lowered.index(found)
    missing = [r for r in _REQUIRED[kind] if r not in columns]
    if missing:
        raise UserError(
            f"{path}: no {' or '.join(repr(m) for m in missing)} column; the header "
            f"must name the columns {', '.join(_COLUMNS[kind])}"
        )
    return columns


def _vcard_rows(text: str, kind: str, path: Path) -> Iterator[Row]:
    """One row per card; a card that cannot be read is a bad row, not a bad file.

    So is a card that never ends (another BEGIN:VCARD comes first) and text
    outside any card: nothing in the file is passed over without a word.
    """
    blocks = list(_card_blocks(text))
    if not any(error is None for _, _, error in blocks):
        raise UserError(f"{path}: no vCard in the file (BEGIN:VCARD ... END:VCARD)")
    for line, block, problem in blocks:
        if problem is not None:
            yield Row(line, {}, error=problem)
            continue
        try:
            card = vobject.readOne(block, ignoreUnreadable=True)
        except Exception as exc:  # vobject raises several unrelated types
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            yield Row(line, {}, error=f"this vCard cannot be read: {message}")
            continue
        yield Row(line, _card_fields(card, kind))


def _card_blocks(text: str) -> Iterator[tuple[int, str, str | None]]:
    """Each BEGIN:VCARD ... END:VCARD block with the line it begins on, or a
    problem: a card cut off by the next BEGIN:VCARD, or stray text."""
    start, lines = 0, list[str]()
    stray = 0
    for number, line in enumerate(text.splitlines(), start=1):
        begins = line.strip().upper() == "BEGIN:VCARD"
        if begins and start:
            yield (
                start,
                "",
                (
                    f"this vCard has no END:VCARD before the next card on line "
                    f"{number}; add END:VCARD"
                ),
            )
        if begins:
            start, lines = number, []
            stray = 0
        elif not start and line.strip():
            if not stray:
                stray = number
                yield (
                    number,
                    "",
                    (
                        "text outside any vCard (not between BEGIN:VCARD and "
                        "END:VCARD) was ignored"
                    ),
                )
            continue
        elif not start:
            stray = 0
        if start:
            lines.append(line)
        if start and line.strip().upper() == "END:VCARD":
            yield start, "\r\n".join(lines) + "\r\n", None
            start = 0
    if start:
        yield start, "\r\n".join(lines) + "\r\n", None


def _card_fields(card: Any, kind: str) -> dict[str, str]:
    def values(name: str) -> list[str]:
        return [str(c.value) for c in getattr(card, "contents", {}).get(name, [])]

    org = values("org")
    org_name = ""
    if org:
        first = card.contents["org"][0].value
        org_name = first[0] if isinstance(first, list) else str(first)
    emails = values("email")
    name = (values("fn") or [""])[0]
    if not name and "n" in getattr(card, "contents", {}):
        parts = card.contents["n"][0].value  # vCard 3.0 may omit FN; N has it
        name = " ".join(
            p
            for p in (
                parts.prefix,
                parts.given,
                parts.additional,
                parts.family,
                parts.suffix,
            )
            if p
        )
    fields = {
        "name": name,
        "emails": ";".join(emails),
        "account": org_name,
        "title": (values("title") or [""])[0],
        "phone": (values("tel") or [""])[0],
    }
    if kind == "accounts":
        hosts = [
            urlsplit(u if "//" in u else f"//{u}").hostname or "" for u in values("url")
        ]
        # A free-mail address says nothing about the company's domain.
        mail_domains = [e.rpartition("@")[2].lower() for e in emails]
        domains = [d for d in mail_domains if d not in FREE_MAIL_DOMAINS] + hosts
        # The TEL and NOTE of a card are the person's, not the company's.
        return {
            "name": org_name or fields["name"],
            "domains": ";".join(d.removeprefix("www.") for d in domains if d),
        }
    # A property the card lacks leaves what is stored, like a missing column.
    return {k: v for k, v in fields.items() if v or k in ("name", "emails")}


# --- applying rows ---------------------------------------------------------


def import_accounts(
    session: Session, rows: Iterator[Row], internal: Organisation | None = None
) -> ImportReport:
    def ours(_session: Session, fields: dict[str, str]) -> str | None:
        found = [_domain(d) for d in _split(fields.get("domains", ""))]
        domains = [
            d
            for d in found
            if d and internal and is_within(d, internal.internal_domains)
        ]
        if not domains:
            return None
        return (
            f"{', '.join(domains)} is one of our own domains (internal_domains): "
            "our own people are never counterparties, so no mail links to this "
            "account by it; give the customer's domain instead"
        )

    return _import(session, rows, _upsert_account, warn=ours)


def import_contacts(
    session: Session, rows: Iterator[Row], internal: Organisation | None = None
) -> ImportReport:
    lines: dict[str, int] = {}  # address -> the row that had it first

    def ours(session: Session, fields: dict[str, str]) -> str | None:
        found = [normalise(a) for a in _split(fields.get("emails", ""))]
        warnings = [_renamed(session, fields.get("name", ""), found)]
        addresses = [a for a in found if a and internal and internal.is_internal(a)]
        if addresses:
            warnings.append(
                f"{', '.join(addresses)} is one of our own addresses "
                "(internal_domains or a mailbox): our own people are never "
                "counterparties, so no mail links to this contact by it; give "
                "the customer's address instead"
            )
        return "; ".join(w for w in warnings if w) or None

    return _import(
        session,
        rows,
        _upsert_contact,
        lambda row: _seen_before(row, lines),
        warn=ours,
    )


def _import(
    session: Session,
    rows: Iterator[Row],
    upsert: Callable[[Session, dict[str, str]], str],
    clash: Callable[[Row], str | None] = lambda row: None,
    warn: Callable[[Session, dict[str, str]], str | None] = lambda s, f: None,
) -> ImportReport:
    """Each row in a savepoint of its own: a bad row is reported, the rest
    stays. A row that is imported but may not do what was meant (it renames
    a contact, it will never link) is warned of."""
    report = ImportReport()
    for row in rows:
        problem = row.error or clash(row)
        if problem:
            report.bad(row.line, problem)
            continue
        warning = warn(session, row.fields)  # before: what the row changes
        try:
            with session.begin_nested():
                outcome = upsert(session, row.fields)
        except RowError as exc:
            report.bad(row.line, str(exc))
            continue
        _count(report, outcome)
        if warning:
            report.warnings.append((row.line, warning))
    return report


def _renamed(session: Session, name: str, addresses: list[str | None]) -> str | None:
    """The warning for a row that gives a stored contact another name."""
    new = " ".join(name.split())
    for address in addresses:
        contact = contact_by_address(session, address) if address else None
        if contact is not None and new and name_key(contact.name) != name_key(new):
            others = sorted(
                a.address for a in contact.addresses if a.address != address
            )
            kept = f" (it keeps {', '.join(others)})" if others else ""
            return (
                f"contact {contact.name!r} renamed {new!r}: it has {address}{kept}; "
                "if they are two people, give each an address of their own"
            )
    return None


def _seen_before(row: Row, lines: dict[str, int]) -> str | None:
    """Two rows with one address would rename each other on every import."""
    found = (normalise(a) for a in _split(row.fields.get("emails", "")))
    addresses = sorted({a for a in found if a})
    for address in addresses:
        if address in lines:
            return (
                f"{address} is also on line {lines[address]}; keep each address "
                "on one row"
            )
    for address in addresses:
        lines[address] = row.line
    return None


def _count(report: ImportReport, outcome: str) -> None:
    setattr(report, outcome, getattr(report, outcome) + 1)


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.replace(",", ";").split(";") if v.strip()]


def _upsert_account(session: Session, fields: dict[str, str]) -> str:
    name = " ".join(fields.get("name", "").split())
    if not name:
        raise RowError("the name is empty")
    domains = []
    for raw in _split(fields.get("domains", "")):
        domain = _domain(raw)
        if domain is None:
            raise RowError(f"{raw!r} is not a domain (write it like example.com)")
        if domain in FREE_MAIL_DOMAINS:
            raise RowError(
                f"{domain} is a free-mail domain and never identifies an account; "
                "remove it and import the person as a contact"
            )
        if domain not in domains:
            domains.append(domain)
    if not domains:
        raise RowError(f"account {name!r} has no domain; give at least one")

    for domain in domains:
        owner = session.scalar(
            select(AccountDomain).where(AccountDomain.domain == domain)
        )
        if owner is not None and owner.account.name_key != name_key(name):
            raise RowError(
                f"domain {domain} already belongs to account {owner.account.name!r}"
            )

    account = account_by_name(session, name)
    created = account is None
    if account is None:
        account = Account(name=name, name_key=name_key(name))
        session.add(account)
    changed = _set(account, name=name, **_present(fields, "phone", "notes"))
    known = {d.domain for d in account.domains}
    for domain in domains:
        if domain not in known:
            account.domains.append(AccountDomain(domain=domain))
            changed = True
    session.flush()
    return "created" if created else ("updated" if changed else "unchanged")


def _domain(raw: str) -> str | None:
    """A domain from ``example.com``, ``@example.com`` or a web site address."""
    text = raw.strip().removeprefix("@")
    if "/" in text or ":" in text:
        text = urlsplit(text if "//" in text else f"//{text}").hostname or ""
    domain = normalise_domain(text)
    if domain is None or not _DOMAIN.fullmatch(domain):
        return None
    return domain.removeprefix("www.")


def _upsert_contact(session: Session, fields: dict[str, str]) -> str:
    name = " ".join(fields.get("name", "").split())
    addresses = []
    for raw in _split(fields.get("emails", "")):
        address = normalise(raw)
        if address is None or not _ADDRESS.fullmatch(address):
            raise RowError(f"{raw!r} is not an e-mail address")
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise RowError(f"contact {name or '(no name)'!r} has no e-mail address")
    if not name:
        raise RowError(f"the contact with {addresses[0]} has no name")

    account = None
    account_name = fields.get("account", "").strip()
    if account_name:
        account = account_by_name(session, account_name)
        if account is None:
            raise RowError(
                f"account {account_name!r} not found; import the accounts first, "
                "or leave the account column empty"
            )

    owners = {contact_by_address(session, a) for a in addresses} - {None}
    if len(owners) > 1:
        names = ", ".join(sorted(repr(o.name) for o in owners if o))
        raise RowError(f"its addresses belong to different contacts ({names})")
    contact = owners.pop() if owners else None
    created = contact is None
    if contact is None:
        contact = Contact(name=name)
        session.add(contact)

    changed = _set(contact, name=name, **_present(fields, "title", "phone"))
    # A file without an account column leaves each contact's account as it is.
    if "account" in fields and contact.account_id != (account.id if account else None):
        contact.account = account
        changed = True
    known = {a.address for a in contact.addresses}
    for address in addresses:
        if address not in known:
            contact.addresses.append(ContactAddress(address=address))
            changed = True
    session.flush()
    return "created" if created else ("updated" if changed else "unchanged")


def _present(fields: dict[str, str], *names: str) -> dict[str, str]:
    """The fields that the file has: a missing column changes nothing."""
    return {name: fields[name] for name in names if name in fields}


def _set(row: object, **values: str) -> bool:
    changed = False
    for key, value in values.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed = True
    return changed
