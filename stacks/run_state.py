"""Run state: the DynamoDB table behind "one run at a time" and drain progress.

Items: `lease` (which execution holds the model and the mapping, until when), `progress` (how many
messages the processor has accounted for; the state machine watches it grow), `model-not-startable`
(when an unstartable model was last reported), `attempt#<message id>` (a retried message being
attempted; expires after the DLQ's retention). A conditional write is strongly consistent, which
ListExecutions is not.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, RemovalPolicy, Validations
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct


class RunState(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.table = dynamodb.TableV2(
            self,
            "Table",
            partition_key=dynamodb.Attribute(name="id", type=dynamodb.AttributeType.STRING),
            billing=dynamodb.Billing.on_demand(),
            encryption=dynamodb.TableEncryptionV2.aws_managed_key(),
            # The processor's marks on retried messages expire on their own.
            time_to_live_attribute="expiresAt",
            # Small items that runs rewrite or that expire: nothing to keep after the stack is gone.
            removal_policy=RemovalPolicy.DESTROY,
        )
        Validations.of(self.table).acknowledge(
            Acknowledgment(
                id="AwsSolutions-DDB3",
                reason="Point-in-time recovery restores history; this table holds only the current "
                "run's lease and counters, which the next run rewrites.",
            )
        )
