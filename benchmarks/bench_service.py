"""The service, `mailsync run`, with 200 Exchange mailboxes on the EWS simulator,
then 20 idle Microsoft 365 mailboxes on the Graph simulator.

    .venv/bin/python benchmarks/bench_service.py [--mailboxes N] [--interval S]
        [--minutes M] [--messages K] [--graph-mailboxes G] [--graph-minutes GM]
        [--section all|ews|graph]

A real `mailsync run` subprocess syncs N small mailboxes (three messages
each) at the configured check interval (default: the service's own, 60 s).
Once every mailbox has finished its first cycle, K new messages are dropped
into random mailboxes at random times during the steady phase of M minutes.
It prints, each with its target and the ratio to it:

- the latency from a message's arrival in the simulator to its activity in
  the database (polled by its ``mid:`` key), p50 and p95; target p95 < 120 s;
- the EWS requests per idle mailbox (one that got no new mail) per hour,
  counted over the steady phase and scaled to an hour, plus the hourly
  safety sweep, which a short run does not reach: one SyncFolderItems per
  folder, as counted in the first cycle, per sweep interval; target <= 70;
- the resident memory per idle mailbox: the service's RSS
  (/proc/PID/status) with N mailboxes at the end of the steady phase, minus
  the RSS of the same service with one mailbox after its first cycle,
  divided by N - 1; target < 200 KB.

Then a `mailsync run` subprocess syncs G Microsoft 365 mailboxes as the
Graph simulator makes them (three messages each; Inbox, Drafts, Sent Items,
Archive, Deleted Items, Junk Email, Outbox, the calendar and two To Do
lists, of which 6 folders are synced) and leaves them idle for GM minutes,
its sweep interval shortened to three check intervals so that the phase
holds sweeps as well as checks. The service's DEBUG log counts the checks
and sweeps and when each began and ended; the simulator's requests of a
mailbox answered meanwhile are that cycle's (a check is one ``$batch`` of
delta GETs; a sweep lists the folders and GETs each delta).
It prints the requests per idle mailbox per hour at the service's own
cadence, one cycle per check interval and a sweep an hour: (3600 / S - 1)
checks and one sweep, each at its measured cost; target <= 70.

Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from sqlalchemy import func, select  # noqa: E402

from mailsync.store import db  # noqa: E402
from mailsync.store.models import ActivityKey, Mailbox  # noqa: E402
from tests.ews.simulator import Address, EwsSimulator, SimMessage  # noqa: E402
from tests.graph.conftest import system_bundle  # noqa: E402
from tests.graph.mailbox import Address as GraphAddress  # noqa: E402
from tests.graph.mailbox import Message  # noqa: E402
from tests.graph.simulator import Call, GraphSimulator  # noqa: E402
from tests.tls import TestCA  # noqa: E402
from tests.token_server import TokenServer  # noqa: E402

MAILSYNC = PROJECT / ".venv" / "bin" / "mailsync"
USER, PASSWORD = "svc-mailsync@contoso.com", "bench-only-password"
PASSWORD_ENV = "MAILSYNC_BENCH_EWS_PASSWORD"
SWEEP_INTERVAL = 3600.0  # the service's default sweep_interval
NEW_MAIL = re.compile(r"new-(\d+)@bench\.example")
TENANT, CLIENT_ID = "bench-tenant", "bench-client"
GRAPH_SECRET, GRAPH_SECRET_ENV = "bench-only-secret", "MAILSYNC_BENCH_GRAPH_SECRET"
# The service's lines for a cycle's start and its counts (DEBUG for an idle
# check), with their times.
CYCLE_LINE = re.compile(
    r"^(?P<when>\S+ \S+) \w+ mailsync\.service: mailbox (?P<mailbox>\S+): "
    r"(?:cycle started by|(?P<folders>\d+) folders, .*, (?P<kind>check|sweep)$)"
)


def rep(n: int) -> str:
    return f"rep{n:03d}@contoso.com"


def message(tag: str, n: int, to: str, when: datetime) -> SimMessage:
    buyer = Address(f"buyer{n % 50}@customer{n % 20}.example", f"Buyer {n % 50}")
    return SimMessage(
        subject=f"Order {tag}-{n}",
        author=buyer,
        to=(Address(to, to),),
        message_id=f"<{tag}-{n}@bench.example>",
        datetime_sent=when,
        datetime_received=when + timedelta(seconds=3),
        body=f"Please confirm order {n}.",
    )


def write_config(path: Path, url: str, sim: EwsSimulator, addresses: list[str]) -> None:
    lines = [
        f'[database]\nurl = "{url}"\n',
        '[organisation]\ninternal_domains = ["contoso.com"]\n',
        "[followups]\nenabled = false\n",
        "[service]\nmetrics_port = 0\n",  # no port shared by two runs
    ]
    for address in addresses:
        box = {
            "address": address,
            "rep": address,
            "kind": "ews",
            "endpoint": sim.url,
            "username": USER,
            "auth": "basic",
            "password_env": PASSWORD_ENV,
        }
        lines.append(
            "[[mailboxes]]\n"
            + "".join(f"{k} = {json.dumps(v)}\n" for k, v in box.items())
        )
    path.write_text("\n".join(lines), encoding="utf-8")


def rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no VmRSS in /proc/{pid}/status")
    return int(match.group(1))


class Service:
    """A `mailsync run` subprocess on its own SQLite file and log.

    ``write(path, url)`` writes its configuration (the EWS one by default);
    ``options`` go before ``run`` (``--log-level DEBUG``, say).
    """

    def __init__(
        self,
        workdir: Path,
        sim: EwsSimulator | None,
        addresses: list[str],
        interval: float | None,
        write: Callable[[Path, str], None] | None = None,
        options: tuple[str, ...] = (),
    ) -> None:
        workdir.mkdir()
        self.url = f"sqlite:///{workdir}/bench.db"
        engine = db.open_engine(self.url)
        db.upgrade(engine)
        self.factory = db.sessions(engine)
        config = workdir / "mailsync.toml"
        if write is None:
            assert sim is not None
            write_config(config, self.url, sim, addresses)
        else:
            write(config, self.url)
        self.log = workdir / "run.log"
        self.count = len(addresses)
        command = [str(MAILSYNC), "--config", str(config), *options, "run"]
        if interval is not None:
            command += ["--interval", str(interval)]
        self.handle = self.log.open("w", encoding="utf-8")
        self.process = subprocess.Popen(
            command, stdout=self.handle, stderr=subprocess.STDOUT
        )

    def cycled(self) -> int:
        """How many mailboxes have finished a cycle."""
        with self.factory() as session:
            return (
                session.scalar(
                    select(func.count())
                    .select_from(Mailbox)
                    .where(Mailbox.last_cycle_at.is_not(None))
                )
                or 0
            )

    def wait_first_cycles(self, timeout: float) -> float:
        started = time.monotonic()
        while self.cycled() < self.count:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited; see {self.log}")
            if time.monotonic() - started > timeout:
                raise RuntimeError(
                    f"only {self.cycled()} of {self.count} first cycles in {timeout} s"
                )
            time.sleep(0.5)
        return time.monotonic() - started

    def new_mail_seen(self) -> set[int]:
        with self.factory() as session:
            keys = session.scalars(
                select(ActivityKey.key).where(ActivityKey.key.like("mid:%new-%"))
            ).all()
        return {int(m.group(1)) for k in keys if (m := NEW_MAIL.search(k))}

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(timeout=10)
        self.handle.close()
        return code

    def problems(self) -> list[str]:
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return [
            line for line in text.splitlines() if "WARNING" in line or "ERROR" in line
        ]


def fill(sim: EwsSimulator, addresses: list[str], per_mailbox: int) -> None:
    start = datetime.now(UTC) - timedelta(days=10)
    for address in addresses:
        mailbox = sim.add_mailbox(address, address)
        mailbox.add_many(
            message(f"old-{address}", n, address, start + timedelta(hours=n))
            for n in range(per_mailbox)
        )


def baseline_rss(
    tmp: Path, sim: EwsSimulator, address: str, interval: float | None
) -> int:
    """The RSS of the service with one mailbox, a few seconds after its first cycle."""
    service = Service(tmp / "one", sim, [address], interval)
    try:
        service.wait_first_cycles(120)
        time.sleep(5)
        return rss_kb(service.process.pid)
    finally:
        service.stop()


def deliver(
    sim: EwsSimulator,
    schedule: list[tuple[float, str]],
    sent: dict[int, tuple[str, float]],
    start: float,
) -> None:
    for n, (offset, address) in enumerate(schedule):
        time.sleep(max(0.0, start + offset - time.monotonic()))
        now = datetime.now(UTC)
        sim.mailbox(address).add(message("new", n, address, now), "inbox")
        sent[n] = (address, time.monotonic())


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return math.inf
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", choices=("all", "ews", "graph"), default="all")
    parser.add_argument("--mailboxes", type=int, default=200)
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        help="check interval in seconds (default: the service's, 60 s)",
    )
    parser.add_argument("--minutes", type=float, default=5.0, help="steady phase")
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--graph-mailboxes", type=int, default=20)
    parser.add_argument(
        "--graph-minutes", type=float, default=4.0, help="the Graph idle phase"
    )
    args = parser.parse_args()
    interval = args.interval or 60.0
    if args.minutes * 60 < 2 * interval:
        parser.error("--minutes must cover at least two check intervals")
    if args.graph_minutes * 60 < 3.5 * interval:
        parser.error("--graph-minutes must cover three and a half check intervals")
    missed = False
    if args.section in ("all", "ews"):
        missed |= bench_ews(args) != 0
    if args.section in ("all", "graph"):
        missed |= bench_graph(args) != 0
    return 1 if missed else 0


def bench_ews(args: argparse.Namespace) -> int:
    """200 Exchange mailboxes: latency, requests and memory (see the module)."""
    interval = args.interval or 60.0
    steady = args.minutes * 60
    os.environ[PASSWORD_ENV] = PASSWORD
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    rng = random.Random(args.seed)
    addresses = [rep(n) for n in range(args.mailboxes)]

    with EwsSimulator() as sim, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sim.add_user(USER, PASSWORD)
        fill(sim, addresses, 3)
        sim.add_mailbox("solo@contoso.com", "Solo").add_many(
            message("old-solo", n, "solo@contoso.com", datetime.now(UTC))
            for n in range(3)
        )
        one_rss = baseline_rss(tmp, sim, "solo@contoso.com", args.interval)

        sim.reset_counts()
        service = Service(tmp / "many", sim, addresses, args.interval)
        try:
            first = service.wait_first_cycles(max(600.0, 3 * args.mailboxes))
            with sim.lock:
                first_calls = list(sim.calls)
            settled_rss = rss_kb(service.process.pid)
            start = time.monotonic()

            # New mail in the part of the phase that leaves two intervals to
            # see it; the idle mailboxes are those that got none.
            window = steady - 2 * interval
            schedule = sorted(
                (rng.uniform(0, window), rng.choice(addresses))
                for _ in range(args.messages)
            )
            sent: dict[int, tuple[str, float]] = {}
            seen: dict[int, float] = {}
            sender = threading.Thread(
                target=deliver, args=(sim, schedule, sent, start), daemon=True
            )
            sender.start()
            while time.monotonic() - start < steady:
                found = service.new_mail_seen()
                now = time.monotonic()
                for n in found - seen.keys():
                    seen[n] = now
                time.sleep(0.5)
            elapsed = time.monotonic() - start
            with sim.lock:
                steady_calls = sim.calls[len(first_calls) :]
            end_rss = rss_kb(service.process.pid)
        finally:
            code = service.stop()
        problems = service.problems()
        errors = list(sim.errors)

    busy = {address for _, address in schedule}
    idle = [a for a in addresses if a not in busy]
    latencies = [seen[n] - sent[n][1] for n in sent if n in seen]
    missing = len(schedule) - len(latencies)
    p50, p95 = percentile(latencies, 0.50), percentile(latencies, 0.95)

    idle_set = set(idle)
    idle_calls = [c for c in steady_calls if c.mailbox in idle_set]
    by_operation: dict[str, int] = {}
    for call in idle_calls:
        by_operation[call.operation] = by_operation.get(call.operation, 0) + 1
    checks = len(idle_calls) / max(1, len(idle)) * 3600 / elapsed
    folders = sum(c.operation == "SyncFolderItems" for c in first_calls) / len(
        addresses
    )
    sweep = folders * 3600 / SWEEP_INTERVAL
    per_hour = checks + sweep

    per_mailbox = (end_rss - one_rss) / (args.mailboxes - 1)

    print(
        f"mailboxes: {args.mailboxes} (3 messages each), check interval "
        f"{interval:g} s, first cycles of all in {first:.0f} s, steady phase "
        f"{elapsed:.0f} s"
    )
    print(
        f"new mail: {len(sent)} messages into {len(busy)} mailboxes, "
        f"{len(latencies)} seen, {missing} not seen"
    )
    print(
        f"latency new mail -> activity: p50 {p50:.1f} s, p95 {p95:.1f} s "
        f"(target p95 < 120 s): ratio {p95 / 120:.2f}"
    )
    print(
        f"requests per idle mailbox per hour: {checks:.1f} measured over "
        f"{len(idle)} idle mailboxes ("
        + ", ".join(f"{k} {v}" for k, v in sorted(by_operation.items()))
        + f") + {sweep:.1f} for the sweep ({folders:.0f} folders per "
        f"{SWEEP_INTERVAL:.0f} s) = {per_hour:.1f} (target <= 70): "
        f"ratio {per_hour / 70:.2f}"
    )
    print(
        f"memory: RSS {one_rss} kB with 1 mailbox, {settled_rss} kB with "
        f"{args.mailboxes} after their first cycles, {end_rss} kB at the end; "
        f"per idle mailbox {per_mailbox:.0f} kB (target < 200 KB): "
        f"ratio {per_mailbox / 200:.2f}"
    )
    print(f"service exit code {code}; {len(problems)} WARNING/ERROR log lines")
    for line in problems[:5]:
        print(f"  {line[:200]}")
    if errors:
        print(f"EWS simulator errors: {len(errors)}")
    missed = (
        missing > 0
        or p95 >= 120
        or per_hour > 70
        or per_mailbox >= 200
        or code != 0
        or bool(errors)
    )
    return 1 if missed else 0


# --- Microsoft 365 mailboxes, idle -------------------------------------------


def write_graph_config(
    path: Path, url: str, sim: GraphSimulator, addresses: list[str], sweep: float
) -> None:
    lines = [
        f'[database]\nurl = "{url}"\n',
        '[organisation]\ninternal_domains = ["contoso.com"]\n',
        "[followups]\nenabled = false\n",
        f"[service]\nmetrics_port = 0\nsweep_interval = {sweep}\n",
    ]
    for address in addresses:
        box = {
            "address": address,
            "rep": address,
            "kind": "graph",
            "tenant_id": TENANT,
            "client_id": CLIENT_ID,
            "client_secret_env": GRAPH_SECRET_ENV,
            "authority": sim.tokens.authority,
            "graph_url": sim.url,
            "ca_bundle": str(sim.ca.pem),
        }
        lines.append(
            "[[mailboxes]]\n"
            + "".join(f"{k} = {json.dumps(v)}\n" for k, v in box.items())
        )
    path.write_text("\n".join(lines), encoding="utf-8")


def fill_graph(sim: GraphSimulator, addresses: list[str], per_mailbox: int) -> None:
    start = datetime.now(UTC) - timedelta(days=10)
    for address in addresses:
        box = sim.add_mailbox(address, address)
        for n in range(per_mailbox):
            buyer = GraphAddress(f"buyer{n}@customer{n}.example", f"Buyer {n}")
            when = start + timedelta(hours=n)
            box.add(
                Message(
                    subject=f"Order {address}-{n}",
                    body=f"Please confirm order {n}.",
                    author=buyer,
                    sender=buyer,
                    to=(GraphAddress(address, address),),
                    internet_message_id=f"<old-{address}-{n}@bench.example>",
                    sent=when,
                    received=when + timedelta(seconds=3),
                )
            )


@dataclass
class Cycle:
    """One mailbox's cycle as the service logged it (wall-clock seconds)."""

    mailbox: str
    kind: str  # check or sweep
    folders: int
    started: float
    ended: float
    requests: Counter[str] = field(default_factory=Counter)
    inside: int = 0  # requests inside its $batch calls


