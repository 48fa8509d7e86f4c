"""Check-ins: recurring reminders for a contact, and their schedules.

A schedule is kept as a standard five-field crontab expression (minute,
hour, day of month, month, day of week, where 0 and 7 are Sunday) in the
rep's time zone. ``--every week --on monday`` becomes ``0 9 * * mon``.
APScheduler 3 numbers weekdays from Monday; the numbers of a crontab are
turned into names before it sees them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from apscheduler.triggers.cron import CronTrigger

from mailsync.errors import UserError

EVERY = ("day", "workday", "week", "month")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_WEEKDAY = {
    name: short
    for short, name in zip(
        ("mon", "tue", "wed", "thu", "fri", "sat", "sun"),
        ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
        strict=True,
    )
}


@dataclass(frozen=True)
class Schedule:
    cron: str
    words: str


def from_every(every: str, on: str | None, at: str) -> Schedule:
    """A schedule from ``--every``, ``--on`` and ``--at``."""
    hour, minute = _time(at)
    if every in ("day", "workday"):
        if on:
            raise UserError(f"--every {every} takes no --on; leave it out")
        days = "mon-fri" if every == "workday" else "*"
        word = "working day" if every == "workday" else "day"
        return Schedule(f"{minute} {hour} * * {days}", f"every {word} at {at}")
    if every == "week":
        names = [d.strip().lower() for d in (on or "monday").split(",") if d.strip()]
        short = [
            _WEEKDAY.get(n) or (n if n in _WEEKDAY.values() else None) for n in names
        ]
        if not short or None in short:
            raise UserError(
                f"--on {on!r}: give weekdays, like --on monday or --on monday,thursday"
            )
        words = ", ".join(n.capitalize() for n in names)
        return Schedule(
            f"{minute} {hour} * * {','.join(s or '' for s in short)}",
            f"every week on {words} at {at}",
        )
    if every == "month":
        day = (on or "1").strip()
        if not day.isdigit() or not 1 <= int(day) <= 28:
            raise UserError(
                f"--on {on!r}: give the day of the month, 1 to 28, like --on 15"
            )
        return Schedule(
            f"{minute} {hour} {int(day)} * *", f"every month on day {day} at {at}"
        )
    raise UserError(f"--every {every!r}: use one of {', '.join(EVERY)}")


def from_cron(expression: str) -> Schedule:
    """A schedule from a crontab expression, checked."""
    fields = expression.split()
    if len(fields) != 5:
        raise UserError(
            f"--cron {expression!r}: a crontab expression has five fields "
            '(minute hour day month weekday), like "0 9 * * mon"'
        )
    cron = " ".join(fields[:4] + [_weekday_names(fields[4], expression)])
    try:
        trigger(cron, None)
    except ValueError as exc:
        raise UserError(f"--cron {expression!r}: {exc}") from None
    return Schedule(cron, f"cron {' '.join(fields)}")


def _weekday_names(text: str, expression: str) -> str:
    """The weekday field with crontab numbers (0 or 7 Sunday) as names."""

    def name(match: re.Match[str]) -> str:
        number = int(match.group(0))
        if number > 7:
            raise UserError(f"--cron {expression!r}: weekday {number} is not 0-7")
        return _DAY_NAMES[number % 7]

    # Step values (*/2) keep their number: only days are turned into names.
    return re.sub(r"(?<![/\d])\d+", name, text)


def _time(at: str) -> tuple[int, int]:
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", at.strip())
    if match is None:
        raise UserError(f"--at {at!r}: give a time as HH:MM, like 09:00")
    return int(match.group(1)), int(match.group(2))


def trigger(cron: str, zone: tzinfo | None) -> CronTrigger:
    return CronTrigger.from_crontab(cron, timezone=zone)


def next_turn(cron: str, zone: tzinfo, after: datetime) -> datetime | None:
    """The first turn of the schedule after ``after``."""
    return trigger(cron, zone).get_next_fire_time(None, after + timedelta(seconds=1))


def last_turn(
    cron: str, zone: tzinfo, now: datetime, within: timedelta
) -> datetime | None:
    """The latest turn in ``(now - within, now]``: the one a run now stands
    for, however many passed while nothing ran."""
    schedule = trigger(cron, zone)
    found = None
    turn = schedule.get_next_fire_time(None, now - within)
    while turn is not None and turn <= now:
        found = turn
        turn = schedule.get_next_fire_time(turn, turn + timedelta(seconds=1))
    return found


def check_in_key(check_in_id: int, turn: datetime) -> str:
    return f"check_in:{check_in_id}:{turn.astimezone(UTC):%Y%m%dT%H%M%SZ}"
