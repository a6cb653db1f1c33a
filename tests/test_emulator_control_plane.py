"""The emulator's control plane is as strict as AWS's (emulator/control_plane.py, custom_labels.py):
mapping transitions, eventually consistent ListExecutions, the execution history limit, the model
lifecycle's refusals, denied actions. Each test fails if its behaviour is taken out."""

from __future__ import annotations

import copy
import io
import json
import zipfile

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core.exceptions import JsonRESTError
from moto.sqs.models import sqs_backends

from customlabels_batch.emulator import patches
from customlabels_batch.emulator.clock import VirtualClock
from customlabels_batch.emulator.control_plane import ControlPlane, exact_queue_counts, external_update
from customlabels_batch.emulator.custom_labels import (
    BUSY,
    STARTABLE,
    STATUS_MESSAGES,
    EmulatedModel,
    ModelBehaviour,
    ModelError,
)
from customlabels_batch.emulator.event_source_mapping import EventSourceMappingEmulator
from customlabels_batch.emulator.state import Emulation

REGION = "us-east-1"
ACCOUNT = "123456789012"
PROJECT = f"arn:aws:rekognition:{REGION}:{ACCOUNT}:project/p/1700000000000"
VERSION = f"arn:aws:rekognition:{REGION}:{ACCOUNT}:project/p/version/p.v1/1700000000001"
UNKNOWN = f"arn:aws:rekognition:{REGION}:{ACCOUNT}:project/p/version/p.v9/1700000000009"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/emulated"


class World:
    """One emulation on moto, with a queue, a function and a disabled mapping of the two."""

    def __init__(self, control: ControlPlane):
        self.clock = VirtualClock()
        self.emulation = Emulation(clock=self.clock, control=control)
        self.lam = boto3.client("lambda", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.sfn = boto3.client("stepfunctions", region_name=REGION)
        self.rekognition = boto3.client("rekognition", region_name=REGION)

    def create_mapping(self) -> None:
        boto3.client("iam", region_name=REGION).create_role(
            RoleName="emulated", AssumeRolePolicyDocument="{}"
        )
        self.queue_url = self.sqs.create_queue(QueueName="images")["QueueUrl"]
        queue_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:images"
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("handler.py", "")
        function_arn = self.lam.create_function(
            FunctionName="processor",
            Runtime="python3.13",
            Role=ROLE,
            Handler="handler.handler",
            Code={"ZipFile": buffer.getvalue()},
        )["FunctionArn"]
        self.uuid = self.lam.create_event_source_mapping(
            EventSourceArn=queue_arn, FunctionName=function_arn, BatchSize=10, Enabled=False
        )["UUID"]
        # moto would invoke the function itself on new messages (needing Docker): the pollers do.
        sqs_backends[ACCOUNT][REGION].queues["images"].lambda_event_source_mappings.clear()

    def state(self) -> str:
        return self.lam.get_event_source_mapping(UUID=self.uuid)["State"]

    def update(self, **changes) -> str:
        return self.lam.update_event_source_mapping(UUID=self.uuid, **changes)["State"]

    def settle(self) -> None:
        """Let the current transition complete."""
        self.clock.sleep(self.emulation.control.mapping_transition_seconds)

    def state_machine(self, definition: dict) -> str:
        return self.sfn.create_state_machine(name="sm", definition=json.dumps(definition), roleArn=ROLE)[
            "stateMachineArn"
        ]

    def model(self, **behaviour) -> EmulatedModel:
        model = EmulatedModel(
            clock=self.clock, project_arn=PROJECT, version_arn=VERSION, behaviour=ModelBehaviour(**behaviour)
        )
        self.emulation.models[VERSION] = model
        return model

    def describe(self, **kwargs) -> list[dict]:
        return self.rekognition.describe_project_versions(ProjectArn=PROJECT, **kwargs)[
            "ProjectVersionDescriptions"
        ]


@pytest.fixture
def world(request):
    control = copy.deepcopy(getattr(request, "param", None) or ControlPlane())  # a test may change it
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}):
        world = World(control)
        try:
            with patches.applied(world.emulation):
                yield world
        finally:
            world.clock.stop()


