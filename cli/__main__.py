"""Entry point: `python -m cli demo` runs the pipeline locally; `run-now`, `status` and `redrive`
work on the deployed stack."""

from __future__ import annotations

import argparse
import sys

from cli import demo, deployed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cli",
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
