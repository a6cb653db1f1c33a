"""Every setting of the pipeline, declared once: name, type, default, bounds, meaning and consumer.

cdk.json context and `-c key=value` flags (which arrive as strings) are parsed and validated by this
declaration; the CDK app, the Lambda environments, the state machine's substitutions, the emulator,
the CLI and the README's configuration table all derive from it. Pure Python (no aws-cdk-lib), so the
installed console script and the tests can use it.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from enum import StrEnum
from importlib import metadata, resources
from pathlib import Path
from typing import Annotated, Any

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel, to_pascal

from customlabels_batch import schedules

STATE_MACHINE_ASL = Path(str(resources.files("customlabels_batch.statemachine") / "batch_run.asl.json"))
# The environment variable the Lambda functions read their settings from (lambdas/settings.py).
FUNCTION_SETTINGS_VARIABLE = "PIPELINE_SETTINGS"
# The console script; messages and alarm texts tell people to run it.
CLI_NAME = "customlabels-batch"

# Processor environments per inference unit. Each keeps up to a batch of calls in flight and finds
# its share of the model's capacity at run time (lambdas/processor/app.py, CallWindow), so this only
# bounds how many calls can be in flight: 8 x 10 per unit covers capacity x latency up to ~45 calls
# per unit (a 20 TPS model with 2 s calls) after the ends of batches; see "What it costs".
CONCURRENCY_PER_INFERENCE_UNIT = 8
# The processor's Powertools service name and metrics namespace (the dashboard and the run recorder
# read its metrics by these).
PROCESSOR_SERVICE_NAME = "customlabels-processor"
PROCESSOR_METRICS_NAMESPACE = "CustomLabelsBatch"
# The triage's Powertools service name (its metrics share the processor's namespace).
TRIAGE_SERVICE_NAME = "customlabels-triage"
# Execution statuses after which a Catch cannot have run (FAILED included: a States.Runtime error in
# a Pass or Choice state skips every Catch); the status-change rule starts a clean-up run for them.
CLEANUP_STATUSES = ("FAILED", "TIMED_OUT", "ABORTED")
# Every clean-up execution's input starts with this, so a failed clean-up never triggers another.
CLEANUP_INPUT_PREFIX = '{"cleanup"'
# Step Functions fails a Standard execution whose history reaches 25,000 events.
HISTORY_EVENT_LIMIT = 25000
# Per loop of the run: Wait (2 events), four tasks (5 each: entered, scheduled, started, succeeded,
# exited), the Decide choice (2); a clean-up loop may add a refused call and its two retries (11).
HISTORY_EVENTS_PER_LOOP = 24
HISTORY_EVENTS_PER_CLEAN_UP_LOOP = HISTORY_EVENTS_PER_LOOP + 11
HISTORY_EVENTS_FIXED = 200
# While draining, the drain's first look and a look that finds nothing left to receive are followed
# by one after mappingPollSeconds instead of drainPollSeconds (the end of a drain is billed at every
# unit), this many times a run at most: a trickle that empties the queue at every look cannot outgrow
# the history.
QUICK_DRAIN_POLLS = 12
LEASE_MARGIN_SECONDS = 900
# A message expires by its first enqueue time, also once it has moved to the dead-letter queue, so
# the DLQ keeps messages longer than the queue does (SQS's maximum, 14 days); the queue's 12 days
# leave a failed image two days in the DLQ. The oldest-message alarm warns two days before expiry.
QUEUE_RETENTION_DAYS = 12
DEAD_LETTER_RETENTION_DAYS = 14
OLDEST_MESSAGE_ALARM_DAYS = QUEUE_RETENTION_DAYS - 2
# The triage's asynchronous invocation (the stack configures it, the emulator acts on it): two retries
# after a function error (Lambda waits about 1 and 2 minutes), events retried for up to six hours
# (Lambda's maximum; throttles do not use up retries), then the event goes to the failure queue.
TRIAGE_RETRY_ATTEMPTS = 2
TRIAGE_MAX_EVENT_AGE_SECONDS = 6 * 3600
# SQS: a queue's visibility timeout is at most 12 hours.
MAX_VISIBILITY_TIMEOUT_SECONDS = 43200

_PROJECT_ARN = re.compile(
    r"^arn:aws[a-z-]*:rekognition:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"project/(?P<project>[A-Za-z0-9][A-Za-z0-9_.\-]{0,254})/(?P<stamp>\d{13})$"
)
_VERSION_ARN = re.compile(
    r"^arn:aws[a-z-]*:rekognition:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"project/(?P<project>[A-Za-z0-9][A-Za-z0-9_.\-]{0,254})/version/"
    r"(?P<version>[A-Za-z0-9][A-Za-z0-9_.\-]{0,254})/(?P<stamp>\d{13})$"
)
EXAMPLE_PROJECT_ARN = "arn:aws:rekognition:us-east-1:123456789012:project/my-project/1700000000000"
EXAMPLE_VERSION_ARN = (
    "arn:aws:rekognition:us-east-1:123456789012:project/my-project/version/my-project.v1/1700000000000"
)
_EXAMPLES = {"projectArn": EXAMPLE_PROJECT_ARN, "projectVersionArn": EXAMPLE_VERSION_ARN}
_PREFIX = r"^[^/].*/$"
_PREFIX_FORM = "like 'folder/'"
_SCHEDULE = r"^(rate\(\d+ (minute|minutes|hour|hours|day|days)\)|cron\(.+\))$"
# Context keys of our own are plain camelCase; CDK's own keys (feature flags, lookups) are not.
_OWN_KEY = re.compile(r"^[a-z][A-Za-z0-9]*$")


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message says what to pass."""


