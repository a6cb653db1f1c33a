"""End to end through the emulator: the run sizes the model's units from the backlog, measures what
the model did, and the next run sizes from that measurement."""

from __future__ import annotations

import io
import math

import boto3
import pytest
from test_emulated_pipeline import _jpeg, _run

from customlabels_batch.emulator.custom_labels import ModelBehaviour
from customlabels_batch.emulator.pipeline import EmulatedPipeline, EmulationOptions, Upload, emulated_config
from customlabels_batch.settings import CONCURRENCY_PER_INFERENCE_UNIT

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

TRUE_TPS = 2.0


def _uploads(count: int, prefix: str) -> list[Upload]:
    return [Upload(f"{prefix}/img-{i:04d}.jpg", _jpeg(i)) for i in range(count)]


@pytest.fixture(scope="module")
def two_runs():
    # The first guess is half a call per second per unit; the model does 2.
    config = emulated_config(
        {"targetDrainMinutes": "1", "maxInferenceUnits": "4", "modelTpsPerInferenceUnit": "0.5"}
    )
    options = EmulationOptions(
        behaviour=ModelBehaviour(start_seconds=300, tps_per_inference_unit=TRUE_TPS, latency_seconds=0.4),
        processor_log=io.StringIO(),
    )
    with EmulatedPipeline(config, options) as pipeline:
        pipeline.upload(_uploads(1200, "first"))  # 150 s at 4 units: whole minutes to measure
        first = pipeline.run()
        pipeline.upload(_uploads(120, "second"))
        second = pipeline.run()
    return first, second


def test_the_first_run_sizes_the_units_from_the_backlog_and_the_configured_guess(two_runs):
    first, _ = two_runs
    [record] = [item["record"] for item in first["runRecords"]]
    assert record["outcome"] == "SUCCEEDED" and first["resultsWritten"] == 1200
    # 1200 images in 1 minute at the guessed 0.5 calls/s per unit: 40 units; 4, the most allowed.
    assert record["unitsChosen"]["units"] == 4 and record["inferenceUnits"] == 4
    assert "modelTpsPerInferenceUnit" in record["unitsChosen"]["why"]
    assert first["model"]["inferenceUnits"] == 4
    # Enough environments for every unit the model may have.
    assert first["mapping"]["maximumConcurrency"] == 4 * CONCURRENCY_PER_INFERENCE_UNIT
    assert record["environmentsChosen"] == {
        "perUnit": CONCURRENCY_PER_INFERENCE_UNIT,
        "why": f"{CONCURRENCY_PER_INFERENCE_UNIT} per unit: no run has measured the model yet",
    }


def test_the_run_record_measures_what_the_model_did(two_runs):
    first, _ = two_runs
    [record] = [item["record"] for item in first["runRecords"]]
    model = record["model"]
    assert model["acceptedCalls"] == first["model"]["calls"]["Labeled"] == 1200
    assert model["throttledCalls"] == first["model"]["calls"]["Throttled"] > 0
    # The emulated model's median call is 0.4 s, with a tail.
    assert model["callSecondsP50"] == pytest.approx(0.4, rel=0.15)
    assert model["callSecondsP95"] > model["callSecondsP50"]
    # Measured in whole minutes when it was full: what the processors got from it (at a slow model
    # like this one they keep it full less well; the README's capacity matrix has the figures), and
    # never more than its true capacity but for the one second's burst its meter lets through. Each
    # minute counts the calls made in it (the processor stamps its metrics with the minute), and the
    # units in service in that same UTC minute, whatever second the emulation started at.
    assert not model["capacityIsLowerBound"]
    assert 0.5 * TRUE_TPS <= model["acceptedPerSecondPerUnit"] <= TRUE_TPS * (1 + 1 / 60)
    # Cost from InServiceInferenceUnits, as billed.
    assert model["measuredInferenceUnitMinutes"] == pytest.approx(
        first["model"]["billedInferenceUnitMinutes"], rel=0.02
    )
    assert model["mostUnitsInService"] == 4
    assert model["processorGbSeconds"] > 0 and model["processorCostUsd"] < record["estimatedCostUsd"] / 10


def test_the_next_run_sizes_the_units_from_the_measured_capacity(two_runs):
    first, second = two_runs
    measured = first["runRecords"][0]["record"]["model"]["acceptedPerSecondPerUnit"]
    record = second["runRecords"][-1]["record"]  # the first run's is still there
    assert record["outcome"] == "SUCCEEDED" and second["resultsWritten"] == 1320
    expected = max(1, min(4, math.ceil(120 / (measured * 60))))
    assert record["unitsChosen"]["units"] == record["inferenceUnits"] == expected < 4
    assert "measured by an earlier run" in record["unitsChosen"]["why"]


def test_the_next_run_gives_a_slow_model_fewer_environments_per_unit(two_runs):
    first, second = two_runs
    measured = first["runRecords"][0]["record"]["model"]["acceptedPerSecondPerUnit"]
    record = second["runRecords"][-1]["record"]
    # Each environment's batch of 10 in at most a third of the 60 s timeout: half a call per
    # second each, so a unit that takes 2 calls a second gets 4 environments, not 8; and at least
    # one per call in flight at the p95 latency (2 x 0.7 s here: 2).
    p95 = first["runRecords"][0]["record"]["model"]["callSecondsP95"]
    per_unit = min(
        CONCURRENCY_PER_INFERENCE_UNIT, max(math.ceil(measured * 20 / 10), math.ceil(measured * p95))
    )
    assert per_unit < CONCURRENCY_PER_INFERENCE_UNIT
    assert record["environmentsChosen"]["perUnit"] == per_unit
    assert "measured by an earlier run" in record["environmentsChosen"]["why"]
    assert f"{p95:g} s p95" in record["environmentsChosen"]["why"]
    # For every unit the model may have (maxInferenceUnits is 4).
    assert second["mapping"]["maximumConcurrency"] == 4 * per_unit


@pytest.mark.parametrize(
    ("tps", "p95", "per_unit"),
    [
        (2.0, 0.7, 4),  # a batch in a third of the timeout: 2 calls/s x 20 s / 10
        (2.0, 3.0, 6),  # slow calls: one environment per call in flight at p95, 2 x 3 s
        (9.0, 0.5, CONCURRENCY_PER_INFERENCE_UNIT),  # never more than the first run's
    ],
)
def test_the_next_run_sizes_environments_from_the_measured_rate_and_p95_latency(tps, p95, per_unit):
    def remembered(pipeline):
        # What an earlier run's recorder left beside the progress counter.
        boto3.client("dynamodb", region_name=pipeline.config.region).put_item(
            TableName=pipeline.run_state_table,
            Item={"id": {"S": "progress"}, "tpsPerUnit": {"N": str(tps)}, "callSecondsP95": {"N": str(p95)}},
        )

    report = _run(4, setup=remembered)
    [item] = report["runRecords"]
    chosen = item["record"]["environmentsChosen"]
    assert chosen["perUnit"] == per_unit and report["mapping"]["maximumConcurrency"] == max(2, per_unit)
    assert f"at {tps:g} calls/s per unit and {p95:g} s p95, measured by an earlier run" in chosen["why"]
