"""Matching participants to Business Contacts and Accounts.

For each participant, after normalisation (:mod:`.addresses`):

- our own people (the internal domains and their subdomains, and the reps'
  mailbox addresses) are never counterparties (rule 5);
- Bcc counts only on mail the rep sent; a Sender apart from From is a delegate,
  recorded but not linked (rule 7); a configured relay sender is ignored;
- a manual address link made by ``mailsync link`` wins;
- a contact is matched by any of its addresses, the exact address first and
  then without its ``+tag``; the link also goes to the contact's account
  (rule 3);
- otherwise an account is matched by domain, subdomains included, free-mail
  domains never (rule 4); an unresolved address is never matched by domain;
- anyone left waits for review as unknown (rule 10).

A task links by the names the rep typed in its Contacts and Companies fields
(rule 12, :func:`match_names`): a contact by its name, also written "Last,
First", and an account by its name, without case or extra spaces. A name that
two contacts share links neither and is kept as ambiguous; a name that
matches nothing waits for review as it was typed, never as an address.

Thread inheritance (rule 8) and manual links (rule 11) are applied on top by
:func:`links_for`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from mailsync.items import Participant, Role
from mailsync.linker.addresses import (
    domain_candidates,
    domain_of,
    is_within,
    normalise,
    strip_tag,
)
from mailsync.linker.freemail import FREE_MAIL_DOMAINS


class MatchStatus(StrEnum):
    CONTACT = "contact"
    ACCOUNT = "account"
    INTERNAL = "internal"
    UNKNOWN = "unknown"
    UNRESOLVED = "unresolved"
    DELEGATE = "delegate"
    IGNORED = "ignored"
    AMBIGUOUS = "ambiguous"


class LinkRule(StrEnum):
    ADDRESS = "address"
    DOMAIN = "domain"
    THREAD = "thread"
    MANUAL = "manual"
    CONTACT_NAME = "contact_name"
    COMPANY_NAME = "company_name"


class NameField(StrEnum):
    """Where a rep typed a name: a task's Contacts or Companies field."""

    CONTACT = "contact"
    COMPANY = "company"


Target = tuple[str, int]  # ("contact", id) or ("account", id)


@dataclass(frozen=True)
class ContactRef:
    id: int
    account_id: int | None


@dataclass
class Directory:
    """An in-memory snapshot of who is who, read once per cycle."""

    contacts: dict[str, ContactRef] = field(default_factory=dict)
    account_domains: dict[str, int] = field(default_factory=dict)
    manual: dict[str, Target] = field(default_factory=dict)
    contact_accounts: dict[int, int | None] = field(default_factory=dict)
    contact_names: dict[str, tuple[int, ...]] = field(default_factory=dict)
    account_names: dict[str, int] = field(default_factory=dict)

    def add_contact_name(self, contact_id: int, name: str) -> None:
        key = person_key(name)
        known = self.contact_names.get(key, ())
        if key and contact_id not in known:
            self.contact_names[key] = (*known, contact_id)

    def add_account_name(self, account_id: int, name: str) -> None:
        key = name_key(name)
        if key:
            self.account_names[key] = account_id


@dataclass(frozen=True)
class Organisation:
    internal_domains: frozenset[str]
    own_addresses: frozenset[str] = frozenset()
    relay_senders: frozenset[str] = frozenset()
    free_mail: frozenset[str] = FREE_MAIL_DOMAINS

    def is_internal(self, address: str) -> bool:
        if address in self.own_addresses:
            return True
        return is_within(domain_of(address), self.internal_domains)


@dataclass(frozen=True)
class Match:
    """A participant with what it matched and by which rule."""

    address: str
    name: str
    role: Role
    status: MatchStatus
    contact_id: int | None = None
    account_id: int | None = None
    rule: LinkRule | None = None
    response: str | None = None
    unresolved: bool = False


@dataclass(frozen=True)
class NameMatch:
    """A name typed in a task's Contacts or Companies field, with its match."""

    name: str
    field: NameField
    status: MatchStatus
    contact_id: int | None = None
    account_id: int | None = None
    rule: LinkRule | None = None