class Use(StrEnum):
    """Who reads a setting. The functions' settings (triage, processor, run recorder) reach their
    environment and the state machine's become `${PascalCase}` definition substitutions without
    further wiring."""

    STACK = "stack"
    TRIAGE = "triage"
    PROCESSOR = "processor"
    RUN_RECORDER = "run recorder"
    STATE_MACHINE = "state machine"
    MONITORING = "monitoring"
    CLI = "cli"


def setting(meaning: str, *used_by: Use, default: Any = ..., form: str | None = None, **bounds: Any) -> Any:
    """One setting's declaration: its meaning (the README row), readers, bounds, and for a `pattern`
    the form to name when a value does not match it."""
    extra = {"usedBy": [u.value for u in used_by], "form": form}
    return Field(default, description=meaning, json_schema_extra=extra, **bounds)


def _installed_powertools() -> str:
    # The layer the functions run on is the Powertools release the lock file pins for the tests.
    return metadata.version("aws-lambda-powertools")


Seconds = Annotated[int, Field(ge=1)]


class Settings(BaseModel):
    """The pipeline's configuration. Field names in camelCase are the cdk.json / `-c` keys."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid", validate_default=True
    )

    # ---- the model -----------------------------------------------------------------------------
    project_arn: str = setting("the Custom Labels project", Use.STATE_MACHINE)
    project_version_arn: str = setting(
        "the model version to run (in that project)", Use.STATE_MACHINE, Use.PROCESSOR
    )
    # ---- ingest --------------------------------------------------------------------------------
    input_prefix: str = setting(
        "uploads under this prefix are triaged: images are queued, files the model cannot take get an "
        "error record",
        Use.STACK,
        Use.TRIAGE,
        Use.PROCESSOR,
        default="incoming/",
        pattern=_PREFIX,
        form=_PREFIX_FORM,
    )
    results_prefix: str = setting(
        "one JSON result per image",
        Use.TRIAGE,
        Use.PROCESSOR,
        default="results/",
        pattern=_PREFIX,
        form=_PREFIX_FORM,
    )
    errors_prefix: str = setting(
        "one error record per unusable image or message",
        Use.TRIAGE,
        Use.PROCESSOR,
        default="errors/",
        pattern=_PREFIX,
        form=_PREFIX_FORM,
    )
    runs_prefix: str = setting(
        "one JSON record per run", Use.RUN_RECORDER, default="runs/", pattern=_PREFIX, form=_PREFIX_FORM
    )
    max_receive_count: int = setting(
        "deliveries before a message moves to the DLQ", Use.STACK, default=6, ge=1, le=1000
    )
    # ---- processor -----------------------------------------------------------------------------
    min_confidence: float | None = setting(
        "`MinConfidence` for DetectCustomLabels (unset: each label's trained threshold)",
        Use.PROCESSOR,
        default=None,
        ge=0,
        le=100,
    )
    max_results: int | None = setting(
        "`MaxResults` for DetectCustomLabels", Use.PROCESSOR, default=None, ge=1
    )
    processor_timeout_seconds: int = setting(
        "Lambda timeout; the queue's visibility timeout is 6x this",
        Use.STACK,
        default=60,
        ge=1,
        le=900,
    )
    processor_memory_mb: int = setting("Lambda memory", Use.STACK, default=256, ge=128, le=10240)
    retry_delay_seconds: int = setting(
        "first retry delay of a failed image (doubles per delivery, up to 300 s)",
        Use.PROCESSOR,
        default=10,
        ge=1,
    )
    batch_size: int = setting(
        "messages per Lambda invocation; an invocation keeps up to this many model calls in flight "
        "(more than 10 would need a batching window, which delays every batch of a trickle)",
        Use.STACK,
        default=10,
        ge=1,
        le=10,
    )
    max_concurrency: int | None = setting(
        f"concurrent invocations; unset: {CONCURRENCY_PER_INFERENCE_UNIT} per inference unit (of "
        '`maxInferenceUnits` when set), which keeps any model busy (see "What it costs")',
        Use.STACK,
        default=None,
        ge=2,
        le=1000,
    )
    model_tps_per_inference_unit: float = setting(
        "a first guess at the model's throughput per unit, used only to size the units for "
        "`targetDrainMinutes` until a run has measured it; it never limits calls",
        Use.STATE_MACHINE,
        default=5.0,
        gt=0,
    )
    # ---- model capacity ------------------------------------------------------------------------
    min_inference_units: int = setting(
        "inference units to start the model with", Use.STATE_MACHINE, default=1, ge=1
    )
    max_inference_units: int | None = setting(
        "set to enable Custom Labels auto-scaling up to this many units",
        Use.STATE_MACHINE,
        default=None,
        ge=1,
    )
    target_drain_minutes: int | None = setting(
        "start the model with enough units to drain the counted backlog in this many minutes at the "
        "last measured capacity (needs `maxInferenceUnits`; between the two unit settings)",
        Use.STATE_MACHINE,
        default=None,
        ge=1,
    )
    # ---- orchestration -------------------------------------------------------------------------
    model_poll_seconds: Seconds = setting(
        "how often to check a starting model", Use.STATE_MACHINE, default=30
    )
    model_start_timeout_seconds: Seconds = setting(
        "give up (and stop the model) if it is not RUNNING by then", Use.STATE_MACHINE, default=2700
    )
    mapping_poll_seconds: Seconds = setting(
        "how often to check the mapping's state and in-flight work", Use.STATE_MACHINE, default=5
    )
    mapping_timeout_seconds: Seconds = setting(
        "give up if the mapping does not reach Enabled/Disabled", Use.STATE_MACHINE, default=300
    )
    drain_poll_seconds: Seconds = setting(
        "how often to count the queue while draining", Use.STATE_MACHINE, default=30
    )
    empty_polls_required: int = setting(
        'consecutive empty counts that mean "drained"', Use.STATE_MACHINE, default=2, ge=1
    )
    max_drain_seconds: Seconds = setting(
        "cost guard: stop the model after this long even if work remains", Use.STATE_MACHINE, default=4 * 3600
    )
    in_flight_wait_seconds: Seconds = setting(
        "how long to wait for in-flight batches after disabling the mapping", Use.STATE_MACHINE, default=300
    )
    in_flight_idle_seconds: Seconds = setting(
        "after disabling the mapping, stop the model once nothing has been labeled for this long (what is "
        "still in flight is in retry back-off and waits for the next run)",
        Use.STATE_MACHINE,
        default=30,
    )
    stall_seconds: Seconds = setting(
        "while draining, nothing labeled for this long with work queued (crash loops, retries in back-off, "
        "failing writes) stops the model: the run ends STALLED and the messages wait for the next run",
        Use.STATE_MACHINE,
        default=300,
    )
    clean_up_timeout_seconds: Seconds = setting(
        "how long a clean-up retries refused calls before the run fails loudly with what is still on",
        Use.STATE_MACHINE,
        default=600,
    )
    metrics_settle_seconds: int = setting(
        "after a run that had the model running, wait this long (model already stopped) so the "
        "processor's metrics reach CloudWatch before the run record counts them",
        Use.STATE_MACHINE,
        default=120,
        ge=0,
        le=900,
    )
    schedule: str = setting(
        "EventBridge Scheduler expression: `rate(...)`, or `cron(...)` with six fields (minutes hours "
        "day-of-month month day-of-week year) in `scheduleTimezone`",
        Use.STACK,
        Use.CLI,
        default="rate(1 hour)",
        pattern=_SCHEDULE,
        form="rate(...) or cron(...)",
    )
    schedule_timezone: str = setting(
        "IANA time zone the cron schedule runs in (Scheduler follows its daylight saving time: a time "
        "skipped in spring does not fire, a time repeated in autumn fires once)",
        Use.STACK,
        Use.CLI,
        default="UTC",
    )
    schedule_flexible_window_minutes: int | None = setting(
        "let Scheduler start each scheduled run up to this many minutes late, to spread load (unset: on "
        "time)",
        Use.STACK,
        default=None,
        ge=1,
        le=1440,
    )
    schedule_enabled: bool = setting(
        "`false` deploys the schedules turned off (only manual runs; `customlabels-batch resume` turns "
        "them on)",
        Use.STACK,
        default=True,
    )
    max_wait_minutes: int | None = setting(
        "latency budget: start a run as soon as the oldest queued image has waited this long, between "
        "scheduled runs (unset: only the schedule starts runs)",
        Use.STACK,
        Use.STATE_MACHINE,
        Use.TRIAGE,
        default=None,
        ge=1,
    )
    start_at_backlog: int | None = setting(
        "latency budget: start a run as soon as this many images are queued (unset: no backlog rule)",
        Use.STACK,
        Use.STATE_MACHINE,
        default=None,
        ge=1,
    )
    latency_check_minutes: int = setting(
        "how often the latency budget is checked (a check that finds no rule met costs a few state "
        "transitions; deployed only when `maxWaitMinutes` or `startAtBacklog` is set)",
        Use.STACK,
        default=5,
        ge=1,
        le=60,
    )
    notification_email: str | None = setting(
        "subscribe this address to the topic (confirm the e-mail AWS sends)",
        Use.STACK,
        default=None,
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
        form="an e-mail address",
    )
    # ---- monitoring ----------------------------------------------------------------------------
    alarms_enabled: bool = setting(
        "create the CloudWatch alarms (they notify the topic)", Use.MONITORING, default=True
    )
    model_in_service_alarm_minutes: int = setting(
        "alarm when the model has been in service this long (at least the longest healthy run)",
        Use.MONITORING,
        default=300,
        le=1440,
    )
    error_records_alarm_threshold: int = setting(
        "alarm when more error records than this are written in an hour", Use.MONITORING, default=50, ge=0
    )
    usd_per_inference_unit_hour: float = setting(
        "the model's price per inference-unit hour, for run records and the dashboard's cost estimate",
        Use.RUN_RECORDER,
        Use.MONITORING,
        default=4.0,
        gt=0,
    )
    # ---- deployment ----------------------------------------------------------------------------
    powertools_version: str = setting(
        "the Powertools public layer version the functions run on (default: the locked package's)",
        Use.STACK,
        default_factory=_installed_powertools,
        pattern=r"^\d+\.\d+\.\d+$",
        form="a release number like 3.37.0",
    )
    stack_name: str = setting(
        "CloudFormation stack name (the CLI's `--stack-name` default)",
        Use.STACK,
        Use.CLI,
        default="CustomLabelsBatchPipeline",
        pattern=r"^[A-Za-z][A-Za-z0-9-]{0,127}$",
        form="a CloudFormation stack name (letters, digits, hyphens; a letter first)",
    )

    @field_validator("project_arn", "project_version_arn", mode="after")
    @classmethod
    def _arn(cls, value: str, info: Any) -> str:
        pattern = _PROJECT_ARN if info.field_name == "project_arn" else _VERSION_ARN
        if not pattern.match(value):
            key = to_camel(info.field_name)
            raise ValueError(f"expected an ARN like {_EXAMPLES[key]}")
        return value

    @field_validator("schedule_timezone", mode="after")
    @classmethod
    def _time_zone(cls, value: str) -> str:
        schedules.zone(value)  # a ScheduleError is a ValueError: pydantic reports it for the key
        return value

    @property
    def latency_budget(self) -> bool:
        """Whether a rule besides the schedule can start a run (the check schedule is deployed)."""
        return self.max_wait_minutes is not None or self.start_at_backlog is not None

    def model_post_init(self, _context: Any) -> None:
        problems = [message for rule in CROSS_RULES.values() if (message := rule(self))]
        if problems:
            raise ConfigError("; ".join(problems))

    # ---- derived values ------------------------------------------------------------------------
    @property
    def region(self) -> str:
        return _VERSION_ARN.match(self.project_version_arn)["region"]

    @property
    def account(self) -> str:
        return _VERSION_ARN.match(self.project_version_arn)["account"]

    @property
    def project_name(self) -> str:
        return _PROJECT_ARN.match(self.project_arn)["project"]

    @property
    def version_name(self) -> str:
        return _VERSION_ARN.match(self.project_version_arn)["version"]

    @property
    def concurrency(self) -> int:
        """Processor environments at once: enough calls in flight for every unit the model may have."""
        units = self.max_inference_units or self.min_inference_units
        return self.max_concurrency or min(1000, CONCURRENCY_PER_INFERENCE_UNIT * units)

    @property
    def visibility_timeout_seconds(self) -> int:
        # AWS guidance for SQS event sources: at least 6x the function timeout.
        return 6 * self.processor_timeout_seconds

    @property
    def longest_healthy_run_minutes(self) -> int:
        """How long a run that fails nowhere can hold the model with these settings."""
        seconds = (
            self.model_start_timeout_seconds
            + 2 * self.mapping_timeout_seconds
            + self.max_drain_seconds
            + self.in_flight_wait_seconds
        )
        return math.ceil(seconds / 60)

    @property
    def longest_run_seconds(self) -> int:
        """The longest a run can last with these settings: every phase up to its deadline."""
        return (
            self.model_start_timeout_seconds
            + 3 * self.mapping_timeout_seconds
            + self.max_drain_seconds
            + self.in_flight_wait_seconds
            + self.clean_up_timeout_seconds
            + self.metrics_settle_seconds
        )

    @property
    def worst_case_history_events(self) -> int:
        """History events of a run that reaches every deadline (statemachine/batch_run.asl.json: each
        loop is a Wait, four observing tasks and the Decide choice; a clean-up loop adds a refused
        call with its retries)."""
        polls = (
            math.ceil(
                (self.model_start_timeout_seconds + self.mapping_timeout_seconds) / self.model_poll_seconds
            )
            + math.ceil(self.mapping_timeout_seconds / self.mapping_poll_seconds)
            + math.ceil(self.max_drain_seconds / self.drain_poll_seconds)
            + QUICK_DRAIN_POLLS
            + math.ceil(
                (self.in_flight_wait_seconds + self.mapping_timeout_seconds) / self.mapping_poll_seconds
            )
        )
        clean_up_polls = math.ceil(self.clean_up_timeout_seconds / self.mapping_poll_seconds)
        return (
            HISTORY_EVENTS_FIXED
            + polls * HISTORY_EVENTS_PER_LOOP
            + clean_up_polls * HISTORY_EVENTS_PER_CLEAN_UP_LOOP
        )

    def to_context(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True)

    # ---- what each consumer gets ---------------------------------------------------------------
    def values_for(self, use: Use) -> dict[str, Any]:
        """The declared settings `use` reads, by their camelCase names."""
        return {to_camel(field): value for field, value in self._fields_for(use).items()}

    def _fields_for(self, use: Use) -> dict[str, Any]:
        return {field: getattr(self, field) for field, _ in _names() if use.value in _used_by(field)}

    def function_settings(self, use: Use, **resources: str) -> str:
        """The JSON a Lambda function reads at import (lambdas/settings.py): its declared settings,
        what is derived for it, and the names of the resources it works on."""
        values = self.values_for(use) | _DERIVED.get(use, lambda _: {})(self) | resources
        return json.dumps(values, sort_keys=True, separators=(",", ":"))

    def function_environment(self, use: Use, **resources: str) -> dict[str, str]:
        environment = {FUNCTION_SETTINGS_VARIABLE: self.function_settings(use, **resources)}
        services = {Use.PROCESSOR: PROCESSOR_SERVICE_NAME, Use.TRIAGE: TRIAGE_SERVICE_NAME}
        if use in services:
            environment["POWERTOOLS_SERVICE_NAME"] = services[use]
            environment["POWERTOOLS_METRICS_NAMESPACE"] = PROCESSOR_METRICS_NAMESPACE
        return environment

    def definition_substitutions(self, **resources: str) -> dict[str, str]:
        """Values for every `${Placeholder}` in the ASL: the state machine's settings under their
        PascalCase names, what is derived for it, and its resources. The stack and the emulator
        both use this."""
        values = {to_pascal(field): value for field, value in self._fields_for(Use.STATE_MACHINE).items()}
        values |= _DERIVED[Use.STATE_MACHINE](self)
        values |= resources
        return {name: _substitution(value) for name, value in values.items()}

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> Settings:
        """From cdk.json context and `-c key=value` flags. Empty values mean "unset"; keys of our form
        that name no setting are refused with the nearest match; CDK's own keys are ignored."""
        names = {name for _, name in _names()}
        unknown = sorted(k for k in context if _OWN_KEY.match(k) and k not in names)
        if unknown:
            hints = [
                f"'{key}'"
                + (
                    f" (did you mean '{match[0]}'?)"
                    if (match := difflib.get_close_matches(key, names, 1))
                    else ""
                )
                for key in unknown
            ]
            raise ConfigError(
                f"unknown setting {', '.join(hints)}: the README's Configuration table lists them"
            )
        values = {k: v for k, v in context.items() if k in names and v is not None and v != ""}
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            raise ConfigError(_describe(error)) from None

    @classmethod
    def from_cdk_json(cls, overrides: Mapping[str, Any] | None = None, path: Path | None = None) -> Settings:
        """cdk.json's context (the one in `path`, else in the current directory, if any) with overrides."""
        path = path or Path("cdk.json")
        context = dict(json.loads(path.read_text())["context"]) if path.is_file() else {}
        context.update(overrides or {})
        return cls.from_context(context)


