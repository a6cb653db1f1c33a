"""S3 as AWS answers the pipeline's requests, where moto is kinder:

- object keys longer than 1,024 bytes (UTF-8) are refused with KeyTooLongError (S3 User Guide,
  "Naming Amazon S3 objects"); moto stores them;
- a missing key answers 403 AccessDenied to a caller without s3:ListBucket (`ControlPlane.
  s3_list_bucket`, off: the pipeline's roles have no ListBucket); moto answers 404;
- denials: `ControlPlane.denied` naming "s3:PutObject" makes every PutObject request answer
  AccessDenied, as a bucket policy the pipeline's writes do not meet would (say one requiring
  SSE-KMS).

Uploads made by the emulation itself go straight to moto's backend and are not affected (the
emulation refuses over-long keys itself)."""

from __future__ import annotations

from typing import Any
from unittest import mock

from .state import Emulation

MAX_KEY_BYTES = 1024


def patches(emulation: Emulation) -> list[Any]:
    from moto.s3.exceptions import MissingKey, S3AccessDeniedError, S3ClientError
    from moto.s3.responses import S3Response

    original_put = S3Response.put_object
    original_get = S3Response.get_object
    original_head = S3Response.head_object

    def put_object(self):
        if "s3:PutObject" in emulation.control.denied:
            raise S3AccessDeniedError()
        if len(self.parse_key_name().encode("utf-8")) > MAX_KEY_BYTES:
            raise S3ClientError("KeyTooLongError", "Your key is too long")
        return original_put(self)

    def get_object(self):
        try:
            return original_get(self)
        except MissingKey:
            if emulation.control.s3_list_bucket:
                raise
            raise S3AccessDeniedError() from None

    def head_object(self, *args, **kwargs):
        status, headers, body = original_head(self, *args, **kwargs)
        if status == 404 and not emulation.control.s3_list_bucket:
            return 403, headers, body
        return status, headers, body

    return [
        mock.patch.object(S3Response, "put_object", put_object),
        mock.patch.object(S3Response, "get_object", get_object),
        mock.patch.object(S3Response, "head_object", head_object),
    ]
