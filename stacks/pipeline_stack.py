"""The pipeline stack: wires ingest, processor, notifications and orchestration together and exports
the outputs the CLI finds the stack by."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from stacks.config import PipelineConfig
from stacks.ingest import Ingest
from stacks.monitoring import Monitoring
from stacks.notifications import Notifications
from stacks.orchestration import Orchestration
from stacks.processor import Processor
from stacks.run_recorder import RunRecorder


class PipelineStack(Stack):
    """Everything one Custom Labels model version needs to label batches of S3 images."""

    def __init__(self, scope: Construct, construct_id: str, *, config: PipelineConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)

        ingest = Ingest(
            self,
            "Ingest",
            input_prefix=config.input_prefix,
            visibility_timeout_seconds=config.visibility_timeout_seconds,
            max_receive_count=config.max_receive_count,
        )
        processor_environment = config.processor_environment(bucket=ingest.bucket.bucket_name)
        processor = Processor(
            self,
            "Processor",
            bucket=ingest.bucket,
            queue=ingest.queue,
            environment=processor_environment,
            input_prefix=config.input_prefix,
            results_prefix=config.results_prefix,
            errors_prefix=config.errors_prefix,
            project_version_arn=config.project_version_arn,
            timeout_seconds=config.processor_timeout_seconds,
            memory_mb=config.processor_memory_mb,
            batch_size=config.batch_size,
            max_concurrency=config.concurrency,
            powertools_version=config.powertools_version,
        )
        run_recorder = RunRecorder(
            self,
            "RunRecorder",
            bucket=ingest.bucket,
            runs_prefix=config.runs_prefix,
            queue=ingest.queue,
            dead_letter_queue=ingest.dead_letter_queue,
            environment=config.run_recorder_environment(
                bucket=ingest.bucket.bucket_name,
                queue_url=ingest.queue.queue_url,
                dead_letter_queue_url=ingest.dead_letter_queue.queue_url,
            ),
            powertools_layer=processor.powertools_layer,
        )
        notifications = Notifications(self, "Notifications", email=config.notification_email)
        orchestration = Orchestration(
            self,
            "Orchestration",
            definition_substitutions=config.definition_substitutions(
                queue_url=ingest.queue.queue_url,
                mapping_uuid=processor.mapping.event_source_mapping_id,
                topic_arn=notifications.topic.topic_arn,
                run_recorder_arn=run_recorder.function.function_arn,
            ),
            project_arn=config.project_arn,
            project_version_arn=config.project_version_arn,
            queue_arn=ingest.queue.queue_arn,
            mapping_arn=processor.mapping.event_source_mapping_arn,
            run_recorder_arn=run_recorder.function.function_arn,
            grant_publish=notifications.grant_publish,
            schedule=config.schedule,
            schedule_enabled=config.schedule_enabled,
        )
        monitoring = Monitoring(
            self,
            "Monitoring",
            queue=ingest.queue,
            dead_letter_queue=ingest.dead_letter_queue,
            function=processor.function,
            state_machine=orchestration.state_machine,
            topic=notifications.topic,
            project_name=config.project_name,
            version_name=config.version_name,
            processor_metrics_namespace=processor_environment["POWERTOOLS_METRICS_NAMESPACE"],
            processor_service=processor_environment["POWERTOOLS_SERVICE_NAME"],
            model_in_service_alarm_minutes=config.model_in_service_alarm_minutes,
            error_records_alarm_threshold=config.error_records_alarm_threshold,
            alarms_enabled=config.alarms_enabled,
            usd_per_inference_unit_hour=config.usd_per_inference_unit_hour,
        )

        outputs = {
            "BucketName": ingest.bucket.bucket_name,
            "InputPrefix": config.input_prefix,
            "ResultsPrefix": config.results_prefix,
            "ErrorsPrefix": config.errors_prefix,
            "RunsPrefix": config.runs_prefix,
            "QueueUrl": ingest.queue.queue_url,
            "DeadLetterQueueUrl": ingest.dead_letter_queue.queue_url,
            "StateMachineArn": orchestration.state_machine.state_machine_arn,
            "EventSourceMappingUuid": processor.mapping.event_source_mapping_id,
            "NotificationTopicArn": notifications.topic.topic_arn,
            "ProcessorFunctionName": processor.function.function_name,
            "ProjectVersionArn": config.project_version_arn,
        }
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)

        self.ingest = ingest
        self.processor = processor
        self.run_recorder = run_recorder
        self.notifications = notifications
        self.orchestration = orchestration
        self.monitoring = monitoring