# ---- rules across settings: each returns what is wrong, or None ---------------------------------
def _version_in_project(s: Settings) -> str | None:
    project, version = _PROJECT_ARN.match(s.project_arn), _VERSION_ARN.match(s.project_version_arn)
    if [project[g] for g in ("region", "account", "project")] != [
        version[g] for g in ("region", "account", "project")
    ]:
        return (
            "projectVersionArn does not belong to projectArn: pass the version ARN of a model in that "
            "project (same region, account and project name)"
        )
    return None


def _prefixes_apart(s: Settings) -> str | None:
    # Overlap would feed results back into the queue as new images.
    prefixes = [s.input_prefix, s.results_prefix, s.errors_prefix, s.runs_prefix]
    for i, a in enumerate(prefixes):
        for j, b in enumerate(prefixes):
            if i != j and b.startswith(a):
                return f"prefixes must not overlap: {a!r} contains {b!r}"
    return None


def _units_ordered(s: Settings) -> str | None:
    if s.max_inference_units is not None and s.max_inference_units < s.min_inference_units:
        return "maxInferenceUnits must be at least minInferenceUnits"
    return None


def _drain_target_has_units_to_choose(s: Settings) -> str | None:
    if s.target_drain_minutes is not None and s.max_inference_units is None:
        return "targetDrainMinutes needs maxInferenceUnits: the units it may choose from"
    return None


