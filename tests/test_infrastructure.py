"""The synthesized CloudFormation template: safety properties, IAM scoping, ASL parity, cdk-nag, cfn-lint.

The pipeline is synthesized once per session (plus one variant) through app.build, the same code path
`cdk synth` runs, with example ARNs and cdk.json's feature flags.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Match, Template
from pydantic.alias_generators import to_pascal

import app as cdk_app
from app import CDK_JSON
from customlabels_batch.settings import (
    CLEANUP_INPUT_PREFIX,
    QUEUE_RETENTION_DAYS,
    STATE_MACHINE_ASL,
    Settings,
    Use,
)
from stacks.functions import REPO_ROOT, powertools_layer_parameter

STACK_NAME = Settings.model_fields["stack_name"].default
REGION = "us-east-1"
ACCOUNT = "123456789012"
PROJECT_ARN = f"arn:aws:rekognition:{REGION}:{ACCOUNT}:project/my-project/1700000000000"
VERSION_ARN = f"arn:aws:rekognition:{REGION}:{ACCOUNT}:project/my-project/version/my-project.v1/1700000000000"
EXAMPLE_CONTEXT = {"projectArn": PROJECT_ARN, "projectVersionArn": VERSION_ARN}
EMAIL = "ops@example.com"
CANARY_STACK = "NagCanary"
SUBPROCESS_ENV = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}

# The only actions allowed on Resource "*": none of them supports resource-level permissions.
STAR_ONLY_ACTIONS = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
    "cloudwatch:GetMetricData",
}
EXPECTED_OUTPUTS = {
    "BucketName",
    "InputPrefix",
    "ResultsPrefix",
    "ErrorsPrefix",
    "RunsPrefix",
    "QueueUrl",
    "DeadLetterQueueUrl",
    "TriageFailureQueueUrl",
    "StateMachineArn",
    "EventSourceMappingUuid",
    "NotificationTopicArn",
    "ProcessorFunctionName",
    "ProjectVersionArn",
    "RunStateTableName",
    "BatchScheduleName",
}


@dataclass(frozen=True)
class Synthesis:
    config: Settings
    template: dict[str, Any]
    outdir: Path
    validation_error: str | None
    report: dict[str, Any]

    @property
    def assertions(self) -> Template:
        return Template.from_json(self.template)

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.template["Resources"]

    def of_type(self, cfn_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == cfn_type}

    def one(self, cfn_type: str) -> tuple[str, dict[str, Any]]:
        found = self.of_type(cfn_type)
        assert len(found) == 1, f"expected one {cfn_type}, found {sorted(found)}"
        return next(iter(found.items()))

    def logical_id(self, cfn_type: str, contains: str) -> str:
        matches = [k for k in self.of_type(cfn_type) if contains in k]
        assert len(matches) == 1, f"{cfn_type} containing {contains!r}: {matches}"
        return matches[0]

    def violations(self, stack_name: str | None = None) -> list[tuple[str, str, str]]:
        """(rule, severity, construct path) of every cdk-nag finding left unacknowledged."""
        found = []
        for plugin in self.report.get("pluginReports", []):
            for violation in plugin["violations"]:
                for resource in violation["violatingResources"]:
                    path = resource["constructPath"]
                    if stack_name is None or path.split("/")[0] == stack_name:
                        found.append((violation["ruleName"], violation["severity"], path))
        return found


def synthesize(outdir: Path, overrides: dict[str, Any], *, canary: bool = False) -> Synthesis:
    """Synthesize like `cdk synth`: cdk.json context + overrides, app.build (which adds cdk-nag)."""
    context = {**json.loads(CDK_JSON.read_text())["context"], **EXAMPLE_CONTEXT, **overrides}
    context["@aws-cdk/core:validationReportJson"] = True
    app = cdk.App(outdir=str(outdir), context=context)
    stack = cdk_app.build(app)
    if canary:
        # A queue without a DLQ or TLS-only policy: AwsSolutions must report it.
        canary_stack = cdk.Stack(app, CANARY_STACK)
        sqs.Queue(canary_stack, "NonCompliantQueue", removal_policy=cdk.RemovalPolicy.DESTROY)
    error = None
    try:
        app.synth()
    except RuntimeError as exc:  # jsii surfaces CDK's ValidationFailed as RuntimeError
        error = str(exc)
    report_file = outdir / "policy-validation-report.json"
    return Synthesis(
        config=Settings.from_context(app.node.get_all_context()),
        template=json.loads((outdir / f"{stack.artifact_id}.template.json").read_text()),
        outdir=outdir,
        validation_error=error,
        report=json.loads(report_file.read_text()) if report_file.exists() else {},
    )


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synthesis:
    return synthesize(tmp_path_factory.mktemp("cdk-out"), {})


@pytest.fixture(scope="session")
def variant(tmp_path_factory: pytest.TempPathFactory) -> Synthesis:
    """Schedule disabled and an e-mail subscriber, synthesized next to a non-compliant canary stack."""
    return synthesize(
        tmp_path_factory.mktemp("cdk-out-variant"),
        {"scheduleEnabled": "false", "notificationEmail": EMAIL},
        canary=True,
    )


def _statements(synth: Synthesis) -> list[tuple[str, dict[str, Any]]]:
    """(policy logical id, statement) for every identity policy in the template."""
    out = []
    for logical_id, policy in synth.of_type("AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            out.append((logical_id, statement))
    return out


def function_settings(variables: dict[str, Any]) -> dict[str, Any]:
    """A function's settings JSON as deployed, with each CloudFormation reference as `<ref>`."""
    value = variables["PIPELINE_SETTINGS"]
    if isinstance(value, dict):
        value = "".join(part if isinstance(part, str) else "<ref>" for part in value["Fn::Join"][1])
    return json.loads(value)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _role_statements(synth: Synthesis, role_logical_id: str) -> list[dict[str, Any]]:
    return [
        statement
        for logical_id, statement in _statements(synth)
        if {"Ref": role_logical_id} in synth.resources[logical_id]["Properties"]["Roles"]
    ]


def _granted(statements: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """action -> resources, over a list of Allow statements."""
    granted: dict[str, list[Any]] = {}
    for statement in statements:
        assert statement["Effect"] == "Allow"
        for action in _as_list(statement["Action"]):
            granted.setdefault(action, []).extend(_as_list(statement["Resource"]))
    return granted


def _object_arn(bucket_id: str, prefix: str) -> dict[str, Any]:
    return {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, f"/{prefix}*"]]}


# ---- ingest: bucket, queue, DLQ, notification -------------------------------------------------


