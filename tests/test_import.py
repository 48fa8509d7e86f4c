"""Importing Business Contacts and Accounts from CSV and vCard files.

Each test runs on SQLite and on PostgreSQL (the ``factory`` fixture). The files
are written the way an admin's CRM export looks: the columns of
``../shared/crm/enron/*.csv`` and ``examples/contoso/*.csv``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailsync.errors import UserError
from mailsync.importer import ImportReport, import_accounts, import_contacts, read_rows
from mailsync.queries import accounts_listing, contacts_listing
from mailsync.store import db
from mailsync.store.db import transaction
from mailsync.store.directory import contact_by_address
from mailsync.store.models import Account, AccountDomain, Contact, ContactAddress
from tests.conftest import CONTOSO

ACCOUNTS_CSV = """\
name,domains,phone,notes
Reliant Energy,reliantenergy.com;reliant.com,,two domains
University of Texas at Austin,utexas.edu,,mail comes from a subdomain
Conoco,conoco.com,,
"""

CONTACTS_CSV = """\
name,emails,account,title
D. Gagliardi,dgagliardi@reliantenergy.com;dgagliardi@reliant.com,Reliant Energy,Trader
Jennifer Dickinson,jdickinson@mail.utexas.edu,University of Texas at Austin,
Richard Donoghue,rdonoghue@mphlegal.com,,
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def load(factory: sessionmaker[Session], kind: str, path: Path) -> ImportReport:
    """Import one file in one transaction, as `mailsync ... import` does."""
    run = import_accounts if kind == "accounts" else import_contacts
    with db.transaction(factory) as session:
        return run(session, read_rows(path, kind))


def accounts(factory: sessionmaker[Session]) -> dict[str, list[str]]:
    with factory() as session:
        return {row["name"]: row["domains"] for row in accounts_listing(session)}


def accounts_of(factory: sessionmaker[Session]) -> list[dict[str, object]]:
    with factory() as session:
        return accounts_listing(session)


def contacts(factory: sessionmaker[Session]) -> list[tuple[str, list[str], str | None]]:
    with factory() as session:
        return [
            (row["name"], sorted(row["emails"]), row["account"])
            for row in contacts_listing(session)
        ]


def row_counts(factory: sessionmaker[Session]) -> dict[str, int]:
    with factory() as session:
        return {
            model.__tablename__: session.query(model).count()
            for model in (Account, AccountDomain, Contact, ContactAddress)
        }


def lines_of(report: ImportReport) -> list[int]:
    return [line for line, _message in report.errors]


# --- CSV -------------------------------------------------------------------


def test_accounts_csv_keeps_every_domain(factory, tmp_path):
    report = load(factory, "accounts", write(tmp_path, "accounts.csv", ACCOUNTS_CSV))

    assert (report.created, report.updated, report.unchanged) == (3, 0, 0)
    assert report.errors == []
    assert accounts(factory) == {
        "Conoco": ["conoco.com"],
        "Reliant Energy": ["reliant.com", "reliantenergy.com"],
        "University of Texas at Austin": ["utexas.edu"],
    }


def test_contacts_csv_keeps_every_address_and_the_account(factory, tmp_path):
    load(factory, "accounts", write(tmp_path, "accounts.csv", ACCOUNTS_CSV))

    report = load(factory, "contacts", write(tmp_path, "contacts.csv", CONTACTS_CSV))

    assert (report.created, report.updated, report.unchanged) == (3, 0, 0)
    assert report.errors == []
    assert contacts(factory) == [
        (
            "D. Gagliardi",
            ["dgagliardi@reliant.com", "dgagliardi@reliantenergy.com"],
            "Reliant Energy",
        ),
        (
            "Jennifer Dickinson",
            ["jdickinson@mail.utexas.edu"],
            "University of Texas at Austin",
        ),
        ("Richard Donoghue", ["rdonoghue@mphlegal.com"], None),
    ]


