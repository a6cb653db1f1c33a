"""EventBridge Scheduler expressions evaluated as the service documents: six-field cron with its own
day numbering, time zones, daylight saving time (skipped and repeated local times), rate periods."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from customlabels_batch.schedules import Cron, ScheduleError, next_run, validate, zone

BERLIN = "Europe/Berlin"


def _runs(expression: str, timezone: str, after: datetime, count: int) -> list[str]:
    out = []
    for _ in range(count):
        after = next_run(expression, timezone, after)
        out.append(after.astimezone(zone(timezone)).isoformat())
    return out


def test_a_nightly_run_at_two_local_time_follows_daylight_saving_and_skips_the_missing_hour():
    # 2026-03-29: Berlin's clocks jump from 02:00 to 03:00, so 02:00 does not exist that day.
    assert _runs("cron(0 2 * * ? *)", BERLIN, datetime(2026, 3, 27, 12, tzinfo=UTC), 3) == [
        "2026-03-28T02:00:00+01:00",
        "2026-03-30T02:00:00+02:00",
        "2026-03-31T02:00:00+02:00",
    ]


def test_a_local_time_that_happens_twice_in_autumn_fires_once():
    # 2026-10-25: Berlin's 02:00-03:00 happens twice; Scheduler runs once, at the first.
    assert _runs("cron(30 2 * * ? *)", BERLIN, datetime(2026, 10, 24, 12, tzinfo=UTC), 2) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]


def test_utc_is_the_default_zone_and_times_come_back_in_utc():
    at = next_run("cron(0 2 * * ? *)", "UTC", datetime(2026, 6, 1, 3, tzinfo=UTC))
    assert at == datetime(2026, 6, 2, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "five", "first"),
    [
        # EventBridge counts SUN-SAT as 1-7; 2-6 is MON-FRI (croniter: 1-5).
        ("cron(0 9 ? * 2-6 *)", "0 9 * * 1-5", "2026-12-07T09:00:00+00:00"),  # 2026-12-05 is a Saturday
        ("cron(0 9 ? * MON-FRI *)", "0 9 * * MON-FRI", "2026-12-07T09:00:00+00:00"),
        ("cron(0 9 ? * 1 *)", "0 9 * * 0", "2026-12-06T09:00:00+00:00"),  # 1 = Sunday
        ("cron(0 9 ? * 6L *)", "0 9 * * L5", "2026-12-25T09:00:00+00:00"),  # the last Friday
        ("cron(0 9 ? * 2#1 *)", "0 9 * * 1#1", "2026-12-07T09:00:00+00:00"),  # the first Monday
        ("cron(0/15 * * * ? *)", "0/15 * * * *", "2026-12-05T12:15:00+00:00"),
        ("cron(0 0 L * ? *)", "0 0 L * *", "2026-12-31T00:00:00+00:00"),
        ("cron(0 0 1 1 ? 2028)", "0 0 1 1 *", "2028-01-01T00:00:00+00:00"),  # the year field
    ],
)
def test_eventbridge_cron_converts_to_five_fields_and_a_year(expression, five, first):
    assert Cron.parse(expression).five_fields == five
    assert next_run(expression, "UTC", datetime(2026, 12, 5, 12, 5, tzinfo=UTC)).isoformat() == first


def test_a_rate_counts_periods_from_the_start_a_day_is_24_hours_across_daylight_saving():
    start = datetime(2026, 3, 28, 12, tzinfo=UTC)
    assert next_run("rate(1 day)", BERLIN, datetime(2026, 3, 29, 13, tzinfo=UTC), start=start) == datetime(
        2026, 3, 30, 12, tzinfo=UTC
    )
    assert next_run(
        "rate(15 minutes)",
        "UTC",
        datetime(2026, 1, 1, 0, 20, tzinfo=UTC),
        start=datetime(2026, 1, 1, tzinfo=UTC),
    ) == datetime(2026, 1, 1, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "timezone", "message"),
    [
        ("cron(0 2 LW * ? *)", "UTC", "LW, not supported"),
        ("cron(0 2 * * ? 1969)", "UTC", "years 1970-2199"),
        ("rate(0 minutes)", "UTC", "at least 1"),
        ("rate(1 hour)", "Nowhere/Town", "not an IANA time zone"),
        ("every day", "UTC", "must be rate(...) or cron(...)"),
    ],
)
def test_what_cannot_be_evaluated_is_refused(expression, timezone, message):
    with pytest.raises(ScheduleError, match=re.escape(message)):
        validate(expression, timezone)
