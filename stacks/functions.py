"""What the stack's Lambda functions share: runtime, one code asset (the `lambdas` package), the
Powertools public layer, a log group of their own, and an explicit role that may write to that log
group and nowhere else."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from customlabels_batch.settings import Settings, Use

REPO_ROOT = Path(__file__).resolve().parent.parent
# The newest runtime both cdk-nag (AwsSolutions-L1) and the Powertools v3 public layer support.
RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.ARM_64
LOG_RETENTION = logs.RetentionDays.ONE_MONTH
# The asset is the repository's `lambdas/` folder as a package (the handlers import lambdas/settings.py
# relatively), nothing else.
CODE_ASSET_EXCLUDE = ["*", ".*", "!lambdas", "!lambdas/**", "**/__pycache__", "**/*.pyc", "**/.pytest_cache"]


def powertools_layer_parameter(*, powertools_version: str) -> str:
    """The public SSM parameter Powertools publishes for each release, runtime and architecture.

    Path format `/aws/service/powertools/python/{arch}/{python_version}/{version}`, `arm64` and
    `x86_64`, runtimes python3.10-python3.14: Powertools' installation guide, "Using SSM Parameter
    Store" (https://docs.aws.amazon.com/powertools/python/latest/getting-started/install/), and the
    workflow that writes them (aws-powertools/powertools-lambda-python, .github/workflows/update_ssm.yml).
    python3.14 layers exist from 3.23.0; the versioned python3.14 parameters are written correctly
    from 3.24.0 (powertools-lambda-python#7689, fixed by #7695), so settings refuse older releases."""
    arch = "arm64" if ARCHITECTURE.name == lambda_.Architecture.ARM_64.name else "x86_64"
    return f"/aws/service/powertools/python/{arch}/{RUNTIME.name}/{powertools_version}"


def powertools_layer(scope: Construct, *, config: Settings) -> lambda_.ILayerVersion:
    layer_arn = ssm.StringParameter.value_for_string_parameter(
        scope, powertools_layer_parameter(powertools_version=config.powertools_version)
    )
    return lambda_.LayerVersion.from_layer_version_arn(scope, "PowertoolsLayer", layer_arn)


def owned_log_group(scope: Construct) -> logs.LogGroup:
    """A log group with a retention, deleted with the stack (logs are not the pipeline's data)."""
    return logs.LogGroup(scope, "LogGroup", retention=LOG_RETENTION, removal_policy=RemovalPolicy.DESTROY)


def python_function(
    scope: Construct,
    *,
    config: Settings,
    use: Use,
    handler: str,
    description: str,
    role_description: str,
    layer: lambda_.ILayerVersion,
    resources: dict[str, str],
    timeout_seconds: int,
    memory_mb: int,
    tracing: lambda_.Tracing | None = None,
) -> tuple[lambda_.Function, iam.Role, logs.LogGroup]:
    """`Function`, `Role` and `LogGroup` in `scope`, from the shared asset, with the settings `use`
    reads (and the `resources` it works on) in its environment."""
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
        handler=f"lambdas.{handler}",
        code=lambda_.Code.from_asset(str(REPO_ROOT), exclude=CODE_ASSET_EXCLUDE),
        layers=[layer],
        timeout=Duration.seconds(timeout_seconds),
        memory_size=memory_mb,
        environment=config.function_environment(use, **resources),
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
