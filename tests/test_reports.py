"""What the admin sees: status with lag and the next cycle, the preview of a
mailbox's back-fill, the reconciliation of every item, the activity report.

Each test runs on a SQLite file and on PostgreSQL (``store_url``), on the
Contoso sample. The expected counts come from examples/contoso/README.md:
38 items are read (17 Inbox, 8 Tailspin, 12 Sent, 1 Drafts; Junk is not
synced); 8 are excluded (the draft, the private note, the newsletter and
the no-reply notice, the four internal-only messages); the invitation and
its acceptance are one meeting, so 30 items make 29 activities; Jordan's
two messages and Sam's note link to no one.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from exchangelib.protocol import close_connections
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mailsync import leases
from mailsync.cli import cli
from mailsync.connectors import open_connector
from mailsync.reports import preview
from mailsync.store.models import Base
from mailsync.sync import sync_mailbox
from tests.conftest import CONTOSO
from tests.ews.conftest import ews, rep_mailbox  # noqa: F401 (fixtures)
from tests.ews.simulator import EwsSimulator, SimMailbox
from tests.test_cli import MAILBOX, Mailsync, write_config

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
WIFI = "Wi-Fi survey results for the Joliet DC"
HOME_REPLY = "andy.carothers.home@outlook.com"
EXCLUDED_BY = {"draft": 1, "private": 1, "automated": 2, "internal_only": 4}
TAILSPIN = {"target": "account", "name": "Tailspin Toys"}


@pytest.fixture
def mailsync(tmp_path: Path, store_url: str, contoso_maildir: Path) -> Mailsync:
    return Mailsync(
        write_config(tmp_path / "mailsync.toml", store_url, contoso_maildir)
    )


@pytest.fixture
def crm(mailsync: Mailsync) -> Mailsync:
    """The database made and the CRM imported, before any sync."""
    mailsync("init")
    mailsync("accounts", "import", str(CONTOSO / "accounts.csv"))
    mailsync("contacts", "import", str(CONTOSO / "contacts.csv"))
    return mailsync


@pytest.fixture
def synced(crm: Mailsync) -> Mailsync:
    crm("sync", "--once")
    return crm


def table_counts(factory: sessionmaker[Session]) -> dict[str, int]:
    with factory() as session:
        return {
            name: int(session.scalar(select(func.count()).select_from(table)) or 0)
            for name, table in Base.metadata.tables.items()
        }


def file_hash(store_url: str) -> str | None:
    if not store_url.startswith("sqlite:///"):
        return None
    path = Path(store_url.removeprefix("sqlite:///"))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def by_subject(rows: list[dict[str, Any]], subject: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["subject"] == subject]


def targets(row: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(x["target"], x["name"], x["rule"]) for x in row["links"]}


# --- status ------------------------------------------------------------------


def test_status_gives_lag_newest_item_and_next_cycle(synced, factory):
    (before,) = synced.json("status")
    text = synced("status").output

    assert before["rejected_count"] == 0
    assert before["last_success_at"] == before["last_cycle_at"]
    assert 0 <= before["lag_seconds"] < 600
    # Sam's note, Fri, 27 Nov 2026 08:15:00 -0600, is the newest e-mail.
    assert before["newest_item_at"] == "2026-11-27T14:15:00Z"
    assert (before["next_cycle"], before["next_cycle_at"]) == ("not scheduled", None)
    assert before["held_by"] is None
    assert "next cycle: not scheduled" in text
    assert "newest e-mail 2026-11-27 14:15:00" in text

    # A service holds the mailbox: the next check is one interval (60 s by
    # default) after the last cycle.
    assert leases.acquire(factory, MAILBOX, "host:1:abcd", 180)
    (held,) = synced.json("status")
    assert held["held_by"] == "host:1:abcd"
    assert ISO_UTC.fullmatch(held["next_cycle_at"])
    assert held["next_cycle"] in ("scheduled", "due now")
    if held["next_cycle"] == "scheduled":
        from datetime import datetime, timedelta

        last = datetime.fromisoformat(held["last_cycle_at"].replace("Z", "+00:00"))
        due = datetime.fromisoformat(held["next_cycle_at"].replace("Z", "+00:00"))
        assert due - last == timedelta(seconds=60)


def test_next_cycle_is_one_check_interval_after_the_last_while_a_service_runs(
    synced, factory
):
    from datetime import timedelta

    from mailsync.queries import mailbox_status

    def schedule(moment_after: float, enabled: set[str] | None = None) -> Any:
        with factory() as session:
            (row,) = mailbox_status(session, 60, enabled or {MAILBOX})
            last = row.last_cycle_at
            moment = last + timedelta(seconds=moment_after)
            (row,) = mailbox_status(session, 60, enabled or {MAILBOX}, moment)
            return last, moment, row.schedule

    _, _, idle = schedule(10)
    assert (idle.next_cycle, idle.next_cycle_at) == ("not scheduled", None)

    leases.acquire(factory, leases.INSTANCE_PREFIX + "host:1:abcd", "host:1:abcd", 600)
    last, _, soon = schedule(10)
    assert (soon.next_cycle, soon.next_cycle_at) == (
        "scheduled",
        last + timedelta(seconds=60),
    )
    assert soon.lag_seconds == 10.0
    _, moment, late = schedule(120)
    assert (late.next_cycle, late.next_cycle_at) == ("due now", moment)
    assert late.lag_seconds == 120.0
    _, _, off = schedule(10, enabled={"someone@contoso.com"})
    assert off.next_cycle == "not scheduled (mailbox not enabled)"

    # A service that died: its leases expired, nothing is scheduled.
    _, _, dead = schedule(700)
    assert (dead.next_cycle, dead.held_by) == ("not scheduled", None)


def test_status_after_a_failed_cycle_keeps_the_last_commit_as_success(
    synced, contoso_maildir, factory
):
    (good,) = synced.json("status")
    renamed = contoso_maildir.with_name("gone")
    contoso_maildir.rename(renamed)
    failing = synced.runner.invoke(cli, ["--config", str(synced.config), "sync"])
    assert failing.exit_code == 1
    (failed,) = synced.json("status")

    assert failed["last_error"]
    assert failed["last_cycle_at"] >= good["last_cycle_at"]
    # The last page committed was in the good cycle, not after it.
    assert failed["last_success_at"] is not None
    assert failed["last_success_at"] <= good["last_cycle_at"]


# --- preview -----------------------------------------------------------------


def maildir_state(root: Path) -> list[tuple[str, int, int]]:
    return sorted(
        (str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
    )


def test_preview_says_what_the_backfill_would_do_and_writes_nothing(
    crm, factory, store_url, contoso_maildir
):
    counts, digest = table_counts(factory), file_hash(store_url)
    files = maildir_state(contoso_maildir)

    result = crm.json("mailboxes", "preview", MAILBOX)
    text = crm("mailboxes", "preview", MAILBOX).output

    assert table_counts(factory) == counts
    assert file_hash(store_url) == digest
    assert maildir_state(contoso_maildir) == files
    assert result["summary"] == {
        "items": 38,
        "linked": 27,
        "unlinked": 3,
        "excluded": 8,
        "rejected": 0,
        "excluded_by": EXCLUDED_BY,
        "activities": 29,
        "complete": True,
    }
    rows = result["items"]
    (wifi,) = by_subject(rows, WIFI)
    assert targets(wifi) == {("account", "Tailspin Toys", "domain")}
    # Thread 7/7, from Andy's personal address: linked only through the thread.
    (home,) = [
        r
        for r in rows
        if r["subject"] == "Re: Tailspin Toys: warehouse scanning pilot"
        and r["folder"] == "Inbox"
        and all(x["rule"] == "thread" for x in r["links"])
        and r["links"]
    ]
    assert {x["name"] for x in home["links"]} == {
        "Tailspin Toys",
        "Andy Carothers",
        "Lorraine Nay",
    }
    quotes = by_subject(rows, "Quote request: handheld scanners for three stores")
    assert [q["outcome"] for q in quotes] == ["unlinked"]
    excluded = [r for r in rows if r["outcome"] == "excluded"]
    private = [r for r in excluded if r["reason"].startswith("private")]
    draft = [r for r in excluded if r["reason"].startswith("draft")]
    assert [r["subject"] for r in private + draft] == [None, None]
    assert any(
        r["subject"].startswith("Toy Retail Weekly")
        for r in excluded
        if r["reason"].startswith("automated")
    )
    assert "38 items: 27 linked, 3 unlinked, 8 excluded, 0 rejected" in text
    assert "excluded as internal_only: 4" in text

    # Nothing was kept: the real back-fill still finds everything new.
    (report,) = crm.json("sync", "--once")
    assert (report["items"], report["new"], report["excluded"]) == (38, 29, 8)


def test_preview_agrees_with_the_sync_item_by_item(crm):
    planned = crm.json("mailboxes", "preview", MAILBOX)["items"]
    crm("sync", "--once")
    seen = crm.json("report", "reconcile", "--mailbox", MAILBOX)["items"]

    def outcomes(rows: list[dict[str, Any]]) -> dict[str, tuple[str, Any]]:
        return {r["provider_id"]: (r["outcome"], targets(r)) for r in rows}

    assert outcomes(planned) == outcomes(seen)


def test_preview_limit_stops_early_and_says_so(crm):
    result = crm.json("mailboxes", "preview", MAILBOX, "--limit", "5")

    assert result["summary"]["complete"] is False
    assert result["summary"]["items"] == len(result["items"]) == 5


def test_preview_of_an_unknown_mailbox_is_a_user_error(crm):
    message = crm.fails("mailboxes", "preview", "nobody@contoso.com")
    assert "no mailbox 'nobody@contoso.com'" in message


@pytest.fixture
def _close_sessions() -> Iterator[None]:
    yield
    close_connections()


def test_preview_on_exchange_sends_no_write_and_writes_nothing(
    _close_sessions: None,
    factory: Any,
    store_url: str,
    ews: EwsSimulator,  # noqa: F811 (the fixture)
    rep_mailbox: SimMailbox,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.ews.conftest import SERVICE_PASSWORD
    from tests.ews.test_connector import contoso_on_exchange, store_config
    from tests.test_sync import import_crm

    monkeypatch.setenv("MAILSYNC_TEST_EWS_PASSWORD", SERVICE_PASSWORD)
    config = store_config(store_url, ews)
    import_crm(factory, config)
    contoso_on_exchange(ews, rep_mailbox)
    counts, digest = table_counts(factory), file_hash(store_url)
    states = {i: getattr(i, "categories", None) for i in rep_mailbox.items.values()}
    ews.reset_counts()

    connector = open_connector(config.mailboxes[0])
    try:
        with factory() as session:
            result = preview(session, config, config.mailboxes[0], connector)
            session.rollback()
    finally:
        connector.close()

    assert result.summary() == {
        "items": 38,
        "linked": 27,
        "unlinked": 3,
        "excluded": 8,
        "rejected": 0,
        "excluded_by": EXCLUDED_BY,
        "activities": 29,
        "complete": True,
    }
    assert ews.requests["SyncFolderItems"] > 0
    writes = {"UpdateItem", "CreateItem", "DeleteItem", "MoveItem", "SendItem"}
    assert not writes & set(ews.requests)
    assert {i: getattr(i, "categories", None) for i in rep_mailbox.items.values()} == (
        states
    )
    assert table_counts(factory) == counts
    assert file_hash(store_url) == digest

    # The same mailbox synced for real writes its categories back: the
    # preview above would have shown them.
    sync_mailbox(factory, config, config.mailboxes[0])
    assert ews.requests["UpdateItem"] > 0


# --- reconcile ---------------------------------------------------------------


def test_reconcile_gives_every_item_with_its_outcome_and_rule(synced):
    result = synced.json("report", "reconcile", "--mailbox", MAILBOX)
    rows = result["items"]

    assert result["summary"] == {
        "items": 38,
        "linked": 27,
        "unlinked": 3,
        "excluded": 8,
        "rejected": 0,
        "excluded_by": EXCLUDED_BY,
    }
    (wifi,) = by_subject(rows, WIFI)
    assert targets(wifi) == {("account", "Tailspin Toys", "domain")}
    assert (wifi["folder"], wifi["date"]) == ("Inbox", wifi["date"])
    assert wifi["date"].startswith("2026-10-12")
    unlinked = {r["subject"] for r in rows if r["outcome"] == "unlinked"}
    assert unlinked == {
        "Quote request: handheld scanners for three stores",
        "Re: Quote request: handheld scanners for three stores",
        "Quick hello - supply chain consulting",
    }
    reasons = {r["reason"].split(":")[0]: r for r in rows if r["outcome"] == "excluded"}
    assert reasons["private"]["subject"] is None
    assert reasons["draft"]["subject"] is None
    assert reasons["draft"]["folder"] == "Drafts"
    assert "Lakefront" not in json.dumps(result)
    assert "Kickoff and first invoice" not in json.dumps(result)


def test_reconcile_since_and_csv(synced):
    recent = synced.json(
        "report", "reconcile", "--mailbox", MAILBOX, "--since", "2026-11-01"
    )
    # From 1 November: five Inbox items (two excluded), two Tailspin, three
    # Sent (one excluded), the draft, and the meeting of 10 November from
    # both its invitation and its acceptance.
    assert recent["summary"] == {
        "items": 12,
        "linked": 7,
        "unlinked": 1,
        "excluded": 4,
        "rejected": 0,
        "excluded_by": {"draft": 1, "automated": 1, "internal_only": 2},
    }

    out = synced("report", "reconcile", "--mailbox", MAILBOX, "--format", "csv")
    table = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(table) == 38
    (wifi,) = [r for r in table if r["subject"] == WIFI]
    assert (wifi["outcome"], wifi["rules"]) == (
        "linked",
        "account Tailspin Toys (domain)",
    )


def test_reconcile_lists_rejected_items_with_their_reason(crm, contoso_maildir):
    (contoso_maildir / "cur" / "1799000000.M1P1.contoso-srv").write_bytes(b"")
    crm("sync", "--once")

    result = crm.json("report", "reconcile", "--mailbox", MAILBOX)
    (rejected,) = [r for r in result["items"] if r["outcome"] == "rejected"]

    assert result["summary"]["rejected"] == 1
    assert rejected["provider_id"].endswith("1799000000.M1P1.contoso-srv")
    assert rejected["reason"] == "empty file"
    assert ISO_UTC.fullmatch(rejected["date"])  # when it was seen


def test_reconcile_of_a_mailbox_never_synced_names_the_fix(crm):
    message = crm.fails("report", "reconcile", "--mailbox", "nobody@contoso.com")
    assert "mailsync init" in message


# --- activity ----------------------------------------------------------------


def test_activity_csv_per_account_and_rep_with_dormant_accounts(synced):
    out = synced(
        "report",
        "activity",
        "--since",
        "2026-09-01",
        "--until",
        "2026-12-01",
        "--dormant-days",
        "30",
    ).stdout
    rows = {(r["scope"], r["name"]): r for r in csv.DictReader(io.StringIO(out))}

    def counts(row: dict[str, str]) -> tuple[int, ...]:
        keys = ("emails_in", "emails_out", "meetings", "tasks", "total")
        return tuple(int(row[k]) for k in keys)

    tailspin = rows[("account", "Tailspin Toys")]
    assert counts(tailspin) == (15, 6, 1, 0, 22)
    # Signed order form, Tue, 24 Nov 2026 14:20:00 -0600.
    assert (tailspin["last_activity"], tailspin["dormant"]) == (
        "2026-11-24T20:20:00Z",
        "no",
    )
    fabrikam = rows[("account", "Fabrikam, Inc.")]
    assert counts(fabrikam) == (3, 2, 0, 0, 5)
    assert fabrikam["dormant"] == "yes"  # last on 25 September
    wingtip = rows[("account", "Wingtip Toys")]
    assert (counts(wingtip), wingtip["dormant"]) == ((1, 1, 0, 0, 2), "yes")
    assert counts(rows[("rep", "Tamara Johnston")]) == (19, 9, 1, 0, 29)


def test_activity_period_counts_only_what_occurred_in_it(synced):
    out = synced(
        "report", "activity", "--since", "2026-11-01", "--until", "2026-12-01"
    ).stdout
    rows = {(r["scope"], r["name"]): r for r in csv.DictReader(io.StringIO(out))}

    def counts(row: dict[str, str]) -> tuple[int, ...]:
        return tuple(int(row[k]) for k in ("emails_in", "emails_out", "meetings"))

    assert counts(rows[("account", "Tailspin Toys")]) == (4, 1, 1)
    assert counts(rows[("account", "Fabrikam, Inc.")]) == (0, 0, 0)
    assert counts(rows[("rep", "Tamara Johnston")]) == (5, 1, 1)


def test_activity_html_is_one_page_with_the_chart_embedded(synced, tmp_path):
    page = tmp_path / "activity.html"
    result = synced(
        "report",
        "activity",
        "--until",
        "2026-12-01",
        "--format",
        "html",
        "--out",
        str(page),
    )

    assert str(page) in result.output
    text = page.read_text(encoding="utf-8")
    (png,) = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert base64.b64decode(png).startswith(b"\x89PNG\r\n\x1a\n")
    assert "Tailspin Toys" in text and "Fabrikam, Inc." in text
    dormant = text.split("No activity for 30 days", 1)[1]
    assert "Fabrikam, Inc." in dormant and "Wingtip Toys" in dormant
    assert "Tailspin Toys" not in dormant


def test_activity_with_the_dates_swapped_is_a_user_error(synced):
    message = synced.fails(
        "report", "activity", "--since", "2026-12-01", "--until", "2026-11-01"
    )
    assert "--since must be before --until" in message
