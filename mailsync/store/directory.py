"""Reading and changing who is who: accounts, contacts, manual address links."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailsync.linker.rules import ContactRef, Directory
from mailsync.store.models import (
    Account,
    AccountDomain,
    AddressLink,
    Contact,
    ContactAddress,
    Mailbox,
    Rep,
)


def load_directory(session: Session) -> Directory:
    """The whole directory in memory: a small team has thousands, not millions."""
    directory = Directory()
    contact_accounts = dict(
        session.execute(select(Contact.id, Contact.account_id)).all()
    )
    directory.contact_accounts = contact_accounts
    for contact_id, name in session.execute(select(Contact.id, Contact.name)):
        directory.add_contact_name(contact_id, name)
    for account_id, name in session.execute(select(Account.id, Account.name)):
        directory.add_account_name(account_id, name)
    for address, contact_id in session.execute(
        select(ContactAddress.address, ContactAddress.contact_id)
    ):
        directory.contacts[address] = ContactRef(
            contact_id, contact_accounts.get(contact_id)
        )
    for domain, account_id in session.execute(
        select(AccountDomain.domain, AccountDomain.account_id)
    ):
        directory.account_domains[domain] = account_id
    for row in session.scalars(select(AddressLink)):
        directory.manual[row.address] = (row.target_kind, row.target_id)
    return directory


def account_by_name(session: Session, name: str) -> Account | None:
    return session.scalar(select(Account).where(Account.name_key == name_key(name)))


def contact_by_address(session: Session, address: str) -> Contact | None:
    return session.scalar(
        select(Contact).join(ContactAddress).where(ContactAddress.address == address)
    )


def name_key(name: str) -> str:
    """Account names compare without case and extra spaces."""
    return " ".join(name.split()).casefold()


def ensure_mailbox(session: Session, address: str, rep_name: str, kind: str) -> Mailbox:
    """The mailbox row for a configured mailbox, created or brought up to date."""
    rep = session.scalar(select(Rep).where(Rep.name == rep_name))
    if rep is None:
        rep = Rep(name=rep_name)
        session.add(rep)
        session.flush()
    mailbox = session.scalar(select(Mailbox).where(Mailbox.address == address))
    if mailbox is None:
        mailbox = Mailbox(address=address, rep_id=rep.id, kind=kind)
        session.add(mailbox)
    mailbox.rep_id = rep.id
    mailbox.kind = kind
    session.flush()
    return mailbox