def _start_timeout_covers_a_poll(s: Settings) -> str | None:
    if s.model_start_timeout_seconds < s.model_poll_seconds:
        return "modelStartTimeoutSeconds must be at least modelPollSeconds"
    return None


def _drain_limit_covers_a_poll(s: Settings) -> str | None:
    if s.max_drain_seconds < s.drain_poll_seconds:
        return "maxDrainSeconds must be at least drainPollSeconds"
    return None


def _schedule_evaluates(s: Settings) -> str | None:
    try:
        schedules.validate(s.schedule, s.schedule_timezone)
    except schedules.ScheduleError as error:
        return str(error)
    return None


def _check_within_budget(s: Settings) -> str | None:
    if s.max_wait_minutes is not None and s.max_wait_minutes < s.latency_check_minutes:
        return (
            f"maxWaitMinutes ({s.max_wait_minutes}) must be at least latencyCheckMinutes "
            f"({s.latency_check_minutes}): a check can only start a run once the wait has passed"
        )
    return None


def _alarm_outlasts_a_healthy_run(s: Settings) -> str | None:
    longest = s.longest_healthy_run_minutes
    if s.model_in_service_alarm_minutes < longest:
        return (
            f"modelInServiceAlarmMinutes must be {longest}-1440: a healthy run can hold the model "
            f"{longest} minutes with these settings, and CloudWatch evaluates at most a day"
        )
    return None


