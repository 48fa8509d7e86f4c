"""The scheduler: APScheduler 3, its jobs kept in the same database.

Jobs, in the SQLAlchemy job store (table ``apscheduler_jobs``):

- ``followups:evaluate``, every ``followups.evaluate_every_minutes``: the
  rules over the history (:func:`~.evaluate.evaluate`), then every due
  reminder delivered (a sweep: nothing falls through), then the jobs below
  brought in line with the reminders;
- ``reminder:<id>``, one a pending reminder, at its due time: delivers it.
  Its misfire grace time is unlimited: a reminder due while the service was
  down is delivered when it is back, late rather than never;
- ``check_in:<id>``, one a check-in, on its crontab schedule in the rep's
  zone, with ``coalesce`` and ``followups.misfire_grace_minutes``: a turn
  missed while the service was down runs once if the service is back within
  the grace time, never once per missed turn; later, the turn is missed and
  the next one comes on schedule.

Jobs survive restarts: :func:`start_scheduler` starts paused, keeps the
stored jobs whose schedule is unchanged (so that a missed turn is still
seen as missed), replaces the others, and resumes. A job's own identity is
its reminder's key: running one twice delivers nothing twice.

:func:`run_once` does what the jobs do, now, for ``mailsync reminders run
--once``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mailsync.config import Config
from mailsync.connectors import open_connector
from mailsync.reminders import checkins
from mailsync.reminders.deliver import DeliveryReport, Opener, deliver_due
from mailsync.reminders.evaluate import EvaluationReport, evaluate
from mailsync.reminders.rules import Kind, Rule, Status
from mailsync.store.db import transaction
from mailsync.store.models import (
    CheckIn,
    Contact,
    Mailbox,
    Reminder,
)
from mailsync.store.models import (
    now as utc_now,
)

log = logging.getLogger(__name__)

JOB_TABLE = "apscheduler_jobs"
EVALUATE = "followups:evaluate"
_JOB = "mailsync.reminders.scheduler:run_job"


@dataclass
class Runtime:
    """What the jobs work with; set by :func:`start_scheduler`."""

    factory: sessionmaker[Session]
    config: Config
    connectors: Opener
    scheduler: BackgroundScheduler | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_runtime: Runtime | None = None


@dataclass
class RunReport:
    evaluation: EvaluationReport
    check_ins: int
    delivery: DeliveryReport


# --- now -------------------------------------------------------------------


def run_once(
    factory: sessionmaker[Session],
    config: Config,
    now: datetime | None = None,
    connectors: Opener = open_connector,
) -> RunReport:
    """Evaluate the rules, take the check-ins' turns, deliver what is due."""
    now = now or utc_now()
    with transaction(factory) as session:
        evaluation = evaluate(session, config, now)
    turns = fire_check_ins(factory, config, now)
    delivery = deliver_due(factory, config, now, connectors)
    return RunReport(evaluation, turns, delivery)


def fire_check_ins(
    factory: sessionmaker[Session],
    config: Config,
    now: datetime,
    only: int | None = None,
) -> int:
    """A reminder for each check-in's latest turn within the grace time, if
    it has none yet; how many were made."""
    if not (config.followups.enabled and config.followups.check_in.enabled):
        return 0
    grace = timedelta(minutes=config.followups.misfire_grace_minutes)
    made = 0
    with transaction(factory) as session:
        query = (
            select(CheckIn, Mailbox.address, Contact.name, Contact.account_id)
            .join(Mailbox, Mailbox.id == CheckIn.mailbox_id)
            .join(Contact, Contact.id == CheckIn.contact_id)
        )
        if only is not None:
            query = query.where(CheckIn.id == only)
        for check_in, address, name, account_id in session.execute(query).all():
            made += _turn(
                session, config, check_in, address, name, account_id, now, grace
            )
    return made


def _turn(
    session: Session,
    config: Config,
    check_in: CheckIn,
    address: str,
    name: str,
    account_id: int | None,
    now: datetime,
    grace: timedelta,
) -> int:
    try:
        mailbox = config.mailbox(address)
    except Exception:  # the mailbox left the configuration: no more turns
        return 0
    zone = config.followups.zone_of(mailbox)
    turn = checkins.last_turn(check_in.cron, zone, now, grace)
    if turn is None or turn < check_in.created_at:
        return 0
    local = turn.astimezone(zone)
    row = Reminder(
        key=checkins.check_in_key(check_in.id, turn),
        rule=Rule.CHECK_IN.value,
        kind=Kind.TASK.value,
        status=Status.PENDING.value,
        mailbox_id=check_in.mailbox_id,
        contact_id=check_in.contact_id,
        account_id=account_id,
        check_in_id=check_in.id,
        due_at=turn.astimezone(UTC),
        subject=check_in.subject or f"Check in with {name}",
        reason=(
            f"check-in {check_in.id} with {name}, {check_in.schedule}: the turn "
            f"of {local:%Y-%m-%d %H:%M} ({local.tzname()})"
        ),
        attempts=0,
        created_at=now,
        updated_at=now,
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        return 0  # this turn has its reminder already
    return 1


# --- the scheduler ---------------------------------------------------------


def start_scheduler(
    factory: sessionmaker[Session],
    config: Config,
    connectors: Opener = open_connector,
) -> BackgroundScheduler:
    """A started BackgroundScheduler with the follow-up jobs; the service
    calls ``shutdown()`` on it when it stops."""
    global _runtime
    engine = factory.kw["bind"]
    grace = config.followups.misfire_grace_minutes * 60
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=engine, tablename=JOB_TABLE)},
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": grace,
        },
        timezone=UTC,
    )
    _runtime = Runtime(factory, config, connectors, scheduler)
    scheduler.start(paused=True)
    scheduler.add_job(
        _JOB,
        IntervalTrigger(minutes=config.followups.evaluate_every_minutes, timezone=UTC),
        args=["evaluate"],
        id=EVALUATE,
        name="evaluate the follow-up rules and deliver",
        replace_existing=True,
        next_run_time=datetime.now(UTC),
    )
    sync_jobs(scheduler, factory, config)
    scheduler.resume()
    log.info("follow-ups: scheduler started with %d jobs", len(scheduler.get_jobs()))
    return scheduler


