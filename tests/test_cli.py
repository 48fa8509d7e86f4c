"""The ``mailsync`` command line on the Contoso sample, as an admin runs it.

Every test runs the real commands through click's CliRunner on a database on
SQLite and on PostgreSQL (``store_url``) and on a private copy of the sample
maildir. Exit codes and error messages are checked on the installed
``mailsync`` script, since the errors are turned into messages by its
``main()``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from mailsync.cli import cli
from tests.conftest import CONTOSO

MAILSYNC = Path(sys.executable).with_name("mailsync")
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
MAILBOX = "tamara@contoso.com"

PILOT = "Tailspin Toys: warehouse scanning pilot"
MEETING = "Tailspin Toys pilot review"
PAT_COLEMAN = "Wi-Fi survey results for the Joliet DC"
UNLINKED = {
    "jordan.lee@northwindtraders.com",
    "sam.rivera.consulting@gmail.com",
    "andy.carothers.home@outlook.com",
}
ANDY_HOME = "andy.carothers.home@outlook.com"
ANDY_WORK = "andy.carothers@tailspintoys.com"
TO_TAILSPIN_BY_HAND = {"target": "account", "name": "Tailspin Toys", "rule": "manual"}


def write_config(path: Path, url: str, maildir: Path) -> Path:
    # json.dumps gives a valid TOML basic string for any path or URL.
    path.write_text(
        f"[database]\nurl = {json.dumps(url)}\n\n"
        '[organisation]\ninternal_domains = ["contoso.com"]\n\n'
        "[[mailboxes]]\n"
        f'address = "{MAILBOX}"\n'
        'rep = "Tamara Johnston"\n'
        'kind = "local"\n'
        f"path = {json.dumps(str(maildir))}\n",
        encoding="utf-8",
    )
    return path


class Mailsync:
    """Runs commands against one configuration file, like a shell would."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.runner = CliRunner()

    def __call__(self, *args: str) -> Result:
        result = self.runner.invoke(cli, ["--config", str(self.config), *args])
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--format", "json").stdout)

    def history(self, **target: str) -> list[dict[str, Any]]:
        ((option, value),) = target.items()
        return self.json("history", f"--{option}", value)

    def fails(self, *args: str) -> str:
        """Run the installed script, expect a user error, and give its message."""
        result = script("--config", str(self.config), *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        return result.stderr


@pytest.fixture
def config_file(tmp_path: Path, store_url: str, contoso_maildir: Path) -> Path:
    return write_config(tmp_path / "mailsync.toml", store_url, contoso_maildir)


@pytest.fixture
def mailsync(config_file: Path) -> Mailsync:
    return Mailsync(config_file)


@pytest.fixture
def demo(mailsync: Mailsync) -> Mailsync:
    """The demo flow of the README, up to the first sync."""
    mailsync("init")
    mailsync("accounts", "import", str(CONTOSO / "accounts.csv"))
    mailsync("contacts", "import", str(CONTOSO / "contacts.csv"))
    mailsync("contacts", "import", str(CONTOSO / "contacts.vcf"))
    mailsync("sync", "--once")
    return mailsync


def script(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed `mailsync` script, for exit codes and error messages."""
    return subprocess.run(
        [str(MAILSYNC), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def subjects(views: list[dict[str, Any]]) -> list[str]:
    return [view["subject"] for view in views]


def find(views: list[dict[str, Any]], subject: str) -> dict[str, Any]:
    return next(view for view in views if view["subject"] == subject)


def addresses(view: dict[str, Any]) -> set[str]:
    return {person["address"] for person in view["participants"]}


def touch(maildir: Path, *views: dict[str, Any]) -> None:
    """Give the views' files a new time, so that the next sync reads them again."""
    for view in views:
        for source in view["sources"]:
            path = maildir_file(maildir, source["provider_id"])
            stamp = path.stat().st_mtime + 60
            os.utime(path, (stamp, stamp))


def maildir_file(maildir: Path, provider_id: str) -> Path:
    folder, _, name = provider_id.rpartition("/")
    for sub in ("cur", "new"):
        path = maildir / folder / sub / name
        if path.exists():
            return path
    raise AssertionError(f"no file for {provider_id}")


def from_home(views: list[dict[str, Any]]) -> dict[str, Any]:
    """Andy's reply from his personal address (thread 7/7)."""
    (reply,) = [view for view in views if ANDY_HOME in addresses(view)]
    return reply


def find_id(views: list[dict[str, Any]], activity_id: int) -> dict[str, Any]:
    return next(view for view in views if view["id"] == activity_id)


# --- the demo flow ---------------------------------------------------------


def test_the_demo_flow(mailsync):
    assert "database ready" in mailsync("init").output
    imported = [
        mailsync("accounts", "import", str(CONTOSO / "accounts.csv")).output,
        mailsync("contacts", "import", str(CONTOSO / "contacts.csv")).output,
        mailsync("contacts", "import", str(CONTOSO / "contacts.vcf")).output,
    ]
    synced = mailsync("sync", "--once").output

    assert "accounts: 3 created, 0 updated, 0 unchanged, 0 rejected" in imported[0]
    assert "contacts: 4 created, 0 updated, 0 unchanged, 0 rejected" in imported[1]
    assert "contacts: 2 created, 0 updated, 0 unchanged, 0 rejected" in imported[2]
    # 38 messages outside Junk; 8 are not history (newsletter, no-reply notice,
    # two internal threads of two, the private note, the draft); the meeting
    # acceptance joins its invitation.
    assert f"mailbox {MAILBOX}: 4 folders, 38 items, 29 new," in synced
    assert "8 excluded, 0 rejected" in synced


def test_history_of_the_account_holds_the_deal(demo):
    text = demo("history", "--account", "Tailspin Toys").output
    views = demo.history(account="Tailspin Toys")

    assert text.startswith(f"Tailspin Toys: {len(views)} activities (times in UTC)\n")
    pilot = [v for v in views if v["subject"].removeprefix("Re: ") == PILOT]
    assert len(pilot) == 7
    assert [v["direction"] for v in pilot] == [
        "outbound",
        "inbound",
        "outbound",
        "inbound",
        "inbound",
        "outbound",
        "inbound",
    ]
    assert ANDY_HOME in addresses(pilot[-1])
    meeting = find(views, MEETING)
    assert (meeting["kind"], meeting["direction"]) == ("meeting", "outbound")
    pat = find(views, PAT_COLEMAN)
    assert pat["contacts"] == []
    assert pat["link_rules"] == [
        {"target": "account", "name": "Tailspin Toys", "rule": "domain"}
    ]
    for line in (PILOT, MEETING, PAT_COLEMAN):
        assert line in text


def test_history_leaves_out_what_is_not_customer_history(demo):
    views = demo.history(account="Tailspin Toys")

    shown = " | ".join(subjects(views))
    assert "Q4 forecast" not in shown  # internal, though about Tailspin
    assert "Pricing approval" not in shown  # internal
    assert "Lakefront 10K" not in shown  # Sensitivity: Private
    assert "Kickoff and first invoice" not in shown  # a draft
    assert "invoice portal password" not in shown  # no-reply, auto-generated
    assert "Mailbox quota exceeded" not in shown  # Junk
    times = [view["occurred_at"] for view in views]
    assert times == sorted(times)


def test_unlinked_lists_the_unknown_people_only(demo):
    rows = demo.json("unlinked")
    text = demo("unlinked").output

    assert {row["address"] for row in rows} == UNLINKED
    assert text.startswith("3 unlinked addresses\n")
    for address in UNLINKED:
        assert address in text
    assert "@contoso.com" not in text
    assert "newsletter@toyretailweekly.com" not in text
    assert "no-reply@tailspintoys.com" not in text
    jordan = next(r for r in rows if r["address"].startswith("jordan.lee@"))
    assert (jordan["name"], jordan["count"]) == ("Jordan Lee", 2)
    assert (jordan["first_seen"], jordan["last_seen"]) == (
        "2026-10-08T15:02:00Z",
        "2026-10-08T20:30:00Z",
    )


# --- JSON shapes -----------------------------------------------------------


def test_history_json_has_a_stable_shape(demo):
    views = demo.history(account="Tailspin Toys")

    keys = {
        "id",
        "kind",
        "direction",
        "occurred_at",
        "subject",
        "status",
        "task",
        "participants",
        "contacts",
        "accounts",
        "sources",
        "link_rules",
        "defects",
    }
    for view in views:
        assert set(view) == keys
        assert view["task"] is None  # a task's status, due date and completion
        assert ISO_UTC.fullmatch(view["occurred_at"]), view["occurred_at"]
        for person in view["participants"]:
            assert set(person) == {"address", "name", "role", "status", "response"}
        for source in view["sources"]:
            assert set(source) == {"mailbox", "folder", "provider_id", "removed"}
        for rule in view["link_rules"]:
            assert set(rule) == {"target", "name", "rule"}


def test_history_json_of_the_first_pilot_message(demo):
    first = find(demo.history(account="Tailspin Toys"), PILOT)

    assert (first["kind"], first["direction"]) == ("message", "outbound")
    assert first["occurred_at"] == "2026-09-08T16:14:00Z"  # 09:14 -0700
    assert first["status"] == "active"
    assert "Tailspin Toys" in [account["name"] for account in first["accounts"]]
    assert {c["email"] for c in first["contacts"]} == {
        ANDY_WORK,
        "lorraine.nay@tailspintoys.com",
    }
    assert [(s["mailbox"], s["folder"]) for s in first["sources"]] == [
        (MAILBOX, "Sent")
    ]
    roles = {(p["address"], p["role"], p["status"]) for p in first["participants"]}
    assert roles == {
        (MAILBOX, "from", "internal"),
        (ANDY_WORK, "to", "contact"),
        ("lorraine.nay@tailspintoys.com", "cc", "contact"),
    }


def test_history_of_a_contact(demo):
    views = demo.history(contact=ANDY_WORK.upper())

    assert views
    assert all("Andy Carothers" in [c["name"] for c in v["contacts"]] for v in views)
    assert "Dublin DC pricing in euros" in subjects(views)  # from his .co.uk address


def test_listings_json_have_stable_shapes(demo):
    contacts = demo.json("contacts", "list")
    accounts = demo.json("accounts", "list")
    unlinked = demo.json("unlinked")
    status = demo.json("status")

    assert {c["name"] for c in contacts} == {
        "Andy Carothers",
        "Lorraine Nay",
        "Ben Miller",
        "Kim Abercrombie",
        "Ryan Danner",
        "Carlos Gruber",
    }
    for contact in contacts:
        assert set(contact) == {
            "id",
            "name",
            "emails",
            "account",
            "title",
            "phone",
            "origin",
        }
    andy = next(c for c in contacts if c["name"] == "Andy Carothers")
    assert andy["emails"] == [ANDY_WORK, "andy@tailspintoys.co.uk"]
    assert (andy["account"], andy["title"]) == ("Tailspin Toys", "VP Operations")

    assert [a["name"] for a in accounts] == [
        "Fabrikam, Inc.",
        "Tailspin Toys",
        "Wingtip Toys",
    ]
    for account in accounts:
        assert set(account) == {"id", "name", "domains", "phone", "notes"}
    assert accounts[1]["domains"] == ["tailspintoys.co.uk", "tailspintoys.com"]

    for row in unlinked:
        assert set(row) == {
            "kind",
            "status",
            "address",
            "name",
            "count",
            "first_seen",
            "last_seen",
            "sample_subject",
            "activity_ids",
        }
        assert (row["kind"], row["status"]) == ("address", "unknown")
        assert len(row["activity_ids"]) == row["count"]
        assert ISO_UTC.fullmatch(row["first_seen"])
        assert ISO_UTC.fullmatch(row["last_seen"])

    (mailbox,) = status
    assert set(mailbox) == {
        "mailbox",
        "rep",
        "kind",
        "last_cycle_at",
        "last_error",
        "last_cycle",
        "activities",
        "links",
        "unlinked",
        "excluded",
        "rejected",
        "rejected_count",
        "last_success_at",
        "lag_seconds",
        "newest_item_at",
        "next_cycle_at",
        "next_cycle",
        "held_by",
    }


# --- status ----------------------------------------------------------------


def test_status_shows_the_last_cycle_and_its_counts(demo):
    (mailbox,) = demo.json("status")
    text = demo("status").output

    assert (mailbox["mailbox"], mailbox["rep"], mailbox["kind"]) == (
        MAILBOX,
        "Tamara Johnston",
        "local",
    )
    assert ISO_UTC.fullmatch(mailbox["last_cycle_at"])
    assert mailbox["last_error"] is None
    assert mailbox["last_cycle"]["new"] == 29
    assert mailbox["last_cycle"]["rejected"] == 0
    assert (mailbox["activities"], mailbox["excluded"]) == (29, 8)
    assert mailbox["unlinked"] == 3  # Jordan's two messages and Sam's note
    assert mailbox["rejected"] == []
    assert text.startswith(f"{MAILBOX} (Tamara Johnston, local): last cycle 20")
    assert "29 activities" in text and "8 excluded, 0 rejected" in text


def test_files_that_are_not_mail_are_rejected_and_the_rest_recorded(
    mailsync, contoso_maildir
):
    inbox = contoso_maildir / "cur"
    (inbox / "1799000000.M1P1.contoso-srv").write_bytes(b"")
    (inbox / "1799000001.M2P2.contoso-srv").write_bytes(
        bytes(range(256)) * 8 + b"\x00\xff\xfe\x89PNG\r\n\x1a\n"
    )
    mailsync("init")
    mailsync("accounts", "import", str(CONTOSO / "accounts.csv"))

    (report,) = mailsync.json("sync", "--once")
    (mailbox,) = mailsync.json("status")
    text = mailsync("status").output

    assert (report["new"], report["rejected"]) == (29, 2)
    assert mailbox["activities"] == 29
    assert mailbox["last_cycle"]["rejected"] == 2
    rejected = {Path(r["provider_id"]).name: r for r in mailbox["rejected"]}
    assert set(rejected) == {
        "1799000000.M1P1.contoso-srv",
        "1799000001.M2P2.contoso-srv",
    }
    for item in rejected.values():
        assert item["folder"] == "Inbox"
        assert item["reason"]
        assert ISO_UTC.fullmatch(item["seen_at"])
        assert f"rejected {item['provider_id']} in Inbox: {item['reason']}" in text
    assert "2 rejected" in text


def test_a_malformed_address_is_shown_as_a_defect_in_history_and_reconcile(
    mailsync, contoso_maildir
):
    (contoso_maildir / ".Sent" / "cur" / "1799000002.M3P3.contoso-srv:2,S").write_bytes(
        b"From: Tamara Johnston <tamara@contoso.com>\r\n"
        b"To: Andy Carothers <andy.carothers@tailspintoys.com>, "
        b"Pat <pat@@tailspintoys..com\r\n"
        b"Subject: Pilot dates\r\nDate: Tue, 10 Nov 2026 10:00:00 -0800\r\n"
        b"Message-ID: <pilot-dates@contoso.com>\r\n\r\nThe dates.\r\n"
    )
    mailsync("init")
    mailsync("accounts", "import", str(CONTOSO / "accounts.csv"))
    mailsync("contacts", "import", str(CONTOSO / "contacts.csv"))
    mailsync("sync", "--once")

    dates = find(mailsync.history(account="Tailspin Toys"), "Pilot dates")
    assert dates["defects"] == ["to: not an address: 'Pat <pat@@tailspintoys..com'"]
    assert addresses(dates) == {"tamara@contoso.com", ANDY_WORK}
    report = mailsync.json("report", "reconcile", "--mailbox", MAILBOX)
    [row] = [i for i in report["items"] if i["subject"] == "Pilot dates"]
    assert row["outcome"] == "linked"
    assert row["reason"] == "defects: to: not an address: 'Pat <pat@@tailspintoys..com'"
    assert find(mailsync.history(account="Tailspin Toys"), PILOT)["defects"] == []


# --- a second cycle --------------------------------------------------------


def test_a_second_sync_finds_nothing_new(demo):
    before = demo.history(account="Tailspin Toys")

    (report,) = demo.json("sync", "--once")

    assert (report["new"], report["updated"], report["rejected"]) == (0, 0, 0)
    assert report["error"] is None
    assert demo.history(account="Tailspin Toys") == before


# --- manual links ----------------------------------------------------------


def test_linking_an_address_to_an_account_relinks_the_history(demo):
    reply = from_home(demo.history(account="Tailspin Toys"))
    assert {rule["rule"] for rule in reply["link_rules"]} == {"thread"}

    said = demo("link", ANDY_HOME, "--account", "Tailspin Toys").output
    linked = find_id(demo.history(account="Tailspin Toys"), reply["id"])

    assert ANDY_HOME in said and "Tailspin Toys" in said
    assert ANDY_HOME not in {row["address"] for row in demo.json("unlinked")}
    assert TO_TAILSPIN_BY_HAND in linked["link_rules"]
    home = next(p for p in linked["participants"] if p["address"] == ANDY_HOME)
    assert home["status"] == "account"

    demo("unlink", ANDY_HOME)
    undone = find_id(demo.history(account="Tailspin Toys"), reply["id"])

    assert ANDY_HOME in {row["address"] for row in demo.json("unlinked")}
    assert {rule["rule"] for rule in undone["link_rules"]} == {"thread"}


def test_linking_an_address_to_a_contact_files_it_under_the_contact(demo):
    reply = from_home(demo.history(account="Tailspin Toys"))
    before = [v["id"] for v in demo.history(contact=ANDY_WORK)]

    demo("link", ANDY_HOME, "--contact", ANDY_WORK)
    after = demo.history(contact=ANDY_WORK)

    # The thread had filed the reply under Andy already; now his address does.
    assert [v["id"] for v in after] == before
    linked = find_id(after, reply["id"])
    assert [rule["rule"] for rule in linked["link_rules"]] == ["manual", "manual"]
    assert [c["name"] for c in linked["contacts"]] == ["Andy Carothers"]
    assert [a["name"] for a in linked["accounts"]] == ["Tailspin Toys"]
    assert ANDY_HOME not in {row["address"] for row in demo.json("unlinked")}


def test_linking_one_of_our_own_addresses_is_refused(demo):
    said = demo.fails("link", "megan@contoso.com", "--account", "Tailspin Toys")
    assert "megan@contoso.com is one of our own (internal_domains" in said
    assert "--activity ID" in said


def test_unlinking_an_address_without_a_link_says_so(demo):
    assert "has no manual link" in demo.fails("unlink", ANDY_HOME)


def test_manual_activity_links_survive_sync_and_import(demo, contoso_maildir, tmp_path):
    kim = find(
        demo.history(account="Wingtip Toys"),
        "Re: Would you talk to another toy company about your rollout?",
    )
    pat = find(demo.history(account="Tailspin Toys"), PAT_COLEMAN)

    demo("link", "--activity", str(kim["id"]), "--account", "Tailspin Toys")
    demo("unlink", "--activity", str(pat["id"]), "--account", "Tailspin Toys")
    touch(contoso_maildir, kim, pat)
    (resync,) = demo.json("sync", "--once")
    pat_file = tmp_path / "pat.csv"
    pat_file.write_text(
        "name,emails,account,title\n"
        "Pat Coleman,pat.coleman@tailspintoys.com,Tailspin Toys,IT lead\n"
    )
    demo("contacts", "import", str(pat_file))
    demo("accounts", "import", str(CONTOSO / "accounts.csv"))
    demo("sync", "--once")

    tailspin = {v["id"]: v for v in demo.history(account="Tailspin Toys")}
    assert (resync["items"], resync["new"]) == (2, 0)  # both were read again
    assert kim["id"] in tailspin
    assert TO_TAILSPIN_BY_HAND in tailspin[kim["id"]]["link_rules"]
    assert pat["id"] not in tailspin
    assert kim["id"] in {v["id"] for v in demo.history(account="Wingtip Toys")}
    assert pat["id"] in {
        v["id"] for v in demo.history(contact="pat.coleman@tailspintoys.com")
    }


def test_linking_an_unknown_activity_says_where_the_ids_are(demo):
    message = demo.fails("link", "--activity", "999999", "--account", "Tailspin Toys")

    assert "no activity 999999" in message
    assert "history --format json" in message


# --- configuration errors --------------------------------------------------

GOOD = """\
[database]
url = "sqlite:///mailsync.db"

[organisation]
internal_domains = ["contoso.com"]

[[mailboxes]]
address = "tamara@contoso.com"
rep = "Tamara Johnston"
kind = "local"
path = "maildir"
"""


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            GOOD.replace("url =", "uri ="),
            ["database.uri", "unknown key", "remove it or check its spelling"],
        ),
        (
            GOOD.replace('internal_domains = ["contoso.com"]', ""),
            ["organisation.internal_domains", "missing", "add it"],
        ),
        (
            GOOD.replace('internal_domains = ["contoso.com"]', "internal_domains = []"),
            ["organisation.internal_domains", "at least one"],
        ),
        (
            GOOD.replace('kind = "local"', 'kind = "imap"'),
            ["mailboxes[0].kind", "'imap'", 'use kind = "local" or kind = "ews"'],
        ),
        (
            GOOD.replace('kind = "local"\n', ""),
            ["mailboxes[0].kind", "missing", 'kind = "local"'],
        ),
        (
            GOOD.replace('rep = "Tamara Johnston"\n', ""),
            ["mailboxes[0].rep", "missing", "add it"],
        ),
        (
            GOOD + '\n[linking]\nnoreply_patterns = ["(no-reply"]\n',
            ["linking.noreply_patterns", "'(no-reply'", "regular expression"],
        ),
        (GOOD.replace("[organisation]", "[organisation"), ["not valid TOML"]),
    ],
    ids=[
        "unknown-key",
        "missing-internal-domains",
        "empty-internal-domains",
        "wrong-kind",
        "missing-kind",
        "missing-rep",
        "bad-pattern",
        "not-toml",
    ],
)
def test_a_config_error_names_the_key_and_the_fix(tmp_path, toml, expected):
    path = tmp_path / "mailsync.toml"
    path.write_text(toml, encoding="utf-8")

    result = script("--config", str(path), "status")

    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {path}")
    for fragment in expected:
        assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_a_missing_config_file_says_how_to_give_one(tmp_path):
    result = script("--config", str(tmp_path / "nowhere.toml"), "status")

    assert result.returncode == 2
    assert "nowhere.toml" in result.stderr and "not found" in result.stderr
    assert "--config" in result.stderr and "MAILSYNC_CONFIG" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_config_file_comes_from_mailsync_config(tmp_path, config_file):
    Mailsync(config_file)("init")

    result = CliRunner().invoke(
        cli, ["accounts", "list"], env={"MAILSYNC_CONFIG": str(config_file)}
    )
    broken = tmp_path / "broken.toml"
    broken.write_text(GOOD.replace("url =", "uri ="), encoding="utf-8")
    failed = script("status", env={"MAILSYNC_CONFIG": str(broken)})

    assert result.exit_code == 0, result.output
    assert failed.returncode == 2
    assert str(broken) in failed.stderr and "database.uri" in failed.stderr


