"""Processor Lambda: labels the S3 images named in SQS-delivered S3 notifications with Rekognition
Custom Labels and writes one JSON result (or one error record) per image."""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import math
import random
import threading
import time
from concurrent import futures
from datetime import UTC, datetime
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

from .. import images, settings

# What the triage decides too (lambdas/images.py), under the names this module always had (the demo's
# dataset checks its awkward files against the limits here).
from ..images import (
    IMAGE_SUFFIXES,  # noqa: F401
    MAX_IMAGE_BYTES,  # noqa: F401
    ImageRef,
    NotAnS3NotificationError,
    PermanentImageError,
    output_key,
    unusable_without_model,
)

# No SDK retries: botocore backs a throttle off for seconds, which leaves the provisioned (and paid)
# model idle; _detect_custom_labels retries throttles after a short pause instead (and the call
# window below learns from them), and any other transient error goes back to the queue and is
# retried with the message. The pool holds one connection per call in flight.
MAX_CALLS_IN_FLIGHT = 10  # per execution environment: at most the batch size is ever in flight
REKOGNITION_CLIENT_CONFIG = Config(
    # total_max_attempts counts the first attempt; botocore's max_attempts=1 would still retry once.
    retries={"mode": "standard", "total_max_attempts": 1},
    connect_timeout=5,
    read_timeout=30,
    max_pool_connections=MAX_CALLS_IN_FLIGHT,
)
THROTTLE_CODES = frozenset({"ProvisionedThroughputExceededException", "ThrottlingException"})
# A throttled call is retried within the invocation, after a short pause: at the model's capacity a
# good share of calls is throttled, which costs nothing. Only this environment going this long
# without one accepted call is a throttling storm, and its messages back off instead.
STORM_SECONDS = 30.0
THROTTLE_PAUSE_SECONDS = (0.02, 0.1)  # jittered so concurrent environments don't retry in step
MAX_THROTTLE_PAUSE_SECONDS = 1.6
# Retrying these cannot help: the image itself is unusable.
PERMANENT_IMAGE_ERRORS = {
    "InvalidImageFormatException": "The image is corrupt or not a format Rekognition reads (JPEG or PNG).",
    "ImageTooLargeException": "The image exceeds Rekognition's size or dimension limits.",
    "InvalidS3ObjectException": (
        "Rekognition could not read the object from S3 (deleted, not accessible or in another Region)."
    ),
}
# The model is not RUNNING, or its version is gone: the orchestration's business (it stops the run);
# the image waits in the queue for a run with a model, MODEL_NOT_RUNNING_RETRY_SECONDS at a time.
MODEL_NOT_RUNNING_ERRORS = frozenset({"ResourceNotReadyException", "ResourceNotFoundException"})
TRANSIENT_ERRORS = frozenset(
    {
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "InternalServerError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
    }
)

logger = Logger()
tracer = Tracer()
metrics = Metrics()
_metrics_lock = threading.Lock()
_metrics_minute = [-1]  # the UTC minute the metric set's counts belong to (epoch seconds // 60)


def _metric(name: str, value: float = 1, unit: MetricUnit = MetricUnit.Count) -> None:
    # Powertools' metric set is not thread-safe; the calls in flight add to it from their threads.
    with _metrics_lock:
        now = time.time()
        if int(now // 60) != _metrics_minute[0]:
            # CloudWatch counts a blob in the minute of its timestamp. An invocation can outlast a
            # minute: its earlier minute's counts go out stamped with that minute, not with the one it
            # ends in, or the run recorder would count them in the wrong minute's throughput.
            if metrics.provider.metric_set:
                metrics.flush_metrics()
            _metrics_minute[0] = int(now // 60)
            metrics.set_timestamp(int(now * 1000))
        metrics.add_metric(name=name, unit=unit, value=value)


class TransientImageError(Exception):
    """Labeling failed for a reason that may pass (throttling, model not ready, 5xx, network)."""


class ModelNotRunningError(TransientImageError):
    """The model version is not RUNNING (stopping, stopped, gone): no retry can succeed before a run
    starts it again, so the message waits MODEL_NOT_RUNNING_RETRY_SECONDS instead of the back-off."""


# A model stopped while the mapping still delivers (it is disabling, or was enabled by hand) would
# otherwise take an image's receives at the back-off's 10, 20, 40 s towards the DLQ: two minutes
# holds a transition of a few minutes to a receive or two, and the next run's model takes longer to
# start than that.
MODEL_NOT_RUNNING_RETRY_SECONDS = 120


class NotAttemptedError(TransientImageError):
    """Not started, for want of time: back to the queue at once, without a back-off."""


class PipelineMisconfiguredError(Exception):
    """The pipeline itself cannot work (its writes or its model access are denied): no image can
    succeed until someone fixes it, so calling the paid model again would be money thrown away."""


# Error codes that say the pipeline's own permissions (IAM, a bucket or key policy) refuse it.
DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "KMS.AccessDeniedException"})