# Excel's "CSV" where the decimal mark is a comma (most of Europe).
SEMICOLON_ACCOUNTS_CSV = """\
name;domains;phone;notes
Reliant Energy;"reliantenergy.com;reliant.com";+1 713 555 0100;two domains
University of Texas at Austin;utexas.edu;;"subdomain, not the top"
Conoco;"conoco.com,conocophillips.com";;
"""

SEMICOLON_CONTACTS_CSV = """\
name;emails;account
"Gagliardi, D.";"dgagliardi@reliantenergy.com;dgagliardi@reliant.com";Reliant Energy
Jennifer Dickinson;"jd@mail.utexas.edu, jd@utexas.edu";University of Texas at Austin
Richard Donoghue;rdonoghue@mphlegal.com;
"""


def test_a_semicolon_separated_accounts_csv_imports(factory, tmp_path):
    path = write(tmp_path, "accounts.csv", SEMICOLON_ACCOUNTS_CSV)

    report = load(factory, "accounts", path)

    assert (report.created, report.errors) == (3, [])
    assert accounts(factory) == {
        "Conoco": ["conoco.com", "conocophillips.com"],
        "Reliant Energy": ["reliant.com", "reliantenergy.com"],
        "University of Texas at Austin": ["utexas.edu"],
    }
    reliant = next(a for a in accounts_of(factory) if a["name"] == "Reliant Energy")
    assert reliant["phone"] == "+1 713 555 0100"


def test_a_semicolon_separated_contacts_csv_imports(factory, tmp_path):
    load(factory, "accounts", write(tmp_path, "accounts.csv", ACCOUNTS_CSV))
    path = write(tmp_path, "contacts.csv", SEMICOLON_CONTACTS_CSV)

    report = load(factory, "contacts", path)

    assert (report.created, report.errors) == (3, [])
    assert contacts(factory) == [
        (
            "Gagliardi, D.",
            ["dgagliardi@reliant.com", "dgagliardi@reliantenergy.com"],
            "Reliant Energy",
        ),
        (
            "Jennifer Dickinson",
            ["jd@mail.utexas.edu", "jd@utexas.edu"],
            "University of Texas at Austin",
        ),
        ("Richard Donoghue", ["rdonoghue@mphlegal.com"], None),
    ]


def test_a_tab_separated_contacts_file_imports(factory, tmp_path):
    path = write(
        tmp_path,
        "contacts.txt",
        "name\temails\taccount\nRichard Donoghue\trdonoghue@mphlegal.com\t\n",
    )

    report = load(factory, "contacts", path)

    assert (report.created, report.errors) == (1, [])
    assert contacts(factory) == [("Richard Donoghue", ["rdonoghue@mphlegal.com"], None)]


def test_the_contoso_sample_files_import(factory):
    accounts_report = load(factory, "accounts", CONTOSO / "accounts.csv")
    contacts_report = load(factory, "contacts", CONTOSO / "contacts.csv")

    assert (accounts_report.created, accounts_report.errors) == (3, [])
    assert (contacts_report.created, contacts_report.errors) == (4, [])
    assert accounts(factory)["Tailspin Toys"] == [
        "tailspintoys.co.uk",
        "tailspintoys.com",
    ]
    assert (
        "Andy Carothers",
        ["andy.carothers@tailspintoys.com", "andy@tailspintoys.co.uk"],
        "Tailspin Toys",
    ) in contacts(factory)
    assert ("Ben Miller", ["ben.miller@fabrikam.com"], "Fabrikam, Inc.") in contacts(
        factory
    )


