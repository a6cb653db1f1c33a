"""Triage Lambda under moto S3/SQS: what it queues, what it records, what it skips, and that a refused
send fails the invocation (so Lambda retries it)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from customlabels_batch.emulator.functions import PROCESSOR, TRIAGE, load_handler
from customlabels_batch.settings import Settings, Use

EVENTS = Path(__file__).parent / "events"
REGION = "us-east-1"
ACCOUNT = "123456789012"
BUCKET = "customlabels-test-images"
QUEUE_NAME = "customlabels-images"
PROJECT_ARN = f"arn:aws:rekognition:{REGION}:{ACCOUNT}:project/my-project/1700000000000"
MODEL_ARN = f"arn:aws:rekognition:{REGION}:{ACCOUNT}:project/my-project/version/my-project.v1/1700000000000"
NOW = "2025-01-02T03:04:05.678Z"
REQUEST_ID = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
ETAG = "0f343b0931126a20f133d67c2b018a3b"  # as in the S3 notification fixture
MAX_BYTES = 15 * 1024 * 1024
QUEUE_URL = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{QUEUE_NAME}"
CONFIG = Settings(project_arn=PROJECT_ARN, project_version_arn=MODEL_ARN)


def triage_environment() -> dict[str, str]:
    """The environment the CDK stack gives the function (same source: Settings)."""
    return CONFIG.function_environment(Use.TRIAGE, bucket=BUCKET, queueUrl=QUEUE_URL)


app = load_handler(TRIAGE, "under_test", triage_environment())
processor = load_handler(
    PROCESSOR, "next_to_triage", CONFIG.function_environment(Use.PROCESSOR, bucket=BUCKET, runStateTable="t")
)

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")


@dataclass
class FakeLambdaContext:
    function_name: str = "customlabels-triage"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:customlabels-triage"
    aws_request_id: str = REQUEST_ID

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def load_event(name: str) -> Any:
    return json.loads((EVENTS / name).read_text())


def s3_record(key: str, *, size: int | None = 2048, event_name: str = "ObjectCreated:Put", bucket=BUCKET):
    """One record of the S3 notification fixture, for `key` as S3 sends it (form-URL-encoded)."""
    record = load_event("s3_object_created.json")["Records"][0]
    record["eventName"] = event_name
    record["s3"]["bucket"]["name"] = bucket
    record["s3"]["object"]["key"] = key
    if size is None:
        del record["s3"]["object"]["size"]
    else:
        record["s3"]["object"]["size"] = size
    return record


def event(*records: dict) -> dict[str, Any]:
    return {"Records": list(records)}


def invoke(payload: Any) -> dict[str, int]:
    return app.lambda_handler(payload, FakeLambdaContext())


@dataclass
class Aws:
    s3: Any
    sqs: Any

    def stored(self) -> dict[str, Any]:
        """Every object the triage wrote, parsed, by key."""
        listing = self.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
        return {
            item["Key"]: json.loads(self.s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read())
            for item in listing
        }

    def queued(self) -> list[dict[str, Any]]:
        bodies = []
        while messages := self.sqs.receive_message(QueueUrl=QUEUE_URL, MaxNumberOfMessages=10).get(
            "Messages", []
        ):
            bodies += [json.loads(m["Body"]) for m in messages]
            for message in messages:
                self.sqs.delete_message(QueueUrl=QUEUE_URL, ReceiptHandle=message["ReceiptHandle"])
        return bodies


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setattr(app.metrics, "namespace", "CustomLabelsBatch")
    monkeypatch.setattr(app.metrics, "service", "customlabels-triage")
    monkeypatch.setattr(app, "_utc_now", lambda: NOW)
    with mock_aws(config={"core": {"reset_boto3_session": False}}):
        app.s3_client.cache_clear()
        app.sqs_client.cache_clear()
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        sqs = boto3.client("sqs", region_name=REGION)
        sqs.create_queue(QueueName=QUEUE_NAME)
        yield Aws(s3=s3, sqs=sqs)
        app.s3_client.cache_clear()
        app.sqs_client.cache_clear()


def image_error(key: str, code: str, reason: str, *, size: int = 2048) -> dict[str, Any]:
    """The processor's error record for an image (same fields), written by the triage."""
    return {
        "source": {
            "bucket": BUCKET,
            "key": key,
            "etag": ETAG,
            "size": size,
            "uploadedAt": "2025-01-02T03:00:00.000Z",
        },
        "reason": reason,
        "errorCode": code,
        "messageId": REQUEST_ID,
        "recordedAt": NOW,
    }


UNSUPPORTED = "The object is not a JPEG or PNG image (.jpg, .jpeg or .png)."


def test_an_image_is_queued_as_a_one_record_s3_notification_the_processor_reads_unchanged(aws):
    notification = load_event("s3_object_created.json")

    assert invoke(notification) == {"queued": 1, "errorRecords": 0, "skipped": 0}

    [body] = aws.queued()
    assert body == notification  # the record exactly as S3 sent it, key still form-URL-encoded
    assert aws.stored() == {}
    # The processor parses it to the image the triage judged.
    assert processor._parse_notification(json.dumps(body)) == [
        processor.ImageRef(
            bucket=BUCKET,
            key="incoming/flowers/red flower.jpg",
            etag=ETAG,
            size=52431,
            uploaded_at="2025-01-02T03:00:00.000Z",
        )
    ]


