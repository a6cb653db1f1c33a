"""Notifications: the run-outcome topic, encrypted with its own KMS key, and an optional e-mail subscriber."""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from customlabels_batch.settings import Settings

# The one service that publishes to the topic on our behalf: CloudWatch, for the alarms' actions. (The
# state machine publishes as its own role, granted through IAM; no EventBridge rule targets the topic.)
ALARM_PUBLISHER = "cloudwatch.amazonaws.com"
# AWS's documented key-policy actions for services publishing to an SSE-KMS topic.
_SERVICE_KEY_ACTIONS = ("kms:GenerateDataKey*", "kms:Decrypt")


class Notifications(Construct):
    """SNS topic for run summaries, failures and (later) alarms."""

    def __init__(self, scope: Construct, construct_id: str, *, config: Settings) -> None:
        super().__init__(scope, construct_id)

        self.key = kms.Key(
            self,
            "TopicKey",
            description="Encrypts the Custom Labels batch pipeline notification topic",
            enable_key_rotation=True,
            # The key only protects messages in flight on this topic: it has no use after the stack.
            removal_policy=RemovalPolicy.DESTROY,
            pending_window=Duration.days(7),
        )
        # The account root statement (CDK default) lets IAM policies grant the state machine role;
        # a service principal cannot be granted by IAM, so CloudWatch is named here - on behalf of
        # this account's alarms only (confused-deputy protection).
        stack = Stack.of(self)
        alarm_source = {
            "StringEquals": {"aws:SourceAccount": stack.account},
            "ArnLike": {
                "aws:SourceArn": stack.format_arn(
                    service="cloudwatch",
                    resource="alarm",
                    resource_name="*",
                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                )
            },
        }
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToPublishToTheEncryptedTopic",
                principals=[iam.ServicePrincipal(ALARM_PUBLISHER)],
                actions=list(_SERVICE_KEY_ACTIONS),
                resources=["*"],  # in a key policy "*" means this key
                conditions=alarm_source,
            )
        )

        self.topic = sns.Topic(
            self,
            "Topic",
            display_name="Custom Labels batch runs",
            master_key=self.key,
            enforce_ssl=True,
        )
        # The topic policy replaces SNS's default (account-wide) one, so CloudWatch needs its own Allow
        # to publish the alarms' notifications; the state machine role is allowed by IAM.
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToPublish",
                principals=[iam.ServicePrincipal(ALARM_PUBLISHER)],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions=alarm_source,
            )
        )
        if config.notification_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.notification_email))

    def grant_publish(self, grantee: iam.IGrantable) -> None:
        """sns:Publish on the topic plus the exact key actions SNS uses to encrypt the message
        (written out instead of Topic.grant_publish, whose kms:GenerateDataKey* is a wildcard)."""
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                sid="PublishRunNotifications",
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
            )
        )
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                sid="EncryptRunNotifications",
                actions=["kms:GenerateDataKey", "kms:Decrypt"],
                resources=[self.key.key_arn],
            )
        )
