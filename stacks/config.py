"""Pipeline configuration: one typed view of cdk.json context, read by the CDK app and the emulator.

Pure Python (no aws-cdk-lib import) so the local emulator, the CLI and the tests can use it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
CDK_JSON = REPO_ROOT / "cdk.json"
STATE_MACHINE_ASL = REPO_ROOT / "statemachine" / "batch_run.asl.json"

# With 0.4 s calls, three paced processors keep one inference unit at its 5 TPS (make bench).
CONCURRENCY_PER_INFERENCE_UNIT = 3

# The processor's Powertools service name and metrics namespace (the dashboard and the run recorder
# read its metrics by these).
PROCESSOR_SERVICE_NAME = "customlabels-processor"
PROCESSOR_METRICS_NAMESPACE = "CustomLabelsBatch"

# Execution statuses after which a Catch cannot have run (FAILED included: a States.Runtime error in
# a Pass or Choice state skips every Catch); the status-change rule starts a clean-up run for them.
CLEANUP_STATUSES = ("FAILED", "TIMED_OUT", "ABORTED")
# Every clean-up execution's input starts with this, so a failed clean-up never triggers another.
CLEANUP_INPUT_PREFIX = '{"cleanup"'

_PROJECT_ARN = re.compile(
    r"^arn:aws[a-z-]*:rekognition:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"project/(?P<project>[A-Za-z0-9][A-Za-z0-9_.\-]{0,254})/(?P<stamp>\d{13})$"
)
_VERSION_ARN = re.compile(
    r"^arn:aws[a-z-]*:rekognition:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"project/(?P<project>[A-Za-z0-9][A-Za-z0-9_.\-]{0,254})/version/"
    r"(?P<version>[A-Za-z0-9][A-Za-z0-9_.\-]{0,254})/(?P<stamp>\d{13})$"
)
_EXAMPLE_PROJECT_ARN = "arn:aws:rekognition:us-east-1:123456789012:project/my-project/1700000000000"
_EXAMPLE_VERSION_ARN = (
    "arn:aws:rekognition:us-east-1:123456789012:project/my-project/version/my-project.v1/1700000000000"
)


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message says what to pass."""


