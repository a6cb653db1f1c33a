"""Derived settings: concurrency and pacing follow the inference units unless set."""

from __future__ import annotations

import pytest

from stacks.config import ConfigError, PipelineConfig

PROJECT = "arn:aws:rekognition:us-east-1:123456789012:project/p/1700000000000"
VERSION = "arn:aws:rekognition:us-east-1:123456789012:project/p/version/p.v1/1700000000001"


def config(**values) -> PipelineConfig:
    context = {"projectArn": PROJECT, "projectVersionArn": VERSION, **values}
    return PipelineConfig.from_context(context.get)


def test_concurrency_and_pacing_scale_with_inference_units():
    one, four = config(), config(minInferenceUnits="4")
    assert (one.concurrency, four.concurrency) == (3, 12)
    # Each environment's share: units x 5 TPS / environments, the same 1.67 calls a second.
    assert one.processor_environment(bucket="b")["MAX_CALLS_PER_SECOND"] == "1.66667"
    assert four.processor_environment(bucket="b")["MAX_CALLS_PER_SECOND"] == "1.66667"


def test_explicit_concurrency_wins_and_pacing_can_be_turned_off():
    custom = config(maxConcurrency="5", modelTpsPerInferenceUnit="0")
    assert custom.concurrency == 5
    assert "MAX_CALLS_PER_SECOND" not in custom.processor_environment(bucket="b")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"maxConcurrency": "1"}, "maxConcurrency must be 2-1000"),
        ({"modelInServiceAlarmMinutes": "60"}, "modelInServiceAlarmMinutes must be"),
        ({"schedule": "rate(1 hours)"}, "rate(1 hour)"),
        ({"batchSize": "ten"}, "batchSize"),
    ],
)
def test_bad_values_fail_with_a_message_naming_the_setting(values, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config(**values)
