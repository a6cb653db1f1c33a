"""The demo's sample dataset (deterministic, annotated to match what is drawn, with the awkward files
the pipeline must survive) and the HTML gallery of a run's outputs, down to a real browser render."""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from customlabels_batch.emulator.clock import VirtualClock
from customlabels_batch.emulator.custom_labels import (
    MIN_DIMENSION,
    Annotations,
    EmulatedModel,
    ModelBehaviour,
    ModelError,
)
from customlabels_batch.emulator.dataset import (
    BACKGROUNDS,
    GRASS_BLADE,
    LANE_MARKING,
    LOW_CONFIDENCE,
    SampleDataset,
    generate_sample_dataset,
)
from customlabels_batch.emulator.functions import PROCESSOR, load_handler
from customlabels_batch.emulator.pipeline import emulated_config
from customlabels_batch.gallery import write_gallery
from customlabels_batch.settings import Use

MODEL_ARN = "arn:aws:rekognition:us-east-1:123456789012:project/demo/version/demo.v1/1700000000000"
PROJECT_ARN = "arn:aws:rekognition:us-east-1:123456789012:project/demo/1700000000000"
DEFAULT_MIN_CONFIDENCE = 50  # DetectCustomLabels' default threshold, in percent
# What a person sees: the class's fill colour, as an RGB predicate.
CLASS_COLOURS = {
    "apple": lambda r, g, b: r > 160 and g < 90 and b < 90,
    "banana": lambda r, g, b: r > 200 and g > 170 and b < 110,
    "crate": lambda r, g, b: b > 150 and r < 90,
}
RUN_REPORT = {
    "imagesUploaded": 3,
    "resultsWritten": 2,
    "errorRecords": 1,
    "lostImages": [],
    "model": {"billedInferenceUnitMinutes": 11.5, "estimatedCostUsd": 0.7667, "finalStatus": "STOPPED"},
    "mapping": {"finalState": "Disabled"},
    "durations": {"emulatedSeconds": 754.2},
    "timeToResult": {"images": 2, "p50Seconds": 600.0, "p95Seconds": 754.0, "maxSeconds": 754.0},
}
ODD_LABEL = "<apple> & 'pear'"

