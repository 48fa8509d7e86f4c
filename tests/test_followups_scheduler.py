"""The scheduler: a real APScheduler 3 with its SQLAlchemy job store in the
same database (SQLite and PostgreSQL), stopped and started again while time
is shifted with time-machine, as a service that goes down and comes back.

APScheduler's rules, from its documentation: a job whose run time passed
while the scheduler was down runs when it starts if it is still within its
misfire grace time; with ``coalesce`` the run times it missed are rolled
into one run; past the grace time, the run is missed and the job waits for
its next run time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from sqlalchemy import select, text

from mailsync.reminders.scheduler import JOB_TABLE, start_scheduler
from mailsync.store.models import Reminder
from tests.test_followups import DEADLINE, SENT, World, add_check_in, send_quote


@pytest.fixture
def world(factory, store_url, tmp_path) -> Iterator[World]:
    yield World(factory, store_url, tmp_path)


def wait_for(what: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll until ``what()`` is true (the scheduler works in its thread)."""
    stop = time.monotonic() + timeout
    while time.monotonic() < stop:
        found = what()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("the scheduler did not get there in time")


def stored_jobs(world: World) -> dict[str, datetime | None]:
    """The jobs in the job store's table, with their next run times."""
    with world.factory() as session:
        rows = session.execute(text(f"SELECT id, next_run_time FROM {JOB_TABLE}")).all()
    return {
        job_id: datetime.fromtimestamp(stamp, UTC) if stamp is not None else None
        for job_id, stamp in rows
    }


def statuses(world: World) -> list[tuple[str, str]]:
    with world.factory() as session:
        rows = session.execute(
            select(Reminder.rule, Reminder.status).order_by(Reminder.id)
        ).all()
    return [(rule, status) for rule, status in rows]


def test_a_restart_in_the_middle_of_a_pending_reminder_delivers_it_once(world):
    send_quote(world)
    with time_machine.travel(SENT + timedelta(hours=1), tick=True):
        world.sync()
        scheduler = start_scheduler(world.factory, world.config)
        try:
            wait_for(lambda: statuses(world) == [("no_reply", "pending")])
            [reminder] = world.reminders()
            wait_for(lambda: f"reminder:{reminder.id}" in stored_jobs(world))
        finally:
            scheduler.shutdown()
    # Down: the job is in the database, due at the deadline.
    assert stored_jobs(world)[f"reminder:{reminder.id}"] == DEADLINE
    assert world.tasks() == []

    # Back two hours after the deadline: the job runs once.
    with time_machine.travel(DEADLINE + timedelta(hours=2), tick=True):
        scheduler = start_scheduler(world.factory, world.config)
        try:
            wait_for(lambda: statuses(world) == [("no_reply", "delivered")])
            wait_for(lambda: f"reminder:{reminder.id}" not in stored_jobs(world))
        finally:
            scheduler.shutdown()
        scheduler = start_scheduler(world.factory, world.config)
        try:
            wait_for(lambda: "followups:evaluate" in stored_jobs(world))
            time.sleep(1.0)
        finally:
            scheduler.shutdown()
    assert len(world.tasks()) == 1
    assert len(world.activities("task")) == 1


def test_a_check_in_missed_while_down_runs_once_within_the_grace_time(world):
    world.configure(zone="America/Chicago", misfire_grace_minutes=60)
    with time_machine.travel(datetime(2026, 3, 4, 12, 0, tzinfo=UTC), tick=True):
        check_in = add_check_in(world, every="week", on="monday")
        scheduler = start_scheduler(world.factory, world.config)
        try:
            job = f"check_in:{check_in}"
            # Monday 9 March 09:00 CDT.
            first = datetime(2026, 3, 9, 14, 0, tzinfo=UTC)
            wait_for(lambda: stored_jobs(world).get(job) == first)
        finally:
            scheduler.shutdown()

    # Down for three turns (9, 16 and 23 March); back at 09:30 on the 23rd.
    with time_machine.travel(datetime(2026, 3, 23, 14, 30, tzinfo=UTC), tick=True):
        scheduler = start_scheduler(world.factory, world.config)
        try:
            wait_for(lambda: statuses(world) == [("check_in", "delivered")])
            following = datetime(2026, 3, 30, 14, 0, tzinfo=UTC)
            wait_for(lambda: stored_jobs(world).get(job) == following)
        finally:
            scheduler.shutdown()
    [turn] = world.reminders()
    assert turn.due_at == datetime(2026, 3, 23, 14, 0, tzinfo=UTC)
    assert len(world.tasks()) == 1


def test_a_check_in_missed_beyond_the_grace_time_waits_for_its_next_turn(world):
    world.configure(zone="America/Chicago", misfire_grace_minutes=60)
    with time_machine.travel(datetime(2026, 3, 4, 12, 0, tzinfo=UTC), tick=True):
        check_in = add_check_in(world, every="week", on="monday")
        scheduler = start_scheduler(world.factory, world.config)
        job = f"check_in:{check_in}"
        try:
            wait_for(lambda: job in stored_jobs(world))
        finally:
            scheduler.shutdown()

    # Back on Monday 16 March at 11:30 CDT: two and a half hours late.
    with time_machine.travel(datetime(2026, 3, 16, 16, 30, tzinfo=UTC), tick=True):
        scheduler = start_scheduler(world.factory, world.config)
        try:
            nxt = datetime(2026, 3, 23, 14, 0, tzinfo=UTC)
            wait_for(lambda: stored_jobs(world).get(job) == nxt)
            time.sleep(0.5)
        finally:
            scheduler.shutdown()
    assert world.reminders() == []
    assert world.tasks() == []
