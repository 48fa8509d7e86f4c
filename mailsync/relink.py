"""Relinking the stored history when the directory changes.

Adding or importing a contact or a domain, or resolving an unknown address
with ``mailsync link``, re-matches the participants already stored and brings
the links up to date, so that nothing has to be synced again (rule 10).
Manual links and unlinks are kept (rule 11). The names typed in tasks are
matched again too (rule 12).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailsync.items import Participant, Role
from mailsync.linker.addresses import domain_candidates, domain_of
from mailsync.linker.rules import (
    ContactRef,
    Directory,
    MatchStatus,
    Organisation,
    match_address,
)
from mailsync.store.history import relink_activity, relink_replies, rematch_names
from mailsync.store.models import Activity, Contact, ContactAddress, ParticipantRow

# Participants whose match depends on the directory; the others (internal,
# delegate, ignored) depend only on the configuration.
_REMATCHED = [
    MatchStatus.CONTACT.value,
    MatchStatus.ACCOUNT.value,
    MatchStatus.UNKNOWN.value,
    MatchStatus.UNRESOLVED.value,
]


@dataclass
class RelinkReport:
    participants: int = 0
    activities: int = 0


def relink(
    session: Session,
    directory: Directory,
    org: Organisation,
    addresses: Collection[str] | None = None,
) -> RelinkReport:
    """Re-match stored participants (all, or those at ``addresses``)."""
    query = select(ParticipantRow).where(ParticipantRow.status.in_(_REMATCHED))
    if addresses is not None:
        query = query.where(ParticipantRow.address.in_(list(addresses)))
    report = RelinkReport()
    touched: set[int] = set()
    for row in session.scalars(query):
        if _rematch(row, directory, org):
            report.participants += 1
            touched.add(row.activity_id)
    session.flush()
    touched |= rematch_names(session, directory)  # the names typed in tasks

    ordered = session.execute(
        select(Activity.id, Activity.message_id)
        .where(Activity.id.in_(touched))
        .order_by(Activity.occurred_at)
    ).all()
    for activity_id, message_id in ordered:
        relink_activity(session, activity_id)
        if message_id:
            relink_replies(session, message_id)
    report.activities = len(ordered)
    return report


def _rematch(row: ParticipantRow, directory: Directory, org: Organisation) -> bool:
    person = Participant(
        row.address, row.name, Role(row.role), row.response, row.unresolved
    )
    match = match_address(person, row.address, directory, org)
    new = (
        match.status.value,
        match.contact_id,
        match.account_id,
        match.rule.value if match.rule else None,
    )
    if new == (row.status, row.contact_id, row.account_id, row.rule):
        return False
    row.status, row.contact_id, row.account_id, row.rule = new
    return True


def create_contacts(
    session: Session,
    directory: Directory,
    org: Organisation,
    written_to: Mapping[str, str],
) -> list[int]:
    """The optional policy: a contact for each external person the rep wrote to."""
    created = []
    for address, name in sorted(written_to.items()):
        if address in directory.contacts:
            continue
        account_id = _account_for(address, directory, org)
        contact = Contact(name=name or address, account_id=account_id, origin="policy")
        contact.addresses.append(ContactAddress(address=address))
        session.add(contact)
        session.flush()
        directory.contacts[address] = ContactRef(contact.id, account_id)
        directory.contact_accounts[contact.id] = account_id
        directory.add_contact_name(contact.id, contact.name)
        created.append(contact.id)
    if created:
        relink(session, directory, org, addresses=list(written_to))
    return created


def _account_for(address: str, directory: Directory, org: Organisation) -> int | None:
    if domain_of(address) in org.free_mail:
        return None
    for domain in domain_candidates(domain_of(address)):
        if domain in directory.account_domains:
            return directory.account_domains[domain]
    return None