def test_importing_the_same_files_twice_changes_nothing(factory, tmp_path):
    accounts_file = write(tmp_path, "accounts.csv", ACCOUNTS_CSV)
    contacts_file = write(tmp_path, "contacts.csv", CONTACTS_CSV)
    load(factory, "accounts", accounts_file)
    load(factory, "contacts", contacts_file)
    before = row_counts(factory)

    again_accounts = load(factory, "accounts", accounts_file)
    again_contacts = load(factory, "contacts", contacts_file)

    assert (again_accounts.created, again_accounts.updated) == (0, 0)
    assert again_accounts.unchanged == 3
    assert (again_contacts.created, again_contacts.updated) == (0, 0)
    assert again_contacts.unchanged == 3
    assert row_counts(factory) == before
    assert before == {
        "accounts": 3,
        "account_domains": 4,
        "contacts": 3,
        "contact_addresses": 4,
    }


def test_addresses_and_domains_match_without_case(factory, tmp_path):
    load(factory, "accounts", write(tmp_path, "accounts.csv", ACCOUNTS_CSV))
    load(factory, "contacts", write(tmp_path, "contacts.csv", CONTACTS_CSV))
    before = row_counts(factory)
    shouting_accounts = write(
        tmp_path,
        "accounts-upper.csv",
        "name,domains,phone,notes\n"
        "Reliant Energy,RELIANTENERGY.COM;Reliant.Com,,two domains\n",
    )
    shouting_contacts = write(
        tmp_path,
        "contacts-upper.csv",
        "name,emails,account,title\n"
        "D. Gagliardi,DGagliardi@ReliantEnergy.com;DGAGLIARDI@RELIANT.COM,"
        "Reliant Energy,Trader\n",
    )

    accounts_report = load(factory, "accounts", shouting_accounts)
    contacts_report = load(factory, "contacts", shouting_contacts)

    assert (accounts_report.unchanged, accounts_report.errors) == (1, [])
    assert (contacts_report.unchanged, contacts_report.errors) == (1, [])
    assert row_counts(factory) == before


def test_the_same_address_twice_in_a_row_is_one_address(factory, tmp_path):
    # EMAIL and URL of a vCard, or a careless export, often name a domain twice.
    report_accounts = load(
        factory,
        "accounts",
        write(tmp_path, "a.csv", "name,domains\nConoco,conoco.com;CONOCO.com\n"),
    )
    report_contacts = load(
        factory,
        "contacts",
        write(
            tmp_path,
            "c.csv",
            "name,emails,account\nJ. Dickinson,jd@conoco.com;JD@conoco.com,Conoco\n",
        ),
    )

    assert (report_accounts.created, report_accounts.errors) == (1, [])
    assert (report_contacts.created, report_contacts.errors) == (1, [])
    assert accounts(factory) == {"Conoco": ["conoco.com"]}
    assert contacts(factory) == [("J. Dickinson", ["jd@conoco.com"], "Conoco")]


def test_a_web_site_in_the_domains_column_gives_its_domain(factory, tmp_path):
    path = write(
        tmp_path,
        "accounts.csv",
        "name,website\nDuke Energy,https://www.duke-energy.com/\nCalpine,calpine.com\n",
    )

    report = load(factory, "accounts", path)

    assert report.errors == []
    assert accounts(factory) == {
        "Calpine": ["calpine.com"],
        "Duke Energy": ["duke-energy.com"],
    }


def test_a_free_mail_domain_never_becomes_an_account(factory, tmp_path):
    path = write(
        tmp_path,
        "accounts.csv",
        "name,domains\nTruOrange,aol.com\nConoco,conoco.com\n",
    )

    report = load(factory, "accounts", path)

    assert lines_of(report) == [2]
    assert "aol.com" in report.errors[0][1]
    assert "free-mail" in report.errors[0][1]
    assert accounts(factory) == {"Conoco": ["conoco.com"]}