def control(**options) -> pytest.MarkDecorator:
    """Run the test on an emulation with these ControlPlane options."""
    return pytest.mark.parametrize("world", [ControlPlane(**options)], indirect=True, ids=[",".join(options)])


def _error(call, *args, **kwargs) -> tuple[str, int]:
    """The error code and HTTP status a call fails with."""
    with pytest.raises(ClientError) as caught:
        call(*args, **kwargs)
    return caught.value.response["Error"]["Code"], caught.value.response["ResponseMetadata"]["HTTPStatusCode"]


def _code(call, *args, **kwargs) -> str:
    return _error(call, *args, **kwargs)[0]


# ---- the event-source mapping --------------------------------------------------------------------


def test_updates_pass_through_enabling_disabling_and_updating(world):
    world.create_mapping()
    with world.clock.actor():
        assert world.update(Enabled=True) == "Enabling"
        world.clock.sleep(14)
        assert world.state() == "Enabling"
        world.clock.sleep(1)
        assert world.state() == "Enabled"
        assert world.update(Enabled=False) == "Disabling"
        world.settle()
        assert world.state() == "Disabled"
        assert world.update(BatchSize=5) == "Updating"
        world.settle()
        assert world.state() == "Disabled"


def test_an_update_during_a_transition_is_resource_in_use(world):
    world.create_mapping()
    with world.clock.actor():
        world.update(Enabled=True)
        assert _error(world.update, Enabled=False) == ("ResourceInUseException", 400)
        world.settle()
        assert world.update(Enabled=False) == "Disabling"


def test_repeating_the_current_enabled_value_is_accepted_without_a_transition(world):
    world.create_mapping()
    with world.clock.actor():
        assert world.update(Enabled=False) == "Disabled"
        assert world.update(Enabled=True) == "Enabling"


@control(mapping_stuck_until=100.0)
def test_a_stuck_mapping_stays_transitional_and_refuses_updates(world):
    world.create_mapping()
    with world.clock.actor():
        world.update(Enabled=True)
        world.clock.sleep(60)
        assert world.state() == "Enabling"
        assert _code(world.update, Enabled=False) == "ResourceInUseException"
        world.clock.sleep(40)
        assert world.state() == "Enabled"


@control(denied={"lambda:UpdateEventSourceMapping"})
def test_an_external_update_transitions_as_the_api_and_ignores_the_roles_denials(world):
    world.create_mapping()
    with world.clock.actor():
        assert _error(world.update, Enabled=True) == ("AccessDeniedException", 403)
        external_update(world.emulation, world.uuid, True)
        assert world.state() == "Enabling"
        with pytest.raises(JsonRESTError) as refused:
            external_update(world.emulation, world.uuid, False)
        assert refused.value.error_type == "ResourceInUseException"
        world.settle()
        assert world.state() == "Enabled"


def test_a_step_functions_task_sees_lambda_resource_in_use(world):
    world.create_mapping()
    arn = world.state_machine(
        {
            "StartAt": "Enable",
            "States": {
                "Enable": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::aws-sdk:lambda:updateEventSourceMapping",
                    "Parameters": {"Uuid": world.uuid, "Enabled": False},
                    "Catch": [{"ErrorEquals": ["Lambda.ResourceInUseException"], "Next": "InUse"}],
                    "End": True,
                },
                "InUse": {"Type": "Pass", "End": True},
            },
        }
    )
    with world.clock.actor():
        world.update(Enabled=True)
        execution = world.sfn.start_execution(stateMachineArn=arn)["executionArn"]
        world.clock.sleep(5)
        history = world.sfn.get_execution_history(executionArn=execution)["events"]
    entered = [e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e]
    assert entered == ["Enable", "InUse"]


def _pollers(world) -> tuple[EventSourceMappingEmulator, list[float]]:
    invoked: list[float] = []

    def handler(event, context):
        invoked.append(world.clock.now())
        return {"batchItemFailures": []}

    pollers = EventSourceMappingEmulator(
        clock=world.clock,
        region=REGION,
        mapping_uuid=world.uuid,
        queue_url=world.queue_url,
        max_concurrency=2,
        handler_factory=lambda index: handler,
        timeout_seconds=60,
    )
    pollers.start()
    return pollers, invoked


