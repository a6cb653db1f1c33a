"""A one-file HTML gallery of results: each labeled image with its boxes, each error record, and the
headline numbers. Images are inlined, so the page works offline and can be mailed. The demo writes
one from its output folder (`write_gallery`); the `gallery` command builds one from the deployed
bucket (`bucket_gallery`), with thumbnails downscaled so the file stays small enough to share."""

from __future__ import annotations

import base64
import html
import io
import json
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

from PIL import Image

from customlabels_batch import waits

MAX_EMBEDDED_FILE_BYTES = 2 * 1024 * 1024
# Past this the page gets slow to open; later images show a placeholder instead.
MAX_EMBEDDED_TOTAL_BYTES = 32 * 1024 * 1024
BOX_COLOURS = ("#e6194b", "#f58231", "#3cb44b", "#4363d8", "#911eb4", "#f032e6", "#008080", "#9a6324")

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f3f3f1;color:#222}
header{background:#1f2a36;color:#fff;padding:16px 24px}
h1{font-size:20px;margin:0 0 10px}
h2{font-size:16px;margin:24px 24px 8px}
.stats{display:flex;flex-wrap:wrap;gap:8px 24px;margin:0}
.stats div{display:flex;flex-direction:column}
.stats dt{font-size:11px;text-transform:uppercase;opacity:.7}
.stats dd{margin:0;font-size:17px;font-weight:600}
.lost{color:#ffb3b3}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:16px;padding:0 24px 24px}
.card{background:#fff;border-radius:6px;box-shadow:0 1px 3px #0003;padding:10px;overflow:hidden}
.card.error{border-left:5px solid #c0392b}
.name{font-weight:600;word-break:break-all;margin-bottom:6px}
.frame{position:relative;line-height:0}
.frame img{width:100%;height:auto;display:block}
.box{position:absolute;border:2px solid var(--c);box-sizing:border-box;box-shadow:0 0 0 1px #fffc}
.tag{position:absolute;left:-2px;bottom:100%;background:var(--c);color:#fff;font-size:11px;
  line-height:1.3;padding:0 3px;white-space:nowrap}
.box.top .tag{bottom:auto;top:0;left:0}
.box.right .tag{left:auto;right:-2px}
.box.top.right .tag{right:0}
.labels{margin:8px 0 0;padding-left:18px}
.none,.note{color:#777;font-style:italic;margin:8px 0 0}
.waited{color:#555;font-size:12px;margin:6px 0 0}
.code{font-family:ui-monospace,monospace;color:#c0392b;font-weight:600}
.thumb{max-width:120px;max-height:120px;float:right;margin-left:8px;image-rendering:auto}
"""


# (relative path, parsed document or None, the image's bytes or None)
Entry = tuple[str, Any, bytes | None]


def write_gallery(out_dir: Path, *, images_dir: Path) -> Path:
    """Write `out_dir/gallery.html` from `out_dir/results/`, `out_dir/errors/` and
    `out_dir/run-report.json`; source images are read from `images_dir` by the same relative path
    the output objects have (`results/a/b.jpg.json` shows `images_dir/a/b.jpg`). Returns the page."""
    results = [(rel, doc, _read_image(images_dir / rel)) for rel, doc in _read_outputs(out_dir / "results")]
    errors = [(rel, doc, _read_image(images_dir / rel)) for rel, doc in _read_outputs(out_dir / "errors")]
    report = _read_json(out_dir / "run-report.json")
    page = render("Custom Labels run", results, errors, lambda counts: _headline(report, counts))
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "gallery.html"
    target.write_text(page, encoding="utf-8")
    return target


def render(title: str, results: list[Entry], errors: list[Entry], headline) -> str:
    """The page: `headline(label counts)` gives the header's HTML."""
    budget = _Budget(MAX_EMBEDDED_TOTAL_BYTES)
    result_cards = [_result_card(rel, doc, data, budget) for rel, doc, data in results]
    error_cards = [_error_card(rel, doc, data, budget) for rel, doc, data in errors]
    label_counts = Counter(
        str(label.get("Name"))
        for _, doc, _ in results
        for label in _list(doc.get("customLabels") if isinstance(doc, dict) else None)
        if isinstance(label, dict)
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)} gallery</title>
<style>{CSS}</style></head>
<body>
<header><h1>{_esc(title)}</h1>{headline(label_counts)}</header>
<h2>Labeled images ({len(result_cards)})</h2>
<div class="grid">{"".join(result_cards) or '<p class="note">No results.</p>'}</div>
<h2>Error records ({len(error_cards)})</h2>
<div class="grid">{"".join(error_cards) or '<p class="note">No error records.</p>'}</div>
</body></html>
"""


def stats_headline(stats: list[tuple[str, Any]], label_counts: Counter) -> str:
    items = "".join(
        f"<div><dt>{_esc(name)}</dt><dd>{'&ndash;' if value is None else _esc(value)}</dd></div>"
        for name, value in stats
    )
    parts = [f'<dl class="stats">{items}</dl>']
    if label_counts:
        found = ", ".join(f"{_esc(name)} {count}" for name, count in sorted(label_counts.items()))
        parts.append(f"<p>Labels found: {found}</p>")
    return "".join(parts)


def thumbnail(data: bytes, max_side: int) -> bytes | None:
    """The image as a JPEG at most max_side pixels on a side (boxes are in fractions of the image,
    so they land the same); None if it does not decode."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.thumbnail((max_side, max_side))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, "JPEG", quality=80)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    return buffer.getvalue()


def _read_image(path: Path) -> bytes | None:
    try:
        if path.stat().st_size > MAX_EMBEDDED_FILE_BYTES:
            return None  # checked before reading: the file may be enormous
        return path.read_bytes()
    except OSError:
        return None


class _Budget:
    def __init__(self, total: int) -> None:
        self.left = total

    def take(self, size: int) -> bool:
        if size > MAX_EMBEDDED_FILE_BYTES or size > self.left:
            return False
        self.left -= size
        return True


def _read_outputs(folder: Path) -> list[tuple[str, Any]]:
    """(relative source path, parsed document or None) for every `<relative>.json` under folder."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.rglob("*.json")):
        relative = path.relative_to(folder).as_posix()[: -len(".json")]
        found.append((relative, _read_json(path)))
    return found


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _headline(report: Any, label_counts: Counter) -> str:
    if not isinstance(report, dict):
        return '<p class="note">No readable run-report.json.</p>'
    model = report.get("model") if isinstance(report.get("model"), dict) else {}
    lost = _list(report.get("lostImages"))
    mapping = report.get("mapping") if isinstance(report.get("mapping"), dict) else {}
    durations = report.get("durations") if isinstance(report.get("durations"), dict) else {}
    cost = model.get("estimatedCostUsd")
    stats = [
        ("Images uploaded", report.get("imagesUploaded")),
        ("Results written", report.get("resultsWritten")),
        ("Error records", report.get("errorRecords")),
        ("Lost images", len(lost) if "lostImages" in report else None),
        ("Billed IU-minutes", model.get("billedInferenceUnitMinutes")),
        ("Estimated cost", _usd(cost)),
        ("Model at end", model.get("finalStatus")),
        ("Mapping at end", mapping.get("finalState")),
        ("Emulated duration", _duration(durations.get("emulatedSeconds"))),
        ("Time to result", waits.describe(report.get("timeToResult"))),
    ]
    headline = stats_headline(stats, label_counts)
    if lost:
        headline += f'<p class="lost">Lost: {", ".join(_esc(key) for key in lost)}</p>'
    return headline


def _usd(amount: Any) -> str | None:
    if not isinstance(amount, int | float):
        return None if amount is None else str(amount)
    # Small runs cost fractions of a cent; two decimals would show them as free.
    return f"${amount:.2f}" if amount >= 1 else f"${amount:.4f}"


def _duration(seconds: Any) -> str | None:
    if not isinstance(seconds, int | float):
        return None if seconds is None else str(seconds)
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _result_card(relative: str, doc: Any, data: bytes | None, budget: _Budget) -> str:
    if not isinstance(doc, dict):
        return _card(relative, '<p class="note">Unreadable result file.</p>', extra_class="error")
    labels = [label for label in _list(doc.get("customLabels")) if isinstance(label, dict)]
    uri = _data_uri(data, budget)
    boxes = "".join(_box(label) for label in labels)
    if uri:
        picture = f'<div class="frame"><img src="{uri}" alt="{_esc(relative)}">{boxes}</div>'
    else:
        picture = '<p class="note">Image not embedded (missing, unreadable or over the size cap).</p>'
    if labels:
        items = "".join(
            f"<li>{_esc(label.get('Name'))} {_confidence(label.get('Confidence'))}"
            f"{'' if _bounding_box(label) else ' (whole image)'}</li>"
            for label in labels
        )
        listing = f'<ul class="labels">{items}</ul>'
    else:
        listing = '<p class="none">no labels found</p>'
    waited = waits.of_result(doc)
    if waited is not None:
        listing += f'<p class="waited">waited {_esc(_duration(waited))} from upload to result</p>'
    return _card(relative, picture + listing)


def _box(label: dict) -> str:
    box = _bounding_box(label)
    if not box:
        return ""
    left, top = _ratio(box.get("Left")), _ratio(box.get("Top"))
    # Clamped: the API may return boxes that spill slightly past the image edge.
    width = min(_ratio(box.get("Width")), 1 - left)
    height = min(_ratio(box.get("Height")), 1 - top)
    style = (
        f"left:{left:.3%};top:{top:.3%};width:{width:.3%};height:{height:.3%};"
        f"--c:{_colour(str(label.get('Name')))}"
    )
    tag = f"{_esc(label.get('Name'))} {_confidence(label.get('Confidence'))}"
    # Near the top or right edge the tag moves inside the box, where the card does not clip it.
    classes = "box" + (" top" if top < 0.08 else "") + (" right" if left + width > 0.8 else "")
    return f'<div class="{classes}" style="{style}"><span class="tag">{tag}</span></div>'


def _bounding_box(label: dict) -> dict | None:
    geometry = label.get("Geometry")
    box = geometry.get("BoundingBox") if isinstance(geometry, dict) else None
    return box if isinstance(box, dict) else None


def _ratio(value: Any) -> float:
    try:
        return min(max(float(value), 0.0), 1.0)
    except (TypeError, ValueError):
        return 0.0


def _confidence(value: Any) -> str:
    return f"{value:.1f}%" if isinstance(value, int | float) else _esc(value)


def _colour(name: str) -> str:
    # crc32, not hash(): the same class gets the same colour in every run.
    return BOX_COLOURS[zlib.crc32(name.encode("utf-8")) % len(BOX_COLOURS)]


def _error_card(relative: str, doc: Any, data: bytes | None, budget: _Budget) -> str:
    if not isinstance(doc, dict):
        return _card(relative, '<p class="note">Unreadable error record.</p>', extra_class="error")
    source = doc.get("source")
    if isinstance(source, dict):
        title = relative
    else:  # an unreadable SQS message, not an image
        title, data = f"message {doc.get('messageId', relative)}", None
    uri = _data_uri(data, budget, verify=True) if data else None
    thumb = f'<img class="thumb" src="{uri}" alt="{_esc(title)}">' if uri else ""
    body = (
        f'{thumb}<div class="code">{_esc(doc.get("errorCode", "?"))}</div>'
        f"<p>{_esc(doc.get('reason', ''))}</p>"
    )
    return _card(title, body, extra_class="error")


def _card(title: str, body: str, *, extra_class: str = "") -> str:
    return f'<div class="card {extra_class}"><div class="name">{_esc(title)}</div>{body}</div>'


def _data_uri(data: bytes | None, budget: _Budget, *, verify: bool = False) -> str | None:
    """The image as a data: URI if a browser can show it and it fits the caps; else None."""
    if data is None or len(data) > MAX_EMBEDDED_FILE_BYTES:
        return None
    size = len(data)
    if data.startswith(b"\xff\xd8\xff"):
        mime = "image/jpeg"
    elif data.startswith(b"\x89PNG\r\n\x1a\n"):
        mime = "image/png"
    else:
        return None
    if verify and not _decodes(data):
        return None  # error records are often corrupt files: no broken-image icons
    if not budget.take(size):
        return None
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _decodes(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False
    return True
