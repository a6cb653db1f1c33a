"""End to end through the emulator: the real ASL, the real processor handler, emulated AWS.

Every test asserts on the run report the demo writes, so the demo's numbers are the tested ones.
"""

from __future__ import annotations

import io
import json
import math

import pytest
from PIL import Image, ImageDraw

from customlabels_batch.emulator.control_plane import ControlPlane
from customlabels_batch.emulator.custom_labels import Annotation, Annotations, ModelBehaviour
from customlabels_batch.emulator.pipeline import (
    FAULTS,
    EmulatedPipeline,
    EmulationOptions,
    Upload,
    emulated_config,
)
from customlabels_batch.settings import CONCURRENCY_PER_INFERENCE_UNIT


def _jpeg(seed: int, size=(160, 120)) -> bytes:
    image = Image.new("RGB", size, (seed * 37 % 256, seed * 91 % 256, 90))
    ImageDraw.Draw(image).ellipse((20, 20, 60, 60), fill=(200, 30, 30))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG")
    return buffer.getvalue()


def _uploads(count: int, prefix: str = "batch/") -> list[Upload]:
    return [Upload(f"{prefix}img-{i:03d}.jpg", _jpeg(i)) for i in range(count)]


def _run(
    count: int = 12, *, faults=(), overrides=None, behaviour=None, annotations=None, setup=None, **options
):
    config = emulated_config(overrides)
    # A run must stay within the history its settings were validated for (Step Functions fails an
    # execution at 25,000 events; the settings refuse what could get there).
    options.setdefault("control", ControlPlane(history_event_limit=config.worst_case_history_events))
    opts = EmulationOptions(
        faults=tuple(faults),
        behaviour=behaviour or ModelBehaviour(),
        annotations=annotations or Annotations(),
        processor_log=io.StringIO(),
        **options,
    )
    with EmulatedPipeline(config, opts) as pipeline:
        pipeline.upload(_uploads(count))
        if setup:
            setup(pipeline)
        report = pipeline.run()
        report["_objects"] = pipeline.objects(config.results_prefix)
        report["_errors"] = {k: json.loads(v) for k, v in pipeline.objects(config.errors_prefix).items()}
    return report


def _assert_safe_end(report, *, model_may_run: bool = False):
    """Cost safety: whatever happened, nothing is left on and nothing is lost."""
    if not model_may_run:
        assert report["model"]["finalStatus"] not in ("RUNNING", "STARTING")
    assert report["mapping"]["finalState"] == "Disabled"
    assert report["lostImages"] == []
    assert sum(report["imagesByOutcome"].values()) == report["imagesUploaded"]
    assert all(e["status"] != "RUNNING" for e in report["executions"])


def test_images_in_one_result_per_image_model_stopped_mapping_disabled():
    annotations = Annotations()
    labelled = _jpeg(0)
    annotations.add(
        labelled, [Annotation("apple", 97.5, {"Width": 0.25, "Height": 0.33, "Left": 0.125, "Top": 0.1})]
    )
    report = _run(12, annotations=annotations)

    assert report["imagesUploaded"] == 12
    assert report["resultsWritten"] == 12
    assert report["errorRecords"] == 0
    assert report["imagesByOutcome"] == {"result": 12}
    assert report["queue"] == {"visible": 0, "inFlight": 0, "delayed": 0}
    assert report["deadLetterQueue"] == {"visible": 0, "inFlight": 0, "delayed": 0}
    assert report["model"]["finalStatus"] == "STOPPED"
    assert report["mapping"]["finalState"] == "Disabled"
    [execution] = report["executions"]
    assert execution["status"] == "SUCCEEDED"
    [record] = [item["record"] for item in report["runRecords"]]
    assert (record["outcome"], record["imagesLabeled"], record["modelStartedByRun"]) == (
        "SUCCEEDED",
        12,
        True,
    )
    assert [n["subject"] for n in report["notifications"]] == ["Custom Labels batch run SUCCEEDED"]
    # The one annotated image gets its label and box; the rest get none (never invented).
    result = json.loads(report["_objects"]["results/batch/img-000.jpg.json"])
    assert result["customLabels"] == [
        {
            "Name": "apple",
            "Confidence": 97.5,
            "Geometry": {"BoundingBox": {"Width": 0.25, "Height": 0.33, "Left": 0.125, "Top": 0.1}},
        }
    ]
    assert json.loads(report["_objects"]["results/batch/img-001.jpg.json"])["customLabels"] == []
    # Default settings: the mapping's Enabling (15 s in the emulator) seen at 5 s polls, then two
    # empty counts to confirm; with nothing left to receive (the 12 are in flight as the mapping
    # reports Enabled), the drain counts every 5 s instead of every 30 s; the model is stopped at the
    # first look after the disable, the mapping still Disabling and the queue still empty: the model
    # runs 15 + 5 + 5 + 5 = 30 s for 12 images (90 s at 30 s polls, 40 s waiting for Disabled).
    assert report["model"]["runningSeconds"] == pytest.approx(30, abs=1)
    assert report["model"]["calls"]["StartProjectVersion"] == 1
    assert report["model"]["calls"]["StopProjectVersion"] == 1


