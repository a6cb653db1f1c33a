"""Commands on what the deployed pipeline wrote: a gallery of results, export results as rows,
relabel images with the model version the stack is configured with now, and reconcile images that
have neither a result nor an error record. Export streams from S3 listings, so a million results take
no more memory than a thousand; reconcile keeps the set of keys it has accounted for (one string per
image), and the gallery its page (it stops at --limit images)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote_plus

from botocore.exceptions import ClientError

from customlabels_batch import gallery, waits
from customlabels_batch.lambdas import images

from . import deployed

# Where relabel keeps the results a previous model version wrote, under the results prefix:
# `results/_previous/<version name>/<path>.json`. Kept, not overwritten: a retrained model is
# judged against the old one, and a result is small.
PREVIOUS = "_previous/"
MESSAGE_ERRORS = "_messages/"
LONG_KEY_ERRORS = "_long-keys/"
SEND_BATCH = 10
EXPORT_FIELDS = (
    "imageKey",
    "label",
    "confidence",
    "boxLeft",
    "boxTop",
    "boxWidth",
    "boxHeight",
    "modelVersionArn",
    "labeledAt",
    "uploadedAt",
)


@dataclass(frozen=True)
class Layout:
    """Where the pipeline keeps things in its bucket (the stack's outputs)."""

    bucket: str
    input_prefix: str
    results_prefix: str
    errors_prefix: str
    runs_prefix: str

    @classmethod
    def from_outputs(cls, outputs: deployed.StackOutputs) -> Layout:
        names = ("BucketName", "InputPrefix", "ResultsPrefix", "ErrorsPrefix", "RunsPrefix")
        return cls(*outputs.require(*names))


@dataclass(frozen=True)
class Filters:
    prefix: str = ""  # of the image key, relative to the input prefix
    since: datetime | None = None  # labeled at or after
    until: datetime | None = None  # labeled before
    label: str | None = None
    min_confidence: float | None = None
    limit: int | None = None

    def takes(self, time: Any) -> bool:
        """Whether a document written at `time` (ISO text) is in the time range."""
        if self.since is None and self.until is None:
            return True
        at = _parse_time(time)
        return (
            at is not None
            and (self.since is None or at >= self.since)
            and (self.until is None or at < self.until)
        )


def iter_objects(s3: Any, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


def _read_json(s3: Any, bucket: str, key: str) -> Any:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _labels(document: dict[str, Any], filters: Filters) -> list[dict[str, Any]]:
    labels = [label for label in document.get("customLabels") or [] if isinstance(label, dict)]
    if filters.min_confidence is not None:
        labels = [label for label in labels if (label.get("Confidence") or 0) >= filters.min_confidence]
    if filters.label is not None:
        labels = [label for label in labels if label.get("Name") == filters.label]
    return labels


def iter_results(s3: Any, layout: Layout, filters: Filters) -> Iterator[tuple[str, dict[str, Any], list]]:
    """(image key, result document, the labels that pass the filters) for each result that passes,
    in key order; results kept by relabel are not current and are left out."""
    count = 0
    for item in iter_objects(s3, layout.bucket, layout.results_prefix + filters.prefix):
        relative = item["Key"][len(layout.results_prefix) :]
        if relative.startswith(PREVIOUS) or not relative.endswith(".json"):
            continue
        document = _read_json(s3, layout.bucket, item["Key"])
        if not isinstance(document, dict):
            continue
        if not filters.takes(document.get("labeledAt")):
            continue
        labels = _labels(document, filters)
        if (filters.label is not None or filters.min_confidence is not None) and not labels:
            continue
        source = document.get("source") or {}
        yield source.get("key") or layout.input_prefix + relative[: -len(".json")], document, labels
        count += 1
        if filters.limit is not None and count >= filters.limit:
            return


def export_rows(results: Iterable[tuple[str, dict[str, Any], list]]) -> Iterator[dict[str, Any]]:
    """One row per label; an image without (matching) labels is one row with an empty label."""
    for key, document, labels in results:
        common = {
            "imageKey": key,
            "modelVersionArn": document.get("modelVersionArn"),
            "labeledAt": document.get("labeledAt"),
            "uploadedAt": (document.get("source") or {}).get("uploadedAt"),
        }
        if not labels:
            yield {field: common.get(field) for field in EXPORT_FIELDS}
        for label in labels:
            box = (label.get("Geometry") or {}).get("BoundingBox") or {}
            yield {
                **{field: common.get(field) for field in EXPORT_FIELDS},
                "label": label.get("Name"),
                "confidence": label.get("Confidence"),
                "boxLeft": box.get("Left"),
                "boxTop": box.get("Top"),
                "boxWidth": box.get("Width"),
                "boxHeight": box.get("Height"),
            }


def write_rows(rows: Iterable[dict[str, Any]], out: TextIO, fmt: str) -> int:
    """Write as CSV (header first, empty cells for missing values) or JSON Lines; returns the count."""
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
            count += 1
    else:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def run_window(s3: Any, layout: Layout, execution_name: str) -> tuple[datetime, datetime]:
    """The time range of the run whose record names this execution."""
    for item in iter_objects(s3, layout.bucket, layout.runs_prefix):
        if item["Key"].endswith(f"_{execution_name}.json"):
            record = _read_json(s3, layout.bucket, item["Key"])
            started, ended = _parse_time(record.get("startedAt")), _parse_time(record.get("endedAt"))
            if started and ended:
                return started, ended
    raise deployed.CliError(
        f"No run record for execution {execution_name} under s3://{layout.bucket}/{layout.runs_prefix}"
    )


# ---- queueing images again -----------------------------------------------------------------------


def notification_body(layout: Layout, item: dict[str, Any], event_name: str) -> str:
    """An S3 event notification for an existing object, as the processor reads them: the key URL-
    encoded as S3 sends it, the size and ETag from the listing, and the upload time as eventTime."""
    modified = item.get("LastModified")
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": f"ObjectCreated:{event_name}",
        "eventTime": modified.isoformat().replace("+00:00", "Z") if modified else None,
        "s3": {
            "bucket": {"name": layout.bucket},
            "object": {
                "key": quote_plus(item["Key"], safe="/"),
                "size": item.get("Size"),
                "eTag": (item.get("ETag") or "").strip('"') or None,
            },
        },
    }
    return json.dumps({"Records": [record]}, ensure_ascii=False)


def send_all(sqs: Any, queue_url: str, bodies: Iterable[str], *, progress: TextIO = sys.stderr) -> int:
    """SendMessageBatch, ten at a time; a refused entry is an error, not a silent drop."""
    sent = 0
    batch: list[str] = []

    def flush() -> None:
        nonlocal sent
        if not batch:
            return
        response = sqs.send_message_batch(
            QueueUrl=queue_url, Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(batch)]
        )
        if response.get("Failed"):
            first = response["Failed"][0]
            raise deployed.CliError(
                f"SQS refused {len(response['Failed'])} message(s) after {sent} were queued "
                f"({first.get('Code')}: {first.get('Message')}); run the command again to queue the rest"
            )
        sent += len(batch)
        batch.clear()
        if sent % 1000 == 0:
            print(f"  queued {sent}", file=progress)

    for body in bodies:
        batch.append(body)
        if len(batch) == SEND_BATCH:
            flush()
    flush()
    return sent