def test_a_file_without_a_column_keeps_what_is_stored(factory, tmp_path):
    load(factory, "accounts", CONTOSO / "accounts.csv")
    load(factory, "contacts", CONTOSO / "contacts.csv")
    before = {row[0]: row for row in contacts(factory)}

    # A plain list of names and addresses, as a mail client exports it.
    report = load(
        factory,
        "contacts",
        write(
            tmp_path,
            "addresses.csv",
            "Name,E-mail Address\nAndy Carothers,andy.carothers@tailspintoys.com\n",
        ),
    )

    assert (report.updated, report.unchanged) == (0, 1)
    assert {row[0]: row for row in contacts(factory)} == before
    with factory() as session:
        andy = session.scalar(select(Contact).where(Contact.name == "Andy Carothers"))
        assert andy is not None
        assert (andy.title, andy.phone) == ("VP Operations", "+1 312 555 0187")


def test_an_empty_cell_clears_what_is_stored(factory, tmp_path):
    load(factory, "accounts", CONTOSO / "accounts.csv")
    load(factory, "contacts", CONTOSO / "contacts.csv")

    report = load(
        factory,
        "contacts",
        write(
            tmp_path,
            "moved.csv",
            "name,emails,account,title\n"
            "Andy Carothers,andy.carothers@tailspintoys.com,,\n",
        ),
    )

    assert report.updated == 1
    andy = next(row for row in contacts(factory) if row[0] == "Andy Carothers")
    assert andy[2] is None


# --- bad rows --------------------------------------------------------------


def test_bad_account_rows_are_reported_and_the_others_imported(factory, tmp_path):
    path = write(
        tmp_path,
        "accounts.csv",
        "name,domains,phone,notes\n"
        "Reliant Energy,reliantenergy.com;reliant.com,,\n"
        ",ercot.com,,no name\n"
        "Reliant Retail,reliant.com,,a domain of Reliant Energy\n"
        "Qwest,not a domain,,\n"
        "Calpine,,,no domain\n"
        "ERCOT,ercot.com,,\n",
    )

    report = load(factory, "accounts", path)

    assert lines_of(report) == [3, 4, 5, 6]
    messages = dict(report.errors)
    assert "name" in messages[3]
    assert "reliant.com" in messages[4] and "'Reliant Energy'" in messages[4]
    assert "'not a domain'" in messages[5]
    assert "no domain" in messages[6]
    assert (report.created, report.updated, report.unchanged) == (2, 0, 0)
    assert accounts(factory) == {
        "ERCOT": ["ercot.com"],
        "Reliant Energy": ["reliant.com", "reliantenergy.com"],
    }


def test_bad_contact_rows_are_reported_and_the_others_imported(factory, tmp_path):
    load(factory, "accounts", write(tmp_path, "accounts.csv", ACCOUNTS_CSV))
    load(
        factory,
        "contacts",
        write(
            tmp_path,
            "first.csv",
            "name,emails,account\n"
            "D. Gagliardi,dgagliardi@reliantenergy.com,Reliant Energy\n"
            "Daniel Ebner,debner@jpi.com,\n",
        ),
    )
    path = write(
        tmp_path,
        "contacts.csv",
        "name,emails,account,title\n"
        "Cheryl Moseley,cmoseley@ercot.com,,\n"
        ",kdonohoo@ercot.com,,no name\n"
        "Scott Palmer,scott.palmer at exodus.net,,\n"
        "Luis Gasparini,lgasparini@simpletel,,\n"
        "Steve Egert,egert_steve@emc.com,EMC Corporation,\n"
        "Two People,dgagliardi@reliantenergy.com;debner@jpi.com,,\n"
        "Craig J. Dean,craig.dean@ey.com,,\n",
    )

    report = load(factory, "contacts", path)

    assert lines_of(report) == [3, 4, 5, 6, 7]
    messages = dict(report.errors)
    assert "kdonohoo@ercot.com" in messages[3] and "no name" in messages[3]
    assert "'scott.palmer at exodus.net'" in messages[4]
    assert "'lgasparini@simpletel'" in messages[5]
    assert "'EMC Corporation'" in messages[6] and "import the accounts" in messages[6]
    assert "'D. Gagliardi'" in messages[7] and "'Daniel Ebner'" in messages[7]
    assert report.created == 2
    names = [name for name, _emails, _account in contacts(factory)]
    assert names == ["Cheryl Moseley", "Craig J. Dean", "D. Gagliardi", "Daniel Ebner"]


