"""The `customlabels-batch` console script: `demo` runs the pipeline locally on the emulator;
`run-now`, `status`, `pause`, `resume`, `redrive`, `export`, `relabel` and `reconcile` work on the
deployed stack."""

from __future__ import annotations

import argparse
import sys

from customlabels_batch.settings import CLI_NAME


def build_parser() -> argparse.ArgumentParser:
    from customlabels_batch.cli import demo, deployed

    parser = argparse.ArgumentParser(
        prog=CLI_NAME,
        description="Run Amazon Rekognition Custom Labels over batches of S3 images, paying only while "
        "there is work: try it locally (demo) or drive the deployed stack.",
    )
    subcommands = parser.add_subparsers(dest="command", required=True)
    demo.add_command(subcommands)
    deployed.add_commands(subcommands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
