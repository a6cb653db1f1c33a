"""Processor Lambda under moto S3/SQS, with DetectCustomLabels answered by botocore's Stubber."""

from __future__ import annotations

import copy
import functools
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws

from customlabels_batch.emulator.functions import PROCESSOR, load_handler, read_settings
from customlabels_batch.settings import Settings, Use

EVENTS = Path(__file__).parent / "events"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
BUCKET = "customlabels-test-images"
QUEUE_NAME = "customlabels-images"
QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{QUEUE_NAME}"
PROJECT_ARN = f"arn:aws:rekognition:{REGION}:{ACCOUNT}:project/my-project/1700000000000"
MODEL_ARN = f"arn:aws:rekognition:{REGION}:{ACCOUNT}:project/my-project/version/my-project.v1/1700000000000"
NOW = "2025-01-02T03:04:05.678Z"
ETAG = "0f343b0931126a20f133d67c2b018a3b"  # as in the S3 notification fixture
MAX_BYTES = 15 * 1024 * 1024
LABELS = [
    {
        "Name": "rose",
        "Confidence": 97.25,
        "Geometry": {"BoundingBox": {"Width": 0.5, "Height": 0.25, "Left": 0.125, "Top": 0.0625}},
    },
    {"Name": "tulip", "Confidence": 61.5},
]
NO_FAILURES = {"batchItemFailures": []}
UPLOADED = "2025-01-02T03:00:00.000Z"
RUN_STATE_TABLE = "run-state"
DLQ_URL = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/images-dlq"


def processor_environment(**config: Any) -> dict[str, str]:
    """The environment the CDK stack gives the function (same source: Settings)."""
    pipeline = Settings(project_arn=PROJECT_ARN, project_version_arn=MODEL_ARN, **config)
    return pipeline.function_environment(
        Use.PROCESSOR, bucket=BUCKET, runStateTable=RUN_STATE_TABLE, deadLetterQueueUrl=DLQ_URL
    )


# The handler module as the function imports it, with the stack's environment.
app = load_handler(PROCESSOR, "under_test", processor_environment())

# Expected whenever an invocation labels nothing (test events, skips).
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")


@dataclass
class FakeLambdaContext:
    function_name: str = "customlabels-processor"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:customlabels-processor"
    aws_request_id: str = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
    remaining_millis: int = 60_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_millis


class RekognitionStub:
    """The module's real Rekognition client with DetectCustomLabels answered by a Stubber, which
    also checks each request against the service model and the expected parameters."""

    def __init__(self, client: Any) -> None:
        self.stubber = Stubber(client)
        self.calls: list[dict[str, Any]] = []
        client.meta.events.register(
            "before-parameter-build.rekognition.DetectCustomLabels",
            lambda params, **_: self.calls.append(copy.deepcopy(params)),
        )

    def returns(self, key: str, labels: list[dict[str, Any]], **settings: Any) -> None:
        self.stubber.add_response(
            "detect_custom_labels", {"CustomLabels": labels}, expected_params=request(key, **settings)
        )

    def fails(self, key: str, code: str, status: int = 400, *, times: int | None = None) -> None:
        # A throttled call is retried inside the handler, so failing for good takes every attempt.
        if times is None:
            times = throttles_in_a_storm() if code in app.THROTTLE_CODES else 1
        for _ in range(times):
            self.stubber.add_client_error(
                "detect_custom_labels",
                service_error_code=code,
                service_message=f"{code} for the test",
                http_status_code=status,
                expected_params=request(key),
            )

    @property
    def keys(self) -> list[str]:
        return [call["Image"]["S3Object"]["Name"] for call in self.calls]


@dataclass
class Aws:
    s3: Any
    sqs: Any
    queue_url: str
    visibility_changes: list[dict[str, Any]]


def request(key: str, **settings: Any) -> dict[str, Any]:
    return {
        "ProjectVersionArn": MODEL_ARN,
        "Image": {"S3Object": {"Bucket": BUCKET, "Name": key}},
        **settings,
    }


def load_event(name: str) -> Any:
    return json.loads((EVENTS / name).read_text())


def s3_record(key: str, *, size: int | None = 2048, event_name: str = "ObjectCreated:Put") -> dict:
    """One record of the S3 notification fixture, for `key` as S3 sends it (form-URL-encoded)."""
    record = load_event("s3_object_created.json")["Records"][0]
    record["eventName"] = event_name
    record["s3"]["object"]["key"] = key
    if size is None:
        del record["s3"]["object"]["size"]
    else:
        record["s3"]["object"]["size"] = size
    return record


def notification(*records: dict) -> str:
    return json.dumps({"Records": list(records)})


def deliver(aws: Aws, *bodies: str, source_arn: str = QUEUE_ARN) -> dict[str, Any]:
    """Send the bodies through the moto queue and wrap what it delivers in Lambda's SQS event
    (fixture envelope), so message ids and receipt handles are real."""
    for body in bodies:
        aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody=body)
    received: list[dict[str, Any]] = []
    while len(received) < len(bodies):
        received += aws.sqs.receive_message(QueueUrl=aws.queue_url, MaxNumberOfMessages=10)["Messages"]
    received.sort(key=lambda message: bodies.index(message["Body"]))
    envelope = load_event("sqs_s3_object_created.json")["Records"][0]
    records = []
    for message in received:
        record = copy.deepcopy(envelope)
        record.update(
            messageId=message["MessageId"],
            receiptHandle=message["ReceiptHandle"],
            body=message["Body"],
            md5OfBody=message["MD5OfBody"],
            eventSourceARN=source_arn,
        )
        records.append(record)
    return {"Records": records}


def invoke(event: dict[str, Any], *, remaining_millis: int = 60_000) -> dict[str, Any]:
    return app.lambda_handler(event, FakeLambdaContext(remaining_millis=remaining_millis))


def stored(aws: Aws) -> dict[str, Any]:
    """Every object the processor wrote (anything outside the input prefix), parsed, by key."""
    listing = aws.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    return {
        item["Key"]: json.loads(aws.s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read())
        for item in listing
        if not item["Key"].startswith("incoming/")
    }


def failures(*message_ids: str) -> dict[str, Any]:
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in message_ids]}