def _only_record(report) -> dict:
    [item] = report["runRecords"]
    record = item["record"]
    assert record["recordLocation"] == f"s3://customlabels-batch-emulated/{item['key']}"
    assert item["key"] == f"runs/{record['startedAt'].replace(':', '-')}_{record['executionName']}.json"
    return record


def test_run_record_of_a_successful_run_matches_what_happened():
    def setup(pipeline):
        pipeline.upload([Upload("bad/corrupt.jpg", b"\xff\xd8\xff\xe0" + b"garbage" * 50)])

    config = emulated_config()
    report = _run(12, setup=setup)
    record = _only_record(report)
    [execution] = report["executions"]

    assert record["outcome"] == "SUCCEEDED"
    assert record["trigger"] == "schedule"
    assert record["execution"].endswith(f":{execution['name']}")
    # Counted from the processor's metrics (EMF), so they must equal what is in the bucket.
    assert record["imagesLabeled"] == report["resultsWritten"] == 12
    assert record["errorRecords"] == report["errorRecords"] == 1
    assert record["messagesLeftInQueue"] == 0
    assert record["deadLetterQueueMessages"] == 0
    # The model's minutes: from the poll that saw RUNNING to the stop request, so at most one poll
    # short of what the emulated model billed.
    billed_seconds = report["model"]["runningSeconds"]
    # (The record rounds minutes to two places: 0.005 min is 0.3 s.)
    assert 0 < record["modelRunningMinutes"] * 60 <= billed_seconds + 0.3
    assert billed_seconds - record["modelRunningMinutes"] * 60 <= config.model_poll_seconds
    assert record["inferenceUnits"] == 1
    assert record["maxInferenceUnits"] is None
    # From the unrounded minutes: up to 0.005 min x $4/h apart from the rounded ones.
    assert record["estimatedCostUsd"] == pytest.approx(record["modelRunningMinutes"] / 60 * 4.00, abs=4e-4)
    assert record["durationSeconds"] == pytest.approx(
        execution["stoppedAtSeconds"] - execution["startedAtSeconds"], abs=2
    )
    assert record["modelStartedByRun"] is True
    assert "error" not in record and "problems" not in record
    # The SNS summary is the record.
    assert report["notifications"][0]["message"] == record


def test_run_record_of_a_failed_run_says_why_and_costs_nothing():
    report = _run(5, faults=["model-start-failure"])
    record = _only_record(report)
    assert record["outcome"] == "FAILED"
    assert record["reason"] == "the model went FAILED after this run started it"
    assert record["modelStartedByRun"] is True
    assert record["modelRunningFrom"] is None
    assert record["modelRunningMinutes"] == 0
    assert record["estimatedCostUsd"] == 0
    assert record["imagesLabeled"] == 0
    assert record["errorRecords"] == 0
    # The five images wait in the queue for the next run (S3's test event never reaches it).
    assert record["messagesLeftInQueue"] == 5
    assert record["deadLetterQueueMessages"] == 0
    assert [n["message"] for n in report["notifications"]] == [record]
    assert [n["subject"] for n in report["notifications"]] == ["Custom Labels batch run FAILED"]


def test_run_record_counts_the_dead_letter_queue():
    def setup(pipeline):
        pipeline.sqs.send_message(QueueUrl=pipeline.dlq_url, MessageBody='{"Records": []}')

    report = _run(12, setup=setup)
    record = _only_record(report)
    # The message was there before the run: the run added nothing to the DLQ and did its job.
    assert (record["outcome"], record["deadLetterQueueGrowth"]) == ("SUCCEEDED", 0)
    assert record["deadLetterQueueMessages"] == report["deadLetterQueue"]["visible"] == 1
    assert record["imagesLabeled"] == report["resultsWritten"]


