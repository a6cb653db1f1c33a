"""The emulator answers the processor's DetectCustomLabels in-process (services.answer_detect_in_process):
the same labels and the same errors, codes and statuses as the HTTP round trip through moto gives."""

from __future__ import annotations

import contextlib
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws
from test_processor import processor_environment

from customlabels_batch.bench.__main__ import _image
from customlabels_batch.emulator import services
from customlabels_batch.emulator.clock import VirtualClock
from customlabels_batch.emulator.control_plane import ControlPlane
from customlabels_batch.emulator.custom_labels import Annotation, Annotations, EmulatedModel, ModelBehaviour
from customlabels_batch.emulator.functions import PROCESSOR, load_handler
from customlabels_batch.emulator.state import Emulation

REGION = "us-east-1"
PROJECT = "arn:aws:rekognition:us-east-1:123456789012:project/p/1700000000000"
VERSION = "arn:aws:rekognition:us-east-1:123456789012:project/p/version/p.v1/1700000000001"
IMAGE = _image()
LABELS = [
    Annotation("rose", 97.25, {"Width": 0.5, "Height": 0.25, "Left": 0.125, "Top": 0.0625}),
    Annotation("tulip", 61.5),
]


@pytest.fixture
def emulation(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    clock = VirtualClock()
    annotations = Annotations()
    annotations.add(IMAGE, LABELS)
    emulation = Emulation(clock=clock, control=ControlPlane())
    model = EmulatedModel(
        clock=clock,
        project_arn=PROJECT,
        version_arn=VERSION,
        annotations=annotations,
        behaviour=ModelBehaviour(start_seconds=0, tps_per_inference_unit=1.0),
    )
    emulation.models[VERSION] = model
    with clock.actor(), mock_aws(), contextlib.ExitStack() as patched:
        for patch in services.patches(emulation):
            patched.enter_context(patch)
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="images")
        s3.put_object(Bucket="images", Key="a.jpg", Body=IMAGE)
        s3.put_object(Bucket="images", Key="broken.jpg", Body=b"\xff\xd8not a jpeg")
        yield emulation
    clock.stop()


def _clients(emulation: Emulation) -> tuple[Any, Any]:
    """The processor's own client answered in-process, and one (two attempts) that goes through moto."""
    processor = load_handler(PROCESSOR, "detect_in_process", processor_environment())
    direct = processor.rekognition_client()
    services.answer_detect_in_process(emulation, direct)
    through_moto = boto3.client(
        "rekognition", config=Config(retries={"mode": "standard", "total_max_attempts": 2})
    )
    services.answer_detect_in_process(emulation, through_moto)  # declined: it would retry
    return direct, through_moto


def _answer(client: Any, **params: Any) -> tuple:
    """What the caller sees: the labels, or the error's code, status and message."""
    request = {"ProjectVersionArn": VERSION, "Image": {"S3Object": {"Bucket": "images", "Name": "a.jpg"}}}
    try:
        return ("labels", client.detect_custom_labels(**(request | params))["CustomLabels"])
    except ClientError as error:
        return (
            "error",
            error.response["Error"]["Code"],
            error.response["ResponseMetadata"]["HTTPStatusCode"],
            error.response["Error"]["Message"],
        )


def test_in_process_answers_are_moto_s_answers(emulation):
    direct, through_moto = _clients(emulation)
    model = emulation.models[VERSION]
    cases = [
        {},
        {"MinConfidence": 70.0},
        {"MaxResults": 1},
        {"Image": {"S3Object": {"Bucket": "images", "Name": "missing.jpg"}}},
        {"Image": {"S3Object": {"Bucket": "images", "Name": "broken.jpg"}}},
        {"ProjectVersionArn": VERSION.replace("p.v1", "p.v2")},
    ]
    with pytest.raises(ClientError, match="ResourceNotReadyException"):
        direct.detect_custom_labels(
            ProjectVersionArn=VERSION, Image={"S3Object": {"Bucket": "images", "Name": "a.jpg"}}
        )
    model.start(1, None)
    for params in cases:
        emulation.clock.sleep(1)  # a token for each call (one call a second)
        moto_answer = _answer(through_moto, **params)
        emulation.clock.sleep(1)
        assert _answer(direct, **params) == moto_answer, params
    emulation.clock.sleep(1)
    assert _answer(direct) == (
        "labels",
        [
            {"Name": "rose", "Confidence": 97.25, "Geometry": {"BoundingBox": LABELS[0].box}},
            {"Name": "tulip", "Confidence": 61.5},
        ],
    )
    # Throttled at once (the bucket is empty), as through moto.
    assert _answer(through_moto)[1] == _answer(direct)[1] == "ProvisionedThroughputExceededException"
    emulation.control.denied.add("rekognition:DetectCustomLabels")
    assert _answer(direct) == _answer(through_moto)
    assert _answer(direct)[1] == "AccessDeniedException"
    assert model.calls["DetectCustomLabels"] > 2 * len(cases)  # both clients reached the model


def test_a_client_that_retries_is_left_to_moto(emulation):
    _, through_moto = _clients(emulation)
    handlers = through_moto.meta.events._emitter._handlers.prefix_search(
        "before-call.rekognition.DetectCustomLabels"
    )
    assert not [h for h in handlers if getattr(h, "__name__", "") == "before_call"]