@pytest.mark.parametrize("key", ["incoming/a.JPG", "incoming/b.jpeg", "incoming/c.PNG", "incoming/d%2Be.png"])
def test_every_supported_extension_in_any_case_is_queued(aws, key):
    assert invoke(event(s3_record(key)))["queued"] == 1
    assert [b["Records"][0]["s3"]["object"]["key"] for b in aws.queued()] == [key]


@pytest.mark.parametrize(
    ("key", "size", "code", "reason"),
    [
        ("incoming/notes.txt", 12, "UnsupportedFileType", UNSUPPORTED),
        ("incoming/archive.jpg.zip", 12, "UnsupportedFileType", UNSUPPORTED),
        (
            "incoming/huge.jpg",
            MAX_BYTES + 1,
            "ImageTooLarge",
            f"The image is {MAX_BYTES + 1} bytes; DetectCustomLabels accepts at most {MAX_BYTES}.",
        ),
    ],
    ids=["text-file", "zip", "over-15-mb"],
)
def test_a_file_the_model_cannot_take_gets_the_processors_error_record_and_is_not_queued(
    aws, key, size, code, reason
):
    assert invoke(event(s3_record(key, size=size))) == {"queued": 0, "errorRecords": 1, "skipped": 0}

    relative = key.removeprefix("incoming/")
    assert aws.stored() == {f"errors/{relative}.json": image_error(key, code, reason, size=size)}
    assert aws.queued() == []


def test_an_image_of_exactly_15_mb_is_queued(aws):
    assert invoke(event(s3_record("incoming/big.jpg", size=MAX_BYTES)))["queued"] == 1


def test_a_key_whose_result_key_would_not_fit_is_recorded_under_its_hash(aws):
    key = "incoming/" + "k" * (1024 - len("incoming/") - len(".jpg")) + ".jpg"  # 1,024 bytes itself
    assert invoke(event(s3_record(key)))["errorRecords"] == 1

    digest = hashlib.sha256(key.encode()).hexdigest()
    [(error_key, record)] = aws.stored().items()
    assert error_key == f"errors/_long-keys/{digest}.json"
    assert (record["errorCode"], record["source"]["key"]) == ("KeyTooLong", key)
    assert aws.queued() == []


@pytest.mark.parametrize(
    "record",
    [
        s3_record("incoming/photos/", size=0),  # the console's "create folder"
        s3_record("incoming/a.jpg", event_name="ObjectRemoved:Delete"),
        s3_record("results/a.jpg.json"),  # the pipeline's own output
        s3_record("errors/a.txt.json"),
    ],
    ids=["folder-marker", "not-a-creation", "own-result", "own-error-record"],
)
def test_what_creates_nothing_to_label_is_skipped_without_a_record(aws, record):
    assert invoke(event(record)) == {"queued": 0, "errorRecords": 0, "skipped": 1}
    assert aws.stored() == {}
    assert aws.queued() == []


def test_the_s3_test_event_is_skipped(aws):
    assert invoke(load_event("s3_test_event.json")) == {"queued": 0, "errorRecords": 0, "skipped": 1}
    assert aws.stored() == {}
    assert aws.queued() == []


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (
            s3_record("elsewhere/a.jpg"),
            f"Record 0 names s3://{BUCKET}/elsewhere/a.jpg, which is not under this pipeline's "
            f"s3://{BUCKET}/incoming/; it was not labeled.",
        ),
        (
            s3_record("incoming/a.jpg", bucket="another-bucket"),
            "Record 0 names s3://another-bucket/incoming/a.jpg, which is not under this pipeline's "
            f"s3://{BUCKET}/incoming/; it was not labeled.",
        ),
        ({"eventName": "ObjectCreated:Put"}, "Record 0 lacks eventName, bucket name or object key."),
        (
            s3_record("incoming/a.jpg", size=-1),
            "Record 0: object size -1 is not a number of bytes.",
        ),
    ],
    ids=["outside-the-prefix", "another-bucket", "no-s3-member", "bad-size"],
)
def test_an_unreadable_or_foreign_record_gets_a_message_error_record(aws, record, reason):
    payload = event(record)
    assert invoke(payload) == {"queued": 0, "errorRecords": 1, "skipped": 0}
    assert aws.stored() == {
        f"errors/_messages/{REQUEST_ID}-0.json": {
            "source": None,
            "reason": reason,
            "errorCode": "NotAnS3Notification",
            "messageId": f"{REQUEST_ID}-0",
            "body": json.dumps(payload, ensure_ascii=False),
            "recordedAt": NOW,
        }
    }
    assert aws.queued() == []


