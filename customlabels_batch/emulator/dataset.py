"""A small, deterministic sample dataset for the demo: drawn images of apples, bananas and crates,
their SageMaker Ground Truth object-detection manifest, and the awkward files a real bucket holds."""

from __future__ import annotations

import io
import json
import random
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageOps

CLASSES = ("apple", "banana", "crate")
CLASS_MAP = {str(index): name for index, name in enumerate(CLASSES)}
MANIFEST_BUCKET = "sample-bucket"
LABEL_ATTRIBUTE = "bounding-box"
LARGE_FILE_BYTES = 16 * 1024 * 1024  # over DetectCustomLabels' 15 MB limit for S3 objects

# (relative path, size, classes drawn). The unicode name is NFC so the S3 key and the manifest's
# source-ref agree byte for byte, whatever the file system does with it.
SCENES: tuple[tuple[str, tuple[int, int], tuple[str, ...]], ...] = (
    ("orchard/apples-01.jpg", (320, 240), ("apple", "apple", "apple")),
    ("orchard/apples-02.png", (320, 240), ("apple", "apple")),
    ("orchard/bananas-01.jpg", (320, 240), ("banana", "banana")),
    ("orchard/mixed-01.png", (320, 240), ("apple", "banana", "crate")),
    ("orchard/mixed-02.jpg", (320, 240), ("apple", "apple", "banana", "banana")),
    ("orchard/harvest-crate.png", (320, 240), ("crate", "apple")),
    ("orchard/grass-only.jpg", (320, 240), ()),
    ("orchard/BIG.JPG", (640, 480), ("apple", "banana", "crate", "crate")),
    (unicodedata.normalize("NFC", "orchard/café/pomme-été.jpg"), (320, 240), ("apple",)),
    (unicodedata.normalize("NFC", "orchard/café/banane-mûre.png"), (320, 240), ("banana",)),
    ("street/crates-01.jpg", (320, 240), ("crate", "crate")),
    ("street/crates-02.png", (320, 240), ("crate", "crate", "crate")),
    ("street/delivery.jpg", (320, 240), ("crate", "banana")),
    ("street/market-01.png", (320, 240), ("apple", "banana", "crate")),
    ("street/market-02.jpg", (320, 240), ("banana",)),
    ("street/red apple stand.jpg", (320, 240), ("apple", "apple", "apple", "crate")),
    ("street/50%+off.png", (320, 240), ("banana", "banana", "apple")),
    ("street/empty-lot.png", (320, 240), ()),
    ("street/night-road.jpg", (320, 240), ()),
    ("street/corner-shop.png", (240, 320), ("crate", "apple")),
)
# Annotators were unsure of these objects: under the default MinConfidence (50) the model drops them.
LOW_CONFIDENCE = {("orchard/mixed-02.jpg", 3): 0.45, ("street/crates-02.png", 1): 0.42}

TINY = "bad/tiny.png"
CORRUPT = "bad/corrupt.jpg"
NOT_AN_IMAGE = "bad/notes.txt"
LARGE = "bad/huge.png"
# What the pipeline must end with for each awkward file (the processor's errorCode).
AWKWARD_OUTCOMES = {
    CORRUPT: "error:InvalidImageFormatException",
    NOT_AN_IMAGE: "error:UnsupportedFileType",
    TINY: "error:InvalidImageFormatException",  # the model rejects images under 64 px
    LARGE: "error:ImageTooLarge",  # the processor checks the size before calling the API
}

BACKGROUNDS = {  # folder -> (dark, light) of the noise texture
    "orchard": ((52, 98, 40), (128, 170, 88)),
    "street": ((92, 92, 96), (168, 166, 160)),
}
NIGHT = ((18, 20, 36), (64, 66, 90))
GRASS_BLADE, LANE_MARKING = (40, 80, 30), (226, 222, 205)


@dataclass(frozen=True)
class SampleObject:
    """One drawn object and its Ground Truth annotation (pixels, as the manifest has them)."""

    name: str
    confidence: float  # 0-1, as Ground Truth writes it
    left: int
    top: int
    width: int
    height: int


@dataclass
class SampleDataset:
    folder: Path
    images: list[Path]  # every file to upload (awkward ones too), sorted by relative path
    manifest: Path
    expected: dict[str, str]  # relative path -> "result" or "error:<errorCode>"
    objects: dict[str, list[SampleObject]] = field(default_factory=dict)  # relative path -> annotations


