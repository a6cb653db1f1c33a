"""Processor: the Lambda that labels queued images, its log group and its (disabled) queue mapping."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from customlabels_batch.settings import Settings, Use
from stacks.functions import acknowledge_prefix_access, powertools_layer, python_function
from stacks.ingest import Ingest
from stacks.run_state import RunState

HANDLER = "processor.app.lambda_handler"


class Processor(Construct):
    """Function + log group + SQS event-source mapping created disabled (the state machine enables it
    only while the model is running)."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: Settings, ingest: Ingest, run_state: RunState
    ) -> None:
        super().__init__(scope, construct_id)
        bucket = ingest.bucket

        # Shared with the run recorder.
        self.powertools_layer = powertools_layer(self, config=config)
        self.function, self.role, self.log_group = python_function(
            self,
            config=config,
            use=Use.PROCESSOR,
            handler=HANDLER,
            description="Labels queued S3 images with the Rekognition Custom Labels model",
            role_description="Custom Labels batch processor: read queued images, write results, call the "
            "model",
            layer=self.powertools_layer,
            resources={
                "bucket": bucket.bucket_name,
                "runStateTable": run_state.table.table_name,
                "deadLetterQueueUrl": ingest.dead_letter_queue.queue_url,
            },
            timeout_seconds=config.processor_timeout_seconds,
            memory_mb=config.processor_memory_mb,
            tracing=lambda_.Tracing.ACTIVE,
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadInputImages",
                actions=["s3:GetObject"],
                resources=[bucket.arn_for_objects(f"{config.input_prefix}*")],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteResultAndErrorRecords",
                actions=["s3:PutObject"],
                resources=[
                    bucket.arn_for_objects(f"{config.results_prefix}*"),
                    bucket.arn_for_objects(f"{config.errors_prefix}*"),
                ],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="DetectWithTheModel",
                actions=["rekognition:DetectCustomLabels"],
                resources=[config.project_version_arn],
            )
        )

        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="CountProgress",
                actions=["dynamodb:UpdateItem"],
                resources=[run_state.table.table_arn],
                conditions={"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["progress"]}},
            )
        )
        # A retried message is marked while it is attempted (`attempt#<message id>`), so that one
        # whose attempt died with its invocation is moved to the DLQ instead of crashing another.
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="MarkRetriedMessages",
                actions=["dynamodb:UpdateItem", "dynamodb:DeleteItem"],
                resources=[run_state.table.table_arn],
                conditions={"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["attempt#*"]}},
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="MoveCrashingMessagesToTheDlq",
                actions=["sqs:SendMessage"],
                resources=[ingest.dead_letter_queue.queue_arn],
            )
        )

        # ReceiveMessage/DeleteMessage/GetQueueAttributes for the mapping, and ChangeMessageVisibility,
        # which the handler uses to retry a transient failure sooner.
        ingest.queue.grant_consume_messages(self.function)

        self.mapping = lambda_.EventSourceMapping(
            self,
            "QueueMapping",
            target=self.function,
            event_source_arn=ingest.queue.queue_arn,
            # Disabled until a run has the model RUNNING; otherwise every image would fail (and
            # burn receive counts) against a stopped model.
            enabled=False,
            batch_size=config.batch_size,
            max_concurrency=config.concurrency,
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
        for prefix in (config.input_prefix, config.results_prefix, config.errors_prefix):
            acknowledge_prefix_access(self.role, bucket, prefix)
