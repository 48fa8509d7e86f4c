"""Outlook tasks as activities: identity, task fields, name links, history.

A connector yields an ``Item(kind=TASK, task=Task(...))`` for each task in a
rep's Tasks folder. These tests feed such items, built from real task values
(the EWS Task element: Status is one of NotStarted, InProgress, Completed,
WaitingOnOthers, Deferred; DueDate and CompleteDate; Contacts, "a
comma-separated list of contact names"; Companies, company names), to the
sync core's page step (``apply_batch``) on a real database, SQLite and
PostgreSQL, with the CRM imported by the real importer.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from mailsync import importer
from mailsync.config import Config, MailboxConfig, parse_config
from mailsync.items import (
    ChangeBatch,
    Folder,
    FolderRole,
    Item,
    ItemKind,
    Participant,
    Role,
    Task,
)
from mailsync.linker.rules import (
    ContactRef,
    Directory,
    LinkRule,
    MatchStatus,
    NameField,
    match_names,
    person_key,
)
from mailsync.queries import activity_views, unlinked
from mailsync.relink import relink
from mailsync.store import db
from mailsync.store.db import transaction
from mailsync.store.directory import ensure_mailbox, load_directory
from mailsync.store.models import (
    Activity,
    ActivityKey,
    ActivityName,
    Base,
    ParticipantRow,
    Source,
)
from mailsync.sync import CycleReport, apply_batch, linking_for, organisation
from tests.conftest import CONTOSO
from tests.test_cli import Mailsync, write_config

TAMARA, MEGAN = "tamara@contoso.com", "megan@contoso.com"
TASKS = Folder("AAMkADTasks", "Tasks", FolderRole.TASKS)
UID = "AAMkAGI2TGuLAAA="
CREATED = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)

# The Contoso accounts, and contacts with two people called Ben Miller.
CONTACTS = """\
name,emails,account,title,phone
Ellen Adams,ellen.adams@tailspintoys.com,Tailspin Toys,Buyer,
Andy Carothers,andy.carothers@tailspintoys.com,Tailspin Toys,VP Operations,
Ben Miller,ben.miller@fabrikam.com,"Fabrikam, Inc.",Director of Distribution,
Ben Miller,ben.miller@wingtiptoys.com,Wingtip Toys,Buyer,
"""


def task_item(
    uid: str = UID,
    provider_id: str = "AAMkAGI2TGuLAAA=tamara",
    *,
    subject: str = "Send Ellen the pilot quote",
    status: str | None = "NotStarted",
    due: datetime | date | None = date(2026, 11, 20),
    contacts: tuple[str, ...] = ("Ellen Adams",),
    companies: tuple[str, ...] = (),
    completed: datetime | date | None = None,
    change_key: str = "EwAAABYAAAA1",
    participants: list[Participant] | None = None,
) -> Item:
    return Item(
        provider_id=provider_id,
        folder=TASKS,
        kind=ItemKind.TASK,
        subject=subject,
        occurred_at=CREATED,
        participants=participants or [],
        body_text="Quote for 40 scanners, net 30.",
        change_key=change_key,
        task=Task(
            uid=uid,
            status=status,
            due=due,
            owner="Tamara Johnston",
            contacts=contacts,
            companies=companies,
            completed=completed,
        ),
    )


@pytest.fixture
def config(store_url: str, tmp_path: Path) -> Config:
    return parse_config(
        {
            "database": {"url": store_url},
            "organisation": {"internal_domains": ["contoso.com"]},
            "mailboxes": [
                {
                    "address": address,
                    "rep": rep,
                    "kind": "local",
                    "path": str(tmp_path / address),
                }
                for address, rep in (
                    (TAMARA, "Tamara Johnston"),
                    (MEGAN, "Megan Bowen"),
                )
            ],
        }
    )


def import_crm(factory: sessionmaker[Session], config: Config, tmp_path: Path) -> None:
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(CONTACTS, encoding="utf-8")
    with transaction(factory) as session:
        importer.import_accounts(
            session, importer.read_rows(CONTOSO / "accounts.csv", "accounts")
        )
        importer.import_contacts(session, importer.read_rows(contacts, "contacts"))
        relink(session, load_directory(session), organisation(config))


@pytest.fixture
def crm(factory: sessionmaker[Session], config: Config, tmp_path: Path) -> Config:
    import_crm(factory, config, tmp_path)
    return config


def apply(
    factory: sessionmaker[Session], config: Config, *items: Item, mailbox: str = TAMARA
) -> CycleReport:
    """One page of the Tasks folder through the sync core, as a cycle writes it."""
    box: MailboxConfig = config.mailbox(mailbox)
    report = CycleReport(mailbox=box.address)
    with transaction(factory) as session:
        mailbox_id = ensure_mailbox(session, box.address, box.rep, box.kind).id
        linking = linking_for(config, box.address, load_directory(session))
        apply_batch(
            session, mailbox_id, linking, ChangeBatch(TASKS, list(items)), report
        )
    return report


def the_task(factory: sessionmaker[Session]) -> Activity:
    with factory() as session:
        [activity] = session.scalars(select(Activity)).all()
        return activity


def links_of(factory: sessionmaker[Session], activity_id: int) -> set[tuple[str, str]]:
    """The live links of an activity, as (target name, rule)."""
    with factory() as session:
        [view] = activity_views(session, [activity_id])
    return {(r["name"], r["rule"]) for r in view.link_rules}


def names_of(factory: sessionmaker[Session]) -> set[tuple[str, str, str]]:
    with factory() as session:
        return {
            (row.field, row.name, row.status)
            for row in session.scalars(select(ActivityName))
        }


# --- identity and the task's own fields ---------------------------------------


def test_a_task_is_one_activity_keyed_by_its_uid_with_status_and_due_date(factory, crm):
    report = apply(factory, crm, task_item())

    assert (report.items, report.new, report.excluded, report.rejected) == (1, 1, 0, 0)
    task = the_task(factory)
    assert task.kind == "task"
    assert (task.task_status, task.completed_at) == ("NotStarted", None)
    # A due date is a date: midnight UTC of that day, marked as a date.
    assert task.due_at == datetime(2026, 11, 20, tzinfo=UTC)
    assert task.due_is_date is True
    assert task.occurred_at == task.due_at  # a task sits at its due date
    with factory() as session:
        keys = session.scalars(select(ActivityKey.key)).all()
    assert keys == [f"task:{UID}"]  # no content fingerprint: the rep edits it


def test_status_and_due_date_changes_update_the_same_activity(factory, crm):
    apply(factory, crm, task_item())
    first = the_task(factory)

    report = apply(
        factory,
        crm,
        task_item(
            subject="Send Ellen the revised pilot quote",
            status="InProgress",
            due=date(2026, 11, 27),
            change_key="EwAAABYAAAA2",
        ),
    )

    assert (report.new, report.updated) == (0, 1)
    task = the_task(factory)
    assert task.id == first.id
    assert task.subject == "Send Ellen the revised pilot quote"
    assert task.task_status == "InProgress"
    assert task.due_at == task.occurred_at == datetime(2026, 11, 27, tzinfo=UTC)
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Source)) == 1

    again = apply(
        factory,
        crm,
        task_item(
            subject="Send Ellen the revised pilot quote",
            status="InProgress",
            due=date(2026, 11, 27),
            change_key="EwAAABYAAAA2",
        ),
    )
    assert (again.new, again.updated) == (0, 0)


def test_a_completed_task_keeps_when_and_a_reopened_one_forgets(factory, crm):
    apply(factory, crm, task_item())
    done = datetime(2026, 11, 18, 16, 5, tzinfo=UTC)
    apply(factory, crm, task_item(status="Completed", completed=done))

    task = the_task(factory)
    assert (task.task_status, task.completed_at) == ("Completed", done)

    apply(factory, crm, task_item(status="InProgress", completed=None))
    task = the_task(factory)
    assert (task.task_status, task.completed_at) == ("InProgress", None)


def test_a_due_time_stays_a_time_and_no_due_date_is_none(factory, crm):
    due = datetime(2026, 11, 20, 17, 0, tzinfo=UTC)
    apply(factory, crm, task_item(due=due))
    task = the_task(factory)
    assert (task.due_at, task.due_is_date, task.occurred_at) == (due, False, due)

    apply(factory, crm, task_item(due=None))
    task = the_task(factory)
    assert (task.due_at, task.due_is_date) == (None, None)
    assert task.occurred_at == CREATED


def test_a_task_in_two_mailboxes_is_one_activity(factory, crm):
    apply(factory, crm, task_item())
    report = apply(
        factory, crm, task_item(provider_id="AAMkAGI2TGuLAAA=megan"), mailbox=MEGAN
    )

    assert (report.new, report.updated) == (0, 0)
    task = the_task(factory)
    with factory() as session:
        sources = session.scalars(
            select(Source.provider_id).where(Source.activity_id == task.id)
        ).all()
    assert sorted(sources) == ["AAMkAGI2TGuLAAA=megan", "AAMkAGI2TGuLAAA=tamara"]


def test_two_tasks_with_the_same_subject_and_body_stay_two(factory, crm):
    apply(factory, crm, task_item(), task_item("AAMkOTHER=", "AAMkOTHER=tamara"))
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Activity)) == 2


# --- linking by the names in Contacts and Companies ------------------------------


def test_a_contact_name_links_the_contact_and_its_account(factory, crm):
    apply(factory, crm, task_item(contacts=("  ellen   ADAMS ",)))

    task = the_task(factory)
    assert links_of(factory, task.id) == {
        ("Ellen Adams", "contact_name"),
        ("Tailspin Toys", "contact_name"),
    }


def test_last_first_form_is_the_same_person(factory, crm):
    apply(factory, crm, task_item(contacts=("Adams, Ellen",)))

    assert links_of(factory, the_task(factory).id) == {
        ("Ellen Adams", "contact_name"),
        ("Tailspin Toys", "contact_name"),
    }


def test_a_comma_separated_list_of_names_links_each(factory, crm):
    apply(factory, crm, task_item(contacts=("Ellen Adams, Andy Carothers",)))

    assert links_of(factory, the_task(factory).id) == {
        ("Ellen Adams", "contact_name"),
        ("Andy Carothers", "contact_name"),
        ("Tailspin Toys", "contact_name"),
    }


def test_a_company_name_links_the_account(factory, crm):
    apply(factory, crm, task_item(contacts=(), companies=("fabrikam,  inc.",)))

    assert links_of(factory, the_task(factory).id) == {
        ("Fabrikam, Inc.", "company_name")
    }


def test_a_name_two_contacts_share_links_neither_and_is_ambiguous(factory, crm):
    apply(factory, crm, task_item(contacts=("Ben Miller",)))

    task = the_task(factory)
    assert links_of(factory, task.id) == set()
    assert names_of(factory) == {("contact", "Ben Miller", "ambiguous")}
    with factory() as session:
        [row] = [r for r in unlinked(session) if r.kind != "address"]
    assert (row.kind, row.name, row.status, row.address) == (
        "contact_name",
        "Ben Miller",
        "ambiguous",
        None,
    )
    assert row.activity_ids == [task.id]


def test_an_unmatched_name_stays_visible_and_is_no_address(factory, crm):
    report = apply(factory, crm, task_item(contacts=("Jordan Lee",)))

    assert (report.new, report.unlinked) == (1, 1)
    task = the_task(factory)
    assert links_of(factory, task.id) == set()
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(ParticipantRow)) == 0
        rows = unlinked(session)
    assert [(r.kind, r.name, r.status, r.address) for r in rows] == [
        ("contact_name", "Jordan Lee", "unknown", None)
    ]
    assert rows[0].as_json()["address"] is None


def test_a_task_naming_nobody_is_recorded_unlinked(factory, crm):
    report = apply(factory, crm, task_item(contacts=(), companies=()))

    assert (report.new, report.excluded, report.unlinked) == (1, 0, 1)
    assert links_of(factory, the_task(factory).id) == set()


def test_editing_the_contacts_field_moves_the_links(factory, crm):
    apply(factory, crm, task_item(contacts=("Ellen Adams",)))
    report = apply(
        factory,
        crm,
        task_item(contacts=("Ben Miller",), companies=("Wingtip Toys",)),
    )

    assert report.updated == 1
    assert links_of(factory, the_task(factory).id) == {("Wingtip Toys", "company_name")}
    assert names_of(factory) == {
        ("contact", "Ben Miller", "ambiguous"),
        ("company", "Wingtip Toys", "account"),
    }


def test_importing_later_links_the_names_already_stored(factory, config, tmp_path):
    apply(factory, config, task_item(contacts=("Adams, Ellen",)))
    task = the_task(factory)
    assert links_of(factory, task.id) == set()

    import_crm(factory, config, tmp_path)
    assert links_of(factory, task.id) == {
        ("Ellen Adams", "contact_name"),
        ("Tailspin Toys", "contact_name"),
    }
    with factory() as session:
        assert [r for r in unlinked(session) if r.kind != "address"] == []


def test_an_address_on_a_task_still_links_by_address(factory, crm):
    andy = Participant("andy.carothers@tailspintoys.com", "Andy Carothers", Role.TO)
    apply(factory, crm, task_item(contacts=(), participants=[andy]))

    assert links_of(factory, the_task(factory).id) == {
        ("Andy Carothers", "address"),
        ("Tailspin Toys", "address"),
    }


def test_a_task_marked_dont_track_is_not_recorded(factory, crm):
    item = task_item()
    item.categories = ("Don't track",)
    report = apply(factory, crm, item)
    assert (report.new, report.excluded_by) == (0, {"opted_out": 1})


# --- the rule as a pure function --------------------------------------------------


def test_name_keys_ignore_case_spacing_and_last_first_order():
    assert person_key("  Ellen   ADAMS ") == person_key("Adams, Ellen") == "ellen adams"
    assert person_key("Adams Smith, Ellen") == "ellen adams smith"
    assert person_key("Ellen Adams, Jr., PhD") == "ellen adams, jr., phd"


def test_match_names_without_a_database():
    directory = Directory()
    directory.contacts = {"ellen.adams@tailspintoys.com": ContactRef(10, 1)}
    directory.contact_accounts = {10: 1, 11: 2, 12: 3}
    for contact_id, name in (
        (10, "Ellen Adams"),
        (11, "Ben Miller"),
        (12, "Ben Miller"),
    ):
        directory.add_contact_name(contact_id, name)
    directory.add_account_name(1, "Tailspin Toys")

    matches = match_names(
        ("Adams, Ellen", "ben miller", "", "Jordan Lee"),
        ("TAILSPIN TOYS", "Northwind Traders"),
        directory,
    )

    assert [
        (m.field, m.name, m.status, m.contact_id, m.account_id, m.rule) for m in matches
    ] == [
        (
            NameField.CONTACT,
            "Adams, Ellen",
            MatchStatus.CONTACT,
            10,
            1,
            LinkRule.CONTACT_NAME,
        ),
        (NameField.CONTACT, "ben miller", MatchStatus.AMBIGUOUS, None, None, None),
        (NameField.CONTACT, "Jordan Lee", MatchStatus.UNKNOWN, None, None, None),
        (
            NameField.COMPANY,
            "TAILSPIN TOYS",
            MatchStatus.ACCOUNT,
            None,
            1,
            LinkRule.COMPANY_NAME,
        ),
        (NameField.COMPANY, "Northwind Traders", MatchStatus.UNKNOWN, None, None, None),
    ]


# --- mailsync history ---------------------------------------------------------------


def test_history_shows_a_task_with_its_status_and_due_date(
    tmp_path, store_url, factory
):
    mailsync = Mailsync(write_config(tmp_path / "m.toml", store_url, tmp_path / "md"))
    mailsync("init")
    mailsync("accounts", "import", str(CONTOSO / "accounts.csv"))
    (tmp_path / "contacts.csv").write_text(CONTACTS, encoding="utf-8")
    mailsync("contacts", "import", str(tmp_path / "contacts.csv"))
    config = parse_config(
        {
            "database": {"url": store_url},
            "organisation": {"internal_domains": ["contoso.com"]},
            "mailboxes": [
                {
                    "address": TAMARA,
                    "rep": "Tamara Johnston",
                    "kind": "local",
                    "path": str(tmp_path / "md"),
                }
            ],
        }
    )
    done = datetime(2026, 11, 18, 16, 5, tzinfo=UTC)
    apply(
        factory,
        config,
        task_item(),
        task_item(
            "AAMkSECOND=",
            "AAMkSECOND=tamara",
            subject="Call Ellen about the Reno DC",
            status="Completed",
            due=datetime(2026, 11, 19, 17, 0, tzinfo=UTC),
            completed=done,
        ),
    )

    output = mailsync("history", "--account", "Tailspin Toys").output
    lines = output.splitlines()
    assert lines[0] == "Tailspin Toys: 2 activities (times in UTC)"
    # The due time, then the due date, in the column where a meeting has its start.
    assert lines[1].startswith("2026-11-19 17:00  out  task     Call Ellen about")
    assert lines[1].endswith("[completed 2026-11-18, due 2026-11-19 17:00]")
    assert lines[2].startswith("2026-11-20        out  task     Send Ellen the pilot")
    assert lines[2].endswith(
        "Ellen Adams  (contact_name) [not started, due 2026-11-20]"
    )

    views = mailsync.history(account="Tailspin Toys")
    assert [v["task"] for v in views] == [
        {
            "status": "Completed",
            "due": "2026-11-19T17:00:00Z",
            "completed": "2026-11-18T16:05:00Z",
        },
        {"status": "NotStarted", "due": "2026-11-20", "completed": None},
    ]
    assert [v["occurred_at"] for v in views] == [
        "2026-11-19T17:00:00Z",
        "2026-11-20T00:00:00Z",
    ]


def test_unlinked_lists_the_names_after_the_addresses(tmp_path, store_url, factory):
    mailsync = Mailsync(write_config(tmp_path / "m.toml", store_url, tmp_path / "md"))
    mailsync("init")
    mailsync("accounts", "import", str(CONTOSO / "accounts.csv"))
    (tmp_path / "contacts.csv").write_text(CONTACTS, encoding="utf-8")
    mailsync("contacts", "import", str(tmp_path / "contacts.csv"))
    config = parse_config(
        {
            "database": {"url": store_url},
            "organisation": {"internal_domains": ["contoso.com"]},
            "mailboxes": [
                {
                    "address": TAMARA,
                    "rep": "Tamara Johnston",
                    "kind": "local",
                    "path": str(tmp_path / "md"),
                }
            ],
        }
    )
    jordan = Participant("jordan.lee@northwindtraders.com", "Jordan Lee", Role.TO)
    apply(
        factory,
        config,
        task_item(contacts=("Ben Miller",), participants=[jordan]),
        task_item("AAMkSECOND=", "AAMkSECOND=tamara", contacts=("Ben Miller",)),
    )

    lines = mailsync("unlinked").output.splitlines()
    assert lines[0] == "1 unlinked addresses"
    assert "jordan.lee@northwindtraders.com" in lines[1]
    assert lines[2] == "1 unlinked names typed in tasks"
    assert lines[3].startswith(f"    2  {'Ben Miller (contact_name, ambiguous)':40}")
    rows = mailsync.json("unlinked")
    assert [(r["kind"], r["address"], r["name"], r["count"]) for r in rows] == [
        ("address", "jordan.lee@northwindtraders.com", "Jordan Lee", 1),
        ("contact_name", None, "Ben Miller", 2),
    ]


# --- the schema: 0001 to 0002 keeps what is stored ------------------------------------


def test_upgrade_from_0001_keeps_the_rows_and_adds_the_task_columns(store_url):
    engine = db.open_engine(store_url)
    alembic = AlembicConfig()
    alembic.set_main_option("script_location", str(db.MIGRATIONS))
    alembic.attributes["engine"] = engine
    command.downgrade(alembic, "base")
    command.upgrade(alembic, "0001")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO activities (kind, direction, occurred_at, subject, "
                "preview, defects, all_day, status, sequence, created_at, updated_at) "
                "VALUES ('message', 'inbound', :t, 'Order 7', '', '[]', false, "
                "'active', 0, :t, :t)"
            ),
            {"t": datetime(2026, 10, 1, 9, 0)},
        )
        connection.execute(
            text(
                "INSERT INTO activity_keys (key, activity_id) "
                "SELECT 'mid:7@x', id FROM activities"
            )
        )

    command.upgrade(alembic, "head")

    current, head = db.schema_state(engine)
    assert current == head
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT subject, task_status, due_at, due_is_date, completed_at "
                "FROM activities JOIN activity_keys ON activity_id = activities.id"
            )
        ).one()
        assert tuple(row) == ("Order 7", None, None, None, None)
        assert (
            connection.execute(text("SELECT count(*) FROM activity_names")).scalar()
            == 0
        )
        differences = compare_metadata(
            MigrationContext.configure(connection), Base.metadata
        )
    assert differences == []

    # A task can be written to the upgraded database (and read back).
    factory = db.sessions(engine)
    with transaction(factory) as session:
        session.add(
            Activity(
                kind="task",
                direction="outbound",
                occurred_at=datetime(2026, 11, 20, tzinfo=UTC),
                task_status="Deferred",
                due_at=datetime(2026, 11, 20, tzinfo=UTC),
                due_is_date=True,
            )
        )
    with factory() as session:
        assert (
            session.scalar(select(Activity.task_status).where(Activity.kind == "task"))
            == "Deferred"
        )
    engine.dispose()


def test_downgrade_to_0001_drops_only_the_task_parts(store_url, factory, crm):
    apply(factory, crm, task_item())
    engine = db.open_engine(store_url)
    alembic = AlembicConfig()
    alembic.set_main_option("script_location", str(db.MIGRATIONS))
    alembic.attributes["engine"] = engine
    command.downgrade(alembic, "0001")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM activities")).scalar() == 1
        assert connection.execute(text("SELECT count(*) FROM links")).scalar() == 2
        assert connection.execute(text("SELECT count(*) FROM sources")).scalar() == 1
    command.upgrade(alembic, "head")
    engine.dispose()
