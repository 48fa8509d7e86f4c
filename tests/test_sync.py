"""End to end through the real local connector, linker and store.

Each test runs on a SQLite file and on PostgreSQL (the ``store_url`` fixture).
The expected values come from the sample's README (examples/contoso).
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mailsync import importer
from mailsync.config import Config, parse_config
from mailsync.connectors.local import LocalConnector
from mailsync.queries import history, unlinked
from mailsync.relink import relink
from mailsync.store.db import transaction
from mailsync.store.directory import account_by_name, contact_by_address, load_directory
from mailsync.store.history import set_manual_link
from mailsync.store.models import (
    Account,
    Activity,
    ActivityKey,
    Contact,
    Link,
    ParticipantRow,
    SkippedItem,
    Source,
)
from mailsync.sync import organisation, sync_mailbox
from tests.conftest import CONTOSO, contoso_config
from tests.faults import Crash, CrashAfter

PILOT = "Tailspin Toys: warehouse scanning pilot"
HOME = "andy.carothers.home@outlook.com"


def import_crm(
    factory: sessionmaker[Session], config: Config, folder: Path = CONTOSO
) -> None:
    """Import a folder's accounts.csv and contacts.csv, as an admin would."""
    with transaction(factory) as session:
        importer.import_accounts(
            session, importer.read_rows(folder / "accounts.csv", "accounts")
        )
        importer.import_contacts(
            session, importer.read_rows(folder / "contacts.csv", "contacts")
        )
        relink(session, load_directory(session), organisation(config))


def sync(factory, config):
    return sync_mailbox(factory, config, config.mailboxes[0])


def account_timeline(factory, name="Tailspin Toys"):
    with factory() as session:
        account = account_by_name(session, name)
        return history(session, "account", account.id)


def snapshot(factory) -> dict[str, object]:
    """Everything a rep could see, in a comparable form (no database ids)."""
    with factory() as session:
        subjects = dict(session.execute(select(Activity.id, Activity.subject)).all())
        keys = dict(
            session.execute(select(ActivityKey.key, ActivityKey.activity_id)).all()
        )
        names = {("contact", c.id): c.name for c in session.scalars(select(Contact))}
        names |= {("account", a.id): a.name for a in session.scalars(select(Account))}
        links = sorted(
            (
                subjects[link.activity_id],
                names[(link.target_kind, link.target_id)],
                link.rule,
                link.manual,
                link.suppressed,
            )
            for link in session.scalars(select(Link))
        )
        sources = sorted(
            (subjects[s.activity_id], s.provider_id)
            for s in session.scalars(select(Source))
        )
    return {
        "activities": sorted(subjects.values()),
        "keys": len(keys),
        "links": links,
        "sources": sources,
    }


@pytest.fixture
def contoso(store_url, factory, contoso_maildir):
    config = contoso_config(store_url, contoso_maildir)
    import_crm(factory, config)
    return config


def test_contoso_history(factory, contoso):
    report = sync(factory, contoso)

    # 17 Inbox + 12 Sent + 8 Tailspin + 1 Drafts items are read (Junk is not).
    # Excluded: the draft, the private note, the newsletter, the no-reply
    # notice and the four internal-only messages. The invitation and its
    # acceptance are one meeting: 30 items make 29 activities.
    assert (report.items, report.excluded, report.rejected) == (38, 8, 0)
    assert report.excluded_by == {
        "draft": 1,
        "private": 1,
        "automated": 2,
        "internal_only": 4,
    }
    assert report.new == 29

    timeline = account_timeline(factory)
    pilot = [a for a in timeline if a.subject.endswith(PILOT)]
    assert len(pilot) == 7
    assert [a.direction for a in pilot] == [
        "outbound",
        "inbound",
        "outbound",
        "inbound",
        "inbound",
        "outbound",
        "inbound",
    ]
    assert [a.occurred_at for a in pilot] == sorted(a.occurred_at for a in pilot)


def test_reply_from_an_unknown_address_follows_its_thread(factory, contoso):
    # The 7th pilot message comes from Andy's personal address and is in the
    # Inbox, which is synced before its parent in Sent: it must still inherit.
    sync(factory, contoso)
    [home] = [
        a
        for a in account_timeline(factory)
        if any(p["address"] == HOME for p in a.participants)
    ]
    assert {r["rule"] for r in home.link_rules} == {"thread"}
    assert {c["name"] for c in home.contacts} == {"Andy Carothers", "Lorraine Nay"}


