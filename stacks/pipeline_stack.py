"""The pipeline stack: wires ingest, processor, notifications and orchestration together and exports
the outputs the CLI finds the stack by."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from customlabels_batch.settings import Settings
from stacks.ingest import Ingest
from stacks.monitoring import Monitoring
from stacks.notifications import Notifications
from stacks.orchestration import Orchestration
from stacks.processor import Processor
from stacks.run_recorder import RunRecorder
from stacks.run_state import RunState
from stacks.triage import Triage


class PipelineStack(Stack):
    """Everything one Custom Labels model version needs to label batches of S3 images."""

    def __init__(self, scope: Construct, construct_id: str, *, config: Settings, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)

        ingest = Ingest(self, "Ingest", config=config)
        run_state = RunState(self, "RunState")
        processor = Processor(self, "Processor", config=config, ingest=ingest, run_state=run_state)
        triage = Triage(
            self, "Triage", config=config, ingest=ingest, processor=processor, run_state=run_state
        )
        run_recorder = RunRecorder(
            self, "RunRecorder", config=config, ingest=ingest, processor=processor, run_state=run_state
        )
        notifications = Notifications(self, "Notifications", config=config)
        orchestration = Orchestration(
            self,
            "Orchestration",
            config=config,
            ingest=ingest,
            processor=processor,
            run_recorder=run_recorder,
            notifications=notifications,
            run_state=run_state,
        )
        monitoring = Monitoring(
            self,
            "Monitoring",
            config=config,
            ingest=ingest,
            processor=processor,
            triage=triage,
            orchestration=orchestration,
            notifications=notifications,
        )

        outputs = {
            "BucketName": ingest.bucket.bucket_name,
            "InputPrefix": config.input_prefix,
            "ResultsPrefix": config.results_prefix,
            "ErrorsPrefix": config.errors_prefix,
            "RunsPrefix": config.runs_prefix,
            "QueueUrl": ingest.queue.queue_url,
            "DeadLetterQueueUrl": ingest.dead_letter_queue.queue_url,
            "TriageFailureQueueUrl": triage.failure_queue.queue_url,
            "StateMachineArn": orchestration.state_machine.state_machine_arn,
            "EventSourceMappingUuid": processor.mapping.event_source_mapping_id,
            "NotificationTopicArn": notifications.topic.topic_arn,
            "RunStateTableName": run_state.table.table_name,
            "ProcessorFunctionName": processor.function.function_name,
            "ProjectVersionArn": config.project_version_arn,
        }
        # The CLI's pause, resume and status find the schedules by name (in the default group).
        outputs["BatchScheduleName"] = orchestration.schedules["batch"].schedule_name
        if "check" in orchestration.schedules:
            outputs["LatencyCheckScheduleName"] = orchestration.schedules["check"].schedule_name
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)

        self.ingest = ingest
        self.run_state = run_state
        self.processor = processor
        self.triage = triage
        self.run_recorder = run_recorder
        self.notifications = notifications
        self.orchestration = orchestration
        self.monitoring = monitoring
