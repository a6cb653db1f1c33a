"""A discrete-event clock shared by every actor of the emulation.

Emulated time moves only when every registered actor (state machine executions, event-source
mapping pollers, the driver) is asleep on the clock, and then jumps to the earliest wake-up. So a
duration measured in emulated seconds does not depend on how fast this machine runs the Python in
between; the time scale only decides how much wall time each jump is stretched to, for people
watching.
"""

from __future__ import annotations

import datetime as _dt
import heapq
import math
import threading
import time
import types
from concurrent import futures
from contextlib import contextmanager

# What a poke says changed (VirtualClock.wait_until's wakes_on); a time step is TIME_TOPIC's.
TIME_TOPIC = "time"
MESSAGES_TOPIC = "messages"  # a message added to a queue
MAPPING_TOPIC = "mapping"  # an event-source mapping updated
EXECUTION_TOPIC = "execution"  # a Step Functions execution stopped or failed


class ClockStopped(RuntimeError):
    """The emulation is shutting down; sleeping actors are released with this."""


class DeadlineReached(BaseException):
    """An actor's deadline came while it slept: an emulated Lambda timeout. A BaseException, so the
    handler's own `except Exception` cannot catch it, as nothing in a function can catch its timeout."""


class VirtualClock:
    def __init__(self, *, time_scale: float = math.inf, epoch: _dt.datetime | None = None):
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0 (emulated seconds per wall second)")
        self.time_scale = time_scale
        self.epoch = epoch or _dt.datetime.now(_dt.UTC).replace(microsecond=0)
        # SQS reads the time for every message it looks at: the epoch's timestamp once, not each time.
        self._epoch_seconds = self.epoch.timestamp()
        self._now = 0.0
        # One lock; each actor waits on a condition of its own and the ticker on another, so waking
        # one actor never wakes the hundreds of others (a run at eight units has 700 actors).
        self._lock = threading.Lock()
        self._tick = threading.Condition(self._lock)
        self._conds: dict[int, threading.Condition] = {}
        self._actors: set[int] = set()
        self._wake: dict[int, float] = {}  # actor -> emulated wake time (math.inf: waiting for a poke)
        # The same wake times as a heap of (time, sequence, actor); an entry is stale once the
        # actor's current sequence differs (it woke, or set another time).
        self._heap: list[tuple[float, int, int]] = []
        self._seq: dict[int, int] = {}
        self._next_seq = 0
        self._asleep = 0  # registered actors with a wake time
        # Actors in wait_until, with what wakes them (see wait_until): they count as awake until they
        # have looked again (else time could jump past what they were woken to see).
        self._watching: dict[int, frozenset[str] | None] = {}
        self._local = threading.local()
        self._signalled: set[int] = set()  # actors signalled while awake (see wait_signal)
        self._next_actor = 0
        self._pokes = 0
        self._stopped = False
        self._ticker = threading.Thread(target=self._tick_loop, name="virtual-clock", daemon=True)
        self._ticker.start()

    # ---- reading the time --------------------------------------------------------------------
    def now(self) -> float:
        """Emulated seconds since the emulation started."""
        return self._now

    def datetime(self) -> _dt.datetime:
        return self.epoch + _dt.timedelta(seconds=self._now)

    def epoch_seconds(self) -> float:
        return self._epoch_seconds + self._now

    # ---- actors ------------------------------------------------------------------------------
    def new_actor(self) -> int:
        """Register an actor from any thread; bind it in the thread that will run it."""
        with self._lock:
            self._next_actor += 1
            self._actors.add(self._next_actor)
            self._conds[self._next_actor] = threading.Condition(self._lock)
            return self._next_actor

    def bind(self, actor: int) -> None:
        self._local.actor = actor

    def retire(self, actor: int) -> None:
        with self._lock:
            wake = self._wake.get(actor)
            self._clear_wake(actor)
            self._actors.discard(actor)
            if wake is None:
                self._conds.pop(actor, None)
            else:  # retired in its sleep: it sleeps on, no longer holding time back
                self._set_wake(actor, wake)
            self._tick.notify()
        if getattr(self._local, "actor", None) == actor:
            self._local.actor = None

    @contextmanager
    def actor(self):
        """Run the current thread as an actor for the duration of the block."""
        actor = self.new_actor()
        self.bind(actor)
        try:
            yield actor
        finally:
            self.retire(actor)

    def current_actor(self) -> int | None:
        return getattr(self._local, "actor", None)

    @contextmanager
    def deadline(self, seconds: float):
        """Within the block, a sleep that would pass `seconds` from now ends at that moment with
        DeadlineReached (the current thread only)."""
        self._local.deadline = self._now + seconds
        try:
            yield
        finally:
            self._local.deadline = None

    def current_deadline(self) -> float | None:
        return getattr(self._local, "deadline", None)

    def remaining(self) -> float:
        """Emulated seconds to the current thread's deadline (inf outside one)."""
        deadline = getattr(self._local, "deadline", None)
        return math.inf if deadline is None else max(0.0, deadline - self._now)

    # ---- wake times (under the lock) ----------------------------------------------------------
    def _set_wake(self, actor: int, wake: float) -> None:
        self._clear_wake(actor)
        self._wake[actor] = wake
        if actor in self._actors:
            self._asleep += 1
        self._next_seq += 1
        self._seq[actor] = self._next_seq
        heapq.heappush(self._heap, (wake, self._next_seq, actor))
        self._tick.notify()

    def _clear_wake(self, actor: int) -> None:
        if self._wake.pop(actor, None) is not None:
            self._seq.pop(actor, None)
            if actor in self._actors:
                self._asleep -= 1

    def _cond_of(self, actor: int) -> threading.Condition:
        cond = self._conds.get(actor)
        if cond is None:  # an actor already retired sleeps on a condition of its own
            cond = self._conds[actor] = threading.Condition(self._lock)
        return cond

    # ---- waiting -----------------------------------------------------------------------------
    def sleep(self, seconds: float) -> None:
        """Sleep for emulated seconds. Outside an actor thread this is a plain wall-time sleep
        scaled by the time scale (it must not hold the clock back)."""
        actor = self.current_actor()
        if actor is None:
            time.sleep(0 if math.isinf(self.time_scale) else max(0.0, seconds) / self.time_scale)
            return
        deadline = getattr(self._local, "deadline", None)
        with self._lock:
            wake = self._now + max(0.0, seconds)
            cut_off = deadline is not None and wake > deadline
            if cut_off:
                wake = max(deadline, self._now)
            cond = self._cond_of(actor)
            self._set_wake(actor, wake)
            try:
                while self._now < wake:
                    self._check_stopped()
                    cond.wait()
            finally:
                self._clear_wake(actor)
                self._tick.notify()
        if cut_off:
            raise DeadlineReached(f"deadline reached at {deadline:.3f} s")

    def wait_until(
        self, predicate, *, timeout: float = math.inf, wakes_on: frozenset[str] | None = None
    ) -> bool:
        """Sleep until predicate() is true (re-checked after every poke() and every time step) or
        `timeout` emulated seconds pass. Returns the predicate's last value. The predicate runs
        outside the clock's lock, so it may call the emulated services.

        wakes_on: the topics whose pokes can change the predicate ("time": a time step), when they are
        fewer than all; a poke without a topic still wakes every watcher. A run at eight units has
        dozens of pollers waiting on the mapping's state while each upload pokes the queue's topic,
        and waking all of them for every poke and every step was a seventh of the run's CPU time."""
        actor = self.current_actor()
        if actor is None:
            raise RuntimeError("wait_until needs an actor thread")
        deadline = self._now + timeout
        while True:
            self._check_stopped()
            seen = (self._now, self._pokes)
            if predicate():
                return True
            with self._lock:
                if self._now >= deadline:
                    return False
                if (self._now, self._pokes) != seen:
                    continue
                cond = self._cond_of(actor)
                self._set_wake(actor, deadline)
                self._watching[actor] = wakes_on
                try:
                    while (self._now, self._pokes) == seen:
                        self._check_stopped()
                        cond.wait()
                finally:
                    del self._watching[actor]
                    self._clear_wake(actor)
                    self._tick.notify()

    def wait_signal(self, timeout: float) -> bool:
        """Sleep until signal() names this actor or `timeout` emulated seconds pass; True if
        signalled. A signal sent while the actor was awake is kept for its next wait."""
        actor = self.current_actor()
        if actor is None:
            raise RuntimeError("wait_signal needs an actor thread")
        with self._lock:
            if actor not in self._signalled:
                wake = self._now + max(0.0, timeout)
                cond = self._cond_of(actor)
                self._set_wake(actor, wake)
                try:
                    while self._now < wake and actor not in self._signalled:
                        self._check_stopped()
                        cond.wait()
                finally:
                    self._clear_wake(actor)
                    self._tick.notify()
            signalled = actor in self._signalled
            self._signalled.discard(actor)
            return signalled

    def signal(self, actor: int) -> None:
        """Wake `actor` from wait_signal (it counts as awake from now, so time waits for it); unlike
        poke(), no other actor is woken."""
        with self._lock:
            self._signalled.add(actor)
            if actor in self._wake:
                self._clear_wake(actor)
                self._cond_of(actor).notify()

    def poke(self, topic: str | None = None) -> None:
        """Something changed that actors in wait_until may be waiting for (on `topic`, or anything)."""
        with self._lock:
            self._pokes += 1
            self._wake_watchers(topic)

    def _wake_watchers(self, topic: str | None) -> None:
        for actor, wakes_on in self._watching.items():
            if topic is None or wakes_on is None or topic in wakes_on:
                self._clear_wake(actor)
                self._cond_of(actor).notify()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            for cond in self._conds.values():
                cond.notify_all()
            self._tick.notify_all()
        self._ticker.join(5)

    def _check_stopped(self) -> None:
        if self._stopped:
            raise ClockStopped("the emulation stopped")

    # ---- moving time -------------------------------------------------------------------------
    def _all_asleep(self) -> bool:
        return bool(self._actors) and self._asleep == len(self._actors)

    def _earliest(self) -> float:
        """The earliest wake time of a sleeping actor (stale heap entries are dropped)."""
        heap = self._heap
        while heap:
            wake, seq, actor = heap[0]
            if self._seq.get(actor) == seq:
                return wake
            heapq.heappop(heap)
        return math.inf

    def _step_to(self, target: float) -> None:
        self._now = target
        self._wake_watchers(TIME_TOPIC)
        heap = self._heap
        while heap and heap[0][0] <= target:
            _, seq, actor = heapq.heappop(heap)
            if self._seq.get(actor) == seq:
                # Awake from now on, so time cannot move again before it has run.
                self._clear_wake(actor)
                self._cond_of(actor).notify()

    def _tick_loop(self) -> None:
        with self._lock:
            while not self._stopped:
                if not self._all_asleep():
                    self._tick.wait()
                    continue
                target = self._earliest()
                if target <= self._now or math.isinf(target):
                    # Either a woken actor has not run yet, or everyone waits for a poke.
                    self._tick.wait()
                    continue
                if not math.isinf(self.time_scale):
                    # Stretch the jump over wall time for people watching; start over if anything
                    # changes meanwhile (a poke, a new actor, an earlier wake-up).
                    state = (dict(self._wake), set(self._actors), self._pokes)
                    self._tick.wait((target - self._now) / self.time_scale)
                    if (dict(self._wake), set(self._actors), self._pokes) != state:
                        continue
                self._step_to(target)


