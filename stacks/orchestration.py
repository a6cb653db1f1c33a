"""Orchestration: the batch-run state machine (from statemachine/batch_run.asl.json), its EventBridge
Scheduler schedules (the batch schedule in its time zone, and the latency budget's frequent check when
one is configured), the rule that cleans up after runs that failed, timed out or were aborted, and the
dead-letter queue that keeps the events none of them could deliver."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, TimeZone, Validations
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from customlabels_batch.settings import CLEANUP_INPUT_PREFIX, CLEANUP_STATUSES, STATE_MACHINE_ASL, Settings
from stacks.functions import owned_log_group
from stacks.ingest import Ingest, last_stop_queue
from stacks.notifications import Notifications
from stacks.processor import Processor
from stacks.run_recorder import RunRecorder
from stacks.run_state import RunState

# SQS's maximum: an event that never started a run stays until someone has looked at it.
TRIGGER_DEAD_LETTER_RETENTION = Duration.days(14)
# EventBridge retries a failed StartExecution (throttling, a service error) with backoff until either
# limit is reached, then puts the event in the dead-letter queue. Within an hour the next scheduled run
# (hourly by default) is due anyway, and a clean-up that never ran is reported hours before the
# model-in-service alarm would notice the model left on.
TARGET_MAX_EVENT_AGE = Duration.hours(1)
TARGET_RETRY_ATTEMPTS = 24
# A latency check that could not start is replaced by the next one within minutes: retry it only
# until then (Scheduler's minimum event age is one minute).
CHECK_RETRY_ATTEMPTS = 2
# The execution input of each trigger (the state machine reads `trigger`).
SCHEDULE_INPUT = {"trigger": "schedule"}
CHECK_INPUT = {"trigger": "check"}


class Orchestration(Construct):
    """State machine + schedule rule + clean-up rule, and their targets' dead-letter queue. The ASL is
    the single source of truth; the definition body is inlined into the template so reviews and
    `cdk diff` show it."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: Settings,
        ingest: Ingest,
        processor: Processor,
        run_recorder: RunRecorder,
        notifications: Notifications,
        run_state: RunState,
    ) -> None:
        super().__init__(scope, construct_id)
        queue_arn = ingest.queue.queue_arn
        mapping_arn = processor.mapping.event_source_mapping_arn
        run_recorder_arn = run_recorder.function.function_arn

        self.log_group = owned_log_group(self)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_string(STATE_MACHINE_ASL.read_text()),
            definition_substitutions=config.definition_substitutions(
                QueueUrl=ingest.queue.queue_url,
                DeadLetterQueueUrl=ingest.dead_letter_queue.queue_url,
                EventSourceMappingUuid=processor.mapping.event_source_mapping_id,
                NotificationTopicArn=notifications.topic.topic_arn,
                RunRecorderFunctionArn=run_recorder_arn,
                RunStateTable=run_state.table.table_name,
            ),
            logs=sfn.LogOptions(
                destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
            tracing_enabled=True,
            removal_policy=RemovalPolicy.DESTROY,
        )
        role = self.state_machine.role

        # CDK infers no permissions from a string definition: every aws-sdk task is granted here,
        # each on the exact resource IAM evaluates for that action.
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="CountQueuedImages",
                actions=["sqs:GetQueueAttributes"],
                resources=[queue_arn, ingest.dead_letter_queue.queue_arn],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="DescribeModel",
                # DescribeProjectVersions is authorized on the project (resource type project*).
                actions=["rekognition:DescribeProjectVersions"],
                resources=[config.project_arn],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="StartAndStopModel",
                # Start/StopProjectVersion are authorized on the version (resource type projectversion*).
                actions=["rekognition:StartProjectVersion", "rekognition:StopProjectVersion"],
                resources=[config.project_version_arn],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="EnableAndDisableImageProcessing",
                actions=["lambda:UpdateEventSourceMapping", "lambda:GetEventSourceMapping"],
                resources=[mapping_arn],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="WriteRunRecord",
                # The ASL invokes the unqualified ARN, so no version wildcard is needed.
                actions=["lambda:InvokeFunction"],
                resources=[run_recorder_arn],
            )
        )
        notifications.grant_publish(role)

        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="HoldTheRunLeaseAndReadProgress",
                # UpdateItem: the latency budget's wait clock (ResetWaitClock).
                actions=[
                    "dynamodb:PutItem",
                    "dynamodb:GetItem",
                    "dynamodb:DeleteItem",
                    "dynamodb:UpdateItem",
                ],
                resources=[run_state.table.table_arn],
            )
        )

        # Every trigger's undeliverable events: a scheduled run or check that never started, or a
        # clean-up that never ran (the model may have been left on). The clean-up rule's target adds
        # its aws:SourceArn-scoped sqs:SendMessage statement to the queue policy; Scheduler sends as
        # the schedules' role.
        self.trigger_dead_letter_queue = last_stop_queue(
            self,
            "TriggerDlq",
            retention=TRIGGER_DEAD_LETTER_RETENTION,
            holds="the dead-letter queue of the schedules' and the clean-up rule's targets",
        )
        target_delivery = {
            "dead_letter_queue": self.trigger_dead_letter_queue,
            "max_event_age": TARGET_MAX_EVENT_AGE,
            "retry_attempts": TARGET_RETRY_ATTEMPTS,
        }
        self.schedules = self._schedules(config)
        self.cleanup_rule = events.Rule(
            self,
            "CleanUpRule",
            description="Stops the model and the mapping after a run ended where its Catch could not run",
            event_pattern=events.EventPattern(
                source=["aws.states"],
                detail_type=["Step Functions Execution Status Change"],
                detail={
                    "stateMachineArn": [self.state_machine.state_machine_arn],
                    "status": list(CLEANUP_STATUSES),
                    "input": events.Match.anything_but_prefix(CLEANUP_INPUT_PREFIX),
                },
            ),
            targets=[
                targets.SfnStateMachine(
                    self.state_machine,
                    input=events.RuleTargetInput.from_object(
                        {
                            "cleanup": {
                                "execution": events.EventField.from_path("$.detail.executionArn"),
                                "status": events.EventField.from_path("$.detail.status"),
                            }
                        }
                    ),
                    **target_delivery,
                )
            ],
        )

        Validations.of(role).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="Granted by CDK for logging level ALL (logs:CreateLogDelivery and the other "
                "vended-log-delivery actions) and X-Ray tracing (xray:PutTraceSegments, "
                "xray:GetSampling*); none of these actions supports resource-level permissions.",
            )
        )

    def _schedules(self, config: Settings) -> dict[str, scheduler.Schedule]:
        """EventBridge Scheduler, not a classic rule: cron in the configured time zone with its
        daylight saving time, an optional flexible window. One role for both schedules."""
        self.schedule_role = iam.Role(
            self,
            "ScheduleRole",
            description="EventBridge Scheduler: start the Custom Labels batch state machine",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                # Confused-deputy protection: only this account's schedules may use the role.
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
            ),
        )
        # Each schedule's target grants the role exactly states:StartExecution on this state machine
        # and sqs:SendMessage on the trigger dead-letter queue (Scheduler dead-letters with the
        # schedule's role), nothing else.
        window = (
            scheduler.TimeWindow.flexible(Duration.minutes(config.schedule_flexible_window_minutes))
            if config.schedule_flexible_window_minutes
            else scheduler.TimeWindow.off()
        )
        schedules = {
            "batch": self._schedule(
                "BatchSchedule",
                description="Starts a Custom Labels batch run (it exits at once when no image is queued)",
                expression=config.schedule,
                timezone=config.schedule_timezone,
                payload=SCHEDULE_INPUT,
                enabled=config.schedule_enabled,
                window=window,
                max_event_age=TARGET_MAX_EVENT_AGE,
                retry_attempts=TARGET_RETRY_ATTEMPTS,
            )
        }
        if config.latency_budget:
            schedules["check"] = self._schedule(
                "LatencyCheckSchedule",
                description="Checks the latency budget: starts a run only when an image has waited "
                "maxWaitMinutes or startAtBacklog images are queued",
                expression=f"rate({config.latency_check_minutes} minute"
                f"{'s' if config.latency_check_minutes > 1 else ''})",
                timezone="UTC",
                payload=CHECK_INPUT,
                enabled=config.schedule_enabled,
                window=scheduler.TimeWindow.off(),
                max_event_age=Duration.minutes(config.latency_check_minutes),
                retry_attempts=CHECK_RETRY_ATTEMPTS,
            )
        return schedules

    def _schedule(
        self,
        construct_id: str,
        *,
        description: str,
        expression: str,
        timezone: str,
        payload: dict,
        enabled: bool,
        window: scheduler.TimeWindow,
        max_event_age: Duration,
        retry_attempts: int,
    ) -> scheduler.Schedule:
        return scheduler.Schedule(
            self,
            construct_id,
            description=description,
            schedule=scheduler.ScheduleExpression.expression(expression, TimeZone.of(timezone)),
            target=scheduler_targets.StepFunctionsStartExecution(
                self.state_machine,
                input=scheduler.ScheduleTargetInput.from_object(payload),
                role=self.schedule_role,
                dead_letter_queue=self.trigger_dead_letter_queue,
                max_event_age=max_event_age,
                retry_attempts=retry_attempts,
            ),
            enabled=enabled,
            time_window=window,
        )
