"""The whole pipeline on an embedded emulated AWS (moto): the stack's resources built from the same
configuration the CDK app reads, the real ASL and the real processor handler, on one emulated clock.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import time
import types
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TextIO
from urllib.parse import unquote_plus

import boto3
from moto import mock_aws

from customlabels_batch import waits
from customlabels_batch.lambdas import images
from customlabels_batch.settings import (
    CLEANUP_INPUT_PREFIX,
    CLEANUP_STATUSES,
    DEAD_LETTER_RETENTION_DAYS,
    QUEUE_RETENTION_DAYS,
    STATE_MACHINE_ASL,
    TRIAGE_MAX_EVENT_AGE_SECONDS,
    TRIAGE_RETRY_ATTEMPTS,
    Settings,
    Use,
)

from . import functions, moto_fixes, patches, services
from .clock import VirtualClock, threads_on
from .control_plane import ControlPlane, exact_queue_counts, external_update
from .custom_labels import Annotations, EmulatedModel, ModelBehaviour, ModelError
from .data_plane import MAX_KEY_BYTES
from .event_source_mapping import EventSourceMappingEmulator, LambdaContext
from .metrics import ingest_flushed_metrics, publish_in_service_units
from .scheduler import EmulatedScheduler
from .state import Emulation

ACCOUNT = "123456789012"
REGION = "us-east-1"
EMULATED_PROJECT_ARN = f"arn:aws:rekognition:{REGION}:{ACCOUNT}:project/emulated-project/1700000000000"
EMULATED_VERSION_ARN = (
    f"arn:aws:rekognition:{REGION}:{ACCOUNT}:project/emulated-project/version/"
    "emulated-project.v1/1700000000001"
)
DRIVER_TICK_SECONDS = 10.0  # how often the emulated EventBridge rules and the fault injector look
RUN_RECORDER_NAME = "run-recorder"
TRIAGE_NAME = "upload-triage"
# The report's triage figures: Lambda's side (async_invoke), then what the handler did with the uploads.
TRIAGE_STATS = ("invocations", "retries", "sentToFailureQueue", "queued", "errorRecords", "skipped")

FAULTS = {
    "model-start-failure": "The model goes STARTING -> FAILED instead of RUNNING.",
    "model-start-timeout": "The model stays STARTING longer than modelStartTimeoutSeconds.",
    "throttling-storm": "Every DetectCustomLabels call is throttled for the first 3 minutes the model runs.",
    "processor-crash": "The processor's runtime dies whenever it labels the first image uploaded.",
    "abort-during-drain": "Someone stops the execution just after image processing is enabled.",
    "model-stopped-externally": "Someone stops the model in the console as the drain begins.",
    "mapping-disabled-externally": "Someone (or a racing run) disables the mapping as the drain begins.",
    "model-deleted": "The model version was deleted before the run.",
    "stop-denied": "StopProjectVersion is denied to the pipeline (AccessDeniedException), on every run.",
    "mapping-stuck-transitioning": "The mapping stays Enabling for 10 minutes, refusing every update.",
    "abort-while-enabling": "Someone stops the execution while the mapping is Enabling.",
    "duplicate-trigger": "EventBridge delivers the schedule's event twice (at-least-once delivery).",
    "guard-lag": "ListExecutions lags 60 s, and a second trigger arrives 10 s into the run.",
    "model-started-externally": "Someone started the model before the run, with 4 inference units.",
    "output-write-denied": "Every PutObject the pipeline sends is denied (a bucket policy it does not meet).",
    "model-access-denied": "DetectCustomLabels is denied to the processor (AccessDeniedException).",
    "slow-calls": "Every DetectCustomLabels call takes 40 % of the function's timeout: a batch's calls run "
    "side by side, and a third round of calls would not end in time.",
    "object-deleted-before-processing": "The first image is deleted before the run, and a message without a "
    "size names an object that no longer exists.",
}
# A slow call takes this share of the function's timeout: two rounds of calls fit, three do not.
SLOW_CALLS_SHARE = 0.4
# The faults that happen at a moment of the run (the rest are set up before it starts).
MID_RUN_FAULTS = frozenset(
    {
        "abort-during-drain",
        "abort-while-enabling",
        "guard-lag",
        "mapping-disabled-externally",
        "mapping-stuck-transitioning",
        "model-stopped-externally",
        "object-deleted-before-processing",
    }
)
STUCK_TRANSITION_SECONDS = 600.0


def cleanup_input(execution_arn: str, status: str) -> str:
    """The input the status-change rule gives the clean-up execution (the stack's input transformer
    renders the same text)."""
    return json.dumps({"cleanup": {"execution": execution_arn, "status": status}}, separators=(",", ":"))


class DefinitionError(ValueError):
    """The state machine definition cannot be used with the stack's substitutions."""


def render_definition(text: str, substitutions: dict[str, str]) -> str:
    """Apply DefinitionSubstitutions as Step Functions does; an unknown placeholder is an error."""
    missing = sorted(set(re.findall(r"\$\{(\w+)\}", text)) - substitutions.keys())
    if missing:
        raise DefinitionError(f"the definition uses placeholders with no substitution: {', '.join(missing)}")
    return re.sub(r"\$\{(\w+)\}", lambda m: substitutions[m.group(1)], text)


