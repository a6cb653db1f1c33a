"""Ingest: the image bucket, its access-log bucket, and the queue (with DLQ) its uploads land in."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from customlabels_batch.settings import DEAD_LETTER_RETENTION_DAYS, QUEUE_RETENTION_DAYS, Settings

_NOTIFICATIONS_HANDLER_ID_PREFIX = "BucketNotificationsHandler"
_BASIC_EXECUTION_POLICY = "arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"


class Ingest(Construct):
    """Bucket -> (object created under the input prefix) -> queue -> DLQ after max receives."""

    def __init__(self, scope: Construct, construct_id: str, *, config: Settings) -> None:
        super().__init__(scope, construct_id)

        self.access_log_bucket = s3.Bucket(
            self,
            "AccessLogBucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            # Access logs are the audit trail of who read or wrote images: keep them with the data.
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.bucket = s3.Bucket(
            self,
            "ImageBucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_log_bucket,
            server_access_logs_prefix="image-bucket/",
            # Images and results are the user's data: deleting the stack must not delete them.
            removal_policy=RemovalPolicy.RETAIN,
        )

        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(DEAD_LETTER_RETENTION_DAYS),
            # Queues hold pointers to images that stay in the bucket; nothing is lost with them.
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.queue = sqs.Queue(
            self,
            "ImageQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(QUEUE_RETENTION_DAYS),
            visibility_timeout=Duration.seconds(config.visibility_timeout_seconds),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letter_queue, max_receive_count=config.max_receive_count
            ),
            removal_policy=RemovalPolicy.DESTROY,
        )

        # Prefix only, no suffix filter: suffix filters are case-sensitive (".JPG" != ".jpg"), and
        # the processor turns unsupported files into error records, so nothing is dropped silently.
        self.bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.SqsDestination(self.queue),
            s3.NotificationKeyFilter(prefix=config.input_prefix),
        )
        # The notification is configured by CDK's singleton custom-resource handler (it orders the
        # queue policy before the bucket configuration, which a plain template cannot).
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
