"""S3 -> Lambda, emulated: a bucket notification invokes the function asynchronously. moto would invoke
it itself (in Docker; without, its error is swallowed); here the function's in-process handler runs
with Lambda's asynchronous-invocation semantics, as the function's event invoke configuration says:
a failed attempt is retried up to MaximumRetryAttempts more times (with the same request id), then
the event goes to the OnFailure destination (an SQS queue) in Lambda's invocation-record format, or
is discarded when there is none.

Not emulated: Lambda's waits between attempts (about 1 and 2 minutes; here the retries follow at
once) and the maximum event age (nothing here queues or throttles an event)."""

from __future__ import annotations

import copy
import json
import traceback
import uuid
from typing import Any
from unittest import mock

from .state import Emulation

# Lambda's default when a function has no event invoke configuration.
DEFAULT_RETRY_ATTEMPTS = 2


def patches(emulation: Emulation) -> list[Any]:
    from moto.s3 import notifications

    original = notifications._invoke_awslambda

    def invoke_awslambda(account_id: str, event_body: Any, fn_arn: str, region_name: str) -> None:
        name = fn_arn.split(":")[6]
        handler = emulation.async_functions.get(name)
        if handler is None:
            return original(account_id, event_body, fn_arn, region_name)
        invoke_asynchronously(
            emulation, handler, event_body, account_id=account_id, region=region_name, name=name
        )
        return None

    return [mock.patch.object(notifications, "_invoke_awslambda", invoke_awslambda)]


def invoke_asynchronously(
    emulation: Emulation, handler: Any, event: Any, *, account_id: str, region: str, name: str
) -> None:
    from moto.awslambda.utils import get_backend

    function = get_backend(account_id, region).get_function(name)
    config = function.event_invoke_config[0].config if function.event_invoke_config else {}
    retries = config.get("MaximumRetryAttempts", DEFAULT_RETRY_ATTEMPTS)
    stats = emulation.async_invokes[name]
    request_id = str(uuid.uuid4())
    for attempt in range(1, retries + 2):
        stats["invocations"] += 1
        if attempt > 1:
            stats["retries"] += 1
        try:
            handler(copy.deepcopy(event), request_id)
            return
        except Exception as error:
            stats["errors"] += 1
            last_error = error
    destination = config.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
    if not destination:
        stats["discarded"] += 1  # as Lambda does: the event is gone
        return
    record = {
        "version": "1.0",
        "timestamp": emulation.clock.datetime().isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "requestContext": {
            "requestId": request_id,
            "functionArn": f"{function.function_arn}:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": retries + 1,
        },
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {
            "errorMessage": str(last_error),
            "errorType": type(last_error).__name__,
            "stackTrace": traceback.format_exception(last_error),
        },
    }
    _send_to_queue(account_id, destination, json.dumps(record))
    stats["sentToFailureQueue"] += 1


def _send_to_queue(account_id: str, queue_arn: str, body: str) -> None:
    from moto.sqs.models import sqs_backends

    _, _, _, region, _, queue_name = queue_arn.split(":")
    sqs_backends[account_id][region].send_message(queue_name=queue_name, message_body=body)
