"""`make bench`: billed model time per batch, against the least any orchestrator could bill and
against the AWS reference sample's policy, measured on the emulator with the real ASL and handler.

Every figure is emulated time (independent of this machine's speed); the run checks that by
repeating one scenario at two time scales.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType

from PIL import Image, ImageDraw

from customlabels_batch.emulator.control_plane import ControlPlane
from customlabels_batch.emulator.custom_labels import ModelBehaviour
from customlabels_batch.emulator.pipeline import EmulatedPipeline, EmulationOptions, Upload, emulated_config
from customlabels_batch.settings import STATE_MACHINE_ASL

REFERENCE_ASL = Path(__file__).resolve().parent / "reference-policy.asl.json"
PRICE_PER_TRANSITION = 0.025 / 1000
# Lambda on arm64 (stacks/functions.py), us-east-1: per GB-second of billed duration.
PRICE_PER_LAMBDA_GB_SECOND = 0.0000133334
TPS_PER_IU = 5.0
# One run per scenario, no re-firing schedule: the comparison is per batch.
CONTEXT = {"scheduleEnabled": "false"}


@dataclass(frozen=True)
class Scenario:
    name: str
    images: int
    start_minutes: float
    trickle_images: int = 0  # arriving during the drain, evenly over trickle_seconds
    trickle_seconds: float = 0
    poison_share: float = 0.0  # corrupt JPEGs: error records, never retried
    # The emulated model's true capacity and median call latency (the configuration never says).
    tps: float = TPS_PER_IU
    latency: float = 0.4
    burst_seconds: float = 1.0  # what the model takes at once after a pause (AWS is silent)
    overrides: tuple[tuple[str, str], ...] = ()  # configuration (cdk.json context) beside CONTEXT
    policies: tuple[str, ...] = ("pipeline", "reference")
    suite: str = "costs"


SCENARIOS = [
    *(Scenario(f"{n} images, start {m} min", n, m) for n in (1, 100, 2000) for m in (5, 15, 30)),
    Scenario("20000 images, start 15 min", 20000, 15),
    Scenario(
        "200 + 600 trickling in over 10 min, start 15 min", 200, 15, trickle_images=600, trickle_seconds=600
    ),
    Scenario("2000 images, 5 % poison, start 15 min", 2000, 15, poison_share=0.05),
]
# The model's true speed varies by model, image and object count, and nobody tells the pipeline:
# every cell runs the default configuration.
MATRIX_TPS = (2.0, 5.0, 10.0, 20.0)
MATRIX_LATENCY = (0.2, 0.5, 1.0, 2.0)
CAPACITY = [
    *(
        Scenario(
            f"2000 images, {tps:g} TPS/unit, {latency:g} s calls",
            2000,
            5,
            tps=tps,
            latency=latency,
            policies=("pipeline",),
            suite="capacity",
        )
        for tps in MATRIX_TPS
        for latency in MATRIX_LATENCY
    ),
    # AWS documents no burst: the matrix runs the least forgiving (one second's worth); the slow row
    # again with three seconds' worth shows how much a pause in the calls costs.
    *(
        Scenario(
            f"2000 images, {MATRIX_TPS[0]:g} TPS/unit, {latency:g} s calls, 3 s burst",
            2000,
            5,
            tps=MATRIX_TPS[0],
            latency=latency,
            burst_seconds=3.0,
            policies=("pipeline",),
            suite="capacity",
        )
        for latency in MATRIX_LATENCY
    ),
    Scenario(
        "20000 images, auto-scaling 1-4 units",
        20000,
        15,
        overrides=(("maxInferenceUnits", "4"),),
        policies=("pipeline",),
        suite="capacity",
    ),
]


def large_backlog(full_size: bool) -> Scenario:
    """100,000 images drained in 60 minutes, or the same at a fifth of the size (20,000 in 12
    minutes: the same units chosen, the same drain rate) to keep the bench's wall time down."""
    images, minutes = (100000, 60) if full_size else (20000, 12)
    return Scenario(
        f"{images} images, targetDrainMinutes={minutes}, up to 8 units",
        images,
        15,
        overrides=(("targetDrainMinutes", str(minutes)), ("maxInferenceUnits", "8")),
        policies=("pipeline",),
        suite="capacity",
    )


SMOKE = [Scenario("3 images, start 5 min", 3, 5)]


