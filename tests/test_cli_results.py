"""export, relabel and reconcile against a stack in moto whose outputs point at a real moto bucket and
queue. The queued messages are read back with the processor's own parser, so what these commands
queue is what the processor labels."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.s3.models import s3_backends
from test_cli_deployed import ACCOUNT, REGION, STACK, aws_env, create_stack  # noqa: F401 - aws_env is a fixture

from customlabels_batch.cli import main, results
from customlabels_batch.emulator.functions import PROCESSOR, load_handler
from customlabels_batch.settings import Settings, Use

BUCKET = "pipeline-bucket"
V1 = f"arn:aws:rekognition:{REGION}:{ACCOUNT}:project/p/version/p.v1/1700000000001"
V2 = f"arn:aws:rekognition:{REGION}:{ACCOUNT}:project/p/version/p.v2/1700000000002"
ROSE = {
    "Name": "rose",
    "Confidence": 97.5,
    "Geometry": {"BoundingBox": {"Width": 0.5, "Height": 0.25, "Left": 0.125, "Top": 0.0625}},
}
TULIP = {"Name": "tulip", "Confidence": 55.0}

# The processor module, to parse what the commands queue exactly as the deployed function would.
processor = load_handler(
    PROCESSOR,
    "results_cli",
    Settings(
        project_arn=f"arn:aws:rekognition:{REGION}:{ACCOUNT}:project/p/1700000000000", project_version_arn=V2
    ).function_environment(Use.PROCESSOR, bucket=BUCKET, runStateTable="t", deadLetterQueueUrl="q"),
)


@dataclass
class Stack:
    s3: Any
    sqs: Any
    queue_url: str

    def put(self, key: str, body: bytes | dict = b"image") -> None:
        """Straight into moto's backend: thousands of objects in a second."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        s3_backends[ACCOUNT]["aws"].put_object(BUCKET, key, data)

    def result(
        self, rel: str, version: str = V1, labels=(ROSE,), at: str = "2026-11-30T10:00:00.000Z"
    ) -> None:
        self.put(
            f"results/{rel}.json",
            {
                "source": {"bucket": BUCKET, "key": f"incoming/{rel}", "uploadedAt": "2026-11-30T09:00:00Z"},
                "modelVersionArn": version,
                "labeledAt": at,
                "customLabels": list(labels),
            },
        )

    def queued(self) -> list[str]:
        """Bodies of every queued message (taken off the queue)."""
        bodies = []
        while messages := self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get(
            "Messages"
        ):
            bodies += [m["Body"] for m in messages]
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )
        return bodies


@pytest.fixture
def stack(aws_env: None) -> Iterator[Stack]:  # noqa: F811 - the imported fixture
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        s3, sqs = session.client("s3"), session.client("sqs")
        s3.create_bucket(Bucket=BUCKET)
        queue_url = sqs.create_queue(QueueName="images")["QueueUrl"]
        create_stack(
            session,
            STACK,
            {
                "BucketName": BUCKET,
                "InputPrefix": "incoming/",
                "ResultsPrefix": "results/",
                "ErrorsPrefix": "errors/",
                "RunsPrefix": "runs/",
                "QueueUrl": queue_url,
                "ProjectVersionArn": V2,
            },
        )
        yield Stack(s3=s3, sqs=sqs, queue_url=queue_url)


def _images(bodies: list[str]) -> list[tuple[str, int | None]]:
    """(key, size) of what the processor would label in each queued body."""
    found = []
    for body in bodies:
        found += [(image.key, image.size) for image in processor._parse_notification(body)]
    return found


# ---- export ----------------------------------------------------------------------------------------