def test_pollers_wait_while_the_mapping_is_enabling(world):
    world.create_mapping()
    pollers, invoked = _pollers(world)
    try:
        with world.clock.actor():
            world.sqs.send_message(QueueUrl=world.queue_url, MessageBody="{}")
            world.update(Enabled=True)
            world.clock.sleep(30)
    finally:
        pollers.stop()
    assert invoked == [15.0]  # the moment Enabling ends, not before


@pytest.mark.parametrize(
    ("world", "polls"),
    [(ControlPlane(poll_while_disabling=True), True), (ControlPlane(poll_while_disabling=False), False)],
    indirect=["world"],
    ids=["polls-while-disabling", "stops-at-disabling"],
)
def test_pollers_while_disabling_follow_the_option(world, polls):
    world.create_mapping()
    pollers, invoked = _pollers(world)
    try:
        with world.clock.actor():
            world.update(Enabled=True)
            world.settle()
            world.update(Enabled=False)
            world.clock.sleep(5)
            world.sqs.send_message(QueueUrl=world.queue_url, MessageBody="{}")
            world.clock.sleep(30)
    finally:
        pollers.stop()
    assert invoked == ([20.0] if polls else [])


# ---- Step Functions ------------------------------------------------------------------------------


def test_list_executions_lags_behind_describe_execution(world):
    arn = world.state_machine(
        {"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 10, "End": True}}}
    )

    def listed(status=None):
        kwargs = {"statusFilter": status} if status else {}
        return [e["status"] for e in world.sfn.list_executions(stateMachineArn=arn, **kwargs)["executions"]]

    with world.clock.actor():
        execution = world.sfn.start_execution(stateMachineArn=arn)["executionArn"]
        assert listed() == []  # started less than 2 s ago
        assert world.sfn.describe_execution(executionArn=execution)["status"] == "RUNNING"
        world.clock.sleep(2)
        assert listed() == ["RUNNING"]
        world.clock.sleep(9)  # it ended at 10 s
        assert world.sfn.describe_execution(executionArn=execution)["status"] == "SUCCEEDED"
        assert listed() == listed("RUNNING") == ["RUNNING"]
        assert listed("SUCCEEDED") == []
        world.clock.sleep(1)
        assert listed() == listed("SUCCEEDED") == ["SUCCEEDED"]
        assert listed("RUNNING") == []


@control(history_event_limit=200)
def test_an_execution_reaching_the_history_limit_fails(world):
    arn = world.state_machine(
        {
            "StartAt": "Pass",
            "States": {
                "Pass": {"Type": "Pass", "Next": "Wait"},
                "Wait": {"Type": "Wait", "Seconds": 1, "Next": "Pass"},
            },
        }
    )
    with world.clock.actor():
        execution = world.sfn.start_execution(stateMachineArn=arn)["executionArn"]
        world.clock.sleep(120)  # about 50 loops of 4 events fill the history
        described = world.sfn.describe_execution(executionArn=execution)
        if described["status"] == "RUNNING":
            world.sfn.stop_execution(executionArn=execution)
    assert (described["status"], described.get("error")) == ("FAILED", "States.Runtime")
    assert "maximum number of history events (200)" in described["cause"]
    events = world.sfn.get_execution_history(executionArn=execution, maxResults=1000)["events"]
    assert len(events) == 200
    assert events[-1]["type"] == "ExecutionFailed"


# ---- the Custom Labels model ----------------------------------------------------------------------


def _detect(world, arn):
    return world.rekognition.detect_custom_labels(
        ProjectVersionArn=arn, Image={"S3Object": {"Bucket": "images", "Name": "k.jpg"}}
    )


def _start(world, arn=VERSION):
    return world.rekognition.start_project_version(ProjectVersionArn=arn, MinInferenceUnits=1)


def _stop(world, arn=VERSION):
    return world.rekognition.stop_project_version(ProjectVersionArn=arn)


def test_an_unknown_model_version_is_resource_not_found(world):
    world.model()
    assert _code(_detect, world, UNKNOWN) == "ResourceNotFoundException"  # not moto's canned labels
    assert _code(_start, world, UNKNOWN) == "ResourceNotFoundException"
    assert _code(_stop, world, UNKNOWN) == "ResourceNotFoundException"
    assert world.describe(VersionNames=["p.v9"]) == []
    unknown_project = f"arn:aws:rekognition:{REGION}:{ACCOUNT}:project/q/1700000000000"
    assert _code(world.rekognition.describe_project_versions, ProjectArn=unknown_project) == (
        "ResourceNotFoundException"
    )


def test_a_deleted_model_is_resource_not_found_and_gone_from_describe(world):
    model = world.model(start_seconds=0)
    model.start_externally(1)
    with pytest.raises(ModelError) as refused:
        model.delete()  # AWS: stop it first
    assert refused.value.code == "ResourceInUseException"
    model.set_status("STOPPED")
    model.delete()
    assert world.describe() == []
    assert _code(_detect, world, VERSION) == "ResourceNotFoundException"
    assert _code(_start, world, VERSION) == "ResourceNotFoundException"
    assert _code(_stop, world, VERSION) == "ResourceNotFoundException"


@pytest.mark.parametrize("status", sorted(STATUS_MESSAGES))
def test_start_works_from_startable_statuses_only(world, status):
    model = world.model(initial_status=status)
    assert world.describe()[0]["Status"] == status
    if status in STARTABLE:
        assert _start(world)["Status"] == "STARTING"
    else:
        expected = "ResourceInUseException" if status in BUSY else "InvalidParameterException"
        assert _code(_start, world) == expected
        assert model.status() == status


@pytest.mark.parametrize(
    ("world", "refused"),
    [(ControlPlane(), False), (ControlPlane(stop_refused_while_starting_seconds=60), True)],
    indirect=["world"],
    ids=["aws-documented", "refused-early"],
)
def test_stop_while_starting_follows_the_option(world, refused):
    model = world.model(start_seconds=600)
    with world.clock.actor():
        _start(world)
        world.clock.sleep(10)
        if refused:
            assert _code(_stop, world) == "ResourceInUseException"
            world.clock.sleep(50)
        assert _stop(world)["Status"] == "STOPPING"
    assert model.status() == "STOPPING"


@control(denied={"rekognition:StopProjectVersion"})
def test_a_denied_action_is_access_denied_and_others_work(world):
    world.model(start_seconds=0)
    _start(world)
    assert _code(_stop, world) == "AccessDeniedException"
    world.emulation.control.denied.clear()  # options are read at call time: a fault may lift it
    assert _stop(world)["Status"] == "STOPPING"


def test_an_external_start_with_four_units_shows_in_describe(world):
    model = world.model(start_seconds=300)
    with world.clock.actor():
        model.start_externally(4)
        [described] = world.describe()
        assert (described["Status"], described["MinInferenceUnits"]) == ("STARTING", 4)
        world.clock.sleep(300)
        assert world.describe()[0]["Status"] == "RUNNING"
        model.stop_externally()
        assert world.describe()[0]["Status"] == "STOPPING"
    assert not model.calls  # nothing the pipeline called


def test_an_already_running_external_start_is_running_at_once(world):
    model = world.model()
    model.start_externally(4, 6, already_running=True)
    [described] = world.describe()
    assert (described["Status"], described["MinInferenceUnits"], described["MaxInferenceUnits"]) == (
        "RUNNING",
        4,
        6,
    )
    assert _code(_start, world) == "ResourceInUseException"


# ---- Lambda's timeout and S3's data plane ---------------------------------------------------------


def test_an_invocation_is_cut_off_at_its_timeout_and_its_batch_comes_back(world):
    world.create_mapping()
    world.sqs.set_queue_attributes(QueueUrl=world.queue_url, Attributes={"VisibilityTimeout": "100"})
    seen: list[tuple[float, int]] = []

    def handler(event, context):
        seen.append((world.clock.now(), context.get_remaining_time_in_millis()))
        world.clock.sleep(45)
        seen.append((world.clock.now(), context.get_remaining_time_in_millis()))
        try:
            world.clock.sleep(45)  # past the 60 s timeout: the runtime is stopped in its sleep
        except Exception:  # the handler cannot catch its own timeout
            seen.append((world.clock.now(), -1))
        raise AssertionError("unreachable: the invocation ended at its timeout")

    pollers = EventSourceMappingEmulator(
        clock=world.clock,
        region=REGION,
        mapping_uuid=world.uuid,
        queue_url=world.queue_url,
        max_concurrency=1,
        handler_factory=lambda index: handler,
        timeout_seconds=60,
    )
    pollers.start()
    try:
        with world.clock.actor():
            world.sqs.send_message(QueueUrl=world.queue_url, MessageBody="{}")
            world.update(Enabled=True)
            world.clock.sleep(130)
    finally:
        pollers.stop()
    # Invoked when Enabling ended (15 s), told 60 s were left, then 15 s; stopped at 75 s. The message
    # was not deleted: it came back after the visibility timeout (115 s).
    times = [t for t, _ in seen]
    assert times == pytest.approx([15.0, 60.0, 115.0, 160.0], abs=0.01)
    assert [left for _, left in seen] == [60_000, 15_000, 60_000, 15_000]
    assert pollers.stats["timeouts"] >= 1
    assert pollers.stats["messagesDeleted"] == 0
    assert "Task timed out after 60 seconds" in pollers.errors


@pytest.fixture
def bucket(world):
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="images")
    return s3