# What an AWS error means for the message, decided by its code where the code is known and by its
# HTTP status where it is not (an unknown code is never "unexpected").
IMAGE, DENIED, THROTTLED, NOT_RUNNING, TRANSIENT, REFUSED = (
    "image",
    "denied",
    "throttled",
    "not running",
    "transient",
    "refused",
)


def classify(error: ClientError) -> str:
    """IMAGE: the image is unusable; DENIED: the pipeline is refused (403); THROTTLED: capacity is
    fully used (429); NOT_RUNNING: the model is not running (or gone) until a run starts it;
    TRANSIENT: may pass (5xx, network); REFUSED: any other 4xx, a request that can never succeed as
    sent."""
    code, status = _error_code(error), _status(error)
    if code in PERMANENT_IMAGE_ERRORS:
        return IMAGE
    if code in DENIED_CODES or status == 403:
        return DENIED
    if code in THROTTLE_CODES or status == 429:
        return THROTTLED
    if code in MODEL_NOT_RUNNING_ERRORS:
        return NOT_RUNNING
    if code in TRANSIENT_ERRORS or status >= 500 or not status:
        return TRANSIENT
    return REFUSED


# After a denial this execution environment calls nothing for this long; the messages come back
# after MISCONFIGURED_RETRY_SECONDS, so they do not burn their receives while the run stalls.
BREAKER_SECONDS = 300.0
MISCONFIGURED_RETRY_SECONDS = 900


class Breaker:
    """Open after a denial: records fail fast, without a model call, until it closes again."""

    def __init__(self) -> None:
        self.open_until = -math.inf
        self.reason = ""

    def trip(self, reason: str) -> None:
        self.open_until, self.reason = time.monotonic() + BREAKER_SECONDS, reason

    def check(self) -> None:
        if self.reason and time.monotonic() < self.open_until:
            raise PipelineMisconfiguredError(f"Not attempted: {self.reason}")


breaker = Breaker()


class ModelSaturatedError(TransientImageError):
    """Not attempted: this environment is in a throttling storm. It backs off with the message that
    found the storm instead of spending the invocation's time, and its receives, on it."""


# After a storm is found, this environment's other messages wait this long before their calls.
SATURATED_SECONDS = 10.0


class Saturation:
    """Tells a throttling storm from a full model: a full model accepts some calls, whatever its
    speed; a storm accepts none. The environment's calls share it."""

    def __init__(self) -> None:
        self.since = -math.inf  # when the storm was found
        self.throttled_since: float | None = None  # the first throttle since the last accepted call
        self._lock = threading.Lock()

    def accepted(self) -> None:
        self.throttled_since = None

    def throttled(self) -> bool:
        """Count a throttled call; True once STORM_SECONDS passed without an accepted call."""
        now = time.monotonic()
        with self._lock:
            if self.throttled_since is None:
                self.throttled_since = now
            if now - self.throttled_since < STORM_SECONDS:
                return False
            self.since, self.throttled_since = now, None
            return True

    def check(self) -> None:
        """Before a message's first call: in a storm, wait it out if the invocation has the time,
        else give the message back (with the retry back-off). Giving back at once cost a receive per
        message per new batch: a saturated environment took a batch, returned it within seconds and
        took the next, and at 32 environments on one unit (auto-scaling from 1 to 4) 3,600 of 5,000
        images reached the DLQ."""
        pause = SATURATED_SECONDS - (time.monotonic() - self.since)
        if pause <= 0:
            return
        if budget.left(after=pause):
            time.sleep(pause)
            return
        raise ModelSaturatedError(
            f"Not attempted: the model accepted none of this environment's calls for {STORM_SECONDS:g} s."
        )


