"""Commands that act on the deployed stack: start a run now, show what is running (and costing money),
and move dead-lettered images back onto the queue. Every resource is found from the stack's outputs."""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    SSOError,
    TokenRetrievalError,
)

from customlabels_batch.settings import CLI_NAME, Settings

DEFAULT_STACK_NAME = Settings.model_fields["stack_name"].default
DEFAULT_INPUT = {"trigger": "manual"}

EXIT_OK = 0
EXIT_FAILED = 1  # the execution did not succeed, or the user declined
EXIT_ERROR = 2  # could not do what was asked: no credentials, no stack, an AWS error
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C

# Billed by the inference-unit hour from the moment it starts until it has stopped.
BILLED_MODEL_STATUSES = ("STARTING", "RUNNING")
# PENDING_REDRIVE: a redrive was requested and the execution is about to run again.
UNFINISHED_EXECUTION_STATUSES = ("RUNNING", "PENDING_REDRIVE")
RECENT = 5
HISTORY_PAGE_SIZE = 100
QUEUE_COUNT_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5})
CREDENTIALS_HELP = (
    "set AWS_PROFILE, run `aws configure` (or `aws sso login`), or export AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY"
)
# Codes AWS answers with when the credentials it was given are not (or no longer) good.
REJECTED_CREDENTIAL_CODES = {
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
}

# Patched by tests so following an execution does not really wait.
_sleep = time.sleep


class CliError(Exception):
    """A failure the user can act on: reported as one line, exit code 2."""


# ---------------------------------------------------------------------------------------------------
# Finding the stack


@dataclass(frozen=True)
class StackOutputs:
    stack_name: str
    region: str
    stack_status: str
    values: dict[str, str]

    def require(self, *names: str) -> list[str]:
        """The values of `names`, or a CliError naming every one the stack lacks."""
        missing = [name for name in names if not self.values.get(name)]
        if missing:
            raise CliError(
                f"Stack {self.stack_name} (status {self.stack_status}) has no output "
                f"{', '.join(missing)}: it may have been deployed from an older version of this "
                "project; redeploy it with `make deploy`"
            )
        return [self.values[name] for name in names]


def make_session(region: str | None) -> boto3.Session:
    """A session on boto3's default credential chain, failing early when no region is configured."""
    session = boto3.Session(region_name=region)
    if not session.region_name:
        raise NoRegionError()
    return session


def client(session: boto3.Session, service: str) -> Any:
    return session.client(service, config=CLIENT_CONFIG)


def load_stack_outputs(cloudformation: Any, stack_name: str) -> StackOutputs:
    region = cloudformation.meta.region_name
    try:
        stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    except ClientError as error:
        if _error_code(error) == "ValidationError" and "does not exist" in _error_message(error):
            raise CliError(
                f"Stack {stack_name} not found in region {region}; deploy it with `make deploy` "
                "or pass --stack-name"
            ) from error
        raise
    values = {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}
    return StackOutputs(stack_name, region, stack["StackStatus"], values)


# ---------------------------------------------------------------------------------------------------
# run-now


def execution_name(now: datetime) -> str:
    """`manual-20250102T030405.678Z`: names must be unique per state machine for 90 days, and may
    not contain ':', so an ISO timestamp with milliseconds and no separators."""
    return "manual-" + now.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"


def start_execution(sfn: Any, state_machine_arn: str, execution_input: dict[str, Any]) -> str:
    response = sfn.start_execution(
        stateMachineArn=state_machine_arn,
        name=execution_name(datetime.now(UTC)),
        input=json.dumps(execution_input),
    )
    return response["executionArn"]


def console_url(execution_arn: str) -> str:
    partition, region = execution_arn.split(":")[1], execution_arn.split(":")[3]
    host = {
        "aws-cn": "console.amazonaws.cn",
        "aws-us-gov": "console.amazonaws-us-gov.com",
    }.get(partition, f"{region}.console.aws.amazon.com")
    return f"https://{host}/states/home?region={region}#/v2/executions/details/{execution_arn}"


