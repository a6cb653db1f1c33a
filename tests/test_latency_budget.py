"""The schedules on the emulator's clock and the latency budget end to end: the real ASL, the real
triage (which starts the wait clock) and processor, EventBridge Scheduler emulated in its time zone.

A latency check starts a run early when a rule holds, costs a few state transitions when none does,
and never makes two runs at once, also when it fires at the same moment as the schedule."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from customlabels_batch.emulator.clock import VirtualClock
from customlabels_batch.emulator.custom_labels import ModelBehaviour
from customlabels_batch.emulator.pipeline import EmulatedPipeline, EmulationOptions, Upload, emulated_config
from customlabels_batch.emulator.scheduler import EmulatedScheduler
from tests.test_emulated_pipeline import _assert_safe_end, _jpeg

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
START_SECONDS = 300  # the emulated model's start latency in these tests


def _run_for(seconds: float, overrides: dict, arrivals: list[tuple[float, Upload]]) -> dict:
    config = emulated_config(overrides)
    options = EmulationOptions(
        behaviour=ModelBehaviour(start_seconds=START_SECONDS), processor_log=io.StringIO()
    )
    with EmulatedPipeline(config, options) as pipeline:
        report = pipeline.run_for(seconds, arrivals=arrivals)
        report["_results"] = {
            key: json.loads(body) for key, body in pipeline.objects(config.results_prefix).items()
        }
        report["_clock"] = pipeline.run_state_item("wait-clock")
    return report


def _images(count: int, at: float) -> list[tuple[float, Upload]]:
    return [(at, Upload(f"cam/{i:03d}.jpg", _jpeg(i))) for i in range(count)]


def _by_trigger(report: dict, trigger: str) -> list[dict]:
    return [e for e in report["executions"] if e["input"].get("trigger") == trigger]


def _ran_the_model(execution: dict) -> bool:
    return "StartModel" in execution["statePath"]


def test_a_check_starts_a_run_once_the_oldest_image_has_waited_max_wait_minutes():
    # The schedule alone would start the next run 4 hours from now.
    report = _run_for(3600, {"schedule": "rate(4 hours)", "maxWaitMinutes": "15"}, _images(3, at=60.0))
    _assert_safe_end(report)
    assert report["imagesByOutcome"] == {"result": 3}
    checks = _by_trigger(report, "check")
    # Every 5 minutes from the start; the images waited 4, 9 and 14 minutes at the first three.
    assert [c["startedAtSeconds"] for c in checks[:5]] == [0.0, 300.0, 600.0, 900.0, 1200.0]
    early = [c for c in checks if _ran_the_model(c)]
    assert [c["startedAtSeconds"] for c in early] == [1200.0]
    # A check that finds no rule met is a few transitions: count, decide, read the clock, decide, end.
    idle = [c for c in checks if not _ran_the_model(c) and "AnotherRunIsActive" not in c["statePath"]]
    assert idle and max(c["stateTransitions"] for c in idle) <= 6
    for check in idle:
        assert check["statePath"][-1] == "CheckFoundNothingToDo"
        assert check["status"] == "SUCCEEDED"
    # The scheduled run at 0 found nothing; no other run started the model.
    assert report["model"]["calls"]["StartProjectVersion"] == 1
    (record,) = [r["record"] for r in report["runRecords"]]
    assert (record["trigger"], record["outcome"]) == ("check", "SUCCEEDED")
    # The drain cleared the clock: a later upload starts it afresh.
    assert "firstQueuedAt" not in report["_clock"]


def test_a_check_starts_a_run_as_soon_as_start_at_backlog_images_are_queued():
    report = _run_for(
        1800,
        {"schedule": "rate(4 hours)", "startAtBacklog": "10"},
        [*_images(9, 30.0), (400.0, Upload("late.jpg", _jpeg(99)))],
    )
    _assert_safe_end(report)
    assert report["imagesByOutcome"] == {"result": 10}
    started = [c["startedAtSeconds"] for c in _by_trigger(report, "check") if _ran_the_model(c)]
    # Nine queued at 300 s is under the backlog; the tenth arrives at 400 s; the check at 600 s starts.
    assert started == [600.0]


def test_the_lease_holds_when_a_check_fires_with_the_schedule():
    """At 900 s the 15-minute schedule and the 5-minute check fire together and both find images that
    have waited over maxWaitMinutes: one run takes the lease, the other ends at once, one model start."""
    report = _run_for(
        1800,
        {"schedule": "rate(15 minutes)", "maxWaitMinutes": "10"},
        _images(4, at=60.0),
    )
    _assert_safe_end(report)
    assert report["imagesByOutcome"] == {"result": 4}
    at_900 = [e for e in report["executions"] if e["startedAtSeconds"] == 900.0]
    assert sorted(e["input"]["trigger"] for e in at_900) == ["check", "schedule"]
    assert sum(_ran_the_model(e) for e in at_900) == 1
    (other,) = [e for e in at_900 if not _ran_the_model(e)]
    assert other["statePath"][-2:] == ["TakeLease", "AnotherRunIsActive"]
    assert report["model"]["calls"]["StartProjectVersion"] == 1
    assert len(report["runRecords"]) == 1


def test_without_a_latency_budget_only_the_schedule_starts_runs():
    report = _run_for(3600, {"schedule": "rate(30 minutes)"}, _images(2, at=60.0))
    _assert_safe_end(report)
    assert {e["input"]["trigger"] for e in report["executions"]} == {"schedule"}
    assert [e["startedAtSeconds"] for e in report["executions"]][:3] == [0.0, 1800.0, 3600.0]
    assert [r["record"]["trigger"] for r in report["runRecords"]] == ["schedule"]


def test_the_results_record_when_each_image_was_uploaded_and_labeled_on_the_emulated_clock():
    report = _run_for(1800, {"schedule": "rate(15 minutes)"}, _images(2, at=120.0))
    for result in report["_results"].values():
        uploaded = datetime.fromisoformat(result["source"]["uploadedAt"])
        labeled = datetime.fromisoformat(result["labeledAt"])
        # Uploaded at 120 s, labeled in the run at 900 s after the model's 300 s start.
        assert timedelta(minutes=15) < labeled - uploaded < timedelta(minutes=22)


# ---- the schedules' clock ------------------------------------------------------------------------
def _fire_times(overrides: dict, epoch: datetime, hours: float) -> list[str]:
    clock = VirtualClock(epoch=epoch)
    try:
        scheduler = EmulatedScheduler(emulated_config(overrides), clock)
        fired = []
        for minute in range(int(hours * 60) + 1):
            now = minute * 60.0
            for payload in scheduler.due(now):
                at = epoch + timedelta(seconds=now)
                fired.append(f"{payload['trigger']} {at.astimezone(UTC):%m-%d %H:%M}")
        return fired
    finally:
        clock.stop()


def test_a_nightly_cron_schedule_fires_at_two_berlin_time_through_the_spring_change():
    # 2026-03-29: 02:00 does not exist in Berlin; Scheduler skips that day's run.
    fired = _fire_times(
        {"schedule": "cron(0 2 * * ? *)", "scheduleTimezone": "Europe/Berlin"},
        datetime(2026, 3, 27, 12, tzinfo=UTC),
        4 * 24,
    )
    assert fired == ["schedule 03-28 01:00", "schedule 03-30 00:00", "schedule 03-31 00:00"]


def test_a_flexible_window_fires_at_its_latest_and_pausing_fires_nothing():
    epoch = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)
    fired = _fire_times({"schedule": "cron(0 2 * * ? *)", "scheduleFlexibleWindowMinutes": "30"}, epoch, 24)
    assert fired == ["schedule 06-01 02:30"]
    assert _fire_times({"schedule": "rate(1 hour)", "scheduleEnabled": "false"}, epoch, 3) == []


def test_a_rate_schedule_fires_at_once_and_then_every_period_with_its_check():
    fired = _fire_times(
        {"schedule": "rate(1 hour)", "maxWaitMinutes": "30", "latencyCheckMinutes": "20"},
        datetime(2026, 6, 1, 0, 0, tzinfo=UTC),
        1,
    )
    assert fired == [
        "schedule 06-01 00:00",
        "check 06-01 00:00",
        "check 06-01 00:20",
        "check 06-01 00:40",
        "schedule 06-01 01:00",
        "check 06-01 01:00",
    ]