def test_a_database_without_schema_says_to_run_init(tmp_path, contoso_maildir):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    fresh = Mailsync(write_config(tmp_path / "fresh.toml", url, contoso_maildir))

    for command in (["status"], ["sync", "--once"], ["history", "--account", "X"]):
        assert "run `mailsync init`" in fresh.fails(*command)


def test_a_config_that_cannot_be_read_is_a_config_error(tmp_path):
    result = script("status", env={"MAILSYNC_CONFIG": str(tmp_path)})

    assert result.returncode == 2
    assert "cannot read configuration file" in result.stderr
    assert "--config" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_internal_domain_may_be_written_with_an_at(
    tmp_path, store_url, contoso_maildir
):
    config = write_config(tmp_path / "mailsync.toml", store_url, contoso_maildir)
    config.write_text(
        config.read_text().replace('["contoso.com"]', '["@Contoso.com"]'),
        encoding="utf-8",
    )
    mailsync = Mailsync(config)
    mailsync("init")

    (report,) = mailsync.json("sync", "--once")

    # The two internal threads are still internal, and so not history.
    assert report["excluded_by"]["internal_only"] == 4
    unlinked = {row["address"] for row in mailsync.json("unlinked")}
    assert not [a for a in unlinked if a.endswith("@contoso.com")]


