"""The run recorder Lambda on its own: the record it builds from a state machine summary, the counts it
takes from CloudWatch and SQS (moto), and what happens when a count or the write fails."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from aws_lambda_powertools import Metrics
from botocore.exceptions import ClientError
from moto import mock_aws

from customlabels_batch.emulator import moto_fixes
from customlabels_batch.emulator.event_source_mapping import LambdaContext
from customlabels_batch.emulator.functions import RUN_RECORDER, load_handler, read_settings
from customlabels_batch.emulator.metrics import put_emf_blob
from customlabels_batch.settings import PROCESSOR_METRICS_NAMESPACE, PROCESSOR_SERVICE_NAME, Settings, Use

REGION = "us-east-1"
BUCKET = "customlabels-test-images"
PROJECT_ARN = "arn:aws:rekognition:us-east-1:123456789012:project/p/1700000000000"
VERSION_ARN = "arn:aws:rekognition:us-east-1:123456789012:project/p/version/p.v1/1700000000001"
STARTED = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
EXECUTION = "arn:aws:states:us-east-1:123456789012:execution:batch-run:run-1"
SERVICE = [{"Name": "service", "Value": PROCESSOR_SERVICE_NAME}]
CONFIG = Settings(project_arn=PROJECT_ARN, project_version_arn=VERSION_ARN)
RUN_STATE_TABLE = "run-state"
MODEL_DIMENSIONS = [{"Name": "ProjectName", "Value": "p"}, {"Name": "VersionName", "Value": "p.v1"}]


def recorder_environment(queue_url: str = "q", dlq_url: str = "d") -> dict[str, str]:
    """The environment the stack gives the function (same source: Settings)."""
    return CONFIG.function_environment(
        Use.RUN_RECORDER,
        bucket=BUCKET,
        queueUrl=queue_url,
        deadLetterQueueUrl=dlq_url,
        runStateTable=RUN_STATE_TABLE,
    )


# The handler module as the function imports it.
app = load_handler(RUN_RECORDER, "under_test", recorder_environment())
CACHED_CLIENTS = app.client  # tests may swap app.client; the cache to clear is this one's


def at(minutes: float) -> str:
    """A Step Functions timestamp `minutes` after the run started."""
    return (STARTED + timedelta(minutes=minutes)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def settings(**overrides: Any) -> dict[str, Any]:
    return {"minInferenceUnits": 1, "maxInferenceUnits": 0, "metricsSettleSeconds": 120} | overrides


def success_event(**run: Any) -> dict[str, Any]:
    return {
        "summary": {
            "outcome": "SUCCEEDED",
            "run": {
                "execution": EXECUTION,
                "startedAt": at(0),
                "startedModel": True,
                "modelRunning": {"at": at(10)},
                "modelStopRequested": {"at": at(25)},
                "deadLetterQueueMessagesAtStart": 0,
            }
            | run,
            "inferenceUnits": 1,
            "modelHeldSeconds": 900,
        },
        "settings": settings(),
        "input": {"trigger": "schedule"},
        "executionName": "run-1",
        "endedAt": at(28),
    }


def build(event: dict[str, Any], price: float = 4.0) -> dict[str, Any]:
    return app.build_record(event, {}, [], usd_per_inference_unit_hour=price)


# ---- the record, from the summary ------------------------------------------------------------


def build_counted(event: dict[str, Any], dead_letters: int) -> dict[str, Any]:
    return app.build_record(
        event, {"deadLetterQueueMessages": dead_letters}, [], usd_per_inference_unit_hour=4
    )


def test_a_run_that_sent_messages_to_the_dead_letter_queue_is_incomplete_not_succeeded():
    record = build_counted(success_event(deadLetterQueueMessagesAtStart=1), 3)
    assert (record["outcome"], record["deadLetterQueueGrowth"]) == ("INCOMPLETE", 2)
    assert record["reason"].startswith("2 message(s) reached the dead-letter queue during this run")
    assert "customlabels-batch redrive" in record["reason"]
    # Messages that were there before the run are not this run's doing.
    record = build_counted(success_event(deadLetterQueueMessagesAtStart=3), 3)
    assert (record["outcome"], record["deadLetterQueueGrowth"]) == ("SUCCEEDED", 0)
    assert "reason" not in record


def test_a_failed_run_keeps_its_outcome_and_reason_whatever_reached_the_dead_letter_queue():
    event = success_event()
    event["summary"] |= {"outcome": "STALLED", "reason": "nothing labeled for 300 s"}
    record = build_counted(event, 4)
    assert (record["outcome"], record["reason"], record["deadLetterQueueGrowth"]) == (
        "STALLED",
        "nothing labeled for 300 s",
        4,
    )


def test_a_dead_letter_count_that_failed_at_the_start_is_a_problem_the_record_names():
    event = success_event(deadLetterQueueMessagesAtStart=None, deadLetterQueueCountError="Sqs.SqsException")
    record = build_counted(event, 2)
    assert (record["outcome"], record["deadLetterQueueGrowth"]) == ("SUCCEEDED", None)
    assert record["problems"] == [
        "the dead-letter queue's growth during the run is not known (Sqs.SqsException)"
    ]


def test_minutes_and_cost_run_from_running_to_the_stop_request():
    record = build(success_event())
    assert record["outcome"] == "SUCCEEDED"
    assert record["startedAt"] == STARTED.isoformat().replace("+00:00", "Z")
    assert record["endedAt"] == at(28).replace(".000Z", "Z")
    assert record["durationSeconds"] == 28 * 60
    assert record["modelRunningFrom"] == at(10).replace(".000Z", "Z")
    assert record["modelStopRequestedAt"] == at(25).replace(".000Z", "Z")
    assert record["modelRunningMinutes"] == 15
    assert record["estimatedCostUsd"] == 1.0  # 15 minutes of 1 IU at $4/IU-hour
    assert record["trigger"] == "schedule"
    assert record["execution"] == EXECUTION


def test_cost_scales_with_units_and_price_and_says_so_under_auto_scaling():
    event = success_event()
    event["settings"] = settings(minInferenceUnits=2, maxInferenceUnits=5)
    event["summary"]["inferenceUnits"] = 2
    record = build(event, price=3.0)
    assert record["inferenceUnits"] == 2
    assert record["maxInferenceUnits"] == 5
    assert record["estimatedCostUsd"] == pytest.approx(15 / 60 * 2 * 3.0)
    assert "auto-scaling" in record["estimate"]
    assert "auto-scaling" not in build(success_event())["estimate"]


def test_a_model_stopped_by_someone_else_counts_until_the_run_last_saw_it_running():
    event = success_event(
        modelStopRequested=None, modelLastSeenRunning={"at": at(11)}, cleanUp={"at": at(16)}
    )
    event["summary"]["outcome"] = "FAILED"
    event["summary"]["reason"] = "the model went STOPPED during the drain (stopped outside this run?)"
    record = build(event)
    assert record["modelRunningMinutes"] == 1
    assert record["reason"].startswith("the model went STOPPED")


def test_units_are_the_ones_the_running_model_reported_not_the_configured_ones():
    event = success_event()
    event["summary"]["inferenceUnits"] = 4  # someone else started it with 4
    record = build(event)
    assert record["inferenceUnits"] == 4
    assert record["estimatedCostUsd"] == pytest.approx(15 / 60 * 4 * 4.0)


def test_what_the_run_turned_off_and_could_not_is_recorded():
    event = success_event()
    event["summary"] |= {
        "outcome": "FAILED",
        "turnedOff": ["mapping (was Enabled)"],
        "stillOn": ["model RUNNING"],
        "modelStatus": "RUNNING",
        "mappingState": "Disabled",
    }
    record = build(event)
    assert (record["turnedOff"], record["stillOn"]) == (["mapping (was Enabled)"], ["model RUNNING"])
    assert (record["modelStatusAtEnd"], record["mappingStateAtEnd"]) == ("RUNNING", "Disabled")


def test_a_model_never_seen_running_costs_nothing():
    event = success_event(modelRunning=None, modelStopRequested=None, cleanUp={"at": at(45)})
    event["summary"]["outcome"] = "FAILED"
    record = build(event)
    assert record["modelRunningFrom"] is None
    assert record["modelRunningMinutes"] == 0
    assert record["estimatedCostUsd"] == 0


def test_a_model_still_running_at_the_end_counts_to_the_end():
    record = build(success_event(modelStopRequested=None))
    assert record["modelRunningMinutes"] == 18


@pytest.mark.parametrize(
    ("execution_input", "trigger"),
    [
        ({"trigger": "schedule"}, "schedule"),
        ({"trigger": "manual"}, "manual"),
        ({}, "manual"),
        ("not an object", "manual"),
        ({"cleanup": {"execution": "arn:x", "status": "ABORTED"}}, "cleanup"),
    ],
)
def test_trigger_comes_from_the_execution_input(execution_input, trigger):
    event = success_event()
    event["input"] = execution_input
    record = build(event)
    assert record["trigger"] == trigger
    if trigger == "cleanup":
        assert record["cleanupOf"] == {"execution": "arn:x", "status": "ABORTED"}
    else:
        assert "cleanupOf" not in record


def test_record_keys_sort_by_start_time_and_are_safe():
    early = app.record_key("runs/", STARTED, "b-name")
    late = app.record_key("runs/", STARTED + timedelta(seconds=1), "a-name")
    assert early < late
    assert early == f"runs/{STARTED:%Y-%m-%dT%H-%M-%SZ}_b-name.json"
    assert app.record_key("runs/", STARTED, "odd name/ü").endswith("_odd-name--.json")


# ---- the handler, on moto ------------------------------------------------------------------


class Aws:
    def __init__(self) -> None:
        self.s3 = boto3.client("s3", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.cloudwatch = boto3.client("cloudwatch", region_name=REGION)
        self.s3.create_bucket(Bucket=BUCKET)
        self.queue_url = self.sqs.create_queue(QueueName="images")["QueueUrl"]
        self.dlq_url = self.sqs.create_queue(QueueName="images-dlq")["QueueUrl"]
        boto3.client("dynamodb", region_name=REGION).create_table(
            TableName=RUN_STATE_TABLE,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )

    def metric(
        self, name: str, value: float, minutes: float, *, unit: str = "Count", model: bool = False
    ) -> None:
        """A processor metric, or with model=True one of the model's (AWS/Rekognition)."""
        self.cloudwatch.put_metric_data(
            Namespace="AWS/Rekognition" if model else PROCESSOR_METRICS_NAMESPACE,
            MetricData=[
                {
                    "MetricName": name,
                    "Dimensions": MODEL_DIMENSIONS if model else SERVICE,
                    "Value": value,
                    "Unit": unit,
                    "Timestamp": STARTED + timedelta(minutes=minutes),
                }
            ],
        )

    def waits(self, seconds: list[float], minutes: float) -> None:
        self.cloudwatch.put_metric_data(
            Namespace=PROCESSOR_METRICS_NAMESPACE,
            MetricData=[
                {
                    "MetricName": "TimeToResultSeconds",
                    "Dimensions": SERVICE,
                    "Values": seconds,
                    "Unit": "Seconds",
                    "Timestamp": STARTED + timedelta(minutes=minutes),
                }
            ],
        )

    def record(self, key: str) -> dict[str, Any]:
        return json.loads(self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):
    for name, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(name, value)
    CACHED_CLIENTS.cache_clear()
    with mock_aws(), contextlib.ExitStack() as fixes:
        for patch in moto_fixes._cloudwatch_percentiles():  # moto answers no percentile (moto_fixes)
            fixes.enter_context(patch)
        resources = Aws()
        environment = recorder_environment(resources.queue_url, resources.dlq_url)
        monkeypatch.setattr(app, "SETTINGS", read_settings(environment))
        yield resources
    CACHED_CLIENTS.cache_clear()


