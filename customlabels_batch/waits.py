"""Time to result: how long each image waited from its upload (the S3 event's time, a result's
`source.uploadedAt`) to its result (`labeledAt`), and the percentiles the run record, the emulator's
report, the gallery and the benchmarks show. Nearest rank, as CloudWatch's percentile statistics."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from customlabels_batch.lambdas.images import seconds_between


def percentile(values: list[float], share: float) -> float | None:
    """The smallest value that `share` (0-1) of the values do not exceed; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(share * len(ordered))) - 1]


def of_result(document: Any) -> float | None:
    """Seconds one result waited, or None if it does not say when it was uploaded."""
    if not isinstance(document, dict) or not isinstance(document.get("labeledAt"), str):
        return None
    source = document.get("source") if isinstance(document.get("source"), dict) else {}
    return seconds_between(source.get("uploadedAt"), document["labeledAt"])


def summary(waits: Iterable[float | None]) -> dict[str, Any] | None:
    """{"images", "p50Seconds", "p95Seconds", "maxSeconds"} of the known waits (None if none)."""
    known = [w for w in waits if w is not None]
    if not known:
        return None
    return {
        "images": len(known),
        "p50Seconds": round(percentile(known, 0.50), 1),
        "p95Seconds": round(percentile(known, 0.95), 1),
        "maxSeconds": round(max(known), 1),
    }


def describe(summary_: dict[str, Any] | None) -> str | None:
    """'p50 12.5 min, p95 40.1 min, longest 58.0 min' (None without a summary)."""
    if not summary_:
        return None
    return ", ".join(
        f"{name} {_minutes(summary_.get(key))}"
        for name, key in (("p50", "p50Seconds"), ("p95", "p95Seconds"), ("longest", "maxSeconds"))
    )


def _minutes(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "?"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
