"""The ten Enron mailboxes of ../shared/corpus with the CRM of ../shared/crm/enron.

Skipped when ../shared is absent. The expectations come from the corpus's
SOURCES.md and the traps listed in ../shared/crm/enron/README.md.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import tomllib
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from mailsync.config import parse_config
from mailsync.queries import history, unlinked
from mailsync.store import db
from mailsync.store.directory import account_by_name, contact_by_address
from mailsync.store.models import Activity, Link, Mailbox, Source
from mailsync.sync import sync_mailbox
from tests.conftest import ENRON, PROJECT, SHARED, needs_corpus
from tests.test_sync import import_crm

pytestmark = [needs_corpus, pytest.mark.corpus]
CRM = SHARED / "crm" / "enron"


def enron_config(url: str, **linking: Any) -> Any:
    raw = tomllib.loads((PROJECT / "config" / "enron.toml").read_text())
    raw["database"]["url"] = url
    raw["linking"] = {k: v for k, v in linking.items() if k != "exclude_folders"}
    for mailbox in raw["mailboxes"]:
        mailbox["path"] = str(ENRON / Path(mailbox["path"]).name)
        if "exclude_folders" in linking:
            mailbox["exclude_folders"] = linking["exclude_folders"]
    return parse_config(raw)


def run(tmp: Path, **linking: Any):
    url = f"sqlite:///{tmp / 'enron.db'}"
    engine = db.open_engine(url)
    db.upgrade(engine)
    factory = db.sessions(engine)
    config = enron_config(url, **linking)
    import_crm(factory, config, CRM)
    reports = [sync_mailbox(factory, config, m) for m in config.mailboxes]
    return factory, reports


@pytest.fixture(scope="module")
def enron(tmp_path_factory):
    return run(tmp_path_factory.mktemp("enron"))


def timeline(factory, kind: str, key: str):
    with factory() as session:
        if kind == "account":
            target = account_by_name(session, key).id
        else:
            target = contact_by_address(session, key).id
        return history(session, kind, target)


def test_nothing_is_rejected_and_internal_mail_is_not_recorded(enron):
    _, reports = enron
    assert sum(r.rejected for r in reports) == 0
    assert sum(r.excluded_by.get("internal_only", 0) for r in reports) > 5000


def test_accounts_named_in_the_crm_have_their_history(enron):
    factory, _ = enron
    ercot = timeline(factory, "account", "ERCOT")
    reliant = timeline(factory, "account", "Reliant Energy")
    texas = timeline(factory, "account", "University of Texas at Austin")
    assert len(ercot) >= 20 and len(reliant) >= 50 and len(texas) >= 10
    # Reliant's contact writes from both of its domains.
    gagliardi = {
        p["address"]
        for activity in reliant
        for p in activity.participants
        if p["address"].startswith("dgagliardi@")
    }
    assert gagliardi == {"dgagliardi@reliantenergy.com", "dgagliardi@reliant.com"}


def test_linking_goes_by_address_never_by_name(enron):
    factory, _ = enron
    texas = timeline(factory, "contact", "jdickinson@mail.utexas.edu")
    conoco = timeline(factory, "contact", "jennifer.k.dickinson@usa.conoco.com")
    assert texas and conoco
    assert {a["name"] for v in texas for a in v.accounts} == {
        "University of Texas at Austin"
    }
    assert "Conoco" in {a["name"] for v in conoco for a in v.accounts}
    assert not {v.id for v in texas} & {v.id for v in conoco}


def test_subdomains_free_mail_and_contacts_without_account(enron):
    factory, _ = enron
    hooker = timeline(factory, "contact", "dhooker@caes.net")
    assert "UtiliCorp United" in {a["name"] for v in hooker for a in v.accounts}
    truorange = timeline(factory, "contact", "truorange@aol.com")
    assert truorange and all("aol.com" not in str(v.accounts) for v in truorange)
    donoghue = timeline(factory, "contact", "rdonoghue@mphlegal.com")
    assert donoghue
    with factory() as session:
        aol_accounts = session.scalar(
            select(func.count())
            .select_from(Link)
            .where(
                Link.target_kind == "account",
                Link.activity_id.in_(
                    select(Activity.id).where(Activity.author.like("%@aol.com"))
                ),
                Link.rule == "domain",
            )
        )
    assert aol_accounts == 0


def test_gateway_forms_in_x_headers_are_not_participants(enron):
    factory, _ = enron
    with factory() as session:
        waiting = {u.address for u in unlinked(session)}
    assert not [a for a in waiting if "imceanotes" in a or a.endswith("@enron")]


def independent_fingerprint(data: bytes) -> str:
    """Same sender, date, subject and body, read with the standard library alone."""
    msg = email.message_from_bytes(data, policy=email.policy.default)
    sender = msg["from"].addresses[0].addr_spec.lower() if msg["from"] else ""
    when = msg["date"].datetime.timestamp() if msg["date"] else ""
    subject = " ".join(str(msg["subject"] or "").split()).casefold()
    body = msg.get_body(("plain",))
    text = " ".join(body.get_content().split()) if body else ""
    return hashlib.sha256(f"{sender}|{when}|{subject}|{text}".encode()).hexdigest()


def test_every_real_message_is_one_activity(tmp_path):
    # Record everything (internal mail, drafts, every folder) so that all
    # 11,347 files count; the corpus holds about 4,850 distinct messages.
    factory, reports = run(
        tmp_path, record_internal=True, record_drafts=True, exclude_folders=[]
    )
    assert sum(r.rejected for r in reports) == 0
    with factory() as session:
        rows = session.execute(
            select(Source.activity_id, Source.provider_id, Mailbox.address).join(
                Mailbox
            )
        ).all()
    roots = {m.address: Path(m.path) for m in enron_config("sqlite://").mailboxes}
    by_activity: dict[int, set[str]] = defaultdict(set)
    for activity_id, provider_id, address in rows:
        path = roots[address] / provider_id
        by_activity[activity_id].add(independent_fingerprint(path.read_bytes()))

    assert all(len(fps) == 1 for fps in by_activity.values()), "a false merge"
    owners: dict[str, set[int]] = defaultdict(set)
    for activity_id, fps in by_activity.items():
        owners[next(iter(fps))].add(activity_id)
    duplicates = {fp: ids for fp, ids in owners.items() if len(ids) > 1}
    assert duplicates == {}
    recorded_files = len(rows)
    excluded = sum(r.excluded for r in reports)
    assert recorded_files + excluded == 11_347
    assert 4_800 <= len(by_activity) <= 4_900