@pytest.mark.parametrize(
    "bad",
    [
        "Andy <andy@tailspintoys.com>",
        "andy@@tailspintoys.com",
        "an dy@tailspintoys.com",
    ],
)
def test_an_address_that_is_not_one_is_rejected(factory, tmp_path, bad):
    path = write(tmp_path, "contacts.csv", f'name,emails\nAndy,"{bad}"\n')

    report = load(factory, "contacts", path)

    assert report.errors == [(2, f"{bad!r} is not an e-mail address")]
    assert contacts(factory) == []


def test_a_multi_line_field_keeps_line_numbers_honest(factory, tmp_path):
    path = write(
        tmp_path,
        "accounts.csv",
        "name,domains,phone,notes\n"
        'Reliant Energy,reliantenergy.com,,"Houston.\n'
        "Two domains:\n"
        'see the next row."\n'
        ',reliant.com,,"no name,\n'
        'on two lines"\n'
        "Conoco,conoco.com,,\n"
        "Qwest,qwest,,\n",
    )

    report = load(factory, "accounts", path)

    # The row without a name starts on line 5, and Qwest is on line 8.
    assert lines_of(report) == [5, 8]
    assert accounts(factory) == {
        "Conoco": ["conoco.com"],
        "Reliant Energy": ["reliantenergy.com"],
    }
    with factory() as session:
        notes = session.scalar(
            select(Account.notes).where(Account.name == "Reliant Energy")
        )
    assert notes == "Houston.\nTwo domains:\nsee the next row."


# --- files -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "header", "column"),
    [
        ("accounts", "name,phone,notes", "'domains'"),
        ("accounts", "domains,phone", "'name'"),
        ("contacts", "name,account,title", "'emails'"),
        ("contacts", "emails,account", "'name'"),
    ],
)
def test_a_missing_column_is_named(factory, tmp_path, kind, header, column):
    path = write(tmp_path, f"{kind}.csv", f"{header}\nsomething,else,here\n")

    with pytest.raises(UserError, match=column) as error:
        load(factory, kind, path)

    assert str(path) in str(error.value)
    assert set(row_counts(factory).values()) == {0}


@pytest.mark.parametrize("name", ["accounts.csv", "accounts.vcf"])
def test_an_empty_file_is_a_user_error(factory, tmp_path, name):
    path = write(tmp_path, name, "")

    with pytest.raises(UserError, match="empty|no vCard"):
        load(factory, "accounts", path)


def test_a_missing_file_is_a_user_error(factory, tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load(factory, "contacts", tmp_path / "contacts.csv")


@pytest.mark.parametrize("kind", ["accounts", "contacts"])
def test_a_directory_is_a_user_error_that_asks_for_a_file(factory, tmp_path, kind):
    with pytest.raises(UserError) as error:
        load(factory, kind, tmp_path)

    assert str(error.value) == (
        f"{tmp_path} is a directory; give the path of a .csv or .vcf file"
    )


def test_a_cp1252_file_still_imports(factory, tmp_path):
    # What Excel on Windows saves as "CSV": cp1252, with accents and a dash.
    path = tmp_path / "accounts.csv"
    path.write_bytes(
        "name,domains,phone,notes\n"
        "Société Générale,societegenerale.fr,,Paris – La Défense\n"
        "Müller GmbH,mueller.de,,\n".encode("cp1252")
    )

    report = load(factory, "accounts", path)

    assert (report.created, report.errors) == (2, [])
    assert accounts(factory) == {
        "Müller GmbH": ["mueller.de"],
        "Société Générale": ["societegenerale.fr"],
    }
    with factory() as session:
        notes = session.scalar(
            select(Account.notes).where(Account.name == "Société Générale")
        )
    assert notes == "Paris – La Défense"


def test_a_utf8_file_with_a_byte_order_mark_imports(factory, tmp_path):
    path = tmp_path / "accounts.csv"
    path.write_bytes("name,domains\nConoco,conoco.com\n".encode("utf-8-sig"))

    report = load(factory, "accounts", path)

    assert (report.created, report.errors) == (1, [])


# --- vCard -----------------------------------------------------------------


def test_vcard_contacts_take_their_org_as_account(factory):
    load(factory, "accounts", CONTOSO / "accounts.csv")

    report = load(factory, "contacts", CONTOSO / "contacts.vcf")

    assert (report.created, report.errors) == (2, [])
    assert contacts(factory) == [
        ("Carlos Gruber", ["carlos.gruber@fabrikam.com"], "Fabrikam, Inc."),
        ("Ryan Danner", ["ryan.danner@tailspintoys.com"], "Tailspin Toys"),
    ]
    with factory() as session:
        ryan = session.scalar(select(Contact).where(Contact.name == "Ryan Danner"))
        assert ryan is not None
        assert (ryan.title, ryan.phone) == ("Network Engineer", "+1 312 555 0149")

    again = load(factory, "contacts", CONTOSO / "contacts.vcf")
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2)