saturation = Saturation()


# Read once, at import: the stack sets them from the declared settings.
SETTINGS = settings.load()


# Clients are created on first use, after the settings and the environment are in place.
@functools.cache
def rekognition_client() -> Any:
    return boto3.client("rekognition", config=REKOGNITION_CLIENT_CONFIG)


@functools.cache
def s3_client() -> Any:
    return boto3.client("s3")


@functools.cache
def dynamodb_client() -> Any:
    return boto3.client("dynamodb")


@functools.cache
def sqs_client(region: str) -> Any:
    return boto3.client("sqs", region_name=region)


# An invocation stops starting work this long before its timeout: what is left goes back to the
# queue as batch item failures instead of being cut off mid-write by the timeout.
TIME_MARGIN_SECONDS = 10.0


class TimeBudget:
    """How long this invocation may still start work (on the monotonic clock): a call is started
    only if the slowest call of this invocation so far would still end a margin before the timeout."""

    def __init__(self) -> None:
        self.until = math.inf
        self.slowest_call = 0.0
        self.unfinished = 0  # messages of the invocation not finished (set by _process_concurrently)

    def start(self, context: LambdaContext) -> None:
        self.until = time.monotonic() + context.get_remaining_time_in_millis() / 1000 - TIME_MARGIN_SECONDS
        self.slowest_call = 0.0

    def spare_per_message(self) -> float:
        """The time left to start work in, per message of the invocation not yet finished."""
        return (self.until - time.monotonic()) / max(self.unfinished, 1)

    def observe(self, seconds: float) -> None:
        self.slowest_call = max(self.slowest_call, seconds)

    def left(self, after: float = 0.0) -> bool:
        """Whether a call started `after` seconds from now would still end in time."""
        return time.monotonic() + after + self.slowest_call < self.until

    def check(self, what: str) -> None:
        if not self.left():
            raise NotAttemptedError(f"Out of time before {what}: left for the next delivery.")


budget = TimeBudget()


def record_handler(record: SQSRecord) -> None:
    # A message delivered before was in an invocation that failed it, crashed or timed out: it is
    # marked while it is attempted, so that one found marked was being attempted when its
    # invocation died, and is not attempted again. Nothing here runs when the runtime dies (a
    # crash, the timeout): the mark stays.
    retried = _receives(record) > 1
    try:
        _attempt(record, retried)
    except Exception:
        _unmark(record, retried)
        raise
    _unmark(record, retried)
    _delete(record)


def _attempt(record: SQSRecord, retried: bool) -> None:
    """Process the message, or move it to the DLQ; on failure, set when it comes back and re-raise."""
    try:
        breaker.check()
        saturation.check()
        budget.check("this message")
        if retried and _died_during_last_attempt(record):
            _move_to_dead_letter_queue(record)
        else:
            _process_message(record)
    except Crowded:
        raise
    except PipelineMisconfiguredError as error:
        if not str(error).startswith("Not attempted"):
            breaker.trip(str(error))
            logger.error("The pipeline is misconfigured; no more model calls for now", reason=str(error))
        _metric("PipelineMisconfigured")
        _retry_soon(record, MISCONFIGURED_RETRY_SECONDS, back_off=False)
        raise
    except NotAttemptedError as error:
        logger.info("Message left for the next delivery", messageId=record.message_id, reason=str(error))
        _metric("NotAttempted")
        _retry_soon(record, 0, back_off=False)
        raise
    except ModelNotRunningError as error:
        logger.warning(
            "The model is not running; the message waits", messageId=record.message_id, reason=str(error)
        )
        _metric("TransientFailures")
        _retry_soon(record, MODEL_NOT_RUNNING_RETRY_SECONDS, back_off=False)
        raise
    except Exception as error:
        if isinstance(error, TransientImageError):
            logger.warning("Message will be retried", messageId=record.message_id, reason=str(error))
        else:
            logger.exception("Message failed unexpectedly; it will be retried", messageId=record.message_id)
        _metric("TransientFailures")
        _retry_soon(record, SETTINGS.retry_delay_seconds)
        raise


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    started = time.monotonic()
    budget.start(context)
    raw_records = event.get("Records", [])
    _hold_for_this_invocation(raw_records, context)
    # The most-delivered messages first: a message handed back unstarted at the invocation's end
    # (more messages than the model took in the time) still spent a receive, and taken last it was
    # left over again until it reached the DLQ (7 of 5,000 images auto-scaling from one unit to
    # four, when first deliveries went first). A retried message that kills the invocation costs its
    # batch-mates one receive either way, and it is moved to the DLQ unattempted on its next delivery.
    records = sorted((SQSRecord(r) for r in raw_records), key=_receives, reverse=True)
    failed = _process_concurrently(records)
    _count_progress(len(records) - len(failed))
    _metric("ProcessorSeconds", time.monotonic() - started, MetricUnit.Seconds)
    return {"batchItemFailures": [{"itemIdentifier": r.message_id} for r in failed]}


