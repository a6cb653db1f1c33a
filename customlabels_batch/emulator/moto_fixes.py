"""Where moto 5.2.5 differs from AWS in ways that could be fixed upstream; each has a test
(tests/test_moto_fixes.py) that fails once moto behaves as AWS does, so the fix can be dropped.

- aws-sdk tasks: AWS maps SDK-style parameter names (`Uuid`) onto the API's members (`UUID`), hands
  results over as JSON with PascalCase member names and string timestamps, and names errors
  `Rekognition.X`; moto passes names and boto3's response through and lower-cases the service.
- The context object's `Execution.StartTime` is an ISO string on AWS, a datetime in moto (which
  `States.JsonToString` cannot serialise).
- JSONata: moto's evaluator is a stub whose JVM bridge is never wired in (every `{% %}` expression and
  every variable read fails); this plugs in jsonata-python, a pure-Python port of the reference
  implementation. moto also splices string variables into the expression unescaped, so a value
  holding a quote or a newline (an error's Cause does) breaks it: strings are JSON-encoded here.
- A stopped execution stays stopped: moto lets an error raised by the state still in flight (a task
  whose thread the stop raced) replace the stop, so the execution ends FAILED; AWS ends it ABORTED.
  And a stop that comes before the execution's thread has built its environment fails with an
  AttributeError; AWS stops an execution however recently it started.
- SQS: moto's queues are not thread-safe (concurrent receives fail with "Set changed size during
  iteration"); send/receive build all three message counts by scanning every message, and delete
  and ChangeMessageVisibility scan every receipt handle: quadratic over a drain of thousands. A
  receive also lists every visible message before it takes the first few, and builds every queue
  attribute three times per received message (for its retention period) and per attribute
  GetQueueAttributes names.
- CloudWatch: moto answers a percentile statistic (`p95`) with nothing; AWS computes it from the raw
  values put (the run recorder reads the time to result as p50 and p95).
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import threading
import time
from typing import Any
from unittest import mock

from customlabels_batch import waits
from customlabels_batch.settings import MAX_VISIBILITY_TIMEOUT_SECONDS

# Also taken by the emulator where it reads moto's queues directly.
SQS_LOCK = threading.RLock()


def patches(now: Any) -> list[Any]:
    """`now()` gives the emulated datetime the context object's StartTime should show."""
    return [
        *_jsonata(),
        *_aws_sdk_tasks(),
        *_context_start_time(now),
        *_stop_wins(),
        *_stop_right_after_start(),
        *_sqs(),
        *_cloudwatch_percentiles(),
    ]


def percentile(values: list[float], stat: str) -> float | None:
    """`pNN` of raw values as the nearest rank: the smallest value that NN % of them do not exceed."""
    return waits.percentile(values, float(stat[1:]) / 100)


def _cloudwatch_percentiles() -> list[Any]:
    from moto.cloudwatch.models import Statistics

    original = Statistics.get_statistics_for_type

    def get_statistics_for_type(self, stat):
        if re.fullmatch(r"p\d+(\.\d+)?", stat):
            return percentile(self.metric_single_values_list, stat)
        return original(self, stat)

    return [mock.patch.object(Statistics, "get_statistics_for_type", get_statistics_for_type)]


def _stop_wins() -> list[Any]:
    from moto.stepfunctions.parser.asl.component.state.exec.execute_state import ExecutionState
    from moto.stepfunctions.parser.asl.eval import environment
    from moto.stepfunctions.parser.asl.eval.program_state import ProgramStopped

    original_set_error = environment.Environment.set_error
    original_evaluate = ExecutionState._evaluate_with_timeout

    def set_error(self, error):
        if isinstance(self.program_state(), ProgramStopped):
            return
        original_set_error(self, error)

    def _evaluate_with_timeout(self, env):
        # A stop makes every component of the state in flight a no-op, which then fails for want of
        # its values: that failure is the stop's, not the state's.
        try:
            return original_evaluate(self, env)
        except Exception:
            if env.is_running():
                raise
            env.stack.append({})

    return [
        mock.patch.object(environment.Environment, "set_error", set_error),
        mock.patch.object(ExecutionState, "_evaluate_with_timeout", _evaluate_with_timeout),
    ]


def _stop_right_after_start() -> list[Any]:
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    original_stop = ExecutionWorker.stop

    def stop(self, stop_date, error, cause):
        # The thread sets `env` first thing (after parsing the definition); waiting in real time does
        # not hold up the emulated clock, whose time cannot move while that thread is awake.
        deadline = time.monotonic() + 60
        while self.env is None and time.monotonic() < deadline:
            time.sleep(0.001)
        return original_stop(self, stop_date, error, cause)

    return [mock.patch.object(ExecutionWorker, "stop", stop)]


