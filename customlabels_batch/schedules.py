"""EventBridge Scheduler expressions evaluated as the service does: when a schedule fires next, in its
time zone, daylight saving time included. The settings validate with it, the emulator fires its
schedules with it, and `status` shows the next scheduled run with it.

cron: EventBridge's six fields (minutes hours day-of-month month day-of-week year, with `?`, `L`, `W`
and `#`, days of the week 1-7 = SUN-SAT) are converted to croniter's five (0-6 = SUN-SAT) plus a
year filter; croniter walks wall-clock times in the schedule's zone. Scheduler documents what
happens at a daylight saving change: a time that does not exist that day (spring forward) is
skipped, and a time that happens twice (fall back) fires once. croniter on aware times would
instead shift the first and repeat the second, so this walks naive local times and applies
Scheduler's rule itself.

rate: a fixed period (`rate(1 day)` is 24 hours, also across a daylight saving change) from the
schedule's start; without a start date Scheduler invokes at once, then every period.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_CRON = re.compile(r"^cron\((.+)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
# How far ahead to look for a cron time that exists before calling the expression impossible.
_HORIZON_YEARS = 5


class ScheduleError(ValueError):
    """The expression is not one Scheduler (and this module) can evaluate; the message says why."""


def zone(name: str) -> ZoneInfo:
    """An IANA time zone, as Scheduler's ScheduleExpressionTimezone takes it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"{name!r} is not an IANA time zone name (like 'Europe/Berlin' or 'UTC')"
        ) from None


def rate_seconds(expression: str) -> int | None:
    """The period of a rate expression in seconds; None for cron."""
    match = _RATE.match(expression)
    if not match:
        return None
    value, unit = int(match[1]), match[2].rstrip("s")
    if value < 1:
        raise ScheduleError(f"schedule {expression!r}: the rate must be at least 1")
    if (value == 1) == match[2].endswith("s"):
        raise ScheduleError(f"schedule {expression!r}: write 'rate(1 hour)' or 'rate(2 hours)'")
    return value * _UNIT_SECONDS[unit]


@dataclass(frozen=True)
class Cron:
    """An EventBridge cron expression as croniter's five fields and a year filter."""

    expression: str
    five_fields: str
    years: frozenset[int] | None  # None: every year

    @classmethod
    def parse(cls, expression: str) -> Cron:
        match = _CRON.match(expression)
        if not match:
            raise ScheduleError(f"schedule {expression!r} must be rate(...) or cron(...)")
        fields = match[1].split()
        if len(fields) != 6:
            raise ScheduleError(
                f"schedule {expression!r}: EventBridge cron has six fields (minutes hours day-of-month "
                "month day-of-week year), e.g. cron(0 2 * * ? *)"
            )
        minutes, hours, dom, month, dow, year = fields
        if (dom == "?") == (dow == "?"):
            raise ScheduleError(
                f"schedule {expression!r}: exactly one of day-of-month and day-of-week must be '?'"
            )
        five = " ".join(
            [
                minutes,
                hours,
                "*" if dom == "?" else dom,
                month,
                "*" if dow == "?" else _weekdays(dow, expression),
            ]
        )
        if not croniter.is_valid(five):
            raise ScheduleError(
                f"schedule {expression!r}: a field is not valid cron (or uses LW, not supported)"
            )
        cron = cls(expression, five, _years(year, expression))
        cron.next_after(datetime(2026, 1, 1, tzinfo=UTC), zone("UTC"))  # an impossible date raises
        return cron

    def next_after(self, moment: datetime, tz: ZoneInfo) -> datetime:
        """The first time after `moment` (aware) this expression fires in zone `tz`, in UTC."""
        local = moment.astimezone(tz).replace(tzinfo=None)
        walker = croniter(self.five_fields, local)
        limit = local.year + _HORIZON_YEARS
        while True:
            try:
                candidate: datetime = walker.get_next(datetime)
            except CroniterError:
                raise ScheduleError(f"schedule {self.expression!r} never fires") from None
            if candidate.year > limit:
                raise ScheduleError(f"schedule {self.expression!r} never fires")
            if self.years is not None and candidate.year not in self.years:
                continue
            first = candidate.replace(tzinfo=tz, fold=0)
            if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != candidate:
                continue  # does not exist that day (spring forward): Scheduler skips it
            at = first.astimezone(UTC)  # fold=0: a repeated time (fall back) fires once, the first time
            if at > moment.astimezone(UTC):
                return at


def _weekdays(field: str, expression: str) -> str:
    """EventBridge numbers SUN-SAT 1-7, croniter 0-6; `6L` (last Friday) is croniter's `L5`."""

    def shift(number: str) -> str:
        value = int(number)
        if not 1 <= value <= 7:
            raise ScheduleError(f"schedule {expression!r}: days of the week are 1-7 (SUN-SAT) or SUN-SAT")
        return str(value - 1)

    last = re.fullmatch(r"(\d)L", field)
    if last:
        return f"L{shift(last[1])}"
    if "L" in field:  # no day name has an L
        raise ScheduleError(f"schedule {expression!r}: write the last weekday of the month as 1L-7L")
    nth = re.fullmatch(r"(\d)#(\d)", field)
    if nth:
        return f"{shift(nth[1])}#{nth[2]}"
    # Numbers stand alone or in ranges and lists; a step after '/' is a count, not a day.
    return re.sub(r"(?<![/\d])(\d+)", lambda m: shift(m[1]), field)


def _years(field: str, expression: str) -> frozenset[int] | None:
    if field in ("*", "?"):
        return None
    years: set[int] = set()
    for part in field.split(","):
        match = re.fullmatch(r"(\d{4})(?:-(\d{4}))?(?:/(\d+))?|\*/(\d+)", part)
        if not match:
            raise ScheduleError(f"schedule {expression!r}: the year field must be years 1970-2199")
        if match[4]:
            start, end, step = 1970, 2199, int(match[4])
        else:
            start = int(match[1])
            end = int(match[2]) if match[2] else (2199 if match[3] else start)
            step = int(match[3]) if match[3] else 1
        if not 1970 <= start <= end <= 2199 or step < 1:
            raise ScheduleError(f"schedule {expression!r}: the year field must be years 1970-2199")
        years.update(range(start, end + 1, step))
    return frozenset(years)


def validate(expression: str, timezone: str) -> None:
    """Raise ScheduleError unless Scheduler (and this module) can evaluate the expression in the zone."""
    zone(timezone)
    if rate_seconds(expression) is None:
        Cron.parse(expression)


def next_run(expression: str, timezone: str, after: datetime, *, start: datetime | None = None) -> datetime:
    """When the schedule fires next after `after` (aware), in UTC. A rate schedule counts its periods
    from `start` (the schedule's start date, else when it was created); without one, `after` plus a
    period."""
    period = rate_seconds(expression)
    if period is not None:
        if start is None or start > after:
            return (start or after + timedelta(seconds=period)).astimezone(UTC)
        elapsed = (after - start).total_seconds()
        return (start + timedelta(seconds=period * (int(elapsed // period) + 1))).astimezone(UTC)
    return Cron.parse(expression).next_after(after, zone(timezone))
