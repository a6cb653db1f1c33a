"""The monitoring construct in the synthesized template: every dashboard widget's metrics, every alarm's
exact metric, threshold, periods and missing-data handling, and no alarms when they are switched off.

Uses test_infrastructure's `synth` fixture and `synthesize` (app.build + cdk-nag). pytest registers an
imported fixture per module, so this module synthesizes once more (under a second: node start-up, the
slow part, is paid once per session), plus once for the alarms-off variant.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from test_infrastructure import Synthesis, synth, synthesize

from customlabels_batch.settings import QUEUE_RETENTION_DAYS
from stacks.functions import REPO_ROOT

__all__ = ["synth"]  # test_infrastructure's session fixture, imported so pytest finds it here

NAMESPACE = "CustomLabelsBatch"
SERVICE = {"service": "customlabels-processor"}
TRIAGE = {"service": "customlabels-triage"}
COST_EXPRESSION = "RUNNING_SUM(FILL(units, 0) * PERIOD(units) / 3600) * 4.0"


@pytest.fixture(scope="session")
def alarms_off(tmp_path_factory: pytest.TempPathFactory) -> Synthesis:
    """The stack with alarmsEnabled false (and another price, to see it reach every estimate)."""
    return synthesize(
        tmp_path_factory.mktemp("cdk-out-alarms-off"),
        {"alarmsEnabled": "false", "usdPerInferenceUnitHour": "4.25"},
    )


# ---- helpers -----------------------------------------------------------------------------------


def function_settings(variables: dict[str, Any]) -> dict[str, Any]:
    """A function's settings JSON as deployed, with each CloudFormation reference as a placeholder."""
    value = variables["PIPELINE_SETTINGS"]
    if isinstance(value, dict):
        value = "".join(part if isinstance(part, str) else "<ref>" for part in value["Fn::Join"][1])
    return json.loads(value)


def _placeholder(token: dict[str, Any]) -> str:
    if "Ref" in token:
        return "${" + token["Ref"] + "}"
    logical_id, attribute = token["Fn::GetAtt"]
    return "${" + f"{logical_id}.{attribute}" + "}"


def dashboard_body(synthesis: Synthesis) -> dict[str, Any]:
    """The DashboardBody Fn::Join rendered to JSON, with `${LogicalId}` / `${LogicalId.Attr}` for tokens."""
    _, dashboard = synthesis.one("AWS::CloudWatch::Dashboard")
    separator, parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"]
    return json.loads(separator.join(p if isinstance(p, str) else _placeholder(p) for p in parts))


def widgets(synthesis: Synthesis) -> dict[str, dict[str, Any]]:
    """title -> widget properties."""
    return {w["properties"]["title"]: w["properties"] for w in dashboard_body(synthesis)["widgets"]}


def graphed(widget: dict[str, Any]) -> list[tuple[str, str, dict[str, str], str]]:
    """(namespace, metric name, dimensions, statistic) of every metric line a graph widget draws."""
    out = []
    for line in widget["metrics"]:
        *names, options = line if isinstance(line[-1], dict) else [*line, {}]
        if "expression" in options:
            continue
        namespace, metric, *dimensions = names
        stat = options.get("stat", "Average")  # a dashboard's default statistic
        out.append((namespace, metric, dict(zip(dimensions[::2], dimensions[1::2], strict=True)), stat))
    return out


def alarm(synthesis: Synthesis, name: str) -> dict[str, Any]:
    return synthesis.resources[synthesis.logical_id("AWS::CloudWatch::Alarm", name)]["Properties"]


def metric_stat(
    namespace: str, metric: str, dimensions: dict[str, Any], *, period: int, stat: str, metric_id: str = "m1"
) -> dict[str, Any]:
    return {
        "Id": metric_id,
        "MetricStat": {
            "Metric": {
                "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
                "MetricName": metric,
                "Namespace": namespace,
            },
            "Period": period,
            "Stat": stat,
        },
        "ReturnData": metric_id == "m1",
    }


def without_labels(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if k != "Label"} for m in metrics]


def ids(synthesis: Synthesis) -> dict[str, str]:
    return {
        "queue": synthesis.logical_id("AWS::SQS::Queue", "ImageQueue"),
        "dlq": synthesis.logical_id("AWS::SQS::Queue", "DeadLetterQueue"),
        "trigger_dlq": synthesis.logical_id("AWS::SQS::Queue", "TriggerDlq"),
        "triage_failures": synthesis.logical_id("AWS::SQS::Queue", "TriageFailureQueue"),
        "function": synthesis.logical_id("AWS::Lambda::Function", "ProcessorFunction"),
        "triage": synthesis.logical_id("AWS::Lambda::Function", "TriageFunction"),
        "machine": synthesis.one("AWS::StepFunctions::StateMachine")[0],
        "topic": synthesis.one("AWS::SNS::Topic")[0],
    }