@functools.cache
def _pool() -> futures.ThreadPoolExecutor:
    # Lives with the execution environment, as the window does: invocations reuse its threads.
    return futures.ThreadPoolExecutor(max_workers=MAX_CALLS_IN_FLIGHT, thread_name_prefix="image")


def _process_concurrently(records: list[SQSRecord]) -> list[SQSRecord]:
    """Work on the batch's messages with as many in flight as the call window allows (one model
    call each); return those that failed (they go back to the queue)."""
    pending = collections.deque(records)
    running: dict[futures.Future, SQSRecord] = {}
    failed: list[SQSRecord] = []
    while pending or running:
        while pending and len(running) < window.allowed():
            record = pending.popleft()
            running[_pool().submit(record_handler, record)] = record
        window.in_flight, budget.unfinished = len(running), len(running) + len(pending)
        done, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
        for future in done:
            record = running.pop(future)
            if isinstance(error := future.exception(), Crowded):
                pending.appendleft(record)  # starts again when the window has room
            elif error is not None:
                if not isinstance(error, Exception):
                    raise error  # the runtime itself is going down: nothing more runs
                failed.append(record)
    return failed


class CallWindow:
    """How many DetectCustomLabels calls this execution environment keeps in flight, found at run
    time: the model says it is full by throttling (which it does not bill), so the window grows a
    little with every accepted call and shrinks when calls are throttled.

    - It starts at a whole batch: throttles bring it down within a few round trips, where growing
      from one call would leave a fast model idle while it grew.
    - An accepted call widens it by GROW for each round trip the call took of this environment's
      time (below one call, its pause after the call too: such a window grows as fast per second as
      a window of one), and that to the power of the calls accepted in a row since this
      environment's last throttle (at most STREAK). At a full model throttles come every few calls
      and hold the growth near GROW per round trip; a model that has stopped throttling (the end of
      a drain, a unit added) is taken up within a few round trips. Measured, 100 images at 5
      calls/s: 80-100 % of the capacity over the drain in 21 runs with GROW per call alone (the
      last environments' paced calls trickled), 90-102 % in 12 runs with this.
    - A throttled call narrows it by SHRINK, at most once per round trip: calls sent together, or
      retried within one round trip, meet the same full model, so only a call sent after the last
      narrowing, a round trip (the accepted calls' smoothed latency) or more after it, narrows it
      again. Narrowed at every retried throttle instead, the first second's throttles (254 of them
      at 100 images on one unit) left windows near their floor for the rest of a short drain:
      measured, 100 images at 5 calls/s, 90-102 % of the capacity over the drain in 12 runs, and
      93-103 % in 18 runs once per round trip.
    - A throttled call that finds more calls in flight than the window allows steps back (Crowded)
      and waits for a place, so the window bounds the calls that retry too.
    - The environments together ask a little more than the model can take, so it never waits for
      work, whatever its throughput and latency and however many environments share it.
    - Below one call the window spaces this environment's calls (at 0.25, one call, then three
      calls' time of pause), but never so far apart that the invocation's messages could not all
      start in a quarter of its time left (PACE_WITHIN). At a slow model shared by many
      environments the windows fall to their floor and that bound sets the pace: bounded by the
      whole time left, every environment could be in its pause at once and the model idle (eight
      environments, ten messages each, one minute: 1.5 calls/s, below a 2-call/s model); a
      quarter asks for several times more than the model takes, and throttles (free) take the rest.
      Measured: a 2-call/s model kept full 86-89 % of the time with the whole time left, 98-99 %
      with a quarter."""

    GROW = 1.05
    STREAK = 8
    SHRINK = 0.9
    LOWEST = 0.01
    PACE_WITHIN = 0.25

    def __init__(self, *, limit: float | None = None, most: int = MAX_CALLS_IN_FLIGHT) -> None:
        self.limit = float(most) if limit is None else limit
        self.most = most
        self.in_flight = 0  # messages being worked on (set by _process_concurrently)
        self.latency = 0.0  # smoothed, of accepted calls
        self.narrowed_at = -math.inf  # monotonic
        self.streak = 0  # calls accepted since the last throttle
        self._lock = threading.Lock()

    def allowed(self) -> int:
        return max(1, min(self.most, int(self.limit)))

    def step_back(self) -> bool:
        """True if a call is in flight beyond the window: the caller's message leaves it."""
        with self._lock:
            if self.in_flight <= self.allowed():
                return False
            self.in_flight -= 1
            return True

    def accepted(self, seconds: float) -> None:
        with self._lock:
            self.latency = seconds if not self.latency else 0.8 * self.latency + 0.2 * seconds
            self.streak = min(self.streak + 1, self.STREAK)
            round_trips = 1 + self.gap() / self.latency if self.latency else 1.0
            self.limit = min(self.limit * self.GROW ** (self.streak * round_trips), float(self.most))

    def throttled(self, started: float) -> None:
        """A call sent at `started` (monotonic) was throttled."""
        with self._lock:
            self.streak = 0
            now = time.monotonic()
            if started >= self.narrowed_at and now - self.narrowed_at >= self.latency:
                self.limit = max(self.LOWEST, self.limit * self.SHRINK)
                self.narrowed_at = now

    def gap(self) -> float:
        """The pause after a call that keeps this environment at a window below one call, at most
        what starts the invocation's unfinished messages within PACE_WITHIN of its time left."""
        if self.limit >= 1:
            return 0.0
        spare = budget.spare_per_message() * self.PACE_WITHIN - self.latency
        return max(0.0, min(self.latency * (1 / self.limit - 1), spare))


