"""An emulated Rekognition Custom Labels model version: lifecycle, capacity, detections and billing.

Detections come only from annotations (a SageMaker Ground Truth manifest, the format Custom Labels
trains from), matched to images by content hash: an image nobody annotated gets no labels.
"""

from __future__ import annotations

import collections
import hashlib
import io
import itertools
import json
import math
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .clock import VirtualClock

MAX_S3_IMAGE_BYTES = 15 * 1024 * 1024
MIN_DIMENSION, MAX_DIMENSION = 64, 4096

# Every ProjectVersionStatus of the Rekognition API, with the StatusMessage the emulator gives.
STATUS_MESSAGES = {
    "TRAINING_IN_PROGRESS": "The model is being trained.",
    "TRAINING_COMPLETED": "The model is trained.",
    "TRAINING_FAILED": "The model failed to train.",
    "STARTING": "The model is being started.",
    "RUNNING": "The model is running.",
    "FAILED": "The model failed to start (emulated fault).",
    "STOPPING": "The model is being stopped.",
    "STOPPED": "The model is stopped.",
    "DELETING": "The model is being deleted.",
    "COPYING_IN_PROGRESS": "The model is being copied.",
    "COPYING_COMPLETED": "The model is copied.",
    "COPYING_FAILED": "The model failed to copy.",
    "DEPRECATED": "The model is deprecated.",
    "EXPIRED": "The model has expired.",
}
# StartProjectVersion: AWS's API reference does not list the statuses a model starts from. A trained,
# stopped or copied model starts; one that is busy (an operation in progress) answers
# ResourceInUseException, as AWS documents for RUNNING/STARTING; one that cannot serve (failed,
# deprecated, expired) answers InvalidParameterException - the emulator's choice.
STARTABLE = frozenset({"STOPPED", "TRAINING_COMPLETED", "COPYING_COMPLETED"})
BUSY = frozenset(
    {"TRAINING_IN_PROGRESS", "STARTING", "RUNNING", "STOPPING", "DELETING", "COPYING_IN_PROGRESS"}
)
# DeleteProjectVersion: "You can't delete a model if it is running or if it is training."
UNDELETABLE = frozenset({"TRAINING_IN_PROGRESS", "STARTING", "RUNNING", "STOPPING"})