def test_clean_up_run_records_which_run_it_cleaned_up_after():
    report = _run(40, faults=["abort-during-drain"])
    aborted = report["executions"][0]
    record = _only_record(report)  # the aborted run never reached its recorder
    assert record["outcome"] == "CLEANED_UP"
    assert record["trigger"] == "cleanup"
    assert record["cleanupOf"] == {"execution": aborted["executionArn"], "status": "ABORTED"}
    # A clean-up proves what it turned off.
    assert record["turnedOff"] == ["mapping (was Enabled)", "model (was RUNNING)"]
    assert (record["modelStatusAtEnd"], record["mappingStateAtEnd"]) == ("STOPPING", "Disabled")


def test_a_failing_recorder_still_sends_the_summary_and_stops_the_model():
    def setup(pipeline):
        def broken(event):
            raise RuntimeError("emulated recorder failure")

        pipeline.emulation.functions["run-recorder"] = broken

    report = _run(4, setup=setup)
    _assert_safe_end(report)
    assert report["runRecords"] == []
    [execution] = report["executions"]
    assert execution["status"] == "SUCCEEDED"
    [notification] = report["notifications"]
    assert notification["subject"] == "Custom Labels batch run SUCCEEDED"
    summary = notification["message"]
    assert summary["outcome"] == "SUCCEEDED"
    # From the poll that saw RUNNING to the stop request: at most a model poll short of the bill.
    billed = report["model"]["runningSeconds"]
    assert billed - emulated_config().model_poll_seconds <= summary["modelRunningSeconds"] <= billed
    assert "emulated recorder failure" in summary["recordError"]["Cause"]


def test_empty_queue_never_starts_the_model():
    report = _run(0)
    [execution] = report["executions"]
    assert execution["status"] == "SUCCEEDED"
    assert report["runRecords"] == []
    assert report["model"]["calls"].get("StartProjectVersion", 0) == 0
    assert report["model"]["runningSeconds"] == 0
    assert report["notifications"] == []


def test_images_arriving_during_the_drain_are_processed_in_the_same_run():
    def setup(pipeline):
        pipeline.upload_when(lambda p: p.mapping_state() == "Enabled", _uploads(8, prefix="late/"))

    report = _run(6, setup=setup)
    assert report["imagesUploaded"] == 14
    assert report["resultsWritten"] == 14
    assert len(report["executions"]) == 1
    assert report["model"]["calls"]["StartProjectVersion"] == 1
    _assert_safe_end(report)


ARRIVALS = {
    # As the run asks for the mapping to be disabled: in the queue's counts at the run's next look.
    "as-the-mapping-disables": lambda p: p.mapping_state() == "Disabling",
    # After the model was told to stop, the mapping still Disabling.
    "after-the-stop": lambda p: p.mapping_state() == "Disabling" and p.model.status() == "STOPPING",
}


@pytest.mark.parametrize("arrival", sorted(ARRIVALS))
@pytest.mark.parametrize("polls", [True, False], ids=["polls-while-disabling", "stops-at-disabling"])
def test_an_image_arriving_as_the_run_ends_is_labeled_now_or_by_the_next_run(polls, arrival):
    """The model is stopped while the mapping is still Disabling, once the queue is seen empty.
    Whether a Disabling mapping still takes batches AWS does not say. Either way an image uploaded
    as the run ends is not lost and not retried in a loop: the run labels it when its mapping still
    takes it before the stop, else it waits in the queue (after at most one receive that the
    stopping model refused) and the next run labels it."""
    config = emulated_config()
    # A minute of Disabling: the emulator's driver, which uploads, looks every 10 s.
    control = ControlPlane(
        history_event_limit=config.worst_case_history_events,
        poll_while_disabling=polls,
        mapping_transition_seconds=60,
    )
    options = EmulationOptions(control=control, processor_log=io.StringIO())
    with EmulatedPipeline(config, options) as pipeline:
        pipeline.upload(_uploads(12))
        pipeline.upload_when(ARRIVALS[arrival], _uploads(1, prefix="late/"))
        first = pipeline.run()
        next_run = pipeline.run()
    _assert_safe_end(first)
    if polls and arrival == "as-the-mapping-disables":
        # A race, as on AWS: labeled if the run's look counts it before the stop, else it waits.
        assert first["imagesByOutcome"] in ({"result": 13}, {"result": 12, "queued": 1})
    else:
        assert first["imagesByOutcome"] == {"result": 12, "queued": 1}
    labeled_now = first["imagesByOutcome"] == {"result": 13}
    # A receive the stopping model refused keeps the image away for longer than the minute of
    # Disabling: one at most, and none when the Disabling mapping takes no batches.
    refused = options.processor_log.getvalue().count("The model is not running; the message waits")
    assert refused == (0 if labeled_now or not polls else 1)
    assert _only_record(first)["outcome"] == "SUCCEEDED"
    assert first["executions"][0]["status"] == "SUCCEEDED"
    assert first["model"]["calls"]["StopProjectVersion"] == 1
    _assert_safe_end(next_run)
    assert next_run["imagesByOutcome"] == {"result": 13}
    assert sum(next_run["deadLetterQueue"].values()) == 0
    if not labeled_now:
        assert next_run["model"]["calls"]["StartProjectVersion"] == 2


