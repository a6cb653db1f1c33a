"""Run recorder: writes a batch run's JSON run record to S3 and returns it as the run's SNS summary.

The state machine invokes it once at the end of every run that reached the model: succeeded, failed
or cleaned up. The state machine supplies what only it knows (when the model was seen RUNNING and
when its stop was requested, the outcome, any error); this function adds what it can count (images
labeled and error records from the processor's metrics, what is left in the queue and the
dead-letter queue), how long its images waited from upload to result (p50, p95, the longest), and
the arithmetic ASL cannot do (minutes, cost).
"""

from __future__ import annotations

import functools
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from .. import settings

RECORD_VERSION = 1
# Processor metric name -> record field (all Count metrics the processor emits per image).
COUNTED_METRICS = {
    "ImagesLabeled": "imagesLabeled",
    "ErrorRecords": "errorRecords",
    "LabelsFound": "labelsFound",
}
METRIC_PERIOD_SECONDS = 60
# Lambda on arm64 (the stack's architecture), us-east-1, per GB-second of billed duration.
USD_PER_LAMBDA_GB_SECOND = 0.0000133334
# A minute counts as "the model was full" when at least this share of its calls was throttled: the
# processors ask a little more than the model takes, so its accepted calls are its capacity.
SATURATED_THROTTLED_SHARE = 0.02
# The processor's per-image wait from upload to result; the record reports these of the run's images
# (query id -> statistic; CloudWatch computes percentiles from the values the processor emitted).
TIME_TO_RESULT_METRIC = "TimeToResultSeconds"
TIME_TO_RESULT_STATS = {"images": "SampleCount", "p50": "p50", "p95": "p95", "max": "Maximum"}

logger = Logger(service="customlabels-run-recorder")


# Read once, at import: the stack sets them from the declared settings.
SETTINGS = settings.load()


@functools.cache
def client(service: str) -> Any:
    return boto3.client(service)


def parse_time(value: str) -> datetime:
    """Step Functions timestamps are ISO 8601 in UTC ('2026-11-22T10:00:00.123Z')."""
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def record_key(runs_prefix: str, started_at: datetime, execution_name: str) -> str:
    """Keys sort by start time, so a listing's last keys are the newest runs."""
    safe_name = re.sub(r"[^A-Za-z0-9_.-]", "-", execution_name)
    return f"{runs_prefix}{started_at.astimezone(UTC):%Y-%m-%dT%H-%M-%SZ}_{safe_name}.json"


def trigger_of(execution_input: Any) -> str:
    if isinstance(execution_input, dict):
        if "cleanup" in execution_input:
            return "cleanup"
        if isinstance(execution_input.get("trigger"), str):
            return execution_input["trigger"]
    return "manual"


def model_window(run: dict[str, Any], ended_at: datetime) -> tuple[datetime, datetime] | None:
    """From the moment this run saw the model RUNNING to the moment it asked for the stop, or, when
    the model stopped without this run (someone else stopped it), the last time the run saw it
    RUNNING. None when the run never saw it RUNNING."""
    running = (run.get("modelRunning") or {}).get("at")
    if not running:
        return None
    stop = (run.get("modelStopRequested") or {}).get("at") or (run.get("modelLastSeenRunning") or {}).get(
        "at"
    )
    return parse_time(running), parse_time(stop) if stop else ended_at