def test_meeting_invitation_and_acceptance_are_one_meeting(factory, contoso):
    sync(factory, contoso)
    [meeting] = [a for a in account_timeline(factory) if a.kind == "meeting"]
    assert meeting.subject == "Tailspin Toys pilot review"
    # DTSTART;TZID=Pacific Standard Time:20261110T100000 is 18:00 UTC.
    assert meeting.occurred_at == datetime(2026, 11, 10, 18, 0, tzinfo=UTC)
    attendees = {
        p["address"]: p["response"]
        for p in meeting.participants
        if p["role"] == "attendee"
    }
    assert attendees["lorraine.nay@tailspintoys.com"] == "ACCEPTED"
    assert attendees["andy.carothers@tailspintoys.com"] == "NEEDS-ACTION"
    assert len(meeting.sources) == 2


def test_domain_only_delegate_and_tagged_senders(factory, contoso):
    sync(factory, contoso)
    timeline = {a.subject: a for a in account_timeline(factory)}

    wifi = timeline["Wi-Fi survey results for the Joliet DC"]
    assert wifi.contacts == [] and {r["rule"] for r in wifi.link_rules} == {"domain"}

    signed = timeline["Signed order form - Contoso rollout"]
    roles = {(p["address"], p["role"]): p["status"] for p in signed.participants}
    assert roles[("kelly.focht@tailspintoys.com", "delegate")] == "delegate"
    assert "Lorraine Nay" in {c["name"] for c in signed.contacts}

    onboarding = timeline["Vendor onboarding for Contoso"]
    assert [c["name"] for c in onboarding.contacts] == ["Lorraine Nay"]


def test_excluded_items_keep_a_reason_and_private_ones_no_subject(factory, contoso):
    sync(factory, contoso)
    with factory() as session:
        rows = {r.reason.split(":")[0]: r for r in session.scalars(select(SkippedItem))}
    assert rows["private"].subject is None
    assert rows["draft"].subject is None  # rule 9
    assert rows["automated"].subject  # the newsletter's subject is kept
    with factory() as session:
        subjects = set(session.scalars(select(Activity.subject)))
    assert not any("Toy Retail Weekly" in s for s in subjects)
    assert not any("Q4 forecast" in s for s in subjects)


def test_unknown_senders_wait_for_review(factory, contoso):
    sync(factory, contoso)
    with factory() as session:
        rows = {u.address: u for u in unlinked(session)}
    assert set(rows) == {
        "jordan.lee@northwindtraders.com",
        HOME,
        "sam.rivera.consulting@gmail.com",
    }
    assert rows["jordan.lee@northwindtraders.com"].count == 2


def test_second_run_reads_nothing_and_changes_nothing(factory, contoso):
    sync(factory, contoso)
    before = snapshot(factory)
    again = sync(factory, contoso)
    assert (again.items, again.new, again.updated) == (0, 0, 0)
    assert snapshot(factory) == before


def test_new_and_removed_files_are_read_incrementally(
    factory, contoso, contoso_maildir
):
    sync(factory, contoso)
    sent = contoso_maildir / ".Sent" / "cur"
    first = sorted(sent.iterdir())[0]
    copy = contoso_maildir / ".Tailspin" / "cur" / "1799999999.M1P1.copy"
    shutil.copy(first, copy)  # the same message filed a second time
    first.unlink()

    report = sync(factory, contoso)
    assert (report.items, report.new, report.removed) == (1, 0, 1)
    with factory() as session:
        sources = session.scalars(
            select(Source).join(Activity).where(Activity.subject == PILOT)
        ).all()
    assert sorted((s.folder, s.removed_at is not None) for s in sources) == [
        ("Sent", True),
        ("Tailspin", False),
    ]


