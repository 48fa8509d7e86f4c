"""The ``mailsync`` command line.

Errors are handled in one place, :class:`ErrorHandlingGroup`: a user or
configuration error prints its message (which names the fix) and exits 2,
with no traceback; a bug prints a traceback only with ``--debug``.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailsync.config import Config, load_config
from mailsync.errors import MailsyncError, UserError
from mailsync.linker.addresses import normalise
from mailsync.store import db
from mailsync.store.directory import (
    account_by_name,
    contact_by_address,
    ensure_mailbox,
    load_directory,
)
from mailsync.store.models import Activity, AddressLink

if TYPE_CHECKING:
    from mailsync.config import MailboxConfig
    from mailsync.leases import Holding
    from mailsync.queries import TaskView
    from mailsync.sync import CycleReport

log = logging.getLogger("mailsync")


@dataclass
class App:
    config_path: str | None
    _config: Config | None = None
    _factory: sessionmaker[Session] | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    def sessions(self, *, check_schema: bool = True) -> sessionmaker[Session]:
        if self._factory is None:
            engine = db.open_engine(self.config.database.url)
            if check_schema:
                db.require_current(engine)
            self._factory = db.sessions(engine)
        return self._factory

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with db.transaction(self.sessions()) as session:
            yield session


pass_app = click.make_pass_decorator(App)
format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Output format.",
)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


class ErrorHandlingGroup(click.Group):
    """Turns mailsync's errors into a message and an exit code, in one place."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:  # `mailsync unlinked | head`
            sys.stderr.close()
            ctx.exit(0)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except MailsyncError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except Exception as exc:
            if ctx.meta.get("debug"):
                raise
            click.echo(
                f"unexpected error (a bug): {type(exc).__name__}: {exc}; "
                "run again with --debug for the traceback",
                err=True,
            )
            ctx.exit(70)


@click.group(cls=ErrorHandlingGroup)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Configuration file (default: $MAILSYNC_CONFIG or config/mailsync.toml).",
)
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option("--debug", is_flag=True, help="Show tracebacks of unexpected errors.")
@click.pass_context
def cli(
    ctx: click.Context, config_path: str | None, log_level: str, debug: bool
) -> None:
    """mailsync: an automatic Activity History for a small sales team."""
    from mailsync import redact

    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    redact.install(logging.getLevelName(log_level.upper()))
    ctx.obj = App(config_path)
    ctx.meta["debug"] = debug


# --- database --------------------------------------------------------------


@cli.command()
@pass_app
def init(app: App) -> None:
    """Create the database (or bring it up to date) and register the mailboxes."""
    engine = db.open_engine(app.config.database.url)
    db.upgrade(engine)
    with app.transaction() as session:
        for mailbox in app.config.mailboxes:
            ensure_mailbox(session, mailbox.address, mailbox.rep, mailbox.kind)
    click.echo(f"database ready: {db.masked(app.config.database.url)}")


@cli.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@pass_app
def db_upgrade(app: App) -> None:
    """Apply the migrations this mailsync has and the database lacks."""
    engine = db.open_engine(app.config.database.url)
    db.upgrade(engine)
    current, _head = db.schema_state(engine)
    click.echo(f"schema at revision {current}")


# --- contacts and accounts -------------------------------------------------


@cli.group()
def contacts() -> None:
    """Business Contacts."""


@cli.group()
def accounts() -> None:
    """Accounts."""


def _import(app: App, path: str, kind: str) -> None:
    from mailsync import importer
    from mailsync.relink import relink
    from mailsync.sync import organisation

    rows = importer.read_rows(Path(path), kind)
    with app.transaction() as session:
        run = (
            importer.import_accounts if kind == "accounts" else importer.import_contacts
        )
        ours = organisation(app.config)
        report = run(session, rows, ours)
        relinked = relink(session, load_directory(session), ours)
    for line, message in report.errors:
        click.echo(f"{path}:{line}: {message}", err=True)
    for line, message in report.warnings:
        click.echo(f"{path}:{line}: warning: {message}", err=True)
    click.echo(
        f"{kind}: {report.created} created, {report.updated} updated, "
        f"{report.unchanged} unchanged, {len(report.errors)} rejected; "
        f"{relinked.activities} activities relinked"
    )
    if report.errors:
        sys.exit(1)