def result_doc(key: str, labels: list[dict[str, Any]], *, size: int = 2048, etag: str | None = None) -> dict:
    return {
        "source": {
            "bucket": BUCKET,
            "key": key,
            "etag": etag or ETAG,
            "size": size,
            # The notification's eventTime (the fixture's): when the image was uploaded.
            "uploadedAt": UPLOADED,
        },
        "modelVersionArn": MODEL_ARN,
        "labeledAt": NOW,
        "settings": {"minConfidence": None, "maxResults": None},
        "customLabels": labels,
    }


def set_processor_env(monkeypatch: pytest.MonkeyPatch, **config: Any) -> None:
    """The settings a function deployed with `config` reads at import."""
    monkeypatch.setattr(app, "SETTINGS", read_settings(processor_environment(**config)))


@pytest.fixture
def processor_env(monkeypatch: pytest.MonkeyPatch) -> None:
    set_processor_env(monkeypatch)
    for name, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    # Metrics read these at import, which may have happened before this fixture ran.
    monkeypatch.setattr(app.metrics, "namespace", "CustomLabelsBatch")
    monkeypatch.setattr(app.metrics, "service", "customlabels-processor")
    monkeypatch.setattr(app, "_utc_now", lambda: NOW)


@pytest.fixture
def aws(processor_env: None) -> Any:
    # Keeping boto3's default session keeps its loaded service models: 3x faster tests.
    with mock_aws(config={"core": {"reset_boto3_session": False}}):
        for getter in (app.rekognition_client, app.s3_client, app.sqs_client, app.dynamodb_client):
            getter.cache_clear()
        boto3.client("dynamodb", region_name=REGION).create_table(
            TableName=RUN_STATE_TABLE,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        sqs = boto3.client("sqs", region_name=REGION)
        sqs.create_queue(QueueName="images-dlq")
        queue = sqs.create_queue(QueueName=QUEUE_NAME, Attributes={"VisibilityTimeout": "360"})
        queue_url = queue["QueueUrl"]
        changes: list[dict[str, Any]] = []
        sqs_events = app.sqs_client(REGION).meta.events
        sqs_events.register(
            "before-parameter-build.sqs.ChangeMessageVisibility",
            lambda params, **_: changes.append(dict(params)),
        )
        sqs_events.register(
            "after-call.sqs.ChangeMessageVisibility",
            lambda http_response, **_: changes[-1].update(status=http_response.status_code),
        )
        yield Aws(s3=s3, sqs=sqs, queue_url=queue_url, visibility_changes=changes)
        for getter in (app.rekognition_client, app.s3_client, app.sqs_client, app.dynamodb_client):
            getter.cache_clear()


def throttles_in_a_storm() -> int:
    """The calls of one message, throttled, until STORM_SECONDS pass (with the pauses fixture)."""
    calls, elapsed = 1, 0.0
    while elapsed < app.STORM_SECONDS:
        elapsed += app._throttle_pause(calls)
        calls += 1
    return calls


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses the handler takes. They pass on a clock of their own, on which calls take no time,
    and each is the longest of its jitter, so a throttling storm takes a known number of calls."""
    recorded: list[float] = []
    now = [1000.0]
    minute = time.time() // 60 * 60  # the metrics' timestamps: a recent UTC minute, as CloudWatch wants

    def sleep(seconds: float) -> None:
        recorded.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(
        app,
        "time",
        SimpleNamespace(sleep=sleep, monotonic=lambda: now[0], time=lambda: minute + now[0] - 1000.0),
    )
    monkeypatch.setattr(app, "random", SimpleNamespace(uniform=lambda low, high: high))
    # One call at a time, so the Stubber's answers are taken in order (concurrency is tested below).
    monkeypatch.setattr(app, "window", app.CallWindow(most=1))
    return recorded


@pytest.fixture
def rekognition(aws: Aws, pauses: list[float]) -> Any:
    stub = RekognitionStub(app.rekognition_client())
    with stub.stubber:
        yield stub
        stub.stubber.assert_no_pending_responses()


def test_one_image_gets_one_result_with_labels_settings_source_and_model(aws, rekognition):
    rekognition.returns("incoming/flowers/red flower.jpg", LABELS)

    response = invoke(load_event("sqs_s3_object_created.json"))

    assert response == NO_FAILURES
    assert rekognition.keys == ["incoming/flowers/red flower.jpg"]
    assert stored(aws) == {
        "results/flowers/red flower.jpg.json": result_doc(
            "incoming/flowers/red flower.jpg", LABELS, size=52431
        )
    }
    head = aws.s3.head_object(Bucket=BUCKET, Key="results/flowers/red flower.jpg.json")
    assert head["ContentType"] == "application/json"
    assert aws.visibility_changes == []


def test_a_message_throttled_on_every_attempt_is_retried_soon_and_the_batch_waits_the_storm_out(
    aws, rekognition, pauses
):
    """STORM_SECONDS without an accepted call are a throttling storm, not a full model: that message
    goes back with the retry back-off, and the rest of the batch waits SATURATED_SECONDS before its
    calls, instead of spending its receives (given back at once, each new batch of a saturated
    environment cost every message a receive)."""
    rekognition.returns("incoming/a.jpg", LABELS)
    rekognition.fails("incoming/b.jpg", "ProvisionedThroughputExceededException")
    rekognition.returns("incoming/c.jpg", LABELS)
    event = deliver(
        aws,
        notification(s3_record("incoming/a.jpg")),
        notification(s3_record("incoming/b.jpg")),
        notification(s3_record("incoming/c.jpg")),
    )
    throttled = event["Records"][1]

    response = invoke(event)

    assert response == failures(throttled["messageId"])
    assert rekognition.keys == ["incoming/a.jpg"] + ["incoming/b.jpg"] * throttles_in_a_storm() + [
        "incoming/c.jpg"
    ]
    assert pauses[-1] == app.SATURATED_SECONDS  # c.jpg waited the storm out, then was labeled
    assert stored(aws) == {
        "results/a.jpg.json": result_doc("incoming/a.jpg", LABELS),
        "results/c.jpg.json": result_doc("incoming/c.jpg", LABELS),
    }
    # Accepted by moto (status 200), so queue URL and receipt handle were the real ones.
    assert aws.visibility_changes == [
        {
            "QueueUrl": aws.queue_url,
            "ReceiptHandle": throttled["receiptHandle"],
            "VisibilityTimeout": 10,
            "status": 200,
        }
    ]


def test_in_a_storm_a_message_the_invocation_has_no_time_to_wait_for_goes_back_without_a_call(
    aws, rekognition, pauses
):
    app.saturation.since = app.time.monotonic()  # this environment found a storm a moment ago
    event = deliver(aws, notification(s3_record("incoming/a.jpg")))
    # Less time than the storm's wait and the margin: no call, back with the retry back-off.
    remaining = (app.SATURATED_SECONDS + app.TIME_MARGIN_SECONDS - 1) * 1000
    response = invoke(event, remaining_millis=int(remaining))
    assert response == failures(event["Records"][0]["messageId"])
    assert rekognition.calls == [] and stored(aws) == {}
    assert [change["VisibilityTimeout"] for change in aws.visibility_changes] == [10]


class BadInput(NamedTuple):
    key: str
    size: int
    api_error: str | None  # what DetectCustomLabels raises; None: it must not be called
    error_code: str
    reason: str


UNSUPPORTED = "The object is not a JPEG or PNG image (.jpg, .jpeg or .png)."
BAD_INPUTS = [
    BadInput(
        "incoming/corrupt.jpg",
        2048,
        "InvalidImageFormatException",
        "InvalidImageFormatException",
        "The image is corrupt or not a format Rekognition reads (JPEG or PNG).",
    ),
    BadInput(
        "incoming/huge.jpg",
        MAX_BYTES + 1,
        None,
        "ImageTooLarge",
        "The image is 15728641 bytes; DetectCustomLabels accepts at most 15728640.",
    ),
    BadInput("incoming/anim.gif", 2048, None, "UnsupportedFileType", UNSUPPORTED),
    BadInput("incoming/notes.txt", 2048, None, "UnsupportedFileType", UNSUPPORTED),
    BadInput(
        "incoming/deleted.png",
        2048,
        "InvalidS3ObjectException",
        "InvalidS3ObjectException",
        "Rekognition could not read the object from S3 (deleted, not accessible or in another Region).",
    ),
    BadInput(
        "incoming/giant.png",
        2048,
        "ImageTooLargeException",
        "ImageTooLargeException",
        "The image exceeds Rekognition's size or dimension limits.",
    ),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda case: case.key.removeprefix("incoming/"))
def test_unusable_image_gets_an_error_record_and_is_not_retried(aws, rekognition, case):
    if case.api_error:
        rekognition.fails(case.key, case.api_error)
    event = deliver(aws, notification(s3_record(case.key, size=case.size)))

    response = invoke(event)

    assert response == NO_FAILURES
    assert rekognition.keys == ([case.key] if case.api_error else [])
    assert stored(aws) == {
        "errors/" + case.key.removeprefix("incoming/") + ".json": {
            "source": {
                "bucket": BUCKET,
                "key": case.key,
                "etag": ETAG,
                "size": case.size,
                "uploadedAt": UPLOADED,
            },
            "reason": case.reason,
            "errorCode": case.error_code,
            "messageId": event["Records"][0]["messageId"],
            "recordedAt": NOW,
        }
    }
    assert aws.visibility_changes == []


def test_image_of_exactly_15_mb_is_labeled(aws, rekognition):
    rekognition.returns("incoming/big.png", LABELS)

    response = invoke(deliver(aws, notification(s3_record("incoming/big.png", size=MAX_BYTES))))

    assert response == NO_FAILURES
    assert stored(aws) == {"results/big.png.json": result_doc("incoming/big.png", LABELS, size=MAX_BYTES)}


def test_extensions_are_accepted_in_any_letter_case(aws, rekognition):
    keys = ["incoming/photo.JPG", "incoming/scan.Jpeg", "incoming/shot.PNG"]
    for key in keys:
        rekognition.returns(key, LABELS)

    response = invoke(deliver(aws, *(notification(s3_record(key)) for key in keys)))

    assert response == NO_FAILURES
    assert rekognition.keys == keys
    assert sorted(stored(aws)) == [
        "results/photo.JPG.json",
        "results/scan.Jpeg.json",
        "results/shot.PNG.json",
    ]


@pytest.mark.parametrize(
    ("event_key", "key", "result_key"),
    [
        ("incoming/red+flower.jpg", "incoming/red flower.jpg", "results/red flower.jpg.json"),
        ("incoming/a%2Bb.jpg", "incoming/a+b.jpg", "results/a+b.jpg.json"),
        ("incoming/100%25.jpg", "incoming/100%.jpg", "results/100%.jpg.json"),
        ("incoming/caf%C3%A9/%E7%8C%AB.png", "incoming/café/猫.png", "results/café/猫.png.json"),
        (
            "incoming/2024/06/field+7/img.jpeg",
            "incoming/2024/06/field 7/img.jpeg",
            "results/2024/06/field 7/img.jpeg.json",
        ),
    ],
)
def test_encoded_keys_are_decoded_and_mirrored_under_results(aws, rekognition, event_key, key, result_key):
    rekognition.returns(key, LABELS)

    response = invoke(deliver(aws, notification(s3_record(event_key))))

    assert response == NO_FAILURES
    assert rekognition.keys == [key]
    assert stored(aws) == {result_key: result_doc(key, LABELS)}


def test_duplicate_delivery_overwrites_the_same_result(aws, rekognition):
    rekognition.returns("incoming/a.jpg", LABELS)
    rekognition.returns("incoming/a.jpg", LABELS)
    event = deliver(aws, notification(s3_record("incoming/a.jpg")))

    first = invoke(event)
    first_body = aws.s3.get_object(Bucket=BUCKET, Key="results/a.jpg.json")["Body"].read()
    second = invoke(event)

    assert first == second == NO_FAILURES
    assert rekognition.keys == ["incoming/a.jpg", "incoming/a.jpg"]
    assert stored(aws) == {"results/a.jpg.json": result_doc("incoming/a.jpg", LABELS)}
    assert aws.s3.get_object(Bucket=BUCKET, Key="results/a.jpg.json")["Body"].read() == first_body


def test_s3_test_event_succeeds_without_writing_or_labeling(aws, rekognition):
    response = invoke(deliver(aws, json.dumps(load_event("s3_test_event.json"))))

    assert response == NO_FAILURES
    assert rekognition.calls == []
    assert stored(aws) == {}


def test_non_creation_events_are_skipped(aws, rekognition):
    body = notification(s3_record("incoming/a.jpg", event_name="ObjectRemoved:Delete"))

    response = invoke(deliver(aws, body))

    assert response == NO_FAILURES
    assert rekognition.calls == []
    assert stored(aws) == {}


INCOMPLETE_RECORD = "Record 0 lacks eventName, bucket name or object key."


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("this is not json {", "The message body is not JSON."),
        ('{"hello": "world"}', "The message body is JSON but has no S3 event Records."),
        ('{"Records": [{"eventName": "ObjectCreated:Put"}]}', INCOMPLETE_RECORD),
        ('{"Records": "none"}', "The message body is JSON but has no S3 event Records."),
        ('{"Records": [42]}', INCOMPLETE_RECORD),
        (
            notification(
                s3_record("incoming/a.jpg") | {"s3": {"bucket": {"name": BUCKET}, "object": {"key": 12345}}}
            ),
            "Record 0: eventName, bucket name and object key must be strings.",
        ),
        (
            notification(
                s3_record("incoming/a.jpg") | {"s3": {"bucket": {"name": BUCKET}, "object": {"key": None}}}
            ),
            "Record 0: eventName, bucket name and object key must be strings.",
        ),
        (
            notification(
                s3_record("incoming/a.jpg")
                | {"s3": {"bucket": {"name": BUCKET}, "object": {"key": "incoming/a.jpg", "size": "10"}}}
            ),
            "Record 0: object size '10' is not a number of bytes.",
        ),
        (
            notification(
                s3_record("incoming/a.jpg")
                | {"s3": {"bucket": {"name": "someone-else"}, "object": {"key": "incoming/a.jpg"}}}
            ),
            f"Record 0 names s3://someone-else/incoming/a.jpg, which is not under this pipeline's "
            f"s3://{BUCKET}/incoming/; it was not labeled.",
        ),
        (
            notification(s3_record("elsewhere/x.jpg")),
            f"Record 0 names s3://{BUCKET}/elsewhere/x.jpg, which is not under this pipeline's "
            f"s3://{BUCKET}/incoming/; it was not labeled.",
        ),
    ],
)
def test_unreadable_message_is_recorded_with_its_raw_body_and_not_retried(aws, rekognition, body, reason):
    event = deliver(aws, body)
    message_id = event["Records"][0]["messageId"]

    response = invoke(event)

    assert response == NO_FAILURES
    assert rekognition.calls == []
    assert stored(aws) == {
        f"errors/_messages/{message_id}.json": {
            "source": None,
            "reason": reason,
            "errorCode": "NotAnS3Notification",
            "messageId": message_id,
            "body": body,
            "recordedAt": NOW,
        }
    }


def test_message_with_a_transient_failure_in_its_second_record_is_retried(aws, rekognition):
    rekognition.returns("incoming/first.jpg", LABELS)
    rekognition.fails("incoming/second.jpg", "ThrottlingException", status=500)
    event = deliver(aws, notification(s3_record("incoming/first.jpg"), s3_record("incoming/second.jpg")))
    record = event["Records"][0]

    response = invoke(event)

    assert response == failures(record["messageId"])
    assert stored(aws) == {"results/first.jpg.json": result_doc("incoming/first.jpg", LABELS)}
    assert [(c["ReceiptHandle"], c["VisibilityTimeout"], c["status"]) for c in aws.visibility_changes] == [
        (record["receiptHandle"], 10, 200)
    ]


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ResourceNotReadyException", 400),
        ("ResourceNotFoundException", 400),
        ("LimitExceededException", 400),
        ("InternalServerError", 500),
        # A code the processor has never heard of is classified by its status.
        ("SomethingNewException", 500),
        ("SomethingNewException", 503),
    ],
)
def test_transient_api_errors_are_retried(aws, rekognition, code, status):
    rekognition.fails("incoming/a.jpg", code, status)
    event = deliver(aws, notification(s3_record("incoming/a.jpg")))

    response = invoke(event)

    assert response == failures(event["Records"][0]["messageId"])
    assert stored(aws) == {}
    # A model that is not running (stopping, stopped, gone) waits for a run to start it: the
    # message stays away long enough not to spend its receives meanwhile; the rest back off.
    delay = app.MODEL_NOT_RUNNING_RETRY_SECONDS if code.startswith("Resource") else 10
    assert [(c["VisibilityTimeout"], c["status"]) for c in aws.visibility_changes] == [(delay, 200)]


def test_an_unknown_4xx_refusal_of_the_image_is_an_error_record_naming_the_code(aws, rekognition):
    rekognition.fails("incoming/a.jpg", "SomethingNewException", 400)
    event = deliver(aws, notification(s3_record("incoming/a.jpg")))

    assert invoke(event) == NO_FAILURES
    record = stored(aws)["errors/a.jpg.json"]
    assert record["errorCode"] == "SomethingNewException"
    assert "SomethingNewException for the test" in record["reason"]


def test_an_unknown_code_with_status_429_is_retried_as_a_throttle(aws, rekognition, pauses):
    rekognition.fails("incoming/a.jpg", "SomethingNewException", 429, times=1)
    rekognition.returns("incoming/a.jpg", LABELS)
    event = deliver(aws, notification(s3_record("incoming/a.jpg")))

    assert invoke(event) == NO_FAILURES
    # The throttle's short pause, and nothing else.
    assert pauses == [app.THROTTLE_PAUSE_SECONDS[1]]
    assert stored(aws)["results/a.jpg.json"]["customLabels"] == LABELS


def test_an_unknown_code_with_status_403_opens_the_breaker(aws, rekognition, fresh_breaker):
    rekognition.fails("incoming/a.jpg", "SomethingNewException", 403)
    event = deliver(aws, notification(s3_record("incoming/a.jpg")))

    assert invoke(event) == failures(event["Records"][0]["messageId"])
    assert fresh_breaker.reason.startswith("DetectCustomLabels is denied")
    assert stored(aws) == {}


def test_failed_visibility_change_is_swallowed(aws, rekognition):
    rekognition.fails("incoming/a.jpg", "ThrottlingException")
    event = deliver(
        aws, notification(s3_record("incoming/a.jpg")), source_arn=f"arn:aws:sqs:{REGION}:{ACCOUNT}:gone"
    )

    response = invoke(event)

    assert response == failures(event["Records"][0]["messageId"])
    assert [(c["QueueUrl"], c["status"]) for c in aws.visibility_changes] == [
        (f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/gone", 400)
    ]


def test_min_confidence_and_max_results_are_sent_only_when_configured(aws, rekognition, monkeypatch):
    rekognition.returns("incoming/a.jpg", LABELS)
    rekognition.returns("incoming/b.jpg", LABELS[:1], MinConfidence=55.5, MaxResults=3)

    unconfigured = invoke(deliver(aws, notification(s3_record("incoming/a.jpg"))))
    # Same process, new configuration: the emulator relies on settings being read per invocation.
    set_processor_env(monkeypatch, min_confidence=55.5, max_results=3)
    configured = invoke(deliver(aws, notification(s3_record("incoming/b.jpg"))))

    assert unconfigured == configured == NO_FAILURES
    assert rekognition.calls == [
        request("incoming/a.jpg"),
        request("incoming/b.jpg", MinConfidence=55.5, MaxResults=3),
    ]
    results = stored(aws)
    assert results["results/a.jpg.json"]["settings"] == {"minConfidence": None, "maxResults": None}
    assert results["results/b.jpg.json"]["settings"] == {"minConfidence": 55.5, "maxResults": 3}


def test_missing_event_size_is_read_from_the_object(aws, rekognition):
    aws.s3.put_object(Bucket=BUCKET, Key="incoming/sized.jpg", Body=b"\xff\xd8" + b"x" * 998)
    aws.s3.put_object(Bucket=BUCKET, Key="incoming/big.jpg", Body=b"\0" * (MAX_BYTES + 1))
    rekognition.returns("incoming/sized.jpg", LABELS)
    event = deliver(
        aws,
        notification(s3_record("incoming/sized.jpg", size=None)),
        notification(s3_record("incoming/big.jpg", size=None)),
        notification(s3_record("incoming/vanished.jpg", size=None)),
    )

    response = invoke(event)

    assert response == NO_FAILURES
    assert rekognition.keys == ["incoming/sized.jpg"]
    outputs = stored(aws)
    assert outputs["results/sized.jpg.json"] == result_doc("incoming/sized.jpg", LABELS, size=1000)
    assert outputs["errors/big.jpg.json"]["errorCode"] == "ImageTooLarge"
    assert outputs["errors/big.jpg.json"]["source"]["size"] == MAX_BYTES + 1
    assert outputs["errors/vanished.jpg.json"]["errorCode"] == "ObjectNotFound"
    assert outputs["errors/vanished.jpg.json"]["source"]["size"] is None


def test_a_folder_marker_is_skipped(aws, rekognition):
    assert invoke(deliver(aws, notification(s3_record("incoming/photos/", size=0)))) == NO_FAILURES
    assert rekognition.calls == []
    assert stored(aws) == {}


def test_an_image_whose_result_key_would_exceed_1024_bytes_gets_an_error_record_that_fits(aws, rekognition):
    key = "incoming/" + "é" * 505 + ".jpg"  # 1,023 bytes: the result key would be 1,027
    assert len(key.encode()) <= 1024
    assert invoke(deliver(aws, notification(s3_record(urllib.parse.quote_plus(key))))) == NO_FAILURES
    assert rekognition.calls == []
    [(error_key, record)] = stored(aws).items()
    assert error_key.startswith("errors/_long-keys/") and len(error_key.encode()) <= 1024
    assert (record["errorCode"], record["source"]["key"]) == ("KeyTooLong", key)


def test_the_retry_path_uses_the_partitions_endpoint():
    client = boto3.client("sqs", region_name="cn-north-1")
    assert client.meta.endpoint_url == "https://sqs.cn-north-1.amazonaws.com.cn"


def test_pipeline_output_is_never_labeled(aws, rekognition):
    event = deliver(aws, notification(s3_record("results/a.jpg"), s3_record("errors/b.png")))

    assert invoke(event) == NO_FAILURES
    assert rekognition.calls == []
    assert stored(aws) == {}


def test_metrics_count_labeled_images_labels_error_records_and_retries(aws, rekognition, capsys):
    rekognition.returns("incoming/a.jpg", LABELS)
    rekognition.returns("incoming/b.jpg", LABELS[:1])
    rekognition.fails("incoming/c.jpg", "ThrottlingException")
    event = deliver(
        aws,
        notification(s3_record("incoming/a.jpg")),
        notification(s3_record("incoming/b.jpg")),
        notification(s3_record("incoming/d.gif")),
        notification(s3_record("incoming/c.jpg")),
    )

    invoke(event)

    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert len(emf) == 1
    metrics = {
        (m["Name"], m["Unit"])
        for blob in emf
        for directive in blob["_aws"]["CloudWatchMetrics"]
        if directive["Namespace"] == "CustomLabelsBatch"
        for m in directive["Metrics"]
    }
    assert sorted(metrics) == [
        ("ErrorRecords", "Count"),
        ("ImagesLabeled", "Count"),
        ("LabelsFound", "Count"),
        ("ModelCallSeconds", "Seconds"),
        ("ModelCallsAccepted", "Count"),
        ("ModelCallsThrottled", "Count"),
        ("ProcessorSeconds", "Seconds"),
        ("TimeToResultSeconds", "Seconds"),
        ("TransientFailures", "Count"),
    ]
    # Each labeled image waited from the notification's eventTime (03:00:00) to labeledAt (NOW).
    assert emf[0]["TimeToResultSeconds"] == [245.678, 245.678]

    def total(name: str) -> float:
        values = [blob.get(name, []) for blob in emf]
        return sum(sum(v) if isinstance(v, list) else v for v in values)

    assert [
        total(n)
        for n in ("ImagesLabeled", "LabelsFound", "ErrorRecords", "TransientFailures", "ModelCallsAccepted")
    ] == [2, 3, 1, 1, 2]
    assert total("ModelCallsThrottled") == throttles_in_a_storm()
    assert len(emf[-1]["ProcessorSeconds"] if isinstance(emf[-1]["ProcessorSeconds"], list) else [1]) == 1


def test_an_invocation_that_outlasts_a_minute_sends_each_minute_s_counts_stamped_with_that_minute(
    aws, rekognition, monkeypatch, capsys
):
    rekognition.returns("incoming/a.jpg", LABELS)
    rekognition.returns("incoming/b.jpg", LABELS)
    event = deliver(aws, notification(s3_record("incoming/a.jpg")), notification(s3_record("incoming/b.jpg")))
    minute = time.time() // 60 * 60
    now = [minute + 40.0]
    monkeypatch.setattr(
        app, "time", SimpleNamespace(sleep=lambda _: None, monotonic=lambda: now[0], time=lambda: now[0])
    )
    # Writing a result takes 30 s: a.jpg is labeled at :40, b.jpg at 1:10, the invocation ends after.
    app.s3_client().meta.events.register(
        "after-call.s3.PutObject", lambda **_: now.__setitem__(0, now[0] + 30)
    )

    invoke(event)

    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert [(blob["_aws"]["Timestamp"] // 60_000, blob["ModelCallsAccepted"]) for blob in emf] == [
        (minute // 60, [1.0]),
        (minute // 60 + 1, [1.0]),
    ]
    assert "ProcessorSeconds" in emf[1] and "ProcessorSeconds" not in emf[0]


def test_a_throttled_call_is_retried_after_a_short_pause_and_labels_the_image(aws, rekognition, pauses):
    rekognition.fails("incoming/a.jpg", "ProvisionedThroughputExceededException", times=2)
    rekognition.returns("incoming/a.jpg", LABELS)
    event = deliver(aws, notification(s3_record("incoming/a.jpg")))

    assert invoke(event) == NO_FAILURES
    assert stored(aws) == {"results/a.jpg.json": result_doc("incoming/a.jpg", LABELS)}
    # Jittered, and doubled for a call throttled again.
    low, high = app.THROTTLE_PAUSE_SECONDS
    assert low <= pauses[0] <= high and 2 * low <= pauses[1] <= 2 * high
    assert aws.visibility_changes == []


def test_retry_delay_doubles_per_delivery_up_to_five_minutes():
    assert [app.retry_delay(10, n) for n in range(1, 8)] == [10, 20, 40, 80, 160, 300, 300]


def test_the_call_window_starts_at_a_batch_and_balances_growth_against_throttles(monkeypatch):
    monkeypatch.setattr(app, "budget", app.TimeBudget())  # all the time in the world
    clock = [1000.0]
    monkeypatch.setattr(app, "time", SimpleNamespace(monotonic=lambda: clock[0], sleep=time.sleep))
    window = app.CallWindow(most=10)
    assert window.limit == 10 and window.allowed() == 10
    sent = clock[0]
    clock[0] += 0.1
    window.throttled(sent)
    assert window.limit == pytest.approx(10 * app.CallWindow.SHRINK) and window.allowed() == 9
    # Calls sent with the first met the same full model: they do not narrow it again.
    for _ in range(9):
        window.throttled(sent)
    assert window.limit == pytest.approx(10 * app.CallWindow.SHRINK)
    window.accepted(0.5)
    assert window.limit == pytest.approx(10 * app.CallWindow.SHRINK * app.CallWindow.GROW)
    for _ in range(1000):
        window.accepted(0.5)
    assert window.limit == 10  # never more than a batch
    # A call sent after the last narrowing narrows it again once a round trip (0.5 s) has passed:
    # retries within the round trip met the same full model.
    clock[0] += 1
    window.throttled(clock[0])
    clock[0] += 0.2
    window.throttled(clock[0] - 0.1)
    assert window.limit == pytest.approx(10 * app.CallWindow.SHRINK)
    for _ in range(40):
        clock[0] += 0.5
        window.throttled(clock[0] - 0.1)
    # Below one call it spaces this environment's calls: one call, then (1/limit - 1) calls' time.
    assert window.allowed() == 1
    assert window.gap() == pytest.approx(0.5 * (1 / window.limit - 1))
    for _ in range(1000):
        clock[0] += 0.5
        window.throttled(clock[0] - 0.1)
    assert window.limit == app.CallWindow.LOWEST


def test_the_window_grows_per_round_trip_and_faster_while_no_call_is_throttled(monkeypatch):
    grow, streak = app.CallWindow.GROW, app.CallWindow.STREAK
    # Calls accepted in a row widen it a step more each, up to STREAK steps a call.
    window = app.CallWindow(limit=2.0, most=10)
    for _ in range(3):
        window.accepted(0.5)
    assert window.limit == pytest.approx(2.0 * grow ** (1 + 2 + 3))
    # A throttle (whether or not it narrows) starts the count again.
    window.throttled(time.monotonic())
    narrowed = window.limit
    window.accepted(0.5)
    assert window.limit == pytest.approx(narrowed * grow)
    window = app.CallWindow(limit=1.0, most=100)
    for _ in range(streak + 2):
        window.accepted(0.5)
    assert window.limit == pytest.approx(grow ** (sum(range(1, streak + 1)) + 2 * streak))
    # Below one call, a call and the pause after it take 1/limit round trips: as many steps.
    monkeypatch.setattr(app, "budget", app.TimeBudget())  # all the time in the world
    window = app.CallWindow(limit=0.25, most=10)
    window.latency = 0.5
    window.accepted(0.5)
    assert window.limit == pytest.approx(0.25 * grow**4)
    # A pause cut short by the time left counts as what it is: 0.5 s call + 0.75 s pause.
    budget = app.TimeBudget()
    budget.until, budget.unfinished = time.monotonic() + 40, 8
    monkeypatch.setattr(app, "budget", budget)
    window = app.CallWindow(limit=app.CallWindow.LOWEST, most=10)
    window.latency = 0.5
    window.accepted(0.5)
    assert window.limit == pytest.approx(app.CallWindow.LOWEST * grow**2.5, rel=0.01)


def test_the_window_never_spaces_calls_so_far_apart_that_the_batch_cannot_start(monkeypatch):
    budget = app.TimeBudget()
    budget.until, budget.unfinished = time.monotonic() + 40, 8  # 40 s left for 8 messages
    monkeypatch.setattr(app, "budget", budget)
    window = app.CallWindow(limit=app.CallWindow.LOWEST, most=10)
    window.accepted(0.5)
    # Not one call per 100 calls' time (50 s): all eight start within a quarter of the time left
    # (10 s), so environments at their floor still ask for more than a slow model takes.
    assert window.gap() == pytest.approx(40 / 8 * 0.25 - window.latency, abs=0.01)
    budget.unfinished = 1000
    assert window.gap() == 0


def test_throttled_calls_beyond_the_window_step_back_and_start_again_when_there_is_room(aws, monkeypatch):
    """Messages retrying throttled calls count against the window: when throttles narrow it, the
    calls beyond it wait for a place instead of retrying at a model that is already full."""
    keys = [f"incoming/{i}.jpg" for i in range(6)]
    event = deliver(aws, *(notification(s3_record(k)) for k in keys))
    monkeypatch.setattr(app, "window", app.CallWindow(limit=6.0, most=10))
    in_flight, most_after_throttles, calls, lock = [0], [0], [0], threading.Lock()
    throttles = [6]  # the first six calls are throttled

    def detect_custom_labels(**params):
        with lock:
            calls[0] += 1
            in_flight[0] += 1
            if throttles[0] == 0:
                most_after_throttles[0] = max(most_after_throttles[0], in_flight[0])
        time.sleep(0.02)
        with lock:
            in_flight[0] -= 1
            if throttles[0] > 0:
                throttles[0] -= 1
                raise ClientError(
                    {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "full"}},
                    "DetectCustomLabels",
                )
        return {"CustomLabels": []}

    client = SimpleNamespace(detect_custom_labels=detect_custom_labels)
    monkeypatch.setattr(app, "rekognition_client", functools.cache(lambda: client))

    assert invoke(event) == NO_FAILURES
    assert sorted(stored(aws)) == sorted(f"results/{i}.jpg.json" for i in range(6))
    # Six sent together met the same full model: one narrowing (to 5.4), then six calls accepted in
    # a row, each widening it a step more than the last (5.4 x 1.05^21, beyond the batch).
    grow, shrink = app.CallWindow.GROW, app.CallWindow.SHRINK
    assert 6 * shrink * grow ** (1 + 2 + 3 + 4 + 5 + 6) > 10 and app.window.limit == 10
    # One of the six stepped back instead of retrying: never more than five at once since.
    assert calls[0] == 12 and most_after_throttles[0] <= 5


def test_a_batch_keeps_as_many_calls_in_flight_as_the_window_allows(aws, monkeypatch):
    keys = [f"incoming/{i}.jpg" for i in range(8)]
    event = deliver(aws, *(notification(s3_record(k)) for k in keys))
    monkeypatch.setattr(app, "window", app.CallWindow(limit=3.0, most=10))
    in_flight, most, lock = [0], [0], threading.Lock()

    def detect_custom_labels(**params):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        return {"CustomLabels": []}

    client = SimpleNamespace(detect_custom_labels=detect_custom_labels)
    monkeypatch.setattr(app, "rekognition_client", functools.cache(lambda: client))

    assert invoke(event) == NO_FAILURES
    assert sorted(stored(aws)) == sorted(f"results/{i}.jpg.json" for i in range(8))
    # Three at first; the window widens a little with each accepted call, never past a batch.
    assert 3 <= most[0] <= 4


def _progress() -> int | None:
    item = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=RUN_STATE_TABLE, Key={"id": {"S": "progress"}}, ConsistentRead=True
    )
    return int(item["Item"]["accounted"]["N"]) if "Item" in item else None


def test_each_batch_adds_the_messages_it_accounted_for_to_the_progress_counter(aws, rekognition, monkeypatch):
    rekognition.returns("incoming/a.jpg", LABELS)
    rekognition.fails("incoming/c.jpg", "InvalidImageFormatException")
    rekognition.fails("incoming/b.jpg", "ProvisionedThroughputExceededException")
    invoke(
        deliver(
            aws,
            notification(s3_record("incoming/a.jpg")),
            notification(s3_record("incoming/c.jpg")),
            notification(s3_record("incoming/b.jpg")),
        )
    )
    # A result and an error record count; the throttled message goes back to the queue and does not.
    assert _progress() == 2
    monkeypatch.setattr(app, "saturation", app.Saturation())  # a later invocation, after the storm
    rekognition.returns("incoming/b.jpg", [])
    invoke(deliver(aws, notification(s3_record("incoming/b.jpg"))))
    assert _progress() == 3


def test_a_failed_progress_count_does_not_fail_the_batch(aws, rekognition, monkeypatch):
    set_processor_env(monkeypatch)
    monkeypatch.setattr(app.SETTINGS, "run_state_table", "no-such-table")
    rekognition.returns("incoming/a.jpg", LABELS)
    assert invoke(deliver(aws, notification(s3_record("incoming/a.jpg")))) == NO_FAILURES
    assert _progress() is None
    assert "results/a.jpg.json" in stored(aws)


def test_an_invocation_near_its_timeout_starts_no_new_work_and_returns_it(aws, rekognition):
    event = deliver(aws, notification(s3_record("incoming/a.jpg")), notification(s3_record("incoming/b.jpg")))
    # Less time left than the safety margin: nothing is called, both messages go back to the queue.
    response = invoke(event, remaining_millis=int(app.TIME_MARGIN_SECONDS * 1000) - 1)
    assert response == failures(*(r["messageId"] for r in event["Records"]))
    assert rekognition.calls == []
    assert stored(aws) == {}


def test_throttle_retries_stop_at_the_time_budget(aws, rekognition, monkeypatch):
    rekognition.fails("incoming/a.jpg", "ProvisionedThroughputExceededException", times=1)
    event = deliver(aws, notification(s3_record("incoming/a.jpg")))
    clock = iter(range(0, 10_000, 20))  # every look at the clock is 20 s later
    monkeypatch.setattr(
        app, "time", SimpleNamespace(sleep=lambda _: None, monotonic=lambda: next(clock), time=time.time)
    )
    response = invoke(event, remaining_millis=60_000)
    # One call, then the budget (60 s less the margin) is gone: no second attempt.
    assert response == failures(event["Records"][0]["messageId"])
    assert len(rekognition.calls) == 1


@pytest.fixture(autouse=True)
def fresh_breaker(monkeypatch):
    """Each test is a new execution environment as far as denials go."""
    monkeypatch.setattr(app, "breaker", app.Breaker())
    monkeypatch.setattr(app, "saturation", app.Saturation())
    return app.breaker


def test_denied_result_writes_stop_model_calls_and_keep_the_messages_receives(
    aws, rekognition, fresh_breaker, monkeypatch
):
    """A misconfigured pipeline (writes denied) costs one model call, not one per image per retry."""
    rekognition.returns("incoming/a.jpg", LABELS)
    real_put = app.s3_client().put_object

    def denied(**kwargs):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "PutObject")

    monkeypatch.setattr(app.s3_client(), "put_object", denied)
    event = deliver(aws, *(notification(s3_record(f"incoming/{name}.jpg")) for name in "abc"))
    response = invoke(event)
    # Every message goes back; only the first image reached the model.
    assert response == failures(*(r["messageId"] for r in event["Records"]))
    assert rekognition.keys == ["incoming/a.jpg"]
    # Back in 15 minutes, not in 10 s: the run stalls and stops the model meanwhile, and the
    # messages do not use up their receives on the way to the DLQ.
    assert {change["VisibilityTimeout"] for change in aws.visibility_changes} == {
        app.MISCONFIGURED_RETRY_SECONDS
    }
    monkeypatch.setattr(app.s3_client(), "put_object", real_put)


def test_a_denied_model_call_opens_the_breaker_too(aws, rekognition, fresh_breaker):
    rekognition.fails("incoming/a.jpg", "AccessDeniedException")
    event = deliver(aws, notification(s3_record("incoming/a.jpg")), notification(s3_record("incoming/b.jpg")))
    assert invoke(event) == failures(*(r["messageId"] for r in event["Records"]))
    assert rekognition.keys == ["incoming/a.jpg"]
    assert "DetectCustomLabels is denied" in fresh_breaker.reason


def test_a_missing_object_read_as_403_is_recorded_as_not_found(aws, rekognition, monkeypatch):
    def forbidden(**kwargs):
        raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "HeadObject")

    monkeypatch.setattr(app.s3_client(), "head_object", forbidden)
    assert invoke(deliver(aws, notification(s3_record("incoming/gone.jpg", size=None)))) == NO_FAILURES
    assert stored(aws)["errors/gone.jpg.json"]["errorCode"] == "ObjectNotFound"
    assert rekognition.calls == []


# ---- crash isolation ----------------------------------------------------------------------------


def _queue_counts(aws: Aws) -> tuple[int, int]:
    attributes = aws.sqs.get_queue_attributes(
        QueueUrl=aws.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def _dead_letters(aws: Aws) -> list[dict[str, Any]]:
    url = aws.sqs.get_queue_url(QueueName="images-dlq")["QueueUrl"]
    return aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]).get(
        "Messages", []
    )


def _delivered_before(event: dict[str, Any], index: int, receives: int = 2) -> None:
    event["Records"][index]["attributes"]["ApproximateReceiveCount"] = str(receives)


class RuntimeDied(BaseException):
    """What the handler's code cannot catch: the runtime exiting (out of memory, a segfault)."""


def test_each_message_is_deleted_as_soon_as_it_is_done(aws, rekognition):
    rekognition.returns("incoming/a.jpg", LABELS)
    rekognition.returns("incoming/b.jpg", LABELS)
    event = deliver(aws, notification(s3_record("incoming/a.jpg")), notification(s3_record("incoming/b.jpg")))
    assert invoke(event) == NO_FAILURES
    # Gone before the mapping would delete them at the end of the batch.
    assert _queue_counts(aws) == (0, 0)


def test_a_batch_is_held_for_the_invocations_time_not_the_queues_visibility_timeout(aws, rekognition):
    changes: list[dict[str, Any]] = []
    app.sqs_client(REGION).meta.events.register(
        "before-parameter-build.sqs.ChangeMessageVisibilityBatch", lambda params, **_: changes.append(params)
    )
    rekognition.returns("incoming/a.jpg", LABELS)
    event = deliver(aws, notification(s3_record("incoming/a.jpg")))
    invoke(event, remaining_millis=60_000)
    (change,) = changes
    assert [entry["VisibilityTimeout"] for entry in change["Entries"]] == [60 + app.IN_FLIGHT_GRACE_SECONDS]


def test_the_most_delivered_messages_are_started_first(aws, rekognition, monkeypatch):
    """One call in flight at a time: the message nearest the DLQ starts first, then the next most
    delivered, first deliveries last and in the order they came."""
    monkeypatch.setattr(app, "window", app.CallWindow(limit=1.0, most=1))
    keys = ["incoming/fresh-1.jpg", "incoming/twice.jpg", "incoming/fresh-2.jpg", "incoming/five.jpg"]
    for key in ("incoming/five.jpg", "incoming/twice.jpg", "incoming/fresh-1.jpg", "incoming/fresh-2.jpg"):
        rekognition.returns(key, LABELS)
    event = deliver(aws, *(notification(s3_record(key)) for key in keys))
    _delivered_before(event, 1, receives=2)
    _delivered_before(event, 3, receives=5)
    assert invoke(event) == NO_FAILURES
    assert rekognition.keys == [
        "incoming/five.jpg",
        "incoming/twice.jpg",
        "incoming/fresh-1.jpg",
        "incoming/fresh-2.jpg",
    ]


def test_a_retried_message_whose_attempt_ends_is_unmarked(aws, rekognition):
    rekognition.returns("incoming/a.jpg", LABELS)
    event = deliver(aws, notification(s3_record("incoming/a.jpg")))
    _delivered_before(event, 0)
    assert invoke(event) == NO_FAILURES
    marks = boto3.client("dynamodb", region_name=REGION).scan(TableName=RUN_STATE_TABLE)["Items"]
    assert [m for m in marks if m["id"]["S"].startswith("attempt#")] == []


def test_a_retried_message_that_kills_its_invocation_goes_to_the_dlq_on_its_next_delivery(
    aws, rekognition, monkeypatch
):
    """The runtime dies while a retried message is attempted (the handler cannot catch it); on its
    next delivery it is moved to the DLQ without another model call, and its batch-mates are labeled."""

    def die(image):
        raise RuntimeDied("out of memory")

    event = deliver(aws, notification(s3_record("incoming/poison.jpg")))
    _delivered_before(event, 0)
    with monkeypatch.context() as patched:
        patched.setattr(app, "_detect_custom_labels", die)
        with pytest.raises(RuntimeDied):
            invoke(event)

    rekognition.returns("incoming/mate.jpg", LABELS)
    again = deliver(aws, notification(s3_record("incoming/mate.jpg")))
    again["Records"].append(copy.deepcopy(event["Records"][0]))
    _delivered_before(again, 1, receives=3)
    assert invoke(again) == NO_FAILURES
    assert rekognition.keys == ["incoming/mate.jpg"]
    (dead,) = _dead_letters(aws)
    assert dead["Body"] == event["Records"][0]["body"]
    assert "died with its invocation" in dead["MessageAttributes"]["reason"]["StringValue"]
    assert "results/mate.jpg.json" in stored(aws)
