"""Run recorder: the Lambda the state machine calls at the end of a run to write its JSON run record."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.functions import acknowledge_prefix_access, python_function

HANDLER = "run_recorder.app.lambda_handler"


class RunRecorder(Construct):
    """Function + log group + a role that can write run records and count the run's work, nothing more."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: s3.IBucket,
        runs_prefix: str,
        queue: sqs.IQueue,
        dead_letter_queue: sqs.IQueue,
        environment: dict[str, str],
        powertools_layer: lambda_.ILayerVersion,
    ) -> None:
        super().__init__(scope, construct_id)

        self.function, self.role, self.log_group = python_function(
            self,
            handler=HANDLER,
            description="Writes each Custom Labels batch run's JSON record (minutes, cost, counts) to S3",
            role_description="Custom Labels batch run recorder: count a run's work and write its run record",
            layers=[powertools_layer],
            environment=environment,
            timeout_seconds=60,
            memory_mb=256,
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteRunRecords",
                actions=["s3:PutObject"],
                resources=[bucket.arn_for_objects(f"{runs_prefix}*")],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="CountWhatIsLeftQueued",
                actions=["sqs:GetQueueAttributes"],
                resources=[queue.queue_arn, dead_letter_queue.queue_arn],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="CountImagesLabeledAndErrorRecords",
                actions=["cloudwatch:GetMetricData"],
                resources=["*"],
            )
        )

        Validations.of(self.role).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="cloudwatch:GetMetricData supports no resource-level permissions; the function "
                "reads only the processor's metrics.",
            )
        )
        acknowledge_prefix_access(self.role, bucket, runs_prefix)
