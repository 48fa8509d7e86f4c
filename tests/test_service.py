"""The service, `mailsync run`, as a real process: new mail, signals, crashes,
and two instances on one database.

Each test writes a configuration with a short check interval, starts
`.venv/bin/mailsync run` and watches the database and the log it writes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mailsync import leases
from mailsync.store import db
from mailsync.store.models import Activity, Lease, Source
from tests.conftest import CONTOSO, PROJECT
from tests.test_sync import snapshot

MAILSYNC = PROJECT / ".venv" / "bin" / "mailsync"
CONTOSO_ITEMS = 38  # what one cycle of the sample maildir reads


def write_config(
    path: Path,
    url: str,
    maildirs: dict[str, Path],
    interval: float = 0.5,
    ttl: float | None = None,
    batch_size: int = 500,
    followups: bool = False,
    metrics_port: int = 0,
) -> Path:
    """A service configuration of local mailboxes. No metrics port by default:
    two services running at once would want the same one."""
    lines = [
        f'[database]\nurl = "{url}"\n',
        '[organisation]\ninternal_domains = ["contoso.com"]\n',
        f"[followups]\nenabled = {str(followups).lower()}\n",
        f"[service]\ncheck_interval = {interval}\nmetrics_port = {metrics_port}\n",
    ]
    if ttl is not None:
        lines.append(f"lease_ttl = {ttl}\n")
    for address, maildir in maildirs.items():
        lines.append(
            f'[[mailboxes]]\naddress = "{address}"\nrep = "{address}"\n'
            f'kind = "local"\npath = "{maildir}"\nbatch_size = {batch_size}\n'
        )
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def mailsync(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MAILSYNC), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )


class Running:
    """A `mailsync run` process and the log it writes."""

    def __init__(self, config: Path, log: Path, *args: str) -> None:
        self.log = log
        self.handle = log.open("a", encoding="utf-8")
        self.process = subprocess.Popen(
            [str(MAILSYNC), "--config", str(config), *args, "run"],
            stdout=self.handle,
            stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8")

    def stop(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; the exit code and how long the exit took."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self.handle.close()
        return code, time.monotonic() - started

    def kill(self) -> None:
        self.process.kill()  # SIGKILL: no handler, no cleanup
        self.process.wait(timeout=10)
        self.handle.close()


@pytest.fixture
def running() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for service in started:
        if service.process.poll() is None:
            service.kill()


def wait_for(what: str, check: Callable[[], object], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


def count(factory: sessionmaker[Session], model: type) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def opened(url: str) -> sessionmaker[Session]:
    engine = db.open_engine(url)
    db.upgrade(engine)
    return db.sessions(engine)


def copy_contoso(target: Path) -> Path:
    shutil.copytree(CONTOSO / "maildir", target)
    return target


def deliver(maildir: Path, name: str, subject: str, sender: str) -> None:
    """A new message in the maildir's Inbox, as a mail server writes it."""
    message = (
        f"From: {sender}\r\nTo: Tamara Johnston <tamara@contoso.com>\r\n"
        f"Subject: {subject}\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\n"
        f"Message-ID: <{name}@service.test>\r\n\r\nSee you then.\r\n"
    )
    (maildir / "tmp" / name).write_text(message, encoding="utf-8")
    os.rename(maildir / "tmp" / name, maildir / "new" / name)


def generated_maildir(target: Path, messages: int) -> Path:
    """A maildir of many small messages from customers (a long first cycle)."""
    for sub in ("cur", "new", "tmp"):
        (target / sub).mkdir(parents=True)
    for n in range(messages):
        customer = f"buyer{n % 97}@customer{n % 13}.example"
        body = (
            f"From: Buyer {n % 97} <{customer}>\r\n"
            "To: Tamara Johnston <tamara@contoso.com>\r\n"
            f"Subject: Order {n}\r\n"
            f"Date: Mon, {1 + n % 28:02d} Jun 2026 09:{n % 60:02d}:00 +0000\r\n"
            f"Message-ID: <order-{n}@customer{n % 13}.example>\r\n\r\n"
            f"Order number {n}.\r\n"
        )
        (target / "cur" / f"{1780000000 + n}.M{n}P1.gen:2,S").write_text(body)
    return target


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


# --- one instance ------------------------------------------------------------