class ActorThreadPool(futures.ThreadPoolExecutor):
    """A thread pool whose tasks are clock actors: each is registered when submitted (so time cannot
    move before it runs), runs under the submitting thread's deadline, and retires when it ends.
    A task's end signals the actors waiting on the pool's futures (threads_on's wait()), and only
    them: a run at eight units has hundreds of actors, and waking all of them on every call's end
    (a poke) cost more than the calls."""

    def __init__(self, clock: VirtualClock, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clock = clock
        self.waiters: set[int] = set()

    def submit(self, fn, /, *args, **kwargs):
        clock = self._clock
        actor, deadline = clock.new_actor(), clock.current_deadline()

        def run():
            clock.bind(actor)
            clock._local.deadline = deadline
            try:
                return fn(*args, **kwargs)
            finally:
                clock._local.deadline = None

        def finished(_future):
            # The future is done by now; its waiters wake before this actor retires, so time
            # cannot move past the moment it finished.
            for waiter in list(self.waiters):
                clock.signal(waiter)
            clock.retire(actor)

        future = super().submit(run)
        future.actor_pool = self
        future.add_done_callback(finished)
        return future


def threads_on(clock: VirtualClock) -> types.SimpleNamespace:
    """`concurrent.futures` as a handler module sees it, on the emulation's clock: its pool's
    threads are actors, and wait() sleeps on the clock (and ends at the caller's deadline)."""

    def wait(fs, timeout=None, return_when=futures.FIRST_COMPLETED):
        if return_when != futures.FIRST_COMPLETED:
            raise NotImplementedError("the emulation waits for the first future only")
        fs = list(fs)
        limit = clock.remaining() if timeout is None else min(timeout, clock.remaining())
        pools = {getattr(f, "actor_pool", None) for f in fs}
        if None in pools:
            raise NotImplementedError("the emulation waits for futures of its own thread pools only")
        actor, end = clock.current_actor(), clock.now() + limit
        for pool in pools:
            pool.waiters.add(actor)
        try:
            while not any(f.done() for f in fs) and clock.now() < end:
                clock.wait_signal(end - clock.now())
        finally:
            for pool in pools:
                pool.waiters.discard(actor)
        if not any(f.done() for f in fs) and clock.remaining() == 0:
            raise DeadlineReached("deadline reached while waiting for the calls in flight")
        return futures.wait(fs, timeout=0, return_when=return_when)

    return types.SimpleNamespace(
        **{
            **{name: getattr(futures, name) for name in futures.__all__},
            "ThreadPoolExecutor": lambda *args, **kwargs: ActorThreadPool(clock, *args, **kwargs),
            "wait": wait,
        }
    )
