"""Back-fill of a 10,000-item mailbox from the EWS simulator, through exchangelib.

    .venv/bin/python benchmarks/bench_ews_backfill.py [--items N]

Prints items per second, the EWS requests by operation, and their ratio to
the minimum the batch limits allow: ceil(N / 512) SyncFolderItems calls plus
ceil(N / 100) GetItem calls (exchangelib's chunk size). Target: 1.25 or less.
The sync goes into a new SQLite file through the whole core (parse, link,
store). Exits 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from mailsync.config import parse_config  # noqa: E402
from mailsync.store import db  # noqa: E402
from mailsync.sync import sync_mailbox  # noqa: E402
from tests.ews.simulator import Address, EwsSimulator, SimMessage  # noqa: E402

USER, PASSWORD, REP = (
    "svc-mailsync@contoso.com",
    "bench-only-password",
    "tamara@contoso.com",
)


def fill(sim: EwsSimulator, count: int) -> None:
    mailbox = sim.add_mailbox(REP, "Tamara Johnston")
    start = datetime.now(UTC) - timedelta(days=30)
    rep = Address(REP, "Tamara Johnston")
    buyers = [
        Address(f"buyer{n}@customer{n % 40}.example", f"Buyer {n}") for n in range(200)
    ]
    mailbox.add_many(
        SimMessage(
            subject=f"Order {n}",
            author=buyers[n % len(buyers)],
            to=(rep,),
            message_id=f"<order-{n}@customer.example>",
            datetime_sent=start + timedelta(minutes=n),
            datetime_received=start + timedelta(minutes=n, seconds=3),
            body=f"Please confirm order {n}.",
        )
        for n in range(count)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    args = parser.parse_args()
    os.environ["MAILSYNC_BENCH_EWS_PASSWORD"] = PASSWORD
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"

    with EwsSimulator() as sim, tempfile.TemporaryDirectory() as tmp:
        sim.add_user(USER, PASSWORD)
        fill(sim, args.items)
        url = f"sqlite:///{tmp}/bench.db"
        config = parse_config(
            {
                "database": {"url": url},
                "organisation": {"internal_domains": ["contoso.com"]},
                "mailboxes": [
                    {
                        "address": REP,
                        "rep": "Tamara Johnston",
                        "kind": "ews",
                        "endpoint": sim.url,
                        "username": USER,
                        "auth": "basic",
                        "password_env": "MAILSYNC_BENCH_EWS_PASSWORD",
                        "folders": ["Inbox"],
                    }
                ],
            }
        )
        engine = db.open_engine(url)
        db.upgrade(engine)
        factory = db.sessions(engine)
        sim.reset_counts()
        started = time.perf_counter()
        report = sync_mailbox(factory, config, config.mailboxes[0])
        seconds = time.perf_counter() - started
        requests = dict(sim.requests)

    minimum = math.ceil(args.items / 512) + math.ceil(args.items / 100)
    total = sum(requests.values())
    ratio = total / minimum
    print(
        f"items: {args.items} ({report.new} new activities, {report.rejected} rejected)"
    )
    print(f"rate: {args.items / seconds:.0f} items/s ({seconds:.1f} s)")
    print("requests: " + ", ".join(f"{k} {v}" for k, v in sorted(requests.items())))
    print(f"total {total}, minimum {minimum}: ratio {ratio:.2f} (target <= 1.25)")
    return 0 if ratio <= 1.25 else 1


if __name__ == "__main__":
    sys.exit(main())