# --- more of the commands --------------------------------------------------


def test_importing_a_directory_asks_for_a_file(mailsync, tmp_path):
    mailsync("init")

    message = mailsync.fails("contacts", "import", str(tmp_path))

    assert message == (
        f"error: {tmp_path} is a directory; give the path of a .csv or .vcf file\n"
    )


def test_a_bad_row_is_reported_as_file_and_line(mailsync, tmp_path):
    mailsync("init")
    path = tmp_path / "accounts.csv"
    path.write_text(
        "name,domains\nTailspin Toys,tailspintoys.com\n,fabrikam.com\n"
        "Wingtip Toys,wingtiptoys.com\n",
        encoding="utf-8",
    )

    result = mailsync.runner.invoke(
        cli, ["--config", str(mailsync.config), "accounts", "import", str(path)]
    )

    assert result.exit_code == 1
    assert result.stderr == f"{path}:3: the name is empty\n"
    assert "accounts: 2 created, 0 updated, 0 unchanged, 1 rejected" in result.stdout
    assert [a["name"] for a in mailsync.json("accounts", "list")] == [
        "Tailspin Toys",
        "Wingtip Toys",
    ]


def test_history_limit_gives_the_newest(demo):
    views = demo.history(account="Tailspin Toys")

    newest = demo.json("history", "--account", "Tailspin Toys", "--limit", "2")
    zero = demo.fails("history", "--account", "Tailspin Toys", "--limit", "0")

    assert newest == views[-2:]
    assert "--limit" in zero