def test_importing_later_relinks_what_is_stored(store_url, factory, contoso_maildir):
    config = contoso_config(store_url, contoso_maildir)
    sync(factory, config)
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Link)) == 0
        waiting = {u.address for u in unlinked(session)}
        assert {
            "andy.carothers@tailspintoys.com",
            "lorraine.nay@tailspintoys.com",
            "pat.coleman@tailspintoys.com",
            "ben.miller@fabrikam.com",
        } <= waiting

    import_crm(factory, config)
    with factory() as session:
        assert {u.address for u in unlinked(session)} == {
            "jordan.lee@northwindtraders.com",
            HOME,
            "sam.rivera.consulting@gmail.com",
        }
    synced_after = snapshot(factory)

    # The same history as when the CRM was there before the sync.
    for table in (Link, ParticipantRow, Source, ActivityKey):
        with transaction(factory) as session:
            session.execute(table.__table__.delete())
    with transaction(factory) as session:
        session.execute(Activity.__table__.delete())
        session.execute(SkippedItem.__table__.delete())
        from mailsync.store.models import Cursor, ThreadRef

        session.execute(ThreadRef.__table__.delete())
        session.execute(Cursor.__table__.delete())
    sync(factory, config)
    fresh = snapshot(factory)
    assert fresh["links"] == synced_after["links"]


def test_manual_links_survive_sync_and_relink(factory, contoso):
    sync(factory, contoso)
    with transaction(factory) as session:
        wifi = session.scalar(
            select(Activity.id).where(
                Activity.subject == "Wi-Fi survey results for the Joliet DC"
            )
        )
        tailspin = account_by_name(session, "Tailspin Toys").id
        fabrikam = account_by_name(session, "Fabrikam, Inc.").id
        set_manual_link(session, wifi, ("account", tailspin), linked=False)
        set_manual_link(session, wifi, ("account", fabrikam), linked=True)

    import_crm(factory, contoso)  # an import relinks everything
    sync(factory, contoso)
    with factory() as session:
        live = set(
            session.execute(
                select(Link.target_id, Link.rule).where(
                    Link.activity_id == wifi, Link.suppressed.is_(False)
                )
            ).all()
        )
    assert live == {(fabrikam, "manual")}


def test_written_to_policy_creates_contacts(store_url, factory, contoso_maildir):
    config = contoso_config(store_url, contoso_maildir, create_contacts="written_to")
    import_crm(factory, config)
    sync(factory, config)
    with factory() as session:
        jordan = contact_by_address(session, "jordan.lee@northwindtraders.com")
        assert jordan is not None and jordan.origin == "policy"
        # Sam only wrote to us; nobody wrote to Sam.
        assert contact_by_address(session, "sam.rivera.consulting@gmail.com") is None
        assert "jordan.lee@northwindtraders.com" not in {
            u.address for u in unlinked(session)
        }


def test_internal_mail_is_recorded_when_asked(store_url, factory, contoso_maildir):
    config = contoso_config(store_url, contoso_maildir, record_internal=True)
    report = sync(factory, config)
    assert report.excluded_by.get("internal_only", 0) == 0
    with factory() as session:
        assert (
            session.scalar(
                select(func.count()).where(
                    Activity.subject == "Q4 forecast: Tailspin Toys"
                )
            )
            == 1
        )


def test_unreadable_files_are_rejected_and_the_cycle_goes_on(
    factory, contoso, contoso_maildir
):
    (contoso_maildir / "cur" / "1700000000.M1P1.empty").write_bytes(b"")
    (contoso_maildir / "cur" / "1700000001.M1P1.binary").write_bytes(bytes(range(256)))
    report = sync(factory, contoso)
    assert report.rejected == 2 and report.new == 29
    with factory() as session:
        reasons = {
            r.provider_id: r.reason
            for r in session.scalars(
                select(SkippedItem).where(SkippedItem.outcome == "rejected")
            )
        }
    assert reasons["./1700000000.M1P1.empty"] == "empty file"
    assert "./1700000001.M1P1.binary" in reasons


@pytest.mark.parametrize("pages", [1, 3, 6])
def test_a_crash_mid_sync_loses_nothing_and_duplicates_nothing(
    store_url, factory, contoso_maildir, tmp_path, pages
):
    config = contoso_config(store_url, contoso_maildir)
    import_crm(factory, config)
    mailbox = config.mailboxes[0]
    with pytest.raises(Crash):
        sync_mailbox(
            factory,
            config,
            mailbox,
            CrashAfter(LocalConnector(Path(mailbox.path), batch_size=3), pages),
        )
    sync_mailbox(
        factory, config, mailbox, LocalConnector(Path(mailbox.path), batch_size=3)
    )
    interrupted = snapshot(factory)

    other = tmp_path / "clean"
    other.mkdir()
    clean_url = f"sqlite:///{other / 'clean.db'}"
    from mailsync.store import db

    engine = db.open_engine(clean_url)
    db.upgrade(engine)
    clean_factory = db.sessions(engine)
    clean_config = contoso_config(clean_url, contoso_maildir)
    import_crm(clean_factory, clean_config)
    sync(clean_factory, clean_config)
    assert interrupted == snapshot(clean_factory)
    engine.dispose()