class ModelError(Exception):
    """An API error with the code AWS uses; the moto glue turns it into a service error."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Annotation:
    name: str
    confidence: float  # 0-100
    box: dict[str, float] | None = None  # BoundingBox ratios, as the API returns them


@dataclass
class ModelBehaviour:
    """How the emulated model behaves; faults change these."""

    start_seconds: float = 600.0
    stop_seconds: float = 60.0
    tps_per_inference_unit: float = 5.0
    # A call's latency is log-normal: this median, and a tail of `latency_spread` (the log's standard
    # deviation; 0.35 puts p95 at 1.8x the median, 0 makes every call take the median exactly).
    latency_seconds: float = 0.4
    latency_spread: float = 0.35
    # A throttled call still takes a network round trip before its error arrives (AWS gives no figure).
    throttle_round_trip_seconds: float = 0.05
    # How many seconds of capacity the throughput meter lets through at once after a quiet spell.
    # AWS documents no burst; the default, one second's worth, is the least forgiving guess (a pause
    # in the calls loses capacity for good). Longer bursts forgive pauses: bench and test both.
    burst_seconds: float = 1.0
    seed: int = 0  # the latency draws repeat for a seed
    start_fails: bool = False  # STARTING -> FAILED instead of RUNNING
    initial_status: str = "STOPPED"  # any status in STATUS_MESSAGES
    # [from, to) in emulated seconds after the model last became RUNNING: every call is throttled
    throttle_windows: list[tuple[float, float]] = field(default_factory=list)
    autoscaling: AutoScaling = field(default_factory=lambda: AutoScaling())  # noqa: PLW0108 - defined below


@dataclass
class AutoScaling:
    """Custom Labels' auto-scaling between MinInferenceUnits and MaxInferenceUnits. AWS documents no
    trigger and no speed, so these are the emulator's assumptions: a unit is added after
    `up_after_minutes` consecutive minutes in each of which at least `throttled_share` of the calls
    were throttled, and serves `unit_arrival_seconds` later (one unit at a time); a unit is removed
    after `down_after_idle_minutes` without a call."""

    up_after_minutes: int = 3
    throttled_share: float = 0.05
    unit_arrival_seconds: float = 300.0
    down_after_idle_minutes: int = 10


class Annotations:
    """Ground Truth manifest lines, keyed by the SHA-256 of the image each line points at."""

    def __init__(self) -> None:
        self._by_digest: dict[str, list[Annotation]] = {}

    def __len__(self) -> int:
        return len(self._by_digest)

    def add(self, image_bytes: bytes, annotations: list[Annotation]) -> None:
        self._by_digest[hashlib.sha256(image_bytes).hexdigest()] = annotations

    def lookup(self, image_bytes: bytes) -> list[Annotation]:
        return self._by_digest.get(hashlib.sha256(image_bytes).hexdigest(), [])

    @classmethod
    def from_manifest(cls, manifest: Path, images_dir: Path) -> Annotations:
        """Read a Ground Truth manifest (JSON Lines). `source-ref` may be an s3:// URI or a path; it is
        matched to a file under images_dir by its path relative to that folder, then by file name."""
        annotations = cls()
        files = {p.relative_to(images_dir).as_posix(): p for p in images_dir.rglob("*") if p.is_file()}
        by_name: dict[str, list[Path]] = collections.defaultdict(list)
        for rel, path in files.items():
            by_name[Path(rel).name].append(path)
        for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                ref = entry["source-ref"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(f"{manifest}:{number}: not a Ground Truth manifest line ({error})") from None
            path = _resolve_source_ref(ref, files, by_name)
            if path is None:
                raise ValueError(f"{manifest}:{number}: no image under {images_dir} matches {ref!r}")
            data = path.read_bytes()
            annotations.add(data, parse_manifest_entry(entry, data))
        return annotations


def _check_status(status: str) -> None:
    if status not in STATUS_MESSAGES:
        raise ValueError(f"unknown model status {status!r}; AWS has {sorted(STATUS_MESSAGES)}")


def _resolve_source_ref(ref: str, files: dict[str, Path], by_name: dict[str, list[Path]]) -> Path | None:
    tail = ref.split("://", 1)[1].split("/", 1)[1] if "://" in ref else ref
    parts = tail.split("/")
    for start in range(len(parts)):  # longest matching suffix of the path wins
        candidate = "/".join(parts[start:])
        if candidate in files:
            return files[candidate]
    matches = by_name.get(parts[-1], [])
    return matches[0] if len(matches) == 1 else None


def parse_manifest_entry(entry: dict, image_bytes: bytes) -> list[Annotation]:
    """Labels of one manifest line: object-detection attributes give boxes, classification ones
    give image-level labels. Confidence is the annotation's own (Ground Truth 0-1, as a percent)."""
    found: list[Annotation] = []
    for attribute, metadata in entry.items():
        if not attribute.endswith("-metadata") or not isinstance(metadata, dict):
            continue
        label_attr = attribute[: -len("-metadata")]
        kind = str(metadata.get("type", ""))
        if kind.endswith("object-detection"):
            data = entry.get(label_attr) or {}
            size = (data.get("image_size") or [{}])[0]
            width, height = size.get("width"), size.get("height")
            if not width or not height:
                width, height = Image.open(io.BytesIO(image_bytes)).size
            class_map = metadata.get("class-map", {})
            objects = metadata.get("objects", [])
            for index, box in enumerate(data.get("annotations", [])):
                confidence = objects[index].get("confidence", 1) if index < len(objects) else 1
                found.append(
                    Annotation(
                        name=class_map.get(str(box["class_id"]), str(box["class_id"])),
                        confidence=round(float(confidence) * 100, 3),
                        box={
                            "Width": round(box["width"] / width, 6),
                            "Height": round(box["height"] / height, 6),
                            "Left": round(box["left"] / width, 6),
                            "Top": round(box["top"] / height, 6),
                        },
                    )
                )
        elif kind.endswith("image-classification") and "class-name" in metadata:
            found.append(
                Annotation(
                    name=metadata["class-name"],
                    confidence=round(float(metadata.get("confidence", 1)) * 100, 3),
                )
            )
    return found