def test_export_writes_one_row_per_label_as_csv(stack, capsys):
    stack.result("a/one.jpg", labels=(ROSE, TULIP))
    stack.result("b/two.jpg", labels=())
    assert main(["export"]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert [(r["imageKey"], r["label"], r["confidence"]) for r in rows] == [
        ("incoming/a/one.jpg", "rose", "97.5"),
        ("incoming/a/one.jpg", "tulip", "55.0"),
        ("incoming/b/two.jpg", "", ""),
    ]
    assert rows[0]["boxLeft"] == "0.125" and rows[0]["boxHeight"] == "0.25"
    assert rows[0]["modelVersionArn"] == V1
    assert rows[0]["uploadedAt"] == "2026-11-30T09:00:00Z"
    assert "Exported 3 row(s) as csv" in captured.err


def test_export_filters_by_prefix_label_confidence_and_time(stack, tmp_path):
    stack.result("a/one.jpg", labels=(ROSE, TULIP), at="2026-11-30T10:00:00.000Z")
    stack.result("a/two.jpg", labels=(TULIP,), at="2026-12-01T10:00:00.000Z")
    stack.result("b/three.jpg", labels=(ROSE,), at="2026-12-01T11:00:00.000Z")
    out = tmp_path / "rows.jsonl"

    def exported(*argv: str) -> list[tuple[str, str]]:
        assert main(["export", "--format", "jsonl", "--out", str(out), *argv]) == 0
        return [(r["imageKey"], r["label"]) for r in map(json.loads, out.read_text().splitlines())]

    assert exported("--prefix", "a/", "--label", "tulip") == [
        ("incoming/a/one.jpg", "tulip"),
        ("incoming/a/two.jpg", "tulip"),
    ]
    assert exported("--min-confidence", "90") == [
        ("incoming/a/one.jpg", "rose"),
        ("incoming/b/three.jpg", "rose"),
    ]
    assert exported("--since", "2026-12-01", "--until", "2026-12-01T10:30:00Z") == [
        ("incoming/a/two.jpg", "tulip")
    ]
    assert exported("--limit", "1") == [("incoming/a/one.jpg", "rose"), ("incoming/a/one.jpg", "tulip")]


def test_export_of_a_run_keeps_what_it_labeled(stack, capsys):
    stack.result("early.jpg", at="2026-12-01T07:00:00.000Z")
    stack.result("during.jpg", at="2026-12-01T08:05:00.000Z")
    stack.put(
        "runs/2026-12-01T08-00-00.000Z_manual-1.json",
        {"executionName": "manual-1", "startedAt": "2026-12-01T08:00:00Z", "endedAt": "2026-12-01T08:20:00Z"},
    )
    assert main(["export", "--run", "manual-1", "--format", "jsonl"]) == 0
    assert [json.loads(line)["imageKey"] for line in capsys.readouterr().out.splitlines()] == [
        "incoming/during.jpg"
    ]
    assert main(["export", "--run", "manual-9"]) == 2
    assert "No run record for execution manual-9" in capsys.readouterr().err


def test_export_of_thousands_of_results_streams_and_skips_kept_results(stack, tmp_path):
    for i in range(3000):
        stack.result(f"many/{i:05d}.jpg")
    stack.result("many/00000.jpg", version=V1)
    stack.put("results/_previous/p.v1/many/00000.jpg.json", {"modelVersionArn": V1, "customLabels": []})
    out = tmp_path / "rows.csv"
    assert main(["export", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 3000
    assert len({r["imageKey"] for r in rows}) == 3000


def test_export_reads_results_lazily():
    """Rows come out while the listing is still going: an endless bucket still yields the first
    rows (a materialized listing would never return)."""

    class EndlessBucket:
        def get_paginator(self, name):
            def pages(**_):
                page = 0
                while True:
                    yield {"Contents": [{"Key": f"results/{page:09d}-{i}.jpg.json"} for i in range(1000)]}
                    page += 1

            return type("Paginator", (), {"paginate": staticmethod(pages)})()

        def get_object(self, Bucket, Key):
            body = json.dumps({"labeledAt": "2026-12-01T00:00:00Z", "customLabels": [ROSE]}).encode()
            return {"Body": io.BytesIO(body)}

    layout = results.Layout(BUCKET, "incoming/", "results/", "errors/", "runs/")
    rows = results.export_rows(results.iter_results(EndlessBucket(), layout, results.Filters()))
    first = [next(rows) for _ in range(1500)]
    assert first[-1]["imageKey"] == "incoming/000000001-499.jpg"


# ---- reconcile -------------------------------------------------------------------------------------


def test_reconcile_finds_and_queues_images_with_neither_result_nor_error_record(stack, capsys):
    for i in range(3000):
        stack.put(f"incoming/day/{i:05d}.jpg")
        if i % 500:  # every 500th lost its notification
            stack.result(f"day/{i:05d}.jpg")
    stack.put("incoming/notes.txt")
    stack.put("errors/notes.txt.json", {"errorCode": "UnsupportedFileType"})
    long_key = "incoming/" + "x" * 1011 + ".jpg"
    stack.put(long_key)
    stack.put("errors/_long-keys/abc.json", {"source": {"key": long_key}, "errorCode": "KeyTooLong"})
    stack.put("incoming/folder/")  # a console folder marker: not an image
    stack.put("incoming/été 2026/plage+mer.jpg", b"not yet labeled")
    stack.put("incoming/readme.md", b"# not an image, and its notification was lost")

    assert main(["reconcile", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "8 object(s) under s3://pipeline-bucket/incoming/ have neither a result nor an error record" in out
    assert "1 of them the model cannot take" in out
    assert stack.queued() == []

    assert main(["reconcile", "--yes"]) == 0
    assert "Queued 7 and recorded 1 error(s)" in capsys.readouterr().out
    record = json.loads(stack.s3.get_object(Bucket=BUCKET, Key="errors/readme.md.json")["Body"].read())
    assert record["errorCode"] == "UnsupportedFileType"
    queued = _images(stack.queued())
    assert sorted(key for key, _ in queued) == sorted(
        [f"incoming/day/{i:05d}.jpg" for i in range(0, 3000, 500)] + ["incoming/été 2026/plage+mer.jpg"]
    )
    assert dict(queued)["incoming/été 2026/plage+mer.jpg"] == len(b"not yet labeled")


def test_reconcile_will_not_guess_while_messages_are_queued(stack, capsys):
    stack.put("incoming/lost.jpg")
    stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody="{}")
    assert main(["reconcile", "--yes"]) == 2
    assert "The queue holds 1 message(s)" in capsys.readouterr().err
    assert main(["reconcile", "--yes", "--even-if-queued"]) == 0
    assert len(stack.queued()) == 2


def test_reconcile_with_nothing_lost_says_so(stack, capsys):
    stack.put("incoming/a.jpg")
    stack.result("a.jpg")
    assert main(["reconcile", "--yes"]) == 0
    assert "Every object under s3://pipeline-bucket/incoming/ has a result or an error record." in (
        capsys.readouterr().out
    )


# ---- relabel ---------------------------------------------------------------------------------------


def test_relabel_keeps_the_old_results_and_queues_only_what_the_configured_version_has_not_labeled(
    stack, capsys
):
    for name in ("a.jpg", "b.jpg"):
        stack.put(f"incoming/2026/{name}")
        stack.result(f"2026/{name}", version=V1)
    stack.put("incoming/2026/c.jpg")
    stack.result("2026/c.jpg", version=V2)
    stack.put("incoming/2026/new.jpg")
    stack.put("incoming/2026/notes.txt")  # not an image: never relabelled
    stack.put("incoming/2025/old.jpg")

    assert main(["relabel", "--prefix", "2026/", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 already labeled by p.v2, 2 labeled by an" in out
    assert "1 without a result." in out
    assert stack.queued() == []

    assert main(["relabel", "--prefix", "2026/", "--yes"]) == 0
    assert sorted(key for key, _ in _images(stack.queued())) == [
        "incoming/2026/a.jpg",
        "incoming/2026/b.jpg",
        "incoming/2026/new.jpg",
    ]
    kept = json.loads(
        stack.s3.get_object(Bucket=BUCKET, Key="results/_previous/p.v1/2026/a.jpg.json")["Body"].read()
    )
    assert kept["modelVersionArn"] == V1

    # The next run labels them with v2; relabelling again then queues nothing.
    for name in ("a.jpg", "b.jpg", "new.jpg"):
        stack.result(f"2026/{name}", version=V2)
    assert main(["relabel", "--prefix", "2026/", "--yes"]) == 0
    assert "Nothing to relabel." in capsys.readouterr().out
    assert stack.queued() == []


def test_relabel_asks_first_and_needs_a_terminal_to_ask(stack, capsys):
    stack.put("incoming/a.jpg")
    assert main(["relabel"]) == 2
    assert "pass --yes" in capsys.readouterr().err
    assert stack.queued() == []


def test_result_commands_without_the_stack_say_so(stack, capsys):
    for argv in (["export"], ["reconcile", "--yes"], ["relabel", "--yes"]):
        assert main([*argv, "--stack-name", "Elsewhere"]) == 2
        assert f"error: Stack Elsewhere not found in region {REGION}" in capsys.readouterr().err


def test_a_time_that_is_not_iso_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--since", "yesterday"])
    assert "not an ISO time" in capsys.readouterr().err
    assert results._utc_time("2026-12-01") == datetime(2026, 12, 1, tzinfo=UTC)


# ---- gallery ---------------------------------------------------------------------------------------


def _photo(size=(1600, 1200)) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, (40, 120, 40))
    ImageDraw.Draw(image).ellipse((200, 150, 1000, 750), fill=(220, 30, 30))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _gallery_bucket(stack: Stack) -> None:
    for name in ("garden/one.jpg", "garden/two.jpg", "shed/three.jpg"):
        stack.put(f"incoming/{name}", _photo())
    stack.result("garden/one.jpg", labels=(ROSE, TULIP))
    stack.result("garden/two.jpg", labels=(TULIP,))
    stack.result("shed/three.jpg", labels=())
    stack.put("incoming/garden/broken.jpg", b"\xff\xd8\xffnot really")
    stack.put(
        "errors/garden/broken.jpg.json",
        {
            "source": {"bucket": BUCKET, "key": "incoming/garden/broken.jpg"},
            "errorCode": "InvalidImageFormatException",
            "reason": "The image is corrupt.",
            "recordedAt": "2026-11-30T10:00:00.000Z",
        },
    )


def test_gallery_embeds_downscaled_images_with_their_boxes_and_the_error_records(stack, tmp_path, capsys):
    _gallery_bucket(stack)
    out = tmp_path / "g.html"
    assert main(["gallery", "--out", str(out), "--prefix", "garden/"]) == 0
    assert f"Wrote {out}" in capsys.readouterr().out
    page = out.read_text()
    assert page.count('<div class="box') == 1  # rose has a box; tulip is a whole-image label
    assert "garden/one.jpg" in page and "garden/two.jpg" in page and "shed/three.jpg" not in page
    assert "InvalidImageFormatException" in page
    # Two thumbnails, each far smaller than the 1600 x 1200 original.
    thumbnails = re.findall(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", page)
    assert len(thumbnails) == 2
    from PIL import Image

    for data in thumbnails:
        with Image.open(io.BytesIO(base64.b64decode(data))) as image:
            assert max(image.size) == results.THUMBNAIL_SIDE
    assert len(page) < len(_photo())


def test_gallery_by_label_shows_only_that_label_and_no_error_records(stack, tmp_path):
    _gallery_bucket(stack)
    out = tmp_path / "g.html"
    assert main(["gallery", "--out", str(out), "--label", "rose", "--min-confidence", "90"]) == 0
    page = out.read_text()
    assert "garden/one.jpg" in page and "garden/two.jpg" not in page
    assert "tulip" not in page
    assert "InvalidImageFormatException" not in page


@pytest.mark.browser
def test_chromium_renders_the_bucket_gallery(stack, tmp_path):
    from test_dataset_and_gallery import chromium

    _gallery_bucket(stack)
    out = tmp_path / "g.html"
    assert main(["gallery", "--out", str(out)]) == 0
    dom = chromium("--dump-dom", out.as_uri(), profile=tmp_path / "profile").stdout
    assert len(re.findall(r'<div class="box[ "]', dom)) == 1
    for text in ("garden/one.jpg", "shed/three.jpg", "no labels found", "InvalidImageFormatException"):
        assert text in dom