def new_history_events(sfn: Any, execution_arn: str, *, after_id: int) -> list[dict[str, Any]]:
    """History events with an id above `after_id`, oldest first. Reads newest first and stops at the
    first page that reaches an event already seen, so a poll of a long execution (up to 25,000
    events) costs one call rather than the whole history."""
    fresh: dict[int, dict[str, Any]] = {}
    token = None
    while True:
        request: dict[str, Any] = {
            "executionArn": execution_arn,
            "reverseOrder": True,
            "maxResults": HISTORY_PAGE_SIZE,
            "includeExecutionData": False,  # state names only: no inputs and outputs of up to 256 KB
        }
        if token:
            request["nextToken"] = token
        page = sfn.get_execution_history(**request)
        events = page["events"]
        fresh.update({event["id"]: event for event in events if event["id"] > after_id})
        token = page.get("nextToken")
        if not token or any(event["id"] <= after_id for event in events):
            return [fresh[event_id] for event_id in sorted(fresh)]


def follow_execution(sfn: Any, execution_arn: str, *, poll_seconds: float) -> int:
    """Print each state as it is entered until the execution ends; 0 if it succeeded, else 1."""
    print(f"Following (times UTC, polling every {poll_seconds:g} s; Ctrl-C stops following, not the run)")
    last_id = 0
    try:
        while True:
            # Status first, history second: once the status is final, the history read after it
            # holds every state the execution entered.
            execution = sfn.describe_execution(executionArn=execution_arn)
            for event in new_history_events(sfn, execution_arn, after_id=last_id):
                last_id = max(last_id, event["id"])
                if event["type"].endswith("StateEntered"):
                    entered = event["timestamp"].astimezone(UTC).strftime("%H:%M:%S")
                    print(f"{entered}  {event['stateEnteredEventDetails']['name']}")
            if execution["status"] not in UNFINISHED_EXECUTION_STATUSES:
                return report_final_status(execution)
            _sleep(poll_seconds)
    except KeyboardInterrupt:
        print()
        print(f"Stopped following; the execution is still running: {console_url(execution_arn)}")
        return EXIT_INTERRUPTED


def report_final_status(execution: dict[str, Any]) -> int:
    print(f"Execution {execution['name']} {execution['status']}")
    for field in ("error", "cause"):
        if execution.get(field):
            print(f"  {field}: {execution[field]}")
    return EXIT_OK if execution["status"] == "SUCCEEDED" else EXIT_FAILED


def run_now(args: argparse.Namespace) -> int:
    session = make_session(args.region)
    outputs = load_stack_outputs(client(session, "cloudformation"), args.stack_name)
    [state_machine_arn] = outputs.require("StateMachineArn")
    sfn = client(session, "stepfunctions")
    execution_input = DEFAULT_INPUT if args.execution_input is None else args.execution_input
    execution_arn = start_execution(sfn, state_machine_arn, execution_input)
    print(f"Started execution {execution_arn}")
    print(f"Console: {console_url(execution_arn)}")
    if not args.follow:
        return EXIT_OK
    return follow_execution(sfn, execution_arn, poll_seconds=args.poll_seconds)


# ---------------------------------------------------------------------------------------------------
# status


@dataclass(frozen=True)
class QueueCounts:
    visible: int
    in_flight: int
    delayed: int

    @property
    def total(self) -> int:
        return self.visible + self.in_flight + self.delayed


def queue_attributes(sqs: Any, queue_url: str, names: list[str]) -> dict[str, str]:
    return sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]


def queue_counts(sqs: Any, queue_url: str) -> QueueCounts:
    attributes = queue_attributes(sqs, queue_url, list(QUEUE_COUNT_ATTRIBUTES))
    visible, in_flight, delayed = (int(attributes.get(name, 0)) for name in QUEUE_COUNT_ATTRIBUTES)
    return QueueCounts(visible=visible, in_flight=in_flight, delayed=delayed)