# ---- dashboard ---------------------------------------------------------------------------------


def test_dashboard_graphs_every_metric_with_its_dimensions(synth):
    i = ids(synth)
    model = {"ProjectName": synth.config.project_name, "VersionName": synth.config.version_name}
    assert model == {"ProjectName": "my-project", "VersionName": "my-project.v1"}
    machine = {"StateMachineArn": f"${{{i['machine']}}}"}
    queue = {"QueueName": f"${{{i['queue']}.QueueName}}"}
    dlq = {"QueueName": f"${{{i['dlq']}.QueueName}}"}
    trigger_dlq = {"QueueName": f"${{{i['trigger_dlq']}.QueueName}}"}
    triage_failures = {"QueueName": f"${{{i['triage_failures']}.QueueName}}"}
    expected = {
        "Queue depth": [
            ("AWS/SQS", "ApproximateNumberOfMessagesVisible", queue),
            ("AWS/SQS", "ApproximateNumberOfMessagesNotVisible", queue),
            ("AWS/SQS", "ApproximateNumberOfMessagesVisible", dlq),
            ("AWS/SQS", "ApproximateNumberOfMessagesVisible", trigger_dlq),
            ("AWS/SQS", "ApproximateNumberOfMessagesVisible", triage_failures),
            ("AWS/SQS", "ApproximateAgeOfOldestMessage", queue),
        ],
        "Images labeled and error records": [
            (NAMESPACE, "ImagesLabeled", SERVICE),
            (NAMESPACE, "ErrorRecords", SERVICE),
            (NAMESPACE, "ErrorRecords", TRIAGE),
            (NAMESPACE, "TransientFailures", SERVICE),
            (NAMESPACE, "PipelineMisconfigured", SERVICE),
            (NAMESPACE, "NotAttempted", SERVICE),
            (NAMESPACE, "CrashedMessages", SERVICE),
        ],
        "Labels found": [(NAMESPACE, "LabelsFound", SERVICE)],
        "Time to result (s)": [(NAMESPACE, "TimeToResultSeconds", SERVICE)] * 3,
        "Uploads triaged": [
            (NAMESPACE, "ImagesQueued", TRIAGE),
            (NAMESPACE, "ErrorRecords", TRIAGE),
            (NAMESPACE, "UploadsSkipped", TRIAGE),
            (NAMESPACE, "WaitClockNotStarted", TRIAGE),
        ],
        "Triage errors and throttles (retried by Lambda)": [
            ("AWS/Lambda", "Errors", {"FunctionName": f"${{{i['triage']}}}"}),
            ("AWS/Lambda", "Throttles", {"FunctionName": f"${{{i['triage']}}}"}),
        ],
        "Processor errors and throttles": [
            ("AWS/Lambda", "Errors", {"FunctionName": f"${{{i['function']}}}"}),
            ("AWS/Lambda", "Throttles", {"FunctionName": f"${{{i['function']}}}"}),
        ],
        "Model inference units in service": [("AWS/Rekognition", "InServiceInferenceUnits", model)],
        "Estimated model cost, USD (an estimate at $4/IU-hour)": [
            ("AWS/Rekognition", "InServiceInferenceUnits", model)
        ],
        "State machine executions by outcome": [
            ("AWS/States", f"Executions{outcome}", machine)
            for outcome in ("Succeeded", "Failed", "TimedOut", "Aborted")
        ],
        "Model calls: accepted and throttled (the processors keep it just full)": [
            (NAMESPACE, "ModelCallsAccepted", SERVICE),
            (NAMESPACE, "ModelCallsThrottled", SERVICE),
            (NAMESPACE, "ModelCallSeconds", SERVICE),
            (NAMESPACE, "ModelCallSeconds", SERVICE),
        ],
        "Processor busy seconds": [(NAMESPACE, "ProcessorSeconds", SERVICE)],
    }
    graphs = {title: w for title, w in widgets(synth).items() if "metrics" in w}
    assert set(graphs) == set(expected)
    for title, metrics in expected.items():
        assert [line[:3] for line in graphed(graphs[title])] == metrics, title
    # Counts are sums; queue depths are the peak of the period; inference units an average.
    stats = {title: {line[3] for line in graphed(w)} for title, w in graphs.items()}
    assert stats["Queue depth"] == {"Maximum"}
    assert stats["Images labeled and error records"] == stats["Labels found"] == {"Sum"}
    assert stats["Time to result (s)"] == {"p50", "p95", "Maximum"}
    assert stats["Processor errors and throttles"] == {"Sum"}
    assert stats["Uploads triaged"] == stats["Triage errors and throttles (retried by Lambda)"] == {"Sum"}
    assert stats["State machine executions by outcome"] == {"Sum"}
    assert stats["Model inference units in service"] == {"Average"}
    assert stats["Model calls: accepted and throttled (the processors keep it just full)"] == {
        "Sum",
        "p50",
        "p95",
    }


