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

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mailsync import leases
from mailsync.cli import cli
from mailsync.store.models import Base
from tests.conftest import CONTOSO
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
    # Sam's note, Fri, 27 Nov 2026 08:15:00 -0600, is the newest item.
    assert before["newest_item_at"] == "2026-11-27T14:15:00Z"
    assert (before["next_cycle"], before["next_cycle_at"]) == ("not scheduled", None)
    assert before["held_by"] is None
    assert "next cycle: not scheduled" in text
    assert "newest item 2026-11-27 14:15:00" in text

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