def test_mail_marked_private_after_its_sync_leaves_the_review_list(
    demo, contoso_maildir, store_url
):
    note = contoso_maildir / "new" / "1795788904.M161133P8133.contoso-srv"
    note.write_bytes(b"Sensitivity: Private\n" + note.read_bytes())

    (report,) = demo.json("sync", "--once")
    rows = demo.json("unlinked")

    assert report["excluded_by"] == {"private": 1}
    assert {row["address"] for row in rows} == UNLINKED - {
        "sam.rivera.consulting@gmail.com"
    }
    assert "Quick hello" not in demo("unlinked").output
    # One row in reconcile, excluded, and no longer counted as unlinked.
    items = demo.json("report", "reconcile", "--mailbox", MAILBOX)["items"]
    [row] = [i for i in items if i["provider_id"].endswith(note.name)]
    assert (row["outcome"], row["subject"]) == ("excluded", None)
    assert row["reason"].startswith("opted_out: the rep marked it private after")
    (status,) = demo.json("status")
    assert status["unlinked"] == 2
    # Neither its subject nor its words stay in the database (rule 9).
    from sqlalchemy import select

    from mailsync.store import db
    from mailsync.store.models import Activity

    with db.sessions(db.open_engine(store_url))() as session:
        kept = session.execute(
            select(Activity.subject, Activity.preview).where(
                Activity.status == "opted_out"
            )
        ).all()
    assert kept == [("", "")]


