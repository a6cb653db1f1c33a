"""The emulator's speed-ups (emulator/speedups.py, the SQS ones in moto_fixes.py, metrics.py's direct
PutMetricData) give the answers moto and botocore give without them."""

from __future__ import annotations

import contextlib
import string
from datetime import UTC, datetime, timedelta

import boto3
from moto import mock_aws

from customlabels_batch.emulator import moto_fixes, speedups
from customlabels_batch.emulator.metrics import MotoCloudWatch, put_emf_blob


@contextlib.contextmanager
def _applied(patches):
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        yield


def test_memoised_names_are_moto_s():
    from moto.core import responses, utils
    from moto.sqs import models

    names = [
        "ReceiveMessage",
        "GetQueueAttributes",
        "ApproximateNumberOfMessagesNotVisible",
        "KmsMasterKeyId",
    ]
    expected = [utils.camelcase_to_underscores(n) for n in names]
    methods = utils.method_names_from_class(responses.BaseResponse)
    with _applied(speedups.patches()):
        assert [responses.camelcase_to_underscores(n) for n in names] == expected
        assert [models.camelcase_to_underscores(n) for n in names] == expected
        assert responses.method_names_from_class(responses.BaseResponse) == methods
        responses.method_names_from_class(responses.BaseResponse).append("not a method")  # a copy
        assert responses.method_names_from_class(responses.BaseResponse) == methods


def test_random_identifiers_keep_moto_s_shape():
    from moto.moto_api._internal import mock_random
    from moto.sqs import models

    with _applied(speedups.patches()):
        handle = models.generate_receipt_handle()
        request_id = mock_random.get_random_string(length=52)
        lower = mock_random.get_random_string(length=30, include_digits=False, lower_case=True)
    assert len(handle) == 185 and set(handle) <= set(string.ascii_lowercase)
    assert len(request_id) == 52 and set(request_id) <= set(string.ascii_letters + string.digits)
    assert len(lower) == 30 and set(lower) <= set(string.ascii_lowercase)


def test_user_agent_is_botocore_s():
    client = boto3.client("sqs", region_name="us-east-1")
    user_agent = client._user_agent_creator  # what each request's header is built from
    expected = user_agent.to_string()
    with _applied(speedups.patches()):
        assert user_agent.to_string() == expected
        assert user_agent.to_string() == expected


def _authorization_headers(patches) -> list[str]:
    """The Authorization headers of an S3 and an SQS request as moto receives them."""
    headers: list[str] = []
    with mock_aws(), _applied(patches):
        for service in ("s3", "sqs"):
            client = boto3.client(service, region_name="eu-west-1")
            client.meta.events.register(
                "before-send", lambda request, **_: headers.append(request.headers["Authorization"])
            )
            if service == "s3":
                client.list_buckets()
            else:
                client.list_queues()
    return [header.decode() if isinstance(header, bytes) else header for header in headers]


def test_the_authorization_header_is_botocore_s_but_for_the_unchecked_signature():
    signed = _authorization_headers([])
    unsigned = _authorization_headers(speedups.patches())
    assert len(signed) == len(unsigned) == 2
    for real, emulated in zip(signed, unsigned, strict=True):
        scope, headers, signature = real.split(", ")
        assert emulated == f"{scope}, {headers}, Signature={speedups.UNCHECKED_SIGNATURE}"
        assert signature != f"Signature={speedups.UNCHECKED_SIGNATURE}"
        assert "/eu-west-1/" in scope  # what moto reads the Region from, with the access key


def test_s3_s_url_module_is_loaded_once_with_the_same_urls():
    from moto.s3.models import s3_backends

    backend = s3_backends["123456789012"]["aws"]
    expected = (backend.url_bases, backend.url_paths)
    with _applied(speedups.patches()):
        assert backend._url_module is backend._url_module
        assert (backend.url_bases, backend.url_paths) == expected