def test_vcard_contacts_before_their_accounts_are_reported(factory):
    report = load(factory, "contacts", CONTOSO / "contacts.vcf")

    # Each card is reported by the line its BEGIN:VCARD is on.
    assert lines_of(report) == [1, 11]
    assert "'Tailspin Toys' not found" in report.errors[0][1]
    assert "'Fabrikam, Inc.' not found" in report.errors[1][1]


def test_vcard_accounts_take_org_and_the_email_and_url_domains(factory, tmp_path):
    path = write(
        tmp_path,
        "accounts.vcf",
        "BEGIN:VCARD\r\n"
        "VERSION:3.0\r\n"
        "FN:Ryan Danner\r\n"
        "ORG:Tailspin Toys\r\n"
        "EMAIL;TYPE=WORK:ryan.danner@tailspintoys.com\r\n"
        "EMAIL;TYPE=HOME:ryan.danner@gmail.com\r\n"
        "URL:https://www.tailspintoys.com/\r\n"
        "URL:tailspintoys.co.uk\r\n"
        "END:VCARD\r\n"
        "BEGIN:VCARD\r\n"
        "VERSION:3.0\r\n"
        "FN:Carlos Gruber\r\n"
        "ORG:Fabrikam\\, Inc.;Warehouse Systems\r\n"
        "EMAIL:carlos.gruber@fabrikam.com\r\n"
        "END:VCARD\r\n",
    )

    report = load(factory, "accounts", path)

    assert (report.created, report.errors) == (2, [])
    assert accounts(factory) == {
        "Fabrikam, Inc.": ["fabrikam.com"],
        "Tailspin Toys": ["tailspintoys.co.uk", "tailspintoys.com"],
    }


def test_vcard_accounts_keep_the_account_phone_and_notes(factory):
    load(factory, "accounts", CONTOSO / "accounts.csv")
    before = accounts_of(factory)

    # Ryan's and Carlos's cards name Tailspin Toys and Fabrikam as their ORG.
    report = load(factory, "accounts", CONTOSO / "contacts.vcf")

    assert (report.updated, report.unchanged, report.errors) == (0, 2, [])
    assert accounts_of(factory) == before


def test_a_vcard_account_with_only_free_mail_is_reported(factory, tmp_path):
    path = write(
        tmp_path,
        "accounts.vcf",
        "BEGIN:VCARD\nVERSION:3.0\nFN:Sam Rivera\nORG:Rivera Consulting\n"
        "EMAIL:sam.rivera.consulting@gmail.com\nEND:VCARD\n",
    )

    report = load(factory, "accounts", path)

    assert lines_of(report) == [1]
    assert "'Rivera Consulting' has no domain" in report.errors[0][1]
    assert accounts(factory) == {}