def test_new_mail_is_picked_up_within_an_interval_and_sigterm_exits_0(
    tmp_path, running
):
    maildir = copy_contoso(tmp_path / "maildir")
    url = sqlite_url(tmp_path / "ms.db")
    factory = opened(url)
    config = write_config(tmp_path / "ms.toml", url, {"tamara@contoso.com": maildir})
    service = Running(config, tmp_path / "run.log")
    running.append(service)

    wait_for("the first cycle", lambda: "38 items" in service.text())
    first = count(factory, Activity)
    deliver(maildir, "n1", "Pallet delivery on Friday", "Lee <lee@fabrikam.com>")
    delivered = time.monotonic()
    wait_for("the new message", lambda: count(factory, Activity) == first + 1, 10)
    # One check interval (0.5 s) and one short cycle, with room for a busy box.
    assert time.monotonic() - delivered < 3.0

    code, took = service.stop()
    assert (code, took < 10) == (0, True)
    log = service.text()
    assert re.search(r"mailbox tamara@contoso.com: 4 folders, 38 items, .* in ", log)
    assert re.search(r"1 items, 1 new, .*, waited \d+\.\ds, check", log)
    assert "Traceback" not in log
    with factory() as session:  # the service gave its leases back
        assert session.scalars(select(Lease)).all() == []


def test_sigterm_mid_cycle_commits_the_page_in_hand_and_exits_0(tmp_path, running):
    maildir = generated_maildir(tmp_path / "maildir", 2000)
    url = sqlite_url(tmp_path / "ms.db")
    factory = opened(url)
    config = write_config(
        tmp_path / "ms.toml", url, {"tamara@contoso.com": maildir}, batch_size=20
    )
    service = Running(config, tmp_path / "run.log")
    running.append(service)

    wait_for("the first pages", lambda: count(factory, Activity) >= 40, 60)
    code, took = service.stop()
    assert code == 0 and took < 10
    assert "cycle stopped after the page in hand" in service.text()
    stored = count(factory, Activity)
    assert 40 <= stored < 2000
    assert stored % 20 == 0  # whole pages only

    # What was committed is consistent: the next run completes it exactly.
    mailsync(config, "sync", "--once")
    assert count(factory, Activity) == 2000
    assert count(factory, Source) == 2000


def test_sighup_keeps_a_broken_config_and_takes_a_good_one(tmp_path, running):
    tamara = copy_contoso(tmp_path / "tamara")
    andy = copy_contoso(tmp_path / "andy")
    url = sqlite_url(tmp_path / "ms.db")
    factory = opened(url)
    path = tmp_path / "ms.toml"
    write_config(path, url, {"tamara@contoso.com": tamara})
    service = Running(path, tmp_path / "run.log")
    running.append(service)
    wait_for("the first cycle", lambda: "38 items" in service.text())

    good = path.read_text()
    path.write_text(good.replace("check_interval", "check_intervall"))
    service.process.send_signal(signal.SIGHUP)
    wait_for("the refusal", lambda: "not reloaded" in service.text(), 10)
    assert "service.check_intervall: unknown key" in service.text()
    assert service.process.poll() is None
    # The old configuration still works: new mail comes in.
    deliver(tamara, "n2", "Still running", "Lee <lee@fabrikam.com>")
    wait_for("mail after the refusal", lambda: "1 items, 1 new" in service.text())

    write_config(path, url, {"tamara@contoso.com": tamara, "andy@contoso.com": andy})
    service.process.send_signal(signal.SIGHUP)
    wait_for(
        "the new mailbox",
        lambda: "mailbox andy@contoso.com: 4 folders, 38" in service.text(),
    )
    assert (
        "configuration reloaded: 2 mailboxes (added: andy@contoso.com; removed: none)"
        in service.text()
    )

    # A mailbox taken out stops, and its lease is given back.
    write_config(path, url, {"andy@contoso.com": andy})
    service.process.send_signal(signal.SIGHUP)
    wait_for(
        "the reload",
        lambda: "reloaded: 1 mailboxes (added: none; removed: tamara@contoso.com)"
        in service.text(),
        10,
    )
    with factory() as session:
        leased = set(session.scalars(select(Lease.name)))
    assert "tamara@contoso.com" not in leased and "andy@contoso.com" in leased
    code, _took = service.stop()
    assert code == 0
    with factory() as session:
        mailboxes = set(session.scalars(select(Source.mailbox_id).distinct()).all())
    assert len(mailboxes) == 2