def _queue_walk(patches) -> list:
    """Receives, counts and attributes of one queue, as moto answers them under the patches."""
    with mock_aws(), _applied(patches):
        sqs = boto3.client("sqs", region_name="us-east-1")
        dlq = sqs.create_queue(QueueName="dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        url = sqs.create_queue(
            QueueName="q",
            Attributes={
                "RedrivePolicy": f'{{"deadLetterTargetArn": "{dlq_arn}", "maxReceiveCount": 2}}',
            },
        )["QueueUrl"]
        for i in range(25):
            sqs.send_message(QueueUrl=url, MessageBody=f"m{i}", DelaySeconds=0 if i % 5 else 900)
        seen = []
        for _ in range(6):
            got = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=7, MessageSystemAttributeNames=["ApproximateReceiveCount"]
            ).get("Messages", [])
            seen.append([(m["Body"], m["Attributes"]["ApproximateReceiveCount"]) for m in got])
            names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed", "RedrivePolicy"]
            seen.append(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"])
            seen.append(
                sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["All"])["Attributes"]["QueueArn"]
            )
        return seen


def test_sqs_fixes_answer_as_moto():
    assert _queue_walk(moto_fixes._sqs()) == _queue_walk([])


def _metric_data(cloudwatch_for) -> list:
    blob = {
        "_aws": {
            "Timestamp": 0,
            "CloudWatchMetrics": [
                {
                    "Namespace": "CustomLabelsBatch",
                    "Dimensions": [["service"]],
                    "Metrics": [{"Name": "ImagesLabeled", "Unit": "Count"}, {"Name": "LabelsFound"}],
                }
            ],
        },
        "service": "customlabels-processor",
        "ImagesLabeled": [1.0, 1.0],
        "LabelsFound": 3,
    }
    started = datetime(2026, 12, 1, 10, 0, 0, 250000, tzinfo=UTC)
    with mock_aws():
        put_emf_blob(cloudwatch_for("us-east-1"), blob, started)
        reader = boto3.client("cloudwatch", region_name="us-east-1")
        return [
            reader.get_metric_data(
                MetricDataQueries=[
                    {
                        "Id": "m",
                        "MetricStat": {
                            "Metric": {
                                "Namespace": "CustomLabelsBatch",
                                "MetricName": name,
                                "Dimensions": [{"Name": "service", "Value": "customlabels-processor"}],
                            },
                            "Period": 60,
                            "Stat": "Sum",
                        },
                    }
                ],
                StartTime=started - timedelta(minutes=5),
                EndTime=started + timedelta(minutes=5),
            )["MetricDataResults"][0]["Values"]
            for name in ("ImagesLabeled", "LabelsFound")
        ]


def test_direct_put_metric_data_stores_what_the_request_would():
    direct = _metric_data(MotoCloudWatch)
    assert direct == _metric_data(lambda region: boto3.client("cloudwatch", region_name=region))
    assert direct == [[2.0], [3.0]]


def test_pipeline_keys_and_objects_are_what_list_objects_v2_and_get_object_give():
    from types import SimpleNamespace

    from customlabels_batch.emulator.pipeline import EmulatedPipeline

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="keys-bucket")
        names = ["results/a b.jpg.json", "results/ü/+%.json", "results/x/", "resultsx.json", "errors/e.json"]
        for i in range(1100):
            names.append(f"results/{i:05d}.jpg.json")
        for name in names:
            s3.put_object(Bucket="keys-bucket", Key=name, Body=name.encode())
        s3.put_object(Bucket="keys-bucket", Key="results/00001.jpg.json", Body=b"rewritten")
        s3.delete_object(Bucket="keys-bucket", Key="results/00007.jpg.json")
        listed = {
            item["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket="keys-bucket", Prefix="results/")
            for item in page.get("Contents", [])
        }
        read = {key: s3.get_object(Bucket="keys-bucket", Key=key)["Body"].read() for key in listed}
        pipeline = SimpleNamespace(bucket="keys-bucket")
        pipeline._stored = lambda prefix: EmulatedPipeline._stored(pipeline, prefix)
        direct = EmulatedPipeline.keys(pipeline, "results/")
        bodies = EmulatedPipeline.objects(pipeline, "results/")
    assert direct == listed
    assert bodies == read and bodies["results/00001.jpg.json"] == b"rewritten"
    assert len(direct) == 1102
