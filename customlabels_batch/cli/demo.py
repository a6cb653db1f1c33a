"""`customlabels-batch demo`: the whole pipeline on the embedded emulated AWS, with the outputs a user
would find in S3, a run report and a gallery of what the model found."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
from pathlib import Path

from customlabels_batch import waits
from customlabels_batch.emulator.control_plane import ControlPlane
from customlabels_batch.emulator.custom_labels import Annotations, ModelBehaviour
from customlabels_batch.emulator.dataset import generate_sample_dataset
from customlabels_batch.emulator.pipeline import (
    FAULTS,
    DefinitionError,
    EmulatedPipeline,
    EmulationOptions,
    Upload,
    emulated_config,
)
from customlabels_batch.gallery import write_gallery
from customlabels_batch.settings import STATE_MACHINE_ASL, ConfigError

DEFAULT_TIME_SCALE = 200.0  # a 10-minute model start shows for 3 s of wall time


def add_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline locally on an emulated AWS",
        description="Uploads images to an emulated bucket, lets the scheduled run start the emulated "
        "model, label the queue and stop the model, then writes results, a run report and a gallery.",
    )
    parser.add_argument(
        "--images", type=Path, help="a folder of your own images (default: a generated sample)"
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        help="Ground Truth manifest for --images (default: manifest.jsonl or output.manifest beside them)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("demo-output"), help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--messages",
        type=Path,
        help="a JSON Lines file: each line a message body sent to the queue as is (a captured S3 "
        "notification, a hand-written test body); ${bucket} in a line names the emulated bucket",
    )
    parser.add_argument("--model-start-seconds", type=float, default=600.0, help="emulated model start time")
    parser.add_argument("--model-stop-seconds", type=float, default=60.0, help="emulated model stop time")
    parser.add_argument("--tps-per-iu", type=float, default=5.0, help="model capacity per inference unit")
    parser.add_argument("--latency-seconds", type=float, default=0.4, help="one DetectCustomLabels call")
    parser.add_argument(
        "--burst-seconds",
        type=float,
        default=1.0,
        help="seconds of capacity the model takes at once after a pause (AWS gives no figure; "
        "default: %(default)s, the least forgiving)",
    )
    parser.add_argument(
        "--queue-counts-stale-seconds",
        type=float,
        default=0.0,
        help="SQS answers its approximate message counts from a snapshot up to this old (AWS gives no "
        "figure; default: %(default)s, exact)",
    )
    parser.add_argument("--inference-units", type=int, help="minInferenceUnits (default: from cdk.json)")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=DEFAULT_TIME_SCALE,
        help="emulated seconds per wall second; 0 for as fast as possible (default: %(default)s)",
    )
    parser.add_argument("--definition", type=Path, default=STATE_MACHINE_ASL, help="ASL file to run")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        choices=sorted(FAULTS),
        # argparse formats help with %: a description's "40 %" must not read as a format.
        help="rehearse a failure (repeatable): "
        + "; ".join(f"{k}: {v}" for k, v in sorted(FAULTS.items())).replace("%", "%%"),
    )
    parser.add_argument(
        "-c",
        "--context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a cdk.json setting, as `cdk -c` does (e.g. -c drainPollSeconds=15)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (ConfigError, DefinitionError, DemoInputError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    overrides = dict(_parse_context(item) for item in args.context)
    if args.inference_units is not None:
        overrides["minInferenceUnits"] = args.inference_units
    config = emulated_config(overrides)
    if not args.definition.is_file():
        raise FileNotFoundError(f"no state machine definition at {args.definition}")

    out: Path = args.out
    with tempfile.TemporaryDirectory() as scratch:
        images_dir, annotations, expected = _inputs(args, Path(scratch))
        messages = _messages(args.messages) if args.messages else []
        uploads = [
            Upload(path.relative_to(images_dir).as_posix(), path.read_bytes())
            for path in sorted(images_dir.rglob("*"))
            if path.is_file() and not _is_manifest(path)
        ]
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        behaviour = ModelBehaviour(
            start_seconds=args.model_start_seconds,
            stop_seconds=args.model_stop_seconds,
            tps_per_inference_unit=args.tps_per_iu,
            latency_seconds=args.latency_seconds,
            burst_seconds=args.burst_seconds,
        )
        say = _Printer(quiet=args.quiet)
        say(
            f"Emulated AWS: {len(uploads)} files -> s3://…/{config.input_prefix}, model start "
            f"{args.model_start_seconds:g} s, {args.tps_per_iu:g} TPS/IU x {config.min_inference_units} IU, "
            f"time scale {'max' if not args.time_scale else f'{args.time_scale:g}x'}"
            + (f", faults: {', '.join(args.fault)}" if args.fault else "")
        )
        with (out / "processor.log").open("w", encoding="utf-8") as log:
            options = EmulationOptions(
                time_scale=args.time_scale or float("inf"),
                behaviour=behaviour,
                annotations=annotations,
                faults=tuple(args.fault),
                control=ControlPlane(queue_counts_stale_seconds=args.queue_counts_stale_seconds),
                definition=args.definition,
                processor_log=log,
            )
            with EmulatedPipeline(config, options) as pipeline:
                pipeline.upload(uploads)
                pipeline.send_messages([body.replace("${bucket}", pipeline.bucket) for body in messages])
                progress = _Progress(pipeline, say, total=len(uploads))
                progress.start()
                try:
                    report = pipeline.run()
                finally:
                    progress.stop()
                _download(pipeline, config.results_prefix, out)
                _download(pipeline, config.errors_prefix, out)
                _download(pipeline, config.runs_prefix, out)
        if expected:
            report["expectedOutcomes"] = expected
        (out / "run-report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        gallery = write_gallery(out, images_dir=images_dir)
    _summarise(report, out, gallery, say)
    return 0 if not report["lostImages"] and report["model"]["finalStatus"] != "RUNNING" else 1


class DemoInputError(Exception):
    """A demo option or input folder that cannot be used as given."""


def _parse_context(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise DemoInputError(f"-c takes KEY=VALUE, got {item!r}")
    return key, value


def _messages(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"--messages {path} is not a file")
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _is_manifest(path: Path) -> bool:
    return path.name in ("manifest.jsonl", "output.manifest") or path.suffix == ".manifest"


def _inputs(args, scratch: Path) -> tuple[Path, Annotations, dict[str, str]]:
    if args.images is None:
        dataset = generate_sample_dataset(scratch / "sample")
        return dataset.folder, Annotations.from_manifest(dataset.manifest, dataset.folder), dataset.expected
    images_dir = args.images
    if not images_dir.is_dir():
        raise FileNotFoundError(f"--images {images_dir} is not a folder")
    manifest = args.manifest
    if manifest is None:
        manifest = next((p for p in sorted(images_dir.iterdir()) if _is_manifest(p)), None)
    annotations = Annotations.from_manifest(manifest, images_dir) if manifest else Annotations()
    return images_dir, annotations, {}


def _download(pipeline: EmulatedPipeline, prefix: str, out: Path) -> None:
    for key, body in pipeline.objects(prefix).items():
        target = out / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)


class _Printer:
    def __init__(self, *, quiet: bool):
        self.quiet = quiet
        self.stream = sys.stdout  # captured now: the run sends the handler's stdout to processor.log

    def __call__(self, line: str, *, force: bool = False) -> None:
        if force or not self.quiet:
            print(line, file=self.stream, flush=True)


class _Progress:
    """Prints a line whenever the model, the mapping or the counts change (at most twice a second)."""

    def __init__(self, pipeline: EmulatedPipeline, say: _Printer, *, total: int):
        self.pipeline = pipeline
        self.say = say
        self.total = total
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="demo-progress", daemon=True)
        self._last: tuple | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._print()

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self._print()

    def _print(self) -> None:
        p = self.pipeline
        try:
            queue = p.queue_counts()
            state = (
                p.model.status(),
                p.mapping_state(),
                queue["visible"],
                queue["inFlight"],
                p.model.calls["Labeled"],
            )
        except Exception:  # the emulation is shutting down
            return
        if state == self._last:
            return
        self._last = state
        minutes, seconds = divmod(int(p.clock.now()), 60)
        self.say(
            f"  [{minutes:3d}m{seconds:02d}s] model {state[0]:<9} mapping {state[1]:<8} "
            f"queue {state[2]:>4} visible {state[3]:>3} in flight | labeled {state[4]}/{self.total}"
        )


def _summarise(report: dict, out: Path, gallery: Path, say: _Printer) -> None:
    model = report["model"]
    durations = report["durations"]
    outcome = report["imagesByOutcome"]
    lines = [
        "",
        f"Executions: {', '.join(e['status'] for e in report['executions'])}",
        f"Images: {report['imagesUploaded']} uploaded -> {outcome.get('result', 0)} results, "
        f"{outcome.get('error-record', 0)} error records, {outcome.get('queued', 0)} still queued, "
        f"{outcome.get('dead-letter-queue', 0)} in the DLQ, "
        f"{outcome.get('triage-failure-queue', 0)} in the triage's failure queue, "
        f"{len(report['lostImages'])} lost",
        f"Model: {model['finalStatus']}, billed {model['billedInferenceUnitMinutes']:.1f} IU-minutes "
        f"≈ ${model['estimatedCostUsd']:.2f}; mapping {report['mapping']['finalState']}",
        f"Time to result (upload to result): {waits.describe(report.get('timeToResult')) or 'no results'}",
        f"Notifications: {', '.join(n['subject'] for n in report['notifications']) or 'none'}",
        f"Time: {durations['emulatedSeconds'] / 60:.1f} emulated minutes in {durations['wallSeconds']:.1f} s",
        f"Outputs: {out}/results, {out}/errors, {out}/runs, {out}/run-report.json, {gallery}",
    ]
    for fault, why in report["faultsNotInjected"].items():
        lines.append(f"WARNING: fault {fault} did not happen ({why}): this run did not rehearse it")
    for item in report["runRecords"]:
        record = item["record"]
        lines.append(
            f"Run record {out / item['key']}: {record['outcome']}, model RUNNING "
            f"{record['modelRunningMinutes']:g} min x {record['inferenceUnits']} IU ≈ "
            f"${record['estimatedCostUsd']:.2f}, {_count(record['imagesLabeled'])} labeled, "
            f"{_count(record['errorRecords'])} error records, "
            f"{_count(record['deadLetterQueueMessages'])} in the DLQ"
            + (f"; waited {waited}" if (waited := waits.describe(record.get("timeToResult"))) else "")
        )
        for label, value in (
            ("why", record.get("reason")),
            ("turned off", ", ".join(record.get("turnedOff") or [])),
            ("STILL ON", ", ".join(record.get("stillOn") or [])),
        ):
            if value:
                lines.append(f"  {label}: {value}")
    for line in lines:
        say(line, force=True)


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)