def test_kill_9_mid_cycle_then_restart_gives_the_uninterrupted_history(
    tmp_path, running
):
    maildir = generated_maildir(tmp_path / "maildir", 2000)
    url = sqlite_url(tmp_path / "ms.db")
    factory = opened(url)
    config = write_config(
        tmp_path / "ms.toml",
        url,
        {"tamara@contoso.com": maildir},
        ttl=600,
        batch_size=20,
    )
    first = Running(config, tmp_path / "first.log")
    running.append(first)
    wait_for("the first pages", lambda: count(factory, Activity) >= 100, 60)
    first.kill()
    assert count(factory, Activity) < 2000, "killed too late to test anything"

    # The dead holder's lease would last 10 minutes, but its process is gone
    # from this host: the new instance takes the mailbox over at once.
    second = Running(config, tmp_path / "second.log")
    running.append(second)
    wait_for("the end of the cycle", lambda: count(factory, Activity) == 2000, 120)
    wait_for("its line", lambda: "items, " in second.text(), 30)
    assert "no longer runs; taken over" in second.text()
    code, _took = second.stop()
    assert code == 0

    clean_url = sqlite_url(tmp_path / "clean.db")
    clean = opened(clean_url)
    clean_config = write_config(
        tmp_path / "clean.toml", clean_url, {"tamara@contoso.com": maildir}
    )
    mailsync(clean_config, "sync", "--once")
    assert snapshot(factory) == snapshot(clean)


# --- two instances -------------------------------------------------------------

_LINE = re.compile(
    r"^(\S+ \S+) \w+ mailsync\.service: mailbox (\S+): "
    r"(cycle started by (\S+)|\d+ folders, )"
)


def cycles(log: str, holder: str) -> list[tuple[str, datetime, datetime]]:
    """(mailbox, started, ended) of each cycle an instance's log shows."""
    found, open_at = [], {}
    for line in log.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        when = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f")
        if match[4]:
            assert match[4] == holder
            open_at[match[2]] = when
        else:
            found.append((match[2], open_at.pop(match[2]), when))
    return found


def holder_of(log: str) -> str:
    match = re.search(r"service (\S+) started on", log)
    assert match, log
    return match[1]


def test_two_instances_on_postgresql_split_the_mailboxes(
    tmp_path, running, pg_database
):
    from sqlalchemy import create_engine, text

    url = pg_database
    engine = create_engine(url)
    with engine.begin() as connection:  # a schema of our own, as store_url does
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    factory = opened(url)
    boxes = {
        f"rep{n}@contoso.com": copy_contoso(tmp_path / f"rep{n}") for n in range(4)
    }
    config = write_config(
        tmp_path / "ms.toml", url, boxes, interval=0.5, ttl=10, followups=True
    )
    clean_url = sqlite_url(tmp_path / "clean.db")
    clean = opened(clean_url)
    clean_config = write_config(tmp_path / "clean.toml", clean_url, boxes)
    mailsync(clean_config, "sync", "--once")
    expected = count(clean, Source)

    a = Running(config, tmp_path / "a.log", "--log-level", "DEBUG")
    running.append(a)
    b = Running(config, tmp_path / "b.log", "--log-level", "DEBUG")
    running.append(b)
    wait_for("every mailbox", lambda: count(factory, Source) == expected, 60)
    time.sleep(4)  # a few rounds: the split settles, each checks its own
    with factory() as session:
        held = session.scalars(
            select(Lease.holder).where(Lease.name.like("rep%"))
        ).all()
    assert sorted(held.count(h) for h in set(held)) == [2, 2]

    for n in range(4):
        box = boxes[f"rep{n}@contoso.com"]
        deliver(box, f"late{n}", f"Late {n}", "L <l@fabrikam.com>")
    wait_for("the late mail", lambda: count(factory, Source) == expected + 4, 30)
    time.sleep(1)
    # The follow-up scheduler runs in one of them only (once that one stops,
    # the other takes it over).
    assert sum("scheduler started" in s.text() for s in (a, b)) == 1
    assert a.stop()[0] == 0 and b.stop()[0] == 0

    # Nothing twice: the same counts as a single `sync --once` gives.
    mailsync(clean_config, "sync", "--once")
    assert (count(factory, Source), count(factory, Activity)) == (
        count(clean, Source),
        count(clean, Activity),
    )

    # Both worked, and no mailbox was in two cycles at once.
    logs = {holder_of(s.text()): s.text() for s in (a, b)}
    spans = {h: cycles(text, h) for h, text in logs.items()}
    assert all(spans.values()), "one instance synced nothing"
    for mailbox in boxes:
        timeline = sorted(
            (start, end, h)
            for h, found in spans.items()
            for m, start, end in found
            if m == mailbox
        )
        assert timeline, mailbox
        for (_s1, end1, h1), (start2, _e2, h2) in zip(
            timeline, timeline[1:], strict=False
        ):
            assert h1 == h2 or end1 <= start2, (mailbox, h1, h2, end1, start2)