@pytest.mark.parametrize("payload", [{}, {"Records": []}, ["not", "a", "notification"]])
def test_an_event_without_records_gets_one_message_error_record(aws, payload):
    assert invoke(payload)["errorRecords"] == 1
    [(key, record)] = aws.stored().items()
    assert key == f"errors/_messages/{REQUEST_ID}.json"
    assert record["reason"] == "The message body is JSON but has no S3 event Records."


def test_a_mixed_event_queues_the_images_and_records_the_rest(aws):
    records = [s3_record(f"incoming/img-{i:02d}.jpg") for i in range(12)]
    records += [s3_record("incoming/notes.txt"), s3_record("incoming/photos/", size=0)]

    assert invoke(event(*records)) == {"queued": 12, "errorRecords": 1, "skipped": 1}

    queued = aws.queued()
    # One record per message (two SendMessageBatch calls: 10 + 2).
    assert sorted(b["Records"][0]["s3"]["object"]["key"] for b in queued) == [
        f"incoming/img-{i:02d}.jpg" for i in range(12)
    ]
    assert all(len(b["Records"]) == 1 for b in queued)
    assert set(aws.stored()) == {"errors/notes.txt.json"}


def test_a_partly_refused_send_fails_the_invocation_so_lambda_retries_it(aws, monkeypatch):
    calls = []

    def send_message_batch(**params):
        calls.append(params)
        first, *rest = params["Entries"]
        return {
            "Successful": [{"Id": e["Id"], "MessageId": "m", "MD5OfMessageBody": "x"} for e in rest],
            "Failed": [{"Id": first["Id"], "SenderFault": False, "Code": "InternalError"}],
        }

    monkeypatch.setattr(app.sqs_client(), "send_message_batch", send_message_batch)
    records = [s3_record(f"incoming/img-{i}.jpg") for i in range(3)]

    with pytest.raises(app.QueueingFailedError, match=r"SQS refused 1 of 3 images: \['incoming/img-0.jpg"):
        invoke(event(*records))

    [call] = calls
    assert call["QueueUrl"] == QUEUE_URL
    assert [e["Id"] for e in call["Entries"]] == ["0", "1", "2"]


def test_a_failed_error_record_write_fails_the_invocation(aws):
    aws.s3.delete_bucket(Bucket=BUCKET)
    with pytest.raises(Exception, match="NoSuchBucket"):
        invoke(event(s3_record("incoming/notes.txt")))


def test_the_triage_and_the_processor_share_one_verdict():
    """The same function object decides in both: they cannot drift apart."""
    assert app.images.unusable_without_model is processor.unusable_without_model
    assert app.images.image_of is processor.images.image_of


# ---- the latency budget's wait clock ----------------------------------------------------------
TABLE = "run-state"


@pytest.fixture
def budget(aws, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The triage deployed with maxWaitMinutes: it starts the wait clock in the run-state table."""
    monkeypatch.setattr(app.SETTINGS, "max_wait_minutes", 30, raising=False)
    monkeypatch.setattr(app.SETTINGS, "run_state_table", TABLE, raising=False)
    app.dynamodb_client.cache_clear()
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    yield dynamodb
    app.dynamodb_client.cache_clear()


def _clock(dynamodb) -> dict[str, int]:
    item = dynamodb.get_item(TableName=TABLE, Key={"id": {"S": "wait-clock"}}).get("Item", {})
    return {name: int(value["N"]) for name, value in item.items() if name != "id"}


def test_the_first_queued_image_starts_the_wait_clock_and_later_ones_only_move_the_latest(
    budget, monkeypatch
):
    first_ms = int(datetime.fromisoformat(NOW).timestamp() * 1000)
    invoke(event(s3_record("incoming/a.jpg")))
    assert _clock(budget) == {"firstQueuedAt": first_ms, "lastQueuedAt": first_ms}
    monkeypatch.setattr(app, "_utc_now", lambda: "2025-01-02T03:14:05.678Z")
    invoke(event(s3_record("incoming/b.jpg")))
    assert _clock(budget) == {"firstQueuedAt": first_ms, "lastQueuedAt": first_ms + 600_000}


def test_uploads_that_queue_nothing_leave_the_wait_clock_alone(budget):
    invoke(event(s3_record("incoming/notes.txt"), s3_record("incoming/folder/", size=0)))
    assert _clock(budget) == {}


def test_without_a_latency_budget_the_triage_keeps_no_clock(aws):
    assert getattr(app.SETTINGS, "max_wait_minutes", None) is None
    invoke(event(s3_record("incoming/a.jpg")))
    assert len(aws.queued()) == 1  # queued as ever, and no table was needed


def test_a_wait_clock_that_cannot_be_written_does_not_fail_the_queued_upload(aws, monkeypatch):
    # No table: the write fails; a retry would queue the image twice, so the triage logs it instead.
    monkeypatch.setattr(app.SETTINGS, "max_wait_minutes", 30, raising=False)
    monkeypatch.setattr(app.SETTINGS, "run_state_table", "no-such-table", raising=False)
    app.dynamodb_client.cache_clear()
    assert invoke(event(s3_record("incoming/a.jpg")))["queued"] == 1
    assert len(aws.queued()) == 1
    app.dynamodb_client.cache_clear()