def test_cost_widget_sums_per_minute_inference_units_at_4_dollars_per_iu_hour(synth):
    (cost,) = [w for title, w in widgets(synth).items() if title.startswith("Estimated model cost")]
    assert "estimate at $4/IU-hour" in cost["title"]
    expression, units = cost["metrics"]
    assert expression == [
        {
            "label": "Estimated model cost over the time range (USD)",
            "expression": COST_EXPRESSION,
            "period": 60,
        }
    ]
    assert units[-1] == {"label": "Inference units in service", "id": "units", "visible": False, "period": 60}
    assert graphed(cost)[0][3] == "Average"


def test_cost_expression_turns_one_iu_hour_into_four_dollars():
    """Evaluate the expression on a one-minute series: an hour at 1 IU, a half-hour stopped (no data),
    a half-hour at 2 IUs = 2 IU-hours = $8."""

    class Series(list):
        def __mul__(self, k):
            return Series(v * k for v in self)

        def __truediv__(self, k):
            return Series(v / k for v in self)

    def fill(series, value):
        return Series(value if v is None else v for v in series)

    def running_sum(series):
        total, out = 0.0, Series()
        for v in series:
            total += v
            out.append(total)
        return out

    units = Series([1.0] * 60 + [None] * 30 + [2.0] * 30)
    names = {"RUNNING_SUM": running_sum, "FILL": fill, "PERIOD": lambda _: 60, "units": units}
    cost = eval(COST_EXPRESSION, {"__builtins__": {}}, names)
    assert cost[59] == pytest.approx(4.0)
    assert cost[89] == pytest.approx(4.0)
    assert cost[-1] == pytest.approx(8.0)


def test_dashboard_shows_the_alarms(synth):
    alarm_ids = sorted(synth.of_type("AWS::CloudWatch::Alarm"))
    (status,) = [w for w in widgets(synth).values() if "alarms" in w]
    assert sorted(status["alarms"]) == sorted(f"${{{a}.Arn}}" for a in alarm_ids)


# ---- alarms ------------------------------------------------------------------------------------


def test_eight_alarms_each_notify_the_topic(synth):
    topic = {"Ref": ids(synth)["topic"]}
    alarms = synth.of_type("AWS::CloudWatch::Alarm")
    assert len(alarms) == 8
    for logical_id, resource in alarms.items():
        props = resource["Properties"]
        assert props["AlarmActions"] == [topic], logical_id
        assert "DatapointsToAlarm" not in props, logical_id  # every evaluated period must breach
        assert "AlarmName" not in props, logical_id
        assert props["AlarmDescription"], logical_id
    ok = {k for k, r in alarms.items() if "OKActions" in r["Properties"]}
    assert ok == {synth.logical_id("AWS::CloudWatch::Alarm", "ModelInService")}
    assert alarm(synth, "ModelInService")["OKActions"] == [topic]


def test_dead_letter_queue_alarm_fires_on_one_visible_message(synth):
    props = alarm(synth, "DeadLetterQueue")
    dlq = {"Fn::GetAtt": [ids(synth)["dlq"], "QueueName"]}
    assert without_labels(props["Metrics"]) == [
        metric_stat(
            "AWS/SQS", "ApproximateNumberOfMessagesVisible", {"QueueName": dlq}, period=300, stat="Maximum"
        )
    ]
    assert props["Threshold"] == 1
    assert props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert props["EvaluationPeriods"] == 1
    assert props["TreatMissingData"] == "notBreaching"