def test_s3_refuses_keys_over_1024_bytes(world, bucket):
    bucket.put_object(Bucket="images", Key="k" * 1024, Body=b"x")
    assert _error(bucket.put_object, Bucket="images", Key="k" * 1025, Body=b"x") == ("KeyTooLongError", 400)
    # Bytes, not characters: 342 three-byte characters are 1,026 bytes.
    assert _code(bucket.put_object, Bucket="images", Key="€" * 342, Body=b"x") == "KeyTooLongError"


def test_a_missing_key_is_403_to_a_caller_without_list_bucket(world, bucket):
    assert _error(bucket.head_object, Bucket="images", Key="gone.jpg") == ("403", 403)
    assert _error(bucket.get_object, Bucket="images", Key="gone.jpg") == ("AccessDenied", 403)


@control(s3_list_bucket=True)
def test_a_missing_key_is_404_to_a_caller_with_list_bucket(world, bucket):
    assert _error(bucket.head_object, Bucket="images", Key="gone.jpg") == ("404", 404)
    assert _error(bucket.get_object, Bucket="images", Key="gone.jpg") == ("NoSuchKey", 404)


def test_denied_put_object_is_access_denied(world, bucket):
    world.emulation.control.denied.add("s3:PutObject")
    assert _error(bucket.put_object, Bucket="images", Key="a.json", Body=b"{}") == ("AccessDenied", 403)