def _is_folder_marker(item: dict[str, Any]) -> bool:
    return item["Key"].endswith("/")


def _image(layout: Layout, item: dict[str, Any]) -> images.ImageRef:
    return images.ImageRef(
        bucket=layout.bucket,
        key=item["Key"],
        etag=(item.get("ETag") or "").strip('"') or None,
        size=item.get("Size"),
    )


def _unusable(layout: Layout, item: dict[str, Any]) -> images.PermanentImageError | None:
    """Why the model can never take this object (the triage's and the processor's own test)."""
    return images.unusable_without_model(_image(layout, item), layout)


def accounted_keys(s3: Any, layout: Layout) -> set[str]:
    """Input keys that have a result or an error record."""
    keys = set()
    for item in iter_objects(s3, layout.bucket, layout.results_prefix):
        relative = item["Key"][len(layout.results_prefix) :]
        if not relative.startswith(PREVIOUS) and relative.endswith(".json"):
            keys.add(layout.input_prefix + relative[: -len(".json")])
    for item in iter_objects(s3, layout.bucket, layout.errors_prefix):
        relative = item["Key"][len(layout.errors_prefix) :]
        if relative.startswith(MESSAGE_ERRORS):
            continue
        if relative.startswith(LONG_KEY_ERRORS):
            # Named by a hash of the image key, which the record holds.
            source = (_read_json(s3, layout.bucket, item["Key"]).get("source") or {}).get("key")
            if source:
                keys.add(source)
        elif relative.endswith(".json"):
            keys.add(layout.input_prefix + relative[: -len(".json")])
    return keys


