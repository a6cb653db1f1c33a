"""Processor: the Lambda that labels queued images, its log group and its (disabled) queue mapping."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from stacks.config import REPO_ROOT

# The newest runtime both cdk-nag (AwsSolutions-L1) and the Powertools v3 public layer support.
RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.ARM_64
HANDLER = "processor.app.lambda_handler"
LAMBDA_CODE_DIR = REPO_ROOT / "lambdas"
LOG_RETENTION = logs.RetentionDays.ONE_MONTH


def powertools_layer_parameter(*, powertools_version: str) -> str:
    """Public SSM parameter AWS publishes for each Powertools release, e.g.
    /aws/service/powertools/python/arm64/python3.14/3.37.0 -> the layer version ARN in that region."""
    arch = "arm64" if ARCHITECTURE.name == lambda_.Architecture.ARM_64.name else "x86_64"
    return f"/aws/service/powertools/python/{arch}/{RUNTIME.name}/{powertools_version}"


class Processor(Construct):
    """Function + log group + SQS event-source mapping created disabled (the state machine enables it
    only while the model is running)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: s3.IBucket,
        queue: sqs.IQueue,
        environment: dict[str, str],
        input_prefix: str,
        results_prefix: str,
        errors_prefix: str,
        project_version_arn: str,
        timeout_seconds: int,
        memory_mb: int,
        batch_size: int,
        max_concurrency: int,
        powertools_version: str,
    ) -> None:
        super().__init__(scope, construct_id)

        self.log_group = logs.LogGroup(
            self,
            "LogGroup",
            retention=LOG_RETENTION,
            removal_policy=RemovalPolicy.DESTROY,
        )

        # An explicit role instead of CDK's default, which attaches the AWS managed
        # AWSLambdaBasicExecutionRole (log writes to every log group in the account).
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Custom Labels batch processor: read queued images, write results, call the model",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteOwnLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadInputImages",
                actions=["s3:GetObject"],
                resources=[bucket.arn_for_objects(f"{input_prefix}*")],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteResultAndErrorRecords",
                actions=["s3:PutObject"],
                resources=[
                    bucket.arn_for_objects(f"{results_prefix}*"),
                    bucket.arn_for_objects(f"{errors_prefix}*"),
                ],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="DetectWithTheModel",
                actions=["rekognition:DetectCustomLabels"],
                resources=[project_version_arn],
            )
        )

        layer_arn = ssm.StringParameter.value_for_string_parameter(
            self, powertools_layer_parameter(powertools_version=powertools_version)
        )
        # Shared with the run recorder.
        self.powertools_layer = lambda_.LayerVersion.from_layer_version_arn(
            self, "PowertoolsLayer", layer_arn
        )
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=HANDLER,
            code=lambda_code(),
            layers=[self.powertools_layer],
            timeout=Duration.seconds(timeout_seconds),
            memory_size=memory_mb,
            environment=environment,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            role=self.role,
            description="Labels queued S3 images with the Rekognition Custom Labels model",
        )

        # ReceiveMessage/DeleteMessage/GetQueueAttributes for the mapping, and ChangeMessageVisibility,
        # which the handler uses to retry a transient failure sooner.
        queue.grant_consume_messages(self.function)

        self.mapping = lambda_.EventSourceMapping(
            self,
            "QueueMapping",
            target=self.function,
            event_source_arn=queue.queue_arn,
            # Disabled until a run has the model RUNNING; otherwise every image would fail (and
            # burn receive counts) against a stopped model.
            enabled=False,
            batch_size=batch_size,
            max_concurrency=max_concurrency,
            report_batch_item_failures=True,
        )
        # Make sure the queue permissions exist before the mapping is validated.
        self.mapping.node.add_dependency(self.role)

        Validations.of(self.role).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="X-Ray tracing (tracing ACTIVE): xray:PutTraceSegments and "
                "xray:PutTelemetryRecords support no resource-level permissions.",
            )
        )
        for prefix in (input_prefix, results_prefix, errors_prefix):
            Validations.of(self.role).acknowledge(
                Acknowledgment(
                    id=f"AwsSolutions-IAM5[Resource::<{bucket_logical_id(bucket)}.Arn>/{prefix}*]",
                    reason=f"Object access is limited to the '{prefix}' prefix of the pipeline's own "
                    "bucket; object keys are not known in advance.",
                )
            )


def lambda_code() -> lambda_.Code:
    """One asset for both functions: the `lambdas/` directory, each function naming its handler."""
    return lambda_.Code.from_asset(
        str(LAMBDA_CODE_DIR), exclude=["**/__pycache__", "**/*.pyc", "**/.pytest_cache"]
    )


def bucket_logical_id(bucket: s3.IBucket) -> str:
    cfn = bucket.node.default_child
    return Stack.of(bucket).get_logical_id(cfn)
