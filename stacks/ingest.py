"""Ingest: the image bucket, its access-log bucket, and the queue (with DLQ) the triage puts images in."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
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