CONTEXT = LambdaContext(
    function_name="run-recorder",
    invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:run-recorder",
    memory_limit_in_mb=256,
    aws_request_id="test",
    timeout_seconds=60,
)


def test_handler_counts_the_runs_metrics_and_queues_and_writes_the_record(aws):
    for minute in (11, 12, 20):
        aws.metric("ImagesLabeled", 5, minute)
    aws.metric("ErrorRecords", 2, 12)
    aws.metric("LabelsFound", 9, 12)
    aws.metric("ImagesLabeled", 100, -30)  # an earlier run: outside this one
    aws.metric("ImagesLabeled", 100, 40)  # after this run ended
    aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody="{}")
    for _ in range(3):
        aws.sqs.send_message(QueueUrl=aws.dlq_url, MessageBody="{}")

    # The three were in the dead-letter queue before the run: it added none.
    returned = app.lambda_handler(success_event(deadLetterQueueMessagesAtStart=3), CONTEXT)

    key = f"runs/{STARTED:%Y-%m-%dT%H-%M-%SZ}_run-1.json"
    assert returned["recordLocation"] == f"s3://{BUCKET}/{key}"
    assert aws.record(key) == returned
    assert returned["imagesLabeled"] == 15
    assert returned["errorRecords"] == 2
    assert returned["labelsFound"] == 9
    assert returned["messagesLeftInQueue"] == 1
    assert returned["deadLetterQueueMessages"] == 3
    assert (returned["deadLetterQueueGrowth"], returned["outcome"]) == (0, "SUCCEEDED")
    assert returned["modelRunningMinutes"] == 15
    assert "problems" not in returned
    head = aws.s3.head_object(Bucket=BUCKET, Key=key)
    assert head["ContentType"] == "application/json"