# What each fault must end as: the first run's status, the outcome its notification names, and the
# number of images (the faults that act mid-drain need a drain long enough to act in).
FAULT_ENDS = {
    "model-start-failure": ("FAILED", "FAILED", 12),
    "model-start-timeout": ("FAILED", "FAILED", 12),
    "throttling-storm": ("SUCCEEDED", "SUCCEEDED", 12),
    # The poison image has no result: the run did not do its whole job.
    "processor-crash": ("FAILED", "INCOMPLETE (1 in the DLQ)", 12),
    "abort-during-drain": ("ABORTED", "CLEANED_UP", 12),
    "model-stopped-externally": ("FAILED", "FAILED", 400),
    "mapping-disabled-externally": ("FAILED", "FAILED", 400),
    "model-deleted": ("FAILED", "MODEL_NOT_STARTABLE", 12),
    "stop-denied": ("FAILED", "FAILED: STILL ON model RUNNING", 12),
    "mapping-stuck-transitioning": ("FAILED", "FAILED", 12),
    "abort-while-enabling": ("ABORTED", "CLEANED_UP", 12),
    "duplicate-trigger": ("SUCCEEDED", "SUCCEEDED", 12),
    "guard-lag": ("SUCCEEDED", "SUCCEEDED", 12),
    "model-started-externally": ("SUCCEEDED", "SUCCEEDED", 12),
    "output-write-denied": ("FAILED", "STALLED", 12),
    "model-access-denied": ("FAILED", "STALLED", 12),
    "slow-calls": ("SUCCEEDED", "SUCCEEDED", 12),
    "object-deleted-before-processing": ("SUCCEEDED", "SUCCEEDED", 12),
}


# A clean-up that cannot succeed retries for its whole timeout: a short one keeps those tests quick.
SHORT_CLEAN_UP = {"cleanUpTimeoutSeconds": 120}


def test_every_fault_has_an_expected_end():
    assert FAULT_ENDS.keys() == FAULTS.keys()


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_every_fault_ends_safe_named_and_with_nothing_lost(fault):
    status, outcome, images = FAULT_ENDS[fault]
    overrides = SHORT_CLEAN_UP if fault == "stop-denied" else {}
    report = _run(images, faults=[fault], overrides=overrides)
    config = emulated_config(overrides)
    assert report["faultsNotInjected"] == {}  # the fault did happen
    # Model off (stop-denied: it cannot be), mapping Disabled, every image a result, an error
    # record, queued or in the DLQ.
    _assert_safe_end(report, model_may_run=fault == "stop-denied")
    assert report["executions"][0]["status"] == status
    # Named: the first notification says what happened; never SUCCEEDED when something went wrong.
    subjects = [n["subject"] for n in report["notifications"]]
    assert subjects[0] == f"Custom Labels batch run {outcome}"
    if status != "SUCCEEDED":
        assert "Custom Labels batch run SUCCEEDED" not in subjects
    # No RUNNING model held with nothing labeled for longer than the stall time plus one poll
    # (stop-denied's model cannot be stopped: its runs fail loudly instead).
    if fault != "stop-denied":
        limit = config.stall_seconds + max(config.drain_poll_seconds, config.mapping_poll_seconds)
        assert report["model"]["longestIdleRunningSeconds"] <= limit


def test_model_start_failure_fails_the_run_and_leaves_the_queue_intact():
    report = _run(5, faults=["model-start-failure"])
    first = report["executions"][0]
    assert first["status"] == "FAILED"
    assert first["error"] == "BatchRun.FAILED"
    assert "the model went FAILED after this run started it" in json.dumps(report["notifications"])
    assert report["imagesByOutcome"] == {"queued": 5}
    assert report["model"]["runningSeconds"] == 0


def test_model_start_timeout_stops_the_starting_model():
    report = _run(3, faults=["model-start-timeout"], overrides={"modelStartTimeoutSeconds": 600})
    first = report["executions"][0]
    assert first["status"] == "FAILED"
    assert "the model was still STARTING after 600 s" in json.dumps(report["notifications"])
    assert report["model"]["finalStatus"] == "STOPPED"
    assert report["model"]["calls"]["StopProjectVersion"] == 1
    assert report["imagesByOutcome"] == {"queued": 3}