@contacts.command("import")
@click.argument("file", type=click.Path())
@pass_app
def contacts_import(app: App, file: str) -> None:
    """Import contacts from CSV (name,emails,account,title,phone) or vCard."""
    _import(app, file, "contacts")


@accounts.command("import")
@click.argument("file", type=click.Path())
@pass_app
def accounts_import(app: App, file: str) -> None:
    """Import accounts from CSV (name,domains,phone,notes) or vCard."""
    _import(app, file, "accounts")


@contacts.command("list")
@format_option
@pass_app
def contacts_list(app: App, fmt: str) -> None:
    """List the Business Contacts."""
    from mailsync.queries import contacts_listing

    with app.transaction() as session:
        rows = contacts_listing(session)
    if fmt == "json":
        emit_json(rows)
        return
    for row in rows:
        account = f" ({row['account']})" if row["account"] else ""
        click.echo(f"{row['name']}{account}: {', '.join(row['emails'])}")


@accounts.command("list")
@format_option
@pass_app
def accounts_list(app: App, fmt: str) -> None:
    """List the Accounts."""
    from mailsync.queries import accounts_listing

    with app.transaction() as session:
        rows = accounts_listing(session)
    if fmt == "json":
        emit_json(rows)
        return
    for row in rows:
        click.echo(f"{row['name']}: {', '.join(row['domains'])}")


# --- sync ------------------------------------------------------------------


@cli.command()
@click.option(
    "--once",
    is_flag=True,
    default=True,
    help="Run one cycle of every mailbox and exit (the only mode of `sync`).",
)
@click.option("--mailbox", "address", help="Sync only this mailbox.")
@format_option
@pass_app
def sync(app: App, once: bool, address: str | None, fmt: str) -> None:
    """Run one sync cycle of the configured mailboxes."""
    from dataclasses import asdict

    from mailsync import leases

    config = app.config
    mailboxes = (
        [config.mailbox(address)]
        if address
        else [m for m in config.mailboxes if m.enabled]
    )
    if not mailboxes:
        raise UserError(
            "no mailbox to sync; add a [[mailboxes]] entry to the configuration"
        )
    factory = app.sessions()
    reports = []
    ttl = config.service.lease_ttl or 3 * config.service.check_interval
    with leases.Holding(factory, ttl) as holding:
        for mailbox in mailboxes:
            # One mailbox's failure never keeps the others from their cycle.
            report = _sync_one(factory, config, mailbox, holding)
            if report is not None:
                reports.append(report)
    failed = len(reports) < len(mailboxes) or any(
        r.error or r.misconfigured for r in reports
    )
    if fmt == "json":
        emit_json([asdict(r) for r in reports])
    else:
        for r in reports:
            click.echo(r.log_line() % r.log_args())
    if failed:
        sys.exit(1)


def _sync_one(
    factory: sessionmaker[Session],
    config: Config,
    mailbox: MailboxConfig,
    holding: Holding,
) -> CycleReport | None:
    """One mailbox's cycle under its lease; None (and why, on stderr) when
    it did not run or ended early."""
    from mailsync.sync import CycleStopped, sync_mailbox

    address = mailbox.address
    # A mailbox that `mailsync run` (or another sync) holds is left to it:
    # two cycles of one mailbox at once would race each other.
    holder = holding.take(address)
    if holder is not None:
        click.echo(
            f"mailbox {address}: not synced, {holder} holds it (`mailsync run` "
            "or another sync); the service syncs it, or stop the service first",
            err=True,
        )
        return None
    try:
        report = sync_mailbox(
            factory, config, mailbox, stop=functools.partial(holding.lost, address)
        )
    except CycleStopped:
        click.echo(
            f"mailbox {address}: stopped after the page in hand: this sync "
            "stalled past its lease, and another instance took the mailbox",
            err=True,
        )
        return None
    except MailsyncError as exc:
        text = str(exc).removeprefix(f"mailbox {address}: ")
        click.echo(f"mailbox {address}: {text}", err=True)
        return None
    except Exception as exc:
        log.exception("mailbox %s: cycle failed (a bug)", address)
        click.echo(f"mailbox {address}: {type(exc).__name__}: {exc}", err=True)
        return None
    finally:
        holding.release(address)
    for problem in (report.error, report.misconfigured):
        if problem:
            click.echo(f"mailbox {address}: {problem}", err=True)
    return report