# The processor, for the limits the dataset must exercise.
app = load_handler(PROCESSOR, "limits", emulated_config().function_environment(Use.PROCESSOR, bucket="b"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> SampleDataset:
    return generate_sample_dataset(tmp_path_factory.mktemp("dataset"))


def relative_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def running_model(annotations: Annotations) -> tuple[EmulatedModel, VirtualClock]:
    clock = VirtualClock()
    behaviour = ModelBehaviour(start_seconds=0, latency_seconds=0, tps_per_inference_unit=1e6)
    model = EmulatedModel(
        clock=clock,
        project_arn=PROJECT_ARN,
        version_arn=MODEL_ARN,
        annotations=annotations,
        behaviour=behaviour,
    )
    model.start(1)
    return model, clock


# ---- dataset -------------------------------------------------------------------------------------
def test_the_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path):
    first = generate_sample_dataset(tmp_path / "a", seed=11)
    second = generate_sample_dataset(tmp_path / "b", seed=11)
    other = generate_sample_dataset(tmp_path / "c", seed=12, include_large=False)

    assert relative_files(first.folder) == relative_files(second.folder)
    assert first.expected == second.expected
    assert (first.folder / "orchard/apples-01.jpg").read_bytes() != (
        other.folder / "orchard/apples-01.jpg"
    ).read_bytes()


def test_expected_covers_every_file_and_images_lists_them_all(dataset):
    on_disk = set(relative_files(dataset.folder)) - {"manifest.jsonl"}
    listed = [p.relative_to(dataset.folder).as_posix() for p in dataset.images]

    assert set(dataset.expected) == on_disk
    assert listed == sorted(on_disk)
    assert len(listed) == 24
    assert {"orchard", "street", "bad"} == {rel.split("/")[0] for rel in listed}
    assert sum(1 for rel in listed if rel.lower().endswith(".png")) >= 8
    assert sum(1 for rel in listed if rel.lower().endswith((".jpg", ".jpeg"))) >= 8


def test_without_include_large_there_is_no_huge_file(tmp_path):
    small = generate_sample_dataset(tmp_path, include_large=False)

    assert "bad/huge.png" not in small.expected
    assert not (tmp_path / "bad/huge.png").exists()
    assert len(small.images) == 23


def test_every_manifest_line_is_a_ground_truth_object_detection_entry(dataset):
    lines = dataset.manifest.read_text(encoding="utf-8").splitlines()
    annotated = {rel for rel, objects in dataset.objects.items() if objects}

    assert len(lines) == len(annotated) == 17
    for line in lines:
        entry = json.loads(line)
        metadata = entry["bounding-box-metadata"]
        assert entry["source-ref"].removeprefix("s3://sample-bucket/") in annotated
        assert metadata["type"] == "groundtruth/object-detection"
        assert metadata["class-map"] == {"0": "apple", "1": "banana", "2": "crate"}
        assert metadata["human-annotated"] == "yes"
        assert len(metadata["objects"]) == len(entry["bounding-box"]["annotations"])
        assert entry["bounding-box"]["image_size"][0]["depth"] == 3


def test_the_manifest_gives_each_image_its_drawn_objects(dataset):
    annotations = Annotations.from_manifest(dataset.manifest, dataset.folder)

    assert len(annotations) == 17
    for relative, objects in dataset.objects.items():
        found = annotations.lookup((dataset.folder / relative).read_bytes())
        assert [a.name for a in found] == [o.name for o in objects], relative
    empty = [rel for rel, objects in dataset.objects.items() if not objects]
    assert sorted(empty) == ["orchard/grass-only.jpg", "street/empty-lot.png", "street/night-road.jpg"]
    counts = [len(objects) for objects in dataset.objects.values() if objects]
    assert min(counts) == 1
    assert max(counts) == 4
    assert {o.name for objects in dataset.objects.values() for o in objects} == {"apple", "banana", "crate"}


def test_confidences_are_mostly_high_with_two_under_the_default_threshold(dataset):
    confidences = {
        (rel, index): o.confidence
        for rel, objects in dataset.objects.items()
        for index, o in enumerate(objects)
    }
    low = {key: value for key, value in confidences.items() if value * 100 < DEFAULT_MIN_CONFIDENCE}

    assert low == LOW_CONFIDENCE
    assert all(0.6 <= value <= 0.99 for key, value in confidences.items() if key not in low)


def off_background(rgb: tuple[int, int, int], folder: str) -> bool:
    """Far from the folder's background: a noise texture between two colours, plus scenery."""
    dark, light = BACKGROUNDS[folder]
    span = [b - a for a, b in zip(dark, light, strict=True)]
    offset = [p - a for a, p in zip(dark, rgb, strict=True)]
    t = min(max(sum(s * o for s, o in zip(span, offset, strict=True)) / sum(s * s for s in span), 0), 1)
    texture = sum((o - t * s) ** 2 for o, s in zip(offset, span, strict=True)) ** 0.5
    scenery = min(math.dist(rgb, colour) for colour in (GRASS_BLADE, LANE_MARKING))
    return min(texture, scenery) > 25


def test_boxes_lie_within_the_image_and_fit_the_drawn_object_tightly(dataset):
    for relative, objects in dataset.objects.items():
        with Image.open(dataset.folder / relative) as opened:
            image = opened.convert("RGB")
        pixels, folder = image.load(), relative.split("/")[0]
        for o in objects:
            where = f"{relative}: {o.name} at {o.left},{o.top}"
            left, top, right, bottom = o.left, o.top, o.left + o.width, o.top + o.height
            assert 0 <= left < right <= image.width, where
            assert 0 <= top < bottom <= image.height, where
            is_class = CLASS_COLOURS[o.name]
            inside = sum(is_class(*pixels[x, y]) for x in range(left, right) for y in range(top, bottom))
            assert inside >= 0.2 * o.width * o.height, f"{where}: the box holds no {o.name}"
            # Not too small: two pixels outside the box there is only background.
            ring = [(x, y) for x in range(left, right) for y in (top - 2, bottom + 1)]
            ring += [(x, y) for y in range(top, bottom) for x in (left - 2, right + 1)]
            spill = [(x, y) for x, y in ring if 0 <= x < image.width and 0 <= y < image.height]
            outside = sum(off_background(pixels[p], folder) for p in spill)
            assert outside <= 2, f"{where}: the object sticks out"  # 2: JPEG ringing
            # Not too large: the object reaches into the outer two lines of each side.
            sides = {
                "left": [(x, y) for x in (left, left + 1) for y in range(top, bottom)],
                "right": [(x, y) for x in (right - 2, right - 1) for y in range(top, bottom)],
                "top": [(x, y) for y in (top, top + 1) for x in range(left, right)],
                "bottom": [(x, y) for y in (bottom - 2, bottom - 1) for x in range(left, right)],
            }
            for side, line in sides.items():
                assert any(off_background(pixels[p], folder) for p in line), f"{where}: slack at {side}"


def test_awkward_files_exist_with_the_sizes_and_kinds_that_make_them_awkward(dataset):
    folder = dataset.folder
    for relative in ("street/red apple stand.jpg", "street/50%+off.png", "orchard/café/pomme-été.jpg"):
        assert dataset.expected[relative] == "result"
        assert dataset.objects[relative], f"{relative} should have labels to find"
    with Image.open(folder / "orchard/BIG.JPG") as big:
        assert big.format == "JPEG"
    with Image.open(folder / "bad/tiny.png") as tiny:
        assert (tiny.format, tiny.size) == ("PNG", (32, 32))
        assert max(tiny.size) < MIN_DIMENSION
    corrupt = (folder / "bad/corrupt.jpg").read_bytes()
    assert corrupt.startswith(b"\xff\xd8\xff\xe0")
    huge = folder / "bad/huge.png"
    assert huge.stat().st_size > app.MAX_IMAGE_BYTES
    assert huge.read_bytes().startswith(b"\x89PNG")
    assert not "bad/notes.txt".endswith(app.IMAGE_SUFFIXES)
    assert (folder / "bad/notes.txt").read_text(encoding="utf-8").strip()
    assert {rel: code for rel, code in dataset.expected.items() if code != "result"} == {
        "bad/corrupt.jpg": "error:InvalidImageFormatException",
        "bad/huge.png": "error:ImageTooLarge",
        "bad/notes.txt": "error:UnsupportedFileType",
        "bad/tiny.png": "error:InvalidImageFormatException",
    }


def test_the_emulated_model_gives_each_file_its_expected_outcome(dataset):
    model, clock = running_model(Annotations.from_manifest(dataset.manifest, dataset.folder))
    try:
        for relative, expected in dataset.expected.items():
            if expected in ("error:UnsupportedFileType", "error:ImageTooLarge"):
                continue  # the processor decides these before calling the API (checked above)
            data = (dataset.folder / relative).read_bytes()
            if expected == "result":
                labels = model.detect(data, min_confidence=None, max_results=None)
                confident = [o for o in dataset.objects[relative] if o.confidence * 100 >= 50]
                assert sorted(label["Name"] for label in labels) == sorted(o.name for o in confident)
            else:
                with pytest.raises(ModelError) as raised:
                    model.detect(data, min_confidence=None, max_results=None)
                assert f"error:{raised.value.code}" == expected, relative
    finally:
        clock.stop()


# ---- gallery -------------------------------------------------------------------------------------
def write_json(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")


def result(key: str, labels: list[dict]) -> dict:
    return {
        "source": {"bucket": "b", "key": f"incoming/{key}", "etag": "e", "size": 1},
        "modelVersionArn": MODEL_ARN,
        "labeledAt": "2026-01-01T00:00:00.000Z",
        "settings": {"minConfidence": None, "maxResults": None},
        "customLabels": labels,
    }


@pytest.fixture
def run_output(tmp_path) -> tuple[Path, Path]:
    """By hand: two results (one box + an image-level label; no labels), two error records
    (a corrupt JPEG and a valid 3 MB PNG, neither embeddable) and the run report."""
    images, out = tmp_path / "images", tmp_path / "out"
    (images / "shop").mkdir(parents=True)
    Image.new("RGB", (200, 100), (30, 120, 40)).save(images / "shop/a & <b>.png")
    Image.new("RGB", (120, 90), (90, 90, 90)).save(images / "shop/empty.jpg")
    (images / "shop/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    noise = random.Random(1).randbytes(1024 * 1024 * 3)  # incompressible: a valid PNG over 3 MB
    Image.frombytes("RGB", (1024, 1024), noise).save(images / "shop/large.png")
    box = {"Width": 0.125, "Height": 0.25, "Left": 0.25, "Top": 0.5}
    labels = [
        {"Name": ODD_LABEL, "Confidence": 97.25, "Geometry": {"BoundingBox": box}},
        {"Name": "fresh & ripe", "Confidence": 61.5},
    ]
    write_json(out / "results/shop/a & <b>.png.json", result("shop/a & <b>.png", labels))
    uploaded = result("shop/empty.jpg", [])
    uploaded["source"]["uploadedAt"] = "2025-12-31T23:47:26.000Z"  # 12 min 34 s before labeledAt
    write_json(out / "results/shop/empty.jpg.json", uploaded)
    for name, code in (("broken.jpg", "InvalidImageFormatException"), ("large.png", "ImageTooLarge")):
        write_json(
            out / f"errors/shop/{name}.json",
            {
                "source": {"bucket": "b", "key": f"incoming/shop/{name}", "etag": "e", "size": 1},
                "reason": 'Bad "image" <here>',
                "errorCode": code,
                "messageId": "m-1",
                "recordedAt": "2026-01-01T00:00:00.000Z",
            },
        )
    write_json(out / "run-report.json", RUN_REPORT)
    return out, images


def test_gallery_escapes_data_inlines_images_and_places_boxes_in_percent(run_output):
    out, images = run_output

    page = write_gallery(out, images_dir=images).read_text(encoding="utf-8")

    assert "&lt;apple&gt; &amp; &#x27;pear&#x27; 97.2%" in page
    assert "fresh &amp; ripe 61.5% (whole image)" in page
    assert "shop/a &amp; &lt;b&gt;.png" in page
    assert "<apple>" not in page
    assert "<b>" not in page
    assert "Bad &quot;image&quot; &lt;here&gt;" in page
    assert "InvalidImageFormatException" in page
    assert "ImageTooLarge" in page
    assert "no labels found" in page
    assert "left:25.000%;top:50.000%;width:12.500%;height:25.000%" in page
    assert len(re.findall(r'<div class="box[ "]', page)) == 1
    # Only the two results are embedded: the corrupt file and the 3 MB one are not.
    assert page.count("data:image/png;base64,") == 1
    assert page.count("data:image/jpeg;base64,") == 1
    assert not re.search(r"https?://", page)
    for shown in ("11.5", "$0.7667", "STOPPED", "Disabled", "12 min 34 s"):
        assert f"<dd>{shown}</dd>" in page
    # Time to result: the run's percentiles in the header, each image's own wait on its card (the
    # result without uploadedAt says nothing).
    assert "<dd>p50 10.0 min, p95 12.6 min, longest 12.6 min</dd>" in page
    assert page.count('class="waited"') == 1
    assert "waited 12 min 34 s from upload to result" in page


def test_gallery_without_a_run_report_or_outputs_still_renders(tmp_path):
    page = write_gallery(tmp_path, images_dir=tmp_path).read_text(encoding="utf-8")

    assert "No readable run-report.json" in page
    assert "No results." in page
    assert "No error records." in page


def sample_run(dataset: SampleDataset, out: Path) -> int:
    """Write what the processor writes for every dataset file, labeling with the emulated model.
    Returns how many boxes the gallery must draw."""
    model, clock = running_model(Annotations.from_manifest(dataset.manifest, dataset.folder))
    boxes = 0
    try:
        for relative, expected in dataset.expected.items():
            source = {"bucket": "b", "key": f"incoming/{relative}", "etag": "e", "size": 1}
            if expected == "result":
                data = (dataset.folder / relative).read_bytes()
                labels = model.detect(data, min_confidence=None, max_results=None)
                boxes += sum("Geometry" in label for label in labels)
                write_json(out / f"results/{relative}.json", result(relative, labels))
            else:
                document = {"source": source, "reason": "unusable", "errorCode": expected.split(":")[1]}
                write_json(out / f"errors/{relative}.json", document)
    finally:
        clock.stop()
    write_json(out / "run-report.json", RUN_REPORT | {"imagesUploaded": len(dataset.expected)})
    return boxes


def test_the_sample_run_gallery_draws_one_box_per_confident_object(dataset, tmp_path):
    boxes = sample_run(dataset, tmp_path)
    confident = sum(o.confidence >= 0.5 for objects in dataset.objects.values() for o in objects)

    page = write_gallery(tmp_path, images_dir=dataset.folder).read_text(encoding="utf-8")

    assert boxes == confident
    assert len(re.findall(r'<div class="box[ "]', page)) == confident
    assert "pomme-été.jpg" in page
    assert "50%+off.png" in page
    assert page.count("no labels found") == 3
    assert "data:image/png;base64," in page  # bad/tiny.png's thumbnail
    assert page.count("base64,") == 20 + 1  # every labeled image, plus tiny.png, not huge or corrupt


# ---- real browser --------------------------------------------------------------------------------
def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    if binary is None:
        message = "Debian's chromium is not installed (`make browser` installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must render the gallery, not skip it
        pytest.skip(message)
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=60, check=True)


@pytest.mark.browser
def test_chromium_renders_the_sample_run_gallery(dataset, tmp_path):
    out = tmp_path / "out"
    boxes = sample_run(dataset, out)
    page = write_gallery(out, images_dir=dataset.folder).as_uri()

    dom = chromium("--dump-dom", page, profile=tmp_path / "profile").stdout
    chromium(
        f"--screenshot={tmp_path / 'g.png'}", "--window-size=1280,1600", page, profile=tmp_path / "profile"
    )

    assert len(re.findall(r'<div class="box[ "]', dom)) == boxes
    for name in ("apple", "banana", "crate", "InvalidImageFormatException", "UnsupportedFileType"):
        assert name in dom
    with Image.open(tmp_path / "g.png") as shot:
        assert shot.format == "PNG"
        assert shot.size == (1280, 1600)
        extrema = ImageStat.Stat(shot.convert("L")).extrema[0]
    assert extrema[1] - extrema[0] > 100, "the screenshot is a flat colour"


@pytest.mark.browser
def test_chromium_shows_odd_names_as_text_not_markup(run_output, tmp_path):
    out, images = run_output
    page = write_gallery(out, images_dir=images).as_uri()

    dom = chromium("--dump-dom", page, profile=tmp_path / "profile").stdout

    assert "&lt;apple&gt; &amp; 'pear' 97.2%" in dom  # the parser kept it as text
    assert "<apple>" not in dom
    assert len(re.findall(r'<div class="box[ "]', dom)) == 1
