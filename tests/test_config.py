"""The settings declaration: every field type parses from the strings `-c key=value` gives, every bound
and every rule across settings refuses what it should with a message naming the setting, and each
consumer gets exactly the settings declared for it."""

from __future__ import annotations

import json
import re
from types import NoneType, UnionType
from typing import Any, get_args

import annotated_types
import pytest

from customlabels_batch.settings import (
    CROSS_RULES,
    EXAMPLE_PROJECT_ARN,
    EXAMPLE_VERSION_ARN,
    FUNCTION_SETTINGS_VARIABLE,
    ConfigError,
    Settings,
    Use,
)

REQUIRED = {"projectArn": EXAMPLE_PROJECT_ARN, "projectVersionArn": EXAMPLE_VERSION_ARN}
FIELDS = Settings.model_fields
KEYS = {field: info.alias for field, info in FIELDS.items()}


def settings(**values: Any) -> Settings:
    return Settings.from_context({**REQUIRED, **values})


def _base_type(annotation: Any) -> tuple[type, bool]:
    """(the type, whether None is allowed)."""
    if isinstance(annotation, UnionType):
        args = [a for a in get_args(annotation) if a is not NoneType]
        return args[0], True
    return annotation, False


def _bound(info: Any, kind: type) -> Any:
    return next((getattr(m, kind.__name__.lower()) for m in info.metadata if isinstance(m, kind)), None)


# A valid value of each field, written as `-c` gives it (a string).
SAMPLE_STRINGS = {
    int: "7",
    float: "55.5",
    bool: "false",
}


@pytest.mark.parametrize("field", [f for f, i in FIELDS.items() if _base_type(i.annotation)[0] is not str])
def test_every_number_and_boolean_parses_from_a_string(field):
    kind, _ = _base_type(FIELDS[field].annotation)
    text = SAMPLE_STRINGS[kind]
    low = _bound(FIELDS[field], annotated_types.Ge)
    if kind is not bool and low is not None and float(text) < low:
        text = str(int(low))
    try:
        parsed = settings(**{KEYS[field]: text})
    except ConfigError as error:
        # Only a rule across settings may refuse a value the field itself accepts.
        assert not str(error).startswith(f"'{KEYS[field]}'"), error
        return
    value = getattr(parsed, field)
    assert type(value) is kind, (field, value)
    assert value == (text == "true" if kind is bool else kind(text))


def test_an_optional_number_from_a_string_is_a_number_and_empty_means_unset():
    assert settings(minConfidence="55.5").min_confidence == 55.5
    assert settings(maxResults="3").max_results == 3
    assert settings(maxInferenceUnits="2").max_inference_units == 2
    assert settings(minConfidence="").min_confidence is None


@pytest.mark.parametrize(("text", "value"), [("true", True), ("false", False), ("True", True), ("0", False)])
def test_booleans_parse_as_cdk_flags_give_them(text, value):
    assert settings(scheduleEnabled=text).schedule_enabled is value


@pytest.mark.parametrize("field", [f for f, i in FIELDS.items() if _bound(i, annotated_types.Ge) is not None])
def test_every_lower_bound_admits_its_edge_and_refuses_below_it(field):
    low = _bound(FIELDS[field], annotated_types.Ge)
    key = KEYS[field]
    with pytest.raises(ConfigError, match=rf"^'{key}' has an invalid value"):
        settings(**{key: str(low - 1)})
    try:
        settings(**{key: str(low)})
    except ConfigError as error:
        assert not str(error).startswith(f"'{key}'"), error


@pytest.mark.parametrize("field", [f for f, i in FIELDS.items() if _bound(i, annotated_types.Le) is not None])
def test_every_upper_bound_admits_its_edge_and_refuses_above_it(field):
    high = _bound(FIELDS[field], annotated_types.Le)
    key = KEYS[field]
    with pytest.raises(ConfigError, match=rf"^'{key}' has an invalid value"):
        settings(**{key: str(high + 1)})
    try:
        settings(**{key: str(high)})
    except ConfigError as error:
        assert not str(error).startswith(f"'{key}'"), error


def test_price_must_be_positive():
    with pytest.raises(ConfigError, match="'usdPerInferenceUnitHour' has an invalid value '0'"):
        settings(usdPerInferenceUnitHour="0")