def _image() -> bytes:
    image = Image.new("RGB", (160, 120), (60, 140, 60))
    ImageDraw.Draw(image).ellipse((40, 30, 90, 80), fill=(200, 30, 30))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG")
    return buffer.getvalue()


def run_one(
    scenario: Scenario,
    policy: str,
    time_scale: float = math.inf,
    mapping_transition_seconds: float | None = None,
    processor_variant: Callable[[ModuleType], None] | None = None,
) -> dict:
    """One scenario under one policy ("pipeline" or "reference"), in this process (with the
    processor as deployed, or a variant of it: EmulationOptions.processor_variant)."""
    control = ControlPlane()
    if mapping_transition_seconds is not None:
        control.mapping_transition_seconds = mapping_transition_seconds
    # Powertools warns on every invocation without metrics (the S3 test event's); noise here.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    config = emulated_config(CONTEXT | dict(scenario.overrides))
    options = EmulationOptions(
        time_scale=time_scale,
        behaviour=ModelBehaviour(
            start_seconds=scenario.start_minutes * 60,
            tps_per_inference_unit=scenario.tps,
            latency_seconds=scenario.latency,
            burst_seconds=scenario.burst_seconds,
        ),
        definition=STATE_MACHINE_ASL if policy == "pipeline" else REFERENCE_ASL,
        processor_log=open(os.devnull, "w"),  # noqa: SIM115 - closed with the process
        status_change_rule=policy == "pipeline",  # the reference deploys no clean-up rule
        max_emulated_seconds=3 * 24 * 3600,
        control=control,
        processor_variant=processor_variant,
    )
    body = _image()
    poison = round(scenario.images * scenario.poison_share)
    uploads = [
        Upload(f"batch/{i:05d}.jpg", b"\xff\xd8\xff\xe0corrupt" if i < poison else body)
        for i in range(scenario.images)
    ]
    wall = time.monotonic()
    with EmulatedPipeline(config, options) as pipeline:
        pipeline.upload(uploads)
        if scenario.trickle_images:
            _schedule_trickle(pipeline, scenario, body)
        report = pipeline.run()
        model = pipeline.model
    return _measure(scenario, policy, report, model, wall_seconds=time.monotonic() - wall)


