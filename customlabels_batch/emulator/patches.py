"""Applies the emulation's changes to moto for the duration of one emulation, and takes them back
after: upstreamable fixes (moto_fixes), the clock (virtual_time), emulated services (services), AWS's
stricter control plane (control_plane), S3's asynchronous Lambda invocations (async_invoke), and
moto's and botocore's per-request bookkeeping done once (speedups)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import moto

from . import async_invoke, control_plane, data_plane, moto_fixes, services, speedups, virtual_time
from .state import Emulation

SUPPORTED_MOTO = "5.2.5"
_one_at_a_time = threading.Lock()


@contextlib.contextmanager
def applied(emulation: Emulation) -> Iterator[None]:
    if moto.__version__ != SUPPORTED_MOTO:
        raise RuntimeError(
            f"the emulator patches moto internals and is tested with moto=={SUPPORTED_MOTO}; "
            f"found {moto.__version__}. Install the pinned requirements.txt."
        )
    if not _one_at_a_time.acquire(blocking=False):
        raise RuntimeError("one emulation at a time per process: moto's backends are process-wide")
    try:
        with contextlib.ExitStack() as stack:
            for patch in (
                *moto_fixes.patches(emulation.clock.datetime),
                *virtual_time.patches(emulation),
                *services.patches(emulation),
                *control_plane.patches(emulation),
                *data_plane.patches(emulation),
                *async_invoke.patches(emulation),
                *speedups.patches(),
            ):
                stack.enter_context(patch)
            yield
    finally:
        _one_at_a_time.release()
