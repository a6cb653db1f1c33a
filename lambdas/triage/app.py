"""Triage Lambda: S3 invokes it (asynchronously) for every object created under the input prefix. It
queues what only the model can judge and writes the error record of what the model could never take,
so a batch made only of such files never starts the billed model.

Each queued message is an S3 event notification holding one record, exactly as S3 would have sent
it to the queue: the processor, `demo --messages` and captured notifications read it unchanged.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from datetime import datetime
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from .. import images, settings
from ..images import ImageRef, NotAnS3NotificationError, PermanentImageError

SEND_BATCH_MAX = 10  # SendMessageBatch's limit on entries per call
# The latency budget's wait clock in the run-state table (the state machine reads and resets it).
WAIT_CLOCK_ID = "wait-clock"

logger = Logger()
metrics = Metrics()

# Read once, at import: the stack sets them from the declared settings.
SETTINGS = settings.load()


class QueueingFailedError(RuntimeError):
    """SQS refused some of the images: the invocation fails, so Lambda retries the whole event (and
    after the last retry sends it to the on-failure queue). Images already queued are queued again:
    results are idempotent."""


@functools.cache
def s3_client() -> Any:
    return boto3.client("s3")


@functools.cache
def sqs_client() -> Any:
    return boto3.client("sqs")


@functools.cache
def dynamodb_client() -> Any:
    return boto3.client("dynamodb")


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, int]:
    outcome = triage(event, context.aws_request_id)
    # The dashboard graphs them; the error-records alarm adds ErrorRecords to the processor's.
    if outcome["queued"]:
        metrics.add_metric(name="ImagesQueued", unit=MetricUnit.Count, value=outcome["queued"])
    if outcome["errorRecords"]:
        metrics.add_metric(name="ErrorRecords", unit=MetricUnit.Count, value=outcome["errorRecords"])
    if outcome["skipped"]:
        metrics.add_metric(name="UploadsSkipped", unit=MetricUnit.Count, value=outcome["skipped"])
    return outcome


def triage(event: Any, request_id: str) -> dict[str, int]:
    """Queue the event's candidate images; record or skip the rest. Raises on any failed write, so
    that the asynchronous invocation is retried."""
    outcome: Counter[str] = Counter(queued=0, errorRecords=0, skipped=0)
    if images.is_test_event(event):
        logger.info("Skipped S3 test event")
        outcome["skipped"] += 1
        return dict(outcome)
    body = json.dumps(event, ensure_ascii=False)
    try:
        records = images.notification_records(event)
    except NotAnS3NotificationError as error:
        _write_message_error(request_id, str(error), body)
        outcome["errorRecords"] += 1
        return dict(outcome)
    candidates: list[tuple[ImageRef, Any]] = []
    for index, s3_record in enumerate(records):
        try:
            image = images.image_of(s3_record, index, SETTINGS, logger)
        except NotAnS3NotificationError as error:
            # Per record: one unreadable record does not hold back the others.
            _write_message_error(f"{request_id}-{index}", str(error), body)
            outcome["errorRecords"] += 1
            continue
        if image is None:
            outcome["skipped"] += 1
            continue
        problem = images.unusable_without_model(image, SETTINGS)
        if problem is not None:
            _write_image_error(image, request_id, problem)
            outcome["errorRecords"] += 1
            continue
        candidates.append((image, s3_record))
    _queue(candidates)
    outcome["queued"] += len(candidates)
    if candidates and getattr(SETTINGS, "max_wait_minutes", None):
        _start_wait_clock()
    return dict(outcome)


def _start_wait_clock() -> None:
    """The latency budget's clock, after the images are in the queue: when the first image since the
    last drain was queued (kept if already set) and when the latest was. A run that drains the queue
    clears the first only if nothing was queued after its empty counts began (the state machine's
    ResetWaitClock), so an image queued meanwhile is never forgotten. A failed write is logged, not
    raised: a retry would queue the images again, and a queue with no clock counts as overdue."""
    moment = datetime.fromisoformat(_utc_now().replace("Z", "+00:00"))
    now = str(round(moment.timestamp() * 1000))
    try:
        dynamodb_client().update_item(
            TableName=SETTINGS.run_state_table,
            Key={"id": {"S": WAIT_CLOCK_ID}},
            UpdateExpression="SET lastQueuedAt = :now, firstQueuedAt = if_not_exists(firstQueuedAt, :now)",
            ExpressionAttributeValues={":now": {"N": now}},
        )
    except (BotoCoreError, ClientError) as error:
        logger.warning("Could not start the wait clock", error=str(error))
        metrics.add_metric(name="WaitClockNotStarted", unit=MetricUnit.Count, value=1)


def _queue(candidates: list[tuple[ImageRef, Any]]) -> None:
    for start in range(0, len(candidates), SEND_BATCH_MAX):
        chunk = candidates[start : start + SEND_BATCH_MAX]
        entries = [
            {"Id": str(start + offset), "MessageBody": json.dumps({"Records": [s3_record]})}
            for offset, (_, s3_record) in enumerate(chunk)
        ]
        response = sqs_client().send_message_batch(QueueUrl=SETTINGS.queue_url, Entries=entries)
        failed = response.get("Failed", [])
        if failed:
            keys = {entry["Id"]: image.key for entry, (image, _) in zip(entries, chunk, strict=True)}
            refused = [
                f"{keys.get(f['Id'], f['Id'])}: {f.get('Code')} {f.get('Message', '')}".strip()
                for f in failed
            ]
            raise QueueingFailedError(f"SQS refused {len(failed)} of {len(entries)} images: {refused}")
        for image, _ in chunk:
            logger.info("Queued image", key=image.key, size=image.size)


def _write_image_error(image: ImageRef, request_id: str, error: PermanentImageError) -> None:
    error_key, document = images.image_error_record(
        image, error, message_id=request_id, layout=SETTINGS, recorded_at=_utc_now()
    )
    _put_json(error_key, document)
    logger.warning("Recorded unusable upload", key=image.key, errorCode=error.error_code, errorKey=error_key)


def _write_message_error(message_id: str, reason: str, body: str) -> None:
    error_key, document = images.message_error_record(
        message_id=message_id, reason=reason, body=body, layout=SETTINGS, recorded_at=_utc_now()
    )
    _put_json(error_key, document)
    logger.warning("Recorded unreadable event", reason=reason, errorKey=error_key)


def _put_json(key: str, document: dict[str, Any]) -> None:
    s3_client().put_object(
        Bucket=SETTINGS.bucket,
        Key=key,
        Body=images.json_body(document),
        ContentType="application/json",
    )


_utc_now = images.utc_now  # a module attribute: tests fix the time here