def test_mapping_is_created_disabled_with_batch_size_concurrency_and_partial_failures(synth):
    _, mapping = synth.one("AWS::Lambda::EventSourceMapping")
    props = mapping["Properties"]
    assert props["Enabled"] is False
    assert props["BatchSize"] == synth.config.batch_size
    assert props["ScalingConfig"] == {"MaximumConcurrency": 8}  # 8 per inference unit, 1 unit
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue_id = synth.logical_id("AWS::SQS::Queue", "ImageQueue")
    assert props["EventSourceArn"] == {"Fn::GetAtt": [queue_id, "Arn"]}


def test_queue_redrives_to_dlq_after_max_receive_count(synth):
    queue_id = synth.logical_id("AWS::SQS::Queue", "ImageQueue")
    dlq_id = synth.logical_id("AWS::SQS::Queue", "DeadLetterQueue")
    assert synth.resources[queue_id]["Properties"]["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
        "maxReceiveCount": synth.config.max_receive_count,
    }


def test_queue_visibility_is_at_least_six_times_the_function_timeout(synth):
    queue_id = synth.logical_id("AWS::SQS::Queue", "ImageQueue")
    function_id = synth.logical_id("AWS::Lambda::Function", "ProcessorFunction")
    timeout = synth.resources[function_id]["Properties"]["Timeout"]
    visibility = synth.resources[queue_id]["Properties"]["VisibilityTimeout"]
    assert timeout == synth.config.processor_timeout_seconds
    assert visibility == synth.config.visibility_timeout_seconds
    assert visibility >= 6 * timeout


def test_queues_are_encrypted_tls_only_and_the_dlq_keeps_messages_longer(synth):
    queues = synth.of_type("AWS::SQS::Queue")
    assert len(queues) == 4
    retention = {
        queue_id: queue["Properties"]["MessageRetentionPeriod"] for queue_id, queue in queues.items()
    }
    # Expiry counts from the first enqueue, also in the DLQ: the DLQ must keep messages longer.
    assert retention[synth.logical_id("AWS::SQS::Queue", "ImageQueue")] == QUEUE_RETENTION_DAYS * 86400
    assert retention[synth.logical_id("AWS::SQS::Queue", "DeadLetterQueue")] == 14 * 86400
    assert QUEUE_RETENTION_DAYS < 14
    # The rules' dead-letter queue keeps an undelivered event as long as SQS allows.
    assert retention[synth.logical_id("AWS::SQS::Queue", "TriggerDlq")] == 14 * 86400
    # So does the triage's failure queue.
    assert retention[synth.logical_id("AWS::SQS::Queue", "TriageFailureQueue")] == 14 * 86400
    for queue_id, queue in queues.items():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True
        assert queue["DeletionPolicy"] == "Delete"
        synth.assertions.has_resource_properties(
            "AWS::SQS::QueuePolicy",
            {
                "Queues": [{"Ref": queue_id}],
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Principal": {"AWS": "*"},
                                    "Action": "sqs:*",
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                }
                            )
                        ]
                    )
                },
            },
        )


def test_both_buckets_are_encrypted_private_tls_only_and_retained(synth):
    buckets = synth.of_type("AWS::S3::Bucket")
    assert len(buckets) == 2
    for bucket_id, bucket in buckets.items():
        props = bucket["Properties"]
        assert props["BucketEncryption"] == {
            "ServerSideEncryptionConfiguration": [
                {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
            ]
        }
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        assert bucket["DeletionPolicy"] == "Retain"
        assert bucket["UpdateReplacePolicy"] == "Retain"
        synth.assertions.has_resource_properties(
            "AWS::S3::BucketPolicy",
            {
                "Bucket": {"Ref": bucket_id},
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Action": "s3:*",
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                }
                            )
                        ]
                    )
                },
            },
        )


def test_image_bucket_logs_access_to_the_separate_log_bucket(synth):
    image_id = synth.logical_id("AWS::S3::Bucket", "ImageBucket")
    log_id = synth.logical_id("AWS::S3::Bucket", "AccessLogBucket")
    logging = synth.resources[image_id]["Properties"]["LoggingConfiguration"]
    assert logging["DestinationBucketName"] == {"Ref": log_id}


def test_uploads_notify_the_triage_function_filtered_by_input_prefix_only(synth):
    _, notifications = synth.one("Custom::S3BucketNotifications")
    image_id = synth.logical_id("AWS::S3::Bucket", "ImageBucket")
    triage_id = synth.logical_id("AWS::Lambda::Function", "TriageFunction")
    props = notifications["Properties"]
    assert props["BucketName"] == {"Ref": image_id}
    assert props["NotificationConfiguration"] == {
        "LambdaFunctionConfigurations": [
            {
                "Events": ["s3:ObjectCreated:*"],
                # No suffix rule: ".JPG" uploads must reach the triage too.
                "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": synth.config.input_prefix}]}},
                "LambdaFunctionArn": {"Fn::GetAtt": [triage_id, "Arn"]},
            }
        ]
    }


def test_only_this_bucket_in_this_account_may_invoke_the_triage(synth):
    image_id = synth.logical_id("AWS::S3::Bucket", "ImageBucket")
    triage_id = synth.logical_id("AWS::Lambda::Function", "TriageFunction")
    [permission] = synth.of_type("AWS::Lambda::Permission").values()
    assert permission["Properties"] == {
        "Action": "lambda:InvokeFunction",
        "FunctionName": {"Fn::GetAtt": [triage_id, "Arn"]},
        "Principal": "s3.amazonaws.com",
        "SourceAccount": ACCOUNT,
        "SourceArn": {"Fn::GetAtt": [image_id, "Arn"]},
    }


def test_nothing_but_the_triage_may_send_to_the_image_queue(synth):
    """S3 no longer sends to the queue: no queue policy allows a service principal to."""
    for policy in synth.of_type("AWS::SQS::QueuePolicy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Effect"] == "Allow":
                assert statement["Principal"] != {"Service": "s3.amazonaws.com"}, statement


def test_triage_retries_twice_then_keeps_the_event_in_its_failure_queue(synth):
    triage_id = synth.logical_id("AWS::Lambda::Function", "TriageFunction")
    failures_id = synth.logical_id("AWS::SQS::Queue", "TriageFailureQueue")
    [config] = synth.of_type("AWS::Lambda::EventInvokeConfig").values()
    assert config["Properties"] == {
        "FunctionName": {"Ref": triage_id},
        "Qualifier": "$LATEST",
        "MaximumRetryAttempts": 2,
        "MaximumEventAgeInSeconds": 6 * 3600,
        "DestinationConfig": {"OnFailure": {"Destination": {"Fn::GetAtt": [failures_id, "Arn"]}}},
    }
    # Lambda checks the destination permission when it creates the configuration.
    triage_policy = synth.logical_id("AWS::IAM::Policy", "TriageRoleDefaultPolicy")
    assert triage_policy in config["DependsOn"]


