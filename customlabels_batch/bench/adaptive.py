"""botocore's adaptive retry mode against the processor's call window, on the same emulated models.

    .venv/bin/python -m customlabels_batch.bench.adaptive

Each cell runs the same 2,000 images twice, default configuration, first runs: once with the
processor as deployed (its call window finds the model's capacity from throttles), once with its
Rekognition client in botocore's adaptive retry mode (a client-side rate limiter per execution
environment, rate adjusted by CUBIC on throttles, 10 attempts per call) and the call window held at
the whole batch, so the limiter alone paces the calls. A call still throttled after its 10 attempts
is retried by the handler as any throttle is.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from types import ModuleType

from botocore.config import Config

from customlabels_batch.bench.__main__ import Scenario, run_one

ATTEMPTS = 10
CELLS = ((2.0, 0.5), (5.0, 0.5), (5.0, 2.0), (10.0, 0.2), (20.0, 0.2))


def adaptive_retries(module: ModuleType) -> None:
    """The processor copy with botocore's limiter in place of its call window."""
    module.REKOGNITION_CLIENT_CONFIG = Config(
        retries={"mode": "adaptive", "total_max_attempts": ATTEMPTS},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=module.MAX_CALLS_IN_FLIGHT,
    )
    module.window.GROW = module.window.SHRINK = 1.0  # stays at the batch: never narrows, never paces


def _cell(tps: float, latency: float, images: int, variant: str) -> dict:
    scenario = Scenario(
        f"{images} images, {tps:g} TPS/unit, {latency:g} s calls", images, 5, tps=tps, latency=latency
    )
    return run_one(
        scenario, "pipeline", processor_variant=adaptive_retries if variant == "adaptive" else None
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m customlabels_batch.bench.adaptive", description=__doc__)
    parser.add_argument(
        "--cell",
        action="append",
        metavar="TPS:LATENCY",
        help="a model (calls/s per unit : median call seconds), repeatable; default: "
        + ", ".join(f"{t:g}:{lat:g}" for t, lat in CELLS),
    )
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    cells = [tuple(map(float, c.split(":"))) for c in args.cell] if args.cell else list(CELLS)
    started = time.monotonic()
    work = [(tps, latency, variant) for tps, latency in cells for variant in ("call window", "adaptive")]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(_cell, *zip(*[(t, lat, args.images, v) for t, lat, v in work], strict=True)))
    print(
        "| model | processor | thru | billed (least) IU-min | throttled per accepted | processor cost | DLQ |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for (tps, latency, variant), row in zip(work, rows, strict=True):
        thru = row["drainThroughputShare"]
        print(
            f"| {tps:g} TPS, {latency:g} s | {variant} | {'-' if thru is None else f'{thru:.0%}'} | "
            f"{row['billedModelMinutes']:.1f} ({row['minimumModelMinutes']:.1f}) | "
            f"{row['throttledPerAccepted']:.2f} | {row['processorCostShare']:.1%} | "
            f"{row['deadLetterQueue']} |"
        )
    print(f"{time.monotonic() - started:.0f} s of wall time")
    return 0 if all(row["imagesLost"] == 0 for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
