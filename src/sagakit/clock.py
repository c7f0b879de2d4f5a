"""The engine's clock: what time it is, and every timer wait of the engine.

Every wait that is a matter of the calendar (a retry's backoff, a run's
deadline, a reservation waited for, an alert tried again later) goes through
the engine's `Clock`, so that a test can swap in a clock that skips time
(`sagakit.testing.SkippingClock`). Waits that measure this host's own
infrastructure stay on real time and do not use it: lease heartbeats, a
commit retried while the store is unreachable, a worker's polling, a call's
timeout racing the call (a step that runs past its timeout really ran that
long).

A clock also hears when work is under way (`Clock.busy`): a clock that skips
time must not skip while a step runs or a commit is in flight, or a timer
would fire "before" work that really came first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

__all__ = ["Clock", "HandClock", "SystemClock", "as_clock"]


@runtime_checkable
class Clock(Protocol):
    """What the engine reads the time from and waits on.

    Calling it reads the time (seconds since the epoch), so a clock is also
    a plain ``Callable[[], float]``. `SystemClock` is the real one;
    `sagakit.testing.SkippingClock` skips time in tests.
    """

    def __call__(self) -> float:
        """Now, in seconds since the epoch."""
        ...

    async def sleep_until(self, when: float, wake: Collection[asyncio.Future[Any]] = ()) -> None:
        """Return once the clock reads ``when``, or as soon as one of ``wake`` is done.

        Returns at once if ``when`` has passed. Never raises for ``wake``'s
        results: the caller looks at the futures itself.
        """
        ...

    def busy(self) -> AbstractContextManager[None]:
        """A context manager to hold while work runs that time must not skip past.

        Returns a reusable object: it may be entered again after it was
        exited (a call leaves it while it waits for a reservation).
        """
        ...


_IDLE = contextlib.nullcontext()


def holds_nothing(clock: Clock) -> bool:
    """Whether ``clock``'s `Clock.busy` does nothing (the system clock's, a hand clock's).

    The engine asks once per drive: a hold that does nothing is then not
    taken at every step (each ``with`` of it is three Python calls). Only
    the method itself tells: a clock's own ``busy`` may hand back the idle
    hold and still do something when asked (count, log, or hand back a real
    hold later on), so it is asked at every step, as it always was.
    """
    return getattr(clock.busy, "__func__", None) in _BUSY_IDLE


class SystemClock:
    """The real clock: `time.time`, and waits of real seconds. The engine's default."""

    __slots__ = ()

    # The builtin itself: the engine reads the clock at every step.
    __call__ = staticmethod(time.time)

    async def sleep_until(self, when: float, wake: Collection[asyncio.Future[Any]] = ()) -> None:
        """Wait real seconds until ``when`` (see `Clock.sleep_until`)."""
        await _wait(when - time.time(), wake)

    def busy(self) -> AbstractContextManager[None]:
        """Nothing to do: real time passes whatever runs."""
        return _IDLE

    def __repr__(self) -> str:
        return "SystemClock()"


class HandClock:
    """A clock read from a function of the user's (the engine's ``clock=callable``).

    The time is theirs (a test may move it by hand, or make it tick); waits
    stay real, for as many seconds as that clock says are left, as they
    always were.

    Args:
        read: Returns seconds since the epoch.
    """

    __slots__ = ("read",)

    def __init__(self, read: Callable[[], float]) -> None:
        self.read = read

    def __call__(self) -> float:
        """What the user's function says."""
        return self.read()

    async def sleep_until(self, when: float, wake: Collection[asyncio.Future[Any]] = ()) -> None:
        """Wait real seconds until the user's clock would read ``when``."""
        await _wait(when - self.read(), wake)

    def busy(self) -> AbstractContextManager[None]:
        """Nothing to do: waits are real."""
        return _IDLE

    def __repr__(self) -> str:
        return f"HandClock({self.read!r})"


SYSTEM_CLOCK = SystemClock()

# The `Clock.busy` methods that do nothing but hand back the idle hold (`holds_nothing`).
_BUSY_IDLE = (SystemClock.busy, HandClock.busy)


def as_clock(clock: Clock | Callable[[], float]) -> Clock:
    """``clock`` as a `Clock`: a plain function becomes a `HandClock`, `time.time` the system's.

    Raises:
        TypeError: ``clock`` is not callable.
    """
    if clock is time.time:
        return SYSTEM_CLOCK
    if isinstance(clock, Clock):
        return clock
    if not callable(clock):
        raise TypeError(
            f"clock must be a Clock or a function returning seconds since the epoch, got {clock!r}"
        )
    return HandClock(clock)


async def _wait(seconds: float, wake: Collection[asyncio.Future[Any]]) -> None:
    """Wait ``seconds`` of real time, or until one of ``wake`` is done."""
    seconds = max(0.0, seconds)
    if wake:
        await asyncio.wait(wake, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    else:
        await asyncio.sleep(seconds)
