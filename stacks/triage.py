"""Triage: the always-on Lambda the bucket notifies of every upload under the input prefix, which queues
only what the model can judge, and the queue that keeps the events it failed on."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from constructs import Construct

from customlabels_batch.settings import (
    TRIAGE_MAX_EVENT_AGE_SECONDS,
    TRIAGE_RETRY_ATTEMPTS,
    Settings,
    Use,
)
from stacks.functions import acknowledge_prefix_access, python_function
from stacks.ingest import Ingest, last_stop_queue
from stacks.processor import Processor
from stacks.run_state import RunState

HANDLER = "triage.app.lambda_handler"
# SQS's maximum: an upload nobody triaged stays until someone has looked at it.
FAILURE_QUEUE_RETENTION = Duration.days(14)
TIMEOUT_SECONDS = 30
MEMORY_MB = 256

_NOTIFICATIONS_HANDLER_ID_PREFIX = "BucketNotificationsHandler"
_BASIC_EXECUTION_POLICY = "arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"


class Triage(Construct):
    """Bucket -> (object created under the input prefix, asynchronous invoke) -> function -> image
    queue, or an error record; events that failed every attempt -> failure queue.

    No reserved concurrency: each invocation is one S3 event and lasts milliseconds, Lambda's
    asynchronous queue absorbs a burst of uploads (throttled events are retried for up to the
    maximum event age, without using up retries), and a reservation is refused when it would leave
    the account under 100 unreserved executions (new accounts may have a limit of 10 in all)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: Settings,
        ingest: Ingest,
        processor: Processor,
        run_state: RunState,
    ) -> None:
        super().__init__(scope, construct_id)
        bucket = ingest.bucket

        self.function, self.role, self.log_group = python_function(
            self,
            config=config,
            use=Use.TRIAGE,
            handler=HANDLER,
            description="Queues uploaded images the Custom Labels model can take; records the rest",
            role_description="Custom Labels batch triage: queue candidate images, write error records",
            layer=processor.powertools_layer,
            resources={"bucket": bucket.bucket_name, "queueUrl": ingest.queue.queue_url}
            # The latency budget's wait clock lives in the run-state table.
            | ({"runStateTable": run_state.table.table_name} if config.max_wait_minutes is not None else {}),
            timeout_seconds=TIMEOUT_SECONDS,
            memory_mb=MEMORY_MB,
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteErrorRecords",
                actions=["s3:PutObject"],
                resources=[bucket.arn_for_objects(f"{config.errors_prefix}*")],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="QueueCandidateImages",
                # SendMessageBatch is authorized as sqs:SendMessage.
                actions=["sqs:SendMessage"],
                resources=[ingest.queue.queue_arn],
            )
        )

        if config.max_wait_minutes is not None:
            self.role.add_to_policy(
                iam.PolicyStatement(
                    sid="StartTheWaitClock",
                    # The latency budget's wait clock: when the first image since the last drain was queued.
                    actions=["dynamodb:UpdateItem"],
                    resources=[run_state.table.table_arn],
                )
            )

        self.failure_queue = last_stop_queue(
            self,
            "FailureQueue",
            retention=FAILURE_QUEUE_RETENTION,
            holds="the triage function's on-failure destination",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="KeepEventsThatFailed",
                # Lambda delivers to an on-failure destination with the function's role.
                actions=["sqs:SendMessage"],
                resources=[self.failure_queue.queue_arn],
            )
        )
        # The L1 resource: the L2's destinations grant GetQueueAttributes and GetQueueUrl as well.
        self.async_invoke = lambda_.CfnEventInvokeConfig(
            self,
            "AsyncInvoke",
            function_name=self.function.function_name,
            qualifier="$LATEST",
            # An event that still fails after its retries, or waits longer than the maximum age
            # (throttles, Lambda's own errors), goes to the failure queue: six hours is Lambda's
            # maximum, the longest it keeps trying before an image needs a person.
            maximum_retry_attempts=TRIAGE_RETRY_ATTEMPTS,
            maximum_event_age_in_seconds=TRIAGE_MAX_EVENT_AGE_SECONDS,
            destination_config=lambda_.CfnEventInvokeConfig.DestinationConfigProperty(
                on_failure=lambda_.CfnEventInvokeConfig.OnFailureProperty(
                    destination=self.failure_queue.queue_arn
                )
            ),
        )
        # Lambda checks the role may send to the destination when the configuration is created.
        self.async_invoke.node.add_dependency(self.role)

        # Prefix only, no suffix filter: suffix filters are case-sensitive (".JPG" != ".jpg"), and
        # the triage turns unsupported files into error records, so nothing is dropped silently.
        bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.LambdaDestination(self.function),
            s3.NotificationKeyFilter(prefix=config.input_prefix),
        )
        # The notification is configured by CDK's singleton custom-resource handler (it orders the
        # invoke permission before the bucket configuration, which a plain template cannot).
        stack = Stack.of(self)
        for child in stack.node.children:
            if child.node.id.startswith(_NOTIFICATIONS_HANDLER_ID_PREFIX):
                Validations.of(child).acknowledge(
                    Acknowledgment(
                        id=f"AwsSolutions-IAM4[Policy::{_BASIC_EXECUTION_POLICY}]",
                        reason="aws-cdk-lib's own S3-notification custom-resource handler (not "
                        "configurable): it runs once per deployment and only writes its own logs.",
                    )
                )
        acknowledge_prefix_access(self.role, bucket, config.errors_prefix)