@cli.command()
@click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds between change checks (default: service.check_interval).",
)
@click.option("--once", is_flag=True, help="Run one cycle, as `sync --once`, and exit.")
@click.pass_context
def run(ctx: click.Context, interval: float | None, once: bool) -> None:
    """Run the service: check every mailbox each interval, until SIGTERM."""
    from click.core import ParameterSource

    if once:
        ctx.invoke(sync, once=True, address=None, fmt="text")
        return
    from mailsync.service import Service

    app = ctx.find_object(App)
    assert app is not None
    parent = ctx.parent
    if parent is not None and parent.get_parameter_source("log_level") in (
        ParameterSource.DEFAULT,
        None,
    ):
        # The service's one line per mailbox cycle is at INFO.
        logging.getLogger().setLevel(logging.INFO)
    config = app.config
    if not any(m.enabled for m in config.mailboxes):
        raise UserError(
            "no enabled mailbox to sync; add a [[mailboxes]] entry to the configuration"
        )
    service = Service(config, app.sessions(), app.config_path, interval)
    sys.exit(service.run())


@cli.group()
def mailboxes() -> None:
    """The configured mailboxes."""


@mailboxes.command("test")
@click.argument("address")
@pass_app
def mailboxes_test(app: App, address: str) -> None:
    """Check that ADDRESS answers and that mailsync's rights on it suffice."""
    from mailsync.connectors import open_connector

    connector = open_connector(app.config.mailbox(address))
    try:
        lines = connector.check()
    finally:
        connector.close()
    for line in lines:
        click.echo(f"ok: {line}")


@mailboxes.command("preview")
@click.argument("address")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    help="Stop after N items (the summary says it is partial).",
)
@format_option
@pass_app
def mailboxes_preview(app: App, address: str, limit: int | None, fmt: str) -> None:
    """A dry run of ADDRESS's back-fill: what would be linked, wait as
    unlinked, or be excluded and why. Writes nothing, here or in the mailbox."""
    from mailsync.connectors import open_connector
    from mailsync.reports import preview

    mailbox = app.config.mailbox(address)
    connector = open_connector(mailbox)
    try:
        with app.sessions()() as session:
            result = preview(session, app.config, mailbox, connector, limit)
            session.rollback()
    finally:
        connector.close()
    if fmt == "json":
        emit_json(result.as_json())
        return
    for row in result.rows:
        click.echo(_outcome_line(row))
    summary = result.summary()
    partial = "" if summary["complete"] else f" (stopped after {limit} items)"
    click.echo(
        f"{result.mailbox}: {summary['items']} items{partial}: "
        f"{summary['linked']} linked, {summary['unlinked']} unlinked, "
        f"{summary['excluded']} excluded, {summary['rejected']} rejected; "
        f"{summary['activities']} activities"
    )
    for reason, count in sorted(summary["excluded_by"].items()):
        click.echo(f"  excluded as {reason}: {count}")


def _outcome_line(row: Any) -> str:
    when = f"{row.occurred_at:%Y-%m-%d}" if row.occurred_at else "----------"
    subject = row.subject if row.subject is not None else "(subject not shown)"
    return f"{when} {row.folder}: {subject}: {row.outcome}: {row.explanation()}"


# --- history ---------------------------------------------------------------