@dataclass(frozen=True)
class PipelineConfig:
    """Every tunable of the pipeline, with its default. Context keys are the field names in camelCase."""

    project_arn: str
    project_version_arn: str
    # Ingest
    input_prefix: str = "incoming/"
    results_prefix: str = "results/"
    errors_prefix: str = "errors/"
    runs_prefix: str = "runs/"
    max_receive_count: int = 6
    # Processor
    min_confidence: float | None = None
    max_results: int | None = None
    processor_timeout_seconds: int = 60
    processor_memory_mb: int = 256
    retry_delay_seconds: int = 10
    batch_size: int = 5
    max_concurrency: int | None = None  # unset: CONCURRENCY_PER_INFERENCE_UNIT x minInferenceUnits
    # Model
    # Throughput per inference unit; the processor paces its calls to this share of the model's
    # capacity (AWS's historic figure is "up to 5 TPS per IU"; it depends on the model).
    model_tps_per_inference_unit: float = 5.0
    min_inference_units: int = 1
    max_inference_units: int | None = None
    # Orchestration
    model_poll_seconds: int = 30
    model_start_timeout_seconds: int = 2700
    mapping_poll_seconds: int = 5
    mapping_timeout_seconds: int = 300
    drain_poll_seconds: int = 30
    empty_polls_required: int = 2
    max_drain_seconds: int = 4 * 3600
    in_flight_wait_seconds: int = 300
    schedule: str = "rate(1 hour)"
    schedule_enabled: bool = True
    notification_email: str | None = None
    # Monitoring
    alarms_enabled: bool = True
    # Longer than a healthy run can hold the model (start timeout + drain limit + waits): see validate().
    model_in_service_alarm_minutes: int = 300
    error_records_alarm_threshold: int = 50
    # Custom Labels list price (us-east-1); run records and the dashboard estimate cost with it.
    usd_per_inference_unit_hour: float = 4.00
    # After a run that labeled images, wait this long for the processor's metrics to reach CloudWatch
    # before counting them for the run record (the model is already stopped by then).
    metrics_settle_seconds: int = 120
    # Lambda runtime
    powertools_version: str = "3.37.0"

    # ---- derived values -------------------------------------------------------------------
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
        """Processor environments at once: enough paced callers to keep every inference unit busy."""
        return self.max_concurrency or min(1000, CONCURRENCY_PER_INFERENCE_UNIT * self.min_inference_units)

    @property
    def visibility_timeout_seconds(self) -> int:
        # AWS guidance for SQS event sources: at least 6x the function timeout.
        return 6 * self.processor_timeout_seconds

    def state_machine_settings(self) -> dict[str, int]:
        """Numeric settings the ASL reads from `$.settings` (counts derived from seconds here,
        because ASL has no division)."""
        return {
            "ModelPollSeconds": self.model_poll_seconds,
            "MaxModelPolls": math.ceil(self.model_start_timeout_seconds / self.model_poll_seconds),
            "MappingPollSeconds": self.mapping_poll_seconds,
            "MaxMappingPolls": math.ceil(self.mapping_timeout_seconds / self.mapping_poll_seconds),
            "DrainPollSeconds": self.drain_poll_seconds,
            "EmptyPollsRequired": self.empty_polls_required,
            "MaxDrainPolls": math.ceil(self.max_drain_seconds / self.drain_poll_seconds),
            "InFlightPollSeconds": self.mapping_poll_seconds,
            "MaxInFlightPolls": math.ceil(self.in_flight_wait_seconds / self.mapping_poll_seconds),
            "MinInferenceUnits": self.min_inference_units,
            "MaxInferenceUnits": self.max_inference_units or 0,
            "MetricsSettleSeconds": self.metrics_settle_seconds,
        }

    def definition_substitutions(
        self, *, queue_url: str, mapping_uuid: str, topic_arn: str, run_recorder_arn: str
    ) -> dict[str, str]:
        """Values for every `${Placeholder}` in the ASL; the CDK stack and the emulator both use this."""
        subs = {
            "ProjectArn": self.project_arn,
            "ProjectVersionArn": self.project_version_arn,
            "ModelVersionName": self.version_name,
            "QueueUrl": queue_url,
            "EventSourceMappingUuid": mapping_uuid,
            "NotificationTopicArn": topic_arn,
            "RunRecorderFunctionArn": run_recorder_arn,
        }
        subs.update({k: str(v) for k, v in self.state_machine_settings().items()})
        return subs

    def processor_environment(self, *, bucket: str) -> dict[str, str]:
        """Environment variables of the processor Lambda (the emulator sets the same)."""
        env = {
            "PROJECT_VERSION_ARN": self.project_version_arn,
            "BUCKET_NAME": bucket,
            "INPUT_PREFIX": self.input_prefix,
            "RESULTS_PREFIX": self.results_prefix,
            "ERRORS_PREFIX": self.errors_prefix,
            "RETRY_DELAY_SECONDS": str(self.retry_delay_seconds),
            "POWERTOOLS_SERVICE_NAME": PROCESSOR_SERVICE_NAME,
            "POWERTOOLS_METRICS_NAMESPACE": PROCESSOR_METRICS_NAMESPACE,
        }
        if self.model_tps_per_inference_unit > 0:
            calls = self.min_inference_units * self.model_tps_per_inference_unit / self.concurrency
            env["MAX_CALLS_PER_SECOND"] = f"{calls:.6g}"
        if self.min_confidence is not None:
            env["MIN_CONFIDENCE"] = str(self.min_confidence)
        if self.max_results is not None:
            env["MAX_RESULTS"] = str(self.max_results)
        return env

    def run_recorder_environment(
        self, *, bucket: str, queue_url: str, dead_letter_queue_url: str
    ) -> dict[str, str]:
        """Environment variables of the run-recorder Lambda (the emulator sets the same)."""
        return {
            "BUCKET_NAME": bucket,
            "RUNS_PREFIX": self.runs_prefix,
            "QUEUE_URL": queue_url,
            "DEAD_LETTER_QUEUE_URL": dead_letter_queue_url,
            "PROCESSOR_METRICS_NAMESPACE": PROCESSOR_METRICS_NAMESPACE,
            "PROCESSOR_SERVICE_NAME": PROCESSOR_SERVICE_NAME,
            "USD_PER_INFERENCE_UNIT_HOUR": f"{self.usd_per_inference_unit_hour:g}",
        }

    def to_context(self) -> dict[str, Any]:
        return {_camel(k): v for k, v in asdict(self).items()}

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def from_context(cls, get: Callable[[str], Any]) -> PipelineConfig:
        """Build from a context getter (CDK's `node.try_get_context`, or a dict's `.get`)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = get(_camel(f.name))
            if raw is None or raw == "":
                continue
            values[f.name] = _coerce(f.name, f.default, raw)
        for key, pattern, example in (
            ("project_arn", _PROJECT_ARN, _EXAMPLE_PROJECT_ARN),
            ("project_version_arn", _VERSION_ARN, _EXAMPLE_VERSION_ARN),
        ):
            value = values.get(key)
            if value is None:
                raise ConfigError(
                    f"Missing context '{_camel(key)}': pass -c {_camel(key)}=<ARN> "
                    f"(or set it in cdk.json), e.g. {example}"
                )
            if not pattern.match(value):
                raise ConfigError(
                    f"Malformed context '{_camel(key)}' ({value!r}): expected an ARN like {example}"
                )
        config = cls(**values)
        config.validate()
        return config

    @classmethod
    def from_cdk_json(cls, overrides: dict[str, Any] | None = None, path: Path = CDK_JSON) -> PipelineConfig:
        context = dict(json.loads(path.read_text())["context"])
        context.update(overrides or {})
        return cls.from_context(context.get)

    def validate(self) -> None:
        project, version = _PROJECT_ARN.match(self.project_arn), _VERSION_ARN.match(self.project_version_arn)
        if (project["region"], project["account"], project["project"]) != (
            version["region"],
            version["account"],
            version["project"],
        ):
            raise ConfigError(
                "projectVersionArn does not belong to projectArn: "
                "pass the version ARN of a model in that project (same region, account and project name)"
            )
        for name in ("input_prefix", "results_prefix", "errors_prefix", "runs_prefix"):
            prefix = getattr(self, name)
            if not prefix.endswith("/") or prefix.startswith("/"):
                raise ConfigError(f"'{_camel(name)}' must look like 'folder/' (got {prefix!r})")
        prefixes = [self.input_prefix, self.results_prefix, self.errors_prefix, self.runs_prefix]
        for i, a in enumerate(prefixes):
            for j, b in enumerate(prefixes):
                if i != j and b.startswith(a):
                    # Overlap would feed results back into the queue as new images.
                    raise ConfigError(f"prefixes must not overlap: {a!r} contains {b!r}")
        checks = [
            (1 <= self.batch_size <= 10000, "batchSize must be 1-10000"),
            (2 <= self.concurrency <= 1000, "maxConcurrency must be 2-1000 (Lambda's limits)"),
            (self.min_inference_units >= 1, "minInferenceUnits must be at least 1"),
            (
                self.max_inference_units is None or self.max_inference_units >= self.min_inference_units,
                "maxInferenceUnits must be at least minInferenceUnits",
            ),
            (
                self.min_confidence is None or 0 <= self.min_confidence <= 100,
                "minConfidence must be 0-100",
            ),
            (self.max_results is None or self.max_results >= 1, "maxResults must be at least 1"),
            (1 <= self.processor_timeout_seconds <= 900, "processorTimeoutSeconds must be 1-900"),
            (self.visibility_timeout_seconds <= 43200, "processorTimeoutSeconds x 6 must be <= 43200"),
            (1 <= self.max_receive_count <= 1000, "maxReceiveCount must be 1-1000"),
            (self.empty_polls_required >= 1, "emptyPollsRequired must be at least 1"),
            (self.model_start_timeout_seconds >= self.model_poll_seconds, "modelStartTimeoutSeconds < poll"),
            (
                self.max_drain_seconds >= self.drain_poll_seconds,
                "maxDrainSeconds must be >= drainPollSeconds",
            ),
            (
                re.match(r"^(rate\(\d+ (minute|minutes|hour|hours|day|days)\)|cron\(.+\))$", self.schedule),
                "schedule must be rate(...) or cron(...)",
            ),
        ]
        for name in (
            "model_poll_seconds",
            "mapping_poll_seconds",
            "drain_poll_seconds",
            "retry_delay_seconds",
            "in_flight_wait_seconds",
        ):
            checks.append((getattr(self, name) >= 1, f"{_camel(name)} must be at least 1"))
        longest_run = math.ceil(
            (
                self.model_start_timeout_seconds
                + 2 * self.mapping_timeout_seconds
                + self.max_drain_seconds
                + self.in_flight_wait_seconds
            )
            / 60
        )
        checks.append(
            (
                longest_run <= self.model_in_service_alarm_minutes <= 1440,
                f"modelInServiceAlarmMinutes must be {longest_run}-1440: a healthy run can hold the model "
                f"{longest_run} minutes with these settings, and CloudWatch evaluates at most a day",
            )
        )
        checks.append((self.error_records_alarm_threshold >= 0, "errorRecordsAlarmThreshold must be >= 0"))
        checks.append((self.usd_per_inference_unit_hour > 0, "usdPerInferenceUnitHour must be positive"))
        checks.append((0 <= self.metrics_settle_seconds <= 900, "metricsSettleSeconds must be 0-900"))
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        rate = re.match(r"^rate\((\d+) (minute|hour|day)(s?)\)$", self.schedule)
        if rate and (rate[1] == "1") == bool(rate[3]):
            raise ConfigError(f"schedule {self.schedule!r}: write 'rate(1 hour)' or 'rate(2 hours)'")


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.title() for part in rest)


def _coerce(name: str, default: Any, raw: Any) -> Any:
    """Context from `-c key=value` arrives as a string; cdk.json gives JSON types."""
    try:
        if isinstance(default, bool):
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("true", "false"):
                return str(raw).lower() == "true"
            raise ValueError(raw)
        if isinstance(default, int):
            value = float(raw)
            if not value.is_integer():
                raise ValueError(raw)
            return int(value)
        if name in ("min_confidence", "model_tps_per_inference_unit", "usd_per_inference_unit_hour"):
            return float(raw)
        if name in ("max_results", "max_inference_units", "max_concurrency"):
            return int(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"context '{_camel(name)}' has an invalid value {raw!r}") from None