def test_aborted_run_is_cleaned_up_by_the_status_change_rule():
    report = _run(40, faults=["abort-during-drain"])
    aborted, cleanup = report["executions"][:2]
    assert aborted["status"] == "ABORTED"
    assert cleanup["input"]["cleanup"]["status"] == "ABORTED"
    assert cleanup["status"] == "SUCCEEDED"
    assert report["model"]["finalStatus"] == "STOPPED"
    assert report["model"]["calls"]["StopProjectVersion"] == 1
    assert [n["subject"] for n in report["notifications"]] == ["Custom Labels batch run CLEANED_UP"]
    _assert_safe_end(report)


def _accepted_calls(report: dict) -> int:
    """DetectCustomLabels calls the model took (the processors start at a whole batch in flight, so
    the first calls of a run may be throttled; a throttled call costs nothing)."""
    calls = report["model"]["calls"]
    return calls["DetectCustomLabels"] - calls.get("Throttled", 0)


def test_a_poison_image_alone_goes_to_the_dlq_and_its_batch_mates_are_labeled():
    config = emulated_config()
    report = _run(12, faults=["processor-crash"])
    # It killed its invocation twice (first delivered, then retried); on its third delivery it was
    # moved to the DLQ without another attempt.
    assert report["processor"]["invocationErrors"] == 2
    assert report["imagesByOutcome"] == {"result": 11, "dead-letter-queue": 1}
    assert report["deadLetterQueue"]["visible"] == 1
    assert _accepted_calls(report) == 11  # none for the poison image after it was moved
    # The crashed batches came back after the invocation's timeout and a grace period, not after
    # the queue's visibility timeout: billed no more than the images' minimum and the stall time.
    clean = _run(11)
    assert report["model"]["runningSeconds"] <= clean["model"]["runningSeconds"] + config.stall_seconds
    record = _only_record(report)
    assert (record["outcome"], record["deadLetterQueueGrowth"]) == ("INCOMPLETE", 1)
    assert record["deadLetterQueueMessages"] == 1
    assert report["executions"][0]["error"] == "BatchRun.INCOMPLETE"
    assert report["executions"][0]["cause"] == record["reason"]


def test_calls_slower_than_a_batch_fits_in_the_timeout_one_after_another_run_side_by_side():
    report = _run(12, faults=["slow-calls"])
    assert report["imagesByOutcome"] == {"result": 12}
    # Each call takes 40 % of the timeout: the window keeps a batch's calls in flight together, and
    # none is cut off by the timeout or left over by the time budget.
    assert "timeouts" not in report["processor"]
    assert report["processor"]["itemFailures"] == 0
    assert _accepted_calls(report) == 12


def test_an_invocation_is_cut_off_at_its_timeout_and_a_message_that_never_ends_goes_to_the_dlq():
    # One call takes longer than the function's whole timeout: nothing can finish.
    config = emulated_config()
    report = _run(
        3, behaviour=ModelBehaviour(latency_seconds=config.processor_timeout_seconds + 10, latency_spread=0)
    )
    assert report["processor"]["timeouts"] == 2
    assert (
        f"Task timed out after {config.processor_timeout_seconds} seconds"
        in report["processor"]["pollerErrors"]
    )
    assert report["resultsWritten"] == 0
    # The three were attempted together; their invocation died twice (first delivery, then
    # retried), and on the third delivery each was moved to the DLQ without another attempt.
    assert report["imagesByOutcome"] == {"dead-letter-queue": 3}
    assert _accepted_calls(report) == 6
    record = _only_record(report)
    assert (record["deadLetterQueueMessages"], record["deadLetterQueueGrowth"]) == (3, 3)
    assert record["outcome"] == "INCOMPLETE"
    _assert_safe_end(report)


@pytest.mark.parametrize("fault", ["output-write-denied", "model-access-denied"])
def test_a_misconfigured_pipeline_stops_paying_and_keeps_every_image_queued(fault):
    """Denied writes or model access: at most one model call per image (the calls each environment
    had in flight when the first was refused), the run stalls and stops the model, and no message
    burns its receives on the way to the DLQ."""
    report = _run(12, faults=[fault])
    calls = report["model"]["calls"]
    assert calls.get("DetectCustomLabels", 0) - calls.get("Throttled", 0) <= 12
    assert report["imagesByOutcome"] == {"queued": 12}
    assert report["executions"][0]["error"] == "BatchRun.STALLED"
    assert report["model"]["runningSeconds"] <= emulated_config().stall_seconds + 30