class Crowded(Exception):
    """A throttled call found more calls in flight than the window allows: its message goes back to
    the invocation's own queue (not SQS) and starts again when there is room."""


window = CallWindow()


# A crashed or timed-out invocation's messages come back this long after its timeout, not after the
# queue's visibility timeout (6x the function's timeout, for the mapping's own retries).
IN_FLIGHT_GRACE_SECONDS = 30


def _receives(record: SQSRecord) -> int:
    return int(record.attributes.approximate_receive_count or 1)


def _queue_url(record: SQSRecord) -> tuple[Any, str]:
    """The SQS client and URL of the record's queue, in its partition (the client's endpoint carries
    the DNS suffix: amazonaws.com.cn, ...)."""
    _, _, _, region, account, queue_name = record.event_source_arn.split(":")
    client = sqs_client(region)
    return client, f"{client.meta.endpoint_url}/{account}/{queue_name}"


def _hold_for_this_invocation(raw_records: list[dict[str, Any]], context: LambdaContext) -> None:
    """Hold the batch's messages for this invocation's remaining time and a grace period only. Best
    effort: if it fails, a crash's messages come back after the queue's visibility timeout."""
    if not raw_records:
        return
    seconds = math.ceil(context.get_remaining_time_in_millis() / 1000) + IN_FLIGHT_GRACE_SECONDS
    records = [SQSRecord(r) for r in raw_records]
    try:
        client, url = _queue_url(records[0])
        for start in range(0, len(records), 10):
            client.change_message_visibility_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": r.receipt_handle, "VisibilityTimeout": seconds}
                    for i, r in enumerate(records[start : start + 10])
                ],
            )
    except Exception:
        logger.warning("Could not shorten the batch's visibility", exc_info=True)


