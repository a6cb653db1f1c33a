"""Control-plane behaviour AWS documents and moto leaves out, plus the faults around it.

- Lambda's event-source mapping is asynchronous: its State (Creating, Enabling, Enabled, Disabling,
  Disabled, Updating, Deleting - Lambda API reference, EventSourceMappingConfiguration) passes
  through Enabling, Disabling or Updating after UpdateEventSourceMapping, and an update the
  resource's availability conflicts with is refused with ResourceInUseException (Lambda API
  reference, UpdateEventSourceMapping errors; HTTP 400, "Cannot update the event source mapping
  because it is in use."). moto flips `enabled` at once.
- Step Functions' ListExecutions is eventually consistent, best effort, and may not show very
  recent changes (Step Functions API reference, ListExecutions); DescribeExecution stays exact.
  moto lists exactly.
- Step Functions fails an execution whose history reaches 25,000 events (Step Functions service
  quotas, "Maximum execution history size"). moto has no limit.
- IAM: any action listed in `ControlPlane.denied` answers AccessDeniedException.
- SQS's three message counts are approximate "because of the distributed architecture" (SQS
  Developer Guide, resources required to process messages); AWS gives no figure for how far off.
  As an option, GetQueueAttributes answers them from a snapshot up to N seconds old; the emulator's
  own accounting reads the true counts (`exact_queue_counts`).

Where AWS gives no figure (how long a transition takes, how stale ListExecutions is) the
`ControlPlane` option has a sensible non-zero default; `Emulation.control` holds the options of
one emulation and every patch reads them at call time, so a fault may change them mid-run.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from unittest import mock

from .clock import EXECUTION_TOPIC, MAPPING_TOPIC

if TYPE_CHECKING:
    from .clock import VirtualClock
    from .state import Emulation

HISTORY_LIMIT_ERROR = "States.Runtime"


@dataclass
class ControlPlane:
    """Options in emulated seconds on the emulation's clock."""

    # How long a mapping stays Enabling/Disabling/Updating after an update (AWS gives no figure).
    mapping_transition_seconds: float = 15.0
    # Fault "mapping-stuck-transitioning": before this emulated time no transition completes (and
    # updates stay refused). Set it before the transition it should catch: one already seen
    # complete stays complete.
    mapping_stuck_until: float | None = None
    # Whether a Disabling mapping still takes new batches (AWS does not say).
    poll_while_disabling: bool = True
    # ListExecutions omits an execution started less than this ago and lists one that ended less
    # than this ago as RUNNING (AWS documents staleness, not how much).
    list_executions_lag_seconds: float = 2.0
    # Step Functions' execution history quota.
    history_event_limit: int = 25_000
    # AWS allows StopProjectVersion on a STARTING model; as an option, refuse it with
    # ResourceInUseException for the first N seconds of STARTING.
    stop_refused_while_starting_seconds: float = 0.0
    # API actions ("rekognition:StopProjectVersion", "lambda:UpdateEventSourceMapping") that answer
    # AccessDeniedException, as with a missing IAM permission.
    denied: set[str] = field(default_factory=set)
    # Whether callers hold s3:ListBucket on the bucket. Without it (the pipeline's roles), S3
    # answers a missing key's GetObject/HeadObject with 403 AccessDenied, not 404 (S3 User Guide,
    # GetObject permissions); moto always answers 404.
    s3_list_bucket: bool = False
    # GetQueueAttributes' ApproximateNumberOfMessages(/NotVisible/Delayed) come from a snapshot of
    # the queue taken at most this long ago (AWS calls them approximate and gives no figure).
    queue_counts_stale_seconds: float = 0.0


_EXACT = threading.local()


@contextlib.contextmanager
def exact_queue_counts() -> Iterator[None]:
    """The emulator's own reads of a queue's counts (its report, its end test) see the truth."""
    _EXACT.active = True
    try:
        yield
    finally:
        _EXACT.active = False


def access_denied(control: ControlPlane, action: str, *, status: int = 400) -> None:
    """Raise AccessDeniedException if `action` ("service:Action") is denied."""
    from moto.core.exceptions import JsonRESTError

    if action in control.denied:
        error = JsonRESTError(
            "AccessDeniedException",
            f"User: emulated-role is not authorized to perform: {action} because no identity-based "
            "policy allows the action",
        )
        error.code = status
        raise error


# ---- the event-source mapping's state ------------------------------------------------------------

_TRANSITION = "emulated_transition"  # attribute of moto's EventSourceMapping while it transitions
# Pollers, the driver and executions read and update mappings at once: a transition seen complete
# must not clear the one an update has just begun, and two updates must not both pass the check.
_TRANSITIONS_LOCK = threading.RLock()


@dataclass
class MappingTransition:
    state: str  # Enabling, Disabling or Updating
    ends_at: float
    clock: VirtualClock
    control: ControlPlane

    def ends(self) -> float:
        """Emulated time the transition completes (later while the stuck fault holds)."""
        stuck = self.control.mapping_stuck_until
        return self.ends_at if stuck is None else max(self.ends_at, stuck)


