"""The emulated model is as uncertain as AWS's: call latency with a tail, throttled calls that take a
round trip, auto-scaling by an explicit policy, billing as units in service over RUNNING time."""

from __future__ import annotations

import statistics

import pytest

from customlabels_batch.bench.__main__ import _image
from customlabels_batch.emulator.clock import VirtualClock
from customlabels_batch.emulator.custom_labels import AutoScaling, EmulatedModel, ModelBehaviour, ModelError

PROJECT = "arn:aws:rekognition:us-east-1:123456789012:project/p/1700000000000"
VERSION = "arn:aws:rekognition:us-east-1:123456789012:project/p/version/p.v1/1700000000001"


@pytest.fixture
def clock():
    clock = VirtualClock()
    with clock.actor():  # this test is the only actor: its sleeps move emulated time
        yield clock
    clock.stop()


def running_model(
    clock: VirtualClock, units: int = 1, max_units: int | None = None, **behaviour
) -> EmulatedModel:
    model = EmulatedModel(
        clock=clock,
        project_arn=PROJECT,
        version_arn=VERSION,
        behaviour=ModelBehaviour(start_seconds=0, **behaviour),
    )
    model.start(units, max_units)
    assert model.status() == "RUNNING"
    return model


def call(model: EmulatedModel) -> float:
    """One DetectCustomLabels call; its duration in emulated seconds (negative if throttled)."""
    started = model.clock.now()
    try:
        model.detect(IMAGE, min_confidence=None, max_results=None)
    except ModelError as error:
        assert error.code == "ProvisionedThroughputExceededException"
        return -(model.clock.now() - started)
    return model.clock.now() - started


IMAGE = _image()  # a valid JPEG


def test_call_latency_has_a_log_normal_tail_around_its_median(clock):
    model = running_model(clock, tps_per_inference_unit=1e6, latency_seconds=0.4, latency_spread=0.35)
    durations = sorted(call(model) for _ in range(2000))
    assert statistics.median(durations) == pytest.approx(0.4, rel=0.05)
    # p95 of a log-normal: median x e^(1.645 sigma) = 1.78 x the median.
    assert durations[int(0.95 * len(durations))] == pytest.approx(0.4 * 1.78, rel=0.1)


def test_without_spread_every_call_takes_the_median(clock):
    model = running_model(clock, tps_per_inference_unit=1e6, latency_seconds=0.4, latency_spread=0)
    assert {round(call(model), 9) for _ in range(50)} == {0.4}


def test_a_throttled_call_takes_a_round_trip_and_is_counted(clock):
    model = running_model(
        clock, tps_per_inference_unit=1, latency_seconds=0, throttle_round_trip_seconds=0.05
    )
    assert call(model) == 0  # the bucket starts with one second's worth
    assert call(model) == pytest.approx(-0.05)
    assert model.calls["Throttled"] == 1


@pytest.mark.parametrize(("burst_seconds", "taken"), [(1.0, 2), (3.0, 6)])
def test_after_a_pause_the_model_takes_burst_seconds_of_capacity_at_once(clock, burst_seconds, taken):
    # AWS documents no burst: by default one second's worth (a pause loses capacity for good), as
    # an option more.
    model = running_model(
        clock,
        tps_per_inference_unit=2,
        latency_seconds=0,
        throttle_round_trip_seconds=0,
        burst_seconds=burst_seconds,
    )
    clock.sleep(60)  # a quiet minute refills the bucket
    outcomes = [call(model) >= 0 and model.calls["Throttled"] == 0 for _ in range(taken + 1)]
    assert outcomes == [True] * taken + [False]
    clock.sleep(0.5)  # then it refills at capacity: one call per half second
    assert call(model) == 0 and model.calls["Throttled"] == 1


def test_billing_sums_units_in_service_and_the_metric_adds_up_to_it(clock):
    model = running_model(clock, units=2)
    clock.sleep(90)
    model.stop()  # STOPPING is not billed here (AWS does not say)
    clock.sleep(200)
    assert model.inference_unit_seconds() == pytest.approx(2 * 90)
    points = model.in_service_datapoints(clock.now())
    assert [value for _, value in points] == pytest.approx([2.0, 1.0])  # a minute and a half
    assert sum(value for _, value in points) * 60 == pytest.approx(model.inference_unit_seconds())


def test_the_metric_s_minutes_are_utc_minutes_whatever_second_the_emulation_started(clock):
    # An emulation that started 20 s past a minute: its UTC minutes begin at emulated -20, 40, 100...
    model = running_model(clock, units=2)
    clock.sleep(90)
    model.stop()
    clock.sleep(200)
    points = model.in_service_datapoints(clock.now(), minute_at=-20.0)
    assert [start for start, _ in points] == [-20.0, 40.0]
    assert [value for _, value in points] == pytest.approx([2 * 40 / 60, 2 * 50 / 60])
    assert sum(value for _, value in points) * 60 == pytest.approx(model.inference_unit_seconds())


def test_auto_scaling_adds_a_unit_after_sustained_throttling_and_drops_it_when_idle(clock):
    policy = AutoScaling(
        up_after_minutes=2, throttled_share=0.05, unit_arrival_seconds=120, down_after_idle_minutes=5
    )
    model = running_model(clock, max_units=3, tps_per_inference_unit=2, latency_seconds=0, autoscaling=policy)
    # Twice the capacity of one unit, for four minutes: half the calls are throttled.
    for _ in range(4 * 60 * 4):
        call(model)
        clock.sleep(0.25)
    timeline = model.units_timeline()
    # Throttled through minutes 0 and 1; the unit asked for in minute 2 serves two minutes later.
    assert [units for _, units in timeline] == [1, 2]
    assert 120 + 120 <= timeline[1][0] < 180 + 120
    clock.sleep(5 * 60 + 1)
    assert model.units_in_service() == 1  # idle for five minutes: back to MinInferenceUnits
    billed = model.inference_unit_seconds()
    assert billed == pytest.approx(clock.now() + (model.units_timeline()[2][0] - timeline[1][0]))


def test_without_max_units_nothing_scales(clock):
    model = running_model(clock, tps_per_inference_unit=2, latency_seconds=0)
    for _ in range(4 * 60 * 8):
        call(model)
        clock.sleep(0.125)
    assert model.most_units_in_service() == 1