def find_strays(s3: Any, layout: Layout, prefix: str = "") -> Iterator[dict[str, Any]]:
    accounted = accounted_keys(s3, layout)
    for item in iter_objects(s3, layout.bucket, layout.input_prefix + prefix):
        if not _is_folder_marker(item) and item["Key"] not in accounted:
            yield item


def _require_quiet_queue(sqs: Any, queue_url: str, what: str) -> None:
    counts = deployed.queue_counts(sqs, queue_url)
    if counts.total:
        raise deployed.CliError(
            f"The queue holds {counts.total} message(s) (visible, in flight or delayed), and a queued "
            f"message cannot be read without taking it: some of these {what} may be among them. Run "
            "this again once a run has drained the queue, or pass --even-if-queued (an image queued "
            "twice is labeled twice, with the same result)"
        )


def _ask(question: str, *, assume_yes: bool) -> bool:
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        raise deployed.CliError("this command asks for confirmation but stdin is not a terminal: pass --yes")
    return deployed._confirm(question)


def reconcile(session: Any, outputs: deployed.StackOutputs, args: argparse.Namespace) -> int:
    layout = Layout.from_outputs(outputs)
    (queue_url,) = outputs.require("QueueUrl")
    s3, sqs = deployed.client(session, "s3"), deployed.client(session, "sqs")
    strays = list(find_strays(s3, layout, args.prefix))
    where = f"s3://{layout.bucket}/{layout.input_prefix}{args.prefix}"
    if not strays:
        print(f"Every object under {where} has a result or an error record.")
        return deployed.EXIT_OK
    print(f"{len(strays)} object(s) under {where} have neither a result nor an error record:")
    for item in strays[: args.show]:
        print(f"  {item['Key']}")
    if len(strays) > args.show:
        print(f"  ... and {len(strays) - args.show} more")
    verdicts = [(item, _unusable(layout, item)) for item in strays]
    unusable = [(item, why) for item, why in verdicts if why]
    candidates = [item for item, why in verdicts if not why]
    if unusable:
        print(f"{len(unusable)} of them the model cannot take: they get their error record, not the model.")
    if args.dry_run:
        return deployed.EXIT_OK
    if candidates and not args.even_if_queued:
        _require_quiet_queue(sqs, queue_url, "images")
    question = (
        f"Queue {len(candidates)} image(s) for the next run and record {len(unusable)} error(s)? [y/N] "
    )
    if not _ask(question, assume_yes=args.yes):
        print("Nothing queued.")
        return deployed.EXIT_FAILED
    recorded_at = images.utc_now()
    for item, why in unusable:
        key, document = images.image_error_record(
            _image(layout, item), why, message_id="reconcile", layout=layout, recorded_at=recorded_at
        )
        s3.put_object(
            Bucket=layout.bucket,
            Key=key,
            Body=images.json_body(document),
            ContentType="application/json",
        )
    sent = send_all(sqs, queue_url, (notification_body(layout, item, "Reconcile") for item in candidates))
    print(
        f"Queued {sent} and recorded {len(unusable)} error(s); the next run labels the queued ones (or "
        f"`{deployed.CLI_NAME} run-now`)."
    )
    return deployed.EXIT_OK


