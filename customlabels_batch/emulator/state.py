"""What one emulation's patches consult: its clock, its models, its in-process functions, its
control-plane options."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .control_plane import ControlPlane

if TYPE_CHECKING:
    from .clock import VirtualClock
    from .custom_labels import EmulatedModel


@dataclass
class Emulation:
    clock: VirtualClock
    # Model version ARN -> the emulated model answering for it.
    models: dict[str, EmulatedModel] = field(default_factory=dict)
    # Function name -> handler(event) run in-process when the function is invoked.
    functions: dict[str, Callable[[Any], Any]] = field(default_factory=dict)
    # Function name -> handler(event, request_id) that S3 notifications invoke asynchronously
    # (async_invoke), and what those invocations did (invocations, retries, sentToFailureQueue...).
    async_functions: dict[str, Callable[[Any, str], Any]] = field(default_factory=dict)
    async_invokes: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    # Execution ARN -> {"started": s, "stopped": s} in emulated seconds.
    execution_times: dict[str, dict[str, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # How the emulated control plane behaves where AWS is slower or stricter than moto; faults too.
    control: ControlPlane = field(default_factory=ControlPlane)
    # Fault "processor-crash": the function's runtime dies when it asks the model to label a key
    # for which this says True (an image that takes its memory, say).
    crashes_on: Callable[[str], bool] = lambda key: False