@cli.command()
@click.option("--contact", "contact_email", help="The contact's e-mail address.")
@click.option("--account", "account_name", help="The account's name.")
@click.option(
    "--limit", type=click.IntRange(min=1), help="Only the newest N activities."
)
@format_option
@pass_app
def history(
    app: App,
    contact_email: str | None,
    account_name: str | None,
    limit: int | None,
    fmt: str,
) -> None:
    """Show the Activity History of a contact or an account, oldest first."""
    from mailsync.queries import history as timeline

    if bool(contact_email) == bool(account_name):
        raise UserError("give exactly one of --contact EMAIL or --account NAME")
    with app.transaction() as session:
        kind, target_id, title = _target(session, contact_email, account_name)
        views = timeline(session, kind, target_id)
    total = len(views)
    views = views[-limit:] if limit else views
    if fmt == "json":
        emit_json([v.as_json() for v in views])
        return
    shown = f"the newest {len(views)} of {total}" if len(views) < total else total
    click.echo(f"{title}: {shown} activities (times in UTC)")
    for view in views:
        when = view.occurred_at.strftime("%Y-%m-%d %H:%M")
        people = ", ".join(sorted({c["name"] for c in view.contacts})) or "-"
        rules = ",".join(sorted({r["rule"] for r in view.link_rules}))
        mark = " [cancelled]" if view.status == "cancelled" else ""
        if view.task is not None:
            when, mark = _task_line(view.task, when)
        click.echo(
            f"{when}  {view.direction[:3]:3}  {view.kind:7}  {view.subject[:60]:60}"
            f"  {people}  ({rules}){mark}"
        )


def _task_line(task: TaskView, when: str) -> tuple[str, str]:
    """A task's time column (its due date alone when it has no time) and its
    mark: status, completion and due date."""
    due = _day_or_time(task.due)
    if task.due is not None and not isinstance(task.due, datetime):
        when = f"{due:16}"
    # Outlook's NotStarted, WaitingOnOthers, ... as words.
    status = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", task.status or "no status").lower()
    parts = [status]
    if task.completed_at is not None:
        done = f"completed {task.completed_at:%Y-%m-%d}"
        parts = [done] if task.status == "Completed" else [*parts, done]
    parts.append(f"due {due}" if task.due is not None else "no due date")
    return when, f" [{', '.join(parts)}]"


def _day_or_time(value: date | datetime | None) -> str:
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    return value.isoformat() if value is not None else ""


def _target(
    session: Session, contact_email: str | None, account_name: str | None
) -> tuple[str, int, str]:
    if contact_email:
        address = normalise(contact_email) or contact_email
        contact = contact_by_address(session, address)
        if contact is None:
            raise UserError(
                f"no contact with address {contact_email!r}; "
                "see `mailsync contacts list`"
            )
        return "contact", contact.id, contact.name
    assert account_name is not None
    account = account_by_name(session, account_name)
    if account is None:
        raise UserError(
            f"no account named {account_name!r}; see `mailsync accounts list`"
        )
    return "account", account.id, account.name


# --- unknown addresses and manual links ------------------------------------


@cli.command()
@format_option
@pass_app
def unlinked(app: App, fmt: str) -> None:
    """List external addresses, and names typed in tasks, that matched no contact
    or account."""
    from mailsync.queries import unlinked as unknown

    with app.transaction() as session:
        rows = unknown(session)
    if fmt == "json":
        emit_json([r.as_json() for r in rows])
        return
    addresses = [r for r in rows if r.address is not None]
    click.echo(f"{len(addresses)} unlinked addresses")
    for r in addresses:
        seen = f"{r.first_seen:%Y-%m-%d} .. {r.last_seen:%Y-%m-%d}"
        click.echo(f"{r.count:5}  {r.address:40}  {seen}  {r.sample_subject[:50]}")
    names = [r for r in rows if r.address is None]
    if names:
        click.echo(f"{len(names)} unlinked names typed in tasks")
    for n in names:
        seen = f"{n.first_seen:%Y-%m-%d} .. {n.last_seen:%Y-%m-%d}"
        label = f"{n.name} ({n.kind}, {n.status})"
        click.echo(f"{n.count:5}  {label:40}  {seen}  {n.sample_subject[:50]}")


