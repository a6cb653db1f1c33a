"""Structure of statemachine/batch_run.asl.json (pure JSON, no AWS): wiring, reachability, one loop that
only ends once the model and the mapping are seen off, error handling, configurable waits and size.

The behaviour itself (every fault ends safe) is proven end to end in test_emulated_pipeline.py."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest

from customlabels_batch.settings import STATE_MACHINE_ASL

# The loop: wait, observe (four tasks), decide.
LOOP = [
    "WaitForChange",
    "CountQueuedImages",
    "DescribeModel",
    "DescribeMapping",
    "CountLabeledImages",
    "Decide",
]
OBSERVE = LOOP[1:-1]
# What the loop may hand over to, and the only ways out of it.
ACTIONS = {"StartModel", "SetMapping", "StopModel"}
EXITS = {"ReleaseLease", "WaitForMetrics", "ReportModelNotStartable"}
REPORTING = {
    "ReportModelNotStartable",
    "ResetWaitClock",
    "StartWaitClockAtDrain",
    "WaitForMetrics",
    "RecordRun",
    "Notify",
    "ReleaseLease",
    "HowDidTheRunEnd",
}
MAX_STATES = 50


@pytest.fixture(scope="module")
def asl() -> dict[str, Any]:
    return json.loads(STATE_MACHINE_ASL.read_text())


@pytest.fixture(scope="module")
def states(asl) -> dict[str, dict[str, Any]]:
    return asl["States"]


@pytest.fixture(scope="module")
def rules(states) -> list[dict[str, Any]]:
    return states["Decide"]["Choices"]


def successors(state: dict[str, Any]) -> list[str]:
    out = [state[key] for key in ("Next", "Default") if key in state]
    out += [choice["Next"] for choice in state.get("Choices", [])]
    out += [catcher["Next"] for catcher in state.get("Catch", [])]
    return out


def reachable(
    states: dict[str, dict[str, Any]], start: str, *, avoiding: frozenset[str] = frozenset()
) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen or name in avoiding:
            continue
        seen.add(name)
        todo.extend(successors(states[name]))
    return seen


def test_definition_is_jsonata_small_and_every_state_is_reachable(asl, states):
    assert asl["QueryLanguage"] == "JSONata"
    assert len(states) <= MAX_STATES
    assert set(states) == reachable(states, asl["StartAt"])
    for name, state in states.items():
        for target in successors(state):
            assert target in states, f"{name} -> {target}"


def test_no_pass_state_copies_settings_or_counts(states):
    """Variables replace the Pass states that copied settings and counted polls: the one Pass left
    sets what the run knows at its start."""
    passes = [name for name, state in states.items() if state["Type"] == "Pass"]
    assert passes == ["StartRun"]


def test_the_loop_is_a_wait_four_observations_and_one_choice(states):
    for current, following in itertools.pairwise(LOOP):
        assert states[current]["Next"] == following
    assert states["Decide"]["Type"] == "Choice"
    assert states["Decide"]["Default"] == "WaitForChange"
    for action in ACTIONS:
        assert states[action]["Next"] == "WaitForChange", action


def test_every_decision_names_its_phase_and_leads_to_the_loop_an_action_or_an_exit(rules):
    loop_entries = {"WaitForChange", "CountQueuedImages"}
    for rule in rules:
        assert re.match(r"\{% \$phase = '\w+' and|\{% \$phase = '\w+' %\}", rule["Condition"]), rule
        assert rule["Next"] in loop_entries | ACTIONS | EXITS, rule


def test_the_loop_ends_only_when_the_mapping_is_seen_disabled(rules):
    """Cost safety in the structure: every way out of the loop is a rule that has just seen the mapping
    Disabled, or (an unstartable model) comes after the start phase's rules that disable it first."""
    phase_of = [re.match(r"\{% \$phase = '(\w+)'", rule["Condition"])[1] for rule in rules]
    for index, rule in enumerate(rules):
        if rule["Next"] not in EXITS:
            continue
        condition = rule["Condition"]
        if rule["Next"] == "ReportModelNotStartable":
            earlier = [r["Condition"] for r, p in zip(rules[:index], phase_of, strict=False) if p == "start"]
            assert any("$mapping != 'Disabled'" in c for c in earlier)
            continue
        if "$now > $deadline" in condition:  # the loud give-up: outcome FAILED, what is on named
            assert rule["Assign"]["outcome"] == "FAILED"
            assert "stillOn" in rule["Assign"]
            continue
        assert "$mapping = 'Disabled'" in condition, condition
        assert "$model in ['RUNNING', 'STARTING']" in condition, condition


def test_every_task_retries_and_catches_everything(states):
    for name, state in states.items():
        if state["Type"] != "Task":
            continue
        assert state.get("Retry"), name
        assert any("States.ALL" in catcher["ErrorEquals"] for catcher in state.get("Catch", [])), name


def test_failures_inside_the_loop_stay_in_the_loop(states):
    """A refused or failed call while the model may be on never leaves the loop directly: the loop looks
    again, and only Decide (which has seen the model and the mapping) lets the run end."""
    for name in OBSERVE + sorted(ACTIONS):
        for catcher in states[name].get("Catch", []):
            assert catcher["Next"] in LOOP, f"{name} catches into {catcher['Next']}"


