"""Lambda execution environments, emulated: each is a fresh copy of a handler module, with its own
module state and the settings it reads at import taken from its function's environment."""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType, SimpleNamespace
from unittest import mock

TRIAGE = "customlabels_batch.lambdas.triage.app"
PROCESSOR = "customlabels_batch.lambdas.processor.app"
RUN_RECORDER = "customlabels_batch.lambdas.run_recorder.app"


def load_handler(module: str, copy: str, environment: dict[str, str]) -> ModuleType:
    """A new copy of `module` (named `<package>._<copy>`, so the handler's relative imports resolve),
    imported with `environment` set."""
    spec = importlib.util.find_spec(module)
    name = f"{module.rsplit('.', 1)[0]}._{copy}"
    copy_spec = importlib.util.spec_from_file_location(name, spec.origin)
    loaded = importlib.util.module_from_spec(copy_spec)
    sys.modules[name] = loaded  # dataclasses look their module up while it loads
    with mock.patch.dict(os.environ, environment):
        copy_spec.loader.exec_module(loaded)
    return loaded


def read_settings(environment: dict[str, str]) -> SimpleNamespace:
    """What a handler's `SETTINGS` would be in a function with `environment`."""
    from customlabels_batch.lambdas import settings

    with mock.patch.dict(os.environ, environment):
        return settings.load()