def _transition(esm: Any) -> MappingTransition | None:
    with _TRANSITIONS_LOCK:
        transition = getattr(esm, _TRANSITION, None)
        if transition is not None and transition.clock.now() >= transition.ends():
            setattr(esm, _TRANSITION, None)  # completed, and stays so
            return None
        return transition


def mapping_state(esm: Any) -> str:
    """The State GetEventSourceMapping reports for moto's mapping object."""
    transition = _transition(esm)
    if transition is not None:
        return transition.state
    return "Enabled" if esm.enabled else "Disabled"


def mapping_polls(esm: Any) -> bool:
    """Whether Lambda takes new batches: while Enabled, and (option) Disabling; while Updating as
    before the update (AWS is silent on both); never while Enabling or Disabled."""
    transition = _transition(esm)
    if transition is None:
        return bool(esm.enabled)
    if transition.state == "Disabling":
        return transition.control.poll_while_disabling
    return transition.state == "Updating" and bool(esm.enabled)


def state_change_at(esm: Any) -> float:
    """Emulated time the current transition completes (inf if none). Nothing pokes the clock then:
    a poller waits at most until this time, and anew whenever it changes."""
    transition = _transition(esm)
    return math.inf if transition is None else transition.ends()


def _transition_for(esm: Any, was_enabled: bool, spec: dict) -> str | None:
    """Enabling/Disabling when Enabled changes; Updating when anything else is sent; no transition
    when the request only repeats the current Enabled value (accepted; AWS does not document this
    case, LocalStack's Lambda provider keeps the state unchanged, and so does this)."""
    if "Enabled" in spec and bool(spec["Enabled"]) != was_enabled:
        return "Enabling" if esm.enabled else "Disabling"
    if set(spec) - {"Enabled", "UUID"}:
        return "Updating"
    return None


def _mapping_in_use() -> Exception:
    from moto.awslambda.exceptions import LambdaClientError

    return LambdaClientError(
        "ResourceInUseException", "Cannot update the event source mapping because it is in use."
    )


def external_update(where: Any, uuid: str, enabled: bool) -> None:
    """Someone changes the mapping in the console (fault "mapping-disabled-externally"): the same
    transition and refusal (ResourceInUseException during a transition) as the API, without the
    emulated role's IAM denials. `where` is the Emulation or moto's Lambda backend."""
    from moto.awslambda.models import LambdaBackend

    backend = where if isinstance(where, LambdaBackend) else _backend_holding(uuid)
    backend.update_event_source_mapping(uuid, {"Enabled": enabled})


def _backend_holding(uuid: str) -> Any:
    from moto.awslambda.models import lambda_backends
    from moto.awslambda_simple.models import lambda_simple_backends

    for backends in (lambda_simple_backends, lambda_backends):
        for regions in list(backends.values()):
            for backend in list(regions.values()):
                if backend.get_event_source_mapping(uuid) is not None:
                    return backend
    raise KeyError(f"no event-source mapping {uuid}")


def patches(emulation: Emulation) -> list[Any]:
    return [
        *_event_source_mappings(emulation),
        *_list_executions(emulation),
        *_history_limit(emulation),
        *_stale_queue_counts(emulation),
    ]


_COUNTS = {
    "ApproximateNumberOfMessages": "approximate_number_of_messages",
    "ApproximateNumberOfMessagesNotVisible": "approximate_number_of_messages_not_visible",
    "ApproximateNumberOfMessagesDelayed": "approximate_number_of_messages_delayed",
}


def _stale_queue_counts(emulation: Emulation) -> list[Any]:
    from moto.sqs.responses import SQSResponse

    from .moto_fixes import SQS_LOCK

    original = SQSResponse.get_queue_attributes
    snapshots: dict[str, tuple[float, dict[str, int]]] = {}

    def get_queue_attributes(self):
        response = original(self)
        stale = emulation.control.queue_counts_stale_seconds
        attributes = getattr(response, "result", {}).get("Attributes", {})
        if stale <= 0 or getattr(_EXACT, "active", False) or not attributes.keys() & _COUNTS.keys():
            return response
        name, now = self._get_queue_name(), emulation.clock.now()
        with SQS_LOCK:
            taken = snapshots.get(name)
            if taken is None or now - taken[0] >= stale:
                queue = self.sqs_backend.get_queue(name)
                taken = snapshots[name] = (now, {a: getattr(queue, p) for a, p in _COUNTS.items()})
        for attribute in attributes.keys() & _COUNTS.keys():
            attributes[attribute] = str(taken[1][attribute])
        return response

    return [mock.patch.object(SQSResponse, "get_queue_attributes", get_queue_attributes)]