def test_observation_failures_enter_the_clean_up_phase(states):
    for name in OBSERVE:
        catch_all = next(c for c in states[name]["Catch"] if "States.ALL" in c["ErrorEquals"])
        assert catch_all["Assign"]["phase"] == "cleanup", name


def test_only_a_conditional_check_or_a_missing_model_skips_the_retries(states):
    """One retry policy for every call, less the answers a retry cannot change."""
    policies = set()
    for name, state in states.items():
        if state["Type"] != "Task":
            continue
        for retrier in state["Retry"]:
            if retrier.get("MaxAttempts") == 0:
                assert set(retrier["ErrorEquals"]) <= {
                    "DynamoDB.ConditionalCheckFailedException",
                    "Rekognition.ResourceNotFoundException",
                    "Rekognition.ResourceInUseException",
                    "Rekognition.AccessDeniedException",
                    "Lambda.ResourceInUseException",
                }, name
            elif name != "RecordRun":
                policies.add(json.dumps(retrier, sort_keys=True))
    assert len(policies) == 1, policies


def test_every_wait_reads_its_interval_from_settings(states):
    waits = {name: state for name, state in states.items() if state["Type"] == "Wait"}
    assert set(waits) == {"WaitForChange", "WaitForMetrics"}
    for name, state in waits.items():
        assert re.search(r"\$\{\w+Seconds\}", state["Seconds"]), name


def test_runs_that_did_not_do_their_job_end_failed(states):
    end = states["HowDidTheRunEnd"]
    [failing] = end["Choices"]
    assert failing["Next"] == "RunFailed"
    for outcome in ("FAILED", "STALLED", "DRAIN_LIMIT", "MODEL_NOT_STARTABLE"):
        assert f"'{outcome}'" in failing["Condition"]
    assert states["RunFailed"]["Type"] == "Fail"


def test_every_recorded_run_is_notified_and_releases_its_lease(states):
    assert states["RecordRun"]["Next"] == "Notify"
    assert all(c["Next"] == "Notify" for c in states["RecordRun"]["Catch"])
    assert states["Notify"]["Next"] == "ResetWaitClock"
    assert all(c["Next"] == "ResetWaitClock" for c in states["Notify"]["Catch"])
    # The wait clock is set whatever happens, and then the lease is released.
    for name in ("ResetWaitClock", "StartWaitClockAtDrain"):
        assert states[name]["Next"] == "ReleaseLease"
        assert set(successors(states[name])) <= {"ReleaseLease", "StartWaitClockAtDrain"}
    assert states["ReleaseLease"]["Next"] == "HowDidTheRunEnd"
    # Nothing after the loop can start anything again.
    after = set().union(*(reachable(states, name) for name in REPORTING))
    assert after.isdisjoint(set(LOOP) | ACTIONS)


CHECK_STATES = {
    "CountQueueForCheck",
    "ShouldARunStart",
    "ReadWaitClock",
    "HasAnImageWaitedTooLong",
    "CheckFoundNothingToDo",
    "CheckFailed",
}


def test_a_latency_check_only_reads_and_either_ends_or_starts_a_run_that_takes_the_lease(asl, states):
    """The check looks before taking the lease (so a check that finds nothing costs a few transitions)
    but reads only the queue's counts and the wait clock; whatever it decides, a run starts at
    StartRun and takes the lease like a scheduled one."""
    assert asl["StartAt"] == "WhatStartedTheRun"
    first = states["WhatStartedTheRun"]
    assert first["Default"] == "StartRun"
    assert [c["Next"] for c in first["Choices"]] == ["CountQueueForCheck"]
    check = reachable(states, "CountQueueForCheck", avoiding=frozenset({"StartRun"}))
    assert check == CHECK_STATES
    resources = {states[name].get("Resource") for name in check} - {None}
    assert resources == {
        "arn:aws:states:::aws-sdk:sqs:getQueueAttributes",
        "arn:aws:states:::dynamodb:getItem",
    }
    leaving = {target for name in check for target in successors(states[name])} - check
    assert leaving == {"StartRun"}
    # Nothing found: at most CountQueueForCheck, ShouldARunStart, ReadWaitClock, the choice, the end.
    assert states["CheckFoundNothingToDo"]["Type"] == "Succeed"
    assert states["CheckFailed"]["Type"] == "Fail"


def test_the_lease_is_taken_before_anything_is_looked_at(asl, states):
    assert states["StartRun"]["Next"] == "TakeLease"
    lease = states["TakeLease"]
    assert lease["Resource"] == "arn:aws:states:::dynamodb:putItem"
    assert "attribute_not_exists(holder)" in lease["Arguments"]["ConditionExpression"]
    taken_by_someone = [
        c for c in lease["Catch"] if c["ErrorEquals"] == ["DynamoDB.ConditionalCheckFailedException"]
    ]
    assert [c["Next"] for c in taken_by_someone] == ["AnotherRunIsActive"]
    assert states["AnotherRunIsActive"]["Type"] == "Succeed"