def test_a_copied_model_is_startable():
    report = _run(4, setup=lambda pipeline: pipeline.model.set_status("COPYING_COMPLETED"))
    assert _only_record(report)["outcome"] == "SUCCEEDED"
    assert report["model"]["calls"]["StartProjectVersion"] == 1
    assert report["resultsWritten"] == 4


def test_an_expired_model_is_reported_once_a_day_not_failed_every_hour():
    config = emulated_config()
    with EmulatedPipeline(config, EmulationOptions(processor_log=io.StringIO())) as pipeline:
        pipeline.model.set_status("EXPIRED")
        pipeline.upload(_uploads(3))
        first = pipeline.run()
        hour_later = pipeline.run()
        with pipeline.clock.actor():
            pipeline.clock.sleep(86400)
        day_later = pipeline.run()
    assert [n["subject"] for n in first["notifications"]] == ["Custom Labels batch run MODEL_NOT_STARTABLE"]
    assert first["executions"][0]["error"] == "BatchRun.MODEL_NOT_STARTABLE"
    # The next hour's run says nothing, touches nothing and is not a failure to clean up after.
    assert hour_later["notifications"] == []
    assert hour_later["executions"][-1]["status"] == "SUCCEEDED"
    assert [n["subject"] for n in day_later["notifications"]] == [
        "Custom Labels batch run MODEL_NOT_STARTABLE"
    ]
    assert day_later["imagesByOutcome"] == {"queued": 3}
    assert day_later["model"]["calls"].get("StartProjectVersion", 0) == 0


@pytest.mark.parametrize("refused_seconds", [0, 1200])
def test_a_starting_model_is_stopped_even_if_stop_is_refused_for_a_while(refused_seconds):
    """AWS allows stopping a STARTING model; if it refused for a while, the clean-up retries."""
    config = emulated_config({"modelStartTimeoutSeconds": 600})
    report = _run(
        3,
        faults=["model-start-timeout"],
        overrides={"modelStartTimeoutSeconds": 600},
        control=ControlPlane(
            stop_refused_while_starting_seconds=refused_seconds,
            history_event_limit=config.worst_case_history_events,
        ),
    )
    _assert_safe_end(report)
    record = _only_record(report)
    assert record["outcome"] == "FAILED"
    assert report["model"]["finalStatus"] == "STOPPED"
    refusals = report["model"]["calls"]["StopProjectVersion"] - 1
    assert (refusals > 0) == (refused_seconds > 0)


@pytest.mark.parametrize("fault", ["duplicate-trigger", "guard-lag"])
def test_one_run_at_a_time_under_duplicate_triggers_and_a_lagging_listing(fault):
    report = _run(12, faults=[fault])
    assert [e["status"] for e in report["executions"]] == ["SUCCEEDED", "SUCCEEDED"]
    # Whichever lost the race for the lease (two at the same instant) touched nothing.
    paths = [e["statePath"] for e in report["executions"]]
    assert paths.count(["WhatStartedTheRun", "StartRun", "TakeLease", "AnotherRunIsActive"]) == 1
    assert report["model"]["calls"]["StartProjectVersion"] == 1
    assert len(report["runRecords"]) == 1


def test_a_model_started_by_someone_else_is_used_and_recorded_with_its_units():
    report = _run(12, faults=["model-started-externally"])
    record = _only_record(report)
    assert (record["outcome"], record["modelStartedByRun"], record["inferenceUnits"]) == (
        "SUCCEEDED",
        False,
        4,
    )
    assert report["model"]["calls"].get("StartProjectVersion", 0) == 0
    assert record["estimatedCostUsd"] == pytest.approx(record["modelRunningMinutes"] / 60 * 4 * 4.0, abs=1e-3)
    # Enough calls in flight for the units it has.
    assert report["mapping"]["maximumConcurrency"] == 4 * CONCURRENCY_PER_INFERENCE_UNIT


def test_an_explicit_max_concurrency_is_kept_whatever_the_units():
    report = _run(12, faults=["model-started-externally"], overrides={"maxConcurrency": 5})
    assert report["mapping"]["maximumConcurrency"] == 5


def test_throttling_storm_retries_without_losing_images():
    report = _run(12, faults=["throttling-storm"])
    assert report["model"]["calls"]["Throttled"] > 0
    assert report["resultsWritten"] == 12
    # Throttle retries stop at the time budget: no invocation runs into its timeout.
    assert "timeouts" not in report["processor"]
    assert report["deadLetterQueue"]["visible"] == 0


