"""EventBridge Scheduler on the emulated clock: the stack's batch schedule (rate, or cron in its time zone
with Scheduler's daylight-saving rule, customlabels_batch/schedules.py) and, with a latency budget, the
frequent check schedule, each firing the input the stack gives its target.

Scheduler documents 60-second precision and, with a flexible window, any moment inside the window; the
emulator fires at the latest moment the window allows (the worst case for waiting images) plus
`delay_seconds` (an option, 0 by default: AWS gives no figure inside the minute).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from customlabels_batch import schedules
from customlabels_batch.settings import Settings

from .clock import VirtualClock

SCHEDULE_INPUT = {"trigger": "schedule"}
CHECK_INPUT = {"trigger": "check"}


@dataclass
class _Schedule:
    name: str
    expression: str
    timezone: str
    payload: dict
    window_seconds: float
    next_at: float = math.inf  # emulated seconds of the next invocation


class EmulatedScheduler:
    """Which schedules are due: `due(now)` returns their inputs (and plans the next invocation)."""

    def __init__(self, config: Settings, clock: VirtualClock, *, delay_seconds: float = 0.0):
        self.clock = clock
        self.delay_seconds = delay_seconds
        self.paused = not config.schedule_enabled
        self.schedules: list[_Schedule] = [
            _Schedule(
                "batch",
                config.schedule,
                config.schedule_timezone,
                SCHEDULE_INPUT,
                60.0 * (config.schedule_flexible_window_minutes or 0),
            )
        ]
        if config.latency_budget:
            minutes = config.latency_check_minutes
            expression = f"rate({minutes} minute{'s' if minutes > 1 else ''})"
            self.schedules.append(_Schedule("check", expression, "UTC", CHECK_INPUT, 0.0))
        # Created now: a rate schedule without a start date invokes at once, then every period.
        self.created_at = clock.now()
        for schedule in self.schedules:
            schedule.next_at = self._first(schedule)

    def _first(self, schedule: _Schedule) -> float:
        if schedules.rate_seconds(schedule.expression) is not None:
            return self.created_at + self.delay_seconds
        return self._after(schedule, self.created_at)

    def _after(self, schedule: _Schedule, moment: float) -> float:
        """The invocation after the nominal time `moment` (emulated seconds)."""
        period = schedules.rate_seconds(schedule.expression)
        if period is not None:
            nominal = moment + period
        else:
            at = schedules.next_run(
                schedule.expression, schedule.timezone, self.clock.epoch + timedelta(seconds=moment)
            )
            nominal = (at - self.clock.epoch).total_seconds()
        return nominal + schedule.window_seconds + self.delay_seconds

    def due(self, now: float) -> list[dict]:
        """Inputs of the invocations due by `now`, in time order; each schedule plans its next one."""
        fired: list[tuple[float, dict]] = []
        for schedule in self.schedules:
            while schedule.next_at <= now:
                fired.append((schedule.next_at, schedule.payload))
                nominal = schedule.next_at - schedule.window_seconds - self.delay_seconds
                schedule.next_at = self._after(schedule, nominal)
        if self.paused:
            return []
        return [payload for _, payload in sorted(fired, key=lambda item: item[0])]

    def next_at(self, name: str = "batch") -> float:
        return next(s.next_at for s in self.schedules if s.name == name)

    def next_due(self) -> float:
        """When the next invocation of any schedule is due (paused: never)."""
        return math.inf if self.paused else min(s.next_at for s in self.schedules)