def _delete(record: SQSRecord) -> None:
    """Delete a message as soon as it is done (the mapping deletes it too, at the end of the batch;
    deleting twice is harmless): a crash later in the batch then re-delivers only unfinished work."""
    try:
        client, url = _queue_url(record)
        client.delete_message(QueueUrl=url, ReceiptHandle=record.receipt_handle)
    except Exception:
        logger.warning(
            "Could not delete a finished message early", messageId=record.message_id, exc_info=True
        )


def _mark_key(record: SQSRecord) -> dict[str, Any]:
    return {"id": {"S": f"attempt#{record.message_id}"}}


# Marks expire with the DLQ's retention (the table's TTL deletes them; a message is gone by then).
MARK_SECONDS = 14 * 24 * 3600


def _died_during_last_attempt(record: SQSRecord) -> bool:
    """Mark the retried message as being attempted; True if it already was, i.e. the invocation that
    last attempted it died (a crash or the timeout) before finishing it. If the mark cannot be
    read or written, the message is attempted as usual."""
    try:
        old = dynamodb_client().update_item(
            TableName=SETTINGS.run_state_table,
            Key=_mark_key(record),
            UpdateExpression="ADD attempts :one SET expiresAt = :expires",
            ExpressionAttributeValues={
                ":one": {"N": "1"},
                ":expires": {"N": str(int(datetime.now(UTC).timestamp()) + MARK_SECONDS)},
            },
            ReturnValues="UPDATED_OLD",
        )
    except Exception:
        logger.warning("Could not mark a retried message", messageId=record.message_id, exc_info=True)
        return False
    return int(old.get("Attributes", {}).get("attempts", {}).get("N", "0")) > 0


def _unmark(record: SQSRecord, marked: bool) -> None:
    if not marked:
        return
    try:
        dynamodb_client().delete_item(TableName=SETTINGS.run_state_table, Key=_mark_key(record))
    except Exception:
        # The next delivery would take it for a crash and move it to the DLQ: say so.
        logger.warning("Could not unmark a retried message", messageId=record.message_id, exc_info=True)


def _move_to_dead_letter_queue(record: SQSRecord) -> None:
    """The message's last attempt died with its invocation (it crashes the runtime, or never ends in
    time): another attempt would only kill another batch and keep the model waiting."""
    client, url = _queue_url(record)
    client.send_message(
        QueueUrl=SETTINGS.dead_letter_queue_url,
        MessageBody=record.body,
        MessageAttributes={
            "reason": {
                "DataType": "String",
                "StringValue": "Its last attempt died with its invocation (a crash or the timeout); "
                "not attempted again.",
            },
            "sourceQueue": {"DataType": "String", "StringValue": url},
        },
    )
    _metric("CrashedMessages")
    logger.error(
        "Moved a message whose last attempt died with its invocation to the DLQ",
        messageId=record.message_id,
        receives=_receives(record),
    )


def _count_progress(accounted: int) -> None:
    """Add the messages this batch accounted for (a result or an error record for each) to the run
    state table's progress counter: the state machine reads it to tell a drain that is progressing
    from one that is stalled. Best effort: a failed count must not fail the batch, whose results are
    already written (the run may then stop the model early, as a stall, and say so)."""
    if accounted <= 0:
        return
    try:
        dynamodb_client().update_item(
            TableName=SETTINGS.run_state_table,
            Key={"id": {"S": "progress"}},
            UpdateExpression="ADD accounted :n",
            ExpressionAttributeValues={":n": {"N": str(accounted)}},
        )
    except Exception:
        logger.warning("Could not count progress", accounted=accounted, exc_info=True)


def _process_message(record: SQSRecord) -> None:
    try:
        images = _parse_notification(record.body)
    except NotAnS3NotificationError as error:
        _write_message_error(record, str(error))
        return
    if images is None:
        logger.info("Skipped S3 test event", messageId=record.message_id)
        return
    # Stop at the first failure: the rest of the message is retried anyway, and results are
    # idempotent, so pressing on would only add load to a throttled model.
    for image in images:
        _process_image(image, record.message_id)


def _parse_notification(body: str) -> list[ImageRef] | None:
    return images.parse_notification(body, SETTINGS, logger)


