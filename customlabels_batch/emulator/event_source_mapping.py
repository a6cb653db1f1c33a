"""Lambda's SQS event-source mapping, emulated: pollers that run the real handler in-process.

AWS semantics kept: polls only while the mapping's State is Enabled (as an option also Disabling:
control_plane.mapping_polls); batches up to BatchSize; at most MaximumConcurrency batches at once;
deletes what succeeded; honours `batchItemFailures` (an invalid response fails the whole batch); ends
an invocation at the function's timeout (on emulated time); an invocation error or timeout returns
the rest of the batch to the queue, where the visibility timeout and the queue's
redrive policy (moto's) take over.
"""

from __future__ import annotations

import functools
import json
import math
import threading
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import boto3

from .clock import MAPPING_TOPIC, MESSAGES_TOPIC, TIME_TOPIC, ClockStopped, DeadlineReached, VirtualClock
from .control_plane import mapping_polls, state_change_at
from .moto_fixes import SQS_LOCK

IDLE_POLL_SECONDS = 1.0
LONG_POLL_SECONDS = 20.0  # Lambda's pollers use SQS long polling


class InvocationCrash(BaseException):
    """The function's runtime died mid-batch (an injected fault): Lambda deletes nothing from the
    batch. A BaseException, as a runtime that exits cannot be caught by the handler's code."""


@dataclass
class LambdaContext:
    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    timeout_seconds: int
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "emulated"
    # The emulated clock, where the invocation runs against its timeout on emulated time.
    clock: VirtualClock | None = None

    def get_remaining_time_in_millis(self) -> int:
        if self.clock is None:
            return self.timeout_seconds * 1000
        return int(min(self.clock.remaining(), self.timeout_seconds) * 1000)