def parse_project_version_arn(project_version_arn: str) -> tuple[str, str]:
    """(project name, version name) from
    `arn:aws:rekognition:<region>:<account>:project/<project>/version/<version>/<timestamp>`."""
    parts = project_version_arn.split(":", 5)
    resource = parts[5].split("/") if len(parts) == 6 and parts[2] == "rekognition" else []
    if len(resource) != 5 or resource[0] != "project" or resource[2] != "version":
        raise CliError(f"ProjectVersionArn output is not a model version ARN: {project_version_arn}")
    return resource[1], resource[3]


def describe_model(rekognition: Any, project_version_arn: str) -> dict[str, Any]:
    """The model version's status and inference units. The version ARN's timestamp is the version's,
    not the project's, so the project ARN is looked up by name."""
    project_name, version_name = parse_project_version_arn(project_version_arn)
    model: dict[str, Any] = {
        "projectVersionArn": project_version_arn,
        "projectName": project_name,
        "versionName": version_name,
    }
    projects = rekognition.describe_projects(ProjectNames=[project_name])["ProjectDescriptions"]
    if not projects:
        return {**model, "status": "NOT_FOUND", "statusMessage": f"No project named {project_name}"}
    model["projectArn"] = projects[0]["ProjectArn"]
    try:
        versions = rekognition.describe_project_versions(
            ProjectArn=model["projectArn"], VersionNames=[version_name]
        )["ProjectVersionDescriptions"]
    except ClientError as error:
        if _error_code(error) != "ResourceNotFoundException":
            raise
        versions = []
    if not versions:
        missing = f"No version {version_name} in {project_name}"
        return {**model, "status": "NOT_FOUND", "statusMessage": missing}
    version = versions[0]
    return {
        **model,
        "status": version["Status"],
        "statusMessage": version.get("StatusMessage"),
        "minInferenceUnits": version.get("MinInferenceUnits"),
        "maxInferenceUnits": version.get("MaxInferenceUnits"),
    }


def mapping_state(lambda_client: Any, mapping_uuid: str) -> dict[str, Any]:
    mapping = lambda_client.get_event_source_mapping(UUID=mapping_uuid)
    return {
        "uuid": mapping_uuid,
        "state": mapping.get("State", "UNKNOWN"),
        "stateTransitionReason": mapping.get("StateTransitionReason"),
    }


def recent_executions(sfn: Any, state_machine_arn: str) -> list[dict[str, Any]]:
    """The newest executions (the API lists newest first)."""
    executions = sfn.list_executions(stateMachineArn=state_machine_arn, maxResults=RECENT)["executions"]
    return [
        {
            "name": execution["name"],
            "status": execution["status"],
            "startDate": _iso(execution.get("startDate")),
            "stopDate": _iso(execution.get("stopDate")),
        }
        for execution in executions
    ]


def has_running_execution(sfn: Any, state_machine_arn: str) -> bool:
    """Asked separately from the recent list: quick guard-exit runs started every hour can push a
    long-running execution out of the newest five."""
    running = sfn.list_executions(stateMachineArn=state_machine_arn, statusFilter="RUNNING", maxResults=1)
    return bool(running["executions"])


def recent_run_records(s3: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """The newest run records (keys sort by time), newest first; `record` is None when an object is
    not a JSON object."""
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []) if not item["Key"].endswith("/"))
    records = []
    for key in sorted(keys, reverse=True)[:RECENT]:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        try:
            record = json.loads(body)
        except ValueError:  # includes UnicodeDecodeError
            record = None
        records.append({"key": key, "record": record if isinstance(record, dict) else None})
    return records


