"""The linking rules as pure functions: no database, no files."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailsync.items import Folder, FolderRole, Item, ItemKind, Participant, Role
from mailsync.linker.rules import (
    ContactRef,
    Directory,
    LinkRule,
    MatchStatus,
    Organisation,
    author,
    direct_links,
    has_counterparty,
    links_for,
    match_participants,
)
from mailsync.linker.screen import ExcludeReason, screen

ORG = Organisation(
    internal_domains=frozenset({"contoso.com"}),
    own_addresses=frozenset({"tamara@contoso.com"}),
    relay_senders=frozenset({"forms@webforms.example"}),
)
TAILSPIN, FABRIKAM = 1, 2
ANDY, LORRAINE, TAGGED = 10, 11, 12


@pytest.fixture
def directory() -> Directory:
    d = Directory()
    d.account_domains = {
        "tailspintoys.com": TAILSPIN,
        "fabrikam.com": FABRIKAM,
        "utexas.edu": 3,
    }
    d.contacts = {
        "andy.carothers@tailspintoys.com": ContactRef(ANDY, TAILSPIN),
        "andy@tailspintoys.co.uk": ContactRef(ANDY, TAILSPIN),
        "lorraine.nay@tailspintoys.com": ContactRef(LORRAINE, TAILSPIN),
        "sales+eu@fabrikam.com": ContactRef(TAGGED, FABRIKAM),
    }
    d.contact_accounts = {ANDY: TAILSPIN, LORRAINE: TAILSPIN, TAGGED: FABRIKAM}
    return d


def people(*specs: tuple[str, Role]) -> list[Participant]:
    return [Participant(address, "", role) for address, role in specs]


def match_one(
    address: str,
    directory: Directory,
    role: Role = Role.FROM,
    sent: bool = False,
    **kw: bool,
):
    [m] = match_participants(
        [Participant(address, "", role, **kw)], sent=sent, directory=directory, org=ORG
    )
    return m


# --- rule 3: a contact by any of its addresses, and its account --------------


def test_contact_matches_by_any_address_and_links_its_account(directory):
    for address in ("andy.carothers@tailspintoys.com", "ANDY@TailspinToys.co.uk"):
        m = match_one(address, directory)
        assert (m.status, m.contact_id, m.account_id) == (
            MatchStatus.CONTACT,
            ANDY,
            TAILSPIN,
        )
    links = direct_links([match_one("andy@tailspintoys.co.uk", directory)])
    assert links == {
        ("contact", ANDY): LinkRule.ADDRESS,
        ("account", TAILSPIN): LinkRule.ADDRESS,
    }


# --- rule 1: +tag stripped only after the exact address ----------------------


def test_tag_is_stripped_only_when_the_exact_address_matches_nothing(directory):
    tagged = match_one("lorraine.nay+contoso@tailspintoys.com", directory)
    assert (tagged.status, tagged.contact_id) == (MatchStatus.CONTACT, LORRAINE)
    exact = match_one("sales+eu@fabrikam.com", directory)
    assert exact.contact_id == TAGGED  # the exact address wins; no stripping


# --- rule 4: accounts by domain, subdomains, never free mail -----------------


def test_account_matches_by_domain_and_subdomain(directory):
    pat = match_one("pat.coleman@tailspintoys.com", directory)
    assert (pat.status, pat.contact_id, pat.account_id, pat.rule) == (
        MatchStatus.ACCOUNT,
        None,
        TAILSPIN,
        LinkRule.DOMAIN,
    )
    student = match_one("jdickinson@mail.utexas.edu", directory)
    assert student.account_id == 3


def test_free_mail_never_matches_an_account(directory):
    directory.account_domains["aol.com"] = 99  # an admin mistake
    m = match_one("truorange@aol.com", directory)
    assert (m.status, m.account_id) == (MatchStatus.UNKNOWN, None)


def test_unresolved_address_is_never_matched_by_domain(directory):
    m = match_one("x500-abc@tailspintoys.com", directory, unresolved=True)
    assert (m.status, m.account_id) == (MatchStatus.UNRESOLVED, None)


def test_unknown_domain_waits_for_review(directory):
    m = match_one("jordan.lee@northwindtraders.com", directory)
    assert m.status is MatchStatus.UNKNOWN


# --- rule 5: our own people ---------------------------------------------------


def test_internal_people_and_subdomains_are_never_counterparties(directory):
    for address in ("megan@contoso.com", "don@mail.contoso.com", "tamara@contoso.com"):
        assert match_one(address, directory).status is MatchStatus.INTERNAL
    matches = match_participants(
        people(("megan@contoso.com", Role.FROM), ("tamara@contoso.com", Role.TO)),
        sent=False,
        directory=directory,
        org=ORG,
    )
    assert not has_counterparty(matches)


# --- rule 7: author, delegate, relay -----------------------------------------


def test_sender_apart_from_from_is_a_delegate_not_a_link(directory):
    matches = match_participants(
        people(
            ("lorraine.nay@tailspintoys.com", Role.FROM),
            ("kelly.focht@tailspintoys.com", Role.DELEGATE),
        ),
        sent=False,
        directory=directory,
        org=ORG,
    )
    assert [m.status for m in matches] == [MatchStatus.CONTACT, MatchStatus.DELEGATE]
    assert ("account", TAILSPIN) in direct_links(matches)
    assert author(matches, ORG).address == "lorraine.nay@tailspintoys.com"


def test_form_relay_makes_the_reply_to_person_the_author(directory):
    for relay in ("forms@webforms.example", "website@contoso.com"):
        matches = match_participants(
            people(
                (relay, Role.FROM),
                ("andy@tailspintoys.co.uk", Role.REPLY_TO),
                ("tamara@contoso.com", Role.TO),
            ),
            sent=False,
            directory=directory,
            org=ORG,
        )
        assert author(matches, ORG).address == "andy@tailspintoys.co.uk"
        assert ("contact", ANDY) in direct_links(matches)


def test_the_rep_with_a_reply_to_is_no_relay(directory):
    matches = match_participants(
        people(
            ("tamara@contoso.com", Role.FROM),
            ("andy@tailspintoys.co.uk", Role.REPLY_TO),
        ),
        sent=True,
        directory=directory,
        org=ORG,
    )
    assert author(matches, ORG).address == "tamara@contoso.com"


def test_bcc_counts_only_on_sent_mail(directory):
    spec = people(
        ("megan@contoso.com", Role.FROM), ("lorraine.nay@tailspintoys.com", Role.BCC)
    )
    inbound = match_participants(spec, sent=False, directory=directory, org=ORG)
    outbound = match_participants(spec, sent=True, directory=directory, org=ORG)
    assert inbound[1].status is MatchStatus.IGNORED
    assert outbound[1].status is MatchStatus.CONTACT


def test_each_address_and_role_once_and_bad_addresses_skipped(directory):
    matches = match_participants(
        people(
            ("Andy@TailspinToys.co.uk", Role.TO),
            ("andy@tailspintoys.co.uk", Role.TO),
            ("", Role.CC),
            ("nobody", Role.CC),
        ),
        sent=False,
        directory=directory,
        org=ORG,
    )
    assert [(m.address, m.role) for m in matches] == [
        ("andy@tailspintoys.co.uk", Role.TO)
    ]


# --- manual address links ------------------------------------------------------


def test_manual_address_link_wins_over_domain(directory):
    directory.manual["andy.carothers.home@outlook.com"] = ("contact", ANDY)
    directory.manual["buyer@tailspintoys.com"] = ("account", FABRIKAM)
    home = match_one("andy.carothers.home@outlook.com", directory)
    assert (home.contact_id, home.account_id, home.rule) == (
        ANDY,
        TAILSPIN,
        LinkRule.MANUAL,
    )
    assert match_one("buyer@tailspintoys.com", directory).account_id == FABRIKAM


# --- rules 8 and 11: threads and manual links ---------------------------------


def test_thread_links_only_when_nothing_matched_directly(directory):
    unknown = [match_one("andy.carothers.home@outlook.com", directory)]
    known = [match_one("lorraine.nay@tailspintoys.com", directory)]
    thread = [("account", FABRIKAM)]
    assert links_for(unknown, thread, {}) == {("account", FABRIKAM): LinkRule.THREAD}
    assert ("account", FABRIKAM) not in links_for(known, thread, {})


def test_manual_link_and_unlink_override_the_rules(directory):
    known = [match_one("lorraine.nay@tailspintoys.com", directory)]
    manual = {("account", TAILSPIN): False, ("account", FABRIKAM): True}
    links = links_for(known, [], manual)
    assert ("account", TAILSPIN) not in links
    assert links[("account", FABRIKAM)] is LinkRule.MANUAL
    assert links[("contact", LORRAINE)] is LinkRule.ADDRESS


# --- rules 6 and 9: screening ------------------------------------------------


def item(**changes) -> Item:
    base = Item(
        provider_id="x",
        folder=Folder("inbox", "Inbox", FolderRole.INBOX),
        kind=ItemKind.MESSAGE,
        subject="s",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        participants=people(("andy@tailspintoys.co.uk", Role.FROM)),
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (
            {"list_headers": {"list-id": "<news.toyretail.example>"}},
            ExcludeReason.AUTOMATED,
        ),
        (
            {"list_headers": {"list-unsubscribe": "<mailto:u@x.com>"}},
            ExcludeReason.AUTOMATED,
        ),
        ({"list_headers": {"precedence": "Bulk"}}, ExcludeReason.AUTOMATED),
        ({"list_headers": {"precedence": "junk"}}, ExcludeReason.AUTOMATED),
        ({"list_headers": {"auto-submitted": "auto-replied"}}, ExcludeReason.AUTOMATED),
        ({"is_report": True}, ExcludeReason.AUTOMATED),
        (
            {"participants": people(("no-reply@tailspintoys.com", Role.FROM))},
            ExcludeReason.AUTOMATED,
        ),
        (
            {"participants": people(("MAILER-DAEMON@mx.example.com", Role.FROM))},
            ExcludeReason.AUTOMATED,
        ),
        (
            {"participants": people(("donotreply@bank.example", Role.FROM))},
            ExcludeReason.AUTOMATED,
        ),
        (
            {"folder": Folder(".Drafts", "Drafts", FolderRole.DRAFTS)},
            ExcludeReason.DRAFT,
        ),
        ({"is_draft": True}, ExcludeReason.DRAFT),
        ({"sensitivity": "private"}, ExcludeReason.PRIVATE),
        ({"sensitivity": "company-confidential"}, ExcludeReason.PRIVATE),
        ({"categories": ("Tailspin", "don't TRACK")}, ExcludeReason.OPTED_OUT),
    ],
)
def test_screen_excludes(changes, reason):
    result = screen(item(**changes), sent=False)
    assert result is not None and result[0] is reason


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"list_headers": {"auto-submitted": "no"}},
        {"list_headers": {"precedence": "first-class"}},
        {"list_headers": {"x-auto-response-suppress": "All"}},  # Outlook invitations
        {"sensitivity": "normal"},
        {"participants": people(("noreen@tailspintoys.com", Role.FROM))},
    ],
)
def test_screen_keeps_ordinary_mail(changes):
    assert screen(item(**changes), sent=False) is None


def test_mail_the_rep_sent_is_never_automated():
    sent = item(list_headers={"list-unsubscribe": "<mailto:u@x.com>"})
    assert screen(sent, sent=True) is None


def test_screen_options_record_what_is_asked():
    assert screen(item(is_draft=True), sent=False, record_drafts=True) is None
    assert screen(item(sensitivity="private"), sent=False, record_private=True) is None
    assert (
        screen(
            item(sensitivity="personal"),
            sent=False,
            private_sensitivities=frozenset({"personal"}),
        )
        is not None
    )
