"""Services moto lacks, emulated on its backends: the Custom Labels model lifecycle and
DetectCustomLabels (answered by the emulated models, never by moto's canned labels; the processor's
calls without the HTTP round trip through moto, the same answers: answer_detect_in_process), Lambda Invoke
of the functions an emulation runs in-process (moto's Docker-free backend would only echo the
event), and SQS's StartMessageMoveTask (moto raises NotImplementedError)."""

from __future__ import annotations

import base64
import contextlib
import json
import traceback
import uuid
from collections.abc import Iterator
from typing import Any
from unittest import mock

from .state import Emulation


def patches(emulation: Emulation) -> list[Any]:
    return [*_rekognition(emulation), *_lambda_invoke(emulation), *message_move_tasks()]


def _rekognition(emulation: Emulation) -> list[Any]:
    """The model calls on the emulated models. An unknown or deleted model version is
    ResourceNotFoundException, as is DescribeProjectVersions of an unknown project; of a known
    project it lists only the versions that exist (none for an unknown VersionNames, as AWS)."""
    from moto.core.exceptions import JsonRESTError
    from moto.rekognition.responses import RekognitionResponse

    from .control_plane import access_denied
    from .custom_labels import ModelError

    models = emulation.models

    def _api(action: str):
        def decorator(fn):
            def wrapper(self):
                access_denied(emulation.control, f"rekognition:{action}")
                try:
                    return json.dumps(fn(self))
                except ModelError as error:
                    raise JsonRESTError(error.code, error.message) from None

            return wrapper

        return decorator

    @_api("StartProjectVersion")
    def start_project_version(self):
        model = _existing_model(emulation, self._get_param("ProjectVersionArn"))
        return {
            "Status": model.start(self._get_param("MinInferenceUnits"), self._get_param("MaxInferenceUnits"))
        }

    @_api("StopProjectVersion")
    def stop_project_version(self):
        model = _existing_model(emulation, self._get_param("ProjectVersionArn"))
        refuse = emulation.control.stop_refused_while_starting_seconds
        return {"Status": model.stop(refuse_while_starting_seconds=refuse)}

    @_api("DescribeProjectVersions")
    def describe_project_versions(self):
        project = self._get_param("ProjectArn")
        names = self._get_param("VersionNames") or []
        if not any(m.project_arn == project for m in models.values()):
            raise JsonRESTError("ResourceNotFoundException", f"No project {project}.")
        return {
            "ProjectVersionDescriptions": [
                m.describe()
                for m in models.values()
                if m.project_arn == project and not m.deleted and (not names or m.version_name in names)
            ]
        }

    @_api("DetectCustomLabels")
    def detect_custom_labels(self):
        return detect(
            emulation,
            {k: self._get_param(k) for k in ("ProjectVersionArn", "Image", "MinConfidence", "MaxResults")},
            self.current_account,
            self.partition,
        )

    return [
        mock.patch.object(RekognitionResponse, "start_project_version", start_project_version, create=True),
        mock.patch.object(RekognitionResponse, "stop_project_version", stop_project_version, create=True),
        mock.patch.object(
            RekognitionResponse, "describe_project_versions", describe_project_versions, create=True
        ),
        mock.patch.object(RekognitionResponse, "detect_custom_labels", detect_custom_labels),
    ]


def _existing_model(emulation: Emulation, arn: str):
    """The emulated model version, or the ResourceNotFoundException AWS answers for it."""
    from moto.core.exceptions import JsonRESTError

    model = emulation.models.get(arn)
    if model is None or model.deleted:
        raise JsonRESTError("ResourceNotFoundException", f"The model version {arn} does not exist.")
    return model


def detect(emulation: Emulation, params: dict, account: str, partition: str) -> dict:
    """DetectCustomLabels on the emulated model: its answer, or the ModelError / JsonRESTError that
    AWS would answer with (InvocationCrash for an injected runtime crash)."""
    from .control_plane import access_denied

    access_denied(emulation.control, "rekognition:DetectCustomLabels")
    model = _existing_model(emulation, params.get("ProjectVersionArn") or "")
    image = params.get("Image") or {}
    name = image.get("S3Object", {}).get("Name", "")
    if emulation.crashes_on(name):
        from .event_source_mapping import InvocationCrash

        raise InvocationCrash(f"Runtime exited while labeling {name} (injected fault)")
    data = None
    if "S3Object" in image:
        data = _read_s3_object(account, partition, image["S3Object"])
    elif "Bytes" in image:
        data = base64.b64decode(image["Bytes"]) if isinstance(image["Bytes"], str) else image["Bytes"]
    return {
        "CustomLabels": model.detect(
            data, min_confidence=params.get("MinConfidence"), max_results=params.get("MaxResults")
        )
    }