@cli.command()
@click.argument("address", required=False)
@click.option("--activity", "activity_id", type=int, help="Link one activity instead.")
@click.option(
    "--contact", "contact_email", help="Link to the contact with this address."
)
@click.option("--account", "account_name", help="Link to the account with this name.")
@pass_app
def link(
    app: App,
    address: str | None,
    activity_id: int | None,
    contact_email: str | None,
    account_name: str | None,
) -> None:
    """Resolve an unknown ADDRESS (or one --activity) to a contact or an account."""
    _manual(app, address, activity_id, contact_email, account_name, linked=True)


@cli.command()
@click.argument("address", required=False)
@click.option("--activity", "activity_id", type=int, help="Unlink one activity.")
@click.option("--contact", "contact_email", help="The contact to unlink.")
@click.option("--account", "account_name", help="The account to unlink.")
@pass_app
def unlink(
    app: App,
    address: str | None,
    activity_id: int | None,
    contact_email: str | None,
    account_name: str | None,
) -> None:
    """Undo a manual ADDRESS link, or unlink one --activity from a target."""
    _manual(app, address, activity_id, contact_email, account_name, linked=False)


def _manual(
    app: App,
    address: str | None,
    activity_id: int | None,
    contact_email: str | None,
    account_name: str | None,
    *,
    linked: bool,
) -> None:
    from mailsync.relink import relink
    from mailsync.sync import organisation

    if bool(address) == bool(activity_id):
        raise UserError("give either an ADDRESS or --activity ID")
    with app.transaction() as session:
        if address:
            normal = normalise(address)
            if normal is None:
                raise UserError(f"{address!r} is not an e-mail address")
            if linked and organisation(app.config).is_internal(normal):
                raise UserError(
                    f"{normal} is one of our own (internal_domains or a mailbox): "
                    "our own people are never counterparties, so a link would "
                    "change nothing; link the customer's address, or one "
                    "activity with --activity ID"
                )
            message = _address_link(
                session, normal, contact_email, account_name, linked
            )
            relink(session, load_directory(session), organisation(app.config), [normal])
        else:
            assert activity_id is not None
            if bool(contact_email) == bool(account_name):
                raise UserError("give exactly one of --contact EMAIL or --account NAME")
            kind, target_id, name = _target(session, contact_email, account_name)
            message = _activity_link(
                session, activity_id, kind, target_id, name, linked
            )
    click.echo(message)


def _address_link(
    session: Session,
    address: str,
    contact_email: str | None,
    account_name: str | None,
    linked: bool,
) -> str:
    existing = session.scalar(select(AddressLink).where(AddressLink.address == address))
    if not linked:
        if existing is None:
            raise UserError(f"{address} has no manual link to undo")
        session.delete(existing)
        return f"{address}: manual link removed"
    if bool(contact_email) == bool(account_name):
        raise UserError("give exactly one of --contact EMAIL or --account NAME")
    kind, target_id, name = _target(session, contact_email, account_name)
    if existing is None:
        existing = AddressLink(address=address, target_kind=kind, target_id=target_id)
        session.add(existing)
    existing.target_kind, existing.target_id = kind, target_id
    session.flush()
    return f"{address}: linked to {kind} {name}"


def _activity_link(
    session: Session,
    activity_id: int,
    kind: str,
    target_id: int,
    name: str,
    linked: bool,
) -> str:
    from mailsync.store.history import set_manual_link

    if session.get(Activity, activity_id) is None:
        raise UserError(
            f"no activity {activity_id}; the ids are in `history --format json` "
            "and `unlinked --format json`"
        )
    set_manual_link(session, activity_id, (kind, target_id), linked)
    verb = "linked to" if linked else "unlinked from"
    return f"activity {activity_id}: {verb} {kind} {name}"


# --- status ----------------------------------------------------------------


