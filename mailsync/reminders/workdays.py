"""Business days in a rep's time zone: working weekdays less holidays.

Counting is done on the rep's calendar, not in UTC: "three business days
after Friday 15:00" is Wednesday 15:00 on the rep's wall clock, whatever
change to or from summer time lies between. A wall time that does not exist
that day (skipped by a change to summer time) is read with the offset before
the change, which puts it an hour later on the clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from mailsync.config import WEEKDAYS


@dataclass(frozen=True)
class WorkCalendar:
    zone: ZoneInfo
    holidays: frozenset[date] = frozenset()
    workdays: frozenset[int] = field(default_factory=lambda: frozenset(range(5)))

    @classmethod
    def of(
        cls, zone: ZoneInfo, holidays: Iterable[date], workdays: Iterable[str]
    ) -> WorkCalendar:
        return cls(
            zone, frozenset(holidays), frozenset(WEEKDAYS.index(d) for d in workdays)
        )

    def is_workday(self, day: date) -> bool:
        return day.weekday() in self.workdays and day not in self.holidays

    def local(self, instant: datetime) -> datetime:
        return instant.astimezone(self.zone)

    def instant(self, day: date, at: time) -> datetime:
        """The UTC instant of a wall time on a day in this zone."""
        return datetime.combine(day, at, tzinfo=self.zone).astimezone(UTC)

    def add_workdays(self, start: datetime, count: int) -> datetime:
        """``count`` business days after ``start``, at the same wall time."""
        local = self.local(start)
        day = local.date()
        counted = 0
        while counted < count:
            day += timedelta(days=1)
            if self.is_workday(day):
                counted += 1
        return self.instant(day, local.time().replace(tzinfo=None))

    def add_days(self, start: datetime, count: int) -> datetime:
        """``count`` calendar days after ``start``, at the same wall time."""
        local = self.local(start)
        day = local.date() + timedelta(days=count)
        return self.instant(day, local.time().replace(tzinfo=None))

    def next_workday_from(self, instant: datetime) -> datetime:
        """``instant``, or the same wall time on the next business day."""
        local = self.local(instant)
        day = local.date()
        while not self.is_workday(day):
            day += timedelta(days=1)
        if day == local.date():
            return instant
        return self.instant(day, local.time().replace(tzinfo=None))