def _jsonata() -> list[Any]:
    import jsonata
    from moto.stepfunctions.parser.asl.eval import states, variable_store
    from moto.stepfunctions.parser.asl.jsonata import jsonata as moto_jsonata

    declaration = re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*:=")
    decoder = json.JSONDecoder()
    parsed = threading.local()  # per thread: an expression's evaluation keeps state on its instance

    def split(expression: str) -> tuple[dict[str, Any], str]:
        """moto composes `(name:=value;...expression)` on every evaluation, so parsing it would never
        repeat; the JSON values declared up front become bindings and the rest is parsed once."""
        bindings: dict[str, Any] = {}
        at = 1
        while expression.startswith("(") and (name := declaration.match(expression, at)):
            try:
                value, end = decoder.raw_decode(expression, name.end())
            except json.JSONDecodeError:
                break  # an intrinsic function's declaration: it stays in the expression
            if expression[end : end + 1] != ";":
                break
            bindings[name.group()[1:-2]] = value
            at = end + 1
        return bindings, ("(" + expression[at:] if bindings else expression)

    def evaluate(expression: str) -> Any:
        bindings, body = split(expression)
        cache = parsed.__dict__.setdefault("expressions", {})
        if (compiled := cache.get(body)) is None:
            if len(cache) > 1000:  # expressions with data left in them: do not keep them for ever
                cache.clear()
            compiled = cache[body] = jsonata.Jsonata(body)
        jsonata.Jsonata.CURRENT.jsonata = compiled  # what its higher-order functions apply with
        return compiled.evaluate(None, bindings)

    def encode_declarations(bindings: dict[str, Any]) -> str:
        return "".join(
            f"{name}:={json.dumps(value, separators=(',', ':'), default=str)};"
            for name, value in bindings.items()
        )

    return [
        mock.patch.object(moto_jsonata, "_eval_jsonata", evaluate),
        mock.patch.object(states, "encode_jsonata_variable_declarations", encode_declarations),
        mock.patch.object(variable_store, "encode_jsonata_variable_declarations", encode_declarations),
    ]


def _aws_sdk_tasks() -> list[Any]:
    import botocore.session
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_aws_sdk as aws_sdk,
    )
    from moto.stepfunctions.parser.asl.utils.encoding import to_json_str

    task_class = aws_sdk.StateTaskServiceAwsSdk
    session = botocore.session.get_session()
    shapes: dict[tuple[str, str, str], Any] = {}

    def shape(service: str, action: str, kind: str) -> Any:
        key = (service, action[0].upper() + action[1:], kind)
        if key not in shapes:
            try:
                operation = session.get_service_model(service).operation_model(key[1])
                shapes[key] = getattr(operation, kind)
            except Exception:  # an unknown operation fails later, where AWS would fail it
                shapes[key] = None
        return shapes[key]

    def _normalise_parameters(self, parameters, boto_service_name=None, service_action_name=None):
        service = self._get_boto_service_name(boto_service_name)
        input_shape = shape(service, service_action_name or self.resource.api_action, "input_shape")
        if input_shape is not None:
            self._to_boto_request(parameters, input_shape)

    original_eval = task_class._eval_service_task

    def _eval_service_task(self, env, *args, **kwargs):
        original_eval(self, env, *args, **kwargs)
        if not env.stack:  # the execution was stopped during the call: nothing to hand over
            return
        response = env.stack.pop()
        output_shape = shape(self._get_boto_service_name(), self.resource.api_action, "output_shape")
        if output_shape is not None and isinstance(response, dict):
            self._from_boto_response(response, output_shape)
        env.stack.append(json.loads(to_json_str(response)))

    return [
        mock.patch.object(task_class, "_normalise_parameters", _normalise_parameters),
        mock.patch.object(task_class, "_eval_service_task", _eval_service_task),
        mock.patch.dict(
            aws_sdk._SERVICE_ERROR_NAMES,
            {"rekognition": "Rekognition", "lambda": "Lambda", "sqs": "Sqs", "sns": "Sns", "s3": "S3"},
        ),
    ]


def _context_start_time(now: Any) -> list[Any]:
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    original = ExecutionWorker._get_evaluation_environment

    def _get_evaluation_environment(self):
        env = original(self)
        execution = env.states.context_object.context_object_data["Execution"]
        if isinstance(execution.get("StartTime"), _dt.datetime):
            execution["StartTime"] = now().isoformat().replace("+00:00", "Z")
        return env

    return [mock.patch.object(ExecutionWorker, "_get_evaluation_environment", _get_evaluation_environment)]


