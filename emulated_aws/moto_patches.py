"""The changes moto 5.2.5 needs to run this pipeline in-process, each for a named reason.

- Step Functions: Wait states, Retry intervals and `$$.State.EnteredTime` follow the emulated clock;
  every execution thread is a clock actor; aws-sdk tasks get AWS's parameter names (`Uuid`),
  AWS's error names (`Rekognition.X`, not `rekognition.X`) and JSON-plain results.
- SQS: visibility timeouts, delays and receive timestamps follow the emulated clock; a new
  message wakes the emulated pollers; calls are serialised (moto's queues are not thread-safe).
- Rekognition: Custom Labels lifecycle and DetectCustomLabels answered by the emulated model.
- Lambda: enabling or disabling a mapping wakes the emulated pollers; functions the emulation
  registers (the run recorder) are invoked in-process instead of in Docker.
- botocore: retry back-off sleeps (the processor's throttling retries) follow the emulated clock.

Patches are installed once per process and do nothing unless an emulation is active, so moto keeps
its own behaviour for tests that use it directly.
"""

from __future__ import annotations

import datetime as _dt
import json
import threading
import traceback
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import moto

if TYPE_CHECKING:
    from .clock import VirtualClock
    from .custom_labels import EmulatedModel

SUPPORTED_MOTO = "5.2.5"


class Active:
    """What the patches consult: the running emulation's clock and models (None when idle)."""

    clock: VirtualClock | None = None
    models: ClassVar[dict[str, EmulatedModel]] = {}
    execution_times: ClassVar[dict[str, dict[str, float]]] = {}
    # Function name -> handler(event) run in-process when the function is invoked.
    functions: ClassVar[dict[str, Callable[[Any], Any]]] = {}
    lock = threading.Lock()


_installed = False
SQS_LOCK = threading.RLock()  # also taken by the emulator where it reads moto's queues directly


def install() -> None:
    global _installed  # noqa: PLW0603 - patches are process-wide by nature
    if _installed:
        return
    if moto.__version__ != SUPPORTED_MOTO:
        raise RuntimeError(
            f"emulated_aws patches moto internals and is tested with moto=={SUPPORTED_MOTO}; "
            f"found {moto.__version__}. Install the pinned requirements.txt."
        )
    _patch_stepfunctions_time()
    _patch_stepfunctions_actors()
    _patch_aws_sdk_tasks()
    _patch_sqs_time()
    _patch_rekognition()
    _patch_lambda_mapping_updates()
    _patch_lambda_invoke()
    _patch_botocore_retry_sleep()
    _installed = True


# ---- Step Functions ----------------------------------------------------------------------------
def _patch_stepfunctions_time() -> None:
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
    from moto.stepfunctions.parser.asl.component.state import state as state_module
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function import wait_function
    from moto.stepfunctions.parser.asl.eval import environment

    original_wait = wait_function.WaitFunction._wait_interval

    def _wait_interval(self, env, wait_seconds):
        clock = Active.clock
        if clock is None:
            return original_wait(self, env, wait_seconds)
        if wait_seconds > 0:
            # Returns early when the execution is stopped, as AWS's Wait does.
            clock.wait_until(lambda: not env.is_running(), timeout=wait_seconds)
        return None

    wait_function.WaitFunction._wait_interval = _wait_interval

    real_sleep = retrier_decl.time.sleep

    def _retry_sleep(seconds):
        if Active.clock is None:
            return real_sleep(seconds)
        return Active.clock.sleep(seconds)

    retrier_decl.time = types.SimpleNamespace(sleep=_retry_sleep)

    class _EmulatedDatetime(_dt.datetime):
        @classmethod
        def now(cls, tz=None):
            if Active.clock is None:
                return _dt.datetime.now(tz)
            return Active.clock.datetime().astimezone(tz) if tz else Active.clock.datetime()

    state_module.datetime = types.SimpleNamespace(datetime=_EmulatedDatetime, timezone=_dt.timezone)

    # A stopped execution must wake its Wait state at once.
    original_set_stop = environment.Environment.set_stop

    def set_stop(self, *args, **kwargs):
        original_set_stop(self, *args, **kwargs)
        if Active.clock is not None:
            Active.clock.poke()

    environment.Environment.set_stop = set_stop