@pytest.mark.parametrize(
    ("key", "bad", "good", "message"),
    [
        ("inputPrefix", "incoming", "uploads/", "'inputPrefix' must be like 'folder/'"),
        ("resultsPrefix", "/results/", "out/", "'resultsPrefix' must be like 'folder/'"),
        ("errorsPrefix", "", None, None),  # empty means unset: the default applies
        ("runsPrefix", "runs", "records/", "'runsPrefix' must be like 'folder/'"),
        ("schedule", "every hour", "cron(0 2 * * ? *)", "'schedule' must be rate(...) or cron(...)"),
        ("notificationEmail", "ops", "ops@example.com", "'notificationEmail' must be an e-mail address"),
        ("powertoolsVersion", "latest", "3.30.0", "'powertoolsVersion' must be a release number"),
        ("stackName", "1stack", "My-Stack", "'stackName' must be a CloudFormation stack name"),
        ("projectArn", "arn:aws:s3:::bucket", None, "Malformed context 'projectArn'"),
        ("projectVersionArn", EXAMPLE_PROJECT_ARN, None, "Malformed context 'projectVersionArn'"),
    ],
)
def test_every_pattern_names_the_form_it_wants(key, bad, good, message):
    if message is None:
        assert getattr(settings(**{key: bad}), re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()) == "errors/"
        return
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings(**{key: bad})
    if good is not None:
        settings(**{key: good})


# One case per rule across settings: values that break it, and the message that must name it.
CROSS_RULE_CASES = {
    "powertools layer published": ({"powertoolsVersion": "3.23.0"}, "powertoolsVersion must be 3.24.0"),
    "version in project": (
        {"projectVersionArn": EXAMPLE_VERSION_ARN.replace("project/my-project/", "project/other/")},
        "projectVersionArn does not belong to projectArn",
    ),
    "prefixes apart": ({"resultsPrefix": "incoming/results/"}, "prefixes must not overlap"),
    "drain target has units to choose": (
        {"targetDrainMinutes": "60"},
        "targetDrainMinutes needs maxInferenceUnits: the units it may choose from",
    ),
    "units ordered": (
        {"minInferenceUnits": "3", "maxInferenceUnits": "2"},
        "maxInferenceUnits must be at least minInferenceUnits",
    ),
    "start timeout covers a poll": (
        {"modelStartTimeoutSeconds": "10", "modelPollSeconds": "30"},
        "modelStartTimeoutSeconds must be at least modelPollSeconds",
    ),
    "drain limit covers a poll": (
        {"maxDrainSeconds": "10", "drainPollSeconds": "30"},
        "maxDrainSeconds must be at least drainPollSeconds",
    ),
    "schedule evaluates": ({"schedule": "rate(1 hours)"}, "write 'rate(1 hour)' or 'rate(2 hours)'"),
    "check within budget": (
        {"maxWaitMinutes": "3", "latencyCheckMinutes": "5"},
        "maxWaitMinutes (3) must be at least latencyCheckMinutes (5)",
    ),
    "alarm outlasts a healthy run": (
        {"modelInServiceAlarmMinutes": "60"},
        "modelInServiceAlarmMinutes must be 300-1440",
    ),
    "history fits": (
        {"drainPollSeconds": "5"},
        "Step Functions fails an execution at 25,000: poll less often or lower the time limits; with the "
        "other settings as they are, drainPollSeconds must be at least",
    ),
}


def test_every_rule_across_settings_has_a_case():
    assert CROSS_RULE_CASES.keys() == CROSS_RULES.keys()


@pytest.mark.parametrize("rule", sorted(CROSS_RULES))
def test_each_rule_across_settings_refuses_with_its_message(rule):
    values, message = CROSS_RULE_CASES[rule]
    assert CROSS_RULES[rule](Settings.model_construct(**settings().model_dump())) is None
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings(**values)


