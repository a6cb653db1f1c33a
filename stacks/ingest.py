"""Ingest: the image bucket, its access-log bucket, and the queue (with DLQ) the triage puts images in."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Validations
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from customlabels_batch.settings import DEAD_LETTER_RETENTION_DAYS, QUEUE_RETENTION_DAYS, Settings


class Ingest(Construct):
    """Bucket; queue -> DLQ after max receives. The triage (stacks/triage.py) connects them."""

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


def last_stop_queue(scope: Construct, construct_id: str, *, retention: Duration, holds: str) -> sqs.Queue:
    """An encrypted, TLS-only queue where undeliverable events end (a rule target's or an asynchronous
    invoke's dead-letter queue): cdk-nag only recognizes queue and Lambda DLQs as such, and a
    dead-letter queue has no DLQ of its own."""
    queue = sqs.Queue(
        scope,
        construct_id,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        retention_period=retention,
        # It holds only events about the pipeline's own work: they mean nothing without the stack.
        removal_policy=RemovalPolicy.DESTROY,
    )
    Validations.of(queue).acknowledge(
        Acknowledgment(
            id="AwsSolutions-SQS3",
            reason=f"This queue is {holds} (cdk-nag only recognizes queue and Lambda DLQs); a "
            "dead-letter queue has no DLQ of its own.",
        )
    )
    return queue
