"""`python -m cli demo`: the command users run first, asserted on the files it leaves behind."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from customlabels_batch.cli import main


def test_demo_writes_results_errors_report_and_gallery(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["demo", "--out", str(out), "--time-scale", "0"]) == 0

    report = json.loads((out / "run-report.json").read_text())
    expected = report["expectedOutcomes"]
    results = sorted(p.relative_to(out / "results").as_posix() for p in (out / "results").rglob("*.json"))
    errors = sorted(p.relative_to(out / "errors").as_posix() for p in (out / "errors").rglob("*.json"))
    assert results == sorted(f"{k}.json" for k, v in expected.items() if v == "result")
    assert errors == sorted(f"{k}.json" for k, v in expected.items() if v.startswith("error:"))
    for relative, outcome in expected.items():
        if outcome.startswith("error:"):
            record = json.loads((out / "errors" / f"{relative}.json").read_text())
            assert record["errorCode"] == outcome.removeprefix("error:"), relative
    assert report["lostImages"] == []
    assert report["model"]["finalStatus"] == "STOPPED"
    assert report["mapping"]["finalState"] == "Disabled"
    assert report["model"]["billedInferenceUnitMinutes"] > 0
    assert report["executions"][0]["status"] == "SUCCEEDED"
    assert (out / "gallery.html").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "model STARTING" in printed
    assert f"{len(expected)} uploaded -> {len(results)} results, {len(errors)} error records" in printed
    # The run record, as the deployed stack writes it to runs/, downloaded and summarised.
    [record_file] = (out / "runs").glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["outcome"] == "SUCCEEDED"
    # The triage recorded the files the model could never take at upload, before the run; the run
    # counts the error records the processor wrote (those only the model could find).
    at_upload = [k for k, v in expected.items() if v in {"error:UnsupportedFileType", "error:ImageTooLarge"}]
    assert at_upload and report["triage"]["errorRecords"] == len(at_upload)
    by_model = len(errors) - len(at_upload)
    assert (record["imagesLabeled"], record["errorRecords"]) == (len(results), by_model)
    assert f"Run record {record_file}: SUCCEEDED" in printed
    assert f"{len(results)} labeled, {by_model} error records, 0 in the DLQ" in printed
    # Every image was uploaded before the run and waited for the model's start (10 emulated minutes).
    waited = report["timeToResult"]
    assert waited["images"] == len(results)
    assert 600 <= waited["p50Seconds"] <= waited["p95Seconds"] <= waited["maxSeconds"] < 900
    assert record["timeToResult"]["images"] == len(results)
    assert "Time to result (upload to result): p50 " in printed


def test_demo_with_own_images_manifest_fault_and_context(tmp_path, capsys):
    images = tmp_path / "mine"
    (images / "sub").mkdir(parents=True)
    buffer = io.BytesIO()
    Image.new("RGB", (200, 100), (10, 200, 10)).save(buffer, "PNG")
    (images / "sub" / "leaf.png").write_bytes(buffer.getvalue())
    (images / "plain.png").write_bytes(buffer.getvalue()[:-1] + b"\x00")  # still decodes, no annotation
    (images / "manifest.jsonl").write_text(
        json.dumps(
            {
                "source-ref": "s3://anywhere/sub/leaf.png",
                "leaf": 0,
                "leaf-metadata": {
                    "class-name": "leaf",
                    "confidence": 0.9,
                    "type": "groundtruth/image-classification",
                },
            }
        )
        + "\n"
    )
    out = tmp_path / "out"
    code = main(
        [
            "demo",
            "--images",
            str(images),
            "--out",
            str(out),
            "--time-scale",
            "0",
            "--fault",
            "abort-during-drain",
            "-c",
            "drainPollSeconds=45",
            "--quiet",
        ]
    )
    assert code == 0
    report = json.loads((out / "run-report.json").read_text())
    assert report["faults"] == ["abort-during-drain"]
    assert report["settings"]["config"]["drainPollSeconds"] == 45
    assert report["executions"][0]["status"] == "ABORTED"
    assert report["model"]["finalStatus"] == "STOPPED"
    # The clean-up run's record says why it ran and what it turned off.
    printed = capsys.readouterr().out
    assert "  why: clean-up after run " in printed
    assert "  turned off: mapping (was Enabled), model (was RUNNING)" in printed
    if (out / "results" / "sub" / "leaf.png.json").exists():
        labels = json.loads((out / "results" / "sub" / "leaf.png.json").read_text())["customLabels"]
        assert labels == [{"Name": "leaf", "Confidence": 90.0}]
    assert "manifest.jsonl" not in json.dumps(report["imagesByOutcome"])
    assert report["imagesUploaded"] == 2


def test_demo_reports_a_missing_definition_clearly(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "o"), "--definition", str(tmp_path / "nope.json")]) == 2
    assert "no state machine definition" in capsys.readouterr().err


def test_replayed_malformed_messages_each_end_as_one_error_record_without_a_model_call(tmp_path, capsys):
    images = tmp_path / "mine"
    images.mkdir()
    buffer = io.BytesIO()
    Image.new("RGB", (200, 100), (10, 200, 10)).save(buffer, "PNG")
    (images / "leaf.png").write_bytes(buffer.getvalue())

    def record(bucket="${bucket}", **obj):
        return {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": bucket}, "object": obj}}

    unusable = [
        "this is not json {",
        "this is not json {",  # a duplicate delivery: each message gets its record
        json.dumps({"hello": "world"}),
        json.dumps({"Records": [{"eventName": "ObjectCreated:Put"}]}),
        json.dumps({"Records": [record(key=12345)]}),
        json.dumps({"Records": [record(key=None)]}),
        json.dumps({"Records": [record(key="incoming/leaf.png", size="10")]}),
        json.dumps({"Records": [record(bucket="someone-else", key="incoming/leaf.png")]}),
    ]
    long_key = "incoming/" + "x" * 1011 + ".jpg"  # 1,024 bytes: its result key could not exist
    replayed = [
        *unusable,
        json.dumps({"Records": [record(key=long_key)]}),
        json.dumps({"Event": "s3:TestEvent"}),
    ]
    messages = tmp_path / "messages.jsonl"
    messages.write_text("\n".join(replayed) + "\n")
    out = tmp_path / "out"
    main(
        [
            "demo",
            "--images",
            str(images),
            "--messages",
            str(messages),
            "--out",
            str(out),
            "--time-scale",
            "0",
            "--quiet",
        ]
    )

    report = json.loads((out / "run-report.json").read_text())
    message_errors = list((out / "errors" / "_messages").glob("*.json"))
    assert len(message_errors) == len(unusable)
    assert {json.loads(p.read_text())["errorCode"] for p in message_errors} == {"NotAnS3Notification"}
    [long_key_error] = (out / "errors" / "_long-keys").glob("*.json")
    assert json.loads(long_key_error.read_text())["errorCode"] == "KeyTooLong"
    # Only the one real image was sent to the model; nothing went to the DLQ.
    assert report["model"]["calls"]["DetectCustomLabels"] == 1
    assert report["deadLetterQueue"]["visible"] == 0
    assert report["queue"] == {"visible": 0, "inFlight": 0, "delayed": 0}


def test_demo_help_lists_every_fault_and_option(capsys):
    from customlabels_batch.emulator.pipeline import FAULTS

    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    out = "".join(capsys.readouterr().out.split())  # argparse wraps lines, also at hyphens
    for fault, description in FAULTS.items():
        assert "".join(f"{fault}: {description}".split()) in out
    assert "--queue-counts-stale-seconds" in out
