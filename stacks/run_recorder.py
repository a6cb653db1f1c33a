"""Run recorder: the Lambda the state machine calls at the end of a run to write its JSON run record."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.processor import ARCHITECTURE, LOG_RETENTION, RUNTIME, bucket_logical_id, lambda_code

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

        self.log_group = logs.LogGroup(
            self, "LogGroup", retention=LOG_RETENTION, removal_policy=RemovalPolicy.DESTROY
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Custom Labels batch run recorder: count a run's work and write its run record",
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

        self.function = lambda_.Function(
            self,
            "Function",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=HANDLER,
            code=lambda_code(),
            layers=[powertools_layer],
            timeout=Duration.seconds(60),
            memory_size=256,
            environment=environment,
            log_group=self.log_group,
            role=self.role,
            description="Writes each Custom Labels batch run's JSON record (minutes, cost, counts) to S3",
        )

        Validations.of(self.role).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="cloudwatch:GetMetricData supports no resource-level permissions; the function "
                "reads only the processor's metrics.",
            ),
            Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::<{bucket_logical_id(bucket)}.Arn>/{runs_prefix}*]",
                reason=f"Writes are limited to the '{runs_prefix}' prefix of the pipeline's own bucket; "
                "record keys are not known in advance.",
            ),
        )
