"""End-to-end sync of the Enron corpus against parsing it with `email` alone.

    .venv/bin/python benchmarks/bench_sync_corpus.py [--corpus DIR]

The baseline parses every file with the standard library's default policy and
reads what any consumer of mail reads: From, To, Cc, Subject, Date, Message-ID
and the text body (the default policy parses headers lazily, so a bare parse
would measure almost nothing). mailsync then syncs the same ten mailboxes from
scratch, every folder included so that it reads the same files: parse, link
against the imported CRM, and store in a new SQLite file, in a child process
so that its peak memory is its own.

Targets: a rate ratio (mailsync / baseline) of at least 0.5, and a peak
resident memory under 300 MB. Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = PROJECT.parent / "shared" / "corpus" / "enron-maildir-13k" / "maildir"
CRM = PROJECT.parent / "shared" / "crm" / "enron"


def corpus_files(root: Path) -> list[Path]:
    return sorted(
        p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
    )


def baseline(files: list[Path]) -> float:
    started = time.perf_counter()
    for path in files:
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for header in ("from", "to", "cc", "subject", "date", "message-id"):
            msg.get(header)
        body = msg.get_body(("plain", "html"))
        if body is not None:
            body.get_content()
    return time.perf_counter() - started


def child(url: str, corpus: Path) -> None:
    """The measured run: print its figures as one JSON line."""
    import tomllib

    from mailsync import importer
    from mailsync.config import parse_config
    from mailsync.relink import relink
    from mailsync.store import db
    from mailsync.store.directory import load_directory
    from mailsync.sync import organisation, sync_mailbox

    raw = tomllib.loads((PROJECT / "config" / "enron.toml").read_text())
    raw["database"]["url"] = url
    for mailbox in raw["mailboxes"]:
        mailbox["path"] = str(corpus / Path(mailbox["path"]).name)
        mailbox["exclude_folders"] = []  # read every file, as the baseline does
    config = parse_config(raw)
    engine = db.open_engine(url)
    db.upgrade(engine)
    factory = db.sessions(engine)
    with db.transaction(factory) as session:
        accounts = importer.read_rows(CRM / "accounts.csv", "accounts")
        importer.import_accounts(session, accounts)
        contacts = importer.read_rows(CRM / "contacts.csv", "contacts")
        importer.import_contacts(session, contacts)
        relink(session, load_directory(session), organisation(config))

    started = time.perf_counter()
    reports = [sync_mailbox(factory, config, m) for m in config.mailboxes]
    elapsed = time.perf_counter() - started
    figures = {
        "seconds": elapsed,
        "items": sum(r.items for r in reports),
        "new": sum(r.new for r in reports),
        "rejected": sum(r.rejected for r in reports),
    }
    print(json.dumps(figures))


def mailsync_run(corpus: Path) -> tuple[dict[str, float], float]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        args = [sys.executable, __file__, "--child", url, "--corpus", str(corpus)]
        out = subprocess.run(args, check=True, capture_output=True, text=True)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return json.loads(out.stdout.strip().splitlines()[-1]), peak_kb / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.corpus)
        return 0
    if not args.corpus.is_dir():
        print(f"corpus not found at {args.corpus}; pass --corpus DIR", file=sys.stderr)
        return 2

    files = corpus_files(args.corpus)
    base_seconds = baseline(files)
    run, peak_mb = mailsync_run(args.corpus)
    base_rate = len(files) / base_seconds
    our_rate = len(files) / run["seconds"]
    ratio = our_rate / base_rate

    print(
        f"files: {len(files)}  (mailsync read {run['items']:.0f} items, "
        f"{run['new']:.0f} new activities, {run['rejected']:.0f} rejected)"
    )
    seconds = run["seconds"]
    print(
        f"baseline, email package alone: {base_rate:6.0f} files/s, {base_seconds:.1f} s"
    )
    print(f"mailsync, parse+link+store:    {our_rate:6.0f} files/s, {seconds:.1f} s")
    print(f"ratio: {ratio:.2f} (target >= 0.5)")
    print(f"peak memory of the sync process: {peak_mb:.0f} MB (target < 300 MB)")
    return 0 if ratio >= 0.5 and peak_mb < 300 else 1


if __name__ == "__main__":
    sys.exit(main())
