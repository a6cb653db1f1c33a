"""`pause` and `resume` turn the deployed stack's EventBridge Scheduler schedules (the batch schedule
and, with a latency budget, its check) off and on; `status` shows each one's state and next run.

UpdateSchedule replaces the whole schedule (what it is not given, it drops or resets to a default), so
each change reads the schedule first and sends it back with only its State changed."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from customlabels_batch import schedules
from customlabels_batch.settings import CLI_NAME

from . import deployed

# Stack output -> what the schedule does (outputs of a stack deployed before Scheduler: none).
SCHEDULE_OUTPUTS = {"BatchScheduleName": "batch runs", "LatencyCheckScheduleName": "latency checks"}
# What UpdateSchedule takes of what GetSchedule returns (the rest: ARN, dates it sets itself).
UPDATABLE = (
    "Name",
    "GroupName",
    "Description",
    "ScheduleExpression",
    "ScheduleExpressionTimezone",
    "FlexibleTimeWindow",
    "Target",
    "StartDate",
    "EndDate",
    "KmsKeyArn",
    "ActionAfterCompletion",
)

_now = lambda: datetime.now(UTC)  # noqa: E731 - patched by tests


def schedule_names(outputs: deployed.StackOutputs) -> dict[str, str]:
    """Schedule name -> what it starts, from the stack's outputs."""
    names = {outputs.values[key]: what for key, what in SCHEDULE_OUTPUTS.items() if outputs.values.get(key)}
    if not names:
        raise deployed.CliError(
            f"Stack {outputs.stack_name} has no schedule outputs: it was deployed before EventBridge "
            "Scheduler ran its schedules; redeploy it with `make deploy`"
        )
    return names


def describe(scheduler: Any, name: str, what: str, *, now: datetime) -> dict[str, Any]:
    """A schedule's state and, when it is on, its next run (from its expression and time zone)."""
    schedule = scheduler.get_schedule(Name=name)
    timezone = schedule.get("ScheduleExpressionTimezone") or "UTC"
    state = schedule["State"]
    report = {
        "name": name,
        "starts": what,
        "expression": schedule["ScheduleExpression"],
        "timezone": timezone,
        "state": state,
        "flexibleWindowMinutes": schedule.get("FlexibleTimeWindow", {}).get("MaximumWindowInMinutes"),
        "nextRun": None,
    }
    if state == "ENABLED":
        start = schedule.get("StartDate") or schedule.get("CreationDate")
        try:
            at = schedules.next_run(schedule["ScheduleExpression"], timezone, now, start=start)
            report["nextRun"] = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        except schedules.ScheduleError as error:  # an expression changed by hand, say
            report["nextRunError"] = str(error)
    return report


def set_state(scheduler: Any, name: str, state: str) -> bool:
    """Turn one schedule to `state` (ENABLED/DISABLED); False if it already was."""
    schedule = scheduler.get_schedule(Name=name)
    if schedule["State"] == state:
        return False
    request = {key: schedule[key] for key in UPDATABLE if schedule.get(key) is not None}
    scheduler.update_schedule(**request, State=state)
    return True


def collect(session: Any, outputs: deployed.StackOutputs) -> list[dict[str, Any]]:
    """`status`'s schedules: [] for a stack without schedule outputs."""
    try:
        names = schedule_names(outputs)
    except deployed.CliError:
        return []
    scheduler = deployed.client(session, "scheduler")
    return [describe(scheduler, name, what, now=_now()) for name, what in names.items()]


def print_schedules(items: list[dict[str, Any]]) -> None:
    for item in items:
        window = f", up to {item['flexibleWindowMinutes']} min late" if item["flexibleWindowMinutes"] else ""
        where = f"{item['expression']} ({item['timezone']}{window})"
        if item["state"] != "ENABLED":
            when = f"PAUSED (`{CLI_NAME} resume` turns it on)"
        elif item["nextRun"]:
            when = f"next run {item['nextRun']} ({_local(item['nextRun'], item['timezone'])})"
        else:
            when = f"on; next run unknown: {item.get('nextRunError')}"
        print(f"Schedule {item['name']} ({item['starts']}): {where}: {when}")


def warnings(items: list[dict[str, Any]], queued: int) -> list[str]:
    paused = [item["name"] for item in items if item["state"] != "ENABLED"]
    if paused and queued:
        return [
            f"WARNING: {queued} message(s) are queued and the schedule is paused ({', '.join(paused)}): "
            f"nothing starts a run for them; `{CLI_NAME} resume` or `{CLI_NAME} run-now`"
        ]
    return []


def _local(iso: str, timezone: str) -> str:
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return moment.astimezone(schedules.zone(timezone)).strftime(f"%Y-%m-%d %H:%M {timezone}")


def _change(args: argparse.Namespace, state: str) -> int:
    session = deployed.make_session(args.region)
    outputs = deployed.load_stack_outputs(deployed.client(session, "cloudformation"), args.stack_name)
    scheduler = deployed.client(session, "scheduler")
    verb = "Resumed" if state == "ENABLED" else "Paused"
    for name, what in schedule_names(outputs).items():
        changed = set_state(scheduler, name, state)
        print(f"{verb if changed else 'Already ' + verb.lower()}: {name} ({what})")
    if state == "DISABLED":
        print(
            "Runs already started go on to their end and stop the model; nothing new starts until "
            f"`{CLI_NAME} resume` (or `{CLI_NAME} run-now`)."
        )
    else:
        for item in collect(session, outputs):
            if item["nextRun"]:
                print(f"Next {item['starts']}: {item['nextRun']}")
    return deployed.EXIT_OK


def pause_command(args: argparse.Namespace) -> int:
    return _change(args, "DISABLED")


def resume_command(args: argparse.Namespace) -> int:
    return _change(args, "ENABLED")


def add_commands(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    pause = subparsers.add_parser(
        "pause",
        parents=[common],
        help="turn the deployed schedules off (runs already started finish)",
        description="Disable the stack's EventBridge Scheduler schedules: no scheduled run or latency "
        "check starts until `resume`. A run in progress goes on and stops the model as usual.",
    )
    pause.set_defaults(func=deployed._one_line_errors(pause_command))
    resume = subparsers.add_parser(
        "resume",
        parents=[common],
        help="turn the deployed schedules back on and show the next run",
        description="Enable the stack's EventBridge Scheduler schedules again.",
    )
    resume.set_defaults(func=deployed._one_line_errors(resume_command))