def build_record(
    event: dict[str, Any], counts: dict[str, Any], problems: list[str], *, usd_per_inference_unit_hour: float
) -> dict[str, Any]:
    """The run record: the state machine's summary plus minutes, cost and counts. Pure."""
    summary = event["summary"]
    run = summary.get("run") or {}
    run_settings = event.get("settings") or {}
    started_at = parse_time(run["startedAt"])
    ended_at = parse_time(event["endedAt"])
    window = model_window(run, ended_at)
    minutes = max(0.0, (window[1] - window[0]).total_seconds() / 60) if window else 0.0
    # The units DescribeProjectVersions reported for the running model (someone else may have
    # started it with more than configured); the configured number when the run never saw it run.
    units = summary.get("inferenceUnits") or run_settings.get("minInferenceUnits", 1)
    max_units = run_settings.get("maxInferenceUnits") or None
    record = {
        "recordVersion": RECORD_VERSION,
        "outcome": summary["outcome"],
        "execution": run.get("execution"),
        "executionName": event["executionName"],
        "trigger": trigger_of(event.get("input")),
        "startedAt": iso(started_at),
        "endedAt": iso(ended_at),
        "durationSeconds": round((ended_at - started_at).total_seconds()),
        "modelStartedByRun": bool(run.get("startedModel")),
        "modelRunningFrom": iso(window[0]) if window else None,
        "modelStopRequestedAt": iso(window[1]) if window else None,
        "modelRunningMinutes": round(minutes, 2),
        "inferenceUnits": units,
        "maxInferenceUnits": max_units,
        # How this run chose the units it started the model with (targetDrainMinutes).
        "unitsChosen": run.get("unitsChosen"),
        # How many environments per unit the mapping was given (fewer at a model measured as slow).
        "environmentsChosen": run.get("environmentsChosen"),
        "estimatedCostUsd": round(minutes / 60 * units * usd_per_inference_unit_hour, 4),
        "estimate": (
            f"RUNNING minutes seen by this run x {units} inference unit(s) x "
            f"${usd_per_inference_unit_hour:.2f} per inference-unit hour"
            + ("; auto-scaling may have added units (see InServiceInferenceUnits)" if max_units else "")
        ),
        **counts,
        "drainTimeLimitReached": summary["outcome"] == "DRAIN_LIMIT",
        # What the run saw last, what it turned off, and what it could not turn off.
        "modelStatusAtEnd": summary.get("modelStatus"),
        "mappingStateAtEnd": summary.get("mappingState"),
        "turnedOff": summary.get("turnedOff") or [],
        "stillOn": summary.get("stillOn") or [],
    }
    for optional in ("reason", "error"):
        if summary.get(optional) is not None:
            record[optional] = summary[optional]
    _judge_dead_letters(record, run, problems)
    execution_input = event.get("input")
    if isinstance(execution_input, dict) and isinstance(execution_input.get("cleanup"), dict):
        record["cleanupOf"] = execution_input["cleanup"]
    if problems:
        record["problems"] = problems
    return record


def _judge_dead_letters(record: dict[str, Any], run: dict[str, Any], problems: list[str]) -> None:
    """A run that sent messages to the dead-letter queue left their images without a result: it did
    not do its job, so it is INCOMPLETE, not SUCCEEDED. Growth is the depth at the end minus the depth
    the run counted at its start (a redrive during the run would hide what it added)."""
    at_start, at_end = run.get("deadLetterQueueMessagesAtStart"), record.get("deadLetterQueueMessages")
    known = all(isinstance(count, int | float) for count in (at_start, at_end))
    growth = int(at_end) - int(at_start) if known else None
    record["deadLetterQueueMessagesAtStart"] = int(at_start) if isinstance(at_start, int | float) else None
    record["deadLetterQueueGrowth"] = growth
    if growth is None and record["outcome"] == "SUCCEEDED":
        why = run.get("deadLetterQueueCountError") or "a count is missing"
        problems.append(f"the dead-letter queue's growth during the run is not known ({why})")
    if growth and growth > 0 and record["outcome"] == "SUCCEEDED":
        record["outcome"] = "INCOMPLETE"
        record["reason"] = (
            f"{growth} message(s) reached the dead-letter queue during this run: their images have no "
            "result; once the cause is fixed, `customlabels-batch redrive` puts them back on the queue"
        )


def count_processor_metrics(started_at: datetime, ended_at: datetime) -> dict[str, int]:
    """Sums of the processor's per-image metrics over the run, whole minutes at both ends (only one
    run holds the mapping at a time, and the state machine waits for the metrics to settle)."""
    start = started_at.replace(second=0, microsecond=0)
    end = ended_at.replace(second=0, microsecond=0) + timedelta(minutes=1)
    queries = [
        {
            "Id": field,  # the record's field names are valid query ids
            "MetricStat": {
                "Metric": {
                    "Namespace": SETTINGS.processor_metrics_namespace,
                    "MetricName": name,
                    "Dimensions": [{"Name": "service", "Value": SETTINGS.processor_service_name}],
                },
                "Period": METRIC_PERIOD_SECONDS,
                "Stat": "Sum",
            },
            "ReturnData": True,
        }
        for name, field in COUNTED_METRICS.items()
    ]
    totals = dict.fromkeys(COUNTED_METRICS.values(), 0)
    for page in (
        client("cloudwatch")
        .get_paginator("get_metric_data")
        .paginate(MetricDataQueries=queries, StartTime=start, EndTime=end)
    ):
        for result in page["MetricDataResults"]:
            totals[result["Id"]] += round(sum(result["Values"]))
    return totals