@cli.command()
@format_option
@pass_app
def status(app: App, fmt: str) -> None:
    """Per mailbox: the last cycle, lag, counts, the next cycle, and the items
    that could not be read."""
    from mailsync.queries import mailbox_status

    config = app.config
    enabled = {m.address for m in config.mailboxes if m.enabled}
    with app.transaction() as session:
        rows = mailbox_status(session, config.service.check_interval, enabled)
    if fmt == "json":
        emit_json([r.as_json() for r in rows])
        return
    for r in rows:
        when = f"{r.last_cycle_at:%Y-%m-%d %H:%M:%S}" if r.last_cycle_at else "never"
        click.echo(
            f"{r.address} ({r.rep}, {r.kind}): last cycle {when}; "
            f"{r.activities} activities, {r.links} links, {r.unlinked} unlinked, "
            f"{r.excluded} excluded, {len(r.rejected)} rejected"
        )
        click.echo(f"  {_schedule_line(r.schedule)}")
        if r.last_error:
            click.echo(f"  last error: {r.last_error}")
        for item in r.rejected:
            where = f"{item['provider_id']} in {item['folder']}"
            click.echo(f"  rejected {where}: {item['reason']}")


def _schedule_line(schedule: Any) -> str:
    lag = schedule.lag_seconds
    parts = [f"lag {_duration(lag)}" if lag is not None else "lag unknown (no cycle)"]
    if schedule.newest_item_at is not None:
        parts.append(f"newest e-mail {schedule.newest_item_at:%Y-%m-%d %H:%M:%S}")
    if schedule.next_cycle_at is not None:
        parts.append(f"next cycle {schedule.next_cycle_at:%Y-%m-%d %H:%M:%S}")
    else:
        parts.append(f"next cycle: {schedule.next_cycle}")
    return "; ".join(parts)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


# --- reports ----------------------------------------------------------------


day_type = click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"])


def _utc(value: datetime | None) -> datetime | None:
    from datetime import UTC

    return value.replace(tzinfo=UTC) if value is not None else None


@cli.group()
def report() -> None:
    """Reports: how each item was filed, and activity per account and rep."""


@report.command("reconcile")
@click.option("--mailbox", "address", required=True, help="The mailbox's address.")
@click.option("--since", type=day_type, help="Only items from this day (UTC) on.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "csv"]),
    default="text",
    show_default=True,
    help="Output format.",
)
@pass_app
def report_reconcile(app: App, address: str, since: datetime | None, fmt: str) -> None:
    """Every item seen in a mailbox: linked, unlinked, excluded or rejected,
    with the rule or the reason."""
    from mailsync import reports

    with app.transaction() as session:
        rows = reports.reconcile(session, normalise(address) or address, _utc(since))
    if fmt == "json":
        emit_json(
            {
                "mailbox": address,
                "items": [r.as_json() for r in rows],
                "summary": reports.summarise(rows),
            }
        )
    elif fmt == "csv":
        click.echo(reports.reconcile_csv(rows), nl=False)
    else:
        for row in rows:
            removed = " (removed from the mailbox)" if row.removed else ""
            click.echo(_outcome_line(row) + removed)
        summary = reports.summarise(rows)
        click.echo(
            f"{address}: {summary['items']} items: {summary['linked']} linked, "
            f"{summary['unlinked']} unlinked, {summary['excluded']} excluded, "
            f"{summary['rejected']} rejected"
        )


@report.command("activity")
@click.option("--since", type=day_type, help="The period's first day (UTC).")
@click.option("--until", type=day_type, help="The day after the period (default: now).")
@click.option(
    "--dormant-days",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="List the accounts with no activity in the N days before --until.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "html"]),
    default="csv",
    show_default=True,
    help="CSV, or an HTML page with a chart.",
)
@click.option("--out", type=click.Path(dir_okay=False), help="Write to this file.")
@pass_app
def report_activity(
    app: App,
    since: datetime | None,
    until: datetime | None,
    dormant_days: int,
    fmt: str,
    out: str | None,
) -> None:
    """E-mails in and out, meetings and tasks per account and per rep, and
    the accounts gone quiet."""
    from mailsync import reports
    from mailsync.store.models import now

    end = _utc(until) or now()
    start = _utc(since)
    if start is not None and start >= end:
        raise UserError("--since must be before --until; swap the two dates")
    with app.transaction() as session:
        result = reports.activity_report(session, start, end, dormant_days)
    text = (
        reports.activity_html(result) if fmt == "html" else reports.activity_csv(result)
    )
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        Path(out).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write the report to {out}: {exc.strerror}") from None
    click.echo(f"report written to {out}")


# --- follow-ups --------------------------------------------------------------