# --- the Jennifer Dickinson trap --------------------------------------------


def test_two_people_with_the_same_name_stay_two_contacts(factory, tmp_path):
    load(factory, "accounts", write(tmp_path, "accounts.csv", ACCOUNTS_CSV))
    path = write(
        tmp_path,
        "contacts.csv",
        "name,emails,account,title\n"
        "Jennifer Dickinson,jdickinson@mail.utexas.edu,University of Texas at Austin,\n"
        "Jennifer Dickinson,jennifer.k.dickinson@usa.conoco.com,Conoco,\n",
    )

    first = load(factory, "contacts", path)
    second = load(factory, "contacts", path)

    assert (first.created, first.errors) == (2, [])
    assert (second.created, second.updated, second.unchanged) == (0, 0, 2)
    assert contacts(factory) == [
        (
            "Jennifer Dickinson",
            ["jdickinson@mail.utexas.edu"],
            "University of Texas at Austin",
        ),
        ("Jennifer Dickinson", ["jennifer.k.dickinson@usa.conoco.com"], "Conoco"),
    ]


def test_one_address_on_two_rows_is_reported_not_flipped(factory, tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text(
        "name,emails\nAnn One,ann@tailspintoys.com\nAnn Dup,ANN@tailspintoys.com\n"
    )
    for _ in range(2):
        with transaction(factory) as session:
            report = import_contacts(session, read_rows(path, "contacts"))
        assert report.errors == [
            (3, "ann@tailspintoys.com is also on line 2; keep each address on one row")
        ]
    assert report.unchanged == 1 and report.updated == 0


def test_one_bad_vcard_does_not_reject_the_file(factory, tmp_path):
    good = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{name}\r\nEMAIL:{email}\r\nEND:VCARD\r\n"
    bad = (
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Broken\r\nEMAIL:b@x.com\r\n"
        "PHOTO;ENCODING=b;TYPE=JPEG:!!!notbase64!!!\r\nEND:VCARD\r\n"
    )
    no_fn = (
        "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Coleman;Pat;;;\r\n"
        "EMAIL:pat.coleman@tailspintoys.com\r\nEND:VCARD\r\n"
    )
    path = tmp_path / "cards.vcf"
    path.write_text(
        good.format(name="First", email="first@x.com")
        + bad
        + good.format(name="Last", email="last@x.com")
        + no_fn,
        newline="",
    )
    with transaction(factory) as session:
        report = import_contacts(session, read_rows(path, "contacts"))
    assert report.created == 3
    assert [line for line, _ in report.errors] == [6]
    with factory() as session:
        assert contact_by_address(session, "pat.coleman@tailspintoys.com").name == (
            "Pat Coleman"
        )


def test_a_vcard_cut_off_by_the_next_and_stray_text_are_reported(tmp_path):
    path = tmp_path / "cut.vcf"
    path.write_text(
        "BEGIN:VCARD\nVERSION:3.0\nFN:Alpha Person\nEMAIL:alpha@fabrikam.com\n"
        "BEGIN:VCARD\nVERSION:3.0\nFN:Beta Person\nEMAIL:beta@fabrikam.com\n"
        "END:VCARD\nsome junk here\nmore junk\n\n"
        "BEGIN:VCARD\nVERSION:3.0\nFN:Gamma Person\nEMAIL:gamma@fabrikam.com\n"
        "END:VCARD\n"
    )
    rows = list(read_rows(path, "contacts"))
    assert [(r.line, r.error is None) for r in rows] == [
        (1, False),
        (5, True),
        (10, False),
        (13, True),
    ]
    assert "no END:VCARD before the next card on line 5" in (rows[0].error or "")
    assert "text outside any vCard" in (rows[2].error or "")
    assert [r.fields["name"] for r in rows if r.error is None] == [
        "Beta Person",
        "Gamma Person",
    ]