def _process_image(image: ImageRef, message_id: str) -> None:
    try:
        # The triage's checks again: anyone may send to the queue (and a message may lack the size).
        if (problem := unusable_without_model(image, SETTINGS)) is not None:
            raise problem
        image = _with_size(image)
        if (problem := unusable_without_model(image, SETTINGS)) is not None:
            raise problem
        labels = _detect_custom_labels(image)
    except PermanentImageError as error:
        _write_image_error(image, message_id, error)
        return
    result = {
        "source": image.source(),
        "modelVersionArn": SETTINGS.project_version_arn,
        "labeledAt": _utc_now(),
        "settings": {"minConfidence": SETTINGS.min_confidence, "maxResults": SETTINGS.max_results},
        "customLabels": labels,
    }
    result_key = output_key(image.key, SETTINGS.results_prefix, SETTINGS.input_prefix)
    _put_json(SETTINGS.bucket, result_key, result)
    _metric("ImagesLabeled")
    _metric("LabelsFound", len(labels))
    # Upload to result, for the run record's percentiles (the upload's time comes with the event).
    waited = images.seconds_between(image.uploaded_at, result["labeledAt"])
    if waited is not None:
        _metric("TimeToResultSeconds", waited, MetricUnit.Seconds)
    logger.info("Labeled image", key=image.key, resultKey=result_key, labelCount=len(labels))


def _with_size(image: ImageRef) -> ImageRef:
    """The image with its size; S3 notifications carry it, other producers may not."""
    if image.size is not None:
        return image
    try:
        head = s3_client().head_object(Bucket=image.bucket, Key=image.key)
    except ClientError as error:
        kind = classify(error)
        if _status(error) == 404:
            raise PermanentImageError("ObjectNotFound", "The object no longer exists.") from None
        if kind == DENIED:
            # S3 answers 403 for a missing object to a reader without s3:ListBucket (this one).
            raise PermanentImageError(
                "ObjectNotFound", "The object no longer exists (or the pipeline may not read it)."
            ) from None
        if kind in (TRANSIENT, THROTTLED):
            raise TransientImageError(f"HeadObject failed: {error}") from error
        raise PermanentImageError(
            _error_code(error) or str(_status(error)), f"HeadObject refused: {error}"
        ) from None
    etag = image.etag or head.get("ETag", "").strip('"') or None
    return dataclasses.replace(image, etag=etag, size=head["ContentLength"])


def _detect_custom_labels(image: ImageRef) -> list[dict[str, Any]]:
    params: dict[str, Any] = {
        "ProjectVersionArn": SETTINGS.project_version_arn,
        "Image": {"S3Object": {"Bucket": image.bucket, "Name": image.key}},
    }
    if SETTINGS.min_confidence is not None:
        params["MinConfidence"] = SETTINGS.min_confidence
    if SETTINGS.max_results is not None:
        params["MaxResults"] = SETTINGS.max_results
    for attempt in itertools.count(1):
        started = time.monotonic()
        try:
            labels = rekognition_client().detect_custom_labels(**params)["CustomLabels"]
        except ClientError as error:
            code, kind, seconds = _error_code(error), classify(error), _observe(started)
            if kind == IMAGE:
                _accepted(seconds)
                raise PermanentImageError(code, PERMANENT_IMAGE_ERRORS[code]) from None
            if kind == DENIED:
                raise PipelineMisconfiguredError(f"DetectCustomLabels is denied: {error}") from error
            if kind == THROTTLED:
                window.throttled(started)
                _metric("ModelCallsThrottled")
                storm = saturation.throttled()
                if not storm and window.step_back():
                    raise Crowded from None
                if not storm and budget.left():
                    # The model's capacity is fully used: a slot frees within a second, so retry
                    # soon instead of backing off for seconds and leaving paid capacity idle.
                    time.sleep(_throttle_pause(attempt))
                    continue
            if kind == NOT_RUNNING:
                raise ModelNotRunningError(f"DetectCustomLabels failed: {error}") from error
            if kind in (TRANSIENT, THROTTLED):
                raise TransientImageError(f"DetectCustomLabels failed: {error}") from error
            # Any other 4xx: this request, for this image, can never succeed as sent.
            logger.warning("DetectCustomLabels refused the image", errorCode=code, status=_status(error))
            raise PermanentImageError(
                code or str(_status(error)), f"DetectCustomLabels refused it: {error}"
            ) from None
        except (ConnectionError, HTTPClientError) as error:
            _observe(started)
            raise TransientImageError(f"Could not reach Rekognition: {error}") from error
        _accepted(_observe(started))
        return labels


