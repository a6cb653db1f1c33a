"""Processor: the Lambda that labels queued images, its log group and its (disabled) queue mapping."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from stacks.functions import acknowledge_prefix_access, powertools_layer_parameter, python_function

HANDLER = "processor.app.lambda_handler"


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

        layer_arn = ssm.StringParameter.value_for_string_parameter(
            self, powertools_layer_parameter(powertools_version=powertools_version)
        )
        # Shared with the run recorder.
        self.powertools_layer = lambda_.LayerVersion.from_layer_version_arn(
            self, "PowertoolsLayer", layer_arn
        )
        self.function, self.role, self.log_group = python_function(
            self,
            handler=HANDLER,
            description="Labels queued S3 images with the Rekognition Custom Labels model",
            role_description="Custom Labels batch processor: read queued images, write results, call the "
            "model",
            layers=[self.powertools_layer],
            environment=environment,
            timeout_seconds=timeout_seconds,
            memory_mb=memory_mb,
            tracing=lambda_.Tracing.ACTIVE,
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
            acknowledge_prefix_access(self.role, bucket, prefix)
