"""moto and botocore on the emulation's clock: Step Functions' Wait states, Retry intervals and state
timestamps, SQS visibility and receive times, S3 event notifications' times, botocore's retry
sleeps and its adaptive mode's rate limiter; every execution thread is a clock actor, and whatever
an actor may be waiting for (a new message, a stopped execution) wakes the clock (a mapping update
wakes it in control_plane)."""

from __future__ import annotations

import datetime as _dt
import threading
import types
from typing import Any
from unittest import mock

from .clock import EXECUTION_TOPIC, MESSAGES_TOPIC
from .state import Emulation


def patches(emulation: Emulation) -> list[Any]:
    return [
        *_stepfunctions(emulation),
        *_stepfunctions_actors(emulation),
        *_sqs(emulation),
        *_s3(emulation),
        *_botocore(emulation),
    ]


def _stepfunctions(emulation: Emulation) -> list[Any]:
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
    from moto.stepfunctions.parser.asl.component.state import state as state_module
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function import wait_function
    from moto.stepfunctions.parser.asl.eval import environment

    clock = emulation.clock

    def _wait_interval(self, env, wait_seconds):
        if wait_seconds > 0:
            # Returns early when the execution is stopped, as AWS's Wait does.
            clock.wait_until(
                lambda: not env.is_running(), timeout=wait_seconds, wakes_on=frozenset({EXECUTION_TOPIC})
            )

    class _EmulatedDatetime(_dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return clock.datetime().astimezone(tz) if tz else clock.datetime()

    original_set_stop = environment.Environment.set_stop
    original_set_timed_out = environment.Environment.set_timed_out

    # A stopped or timed-out execution must wake its Wait state at once (the Wait's only topic; a
    # failed one pokes it from control_plane, which patches set_error).
    def set_stop(self, *args, **kwargs):
        original_set_stop(self, *args, **kwargs)
        clock.poke(EXECUTION_TOPIC)

    def set_timed_out(self, *args, **kwargs):
        original_set_timed_out(self, *args, **kwargs)
        clock.poke(EXECUTION_TOPIC)

    return [
        mock.patch.object(wait_function.WaitFunction, "_wait_interval", _wait_interval),
        mock.patch.object(retrier_decl, "time", types.SimpleNamespace(sleep=clock.sleep)),
        mock.patch.object(
            state_module, "datetime", types.SimpleNamespace(datetime=_EmulatedDatetime, timezone=_dt.timezone)
        ),
        mock.patch.object(environment.Environment, "set_stop", set_stop),
        mock.patch.object(environment.Environment, "set_timed_out", set_timed_out),
    ]


def _stepfunctions_actors(emulation: Emulation) -> list[Any]:
    """Each execution runs on a thread of its own; it must hold the clock while it works."""
    from moto.stepfunctions.parser.asl.component.program import program
    from moto.stepfunctions.parser.asl.component.state.exec import execute_state
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    clock = emulation.clock
    original_start = ExecutionWorker.start
    original_logic = ExecutionWorker._execution_logic

    def start(self):
        # Registered here, in the caller's thread, so time cannot move before the thread runs.
        self._emulation_actor = clock.new_actor()
        with emulation.lock:
            emulation.execution_times[self._evaluation_details.execution_details.arn] = {
                "started": clock.now()
            }
        return original_start(self)

    def _execution_logic(self):
        actor = getattr(self, "_emulation_actor", None)
        if actor is None:
            return original_logic(self)
        clock.bind(actor)
        try:
            return original_logic(self)
        finally:
            with emulation.lock:
                times = emulation.execution_times.setdefault(
                    self._evaluation_details.execution_details.arn, {}
                )
                times["stopped"] = clock.now()
            clock.retire(actor)

    # The interpreter hands each program and each task to a fresh thread and joins it; the
    # execution's actor must travel with the work.
    class _ActorThread(threading.Thread):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._emulation_actor = clock.current_actor()

        def run(self):
            if self._emulation_actor is not None:
                clock.bind(self._emulation_actor)
            super().run()

    return [
        mock.patch.object(ExecutionWorker, "start", start),
        mock.patch.object(ExecutionWorker, "_execution_logic", _execution_logic),
        mock.patch.object(
            program, "threading", types.SimpleNamespace(**{**vars(threading), "Thread": _ActorThread})
        ),
        mock.patch.object(execute_state, "Thread", _ActorThread),
    ]


def _sqs(emulation: Emulation) -> list[Any]:
    from moto.sqs import models as sqs_models

    clock = emulation.clock
    real_unix_time, real_unix_time_millis = sqs_models.unix_time, sqs_models.unix_time_millis

    def unix_time(*args):
        return real_unix_time(*args) if args else clock.epoch_seconds()

    def unix_time_millis(*args):
        return real_unix_time_millis(*args) if args else clock.epoch_seconds() * 1000.0

    original_add = sqs_models.Queue.add_message

    def add_message(self, message):
        original_add(self, message)
        clock.poke(MESSAGES_TOPIC)  # a new message wakes pollers that long-poll on the clock

    return [
        mock.patch.object(sqs_models, "unix_time", unix_time),
        mock.patch.object(sqs_models, "unix_time_millis", unix_time_millis),
        mock.patch.object(sqs_models.Queue, "add_message", add_message),
    ]


def _s3(emulation: Emulation) -> list[Any]:
    """An upload's event notification carries the emulated time (results record it as uploadedAt)."""
    from moto.s3 import notifications

    clock = emulation.clock
    real = notifications.iso_8601_datetime_with_milliseconds

    def iso_8601_datetime_with_milliseconds(value=None):
        return real(value or clock.datetime().replace(tzinfo=None))

    return [
        mock.patch.object(
            notifications, "iso_8601_datetime_with_milliseconds", iso_8601_datetime_with_milliseconds
        )
    ]


def _botocore(emulation: Emulation) -> list[Any]:
    from botocore import endpoint
    from botocore.exceptions import CapacityNotAvailableError
    from botocore.retries import bucket

    clock = emulation.clock

    def _acquire(self, amount, block):
        # The adaptive retry mode's client-side rate limiter: its token bucket waits on a condition
        # for real seconds; here the caller (a clock actor) sleeps on the emulated clock instead,
        # the bucket's lock released as the condition's wait releases it.
        self._refill()
        while amount > self._current_capacity:
            if not block:
                raise CapacityNotAvailableError()
            wait = self._sleep_amount(amount)
            self._lock.release()
            try:
                clock.sleep(wait)
            finally:
                self._lock.acquire()
            self._refill()
        self._current_capacity -= amount
        return True

    return [
        mock.patch.object(
            endpoint, "time", types.SimpleNamespace(**{**vars(endpoint.time), "sleep": clock.sleep})
        ),
        mock.patch.object(bucket, "time", types.SimpleNamespace(time=clock.epoch_seconds, sleep=clock.sleep)),
        mock.patch.object(bucket.TokenBucket, "_acquire", _acquire),
    ]
