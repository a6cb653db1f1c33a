"""Structure of statemachine/batch_run.asl.json (pure JSON, no AWS): wiring, reachability, error handling
on every path that can leave the model running, and configurable waits."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from customlabels_batch.settings import STATE_MACHINE_ASL

CLEANUP_ENTRY = "CleanUpAfterFailure"
FIRST_MODEL_TASK = "DescribeModel"
SNS_PUBLISH = "arn:aws:states:::aws-sdk:sns:publish"
# Keys the execution input may carry (schedule trigger, EventBridge clean-up request).
INPUT_KEYS = {"trigger", "cleanup"}


@pytest.fixture(scope="module")
def asl() -> dict[str, Any]:
    return json.loads(STATE_MACHINE_ASL.read_text())


@pytest.fixture(scope="module")
def states(asl) -> dict[str, dict[str, Any]]:
    return asl["States"]


def successors(state: dict[str, Any]) -> list[str]:
    """Every state a state can hand over to: Next, Default, Choice branches and Catch targets."""
    out = []
    if "Next" in state:
        out.append(state["Next"])
    if "Default" in state:
        out.append(state["Default"])
    out.extend(choice["Next"] for choice in state.get("Choices", []))
    out.extend(catcher["Next"] for catcher in state.get("Catch", []))
    return out


def reachable(states: dict[str, dict[str, Any]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(successors(states[name]))
    return seen


def tasks(states: dict[str, dict[str, Any]], names: set[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name in sorted(names):
        if states[name]["Type"] == "Task":
            yield name, states[name]


def catch_all_target(state: dict[str, Any]) -> str | None:
    for catcher in state.get("Catch", []):
        if "States.ALL" in catcher["ErrorEquals"]:
            return catcher["Next"]
    return None


def through_passes(states: dict[str, dict[str, Any]], name: str) -> str:
    """Follow Pass states (which cannot fail on AWS for lack of a Catch) to the first other state."""
    seen = set()
    while states[name]["Type"] == "Pass" and name not in seen:
        seen.add(name)
        name = states[name]["Next"]
    return name


def test_definition_parses_and_start_state_exists(asl, states):
    assert isinstance(states, dict) and states
    assert asl["StartAt"] in states


def test_every_transition_names_an_existing_state(states):
    for name, state in states.items():
        for target in successors(state):
            assert target in states, f"{name} -> {target}"
        if state["Type"] in ("Pass", "Task", "Wait"):
            assert ("Next" in state) != state.get("End", False), f"{name} needs exactly one of Next/End"
        if state["Type"] == "Choice":
            assert state["Choices"], name


def test_every_state_is_reachable_from_start(asl, states):
    assert set(states) - reachable(states, asl["StartAt"]) == set()


def test_every_task_retries(states):
    for name, state in tasks(states, set(states)):
        assert state.get("Retry"), f"{name} has no Retry"


def test_every_task_while_the_model_may_be_on_catches_into_cleanup(states):
    """From the first model call on, any failure must reach the clean-up that stops the model.
    Notifications are the exception: a failed publish continues where success would go, because
    losing an e-mail must not change what happens to the model."""
    cleanup = reachable(states, CLEANUP_ENTRY)
    # Once the stop is requested, only reporting remains: a failure there must not re-run clean-up.
    reporting = reachable(states, "RecordModelStopped") - cleanup
    checked = 0
    for name, state in tasks(states, reachable(states, FIRST_MODEL_TASK) - cleanup):
        target = catch_all_target(state)
        assert target is not None, f"{name} has no States.ALL Catch"
        if state["Resource"] == SNS_PUBLISH or name in reporting:
            assert target == state["Next"], f"{name}: a failed notification must not change the path"
        else:
            assert through_passes(states, target) == through_passes(states, CLEANUP_ENTRY), (
                f"{name} catches into {target}, not {CLEANUP_ENTRY}"
            )
            checked += 1
    assert checked >= 10  # start, stop, mapping and queue tasks are all on this path


def test_cleanup_branch_is_reachable_and_each_step_catches_forward(asl, states):
    assert CLEANUP_ENTRY in reachable(states, asl["StartAt"])
    cleanup = reachable(states, CLEANUP_ENTRY)
    cleanup_tasks = dict(tasks(states, cleanup))
    assert {"CleanUpDisableMapping", "CleanUpDescribeModel", "CleanUpStopModel"} <= set(cleanup_tasks)
    for name, state in cleanup_tasks.items():
        target = catch_all_target(state)
        assert target is not None, f"clean-up task {name} has no States.ALL Catch"
        assert target in cleanup, f"{name} catches out of the clean-up branch into {target}"
        # Forward only: a failing clean-up step never loops back to itself or an earlier step.
        assert name not in reachable(states, target), f"{name} catch loops back"
        assert CLEANUP_ENTRY not in reachable(states, target)


def test_cleanup_disables_the_mapping_before_it_stops_the_model(states):
    first = through_passes(states, CLEANUP_ENTRY)
    assert states[first]["Resource"] == "arn:aws:states:::aws-sdk:lambda:updateEventSourceMapping"
    assert states[first]["Parameters"]["Enabled"] is False


def test_every_wait_reads_its_interval_from_settings(states):
    waits = {name: state for name, state in states.items() if state["Type"] == "Wait"}
    assert waits
    for name, state in waits.items():
        assert state["SecondsPath"].startswith("$.settings."), name
        assert not {"Seconds", "Timestamp", "TimestampPath"} & set(state), f"{name} has a literal interval"
        assert not [v for v in state.values() if isinstance(v, (int, float)) and not isinstance(v, bool)], (
            name
        )


def test_every_setting_read_is_loaded_from_a_substitution(states):
    loaded = {key.removesuffix(".$") for key in states["LoadSettings"]["Parameters"]}
    assert states["LoadSettings"]["ResultPath"] == "$.settings"
    used = set(re.findall(r"\$\.settings\.(\w+)", json.dumps(states)))
    assert used
    assert used <= loaded, used - loaded


def _paths_read(state: dict[str, Any]) -> Iterator[str]:
    """Top-level names of `$.x` paths a state reads from its input (ResultSelector reads the task
    result instead, and `$$.` is the context object)."""
    fields = {k: v for k, v in state.items() if k not in ("ResultSelector", "Comment")}
    for match in re.finditer(r"(?<![$\w])\$\.(\w+)", json.dumps(fields)):
        yield match.group(1)


def _names_written(states: dict[str, dict[str, Any]]) -> set[str]:
    written = set(INPUT_KEYS)
    for state in states.values():
        for result_path in [state.get("ResultPath")] + [c.get("ResultPath") for c in state.get("Catch", [])]:
            if result_path:
                written.add(result_path.split(".")[1])
    return written


def test_every_path_read_was_written_by_an_earlier_state_or_the_input(states):
    written = _names_written(states)
    unknown = {
        f"{name}: $.{path}"
        for name, state in states.items()
        for path in _paths_read(state)
        if path not in written
    }
    assert unknown == set()


def test_every_run_summary_is_recorded_then_sent_with_its_outcomes_subject(states):
    """Success, failure and clean-up all pass the run recorder before their notification, and the
    route after it sends each outcome under its own subject (the record keeps the outcome)."""
    summaries = {
        name: state["Parameters"]["outcome"]
        for name, state in states.items()
        if state["Type"] == "Pass"
        and state.get("ResultPath") == "$.summary"
        and "outcome" in state.get("Parameters", {})
    }
    assert {"SUCCEEDED", "FAILED", "CLEANED_UP"} <= set(summaries.values())
    route = states["RouteSummary"]
    routed = {choice["StringEquals"]: choice["Next"] for choice in route["Choices"]}
    subjects = {"SUCCEEDED": "SUCCEEDED", "FAILED": "FAILED", "CLEANED_UP": "cleaned up leftovers"}
    for name, outcome in summaries.items():
        # A warning mid-run (the run goes on to SummarizeRun), and the guard failing before the run
        # touched anything: no run to record.
        if name in ("DescribeDrainTimeLimit", "DescribeGuardFailure"):
            continue
        # Passes and Choices (the metrics wait is optional) up to the recorder, nothing else.
        seen, todo = set(), [states[name]["Next"]]
        while todo:
            current = todo.pop()
            if current in seen or current == "RecordRun":
                continue
            seen.add(current)
            assert states[current]["Type"] in ("Pass", "Choice", "Wait"), f"{name} reaches {current} first"
            todo.extend(successors(states[current]))
        publish = states[routed.get(outcome, route["Default"])]
        assert publish["Resource"] == SNS_PUBLISH
        assert subjects[outcome] in publish["Parameters"]["Subject"]
        assert publish["Parameters"]["Message.$"] == "States.JsonToString($.summary)"
    recorder = states["RecordRun"]
    assert recorder["Resource"] == "arn:aws:states:::lambda:invoke"
    assert recorder["Parameters"]["FunctionName"] == "${RunRecorderFunctionArn}"
    assert recorder["Parameters"]["Payload"]["summary.$"] == "$.summary"
    # Without a record, the state machine's own summary goes out, with the reason.
    assert catch_all_target(recorder) == "RouteSummary"
    assert recorder["Catch"][0]["ResultPath"] == "$.summary.recordError"
    # With a record, the record is the summary that goes out.
    after = states[recorder["Next"]]
    assert (after.get("InputPath"), after.get("ResultPath")) == ("$.recorded.record", "$.summary")
    assert after["Next"] == "RouteSummary"