# --- on the EWS simulator, in this process -------------------------------------

from mailsync.config import parse_config  # noqa: E402
from mailsync.service import Service  # noqa: E402
from tests.ews.conftest import REP, SERVICE_PASSWORD  # noqa: E402
from tests.ews.conftest import ews as ews  # noqa: E402,F401  (the fixture)
from tests.ews.simulator import Address, Call, EwsSimulator  # noqa: E402
from tests.ews.test_connector import settings  # noqa: E402
from tests.ews.test_subscriptions import mail  # noqa: E402

ANDY = "andy@contoso.com"


def ews_service(
    url: str, sim: EwsSimulator, interval: float, sweep: float = 3600
) -> Service:
    sim.add_mailbox(ANDY, "Andy Carothers")
    boxes = [
        settings(sim, address=address, retries=0, max_retry_wait=5.0)
        for address in (REP, ANDY)
    ]
    config = parse_config(
        {
            "database": {"url": url},
            "organisation": {"internal_domains": ["contoso.com"]},
            "followups": {"enabled": False},
            "service": {"sweep_interval": sweep},
            "mailboxes": [box.model_dump(mode="json") for box in boxes],
        }
    )
    return Service(config, opened(url), interval=interval)


def run_for(service: Service, seconds: float) -> None:
    """The service's loop for a while, as `run` turns it (no signals here)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        service.tick(time.monotonic())
        time.sleep(0.02)


def run_until_synced(service: Service, timeout: float = 30) -> None:
    """Run the loop until every mailbox finished its first cycle."""
    from mailsync.store.models import Mailbox

    deadline = time.monotonic() + timeout
    while True:
        run_for(service, 0.05)
        with service.factory() as session:
            done = session.scalars(select(Mailbox.last_cycle_at)).all()
        idle = all(slot.future is None for slot in service.slots.values())
        if len(done) == 2 and all(done) and idle:
            return
        assert time.monotonic() < deadline, "the first cycles did not end"


def calls_of(sim: EwsSimulator, mailbox: str) -> list[Call]:
    return [c for c in sim.calls if c.mailbox == mailbox]


def test_an_idle_exchange_mailbox_costs_one_get_events_a_check(
    store_url,
    ews,
    monkeypatch,  # noqa: F811
):
    monkeypatch.setenv("MAILSYNC_TEST_EWS_PASSWORD", SERVICE_PASSWORD)
    ews.mailbox(REP).add(mail(1), "inbox")
    service = ews_service(store_url, ews, interval=0.3)
    try:
        run_until_synced(service)  # the first cycles: subscribe, sync every folder
        ews.reset_counts()
        run_for(service, 1.5)
        # The connector stayed open: no new session, folder walk or Subscribe.
        for mailbox in (REP, ANDY):
            calls = calls_of(ews, mailbox)
            assert {c.operation for c in calls} == {"GetEvents"}, calls
            assert 3 <= len(calls) <= 6, calls  # 1.5 s at one check each 0.3 s
        assert ews.requests.keys() == {"GetEvents"}

        ews.mailbox(ANDY).add(mail(2, Address("x@fabrikam.com", "X")), "inbox")
        run_for(service, 0.8)
        with service.factory() as session:
            assert "Order 2" in set(session.scalars(select(Activity.subject)))
    finally:
        service.shutdown()


def test_a_throttled_mailbox_waits_its_back_off_and_the_others_go_on(
    store_url,
    ews,
    monkeypatch,  # noqa: F811
):
    monkeypatch.setenv("MAILSYNC_TEST_EWS_PASSWORD", SERVICE_PASSWORD)
    service = ews_service(store_url, ews, interval=0.3)
    try:
        run_until_synced(service)
        ews.reset_counts()
        ews.mailbox(REP).faults.server_busy(back_off_ms=2000, operation="GetEvents")
        run_for(service, 1.5)
        # Tamara's check was refused once and waits the 2 s asked for ...
        assert calls_of(ews, REP) == [Call("GetEvents", REP, 500)]
        # ... while Andy's checks go on at the interval.
        assert len(calls_of(ews, ANDY)) >= 3
        run_for(service, 1.2)
        assert calls_of(ews, REP)[1:2] == [Call("GetEvents", REP, 200)]
    finally:
        service.shutdown()


def test_sigterm_exits_0_in_time_while_a_server_does_not_answer(
    tmp_path,
    running,
    ews,  # noqa: F811
    monkeypatch,
):
    monkeypatch.setenv("MAILSYNC_TEST_EWS_PASSWORD", SERVICE_PASSWORD)
    ews.mailbox(REP).add(mail(1), "inbox")
    url = sqlite_url(tmp_path / "ms.db")
    factory = opened(url)
    box = settings(ews, retries=0).model_dump(mode="json", exclude_none=True)
    config = tmp_path / "ms.toml"
    write_config(config, url, {})
    with config.open("a", encoding="utf-8") as out:
        out.write("[[mailboxes]]\n")
        for key, value in box.items():
            if not isinstance(value, list):
                out.write(f"{key} = {json.dumps(value)}\n")
    service = Running(config, tmp_path / "run.log")
    running.append(service)
    wait_for("the first cycle", lambda: count(factory, Activity) == 1, 60)

    ews.reset_counts()
    ews.mailbox(REP).faults.slow(20.0, operation="GetEvents")
    wait_for("the slow check", lambda: ews.requests["GetEvents"] >= 1, 10)
    code, took = service.stop(timeout=15)
    assert code == 0 and took < 10, (code, took)
    assert "still waiting after" in service.text()
    assert count(factory, Activity) == 1
    # Only the stuck mailbox's lease is left to expire; the instance is gone.
    with factory() as session:
        assert set(leases.holders(session)) == {REP}


def test_a_sweep_syncs_every_folder_at_its_interval(
    store_url,
    ews,  # noqa: F811
    monkeypatch,
    caplog,
):
    monkeypatch.setenv("MAILSYNC_TEST_EWS_PASSWORD", SERVICE_PASSWORD)
    service = ews_service(store_url, ews, interval=0.3, sweep=1.5)
    try:
        run_until_synced(service)
        ews.reset_counts()
        caplog.set_level("INFO", logger="mailsync.service")
        caplog.clear()
        deadline = time.monotonic() + 20

        def swept(mailbox: str) -> int:
            return sum(
                ", sweep" in r.getMessage() and mailbox in r.getMessage()
                for r in caplog.records
            )

        while not all(swept(m) for m in (REP, ANDY)):
            assert time.monotonic() < deadline, "no sweep"
            run_for(service, 0.05)
    finally:
        service.shutdown()
    # Each sweep is a SyncFolderItems for every folder, though nothing
    # changed; between sweeps an idle mailbox costs only GetEvents. (How many
    # checks fall before the first sweep depends on the machine's load.)
    sweeps = [r.getMessage() for r in caplog.records if ", sweep" in r.getMessage()]
    [synced] = {int(re.search(r": (\d+) folders, ", line)[1]) for line in sweeps}
    assert synced > 1
    for mailbox in (REP, ANDY):
        operations = [c.operation for c in calls_of(ews, mailbox)]
        assert operations.count("SyncFolderItems") == synced * swept(mailbox), (
            operations
        )
        assert set(operations) <= {"GetEvents", "SyncFolderItems"}, operations


def test_run_once_is_one_cycle_as_sync_once(tmp_path):
    maildir = copy_contoso(tmp_path / "maildir")
    url = sqlite_url(tmp_path / "ms.db")
    factory = opened(url)
    config = write_config(tmp_path / "ms.toml", url, {"tamara@contoso.com": maildir})
    done = mailsync(config, "run", "--once")
    assert "38 items" in done.stdout
    assert count(factory, Activity) == 29


def test_a_cycle_whose_lease_was_taken_stops_after_the_page_in_hand(tmp_path, caplog):
    from mailsync import leases

    maildir = generated_maildir(tmp_path / "maildir", 2000)
    url = sqlite_url(tmp_path / "ms.db")
    factory = opened(url)
    config = parse_config(
        {
            "database": {"url": url},
            "organisation": {"internal_domains": ["contoso.com"]},
            "followups": {"enabled": False},
            "service": {"lease_ttl": 0.3},
            "mailboxes": [
                {
                    "address": REP,
                    "rep": "Tamara Johnston",
                    "kind": "local",
                    "path": str(maildir),
                    "batch_size": 5,
                }
            ],
        }
    )
    service = Service(config, factory, interval=60)
    caplog.set_level("INFO", logger="mailsync.service")
    try:
        service.tick(time.monotonic())  # the lease taken, the cycle started
        wait_for("the first pages", lambda: count(factory, Activity) >= 40, 60)
        # This host stalls past the TTL; another instance takes the mailbox.
        time.sleep(0.35)
        assert leases.acquire(factory, REP, "other:1:x", ttl=60)
        service.tick(time.monotonic())  # renewing finds the lease gone
        wait_for("the cycle's end", lambda: service.slots[REP].future.done(), 10)
        stored = count(factory, Activity)
        service.tick(time.monotonic())
    finally:
        service.shutdown()
    assert stored < 2000 and stored % 5 == 0
    messages = [r.getMessage() for r in caplog.records]
    assert f"mailbox {REP}: lease lost to another instance" in messages
    assert f"mailbox {REP}: cycle stopped after the page in hand" in messages
    with factory() as session:  # the other's lease is left alone
        assert leases.holders(session)[REP][0] == "other:1:x"


# --- on the Graph simulator, `mailsync run` as a process ------------------------

from tests.graph.conftest import ca as ca  # noqa: E402,F401  (the fixtures)
from tests.graph.conftest import graph as graph  # noqa: E402,F401
from tests.graph.conftest import settings as graph_settings  # noqa: E402
from tests.graph.conftest import tokens as tokens  # noqa: E402,F401
from tests.graph.mailbox import Address as GraphAddress  # noqa: E402
from tests.graph.mailbox import Message  # noqa: E402
from tests.graph.simulator import GraphSimulator  # noqa: E402

GRAPH_DELTAS = {"messages.delta", "calendarView.delta", "todo.tasks.delta"}


def graph_mail(n: int) -> Message:
    buyer = GraphAddress("buyer@fabrikam.com", "Lee Buyer")
    when = datetime.now().astimezone() - timedelta(hours=n)
    return Message(
        subject=f"Order {n}",
        body=f"About order {n}.",
        author=buyer,
        sender=buyer,
        to=(GraphAddress(REP, "Tamara Johnston"),),
        internet_message_id=f"<order{n}@fabrikam.com>",
        sent=when,
        received=when,
    )


def first_cycle_folders(factory: sessionmaker[Session]) -> int:
    from mailsync.store.models import Mailbox

    with factory() as session:
        counts = session.scalar(select(Mailbox.last_counts))
    return int(json.loads(counts)["folders"]) if counts else 0


def test_an_idle_microsoft_365_mailbox_costs_one_batch_a_check(
    tmp_path,
    running,
    graph: GraphSimulator,  # noqa: F811
):
    box = graph.mailbox(REP)
    box.add(graph_mail(1), "inbox")
    url = sqlite_url(tmp_path / "ms.db")
    factory = opened(url)
    config = write_config(tmp_path / "ms.toml", url, {}, interval=0.3)
    mailbox = graph_settings(graph).model_dump(mode="json", exclude_none=True)
    with config.open("a", encoding="utf-8") as out:
        out.write("[[mailboxes]]\n")
        for key, value in mailbox.items():
            if not isinstance(value, list):
                out.write(f"{key} = {json.dumps(value)}\n")
    service = Running(config, tmp_path / "run.log")
    running.append(service)
    # The first check cannot tell (a new connector): every folder is synced.
    wait_for("the first cycle", lambda: first_cycle_folders(factory) == 6, 60)
    assert count(factory, Activity) == 1

    graph.reset_counts()
    time.sleep(1.5)
    with graph.lock:
        calls = [c for c in graph.calls if not c.batched]
        inside = {c.operation for c in graph.calls if c.batched}
    # The connector stayed open: no sign-in, no folder listing, no lone delta
    # GET; each check is one $batch of the six folders' delta links.
    assert {(c.operation, c.mailbox) for c in calls} == {("$batch", REP)}, calls
    assert 2 <= len(calls) <= 6, calls  # 1.5 s at one check each 0.3 s
    assert inside <= GRAPH_DELTAS, inside

    box.add(graph_mail(2), "inbox")
    wait_for("the new message", lambda: count(factory, Activity) == 2, 10)
    code, _took = service.stop()
    assert code == 0
    log = service.text()
    assert "Traceback" not in log
    assert re.search(r"mailbox tamara@contoso.com: 1 folders, 1 items, 1 new", log)