def test_linking_an_activity_to_a_contact_files_it_under_the_account_too(demo):
    [sam] = [
        row for row in demo.json("unlinked") if row["address"].startswith("sam.rivera")
    ]
    (activity_id,) = sam["activity_ids"]
    demo("link", "--activity", str(activity_id), "--contact", "ben.miller@fabrikam.com")

    [view] = [
        v for v in demo.history(account="Fabrikam, Inc.") if v["id"] == activity_id
    ]
    assert {(r["target"], r["name"], r["rule"]) for r in view["link_rules"]} == {
        ("contact", "Ben Miller", "manual"),
        ("account", "Fabrikam, Inc.", "manual"),
    }


def test_errors_have_their_exit_codes_in_process_too(tmp_path, contoso_maildir):
    runner = CliRunner()
    missing = runner.invoke(cli, ["--config", str(tmp_path / "none.toml"), "status"])
    assert missing.exit_code == 2 and "not found" in missing.output
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    config = write_config(tmp_path / "empty.toml", empty, contoso_maildir)
    no_schema = runner.invoke(cli, ["--config", str(config), "status"])
    assert no_schema.exit_code == 2 and "mailsync init" in no_schema.output


def test_mailboxes_test_reports_what_works(mailsync, tmp_path):
    result = mailsync("mailboxes", "test", MAILBOX)
    assert result.output.startswith("ok: maildir at ")
    assert "ok: 5 folders found" in result.output
    unknown = mailsync.fails("mailboxes", "test", "nobody@contoso.com")
    assert "no mailbox 'nobody@contoso.com'" in unknown