def test_trigger_dead_letter_alarm_fires_when_a_run_was_never_started(synth):
    props = alarm(synth, "TriggerDlq")
    trigger_dlq = {"Fn::GetAtt": [ids(synth)["trigger_dlq"], "QueueName"]}
    assert without_labels(props["Metrics"]) == [
        metric_stat(
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            {"QueueName": trigger_dlq},
            period=300,
            stat="Maximum",
        )
    ]
    assert props["Threshold"] == 1
    assert props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert props["EvaluationPeriods"] == 1
    assert props["TreatMissingData"] == "notBreaching"
    # The operator learns what did not happen and what it may have left running.
    description = props["AlarmDescription"]
    assert "scheduled run, latency check or clean-up was never started" in description
    assert "model on" in description
    assert "`customlabels-batch status`" in description


def test_schedule_delivery_alarm_fires_on_what_scheduler_dropped_or_could_not_dead_letter(synth):
    """The trigger DLQ alarm sees what Scheduler dead-lettered; what it dropped, or failed to put in
    the DLQ, shows only in AWS/Scheduler's metrics for the schedules' group."""
    props = alarm(synth, "ScheduleDelivery")
    queries = {q["Id"]: q for q in props["Metrics"]}
    assert queries["expr_1"]["Expression"] == "FILL(dropped, 0) + FILL(notDeadLettered, 0)"
    for query_id, name in (
        ("dropped", "InvocationDroppedCount"),
        ("notDeadLettered", "InvocationsFailedToBeSentToDeadLetterCount"),
    ):
        stat = queries[query_id]["MetricStat"]
        assert stat["Metric"] == {
            "Namespace": "AWS/Scheduler",
            "MetricName": name,
            "Dimensions": [{"Name": "ScheduleGroup", "Value": "default"}],
        }
        assert (stat["Period"], stat["Stat"]) == (300, "Sum")
    assert props["Threshold"] == 1
    assert props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert props["TreatMissingData"] == "notBreaching"


def test_triage_failure_alarm_fires_when_an_upload_was_never_triaged(synth):
    props = alarm(synth, "TriageFailureQueue")
    failures = {"Fn::GetAtt": [ids(synth)["triage_failures"], "QueueName"]}
    assert without_labels(props["Metrics"]) == [
        metric_stat(
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            {"QueueName": failures},
            period=300,
            stat="Maximum",
        )
    ]
    assert props["Threshold"] == 1
    assert props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert props["EvaluationPeriods"] == 1
    assert props["TreatMissingData"] == "notBreaching"
    # The operator learns what did not happen and how to redo it.
    description = props["AlarmDescription"]
    assert "neither queued nor recorded" in description
    assert "requestPayload" in description


def test_oldest_queued_image_alarm_warns_two_days_before_the_queue_would_delete_it(synth):
    props = alarm(synth, "OldestQueuedImage")
    queue = {"Fn::GetAtt": [ids(synth)["queue"], "QueueName"]}
    assert without_labels(props["Metrics"]) == [
        metric_stat(
            "AWS/SQS", "ApproximateAgeOfOldestMessage", {"QueueName": queue}, period=900, stat="Maximum"
        )
    ]
    assert props["Threshold"] == (QUEUE_RETENTION_DAYS - 2) * 86400
    assert props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert props["TreatMissingData"] == "notBreaching"


def test_model_in_service_alarm_needs_every_period_of_the_configured_window(synth):
    props = alarm(synth, "ModelInService")
    model = {"ProjectName": "my-project", "VersionName": "my-project.v1"}
    assert without_labels(props["Metrics"]) == [
        metric_stat("AWS/Rekognition", "InServiceInferenceUnits", model, period=300, stat="Minimum")
    ]
    assert props["Threshold"] == 0
    assert props["ComparisonOperator"] == "GreaterThanThreshold"
    minutes = synth.config.model_in_service_alarm_minutes
    assert props["EvaluationPeriods"] == math.ceil(minutes / 5) == 60
    # Within CloudWatch's one-day limit on evaluation periods x period.
    assert props["EvaluationPeriods"] * 300 <= 86400
    assert props["TreatMissingData"] == "notBreaching"