def test_triage_function_configuration(synth):
    function_id = synth.logical_id("AWS::Lambda::Function", "TriageFunction")
    props = synth.resources[function_id]["Properties"]
    log_group_id = synth.logical_id("AWS::Logs::LogGroup", "Triage")
    assert props["Handler"] == "lambdas.triage.app.lambda_handler"
    assert props["Runtime"] == "python3.14"
    assert props["Timeout"] == 30
    assert props["LoggingConfig"] == {"LogGroup": {"Ref": log_group_id}}
    # No reserved concurrency (see stacks/triage.py), no tracing (no X-Ray permissions on "*").
    assert "ReservedConcurrentExecutions" not in props
    assert "TracingConfig" not in props
    variables = props["Environment"]["Variables"]
    expected = synth.config.function_environment(Use.TRIAGE, bucket="<ref>", queueUrl="<ref>")
    assert set(variables) == set(expected)
    assert variables["POWERTOOLS_SERVICE_NAME"] == "customlabels-triage"
    deployed = function_settings(variables)
    assert deployed == json.loads(expected["PIPELINE_SETTINGS"])
    assert set(deployed) == {
        "bucket",
        "queueUrl",
        "inputPrefix",
        "resultsPrefix",
        "errorsPrefix",
        "maxWaitMinutes",
    }
    queue_id = synth.logical_id("AWS::SQS::Queue", "ImageQueue")
    assert {"Ref": queue_id} in variables["PIPELINE_SETTINGS"]["Fn::Join"][1]


# ---- processor -------------------------------------------------------------------------------


def test_processor_function_configuration(synth):
    function_id = synth.logical_id("AWS::Lambda::Function", "ProcessorFunction")
    props = synth.resources[function_id]["Properties"]
    image_id = synth.logical_id("AWS::S3::Bucket", "ImageBucket")
    log_group_id = synth.logical_id("AWS::Logs::LogGroup", "Processor")
    assert props["Runtime"] == "python3.14"
    assert props["Architectures"] == ["arm64"]
    assert props["Handler"] == "lambdas.processor.app.lambda_handler"
    assert props["MemorySize"] == synth.config.processor_memory_mb
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert props["LoggingConfig"] == {"LogGroup": {"Ref": log_group_id}}
    variables = props["Environment"]["Variables"]
    expected = synth.config.function_environment(
        Use.PROCESSOR, bucket="<ref>", runStateTable="<ref>", deadLetterQueueUrl="<ref>"
    )
    assert set(variables) == set(expected)
    assert function_settings(variables) == json.loads(expected["PIPELINE_SETTINGS"])
    # The references are the image bucket's name and the run state table's.
    table_id = synth.logical_id("AWS::DynamoDB::GlobalTable", "RunStateTable")
    assert {"Ref": image_id} in variables["PIPELINE_SETTINGS"]["Fn::Join"][1]
    assert {"Ref": table_id} in variables["PIPELINE_SETTINGS"]["Fn::Join"][1]
    assert synth.resources[log_group_id]["Properties"]["RetentionInDays"] == 30


def test_powertools_layer_resolves_from_public_ssm_parameter_at_deploy_time(synth):
    function_id = synth.logical_id("AWS::Lambda::Function", "ProcessorFunction")
    (layer,) = synth.resources[function_id]["Properties"]["Layers"]
    parameter = synth.template["Parameters"][layer["Ref"]]
    assert parameter["Type"] == "AWS::SSM::Parameter::Value<String>"
    assert parameter["Default"] == powertools_layer_parameter(
        powertools_version=synth.config.powertools_version
    )
    assert parameter["Default"] == "/aws/service/powertools/python/arm64/python3.14/3.37.0"


def test_code_asset_is_the_lambdas_directory_without_caches(synth):
    function_id = synth.logical_id("AWS::Lambda::Function", "ProcessorFunction")
    s3_key = synth.resources[function_id]["Properties"]["Code"]["S3Key"]
    manifest = json.loads((synth.outdir / f"{STACK_NAME}.assets.json").read_text())
    (source,) = [
        asset["source"]
        for asset in manifest["files"].values()
        if any(d["objectKey"] == s3_key for d in asset["destinations"].values())
    ]
    assert source.get("packaging") == "zip"
    staged = synth.outdir / source["path"]
    files = {p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()}
    assert "lambdas/processor/app.py" in files  # the handler module the Handler setting names
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    assert files == {
        p.relative_to(REPO_ROOT).as_posix()
        for p in (REPO_ROOT / "lambdas").rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and p.suffix != ".pyc"
        and ".pytest_cache" not in p.parts
    }


# ---- notifications ---------------------------------------------------------------------------


