"""run-now, status and redrive against a stack in moto whose outputs point at real moto resources;
the model's status comes from botocore's Stubber (moto has no Custom Labels project lifecycle)."""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest.mock import patch

import boto3
import botocore.loaders
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from customlabels_batch.cli import deployed, main
from customlabels_batch.emulator import moto_fixes
from customlabels_batch.emulator.services import emulated_message_move_tasks

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
STACK = "CustomLabelsBatchPipeline"
BUCKET = "pipeline-bucket"
PROJECT_ARN = f"arn:aws:rekognition:{REGION}:{ACCOUNT}:project/my-project/1700000000000"
MODEL_ARN = f"arn:aws:rekognition:{REGION}:{ACCOUNT}:project/my-project/version/my-project.v1/1700000000001"
CREATED = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
# Pass then Succeed by default; the input can route to a Fail, or to a long Wait that keeps the
# execution RUNNING (moto runs executions on daemon threads, so an unfinished one costs nothing).
DEFINITION = {
    "StartAt": "Prepare",
    "States": {
        "Prepare": {"Type": "Pass", "Next": "Route"},
        "Route": {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.fail", "IsPresent": True, "Next": "GiveUp"},
                {"Variable": "$.hold", "IsPresent": True, "Next": "Hold"},
            ],
            "Default": "Done",
        },
        "Hold": {"Type": "Wait", "Seconds": 600, "Next": "Done"},
        "GiveUp": {"Type": "Fail", "Error": "BatchRunFailed", "Cause": "The run failed and was cleaned up."},
        "Done": {"Type": "Succeed"},
    },
}
STATE_LINE = re.compile(r"^\d\d:\d\d:\d\d  (\w+)$", re.MULTILINE)
NAME = r"manual-\d{8}T\d{6}\.\d{3}Z"
AWS_ENVIRONMENT = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


@dataclass
class Pipeline:
    """The moto resources behind the stack's outputs, and what the model stub will answer."""

    session: boto3.Session
    queue_url: str
    dlq_url: str
    queue_arn: str
    dlq_arn: str
    state_machine_arn: str
    mapping_uuid: str
    rekognition: Stubber

    def client(self, service: str) -> Any:
        return self.session.client(service)

    def model_is(self, status: str, *, min_units: int | None = None, max_units: int | None = None) -> None:
        """The next status call finds the model in `status` (request and answer shapes checked
        against the Rekognition service model by the Stubber)."""
        self.rekognition.add_response(
            "describe_projects",
            {
                "ProjectDescriptions": [
                    {"ProjectArn": PROJECT_ARN, "CreationTimestamp": CREATED, "Status": "CREATED"}
                ]
            },
            {"ProjectNames": ["my-project"]},
        )
        version: dict[str, Any] = {
            "ProjectVersionArn": MODEL_ARN,
            "CreationTimestamp": CREATED,
            "Status": status,
            "StatusMessage": f"The model is {status.lower()}.",
        }
        if min_units is not None:
            version["MinInferenceUnits"] = min_units
        if max_units is not None:
            version["MaxInferenceUnits"] = max_units
        self.rekognition.add_response(
            "describe_project_versions",
            {"ProjectVersionDescriptions": [version]},
            {"ProjectArn": PROJECT_ARN, "VersionNames": ["my-project.v1"]},
        )

    def count(self, queue_url: str) -> int:
        """Every message in the queue: visible, in flight (received, not deleted) and delayed."""
        attributes = self.client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])[
            "Attributes"
        ]
        return sum(int(attributes[name]) for name in deployed.QUEUE_COUNT_ATTRIBUTES)

    def start(self, execution_input: dict[str, Any], name: str) -> str:
        return self.client("stepfunctions").start_execution(
            stateMachineArn=self.state_machine_arn, name=name, input=json.dumps(execution_input)
        )["executionArn"]

    def wait_until_finished(self, execution_arn: str) -> dict[str, Any]:
        sfn = self.client("stepfunctions")
        deadline = time.monotonic() + 10
        while (execution := sfn.describe_execution(executionArn=execution_arn))["status"] == "RUNNING":
            assert time.monotonic() < deadline, "moto did not finish the execution"
            time.sleep(0.02)
        return execution