def test_sync_once_leaves_a_mailbox_that_the_service_holds(mailsync, store_url):
    from mailsync import leases
    from mailsync.store import db

    mailsync("init")
    factory = db.sessions(db.open_engine(store_url))
    service = leases.new_holder()  # a `mailsync run` of this host, alive
    assert leases.acquire(factory, MAILBOX, service, ttl=600)

    held = mailsync.runner.invoke(cli, ["--config", str(mailsync.config), "sync"])
    assert held.exit_code == 1
    assert f"mailbox {MAILBOX}: not synced, {service} holds it" in held.stderr
    assert mailsync.json("status")[0]["last_cycle_at"] is None

    leases.release(factory, [MAILBOX], service)
    synced = mailsync("sync", "--once")
    assert "new" in synced.stdout
    with factory() as session:
        assert leases.holders(session) == {}  # given back when done


def test_importing_our_own_people_warns_that_they_never_link(mailsync, tmp_path):
    mailsync("init")
    accounts = tmp_path / "accounts.csv"
    accounts.write_text(
        "name,domains\nContoso,contoso.com\nTailspin Toys,tailspintoys.com\n"
    )
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(
        "name,emails,account\n"
        "Andy Carothers,andy.carothers@tailspintoys.com,Tailspin Toys\n"
        "Ben Miller,ben.miller@sales.contoso.com;ben@gmail.com,\n"
    )
    imported = mailsync("accounts", "import", str(accounts))
    assert imported.stderr == (
        f"{accounts}:2: warning: contoso.com is one of our own domains "
        "(internal_domains): our own people are never counterparties, so no "
        "mail links to this account by it; give the customer's domain instead\n"
    )
    imported = mailsync("contacts", "import", str(contacts))
    assert imported.stderr == (
        f"{contacts}:3: warning: ben.miller@sales.contoso.com is one of our own "
        "addresses (internal_domains or a mailbox): our own people are never "
        "counterparties, so no mail links to this contact by it; give the "
        "customer's address instead\n"
    )
    assert "2 created" in imported.stdout  # imported all the same, exit 0