def test_a_count_that_fails_leaves_that_field_null_and_says_why(aws, monkeypatch):
    real_client = app.client

    class BrokenCloudWatch:
        def get_paginator(self, name):
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetMetricData")

        def get_metric_data(self, **_):
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetMetricData")

    monkeypatch.setattr(
        app, "client", lambda service: BrokenCloudWatch() if service == "cloudwatch" else real_client(service)
    )
    record = app.lambda_handler(success_event(), CONTEXT)
    assert record["imagesLabeled"] is None and record["errorRecords"] is None
    assert record["messagesLeftInQueue"] == 0  # the other counts still stand
    # The counts, the time to result and the model's measurements each say why they are missing.
    assert record["timeToResult"] is None and record["model"] is None
    assert len(record["problems"]) == 3 and all("AccessDenied" in problem for problem in record["problems"])
    assert record["estimatedCostUsd"] == 1.0


def test_a_failed_write_raises_so_the_state_machine_sends_its_own_summary(aws):
    aws.s3.delete_bucket(Bucket=BUCKET)
    with pytest.raises(ClientError, match="NoSuchBucket"):
        app.lambda_handler(success_event(), CONTEXT)


# ---- what the emulator feeds it ------------------------------------------------------------


def test_emulated_emf_extraction_gives_the_counts_powertools_emitted(aws):
    """The emulator turns each flushed EMF blob into datapoints, as CloudWatch does with the log."""
    metrics = Metrics(namespace=PROCESSOR_METRICS_NAMESPACE, service=PROCESSOR_SERVICE_NAME)
    for _ in range(4):
        metrics.add_metric(name="ImagesLabeled", unit="Count", value=1)
    metrics.add_metric(name="LabelsFound", unit="Count", value=7)
    blob = metrics.serialize_metric_set()
    metrics.clear_metrics()
    put_emf_blob(aws.cloudwatch, blob, STARTED + timedelta(minutes=12))

    counts = app.count_processor_metrics(STARTED, STARTED + timedelta(minutes=20))
    assert counts == {"imagesLabeled": 4, "errorRecords": 0, "labelsFound": 7}