def emulated_config(overrides: dict | None = None) -> Settings:
    """cdk.json's configuration with the emulated model's ARNs (and any overrides)."""
    context = {"projectArn": EMULATED_PROJECT_ARN, "projectVersionArn": EMULATED_VERSION_ARN}
    context.update(overrides or {})
    return Settings.from_cdk_json(context)


@dataclass
class Upload:
    key: str  # relative to the input prefix
    body: bytes


@dataclass
class EmulationOptions:
    time_scale: float = math.inf
    behaviour: ModelBehaviour = field(default_factory=ModelBehaviour)
    annotations: Annotations = field(default_factory=Annotations)
    faults: tuple[str, ...] = ()
    definition: Path = STATE_MACHINE_ASL
    # Where the processor's structured logs go (None: stdout, as in Lambda).
    processor_log: TextIO | None = None
    # The stack's status-change rule (off to benchmark a definition that has no clean-up).
    status_change_rule: bool = True
    # Hard stop for the emulation itself, in emulated seconds (a wrong definition could loop forever).
    max_emulated_seconds: float = 7 * 24 * 3600
    # How the control plane behaves where AWS gives no figure (transition times, listing lag, ...).
    control: ControlPlane = field(default_factory=ControlPlane)
    # Applied to each processor copy as it loads, after the emulator's own patches: a benchmark's
    # variant of the handler (customlabels_batch.bench.adaptive). None: the handler as deployed.
    processor_variant: Callable[[ModuleType], None] | None = None


