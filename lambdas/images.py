"""What the triage and the processor decide alike about an S3 upload, without the model: how a
notification parses, which image a record names, where its result and error records go, and whether
the model could take it at all. One predicate in one place, so the two functions cannot disagree.

Pure: no AWS clients, and no settings read here (each function passes its own `layout`: the
triage's and the processor's settings both have the bucket and the prefixes)."""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from aws_lambda_powertools.utilities.data_classes.s3_event import S3EventRecord

MAX_IMAGE_BYTES = 15 * 1024 * 1024  # DetectCustomLabels' limit for S3 objects
MAX_KEY_BYTES = 1024  # S3's limit on an object key (UTF-8)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class Layout(Protocol):
    """Where the pipeline's objects live (a function's SETTINGS)."""

    bucket: str
    input_prefix: str
    results_prefix: str
    errors_prefix: str


class Log(Protocol):
    def info(self, msg: str, *args: Any, **kwargs: Any) -> Any: ...
    def warning(self, msg: str, *args: Any, **kwargs: Any) -> Any: ...


class PermanentImageError(Exception):
    """The image can never be labeled; record why instead of retrying."""

    def __init__(self, error_code: str, reason: str) -> None:
        super().__init__(reason)
        self.error_code = error_code
        self.reason = reason


class NotAnS3NotificationError(ValueError):
    """The message body is not an S3 event notification."""


@dataclass(frozen=True)
class ImageRef:
    bucket: str
    key: str
    etag: str | None
    size: int | None
    # The notification's eventTime: when the object was created (a relabel: when it was uploaded).
    uploaded_at: str | None = None

    def source(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "etag": self.etag,
            "size": self.size,
            "uploadedAt": self.uploaded_at,
        }


def is_test_event(notification: Any) -> bool:
    """The message S3 sends once when a notification is configured: it names no object."""
    return isinstance(notification, dict) and notification.get("Event") == "s3:TestEvent"


def parse_notification(body: str, layout: Layout, log: Log) -> list[ImageRef] | None:
    """Images created according to the notification; None for the s3:TestEvent message. Whatever
    the body's shape, anything unreadable is a NotAnS3NotificationError (an error record), and a
    record naming another bucket or a key outside the input prefix is refused the same way: only
    the pipeline's own uploads are labeled, and nothing else may overwrite their results."""
    try:
        notification = json.loads(body)
    except ValueError:
        raise NotAnS3NotificationError("The message body is not JSON.") from None
    if is_test_event(notification):
        return None
    records = notification_records(notification)
    images: list[ImageRef] = []
    for index, s3_record in enumerate(records):
        image = image_of(s3_record, index, layout, log)
        if image is not None:
            images.append(image)
    return images


def notification_records(notification: Any) -> list[Any]:
    """The notification's Records, or NotAnS3NotificationError."""
    records = notification.get("Records") if isinstance(notification, dict) else None
    if not isinstance(records, list) or not records:
        raise NotAnS3NotificationError("The message body is JSON but has no S3 event Records.")
    return records


def image_of(s3_record: Any, index: int, layout: Layout, log: Log) -> ImageRef | None:
    """One record's image, or None for an event that creates nothing to label (logged)."""
    where = f"Record {index}"
    try:
        record = S3EventRecord(s3_record)
        event_name = record.event_name
        bucket = record.s3.bucket.name
        obj = record.s3.get_object
        raw_key, etag, size = obj.key, obj.get("eTag"), obj.get("size")
    except (AttributeError, KeyError, TypeError):
        raise NotAnS3NotificationError(f"{where} lacks eventName, bucket name or object key.") from None
    if not isinstance(event_name, str) or not isinstance(bucket, str) or not isinstance(raw_key, str):
        raise NotAnS3NotificationError(f"{where}: eventName, bucket name and object key must be strings.")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise NotAnS3NotificationError(f"{where}: object size {size!r} is not a number of bytes.")
    if etag is not None and not isinstance(etag, str):
        raise NotAnS3NotificationError(f"{where}: eTag {etag!r} is not a string.")
    key = urllib.parse.unquote_plus(raw_key)
    if not event_name.startswith("ObjectCreated"):
        log.info("Skipped non-creation S3 event", key=key, eventName=event_name)
        return None
    if bucket == layout.bucket and key.startswith((layout.results_prefix, layout.errors_prefix)):
        # Our own output (notifications that cover the whole bucket): an error record for it would
        # be output too, and notify again, for ever.
        log.warning("Skipped pipeline output object", key=key)
        return None
    if bucket != layout.bucket or not key.startswith(layout.input_prefix):
        raise NotAnS3NotificationError(
            f"{where} names s3://{bucket}/{key}, which is not under this pipeline's "
            f"s3://{layout.bucket}/{layout.input_prefix}; it was not labeled."
        )
    if key.endswith("/"):
        # The console's "create folder" writes a zero-byte key ending in "/": not an upload.
        log.info("Skipped folder marker", key=key)
        return None
    event_time = s3_record.get("eventTime") if isinstance(s3_record, dict) else None
    uploaded_at = event_time if isinstance(event_time, str) else None
    return ImageRef(bucket=bucket, key=key, etag=etag, size=size, uploaded_at=uploaded_at)