def match_participants(
    participants: Iterable[Participant],
    *,
    sent: bool,
    directory: Directory,
    org: Organisation,
) -> list[Match]:
    """Every usable participant, once per address and role, with its match."""
    seen: set[tuple[str, Role]] = set()
    matches = []
    for person in participants:
        address = normalise(person.address)
        if address is None and person.unresolved and person.address.strip():
            # An address the connector could not resolve (an Exchange X500
            # address): kept for review under its own text, never matched.
            address = person.address.strip().lower()
        if address is None or (address, person.role) in seen:
            continue
        seen.add((address, person.role))
        status = _role_status(person, address, sent, org)
        if status is None:
            matches.append(match_address(person, address, directory, org))
        else:
            matches.append(_plain(person, address, status))
    return matches


def _role_status(
    person: Participant, address: str, sent: bool, org: Organisation
) -> MatchStatus | None:
    if "@" not in address:
        return MatchStatus.UNRESOLVED
    if org.is_internal(address):
        return MatchStatus.INTERNAL
    if person.role is Role.DELEGATE:
        return MatchStatus.DELEGATE
    if person.role is Role.BCC and not sent:
        return MatchStatus.IGNORED
    if address in org.relay_senders:
        return MatchStatus.IGNORED
    return None


def _plain(person: Participant, address: str, status: MatchStatus) -> Match:
    return Match(
        address=address,
        name=person.name,
        role=person.role,
        status=status,
        response=person.response,
        unresolved=person.unresolved,
    )


def match_address(
    person: Participant, address: str, directory: Directory, org: Organisation
) -> Match:
    base = _plain(person, address, MatchStatus.UNKNOWN)
    manual = directory.manual.get(address)
    if manual is not None:
        return _to_target(base, manual, directory, LinkRule.MANUAL)

    for candidate in (address, strip_tag(address)):
        contact = directory.contacts.get(candidate) if candidate else None
        if contact is not None:
            return _replace(
                base,
                status=MatchStatus.CONTACT,
                contact_id=contact.id,
                account_id=contact.account_id,
                rule=LinkRule.ADDRESS,
            )

    if person.unresolved:
        return _replace(base, status=MatchStatus.UNRESOLVED)
    domain = domain_of(address)
    if domain in org.free_mail:
        return base
    for candidate in domain_candidates(domain):
        account_id = directory.account_domains.get(candidate)
        if account_id is not None:
            return _replace(
                base,
                status=MatchStatus.ACCOUNT,
                account_id=account_id,
                rule=LinkRule.DOMAIN,
            )
    return base


def _to_target(
    base: Match, target: Target, directory: Directory, rule: LinkRule
) -> Match:
    kind, target_id = target
    if kind == "contact":
        account_id = directory.contact_accounts.get(target_id)
        return _replace(
            base,
            status=MatchStatus.CONTACT,
            contact_id=target_id,
            account_id=account_id,
            rule=rule,
        )
    return _replace(base, status=MatchStatus.ACCOUNT, account_id=target_id, rule=rule)


_M = TypeVar("_M", "Match", "NameMatch")


def _replace(base: _M, **changes: object) -> _M:
    from dataclasses import replace

    return replace(base, **changes)  # type: ignore[arg-type]


# --- rule 12: the names typed in a task ---------------------------------------


def name_key(name: str) -> str:
    """A name as compared: one form of Unicode, no case, single spaces."""
    return " ".join(unicodedata.normalize("NFKC", name).split()).casefold()


def person_key(name: str) -> str:
    """A person's name as compared; "Adams, Ellen" is "Ellen Adams"."""
    key = name_key(name)
    last, comma, first = key.partition(",")
    if comma and "," not in first and last.strip() and first.strip():
        key = f"{first.strip()} {last.strip()}"
    return key


def match_names(
    contacts: Iterable[str], companies: Iterable[str], directory: Directory
) -> list[NameMatch]:
    """Every name typed in a task's Contacts and Companies fields, with its match.

    A Contacts entry may hold several names separated by commas or semicolons
    (EWS gives "a comma-separated list of contact names"), and one name may be
    written "Last, First": the whole entry is tried first, then its parts, and
    an entry whose parts match nothing is kept whole. Company names are never
    split ("Fabrikam, Inc.").
    """
    found: dict[tuple[NameField, str], NameMatch] = {}
    for entry in contacts:
        for match in _contact_entry(entry, directory):
            found.setdefault((match.field, person_key(match.name)), match)
    for entry in companies:
        if name_key(entry):
            match = match_name(NameField.COMPANY, entry.strip(), directory)
            found.setdefault((match.field, name_key(match.name)), match)
    return list(found.values())