def time_to_result(started_at: datetime, ended_at: datetime) -> dict[str, Any] | None:
    """How long the run's images waited from upload to result: p50, p95 and the longest, in seconds,
    over one period spanning the run (whole minutes at both ends). None when it labeled nothing."""
    start = started_at.replace(second=0, microsecond=0)
    end = ended_at.replace(second=0, microsecond=0) + timedelta(minutes=1)
    period = int((end - start).total_seconds())
    metric = {
        "Namespace": SETTINGS.processor_metrics_namespace,
        "MetricName": TIME_TO_RESULT_METRIC,
        "Dimensions": [{"Name": "service", "Value": SETTINGS.processor_service_name}],
    }
    queries = [
        {"Id": query_id, "MetricStat": {"Metric": metric, "Period": period, "Stat": stat}, "ReturnData": True}
        for query_id, stat in TIME_TO_RESULT_STATS.items()
    ]
    response = client("cloudwatch").get_metric_data(MetricDataQueries=queries, StartTime=start, EndTime=end)
    first = {r["Id"]: (r["Values"] or [None])[0] for r in response["MetricDataResults"]}
    if not first.get("images"):
        return None
    return {
        "images": round(first["images"]),
        "p50Seconds": _rounded(first.get("p50")),
        "p95Seconds": _rounded(first.get("p95")),
        "maxSeconds": _rounded(first.get("max")),
    }


def count_messages(queue_url: str) -> int:
    attributes = client("sqs").get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def _metric_query(
    query_id: str, namespace: str, name: str, dimensions: list, *, stat: str, period: int
) -> dict:
    return {
        "Id": query_id,
        "MetricStat": {
            "Metric": {"Namespace": namespace, "MetricName": name, "Dimensions": dimensions},
            "Period": period,
            "Stat": stat,
        },
        "ReturnData": True,
    }


def _series(queries: list[dict], start: datetime, end: datetime) -> dict[str, dict[datetime, float]]:
    series: dict[str, dict[datetime, float]] = {q["Id"]: {} for q in queries}
    for page in (
        client("cloudwatch")
        .get_paginator("get_metric_data")
        .paginate(MetricDataQueries=queries, StartTime=start, EndTime=end)
    ):
        for result in page["MetricDataResults"]:
            for moment, value in zip(result["Timestamps"], result["Values"], strict=True):
                series[result["Id"]][moment] = series[result["Id"]].get(moment, 0.0) + value
    return series