def _observe(started: float) -> float:
    seconds = time.monotonic() - started
    budget.observe(seconds)
    return seconds


def _accepted(seconds: float) -> None:
    """The model took the call (labels, or an image it cannot read): capacity used; below a
    window of one call, pause before this environment's next call."""
    window.accepted(seconds)
    saturation.accepted()
    _metric("ModelCallsAccepted")
    _metric("ModelCallSeconds", seconds, MetricUnit.Seconds)
    if gap := window.gap():
        time.sleep(gap)


def _throttle_pause(attempt: int) -> float:
    """Jittered, so environments do not retry in step; longer for a call throttled again and again
    (a throttling storm), and at least the window's spacing."""
    pause = random.uniform(*THROTTLE_PAUSE_SECONDS) * 2 ** min(attempt - 1, 4)
    return max(min(pause, MAX_THROTTLE_PAUSE_SECONDS), window.gap())


def _error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def _status(error: ClientError) -> int:
    """The HTTP status; S3's answers to HEAD have no body, so their code is the status ("403")."""
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    code = _error_code(error)
    return status or (int(code) if code.isdigit() else 0)


def _write_image_error(image: ImageRef, message_id: str, error: PermanentImageError) -> None:
    error_key, record = images.image_error_record(
        image, error, message_id=message_id, layout=SETTINGS, recorded_at=_utc_now()
    )
    _put_json(SETTINGS.bucket, error_key, record)
    _metric("ErrorRecords")
    logger.warning("Recorded unusable image", key=image.key, errorCode=error.error_code, errorKey=error_key)


def _write_message_error(record: SQSRecord, reason: str) -> None:
    error_key, error_record = images.message_error_record(
        message_id=record.message_id, reason=reason, body=record.body, layout=SETTINGS, recorded_at=_utc_now()
    )
    _put_json(SETTINGS.bucket, error_key, error_record)
    _metric("ErrorRecords")
    logger.warning("Recorded unreadable message", messageId=record.message_id, errorKey=error_key)


def _put_json(bucket: str, key: str, document: dict[str, Any]) -> None:
    try:
        s3_client().put_object(
            Bucket=bucket,
            Key=key,
            Body=images.json_body(document),
            ContentType="application/json",
        )
    except ClientError as error:
        kind = classify(error)
        if kind in (TRANSIENT, THROTTLED):
            raise TransientImageError(f"PutObject to s3://{bucket}/{key} failed: {error}") from error
        # Denied, or refused as sent (a bucket policy or setting every write of ours would meet the
        # same way): the pipeline cannot write, whatever the image.
        raise PipelineMisconfiguredError(f"PutObject to s3://{bucket}/{key} is refused: {error}") from error


MAX_RETRY_DELAY_SECONDS = 300


def retry_delay(base_seconds: int, receive_count: int) -> int:
    """Exponential back-off by delivery: a throttled model gets room to recover before the message
    uses up its receives and lands in the DLQ."""
    return min(base_seconds * 2 ** max(receive_count - 1, 0), MAX_RETRY_DELAY_SECONDS)


def _retry_soon(record: SQSRecord, base_seconds: int, *, back_off: bool = True) -> None:
    """Set the failed message's visibility so it returns after the back-off (seconds, not 6x the
    timeout), or after base_seconds exactly."""
    delay_seconds = retry_delay(base_seconds, _receives(record)) if back_off else base_seconds
    try:
        client, url = _queue_url(record)
        client.change_message_visibility(
            QueueUrl=url,
            ReceiptHandle=record.receipt_handle,
            VisibilityTimeout=delay_seconds,
        )
    except Exception:
        # Best effort: the message is retried either way, only later.
        logger.warning(
            "Could not shorten visibility of failed message",
            messageId=record.message_id,
            exc_info=True,
        )


_utc_now = images.utc_now  # a module attribute: tests fix the time here
