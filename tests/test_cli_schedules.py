"""pause, resume and status's schedules against a stack in moto whose outputs name real moto
EventBridge Scheduler schedules (moto's UpdateSchedule, like AWS's, replaces the whole schedule)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from customlabels_batch.cli import main
from customlabels_batch.cli import schedules as schedules_cli
from tests.test_cli_deployed import (  # noqa: F401 - fixtures used by name
    MODEL_ARN,
    STACK,
    Pipeline,
    aws_env,
    create_stack,
    pipeline,
    service_models_parsed_once,
)

SCHEDULED = "WithSchedules"
NOW = datetime(2026, 3, 28, 23, 30, tzinfo=UTC)  # the night Berlin's 02:00 does not exist


@pytest.fixture
def deployed(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:  # noqa: F811
    """The pipeline's outputs plus a nightly schedule at 02:00 Berlin time and a latency check."""
    scheduler = pipeline.client("scheduler")
    target = {
        "Arn": pipeline.state_machine_arn,
        "RoleArn": f"arn:aws:iam::123456789012:role/{SCHEDULED}-ScheduleRole",
        "Input": json.dumps({"trigger": "schedule"}),
        "DeadLetterConfig": {"Arn": pipeline.dlq_arn},
        "RetryPolicy": {"MaximumEventAgeInSeconds": 3600, "MaximumRetryAttempts": 24},
    }
    scheduler.create_schedule(
        Name="batch",
        ScheduleExpression="cron(0 2 * * ? *)",
        ScheduleExpressionTimezone="Europe/Berlin",
        FlexibleTimeWindow={"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 15},
        Target=target,
        Description="Starts a Custom Labels batch run",
        State="ENABLED",
    )
    scheduler.create_schedule(
        Name="check",
        ScheduleExpression="rate(5 minutes)",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={**target, "Input": json.dumps({"trigger": "check"})},
        State="ENABLED",
    )
    outputs = {
        o["OutputKey"]: o["OutputValue"]
        for o in pipeline.client("cloudformation").describe_stacks(StackName=STACK)["Stacks"][0]["Outputs"]
        if o["OutputKey"] != "NotificationTopicArn"
    }
    create_stack(
        pipeline.session,
        SCHEDULED,
        outputs | {"BatchScheduleName": "batch", "LatencyCheckScheduleName": "check"},
    )
    monkeypatch.setattr(schedules_cli, "_now", lambda: NOW)
    yield pipeline


def _schedule(stack: Pipeline, name: str) -> dict:
    described = stack.client("scheduler").get_schedule(Name=name)
    return {
        k: described.get(k)
        for k in (
            "State",
            "ScheduleExpression",
            "ScheduleExpressionTimezone",
            "FlexibleTimeWindow",
            "Target",
            "Description",
        )
    }


def test_pause_turns_both_schedules_off_and_keeps_everything_else(deployed: Pipeline, capsys) -> None:
    before = {name: _schedule(deployed, name) for name in ("batch", "check")}
    assert main(["pause", "--stack-name", SCHEDULED]) == 0
    out = capsys.readouterr().out
    assert "Paused: batch (batch runs)" in out
    assert "Paused: check (latency checks)" in out
    for name in ("batch", "check"):
        after = _schedule(deployed, name)
        assert after["State"] == "DISABLED"
        # UpdateSchedule replaces the whole schedule: the expression, zone, window and target survive.
        assert after | {"State": "ENABLED"} == before[name]
    # Again: nothing to change, and it says so.
    assert main(["pause", "--stack-name", SCHEDULED]) == 0
    assert "Already paused: batch (batch runs)" in capsys.readouterr().out


def test_resume_turns_them_back_on_and_shows_the_next_run(deployed: Pipeline, capsys) -> None:
    main(["pause", "--stack-name", SCHEDULED])
    capsys.readouterr()
    assert main(["resume", "--stack-name", SCHEDULED]) == 0
    out = capsys.readouterr().out
    assert "Resumed: batch (batch runs)" in out
    assert {_schedule(deployed, n)["State"] for n in ("batch", "check")} == {"ENABLED"}
    # 02:00 on 29 March does not exist in Berlin: the next run is 02:00 CEST on the 30th.
    assert "Next batch runs: 2026-03-30T00:00:00Z" in out


def test_status_shows_each_schedule_its_zone_and_next_run_or_that_it_is_paused(
    deployed: Pipeline, capsys
) -> None:
    deployed.model_is("STOPPED")
    assert main(["status", "--stack-name", SCHEDULED]) == 0
    out = capsys.readouterr().out
    assert (
        "Schedule batch (batch runs): cron(0 2 * * ? *) (Europe/Berlin, up to 15 min late): next run "
        "2026-03-30T00:00:00Z (2026-03-30 02:00 Europe/Berlin)" in out
    )
    assert "Schedule check (latency checks): rate(5 minutes) (UTC): next run" in out

    main(["pause", "--stack-name", SCHEDULED])
    deployed.client("sqs").send_message(QueueUrl=deployed.queue_url, MessageBody="{}")
    deployed.model_is("STOPPED")
    capsys.readouterr()
    assert main(["status", "--stack-name", SCHEDULED, "--json"]) == 0
    captured = capsys.readouterr()
    status = json.loads(captured.out)
    assert [(s["name"], s["state"], s["nextRun"]) for s in status["schedules"]] == [
        ("batch", "DISABLED", None),
        ("check", "DISABLED", None),
    ]
    assert "1 message(s) are queued and the schedule is paused (batch, check)" in captured.err


def test_a_stack_without_schedule_outputs_is_told_to_redeploy(pipeline: Pipeline, capsys) -> None:  # noqa: F811
    assert main(["pause"]) == 2
    assert "has no schedule outputs" in capsys.readouterr().err
    assert MODEL_ARN  # the plain stack of test_cli_deployed, deployed before Scheduler
