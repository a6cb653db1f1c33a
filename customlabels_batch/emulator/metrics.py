"""CloudWatch's extraction of Embedded Metric Format (EMF) logs, emulated.

In Lambda the processor's Powertools `Metrics` prints EMF JSON to its log, and CloudWatch turns each
blob into metric datapoints. Here every blob the handler flushes also goes to moto's CloudWatch,
stamped with the emulated time, so the run recorder counts images labeled as it would on AWS.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any


def put_emf_blob(cloudwatch: Any, blob: dict[str, Any], timestamp: datetime) -> None:
    """One EMF blob -> PutMetricData, per the EMF specification: each directive's metrics, once per
    dimension set, values read from the blob's top-level members."""
    for directive in blob["_aws"]["CloudWatchMetrics"]:
        for dimension_names in directive["Dimensions"]:
            dimensions = [{"Name": name, "Value": str(blob[name])} for name in dimension_names]
            data = []
            for metric in directive["Metrics"]:
                raw = blob[metric["Name"]]
                values = [float(v) for v in (raw if isinstance(raw, list) else [raw])]
                data.append(
                    {
                        "MetricName": metric["Name"],
                        "Dimensions": dimensions,
                        "Timestamp": timestamp,
                        "Values": values,
                        "Counts": [1.0] * len(values),
                        "Unit": metric.get("Unit") or "None",
                    }
                )
            cloudwatch.put_metric_data(Namespace=directive["Namespace"], MetricData=data)


def ingest_flushed_metrics(metrics: Any, *, now: Callable[[], datetime], region: str) -> None:
    """Make one handler module copy's Powertools `Metrics` behave as in its own Lambda environment:
    a metric set of its own (Powertools shares one per process, and the emulated environments are
    threads of one process), and every flushed blob delivered to CloudWatch."""
    provider = metrics.provider
    provider.metric_set, provider.dimension_set, provider.metadata_set = {}, {}, {}
    # Powertools checks a set timestamp against the wall clock (at most 2 hours ahead); the emulated
    # clock runs ahead of it by design, and the emulated CloudWatch takes any time.
    warnings.filterwarnings("ignore", "This metric doesn't meet the requirements", UserWarning)
    cloudwatch = MotoCloudWatch(region)
    serialize = provider.serialize_metric_set

    def serialize_and_deliver(metrics=None, dimensions=None, metadata=None):
        blob = serialize(metrics, dimensions, metadata)
        # CloudWatch takes the blob's own timestamp; a handler that set none gets Powertools' wall
        # clock there, so the emulated time of the flush stands in for it.
        stamped = provider.timestamp is not None
        put_emf_blob(
            cloudwatch,
            blob,
            datetime.fromtimestamp(blob["_aws"]["Timestamp"] / 1000, UTC) if stamped else now(),
        )
        return blob

    provider.serialize_metric_set = serialize_and_deliver


def publish_in_service_units(
    cloudwatch: Any, model: Any, *, epoch: datetime, since: float, until: float
) -> float:
    """AWS/Rekognition InServiceInferenceUnits for the model's whole minutes in [since, until), as
    the emulator assumes AWS publishes it (AWS documents the metric, not its granularity): one
    datapoint a minute of UTC, the units in service averaged over the minute. Returns where it got
    to. (The epoch is any second: emulated minutes counted from it would straddle CloudWatch's.)"""
    from datetime import timedelta

    minute_at = -(epoch.timestamp() % 60)
    points = model.in_service_datapoints(until, minute_at=minute_at)
    points = [(t, value) for t, value in points if t >= since]
    dimensions = [
        {"Name": "ProjectName", "Value": model.project_name},
        {"Name": "VersionName", "Value": model.version_name},
    ]
    for start in range(0, len(points), 500):
        cloudwatch.put_metric_data(
            Namespace="AWS/Rekognition",
            MetricData=[
                {
                    "MetricName": "InServiceInferenceUnits",
                    "Dimensions": dimensions,
                    "Timestamp": epoch + timedelta(seconds=t),
                    "Value": value,
                    "Unit": "Count",
                }
                for t, value in points[start : start + 500]
            ],
        )
    return minute_at + (until - minute_at) // 60 * 60


class MotoCloudWatch:
    """PutMetricData straight into moto's CloudWatch backend, as moto's own request handler would call
    it (timestamps as naive UTC, as it parses them), without a boto3 request per flushed blob: that
    HTTP round trip in-process was a fifth of the emulator's requests. CloudWatch's checks of the
    data are the backend's, so they still apply; the emulation denies no CloudWatch action."""

    def __init__(self, region: str):
        from moto.cloudwatch.models import cloudwatch_backends
        from moto.core import DEFAULT_ACCOUNT_ID

        self._backend = cloudwatch_backends[DEFAULT_ACCOUNT_ID][region]

    def put_metric_data(self, *, Namespace: str, MetricData: list[dict[str, Any]]) -> None:
        self._backend.put_metric_data(Namespace, [_naive_utc(datum) for datum in MetricData])


def _naive_utc(datum: dict[str, Any]) -> dict[str, Any]:
    timestamp = datum.get("Timestamp")
    if isinstance(timestamp, datetime) and timestamp.tzinfo is not None:
        return {**datum, "Timestamp": timestamp.astimezone(UTC).replace(tzinfo=None)}
    return datum