def _event_source_mappings(emulation: Emulation) -> list[Any]:
    from moto.awslambda.models import EventSourceMapping, LambdaBackend
    from moto.awslambda.responses import LambdaResponse

    original_update = LambdaBackend.update_event_source_mapping
    original_configuration = EventSourceMapping.get_configuration
    original_response = LambdaResponse.update_event_source_mapping

    def update_event_source_mapping(self, uuid, spec):
        esm = self.get_event_source_mapping(uuid)
        if esm is None:
            return original_update(self, uuid, spec)  # moto's 404
        with _TRANSITIONS_LOCK:
            if _transition(esm) is not None:
                raise _mapping_in_use()
            was_enabled = bool(esm.enabled)
            result = original_update(self, uuid, spec)
            state = _transition_for(esm, was_enabled, spec)
            if state is not None:
                clock, control = emulation.clock, emulation.control
                ends_at = clock.now() + control.mapping_transition_seconds
                setattr(esm, _TRANSITION, MappingTransition(state, ends_at, clock, control))
        emulation.clock.poke(MAPPING_TOPIC)  # pollers re-read the state (and when it will change)
        return result

    def get_configuration(self):
        return original_configuration(self) | {"State": mapping_state(self)}

    def update_response(self):
        access_denied(emulation.control, "lambda:UpdateEventSourceMapping", status=403)
        return original_response(self)

    return [
        mock.patch.object(LambdaBackend, "update_event_source_mapping", update_event_source_mapping),
        mock.patch.object(EventSourceMapping, "get_configuration", get_configuration),
        mock.patch.object(LambdaResponse, "update_event_source_mapping", update_response),
    ]


# ---- Step Functions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Listed:
    """An execution as a stale ListExecutions shows it (the attributes moto's response reads)."""

    execution_arn: str
    name: str
    start_date: Any
    status: str
    stop_date: Any


def _list_executions(emulation: Emulation) -> list[Any]:
    from moto.stepfunctions.models import StepFunctionBackend
    from moto.stepfunctions.utils import PAGINATION_MODEL
    from moto.utilities.paginator import paginate

    def listed(execution) -> _Listed | None:
        lag, now = emulation.control.list_executions_lag_seconds, emulation.clock.now()
        with emulation.lock:
            times = dict(emulation.execution_times.get(execution.execution_arn, {}))
        if now - times.get("started", -math.inf) < lag:
            return None
        status, stop_date = execution.status, execution.stop_date
        if status != "RUNNING" and now - times.get("stopped", now) < lag:
            status, stop_date = "RUNNING", None
        return _Listed(execution.execution_arn, execution.name, execution.start_date, status, stop_date)

    @paginate(pagination_model=PAGINATION_MODEL)
    def list_executions(self, state_machine_arn, status_filter=None):
        views = [listed(e) for e in self.describe_state_machine(state_machine_arn).executions]
        views = [v for v in views if v is not None and (not status_filter or v.status == status_filter)]
        return sorted(views, key=lambda v: v.start_date, reverse=True)

    return [mock.patch.object(StepFunctionBackend, "list_executions", list_executions)]


def _history_limit(emulation: Emulation) -> list[Any]:
    """An execution whose history reaches the limit fails with States.Runtime: the event that fills
    it to one short of the limit ends the execution, whose ExecutionFailed event is the last."""
    from moto.stepfunctions.parser.api import ExecutionFailedEventDetails, HistoryEventType
    from moto.stepfunctions.parser.asl.eval.environment import Environment
    from moto.stepfunctions.parser.asl.eval.event.event_manager import EventManager

    original_init = Environment.__init__
    original_add = EventManager.add_event
    original_set_error = Environment.set_error

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        # Frames get their own manager here and then share the execution's: the execution's
        # manager stays tagged with the execution's environment.
        self.event_manager.emulated_environment = self

    def add_event(self, context, event_type, *args, **kwargs):
        env = getattr(self, "emulated_environment", None)
        if env is None:  # not an execution's history (TestState)
            return original_add(self, context, event_type, *args, **kwargs)
        error = getattr(env, "emulated_history_error", None)
        if error is not None and event_type != HistoryEventType.ExecutionFailed:
            return context.last_published_event_id  # the history is full
        event_id = original_add(self, context, event_type, *args, **kwargs)
        limit = emulation.control.history_event_limit
        if error is None and event_id >= limit - 1 and event_type != HistoryEventType.ExecutionFailed:
            env.emulated_history_error = ExecutionFailedEventDetails(
                error=HISTORY_LIMIT_ERROR,
                cause=f"The execution reached the maximum number of history events ({limit:,}).",
            )
            env.set_error(env.emulated_history_error)
        return event_id

    def set_error(self, error):
        # The states still unwinding fail on a program that is no longer running; the history
        # limit stays the reason the execution failed.
        original_set_error(self, getattr(self, "emulated_history_error", None) or error)
        # A Wait in progress returns (this module owns set_error; virtual_time pokes the same topic
        # for set_stop and set_timed_out).
        emulation.clock.poke(EXECUTION_TOPIC)

    return [
        mock.patch.object(Environment, "__init__", __init__),
        mock.patch.object(EventManager, "add_event", add_event),
        mock.patch.object(Environment, "set_error", set_error),
    ]