def generate_sample_dataset(folder: Path, *, seed: int = 7, include_large: bool = True) -> SampleDataset:
    """Write the dataset into `folder` (files of the same names are overwritten) and describe it.
    The same seed gives byte-identical files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    written: list[str] = []
    expected: dict[str, str] = {}
    objects: dict[str, list[SampleObject]] = {}
    manifest_lines: list[str] = []

    for relative, size, classes in SCENES:
        image, drawn = _draw_scene(rng, relative, size, classes)
        _write(folder, relative, _encode(image, relative))
        objects[relative] = [
            SampleObject(
                name=name,
                confidence=LOW_CONFIDENCE.get((relative, index), round(rng.uniform(0.6, 0.99), 2)),
                left=box[0],
                top=box[1],
                width=box[2] - box[0],
                height=box[3] - box[1],
            )
            for index, (name, box) in enumerate(drawn)
        ]
        if drawn:  # unannotated images are simply absent from the manifest, as in Ground Truth output
            manifest_lines.append(json.dumps(_manifest_entry(relative, size, objects[relative])))
        written.append(relative)
        expected[relative] = "result"

    _write(folder, TINY, _encode(_texture(rng, (32, 32), BACKGROUNDS["street"]), TINY))
    # A JPEG that starts right (SOI + JFIF APP0) and then turns to noise, like a truncated upload.
    jfif = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    _write(folder, CORRUPT, jfif + rng.randbytes(4096).replace(b"\xff", b"\x00"))
    _write(folder, NOT_AN_IMAGE, b"Shopping list: apples, bananas, one crate.\nNot an image.\n")
    awkward = [TINY, CORRUPT, NOT_AN_IMAGE]
    if include_large:
        # Random bytes behind a PNG signature: nothing reads past the size check, and randbytes
        # makes 16 MB in well under a second.
        _write(folder, LARGE, b"\x89PNG\r\n\x1a\n" + rng.randbytes(LARGE_FILE_BYTES - 8))
        awkward.append(LARGE)
    for relative in awkward:
        written.append(relative)
        expected[relative] = AWKWARD_OUTCOMES[relative]

    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(manifest_lines) + "\n", encoding="utf-8")
    written.sort()
    return SampleDataset(
        folder=folder,
        images=[folder / relative for relative in written],
        manifest=manifest,
        expected=dict(sorted(expected.items())),
        objects=objects,
    )


def _manifest_entry(relative: str, size: tuple[int, int], drawn: list[SampleObject]) -> dict:
    width, height = size
    return {
        "source-ref": f"s3://{MANIFEST_BUCKET}/{relative}",
        LABEL_ATTRIBUTE: {
            "image_size": [{"width": width, "height": height, "depth": 3}],
            "annotations": [
                {
                    "class_id": CLASSES.index(o.name),
                    "top": o.top,
                    "left": o.left,
                    "width": o.width,
                    "height": o.height,
                }
                for o in drawn
            ],
        },
        f"{LABEL_ATTRIBUTE}-metadata": {
            "objects": [{"confidence": o.confidence} for o in drawn],
            "class-map": CLASS_MAP,
            "type": "groundtruth/object-detection",
            "human-annotated": "yes",
            "creation-date": "2026-01-01T00:00:00",
            "job-name": "labeling-job/sample",
        },
    }


def _write(folder: Path, relative: str, data: bytes) -> None:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _encode(image: Image.Image, relative: str) -> bytes:
    buffer = io.BytesIO()
    if relative.lower().endswith((".jpg", ".jpeg")):
        image.save(buffer, "JPEG", quality=90)
    else:
        image.save(buffer, "PNG", optimize=False)
    return buffer.getvalue()


# ---- drawing -----------------------------------------------------------------------------------
def _texture(rng: random.Random, size: tuple[int, int], colours) -> Image.Image:
    """Blurred noise between two close colours: enough texture that objects are not on a flat field."""
    noise = Image.frombytes("L", size, rng.randbytes(size[0] * size[1]))
    noise = ImageOps.autocontrast(noise.filter(ImageFilter.GaussianBlur(1.2)))
    return ImageOps.colorize(noise, black=colours[0], white=colours[1])


def _draw_scene(
    rng: random.Random, relative: str, size: tuple[int, int], classes: tuple[str, ...]
) -> tuple[Image.Image, list[tuple[str, tuple[int, int, int, int]]]]:
    folder = relative.split("/", 1)[0]
    image = _texture(rng, size, NIGHT if "night" in relative else BACKGROUNDS[folder])
    _draw_scenery(rng, image, folder)
    scale = min(size) / 240
    taken: list[tuple[int, int, int, int]] = []
    drawn = []
    for name in classes:
        sprite = _SPRITES[name](rng, scale)
        box = _place(rng, size, sprite.size, taken)
        image.paste(sprite, box[:2], sprite)
        # The annotation is the sprite's visible extent, so the box is exactly what is drawn.
        left, top, right, bottom = sprite.getchannel("A").getbbox()
        drawn.append((name, (box[0] + left, box[1] + top, box[0] + right, box[1] + bottom)))
        taken.append(box)
    return image, drawn


def _draw_scenery(rng: random.Random, image: Image.Image, folder: str) -> None:
    """Grass blades or lane markings: background detail that is not an object."""
    draw = ImageDraw.Draw(image)
    width, height = image.size
    if folder == "orchard":
        for _ in range(60):
            x, y = rng.randrange(width), rng.randrange(height)
            draw.line((x, y, x + rng.randint(-3, 3), y - rng.randint(4, 9)), fill=GRASS_BLADE, width=1)
    else:
        y = height * 2 // 3
        for x in range(rng.randrange(0, 20), width, 48):
            draw.rectangle((x, y, x + 24, y + 3), fill=LANE_MARKING)


def _place(
    rng: random.Random, size: tuple[int, int], sprite: tuple[int, int], taken: list[tuple[int, int, int, int]]
) -> tuple[int, int, int, int]:
    """A free spot for a sprite, fully inside the image; overlap only if the image is full."""
    margin = 4
    candidate = (margin, margin, margin + sprite[0], margin + sprite[1])
    for _ in range(200):
        x = rng.randint(margin, size[0] - sprite[0] - margin)
        y = rng.randint(margin, size[1] - sprite[1] - margin)
        candidate = (x, y, x + sprite[0], y + sprite[1])
        if not any(_overlaps(candidate, other, gap=6) for other in taken):
            return candidate
    return candidate


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int], *, gap: int) -> bool:
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def _apple(rng: random.Random, scale: float) -> Image.Image:
    d = round(rng.randint(38, 56) * scale)
    sprite = Image.new("RGBA", (d + 4, d + d // 4 + 4), (0, 0, 0, 0))
    draw = ImageDraw.Draw(sprite)
    top = d // 4 + 2
    red = (rng.randint(190, 225), rng.randint(20, 45), rng.randint(25, 45), 255)
    draw.ellipse((2, top, d + 1, top + d - 1), fill=red, outline=(110, 10, 15, 255), width=2)
    draw.ellipse((d * 0.25, top + d * 0.18, d * 0.42, top + d * 0.38), fill=(255, 200, 200, 255))
    cx = d // 2 + 2
    draw.line((cx, top + 4, cx + 2, 2), fill=(90, 55, 20, 255), width=max(2, d // 16))
    draw.ellipse((cx + 3, 3, cx + 3 + d // 4, 3 + d // 8), fill=(50, 150, 40, 255))
    return sprite


def _banana(rng: random.Random, scale: float) -> Image.Image:
    w = round(rng.randint(64, 90) * scale)
    h = w // 2
    sprite = Image.new("RGBA", (w + 4, h + 4), (0, 0, 0, 0))
    # A crescent: the lower half of one ellipse minus a higher, narrower one.
    mask = Image.new("L", sprite.size, 0)
    mask_draw = ImageDraw.Draw(mask)
    mask_draw.ellipse((2, -h + 2, w + 1, h + 1), fill=255)
    mask_draw.ellipse((w * 0.12, -h * 1.25, w * 0.88, h * 0.55), fill=0)
    outline = mask.filter(ImageFilter.MaxFilter(3))
    sprite.paste((150, 110, 0, 255), (0, 0), outline)
    sprite.paste((250, 214, 40, 255), (0, 0), mask)
    draw = ImageDraw.Draw(sprite)
    for x in (3, w - 3):  # brown tips
        draw.ellipse((x - 3, h * 0.08, x + 3, h * 0.08 + 6), fill=(80, 50, 10, 255))
    return sprite.rotate(rng.uniform(-25, 25), resample=Image.Resampling.NEAREST, expand=True)


def _crate(rng: random.Random, scale: float) -> Image.Image:
    w, h = round(rng.randint(62, 84) * scale), round(rng.randint(44, 58) * scale)
    sprite = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(sprite)
    draw.rectangle((0, 0, w - 1, h - 1), fill=(40, 90, 200, 255), outline=(15, 35, 100, 255), width=3)
    for y in range(h // 4, h - 3, h // 4):  # slats
        draw.line((3, y, w - 4, y), fill=(20, 55, 140, 255), width=2)
    draw.line((3, 3, w - 4, h - 4), fill=(20, 55, 140, 255), width=2)
    return sprite


_SPRITES = {"apple": _apple, "banana": _banana, "crate": _crate}