def test_the_record_reports_how_long_the_runs_images_waited_from_upload_to_result(aws):
    # 20 images labeled in the run, waiting 61 s to 1,200 s; others before and after the run.
    aws.waits([60.0 * n + 1 for n in range(1, 11)], 12)
    aws.waits([60.0 * n for n in range(11, 21)], 20)
    aws.waits([9999.0], -30)
    aws.waits([9999.0], 40)
    record = app.lambda_handler(success_event(), CONTEXT)
    # Nearest rank: the 10th and 19th of the 20 waits.
    assert record["timeToResult"] == {
        "images": 20,
        "p50Seconds": 601.0,
        "p95Seconds": 1140.0,
        "maxSeconds": 1200.0,
    }


def test_a_run_that_labeled_nothing_reports_no_time_to_result(aws):
    assert app.lambda_handler(success_event(), CONTEXT)["timeToResult"] is None


def _progress() -> dict[str, Any]:
    return boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=RUN_STATE_TABLE, Key={"id": {"S": "progress"}}
    )["Item"]


def test_the_measured_rate_and_p95_latency_are_remembered_for_the_next_run(aws):
    model = {"capacityIsLowerBound": False, "acceptedPerSecondPerUnit": 1.75, "callSecondsP95": 3.6}
    app.remember_capacity(model, STARTED)
    item = _progress()
    assert (item["tpsPerUnit"], item["callSecondsP95"]) == ({"N": "1.75"}, {"N": "3.6"})
    # A later measurement without a latency does not leave the earlier one beside its rate.
    app.remember_capacity({**model, "acceptedPerSecondPerUnit": 2.0, "callSecondsP95": None}, STARTED)
    item = _progress()
    assert item["tpsPerUnit"] == {"N": "2.0"} and "callSecondsP95" not in item
    # A lower bound is no measurement: nothing changes.
    app.remember_capacity({**model, "capacityIsLowerBound": True, "acceptedPerSecondPerUnit": 0.5}, STARTED)
    assert _progress()["tpsPerUnit"] == {"N": "2.0"}
