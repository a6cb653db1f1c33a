"""What a run learns about the model does for the next one: two runs of the same batch size in one
emulation, the second sized from the first's run record.

    .venv/bin/python -m customlabels_batch.bench.next_run --tps 2 --latency 0.5

Each run prints the environments per unit it chose and why, and what its run record measured: the
model's accepted calls per second per unit in its full minutes (against the true capacity), its p95
call latency and the IU-minutes of its InServiceInferenceUnits (against the least possible).
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings

from customlabels_batch.bench.__main__ import CONTEXT, _image
from customlabels_batch.emulator.custom_labels import ModelBehaviour
from customlabels_batch.emulator.pipeline import EmulatedPipeline, EmulationOptions, Upload, emulated_config


def _summary(record: dict, args: argparse.Namespace) -> str:
    chosen = record.get("environmentsChosen") or {}
    model = record.get("model") or {}
    rate = model.get("acceptedPerSecondPerUnit")
    share = f"{rate / args.tps:.0%} of {args.tps:g}" if rate is not None else "not measured"
    full = "" if not model.get("capacityIsLowerBound") else ", a lower bound: no full minute"
    return (
        f"{record['outcome']}, {chosen.get('perUnit')} environments per unit ({chosen.get('why')}); "
        f"{rate} calls/s per unit in {model.get('saturatedMinutes')} full minutes ({share}{full}), "
        f"p95 {model.get('callSecondsP95')} s, {model.get('measuredInferenceUnitMinutes')} IU-min "
        f"(least {args.images / args.tps / 60:.1f}), {record.get('deadLetterQueueMessages')} in the DLQ"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m customlabels_batch.bench.next_run", description=__doc__)
    parser.add_argument("--tps", type=float, default=2.0, help="the model's true calls/s per unit")
    parser.add_argument("--latency", type=float, default=0.5, help="its median call, seconds")
    parser.add_argument("--images", type=int, default=2000, help="per run")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    options = EmulationOptions(
        time_scale=math.inf,
        behaviour=ModelBehaviour(
            start_seconds=300, tps_per_inference_unit=args.tps, latency_seconds=args.latency
        ),
        processor_log=open(os.devnull, "w"),  # noqa: SIM115 - closed with the process
    )
    body, started = _image(), time.monotonic()
    with EmulatedPipeline(emulated_config(CONTEXT), options) as pipeline:
        for run in range(1, args.runs + 1):
            pipeline.upload([Upload(f"run{run}/{i:05d}.jpg", body) for i in range(args.images)])
            report = pipeline.run()
            record = report["runRecords"][-1]["record"]
            print(f"run {run}: {_summary(record, args)}", flush=True)
    print(f"{time.monotonic() - started:.0f} s of wall time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