def unusable_without_model(image: ImageRef, layout: Layout) -> PermanentImageError | None:
    """Why the model can never label this image, as far as can be told without it (or its bytes):
    a result key too long for S3, a file type DetectCustomLabels does not read, a size over its
    limit (when the size is known). None: only the model can tell."""
    if not fits(output_key(image.key, layout.results_prefix, layout.input_prefix)):
        return PermanentImageError(
            "KeyTooLong",
            f"The result key for this image would exceed S3's {MAX_KEY_BYTES}-byte limit; "
            "rename the image with a shorter key.",
        )
    if not image.key.lower().endswith(IMAGE_SUFFIXES):
        return PermanentImageError(
            "UnsupportedFileType", "The object is not a JPEG or PNG image (.jpg, .jpeg or .png)."
        )
    if image.size is not None and image.size > MAX_IMAGE_BYTES:
        return PermanentImageError(
            "ImageTooLarge",
            f"The image is {image.size} bytes; DetectCustomLabels accepts at most {MAX_IMAGE_BYTES}.",
        )
    return None


def output_key(key: str, prefix: str, input_prefix: str) -> str:
    """Mirror the input key under `prefix`: `incoming/a/b.jpg` -> `results/a/b.jpg.json`."""
    relative = key[len(input_prefix) :] if input_prefix and key.startswith(input_prefix) else key
    return f"{prefix}{relative}.json"


def fits(key: str) -> bool:
    return len(key.encode("utf-8")) <= MAX_KEY_BYTES


def long_key_error_key(key: str, errors_prefix: str) -> str:
    """Where the error record of an image whose mirrored keys would not fit goes: named by a hash
    of its key (the record inside names the key)."""
    return f"{errors_prefix}_long-keys/{hashlib.sha256(key.encode('utf-8')).hexdigest()}.json"


def utc_now() -> str:
    """The time as every pipeline document writes it: ISO, milliseconds, Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seconds_between(earlier: str | None, later: str) -> float | None:
    """Seconds from one pipeline time (ISO, Z) to another; None when the first is missing or not a
    time (a message from another producer may carry anything as its eventTime)."""
    try:
        start = datetime.fromisoformat(str(earlier).replace("Z", "+00:00"))
        end = datetime.fromisoformat(later.replace("Z", "+00:00"))
    except ValueError:
        return None
    if start.tzinfo is None:
        return None
    return max(0.0, (end - start).total_seconds())


def json_body(document: dict[str, Any]) -> bytes:
    """A result or error record as the pipeline stores it (readable, unicode kept)."""
    return json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8")


# ---- error records: one JSON document per unusable image or unreadable message ----------------
def image_error_record(
    image: ImageRef, error: PermanentImageError, *, message_id: str, layout: Layout, recorded_at: str
) -> tuple[str, dict[str, Any]]:
    """(key, document) of an unusable image's error record: the input key mirrored under the errors
    prefix, or a hash of it when that would not fit."""
    document = {
        "source": image.source(),
        "reason": error.reason,
        "errorCode": error.error_code,
        "messageId": message_id,
        "recordedAt": recorded_at,
    }
    error_key = output_key(image.key, layout.errors_prefix, layout.input_prefix)
    if not fits(error_key):
        error_key = long_key_error_key(image.key, layout.errors_prefix)
    return error_key, document


def message_error_record(
    *, message_id: str, reason: str, body: str, layout: Layout, recorded_at: str
) -> tuple[str, dict[str, Any]]:
    """(key, document) of the error record of a message (or event) that names no usable upload."""
    document = {
        "source": None,
        "reason": reason,
        "errorCode": "NotAnS3Notification",
        "messageId": message_id,
        "body": body,
        "recordedAt": recorded_at,
    }
    return f"{layout.errors_prefix}_messages/{message_id}.json", document