def _history_fits(s: Settings) -> str | None:
    events = s.worst_case_history_events
    if events > HISTORY_EVENT_LIMIT:
        drain_polls = (
            HISTORY_EVENT_LIMIT
            - (events - math.ceil(s.max_drain_seconds / s.drain_poll_seconds) * HISTORY_EVENTS_PER_LOOP)
        ) // HISTORY_EVENTS_PER_LOOP
        hint = (
            f"; with the other settings as they are, drainPollSeconds must be at least "
            f"{math.ceil(s.max_drain_seconds / drain_polls)}"
            if drain_polls > 0
            else ""
        )
        return (
            f"a run with these settings can record {events:,} history events and Step Functions fails an "
            f"execution at {HISTORY_EVENT_LIMIT:,}: poll less often or lower the time limits{hint}"
        )
    return None


def _powertools_layer_published(s: Settings) -> str | None:
    # python3.14 arm64 layer parameters exist for every release from 3.24.0 (stacks/functions.py).
    if tuple(int(part) for part in s.powertools_version.split(".")) < (3, 24, 0):
        return (
            f"powertoolsVersion must be 3.24.0 or newer (got {s.powertools_version}): older releases "
            "publish no python3.14 layer parameter"
        )
    return None


CROSS_RULES: dict[str, Callable[[Settings], str | None]] = {
    "powertools layer published": _powertools_layer_published,
    "version in project": _version_in_project,
    "prefixes apart": _prefixes_apart,
    "units ordered": _units_ordered,
    "drain target has units to choose": _drain_target_has_units_to_choose,
    "start timeout covers a poll": _start_timeout_covers_a_poll,
    "drain limit covers a poll": _drain_limit_covers_a_poll,
    "schedule evaluates": _schedule_evaluates,
    "check within budget": _check_within_budget,
    "alarm outlasts a healthy run": _alarm_outlasts_a_healthy_run,
    "history fits": _history_fits,
}