def test_unsuccessful_executions_alarm_sums_failed_timed_out_and_aborted(synth):
    props = alarm(synth, "UnsuccessfulExecutions")
    machine = {"StateMachineArn": {"Ref": ids(synth)["machine"]}}
    expression, *metrics = without_labels(props["Metrics"])
    assert expression == {
        "Expression": "FILL(failed, 0) + FILL(timedOut, 0) + FILL(aborted, 0)",
        "Id": "expr_1",
        "ReturnData": True,
    }
    assert metrics == [
        metric_stat("AWS/States", f"Executions{name}", machine, period=300, stat="Sum", metric_id=metric_id)
        for metric_id, name in (("failed", "Failed"), ("timedOut", "TimedOut"), ("aborted", "Aborted"))
    ]
    assert props["Threshold"] == 1
    assert props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert props["EvaluationPeriods"] == 1
    assert props["TreatMissingData"] == "notBreaching"


def test_error_records_alarm_fires_above_the_hourly_threshold_of_triage_and_processor(synth):
    props = alarm(synth, "ErrorRecords")
    expression, *metrics = without_labels(props["Metrics"])
    assert expression == {
        "Expression": "FILL(atUpload, 0) + FILL(byModel, 0)",
        "Id": "expr_1",
        "ReturnData": True,
    }
    assert metrics == [
        metric_stat(NAMESPACE, "ErrorRecords", TRIAGE, period=3600, stat="Sum", metric_id="atUpload"),
        metric_stat(NAMESPACE, "ErrorRecords", SERVICE, period=3600, stat="Sum", metric_id="byModel"),
    ]
    assert props["Threshold"] == synth.config.error_records_alarm_threshold == 50
    assert props["ComparisonOperator"] == "GreaterThanThreshold"
    assert props["EvaluationPeriods"] == 1
    assert props["TreatMissingData"] == "notBreaching"


@pytest.mark.parametrize(
    ("function", "service", "names"),
    [
        (
            "processor",
            SERVICE,
            {
                "ImagesLabeled",
                "ErrorRecords",
                "TransientFailures",
                "LabelsFound",
                "PipelineMisconfigured",
                "NotAttempted",
                "CrashedMessages",
                "ModelCallsAccepted",
                "ModelCallsThrottled",
                "ModelCallSeconds",
                "ProcessorSeconds",
                "TimeToResultSeconds",
            },
        ),
        ("triage", TRIAGE, {"ImagesQueued", "ErrorRecords", "UploadsSkipped", "WaitClockNotStarted"}),
    ],
)
def test_function_metrics_are_the_ones_the_handler_emits(synth, function, service, names):
    """Widgets and alarm read the namespace and service each function's Powertools is configured
    with, and every metric name its handler emits is graphed."""
    env = synth.resources[ids(synth)["triage" if function == "triage" else "function"]]["Properties"][
        "Environment"
    ]["Variables"]
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == NAMESPACE
    assert {"service": env["POWERTOOLS_SERVICE_NAME"]} == service
    handler = (REPO_ROOT / "lambdas" / function / "app.py").read_text()
    emitted = set(re.findall(r'(?:add_metric\(name=|_metric\()"(\w+)"', handler))
    graphed_names = {
        name
        for w in widgets(synth).values()
        if "metrics" in w
        for ns, name, dimensions, _ in graphed(w)
        if ns == NAMESPACE and dimensions == service
    }
    assert emitted == graphed_names == names


def test_the_configured_price_reaches_the_cost_widget_and_the_run_recorder(alarms_off):
    (cost,) = [w for title, w in widgets(alarms_off).items() if title.startswith("Estimated model cost")]
    assert cost["metrics"][0][0]["expression"] == COST_EXPRESSION.replace("* 4.0", "* 4.25")
    recorder_id = alarms_off.logical_id("AWS::Lambda::Function", "RunRecorderFunction")
    variables = alarms_off.resources[recorder_id]["Properties"]["Environment"]["Variables"]
    assert function_settings(variables)["usdPerInferenceUnitHour"] == 4.25


def test_no_alarms_when_alarms_are_disabled(alarms_off):
    assert alarms_off.of_type("AWS::CloudWatch::Alarm") == {}
    # The rules still dead-letter what they cannot deliver; the dashboard still shows it.
    trigger_dlq = ids(alarms_off)["trigger_dlq"]
    (queue_depth,) = [w for title, w in widgets(alarms_off).items() if title == "Queue depth"]
    assert {"QueueName": f"${{{trigger_dlq}.QueueName}}"} in [line[2] for line in graphed(queue_depth)]
    assert not [w for w in widgets(alarms_off).values() if "alarms" in w]
    # The dashboard stays.
    assert "Estimated model cost, USD (an estimate at $4.25/IU-hour)" in widgets(alarms_off)
    assert alarms_off.validation_error is None
    assert alarms_off.violations() == []