def _schedule_trickle(pipeline: EmulatedPipeline, scenario: Scenario, body: bytes) -> None:
    step = 10.0  # the driver's tick
    waves = max(1, int(scenario.trickle_seconds // step))
    per_wave = scenario.trickle_images // waves
    for wave in range(waves):
        count = per_wave if wave < waves - 1 else scenario.trickle_images - per_wave * (waves - 1)
        uploads = [Upload(f"trickle/{wave:03d}-{i:03d}.jpg", body) for i in range(count)]
        pipeline.upload_when(
            lambda p, at=wave * step: p.enabled_at is not None and p.clock.now() >= p.enabled_at + at, uploads
        )


def _measure(scenario, policy, report, model, *, wall_seconds) -> dict:
    units = report["model"]["inferenceUnits"]
    capacity = scenario.tps * units
    images = scenario.images + scenario.trickle_images
    billed = report["model"]["billedInferenceUnitMinutes"]
    # Any orchestrator pays at least the images' share of one unit's time (more units, same sum).
    minimum = images / scenario.tps / 60
    if scenario.trickle_images:
        # The model has to be up until the last arrival is labeled, however fast it is.
        minimum = max(minimum, (scenario.trickle_seconds + 1 / capacity) / 60)
    accepted = model.calls["DetectCustomLabels"] - model.calls["Throttled"] - model.calls.get("NotReady", 0)
    throughput = None
    if model.first_call_at is not None and accepted >= 100 and not scenario.trickle_images:
        # Accepted calls against what the units in service could take over the same span.
        unit_seconds = model.unit_seconds_between(model.first_call_at, model.last_call_done_at)
        throughput = accepted / (unit_seconds * scenario.tps) if unit_seconds > 0 else None
    transitions = report["stateTransitions"]
    memory_gb = report["settings"]["config"]["processorMemoryMb"] / 1024
    processor_usd = report["processor"].get("invocationSeconds", 0) * memory_gb * PRICE_PER_LAMBDA_GB_SECOND
    model_usd = billed / 60 * report["settings"]["pricePerInferenceUnitHour"]
    return {
        "scenario": scenario.name,
        "policy": policy,
        "images": images,
        "startMinutes": scenario.start_minutes,
        "billedModelMinutes": round(billed, 2),
        "minimumModelMinutes": round(minimum, 2),
        "overheadMinutes": round(billed - minimum, 2),
        "drainThroughputShare": None if throughput is None else round(throughput, 3),
        "throttledCalls": model.calls["Throttled"],
        "throttledPerAccepted": round(model.calls["Throttled"] / max(accepted, 1), 3),
        "processorCostShare": round(processor_usd / model_usd, 4) if model_usd else None,
        "mostUnitsInService": report["model"]["mostUnitsInService"],
        "tps": scenario.tps,
        "latency": scenario.latency,
        "burstSeconds": scenario.burst_seconds,
        "suite": scenario.suite,
        "drainMinutes": round((model.last_call_done_at - model.first_call_at) / 60, 2)
        if model.first_call_at is not None
        else None,
        "unitsChosen": (
            report["runRecords"][0]["record"].get("unitsChosen") if report["runRecords"] else None
        )
        or {},
        "runRecordModel": report["runRecords"][0]["record"].get("model") if report["runRecords"] else None,
        "unitsInService": report["model"]["unitsInService"],
        "itemFailures": report["processor"].get("itemFailures", 0),
        "deadLetterQueue": report["deadLetterQueue"]["visible"],
        "stateTransitions": transitions,
        "imagesLost": len(report["lostImages"]),
        "imagesByOutcome": report["imagesByOutcome"],
        "modelFinalStatus": report["model"]["finalStatus"],
        "estimatedCostUsd": round(
            billed / 60 * report["settings"]["pricePerInferenceUnitHour"]
            + transitions * PRICE_PER_TRANSITION,
            4,
        ),
        "emulatedSeconds": report["durations"]["emulatedSeconds"],
        "wallSeconds": round(wall_seconds, 1),
        "settings": {
            k: report["settings"]["config"][k]
            for k in (
                "drainPollSeconds",
                "emptyPollsRequired",
                "maxConcurrency",
                "batchSize",
                "modelPollSeconds",
            )
        },
    }


def _run_all(
    scenarios: list[Scenario], jobs: int, transition: float | None = None, slow: Scenario | None = None
) -> tuple[list[dict], dict | None]:
    """Every scenario under each of its policies, and `slow` (for the time-scale check) at 2000x
    beside them; returns the rows and the slow run's row."""
    work = [(s, policy, math.inf) for s in scenarios for policy in s.policies]
    if slow is not None:
        work.append((slow, "pipeline", TIME_SCALE_CHECK))
    # Largest first, so the long runs overlap with the many short ones.
    work.sort(key=lambda item: -(item[0].images + item[0].trickle_images))
    if jobs <= 1:
        rows = [run_one(s, p, scale, transition) for s, p, scale in work]
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(run_one, s, p, scale, transition) for s, p, scale in work]
            rows = [f.result() for f in futures]
    slow_row = None
    if slow is not None:
        slow_row = rows.pop(next(i for i, (_, _, scale) in enumerate(work) if scale == TIME_SCALE_CHECK))
    return rows, slow_row


# The time-scale check's slow run: emulated seconds per wall second.
TIME_SCALE_CHECK = 2000.0


def time_scale_check(fast: dict, slow: dict) -> dict:
    """The same scenario run as fast as the machine goes and stretched to 2000x: the billed minutes
    must not depend on the machine's speed."""
    spread = abs(fast["billedModelMinutes"] - slow["billedModelMinutes"]) / max(
        fast["billedModelMinutes"], 1e-9
    )
    return {
        "scenario": fast["scenario"],
        "billedAtMaxSpeed": fast["billedModelMinutes"],
        "billedAt2000x": slow["billedModelMinutes"],
        "relativeDifference": round(spread, 4),
        "ok": spread <= 0.05,
    }


def targets(rows: list[dict], config) -> list[dict]:
    ours = [r for r in rows if r["policy"] == "pipeline"]
    ref = {r["scenario"]: r for r in rows if r["policy"] == "reference"}
    tail_allowance = (config.drain_poll_seconds * (1 + config.empty_polls_required)) / 60
    checks = []
    worst = max(ours, key=lambda r: r["overheadMinutes"] if not r["scenario"].startswith("200 +") else -1)
    checks.append(
        {
            "target": f"overhead <= drain poll + empty-confirmation polls ({tail_allowance:g} min), < 3 min",
            "worst": f"{worst['overheadMinutes']} min ({worst['scenario']})",
            "met": worst["overheadMinutes"] <= min(tail_allowance, 3),
        }
    )
    shares = [r for r in ours if r["drainThroughputShare"] is not None]
    if shares:
        low = min(shares, key=lambda r: r["drainThroughputShare"])
        checks.append(
            {
                "target": "drain throughput >= 90 % of model capacity, none in the DLQ",
                "worst": f"{low['drainThroughputShare']:.1%} ({low['scenario']}); DLQ total "
                f"{sum(r['deadLetterQueue'] for r in ours)}",
                "met": low["drainThroughputShare"] >= 0.9 and all(r["deadLetterQueue"] == 0 for r in ours),
            }
        )
    singles = [r for r in ours if r["images"] == 1 and r["scenario"] in ref]
    if singles:
        ratios = [
            ref[r["scenario"]]["billedModelMinutes"] / max(r["billedModelMinutes"], 1e-9) for r in singles
        ]
        checks.append(
            {
                "target": "1-image batch: >= 15x less billed model time than the reference",
                "worst": f"{min(ratios):.1f}x",
                "met": min(ratios) >= 15,
            }
        )
    checks.append(
        {
            "target": "no image lost",
            "worst": f"{sum(r['imagesLost'] for r in rows)} lost",
            "met": all(r["imagesLost"] == 0 for r in rows),
        }
    )
    return checks


def _matrix_cell(row: dict, burst_seconds: float = 1.0) -> bool:
    return row["suite"] == "capacity" and row["images"] == 2000 and row["burstSeconds"] == burst_seconds


def capacity_targets(rows: list[dict]) -> list[dict]:
    cells = [r for r in rows if _matrix_cell(r)]
    checks = []
    if cells:
        low = min(cells, key=lambda r: r["drainThroughputShare"] or 0)
        over = max(cells, key=lambda r: r["overheadMinutes"])
        lam = max(cells, key=lambda r: r["processorCostShare"] or 0)
        checks += [
            {
                "target": "capacity matrix: drain throughput >= 90 % of the true capacity in every cell",
                "worst": f"{low['drainThroughputShare']:.1%} ({low['scenario']})",
                "met": all((r["drainThroughputShare"] or 0) >= 0.9 for r in cells),
            },
            {
                "target": "capacity matrix: billed - least possible <= 1.5 IU-min per unit, none in the DLQ",
                "worst": f"{over['overheadMinutes']} min ({over['scenario']}); DLQ total "
                f"{sum(r['deadLetterQueue'] for r in cells)}",
                "met": all(r["overheadMinutes"] <= 1.5 * r["mostUnitsInService"] for r in cells)
                and all(r["deadLetterQueue"] == 0 for r in cells),
            },
            {
                "target": "capacity matrix: processor Lambda cost <= 10 % of the model's",
                "worst": f"{lam['processorCostShare']:.1%} ({lam['scenario']})",
                "met": all((r["processorCostShare"] or 0) <= 0.1 for r in cells),
            },
        ]
    one_unit = {
        r["images"]: r for r in rows if r["policy"] == "pipeline" and r["scenario"].endswith("start 15 min")
    }
    for row in rows:
        if "targetDrainMinutes=" not in row["scenario"]:
            continue
        target = float(row["scenario"].split("targetDrainMinutes=")[1].split(",")[0])
        checks.append(
            {
                "target": f"{row['images']} images: drained within targetDrainMinutes + 5 min",
                "worst": f"{row['drainMinutes']} min with {row['mostUnitsInService']} units "
                f"({row['unitsChosen'].get('why', '?')})",
                "met": row["drainMinutes"] is not None and row["drainMinutes"] <= target + 5,
            }
        )
        base = one_unit.get(row["images"])
        if base:
            ratio = row["billedModelMinutes"] / base["billedModelMinutes"]
            against = f"{base['billedModelMinutes']} IU-min"
        else:
            # No one-unit run of this size (100,000 images at one unit outlast the cost guard): the
            # least possible is what any one-unit run would bill at the very least.
            ratio = row["billedModelMinutes"] / row["minimumModelMinutes"]
            against = f"the least possible {row['minimumModelMinutes']} IU-min (no one-unit run of this size)"
        checks.append(
            {
                "target": f"{row['images']} images: billed within 5 % of the same batch at one unit",
                "worst": f"{row['billedModelMinutes']} vs {against} ({ratio - 1:+.1%})",
                "met": abs(ratio - 1) <= 0.05,
            }
        )
    return checks


def print_matrix(rows: list[dict], out) -> None:
    cells = {(r["tps"], r["latency"]): r for r in rows if _matrix_cell(r)}
    bursts = {(r["tps"], r["latency"]): r for r in rows if _matrix_cell(r, 3.0)}
    if not cells:
        return
    print(
        "Capacity matrix, 2000 images at 1 unit, default configuration: drain throughput as a share of the",
        file=out,
    )
    print(
        "model's true capacity / billed IU-min (least possible) / throttled calls per accepted call /",
        file=out,
    )
    print("processor Lambda cost as a share of the model's", file=out)
    header = f"{'TPS per unit':>12} | " + " | ".join(f"{f'{lat:g} s calls':^27}" for lat in MATRIX_LATENCY)
    print(header, file=out)
    print("-" * len(header), file=out)
    lines = [(f"{tps:g}", cells, tps) for tps in MATRIX_TPS]
    if bursts:
        lines.append((f"{MATRIX_TPS[0]:g}, 3 s burst", bursts, MATRIX_TPS[0]))
    for label, table, tps in lines:
        parts = []
        for latency in MATRIX_LATENCY:
            r = table.get((tps, latency))
            parts.append(
                "-".center(27)
                if r is None
                else f"{r['drainThroughputShare'] or 0:>4.0%} {r['billedModelMinutes']:>5.1f} "
                f"({r['minimumModelMinutes']:>4.1f}) {r['throttledPerAccepted']:>4.2f} "
                f"{r['processorCostShare'] or 0:>4.1%}"
            )
        print(f"{label:>12} | " + " | ".join(parts), file=out)
    for r in rows:
        if r["suite"] == "capacity" and r["images"] != 2000:
            timeline = ", ".join(
                f"{p['units']} at {p['atSeconds'] / 60:.0f} min" for p in r["unitsInService"]
            )
            print(
                f"{r['scenario']}: billed {r['billedModelMinutes']} IU-min "
                f"(least possible {r['minimumModelMinutes']}),"
                f" drained in {r['drainMinutes']} min, throughput {r['drainThroughputShare'] or 0:.0%};"
                f" units in service: {timeline}",
                file=out,
            )


def print_table(rows: list[dict], out) -> None:
    ref = {r["scenario"]: r for r in rows if r["policy"] == "reference"}
    header = (
        f"{'scenario':<48} {'billed':>7} {'min':>6} {'over':>6} {'thru':>5} {'trans':>6} {'lost':>4} "
        f"{'cost $':>7} | {'ref billed':>10} {'ratio':>6} {'ref cost $':>10}"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    for row in rows:
        if row["policy"] != "pipeline" or row["suite"] != "costs":
            continue
        r = ref.get(row["scenario"])
        share = "-" if row["drainThroughputShare"] is None else f"{row['drainThroughputShare']:.0%}"
        ratio = (
            f"{r['billedModelMinutes'] / row['billedModelMinutes']:.1f}x"
            if r and row["billedModelMinutes"]
            else "-"
        )
        print(
            f"{row['scenario']:<48} {row['billedModelMinutes']:>7.1f} {row['minimumModelMinutes']:>6.1f} "
            f"{row['overheadMinutes']:>6.1f} {share:>5} {row['stateTransitions']:>6} {row['imagesLost']:>4} "
            f"{row['estimatedCostUsd']:>7.2f} | {r['billedModelMinutes'] if r else '-':>10} {ratio:>6} "
            f"{r['estimatedCostUsd'] if r else '-':>10}",
            file=out,
        )
    print(
        "(model minutes are IU-minutes of RUNNING time; min = images / (TPS x IUs); thru = drain throughput"
        " as a share of capacity; trans = Step Functions state transitions)",
        file=out,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m customlabels_batch.bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="one tiny scenario (what `make test` runs)")
    parser.add_argument(
        "--suite",
        choices=("all", "costs", "capacity", "matrix"),
        default="all",
        help="costs: billed time per batch against the reference (the README's first table); capacity: "
        "models of every speed, a large backlog, auto-scaling; matrix: the capacity matrix alone",
    )
    parser.add_argument(
        "--full-size",
        action="store_true",
        help="the large backlog at 100,000 images (about half an hour more)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="TEXT",
        help="only the suite's scenarios whose name contains TEXT (repeatable), e.g. 'auto-scaling'",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        # One more than the cores: an emulation's threads hand its clock to one another, so one
        # process keeps a core busy about 83 % of the time (measured: 1,392 s at 2 jobs, 1,241 at 3).
        default=(os.cpu_count() or 1) + 1,
        help="parallel processes (default: one more than the cores)",
    )
    parser.add_argument("--output", type=Path, default=Path("bench-results.json"))
    parser.add_argument(
        "--mapping-transition-seconds",
        type=float,
        default=None,
        help="how long the mapping stays Enabling/Disabling (AWS gives no figure; default: the "
        f"emulator's {ControlPlane().mapping_transition_seconds:g} s)",
    )
    args = parser.parse_args(argv)

    started = time.monotonic()
    scenarios = (
        SMOKE
        if args.smoke
        else [
            *(SCENARIOS if args.suite in ("all", "costs") else []),
            *([*CAPACITY, large_backlog(args.full_size)] if args.suite in ("all", "capacity") else []),
            *([s for s in CAPACITY if s.images == 2000] if args.suite == "matrix" else []),
        ]
    )
    if args.scenario:
        scenarios = [s for s in scenarios if any(text in s.name for text in args.scenario)]
        if not scenarios:
            parser.error(f"no scenario of the suite has {' or '.join(map(repr, args.scenario))} in its name")
    # The time-scale check stretches a short run to 2000x, in the pool beside the others; its run
    # at full speed is the suite's own where the suite has it.
    checked = scenarios[0] if args.smoke else Scenario("100 images, start 5 min", 100, 5)
    extra = not any(s.name == checked.name and "pipeline" in s.policies for s in scenarios)
    run = [*scenarios, replace(checked, policies=("pipeline",))] if extra else scenarios
    rows, slow = _run_all(run, args.jobs, args.mapping_transition_seconds, slow=checked)
    fast = next(r for r in rows if r["scenario"] == checked.name and r["policy"] == "pipeline")
    check = time_scale_check(fast, slow)
    rows = [r for r in rows if not (extra and r is fast)]
    order = {s.name: i for i, s in enumerate(scenarios)}
    rows.sort(key=lambda r: (order[r["scenario"]], r["policy"]))
    config = emulated_config(CONTEXT)
    costs = [r for r in rows if r["suite"] == "costs"]
    checks = (targets(costs, config) if costs else []) + capacity_targets(rows)

    print_table(rows, sys.stdout)
    print(file=sys.stdout)
    print_matrix(rows, sys.stdout)
    print(file=sys.stdout)
    for item in checks:
        print(f"[{'met' if item['met'] else 'MISSED'}] {item['target']}: {item['worst']}")
    print(
        f"[{'ok' if check['ok'] else 'FAILED'}] time-scale check ({check['scenario']}): "
        f"{check['billedAtMaxSpeed']} vs {check['billedAt2000x']} billed minutes "
        f"({check['relativeDifference']:.1%} apart, limit 5 %)"
    )
    elapsed = time.monotonic() - started
    result = {
        # What reproduces these figures, with the arguments given (argv defaults to the process's).
        "command": " ".join(
            ["python -m customlabels_batch.bench", *(sys.argv[1:] if argv is None else argv)]
        ),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "wallSeconds": round(elapsed, 1),
        "pricePerInferenceUnitHour": config.usd_per_inference_unit_hour,
        "tpsPerInferenceUnit": TPS_PER_IU,
        "mappingTransitionSeconds": (
            ControlPlane().mapping_transition_seconds
            if args.mapping_transition_seconds is None
            else args.mapping_transition_seconds
        ),
        "scenarios": [asdict(s) for s in scenarios],
        "runs": rows,
        "targets": checks,
        "timeScaleCheck": check,
    }
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output} in {elapsed:.0f} s of wall time")
    if not check["ok"]:
        return 1
    return 0 if all(r["imagesLost"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
