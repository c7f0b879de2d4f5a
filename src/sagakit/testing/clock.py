"""`SkippingClock`: a clock under which waiting takes no time.

Every timer wait of the engine goes through its clock (`sagakit.clock`).
Under a `SkippingClock`, a wait completes as soon as nothing else can run:
no step or compensation is running, no commit is in flight, no alert hook
is being called, and the event loop has gone a few turns without anything
new. The clock then jumps to the earliest wait's deadline and wakes it, as
Temporal's time-skipping test environment does. So a compensation retried
twenty times over a quarter of an hour, or a run whose deadline is a day
away, runs in milliseconds, with every timestamp (``ctx.now()``,
``ctx.since_step_finished``, the journal's) as if that time had passed.

`SkippingClock.advance` moves it by hand: "cancel the trip the next day".
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sagakit.errors import SagaError

__all__ = ["SkippingClock"]

QUIET_TURNS = 4
"""Turns of the event loop with nothing new before time skips.

Work the engine does is marked busy, so this only has to cover code of
the test's own that runs on the loop beside it (a task it started).
"""


@dataclass(eq=False, slots=True)
class _Waiter:
    when: float
    future: asyncio.Future[None] = field(repr=False)


class _Busy:
    """One hold on the clock (`SkippingClock.busy`); reusable, as `Clock.busy` requires."""

    __slots__ = ("clock",)

    def __init__(self, clock: SkippingClock) -> None:
        self.clock = clock

    def __enter__(self) -> None:
        self.clock._hold(1)

    def __exit__(self, *exc_info: object) -> None:
        self.clock._hold(-1)


class SkippingClock:
    """A test clock whose waits complete at once when nothing else can run.

    Give it to an engine (``Engine(url, clock=SkippingClock())``); the
    ``saga_clock`` fixture of the pytest plugin is one. Reading it never
    moves it; only waiting does (by exactly what is waited for) and
    `advance`. It serves one event loop at a time: the loop of the engine
    it was given to (an `Engine` has its own). Thread-safe: a test may
    `advance` it from its own thread while the engine's loop runs.

    Args:
        start: The time it reads first: seconds since the epoch or a
            ``datetime`` (default: the real time now, so timestamps look
            like today's).

    Raises:
        SagaError: ``start`` is not a finite time.
    """

    def __init__(self, start: float | datetime | None = None) -> None:
        if start is None:
            start = time.time()
        elif isinstance(start, datetime):
            start = start.timestamp()
        if (
            isinstance(start, bool)
            or not isinstance(start, int | float)
            or not math.isfinite(start)
        ):
            raise SagaError(f"SkippingClock(start=...) takes seconds or a datetime, got {start!r}")
        self.start = float(start)
        """The time it read when it was made."""
        self.skips = 0
        """How many times time skipped (waits that jumped the clock)."""
        self._now = self.start
        self._lock = threading.Lock()
        self._waiters: set[_Waiter] = set()
        self._busy = 0
        self._waking = 0  # waiters woken whose tasks have not run yet
        self._version = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._skipper: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<SkippingClock at {self._now:.3f} (+{self.elapsed:g}s)>"

    # -- reading --------------------------------------------------------------------

    def __call__(self) -> float:
        """Now, in seconds since the epoch."""
        return self._now

    def now(self) -> float:
        """Now, in seconds since the epoch (the same as calling the clock)."""
        return self._now

    @property
    def elapsed(self) -> float:
        """Seconds it has moved since it was made (skipped and advanced)."""
        return self._now - self.start

    # -- moving it by hand ----------------------------------------------------------

    def advance(self, by: timedelta | float) -> float:
        """Move the clock forward by ``by`` and wake every wait that is then due.

        For "the customer cancels the next day": ``clock.advance(timedelta(days=1))``
        and then ``engine.cancel(...)``. Returns the new time.

        Raises:
            SagaError: ``by`` is negative or not a finite number of seconds.
        """
        seconds = by.total_seconds() if isinstance(by, timedelta) else by
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise SagaError(f"advance() takes seconds or a timedelta, got {by!r}")
        if not (math.isfinite(seconds) and seconds >= 0):
            raise SagaError(f"advance() moves a clock forward only, by a finite time; got {by!r}")
        with self._lock:
            self._now += seconds
            now = self._now
        self._on_loop(self._wake_due)
        return now

    # -- the engine's side (`sagakit.clock.Clock`) --------------------------------------

    async def sleep_until(self, when: float, wake: Collection[asyncio.Future[Any]] = ()) -> None:
        """Return once the clock reads ``when`` (skipping there when nothing else runs).

        Returns earlier if one of ``wake`` is done first.
        """
        if when <= self._now:
            return
        loop = asyncio.get_running_loop()
        self._bind(loop)
        waiter = _Waiter(when, loop.create_future())
        self._waiters.add(waiter)
        self._touch()
        try:
            if wake:
                await asyncio.wait({waiter.future, *wake}, return_when=asyncio.FIRST_COMPLETED)
            else:
                await waiter.future
        finally:
            if waiter in self._waiters:
                self._waiters.discard(waiter)
            elif waiter.future.done() and not waiter.future.cancelled():
                self._waking -= 1  # woken, and now running again
            if not waiter.future.done():
                waiter.future.cancel()
            self._touch()

    def busy(self) -> AbstractContextManager[None]:
        """A hold on the clock: time does not skip while any is held (see `Clock.busy`)."""
        return _Busy(self)

    # -- inside -----------------------------------------------------------------------

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop:
            return
        if self._loop is not None and not self._loop.is_closed() and self._waiters:
            raise SagaError(
                "a SkippingClock serves one event loop at a time, and engines on two "
                "loops wait on this one; give each engine a SkippingClock of its own"
            )
        self._loop = loop
        self._changed = asyncio.Event()
        self._skipper = None
        self._waking = 0

    def _hold(self, delta: int) -> None:
        with self._lock:
            self._busy += delta
        self._on_loop(self._touch)

    def _on_loop(self, fn: Any) -> None:
        """Call ``fn`` on the clock's loop: now if this is it, else soon (thread-safe)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn()
        else:
            # A loop closed meanwhile has nothing waiting on it.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn)

    def _touch(self) -> None:
        """Something changed (a wait, a hold): note it, and skip time once all is quiet."""
        self._version += 1
        if self._changed is not None:
            self._changed.set()
        if self._waiters and (self._skipper is None or self._skipper.done()):
            self._skipper = asyncio.ensure_future(self._skip())

    def _wake_due(self) -> None:
        now = self._now
        due = [w for w in self._waiters if w.when <= now]
        for waiter in due:
            self._waiters.discard(waiter)
            if not waiter.future.done():
                waiter.future.set_result(None)
                self._waking += 1
        if due:
            self._touch()

    async def _skip(self) -> None:
        """Skip to the earliest wait each time nothing else can run; end when none waits."""
        changed = self._changed
        assert changed is not None
        while True:
            quiet = 0
            while quiet < QUIET_TURNS:
                if not self._waiters:
                    return
                if self._busy > 0 or self._waking > 0:
                    # Work is under way (a step, a commit): wait for it to end.
                    changed.clear()
                    if self._busy > 0 or self._waking > 0:
                        await changed.wait()
                    quiet = 0
                    continue
                seen = self._version
                await asyncio.sleep(0)
                quiet = quiet + 1 if self._version == seen else 0
            earliest = min(w.when for w in self._waiters)
            if not math.isfinite(earliest):
                return  # waits for ever: only a wake-up ends it
            with self._lock:
                if earliest > self._now:
                    self._now = earliest
                    self.skips += 1
            self._wake_due()