def test_leftover_running_model_is_stopped_by_an_idle_run():
    def setup(pipeline):
        # A broken run left the model RUNNING with the mapping disabled and nothing queued.
        pipeline.model.start(1)

    report = _run(0, behaviour=ModelBehaviour(start_seconds=0), setup=setup)
    [execution] = report["executions"]
    assert execution["status"] == "SUCCEEDED"
    assert report["model"]["calls"]["StopProjectVersion"] == 1
    [record] = [item["record"] for item in report["runRecords"]]
    assert (record["outcome"], record["turnedOff"]) == ("CLEANED_UP", ["model (was RUNNING)"])
    assert record["reason"] == "nothing queued, but left on: model RUNNING, mapping Disabled"
    assert report["model"]["finalStatus"] == "STOPPED"
    assert [n["subject"] for n in report["notifications"]] == ["Custom Labels batch run CLEANED_UP"]


def test_a_second_execution_while_one_runs_touches_nothing():
    def setup(pipeline):
        pipeline.start_execution({"trigger": "manual"})

    report = _run(4, setup=setup)
    assert [e["status"] for e in report["executions"]] == ["SUCCEEDED", "SUCCEEDED"]
    # Only one of them started the model, labeled the images and reported.
    assert report["model"]["calls"]["StartProjectVersion"] == 1
    assert report["resultsWritten"] == 4
    assert len(report["runRecords"]) == 1
    assert [n["subject"] for n in report["notifications"]] == ["Custom Labels batch run SUCCEEDED"]
    assert report["model"]["calls"]["StartProjectVersion"] == 1
    assert report["resultsWritten"] == 4


def test_bad_inputs_end_as_error_records():
    def setup(pipeline):
        pipeline.upload(
            [
                Upload("bad/corrupt.jpg", b"\xff\xd8\xff\xe0" + b"garbage" * 50),
                Upload("bad/notes.txt", b"not an image"),
                Upload("bad/tiny.png", _png((32, 32))),
            ]
        )

    report = _run(2, setup=setup)
    assert report["imagesByOutcome"] == {"result": 2, "error-record": 3}
    _assert_safe_end(report)


# Files the model could never take: an error record each, from the triage, without the model.
LONG_KEY = "long/" + "k" * (1024 - len("incoming/long/") - len(".jpg")) + ".jpg"  # 1,024 bytes with prefix
UNUSABLE = [
    Upload("bad/notes.txt", b"not an image"),
    Upload("photos/", b""),  # the console's "create folder": no record at all
    Upload("bad/huge.jpg", b"\xff\xd8" + b"\0" * (16 * 1024 * 1024)),
    Upload(LONG_KEY, _jpeg(1)),
]


def test_a_batch_only_of_files_the_model_cannot_take_never_starts_the_model():
    report = _run(0, setup=lambda pipeline: pipeline.upload(UNUSABLE))

    assert report["imagesByOutcome"] == {"error-record": 3, "skipped-folder-marker": 1}
    errors = {key for key in report["_errors"] if not key.startswith("errors/_long-keys/")}
    assert errors == {"errors/bad/notes.txt.json", "errors/bad/huge.jpg.json"}
    [long_key_record] = [r for k, r in report["_errors"].items() if k.startswith("errors/_long-keys/")]
    assert (long_key_record["errorCode"], long_key_record["source"]["key"]) == (
        "KeyTooLong",
        f"incoming/{LONG_KEY}",
    )
    assert report["_errors"]["errors/bad/huge.jpg.json"]["errorCode"] == "ImageTooLarge"
    assert report["triage"] == {
        "invocations": 4,
        "retries": 0,
        "sentToFailureQueue": 0,
        "queued": 0,
        "errorRecords": 3,
        "skipped": 1,
        "failureQueue": {"visible": 0, "inFlight": 0, "delayed": 0},
    }
    # Nothing was queued, so the run is an empty-queue run: the model is never started.
    assert report["queue"] == {"visible": 0, "inFlight": 0, "delayed": 0}
    assert "StartProjectVersion" not in report["model"]["calls"]
    assert report["model"]["runningSeconds"] == 0
    [execution] = report["executions"]
    assert execution["status"] == "SUCCEEDED"
    assert (report["runRecords"], report["notifications"]) == ([], [])
    _assert_safe_end(report)


def test_a_mixed_batch_labels_the_images_and_records_the_rest_with_one_model_start():
    report = _run(6, setup=lambda pipeline: pipeline.upload(UNUSABLE))

    assert report["imagesByOutcome"] == {"result": 6, "error-record": 3, "skipped-folder-marker": 1}
    assert report["triage"]["queued"] == 6
    assert report["model"]["calls"]["StartProjectVersion"] == 1
    assert _accepted_calls(report) == 6  # none for the files it cannot take
    [record] = [item["record"] for item in report["runRecords"]]
    assert (record["outcome"], record["imagesLabeled"]) == ("SUCCEEDED", 6)
    _assert_safe_end(report)