# ---- values derived for a consumer ---------------------------------------------------------------
def _state_machine_derived(s: Settings) -> dict[str, Any]:
    return {
        "ModelVersionName": s.version_name,
        "QuickDrainPolls": QUICK_DRAIN_POLLS,
        "MaxInferenceUnits": s.max_inference_units or 0,
        "TargetDrainMinutes": s.target_drain_minutes or 0,
        # The latency budget's rules; 0 turns a rule off.
        "MaxWaitMinutes": s.max_wait_minutes or 0,
        "StartAtBacklog": s.start_at_backlog or 0,
        # Enabling the mapping sizes its concurrency to the units the running model reports (someone
        # may have started it with more); 0 keeps an explicit maxConcurrency as deployed.
        "ConcurrencyPerInferenceUnit": 0 if s.max_concurrency else CONCURRENCY_PER_INFERENCE_UNIT,
        # At a model an earlier run measured as slow, fewer environments per unit (each then has a
        # larger share of the model): enough that a batch takes at most a third of the processor's
        # timeout at the measured calls per second per unit, at most CONCURRENCY_PER_INFERENCE_UNIT.
        # (At 2 calls/s that is 4 per unit; the state machine adds at least one per call in flight at
        # the measured p95 latency. The README's "Models of every speed" has what they did.)
        "EnvironmentsPerCallPerSecond": round(s.processor_timeout_seconds / 3 / s.batch_size, 3),
        # The lease outlives the longest run these settings allow, so an expired lease can only
        # belong to a run that has ended.
        "LeaseSeconds": s.longest_run_seconds + LEASE_MARGIN_SECONDS,
    }


