"""Wall time of one bench scenario on this machine: what the emulator costs per image.

    .venv/bin/python -m customlabels_batch.bench.profile --images 2000 --start-minutes 5
    .venv/bin/python -m customlabels_batch.bench.profile --images 2000 --cprofile /tmp/run.prof
    .venv/bin/python -m customlabels_batch.bench.profile --images 4000 \
        --set targetDrainMinutes=2 --set maxInferenceUnits=8

Runs `run_one` (the bench's own scenario runner) once and prints its emulated figures, the wall
and CPU seconds and their milliseconds per image. With --cprofile, every thread is profiled (the
pollers and the executions do the work, not the main thread) and the profiles are merged into one
file for `python -m pstats`; the top functions by cumulative and internal time are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import math
import pstats
import sys
import threading
import time

from customlabels_batch.bench.__main__ import Scenario, run_one


def _profiled(call):
    """Run call() with cProfile on in every thread started meanwhile; returns (result, Stats)."""
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()
    original_run = threading.Thread.run

    def run(self):
        profile = cProfile.Profile(time.thread_time)
        with lock:
            profiles.append(profile)
        profile.enable()
        try:
            original_run(self)
        finally:
            profile.disable()

    threading.Thread.run = run
    main = cProfile.Profile(time.thread_time)
    main.enable()
    try:
        result = call()
    finally:
        main.disable()
        threading.Thread.run = original_run
    stats = pstats.Stats(main)
    with lock:
        for profile in profiles:
            with contextlib.suppress(TypeError):  # a thread that never ran anything
                stats.add(profile)
    return result, stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m customlabels_batch.bench.profile", description=__doc__)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--start-minutes", type=float, default=5)
    parser.add_argument("--poison-share", type=float, default=0.0)
    parser.add_argument("--policy", choices=("pipeline", "reference"), default="pipeline")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting, as cdk.json's (repeatable)",
    )
    parser.add_argument("--cprofile", metavar="FILE", help="profile every thread; write merged stats here")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args(argv)

    scenario = Scenario(
        f"{args.images} images, start {args.start_minutes:g} min",
        args.images,
        args.start_minutes,
        poison_share=args.poison_share,
        overrides=tuple(tuple(pair.split("=", 1)) for pair in args.set),
    )
    started, cpu = time.monotonic(), time.process_time()
    if args.cprofile:
        row, stats = _profiled(lambda: run_one(scenario, args.policy, math.inf))
        stats.dump_stats(args.cprofile)
    else:
        row, stats = run_one(scenario, args.policy, math.inf), None
    wall, cpu = time.monotonic() - started, time.process_time() - cpu
    figures = {
        k: row[k]
        for k in (
            "billedModelMinutes",
            "mostUnitsInService",
            "stateTransitions",
            "throttledCalls",
            "itemFailures",
            "deadLetterQueue",
            "imagesLost",
            "imagesByOutcome",
            "emulatedSeconds",
        )
    }
    print(json.dumps({"scenario": scenario.name, "policy": args.policy, **figures}))
    per_image = 1000 / max(args.images, 1)
    # CPU seconds too: on a shared machine the wall time also measures everyone else's load.
    print(
        f"wall {wall:.1f} s, {wall * per_image:.2f} ms per image; "
        f"CPU {cpu:.1f} s, {cpu * per_image:.2f} ms per image"
    )
    if stats is not None:
        stats.sort_stats("cumulative").print_stats(args.top)
        stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