def test_an_import_that_renames_a_contact_says_so(mailsync, tmp_path):
    mailsync("init")
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text("name,emails\nAlice Ng,shared@acme.example;alice@acme.example\n")
    second.write_text("name,emails\nBob Ray,shared@acme.example\n")
    mailsync("contacts", "import", str(first))
    renamed = mailsync("contacts", "import", str(second))
    assert renamed.stderr == (
        f"{second}:2: warning: contact 'Alice Ng' renamed 'Bob Ray': it has "
        "shared@acme.example (it keeps alice@acme.example); if they are two "
        "people, give each an address of their own\n"
    )
    # The same name written otherwise is no rename.
    second.write_text("name,emails\n  bob   RAY ,shared@acme.example\n")
    assert mailsync("contacts", "import", str(second)).stderr == ""


def test_a_name_in_folders_that_is_no_folder_is_an_error_and_the_rest_syncs(
    config_file, contoso_maildir
):
    config_file.write_text(
        config_file.read_text() + 'folders = ["Inboxx", "Sent"]\n', encoding="utf-8"
    )
    mailsync = Mailsync(config_file)
    mailsync("init")
    result = mailsync.runner.invoke(cli, ["--config", str(config_file), "sync"])
    problem = (
        "folders: 'Inboxx' is no folder of this mailbox, so it is not synced; its "
        "folders are Drafts, Inbox, Junk, Sent, Tailspin: correct the name"
    )
    assert result.exit_code == 1
    assert f"mailbox {MAILBOX}: {problem}" in result.stderr
    assert "1 folders, 12 items" in result.stdout  # Sent is synced all the same
    (status,) = mailsync.json("status")
    assert status["last_error"] == problem


def test_an_empty_mailbox_path_is_the_mailboxs_error_and_nothing_is_removed(
    demo, contoso_maildir
):
    before = demo.history(account="Tailspin Toys")
    # The share is unmounted: its mount point is an empty directory.
    contoso_maildir.rename(contoso_maildir.with_name("unmounted"))
    contoso_maildir.mkdir()

    result = demo.runner.invoke(cli, ["--config", str(demo.config), "sync"])

    problem = (
        f"path {contoso_maildir} is an empty directory: is the share mounted? "
        "(a new maildir has cur, new and tmp)"
    )
    assert result.exit_code != 0
    assert problem in result.output + result.stderr
    (status,) = demo.json("status")
    assert problem in status["last_error"]
    assert demo.history(account="Tailspin Toys") == before