def create_stack(session: boto3.Session, name: str, outputs: dict[str, str]) -> None:
    """A stack with the given literal outputs; its one resource is the notification topic."""
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {
            "NotificationTopicArn": {"Value": {"Ref": "Topic"}},
            **{key: {"Value": value} for key, value in outputs.items()},
        },
    }
    session.client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))


def lambda_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return {'batchItemFailures': []}\n")
    return buffer.getvalue()


@pytest.fixture(scope="module", autouse=True)
def service_models_parsed_once() -> Iterator[None]:
    """Every boto3 session here, the tests' and the CLI's, shares one loader, so the service models
    are parsed once per module rather than once per session (most of each test's time otherwise)."""
    loader = botocore.loaders.create_loader()
    with patch("botocore.session.create_loader", return_value=loader):
        yield


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in AWS_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.fixture
def pipeline(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    config = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
    # The tests stop held executions at once; moto fails a stop that beats the execution's thread.
    [stop_right_after_start] = moto_fixes._stop_right_after_start()
    with mock_aws(config=config), emulated_message_move_tasks(), stop_right_after_start:
        session = boto3.Session(region_name=REGION)
        session.client("s3").create_bucket(Bucket=BUCKET)
        sqs = session.client("sqs")
        dlq_url = sqs.create_queue(QueueName="images-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        redrive_policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"})
        queue_url = sqs.create_queue(QueueName="images", Attributes={"RedrivePolicy": redrive_policy})[
            "QueueUrl"
        ]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        triage_failures_url = sqs.create_queue(QueueName="triage-failures")["QueueUrl"]
        role_arn = session.client("iam").create_role(RoleName="pipeline", AssumeRolePolicyDocument="{}")[
            "Role"
        ]["Arn"]
        state_machine_arn = session.client("stepfunctions").create_state_machine(
            name="batch-run", definition=json.dumps(DEFINITION), roleArn=role_arn
        )["stateMachineArn"]
        lambda_client = session.client("lambda")
        lambda_client.create_function(
            FunctionName="processor",
            Runtime="python3.12",
            Role=role_arn,
            Handler="app.handler",
            Code={"ZipFile": lambda_zip()},
        )
        mapping_uuid = lambda_client.create_event_source_mapping(
            EventSourceArn=queue_arn, FunctionName="processor", Enabled=False, BatchSize=10
        )["UUID"]
        create_stack(
            session,
            STACK,
            {
                "BucketName": BUCKET,
                "InputPrefix": "incoming/",
                "ResultsPrefix": "results/",
                "ErrorsPrefix": "errors/",
                "RunsPrefix": "runs/",
                "QueueUrl": queue_url,
                "DeadLetterQueueUrl": dlq_url,
                "TriageFailureQueueUrl": triage_failures_url,
                "StateMachineArn": state_machine_arn,
                "EventSourceMappingUuid": mapping_uuid,
                "ProcessorFunctionName": "processor",
                "ProjectVersionArn": MODEL_ARN,
            },
        )

        rekognition = session.client("rekognition")
        make_client = deployed.client
        monkeypatch.setattr(
            deployed,
            "client",
            lambda session, service: (
                rekognition if service == "rekognition" else make_client(session, service)
            ),
        )
        with Stubber(rekognition) as stubber:
            yield Pipeline(
                session=session,
                queue_url=queue_url,
                dlq_url=dlq_url,
                queue_arn=queue_arn,
                dlq_arn=dlq_arn,
                state_machine_arn=state_machine_arn,
                mapping_uuid=mapping_uuid,
                rekognition=stubber,
            )
            stubber.assert_no_pending_responses()