# A failed invocation has no metrics to publish.
@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
def test_an_upload_the_triage_fails_on_is_retried_then_kept_in_the_failure_queue():
    # Every PutObject of the pipeline's is denied: the triage cannot write the text file's record.
    report = _run(
        0, faults=["output-write-denied"], setup=lambda p: p.upload([Upload("bad/notes.txt", b"text")])
    )

    assert report["imagesByOutcome"] == {"triage-failure-queue": 1}
    assert report["triage"] | {"failureQueue": None} == {
        "invocations": 3,
        "retries": 2,
        "sentToFailureQueue": 1,
        "queued": 0,
        "errorRecords": 0,
        "skipped": 0,
        "failureQueue": None,
    }
    assert report["triage"]["failureQueue"]["visible"] == 1
    assert "StartProjectVersion" not in report["model"]["calls"]
    _assert_safe_end(report)


def _png(size) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buffer, "PNG")
    return buffer.getvalue()


def test_billed_time_does_not_depend_on_the_time_scale():
    fast = _run(30, time_scale=math.inf)
    slow = _run(30, time_scale=4000)
    assert fast["model"]["runningSeconds"] == pytest.approx(slow["model"]["runningSeconds"], rel=0.05)
    assert fast["durations"]["emulatedSeconds"] == pytest.approx(
        slow["durations"]["emulatedSeconds"], rel=0.05
    )
    assert slow["durations"]["timeScale"] == 4000


def test_another_definition_runs_with_the_same_substitutions(tmp_path):
    definition = tmp_path / "custom.asl.json"
    definition.write_text(
        json.dumps(
            {
                "StartAt": "CountQueuedImages",
                "States": {
                    "CountQueuedImages": {
                        "Type": "Task",
                        "Resource": "arn:aws:states:::aws-sdk:sqs:getQueueAttributes",
                        "Parameters": {
                            "QueueUrl": "${QueueUrl}",
                            "AttributeNames": ["ApproximateNumberOfMessages"],
                        },
                        "ResultSelector": {
                            "visible.$": "States.StringToJson($.Attributes.ApproximateNumberOfMessages)"
                        },
                        "End": True,
                    }
                },
            }
        )
    )
    report = _run(3, definition=definition)
    [execution] = report["executions"]
    assert execution["status"] == "SUCCEEDED"
    assert execution["statePath"] == ["CountQueuedImages"]
    assert report["model"]["calls"].get("StartProjectVersion", 0) == 0


def test_unknown_placeholder_in_a_definition_is_reported(tmp_path):
    definition = tmp_path / "bad.asl.json"
    definition.write_text(
        '{"StartAt": "A", "States": {"A": {"Type": "Pass", "Result": "${NoSuchThing}", "End": true}}}'
    )
    with pytest.raises(ValueError, match="NoSuchThing"):
        _run(0, definition=definition)


@pytest.mark.parametrize("stale_seconds", [0, 60])
def test_approximate_queue_counts_delay_the_end_of_a_drain_but_lose_nothing(stale_seconds):
    """AWS calls the queue's counts approximate and gives no figure: a run on counts up to a minute
    old still labels every image and turns everything off; it pays for at most the staleness more
    (the counts it ends on are late, never early: nothing arrives during this drain)."""
    config = emulated_config()
    control = ControlPlane(
        history_event_limit=config.worst_case_history_events, queue_counts_stale_seconds=stale_seconds
    )
    report = _run(40, control=control)
    _assert_safe_end(report)
    assert report["imagesByOutcome"] == {"result": 40}
    assert report["executions"][0]["status"] == "SUCCEEDED"
    assert report["settings"]["controlPlane"]["queueCountsStaleSeconds"] == stale_seconds
    exact = _run(40)["model"]["runningSeconds"]
    assert exact <= report["model"]["runningSeconds"] <= exact + stale_seconds + config.drain_poll_seconds


def test_a_fault_that_never_came_is_reported_not_dropped():
    # The model fails to start, so the mapping is never enabled and nothing aborts the run there.
    report = _run(3, faults=["model-start-failure", "abort-while-enabling"])
    assert report["faultsNotInjected"] == {"abort-while-enabling": "the run ended before it came"}
    assert report["executions"][0]["status"] == "FAILED"
    _assert_safe_end(report)