def test_the_defaults_pass_every_rule():
    config = settings()
    assert [name for name, rule in CROSS_RULES.items() if rule(config)] == []


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("cron(0 2 * * *)", "EventBridge cron has six fields"),
        ("cron(0 2 * * * *)", "exactly one of day-of-month and day-of-week must be '?'"),
        ("cron(0 2 30 2 ? *)", "never fires"),
        ("cron(0 2 ? * 8 *)", "days of the week are 1-7 (SUN-SAT)"),
    ],
)
def test_a_cron_schedule_scheduler_would_refuse_is_refused_with_why(schedule, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings(schedule=schedule)


def test_the_schedule_time_zone_must_be_an_iana_name():
    assert settings(scheduleTimezone="Europe/Berlin").schedule_timezone == "Europe/Berlin"
    with pytest.raises(ConfigError, match=r"'scheduleTimezone' has an invalid value 'CET\+1'.*IANA"):
        settings(scheduleTimezone="CET+1")


def test_the_latency_budget_reaches_the_state_machine_as_numbers_and_zero_when_off():
    off = settings().definition_substitutions()
    on = settings(maxWaitMinutes="30", startAtBacklog="500").definition_substitutions()
    assert (off["MaxWaitMinutes"], off["StartAtBacklog"]) == ("0", "0")
    assert (on["MaxWaitMinutes"], on["StartAtBacklog"]) == ("30", "500")
    assert not settings().latency_budget
    assert settings(startAtBacklog="1").latency_budget


def test_missing_arn_says_what_to_pass():
    with pytest.raises(ConfigError, match=r"Missing context 'projectVersionArn': pass -c projectVersionArn="):
        Settings.from_context({"projectArn": EXAMPLE_PROJECT_ARN})


def test_a_misspelt_setting_is_refused_with_the_nearest_name_and_cdk_keys_are_ignored():
    with pytest.raises(
        ConfigError, match=r"unknown setting 'drainPollSecond' \(did you mean 'drainPollSeconds'\?\)"
    ):
        settings(drainPollSecond="15")
    settings(**{"@aws-cdk/core:checkSecretUsage": True, "aws:cdk:enable-path-metadata": True})


def test_a_string_where_a_number_belongs_names_the_setting():
    with pytest.raises(ConfigError, match=r"^'batchSize' has an invalid value 'ten'"):
        settings(batchSize="ten")


def test_json_types_from_cdk_json_parse_as_well():
    config = Settings.from_context(
        {**REQUIRED, "batchSize": 4, "minConfidence": 60, "scheduleEnabled": False}
    )
    assert (config.batch_size, config.min_confidence, config.schedule_enabled) == (4, 60.0, False)


# ---- what each consumer receives ----------------------------------------------------------------


def _declared(use: Use) -> set[str]:
    return {info.alias for info in FIELDS.values() if use.value in info.json_schema_extra["usedBy"]}


def test_each_function_gets_its_declared_settings_and_resources_in_one_variable():
    config = settings(minConfidence="55.5", maxResults="3")
    environment = config.function_environment(Use.PROCESSOR, bucket="images")
    values = json.loads(environment[FUNCTION_SETTINGS_VARIABLE])
    assert _declared(Use.PROCESSOR) <= values.keys()
    assert (values["minConfidence"], values["maxResults"], values["bucket"]) == (55.5, 3, "images")
    recorder = json.loads(config.function_settings(Use.RUN_RECORDER, bucket="images"))
    assert _declared(Use.RUN_RECORDER) <= recorder.keys()
    assert not _declared(Use.STATE_MACHINE) - _declared(Use.PROCESSOR) & values.keys()


def test_state_machine_settings_become_pascal_case_substitutions():
    substitutions = settings(drainPollSeconds="45").definition_substitutions(QueueUrl="q")
    assert substitutions["DrainPollSeconds"] == "45"
    assert substitutions["QueueUrl"] == "q"
    assert all(isinstance(value, str) for value in substitutions.values())
    declared = {key[0].upper() + key[1:] for key in _declared(Use.STATE_MACHINE)}
    assert declared <= substitutions.keys()


def test_concurrency_covers_every_unit_the_model_may_have():
    one, four = settings(), settings(minInferenceUnits="4")
    assert (one.concurrency, four.concurrency) == (8, 32)
    assert settings(maxInferenceUnits="3").concurrency == 24  # auto-scaling may add units
    # Nothing paces the processor: it finds the model's capacity at run time.
    assert "maxCallsPerSecond" not in json.loads(one.function_settings(Use.PROCESSOR))


def test_explicit_concurrency_wins():
    assert settings(maxConcurrency="5", maxInferenceUnits="4").concurrency == 5