def collect_status(session: boto3.Session, outputs: StackOutputs) -> dict[str, Any]:
    queue_url, dlq_url, state_machine_arn, mapping_uuid, model_arn, bucket, runs_prefix = outputs.require(
        "QueueUrl",
        "DeadLetterQueueUrl",
        "StateMachineArn",
        "EventSourceMappingUuid",
        "ProjectVersionArn",
        "BucketName",
        "RunsPrefix",
    )
    sqs = client(session, "sqs")
    sfn = client(session, "stepfunctions")
    status: dict[str, Any] = {
        "stack": outputs.stack_name,
        "region": outputs.region,
        "queues": {
            "queue": _queue_report(queue_url, queue_counts(sqs, queue_url)),
            "deadLetterQueue": _queue_report(dlq_url, queue_counts(sqs, dlq_url)),
        },
        "model": describe_model(client(session, "rekognition"), model_arn),
        "mapping": mapping_state(client(session, "lambda"), mapping_uuid),
        "executions": recent_executions(sfn, state_machine_arn),
        "executionRunning": has_running_execution(sfn, state_machine_arn),
        "runRecords": {
            "location": f"s3://{bucket}/{runs_prefix}",
            "records": recent_run_records(client(session, "s3"), bucket, runs_prefix),
        },
    }
    # Stacks deployed before the triage have no such output: nothing to count there.
    triage_failures = outputs.values.get("TriageFailureQueueUrl")
    if triage_failures:
        status["queues"]["triageFailureQueue"] = _queue_report(
            triage_failures, queue_counts(sqs, triage_failures)
        )
    from customlabels_batch.cli import schedules

    status["schedules"] = schedules.collect(session, outputs)
    status["warnings"] = status_warnings(status) + schedules.warnings(
        status["schedules"], status["queues"]["queue"]["total"]
    )
    return status


def _queue_report(queue_url: str, counts: QueueCounts) -> dict[str, Any]:
    return {
        "url": queue_url,
        "visible": counts.visible,
        "inFlight": counts.in_flight,
        "delayed": counts.delayed,
        "total": counts.total,
    }


def status_warnings(status: dict[str, Any]) -> list[str]:
    warnings = []
    model = status["model"]
    if model["status"] in BILLED_MODEL_STATUSES and not status["executionRunning"]:
        warnings.append(
            f"WARNING: the model is {model['status']} but no execution is running: it is billed by the "
            f"inference-unit hour with nothing to stop it. `{CLI_NAME} run-now` starts a run that "
            "stops it once the queue is empty, or stop it yourself: aws rekognition "
            f"stop-project-version --project-version-arn {model['projectVersionArn']}"
        )
    dlq_total = status["queues"]["deadLetterQueue"]["total"]
    if dlq_total:
        warnings.append(
            f"WARNING: the dead-letter queue holds {dlq_total} message(s) that failed processing "
            f"repeatedly; once the cause is fixed, `{CLI_NAME} redrive` puts them back on the queue"
        )
    triage_total = status["queues"].get("triageFailureQueue", {}).get("total")
    if triage_total:
        warnings.append(
            f"WARNING: the triage gave up on {triage_total} upload(s) (its failure queue holds the S3 "
            f"events): once the cause is fixed, `{CLI_NAME} reconcile` queues the images that have "
            "neither a result nor an error record"
        )
    return warnings


def print_status(status: dict[str, Any]) -> None:
    print(f"Stack {status['stack']} in {status['region']}")
    print()
    queues = status["queues"]
    _print_table(
        ["QUEUE", "VISIBLE", "IN FLIGHT", "DELAYED"],
        [
            [f"{label} {_queue_name(queue['url'])}", queue["visible"], queue["inFlight"], queue["delayed"]]
            for label, queue in (
                ("images", queues["queue"]),
                ("dead-letter", queues["deadLetterQueue"]),
                ("triage failures", queues.get("triageFailureQueue")),
            )
            if queue
        ],
    )
    print()
    model = status["model"]
    print(f"Model    {model['versionName']} ({model['projectName']}): {_model_summary(model)}")
    mapping = status["mapping"]
    print(f"Mapping  {mapping['uuid']}: {mapping['state']}")
    if status.get("schedules"):
        from customlabels_batch.cli import schedules

        schedules.print_schedules(status["schedules"])
    print()
    print("Recent executions (newest first, times UTC)")
    _print_table(
        ["NAME", "STATUS", "STARTED", "STOPPED"],
        [
            [run["name"], run["status"], _hms(run["startDate"]), _hms(run["stopDate"])]
            for run in status["executions"]
        ],
        empty="  (none)",
    )
    print()
    run_records = status["runRecords"]
    print(f"Recent run records (newest first, {run_records['location']})")
    _print_table(
        ["KEY", "STARTED", "OUTCOME", "MODEL MINUTES", "EST. COST", "LABELED", "ERRORS", "DLQ"],
        [_run_record_row(item) for item in run_records["records"]],
        empty="  (none)",
    )
    for warning in status["warnings"]:
        print()
        print(warning)


