"""How the pipeline's functions read their settings: once, at import, from the one JSON variable the
stack sets from the declared settings (customlabels_batch/settings.py): each setting the function
uses under its camelCase name, plus the names of the resources it works on."""

from __future__ import annotations

import json
import os
import re
from types import SimpleNamespace

VARIABLE = "PIPELINE_SETTINGS"


def load() -> SimpleNamespace:
    """`minConfidence` is read as `.min_confidence`. A function without its settings must not start."""
    raw = os.environ.get(VARIABLE)
    if not raw:
        raise RuntimeError(f"the function's environment has no {VARIABLE}: deploy it with the stack")
    return SimpleNamespace(**{_snake(name): value for name, value in json.loads(raw).items()})


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