class EmulatedPipeline:
    """Use as a context manager: resources exist inside the block; `run()` drives one scheduled run."""

    def __init__(self, config: Settings, options: EmulationOptions | None = None):
        self.config = config
        self.options = options or EmulationOptions()
        unknown = set(self.options.faults) - FAULTS.keys()
        if unknown:
            raise ValueError(f"unknown fault {sorted(unknown)}; choose from {sorted(FAULTS)}")
        self.clock = VirtualClock(time_scale=self.options.time_scale)
        self.emulation = Emulation(clock=self.clock, control=self.options.control)
        self._exit = contextlib.ExitStack()
        self.uploaded: list[str] = []
        self.events: list[tuple[float, str]] = []
        # What the driver has seen during run(): ended executions, the mapping's first Enabled.
        self._handled: set[str] = set()
        self._enabled_at: float | None = None
        self._enabling_seen = False
        self._done_faults: set[str] = set()
        self._missed_faults: dict[str, str] = {}
        # Every execution this emulation started: ListExecutions lags as on AWS; DescribeExecution
        # does not, so the driver describes these.
        self._started: list[str] = []
        self._ended: dict[str, dict] = {}
        self._scheduled_uploads: list[tuple[Callable[[EmulatedPipeline], bool], list[Upload]]] = []
        self._in_service_published = -math.inf  # emulated time up to which InServiceInferenceUnits is out

    # ---- set-up --------------------------------------------------------------------------
    def __enter__(self) -> EmulatedPipeline:
        try:
            self._start()
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "mapping", None) is not None:
            self.mapping.stop()
            self.mapping = None
        self.clock.stop()
        self._exit.close()

    def _start(self) -> None:
        config = self.config
        # moto logs every caught task error with a stack trace; executions' histories keep them.
        self._exit.enter_context(_quiet_logger("moto.stepfunctions.parser"))
        self._exit.enter_context(_environment(self._processor_environment_base()))
        self._exit.enter_context(
            mock_aws(
                config={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
            )
        )
        self._exit.enter_context(patches.applied(self.emulation))
        behaviour = self.options.behaviour
        if "model-start-failure" in self.options.faults:
            behaviour.start_fails = True
        if "model-start-timeout" in self.options.faults:
            behaviour.start_seconds = config.model_start_timeout_seconds + 3600
        if "throttling-storm" in self.options.faults:
            behaviour.throttle_windows = [(0.0, 180.0)]
        if "slow-calls" in self.options.faults:
            behaviour.latency_seconds = SLOW_CALLS_SHARE * config.processor_timeout_seconds
            behaviour.latency_spread = 0.0
        self.model = EmulatedModel(
            clock=self.clock,
            project_arn=config.project_arn,
            version_arn=config.project_version_arn,
            annotations=self.options.annotations,
            behaviour=behaviour,
        )
        self.emulation.models[config.project_version_arn] = self.model
        faults = self.options.faults
        if "model-deleted" in faults:
            self.model.delete()
        if "model-started-externally" in faults:
            self.model.start_externally(4, already_running=True)
        if "stop-denied" in faults:
            self.emulation.control.denied.add("rekognition:StopProjectVersion")
        if "output-write-denied" in faults:
            self.emulation.control.denied.add("s3:PutObject")
        if "model-access-denied" in faults:
            self.emulation.control.denied.add("rekognition:DetectCustomLabels")
        if "guard-lag" in faults:
            self.emulation.control.list_executions_lag_seconds = 60.0
        if "processor-crash" in faults:
            self.emulation.crashes_on = lambda key: bool(self.uploaded) and key == self.uploaded[0]

        region = config.region
        self.s3 = boto3.client("s3", region_name=region)
        self.sqs = boto3.client("sqs", region_name=region)
        self.sfn = boto3.client("stepfunctions", region_name=region)
        self.lam = boto3.client("lambda", region_name=region)
        sns = boto3.client("sns", region_name=region)
        iam = boto3.client("iam", region_name=region)

        self.bucket = "customlabels-batch-emulated"
        self.s3.create_bucket(Bucket=self.bucket)
        self.dlq_url = self.sqs.create_queue(
            QueueName="images-dlq",
            Attributes={"MessageRetentionPeriod": str(DEAD_LETTER_RETENTION_DAYS * 86400)},
        )["QueueUrl"]
        dlq_arn = self._queue_arn(self.dlq_url)
        self.queue_url = self.sqs.create_queue(
            QueueName="images",
            Attributes={
                "VisibilityTimeout": str(config.visibility_timeout_seconds),
                "MessageRetentionPeriod": str(QUEUE_RETENTION_DAYS * 86400),
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": config.max_receive_count}
                ),
            },
        )["QueueUrl"]
        queue_arn = self._queue_arn(self.queue_url)
        self.topic_arn = sns.create_topic(Name="pipeline-notifications")["TopicArn"]
        self.inbox_url = self.sqs.create_queue(QueueName="notification-inbox")["QueueUrl"]
        sns.subscribe(
            TopicArn=self.topic_arn,
            Protocol="sqs",
            Endpoint=self._queue_arn(self.inbox_url),
            Attributes={"RawMessageDelivery": "false"},
        )
        role = iam.create_role(
            RoleName="pipeline-role",
            AssumeRolePolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": ["lambda.amazonaws.com", "states.amazonaws.com"]},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            ),
        )["Role"]["Arn"]
        self.run_state_table = "run-state"
        boto3.client("dynamodb", region_name=region).create_table(
            TableName=self.run_state_table,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        self._start_triage(role)
        processor_environment = config.function_environment(
            Use.PROCESSOR,
            bucket=self.bucket,
            runStateTable=self.run_state_table,
            deadLetterQueueUrl=self.dlq_url,
        )
        function_arn = self._create_function(
            "image-processor",
            "processor.app.lambda_handler",
            role,
            config.processor_timeout_seconds,
            processor_environment,
        )
        self.mapping_uuid = self.lam.create_event_source_mapping(
            EventSourceArn=queue_arn,
            FunctionName=function_arn,
            BatchSize=config.batch_size,
            Enabled=False,
            FunctionResponseTypes=["ReportBatchItemFailures"],
            ScalingConfig={"MaximumConcurrency": config.concurrency},
        )["UUID"]
        _detach_moto_dispatch(region, queue_arn)

        recorder_environment = config.function_environment(
            Use.RUN_RECORDER,
            bucket=self.bucket,
            queueUrl=self.queue_url,
            deadLetterQueueUrl=self.dlq_url,
            runStateTable=self.run_state_table,
        )
        recorder_arn = self._create_function(
            RUN_RECORDER_NAME, "run_recorder.app.lambda_handler", role, 60, recorder_environment
        )
        self.emulation.functions[RUN_RECORDER_NAME] = self._load_run_recorder(
            recorder_arn, recorder_environment
        )

        substitutions = config.definition_substitutions(
            QueueUrl=self.queue_url,
            DeadLetterQueueUrl=self.dlq_url,
            EventSourceMappingUuid=self.mapping_uuid,
            NotificationTopicArn=self.topic_arn,
            RunRecorderFunctionArn=recorder_arn,
            RunStateTable=self.run_state_table,
        )
        definition = render_definition(self.options.definition.read_text(), substitutions)
        self.state_machine_arn = self.sfn.create_state_machine(
            name="batch-run", definition=definition, roleArn=role
        )["stateMachineArn"]

        self._processor_environment = processor_environment
        self.mapping = EventSourceMappingEmulator(
            clock=self.clock,
            region=region,
            mapping_uuid=self.mapping_uuid,
            queue_url=self.queue_url,
            max_concurrency=config.concurrency,
            handler_factory=self._load_processor,
            timeout_seconds=config.processor_timeout_seconds,
        )
        self.mapping.start()

    def _create_function(
        self, name: str, handler: str, role: str, timeout_seconds: int, environment: dict[str, str]
    ) -> str:
        """A function as the stack declares it (its code runs in-process, so the package is empty)."""
        return self.lam.create_function(
            FunctionName=name,
            Runtime="python3.13",
            Role=role,
            Handler=handler,
            Code={"ZipFile": _empty_zip()},
            Timeout=timeout_seconds,
            Environment={"Variables": environment},
        )["FunctionArn"]

    def _start_triage(self, role: str) -> None:
        """The triage function with its failure queue, configured as the stack configures them, and the
        bucket notification that invokes it (async_invoke runs it here, as Lambda would)."""
        config = self.config
        self.triage_failures_url = self.sqs.create_queue(
            QueueName="triage-failures",
            Attributes={"MessageRetentionPeriod": str(DEAD_LETTER_RETENTION_DAYS * 86400)},
        )["QueueUrl"]
        # With a latency budget the triage starts the wait clock in the run-state table.
        clock = {"runStateTable": self.run_state_table} if config.max_wait_minutes is not None else {}
        environment = config.function_environment(
            Use.TRIAGE, bucket=self.bucket, queueUrl=self.queue_url, **clock
        )
        function_arn = self._create_function(TRIAGE_NAME, "triage.app.lambda_handler", role, 30, environment)
        self.lam.put_function_event_invoke_config(
            FunctionName=TRIAGE_NAME,
            MaximumRetryAttempts=TRIAGE_RETRY_ATTEMPTS,
            MaximumEventAgeInSeconds=TRIAGE_MAX_EVENT_AGE_SECONDS,
            DestinationConfig={"OnFailure": {"Destination": self._queue_arn(self.triage_failures_url)}},
        )
        self.emulation.async_functions[TRIAGE_NAME] = self._load_triage(function_arn, environment)
        self.s3.put_bucket_notification_configuration(
            Bucket=self.bucket,
            NotificationConfiguration={
                "LambdaFunctionConfigurations": [
                    {
                        "LambdaFunctionArn": function_arn,
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {
                            "Key": {"FilterRules": [{"Name": "prefix", "Value": config.input_prefix}]}
                        },
                    }
                ]
            },
        )

    def _load_triage(self, function_arn: str, environment: dict[str, str]) -> Callable[[dict, str], dict]:
        """One execution environment of the triage (uploads arrive one at a time here), its logs and
        metrics (EMF, printed to stdout) in the processor's log."""
        module = functions.load_handler(functions.TRIAGE, "environment", environment)
        ingest_flushed_metrics(module.metrics, now=self.clock.datetime, region=self.config.region)
        module._utc_now = self._utc_now
        log = self.options.processor_log
        if log is not None:
            handler = module.logger.registered_handler
            self._exit.callback(setattr, handler, "stream", handler.stream)
            handler.stream = log
        stats = self.emulation.async_invokes[TRIAGE_NAME]

        def invoke(event: dict, request_id: str) -> dict:
            context = LambdaContext(
                function_name=TRIAGE_NAME,
                invoked_function_arn=function_arn,
                memory_limit_in_mb=256,
                aws_request_id=request_id,
                timeout_seconds=30,
            )
            with contextlib.redirect_stdout(log) if log is not None else contextlib.nullcontext():
                outcome = module.lambda_handler(event, context)
            stats.update(outcome)
            return outcome

        return invoke

    def _load_processor(self, index: int):
        """A fresh copy of the real handler module, as a new Lambda execution environment loads it."""
        module = functions.load_handler(
            functions.PROCESSOR, f"environment_{index}", self._processor_environment
        )
        ingest_flushed_metrics(module.metrics, now=self.clock.datetime, region=self.config.region)
        # The times it writes (labeledAt, recordedAt) are emulated, as are the uploads' event times.
        module._utc_now = self._utc_now
        # This copy's pauses and pacing run on emulated time.
        module.time = types.SimpleNamespace(
            sleep=self.clock.sleep, monotonic=self.clock.now, time=self.clock.epoch_seconds
        )
        # Its calls in flight run on threads that are clock actors.
        module.futures = threads_on(self.clock)
        # Its model calls answered without the HTTP round trip through moto (services.py says when).
        module.rekognition_client = functools.cache(
            lambda create=module.rekognition_client: services.answer_detect_in_process(
                self.emulation, create()
            )
        )
        if self.options.processor_log is not None:
            # Every copy shares one logging handler (same service name); point it at this run's log
            # and put it back on close, so the next emulation does not write to a closed file.
            handler = module.logger.registered_handler
            self._exit.callback(setattr, handler, "stream", handler.stream)
            handler.stream = self.options.processor_log
        if self.options.processor_variant is not None:
            self.options.processor_variant(module)
        return module.lambda_handler

    def _load_run_recorder(self, function_arn: str, environment: dict[str, str]) -> Callable[[dict], dict]:
        module = functions.load_handler(functions.RUN_RECORDER, "environment", environment)
        context = LambdaContext(
            function_name=RUN_RECORDER_NAME,
            invoked_function_arn=function_arn,
            memory_limit_in_mb=256,
            aws_request_id="emulated",
            timeout_seconds=60,
        )
        cloudwatch = boto3.client("cloudwatch", region_name=self.config.region)

        def invoke(event: dict) -> dict:
            # The model's InServiceInferenceUnits reach CloudWatch minute by minute; by the time the
            # recorder runs (after the state machine's settle wait) the run's minutes are there.
            self._in_service_published = publish_in_service_units(
                cloudwatch,
                self.model,
                epoch=self.clock.epoch,
                since=self._in_service_published,
                until=self.clock.now(),
            )
            return module.lambda_handler(event, context)

        return invoke

    def _utc_now(self) -> str:
        """images.utc_now on the emulated clock (the format every pipeline document uses)."""
        return self.clock.datetime().isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def _processor_environment_base(self) -> dict[str, str]:
        return {
            "AWS_DEFAULT_REGION": self.config.region,
            "AWS_REGION": self.config.region,
            "AWS_ACCESS_KEY_ID": "emulated",
            "AWS_SECRET_ACCESS_KEY": "emulated",
            "AWS_SESSION_TOKEN": "emulated",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
            "AWS_LAMBDA_FUNCTION_NAME": "image-processor",
        }

    def _queue_arn(self, url: str) -> str:
        return self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]

    # ---- inputs --------------------------------------------------------------------------
    def upload(self, uploads: Iterable[Upload]) -> list[str]:
        """Put objects under the input prefix. Straight into moto's S3 backend, which sends the same
        event notifications as a PutObject request: large benchmark batches skip the HTTP layer."""
        from moto.s3.models import s3_backends

        backend = s3_backends[ACCOUNT]["aws"]
        keys = []
        for item in uploads:
            key = self.config.input_prefix + item.key
            if len(key.encode("utf-8")) > MAX_KEY_BYTES:
                raise ValueError(f"S3 refuses keys over {MAX_KEY_BYTES} bytes: {key[:60]}...")
            backend.put_object(self.bucket, key, item.body)
            self.uploaded.append(key)
            keys.append(key)
        return keys

    def send_messages(self, bodies: Iterable[str]) -> None:
        """Message bodies straight into the queue, as any producer could send them."""
        for body in bodies:
            self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)
            self.events.append((self.clock.now(), "message sent to the queue"))

    def upload_when(self, condition: Callable[[EmulatedPipeline], bool], uploads: list[Upload]) -> None:
        """Upload during the run, at the first driver tick where condition(self) holds."""
        self._scheduled_uploads.append((condition, uploads))

    # ---- the run -------------------------------------------------------------------------
    def start_execution(self, payload: dict | str, name: str | None = None) -> str:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        arn = self.sfn.start_execution(
            stateMachineArn=self.state_machine_arn, input=text, name=name or str(uuid.uuid4())
        )["executionArn"]
        self._started.append(arn)
        self.events.append((self.clock.now(), f"execution started: {arn.rsplit(':', 1)[-1]}"))
        return arn

    def run(self, *, on_tick: Callable[[EmulatedPipeline], None] | None = None) -> dict:
        """Start one execution as the schedule would, emulate the status-change rule, and return
        when every execution has ended. Returns the run report."""
        if self.options.processor_log is not None:
            # The handler prints its metrics (EMF) to stdout, as in Lambda; keep them with its logs.
            with contextlib.redirect_stdout(self.options.processor_log):
                return self._run(on_tick)
        return self._run(on_tick)

    def _run(self, on_tick: Callable[[EmulatedPipeline], None] | None) -> dict:
        wall_start = time.monotonic()
        started = self.clock.now()
        scheduler = EmulatedScheduler(self.config, self.clock)
        scheduler.due(started)  # the invocation this run stands for (a cron schedule's next, too)
        with self.clock.actor():
            if "object-deleted-before-processing" in self.options.faults:
                self._delete_before_processing()
            self.start_execution({"trigger": "schedule"})
            if "duplicate-trigger" in self.options.faults:
                self.start_execution({"trigger": "schedule"})  # the same event, delivered again
            while True:
                self.clock.sleep(DRIVER_TICK_SECONDS)
                now = self.clock.now()
                if on_tick:
                    on_tick(self)
                if self.mapping.fatal:
                    raise RuntimeError(f"an emulated event-source-mapping poller died:\n{self.mapping.fatal}")
                self.mapping.ensure_pollers()
                state = self.mapping_state()
                if self._enabled_at is None and state == "Enabled":
                    self._enabled_at = now
                self._upload_due_images(now)
                self._inject_faults(now, state, started)
                executions = self._executions()
                if self.options.status_change_rule and self._emulate_status_change_rule(now, executions):
                    executions = self._executions()
                running = any(e["status"] == "RUNNING" for e in executions)
                for payload in scheduler.due(now):
                    if running:  # the schedules keep firing during a long run; the guard ends these
                        self.start_execution(payload)
                # A stopping model is still settling; the run ends once it has.
                settled = self.model.status() != "STOPPING"
                if settled and not running and not self._scheduled_uploads:
                    break
                if now - started > self.options.max_emulated_seconds:
                    raise RuntimeError("the emulated run exceeded max_emulated_seconds")
        return self.report(wall_seconds=time.monotonic() - wall_start, emulated_seconds=now - started)

    def run_for(
        self,
        seconds: float,
        *,
        arrivals: Iterable[tuple[float, Upload]] = (),
        schedules: bool = True,
        max_tail_seconds: float = 2 * 86400,
        on_tick: Callable[[EmulatedPipeline], None] | None = None,
    ) -> dict:
        """Drive the pipeline for `seconds` of emulated time as deployed: the schedules fire as
        EventBridge Scheduler would (the batch schedule in its time zone, the latency check), each
        upload of `arrivals` ((emulated seconds from now, upload), in order) is put when its time
        comes (to the driver's tick), and the status-change rule acts. Then the schedules go on
        firing, with no more uploads, until every image that arrived has left the queue and no
        execution is running (at most `max_tail_seconds`). Returns the run report."""
        if self.options.processor_log is not None:
            with contextlib.redirect_stdout(self.options.processor_log):
                return self._run_for(seconds, arrivals, schedules, max_tail_seconds, on_tick)
        return self._run_for(seconds, arrivals, schedules, max_tail_seconds, on_tick)

    def _run_for(self, seconds, arrivals, schedules, max_tail_seconds, on_tick) -> dict:
        wall_start = time.monotonic()
        started = self.clock.now()
        pending = sorted(((started + at, upload) for at, upload in arrivals), key=lambda item: item[0])
        scheduler = EmulatedScheduler(self.config, self.clock) if schedules else None
        index = 0
        with self.clock.actor():
            now = started
            while True:
                if scheduler is not None:
                    for payload in scheduler.due(now):
                        self.start_execution(payload)
                batch = []
                while index < len(pending) and pending[index][0] <= now:
                    batch.append(pending[index][1])
                    index += 1
                if batch:
                    self.upload(batch)
                if on_tick:
                    on_tick(self)
                if self.mapping.fatal:
                    raise RuntimeError(f"an emulated event-source-mapping poller died:\n{self.mapping.fatal}")
                self.mapping.ensure_pollers()
                executions = self._executions()
                if self.options.status_change_rule:
                    self._emulate_status_change_rule(now, executions)
                if now - started >= seconds and index == len(pending):
                    running = any(e["status"] == "RUNNING" for e in self._executions())
                    empty = not any(self.queue_counts().values())
                    if empty and not running and self.model.status() != "STOPPING":
                        break
                    if now - started > seconds + max_tail_seconds:
                        raise RuntimeError("the emulated run did not drain within max_tail_seconds")
                # With nothing running, nothing can happen before the next upload or invocation: sleep
                # until then (at least a tick; an upload is put at the first tick at or after its time).
                running = any(e["status"] == "RUNNING" for e in executions)
                wait = DRIVER_TICK_SECONDS
                if not running and self.mapping_state() == "Disabled" and self.model.status() != "STOPPING":
                    upcoming = [pending[index][0]] if index < len(pending) else []
                    if scheduler is not None:
                        upcoming.append(scheduler.next_due())
                    if upcoming:
                        wait = max(DRIVER_TICK_SECONDS, min(upcoming) - now)
                self.clock.sleep(wait)
                now = self.clock.now()
        return self.report(wall_seconds=time.monotonic() - wall_start, emulated_seconds=now - started)

    def _upload_due_images(self, now: float) -> None:
        for condition, uploads in list(self._scheduled_uploads):
            if condition(self):
                self._scheduled_uploads.remove((condition, uploads))
                self.upload(uploads)
                self.events.append((now, f"uploaded {len(uploads)} images during the run"))

    def _inject_faults(self, now: float, mapping_state: str, run_started: float) -> None:
        """The faults that happen during the run: people and other runs acting on the resources."""
        faults = set(self.options.faults) - self._done_faults
        enabling = mapping_state == "Enabling"
        # The faults that touch resources mid-run come at the injector's first look (every
        # DRIVER_TICK_SECONDS) that sees the mapping Enabled: a small batch drains within seconds,
        # and a fault that comes after the drain has nothing left to act on.
        into_drain = self._enabled_at is not None
        if "abort-during-drain" in faults and self._enabled_at is not None:
            self._abort_running(now, "abort-during-drain")
        if "abort-while-enabling" in faults and enabling:
            self._abort_running(now, "abort-while-enabling")
        if "mapping-stuck-transitioning" in faults and enabling:
            self.emulation.control.mapping_stuck_until = now + STUCK_TRANSITION_SECONDS
            self._fault_done(now, "mapping-stuck-transitioning", "the mapping is stuck Enabling (fault)")
        if "model-stopped-externally" in faults and into_drain:
            try:
                self.model.stop_externally()
                self._fault_done(
                    now, "model-stopped-externally", "the model was stopped outside the run (fault)"
                )
            except ModelError as error:  # the run got there first: the person has nothing to stop
                self._fault_missed(
                    now, "model-stopped-externally", f"the model could not be stopped: {error}"
                )
        if "mapping-disabled-externally" in faults and into_drain and mapping_state == "Enabled":
            external_update(self.emulation, self.mapping_uuid, False)
            self._fault_done(
                now, "mapping-disabled-externally", "the mapping was disabled outside the run (fault)"
            )
        if "guard-lag" in faults and now >= run_started + 10:
            self.start_execution({"trigger": "schedule"})
            self._fault_done(now, "guard-lag", "a second trigger during the listing lag (fault)")

    def _delete_before_processing(self) -> None:
        """Fault "object-deleted-before-processing": the first image's notification is queued with
        its size, and a hand-written message names a key without a size; neither object exists."""
        self.s3.delete_object(Bucket=self.bucket, Key=self.uploaded[0])
        gone = f"{self.config.input_prefix}deleted-before-processing.jpg"
        record = {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": self.bucket}, "object": {"key": gone}},
        }
        self.send_messages([json.dumps({"Records": [record]})])
        self._fault_done(
            self.clock.now(), "object-deleted-before-processing", "two queued images were deleted"
        )

    def _fault_done(self, now: float, fault: str, event: str) -> None:
        self._done_faults.add(fault)
        self.events.append((now, event))

    def _fault_missed(self, now: float, fault: str, why: str) -> None:
        """A fault that could not happen as rehearsed: said in the report, never silently dropped."""
        self._done_faults.add(fault)
        self._missed_faults[fault] = why
        self.events.append((now, f"fault {fault} did not happen: {why}"))

    def _abort_running(self, now: float, fault: str) -> None:
        for execution in self._executions("RUNNING"):
            self.sfn.stop_execution(
                executionArn=execution["executionArn"],
                error="OperatorAbort",
                cause=f"Stopped by the {fault} fault",
            )
        self._fault_done(now, fault, "execution aborted (fault)")

    def _emulate_status_change_rule(self, now: float, executions: list[dict]) -> bool:
        """The stack's EventBridge rule: a run that ended FAILED, TIMED_OUT or ABORTED (and was not
        itself a clean-up run) starts a clean-up execution. Returns whether it started one."""
        started = False
        for execution in executions:
            arn = execution["executionArn"]
            if arn in self._handled or execution["status"] == "RUNNING":
                continue
            self._handled.add(arn)
            self.events.append((now, f"execution {execution['status']}: {arn.rsplit(':', 1)[-1]}"))
            if execution["status"] not in CLEANUP_STATUSES:
                continue
            described = self.sfn.describe_execution(executionArn=arn)
            if not described.get("input", "").startswith(CLEANUP_INPUT_PREFIX):
                self.start_execution(cleanup_input(arn, execution["status"]))
                started = True
        return started

    def _executions(self, status: str | None = None) -> list[dict]:
        described = [
            self._ended.get(arn) or self.sfn.describe_execution(executionArn=arn) for arn in self._started
        ]
        # An ended execution does not change again: describe it no more.
        self._ended.update((e["executionArn"], e) for e in described if e["status"] != "RUNNING")
        return [e for e in described if status is None or e["status"] == status]

    @property
    def enabled_at(self) -> float | None:
        """Emulated time the driver first saw the mapping Enabled (to the driver's tick)."""
        return self._enabled_at

    def mapping_state(self) -> str:
        return self.lam.get_event_source_mapping(UUID=self.mapping_uuid)["State"]

    def queue_counts(self, url: str | None = None) -> dict[str, int]:
        names = {
            "visible": "ApproximateNumberOfMessages",
            "inFlight": "ApproximateNumberOfMessagesNotVisible",
            "delayed": "ApproximateNumberOfMessagesDelayed",
        }
        with exact_queue_counts():
            attrs = self.sqs.get_queue_attributes(
                QueueUrl=url or self.queue_url, AttributeNames=list(names.values())
            )["Attributes"]
        return {k: int(attrs[v]) for k, v in names.items()}

    # ---- what happened -------------------------------------------------------------------
    def keys(self, prefix: str) -> set[str]:
        """Every key under prefix, as ListObjectsV2 would page them."""
        return set(self._stored(prefix))

    def objects(self, prefix: str) -> dict[str, bytes]:
        """Every object under prefix, with its body."""
        return {name: key.value for name, key in self._stored(prefix).items()}

    def _stored(self, prefix: str) -> dict:
        """The current objects under prefix, read from moto's store: each page of moto's listing
        scans and sorts the whole bucket (quadratic over a run's results), and a GetObject per
        result cost the report more than a tenth of a 2,000-image run's wall time."""
        from moto.s3.models import FakeDeleteMarker, s3_backends

        bucket = s3_backends[ACCOUNT]["aws"].get_bucket(self.bucket)
        return {
            name: key
            for name, key in list(bucket.keys.items())
            if name.startswith(prefix) and not isinstance(key, FakeDeleteMarker)
        }

    def queued_keys(self, url: str) -> list[str]:
        """Image keys in a queue, read from moto's store so that looking does not count as a receive."""
        from moto.sqs.models import sqs_backends

        name = url.rsplit("/", 1)[-1]
        queue = sqs_backends[ACCOUNT][self.config.region].queues[name]
        keys = []
        with moto_fixes.SQS_LOCK:
            messages = list(queue._messages)
        for message in messages:
            try:
                body = json.loads(message.body)
            except json.JSONDecodeError:
                continue
            # A failure queue holds Lambda's invocation records: the S3 event is their requestPayload.
            for record in body.get("Records") or body.get("requestPayload", {}).get("Records", []):
                keys.append(unquote_plus(record["s3"]["object"]["key"]))
        return keys

    def run_state_item(self, item_id: str) -> dict[str, str]:
        """One item of the run-state table (the lease, the progress counter, the wait clock), as
        attribute name -> value."""
        item = (
            boto3.client("dynamodb", region_name=self.config.region)
            .get_item(TableName=self.run_state_table, Key={"id": {"S": item_id}}, ConsistentRead=True)
            .get("Item", {})
        )
        return {name: next(iter(value.values())) for name, value in item.items() if name != "id"}

    def notifications(self) -> list[dict]:
        out = []
        while True:
            messages = self.sqs.receive_message(QueueUrl=self.inbox_url, MaxNumberOfMessages=10).get(
                "Messages", []
            )
            if not messages:
                return out
            for message in messages:
                envelope = json.loads(message["Body"])
                try:
                    body = json.loads(envelope["Message"])
                except (json.JSONDecodeError, TypeError):
                    body = envelope["Message"]
                out.append({"subject": envelope.get("Subject"), "message": body})
                self.sqs.delete_message(QueueUrl=self.inbox_url, ReceiptHandle=message["ReceiptHandle"])

    def run_records(self) -> list[dict]:
        """The run records the run recorder wrote, oldest first (keys sort by start time)."""
        return [
            {"key": key, "record": json.loads(body)}
            for key, body in sorted(self.objects(self.config.runs_prefix).items())
        ]

    def execution_summaries(self) -> list[dict]:
        summaries = []
        for execution in sorted(self._executions(), key=lambda e: e["startDate"]):
            arn = execution["executionArn"]
            described = self.sfn.describe_execution(executionArn=arn)
            history = [
                event
                for page in self.sfn.get_paginator("get_execution_history").paginate(executionArn=arn)
                for event in page["events"]
            ]
            path = [e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e]
            times = self.emulation.execution_times.get(arn, {})
            summary = {
                "name": execution["name"],
                "executionArn": arn,
                "input": json.loads(described.get("input") or "{}"),
                "status": execution["status"],
                "startedAtSeconds": round(times.get("started", 0.0), 3),
                "stoppedAtSeconds": round(times["stopped"], 3) if "stopped" in times else None,
                "stateTransitions": len(path),
                "statePath": path,
            }
            if described.get("error"):
                summary["error"] = described["error"]
                summary["cause"] = described.get("cause")
            summaries.append(summary)
        return summaries

    def report(self, *, wall_seconds: float, emulated_seconds: float) -> dict:
        config = self.config
        results = self.keys(config.results_prefix)
        errors = self.keys(config.errors_prefix)
        queued = set(self.queued_keys(self.queue_url))
        dead = set(self.queued_keys(self.dlq_url))
        never_triaged = set(self.queued_keys(self.triage_failures_url))
        accounted = {}
        for key in self.uploaded:
            relative = key[len(config.input_prefix) :]
            if f"{config.results_prefix}{relative}.json" in results:
                accounted[key] = "result"
            elif {
                f"{config.errors_prefix}{relative}.json",
                images.long_key_error_key(key, config.errors_prefix),
            } & errors:
                accounted[key] = "error-record"
            elif key in dead:
                accounted[key] = "dead-letter-queue"
            elif key in queued:
                accounted[key] = "queued"
            elif key in never_triaged:
                accounted[key] = "triage-failure-queue"
            elif key.endswith("/"):
                accounted[key] = "skipped-folder-marker"
        result_documents = self.objects(config.results_prefix)
        time_to_result = waits.summary(
            waits.of_result(json.loads(body)) for body in result_documents.values()
        )
        running_seconds = self.model.running_seconds()
        units = max(self.model.inference_units, config.min_inference_units)
        # Billing is the units in service summed over RUNNING time (auto-scaling changes them).
        billed_minutes = self.model.inference_unit_seconds() / 60
        executions = self.execution_summaries()
        return {
            "imagesUploaded": len(self.uploaded),
            "resultsWritten": len(results),
            "errorRecords": len(errors),
            "imagesByOutcome": _count(accounted.values()),
            "lostImages": sorted(set(self.uploaded) - accounted.keys()),
            # Upload (the S3 event's time) to result, over every result in the bucket.
            "timeToResult": time_to_result,
            "queue": self.queue_counts(),
            "deadLetterQueue": self.queue_counts(self.dlq_url),
            "executions": executions,
            "stateTransitions": sum(e["stateTransitions"] for e in executions),
            "notifications": self.notifications(),
            "runRecords": self.run_records(),
            "model": {
                "finalStatus": self.model.status(),
                "inferenceUnits": units,
                "runningSeconds": round(running_seconds, 3),
                "mostUnitsInService": self.model.most_units_in_service(),
                "unitsInService": [
                    {"atSeconds": round(t, 3), "units": n} for t, n in self.model.units_timeline()
                ],
                "longestIdleRunningSeconds": round(self.model.longest_idle_running_seconds(), 3),
                "billedInferenceUnitMinutes": round(billed_minutes, 3),
                "estimatedCostUsd": round(billed_minutes / 60 * config.usd_per_inference_unit_hour, 4),
                "calls": dict(self.model.calls),
            },
            "mapping": {
                "finalState": self.mapping_state(),
                "maximumConcurrency": self.lam.get_event_source_mapping(UUID=self.mapping_uuid)
                .get("ScalingConfig", {})
                .get("MaximumConcurrency"),
            },
            "processor": dict(self.mapping.stats) | {"pollerErrors": self.mapping.errors[:20]},
            "triage": {name: self.emulation.async_invokes[TRIAGE_NAME][name] for name in TRIAGE_STATS}
            | {"failureQueue": self.queue_counts(self.triage_failures_url)},
            "durations": {
                "emulatedSeconds": round(emulated_seconds, 3),
                "wallSeconds": round(wall_seconds, 3),
                "timeScale": None if math.isinf(self.options.time_scale) else self.options.time_scale,
            },
            "faults": list(self.options.faults),
            # Requested faults that never happened, and why (a run that ended before they came).
            "faultsNotInjected": {
                **{
                    f: "the run ended before it came"
                    for f in self.options.faults
                    if f in MID_RUN_FAULTS and f not in self._done_faults
                },
                **self._missed_faults,
            },
            "timeline": [{"atSeconds": round(t, 3), "event": text} for t, text in self.events],
            "settings": {
                "config": config.to_context(),
                "model": {
                    "startSeconds": self.model.behaviour.start_seconds,
                    "stopSeconds": self.model.behaviour.stop_seconds,
                    "tpsPerInferenceUnit": self.model.behaviour.tps_per_inference_unit,
                    "latencySeconds": self.model.behaviour.latency_seconds,
                    "latencySpread": self.model.behaviour.latency_spread,
                    "throttleRoundTripSeconds": self.model.behaviour.throttle_round_trip_seconds,
                    "burstSeconds": self.model.behaviour.burst_seconds,
                },
                "controlPlane": {
                    "mappingTransitionSeconds": self.emulation.control.mapping_transition_seconds,
                    "listExecutionsLagSeconds": self.emulation.control.list_executions_lag_seconds,
                    "queueCountsStaleSeconds": self.emulation.control.queue_counts_stale_seconds,
                },
                "definition": str(self.options.definition),
                "pricePerInferenceUnitHour": config.usd_per_inference_unit_hour,
            },
        }


def _count(values: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[value] = out.get(value, 0) + 1
    return out


def _detach_moto_dispatch(region: str, queue_arn: str) -> None:
    """moto would invoke the function itself on new messages (needing Docker); the emulated
    mapping does the polling instead."""
    from moto.sqs.models import sqs_backends

    for queue in sqs_backends[ACCOUNT][region].queues.values():
        if queue.queue_arn == queue_arn:
            queue.lambda_event_source_mappings.clear()


def _empty_zip() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README", "# the emulator runs the lambdas/ handlers in-process\n")
    return buffer.getvalue()


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _quiet_logger(name: str):
    import logging

    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