def logged_cycles(text: str) -> list[Cycle]:
    """Each cycle from its "cycle started" line to its line of counts."""
    begun: dict[str, float] = {}
    found = []
    for line in text.splitlines():
        match = CYCLE_LINE.match(line)
        if match is None:
            continue
        when = datetime.strptime(match["when"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        mailbox = match["mailbox"]
        if match["kind"] is None:
            begun[mailbox] = when
        elif mailbox in begun:
            started = begun.pop(mailbox)
            found.append(
                Cycle(mailbox, match["kind"], int(match["folders"]), started, when)
            )
    return found


def count_requests(cycles: list[Cycle], calls: list[Call]) -> None:
    """Give each cycle the HTTP requests of its mailbox answered during it
    (a mailbox has one cycle at a time; a log line's time is cut to the
    millisecond)."""
    by_mailbox: dict[str, list[Cycle]] = {}
    for cycle in cycles:
        by_mailbox.setdefault(cycle.mailbox, []).append(cycle)
    for call in calls:
        for cycle in by_mailbox.get(call.mailbox or "", ()):
            if cycle.started <= call.at <= cycle.ended + 0.001:
                if call.batched:
                    cycle.inside += 1
                else:
                    cycle.requests[call.operation] += 1
                break


def bench_graph(args: argparse.Namespace) -> int:
    """Requests per idle Microsoft 365 mailbox per hour (see the module)."""
    interval = args.interval or 60.0
    count, phase = args.graph_mailboxes, args.graph_minutes * 60
    sweep_every = 3 * interval
    os.environ[GRAPH_SECRET_ENV] = GRAPH_SECRET
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    os.environ["REQUESTS_CA_BUNDLE"] = system_bundle()
    addresses = [f"m365-{n:03d}@contoso.com" for n in range(count)]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ca = TestCA(tmp)
        with TokenServer(ca, TENANT) as tokens, GraphSimulator(ca, tokens) as sim:
            tokens.add_app(CLIENT_ID, GRAPH_SECRET, f"{sim.url}/.default")
            sim.add_app(CLIENT_ID, "Mail.ReadWrite", "Calendars.Read", "Tasks.Read.All")
            fill_graph(sim, addresses, 3)

            def write(path: Path, url: str) -> None:
                write_graph_config(path, url, sim, addresses, sweep_every)

            service = Service(
                tmp / "graph",
                None,
                addresses,
                args.interval,
                write=write,
                options=("--log-level", "DEBUG"),
            )
            try:
                first = service.wait_first_cycles(max(300.0, 3 * count))
                start = time.time()
                time.sleep(phase)
                end = time.time()
            finally:
                code = service.stop()
            problems = service.problems()
            errors = list(sim.errors)
            with sim.lock:
                calls = list(sim.calls)
            text = service.log.read_text(encoding="utf-8", errors="replace")

    # The whole cycles of the idle phase, each with its requests.
    cycles = [c for c in logged_cycles(text) if start <= c.started and c.ended <= end]
    count_requests(cycles, calls)
    checks = [c for c in cycles if c.kind == "check"]
    sweeps = [c for c in cycles if c.kind == "sweep"]
    check_ops = sum((c.requests for c in checks), Counter())
    sweep_ops = sum((c.requests for c in sweeps), Counter())
    check_cost = sum(check_ops.values()) / max(1, len(checks))
    sweep_cost = sum(sweep_ops.values()) / max(1, len(sweeps))
    inside = sum(c.inside for c in checks) / max(1, len(checks))
    checks_an_hour = 3600 / interval - 3600 / SWEEP_INTERVAL
    sweeps_an_hour = 3600 / SWEEP_INTERVAL
    per_hour = checks_an_hour * check_cost + sweeps_an_hour * sweep_cost
    print(
        f"Microsoft 365 mailboxes: {count}, idle, check interval {interval:g} s, "
        f"first cycles of all in {first:.0f} s, idle phase {end - start:.0f} s "
        f"with a sweep every {sweep_every:g} s"
    )
    synced = sweeps[0].folders if sweeps else 0
    print(
        f"checks: {len(checks)} (of them {sum(c.folders > 0 for c in checks)} "
        f"synced a folder), {check_cost:.2f} requests each ("
        + ", ".join(f"{k} {v}" for k, v in sorted(check_ops.items()))
        + f"); sweeps: {len(sweeps)} of {synced} folders, {sweep_cost:.2f} "
        "requests each ("
        + ", ".join(f"{k} {v}" for k, v in sorted(sweep_ops.items()))
        + f"); {inside:.1f} delta GETs inside a check's $batch"
    )
    print(
        "requests per idle Microsoft 365 mailbox per hour: "
        f"{checks_an_hour:.0f} checks x {check_cost:.2f} + {sweeps_an_hour:.0f} "
        f"sweep x {sweep_cost:.2f} = {per_hour:.1f} (target <= 70): "
        f"ratio {per_hour / 70:.2f}"
    )
    print(f"service exit code {code}; {len(problems)} WARNING/ERROR log lines")
    for line in problems[:5]:
        print(f"  {line[:200]}")
    if errors:
        print(f"Graph simulator errors: {len(errors)}")
    missed = per_hour > 70 or not checks or not sweeps or code != 0 or bool(errors)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