# ---- SQS's approximate counts ----------------------------------------------------------------------


def _counts(world) -> tuple[int, int]:
    attributes = world.sqs.get_queue_attributes(
        QueueUrl=world.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def test_queue_counts_are_exact_by_default(world):
    world.create_mapping()
    with world.clock.actor():
        assert _counts(world) == (0, 0)
        world.sqs.send_message(QueueUrl=world.queue_url, MessageBody="a")
        assert _counts(world) == (1, 0)
        world.sqs.receive_message(QueueUrl=world.queue_url, VisibilityTimeout=30)
        assert _counts(world) == (0, 1)


@control(queue_counts_stale_seconds=60)
def test_queue_counts_may_come_from_a_snapshot_up_to_the_option_old(world):
    world.create_mapping()
    with world.clock.actor():
        assert _counts(world) == (0, 0)  # the snapshot is taken now
        world.sqs.send_message(QueueUrl=world.queue_url, MessageBody="a")
        world.clock.sleep(59)
        assert _counts(world) == (0, 0)  # a message sent 59 s ago is not counted yet
        world.clock.sleep(1)
        assert _counts(world) == (1, 0)
        # Other attributes are current, and the emulator's own accounting reads the truth.
        world.sqs.receive_message(QueueUrl=world.queue_url, VisibilityTimeout=300)
        assert _counts(world) == (1, 0)
        with exact_queue_counts():
            assert _counts(world) == (0, 1)
        arn = world.sqs.get_queue_attributes(QueueUrl=world.queue_url, AttributeNames=["QueueArn"])
        assert arn["Attributes"]["QueueArn"].endswith(":images")
