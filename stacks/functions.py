"""What the stack's Lambda functions share: runtime, one code asset, a log group of their own, and an
explicit role that may write to that log group and nowhere else."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.config import REPO_ROOT

# The newest runtime both cdk-nag (AwsSolutions-L1) and the Powertools v3 public layer support.
RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.ARM_64
LAMBDA_CODE_DIR = REPO_ROOT / "lambdas"
LOG_RETENTION = logs.RetentionDays.ONE_MONTH


def powertools_layer_parameter(*, powertools_version: str) -> str:
    """Public SSM parameter AWS publishes for each Powertools release, e.g.
    /aws/service/powertools/python/arm64/python3.14/3.37.0 -> the layer version ARN in that region."""
    arch = "arm64" if ARCHITECTURE.name == lambda_.Architecture.ARM_64.name else "x86_64"
    return f"/aws/service/powertools/python/{arch}/{RUNTIME.name}/{powertools_version}"


def owned_log_group(scope: Construct) -> logs.LogGroup:
    """A log group with a retention, deleted with the stack (logs are not the pipeline's data)."""
    return logs.LogGroup(scope, "LogGroup", retention=LOG_RETENTION, removal_policy=RemovalPolicy.DESTROY)


def python_function(
    scope: Construct,
    *,
    handler: str,
    description: str,
    role_description: str,
    layers: list[lambda_.ILayerVersion],
    environment: dict[str, str],
    timeout_seconds: int,
    memory_mb: int,
    tracing: lambda_.Tracing | None = None,
) -> tuple[lambda_.Function, iam.Role, logs.LogGroup]:
    """`Function`, `Role` and `LogGroup` in `scope`, from the shared `lambdas/` asset."""
    log_group = owned_log_group(scope)
    # An explicit role instead of CDK's default, which attaches the AWS managed
    # AWSLambdaBasicExecutionRole (log writes to every log group in the account).
    role = iam.Role(
        scope, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"), description=role_description
    )
    role.add_to_policy(
        iam.PolicyStatement(
            sid="WriteOwnLogs",
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[log_group.log_group_arn],
        )
    )
    function = lambda_.Function(
        scope,
        "Function",
        runtime=RUNTIME,
        architecture=ARCHITECTURE,
        handler=handler,
        code=lambda_.Code.from_asset(
            str(LAMBDA_CODE_DIR), exclude=["**/__pycache__", "**/*.pyc", "**/.pytest_cache"]
        ),
        layers=layers,
        timeout=Duration.seconds(timeout_seconds),
        memory_size=memory_mb,
        environment=environment,
        tracing=tracing,
        log_group=log_group,
        role=role,
        description=description,
    )
    return function, role, log_group


def acknowledge_prefix_access(role: iam.Role, bucket: s3.IBucket, prefix: str) -> None:
    """cdk-nag flags `<bucket>/<prefix>*`; object keys under a prefix cannot be listed in advance."""
    bucket_id = Stack.of(bucket).get_logical_id(bucket.node.default_child)
    Validations.of(role).acknowledge(
        Acknowledgment(
            id=f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/{prefix}*]",
            reason=f"Object access is limited to the '{prefix}' prefix of the pipeline's own bucket; "
            "object keys are not known in advance.",
        )
    )