def test_a_mailbox_that_cannot_open_shows_its_error_in_status(
    store_url, factory, monkeypatch
):
    from mailsync.errors import ConfigError
    from mailsync.queries import mailbox_status

    monkeypatch.delenv("MAILSYNC_UNSET_PASSWORD", raising=False)
    config = parse_config(
        {
            "database": {"url": store_url},
            "organisation": {"internal_domains": ["contoso.com"]},
            "mailboxes": [
                {
                    "address": "tamara@contoso.com",
                    "rep": "Tamara Johnston",
                    "kind": "ews",
                    "endpoint": "https://mail.contoso.com/EWS/Exchange.asmx",
                    "username": "svc-mailsync@contoso.com",
                    "password_env": "MAILSYNC_UNSET_PASSWORD",
                }
            ],
        }
    )
    with pytest.raises(ConfigError, match="MAILSYNC_UNSET_PASSWORD is not set"):
        sync(factory, config)
    with factory() as session:
        [status] = mailbox_status(session)
    assert "MAILSYNC_UNSET_PASSWORD is not set" in (status.last_error or "")
    assert status.last_cycle_at is not None


def _mail(sender: str, subject: str, date: str, body: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: Tamara Johnston <tamara@contoso.com>\r\n"
        f"Subject: {subject}\r\nDate: {date}\r\n"
        "Message-ID: <reused-by-a-mailer@example.com>\r\n\r\n"
        f"{body}\r\n"
    ).encode()


def test_a_reused_message_id_does_not_merge_two_messages(
    factory, contoso, contoso_maildir
):
    inbox = contoso_maildir / "cur"
    (inbox / "1799100001.M1P1.contoso-srv:2,S").write_bytes(
        _mail(
            "Andy Carothers <andy.carothers@tailspintoys.com>",
            "Pilot dates",
            "Mon, 02 Nov 2026 09:00:00 +0000",
            "Tuesday works.",
        )
    )
    # Another author, a day later, the same Message-ID: another message.
    (inbox / "1799100002.M2P2.contoso-srv:2,S").write_bytes(
        _mail(
            "Jordan Lee <jordan.lee@northwindtraders.com>",
            "Our order",
            "Tue, 03 Nov 2026 09:00:00 +0000",
            "Please ship.",
        )
    )
    # Andy's message again, filed in another folder with a gateway's footer:
    # the same author and date, so one message with its Message-ID.
    (
        contoso_maildir / ".Tailspin" / "cur" / "1799100003.M3P3.contoso-srv:2,S"
    ).write_bytes(
        _mail(
            "Andy Carothers <andy.carothers@tailspintoys.com>",
            "Pilot dates",
            "Mon, 02 Nov 2026 09:00:00 +0000",
            "Tuesday works.\r\n-- \r\nSent through the Tailspin gateway",
        )
    )
    sync(factory, contoso)

    with factory() as session:
        rows = session.execute(
            select(Activity.subject, Activity.author)
            .join(ActivityKey, ActivityKey.activity_id == Activity.id)
            .where(ActivityKey.key == "mid:reused-by-a-mailer@example.com")
        ).all()
        subjects = set(
            session.scalars(
                select(Activity.subject).where(
                    Activity.subject.in_(["Pilot dates", "Our order"])
                )
            )
        )
        sources = session.scalar(
            select(func.count())
            .select_from(Source)
            .join(Activity, Activity.id == Source.activity_id)
            .where(Activity.subject == "Pilot dates")
        )
    assert rows == [("Pilot dates", "andy.carothers@tailspintoys.com")]
    assert subjects == {"Pilot dates", "Our order"}
    assert sources == 2  # Andy's two copies are one activity
    assert sync(factory, contoso).new == 0  # and it stays so