def _patch_stepfunctions_actors() -> None:
    """Each execution runs on a thread of its own; it must hold the clock while it works."""
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    original_start = ExecutionWorker.start
    original_environment = ExecutionWorker._get_evaluation_environment

    def _get_evaluation_environment(self):
        # AWS's context object holds Execution.StartTime as an ISO string; moto keeps a datetime,
        # which States.JsonToString cannot serialise.
        env = original_environment(self)
        execution = env.states.context_object.context_object_data["Execution"]
        start = execution.get("StartTime")
        if isinstance(start, _dt.datetime):
            clock = Active.clock
            moment = clock.datetime() if clock is not None else start
            execution["StartTime"] = moment.isoformat().replace("+00:00", "Z")
        return env

    ExecutionWorker._get_evaluation_environment = _get_evaluation_environment
    original_logic = ExecutionWorker._execution_logic

    def start(self):
        clock = Active.clock
        if clock is not None:
            # Registered here, in the caller's thread, so time cannot move before the thread runs.
            self._emulation_actor = clock.new_actor()
            arn = self._evaluation_details.execution_details.arn
            with Active.lock:
                Active.execution_times[arn] = {"started": clock.now()}
        return original_start(self)

    def _execution_logic(self):
        clock = Active.clock
        actor = getattr(self, "_emulation_actor", None)
        if clock is None or actor is None:
            return original_logic(self)
        clock.bind(actor)
        try:
            return original_logic(self)
        finally:
            arn = self._evaluation_details.execution_details.arn
            with Active.lock:
                Active.execution_times.setdefault(arn, {})["stopped"] = clock.now()
            clock.retire(actor)

    ExecutionWorker.start = start
    ExecutionWorker._execution_logic = _execution_logic

    # The interpreter hands each program and each task to a fresh thread and joins it; the
    # execution's actor must travel with the work.
    from moto.stepfunctions.parser.asl.component.program import program
    from moto.stepfunctions.parser.asl.component.state.exec import execute_state

    class _ActorThread(threading.Thread):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            clock = Active.clock
            self._emulation_actor = clock.current_actor() if clock is not None else None

        def run(self):
            clock = Active.clock
            if clock is not None and self._emulation_actor is not None:
                clock.bind(self._emulation_actor)
            super().run()

    program.threading = types.SimpleNamespace(**{**vars(threading), "Thread": _ActorThread})
    execute_state.Thread = _ActorThread


def _patch_aws_sdk_tasks() -> None:
    import botocore.session
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_aws_sdk as aws_sdk,
    )
    from moto.stepfunctions.parser.asl.utils.encoding import to_json_str

    task_class = aws_sdk.StateTaskServiceAwsSdk
    session = botocore.session.get_session()
    shapes: dict[tuple[str, str], Any] = {}

    def _normalise_parameters(self, parameters, boto_service_name=None, service_action_name=None):
        # AWS maps SDK-style names (`Uuid`) onto the API's members (`UUID`); moto passes them verbatim.
        service = self._get_boto_service_name(boto_service_name)
        action = service_action_name or self.resource.api_action
        key = (service, action[0].upper() + action[1:])
        if key not in shapes:
            try:
                shapes[key] = session.get_service_model(service).operation_model(key[1]).input_shape
            except Exception:  # an unknown operation fails later, where AWS would fail it
                shapes[key] = None
        if shapes[key] is not None:
            self._to_boto_request(parameters, shapes[key])

    task_class._normalise_parameters = _normalise_parameters

    original_eval = task_class._eval_service_task
    output_shapes: dict[tuple[str, str], Any] = {}

    def _eval_service_task(self, env, *args, **kwargs):
        original_eval(self, env, *args, **kwargs)
        # AWS hands results over as JSON with PascalCase member names (sfn's `executions` arrives as
        # `Executions`) and timestamps as strings; moto passes boto3's response through.
        response = env.stack.pop()
        service, action = self._get_boto_service_name(), self.resource.api_action
        key = (service, action[0].upper() + action[1:])
        if key not in output_shapes:
            try:
                output_shapes[key] = session.get_service_model(service).operation_model(key[1]).output_shape
            except Exception:
                output_shapes[key] = None
        if output_shapes[key] is not None and isinstance(response, dict):
            self._from_boto_response(response, output_shapes[key])
        env.stack.append(json.loads(to_json_str(response)))

    task_class._eval_service_task = _eval_service_task
    aws_sdk._SERVICE_ERROR_NAMES.update(
        {"rekognition": "Rekognition", "lambda": "Lambda", "sqs": "Sqs", "sns": "Sns", "s3": "S3"}
    )


