"""Wall time the emulator spends in moto's and botocore's bookkeeping per request, saved without
changing any answer: each patch replaces a pure computation that moto or botocore repeats on every
request with the same result computed once (or computed the same way, faster).

The emulated AWS makes about six requests per image (the triage's send, the processor's receive,
visibility change, DetectCustomLabels, PutObject, deletes, the progress counter, the metrics), so
what every request pays is what an image costs (`python -m customlabels_batch.bench.profile`).

- moto.core.responses: `camelcase_to_underscores` of the action name, and the response class's
  method names by `inspect.getmembers`, on every request: memoised (the names of an action and the
  methods of a response class do not change while an emulation runs; the emulation adds its own
  before the first request). moto.sqs builds every queue attribute name the same way.
- moto's random identifiers (each request id, each receipt handle): drawn from moto's own random
  generator with one `choices` call instead of one `choice` call per character (same alphabet, same
  length, uniformly random as before).
- botocore's User-Agent header: each component is sanitised character by character on every request;
  a component (a tuple of strings) always gives the same text, so it is memoised.
- moto's Step Functions interpreter creates a new boto3 client (tens of milliseconds) for every task
  it runs; one client per Region and service, created as moto creates it, serves every task of the
  emulation (botocore clients are thread-safe; a task with credentials of its own still gets its
  own client).
"""

from __future__ import annotations

import functools
import string
from typing import Any
from unittest import mock


def patches() -> list[Any]:
    return [*_moto_names(), *_moto_random(), *_botocore_user_agent(), *_step_functions_clients()]


def _moto_names() -> list[Any]:
    from moto.core import responses
    from moto.core import utils as core_utils
    from moto.sqs import models as sqs_models

    camelcase_to_underscores = functools.lru_cache(maxsize=4096)(core_utils.camelcase_to_underscores)
    method_names: dict[type, list[str]] = {}
    original_method_names = core_utils.method_names_from_class

    def method_names_from_class(clazz: Any) -> list[str]:
        if clazz not in method_names:
            method_names[clazz] = original_method_names(clazz)
        return list(method_names[clazz])

    return [
        mock.patch.object(responses, "camelcase_to_underscores", camelcase_to_underscores),
        mock.patch.object(responses, "method_names_from_class", method_names_from_class),
        mock.patch.object(sqs_models, "camelcase_to_underscores", camelcase_to_underscores),
    ]


def _moto_random() -> list[Any]:
    from moto.moto_api._internal import mock_random
    from moto.moto_api._internal.moto_random import MotoRandom
    from moto.sqs import models as sqs_models
    from moto.sqs import utils as sqs_utils

    def get_random_string(
        self, length: int = 20, include_digits: bool = True, lower_case: bool = False
    ) -> str:
        pool = string.ascii_letters + (string.digits if include_digits else "")
        text = "".join(self.choices(pool, k=length))
        return text.lower() if lower_case else text

    def generate_receipt_handle() -> str:
        return "".join(mock_random.choices(string.ascii_lowercase, k=185))

    # The length moto's receipt handles have (a test fails if moto changes it).
    assert "length = 185" in _source(sqs_utils.generate_receipt_handle)
    return [
        mock.patch.object(MotoRandom, "get_random_string", get_random_string),
        mock.patch.object(sqs_models, "generate_receipt_handle", generate_receipt_handle),
    ]


def _botocore_user_agent() -> list[Any]:
    from botocore.useragent import UserAgentComponent

    return [
        mock.patch.object(
            UserAgentComponent, "to_string", functools.lru_cache(maxsize=4096)(UserAgentComponent.to_string)
        )
    ]


def _step_functions_clients() -> list[Any]:
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_aws_sdk,
        state_task_service_dynamodb,
        state_task_service_sns,
        state_task_service_sqs,
    )
    from moto.stepfunctions.parser.asl.utils import boto_client

    original = boto_client.boto_client_for
    clients: dict[tuple[str, str], Any] = {}

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        if state_credentials is not None:
            return original(region, service, state_credentials)
        if (region, service) not in clients:
            clients[(region, service)] = original(region, service)
        return clients[(region, service)]

    return [
        mock.patch.object(module, "boto_client_for", boto_client_for)
        for module in (
            boto_client,
            lambda_eval_utils,
            state_task_service_aws_sdk,
            state_task_service_dynamodb,
            state_task_service_sns,
            state_task_service_sqs,
        )
    ]


@functools.cache
def _source(function: Any) -> str:
    import inspect

    return inspect.getsource(function)