def _sqs() -> list[Any]:
    from moto.sqs import models as sqs_models

    def serialised(method):
        def wrapper(*args, **kwargs):
            with SQS_LOCK:
                return method(*args, **kwargs)

        return wrapper

    result = []
    # send_message and receive_message read queue.attributes only for ContentBasedDeduplication and
    # MessageRetentionPeriod, yet that builds the three counts by scanning every message.
    skip_counts = threading.local()

    # Otherwise each count is moto's own test (Message.visible: now > visible_at; Message.delayed:
    # now < delayed_until), with the time read once per count instead of once per message: every
    # poll of a run counts the whole queue three times.
    def visible_undelayed(messages, now):
        return sum(1 for m in messages if now > m.visible_at and not now < m.delayed_until)

    def not_visible(messages, now):
        return sum(1 for m in messages if not now > m.visible_at)

    def delayed(messages, now):
        return sum(1 for m in messages if now < m.delayed_until)

    for count, fast in (
        ("approximate_number_of_messages", visible_undelayed),
        ("approximate_number_of_messages_not_visible", not_visible),
        ("approximate_number_of_messages_delayed", delayed),
    ):

        def counted(self, _fast=fast):
            if getattr(skip_counts, "active", False):
                return 0
            return _fast(self._messages, sqs_models.unix_time_millis())

        result.append(mock.patch.object(sqs_models.Queue, count, property(counted)))

    # Queue.attributes builds every attribute on each read, and moto reads it three times per name in
    # GetQueueAttributes (and so per received message, for its retention period): within one backend
    # call nothing else touches the queue (SQS_LOCK), so one build per queue and call gives the same
    # answer.
    built = threading.local()
    original_attributes = sqs_models.Queue.attributes.fget

    def attributes(self):
        memo = getattr(built, "memo", None)
        if memo is None:
            return original_attributes(self)
        if id(self) not in memo:
            memo[id(self)] = original_attributes(self)
        return memo[id(self)]

    result.append(mock.patch.object(sqs_models.Queue, "attributes", property(attributes)))

    def attributes_built_once(method):
        def wrapper(self, *args, **kwargs):
            if getattr(built, "memo", None) is not None:  # already inside a backend call
                return method(self, *args, **kwargs)
            built.memo = {}
            try:
                return method(self, *args, **kwargs)
            finally:
                built.memo = None

        return wrapper

    # A receive walks `queue.messages`, the list of every visible message, and stops after the batch:
    # during a receive the same walk, lazily, stops at the same message (nothing else changes the
    # queue meanwhile, and emulated time stands still while the receiving actor runs).
    lazy_messages = threading.local()
    original_messages = sqs_models.Queue.messages.fget

    def messages(self):
        if getattr(lazy_messages, "active", False):
            return (m for m in self._messages if m.visible and not m.delayed)
        return original_messages(self)

    result.append(mock.patch.object(sqs_models.Queue, "messages", property(messages)))

    def without_counts(method, *, lazy=False):
        def wrapper(self, *args, **kwargs):
            skip_counts.active = True
            lazy_messages.active = lazy
            try:
                return method(self, *args, **kwargs)
            finally:
                skip_counts.active = False
                lazy_messages.active = False

        return wrapper

    # Queue.delete_message scans every message's receipt-handle history; index the current handle of
    # each received message instead (same result).
    by_handle: dict[str, Any] = {}
    original_mark_received = sqs_models.Message.mark_received

    def mark_received(self, visibility_timeout=None):
        original_mark_received(self, visibility_timeout)
        by_handle[self.receipt_handle] = self

    original_delete = sqs_models.Queue.delete_message

    def delete_message(self, receipt_handle):
        message = by_handle.get(receipt_handle)
        if receipt_handle in self.deleted_messages or message is None or message not in self._messages:
            return original_delete(self, receipt_handle)  # moto's own answer, errors included
        self._messages.remove(message)
        self.pending_messages.discard(message)
        self.deleted_messages.update(message.all_receipt_handles)
        for handle in message.all_receipt_handles:
            by_handle.pop(handle, None)
        return None

    result += [
        mock.patch.object(sqs_models.Message, "mark_received", mark_received),
        mock.patch.object(sqs_models.Queue, "delete_message", delete_message),
    ]

    # ChangeMessageVisibility scans every message's receipt-handle history too (a processor
    # invocation sets its batch's visibility first): the same index, moto's own answer for anything
    # it does not hold (errors included).
    original_change_visibility = sqs_models.SQSBackend.change_message_visibility

    def change_message_visibility(self, queue_name, receipt_handle, visibility_timeout):
        queue = self.get_queue(queue_name)
        message = by_handle.get(receipt_handle)
        if message is None or message not in queue._messages:
            return original_change_visibility(self, queue_name, receipt_handle, visibility_timeout)
        given = sqs_models.unix_time_millis() + int(visibility_timeout) * 1000
        if given - message.sent_timestamp > MAX_VISIBILITY_TIMEOUT_SECONDS * 1000:  # moto refuses it
            return original_change_visibility(self, queue_name, receipt_handle, visibility_timeout)
        message.change_visibility(visibility_timeout)
        if message.visible and message in queue.pending_messages:
            queue.pending_messages.remove(message)
        return None

    backend = sqs_models.SQSBackend
    wrapped = {
        name: serialised(attributes_built_once(getattr(backend, name)))
        for name in (
            "get_queue_attributes",
            "send_message_batch",
            "delete_message",
            "delete_message_batch",
            "change_message_visibility_batch",
            "purge_queue",
        )
    }
    wrapped["change_message_visibility"] = serialised(attributes_built_once(change_message_visibility))
    wrapped["send_message"] = serialised(attributes_built_once(without_counts(backend.send_message)))
    wrapped["receive_message"] = serialised(
        attributes_built_once(without_counts(backend.receive_message, lazy=True))
    )
    result += [mock.patch.object(backend, name, method) for name, method in wrapped.items()]
    return result