def measure_model(window: tuple[datetime, datetime] | None, units: int) -> dict[str, Any] | None:
    """What the model did while this run had it: calls accepted and throttled, call latency, the
    throughput per unit in the minutes it was full (what the next run sizes units from), units in
    service and the IU-minutes they bill (AWS/Rekognition InServiceInferenceUnits), and what the
    processor cost. None when the run never had the model RUNNING."""
    if window is None:
        return None
    start = window[0].replace(second=0, microsecond=0)
    end = window[1].replace(second=0, microsecond=0) + timedelta(minutes=1)
    whole = max(METRIC_PERIOD_SECONDS, int((end - start).total_seconds()))
    processor = [{"Name": "service", "Value": SETTINGS.processor_service_name}]
    model = [
        {"Name": "ProjectName", "Value": SETTINGS.project_name},
        {"Name": "VersionName", "Value": SETTINGS.version_name},
    ]
    namespace = SETTINGS.processor_metrics_namespace
    queries = [
        _metric_query(
            "accepted", namespace, "ModelCallsAccepted", processor, stat="Sum", period=METRIC_PERIOD_SECONDS
        ),
        _metric_query(
            "throttled", namespace, "ModelCallsThrottled", processor, stat="Sum", period=METRIC_PERIOD_SECONDS
        ),
        _metric_query(
            "units",
            "AWS/Rekognition",
            "InServiceInferenceUnits",
            model,
            stat="Average",
            period=METRIC_PERIOD_SECONDS,
        ),
        _metric_query("p50", namespace, "ModelCallSeconds", processor, stat="p50", period=whole),
        _metric_query("p95", namespace, "ModelCallSeconds", processor, stat="p95", period=whole),
        _metric_query("busy", namespace, "ProcessorSeconds", processor, stat="Sum", period=whole),
    ]
    series = _series(queries, start, end)
    accepted, throttled, in_service = series["accepted"], series["throttled"], series["units"]
    total_accepted, total_throttled = round(sum(accepted.values())), round(sum(throttled.values()))
    # Whole minutes only: the drain starts and ends within its first and last minute.
    active = sorted(minute for minute, count in accepted.items() if count)
    full = [
        minute
        for minute in active[1:-1]
        if throttled.get(minute, 0) / (accepted[minute] + throttled.get(minute, 0))
        >= SATURATED_THROTTLED_SHARE
    ]
    unit_minutes = sum(in_service.get(minute) or units for minute in full)
    per_unit = sum(accepted[m] for m in full) / (60 * unit_minutes) if unit_minutes else None
    busiest = max(accepted, key=accepted.get, default=None)
    gb_seconds = sum(series["busy"].values()) * SETTINGS.processor_memory_mb / 1024
    measured_iu_minutes = sum(in_service.values()) if in_service else None
    return {
        "acceptedCalls": total_accepted,
        "throttledCalls": total_throttled,
        "throttledShare": round(total_throttled / (total_accepted + total_throttled), 3)
        if total_accepted + total_throttled
        else None,
        "callSecondsP50": _rounded(next(iter(series["p50"].values()), None)),
        "callSecondsP95": _rounded(next(iter(series["p95"].values()), None)),
        # Measured in the whole minutes the model was full; a lower bound (the busiest minute's
        # rate) when there were none, and then not remembered for the next run.
        "saturatedMinutes": len(full),
        "acceptedPerSecondPerUnit": _rounded(per_unit)
        if per_unit is not None
        else _rounded(accepted[busiest] / 60 / (in_service.get(busiest) or units) if busiest else None),
        "capacityIsLowerBound": per_unit is None,
        "mostUnitsInService": max(in_service.values(), default=None),
        "measuredInferenceUnitMinutes": _rounded(measured_iu_minutes),
        "measuredCostUsd": _rounded(measured_iu_minutes / 60 * SETTINGS.usd_per_inference_unit_hour)
        if measured_iu_minutes is not None
        else None,
        "processorGbSeconds": _rounded(gb_seconds),
        "processorCostUsd": round(gb_seconds * USD_PER_LAMBDA_GB_SECOND, 5),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def remember_capacity(model: dict[str, Any] | None, ended_at: datetime) -> None:
    """The measured throughput per unit and p95 call latency, beside the progress counter the state
    machine reads every loop: the next run sizes its units (targetDrainMinutes) and the mapping's
    environments per unit from them."""
    if not model or model["capacityIsLowerBound"] or not model["acceptedPerSecondPerUnit"]:
        return
    p95 = model["callSecondsP95"]
    client("dynamodb").update_item(
        TableName=SETTINGS.run_state_table,
        Key={"id": {"S": "progress"}},
        UpdateExpression="SET tpsPerUnit = :tps, tpsMeasuredAt = :at"
        + (", callSecondsP95 = :p95" if p95 else " REMOVE callSecondsP95"),
        ExpressionAttributeValues={
            ":tps": {"N": str(model["acceptedPerSecondPerUnit"])},
            ":at": {"S": iso(ended_at)},
            **({":p95": {"N": str(p95)}} if p95 else {}),
        },
    )


def measure(started_at: datetime, ended_at: datetime) -> tuple[dict[str, Any], list[str]]:
    """Each count on its own: one failing leaves that field null and says why, the rest stand."""
    counts: dict[str, Any] = dict.fromkeys(COUNTED_METRICS.values())
    problems = []
    try:
        counts.update(count_processor_metrics(started_at, ended_at))
    except (BotoCoreError, ClientError) as error:
        problems.append(f"processor metrics not counted: {error}")
    try:
        counts["timeToResult"] = time_to_result(started_at, ended_at)
    except (BotoCoreError, ClientError) as error:
        counts["timeToResult"] = None
        problems.append(f"time to result not measured: {error}")
    queues = (
        ("messagesLeftInQueue", SETTINGS.queue_url),
        ("deadLetterQueueMessages", SETTINGS.dead_letter_queue_url),
    )
    for field, url in queues:
        try:
            counts[field] = count_messages(url)
        except (BotoCoreError, ClientError) as error:
            counts[field] = None
            problems.append(f"{field} not counted: {error}")
    return counts, problems


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    run = event["summary"].get("run") or {}
    started_at, ended_at = parse_time(run["startedAt"]), parse_time(event["endedAt"])
    counts, problems = measure(started_at, ended_at)
    record = build_record(
        event, counts, problems, usd_per_inference_unit_hour=SETTINGS.usd_per_inference_unit_hour
    )
    try:
        record["model"] = measure_model(model_window(run, ended_at), record["inferenceUnits"])
        remember_capacity(record["model"], ended_at)
    except (BotoCoreError, ClientError) as error:
        record["model"] = None
        record.setdefault("problems", []).append(f"model measurements not taken: {error}")
    key = record_key(SETTINGS.runs_prefix, started_at, event["executionName"])
    record["recordLocation"] = f"s3://{SETTINGS.bucket}/{key}"
    # A failed write raises: the state machine then sends its own summary with the error.
    client("s3").put_object(
        Bucket=SETTINGS.bucket,
        Key=key,
        Body=json.dumps(record, indent=2).encode(),
        ContentType="application/json",
    )
    logger.info("run record written", extra={"key": key, "outcome": record["outcome"]})
    return record