def _model_summary(model: dict[str, Any]) -> str:
    summary = model["status"]
    low, high = model.get("minInferenceUnits"), model.get("maxInferenceUnits")
    if model["status"] in BILLED_MODEL_STATUSES and low:
        if high and high != low:
            summary += f", {low}-{high} inference units (auto-scaling)"
        else:
            summary += f", {low} inference unit{'s' if low != 1 else ''}"
    # The message only says something the status does not when the model failed or is missing.
    if model.get("statusMessage") and (model["status"].endswith("FAILED") or model["status"] == "NOT_FOUND"):
        summary += f" ({model['statusMessage']})"
    return summary


def _run_record_row(item: dict[str, Any]) -> list[Any]:
    record = item["record"]
    if record is None:
        return [item["key"], "(not a JSON run record)", "", "", "", "", "", ""]
    cost = record.get("estimatedCostUsd")
    counts = [record.get(name) for name in ("imagesLabeled", "errorRecords", "deadLetterQueueMessages")]
    return [
        item["key"],
        record.get("startedAt", "-"),
        record.get("outcome", "-"),
        record.get("modelRunningMinutes", "-"),
        f"${cost:.2f}" if isinstance(cost, int | float) else (cost or "-"),
        *("-" if count is None else count for count in counts),
    ]


def status_command(args: argparse.Namespace) -> int:
    session = make_session(args.region)
    outputs = load_stack_outputs(client(session, "cloudformation"), args.stack_name)
    status = collect_status(session, outputs)
    if args.json:
        print(json.dumps(status, indent=2))
        # Still loud for whoever runs it in a terminal; stdout stays pure JSON.
        for warning in status["warnings"]:
            print(warning, file=sys.stderr)
    else:
        print_status(status)
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------
# redrive


def redrive(sqs: Any, queue_url: str, dlq_url: str, *, assume_yes: bool) -> int:
    dlq_name, queue_name = _queue_name(dlq_url), _queue_name(queue_url)
    counts = queue_counts(sqs, dlq_url)
    print(
        f"Dead-letter queue {dlq_name}: {counts.visible} visible, {counts.in_flight} in flight, "
        f"{counts.delayed} delayed"
    )
    if counts.visible == 0:
        if counts.total:
            print("Nothing visible to move yet: try again once the in-flight/delayed messages are visible.")
        else:
            print("Nothing to redrive.")
        return EXIT_OK
    if not assume_yes:
        if not sys.stdin.isatty():
            raise CliError("redrive asks for confirmation but stdin is not a terminal: pass --yes")
        if not _confirm(f"Move {counts.visible} message(s) from {dlq_name} back to {queue_name}? [y/N] "):
            print("Nothing moved.")
            return EXIT_FAILED
    dlq_arn = queue_attributes(sqs, dlq_url, ["QueueArn"])["QueueArn"]
    queue_arn = queue_attributes(sqs, queue_url, ["QueueArn"])["QueueArn"]
    handle = sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=queue_arn)["TaskHandle"]
    print(f"Started message move task {handle}")
    print(f"SQS moves them to {queue_name} in the background; `{CLI_NAME} status` shows the counts.")
    return EXIT_OK


def redrive_command(args: argparse.Namespace) -> int:
    session = make_session(args.region)
    outputs = load_stack_outputs(client(session, "cloudformation"), args.stack_name)
    queue_url, dlq_url = outputs.require("QueueUrl", "DeadLetterQueueUrl")
    return redrive(client(session, "sqs"), queue_url, dlq_url, assume_yes=args.yes)