class EventSourceMappingEmulator:
    def __init__(
        self,
        *,
        clock: VirtualClock,
        region: str,
        mapping_uuid: str,
        queue_url: str,
        max_concurrency: int,
        handler_factory: Callable[[int], Callable[[dict, object], dict]],
        timeout_seconds: int,
    ):
        self.clock = clock
        self.mapping_uuid = mapping_uuid
        self.queue_url = queue_url
        self.max_concurrency = max_concurrency
        # One handler per poller: each stands for a Lambda execution environment, which has module
        # state of its own (the handler's BatchProcessor must not be shared between invocations).
        self.handler_factory = handler_factory
        self.timeout_seconds = timeout_seconds
        self._lambda = boto3.client("lambda", region_name=region)
        self._sqs = boto3.client("sqs", region_name=region)
        mapping = self._lambda.get_event_source_mapping(UUID=mapping_uuid)
        self.batch_size = mapping["BatchSize"]
        self.function_arn = mapping["FunctionArn"]
        self.event_source_arn = mapping["EventSourceArn"]
        self.region = region
        self.stats = Counter()
        self.errors: list[str] = []
        self.fatal: str | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stats_lock = threading.Lock()

    def start(self) -> None:
        self.ensure_pollers()

    def ensure_pollers(self) -> None:
        """One poller per batch the mapping may run at once: MaximumConcurrency as deployed, and as
        UpdateEventSourceMapping later sets it (a run sizes it to the units the model reports)."""
        for index in range(len(self._threads), max(self.max_concurrency, self._allowed())):
            actor = self.clock.new_actor()
            handler = self.handler_factory(index)
            thread = threading.Thread(
                target=self._run, args=(actor, handler, index), name=f"esm-poller-{index}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _allowed(self) -> int:
        scaling = self._moto_mapping().scaling_config or {}
        return int(scaling.get("MaximumConcurrency") or self.max_concurrency)

    def stop(self) -> None:
        self._stopping.set()
        self.clock.poke()
        for thread in self._threads:
            thread.join(10)

    # Polling reads moto's objects directly: it runs on every emulated step, and going through
    # boto3 for each look would make long runs slow without changing what they show.
    @functools.cached_property
    def _lambda_backend(self):
        # Found once: moto's lookup of an account's backend was a tenth of a multi-unit run's CPU
        # time, the waiting pollers asking for it at every poke.
        from moto.awslambda.utils import get_backend

        return get_backend(self.function_arn.split(":")[4], self.region)

    def _moto_mapping(self):
        return self._lambda_backend.get_event_source_mapping(self.mapping_uuid)

    def _polling(self) -> bool:
        return mapping_polls(self._moto_mapping())

    def _wait_while(
        self, holds: Callable[[], bool], *, timeout: float = math.inf, wakes_on: frozenset[str]
    ) -> None:
        """Sleep while holds() and the mapping's next state change stays where it was, at most until
        that change or for timeout; holds() is looked at again after pokes on `wakes_on`'s topics
        (VirtualClock.wait_until's)."""
        change_at = state_change_at(self._moto_mapping())
        self.clock.wait_until(
            lambda: (
                self._stopping.is_set() or not holds() or state_change_at(self._moto_mapping()) != change_at
            ),
            timeout=min(timeout, change_at - self.clock.now()),
            wakes_on=wakes_on | {MAPPING_TOPIC},
        )

    def _moto_queue(self):
        from moto.sqs.models import sqs_backends

        account, name = self.event_source_arn.split(":")[4:6]
        return sqs_backends[account][self.region].queues[name]

    def _wait_for_messages(self) -> None:
        """Long polling: return when a message is visible, the mapping changes, or 20 s pass. A message
        becomes receivable just after its ready time (moto compares strictly): whenever the earliest
        ready time changes (a message arrives, another poller takes one), wait until just after it."""
        queue = self._moto_queue()
        now_ms = self.clock.epoch_seconds() * 1000
        first = _first_ready_ms(queue)
        if first < now_ms:
            # Visible, but another poller took it first: look again a moment later.
            self.clock.sleep(IDLE_POLL_SECONDS)
            return
        timeout = min(LONG_POLL_SECONDS, (first - now_ms) / 1000 + 0.001)
        self._wait_while(
            lambda: self._polling() and _first_ready_ms(queue) == first,
            timeout=timeout,
            wakes_on=frozenset({MESSAGES_TOPIC, TIME_TOPIC}),
        )

    def _count(self, name: str, amount: int = 1) -> None:
        with self._stats_lock:
            self.stats[name] += amount

    def _run(self, actor: int, handler: Callable[[dict, object], dict], index: int) -> None:
        self.clock.bind(actor)

        def polling() -> bool:
            return self._polling() and index < self._allowed()

        try:
            while not self._stopping.is_set():
                if not polling():
                    # Only an update of the mapping turns polling on (or the state change this
                    # waits until at most), not the queue's messages nor the time.
                    self._wait_while(lambda: not polling(), wakes_on=frozenset())
                    continue
                messages = self._receive()
                if not messages:
                    self._wait_for_messages()
                    continue
                self._invoke(handler, messages)
        except ClockStopped:
            pass
        except Exception:  # a poller must never die silently: the driver stops the emulation
            self.fatal = traceback.format_exc()
        finally:
            self.clock.retire(actor)

    def _receive(self) -> list[dict]:
        messages: list[dict] = []
        while len(messages) < self.batch_size:
            got = self._sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(10, self.batch_size - len(messages)),
                MessageSystemAttributeNames=["All"],
                WaitTimeSeconds=0,
            ).get("Messages", [])
            messages += got
            if len(got) < 10:
                break
        return messages

    def _event(self, messages: list[dict]) -> dict:
        return {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m.get("Attributes", {}),
                    "messageAttributes": {},
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.event_source_arn,
                    "awsRegion": self.region,
                }
                for m in messages
            ]
        }

    def _invoke(self, handler: Callable[[dict, object], dict], messages: list[dict]) -> None:
        event = self._event(messages)
        context = LambdaContext(
            function_name=self.function_arn.split(":")[-1],
            invoked_function_arn=self.function_arn,
            memory_limit_in_mb=256,
            aws_request_id=str(uuid.uuid4()),
            timeout_seconds=self.timeout_seconds,
            clock=self.clock,
        )
        self._count("invocations")
        self._count("messagesReceived", len(messages))
        started = self.clock.now()
        try:
            # Lambda ends the invocation at its timeout, wherever it is: what the handler had not
            # deleted comes back after the visibility timeout, like a crash.
            with self.clock.deadline(self.timeout_seconds):
                response = handler(event, context)
        except DeadlineReached:
            self._count("invocationSeconds", self.timeout_seconds)
            self._count("timeouts")
            self.errors.append(f"Task timed out after {self.timeout_seconds} seconds")
            return
        except (Exception, InvocationCrash) as error:  # the whole batch fails, as for a crash
            self._count("invocationSeconds", self.clock.now() - started)
            self._count("invocationErrors")
            self.errors.append(f"{type(error).__name__}: {error}")
            return
        # Billed duration, as Lambda bills it (emulated seconds the handler ran).
        self._count("invocationSeconds", self.clock.now() - started)
        failed = _failed_ids(response, {m["MessageId"] for m in messages})
        if failed is None:
            self._count("invalidResponses")
            self.errors.append(f"invalid function response (the whole batch is retried): {response!r:.300}")
            return
        done = [m for m in messages if m["MessageId"] not in failed]
        self._count("itemFailures", len(failed))
        for start in range(0, len(done), 10):
            chunk = done[start : start + 10]
            self._sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
        self._count("messagesDeleted", len(done))


def _first_ready_ms(queue) -> float:
    """Epoch milliseconds at which the earliest message is (or was) visible and undelayed."""
    with SQS_LOCK:
        return min((max(m.visible_at, m.delayed_until) for m in queue._messages), default=math.inf)


def _failed_ids(response: object, batch_ids: set[str]) -> set[str] | None:
    """The message ids to keep, or None when Lambda would treat the response as a failed batch."""
    if response is None:
        return set()
    if isinstance(response, str):
        try:
            response = json.loads(response)
        except json.JSONDecodeError:
            return None
    if not isinstance(response, dict):
        return None
    failures = response.get("batchItemFailures", [])
    if failures is None:
        return set()
    ids = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not identifier or identifier not in batch_ids:
            return None
        ids.add(identifier)
    return ids
