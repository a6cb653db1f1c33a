"""Run recorder: the Lambda the state machine calls at the end of a run to write its JSON run record."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_iam as iam
from constructs import Construct

from customlabels_batch.settings import Settings, Use
from stacks.functions import acknowledge_prefix_access, python_function
from stacks.ingest import Ingest
from stacks.processor import Processor
from stacks.run_state import RunState

HANDLER = "run_recorder.app.lambda_handler"


class RunRecorder(Construct):
    """Function + log group + a role that can write run records and count the run's work, nothing more."""

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

        self.function, self.role, self.log_group = python_function(
            self,
            config=config,
            use=Use.RUN_RECORDER,
            handler=HANDLER,
            description="Writes each Custom Labels batch run's JSON record (minutes, cost, counts) to S3",
            role_description="Custom Labels batch run recorder: count a run's work and write its run record",
            layer=processor.powertools_layer,
            resources={
                "bucket": ingest.bucket.bucket_name,
                "queueUrl": ingest.queue.queue_url,
                "deadLetterQueueUrl": ingest.dead_letter_queue.queue_url,
                "runStateTable": run_state.table.table_name,
            },
            timeout_seconds=60,
            memory_mb=256,
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteRunRecords",
                actions=["s3:PutObject"],
                resources=[ingest.bucket.arn_for_objects(f"{config.runs_prefix}*")],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="CountWhatIsLeftQueued",
                actions=["sqs:GetQueueAttributes"],
                resources=[ingest.queue.queue_arn, ingest.dead_letter_queue.queue_arn],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="CountImagesLabeledAndErrorRecords",
                actions=["cloudwatch:GetMetricData"],
                resources=["*"],
            )
        )

        # The model's measured throughput per unit, beside the progress counter the state machine
        # reads: the next run sizes its units from it (targetDrainMinutes).
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="RememberTheModelsCapacity",
                actions=["dynamodb:UpdateItem"],
                resources=[run_state.table.table_arn],
                conditions={"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["progress"]}},
            )
        )

        Validations.of(self.role).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="cloudwatch:GetMetricData supports no resource-level permissions; the function "
                "reads only the processor's metrics and the model's InServiceInferenceUnits.",
            )
        )
        acknowledge_prefix_access(self.role, ingest.bucket, config.runs_prefix)
