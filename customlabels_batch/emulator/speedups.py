"""Wall time the emulator spends in moto's and botocore's bookkeeping per request, saved without
changing any answer: each patch replaces a pure computation that moto or botocore repeats on every
request with the same result computed once (or computed the same way, faster), or skips one whose
result nothing reads.

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
- moto's S3 backend reloads its URL module (twice per request) in case the environment changed its
  custom endpoints; nothing changes the environment while an emulation runs: loaded once.
- botocore's User-Agent header: each component is sanitised character by character on every request;
  a component (a tuple of strings) always gives the same text, so it is memoised.
- botocore's SigV4 signature: moto reads the Authorization header's access key and Region and never
  checks the signature, so the header is built as botocore builds it (every other header too) but
  for the signature, which is zeros: its canonical request and HMAC chain were about 145 µs of a
  request's 1.4-2 ms of CPU time. This is the one patch that changes what a request carries.
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
    return [
        *_moto_names(),
        *_moto_random(),
        *_moto_s3_urls(),
        *_botocore_user_agent(),
        *_botocore_signature(),
        *_step_functions_clients(),
    ]


# Where SigV4's signature goes in the emulated requests' Authorization header: moto never checks it.
UNCHECKED_SIGNATURE = "0" * 64


def _botocore_signature() -> list[Any]:
    from botocore import auth

    def add_auth(self, request):
        # botocore's SigV4Auth.add_auth without the canonical request, the string to sign and the
        # HMAC chain over them; every header is set as botocore sets it.
        if self.credentials is None:
            raise auth.NoCredentialsError()
        request.context["timestamp"] = auth.get_current_datetime().strftime(auth.SIGV4_TIMESTAMP)
        self._modify_request_before_signing(request)
        self._inject_signature_to_request(request, UNCHECKED_SIGNATURE)

    return [mock.patch.object(auth.SigV4Auth, "add_auth", add_auth)]


def _moto_s3_urls() -> list[Any]:
    from moto.s3.models import S3Backend

    reloading = S3Backend.__dict__["_url_module"].fget  # moto's property
    return [mock.patch.object(S3Backend, "_url_module", property(functools.cache(reloading)))]


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