# ---- SQS --------------------------------------------------------------------------------------
def _patch_sqs_time() -> None:
    from moto.sqs import models as sqs_models

    real_unix_time, real_unix_time_millis = sqs_models.unix_time, sqs_models.unix_time_millis

    def unix_time(*args):
        if Active.clock is None or args:
            return real_unix_time(*args)
        return Active.clock.epoch_seconds()

    def unix_time_millis(*args):
        if Active.clock is None or args:
            return real_unix_time_millis(*args)
        return Active.clock.epoch_seconds() * 1000.0

    sqs_models.unix_time = unix_time
    sqs_models.unix_time_millis = unix_time_millis

    # A new message must wake pollers that long-poll on the clock.
    original_add = sqs_models.Queue.add_message

    def add_message(self, message):
        original_add(self, message)
        if Active.clock is not None:
            Active.clock.poke()

    sqs_models.Queue.add_message = add_message

    # moto's queues are not thread-safe (concurrent receives fail with "Set changed size during
    # iteration"); AWS serves concurrent pollers, so the emulation serialises each call.
    def serialised(method):
        def wrapper(*args, **kwargs):
            with SQS_LOCK:
                return method(*args, **kwargs)

        return wrapper

    # send_message and receive_message read queue.attributes only for ContentBasedDeduplication and
    # MessageRetentionPeriod, yet that builds the three message counts by scanning every message:
    # quadratic over a large batch. The counts are not used there, so they are skipped.
    skip_counts = threading.local()
    for count in (
        "approximate_number_of_messages",
        "approximate_number_of_messages_not_visible",
        "approximate_number_of_messages_delayed",
    ):
        original_count = getattr(sqs_models.Queue, count)

        def counted(self, _original=original_count):
            return 0 if getattr(skip_counts, "active", False) else _original.fget(self)

        setattr(sqs_models.Queue, count, property(counted))

    def without_counts(method):
        def wrapper(self, *args, **kwargs):
            skip_counts.active = True
            try:
                return method(self, *args, **kwargs)
            finally:
                skip_counts.active = False

        return wrapper

    sqs_models.SQSBackend.send_message = without_counts(sqs_models.SQSBackend.send_message)
    sqs_models.SQSBackend.receive_message = without_counts(sqs_models.SQSBackend.receive_message)

    # Queue.delete_message scans every message's receipt-handle history in Python: quadratic over a
    # drain of thousands. Index the current handle of each received message instead (same result).
    by_handle: dict[str, Any] = {}
    original_mark_received = sqs_models.Message.mark_received

    def mark_received(self, visibility_timeout=None):
        original_mark_received(self, visibility_timeout)
        by_handle[self.receipt_handle] = self

    sqs_models.Message.mark_received = mark_received
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

    sqs_models.Queue.delete_message = delete_message

    for name in (
        "get_queue_attributes",
        "send_message",
        "send_message_batch",
        "receive_message",
        "delete_message",
        "delete_message_batch",
        "change_message_visibility",
        "change_message_visibility_batch",
        "purge_queue",
    ):
        setattr(sqs_models.SQSBackend, name, serialised(getattr(sqs_models.SQSBackend, name)))


