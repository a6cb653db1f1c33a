"""The emulation's clock: a handler's thread pool and its wait() run on emulated time, and a call's
end wakes the handler waiting on it at the emulated moment the call ended; botocore's rate limiter
waits on it too."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from botocore.retries import bucket

from customlabels_batch.emulator import virtual_time
from customlabels_batch.emulator.clock import (
    MAPPING_TOPIC,
    MESSAGES_TOPIC,
    DeadlineReached,
    VirtualClock,
    threads_on,
)
from customlabels_batch.emulator.control_plane import ControlPlane
from customlabels_batch.emulator.state import Emulation


@pytest.fixture
def clock():
    clock = VirtualClock()
    with clock.actor():  # the test is the handler thread
        yield clock
    clock.stop()


def test_wait_returns_when_the_first_call_ends_at_its_emulated_time(clock):
    futures = threads_on(clock)
    pool = futures.ThreadPoolExecutor(max_workers=3)
    calls = [pool.submit(clock.sleep, seconds) for seconds in (5.0, 3.0, 8.0)]

    done, pending = futures.wait(calls, return_when=futures.FIRST_COMPLETED)
    assert clock.now() == 3.0
    assert done == {calls[1]} and pending == {calls[0], calls[2]}

    done, _ = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
    assert clock.now() == 5.0 and done == {calls[0]}
    clock.sleep(5)  # the last call ends (a shutdown would wait for it in wall time, holding time)
    pool.shutdown()


def test_a_call_that_ended_before_the_wait_is_seen_at_once(clock):
    futures = threads_on(clock)
    pool = futures.ThreadPoolExecutor(max_workers=1)
    call = pool.submit(lambda: 42)
    clock.sleep(1)  # the call ends meanwhile, while nobody waits on it

    done, _ = futures.wait([call], return_when=futures.FIRST_COMPLETED)
    assert done == {call} and clock.now() == 1.0
    pool.shutdown()


def test_waiting_past_the_invocation_s_deadline_is_its_timeout(clock):
    futures = threads_on(clock)
    pool = futures.ThreadPoolExecutor(max_workers=1)
    call = pool.submit(clock.sleep, 30.0)  # submitted outside the deadline: it runs on
    with clock.deadline(10), pytest.raises(DeadlineReached):
        futures.wait([call], return_when=futures.FIRST_COMPLETED)
    assert clock.now() == 10.0 and not call.done()
    clock.sleep(20)
    pool.shutdown()


def test_a_call_submitted_under_the_deadline_is_cut_off_with_it(clock):
    futures = threads_on(clock)
    pool = futures.ThreadPoolExecutor(max_workers=1)
    with clock.deadline(10):
        call = pool.submit(clock.sleep, 30.0)
        try:
            done, _ = futures.wait([call], return_when=futures.FIRST_COMPLETED)
        except DeadlineReached:
            pass  # the wait's own cut-off ran first: at the same moment, the same timeout
        else:
            assert done == {call}
    assert clock.now() == 10.0
    assert isinstance(call.exception(timeout=5), DeadlineReached) and clock.now() == 10.0
    pool.shutdown()


def test_a_signal_wakes_only_the_actor_it_names(clock):
    woken: dict[str, bool] = {}
    actors = {name: clock.new_actor() for name in ("signalled", "other")}

    def sleeper(name):
        clock.bind(actors[name])
        woken[name] = clock.wait_signal(100)
        clock.retire(actors[name])

    threads = [threading.Thread(target=sleeper, args=(name,)) for name in actors]
    for thread in threads:
        thread.start()
    clock.sleep(2)
    assert woken == {}  # both asleep until signalled, or until 100 s pass
    clock.signal(actors["signalled"])
    clock.sleep(1)
    assert woken == {"signalled": True}
    clock.sleep(100)
    assert woken == {"signalled": True, "other": False}
    for thread in threads:
        thread.join()


def test_a_watcher_looks_again_only_after_the_pokes_it_waits_on(clock):
    looks = {"any": 0, "mapping": 0}
    ended: dict[str, float] = {}
    actors = {name: clock.new_actor() for name in looks}
    wakes_on = {"any": None, "mapping": frozenset({MAPPING_TOPIC})}

    def watcher(name):
        clock.bind(actors[name])

        def predicate():
            looks[name] += 1
            return False

        clock.wait_until(predicate, timeout=50, wakes_on=wakes_on[name])
        ended[name] = clock.now()
        clock.retire(actors[name])

    threads = [threading.Thread(target=watcher, args=(name,)) for name in looks]
    for thread in threads:
        thread.start()
    clock.sleep(1)
    first = looks["any"]
    clock.sleep(1)  # time steps
    clock.poke(MESSAGES_TOPIC)
    clock.sleep(1)
    assert looks["any"] > first and looks["mapping"] == 1  # the default looks at every step and poke
    clock.poke(MAPPING_TOPIC)
    clock.sleep(1)
    assert looks["mapping"] == 2
    clock.poke()  # no topic: anything may have changed
    clock.sleep(1)
    assert looks["mapping"] == 3
    clock.sleep(60)
    assert ended == {"any": 50.0, "mapping": 50.0}  # and each at its timeout
    for thread in threads:
        thread.join()


def test_botocore_s_adaptive_rate_limiter_waits_on_the_emulated_clock(clock):
    """The adaptive retry mode's token bucket paces calls in emulated seconds: at 2 tokens a second,
    five acquisitions take two and a half (the bucket starts empty), with no wall-clock wait."""
    with contextlib.ExitStack() as patched:
        for patch in virtual_time._botocore(Emulation(clock=clock, control=ControlPlane())):
            patched.enter_context(patch)
        tokens = bucket.TokenBucket(max_rate=2, clock=bucket.Clock())
        wall, start = time.monotonic(), clock.now()
        for _ in range(5):
            assert tokens.acquire()
        assert clock.now() - start == pytest.approx(2.5)
        assert time.monotonic() - wall < 2.0