@cli.group()
def reminders() -> None:
    """Follow-up reminders: what is pending and why, check-ins, a run now."""


@reminders.command("list")
@click.option("--all", "everything", is_flag=True, help="Delivered and cancelled too.")
@format_option
@pass_app
def reminders_list(app: App, everything: bool, fmt: str) -> None:
    """The reminders waiting, soonest first, with the rule and why; the check-ins."""
    from mailsync.reminders.views import listing

    with app.transaction() as session:
        found = listing(session, app.config, everything)
    if fmt == "json":
        emit_json(found.as_json())
        return
    click.echo(f"{len(found.reminders)} reminders (times in UTC)")
    for r in found.reminders:
        who = (r["contact"] or r["account"] or {}).get("name", "-")
        click.echo(
            f"{r['id']:>5}  {r['due'][:16].replace('T', ' ')}  {r['status']:10}  "
            f"{r['rule']:15}  {r['kind']:6}  {who}: {r['subject'][:60]}"
        )
        click.echo(f"       why: {r['why']}")
        if r["error"]:
            click.echo(f"       error: {r['error']}")
        if r["note"]:
            click.echo(f"       note: {r['note']}")
    if found.check_ins:
        click.echo(f"{len(found.check_ins)} check-ins")
    for c in found.check_ins:
        turn = (c["next"] or "-")[:16].replace("T", " ")
        click.echo(
            f"{c['id']:>5}  next {turn}  {c['contact']['name']}: {c['schedule']}"
        )


@reminders.command("add")
@click.option(
    "--contact", "contact_email", required=True, help="The contact's address."
)
@click.option(
    "--every",
    type=click.Choice(["day", "workday", "week", "month"]),
    help="How often: day, workday, week or month.",
)
@click.option("--on", "on", help="Weekdays (monday,thursday) or a day of the month.")
@click.option(
    "--at", "at", help="The time of day, HH:MM (default followups.remind_at)."
)
@click.option("--cron", help='A crontab expression instead, like "0 9 * * mon".')
@click.option("--rep", "rep", help="The rep's mailbox (needed with several).")
@click.option("--subject", default="", help="The reminder's subject.")
@pass_app
def reminders_add(
    app: App,
    contact_email: str,
    every: str | None,
    on: str | None,
    at: str | None,
    cron: str | None,
    rep: str | None,
    subject: str,
) -> None:
    """A recurring check-in with a contact, in the rep's time zone."""
    from mailsync.reminders import checkins
    from mailsync.reminders.views import add_check_in

    if bool(every) == bool(cron):
        raise UserError("give either --every (with --on, --at) or --cron")
    if cron:
        schedule = checkins.from_cron(cron)
    else:
        assert every is not None
        schedule = checkins.from_every(every, on, at or app.config.followups.remind_at)
    mailbox = _rep_mailbox(app.config, rep)
    with app.transaction() as session:
        row = add_check_in(
            session, app.config, contact_email, schedule, mailbox, subject
        )
        ident = row.id
    click.echo(f"check-in c{ident} added: {schedule.words} ({mailbox.address})")


@reminders.command("remove")
@click.argument("ident", metavar="ID")
@pass_app
def reminders_remove(app: App, ident: str) -> None:
    """Remove a pending reminder (ID) or a check-in (cID)."""
    from mailsync.reminders.views import remove

    with app.transaction() as session:
        message = remove(session, ident)
    click.echo(message)


@reminders.command("retry")
@click.argument("ident", metavar="ID")
@click.option(
    "--force",
    is_flag=True,
    help="Retry one that may be in the mailbox already (look there first).",
)
@pass_app
def reminders_retry(app: App, ident: str, force: bool) -> None:
    """Deliver a failed reminder again at the next run, once its cause is fixed."""
    from mailsync.reminders.views import retry

    with app.transaction() as session:
        message = retry(session, ident, force)
    click.echo(message)