# ---- Rekognition --------------------------------------------------------------------------------
def _patch_rekognition() -> None:
    from moto.core.exceptions import JsonRESTError
    from moto.rekognition.responses import RekognitionResponse

    from .custom_labels import ModelError

    original_detect = RekognitionResponse.detect_custom_labels

    def _model(arn: str) -> EmulatedModel:
        model = Active.models.get(arn)
        if model is None:
            raise JsonRESTError("ResourceNotFoundException", f"No model version {arn}.")
        return model

    def _api(fn):
        def wrapper(self):
            try:
                return json.dumps(fn(self))
            except ModelError as error:
                raise JsonRESTError(error.code, error.message) from None

        return wrapper

    @_api
    def start_project_version(self):
        model = _model(self._get_param("ProjectVersionArn"))
        return {
            "Status": model.start(self._get_param("MinInferenceUnits"), self._get_param("MaxInferenceUnits"))
        }

    @_api
    def stop_project_version(self):
        return {"Status": _model(self._get_param("ProjectVersionArn")).stop()}

    @_api
    def describe_project_versions(self):
        project = self._get_param("ProjectArn")
        names = self._get_param("VersionNames") or []
        if not any(m.project_arn == project for m in Active.models.values()):
            raise JsonRESTError("ResourceNotFoundException", f"No project {project}.")
        return {
            "ProjectVersionDescriptions": [
                m.describe()
                for m in Active.models.values()
                if m.project_arn == project and (not names or m.version_name in names)
            ]
        }

    def detect_custom_labels(self):
        arn = self._get_param("ProjectVersionArn")
        if arn not in Active.models:
            return original_detect(self)
        image = self._get_param("Image") or {}
        data = None
        if "S3Object" in image:
            data = _read_s3_object(self.current_account, self.partition, image["S3Object"])
        return _api(
            lambda _self: {
                "CustomLabels": Active.models[arn].detect(
                    data,
                    min_confidence=self._get_param("MinConfidence"),
                    max_results=self._get_param("MaxResults"),
                )
            }
        )(self)

    RekognitionResponse.start_project_version = start_project_version
    RekognitionResponse.stop_project_version = stop_project_version
    RekognitionResponse.describe_project_versions = describe_project_versions
    RekognitionResponse.detect_custom_labels = detect_custom_labels


def _read_s3_object(account: str, partition: str, s3_object: dict) -> bytes | None:
    from moto.s3.models import s3_backends

    try:
        key = s3_backends[account][partition].get_object(s3_object["Bucket"], s3_object["Name"])
    except Exception:  # missing bucket or key: the model reports InvalidS3ObjectException
        return None
    return None if key is None else key.value


# ---- Lambda ------------------------------------------------------------------------------------
def _patch_lambda_mapping_updates() -> None:
    from moto.awslambda.models import LambdaBackend

    original = LambdaBackend.update_event_source_mapping

    def update_event_source_mapping(self, uuid, spec):
        result = original(self, uuid, spec)
        if Active.clock is not None:
            Active.clock.poke()
        return result

    LambdaBackend.update_event_source_mapping = update_event_source_mapping


def _patch_lambda_invoke() -> None:
    """Synchronous Invoke of a registered function runs its handler here, answering as Lambda does:
    the JSON result, or X-Amz-Function-Error: Unhandled with errorType/errorMessage. (Without Docker,
    moto's simple backend would echo the event back.)"""
    from moto.awslambda_simple.models import LambdaSimpleBackend

    original = LambdaSimpleBackend.invoke

    def invoke(self, function_name, qualifier, body, headers, response_headers):  # noqa: PLR0917 - moto's
        handler = Active.functions.get(self.get_function(function_name, qualifier).function_name)
        if handler is None:
            return original(self, function_name, qualifier, body, headers, response_headers)
        event = json.loads(body) if body else {}
        try:
            result = handler(event)
        except Exception as error:
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps(
                {
                    "errorType": type(error).__name__,
                    "errorMessage": str(error),
                    "stackTrace": traceback.format_exception(error),
                }
            ).encode()
        return json.dumps(result).encode()

    LambdaSimpleBackend.invoke = invoke


# ---- botocore -----------------------------------------------------------------------------------
def _patch_botocore_retry_sleep() -> None:
    from botocore import endpoint

    real_time = endpoint.time

    def sleep(seconds):
        if Active.clock is None:
            return real_time.sleep(seconds)
        return Active.clock.sleep(seconds)

    endpoint.time = types.SimpleNamespace(**{**vars(real_time), "sleep": sleep})
