"""Data-plane denials, for the requests the pipeline's code sends: `ControlPlane.denied` naming
"s3:PutObject" makes every PutObject request answer AccessDenied, as a bucket policy the pipeline's
writes do not meet would (say one requiring SSE-KMS). Uploads made by the emulation itself go
straight to moto's backend and are not affected."""

from __future__ import annotations

from typing import Any
from unittest import mock

from .state import Emulation


def patches(emulation: Emulation) -> list[Any]:
    from moto.s3.exceptions import S3AccessDeniedError
    from moto.s3.responses import S3Response

    original_put = S3Response.put_object

    def put_object(self):
        if "s3:PutObject" in emulation.control.denied:
            raise S3AccessDeniedError()
        return original_put(self)

    return [mock.patch.object(S3Response, "put_object", put_object)]