class EmulatedModel:
    """One model version. All times are emulated seconds from the shared clock. The API's calls are
    counted in `calls`; what someone else does (`start_externally`, `stop_externally`, `set_status`,
    `delete`) is not. A deleted model answers ResourceNotFoundException to every call."""

    def __init__(
        self,
        *,
        clock: VirtualClock,
        project_arn: str,
        version_arn: str,
        annotations: Annotations | None = None,
        behaviour: ModelBehaviour | None = None,
    ):
        self.clock = clock
        self.project_arn = project_arn
        self.version_arn = version_arn
        self.version_name = version_arn.split("/version/")[1].split("/", maxsplit=1)[0]
        self.project_name = project_arn.split(":project/")[1].split("/", maxsplit=1)[0]
        self.annotations = annotations or Annotations()
        self.behaviour = behaviour or ModelBehaviour()
        self.created = clock.epoch_seconds()
        self._lock = threading.Lock()
        _check_status(self.behaviour.initial_status)
        self._timeline: list[tuple[float, str]] = [(0.0, self.behaviour.initial_status)]
        self._deleted = False
        self._inference_units = 0
        self._max_inference_units: int | None = None
        # Units in service from each time on (auto-scaling changes them while the model runs).
        self._units: list[tuple[float, int]] = [(0.0, 0)]
        self._scaling_at: float | None = None  # when the unit being added arrives
        self._minutes: dict[int, list[int]] = collections.defaultdict(lambda: [0, 0])  # calls, throttled
        self._random = random.Random(self.behaviour.seed)
        self._tokens = 0.0
        self._refilled_at = -math.inf  # a model starts with a full bucket
        self.calls = collections.Counter()
        # Emulated times of the first call the model accepted and of the end of the last one.
        self.first_call_at: float | None = None
        self.last_call_done_at: float | None = None
        # When each accepted call was answered (labels or an image error): the model's useful work.
        self._answered_at: list[float] = []

    # ---- lifecycle -----------------------------------------------------------------------
    def status(self) -> str:
        now = self.clock.now()
        with self._lock:
            return self._status_at(now)

    def _status_at(self, t: float) -> str:
        current = self._timeline[0][1]
        for when, status in self._timeline:
            if when <= t:
                current = status
        return current

    def _running_since(self, t: float) -> float:
        since = 0.0
        for when, status in self._timeline:
            if when <= t and status == "RUNNING":
                since = when
        return since

    def _since(self, t: float) -> float:
        """When the status at t began."""
        return max((when for when, _ in self._timeline if when <= t), default=0.0)

    def _check_exists(self) -> None:
        if self._deleted:
            raise ModelError(
                "ResourceNotFoundException", f"The model version {self.version_arn} does not exist."
            )

    @property
    def deleted(self) -> bool:
        return self._deleted

    def describe(self) -> dict:
        """DescribeProjectVersions' entry; MinInferenceUnits (and MaxInferenceUnits) once started."""
        with self._lock:
            self._check_exists()
            status = self._status_at(self.clock.now())
        description = {
            "ProjectVersionArn": self.version_arn,
            "CreationTimestamp": self.created,
            "Status": status,
            "StatusMessage": STATUS_MESSAGES[status],
        }
        if self._inference_units:
            description["MinInferenceUnits"] = self._inference_units
            if self._max_inference_units:
                description["MaxInferenceUnits"] = self._max_inference_units
        return description

    def start(self, min_inference_units: int, max_inference_units: int | None = None) -> str:
        """StartProjectVersion: STARTING, then RUNNING (or FAILED) after start_seconds."""
        with self._lock:
            self._check_exists()
            self.calls["StartProjectVersion"] += 1
            return self._start(min_inference_units, max_inference_units)

    def start_externally(
        self,
        min_inference_units: int,
        max_inference_units: int | None = None,
        *,
        already_running: bool = False,
    ) -> str:
        """Someone else starts the model (the console, another run): as StartProjectVersion, or with
        already_running=True the model is RUNNING with those units from now on, whatever it was."""
        with self._lock:
            self._check_exists()
            if not already_running:
                return self._start(min_inference_units, max_inference_units)
            self._set_units(min_inference_units, max_inference_units)
            self._set_status_now("RUNNING")
            return "RUNNING"

    def _start(self, min_inference_units: int, max_inference_units: int | None) -> str:
        now = self.clock.now()
        status = self._status_at(now)
        if status in BUSY:
            raise ModelError("ResourceInUseException", f"The model is {status}.")
        if status not in STARTABLE:
            raise ModelError("InvalidParameterException", f"A model in status {status} cannot be started.")
        self._set_units(min_inference_units, max_inference_units)
        end = "FAILED" if self.behaviour.start_fails else "RUNNING"
        self._timeline = [(t, s) for t, s in self._timeline if t <= now]
        self._timeline += [(now, "STARTING"), (now + self.behaviour.start_seconds, end)]
        return "STARTING"

    def _set_units(self, min_inference_units: int, max_inference_units: int | None) -> None:
        if min_inference_units < 1:
            raise ModelError("InvalidParameterException", "MinInferenceUnits must be at least 1.")
        self._inference_units = min_inference_units
        self._max_inference_units = max_inference_units
        self._scaling_at = None
        self._set_units_from(self.clock.now(), min_inference_units)

    def _set_units_from(self, t: float, units: int) -> None:
        self._units = [(when, n) for when, n in self._units if when < t] + [(t, units)]

    def _units_at(self, t: float) -> int:
        current = 0
        for when, units in self._units:
            if when <= t:
                current = units
        return current

    def stop(self, *, refuse_while_starting_seconds: float = 0.0) -> str:
        """StopProjectVersion: STOPPING, then STOPPED after stop_seconds. AWS stops a RUNNING or a
        STARTING model; refuse_while_starting_seconds (ControlPlane's option) refuses the latter
        with ResourceInUseException for its first seconds of STARTING."""
        with self._lock:
            self._check_exists()
            self.calls["StopProjectVersion"] += 1
            return self._stop(refuse_while_starting_seconds)

    def stop_externally(self) -> str:
        """Someone stops the model in the console: as StopProjectVersion."""
        with self._lock:
            self._check_exists()
            return self._stop(0.0)

    def _stop(self, refuse_while_starting_seconds: float) -> str:
        now = self.clock.now()
        status = self._status_at(now)
        if status not in ("RUNNING", "STARTING"):
            raise ModelError("ResourceInUseException", f"The model is {status}; only a running model stops.")
        if status == "STARTING" and now - self._since(now) < refuse_while_starting_seconds:
            raise ModelError("ResourceInUseException", "The model is STARTING and cannot be stopped yet.")
        self._timeline = [(t, s) for t, s in self._timeline if t <= now]
        self._timeline += [(now, "STOPPING"), (now + self.behaviour.stop_seconds, "STOPPED")]
        return "STOPPING"

    def set_status(self, status: str) -> None:
        """Put the model into any status AWS has, from now on (whatever was scheduled is dropped)."""
        _check_status(status)
        with self._lock:
            self._check_exists()
            self._set_status_now(status)

    def _set_status_now(self, status: str) -> None:
        now = self.clock.now()
        self._timeline = [(t, s) for t, s in self._timeline if t <= now] + [(now, status)]

    def delete(self) -> None:
        """Someone deletes the model version (fault "model-deleted"): from now on every call for it is
        ResourceNotFoundException and DescribeProjectVersions leaves it out. As DeleteProjectVersion,
        refused with ResourceInUseException while it runs or trains: stop it first."""
        now = self.clock.now()
        with self._lock:
            self._check_exists()
            status = self._status_at(now)
            if status in UNDELETABLE:
                raise ModelError("ResourceInUseException", f"The model is {status}; it cannot be deleted.")
            self._deleted = True

    def _running_periods(self, now: float) -> list[tuple[float, float]]:
        """[from, to) of every stretch spent RUNNING up to now (call with the lock held)."""
        periods, since = [], None
        for when, status in self._timeline:
            if when > now:
                break
            if status == "RUNNING" and since is None:
                since = when
            elif status != "RUNNING" and since is not None:
                periods.append((since, when))
                since = None
        if since is not None:
            periods.append((since, now))
        return periods

    def running_seconds(self) -> float:
        """Emulated seconds spent RUNNING so far: what Custom Labels bills."""
        now = self.clock.now()
        with self._lock:
            return sum(end - start for start, end in self._running_periods(now))

    def longest_idle_running_seconds(self) -> float:
        """The longest stretch the model spent RUNNING (billed) without answering a single call."""
        now = self.clock.now()
        with self._lock:
            periods = self._running_periods(now)
            answers = sorted(self._answered_at)
        longest = 0.0
        for start, end in periods:
            marks = [start, *(t for t in answers if start <= t <= end), end]
            longest = max([longest, *(b - a for a, b in itertools.pairwise(marks))])
        return longest

    def inference_unit_seconds(self, until: float | None = None) -> float:
        """What Custom Labels bills: the units in service, summed over the time spent RUNNING."""
        now = self.clock.now() if until is None else until
        with self._lock:
            self._scale_down_when_idle(now)
            return sum(self._unit_seconds(start, end) for start, end in self._running_periods(now))

    def _unit_seconds(self, start: float, end: float) -> float:
        marks = sorted({start, end, *(t for t, _ in self._units if start < t < end)})
        return sum((b - a) * self._units_at(a) for a, b in itertools.pairwise(marks))

    def unit_seconds_between(self, start: float, end: float) -> float:
        """Units in service summed over [start, end) (whatever the status)."""
        with self._lock:
            return self._unit_seconds(start, end)

    @property
    def inference_units(self) -> int:
        """The units the model was started with (MinInferenceUnits)."""
        return self._inference_units

    def units_in_service(self) -> int:
        now = self.clock.now()
        with self._lock:
            self._scale_down_when_idle(now)
            return self._units_at(now) if self._status_at(now) == "RUNNING" else 0

    def most_units_in_service(self) -> int:
        with self._lock:
            return max((units for _, units in self._units), default=0)

    def units_timeline(self) -> list[tuple[float, int]]:
        """(emulated time, units in service) at every change while RUNNING, and 0 when not."""
        now = self.clock.now()
        with self._lock:
            self._scale_down_when_idle(now)
            marks = sorted(
                {t for t, _ in self._timeline if t <= now} | {t for t, _ in self._units if t <= now}
            )
            points, last = [], None
            for t in marks:
                units = self._units_at(t) if self._status_at(t) == "RUNNING" else 0
                if units != last:
                    points.append((t, units))
                    last = units
            return points

    def in_service_datapoints(self, until: float, *, minute_at: float = 0.0) -> list[tuple[float, float]]:
        """The metric AWS/Rekognition InServiceInferenceUnits as the emulator publishes it: for every
        whole minute up to `until` in which the model ran, (the minute's start, the units in service
        averaged over that minute, 0 while not RUNNING). Their sum is the billed IU-minutes. Minutes
        start at `minute_at` + 60 k: the emulated time of a whole UTC minute, so that each datapoint
        covers the same minute as CloudWatch's bucket for the processor's metrics."""
        with self._lock:
            self._scale_down_when_idle(until)
            periods = self._running_periods(until)
            points = []
            first = min((p[0] for p in periods), default=until)
            for minute in range(math.floor((first - minute_at) / 60), math.floor((until - minute_at) / 60)):
                start = minute_at + minute * 60.0
                end = start + 60
                seconds = sum(
                    self._unit_seconds(max(a, start), min(b, end))
                    for a, b in periods
                    if a < end and b > start
                )
                if seconds:
                    points.append((start, seconds / 60))
            return points

    @property
    def capacity_tps(self) -> float:
        return max(self._units_at(self.clock.now()), 1) * self.behaviour.tps_per_inference_unit

    # ---- auto-scaling (lock held) ----------------------------------------------------------
    def _autoscale(self, now: float, throttled: bool) -> None:
        minute = int(now // 60)
        counts = self._minutes[minute]
        counts[0] += 1
        counts[1] += throttled
        if not self._max_inference_units or self._max_inference_units <= self._inference_units:
            return
        if self._scaling_at is not None:
            if now < self._scaling_at:
                return
            self._scaling_at = None
        units = self._units_at(now)
        policy = self.behaviour.autoscaling
        # Sustained since the units last changed: minutes spent waiting for a unit do not count.
        since = self._units[-1][0]
        recent = range(minute - policy.up_after_minutes, minute)
        sustained = all(
            m * 60 >= since and (c := self._minutes.get(m)) and c[0] and c[1] / c[0] >= policy.throttled_share
            for m in recent
        )
        if units < self._max_inference_units and sustained:
            self._scaling_at = now + policy.unit_arrival_seconds
            self._set_units_from(self._scaling_at, units + 1)

    def _scale_down_when_idle(self, now: float) -> None:
        policy = self.behaviour.autoscaling
        idle = policy.down_after_idle_minutes * 60
        last = self.last_call_done_at
        if self._scaling_at is not None and self._scaling_at <= now:
            self._scaling_at = None
        if last is None or self._scaling_at is not None:
            return
        at = last + idle
        while at <= now and self._units_at(at) > self._inference_units:
            if all(t <= at for t, _ in self._units):
                self._units.append((at, self._units_at(at) - 1))
            at += idle

    # ---- inference -----------------------------------------------------------------------
    def detect(
        self, image_bytes: bytes | None, *, min_confidence: float | None, max_results: int | None
    ) -> list:
        now = self.clock.now()
        with self._lock:
            self._check_exists()
            self.calls["DetectCustomLabels"] += 1
            if self._status_at(now) != "RUNNING":
                raise ModelError("ResourceNotReadyException", "The model is not running.")
            throttled = self._throttle(now)
            self._autoscale(now, throttled is not None)
            if throttled is not None:
                self.calls["Throttled"] += 1
            else:
                self._tokens -= 1
                if self.first_call_at is None:
                    self.first_call_at = now
                latency = self._latency()
        if throttled is not None:
            self.clock.sleep(self.behaviour.throttle_round_trip_seconds)
            raise ModelError("ProvisionedThroughputExceededException", throttled)
        try:
            labels = self._labels_for(image_bytes, min_confidence=min_confidence, max_results=max_results)
            # The call takes the model's latency; throughput is bounded by capacity above.
            self.clock.sleep(latency)
        finally:
            with self._lock:
                self.last_call_done_at = self.clock.now()
                self._answered_at.append(self.last_call_done_at)
        with self._lock:
            self.calls["Labeled"] += 1
        return labels

    def _throttle(self, now: float) -> str | None:
        """Why the call is throttled, or None when it is accepted (lock held)."""
        since = self._running_since(now)
        if any(since + start <= now < since + end for start, end in self.behaviour.throttle_windows):
            return "Throughput exceeded (throttling storm)."
        # A token bucket, as AWS meters throughput: refills at capacity per second and holds at
        # most burst_seconds' worth, so short bursts pass and sustained excess is throttled.
        capacity = max(self._units_at(now), 1) * self.behaviour.tps_per_inference_unit
        refill = (now - self._refilled_at) * capacity
        # (At least one call: a model slower than one call a second still takes one now and then.)
        self._tokens = min(max(capacity * self.behaviour.burst_seconds, 1.0), self._tokens + refill)
        self._refilled_at = now
        if self._tokens < 1:
            return f"More than {capacity:g} requests per second for the running inference units."
        return None

    def _latency(self) -> float:
        median, spread = self.behaviour.latency_seconds, self.behaviour.latency_spread
        if spread <= 0 or median <= 0:
            return max(median, 0.0)
        return median * math.exp(self._random.gauss(0.0, spread))

    def _labels_for(self, image_bytes: bytes | None, *, min_confidence, max_results) -> list:
        if image_bytes is None:
            raise ModelError("InvalidS3ObjectException", "Unable to get object metadata from S3.")
        if len(image_bytes) > MAX_S3_IMAGE_BYTES:
            raise ModelError("ImageTooLargeException", "The image is larger than 15 MB.")
        try:
            with Image.open(io.BytesIO(image_bytes)) as image:
                image_format, (width, height) = image.format, image.size
                image.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            raise ModelError("InvalidImageFormatException", "The image is not a valid JPEG or PNG.") from None
        if image_format not in ("JPEG", "PNG"):
            raise ModelError("InvalidImageFormatException", f"Unsupported image format {image_format}.")
        if max(width, height) > MAX_DIMENSION:
            raise ModelError("ImageTooLargeException", f"{width}x{height} exceeds {MAX_DIMENSION} pixels.")
        if min(width, height) < MIN_DIMENSION:
            raise ModelError(
                "InvalidImageFormatException", f"{width}x{height} is under {MIN_DIMENSION} pixels."
            )
        threshold = 50.0 if min_confidence is None else float(min_confidence)
        labels = [
            {
                "Name": a.name,
                "Confidence": a.confidence,
                **({"Geometry": {"BoundingBox": a.box}} if a.box else {}),
            }
            for a in self.annotations.lookup(image_bytes)
            if a.confidence >= threshold
        ]
        labels.sort(key=lambda label: -label["Confidence"])
        return labels[:max_results] if max_results else labels