@reminders.command("run")
@click.option(
    "--once",
    is_flag=True,
    default=True,
    help="Evaluate the rules and deliver what is due, now (the only mode here).",
)
@format_option
@pass_app
def reminders_run(app: App, once: bool, fmt: str) -> None:
    """Evaluate the follow-up rules and deliver the due reminders, once."""
    from dataclasses import asdict

    from mailsync.reminders.scheduler import run_once

    report = run_once(app.sessions(), app.config)
    if fmt == "json":
        emit_json(
            {
                "evaluation": asdict(report.evaluation),
                "check_ins": report.check_ins,
                "delivery": asdict(report.delivery),
            }
        )
    else:
        click.echo(report.evaluation.log_line())
        click.echo(f"check-in turns: {report.check_ins}")
        click.echo(report.delivery.log_line())
    if report.delivery.failed:
        sys.exit(1)


def _rep_mailbox(config: Config, rep: str | None) -> Any:
    if rep:
        return config.mailbox(rep)
    enabled = [m for m in config.mailboxes if m.enabled]
    if len(enabled) != 1:
        raise UserError("give --rep ADDRESS: the rep's mailbox the check-in is for")
    return enabled[0]


@cli.group()
def letters() -> None:
    """Follow-up letters (.docx templates)."""


@letters.command("render")
@click.argument("template")
@click.option(
    "--contact", "contact_email", required=True, help="The contact's address."
)
@click.option("--activity", "activity_id", type=int, help="The triggering activity.")
@click.option("--rep", "rep", help="The rep's mailbox (default: the only one).")
@click.option(
    "--out", "out", type=click.Path(dir_okay=False), help="The .docx to write."
)
@pass_app
def letters_render(
    app: App,
    template: str,
    contact_email: str,
    activity_id: int | None,
    rep: str | None,
    out: str | None,
) -> None:
    """Fill TEMPLATE (a name in followups.templates, or a .docx) for a contact."""
    from mailsync.reminders import letters as letter_module
    from mailsync.reminders.deliver import merge_data
    from mailsync.store.models import Account, Contact
    from mailsync.store.models import now as utc_now

    mailbox = _rep_mailbox(app.config, rep)
    path = letter_module.find_template(app.config.followups.templates, template)
    with app.transaction() as session:
        _kind, contact_id, _name = _target(session, contact_email, None)
        contact = session.get(Contact, contact_id)
        assert contact is not None
        account = (
            session.get(Account, contact.account_id) if contact.account_id else None
        )
        trigger = _trigger(session, contact_id, activity_id)
        address = normalise(contact_email) or contact_email
        data = merge_data(
            app.config, mailbox, contact, address, account, trigger, utc_now()
        )
        content = letter_module.render(path, data.fields())
    target = Path(out) if out else Path(f"{path.stem} - {contact.name}.docx")
    target.write_bytes(content)
    click.echo(f"wrote {target}")


def _trigger(session: Session, contact_id: int, activity_id: int | None) -> Any:
    """The activity a letter is about: the one given, else the contact's latest."""
    from mailsync.store.models import Link

    if activity_id is not None:
        found = session.get(Activity, activity_id)
        if found is None:
            raise UserError(f"no activity {activity_id}; see `history --format json`")
        return found
    return session.scalar(
        select(Activity)
        .join(Link, Link.activity_id == Activity.id)
        .where(
            Link.target_kind == "contact",
            Link.target_id == contact_id,
            Link.suppressed.is_(False),
            Activity.kind.in_(["message", "meeting"]),
        )
        .order_by(Activity.occurred_at.desc(), Activity.id.desc())
        .limit(1)
    )


@cli.group("calendar")
def calendar_group() -> None:
    """Calendars."""


@calendar_group.command("export")
@click.option("--rep", "rep", required=True, help="The rep's mailbox address.")
@click.option("--out", "out", type=click.Path(dir_okay=False), help="The .ics file.")
@pass_app
def calendar_export(app: App, rep: str, out: str | None) -> None:
    """An .ics feed of the rep's pending reminders (to stdout, or --out)."""
    from mailsync.reminders.views import feed

    with app.transaction() as session:
        data = feed(session, app.config, rep)
    if out:
        Path(out).write_bytes(data)
        click.echo(f"wrote {out}")
    else:
        click.echo(data.decode("utf-8"), nl=False)


def main() -> None:
    cli()
