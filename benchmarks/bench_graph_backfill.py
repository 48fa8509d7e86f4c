"""Back-fill of a 10,000-message mailbox from the Graph simulator, over HTTPS.

    .venv/bin/python benchmarks/bench_graph_backfill.py [--items N] [--page-size P]

msal signs in at the test token endpoint; the Graph connector reads the
Inbox's messages delta through the whole core (link, store) into a new
SQLite file. Prints messages per second, the HTTP requests to Graph by
operation, their ratio to the minimum the page size allows (ceil(N / P)
delta pages, plus one request to find the folders), and the most requests
the simulator saw in flight for the mailbox at once. Targets: a ratio of
1.1 or less, and no more than 4 in flight. Exits 1 when one is missed.
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
from tests.graph.mailbox import Address, Message  # noqa: E402
from tests.graph.simulator import GraphSimulator  # noqa: E402
from tests.tls import TestCA  # noqa: E402
from tests.token_server import TokenServer  # noqa: E402

TENANT, CLIENT_ID = "bench-tenant", "bench-client"
SECRET, REP = "bench-only-secret", "tamara@contoso.com"


def fill(sim: GraphSimulator, count: int) -> None:
    box = sim.add_mailbox(REP, "Tamara Johnston")
    start = datetime.now(UTC) - timedelta(days=30)
    rep = Address(REP, "Tamara Johnston")
    buyers = [
        Address(f"buyer{n}@customer{n % 40}.example", f"Buyer {n}") for n in range(200)
    ]
    for n in range(count):
        buyer = buyers[n % len(buyers)]
        box.add(
            Message(
                subject=f"Order {n}",
                body=f"Please confirm order {n}.",
                author=buyer,
                sender=buyer,
                to=(rep,),
                internet_message_id=f"<order-{n}@customer.example>",
                sent=start + timedelta(minutes=n),
                received=start + timedelta(minutes=n, seconds=3),
            )
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--page-size", type=int, default=100)
    args = parser.parse_args()
    os.environ["MAILSYNC_BENCH_GRAPH_SECRET"] = SECRET
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"

    with tempfile.TemporaryDirectory() as tmp:
        ca = TestCA(Path(tmp))
        with TokenServer(ca, TENANT) as tokens, GraphSimulator(ca, tokens) as sim:
            tokens.add_app(CLIENT_ID, SECRET, f"{sim.url}/.default")
            sim.add_app(CLIENT_ID, "Mail.ReadWrite", "Calendars.Read", "Tasks.Read.All")
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
                            "kind": "graph",
                            "tenant_id": TENANT,
                            "client_id": CLIENT_ID,
                            "client_secret_env": "MAILSYNC_BENCH_GRAPH_SECRET",
                            "authority": tokens.authority,
                            "graph_url": sim.url,
                            "ca_bundle": str(ca.pem),
                            "page_size": args.page_size,
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
            batched = dict(sim.batched)
            in_flight = sim.max_in_flight[REP]
            token_requests = tokens.token_requests
            engine.dispose()
            assert not sim.errors, "\n".join(sim.errors)

    minimum = max(1, math.ceil(args.items / args.page_size)) + 1
    total = sum(requests.values())
    ratio = total / minimum
    print(
        f"messages: {args.items} ({report.new} new activities, "
        f"{report.rejected} rejected), page size {args.page_size}"
    )
    print(f"rate: {args.items / seconds:.0f} messages/s ({seconds:.1f} s)")
    print("requests: " + ", ".join(f"{k} {v}" for k, v in sorted(requests.items())))
    print("inside $batch: " + ", ".join(f"{k} {v}" for k, v in sorted(batched.items())))
    print(f"token requests: {token_requests}")
    print(f"total {total}, minimum {minimum}: ratio {ratio:.2f} (target <= 1.1)")
    print(f"most requests in flight for the mailbox: {in_flight} (target <= 4)")
    return 0 if ratio <= 1.1 and in_flight <= 4 else 1


if __name__ == "__main__":
    sys.exit(main())
