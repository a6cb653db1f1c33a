"""Monitoring: the pipeline's CloudWatch dashboard and the alarms that publish to its notification topic."""

from __future__ import annotations

import math

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_sns as sns
from constructs import Construct

from customlabels_batch.settings import (
    CLI_NAME,
    OLDEST_MESSAGE_ALARM_DAYS,
    PROCESSOR_METRICS_NAMESPACE,
    PROCESSOR_SERVICE_NAME,
    QUEUE_RETENTION_DAYS,
    TRIAGE_SERVICE_NAME,
    Settings,
)
from stacks.ingest import Ingest
from stacks.notifications import Notifications
from stacks.orchestration import Orchestration
from stacks.processor import Processor
from stacks.triage import Triage

REKOGNITION_NAMESPACE = "AWS/Rekognition"
IN_SERVICE_INFERENCE_UNITS = "InServiceInferenceUnits"
# Rekognition publishes InServiceInferenceUnits as a one-minute average, and nothing while the model
# is stopped (AWS: "use the Average statistic to obtain the 1 minute average").
MODEL_METRIC_PERIOD = Duration.minutes(1)
# The model alarm counts 5-minute periods, so one missing one-minute datapoint does not reset the count.
MODEL_ALARM_PERIOD_MINUTES = 5
DLQ_ALARM_PERIOD = Duration.minutes(5)
EXECUTION_ALARM_PERIOD = Duration.minutes(5)
ERROR_RECORDS_ALARM_PERIOD = Duration.hours(1)
# Metric-math ids (they must start with a lower-case letter) of the executions the alarm counts.
UNSUCCESSFUL_EXECUTIONS = ("failed", "timedOut", "aborted")
# EventBridge Scheduler's metrics for invocations no dead-letter queue kept: dropped (retries used up
# and no DLQ could take them) or refused by the DLQ (its policy, its role). What reached the DLQ is
# the trigger DLQ alarm's. The stack's schedules are in the default group.
SCHEDULER_NAMESPACE = "AWS/Scheduler"
SCHEDULE_GROUP = "default"
UNKEPT_INVOCATIONS = {
    "dropped": "InvocationDroppedCount",
    "notDeadLettered": "InvocationsFailedToBeSentToDeadLetterCount",
}
WIDGET_WIDTH = 8
WIDGET_HEIGHT = 6