def _result_version(s3: Any, layout: Layout, result_key: str) -> str | None:
    """The model version that wrote the result, or None when there is no result."""
    try:
        document = _read_json(s3, layout.bucket, result_key)
    except ClientError as error:
        if deployed._error_code(error) in ("NoSuchKey", "404"):
            return None
        raise
    return document.get("modelVersionArn") if isinstance(document, dict) else ""


def _version_name(version_arn: str) -> str:
    """`arn:...:project/p/version/p.v1/123` -> `p.v1`; anything else (an odd result), made safe for a key."""
    try:
        return deployed.parse_project_version_arn(version_arn)[1]
    except deployed.CliError:
        return version_arn.replace("/", "_").replace(":", "_") or "unknown"


def relabel(session: Any, outputs: deployed.StackOutputs, args: argparse.Namespace) -> int:
    layout = Layout.from_outputs(outputs)
    queue_url, version = outputs.require("QueueUrl", "ProjectVersionArn")
    s3, sqs = deployed.client(session, "s3"), deployed.client(session, "sqs")
    where = f"s3://{layout.bucket}/{layout.input_prefix}{args.prefix}"
    plan: list[tuple[dict[str, Any], str | None]] = []  # (object, the version of its current result)
    current = 0
    for item in iter_objects(s3, layout.bucket, layout.input_prefix + args.prefix):
        if _is_folder_marker(item) or _unusable(layout, item):
            continue  # only images the model can take are relabelled
        result_key = layout.results_prefix + item["Key"][len(layout.input_prefix) :] + ".json"
        producer = _result_version(s3, layout, result_key)
        if producer == version:
            current += 1
        else:
            plan.append((item, producer))
    older = sum(1 for _, producer in plan if producer is not None)
    print(f"Under {where}: {current} already labeled by {_version_name(version)}, {older} labeled by an")
    print(f"earlier version (their results are kept under {layout.results_prefix}{PREVIOUS}<version>/),")
    print(f"{len(plan) - older} without a result.")
    if not plan:
        print("Nothing to relabel.")
        return deployed.EXIT_OK
    if args.dry_run:
        return deployed.EXIT_OK
    if not args.even_if_queued:
        _require_quiet_queue(sqs, queue_url, "images")
    if not _ask(f"Queue {len(plan)} image(s) for {_version_name(version)}? [y/N] ", assume_yes=args.yes):
        print("Nothing queued.")
        return deployed.EXIT_FAILED
    for item, producer in plan:
        if producer is None:
            continue
        relative = item["Key"][len(layout.input_prefix) :] + ".json"
        s3.copy_object(
            Bucket=layout.bucket,
            Key=f"{layout.results_prefix}{PREVIOUS}{_version_name(producer)}/{relative}",
            CopySource={"Bucket": layout.bucket, "Key": layout.results_prefix + relative},
        )
    sent = send_all(sqs, queue_url, (notification_body(layout, item, "Relabel") for item, _ in plan))
    print(
        f"Queued {sent}; the next run labels them with {_version_name(version)} "
        f"(or `{deployed.CLI_NAME} run-now`)."
    )
    return deployed.EXIT_OK


def export(session: Any, outputs: deployed.StackOutputs, args: argparse.Namespace) -> int:
    layout = Layout.from_outputs(outputs)
    s3 = deployed.client(session, "s3")
    rows = export_rows(iter_results(s3, layout, _filters(s3, layout, args)))
    if args.out == "-":
        count = write_rows(rows, sys.stdout, args.format)
    else:
        with Path(args.out).open("w", encoding="utf-8", newline="") as out:
            count = write_rows(rows, out, args.format)
    print(f"Exported {count} row(s) as {args.format}", file=sys.stderr)
    return deployed.EXIT_OK