@pytest.fixture
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Following polls every 10 ms of real time (moto runs the execution on its own thread)."""
    monkeypatch.setattr(deployed, "_sleep", lambda seconds: time.sleep(0.01))


# --------------------------------------------------------------------------------------------------
# run-now


def test_run_now_starts_a_manual_execution_and_prints_its_arn_and_console_link(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run-now"]) == 0

    out = capsys.readouterr().out
    executions = pipeline.client("stepfunctions").list_executions(stateMachineArn=pipeline.state_machine_arn)[
        "executions"
    ]
    assert len(executions) == 1
    arn = executions[0]["executionArn"]
    assert re.fullmatch(NAME, executions[0]["name"])
    described = pipeline.client("stepfunctions").describe_execution(executionArn=arn)
    assert json.loads(described["input"]) == {"trigger": "manual"}
    assert out.splitlines() == [
        f"Started execution {arn}",
        f"Console: https://{REGION}.console.aws.amazon.com/states/home?region={REGION}"
        f"#/v2/executions/details/{arn}",
    ]


def test_run_now_passes_the_given_input(pipeline: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run-now", "--input", '{"trigger": "backfill", "note": "after outage"}']) == 0

    arn = capsys.readouterr().out.splitlines()[0].removeprefix("Started execution ")
    described = pipeline.client("stepfunctions").describe_execution(executionArn=arn)
    assert json.loads(described["input"]) == {"trigger": "backfill", "note": "after outage"}


def test_run_now_rejects_input_that_is_not_a_json_object(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run-now", "--input", "[1, 2]"])

    assert exit_info.value.code == 2
    assert "argument --input: must be a JSON object" in capsys.readouterr().err
    assert (
        pipeline.client("stepfunctions").list_executions(stateMachineArn=pipeline.state_machine_arn)[
            "executions"
        ]
        == []
    )


def test_follow_prints_each_state_once_then_the_final_status(
    pipeline: Pipeline, quick_polls: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run-now", "--follow", "--poll-seconds", "2"]) == 0

    out = capsys.readouterr().out
    assert STATE_LINE.findall(out) == ["Prepare", "Route", "Done"]
    assert re.search(rf"^Execution {NAME} SUCCEEDED$", out, re.MULTILINE)
    assert "error:" not in out
    assert "Following (times UTC, polling every 2 s; Ctrl-C stops following, not the run)" in out.splitlines()


def test_follow_reports_a_failed_run_with_its_error_and_cause_and_exits_1(
    pipeline: Pipeline, quick_polls: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run-now", "--follow", "--input", '{"fail": true}']) == 1

    out = capsys.readouterr().out
    assert STATE_LINE.findall(out) == ["Prepare", "Route", "GiveUp"]
    lines = out.splitlines()
    assert re.fullmatch(rf"Execution {NAME} FAILED", lines[-3])
    assert lines[-2:] == ["  error: BatchRunFailed", "  cause: The run failed and was cleaned up."]


def test_ctrl_c_stops_following_but_not_the_execution(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(deployed, "_sleep", interrupt)

    assert main(["run-now", "--follow", "--input", '{"hold": true}']) == 130

    out = capsys.readouterr().out
    arn = out.splitlines()[0].removeprefix("Started execution ")
    assert out.splitlines()[-1] == (
        "Stopped following; the execution is still running: "
        f"https://{REGION}.console.aws.amazon.com/states/home?region={REGION}#/v2/executions/details/{arn}"
    )
    sfn = pipeline.client("stepfunctions")
    assert sfn.describe_execution(executionArn=arn)["status"] == "RUNNING"
    sfn.stop_execution(executionArn=arn)


def history_event(event_id: int, event_type: str, state: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "timestamp": datetime(2025, 1, 2, 3, 4, event_id, tzinfo=UTC),
        "type": event_type,
        "id": event_id,
        "previousEventId": event_id - 1,
    }
    if state and event_type.endswith("StateEntered"):
        event["stateEnteredEventDetails"] = {"name": state}
    elif state:
        event["stateExitedEventDetails"] = {"name": state}
    return event


def test_follow_reads_history_newest_first_and_stops_at_the_last_event_seen(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two polls against the real API shapes (Stubber): the second reads two pages newest first,
    stops at the page holding an event already printed, and prints only the new states."""
    arn = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:batch-run:manual-20250102T030400.000Z"
    events = {
        event["id"]: event
        for event in [
            history_event(1, "ExecutionStarted"),
            history_event(2, "PassStateEntered", "Prepare"),
            history_event(3, "PassStateExited", "Prepare"),
            history_event(4, "ChoiceStateEntered", "Route"),
            history_event(5, "ChoiceStateExited", "Route"),
            history_event(6, "SucceedStateEntered", "Done"),
            history_event(7, "SucceedStateExited", "Done"),
            history_event(8, "ExecutionSucceeded"),
        ]
    }
    sfn = boto3.client("stepfunctions", region_name=REGION)
    described = {
        "executionArn": arn,
        "stateMachineArn": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:batch-run",
        "name": "manual-20250102T030400.000Z",
        "startDate": CREATED,
    }
    history_request = {
        "executionArn": arn,
        "reverseOrder": True,
        "maxResults": 100,
        "includeExecutionData": False,
    }
    slept: list[float] = []
    monkeypatch.setattr(deployed, "_sleep", slept.append)
    with Stubber(sfn) as stubber:
        stubber.add_response("describe_execution", {**described, "status": "RUNNING"}, {"executionArn": arn})
        stubber.add_response(
            "get_execution_history", {"events": [events[3], events[2], events[1]]}, history_request
        )
        stubber.add_response(
            "describe_execution", {**described, "status": "SUCCEEDED"}, {"executionArn": arn}
        )
        stubber.add_response(
            "get_execution_history",
            {"events": [events[8], events[7], events[6]], "nextToken": "page-2"},
            history_request,
        )
        stubber.add_response(
            "get_execution_history",
            {"events": [events[5], events[4], events[3]], "nextToken": "page-3"},
            {**history_request, "nextToken": "page-2"},
        )

        assert deployed.follow_execution(sfn, arn, poll_seconds=5) == 0

        stubber.assert_no_pending_responses()
    assert slept == [5]
    assert capsys.readouterr().out.splitlines()[1:] == [
        "03:04:02  Prepare",
        "03:04:04  Route",
        "03:04:06  Done",
        "Execution manual-20250102T030400.000Z SUCCEEDED",
    ]