def _confirm(prompt: str) -> bool:
    try:
        answer = input(prompt)
    except (EOFError, KeyboardInterrupt):
        print()
        return False
    return answer.strip().lower() in ("y", "yes")


# ---------------------------------------------------------------------------------------------------
# Wiring


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register run-now, status, redrive and the result commands (results.py); each sets
    `func(args) -> exit code`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--stack-name", default=DEFAULT_STACK_NAME, help=f"deployed stack (default: {DEFAULT_STACK_NAME})"
    )
    common.add_argument("--region", default=None, help="AWS region (default: boto3's configured region)")

    run = subparsers.add_parser(
        "run-now",
        parents=[common],
        help="start a batch run of the deployed workflow now",
        description="Start the deployed workflow now; it starts the model only if images are queued.",
    )
    run.add_argument(
        "--input",
        dest="execution_input",
        type=_json_object,
        default=None,
        metavar="JSON",
        help=f"execution input, a JSON object (default: {json.dumps(DEFAULT_INPUT)})",
    )
    run.add_argument("--follow", action="store_true", help="print each state as it is entered until the end")
    run.add_argument(
        "--poll-seconds",
        type=_positive_float,
        default=5.0,
        metavar="N",
        help="seconds between polls with --follow (default: 5)",
    )
    run.set_defaults(func=_one_line_errors(run_now))

    status = subparsers.add_parser(
        "status",
        parents=[common],
        help="queues, model, mapping, recent runs; warns about a model left running",
        description="Show queue counts, model and mapping state, recent executions and run records.",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of tables")
    status.set_defaults(func=_one_line_errors(status_command))

    redrive_parser = subparsers.add_parser(
        "redrive",
        parents=[common],
        help="move dead-lettered messages back to the queue",
        description="Move the dead-letter queue's messages back to the image queue (StartMessageMoveTask).",
    )
    redrive_parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    redrive_parser.set_defaults(func=_one_line_errors(redrive_command))

    from customlabels_batch.cli import results, schedules

    results.add_commands(subparsers, common)
    schedules.add_commands(subparsers, common)


def _one_line_errors(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the failures a user can fix into one line on stderr and exit code 2, not a traceback."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except CliError as error:
            message = str(error)
        except NoRegionError:
            message = "No AWS region configured: pass --region, set AWS_REGION, or run `aws configure`"
        except ProfileNotFound as error:
            message = f"{error}: check AWS_PROFILE, or run `aws configure --profile <name>`"
        except (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError) as error:
            message = f"No usable AWS credentials ({error}): {CREDENTIALS_HELP}"
        except (SSOError, TokenRetrievalError) as error:
            message = f"AWS SSO credentials could not be used ({error}): run `aws sso login`"
        except EndpointConnectionError as error:
            message = f"Could not reach AWS: {error}"
        except ClientError as error:
            code, text = _error_code(error), _error_message(error)
            if code in REJECTED_CREDENTIAL_CODES:
                message = f"AWS rejected the credentials ({code}: {text}): {CREDENTIALS_HELP}"
            else:
                message = f"{error.operation_name} failed: {code}: {text}"
        print(f"error: {message}", file=sys.stderr)
        return EXIT_ERROR

    return run


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('must be a JSON object, like \'{"trigger": "manual"}\'')
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from error
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


# ---------------------------------------------------------------------------------------------------
# Small helpers


def _error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def _error_message(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Message", "")


def _queue_name(queue_url: str) -> str:
    return queue_url.rstrip("/").rsplit("/", 1)[-1]


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


def _hms(iso: str | None) -> str:
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S") if iso else "-"


def _print_table(headers: list[str], rows: list[list[Any]], *, empty: str | None = None) -> None:
    if not rows and empty is not None:
        print(empty)
        return
    cells = [headers, *[[str(cell) for cell in row] for row in rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    for row in cells:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