# ---- gallery -------------------------------------------------------------------------------------

THUMBNAIL_SIDE = 480
# Larger objects are not downloaded for a thumbnail (DetectCustomLabels takes at most 15 MB anyway).
MAX_DOWNLOAD_BYTES = 16 * 1024 * 1024
DEFAULT_GALLERY_LIMIT = 500


def _thumbnail(s3: Any, bucket: str, key: str) -> bytes | None:
    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
    except ClientError:
        return None  # gone since it was labeled: the card says the image is not embedded
    if obj.get("ContentLength", 0) > MAX_DOWNLOAD_BYTES:
        return None
    return gallery.thumbnail(obj["Body"].read(), THUMBNAIL_SIDE)


def iter_error_records(s3: Any, layout: Layout, filters: Filters) -> Iterator[tuple[str, dict[str, Any]]]:
    count = 0
    for item in iter_objects(s3, layout.bucket, layout.errors_prefix + filters.prefix):
        document = _read_json(s3, layout.bucket, item["Key"])
        if not isinstance(document, dict):
            continue
        if not filters.takes(document.get("recordedAt")):
            continue
        source = document.get("source") if isinstance(document.get("source"), dict) else {}
        yield source.get("key") or item["Key"][len(layout.errors_prefix) : -len(".json")], document
        count += 1
        if filters.limit is not None and count >= filters.limit:
            return


def bucket_gallery(s3: Any, layout: Layout, filters: Filters, *, progress: TextIO = sys.stderr) -> str:
    """The gallery page of the results (and, unless filtering by label or confidence, the error
    records) that pass the filters, each image downscaled and embedded."""
    entries: list[gallery.Entry] = []
    for key, document, labels in iter_results(s3, layout, filters):
        shown = {**document, "customLabels": labels}  # only the labels that passed the filters
        entries.append((key[len(layout.input_prefix) :], shown, _thumbnail(s3, layout.bucket, key)))
        if len(entries) % 50 == 0:
            print(f"  {len(entries)} results read", file=progress)
    errors: list[gallery.Entry] = []
    if filters.label is None and filters.min_confidence is None:
        for key, document in iter_error_records(s3, layout, filters):
            relative = key[len(layout.input_prefix) :] if key.startswith(layout.input_prefix) else key
            data = _thumbnail(s3, layout.bucket, key) if document.get("source") else None
            errors.append((relative, document, data))
    shown = [
        ("Bucket", f"s3://{layout.bucket}/{layout.input_prefix}{filters.prefix}"),
        ("Images shown", len(entries)),
        (
            "Error records shown",
            len(errors) if filters.label is None and filters.min_confidence is None else None,
        ),
        ("Label", filters.label),
        ("Minimum confidence", filters.min_confidence),
        ("Labeled from", filters.since.isoformat() if filters.since else None),
        ("Labeled until", filters.until.isoformat() if filters.until else None),
        ("Time to result", waits.describe(waits.summary(waits.of_result(doc) for _, doc, _ in entries))),
    ]
    return gallery.render(
        "Custom Labels results", entries, errors, lambda counts: gallery.stats_headline(shown, counts)
    )


def gallery_command(session: Any, outputs: deployed.StackOutputs, args: argparse.Namespace) -> int:
    layout = Layout.from_outputs(outputs)
    s3 = deployed.client(session, "s3")
    filters = _filters(s3, layout, args)
    page = bucket_gallery(s3, layout, filters)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    print(f"Wrote {out} ({len(page.encode()) // 1024} KB); open it in a browser.")
    return deployed.EXIT_OK


def _filters(s3: Any, layout: Layout, args: argparse.Namespace) -> Filters:
    since, until = args.since, args.until
    if args.run:
        since, until = run_window(s3, layout, args.run)
    return Filters(
        prefix=args.prefix,
        since=since,
        until=until,
        label=args.label,
        min_confidence=args.min_confidence,
        limit=args.limit,
    )