ALARM_SOURCE = {
    "StringEquals": {"aws:SourceAccount": ACCOUNT},
    "ArnLike": {"aws:SourceArn": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:*"},
}


def _service_statements(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in statements if isinstance(s.get("Principal"), dict) and "Service" in s["Principal"]]


def _key_policy(synth: Synthesis) -> list[dict[str, Any]]:
    _, key = synth.one("AWS::KMS::Key")
    return key["Properties"]["KeyPolicy"]["Statement"]


def _topic_policy(synth: Synthesis) -> list[dict[str, Any]]:
    _, policy = synth.one("AWS::SNS::TopicPolicy")
    return policy["Properties"]["PolicyDocument"]["Statement"]


def test_topic_is_encrypted_with_a_rotating_customer_managed_key(synth):
    key_id, key = synth.one("AWS::KMS::Key")
    assert key["Properties"]["EnableKeyRotation"] is True
    _, topic = synth.one("AWS::SNS::Topic")
    assert topic["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    # CloudWatch (the alarms) is the one service that publishes: the state machine publishes as its
    # role, through IAM, and no rule targets the topic (see the test below).
    (service,) = _service_statements(_key_policy(synth))
    assert service["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert sorted(service["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert service["Condition"] == ALARM_SOURCE


def test_no_rule_targets_the_topic_so_eventbridge_needs_no_key_grant(synth):
    topic_id, _ = synth.one("AWS::SNS::Topic")
    rules = synth.of_type("AWS::Events::Rule")
    assert len(rules) == 1  # the clean-up rule; the schedules are EventBridge Scheduler's
    target_arns = [target["Arn"] for rule in rules.values() for target in rule["Properties"]["Targets"]]
    assert {"Ref": topic_id} not in target_arns
    for statement in _key_policy(synth) + _topic_policy(synth):
        assert "events.amazonaws.com" not in json.dumps(statement.get("Principal", {}))


def test_every_service_principal_in_the_key_and_topic_policies_is_bound_to_this_account(synth):
    """Confused-deputy protection: a service may act only for this account's own resources."""
    statements = _service_statements(_key_policy(synth)) + _service_statements(_topic_policy(synth))
    assert len(statements) == 2
    for statement in statements:
        assert statement["Effect"] == "Allow"
        condition = statement["Condition"]
        assert condition["StringEquals"]["aws:SourceAccount"] == ACCOUNT
        (source_arn,) = [v["aws:SourceArn"] for k, v in condition.items() if k.startswith("Arn")]
        assert source_arn.startswith(f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:")


def test_alarms_may_publish_to_the_topic(synth):
    """The topic policy replaces SNS's default account-wide one: without this Allow CloudWatch's
    publish is refused ("no resource-based policy allows the SNS:Publish action")."""
    topic_id, _ = synth.one("AWS::SNS::Topic")
    (service,) = _service_statements(_topic_policy(synth))
    assert service["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert service["Action"] == "sns:Publish"
    assert service["Resource"] == {"Ref": topic_id}
    assert service["Condition"] == ALARM_SOURCE


def test_topic_refuses_publishing_without_tls(synth):
    topic_id, _ = synth.one("AWS::SNS::Topic")
    synth.assertions.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "Topics": [{"Ref": topic_id}],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Action": "sns:Publish",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            },
        },
    )


def test_email_subscription_only_when_configured(synth, variant):
    assert synth.of_type("AWS::SNS::Subscription") == {}
    _, subscription = variant.one("AWS::SNS::Subscription")
    topic_id, _ = variant.one("AWS::SNS::Topic")
    assert subscription["Properties"] == {
        "Protocol": "email",
        "TopicArn": {"Ref": topic_id},
        "Endpoint": EMAIL,
    }


# ---- orchestration ---------------------------------------------------------------------------


def test_state_machine_is_standard_logged_traced_and_inlines_the_asl(synth):
    _, machine = synth.one("AWS::StepFunctions::StateMachine")
    props = machine["Properties"]
    log_group_id = synth.logical_id("AWS::Logs::LogGroup", "Orchestration")
    assert props["StateMachineType"] == "STANDARD"
    assert props["TracingConfiguration"] == {"Enabled": True}
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    assert props["LoggingConfiguration"]["Destinations"] == [
        {"CloudWatchLogsLogGroup": {"LogGroupArn": {"Fn::GetAtt": [log_group_id, "Arn"]}}}
    ]
    assert synth.resources[log_group_id]["Properties"]["RetentionInDays"] == 30
    assert json.loads(props["DefinitionString"]) == json.loads(STATE_MACHINE_ASL.read_text())


def _schedules(synthesis) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource["Properties"]
        for logical_id, resource in synthesis.of_type("AWS::Scheduler::Schedule").items()
    }


def test_the_batch_schedule_is_eventbridge_scheduler_starting_the_machine_with_schedule_trigger(synth):
    machine_id, _ = synth.one("AWS::StepFunctions::StateMachine")
    (props,) = _schedules(synth).values()  # no latency budget: no check schedule
    assert props["ScheduleExpression"] == synth.config.schedule == "rate(1 hour)"
    assert props["ScheduleExpressionTimezone"] == "UTC"
    assert props["State"] == "ENABLED"
    assert props["FlexibleTimeWindow"] == {"Mode": "OFF"}
    target = props["Target"]
    assert target["Arn"] == {"Ref": machine_id}
    assert json.loads(target["Input"]) == {"trigger": "schedule"}
    role_id = synth.logical_id("AWS::IAM::Role", "ScheduleRole")
    assert target["RoleArn"] == {"Fn::GetAtt": [role_id, "Arn"]}


def test_the_schedules_role_may_only_start_this_machine_and_dead_letter_for_this_account(synth):
    role_id = synth.logical_id("AWS::IAM::Role", "ScheduleRole")
    (trust,) = synth.resources[role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}
    machine_id, _ = synth.one("AWS::StepFunctions::StateMachine")
    dlq_id = synth.logical_id("AWS::SQS::Queue", "TriggerDlq")
    granted = _granted(_role_statements(synth, role_id))
    assert {action: sorted(map(json.dumps, resources)) for action, resources in granted.items()} == {
        "states:StartExecution": [json.dumps({"Ref": machine_id})],
        "sqs:SendMessage": [json.dumps({"Fn::GetAtt": [dlq_id, "Arn"]})],
    }
    assert "ManagedPolicyArns" not in synth.resources[role_id]["Properties"]


def test_schedules_disabled_when_schedule_enabled_is_false(variant):
    assert variant.config.schedule_enabled is False
    assert [props["State"] for props in _schedules(variant).values()] == ["DISABLED"]


BUDGET_CONTEXT = {
    "schedule": "cron(0 2 * * ? *)",
    "scheduleTimezone": "Europe/Berlin",
    "scheduleFlexibleWindowMinutes": "15",
    "maxWaitMinutes": "30",
    "startAtBacklog": "500",
    "latencyCheckMinutes": "10",
}


@pytest.fixture(scope="module")
def budget(tmp_path_factory: pytest.TempPathFactory) -> Synthesis:
    """A nightly run at 02:00 Berlin time with a latency budget on top."""
    return synthesize(tmp_path_factory.mktemp("cdk-out-budget"), BUDGET_CONTEXT)


def test_a_cron_schedule_runs_in_its_time_zone_within_its_flexible_window(budget):
    (batch,) = [
        p for p in _schedules(budget).values() if json.loads(p["Target"]["Input"])["trigger"] == "schedule"
    ]
    assert batch["ScheduleExpression"] == "cron(0 2 * * ? *)"
    assert batch["ScheduleExpressionTimezone"] == "Europe/Berlin"
    assert batch["FlexibleTimeWindow"] == {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 15}


def test_the_latency_budget_deploys_a_frequent_check_with_the_same_role_and_dead_letter_queue(budget):
    schedules = {json.loads(p["Target"]["Input"])["trigger"]: p for p in _schedules(budget).values()}
    assert set(schedules) == {"schedule", "check"}
    check = schedules["check"]
    assert check["ScheduleExpression"] == "rate(10 minutes)"
    assert check["State"] == "ENABLED"
    assert check["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert check["Target"]["RoleArn"] == schedules["schedule"]["Target"]["RoleArn"]
    assert check["Target"]["DeadLetterConfig"] == schedules["schedule"]["Target"]["DeadLetterConfig"]
    # A check that could not start is replaced by the next one: it is not retried for an hour.
    assert check["Target"]["RetryPolicy"] == {"MaximumEventAgeInSeconds": 600, "MaximumRetryAttempts": 2}
    # The rules reach the state machine as substitutions, the wait clock the triage as a setting.
    _, machine = budget.one("AWS::StepFunctions::StateMachine")
    substitutions = machine["Properties"]["DefinitionSubstitutions"]
    assert (substitutions["MaxWaitMinutes"], substitutions["StartAtBacklog"]) == ("30", "500")


def test_with_max_wait_the_triage_may_update_only_the_run_state_table(budget, synth):
    role_id = budget.logical_id("AWS::IAM::Role", "TriageRole")
    table_id, _ = budget.one("AWS::DynamoDB::GlobalTable")
    statements = {s["Sid"]: s for s in _role_statements(budget, role_id)}
    assert statements["StartTheWaitClock"]["Action"] == "dynamodb:UpdateItem"
    assert statements["StartTheWaitClock"]["Resource"] == {"Fn::GetAtt": [table_id, "Arn"]}
    function_id = budget.logical_id("AWS::Lambda::Function", "TriageFunction")
    deployed = function_settings(budget.resources[function_id]["Properties"]["Environment"]["Variables"])
    assert deployed["maxWaitMinutes"] == 30
    assert deployed["runStateTable"] == "<ref>"  # the table's name (a Ref)
    # Without a latency budget the triage has no table access at all.
    plain_role = synth.logical_id("AWS::IAM::Role", "TriageRole")
    assert not any(action.startswith("dynamodb:") for action in _granted(_role_statements(synth, plain_role)))


def test_cleanup_rule_matches_failed_timed_out_and_aborted_runs_except_cleanups(synth):
    rule_id = synth.logical_id("AWS::Events::Rule", "CleanUpRule")
    machine_id, _ = synth.one("AWS::StepFunctions::StateMachine")
    assert synth.resources[rule_id]["Properties"]["EventPattern"] == {
        "source": ["aws.states"],
        "detail-type": ["Step Functions Execution Status Change"],
        "detail": {
            "stateMachineArn": [{"Ref": machine_id}],
            "status": ["FAILED", "TIMED_OUT", "ABORTED"],
            "input": [{"anything-but": {"prefix": CLEANUP_INPUT_PREFIX}}],
        },
    }


def test_cleanup_input_starts_with_the_excluded_prefix_and_reaches_the_cleanup_route(synth):
    rule_id = synth.logical_id("AWS::Events::Rule", "CleanUpRule")
    machine_id, _ = synth.one("AWS::StepFunctions::StateMachine")
    (target,) = synth.resources[rule_id]["Properties"]["Targets"]
    assert target["Arn"] == {"Ref": machine_id}
    transformer = target["InputTransformer"]
    assert transformer["InputPathsMap"] == {
        "detail-executionArn": "$.detail.executionArn",
        "detail-status": "$.detail.status",
    }
    template = transformer["InputTemplate"]
    # Otherwise a failed clean-up run would trigger another clean-up, forever.
    assert template.startswith(CLEANUP_INPUT_PREFIX)
    # EventBridge writes a string value quoted where an unquoted placeholder stands in JSON.
    execution = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:machine:run-1"
    rendered = template.replace("<detail-executionArn>", json.dumps(execution)).replace(
        "<detail-status>", json.dumps("TIMED_OUT")
    )
    assert json.loads(rendered) == {"cleanup": {"execution": execution, "status": "TIMED_OUT"}}
    # The run reads the request and goes straight to its clean-up phase.
    start = json.loads(STATE_MACHINE_ASL.read_text())["States"]["StartRun"]["Assign"]
    assert start["phase"] == "{% $states.input.cleanup ? 'cleanup' : 'start' %}"


def test_every_trigger_retries_then_dead_letters_to_one_queue(synth):
    dlq_arn = {"Fn::GetAtt": [synth.logical_id("AWS::SQS::Queue", "TriggerDlq"), "Arn"]}
    rule_id = synth.logical_id("AWS::Events::Rule", "CleanUpRule")
    (rule_target,) = synth.resources[rule_id]["Properties"]["Targets"]
    (schedule,) = _schedules(synth).values()
    for name, target in (("clean-up rule", rule_target), ("schedule", schedule["Target"])):
        assert target["DeadLetterConfig"] == {"Arn": dlq_arn}, name
        assert target["RetryPolicy"] == {"MaximumEventAgeInSeconds": 3600, "MaximumRetryAttempts": 24}, name


def test_only_the_clean_up_rule_may_send_to_the_trigger_dead_letter_queue_by_its_policy(synth):
    """Scheduler dead-letters with the schedules' role (see its test); the queue policy admits only
    the clean-up rule, by its ARN."""
    dlq_id = synth.logical_id("AWS::SQS::Queue", "TriggerDlq")
    dlq = synth.resources[dlq_id]
    assert dlq["Properties"]["SqsManagedSseEnabled"] is True
    assert "RedrivePolicy" not in dlq["Properties"]
    policies = synth.of_type("AWS::SQS::QueuePolicy").values()
    (policy,) = [p for p in policies if p["Properties"]["Queues"] == [{"Ref": dlq_id}]]
    allows = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    rule_arn = {"Fn::GetAtt": [synth.logical_id("AWS::Events::Rule", "CleanUpRule"), "Arn"]}
    assert [s["Condition"] for s in allows] == [{"ArnEquals": {"aws:SourceArn": rule_arn}}]
    for statement in allows:
        assert statement["Principal"] == {"Service": "events.amazonaws.com"}
        assert statement["Action"] == "sqs:SendMessage"
        assert statement["Resource"] == {"Fn::GetAtt": [dlq_id, "Arn"]}


def test_the_run_lease_table_is_encrypted_on_demand_and_scoped(synth):
    _table_id, table = synth.one("AWS::DynamoDB::GlobalTable")
    props = table["Properties"]
    assert props["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["SSESpecification"]["SSEEnabled"] is True


# ---- IAM scoping -----------------------------------------------------------------------------


def test_star_resources_only_for_actions_without_resource_level_permissions(synth):
    for logical_id, statement in _statements(synth):
        if "*" in _as_list(statement["Resource"]):
            assert set(_as_list(statement["Action"])) <= STAR_ONLY_ACTIONS, logical_id


def test_every_statement_uses_exact_actions(synth):
    for logical_id, statement in _statements(synth):
        for action in _as_list(statement["Action"]):
            assert "*" not in action, (logical_id, action)


def test_processor_role_is_scoped_to_prefixes_model_queue_and_log_group(synth):
    role_id = synth.logical_id("AWS::IAM::Role", "ProcessorRole")
    image_id = synth.logical_id("AWS::S3::Bucket", "ImageBucket")
    queue_id = synth.logical_id("AWS::SQS::Queue", "ImageQueue")
    log_group_id = synth.logical_id("AWS::Logs::LogGroup", "Processor")
    table_id, _ = synth.one("AWS::DynamoDB::GlobalTable")
    queue_arn = {"Fn::GetAtt": [queue_id, "Arn"]}
    config = synth.config
    granted = _granted(_role_statements(synth, role_id))
    assert granted == {
        "logs:CreateLogStream": [{"Fn::GetAtt": [log_group_id, "Arn"]}],
        "logs:PutLogEvents": [{"Fn::GetAtt": [log_group_id, "Arn"]}],
        "s3:GetObject": [_object_arn(image_id, config.input_prefix)],
        "s3:PutObject": [
            _object_arn(image_id, config.errors_prefix),
            _object_arn(image_id, config.results_prefix),
        ],
        "rekognition:DetectCustomLabels": [VERSION_ARN],
        "xray:PutTelemetryRecords": ["*"],
        "xray:PutTraceSegments": ["*"],
        "sqs:ChangeMessageVisibility": [queue_arn],
        "sqs:DeleteMessage": [queue_arn],
        "sqs:GetQueueAttributes": [queue_arn],
        "sqs:GetQueueUrl": [queue_arn],
        "sqs:ReceiveMessage": [queue_arn],
        "dynamodb:UpdateItem": [{"Fn::GetAtt": [table_id, "Arn"]}, {"Fn::GetAtt": [table_id, "Arn"]}],
        "dynamodb:DeleteItem": [{"Fn::GetAtt": [table_id, "Arn"]}],
        # Only to move a message whose attempt died with its invocation.
        "sqs:SendMessage": [{"Fn::GetAtt": [synth.logical_id("AWS::SQS::Queue", "DeadLetterQueue"), "Arn"]}],
    }
    # The items it may write: the progress counter, and the marks on retried messages.
    conditions = {s["Sid"]: s["Condition"] for s in _role_statements(synth, role_id) if "Condition" in s}
    assert conditions.keys() == {"CountProgress", "MarkRetriedMessages"}
    assert conditions["CountProgress"] == {
        "ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["progress"]}
    }
    assert conditions["MarkRetriedMessages"] == {
        "ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["attempt#*"]}
    }
    table = synth.resources[table_id]["Properties"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiresAt", "Enabled": True}
    # No AWS managed policy (AWSLambdaBasicExecutionRole would allow logs on every log group).
    assert "ManagedPolicyArns" not in synth.resources[role_id]["Properties"]


def test_triage_role_writes_only_error_records_and_sends_only_to_its_two_queues(synth):
    role_id = synth.logical_id("AWS::IAM::Role", "TriageRole")
    image_id = synth.logical_id("AWS::S3::Bucket", "ImageBucket")
    queue_id = synth.logical_id("AWS::SQS::Queue", "ImageQueue")
    failures_id = synth.logical_id("AWS::SQS::Queue", "TriageFailureQueue")
    log_group_id = synth.logical_id("AWS::Logs::LogGroup", "Triage")
    statements = {s["Sid"]: s for s in _role_statements(synth, role_id)}
    assert statements == {
        "WriteOwnLogs": {
            "Sid": "WriteOwnLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": {"Fn::GetAtt": [log_group_id, "Arn"]},
        },
        "WriteErrorRecords": {
            "Sid": "WriteErrorRecords",
            "Effect": "Allow",
            "Action": "s3:PutObject",
            "Resource": _object_arn(image_id, synth.config.errors_prefix),
        },
        "QueueCandidateImages": {
            "Sid": "QueueCandidateImages",
            "Effect": "Allow",
            "Action": "sqs:SendMessage",
            "Resource": {"Fn::GetAtt": [queue_id, "Arn"]},
        },
        # The on-failure destination: Lambda delivers with the function's role.
        "KeepEventsThatFailed": {
            "Sid": "KeepEventsThatFailed",
            "Effect": "Allow",
            "Action": "sqs:SendMessage",
            "Resource": {"Fn::GetAtt": [failures_id, "Arn"]},
        },
    }
    assert "ManagedPolicyArns" not in synth.resources[role_id]["Properties"]


def test_state_machine_role_is_scoped_to_exact_arns(synth):
    role_id = synth.logical_id("AWS::IAM::Role", "StateMachineRole")
    _machine_id, _ = synth.one("AWS::StepFunctions::StateMachine")
    queue_id = synth.logical_id("AWS::SQS::Queue", "ImageQueue")
    dlq_id = synth.logical_id("AWS::SQS::Queue", "DeadLetterQueue")
    recorder_id = synth.logical_id("AWS::Lambda::Function", "RunRecorderFunction")
    mapping_id, _ = synth.one("AWS::Lambda::EventSourceMapping")
    topic_id, _ = synth.one("AWS::SNS::Topic")
    key_id, _ = synth.one("AWS::KMS::Key")
    table_id, _ = synth.one("AWS::DynamoDB::GlobalTable")
    table_arn = {"Fn::GetAtt": [table_id, "Arn"]}
    mapping_arn = {
        "Fn::Join": ["", [f"arn:aws:lambda:{REGION}:{ACCOUNT}:event-source-mapping:", {"Ref": mapping_id}]]
    }
    granted = _granted(_role_statements(synth, role_id))
    scoped = {action: resources for action, resources in granted.items() if action not in STAR_ONLY_ACTIONS}
    assert scoped == {
        # The queue's counts every loop; the dead-letter queue's once, as the run starts.
        "sqs:GetQueueAttributes": [{"Fn::GetAtt": [dlq_id, "Arn"]}, {"Fn::GetAtt": [queue_id, "Arn"]}],
        # Only the run recorder, by its unqualified ARN (the one the ASL invokes).
        "lambda:InvokeFunction": [{"Fn::GetAtt": [recorder_id, "Arn"]}],
        # IAM authorizes DescribeProjectVersions on the project, Start/Stop on the version.
        "rekognition:DescribeProjectVersions": [PROJECT_ARN],
        "rekognition:StartProjectVersion": [VERSION_ARN],
        "rekognition:StopProjectVersion": [VERSION_ARN],
        "lambda:GetEventSourceMapping": [mapping_arn],
        "lambda:UpdateEventSourceMapping": [mapping_arn],
        "sns:Publish": [{"Ref": topic_id}],
        "kms:Decrypt": [{"Fn::GetAtt": [key_id, "Arn"]}],
        "kms:GenerateDataKey": [{"Fn::GetAtt": [key_id, "Arn"]}],
        # The lease and the progress counter, on the one table.
        "dynamodb:PutItem": [table_arn],
        "dynamodb:GetItem": [table_arn],
        "dynamodb:DeleteItem": [table_arn],
        "dynamodb:UpdateItem": [table_arn],
    }


def test_run_recorder_role_writes_only_run_records_and_reads_only_counts(synth):
    role_id = synth.logical_id("AWS::IAM::Role", "RunRecorderRole")
    image_id = synth.logical_id("AWS::S3::Bucket", "ImageBucket")
    queue_id = synth.logical_id("AWS::SQS::Queue", "ImageQueue")
    dlq_id = synth.logical_id("AWS::SQS::Queue", "DeadLetterQueue")
    log_group_id = synth.logical_id("AWS::Logs::LogGroup", "RunRecorder")
    table_id = synth.logical_id("AWS::DynamoDB::GlobalTable", "RunStateTable")
    assert _granted(_role_statements(synth, role_id)) == {
        "logs:CreateLogStream": [{"Fn::GetAtt": [log_group_id, "Arn"]}],
        "logs:PutLogEvents": [{"Fn::GetAtt": [log_group_id, "Arn"]}],
        "s3:PutObject": [_object_arn(image_id, synth.config.runs_prefix)],
        "sqs:GetQueueAttributes": [{"Fn::GetAtt": [dlq_id, "Arn"]}, {"Fn::GetAtt": [queue_id, "Arn"]}],
        "cloudwatch:GetMetricData": ["*"],
        "dynamodb:UpdateItem": [{"Fn::GetAtt": [table_id, "Arn"]}],
    }
    # It may write only the item where the model's measured throughput is kept.
    [remember] = [s for s in _role_statements(synth, role_id) if s.get("Sid") == "RememberTheModelsCapacity"]
    assert remember["Condition"] == {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["progress"]}}
    assert "ManagedPolicyArns" not in synth.resources[role_id]["Properties"]


def test_run_recorder_environment_comes_from_the_config(synth):
    function_id = synth.logical_id("AWS::Lambda::Function", "RunRecorderFunction")
    function = synth.resources[function_id]["Properties"]
    assert function["Handler"] == "lambdas.run_recorder.app.lambda_handler"
    deployed = function_settings(function["Environment"]["Variables"])
    expected = json.loads(
        synth.config.function_settings(
            Use.RUN_RECORDER,
            bucket="<ref>",
            queueUrl="<ref>",
            deadLetterQueueUrl="<ref>",
            runStateTable="<ref>",
        )
    )
    assert deployed == expected
    assert deployed["runsPrefix"] == synth.config.runs_prefix
    # The namespace and service it counts are the ones the processor emits under.
    processor_id = synth.logical_id("AWS::Lambda::Function", "ProcessorFunction")
    processor = synth.resources[processor_id]["Properties"]["Environment"]["Variables"]
    assert deployed["processorMetricsNamespace"] == processor["POWERTOOLS_METRICS_NAMESPACE"]
    assert deployed["processorServiceName"] == processor["POWERTOOLS_SERVICE_NAME"]


def test_rules_can_only_start_this_state_machine(synth):
    machine_id, _ = synth.one("AWS::StepFunctions::StateMachine")
    role_id = synth.logical_id("AWS::IAM::Role", "EventsRole")
    assert _granted(_role_statements(synth, role_id)) == {"states:StartExecution": [{"Ref": machine_id}]}


# ---- ASL <-> template parity -----------------------------------------------------------------


def test_asl_placeholders_equal_definition_substitutions(synth):
    placeholders = set(re.findall(r"\$\{(\w+)\}", STATE_MACHINE_ASL.read_text()))
    _, machine = synth.one("AWS::StepFunctions::StateMachine")
    substitutions = machine["Properties"]["DefinitionSubstitutions"]
    # Every placeholder has a value; a value the ASL does not read is a declared state-machine setting
    # it reads through a derived one (the timeouts, as poll counts).
    assert placeholders <= set(substitutions)
    declared = {
        to_pascal(field)
        for field, info in Settings.model_fields.items()
        if "state machine" in info.json_schema_extra["usedBy"]
    }
    assert set(substitutions) - placeholders <= declared
    # LoadSettings reads each numeric setting with States.StringToJson: each must be a JSON number.
    for name in placeholders:
        if f"StringToJson('${{{name}}}')" in STATE_MACHINE_ASL.read_text():
            assert isinstance(json.loads(substitutions[name]), int), name


def test_every_aws_sdk_task_is_granted_to_the_state_machine_role(synth):
    role_id = synth.logical_id("AWS::IAM::Role", "StateMachineRole")
    granted = set(_granted(_role_statements(synth, role_id)))
    asl = json.loads(STATE_MACHINE_ASL.read_text())
    needed = set()
    for state in asl["States"].values():
        match = re.fullmatch(r"arn:aws:states:::aws-sdk:(\w+):(\w+)", state.get("Resource", ""))
        if match:
            service, action = match.groups()
            prefix = {"sfn": "states"}.get(service, service)
            needed.add(f"{prefix}:{action[0].upper()}{action[1:]}")
        if state.get("Resource") == "arn:aws:states:::lambda:invoke":
            needed.add("lambda:InvokeFunction")
    assert needed  # the ASL does use aws-sdk integrations
    assert needed <= granted, needed - granted


# ---- stack shape -----------------------------------------------------------------------------


def test_outputs_are_exactly_the_names_the_cli_looks_up(synth):
    assert set(synth.template["Outputs"]) == EXPECTED_OUTPUTS
    outputs = synth.template["Outputs"]
    assert outputs["ProjectVersionArn"]["Value"] == VERSION_ARN
    assert outputs["InputPrefix"]["Value"] == synth.config.input_prefix
    mapping_id, _ = synth.one("AWS::Lambda::EventSourceMapping")
    assert outputs["EventSourceMappingUuid"]["Value"] == {"Ref": mapping_id}


def test_no_hard_coded_physical_names(synth):
    name_property = {
        "AWS::S3::Bucket": "BucketName",
        "AWS::SQS::Queue": "QueueName",
        "AWS::Lambda::Function": "FunctionName",
        "AWS::SNS::Topic": "TopicName",
        "AWS::StepFunctions::StateMachine": "StateMachineName",
        "AWS::Logs::LogGroup": "LogGroupName",
        "AWS::IAM::Role": "RoleName",
        "AWS::Events::Rule": "Name",
        "AWS::Scheduler::Schedule": "Name",
    }
    checked = 0
    for logical_id, resource in synth.resources.items():
        if resource["Type"] in name_property:
            checked += 1
            assert name_property[resource["Type"]] not in resource["Properties"], logical_id
    assert checked >= 12


def test_removal_policies_are_explicit_for_stateful_resources(synth):
    stateful = {
        "AWS::S3::Bucket",
        "AWS::SQS::Queue",
        "AWS::Logs::LogGroup",
        "AWS::KMS::Key",
        "AWS::StepFunctions::StateMachine",
    }
    for logical_id, resource in synth.resources.items():
        if resource["Type"] in stateful:
            assert resource.get("DeletionPolicy") in ("Retain", "Delete"), logical_id


def test_stack_deploys_next_to_the_model(synth):
    # Concrete account/region from the model ARN: ARNs render literally instead of as pseudo parameters.
    assert synth.config.region == REGION and synth.config.account == ACCOUNT
    manifest = json.loads((synth.outdir / "manifest.json").read_text())
    stack_artifact = manifest["artifacts"][STACK_NAME]
    assert stack_artifact["environment"] == f"aws://{ACCOUNT}/{REGION}"


# ---- cdk-nag and cfn-lint --------------------------------------------------------------------


def test_cdk_nag_aws_solutions_reports_no_unacknowledged_findings(synth):
    assert synth.validation_error is None, synth.validation_error
    assert synth.violations() == []


def test_cdk_nag_runs_and_can_fail(variant):
    """The canary stack's queue has no DLQ and no TLS-only policy: the checks app.build registered
    must report exactly those, and nothing in the pipeline stack."""
    assert variant.validation_error is not None
    assert "ValidationFailed" in variant.validation_error
    assert sorted(rule for rule, _, _ in variant.violations(CANARY_STACK)) == [
        "AwsSolutions-SQS3",
        "AwsSolutions-SQS4",
    ]
    assert variant.violations(STACK_NAME) == []


def test_every_acknowledgement_hides_a_real_finding(tmp_path, monkeypatch):
    """With acknowledgements switched off the checks report exactly the acknowledged findings:
    none is stale, and the checks do inspect the pipeline stack."""
    monkeypatch.setattr(cdk.Validations, "acknowledge", lambda self, *rules: None)
    unacknowledged = synthesize(tmp_path, {})
    stack = STACK_NAME
    bucket_arn = "<ImageBucket.Arn>"
    processor_policy = f"{stack}/Processor/Role/DefaultPolicy/Resource"
    recorder_policy = f"{stack}/RunRecorder/Role/DefaultPolicy/Resource"
    basic_execution = "arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    # By construct path and rule, with CDK's logical-ID hashes left out.
    found = [
        (
            re.sub(r"<IngestImageBucket[0-9A-F]{8}\.Arn>", "<ImageBucket.Arn>", rule),
            re.sub(r"BucketNotificationsHandler[0-9a-f]+/", "BucketNotificationsHandler/", path),
        )
        for rule, _, path in unacknowledged.violations()
    ]
    assert sorted(found) == sorted(
        [
            (
                f"AwsSolutions-IAM4[Policy::{basic_execution}]",
                f"{stack}/BucketNotificationsHandler/Role/Resource",
            ),
            (
                f"AwsSolutions-IAM5[Resource::{bucket_arn}/errors/*]",
                f"{stack}/Triage/Role/DefaultPolicy/Resource",
            ),
            ("AwsSolutions-SQS3", f"{stack}/Triage/FailureQueue/Resource"),
            (f"AwsSolutions-IAM5[Resource::{bucket_arn}/incoming/*]", processor_policy),
            (f"AwsSolutions-IAM5[Resource::{bucket_arn}/results/*]", processor_policy),
            (f"AwsSolutions-IAM5[Resource::{bucket_arn}/errors/*]", processor_policy),
            ("AwsSolutions-IAM5[Resource::*]", processor_policy),
            (f"AwsSolutions-IAM5[Resource::{bucket_arn}/runs/*]", recorder_policy),
            ("AwsSolutions-IAM5[Resource::*]", recorder_policy),
            (
                "AwsSolutions-IAM5[Resource::*]",
                f"{stack}/Orchestration/StateMachine/Role/DefaultPolicy/Resource",
            ),
            # An EventBridge target's DLQ, which cdk-nag does not recognize as one.
            ("AwsSolutions-SQS3", f"{stack}/Orchestration/TriggerDlq/Resource"),
        ]
    )


def test_a_stack_with_a_latency_budget_has_no_unacknowledged_findings_either(budget):
    assert budget.validation_error is None, budget.validation_error
    assert budget.violations() == []


@pytest.mark.parametrize("synthesis", ["synth", "budget"])
def test_cfn_lint_reports_no_errors(synthesis, request, tmp_path):
    from cfnlint.api import ManualArgs, lint_file

    template_file = tmp_path / "template.json"
    template_file.write_text(json.dumps(request.getfixturevalue(synthesis).template))
    matches = lint_file(template_file, config=ManualArgs(regions=[REGION]))
    errors = [f"{m.rule.id}: {m.message}" for m in matches if m.rule.id.startswith("E")]
    assert errors == []


# ---- configuration errors --------------------------------------------------------------------


def _run_app(context: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    env = {**SUBPROCESS_ENV, "CDK_CONTEXT_JSON": json.dumps(context), "CDK_OUTDIR": "/nonexistent"}
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "app.py")],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("context", "key"),
    [
        ({"projectArn": PROJECT_ARN}, "projectVersionArn"),
        ({"projectArn": "arn:aws:s3:::not-a-project", "projectVersionArn": VERSION_ARN}, "projectArn"),
    ],
    ids=["missing-version-arn", "malformed-project-arn"],
)
def test_app_exits_1_with_one_line_naming_the_key(context, key):
    result = _run_app(context)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert key in lines[0]
    assert "Traceback" not in result.stderr