def _run_recorder_derived(s: Settings) -> dict[str, Any]:
    return {
        "processorMetricsNamespace": PROCESSOR_METRICS_NAMESPACE,
        "processorServiceName": PROCESSOR_SERVICE_NAME,
        "processorMemoryMb": s.processor_memory_mb,
        # The dimensions of AWS/Rekognition InServiceInferenceUnits for this model.
        "projectName": s.project_name,
        "versionName": s.version_name,
    }


_DERIVED: dict[Use, Callable[[Settings], dict[str, Any]]] = {
    Use.RUN_RECORDER: _run_recorder_derived,
    Use.STATE_MACHINE: _state_machine_derived,
}


# ---- helpers -----------------------------------------------------------------------------------
def _names() -> Iterator[tuple[str, str]]:
    for field, info in Settings.model_fields.items():
        yield field, info.alias or to_camel(field)


def _used_by(field: str) -> list[str]:
    return Settings.model_fields[field].json_schema_extra["usedBy"]


def _form(key: str) -> str | None:
    fields = {name: field for field, name in _names()}
    return Settings.model_fields[fields[key]].json_schema_extra["form"] if key in fields else None


def _substitution(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _describe(error: ValidationError) -> str:
    """pydantic's errors as one line that names each setting by its key."""
    parts = []
    for item in error.errors(include_url=False):
        key = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if not key:  # a rule across settings names them itself
            parts.append(message)
        elif item["type"] == "missing":
            example = _EXAMPLES.get(key, "<value>")
            parts.append(
                f"Missing context '{key}': pass -c {key}=<ARN> (or set it in cdk.json), e.g. {example}"
            )
        elif key in _EXAMPLES:
            parts.append(f"Malformed context '{key}' ({item['input']!r}): {message}")
        elif item["type"] == "string_pattern_mismatch" and _form(key):
            parts.append(f"'{key}' must be {_form(key)} (got {item['input']!r})")
        else:
            parts.append(f"'{key}' has an invalid value {item['input']!r}: {item['msg']}")
    return "; ".join(parts)


def readme_table() -> str:
    """The README's configuration table, generated from the declaration (a test keeps them equal)."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for field, name in _names():
        info = Settings.model_fields[field]
        if info.is_required():
            default = "required"
        elif info.default_factory is not None:
            default = f"`{info.default_factory()}`"
        elif info.default is None:
            default = "unset"
        else:
            default = f"`{_substitution(info.default)}`"
        rows.append(f"| `{name}` | {default} | {info.description}{_bounds(info)} |")
    return "\n".join(rows)


def _bounds(info: Any) -> str:
    def bound(kind: type) -> float | None:
        return next((getattr(m, kind.__name__.lower()) for m in info.metadata if isinstance(m, kind)), None)

    ge, gt, le = bound(annotated_types.Ge), bound(annotated_types.Gt), bound(annotated_types.Le)
    if ge is not None and le is not None:
        return f" ({ge:g}-{le:g})"
    if ge is not None:
        return f" (at least {ge:g})"
    if gt is not None:
        return f" (more than {gt:g})"
    if le is not None:
        return f" (at most {le:g})"
    return ""


def _write_readme(path: Path) -> None:
    """Replace the configuration table in `path` (from its header row to the first non-table line)."""
    lines = path.read_text().splitlines()
    start = lines.index("| key | default | meaning |")
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    path.write_text("\n".join([*lines[:start], readme_table(), *lines[end:]]) + "\n")


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] != ["--write-readme"] or len(sys.argv) != 3:
        sys.exit("usage: python -m customlabels_batch.settings --write-readme README.md")
    _write_readme(Path(sys.argv[2]))