# ---- wiring --------------------------------------------------------------------------------------


def _on_stack(command):
    def run(args: argparse.Namespace) -> int:
        session = deployed.make_session(args.region)
        outputs = deployed.load_stack_outputs(deployed.client(session, "cloudformation"), args.stack_name)
        return command(session, outputs, args)

    run.__name__ = command.__name__
    return deployed._one_line_errors(run)


def _utc_time(text: str) -> datetime:
    value = _parse_time(text if "T" in text or " " in text else f"{text}T00:00:00")
    if value is None:
        raise argparse.ArgumentTypeError("not an ISO time, like 2026-12-01 or 2026-12-01T08:00:00Z")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _fraction_of_100(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError("a confidence from 0 to 100")
    return value


def add_commands(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    prefix = argparse.ArgumentParser(add_help=False)
    prefix.add_argument(
        "--prefix", default="", help="only image keys starting with this, below the input prefix (e.g. 2026/)"
    )

    selection = argparse.ArgumentParser(add_help=False, parents=[prefix])
    selection.add_argument("--since", type=_utc_time, help="labeled at or after (ISO, UTC if no zone)")
    selection.add_argument("--until", type=_utc_time, help="labeled before (ISO, UTC if no zone)")
    selection.add_argument(
        "--run", metavar="EXECUTION", help="only what this run labeled (its execution name)"
    )
    selection.add_argument("--label", help="only this label")
    selection.add_argument(
        "--min-confidence", type=_fraction_of_100, metavar="N", help="only labels at or above N"
    )

    gallery_parser = subparsers.add_parser(
        "gallery",
        parents=[common, selection],
        help="a one-file HTML page of the results, images downscaled and embedded",
        description="Write a self-contained HTML page of the bucket's results (boxes drawn over "
        "downscaled images) and error records, to open or share.",
    )
    gallery_parser.add_argument("--out", default="gallery.html", help="file to write (default: gallery.html)")
    gallery_parser.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_GALLERY_LIMIT,
        metavar="N",
        help=f"at most N images (default {DEFAULT_GALLERY_LIMIT})",
    )
    gallery_parser.set_defaults(func=_on_stack(gallery_command))

    export_parser = subparsers.add_parser(
        "export",
        parents=[common, selection],
        help="every result as rows (CSV or JSON Lines), streaming",
        description="Write one row per label found (an image without labels: one row with no label): "
        f"{', '.join(EXPORT_FIELDS)}.",
    )
    export_parser.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    export_parser.add_argument("--out", default="-", help="file to write (default: standard output)")
    export_parser.add_argument("--limit", type=int, metavar="N", help="at most N images")
    export_parser.set_defaults(func=_on_stack(export))

    for name, command, help_text, description in (
        (
            "relabel",
            relabel,
            "queue images again for the model version the stack is configured with now",
            "After retraining: queue the images under a prefix whose result came from another model "
            "version (or that have none) for the next run. Their current results are kept under "
            f"<results prefix>{PREVIOUS}<version name>/. Images already labeled by the configured "
            "version are left alone, so running it again queues nothing new once a run has labeled them.",
        ),
        (
            "reconcile",
            reconcile,
            "find images with neither a result nor an error record, and queue them again",
            "Find objects under the input prefix with neither a result nor an error record (a lost or "
            "expired notification, a purged message), list them, and queue them for the next run.",
        ),
    ):
        parser = subparsers.add_parser(
            name, parents=[common, prefix], help=help_text, description=description
        )
        parser.add_argument("--dry-run", action="store_true", help="count and list only; queue nothing")
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        parser.add_argument(
            "--even-if-queued",
            action="store_true",
            help="queue even though the queue holds messages (some images may then be queued twice)",
        )
        if name == "reconcile":
            parser.add_argument(
                "--show", type=int, default=20, metavar="N", help="list at most N keys (default 20)"
            )
        parser.set_defaults(func=_on_stack(command))