def answer_detect_in_process(emulation: Emulation, client: Any) -> Any:
    """The client's DetectCustomLabels answered by the emulated model at botocore's `before-call`,
    as botocore's own Stubber answers: the request is still validated and serialised, only the
    HTTP round trip through moto (sending, moto's routing, the JSON response and its parsing) is
    skipped. The same `detect` answers as through moto. Only for a client that makes one attempt
    (the processor's): retries and `before-send` handlers (the adaptive mode's rate limiter) would
    be skipped with the round trip, so any other client goes through moto."""
    from botocore.awsrequest import AWSResponse
    from moto.core.exceptions import JsonRESTError

    from .custom_labels import ModelError

    if client.meta.config.retries != {"mode": "standard", "total_max_attempts": 1}:
        return client

    def before_call(params: dict, **_: Any):
        request = json.loads(params["body"] or b"{}")
        _, partition, _, _, account, _ = request.get("ProjectVersionArn", "arn:aws:::123456789012:").split(
            ":", 5
        )
        request_id = str(uuid.uuid4())
        try:
            parsed, status = detect(emulation, request, account, partition), 200
        except ModelError as error:
            parsed, status = {"Error": {"Code": error.code, "Message": error.message}}, 400
        except JsonRESTError as error:
            parsed, status = {"Error": {"Code": error.error_type, "Message": error.message}}, error.code
        headers = {"x-amzn-requestid": request_id, "content-type": "application/x-amz-json-1.1"}
        parsed["ResponseMetadata"] = {
            "RequestId": request_id,
            "HTTPStatusCode": status,
            "HTTPHeaders": headers,
            "RetryAttempts": 0,
        }
        response = AWSResponse(params["url"], status, headers, raw=None)
        response._content = b""
        return response, parsed

    client.meta.events.register("before-call.rekognition.DetectCustomLabels", before_call)
    return client


def _read_s3_object(account: str, partition: str, s3_object: dict) -> bytes | None:
    from moto.s3.models import s3_backends

    try:
        key = s3_backends[account][partition].get_object(s3_object["Bucket"], s3_object["Name"])
    except Exception:  # missing bucket or key: the model reports InvalidS3ObjectException
        return None
    return None if key is None else key.value


def _lambda_invoke(emulation: Emulation) -> list[Any]:
    """Synchronous Invoke of a registered function runs its handler here, answering as Lambda does:
    the JSON result, or X-Amz-Function-Error: Unhandled with errorType/errorMessage."""
    from moto.awslambda_simple.models import LambdaSimpleBackend

    original = LambdaSimpleBackend.invoke

    def invoke(self, function_name, qualifier, body, headers, response_headers):  # noqa: PLR0917 - moto's
        handler = emulation.functions.get(self.get_function(function_name, qualifier).function_name)
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

    return [mock.patch.object(LambdaSimpleBackend, "invoke", invoke)]


def message_move_tasks() -> list[Any]:
    """StartMessageMoveTask: every message of the source (a dead-letter queue) moves to the
    destination, or back to the queue it came from. AWS moves them in the background at up to 500
    a second; here the move is done when the call returns."""
    from moto.core.responses import ActionResult
    from moto.sqs.responses import SQSResponse

    from .moto_fixes import SQS_LOCK

    def start_message_move_task(self):
        backend = self.sqs_backend
        source = _queue_by_arn(backend, self._get_param("SourceArn"))
        destination_arn = self._get_param("DestinationArn")
        if destination_arn:
            destinations = [_queue_by_arn(backend, destination_arn)]
        else:
            destinations = backend.list_dead_letter_source_queues(source.name)[:1]
        with SQS_LOCK:
            for message in list(source._messages):
                source._messages.remove(message)
                source.pending_messages.discard(message)
                backend.send_message(
                    destinations[0].name, message.body, message_attributes=message.message_attributes
                )
        return ActionResult({"TaskHandle": str(uuid.uuid4())})

    return [mock.patch.object(SQSResponse, "start_message_move_task", start_message_move_task, create=True)]


def _queue_by_arn(backend: Any, arn: str) -> Any:
    name = arn.rsplit(":", 1)[-1]
    return backend.get_queue(name)


@contextlib.contextmanager
def emulated_message_move_tasks() -> Iterator[None]:
    """For code that talks to plain moto (the CLI's tests): StartMessageMoveTask as on AWS."""
    with contextlib.ExitStack() as stack:
        for patch in message_move_tasks():
            stack.enter_context(patch)
        yield