def sync_jobs(
    scheduler: BackgroundScheduler, factory: sessionmaker[Session], config: Config
) -> None:
    """The jobs brought in line with the pending reminders and the check-ins.

    A stored job whose schedule is unchanged is kept as it is, with its
    next run time: a turn it missed while the service was down stays due.
    """
    jobs = {job.id: job for job in scheduler.get_jobs()}
    wanted = _wanted_jobs(factory, config)
    for job_id, (trigger, args, describe) in wanted.items():
        job = jobs.get(job_id)
        if (
            job is not None
            and repr(job.trigger) == repr(trigger)
            and job.args == tuple(args)
        ):
            continue
        scheduler.add_job(
            _JOB,
            trigger,
            args=args,
            id=job_id,
            name=describe,
            replace_existing=True,
            misfire_grace_time=None if args[0] == "reminder" else _grace(config),
        )
    for job_id in jobs:
        if job_id != EVALUATE and job_id not in wanted:
            scheduler.remove_job(job_id)


def _grace(config: Config) -> int:
    return config.followups.misfire_grace_minutes * 60


def _wanted_jobs(
    factory: sessionmaker[Session], config: Config
) -> dict[str, tuple[Any, list[Any], str]]:
    wanted: dict[str, tuple[Any, list[Any], str]] = {}
    with factory() as session:
        pending = session.execute(
            select(Reminder.id, Reminder.due_at, Reminder.key).where(
                Reminder.status == Status.PENDING.value,
                Reminder.rule != Rule.CHECK_IN.value,
            )
        ).all()
        for reminder_id, due_at, key in pending:
            wanted[f"reminder:{reminder_id}"] = (
                DateTrigger(run_date=due_at, timezone=UTC),
                ["reminder", reminder_id],
                f"deliver {key}",
            )
        if config.followups.enabled and config.followups.check_in.enabled:
            rows = session.execute(
                select(CheckIn.id, CheckIn.cron, Mailbox.address).join(
                    Mailbox, Mailbox.id == CheckIn.mailbox_id
                )
            ).all()
            for check_in_id, cron, address in rows:
                zone = _zone(config, address)
                if zone is None:
                    continue
                wanted[f"check_in:{check_in_id}"] = (
                    checkins.trigger(cron, zone),
                    ["check_in", check_in_id],
                    f"check-in {check_in_id}",
                )
    return wanted


def _zone(config: Config, address: str) -> Any:
    try:
        return config.followups.zone_of(config.mailbox(address))
    except Exception:  # the mailbox left the configuration
        return None


def run_job(kind: str, ident: int | None = None) -> None:
    """What every job calls (a textual reference, so that the job store
    keeps no more than the kind and the id)."""
    runtime = _runtime
    if runtime is None:
        log.warning("follow-ups: job %s ran with no scheduler started; skipped", kind)
        return
    now = datetime.now(UTC)
    with runtime.lock:
        try:
            _run(runtime, kind, ident, now)
        except Exception:
            log.exception("follow-ups: job %s %s failed", kind, ident or "")


def _run(runtime: Runtime, kind: str, ident: int | None, now: datetime) -> None:
    factory, config = runtime.factory, runtime.config
    if kind == "evaluate":
        with transaction(factory) as session:
            log.info(evaluate(session, config, now).log_line())
        deliver_due(factory, config, now, runtime.connectors)
    elif kind == "check_in" and ident is not None:
        fire_check_ins(factory, config, now, only=ident)
        with factory() as session:
            ids = list(
                session.scalars(
                    select(Reminder.id).where(
                        Reminder.check_in_id == ident,
                        Reminder.status == Status.PENDING.value,
                    )
                )
            )
        deliver_due(factory, config, now, runtime.connectors, only=ids)
    elif kind == "reminder" and ident is not None:
        deliver_due(factory, config, now, runtime.connectors, only=[ident])
    if runtime.scheduler is not None and runtime.scheduler.running:
        sync_jobs(runtime.scheduler, factory, config)