class Monitoring(Construct):
    """Dashboard (queues, triage, processor, model, cost, runs) and, unless disabled, eight alarms on the
    topic."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: Settings,
        ingest: Ingest,
        processor: Processor,
        triage: Triage,
        orchestration: Orchestration,
        notifications: Notifications,
    ) -> None:
        super().__init__(scope, construct_id)
        queue, dead_letter_queue = ingest.queue, ingest.dead_letter_queue
        state_machine = orchestration.state_machine
        usd_per_inference_unit_hour = config.usd_per_inference_unit_hour
        self._model_dimensions = {"ProjectName": config.project_name, "VersionName": config.version_name}

        # ---- metrics ------------------------------------------------------------------------
        self.dlq_visible = dead_letter_queue.metric_approximate_number_of_messages_visible(
            label="Dead-letter queue (visible)", period=DLQ_ALARM_PERIOD, statistic=cw.Stats.MAXIMUM
        )
        trigger_dlq = orchestration.trigger_dead_letter_queue
        self.trigger_dlq_visible = trigger_dlq.metric_approximate_number_of_messages_visible(
            label="Runs never started (trigger DLQ, visible)",
            period=DLQ_ALARM_PERIOD,
            statistic=cw.Stats.MAXIMUM,
        )

        self.triage_failures_visible = triage.failure_queue.metric_approximate_number_of_messages_visible(
            label="Uploads never triaged (triage failure queue, visible)",
            period=DLQ_ALARM_PERIOD,
            statistic=cw.Stats.MAXIMUM,
        )

        def processor_metric(name: str, label: str, service: str = PROCESSOR_SERVICE_NAME) -> cw.Metric:
            return cw.Metric(
                namespace=PROCESSOR_METRICS_NAMESPACE,
                metric_name=name,
                dimensions_map={"service": service},
                statistic=cw.Stats.SUM,
                period=Duration.minutes(5),
                label=label,
            )

        def triage_metric(name: str, label: str) -> cw.Metric:
            return processor_metric(name, label, TRIAGE_SERVICE_NAME)

        self.oldest_queued = queue.metric_approximate_age_of_oldest_message(
            label="Age of the oldest queued image (s)",
            period=Duration.minutes(15),
            statistic=cw.Stats.MAXIMUM,
        )
        self.error_records = processor_metric("ErrorRecords", "Error records")
        self.upload_error_records = triage_metric("ErrorRecords", "Error records at upload (triage)")
        inference_units = self._in_service_units(cw.Stats.AVERAGE, MODEL_METRIC_PERIOD)
        # Each one-minute average is the IUs of that minute; PERIOD() keeps the sum right when the
        # console widens the period for a long time range. FILL: no datapoint = not running = no cost.
        estimated_cost = cw.MathExpression(
            expression=f"RUNNING_SUM(FILL(units, 0) * PERIOD(units) / 3600) * {usd_per_inference_unit_hour}",
            using_metrics={"units": inference_units},
            label="Estimated model cost over the time range (USD)",
            period=MODEL_METRIC_PERIOD,
        )
        self.executions = {
            "succeeded": state_machine.metric_succeeded(label="Succeeded"),
            "failed": state_machine.metric_failed(label="Failed"),
            "timedOut": state_machine.metric_timed_out(label="Timed out"),
            "aborted": state_machine.metric_aborted(label="Aborted"),
        }

        # ---- dashboard ----------------------------------------------------------------------
        self.dashboard = cw.Dashboard(self, "Dashboard", default_interval=Duration.days(1))
        self.dashboard.add_widgets(
            _graph(
                "Queue depth",
                [
                    queue.metric_approximate_number_of_messages_visible(label="Queued (visible)"),
                    queue.metric_approximate_number_of_messages_not_visible(label="In flight"),
                    self.dlq_visible,
                    self.trigger_dlq_visible,
                    self.triage_failures_visible,
                ],
                right=[self.oldest_queued],
            ),
            _graph(
                "Images labeled and error records",
                [
                    processor_metric("ImagesLabeled", "Images labeled"),
                    self.error_records,
                    self.upload_error_records,
                    processor_metric("TransientFailures", "Transient failures (retried)"),
                    processor_metric("PipelineMisconfigured", "Refused: writes or model access denied"),
                    processor_metric("NotAttempted", "Left for the next delivery (out of time)"),
                    processor_metric("CrashedMessages", "Moved to the DLQ: died with their invocation"),
                ],
            ),
            _graph("Labels found", [processor_metric("LabelsFound", "Labels found")]),
            # Upload to result per image: what a schedule and a latency budget trade against cost.
            _graph(
                "Time to result (s)",
                [
                    processor_metric("TimeToResultSeconds", label).with_(statistic=stat)
                    for stat, label in (("p50", "p50"), ("p95", "p95"), (cw.Stats.MAXIMUM, "Longest"))
                ],
            ),
        )
        self.dashboard.add_widgets(
            _graph(
                "Uploads triaged",
                [
                    triage_metric("ImagesQueued", "Images queued"),
                    self.upload_error_records,
                    triage_metric("UploadsSkipped", "Skipped (folder markers, test events, own output)"),
                    triage_metric("WaitClockNotStarted", "Wait clock not started (latency budget)"),
                ],
            ),
            _graph(
                "Triage errors and throttles (retried by Lambda)",
                [triage.function.metric_errors(), triage.function.metric_throttles()],
            ),
        )
        self.dashboard.add_widgets(
            _graph(
                "Processor errors and throttles",
                [processor.function.metric_errors(), processor.function.metric_throttles()],
            ),
            _graph("Model inference units in service", [inference_units]),
            _graph(
                f"Estimated model cost, USD (an estimate at ${usd_per_inference_unit_hour:g}/IU-hour)",
                [estimated_cost],
            ),
        )

        def call_seconds(statistic: str) -> cw.Metric:
            return cw.Metric(
                namespace=PROCESSOR_METRICS_NAMESPACE,
                metric_name="ModelCallSeconds",
                dimensions_map={"service": PROCESSOR_SERVICE_NAME},
                statistic=statistic,
                period=Duration.minutes(5),
                label=f"Call latency {statistic} (s)",
            )

        self.dashboard.add_widgets(
            _graph(
                "Model calls: accepted and throttled (the processors keep it just full)",
                [
                    processor_metric("ModelCallsAccepted", "Accepted"),
                    processor_metric("ModelCallsThrottled", "Throttled (not billed; retried at once)"),
                ],
                right=[call_seconds("p50"), call_seconds("p95")],
            ),
            _graph("Processor busy seconds", [processor_metric("ProcessorSeconds", "Invocation seconds")]),
        )
        executions_widget = _graph(
            "State machine executions by outcome", list(self.executions.values()), width=2 * WIDGET_WIDTH
        )

        self.alarms: list[cw.Alarm] = []
        if not config.alarms_enabled:
            self.dashboard.add_widgets(executions_widget)
            return
        self.alarms = self._add_alarms(
            topic=notifications.topic,
            model_in_service_alarm_minutes=config.model_in_service_alarm_minutes,
            error_records_alarm_threshold=config.error_records_alarm_threshold,
            usd_per_inference_unit_hour=usd_per_inference_unit_hour,
        )
        self.dashboard.add_widgets(
            executions_widget,
            cw.AlarmStatusWidget(
                title="Alarms", alarms=self.alarms, width=WIDGET_WIDTH, height=WIDGET_HEIGHT
            ),
        )

    def _in_service_units(self, statistic: str, period: Duration) -> cw.Metric:
        return cw.Metric(
            namespace=REKOGNITION_NAMESPACE,
            metric_name=IN_SERVICE_INFERENCE_UNITS,
            dimensions_map=self._model_dimensions,
            statistic=statistic,
            period=period,
            label="Inference units in service",
        )

    def _at_least(
        self, construct_id: str, description: str, metric: cw.IMetric, threshold: float
    ) -> cw.Alarm:
        """An alarm on one period at or over threshold; no data (nothing happened) is not breaching."""
        return cw.Alarm(
            self,
            construct_id,
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )

    def _add_alarms(
        self,
        *,
        topic: sns.ITopic,
        model_in_service_alarm_minutes: int,
        error_records_alarm_threshold: int,
        usd_per_inference_unit_hour: float,
    ) -> list[cw.Alarm]:
        # A queue holding messages is active and reports every minute; no data means an idle, empty queue.
        self.dead_letter_alarm = self._at_least(
            "DeadLetterQueueAlarm",
            "Messages are in the dead-letter queue: images that failed every delivery. "
            f"Check the processor's logs, then move them back with `{CLI_NAME} redrive`.",
            self.dlq_visible,
            1,
        )

        # EventBridge (Scheduler for the schedules, the clean-up rule's target) puts an event here once
        # it has given up starting the state machine for it.
        self.trigger_dead_letter_alarm = self._at_least(
            "TriggerDlqAlarm",
            "A scheduled run, latency check or clean-up was never started: EventBridge could not start "
            "the state machine and put the event in the trigger dead-letter queue (a clean-up's "
            "ERROR_CODE and RULE_ARN attributes, a schedule's X-Amz-Scheduler-* attributes, say why and "
            f"which). A missed clean-up may have left the model on: check `{CLI_NAME} status`.",
            self.trigger_dlq_visible,
            1,
        )

        # What Scheduler could neither deliver nor dead-letter shows only in its own metrics.
        self.schedule_delivery_alarm = self._at_least(
            "ScheduleDeliveryAlarm",
            "EventBridge Scheduler dropped a scheduled run or latency check without putting it in the "
            "trigger dead-letter queue (InvocationDroppedCount, InvocationsFailedToBeSentToDeadLetterCount): "
            "check the schedules' role and the queue.",
            cw.MathExpression(
                expression=" + ".join(f"FILL({name}, 0)" for name in UNKEPT_INVOCATIONS),
                using_metrics={
                    name: cw.Metric(
                        namespace=SCHEDULER_NAMESPACE,
                        metric_name=metric,
                        dimensions_map={"ScheduleGroup": SCHEDULE_GROUP},
                        statistic=cw.Stats.SUM,
                        period=DLQ_ALARM_PERIOD,
                    )
                    for name, metric in UNKEPT_INVOCATIONS.items()
                },
                label="Scheduled invocations dropped or not dead-lettered",
                period=DLQ_ALARM_PERIOD,
            ),
            1,
        )

        # Lambda puts an upload's event here once the triage has failed on it three times (or it aged out).
        self.triage_failure_alarm = self._at_least(
            "TriageFailureQueueAlarm",
            "Uploads were never triaged: the triage function failed on them three times (or they "
            "waited six hours) and Lambda put their S3 events in the triage failure queue. Those images "
            "are neither queued nor recorded. See the triage's logs; each message's requestPayload is "
            "the S3 event: invoke the triage function with it once the cause is fixed.",
            self.triage_failures_visible,
            1,
        )

        # Images wait in the queue while runs cannot start the model (an expired or deleted version, a
        # failing start): warn while there is still time to act.
        self.oldest_queued_alarm = self._at_least(
            "OldestQueuedImageAlarm",
            f"An image has waited {OLDEST_MESSAGE_ALARM_DAYS} days in the queue; the "
            f"queue deletes messages after {QUEUE_RETENTION_DAYS} days. Runs are not draining it: see "
            f"`{CLI_NAME} status` and the latest run's notification (is the model startable?).",
            self.oldest_queued,
            OLDEST_MESSAGE_ALARM_DAYS * 86400,
        )

        # Rekognition publishes nothing while the model is stopped: missing data is "not in service".
        # Minimum: a period breaches only if every datapoint in it had units in service.
        model_periods = math.ceil(model_in_service_alarm_minutes / MODEL_ALARM_PERIOD_MINUTES)
        self.model_in_service_alarm = cw.Alarm(
            self,
            "ModelInServiceAlarm",
            alarm_description=f"The Custom Labels model has had inference units in service for "
            f"{model_periods * MODEL_ALARM_PERIOD_MINUTES} minutes in a row (billed about "
            f"${usd_per_inference_unit_hour:g} per IU-hour). Look for a stuck run "
            f"(`{CLI_NAME} status`) or stop the model.",
            metric=self._in_service_units(cw.Stats.MINIMUM, Duration.minutes(MODEL_ALARM_PERIOD_MINUTES)),
            threshold=0,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=model_periods,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )

        # One alarm on the sum: one notification per incident. FILL because each metric has data only
        # in periods where such an execution ended, and a sum with a missing term is missing.
        # No execution ended in a period: none failed.
        self.executions_alarm = self._at_least(
            "UnsuccessfulExecutionsAlarm",
            "A batch run failed, timed out or was aborted. The clean-up rule stops the "
            "model and disables the mapping; see the run's notification and its execution history.",
            cw.MathExpression(
                expression=" + ".join(f"FILL({name}, 0)" for name in UNSUCCESSFUL_EXECUTIONS),
                using_metrics={
                    name: self.executions[name].with_(statistic=cw.Stats.SUM)
                    for name in UNSUCCESSFUL_EXECUTIONS
                },
                label="Executions failed, timed out or aborted",
                period=EXECUTION_ALARM_PERIOD,
            ),
            1,
        )

        # The triage and the processor emit ErrorRecords only when they write one: no data means no
        # errors. FILL: a sum with a missing term is missing.
        self.error_records_alarm = cw.Alarm(
            self,
            "ErrorRecordsAlarm",
            alarm_description=f"More than {error_records_alarm_threshold} error records in an hour: many "
            "uploads are unusable (unsupported type, too large, corrupt): see the error records.",
            metric=cw.MathExpression(
                expression="FILL(atUpload, 0) + FILL(byModel, 0)",
                using_metrics={
                    "atUpload": self.upload_error_records.with_(period=ERROR_RECORDS_ALARM_PERIOD),
                    "byModel": self.error_records.with_(period=ERROR_RECORDS_ALARM_PERIOD),
                },
                label="Error records (triage and processor)",
                period=ERROR_RECORDS_ALARM_PERIOD,
            ),
            threshold=error_records_alarm_threshold,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )

        alarms = [
            self.dead_letter_alarm,
            self.trigger_dead_letter_alarm,
            self.schedule_delivery_alarm,
            self.triage_failure_alarm,
            self.oldest_queued_alarm,
            self.model_in_service_alarm,
            self.executions_alarm,
            self.error_records_alarm,
        ]
        action = cw_actions.SnsAction(topic)
        for alarm in alarms:
            alarm.add_alarm_action(action)
        # "Back to OK" after a "model still running" page says the model has stopped.
        self.model_in_service_alarm.add_ok_action(action)
        return alarms


def _graph(
    title: str, metrics: list[cw.IMetric], *, width: int = WIDGET_WIDTH, right: list[cw.IMetric] | None = None
) -> cw.GraphWidget:
    return cw.GraphWidget(title=title, left=metrics, right=right, width=width, height=WIDGET_HEIGHT)
