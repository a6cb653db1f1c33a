#!/usr/bin/env python3
"""CDK app: reads the pipeline's settings from context and synthesizes the stack, checked by cdk-nag."""

from __future__ import annotations

import json
import os
import sys

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from customlabels_batch.settings import ConfigError, Settings
from stacks.functions import REPO_ROOT
from stacks.pipeline_stack import PipelineStack

CDK_JSON = REPO_ROOT / "cdk.json"


def build(app: cdk.App) -> PipelineStack:
    """Create the stack in `app` from its context; raises ConfigError on bad configuration."""
    config = Settings.from_context(app.node.get_all_context())
    stack = PipelineStack(
        app,
        config.stack_name,
        config=config,
        # The bucket must be in the model's region (DetectCustomLabels reads S3 in-region), and a
        # model can only be called from its own account.
        env=cdk.Environment(account=config.account, region=config.region),
        description="Runs a Rekognition Custom Labels model over queued S3 images, only while there is work",
    )
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return stack


def cdk_json_context() -> dict:
    """Feature flags from cdk.json, so a plain `python app.py` synthesizes what `cdk synth` does
    (the CLI's own context, passed through the environment, still wins)."""
    if "CDK_CONTEXT_JSON" in os.environ or not CDK_JSON.exists():
        return {}
    return json.loads(CDK_JSON.read_text()).get("context", {})


def main() -> int:
    app = cdk.App(context=cdk_json_context())
    try:
        build(app)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