# --------------------------------------------------------------------------------------------------
# status


def put_run_records(pipeline: Pipeline) -> None:
    s3 = pipeline.client("s3")
    for day in range(1, 5):
        record = {
            "outcome": "COMPLETED",
            "startedAt": f"2025-01-0{day}T10:00:00Z",
            "modelRunningMinutes": 10 * day,
            "estimatedCostUsd": 0.6666 * day,
            "imagesLabeled": 100 * day,
            "errorRecords": day - 1,
            "deadLetterQueueMessages": 0,
        }
        s3.put_object(Bucket=BUCKET, Key=f"runs/2025-01-0{day}T10-00-00Z.json", Body=json.dumps(record))
    # Newest: a record with most fields missing, and one that is not JSON.
    s3.put_object(Bucket=BUCKET, Key="runs/2025-01-05T10-00-00Z.json", Body=json.dumps({"outcome": "FAILED"}))
    s3.put_object(Bucket=BUCKET, Key="runs/2025-01-06T10-00-00Z.json", Body=b"not json")
    s3.put_object(Bucket=BUCKET, Key="results/2025-01-07.json", Body=b"{}")  # outside the prefix


def test_status_shows_queues_model_mapping_executions_and_run_records(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    sqs = pipeline.client("sqs")
    for body in ("a", "b"):
        sqs.send_message(QueueUrl=pipeline.queue_url, MessageBody=body)
    sqs.send_message(QueueUrl=pipeline.dlq_url, MessageBody="poison")
    finished = pipeline.wait_until_finished(pipeline.start({"trigger": "schedule"}, "scheduled-1"))
    put_run_records(pipeline)
    pipeline.model_is("STOPPED")

    assert main(["status"]) == 0

    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"Stack {STACK} in {REGION}"
    assert re.search(r"^  images images\s+2\s+0\s+0$", out, re.MULTILINE)
    assert re.search(r"^  dead-letter images-dlq\s+1\s+0\s+0$", out, re.MULTILINE)
    assert "Model    my-project.v1 (my-project): STOPPED" in lines
    assert f"Mapping  {pipeline.mapping_uuid}: Disabled" in lines
    started = finished["startDate"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    stopped = finished["stopDate"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert re.search(rf"^  scheduled-1\s+SUCCEEDED\s+{started}\s+{stopped}$", out, re.MULTILINE)
    records = lines[lines.index(f"Recent run records (newest first, s3://{BUCKET}/runs/)") + 2 :][:5]
    assert [re.split(r"\s{2,}", line.strip()) for line in records] == [
        ["runs/2025-01-06T10-00-00Z.json", "(not a JSON run record)"],
        ["runs/2025-01-05T10-00-00Z.json", "-", "FAILED", "-", "-", "-", "-", "-"],
        [
            "runs/2025-01-04T10-00-00Z.json",
            "2025-01-04T10:00:00Z",
            "COMPLETED",
            "40",
            "$2.67",
            "400",
            "3",
            "0",
        ],
        [
            "runs/2025-01-03T10-00-00Z.json",
            "2025-01-03T10:00:00Z",
            "COMPLETED",
            "30",
            "$2.00",
            "300",
            "2",
            "0",
        ],
        [
            "runs/2025-01-02T10-00-00Z.json",
            "2025-01-02T10:00:00Z",
            "COMPLETED",
            "20",
            "$1.33",
            "200",
            "1",
            "0",
        ],
    ]
    assert "runs/2025-01-01T10-00-00Z.json" not in out
    assert [line for line in lines if line.startswith("WARNING:")] == [
        "WARNING: the dead-letter queue holds 1 message(s) that failed processing repeatedly; once the "
        "cause is fixed, `customlabels-batch redrive` puts them back on the queue"
    ]


def test_status_warns_about_a_running_model_that_no_execution_manages(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline.wait_until_finished(pipeline.start({}, "finished"))
    pipeline.model_is("RUNNING", min_units=2)

    assert main(["status"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert "Model    my-project.v1 (my-project): RUNNING, 2 inference units" in lines
    assert lines.count("  (none)") == 1  # no run records
    assert [line for line in lines if line.startswith("WARNING:")] == [
        "WARNING: the model is RUNNING but no execution is running: it is billed by the inference-unit "
        "hour with nothing to stop it. `customlabels-batch run-now` starts a run that stops it once the "
        "queue is empty, or stop it yourself: aws rekognition stop-project-version --project-version-arn "
        f"{MODEL_ARN}"
    ]


def test_status_does_not_warn_while_an_execution_manages_the_model(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    # Five newer finished runs push the running one out of the recent list: the warning must still
    # know it is running.
    holding = pipeline.start({"hold": True}, "holding")
    for index in range(5):
        pipeline.wait_until_finished(pipeline.start({}, f"quick-{index}"))
    pipeline.model_is("STARTING", min_units=1, max_units=3)

    assert main(["status"]) == 0

    out = capsys.readouterr().out
    assert (
        "Model    my-project.v1 (my-project): STARTING, 1-3 inference units (auto-scaling)"
        in out.splitlines()
    )
    assert re.findall(r"^  (quick-\d|holding)\s", out, re.MULTILINE) == [
        f"quick-{i}" for i in range(4, -1, -1)
    ]
    assert "WARNING" not in out
    pipeline.client("stepfunctions").stop_execution(executionArn=holding)


def test_status_warns_about_uploads_the_triage_gave_up_on(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    sqs = pipeline.client("sqs")
    failures_url = sqs.get_queue_url(QueueName="triage-failures")["QueueUrl"]
    sqs.send_message(QueueUrl=failures_url, MessageBody=json.dumps({"requestPayload": {"Records": []}}))
    pipeline.model_is("STOPPED")

    assert main(["status"]) == 0

    out = capsys.readouterr().out
    assert re.search(r"^  triage failures triage-failures\s+1\s+0\s+0$", out, re.MULTILINE)
    assert "WARNING: the triage gave up on 1 upload(s)" in out
    assert "`customlabels-batch reconcile` queues the images" in out


def test_status_json_has_every_section_and_keeps_warnings_off_stdout(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    sqs = pipeline.client("sqs")
    sqs.send_message(QueueUrl=pipeline.queue_url, MessageBody="delayed", DelaySeconds=60)
    sqs.send_message(QueueUrl=pipeline.dlq_url, MessageBody="poison")
    sqs.receive_message(QueueUrl=pipeline.dlq_url, VisibilityTimeout=60)  # now in flight
    pipeline.client("s3").put_object(
        Bucket=BUCKET, Key="runs/2025-01-01T10-00-00Z.json", Body=json.dumps({"outcome": "COMPLETED"})
    )
    pipeline.model_is("RUNNING", min_units=1)

    assert main(["status", "--json"]) == 0

    captured = capsys.readouterr()
    status = json.loads(captured.out)
    assert status["queues"] == {
        "queue": {"url": pipeline.queue_url, "visible": 0, "inFlight": 0, "delayed": 1, "total": 1},
        "deadLetterQueue": {"url": pipeline.dlq_url, "visible": 0, "inFlight": 1, "delayed": 0, "total": 1},
        "triageFailureQueue": {
            "url": pipeline.client("sqs").get_queue_url(QueueName="triage-failures")["QueueUrl"],
            "visible": 0,
            "inFlight": 0,
            "delayed": 0,
            "total": 0,
        },
    }
    assert status["model"] == {
        "projectVersionArn": MODEL_ARN,
        "projectName": "my-project",
        "versionName": "my-project.v1",
        "projectArn": PROJECT_ARN,
        "status": "RUNNING",
        "statusMessage": "The model is running.",
        "minInferenceUnits": 1,
        "maxInferenceUnits": None,
    }
    assert status["mapping"] == {
        "uuid": pipeline.mapping_uuid,
        "state": "Disabled",
        "stateTransitionReason": "User initiated",
    }
    assert status["executions"] == []
    assert status["executionRunning"] is False
    assert status["runRecords"] == {
        "location": f"s3://{BUCKET}/runs/",
        "records": [{"key": "runs/2025-01-01T10-00-00Z.json", "record": {"outcome": "COMPLETED"}}],
    }
    [model_warning, dlq_warning] = status["warnings"]
    assert model_warning.startswith("WARNING: the model is RUNNING but no execution is running:")
    assert dlq_warning.startswith("WARNING: the dead-letter queue holds 1 message(s) that failed")
    assert captured.err.splitlines() == status["warnings"]


# --------------------------------------------------------------------------------------------------
# redrive


class Terminal(io.StringIO):
    """Standard input as a person at a terminal would type it."""

    def isatty(self) -> bool:
        return True


def dead_letter(pipeline: Pipeline, count: int) -> set[str]:
    sqs = pipeline.client("sqs")
    bodies = {f"image-{index}" for index in range(count)}
    for body in sorted(bodies):
        sqs.send_message(QueueUrl=pipeline.dlq_url, MessageBody=body)
    return bodies


def drain(pipeline: Pipeline, queue_url: str) -> list[dict[str, Any]]:
    sqs = pipeline.client("sqs")
    received: list[dict[str, Any]] = []
    while messages := sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages", []):
        received.extend(messages)
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
        )
    return received


def test_redrive_moves_every_dead_letter_back_to_the_queue(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    bodies = dead_letter(pipeline, 11)  # more than one batch of 10
    pipeline.client("sqs").send_message(
        QueueUrl=pipeline.dlq_url,
        MessageBody="with-attribute",
        MessageAttributes={"source": {"DataType": "String", "StringValue": "s3"}},
    )

    assert main(["redrive", "--yes"]) == 0

    out = capsys.readouterr().out
    assert "Dead-letter queue images-dlq: 12 visible, 0 in flight, 0 delayed" in out
    assert "Started message move task " in out
    assert pipeline.count(pipeline.dlq_url) == 0
    moved = drain(pipeline, pipeline.queue_url)
    assert {message["Body"] for message in moved} == {*bodies, "with-attribute"}
    [with_attribute] = [message for message in moved if message["Body"] == "with-attribute"]
    assert with_attribute["MessageAttributes"] == {"source": {"DataType": "String", "StringValue": "s3"}}


def test_redrive_uses_start_message_move_task_from_the_dlq_to_the_queue(
    aws_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    queue_url = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/images"
    dlq_url = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/images-dlq"
    sqs = boto3.client("sqs", region_name=REGION)
    counts = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    with Stubber(sqs) as stubber:
        stubber.add_response(
            "get_queue_attributes",
            {"Attributes": dict(zip(counts, ["3", "0", "0"], strict=True))},
            {"QueueUrl": dlq_url, "AttributeNames": counts},
        )
        stubber.add_response(
            "get_queue_attributes",
            {"Attributes": {"QueueArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:images-dlq"}},
            {"QueueUrl": dlq_url, "AttributeNames": ["QueueArn"]},
        )
        stubber.add_response(
            "get_queue_attributes",
            {"Attributes": {"QueueArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:images"}},
            {"QueueUrl": queue_url, "AttributeNames": ["QueueArn"]},
        )
        stubber.add_response(
            "start_message_move_task",
            {"TaskHandle": "task-handle-1"},
            {
                "SourceArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:images-dlq",
                "DestinationArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:images",
            },
        )

        assert deployed.redrive(sqs, queue_url, dlq_url, assume_yes=True) == 0

        stubber.assert_no_pending_responses()
    assert capsys.readouterr().out.splitlines() == [
        "Dead-letter queue images-dlq: 3 visible, 0 in flight, 0 delayed",
        "Started message move task task-handle-1",
        "SQS moves them to images in the background; `customlabels-batch status` shows the counts.",
    ]


def test_redrive_without_a_terminal_requires_yes(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    dead_letter(pipeline, 2)

    assert main(["redrive"]) == 2

    captured = capsys.readouterr()
    assert captured.err == "error: redrive asks for confirmation but stdin is not a terminal: pass --yes\n"
    assert pipeline.count(pipeline.dlq_url) == 2
    assert pipeline.count(pipeline.queue_url) == 0


@pytest.mark.parametrize(
    ("answer", "moves"),
    [("n\n", False), ("", False), ("yes\n", True)],
    ids=["declined", "end-of-input", "confirmed"],
)
def test_redrive_asks_first_at_a_terminal(
    pipeline: Pipeline,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    answer: str,
    moves: bool,
) -> None:
    dead_letter(pipeline, 2)
    monkeypatch.setattr("sys.stdin", Terminal(answer))

    assert main(["redrive"]) == (0 if moves else 1)

    out = capsys.readouterr().out
    assert "Move 2 message(s) from images-dlq back to images? [y/N] " in out
    assert out.endswith("Nothing moved.\n") is not moves
    assert (pipeline.count(pipeline.dlq_url), pipeline.count(pipeline.queue_url)) == (
        (0, 2) if moves else (2, 0)
    )


def test_redrive_with_an_empty_dlq_does_nothing(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["redrive", "--yes"]) == 0

    assert capsys.readouterr().out.splitlines() == [
        "Dead-letter queue images-dlq: 0 visible, 0 in flight, 0 delayed",
        "Nothing to redrive.",
    ]


# --------------------------------------------------------------------------------------------------
# Errors a user can fix: one line on stderr, exit code 2


@pytest.mark.parametrize("argv", [["run-now"], ["status"], ["redrive", "--yes"]])
def test_a_missing_stack_is_one_line_naming_stack_and_region(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert main([*argv, "--stack-name", "Elsewhere"]) == 2

    captured = capsys.readouterr()
    assert captured.err == (
        f"error: Stack Elsewhere not found in region {REGION}; deploy it with `make deploy` "
        "or pass --stack-name\n"
    )
    assert captured.out == ""


def test_a_stack_without_the_expected_outputs_names_them(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    create_stack(pipeline.session, "OldPipeline", {"QueueUrl": pipeline.queue_url})

    assert main(["redrive", "--stack-name", "OldPipeline"]) == 2

    assert capsys.readouterr().err == (
        "error: Stack OldPipeline (status CREATE_COMPLETE) has no output DeadLetterQueueUrl: it may have "
        "been deployed from an older version of this project; redeploy it with `make deploy`\n"
    )


@pytest.fixture
def no_aws_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in AWS_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "missing-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "missing-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookups


@pytest.mark.parametrize(
    "argv",
    [["run-now"], ["status"], ["redrive", "--yes"], ["gallery"], ["export"], ["relabel"], ["reconcile"]],
)
def test_no_credentials_is_one_line_saying_how_to_configure_them(
    no_aws_configuration: None, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert main([*argv, "--region", REGION]) == 2

    captured = capsys.readouterr()
    assert captured.err == (
        "error: No usable AWS credentials (Unable to locate credentials): set AWS_PROFILE, run "
        "`aws configure` (or `aws sso login`), or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY\n"
    )
    assert captured.out == ""


def test_no_region_is_one_line_saying_how_to_set_it(
    no_aws_configuration: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status"]) == 2

    assert capsys.readouterr().err == (
        "error: No AWS region configured: pass --region, set AWS_REGION, or run `aws configure`\n"
    )