_NAME_SEPARATORS = re.compile(r"[,;]")


def _contact_entry(entry: str, directory: Directory) -> list[NameMatch]:
    if not name_key(entry):
        return []
    whole = match_name(NameField.CONTACT, entry.strip(), directory)
    parts = [p.strip() for p in _NAME_SEPARATORS.split(entry) if name_key(p)]
    if whole.status is not MatchStatus.UNKNOWN or len(parts) < 2:
        return [whole]
    each = [match_name(NameField.CONTACT, part, directory) for part in parts]
    if all(m.status is MatchStatus.UNKNOWN for m in each):
        return [whole]
    return each


def match_name(field: NameField, name: str, directory: Directory) -> NameMatch:
    """One typed name against the directory's contact or account names."""
    base = NameMatch(name=name, field=field, status=MatchStatus.UNKNOWN)
    if field is NameField.COMPANY:
        account_id = directory.account_names.get(name_key(name))
        if account_id is None:
            return base
        return _replace(
            base,
            status=MatchStatus.ACCOUNT,
            account_id=account_id,
            rule=LinkRule.COMPANY_NAME,
        )
    ids = directory.contact_names.get(person_key(name), ())
    if len(ids) > 1:
        return _replace(base, status=MatchStatus.AMBIGUOUS)
    if not ids:
        return base
    return _replace(
        base,
        status=MatchStatus.CONTACT,
        contact_id=ids[0],
        account_id=directory.contact_accounts.get(ids[0]),
        rule=LinkRule.CONTACT_NAME,
    )


def has_counterparty(matches: Iterable[Match]) -> bool:
    """True when anyone on the item is external (matched or not)."""
    counterparts = (
        MatchStatus.CONTACT,
        MatchStatus.ACCOUNT,
        MatchStatus.UNKNOWN,
        MatchStatus.UNRESOLVED,
    )
    return any(m.status in counterparts for m in matches)


def direct_links(matches: Iterable[Match | NameMatch]) -> dict[Target, LinkRule]:
    """The links that the participants (and a task's names) make by themselves."""
    links: dict[Target, LinkRule] = {}
    for m in matches:
        if m.contact_id is not None and m.rule is not None:
            links.setdefault(("contact", m.contact_id), m.rule)
        if m.account_id is not None and m.rule is not None:
            links.setdefault(("account", m.account_id), m.rule)
    return links


def links_for(
    matches: Iterable[Match | NameMatch],
    thread_links: Iterable[Target],
    manual: Mapping[Target, bool],
) -> dict[Target, LinkRule]:
    """The automatic links of an activity, with the manual ones applied.

    ``manual`` maps a target to True for a manual link and False for a manual
    unlink: both survive every sync and relink (rule 11). Thread links are used
    only when no participant matched directly (rule 8).
    """
    links = direct_links(matches)
    if not links:
        links = {target: LinkRule.THREAD for target in thread_links}
    for target, linked in manual.items():
        if linked:
            links[target] = LinkRule.MANUAL
        else:
            links.pop(target, None)
    return links


def author(matches: list[Match], org: Organisation) -> Match | None:
    """Who the item is from (rule 7): From, or Reply-To behind a form relay.

    A form relay is mail From one of our own systems (an internal address or a
    configured relay sender) whose Reply-To is a real external person.
    """
    sender = next((m for m in matches if m.role in (Role.FROM, Role.ORGANIZER)), None)
    reply_to = next(
        (
            m
            for m in matches
            if m.role is Role.REPLY_TO
            and m.status not in (MatchStatus.INTERNAL, MatchStatus.IGNORED)
        ),
        None,
    )
    relayed = sender is None or sender.status in (
        MatchStatus.INTERNAL,
        MatchStatus.IGNORED,
    )
    if (
        reply_to is not None
        and relayed
        and sender is not None
        and (
            sender.address in org.relay_senders
            or (
                sender.status is MatchStatus.INTERNAL
                and sender.address not in org.own_addresses
            )
        )
    ):
        return reply_to
    return sender
