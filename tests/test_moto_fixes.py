"""Each moto fix the emulator applies is still needed: these fail once moto 5.2.5's successor behaves
as AWS does, so the fix can be dropped (emulator/moto_fixes.py)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import inspect
import io
import json

import pytest

from customlabels_batch.emulator import moto_fixes
from customlabels_batch.emulator.pipeline import EmulatedPipeline, EmulationOptions, emulated_config

# Each deviation in one definition: `Uuid` must reach Lambda as `UUID`, sfn's `executions` must come
# back as `Executions`, a Rekognition error must be `Rekognition.ResourceInUseException` for the Catch,
# and `$$.Execution.StartTime` must be a string States.Format can use.
DEFINITION = {
    "StartAt": "GetMapping",
    "States": {
        "GetMapping": {
            "Type": "Task",
            "Resource": "arn:aws:states:::aws-sdk:lambda:getEventSourceMapping",
            "Parameters": {"Uuid": "${EventSourceMappingUuid}"},
            "ResultSelector": {"state.$": "$.State"},
            "ResultPath": "$.mapping",
            "Next": "ListExecutions",
        },
        "ListExecutions": {
            "Type": "Task",
            "Resource": "arn:aws:states:::aws-sdk:sfn:listExecutions",
            "Parameters": {"StateMachineArn.$": "$$.StateMachine.Id"},
            "ResultSelector": {"running.$": "States.ArrayLength($.Executions)"},
            "ResultPath": "$.list",
            "Next": "StartedAt",
        },
        "StartedAt": {
            "Type": "Pass",
            "Parameters": {"text.$": "States.JsonToString($$.Execution.StartTime)"},
            "ResultPath": "$.started",
            "Next": "StartModel",
        },
        "StartModel": {
            "Type": "Task",
            "Resource": "arn:aws:states:::aws-sdk:rekognition:startProjectVersion",
            "Parameters": {"ProjectVersionArn": "${ProjectVersionArn}", "MinInferenceUnits": 1},
            "Catch": [{"ErrorEquals": ["Rekognition.ResourceInUseException"], "Next": "Caught"}],
            "End": True,
        },
        "Caught": {"Type": "Pass", "End": True},
    },
}


def _run(tmp_path) -> dict:
    definition = tmp_path / "fixes.asl.json"
    definition.write_text(json.dumps(DEFINITION))
    options = EmulationOptions(definition=definition, processor_log=io.StringIO(), status_change_rule=False)
    with EmulatedPipeline(emulated_config(), options) as pipeline:
        pipeline.sqs.purge_queue(QueueUrl=pipeline.queue_url)
        pipeline.model.start(1)  # already STARTING: StartProjectVersion answers ResourceInUseException
        report = pipeline.run()
    [execution] = report["executions"]
    return execution


def test_with_the_fixes_the_definition_runs_as_on_aws(tmp_path):
    execution = _run(tmp_path)
    assert execution["status"] == "SUCCEEDED", execution
    assert execution["statePath"][-1] == "Caught"


def test_moto_still_needs_the_step_functions_fixes(tmp_path, monkeypatch):
    sqs_only = moto_fixes._sqs
    monkeypatch.setattr(moto_fixes, "patches", lambda now: sqs_only())
    execution = _run(tmp_path)
    # Unfixed, moto fails the first task on `Uuid` (and would fail the later ones for their reasons).
    assert execution["status"] == "FAILED", "moto now runs this as AWS does: drop the aws-sdk fixes"


@pytest.mark.parametrize(
    ("function", "still"),
    [
        # No lock around a queue's message set: concurrent receives can fail.
        ("SQSBackend.receive_message", lambda source: "lock" not in source.lower()),
        # The counts scan every message whenever the attributes are built.
        (
            "Queue.approximate_number_of_messages",
            lambda source: "len(self.messages)" in source,
        ),
        # Deleting scans every message's receipt handles.
        (
            "Queue.delete_message",
            lambda source: "for message in self._messages" in source,
        ),
        # ...and so does a visibility change.
        (
            "SQSBackend.change_message_visibility",
            lambda source: "for message in queue._messages" in source,
        ),
        # The counts read the time once per message; the fast counts repeat these two tests.
        ("Message.visible", lambda source: "current_time > self.visible_at" in source),
        ("Message.delayed", lambda source: "current_time < self.delayed_until" in source),
        # A receive lists every visible message before it takes a batch of them.
        ("SQSBackend.receive_message", lambda source: "for message in queue.messages:" in source),
        # The attributes are built anew on every read, each name converted again...
        ("Queue.attributes", lambda source: "camelcase_to_underscores(attribute)" in source),
        # ...and read three times per name asked for, once per received message for its retention.
        ("SQSBackend.get_queue_attributes", lambda source: source.count("queue.attributes") >= 3),
        (
            "SQSBackend.is_message_valid_based_on_retention_period",
            lambda source: "self.get_queue_attributes(" in source,
        ),
    ],
)
def test_moto_sqs_still_has_what_the_fixes_work_around(function, still):
    from moto.sqs import models

    owner, name = function.split(".")
    member = inspect.getattr_static(getattr(models, owner), name)
    source = inspect.getsource(member.fget if isinstance(member, property) else member)
    assert still(source), f"moto changed {function}: check whether its SQS fix is still needed"


def test_moto_still_lets_an_error_replace_a_stop():
    from moto.stepfunctions.parser.asl.eval import environment

    source = inspect.getsource(environment.Environment.set_error)
    assert "ProgramStopped" not in source, "moto now keeps a stop over a later error: drop _stop_wins"


def _p95_of_one_to_twenty(*, fixed: bool) -> list[float]:
    import boto3
    from moto import mock_aws

    with mock_aws():
        cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
        moment = _dt.datetime(2026, 12, 1, 10, 0, 30, tzinfo=_dt.UTC)
        dimensions = [{"Name": "d", "Value": "v"}]
        cloudwatch.put_metric_data(
            Namespace="Test",
            MetricData=[
                {
                    "MetricName": "Wait",
                    "Dimensions": dimensions,
                    "Timestamp": moment,
                    "Values": [float(v) for v in range(1, 21)],
                }
            ],
        )
        metric = {"Namespace": "Test", "MetricName": "Wait", "Dimensions": dimensions}
        query = {"Id": "p", "MetricStat": {"Metric": metric, "Period": 60, "Stat": "p95"}}
        with contextlib.ExitStack() as stack:
            if fixed:
                for patch in moto_fixes._cloudwatch_percentiles():
                    stack.enter_context(patch)
            result = cloudwatch.get_metric_data(
                MetricDataQueries=[query],
                StartTime=moment.replace(second=0),
                EndTime=moment.replace(second=0) + _dt.timedelta(minutes=1),
            )
        return result["MetricDataResults"][0]["Values"]


def test_with_the_fix_cloudwatch_answers_percentiles_from_the_raw_values():
    assert _p95_of_one_to_twenty(fixed=True) == [19.0]
    assert moto_fixes.percentile([3.0, 1.0, 2.0], "p50") == 2.0
    assert moto_fixes.percentile([5.0], "p99") == 5.0


def test_moto_still_answers_no_percentile():
    # Unfixed, moto has no value for the statistic and fails to serialize the None it gets instead.
    with pytest.raises(TypeError):
        values = _p95_of_one_to_twenty(fixed=False)
        assert values in ([], [None]), "moto computes percentiles: drop the fix"


def _stop_as_soon_as_started(*, fixed: bool) -> str:
    """Start an execution whose thread is slow to build its environment and stop it at once."""
    import time
    from unittest import mock

    import boto3
    from moto import mock_aws
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    original = ExecutionWorker._get_evaluation_entrypoint

    def slow_entrypoint(self):
        time.sleep(0.5)  # a long definition parsed on a busy machine
        return original(self)

    definition = {"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 30, "End": True}}}
    role = "arn:aws:iam::123456789012:role/sfn"
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}), contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(ExecutionWorker, "_get_evaluation_entrypoint", slow_entrypoint))
        if fixed:
            for patch in moto_fixes._stop_right_after_start():
                stack.enter_context(patch)
        sfn = boto3.client("stepfunctions", region_name="us-east-1")
        machine = sfn.create_state_machine(name="m", definition=json.dumps(definition), roleArn=role)
        execution = sfn.start_execution(stateMachineArn=machine["stateMachineArn"])["executionArn"]
        sfn.stop_execution(executionArn=execution)
        deadline = time.monotonic() + 10  # moto reflects the stop once the execution's thread ends
        while (status := sfn.describe_execution(executionArn=execution)["status"]) == "RUNNING":
            assert time.monotonic() < deadline, "the stopped execution is still running"
            time.sleep(0.01)
        return status


def test_with_the_fix_an_execution_stopped_as_soon_as_it_started_is_aborted():
    assert _stop_as_soon_as_started(fixed=True) == "ABORTED"


def test_moto_still_fails_a_stop_that_comes_before_the_execution_thread_is_ready():
    with pytest.raises(AttributeError, match="set_stop"):
        status = _stop_as_soon_as_started(fixed=False)
        assert status != "ABORTED", "moto stops an execution that has just started: drop the fix"


def _visibility_answers(*, fixed: bool) -> list[object]:
    import boto3
    from botocore.exceptions import ClientError
    from moto import mock_aws

    with mock_aws(), contextlib.ExitStack() as stack:
        if fixed:
            for patch in moto_fixes._sqs():
                stack.enter_context(patch)
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="q", Attributes={"VisibilityTimeout": "0"})["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="a")
        first = sqs.receive_message(QueueUrl=url)["Messages"][0]["ReceiptHandle"]
        second = sqs.receive_message(QueueUrl=url)["Messages"][0]["ReceiptHandle"]
        answers: list[object] = []
        # The current handle, an earlier one of the same message, one never issued, beyond 12 hours.
        for handle, seconds in ((second, 30), (first, 60), ("not-a-handle", 30), (second, 43201)):
            try:
                sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=seconds)
                answers.append("ok")
            except ClientError as error:
                answers.append(error.response["Error"]["Code"])
            counts = sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
            answers.append(counts)
        sqs.delete_message(QueueUrl=url, ReceiptHandle=second)
        try:
            sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=second, VisibilityTimeout=0)
            answers.append("ok")
        except ClientError as error:
            answers.append(error.response["Error"]["Code"])
        return answers


def test_the_indexed_visibility_change_answers_as_moto_does():
    fixed = _visibility_answers(fixed=True)
    assert fixed == _visibility_answers(fixed=False)
    assert fixed[0] == "ok" and "ok" not in (fixed[4], fixed[6], fixed[8])
